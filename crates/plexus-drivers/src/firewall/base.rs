//! The tables, sets, chains and fixed rules ([`Firewall::ensure_base`]).

use plexus_sys::nft::{
    ct_state, ct_status, pkttype, rtn, BaseChain, ChainType, CmpOp, CtKey, Expr, Family, Hook,
    MetaKey, NatKind, PayloadBase, SetDef, Verdict, REG32_00,
};
use plexus_sys::Result;

use super::addr::addr_len;
use super::*;

pub(super) fn r(n: u32) -> u32 {
    REG32_00 + n
}

pub(super) fn lookup(set: &str, sreg: u32) -> Expr {
    Expr::Lookup {
        set: set.into(),
        sreg,
        dreg: None,
        invert: false,
    }
}

pub(super) fn meta(key: MetaKey) -> Expr {
    Expr::Meta { key, dreg: r(0) }
}

pub(super) fn ct_bits(key: CtKey, bits: u32) -> [Expr; 3] {
    [
        Expr::Ct { key, dreg: r(0) },
        Expr::Bitwise {
            sreg: r(0),
            dreg: r(0),
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Neq,
            data: vec![0; 4],
        },
    ]
}

pub(super) fn nat_sets(f: Family) -> Vec<SetDef> {
    let (ip_type, alen) = if f == Family::Ip6 {
        (TYPE_IP6ADDR, 16)
    } else {
        (TYPE_IPADDR, 4)
    };
    let proto_service = concat(TYPE_INET_PROTOCOL, TYPE_INET_SERVICE);
    vec![
        SetDef {
            name: BRIDGES.into(),
            key_type: TYPE_IFNAME,
            key_len: IFNAMSIZ as u32,
            interval: false,
            data: None,
            userdata: ifname_udata(),
            ..SetDef::default()
        },
        SetDef {
            name: NETS.into(),
            key_type: ip_type,
            key_len: alen,
            interval: true,
            data: None,
            userdata: Vec::new(),
            ..SetDef::default()
        },
        SetDef {
            name: MASQ_NETS.into(),
            key_type: ip_type,
            key_len: alen,
            interval: true,
            data: None,
            userdata: Vec::new(),
            ..SetDef::default()
        },
        SetDef {
            name: PORTS.into(),
            key_type: proto_service,
            key_len: 8,
            interval: false,
            data: Some((concat(ip_type, TYPE_INET_SERVICE), alen + 4)),
            userdata: Vec::new(),
            ..SetDef::default()
        },
        SetDef {
            name: PORTS_IP.into(),
            key_type: concat(concat(ip_type, TYPE_INET_PROTOCOL), TYPE_INET_SERVICE),
            key_len: alen + 8,
            interval: false,
            data: Some((concat(ip_type, TYPE_INET_SERVICE), alen + 4)),
            userdata: Vec::new(),
            ..SetDef::default()
        },
    ]
}

/// The DNAT rules of a prerouting or output chain.
pub(super) fn dnat_rules(f: Family) -> Vec<Vec<Expr>> {
    let alen = addr_len(f);
    let w = alen / 4; // registers an address takes
    let daddr = if f == Family::Ip6 { 24 } else { 16 };
    let dport = |dreg| Expr::Payload {
        base: PayloadBase::Transport,
        offset: 2,
        len: 2,
        dreg,
    };
    let dnat = Expr::Nat {
        kind: NatKind::Dnat,
        family: f,
        addr: Some(r(0)),
        addr_max: None,
        port: Some(r(w)),
        port_max: None,
    };
    vec![
        vec![
            Expr::Payload {
                base: PayloadBase::Network,
                offset: daddr,
                len: alen,
                dreg: r(0),
            },
            Expr::Meta {
                key: MetaKey::L4Proto,
                dreg: r(w),
            },
            dport(r(w + 1)),
            Expr::Lookup {
                set: PORTS_IP.into(),
                sreg: r(0),
                dreg: Some(r(0)),
                invert: false,
            },
            dnat.clone(),
        ],
        vec![
            Expr::fib_daddr_type(r(0)),
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Eq,
                data: rtn::LOCAL.to_ne_bytes().to_vec(),
            },
            Expr::Meta {
                key: MetaKey::L4Proto,
                dreg: r(0),
            },
            dport(r(1)),
            Expr::Lookup {
                set: PORTS.into(),
                sreg: r(0),
                dreg: Some(r(0)),
                invert: false,
            },
            dnat,
        ],
    ]
}

pub(super) fn postrouting_rules(f: Family) -> Vec<Vec<Expr>> {
    let alen = addr_len(f);
    let saddr = Expr::Payload {
        base: PayloadBase::Network,
        offset: if f == Family::Ip6 { 8 } else { 12 },
        len: alen,
        dreg: r(0),
    };
    let mut rules = vec![
        vec![
            saddr.clone(),
            lookup(MASQ_NETS, r(0)),
            meta(MetaKey::OifName),
            Expr::Lookup {
                set: BRIDGES.into(),
                sreg: r(0),
                dreg: None,
                invert: true,
            },
            Expr::Counter,
            Expr::Masquerade,
        ],
        {
            let mut v = ct_bits(CtKey::Status, ct_status::DNAT).to_vec();
            v.extend([
                saddr.clone(),
                lookup(NETS, r(0)),
                meta(MetaKey::OifName),
                lookup(BRIDGES, r(0)),
                Expr::Counter,
                Expr::Masquerade,
            ]);
            v
        },
    ];
    if f == Family::Ip {
        let mut v = ct_bits(CtKey::Status, ct_status::DNAT).to_vec();
        v.extend([
            saddr,
            Expr::Bitwise {
                sreg: r(0),
                dreg: r(0),
                mask: vec![255, 0, 0, 0],
                xor: vec![0; 4],
            },
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Eq,
                data: vec![127, 0, 0, 0],
            },
            meta(MetaKey::OifName),
            lookup(BRIDGES, r(0)),
            Expr::Counter,
            Expr::Masquerade,
        ]);
        rules.push(v);
    }
    rules
}

pub(super) fn forward_rules() -> Vec<Vec<Expr>> {
    let accept = Expr::Verdict(Verdict::Accept);
    let drop = Expr::Verdict(Verdict::Drop);
    let mut est = ct_bits(CtKey::State, ct_state::ESTABLISHED | ct_state::RELATED).to_vec();
    est.push(accept.clone());
    let mut dnat = ct_bits(CtKey::Status, ct_status::DNAT).to_vec();
    dnat.push(accept.clone());
    vec![
        // First: with br_netfilter on, every frame switched between two sandboxes of one
        // network comes through here (untracked, so `ct state` would not match it anyway).
        vec![
            Expr::Meta {
                key: MetaKey::IifName,
                dreg: r(0),
            },
            Expr::Meta {
                key: MetaKey::OifName,
                dreg: r(IFNAMSIZ as u32 / 4),
            },
            lookup(INTRA, r(0)),
            accept.clone(),
        ],
        est,
        vec![
            meta(MetaKey::IifName),
            lookup(INTERNAL, r(0)),
            Expr::Counter,
            drop.clone(),
        ],
        vec![
            meta(MetaKey::OifName),
            lookup(INTERNAL, r(0)),
            Expr::Counter,
            drop.clone(),
        ],
        dnat,
        vec![
            meta(MetaKey::IifName),
            lookup(BRIDGES, r(0)),
            meta(MetaKey::OifName),
            lookup(BRIDGES, r(0)),
            Expr::Counter,
            drop.clone(),
        ],
        vec![meta(MetaKey::IifName), lookup(BRIDGES, r(0)), accept],
        vec![
            meta(MetaKey::OifName),
            lookup(BRIDGES, r(0)),
            Expr::Counter,
            drop,
        ],
    ]
}

/// `iifname "plxv*" meta pkttype other notrack`: frames a bridge switches from a sandbox
/// port to another port are not tracked.
pub(super) fn notrack_rule() -> Vec<Expr> {
    vec![
        meta(MetaKey::IifName),
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Eq,
            data: SANDBOX_PORT_PREFIX.as_bytes().to_vec(),
        },
        meta(MetaKey::PktType),
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Eq,
            data: vec![pkttype::OTHERHOST],
        },
        Expr::Notrack,
    ]
}

impl Firewall {
    /// Creates Plexus's tables, sets and chains, and (re)writes their fixed rules, in one
    /// batch. Idempotent: the sets and their elements (networks, ports) survive a second call.
    pub fn ensure_base(&self) -> Result<()> {
        let mut b = self.nft.batch();
        b.add_table(Family::Inet, FILTER_TABLE);
        for (name, fields) in [(BRIDGES, 1), (INTERNAL, 1), (INTRA, 2)] {
            b.add_set(
                Family::Inet,
                FILTER_TABLE,
                &SetDef {
                    name: name.into(),
                    key_type: if fields == 1 {
                        TYPE_IFNAME
                    } else {
                        concat(TYPE_IFNAME, TYPE_IFNAME)
                    },
                    key_len: (IFNAMSIZ * fields) as u32,
                    interval: false,
                    data: None,
                    userdata: if fields == 1 {
                        ifname_udata()
                    } else {
                        Vec::new()
                    },
                    ..SetDef::default()
                },
            );
        }
        b.add_chain(
            Family::Inet,
            FILTER_TABLE,
            FORWARD,
            Some(BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Forward,
                priority: 0,
                policy: Verdict::Accept,
            }),
        );
        b.flush_chain(Family::Inet, FILTER_TABLE, FORWARD);
        for rule in forward_rules() {
            b.add_rule(Family::Inet, FILTER_TABLE, FORWARD, &rule);
        }
        for f in [Family::Ip, Family::Ip6] {
            b.add_table(f, NAT_TABLE);
            for set in nat_sets(f) {
                b.add_set(f, NAT_TABLE, &set);
            }
            for (chain, hook, priority) in [
                (PREROUTING, Hook::Prerouting, -100),
                (OUTPUT, Hook::Output, -100),
                (POSTROUTING, Hook::Postrouting, 100),
            ] {
                b.add_chain(
                    f,
                    NAT_TABLE,
                    chain,
                    Some(BaseChain {
                        kind: ChainType::Nat,
                        hook,
                        priority,
                        policy: Verdict::Accept,
                    }),
                );
                b.flush_chain(f, NAT_TABLE, chain);
                let rules = if hook == Hook::Postrouting {
                    postrouting_rules(f)
                } else {
                    dnat_rules(f)
                };
                for rule in rules {
                    b.add_rule(f, NAT_TABLE, chain, &rule);
                }
            }
        }
        self.nft.apply(b)?;
        // Separately, and optional: without it frames between sandboxes stay tracked when
        // br_netfilter is on (slower, still correct), so a kernel without nf_tables for the
        // bridge family still runs Plexus.
        let mut b = self.nft.batch();
        b.add_table(Family::Bridge, FILTER_TABLE);
        b.add_chain(
            Family::Bridge,
            FILTER_TABLE,
            PREROUTING,
            Some(BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Prerouting,
                priority: BRIDGE_EARLY,
                policy: Verdict::Accept,
            }),
        );
        b.flush_chain(Family::Bridge, FILTER_TABLE, PREROUTING);
        b.add_rule(Family::Bridge, FILTER_TABLE, PREROUTING, &notrack_rule());
        if let Err(e) = self.nft.apply(b) {
            tracing::warn!(error = %e, "no bridge-family notrack rule: frames between sandboxes are tracked when br_netfilter is on");
        }
        tracing::debug!(netns = %self.nft.netns().path().display(), "plexus nf_tables base ensured");
        Ok(())
    }
}
