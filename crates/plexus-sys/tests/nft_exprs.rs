//! The nf_tables expressions of `plexus_sys::nft` beyond dispatch (see `nft_lb.rs` for
//! those), against the real kernel with real TCP through a three-namespace lab (client,
//! router, server; see `common/lab.rs`): ct mark, fib, DNAT (IPv4, IPv6), SNAT with ranges,
//! redirect, stateless port rewrites (payload set), counters, element timeouts and dynset.
//! Each test asserts what connections do.
//! Needs root; namespaces are removed by drop guards even when a test fails.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use plexus_sys::nft::{
    ct_status, fib_flags, rtn, ChainType, CmpOp, CtKey, DynsetOp, Element, Expr, Family, FibResult,
    Hook, MetaKey, NatKind, Nft, PayloadBase, SetDef, Verdict,
};

#[macro_use]
mod common;
use common::lab::*;
use common::ok;

#[tokio::test]
async fn ct_mark_set_on_one_connection_is_matched_on_its_packets() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 80), sa(SERVER_A, 81)]);
    let mut b = lab.nft.batch();
    b.add_table(Family::Ip, "t");
    b.add_chain(
        Family::Ip,
        "t",
        "pre",
        base(ChainType::Filter, Hook::Prerouting, 0),
    );
    // The mark goes on the connection from its first packet to port 80 ...
    b.add_rule(
        Family::Ip,
        "t",
        "pre",
        &then(
            to4(SERVER_A, 80),
            [
                imm(r(1), &7u32.to_ne_bytes()),
                Expr::CtSet {
                    key: CtKey::Mark,
                    sreg: r(1),
                },
            ],
        ),
    );
    // ... and forward lets through only marked connections, both ways.
    b.add_chain(
        Family::Ip,
        "t",
        "fwd",
        Some(plexus_sys::nft::BaseChain {
            kind: ChainType::Filter,
            hook: Hook::Forward,
            priority: 0,
            policy: Verdict::Drop,
        }),
    );
    b.add_rule(
        Family::Ip,
        "t",
        "fwd",
        &[
            Expr::Ct {
                key: CtKey::Mark,
                dreg: r(0),
            },
            cmp(r(0), &7u32.to_ne_bytes()),
            Expr::Counter,
            Expr::Verdict(Verdict::Accept),
        ],
    );
    ok("apply", lab.nft.apply(b));
    reaches(&lab.client.ns, sa(SERVER_A, 80));
    assert!(blocked(&lab.client.ns, sa(SERVER_A, 81)));
    let rules = ok("rules", lab.nft.rules(Family::Ip, "t", "fwd"));
    assert!(
        rules[0].counters[0].packets >= 4,
        "both directions matched: {rules:?}"
    );
}

#[tokio::test]
async fn fib_finds_local_destinations_and_output_interfaces() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(
        &lab.server.ns,
        &[sa(SERVER_A, 80), sa(SERVER_A, 81), sa(SERVER_B, 8080)],
    );
    let mut b = nat_table(&lab.nft);
    // fib daddr type local tcp dport 8080 dnat to SERVER_A:80
    b.add_rule(
        Family::Ip,
        "t",
        "pre",
        &then(
            vec![
                Expr::fib_daddr_type(r(0)),
                cmp(r(0), &rtn::LOCAL.to_ne_bytes()),
            ],
            then(
                tcp_dport(8080),
                [
                    imm(r(0), &SERVER_A.octets()),
                    imm(r(1), &80u16.to_be_bytes()),
                    dnat4(),
                ],
            ),
        ),
    );
    // fib daddr oif "s0" tcp dport 81 drop
    b.add_chain(
        Family::Ip,
        "t",
        "fwd",
        base(ChainType::Filter, Hook::Forward, 0),
    );
    b.add_rule(
        Family::Ip,
        "t",
        "fwd",
        &then(
            vec![
                Expr::Fib {
                    flags: fib_flags::DADDR,
                    result: FibResult::Oif,
                    dreg: r(0),
                },
                cmp(r(0), &lab.s0.to_ne_bytes()),
            ],
            then(tcp_dport(81), [Expr::Verdict(Verdict::Drop)]),
        ),
    );
    ok("apply", lab.nft.apply(b));
    // The router's own address: local, so DNATed to a's port 80.
    assert_eq!(
        reaches(&lab.client.ns, sa(ROUTER_C, 8080)).local,
        sa(SERVER_A, 80)
    );
    // b's address is not the router's: left alone, b answers on 8080 itself.
    assert_eq!(
        reaches(&lab.client.ns, sa(SERVER_B, 8080)).local,
        sa(SERVER_B, 8080)
    );
    // Routed out of s0 to port 81: dropped; port 80 passes.
    assert!(blocked(&lab.client.ns, sa(SERVER_A, 81)));
    reaches(&lab.client.ns, sa(SERVER_A, 80));
}

#[tokio::test]
async fn dnat_to_address_and_port_over_ipv4_and_ipv6() {
    need_root!();
    let lab = Lab::new().await;
    let b6 = v6("fd00:1::3");
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_B, 8080), sa(b6, 8080)]);
    let mut b = nat_table(&lab.nft);
    b.add_rule(
        Family::Ip,
        "t",
        "pre",
        &then(
            to4(VIP, 80),
            [
                imm(r(0), &SERVER_B.octets()),
                imm(r(1), &8080u16.to_be_bytes()),
                dnat4(),
            ],
        ),
    );
    let vip6 = v6("fd00:96::1");
    b.add_table(Family::Ip6, "t");
    b.add_chain(
        Family::Ip6,
        "t",
        "pre",
        base(ChainType::Nat, Hook::Prerouting, -100),
    );
    b.add_rule(
        Family::Ip6,
        "t",
        "pre",
        &then(
            vec![
                Expr::Payload {
                    base: plexus_sys::nft::PayloadBase::Network,
                    offset: 24,
                    len: 16,
                    dreg: r(0),
                },
                cmp(r(0), &vip6.octets()),
            ],
            then(
                tcp_dport(80),
                [
                    imm(r(0), &b6.octets()),
                    imm(r(4), &8080u16.to_be_bytes()),
                    Expr::Nat {
                        kind: NatKind::Dnat,
                        family: Family::Ip6,
                        addr: Some(r(0)),
                        addr_max: None,
                        port: Some(r(4)),
                        port_max: None,
                    },
                ],
            ),
        ),
    );
    ok("apply", lab.nft.apply(b));
    let seen = reaches(&lab.client.ns, sa(VIP, 80));
    assert_eq!(
        (seen.local, seen.peer.ip()),
        (sa(SERVER_B, 8080), IpAddr::from(CLIENT))
    );
    assert_eq!(reaches(&lab.client.ns, sa(vip6, 80)).local, sa(b6, 8080));
}

#[tokio::test]
async fn snat_to_an_address_and_port_range() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 80)]);
    assert_eq!(
        reaches(&lab.client.ns, sa(SERVER_A, 80)).peer.ip(),
        IpAddr::from(CLIENT)
    );
    let mut b = lab.nft.batch();
    b.add_table(Family::Ip, "t");
    b.add_chain(
        Family::Ip,
        "t",
        "post",
        base(ChainType::Nat, Hook::Postrouting, 100),
    );
    b.add_rule(
        Family::Ip,
        "t",
        "post",
        &[
            Expr::Meta {
                key: MetaKey::OifName,
                dreg: r(0),
            },
            cmp(r(0), b"s0\0"),
            imm(r(0), &ROUTER_S.octets()),
            imm(r(1), &ROUTER_S.octets()),
            imm(r(2), &40000u16.to_be_bytes()),
            imm(r(3), &40009u16.to_be_bytes()),
            Expr::Nat {
                kind: NatKind::Snat,
                family: Family::Ip,
                addr: Some(r(0)),
                addr_max: Some(r(1)),
                port: Some(r(2)),
                port_max: Some(r(3)),
            },
        ],
    );
    ok("apply", lab.nft.apply(b));
    for _ in 0..3 {
        let peer = reaches(&lab.client.ns, sa(SERVER_A, 80)).peer;
        assert_eq!(peer.ip(), IpAddr::from(ROUTER_S));
        assert!((40000..=40009).contains(&peer.port()), "{peer}");
    }
}

#[tokio::test]
async fn redirect_sends_a_sandbox_resolver_address_to_another_port() {
    need_root!();
    let lab = Lab::new().await;
    // Inside one namespace, as the DNS proxy will: 127.0.0.11:53 goes to a local port.
    let ns = &lab.client.ns;
    let _dns = Servers::start(ns, &[sa(Ipv4Addr::LOCALHOST, 5353)]);
    let resolver = sa(Ipv4Addr::new(127, 0, 0, 11), 53);
    assert!(blocked(ns, resolver));
    let nft = ok("nft", Nft::open(ns));
    let mut b = nft.batch();
    b.add_table(Family::Ip, "t");
    b.add_chain(
        Family::Ip,
        "t",
        "out",
        base(ChainType::Nat, Hook::Output, -100),
    );
    b.add_rule(
        Family::Ip,
        "t",
        "out",
        &then(
            to4(Ipv4Addr::new(127, 0, 0, 11), 53),
            [
                imm(r(1), &5353u16.to_be_bytes()),
                Expr::Redirect {
                    port: Some(r(1)),
                    port_max: None,
                },
            ],
        ),
    );
    ok("apply", nft.apply(b));
    assert_eq!(reaches(ns, resolver).local, sa(Ipv4Addr::LOCALHOST, 5353));
}

#[tokio::test]
async fn payload_set_rewrites_ports_both_ways_without_conntrack() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 80)]);
    // In the client, statelessly: port 81 leaves as 80, and the server's answers from 80
    // come back as from 81; the connection works, with checksums right on a real path.
    let ns = &lab.client.ns;
    assert!(blocked(ns, sa(SERVER_A, 81)));
    let set_port = |offset: u32, port: u16| {
        [
            imm(r(0), &port.to_be_bytes()),
            Expr::PayloadSet {
                base: PayloadBase::Transport,
                offset,
                len: 2,
                sreg: r(0),
                csum_offset: Some(16),
            },
        ]
    };
    let sport_is = |port: u16| {
        vec![
            Expr::Meta {
                key: MetaKey::L4Proto,
                dreg: r(0),
            },
            cmp(r(0), &[6]),
            Expr::Payload {
                base: PayloadBase::Transport,
                offset: 0,
                len: 2,
                dreg: r(0),
            },
            cmp(r(0), &port.to_be_bytes()),
        ]
    };
    let nft = ok("nft", Nft::open(ns));
    let mut b = nft.batch();
    b.add_table(Family::Ip, "t");
    b.add_chain(
        Family::Ip,
        "t",
        "out",
        base(ChainType::Filter, Hook::Output, -300),
    );
    b.add_chain(
        Family::Ip,
        "t",
        "pre",
        base(ChainType::Filter, Hook::Prerouting, -300),
    );
    b.add_rule(
        Family::Ip,
        "t",
        "out",
        &then(to4(SERVER_A, 81), set_port(2, 80)),
    );
    let from_server = then(
        vec![ip4(false, r(0)), cmp(r(0), &SERVER_A.octets())],
        sport_is(80),
    );
    b.add_rule(Family::Ip, "t", "pre", &then(from_server, set_port(0, 81)));
    ok("apply", nft.apply(b));
    let seen = reaches(ns, sa(SERVER_A, 81));
    assert_eq!(
        seen.local,
        sa(SERVER_A, 80),
        "the server answered on its own port"
    );
    let tracked = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .args(["cat", "/proc/sys/net/netfilter/nf_conntrack_count"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    assert!(
        tracked.is_empty() || tracked == "0",
        "conntrack in the client: {tracked}"
    );
}

#[tokio::test]
async fn counter_counts_new_connections() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 80)]);
    let mut b = filter_table(&lab.nft);
    b.add_rule_commented(
        Family::Ip,
        "t",
        "fwd",
        &then(ct_new(), then(tcp_dport(80), [Expr::Counter])),
        "new-web",
    );
    ok("apply", lab.nft.apply(b));
    for _ in 0..5 {
        reaches(&lab.client.ns, sa(SERVER_A, 80));
    }
    let rules = ok("rules", lab.nft.rules(Family::Ip, "t", "fwd"));
    let rule = rules
        .iter()
        .find(|r| r.comment.as_deref() == Some("new-web"));
    let counter = rule
        .and_then(|r| r.counters.first())
        .copied()
        .unwrap_or_default();
    assert_eq!(counter.packets, 5, "{rules:?}");
    assert!(counter.bytes >= 5 * 40, "{rules:?}");
}

#[tokio::test]
async fn an_element_with_a_timeout_expires_and_traffic_is_refused_again() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 80)]);
    let mut b = filter_table(&lab.nft);
    b.add_set(
        Family::Ip,
        "t",
        &SetDef {
            name: "allowed".into(),
            key_len: 4,
            timeout: Some(Duration::ZERO),
            ..SetDef::default()
        },
    );
    b.add_rule(
        Family::Ip,
        "t",
        "fwd",
        &then(
            to4(SERVER_A, 80),
            [
                ip4(false, r(0)),
                Expr::Lookup {
                    set: "allowed".into(),
                    sreg: r(0),
                    dreg: None,
                    invert: true,
                },
                Expr::Verdict(Verdict::Drop),
            ],
        ),
    );
    ok("apply", lab.nft.apply(b));
    assert!(blocked(&lab.client.ns, sa(SERVER_A, 80)));
    let mut b = lab.nft.batch();
    b.add_elements(
        Family::Ip,
        "t",
        "allowed",
        &[Element {
            timeout: Some(Duration::from_secs(3)),
            ..Element::key(CLIENT.octets())
        }],
        false,
    );
    ok("allow for 3 s", lab.nft.apply(b));
    reaches(&lab.client.ns, sa(SERVER_A, 80));
    let els = ok("elements", lab.nft.elements(Family::Ip, "t", "allowed"));
    assert_eq!(els.len(), 1, "{els:?}");
    assert_eq!(els[0].timeout, Some(Duration::from_secs(3)));
    assert!(
        els[0].expires.is_some_and(|e| e <= Duration::from_secs(3)),
        "{els:?}"
    );
    std::thread::sleep(Duration::from_millis(3500));
    assert!(blocked(&lab.client.ns, sa(SERVER_A, 80)));
    assert!(ok("elements", lab.nft.elements(Family::Ip, "t", "allowed")).is_empty());
}

#[tokio::test]
async fn dynset_update_adds_the_source_from_the_packet_path() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 80), sa(SERVER_A, 81)]);
    let mut b = filter_table(&lab.nft);
    b.add_set(
        Family::Ip,
        "t",
        &SetDef {
            name: "knocked".into(),
            key_len: 4,
            timeout: Some(Duration::ZERO),
            dynamic: true,
            ..SetDef::default()
        },
    );
    // Knocking on port 81 (dropped) lets the source reach port 80 for 30 s.
    b.add_rule(
        Family::Ip,
        "t",
        "fwd",
        &then(
            to4(SERVER_A, 81),
            [
                ip4(false, r(0)),
                Expr::Dynset {
                    set: "knocked".into(),
                    op: DynsetOp::Update,
                    sreg_key: r(0),
                    sreg_data: None,
                    timeout: Some(Duration::from_secs(30)),
                },
                Expr::Verdict(Verdict::Drop),
            ],
        ),
    );
    b.add_rule(
        Family::Ip,
        "t",
        "fwd",
        &then(
            to4(SERVER_A, 80),
            [
                ip4(false, r(0)),
                Expr::Lookup {
                    set: "knocked".into(),
                    sreg: r(0),
                    dreg: None,
                    invert: true,
                },
                Expr::Verdict(Verdict::Drop),
            ],
        ),
    );
    ok("apply", lab.nft.apply(b));
    assert!(blocked(&lab.client.ns, sa(SERVER_A, 80)));
    assert!(
        blocked(&lab.client.ns, sa(SERVER_A, 81)),
        "the knock itself is dropped"
    );
    reaches(&lab.client.ns, sa(SERVER_A, 80));
    let els = ok("elements", lab.nft.elements(Family::Ip, "t", "knocked"));
    assert_eq!(els.len(), 1, "{els:?}");
    assert_eq!(
        (els[0].key.as_slice(), els[0].timeout),
        (&CLIENT.octets()[..], Some(Duration::from_secs(30)))
    );
}

#[tokio::test]
async fn meta_mark_set_then_matched_and_ordered_compares() {
    need_root!();
    let lab = Lab::new().await;
    let ports: Vec<_> = (80..83).map(|p| sa(SERVER_A, p)).collect();
    let _srv = Servers::start(&lab.server.ns, &ports);
    let mut b = lab.nft.batch();
    b.add_table(Family::Ip, "t");
    b.add_chain(
        Family::Ip,
        "t",
        "pre",
        base(ChainType::Filter, Hook::Prerouting, 0),
    );
    // tcp dport >= 81 meta mark set 5 (the mark lives on the packet only, unlike ct mark)
    b.add_rule(
        Family::Ip,
        "t",
        "pre",
        &[
            Expr::Meta {
                key: MetaKey::L4Proto,
                dreg: r(0),
            },
            cmp(r(0), &[6]),
            dport(r(0)),
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Gte,
                data: 81u16.to_be_bytes().to_vec(),
            },
            imm(r(1), &5u32.to_ne_bytes()),
            Expr::MetaSet {
                key: MetaKey::Mark,
                sreg: r(1),
            },
        ],
    );
    // forward: meta mark 5 tcp dport < 82 drop
    b.add_chain(
        Family::Ip,
        "t",
        "fwd",
        base(ChainType::Filter, Hook::Forward, 0),
    );
    b.add_rule(
        Family::Ip,
        "t",
        "fwd",
        &[
            Expr::Meta {
                key: MetaKey::Mark,
                dreg: r(0),
            },
            cmp(r(0), &5u32.to_ne_bytes()),
            dport(r(0)),
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Lt,
                data: 82u16.to_be_bytes().to_vec(),
            },
            Expr::Verdict(Verdict::Drop),
        ],
    );
    ok("apply", lab.nft.apply(b));
    let c = &lab.client.ns;
    reaches(c, ports[0]); // not marked
    assert!(blocked(c, ports[1]), "marked and below 82");
    reaches(c, ports[2]); // marked, not below 82
}

#[tokio::test]
async fn masquerade_and_ct_status_see_the_translation() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 80)]);
    let mut b = lab.nft.batch();
    b.add_table(Family::Ip, "t");
    b.add_chain(
        Family::Ip,
        "t",
        "post",
        base(ChainType::Nat, Hook::Postrouting, 100),
    );
    b.add_rule(
        Family::Ip,
        "t",
        "post",
        &[
            Expr::Meta {
                key: MetaKey::OifName,
                dreg: r(0),
            },
            cmp(r(0), b"s0\0"),
            Expr::Masquerade,
        ],
    );
    // Replies come back through forward with ct status snat.
    b.add_chain(
        Family::Ip,
        "t",
        "fwd",
        base(ChainType::Filter, Hook::Forward, 0),
    );
    b.add_rule_commented(
        Family::Ip,
        "t",
        "fwd",
        &[
            Expr::Ct {
                key: CtKey::Status,
                dreg: r(0),
            },
            Expr::Bitwise {
                sreg: r(0),
                dreg: r(0),
                mask: ct_status::SNAT.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Neq,
                data: vec![0; 4],
            },
            Expr::Counter,
        ],
        "snat",
    );
    ok("apply", lab.nft.apply(b));
    let seen = reaches(&lab.client.ns, sa(SERVER_A, 80));
    assert_eq!(
        seen.peer.ip(),
        IpAddr::from(ROUTER_S),
        "masqueraded to s0's address"
    );
    let rules = ok("rules", lab.nft.rules(Family::Ip, "t", "fwd"));
    let packets = rules
        .first()
        .and_then(|r| r.counters.first())
        .map(|c| c.packets);
    assert!(
        packets.is_some_and(|p| p > 0),
        "ct status snat never matched: {rules:?}"
    );
}
