//! nf_tables, probed by making a table of each kind of rule the [`nft`](crate::nft) layer
//! encodes, in the scratch namespace. Each group is a batch of its own in a table of its
//! own, so one missing part (say NAT) does not hide the others.

use crate::netns::Netns;
use crate::nft::{
    ct_state, ct_status, pkttype, rtn, BaseChain, Batch, ChainType, CmpOp, CtKey, Element, Expr,
    Family, Hook, MetaKey, NatKind, Nft, NumgenKind, PayloadBase, SetDef, Verdict, DATA_VERDICT,
    REG32_00,
};

use super::{Feature, Outcome};

fn r(n: u32) -> u32 {
    REG32_00 + n
}

fn base(kind: ChainType, hook: Hook, priority: i32) -> Option<BaseChain> {
    Some(BaseChain {
        kind,
        hook,
        priority,
        policy: Verdict::Accept,
    })
}

fn ifname(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.resize(16, 0);
    v
}

/// `ct KEY & bits != 0`.
fn ct_bits(key: CtKey, bits: u32) -> [Expr; 3] {
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

/// Tables, chains, sets (plain, concatenated, interval), elements, and the expressions of
/// filter rules: meta, payload, bitwise, cmp, lookup, counter, verdicts.
fn filter(b: &mut Batch) {
    let (f, t, c) = (Family::Inet, "probe", "forward");
    b.add_table(f, t);
    for (name, key_len, interval) in [("ifs", 16, false), ("pairs", 32, false), ("nets", 4, true)] {
        b.add_set(
            f,
            t,
            &SetDef {
                name: name.into(),
                key_len,
                interval,
                ..SetDef::default()
            },
        );
    }
    b.add_elements(f, t, "ifs", &[Element::key(ifname("probe0"))], false);
    b.add_chain(f, t, c, base(ChainType::Filter, Hook::Forward, 0));
    let lookup = |set: &str, invert| Expr::Lookup {
        set: set.into(),
        sreg: r(0),
        dreg: None,
        invert,
    };
    b.add_rule(
        f,
        t,
        c,
        &[
            Expr::Meta {
                key: MetaKey::IifName,
                dreg: r(0),
            },
            Expr::Meta {
                key: MetaKey::OifName,
                dreg: r(4),
            },
            lookup("pairs", false),
            Expr::Verdict(Verdict::Accept),
        ],
    );
    b.add_rule(
        f,
        t,
        c,
        &[
            Expr::Meta {
                key: MetaKey::OifName,
                dreg: r(0),
            },
            lookup("ifs", true),
            Expr::Payload {
                base: PayloadBase::Network,
                offset: 12,
                len: 4,
                dreg: r(0),
            },
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
            lookup("nets", false),
            Expr::Counter,
            Expr::Verdict(Verdict::Drop),
        ],
    );
}

/// `ct state` and `ct status` (conntrack).
fn conntrack(b: &mut Batch) {
    let (f, t, c) = (Family::Inet, "probe-ct", "forward");
    b.add_table(f, t);
    b.add_chain(f, t, c, base(ChainType::Filter, Hook::Forward, 0));
    for (key, bits) in [
        (CtKey::State, ct_state::ESTABLISHED | ct_state::RELATED),
        (CtKey::Status, ct_status::DNAT),
    ] {
        let mut rule = ct_bits(key, bits).to_vec();
        rule.push(Expr::Verdict(Verdict::Accept));
        b.add_rule(f, t, c, &rule);
    }
}

/// NAT chains of `ip` and `ip6`, a concatenated map feeding `dnat`, and `masquerade`.
fn nat(b: &mut Batch) {
    let t = "probe-nat";
    for (f, alen) in [(Family::Ip, 4), (Family::Ip6, 16)] {
        let w = alen / 4;
        b.add_table(f, t);
        b.add_set(
            f,
            t,
            &SetDef {
                name: "ports".into(),
                key_len: 8,
                data: Some((0, alen + 4)),
                ..SetDef::default()
            },
        );
        b.add_chain(f, t, "pre", base(ChainType::Nat, Hook::Prerouting, -100));
        b.add_chain(f, t, "post", base(ChainType::Nat, Hook::Postrouting, 100));
        b.add_rule(
            f,
            t,
            "pre",
            &[
                Expr::Meta {
                    key: MetaKey::L4Proto,
                    dreg: r(0),
                },
                Expr::Payload {
                    base: PayloadBase::Transport,
                    offset: 2,
                    len: 2,
                    dreg: r(1),
                },
                Expr::Lookup {
                    set: "ports".into(),
                    sreg: r(0),
                    dreg: Some(r(0)),
                    invert: false,
                },
                Expr::Nat {
                    kind: NatKind::Dnat,
                    family: f,
                    addr: Some(r(0)),
                    addr_max: None,
                    port: Some(r(w)),
                    port_max: None,
                },
            ],
        );
        b.add_rule(
            f,
            t,
            "post",
            &[
                Expr::Meta {
                    key: MetaKey::OifName,
                    dreg: r(0),
                },
                Expr::Cmp {
                    sreg: r(0),
                    op: CmpOp::Neq,
                    data: ifname("lo"),
                },
                Expr::Counter,
                Expr::Masquerade,
            ],
        );
    }
}

/// `fib daddr type local`, in `ip` and `ip6`.
fn fib(b: &mut Batch) {
    let t = "probe-fib";
    for f in [Family::Ip, Family::Ip6] {
        b.add_table(f, t);
        b.add_chain(f, t, "pre", base(ChainType::Filter, Hook::Prerouting, 0));
        b.add_rule(
            f,
            t,
            "pre",
            &[
                Expr::fib_daddr_type(r(0)),
                Expr::Cmp {
                    sreg: r(0),
                    op: CmpOp::Eq,
                    data: rtn::LOCAL.to_ne_bytes().to_vec(),
                },
                Expr::Verdict(Verdict::Accept),
            ],
        );
    }
}

/// The `bridge` family, with `meta pkttype` and `notrack` before `br_netfilter`.
fn bridge(b: &mut Batch) {
    let (f, t, c) = (Family::Bridge, "probe", "pre");
    b.add_table(f, t);
    b.add_chain(f, t, c, base(ChainType::Filter, Hook::Prerouting, -300));
    b.add_rule(
        f,
        t,
        c,
        &[
            Expr::Meta {
                key: MetaKey::IifName,
                dreg: r(0),
            },
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Eq,
                data: b"plxv".to_vec(),
            },
            Expr::Meta {
                key: MetaKey::PktType,
                dreg: r(0),
            },
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Eq,
                data: vec![pkttype::OTHERHOST],
            },
            Expr::Notrack,
        ],
    );
}

/// Verdict maps, `numgen` and `jhash`: service load balancing in kube-proxy's manner.
fn load_balancing(b: &mut Batch) {
    let (f, t) = (Family::Ip, "probe-lb");
    b.add_table(f, t);
    b.add_chain(f, t, "backend", None);
    b.add_chain(f, t, "service", None);
    b.add_set(
        f,
        t,
        &SetDef {
            name: "backends".into(),
            key_len: 4,
            data: Some((DATA_VERDICT, 0)),
            ..SetDef::default()
        },
    );
    b.add_elements(
        f,
        t,
        "backends",
        &[Element {
            key: 0u32.to_ne_bytes().to_vec(),
            verdict: Some(Verdict::Goto("backend".into())),
            ..Element::default()
        }],
        false,
    );
    b.add_rule(
        f,
        t,
        "service",
        &[
            Expr::Numgen {
                kind: NumgenKind::Random,
                modulus: 1,
                offset: 0,
                dreg: r(0),
            },
            Expr::vmap("backends", r(0)),
        ],
    );
    b.add_rule(
        f,
        t,
        "service",
        &[
            Expr::Payload {
                base: PayloadBase::Network,
                offset: 12,
                len: 4,
                dreg: r(0),
            },
            Expr::Jhash {
                sreg: r(0),
                len: 4,
                modulus: 1,
                seed: 1,
                offset: 0,
                dreg: r(0),
            },
            Expr::vmap("backends", r(0)),
        ],
    );
}

/// What adds one group's table to a batch.
type Builder = fn(&mut Batch);

/// Probes every nf_tables [`Feature`] inside `ns`.
pub(super) fn probe(ns: &Netns) -> Vec<(Feature, Outcome)> {
    let groups: [(Feature, Builder); 6] = [
        (Feature::Nftables, filter),
        (Feature::Conntrack, conntrack),
        (Feature::NftNat, nat),
        (Feature::NftFib, fib),
        (Feature::NftBridge, bridge),
        (Feature::NftLoadBalancing, load_balancing),
    ];
    let nft = match Nft::open(ns) {
        Ok(nft) => nft,
        Err(e) => {
            let why = format!("no nf_tables netlink socket: {e}");
            return groups
                .iter()
                .map(|(f, _)| *f)
                .chain([Feature::NftDestroy])
                .map(|f| (f, Outcome::Missing(why.clone())))
                .collect();
        }
    };
    let mut out: Vec<(Feature, Outcome)> = groups
        .iter()
        .map(|(feature, build)| {
            let mut b = nft.batch();
            build(&mut b);
            let outcome = match nft.apply(b) {
                Ok(()) => Outcome::Present,
                Err(e) => Outcome::Missing(e.to_string()),
            };
            (*feature, outcome)
        })
        .collect();
    let destroy = match nft.has_destroy() {
        Ok(true) => Outcome::Present,
        Ok(false) => Outcome::Missing(
            "nf_tables refused NFT_MSG_DESTROYTABLE (Linux before 6.3, or the pre-6.3 path forced)"
                .into(),
        ),
        Err(e) => Outcome::Missing(e.to_string()),
    };
    out.push((Feature::NftDestroy, destroy));
    out
}
