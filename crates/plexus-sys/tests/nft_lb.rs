//! Service load balancing and chain control with `plexus_sys::nft` against the real
//! kernel, with real TCP through a three-namespace lab (client, router, server; see
//! `common/lab.rs`): verdict maps over concatenated keys, numgen (random, incremental), jhash,
//! data maps feeding DNAT, jump, goto and return. Each test asserts what connections do.
//! Needs root; namespaces are removed by drop guards even when a test fails.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use plexus_sys::nft::{Element, Expr, Family, MetaKey, NumgenKind, SetDef, Verdict, DATA_VERDICT};

#[macro_use]
mod common;
use common::lab::*;
use common::ok;

#[tokio::test]
async fn vmap_accepts_and_drops_per_port_and_updates_in_place() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(
        &lab.server.ns,
        &[sa(SERVER_A, 80), sa(SERVER_A, 81), sa(SERVER_A, 82)],
    );
    let mut b = filter_table(&lab.nft);
    // ip daddr . meta l4proto . th dport vmap @ports
    b.add_set(
        Family::Ip,
        "t",
        &SetDef {
            name: "ports".into(),
            key_len: 12,
            data: Some((DATA_VERDICT, 0)),
            ..SetDef::default()
        },
    );
    b.add_rule(
        Family::Ip,
        "t",
        "fwd",
        &[
            ip4(true, r(0)),
            Expr::Meta {
                key: MetaKey::L4Proto,
                dreg: r(1),
            },
            dport(r(2)),
            Expr::vmap("ports", r(0)),
        ],
    );
    let key = |port: u16| {
        let mut k = SERVER_A.octets().to_vec();
        k.extend_from_slice(&[6, 0, 0, 0]);
        k.extend_from_slice(&port.to_be_bytes());
        k.extend_from_slice(&[0, 0]);
        k
    };
    let verdict = |port, v| Element {
        key: key(port),
        verdict: Some(v),
        ..Element::default()
    };
    b.add_elements(
        Family::Ip,
        "t",
        "ports",
        &[verdict(80, Verdict::Accept), verdict(81, Verdict::Drop)],
        false,
    );
    ok("apply", lab.nft.apply(b));
    reaches(&lab.client.ns, sa(SERVER_A, 80));
    assert!(blocked(&lab.client.ns, sa(SERVER_A, 81)));
    reaches(&lab.client.ns, sa(SERVER_A, 82)); // no element: the chain goes on

    let els = ok("elements", lab.nft.elements(Family::Ip, "t", "ports"));
    assert!(els.contains(&verdict(81, Verdict::Drop)), "{els:?}");
    // One element changes; the others stay as they are.
    let mut b = lab.nft.batch();
    b.delete_elements(Family::Ip, "t", "ports", &[Element::key(key(81))]);
    b.add_elements(
        Family::Ip,
        "t",
        "ports",
        &[verdict(81, Verdict::Accept), verdict(82, Verdict::Drop)],
        false,
    );
    ok("update", lab.nft.apply(b));
    reaches(&lab.client.ns, sa(SERVER_A, 81));
    assert!(blocked(&lab.client.ns, sa(SERVER_A, 82)));
    // Flushed, the map decides nothing.
    let mut b = lab.nft.batch();
    b.flush_set(Family::Ip, "t", "ports");
    ok("flush", lab.nft.apply(b));
    reaches(&lab.client.ns, sa(SERVER_A, 82));
}

#[tokio::test]
async fn service_chains_spread_connections_with_numgen_random() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 80), sa(SERVER_B, 80)]);
    // kube-proxy's layout: a dispatch vmap to a chain per service, which picks a backend
    // chain with numgen random mod N vmap { 0: goto be-a, 1: goto be-b }.
    let mut b = nat_table(&lab.nft);
    for (chain, addr) in [("be-a", SERVER_A), ("be-b", SERVER_B)] {
        b.add_chain(Family::Ip, "t", chain, None);
        b.add_rule(
            Family::Ip,
            "t",
            chain,
            &[
                imm(r(0), &addr.octets()),
                imm(r(1), &80u16.to_be_bytes()),
                dnat4(),
            ],
        );
    }
    b.add_chain(Family::Ip, "t", "svc", None);
    b.add_set(
        Family::Ip,
        "t",
        &SetDef {
            name: "svc-be".into(),
            key_len: 4,
            data: Some((DATA_VERDICT, 0)),
            ..SetDef::default()
        },
    );
    let pick = |n: u32, chain: &str| Element {
        key: n.to_ne_bytes().to_vec(),
        verdict: Some(Verdict::Goto(chain.into())),
        ..Element::default()
    };
    b.add_elements(
        Family::Ip,
        "t",
        "svc-be",
        &[pick(0, "be-a"), pick(1, "be-b")],
        false,
    );
    b.add_rule(
        Family::Ip,
        "t",
        "svc",
        &[
            Expr::Numgen {
                kind: NumgenKind::Random,
                modulus: 2,
                offset: 0,
                dreg: r(0),
            },
            Expr::vmap("svc-be", r(0)),
        ],
    );
    b.add_set(
        Family::Ip,
        "t",
        &SetDef {
            name: "services".into(),
            key_len: 12,
            data: Some((DATA_VERDICT, 0)),
            ..SetDef::default()
        },
    );
    let mut key = VIP.octets().to_vec();
    key.extend_from_slice(&[6, 0, 0, 0, 0, 80, 0, 0]);
    b.add_elements(
        Family::Ip,
        "t",
        "services",
        &[Element {
            key,
            verdict: Some(Verdict::Jump("svc".into())),
            ..Element::default()
        }],
        false,
    );
    b.add_rule(
        Family::Ip,
        "t",
        "pre",
        &[
            ip4(true, r(0)),
            Expr::Meta {
                key: MetaKey::L4Proto,
                dreg: r(1),
            },
            dport(r(2)),
            Expr::vmap("services", r(0)),
        ],
    );
    ok("apply", lab.nft.apply(b));
    let seen = served(&lab, sa(VIP, 80), 40);
    let a = seen
        .iter()
        .filter(|ip| **ip == IpAddr::from(SERVER_A))
        .count();
    let bb = seen
        .iter()
        .filter(|ip| **ip == IpAddr::from(SERVER_B))
        .count();
    assert_eq!(a + bb, 40, "{seen:?}");
    assert!(
        a > 0 && bb > 0,
        "random mod 2 should use both backends: {seen:?}"
    );

    // Backend b goes: only its element changes, then its chain can go.
    let mut b = lab.nft.batch();
    b.delete_elements(
        Family::Ip,
        "t",
        "svc-be",
        &[Element::key(1u32.to_ne_bytes().to_vec())],
    );
    b.add_elements(Family::Ip, "t", "svc-be", &[pick(1, "be-a")], false);
    b.flush_chain(Family::Ip, "t", "be-b");
    b.delete_chain(Family::Ip, "t", "be-b");
    ok("drop backend b", lab.nft.apply(b));
    let seen = served(&lab, sa(VIP, 80), 10);
    assert!(
        seen.iter().all(|ip| *ip == IpAddr::from(SERVER_A)),
        "{seen:?}"
    );
}

#[tokio::test]
async fn numgen_incremental_alternates_exactly() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 80), sa(SERVER_B, 80)]);
    let mut b = nat_table(&lab.nft);
    b.add_set(Family::Ip, "t", &backends_map("rr"));
    b.add_elements(
        Family::Ip,
        "t",
        "rr",
        &[backend(10, SERVER_A, 80), backend(11, SERVER_B, 80)],
        false,
    );
    b.add_rule(
        Family::Ip,
        "t",
        "pre",
        &then(
            to4(VIP, 80),
            [
                Expr::Numgen {
                    kind: NumgenKind::Incremental,
                    modulus: 2,
                    offset: 10,
                    dreg: r(0),
                },
                Expr::Lookup {
                    set: "rr".into(),
                    sreg: r(0),
                    dreg: Some(r(0)),
                    invert: false,
                },
                dnat4(),
            ],
        ),
    );
    ok("apply", lab.nft.apply(b));
    let seen = served(&lab, sa(VIP, 80), 10);
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin should alternate: {seen:?}");
    }
    assert!(seen.contains(&IpAddr::from(SERVER_A)) && seen.contains(&IpAddr::from(SERVER_B)));
}

#[tokio::test]
async fn jhash_of_the_source_keeps_each_client_on_one_backend() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 80), sa(SERVER_B, 80)]);
    let mut b = nat_table(&lab.nft);
    b.add_set(Family::Ip, "t", &backends_map("by-source"));
    b.add_elements(
        Family::Ip,
        "t",
        "by-source",
        &[backend(0, SERVER_A, 80), backend(1, SERVER_B, 80)],
        false,
    );
    b.add_rule(
        Family::Ip,
        "t",
        "pre",
        &then(
            to4(VIP, 80),
            [
                ip4(false, r(0)),
                Expr::Jhash {
                    sreg: r(0),
                    len: 4,
                    modulus: 2,
                    seed: 0x5eed,
                    offset: 0,
                    dreg: r(0),
                },
                Expr::Lookup {
                    set: "by-source".into(),
                    sreg: r(0),
                    dreg: Some(r(0)),
                    invert: false,
                },
                dnat4(),
            ],
        ),
    );
    ok("apply", lab.nft.apply(b));
    let mut by_client: BTreeMap<Ipv4Addr, Vec<IpAddr>> = BTreeMap::new();
    for h in 2..10 {
        let src = Ipv4Addr::new(10, 0, 0, h);
        for _ in 0..3 {
            let seen = talk_from(
                &lab.client.ns,
                Some(src.into()),
                sa(VIP, 80),
                Duration::from_secs(3),
            )
            .unwrap_or_else(|e| panic!("from {src}: {e}"));
            assert_eq!(seen.peer.ip(), IpAddr::from(src));
            by_client.entry(src).or_default().push(seen.local.ip());
        }
    }
    for (src, seen) in &by_client {
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "{src} moved between backends: {seen:?}"
        );
    }
    let firsts: Vec<IpAddr> = by_client.values().map(|v| v[0]).collect();
    assert!(
        firsts.contains(&IpAddr::from(SERVER_A)) && firsts.contains(&IpAddr::from(SERVER_B)),
        "eight sources should hash to both backends: {by_client:?}"
    );
}

#[tokio::test]
async fn jump_returns_and_goto_does_not() {
    need_root!();
    let lab = Lab::new().await;
    let ports: Vec<_> = (80..85).map(|p| sa(SERVER_A, p)).collect();
    let _srv = Servers::start(&lab.server.ns, &ports);
    let mut b = filter_table(&lab.nft);
    b.add_chain(Family::Ip, "t", "sub", None);
    b.add_rule(
        Family::Ip,
        "t",
        "sub",
        &then(tcp_dport(81), [Expr::Verdict(Verdict::Return)]),
    );
    b.add_rule(
        Family::Ip,
        "t",
        "sub",
        &then(tcp_dport(82), [Expr::Verdict(Verdict::Accept)]),
    );
    b.add_chain(Family::Ip, "t", "empty", None);
    b.add_rule(
        Family::Ip,
        "t",
        "fwd",
        &[Expr::Verdict(Verdict::Jump("sub".into()))],
    );
    b.add_rule(
        Family::Ip,
        "t",
        "fwd",
        &then(
            tcp_dport(83),
            [Expr::Verdict(Verdict::Goto("empty".into()))],
        ),
    );
    b.add_rule(
        Family::Ip,
        "t",
        "fwd",
        &then(
            tcp_dport(84),
            [Expr::Verdict(Verdict::Jump("empty".into()))],
        ),
    );
    for port in [81, 82, 83, 84] {
        b.add_rule(
            Family::Ip,
            "t",
            "fwd",
            &then(tcp_dport(port), [Expr::Verdict(Verdict::Drop)]),
        );
    }
    ok("apply", lab.nft.apply(b));
    let c = &lab.client.ns;
    reaches(c, ports[0]); // falls off the end of sub, back in fwd, nothing drops it
    assert!(
        blocked(c, ports[1]),
        "return comes back to fwd, whose rule drops"
    );
    reaches(c, ports[2]); // accept in sub is final
    reaches(c, ports[3]); // goto does not come back: the base chain's policy accepts
    assert!(
        blocked(c, ports[4]),
        "jump comes back to fwd, whose rule drops"
    );
}
