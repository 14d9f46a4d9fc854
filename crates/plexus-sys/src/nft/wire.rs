//! The nf_tables netlink wire format: message and attribute encoders, the expressions Plexus
//! uses, and a small attribute parser for dumps.
//!
//! Everything here is plain bytes in, bytes out, and follows `include/uapi/linux/netfilter/
//! nf_tables.h`: attributes carrying numbers are big-endian, register contents (compared
//! data, set keys) are raw bytes as the kernel sees them in its registers.

/// netlink message flags.
pub(crate) mod nlm {
    pub const REQUEST: u16 = 0x1;
    pub const ACK: u16 = 0x4;
    pub const EXCL: u16 = 0x200;
    pub const CREATE: u16 = 0x400;
    pub const APPEND: u16 = 0x800;
    pub const DUMP: u16 = 0x300;
    pub const NOOP: u16 = 1;
    pub const ERROR: u16 = 2;
    pub const DONE: u16 = 3;
}

/// nfnetlink subsystem and batch markers.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

/// nf_tables message types.
pub(crate) mod msg {
    pub const NEWTABLE: u8 = 0;
    pub const GETTABLE: u8 = 1;
    pub const NEWCHAIN: u8 = 3;
    pub const DELRULE: u8 = 8;
    pub const NEWRULE: u8 = 6;
    pub const NEWSET: u8 = 9;
    pub const NEWSETELEM: u8 = 12;
    pub const GETSETELEM: u8 = 13;
    pub const DESTROYTABLE: u8 = 26;
    pub const DESTROYSETELEM: u8 = 30;
}

const NLA_F_NESTED: u16 = 0x8000;

// Attribute numbers (nf_tables.h).
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
pub(crate) const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub(crate) const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub(crate) const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub(crate) const NFTA_SET_ELEM_KEY: u16 = 1;
pub(crate) const NFTA_SET_ELEM_DATA: u16 = 2;
pub(crate) const NFTA_SET_ELEM_FLAGS: u16 = 3;
pub(crate) const NFTA_SET_ELEM_USERDATA: u16 = 6;
pub(crate) const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;

/// Set flags.
pub(crate) const NFT_SET_INTERVAL: u32 = 0x4;
pub(crate) const NFT_SET_MAP: u32 = 0x8;
/// Element flag: the end of an interval.
pub(crate) const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

/// The first 32-bit register (`NFT_REG32_00`).
pub const REG32_00: u32 = 8;

/// Appends one attribute (4-byte aligned).
pub(crate) fn put(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    pad(buf);
}

fn pad(buf: &mut Vec<u8>) {
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

pub(crate) fn put_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    put(buf, ty, &v);
}

pub(crate) fn put_be32(buf: &mut Vec<u8>, ty: u16, v: u32) {
    put(buf, ty, &v.to_be_bytes());
}

/// Writes a nested attribute whose content `f` appends.
pub(crate) fn nest(buf: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    f(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    pad(buf);
}

/// A value inside `NFTA_DATA_VALUE`.
fn put_data(buf: &mut Vec<u8>, ty: u16, value: &[u8]) {
    nest(buf, ty, |b| put(b, NFTA_DATA_VALUE, value));
}

/// Address families of nf_tables (`NFPROTO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `inet`: IPv4 and IPv6.
    Inet,
    /// `ip`: IPv4.
    Ip,
    /// `ip6`: IPv6.
    Ip6,
    /// `arp`.
    Arp,
    /// `bridge`.
    Bridge,
    /// `netdev`.
    Netdev,
}

impl Family {
    /// The `NFPROTO_*` number.
    pub fn number(self) -> u8 {
        match self {
            Family::Inet => 1,
            Family::Ip => 2,
            Family::Arp => 3,
            Family::Netdev => 5,
            Family::Bridge => 7,
            Family::Ip6 => 10,
        }
    }

    /// The family of an `NFPROTO_*` number.
    pub fn from_number(n: u8) -> Option<Self> {
        Some(match n {
            1 => Family::Inet,
            2 => Family::Ip,
            3 => Family::Arp,
            5 => Family::Netdev,
            7 => Family::Bridge,
            10 => Family::Ip6,
            _ => return None,
        })
    }

    /// The name `nft` uses.
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
            Family::Arp => "arp",
            Family::Bridge => "bridge",
            Family::Netdev => "netdev",
        }
    }
}

/// Netfilter hooks of the inet families. The bridge family numbers its hooks the same way
/// (`NF_BR_PRE_ROUTING` = 0 … `NF_BR_POST_ROUTING` = 4), so these serve bridge chains too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `prerouting`.
    Prerouting = 0,
    /// `input`.
    Input = 1,
    /// `forward`.
    Forward = 2,
    /// `output`.
    Output = 3,
    /// `postrouting`.
    Postrouting = 4,
}

/// The type of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    /// `filter`.
    Filter,
    /// `nat`.
    Nat,
}

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `drop`.
    Drop,
    /// `accept`.
    Accept,
    /// `return`.
    Return,
}

impl Verdict {
    fn code(self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Return => -5,
        }
    }
}

/// `meta` keys Plexus matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// Input interface name (16 bytes, zero padded).
    IifName = 6,
    /// Output interface name.
    OifName = 7,
    /// The netfilter family (1 byte).
    NfProto = 15,
    /// The layer-4 protocol (1 byte).
    L4Proto = 16,
    /// Bridge family only: the name of the bridge whose port the frame came in on (16
    /// bytes). Needs `nft_meta_bridge` (`CONFIG_NFT_BRIDGE_META`); kernels without it refuse
    /// the rule with `EOPNOTSUPP`.
    BriIifName = 17,
    /// `skb->pkt_type` (1 byte): [`pkttype::HOST`], [`pkttype::OTHERHOST`], …
    PktType = 19,
}

/// Values of `meta pkttype` (`PACKET_*`, `include/uapi/linux/if_packet.h`).
pub mod pkttype {
    /// Addressed to this host (in a bridge: to the bridge's own MAC address).
    pub const HOST: u8 = 0;
    /// Link-layer broadcast.
    pub const BROADCAST: u8 = 1;
    /// Link-layer multicast.
    pub const MULTICAST: u8 = 2;
    /// Addressed to another host (`nft` calls it `other`).
    pub const OTHERHOST: u8 = 3;
}

/// Conntrack keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    /// `ct state` (a bit mask, host order).
    State = 0,
    /// `ct status` (`IPS_*` bits, host order).
    Status = 2,
}

/// `ct state` bits.
pub mod ct_state {
    /// `invalid`.
    pub const INVALID: u32 = 1;
    /// `established`.
    pub const ESTABLISHED: u32 = 2;
    /// `related`.
    pub const RELATED: u32 = 4;
    /// `new`.
    pub const NEW: u32 = 8;
}

/// `ct status` bits.
pub mod ct_status {
    /// The connection was source-NATed.
    pub const SNAT: u32 = 1 << 4;
    /// The connection was destination-NATed.
    pub const DNAT: u32 = 1 << 5;
}

/// Payload bases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    /// The link-layer header.
    Link = 0,
    /// The network header.
    Network = 1,
    /// The transport header.
    Transport = 2,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`.
    Eq = 0,
    /// `!=`.
    Neq = 1,
}

/// NAT kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Source NAT.
    Snat = 0,
    /// Destination NAT.
    Dnat = 1,
}

/// One nf_tables expression. Registers are 32-bit register numbers ([`REG32_00`] + n), or 0
/// for the verdict register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Load a `meta` key into `dreg`.
    Meta {
        /// The key.
        key: MetaKey,
        /// Destination register.
        dreg: u32,
    },
    /// Load packet bytes into `dreg`.
    Payload {
        /// Which header.
        base: PayloadBase,
        /// Offset in the header.
        offset: u32,
        /// How many bytes.
        len: u32,
        /// Destination register.
        dreg: u32,
    },
    /// Compare a register with bytes; the rule stops if false.
    Cmp {
        /// Source register.
        sreg: u32,
        /// Operator.
        op: CmpOp,
        /// The bytes to compare with.
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor`.
    Bitwise {
        /// Source register.
        sreg: u32,
        /// Destination register.
        dreg: u32,
        /// The mask.
        mask: Vec<u8>,
        /// The xor.
        xor: Vec<u8>,
    },
    /// Look the register up in a set (or map, writing the value to `dreg`).
    Lookup {
        /// The set's name (in the rule's table).
        set: String,
        /// The key's first register.
        sreg: u32,
        /// For maps: where the value goes.
        dreg: Option<u32>,
        /// Match when the key is absent.
        invert: bool,
    },
    /// Load conntrack information into `dreg`.
    Ct {
        /// The key.
        key: CtKey,
        /// Destination register.
        dreg: u32,
    },
    /// `fib daddr type` into `dreg` (the route type of the destination, `RTN_*`, host order).
    FibDaddrType {
        /// Destination register.
        dreg: u32,
    },
    /// NAT to the address (and port) held in registers.
    Nat {
        /// SNAT or DNAT.
        kind: NatKind,
        /// `ip` or `ip6`.
        family: Family,
        /// Register holding the address.
        addr: u32,
        /// Register holding the port (big-endian in its first two bytes).
        port: Option<u32>,
    },
    /// Masquerade to the output interface's address.
    Masquerade,
    /// Count packets and bytes.
    Counter,
    /// Mark the packet untracked (`notrack`, no attributes): conntrack then ignores it, and
    /// so does NAT. It must run before conntrack sees the packet (inet families: prerouting
    /// or output below priority -200; bridge family: prerouting below `br_netfilter`'s 0); it
    /// does nothing to a packet that already has a conntrack entry.
    Notrack,
    /// A final verdict.
    Verdict(Verdict),
}

impl Expr {
    fn encode(&self, buf: &mut Vec<u8>) {
        let (name, body): (&str, Vec<u8>) = match self {
            Expr::Meta { key, dreg } => {
                let mut b = Vec::new();
                put_be32(&mut b, 1, *dreg); // NFTA_META_DREG
                put_be32(&mut b, 2, *key as u32); // NFTA_META_KEY
                ("meta", b)
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                let mut b = Vec::new();
                put_be32(&mut b, 1, *dreg); // DREG
                put_be32(&mut b, 2, *base as u32); // BASE
                put_be32(&mut b, 3, *offset); // OFFSET
                put_be32(&mut b, 4, *len); // LEN
                ("payload", b)
            }
            Expr::Cmp { sreg, op, data } => {
                let mut b = Vec::new();
                put_be32(&mut b, 1, *sreg); // SREG
                put_be32(&mut b, 2, *op as u32); // OP
                put_data(&mut b, 3, data); // DATA
                ("cmp", b)
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                let mut b = Vec::new();
                put_be32(&mut b, 1, *sreg); // SREG
                put_be32(&mut b, 2, *dreg); // DREG
                put_be32(&mut b, 3, mask.len() as u32); // LEN
                put_data(&mut b, 4, mask); // MASK
                put_data(&mut b, 5, xor); // XOR
                ("bitwise", b)
            }
            Expr::Lookup {
                set,
                sreg,
                dreg,
                invert,
            } => {
                let mut b = Vec::new();
                put_str(&mut b, 1, set); // NFTA_LOOKUP_SET
                put_be32(&mut b, 2, *sreg); // SREG
                if let Some(d) = dreg {
                    put_be32(&mut b, 3, *d); // DREG
                }
                if *invert {
                    put_be32(&mut b, 5, 1); // FLAGS = NFT_LOOKUP_F_INV
                }
                ("lookup", b)
            }
            Expr::Ct { key, dreg } => {
                let mut b = Vec::new();
                put_be32(&mut b, 1, *dreg); // NFTA_CT_DREG
                put_be32(&mut b, 2, *key as u32); // NFTA_CT_KEY
                ("ct", b)
            }
            Expr::FibDaddrType { dreg } => {
                let mut b = Vec::new();
                put_be32(&mut b, 1, *dreg); // NFTA_FIB_DREG
                put_be32(&mut b, 2, 3); // NFTA_FIB_RESULT = ADDRTYPE
                put_be32(&mut b, 3, 2); // NFTA_FIB_FLAGS = DADDR
                ("fib", b)
            }
            Expr::Nat {
                kind,
                family,
                addr,
                port,
            } => {
                let mut b = Vec::new();
                put_be32(&mut b, 1, *kind as u32); // NFTA_NAT_TYPE
                put_be32(&mut b, 2, family.number() as u32); // NFTA_NAT_FAMILY
                put_be32(&mut b, 3, *addr); // REG_ADDR_MIN
                let mut flags = 1; // NF_NAT_RANGE_MAP_IPS
                if let Some(p) = port {
                    put_be32(&mut b, 5, *p); // REG_PROTO_MIN
                    flags |= 2; // NF_NAT_RANGE_PROTO_SPECIFIED
                }
                put_be32(&mut b, 7, flags); // NFTA_NAT_FLAGS
                ("nat", b)
            }
            Expr::Masquerade => ("masq", Vec::new()),
            Expr::Counter => ("counter", Vec::new()),
            Expr::Notrack => ("notrack", Vec::new()),
            Expr::Verdict(v) => {
                let mut b = Vec::new();
                put_be32(&mut b, 1, 0); // NFTA_IMMEDIATE_DREG = verdict register
                nest(&mut b, 2, |d| {
                    // NFTA_IMMEDIATE_DATA
                    nest(d, NFTA_DATA_VERDICT, |v2| {
                        put(v2, NFTA_VERDICT_CODE, &v.code().to_be_bytes())
                    })
                });
                ("immediate", b)
            }
        };
        nest(buf, NFTA_LIST_ELEM, |e| {
            put_str(e, NFTA_EXPR_NAME, name);
            if !body.is_empty() {
                nest(e, NFTA_EXPR_DATA, |d| d.extend_from_slice(&body));
            }
        });
    }
}

/// A base chain's hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    /// Filter or NAT.
    pub kind: ChainType,
    /// Where it hooks.
    pub hook: Hook,
    /// Its priority (lower runs first; NAT uses -100 for dstnat, 100 for srcnat).
    pub priority: i32,
    /// The policy when no rule decides.
    pub policy: Verdict,
}

/// A set or map definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDef {
    /// Its name.
    pub name: String,
    /// nft's data type number of the key (for `nft list`; the kernel only stores it).
    pub key_type: u32,
    /// Key length in bytes (register-padded for concatenations).
    pub key_len: u32,
    /// An interval set (prefixes as ranges).
    pub interval: bool,
    /// For maps: the value's nft type number and length.
    pub data: Option<(u32, u32)>,
    /// Opaque bytes stored with the set (nft keeps display hints there); empty for none.
    pub userdata: Vec<u8>,
}

/// One set element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// The key bytes.
    pub key: Vec<u8>,
    /// For maps: the value bytes.
    pub data: Option<Vec<u8>>,
    /// In interval sets: this element closes an interval.
    pub interval_end: bool,
    /// Opaque bytes stored with the element (nft shows a TLV comment).
    pub userdata: Option<Vec<u8>>,
}

/// An nf_tables batch being built: every message in it is applied atomically or not at all.
#[derive(Debug)]
pub struct Batch {
    pub(crate) buf: Vec<u8>,
    pub(crate) ops: Vec<(u32, String)>,
    seq: u32,
}

impl Batch {
    pub(crate) fn new(seq: u32) -> Self {
        let mut b = Batch {
            buf: Vec::with_capacity(4096),
            ops: Vec::new(),
            seq,
        };
        b.raw(NFNL_MSG_BATCH_BEGIN, 0, 0, NFNL_SUBSYS_NFTABLES, |_| {});
        b
    }

    /// Number of messages between the batch markers.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no messages.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn raw(&mut self, ty: u16, flags: u16, family: u8, res_id: u16, f: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]); // length, patched below
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf
            .extend_from_slice(&(flags | nlm::REQUEST).to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        self.buf.push(family);
        self.buf.push(0); // NFNETLINK_V0
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        f(&mut self.buf);
        let len = (self.buf.len() - start) as u32;
        self.buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
        self.seq = self.seq.wrapping_add(1);
    }

    fn msg(
        &mut self,
        m: u8,
        flags: u16,
        family: Family,
        what: String,
        f: impl FnOnce(&mut Vec<u8>),
    ) {
        self.ops.push((self.seq, what));
        self.raw(
            (NFNL_SUBSYS_NFTABLES << 8) | m as u16,
            flags | nlm::ACK,
            family.number(),
            0,
            f,
        );
    }

    pub(crate) fn finish(mut self) -> (Vec<u8>, Vec<(u32, String)>, u32) {
        self.raw(NFNL_MSG_BATCH_END, 0, 0, NFNL_SUBSYS_NFTABLES, |_| {});
        (self.buf, self.ops, self.seq)
    }

    /// Creates a table, or leaves an existing one as it is.
    pub fn add_table(&mut self, family: Family, name: &str) {
        self.msg(
            msg::NEWTABLE,
            nlm::CREATE,
            family,
            format!("create table {} {name}", family.name()),
            |b| put_str(b, NFTA_TABLE_NAME, name),
        );
    }

    /// Deletes a table with everything in it; a missing table is not an error.
    pub fn destroy_table(&mut self, family: Family, name: &str) {
        self.msg(
            msg::DESTROYTABLE,
            0,
            family,
            format!("delete table {} {name}", family.name()),
            |b| put_str(b, NFTA_TABLE_NAME, name),
        );
    }

    /// Creates a chain (a base chain when `base` is given), or updates an existing one.
    pub fn add_chain(&mut self, family: Family, table: &str, name: &str, base: Option<BaseChain>) {
        self.msg(
            msg::NEWCHAIN,
            nlm::CREATE,
            family,
            format!("create chain {} {table} {name}", family.name()),
            |b| {
                put_str(b, NFTA_CHAIN_TABLE, table);
                put_str(b, NFTA_CHAIN_NAME, name);
                if let Some(base) = base {
                    nest(b, NFTA_CHAIN_HOOK, |h| {
                        put_be32(h, NFTA_HOOK_HOOKNUM, base.hook as u32);
                        put(h, NFTA_HOOK_PRIORITY, &base.priority.to_be_bytes());
                    });
                    put(b, NFTA_CHAIN_POLICY, &base.policy.code().to_be_bytes());
                    put_str(
                        b,
                        NFTA_CHAIN_TYPE,
                        match base.kind {
                            ChainType::Filter => "filter",
                            ChainType::Nat => "nat",
                        },
                    );
                }
            },
        );
    }

    /// Deletes every rule of a chain.
    pub fn flush_chain(&mut self, family: Family, table: &str, chain: &str) {
        self.msg(
            msg::DELRULE,
            0,
            family,
            format!("flush chain {} {table} {chain}", family.name()),
            |b| {
                put_str(b, NFTA_RULE_TABLE, table);
                put_str(b, NFTA_RULE_CHAIN, chain);
            },
        );
    }

    /// Appends a rule to a chain.
    pub fn add_rule(&mut self, family: Family, table: &str, chain: &str, exprs: &[Expr]) {
        self.msg(
            msg::NEWRULE,
            nlm::CREATE | nlm::APPEND,
            family,
            format!("add rule to chain {} {table} {chain}", family.name()),
            |b| {
                put_str(b, NFTA_RULE_TABLE, table);
                put_str(b, NFTA_RULE_CHAIN, chain);
                nest(b, NFTA_RULE_EXPRESSIONS, |l| {
                    for e in exprs {
                        e.encode(l);
                    }
                });
            },
        );
    }

    /// Creates a set or map, or leaves an identical existing one.
    pub fn add_set(&mut self, family: Family, table: &str, set: &SetDef) {
        let id = self.seq;
        self.msg(
            msg::NEWSET,
            nlm::CREATE,
            family,
            format!("create set {} {table} {}", family.name(), set.name),
            |b| {
                put_str(b, NFTA_SET_TABLE, table);
                put_str(b, NFTA_SET_NAME, &set.name);
                let mut flags = 0;
                if set.interval {
                    flags |= NFT_SET_INTERVAL;
                }
                if set.data.is_some() {
                    flags |= NFT_SET_MAP;
                }
                put_be32(b, NFTA_SET_FLAGS, flags);
                put_be32(b, NFTA_SET_KEY_TYPE, set.key_type);
                put_be32(b, NFTA_SET_KEY_LEN, set.key_len);
                if let Some((ty, len)) = set.data {
                    put_be32(b, NFTA_SET_DATA_TYPE, ty);
                    put_be32(b, NFTA_SET_DATA_LEN, len);
                }
                put_be32(b, NFTA_SET_ID, id); // required, unique within the batch
                if !set.userdata.is_empty() {
                    put(b, NFTA_SET_USERDATA, &set.userdata);
                }
            },
        );
    }

    fn elements(
        &mut self,
        (m, flags): (u8, u16),
        (family, table, set): (Family, &str, &str),
        what: String,
        elems: &[Element],
    ) {
        self.msg(m, flags, family, what, |b| {
            put_str(b, NFTA_SET_ELEM_LIST_TABLE, table);
            put_str(b, NFTA_SET_ELEM_LIST_SET, set);
            nest(b, NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
                for e in elems {
                    nest(l, NFTA_LIST_ELEM, |el| {
                        put_data(el, NFTA_SET_ELEM_KEY, &e.key);
                        if let Some(d) = &e.data {
                            put_data(el, NFTA_SET_ELEM_DATA, d);
                        }
                        if e.interval_end {
                            put_be32(el, NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
                        }
                        if let Some(u) = &e.userdata {
                            put(el, NFTA_SET_ELEM_USERDATA, u);
                        }
                    });
                }
            });
        });
    }

    /// Inserts elements; with `exclusive`, an element already present fails the batch with
    /// `EEXIST`.
    pub fn add_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        elems: &[Element],
        exclusive: bool,
    ) {
        if elems.is_empty() {
            return;
        }
        let flags = nlm::CREATE | if exclusive { nlm::EXCL } else { 0 };
        let what = format!("add elements to set {} {table} {set}", family.name());
        self.elements((msg::NEWSETELEM, flags), (family, table, set), what, elems);
    }

    /// Removes elements; missing ones are not an error.
    pub fn destroy_elements(&mut self, family: Family, table: &str, set: &str, elems: &[Element]) {
        if elems.is_empty() {
            return;
        }
        let what = format!("delete elements from set {} {table} {set}", family.name());
        self.elements((msg::DESTROYSETELEM, 0), (family, table, set), what, elems);
    }
}

/// Builds a single dump request (`GET*` with `NLM_F_DUMP`).
pub(crate) fn dump_request(m: u8, family: u8, seq: u32, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | m as u16).to_ne_bytes());
    buf.extend_from_slice(&(nlm::REQUEST | nlm::DUMP).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.push(family);
    buf.push(0);
    buf.extend_from_slice(&0u16.to_be_bytes());
    f(&mut buf);
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

/// One netlink message out of a receive buffer.
pub(crate) struct NlMsg<'a> {
    pub ty: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Splits a receive buffer into netlink messages (stops at the first malformed one).
pub(crate) fn messages(mut buf: &[u8]) -> Vec<NlMsg<'_>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        out.push(NlMsg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[16..len],
        });
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
    }
    out
}

/// Iterates over the attributes in `buf`: (type without flags, value).
pub(crate) fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
    }
    out
}

/// The first attribute of type `ty`.
pub(crate) fn attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf)
        .into_iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, v)| v)
}

/// A NUL-terminated string attribute.
pub(crate) fn attr_str(buf: &[u8], ty: u16) -> Option<String> {
    attr(buf, ty).map(|v| {
        let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
        String::from_utf8_lossy(&v[..end]).into_owned()
    })
}

/// Parses the elements of one `NEWSETELEM` dump message payload (after the nfgenmsg).
pub(crate) fn parse_elements(payload: &[u8]) -> Vec<Element> {
    let mut out = Vec::new();
    let Some(list) = attr(payload, NFTA_SET_ELEM_LIST_ELEMENTS) else {
        return out;
    };
    for (_, el) in attrs(list) {
        let value = |ty| {
            attr(el, ty)
                .and_then(|d| attr(d, NFTA_DATA_VALUE))
                .map(<[u8]>::to_vec)
        };
        let flags = attr(el, NFTA_SET_ELEM_FLAGS)
            .and_then(|f| f.get(..4))
            .map(|f| u32::from_be_bytes([f[0], f[1], f[2], f[3]]))
            .unwrap_or(0);
        out.push(Element {
            key: value(NFTA_SET_ELEM_KEY).unwrap_or_default(),
            data: value(NFTA_SET_ELEM_DATA),
            interval_end: flags & NFT_SET_ELEM_INTERVAL_END != 0,
            userdata: attr(el, NFTA_SET_ELEM_USERDATA).map(<[u8]>::to_vec),
        });
    }
    out
}

pub(crate) const TABLE_NAME_ATTR: u16 = NFTA_TABLE_NAME;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_round_trip() {
        let mut b = Vec::new();
        nest(&mut b, 3, |l| {
            nest(l, 1, |e| {
                put_data(e, NFTA_SET_ELEM_KEY, &[1, 2, 3]);
                put_be32(e, NFTA_SET_ELEM_FLAGS, 1);
                put(e, NFTA_SET_ELEM_USERDATA, b"ab");
            })
        });
        let els = parse_elements(&b);
        assert_eq!(
            els,
            vec![Element {
                key: vec![1, 2, 3],
                data: None,
                interval_end: true,
                userdata: Some(b"ab".to_vec()),
            }]
        );
    }

    #[test]
    fn notrack_and_meta_keys_encode_as_the_kernel_expects() {
        let mut l = Vec::new();
        Expr::Meta {
            key: MetaKey::PktType,
            dreg: REG32_00,
        }
        .encode(&mut l);
        Expr::Notrack.encode(&mut l);
        let exprs = attrs(&l);
        assert_eq!(exprs.len(), 2);
        let (_, meta) = exprs[0];
        assert_eq!(attr_str(meta, NFTA_EXPR_NAME).as_deref(), Some("meta"));
        let data = attr(meta, NFTA_EXPR_DATA).unwrap_or_default();
        assert_eq!(
            attr(data, 2),
            Some(&19u32.to_be_bytes()[..]),
            "NFT_META_PKTTYPE"
        );
        let (_, notrack) = exprs[1];
        assert_eq!(
            attr_str(notrack, NFTA_EXPR_NAME).as_deref(),
            Some("notrack")
        );
        assert_eq!(
            attr(notrack, NFTA_EXPR_DATA),
            None,
            "notrack has no attributes"
        );
        assert_eq!(MetaKey::BriIifName as u32, 17, "NFT_META_BRI_IIFNAME");
        assert_eq!(MetaKey::IifName as u32, 6, "NFT_META_IIFNAME");
    }

    #[test]
    fn batch_is_framed_by_begin_and_end() {
        let mut batch = Batch::new(7);
        batch.add_table(Family::Inet, "t");
        let (buf, ops, next) = batch.finish();
        let msgs = messages(&buf);
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0].ty, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msgs[1].ty, NFNL_SUBSYS_NFTABLES << 8);
        assert_eq!(msgs[2].ty, NFNL_MSG_BATCH_END);
        assert_eq!(ops, vec![(8, "create table inet t".to_string())]);
        assert_eq!(next, 10);
        assert_eq!(
            attr_str(&msgs[1].payload[4..], TABLE_NAME_ATTR).as_deref(),
            Some("t")
        );
    }
}
