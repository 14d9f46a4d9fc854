//! The vocabulary of nf_tables messages: families, hooks, chain types, verdicts, and the keys
//! and operators expressions take.

use super::{nest, nfta, put, put_str};

/// The first 32-bit register (`NFT_REG32_00`); there are 16 (`REG32_00` … `REG32_00 + 15`).
pub const REG32_00: u32 = 8;
/// The verdict register (`NFT_REG_VERDICT`): a lookup writing here makes a verdict map.
pub const REG_VERDICT: u32 = 0;
/// A map's data type for verdicts (`NFT_DATA_VERDICT`): `SetDef::data = Some((DATA_VERDICT,
/// 0))` makes a verdict map, whose elements carry [`Element::verdict`](super::set::Element).
pub const DATA_VERDICT: u32 = 0xffff_ff00;

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
    /// `route`: an output chain (families `ip`, `ip6` and `inet`) after which the kernel
    /// looks the packet's route up again if the chain changed its mark, addresses or
    /// type-of-service (iptables' `mangle` OUTPUT), so a rule setting `meta mark` steers a
    /// locally generated packet through policy routing.
    Route,
}

impl ChainType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
            ChainType::Route => "route",
        }
    }
}

/// A base chain's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// Filter or NAT.
    pub kind: ChainType,
    /// Where it hooks.
    pub hook: Hook,
    /// Its priority (lower runs first; NAT uses -100 for dstnat, 100 for srcnat).
    pub priority: i32,
    /// The policy when no rule decides: [`Verdict::Accept`] or [`Verdict::Drop`] (the kernel
    /// refuses others).
    pub policy: Verdict,
}

/// A verdict: what the immediate expression, a chain's policy or a verdict map's element
/// decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// `drop`.
    Drop,
    /// `accept`.
    Accept,
    /// `return`: back to the rule after the jump that led here (the base chain's policy if
    /// none).
    Return,
    /// `continue`: on with the next expression (a verdict map's "no decision").
    Continue,
    /// `jump CHAIN`: run a regular chain of the same table, then come back.
    Jump(String),
    /// `goto CHAIN`: run a regular chain of the same table and do not come back.
    Goto(String),
}

impl Verdict {
    fn code(&self) -> i32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
            Verdict::Continue => -1,
            Verdict::Jump(_) => -3,
            Verdict::Goto(_) => -4,
            Verdict::Return => -5,
        }
    }

    fn from_code(code: i32, chain: Option<String>) -> Option<Self> {
        Some(match (code, chain) {
            (0, _) => Verdict::Drop,
            (1, _) => Verdict::Accept,
            (-1, _) => Verdict::Continue,
            (-3, Some(c)) => Verdict::Jump(c),
            (-4, Some(c)) => Verdict::Goto(c),
            (-5, _) => Verdict::Return,
            _ => return None,
        })
    }

    /// Appends `NFTA_DATA_VERDICT` (the content of an `nft_data` attribute).
    pub(crate) fn encode_data(&self, buf: &mut Vec<u8>) {
        nest(buf, nfta::DATA_VERDICT, |v| {
            put(v, nfta::VERDICT_CODE, &self.code().to_be_bytes());
            if let Verdict::Jump(c) | Verdict::Goto(c) = self {
                put_str(v, nfta::VERDICT_CHAIN, c);
            }
        });
    }

    /// Reads the `NFTA_DATA_VERDICT` out of an `nft_data` attribute's content.
    pub(crate) fn decode_data(data: &[u8]) -> Option<Self> {
        let v = super::attr(data, nfta::DATA_VERDICT)?;
        let code = super::attr_be32(v, nfta::VERDICT_CODE)? as i32;
        Self::from_code(code, super::attr_str(v, nfta::VERDICT_CHAIN))
    }

    /// The policy code of a base chain.
    pub(crate) fn policy_code(&self) -> i32 {
        self.code()
    }
}

/// The direction of [`Expr::Byteorder`](super::expr::Expr) (`NFT_BYTEORDER_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Network to host order.
    Ntoh = 0,
    /// Host to network order.
    Hton = 1,
}

/// `meta` keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// The packet mark (4 bytes, host order).
    Mark = 3,
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
    /// `ct state` (a bit mask, host order; read only).
    State = 0,
    /// `ct status` (`IPS_*` bits, host order; read only).
    Status = 2,
    /// `ct mark` (4 bytes, host order; read and set).
    Mark = 3,
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

/// Route types `fib … type` yields (`RTN_*`, host order).
pub mod rtn {
    /// A unicast route.
    pub const UNICAST: u32 = 1;
    /// An address of this host.
    pub const LOCAL: u32 = 2;
    /// A broadcast address.
    pub const BROADCAST: u32 = 3;
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

/// Comparison operators. The orderings compare the bytes as a big-endian number, so they
/// suit network-order data (ports, addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`.
    Eq = 0,
    /// `!=`.
    Neq = 1,
    /// `<`.
    Lt = 2,
    /// `<=`.
    Lte = 3,
    /// `>`.
    Gt = 4,
    /// `>=`.
    Gte = 5,
}

/// NAT kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Source NAT.
    Snat = 0,
    /// Destination NAT.
    Dnat = 1,
}

/// How `numgen` makes its numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumgenKind {
    /// A counter, one step per packet (round robin).
    Incremental = 0,
    /// Random.
    Random = 1,
}

/// What `fib` looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FibResult {
    /// The output interface index (4 bytes; 0 when there is no route).
    Oif = 1,
    /// The output interface name (16 bytes).
    OifName = 2,
    /// The route type ([`rtn`], host order).
    AddrType = 3,
}

/// `fib` flags: which address of the packet is looked up, and refinements.
pub mod fib_flags {
    /// The source address.
    pub const SADDR: u32 = 1;
    /// The destination address.
    pub const DADDR: u32 = 2;
    /// Include the packet mark in the lookup.
    pub const MARK: u32 = 4;
    /// Restrict to the input interface.
    pub const IIF: u32 = 8;
    /// Restrict to the output interface.
    pub const OIF: u32 = 16;
}

/// What `dynset` does to the set from the packet path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DynsetOp {
    /// Add the element if absent (an existing element's timeout is left alone).
    Add = 0,
    /// Add the element, or refresh an existing one's timeout.
    Update = 1,
    /// Delete the element.
    Delete = 2,
}

/// What [`Expr::Reject`](super::expr::Expr::Reject) answers with (`NFT_REJECT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// An ICMP (IPv4 table) or ICMPv6 (IPv6 table) destination-unreachable with this code
    /// (`NFT_REJECT_ICMP_UNREACH`; for IPv4, [`icmp_unreach`] codes). The `ip` and `ip6`
    /// families' choice.
    Icmp(u8),
    /// A TCP reset (`NFT_REJECT_TCP_RST`); a packet that is not TCP is only dropped, so put
    /// `meta l4proto tcp` before it.
    TcpReset,
    /// A family-independent unreachable with an [`icmpx`] code (`NFT_REJECT_ICMPX_UNREACH`),
    /// for `inet`, `bridge` and `netdev` tables. The `ip` family's reject does not know it and
    /// only drops: use [`RejectKind::Icmp`] there.
    Icmpx(u8),
}

impl RejectKind {
    /// `NFTA_REJECT_TYPE` and, for the unreachables, `NFTA_REJECT_ICMP_CODE`.
    pub(crate) fn type_and_code(self) -> (u32, Option<u8>) {
        match self {
            RejectKind::Icmp(code) => (0, Some(code)),
            RejectKind::TcpReset => (1, None),
            RejectKind::Icmpx(code) => (2, Some(code)),
        }
    }
}

/// ICMP destination-unreachable codes (IPv4) for [`RejectKind::Icmp`].
pub mod icmp_unreach {
    /// Network unreachable.
    pub const NET: u8 = 0;
    /// Host unreachable.
    pub const HOST: u8 = 1;
    /// Port unreachable: a connecting socket gets `ECONNREFUSED`.
    pub const PORT: u8 = 3;
    /// Communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 13;
}

/// Family-independent unreachable codes (`NFT_REJECT_ICMPX_*`) for [`RejectKind::Icmpx`].
pub mod icmpx {
    /// No route to the destination.
    pub const NO_ROUTE: u8 = 0;
    /// Port unreachable: a connecting socket gets `ECONNREFUSED`.
    pub const PORT_UNREACH: u8 = 1;
    /// Host unreachable.
    pub const HOST_UNREACH: u8 = 2;
    /// Administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 3;
}
