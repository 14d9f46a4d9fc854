//! The expressions of a rule, and their encoding (`NFTA_EXPR_NAME` + `NFTA_EXPR_DATA`).

use std::time::Duration;

use super::types::{
    fib_flags, ByteOrder, CmpOp, CtKey, DynsetOp, Family, FibResult, MetaKey, NatKind, NumgenKind,
    PayloadBase, RejectKind, Verdict, REG_VERDICT,
};
use super::{millis, nest, nfta, put, put_be32, put_be64, put_data, put_str};

/// `NFT_PAYLOAD_CSUM_INET`: the payload write updates an Internet checksum.
const NFT_PAYLOAD_CSUM_INET: u32 = 1;

/// One nf_tables expression. Registers are 32-bit register numbers
/// ([`REG32_00`](super::types::REG32_00) + n), or [`REG_VERDICT`] for the verdict register.
/// Data wider than 4 bytes spans consecutive registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Load a `meta` key into `dreg`.
    Meta {
        /// The key.
        key: MetaKey,
        /// Destination register.
        dreg: u32,
    },
    /// Set a `meta` key (e.g. [`MetaKey::Mark`]) from `sreg`.
    MetaSet {
        /// The key.
        key: MetaKey,
        /// Source register.
        sreg: u32,
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
    /// Write `len` bytes from `sreg` into the packet (`tcp dport set …`), fixing the
    /// checksum at `csum_offset` of the same header when given (the transport header's own
    /// checksum for a port: 6 in UDP, 16 in TCP). A UDP datagram without a checksum keeps
    /// none.
    PayloadSet {
        /// Which header.
        base: PayloadBase,
        /// Offset in the header.
        offset: u32,
        /// How many bytes.
        len: u32,
        /// Source register.
        sreg: u32,
        /// The offset of the Internet checksum to update, in the same header.
        csum_offset: Option<u32>,
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
    /// Look the register up in a set; in a map, write the value to `dreg`. With `dreg`
    /// [`REG_VERDICT`] the map is a verdict map (`vmap`): the element's verdict applies
    /// (see [`Expr::vmap`]).
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
    /// Add, refresh or delete an element of a set from the packet path (`add @set { … }`,
    /// `update @set { … }`). The set needs [`SetDef::dynamic`](super::set::SetDef), and
    /// [`SetDef::timeout`](super::set::SetDef) for a timeout.
    Dynset {
        /// The set's name (in the rule's table).
        set: String,
        /// Add, update or delete.
        op: DynsetOp,
        /// The key's first register.
        sreg_key: u32,
        /// For maps: the value's first register.
        sreg_data: Option<u32>,
        /// The element's timeout (`None`: the set's default).
        timeout: Option<Duration>,
    },
    /// Put bytes into a register (`dreg` not [`REG_VERDICT`]; for verdicts use
    /// [`Expr::Verdict`]).
    Immediate {
        /// Destination register.
        dreg: u32,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A verdict (accept, drop, return, jump, goto).
    Verdict(Verdict),
    /// A number per packet into `dreg` (4 bytes, host order): `offset + (n mod modulus)`.
    Numgen {
        /// Random or incremental.
        kind: NumgenKind,
        /// The modulus (> 0).
        modulus: u32,
        /// Added to the result.
        offset: u32,
        /// Destination register.
        dreg: u32,
    },
    /// Convert `size`-byte words (2, 4 or 8) of `len` bytes from `sreg` between host and
    /// network order, into `dreg` (`byteorder`). `numgen` and `jhash` write host order, and
    /// interval sets compare keys as big-endian bytes: nft converts such a number with
    /// [`ByteOrder::Hton`] before looking it up in a range map.
    Byteorder {
        /// Which way.
        op: ByteOrder,
        /// Source register.
        sreg: u32,
        /// Destination register.
        dreg: u32,
        /// How many bytes.
        len: u32,
        /// The word size.
        size: u32,
    },
    /// The Jenkins hash of `len` bytes from `sreg`, into `dreg` (4 bytes, host order):
    /// `offset + (jhash(bytes, seed) mod modulus)`.
    Jhash {
        /// First source register.
        sreg: u32,
        /// How many bytes to hash.
        len: u32,
        /// The modulus (> 0).
        modulus: u32,
        /// The seed.
        seed: u32,
        /// Added to the result.
        offset: u32,
        /// Destination register.
        dreg: u32,
    },
    /// Load conntrack information into `dreg`.
    Ct {
        /// The key.
        key: CtKey,
        /// Destination register.
        dreg: u32,
    },
    /// Set a conntrack key ([`CtKey::Mark`]) from `sreg`.
    CtSet {
        /// The key.
        key: CtKey,
        /// Source register.
        sreg: u32,
    },
    /// A route lookup (`fib`) into `dreg` (see [`Expr::fib_daddr_type`]).
    Fib {
        /// What to look up: which address ([`fib_flags`]), and refinements.
        flags: u32,
        /// What the result is.
        result: FibResult,
        /// Destination register.
        dreg: u32,
    },
    /// NAT (`snat to`, `dnat to`) to the address and port ranges held in registers.
    Nat {
        /// SNAT or DNAT.
        kind: NatKind,
        /// `ip` or `ip6`: the addresses' family.
        family: Family,
        /// Register holding the address (the range's start); `None` keeps the address and
        /// maps only the port.
        addr: Option<u32>,
        /// Register holding the range's last address.
        addr_max: Option<u32>,
        /// Register holding the port (big-endian in its first two bytes).
        port: Option<u32>,
        /// Register holding the range's last port.
        port_max: Option<u32>,
    },
    /// Redirect to this host (`redirect to :port`): DNAT to the input interface's primary
    /// address (127.0.0.1 / ::1 for locally generated packets), with the port from a register
    /// when given.
    Redirect {
        /// Register holding the port (big-endian in its first two bytes).
        port: Option<u32>,
        /// Register holding the range's last port.
        port_max: Option<u32>,
    },
    /// Masquerade to the output interface's address.
    Masquerade,
    /// Count packets and bytes (read back with [`Nft::rules`](crate::nft::Nft::rules)).
    Counter,
    /// Mark the packet untracked (`notrack`, no attributes): conntrack then ignores it, and
    /// so does NAT. It must run before conntrack sees the packet (inet families: prerouting
    /// or output below priority -200; bridge family: prerouting below `br_netfilter`'s 0); it
    /// does nothing to a packet that already has a conntrack entry.
    Notrack,
    /// Drop the packet and tell its sender (`reject`): an ICMP unreachable or a TCP reset.
    /// Allowed on the prerouting, input, forward and output hooks. A local program whose
    /// packet is rejected on output gets the answer at once (`ECONNREFUSED` for a port
    /// unreachable or a reset).
    Reject(RejectKind),
}

impl Expr {
    /// `KEY vmap @set`: look the key up in verdict map `set` and apply the verdict found.
    pub fn vmap(set: &str, sreg: u32) -> Self {
        Expr::Lookup {
            set: set.into(),
            sreg,
            dreg: Some(REG_VERDICT),
            invert: false,
        }
    }

    /// `fib daddr type` into `dreg`: the route type of the destination ([`rtn`](super::types::rtn)).
    pub fn fib_daddr_type(dreg: u32) -> Self {
        Expr::Fib {
            flags: fib_flags::DADDR,
            result: FibResult::AddrType,
            dreg,
        }
    }

    /// The kernel's name and the attributes of the expression.
    fn body(&self) -> (&'static str, Vec<u8>) {
        let mut b = Vec::new();
        let name = match self {
            Expr::Meta { key, dreg } => {
                put_be32(&mut b, 1, *dreg); // NFTA_META_DREG
                put_be32(&mut b, 2, *key as u32); // NFTA_META_KEY
                "meta"
            }
            Expr::MetaSet { key, sreg } => {
                put_be32(&mut b, 2, *key as u32); // NFTA_META_KEY
                put_be32(&mut b, 3, *sreg); // NFTA_META_SREG
                "meta"
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                put_be32(&mut b, 1, *dreg);
                put_be32(&mut b, 2, *base as u32);
                put_be32(&mut b, 3, *offset);
                put_be32(&mut b, 4, *len);
                "payload"
            }
            Expr::PayloadSet {
                base,
                offset,
                len,
                sreg,
                csum_offset,
            } => {
                put_be32(&mut b, 2, *base as u32);
                put_be32(&mut b, 3, *offset);
                put_be32(&mut b, 4, *len);
                put_be32(&mut b, 5, *sreg); // NFTA_PAYLOAD_SREG
                if let Some(at) = csum_offset {
                    put_be32(&mut b, 6, NFT_PAYLOAD_CSUM_INET); // NFTA_PAYLOAD_CSUM_TYPE
                    put_be32(&mut b, 7, *at); // NFTA_PAYLOAD_CSUM_OFFSET
                }
                "payload"
            }
            Expr::Cmp { sreg, op, data } => {
                put_be32(&mut b, 1, *sreg);
                put_be32(&mut b, 2, *op as u32);
                put_data(&mut b, 3, data);
                "cmp"
            }
            Expr::Bitwise {
                sreg,
                dreg,
                mask,
                xor,
            } => {
                put_be32(&mut b, 1, *sreg);
                put_be32(&mut b, 2, *dreg);
                put_be32(&mut b, 3, mask.len() as u32); // NFTA_BITWISE_LEN
                put_data(&mut b, 4, mask);
                put_data(&mut b, 5, xor);
                "bitwise"
            }
            Expr::Lookup {
                set,
                sreg,
                dreg,
                invert,
            } => {
                put_str(&mut b, 1, set); // NFTA_LOOKUP_SET
                put_be32(&mut b, 2, *sreg);
                if let Some(d) = dreg {
                    put_be32(&mut b, 3, *d);
                }
                if *invert {
                    put_be32(&mut b, 5, 1); // NFTA_LOOKUP_FLAGS = NFT_LOOKUP_F_INV
                }
                "lookup"
            }
            Expr::Dynset {
                set,
                op,
                sreg_key,
                sreg_data,
                timeout,
            } => {
                put_str(&mut b, 1, set); // NFTA_DYNSET_SET_NAME
                put_be32(&mut b, 3, *op as u32); // NFTA_DYNSET_OP
                put_be32(&mut b, 4, *sreg_key);
                if let Some(d) = sreg_data {
                    put_be32(&mut b, 5, *d);
                }
                if let Some(t) = timeout {
                    put_be64(&mut b, 6, millis(*t)); // NFTA_DYNSET_TIMEOUT
                }
                "dynset"
            }
            Expr::Immediate { dreg, data } => {
                put_be32(&mut b, 1, *dreg); // NFTA_IMMEDIATE_DREG
                put_data(&mut b, 2, data); // NFTA_IMMEDIATE_DATA
                "immediate"
            }
            Expr::Verdict(v) => {
                put_be32(&mut b, 1, REG_VERDICT);
                nest(&mut b, 2, |d| v.encode_data(d));
                "immediate"
            }
            Expr::Numgen {
                kind,
                modulus,
                offset,
                dreg,
            } => {
                put_be32(&mut b, 1, *dreg); // NFTA_NG_DREG
                put_be32(&mut b, 2, *modulus);
                put_be32(&mut b, 3, *kind as u32);
                if *offset != 0 {
                    put_be32(&mut b, 4, *offset);
                }
                "numgen"
            }
            Expr::Byteorder {
                op,
                sreg,
                dreg,
                len,
                size,
            } => {
                put_be32(&mut b, 1, *sreg); // NFTA_BYTEORDER_SREG
                put_be32(&mut b, 2, *dreg);
                put_be32(&mut b, 3, *op as u32);
                put_be32(&mut b, 4, *len);
                put_be32(&mut b, 5, *size);
                "byteorder"
            }
            Expr::Jhash {
                sreg,
                len,
                modulus,
                seed,
                offset,
                dreg,
            } => {
                put_be32(&mut b, 1, *sreg); // NFTA_HASH_SREG
                put_be32(&mut b, 2, *dreg);
                put_be32(&mut b, 3, *len);
                put_be32(&mut b, 4, *modulus);
                put_be32(&mut b, 5, *seed);
                if *offset != 0 {
                    put_be32(&mut b, 6, *offset);
                }
                put_be32(&mut b, 7, 0); // NFTA_HASH_TYPE = NFT_HASH_JENKINS
                "hash"
            }
            Expr::Ct { key, dreg } => {
                put_be32(&mut b, 1, *dreg); // NFTA_CT_DREG
                put_be32(&mut b, 2, *key as u32); // NFTA_CT_KEY
                "ct"
            }
            Expr::CtSet { key, sreg } => {
                put_be32(&mut b, 2, *key as u32);
                put_be32(&mut b, 4, *sreg); // NFTA_CT_SREG
                "ct"
            }
            Expr::Fib {
                flags,
                result,
                dreg,
            } => {
                put_be32(&mut b, 1, *dreg); // NFTA_FIB_DREG
                put_be32(&mut b, 2, *result as u32);
                put_be32(&mut b, 3, *flags);
                "fib"
            }
            Expr::Nat {
                kind,
                family,
                addr,
                addr_max,
                port,
                port_max,
            } => {
                put_be32(&mut b, 1, *kind as u32); // NFTA_NAT_TYPE
                put_be32(&mut b, 2, family.number() as u32);
                let mut flags = 0;
                if let Some(a) = addr {
                    put_be32(&mut b, 3, *a); // REG_ADDR_MIN
                    flags |= 1; // NF_NAT_RANGE_MAP_IPS
                    if let Some(m) = addr_max {
                        put_be32(&mut b, 4, *m);
                    }
                }
                if let Some(p) = port {
                    put_be32(&mut b, 5, *p); // REG_PROTO_MIN
                    flags |= 2; // NF_NAT_RANGE_PROTO_SPECIFIED
                    if let Some(m) = port_max {
                        put_be32(&mut b, 6, *m);
                    }
                }
                put_be32(&mut b, 7, flags); // NFTA_NAT_FLAGS
                "nat"
            }
            Expr::Redirect { port, port_max } => {
                if let Some(p) = port {
                    put_be32(&mut b, 1, *p); // NFTA_REDIR_REG_PROTO_MIN
                    if let Some(m) = port_max {
                        put_be32(&mut b, 2, *m);
                    }
                }
                "redir"
            }
            Expr::Masquerade => "masq",
            Expr::Counter => "counter",
            Expr::Notrack => "notrack",
            Expr::Reject(kind) => {
                let (ty, code) = kind.type_and_code();
                put_be32(&mut b, 1, ty); // NFTA_REJECT_TYPE
                if let Some(code) = code {
                    put(&mut b, 2, &[code]); // NFTA_REJECT_ICMP_CODE (u8)
                }
                "reject"
            }
        };
        (name, b)
    }

    /// Appends the expression as one element of `NFTA_RULE_EXPRESSIONS`.
    pub(crate) fn encode(&self, buf: &mut Vec<u8>) {
        let (name, body) = self.body();
        nest(buf, nfta::LIST_ELEM, |e| {
            put_str(e, nfta::EXPR_NAME, name);
            if !body.is_empty() {
                nest(e, nfta::EXPR_DATA, |d| d.extend_from_slice(&body));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::types::REG32_00;
    use super::super::{attr, attr_be32, attr_str, attrs};
    use super::*;

    fn encoded(exprs: &[Expr]) -> Vec<u8> {
        let mut l = Vec::new();
        for e in exprs {
            e.encode(&mut l);
        }
        l
    }

    #[test]
    fn notrack_and_meta_keys_encode_as_the_kernel_expects() {
        let l = encoded(&[
            Expr::Meta {
                key: MetaKey::PktType,
                dreg: REG32_00,
            },
            Expr::Notrack,
        ]);
        let exprs = attrs(&l);
        assert_eq!(exprs.len(), 2);
        let (_, meta) = exprs[0];
        assert_eq!(attr_str(meta, nfta::EXPR_NAME).as_deref(), Some("meta"));
        let data = attr(meta, nfta::EXPR_DATA).unwrap_or_default();
        assert_eq!(attr_be32(data, 2), Some(19), "NFT_META_PKTTYPE");
        let (_, notrack) = exprs[1];
        assert_eq!(
            attr_str(notrack, nfta::EXPR_NAME).as_deref(),
            Some("notrack")
        );
        assert_eq!(
            attr(notrack, nfta::EXPR_DATA),
            None,
            "notrack has no attributes"
        );
        assert_eq!(MetaKey::BriIifName as u32, 17, "NFT_META_BRI_IIFNAME");
        assert_eq!(MetaKey::IifName as u32, 6, "NFT_META_IIFNAME");
    }

    #[test]
    fn byteorder_encodes_its_registers_and_sizes() {
        let l = encoded(&[Expr::Byteorder {
            op: ByteOrder::Hton,
            sreg: REG32_00,
            dreg: REG32_00 + 1,
            len: 4,
            size: 4,
        }]);
        let exprs = attrs(&l);
        let (_, e) = exprs[0];
        assert_eq!(attr_str(e, nfta::EXPR_NAME).as_deref(), Some("byteorder"));
        let data = attr(e, nfta::EXPR_DATA).unwrap_or_default();
        let got: Vec<_> = (1..=5).map(|t| attr_be32(data, t)).collect();
        let want = [REG32_00, REG32_00 + 1, 1, 4, 4].map(Some);
        assert_eq!(got, want, "SREG, DREG, OP (NFT_BYTEORDER_HTON), LEN, SIZE");
    }

    #[test]
    fn verdicts_and_vmaps_use_the_verdict_register() {
        let l = encoded(&[
            Expr::vmap("services", REG32_00),
            Expr::Verdict(Verdict::Goto("c".into())),
        ]);
        let exprs = attrs(&l);
        let lookup = attr(exprs[0].1, nfta::EXPR_DATA).unwrap_or_default();
        assert_eq!(attr_be32(lookup, 3), Some(REG_VERDICT), "NFTA_LOOKUP_DREG");
        let imm = attr(exprs[1].1, nfta::EXPR_DATA).unwrap_or_default();
        let data = attr(imm, 2).unwrap_or_default();
        assert_eq!(Verdict::decode_data(data), Some(Verdict::Goto("c".into())));
    }

    #[test]
    fn reject_encodes_its_type_and_code() {
        use super::super::types::{icmp_unreach, icmpx};
        let l = encoded(&[
            Expr::Reject(RejectKind::Icmp(icmp_unreach::PORT)),
            Expr::Reject(RejectKind::TcpReset),
            Expr::Reject(RejectKind::Icmpx(icmpx::PORT_UNREACH)),
        ]);
        let exprs = attrs(&l);
        assert_eq!(exprs.len(), 3);
        let want = [(0, Some(3u8)), (1, None), (2, Some(1u8))];
        for ((_, e), (ty, code)) in exprs.iter().zip(want) {
            assert_eq!(attr_str(e, nfta::EXPR_NAME).as_deref(), Some("reject"));
            let data = attr(e, nfta::EXPR_DATA).unwrap_or_default();
            assert_eq!(attr_be32(data, 1), Some(ty), "NFTA_REJECT_TYPE");
            assert_eq!(
                attr(data, 2).map(<[u8]>::to_vec),
                code.map(|c| vec![c]),
                "NFTA_REJECT_ICMP_CODE is one byte, only for unreachables"
            );
        }
    }
}
