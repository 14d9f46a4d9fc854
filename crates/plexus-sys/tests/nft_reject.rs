//! `reject` against the real kernel: ICMP port unreachable, TCP reset and the
//! family-independent ICMPX, on forwarded traffic (router of the three-namespace lab, see
//! `common/lab.rs`) and on a program's own output; and batches too large for the default
//! socket buffers. A rejected connection must fail with `ECONNREFUSED` at once, where a drop
//! would hang until the timeout. Needs root; namespaces are removed by drop guards.

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use plexus_sys::nft::{
    icmp_unreach, icmpx, ChainType, Element, Expr, Family, Hook, RejectKind, SetDef, Verdict,
};

#[macro_use]
mod common;
use common::lab::*;
use common::ok;

/// Connects from the client and expects `ECONNREFUSED` well before the timeout.
fn refused_at_once(lab: &Lab, port: u16) {
    let start = Instant::now();
    let res = talk_from(
        &lab.client.ns,
        None,
        sa(SERVER_A, port),
        Duration::from_secs(3),
    );
    let took = start.elapsed();
    match res {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "port {port}: {e}"),
        Ok(seen) => panic!("port {port}: connected ({seen:?})"),
    }
    assert!(took < Duration::from_millis(500), "port {port}: {took:?}");
}

#[tokio::test]
async fn reject_answers_with_icmp_or_a_reset_and_connections_fail_at_once() {
    need_root!();
    let lab = Lab::new().await;
    let ports = [80, 81, 82, 83];
    let addrs: Vec<_> = ports.iter().map(|&p| sa(SERVER_A, p)).collect();
    let _srv = Servers::start(&lab.server.ns, &addrs);
    let mut b = filter_table(&lab.nft);
    let icmp = Expr::Reject(RejectKind::Icmp(icmp_unreach::PORT));
    b.add_rule(Family::Ip, "t", "fwd", &then(to4(SERVER_A, 80), [icmp]));
    let rst = Expr::Reject(RejectKind::TcpReset);
    b.add_rule(Family::Ip, "t", "fwd", &then(to4(SERVER_A, 81), [rst]));
    // The family-independent kind, in an inet table.
    b.add_table(Family::Inet, "x");
    let fwd = base(ChainType::Filter, Hook::Forward, 0);
    b.add_chain(Family::Inet, "x", "fwd", fwd);
    let icmpx = Expr::Reject(RejectKind::Icmpx(icmpx::PORT_UNREACH));
    let mut rule = vec![
        Expr::Meta {
            key: plexus_sys::nft::MetaKey::NfProto,
            dreg: r(0),
        },
        cmp(r(0), &[2]), // NFPROTO_IPV4
    ];
    rule.extend(to4(SERVER_A, 82));
    rule.push(icmpx);
    b.add_rule(Family::Inet, "x", "fwd", &rule);
    ok("apply", lab.nft.apply(b));
    for port in [80, 81, 82] {
        refused_at_once(&lab, port);
    }
    reaches(&lab.client.ns, sa(SERVER_A, 83));
}

#[tokio::test]
async fn reject_on_output_refuses_a_local_program_at_once() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 80), sa(SERVER_A, 81)]);
    // In the client's own namespace: a set of refused addresses, as a load balancer's VIPs.
    let nft = ok("nft", plexus_sys::nft::Nft::open(&lab.client.ns));
    let mut b = nft.batch();
    b.add_table(Family::Ip, "t");
    let out = base(ChainType::Filter, Hook::Output, 0);
    b.add_chain(Family::Ip, "t", "out", out);
    let set = SetDef {
        name: "refused".into(),
        key_type: 7, // ipv4_addr
        key_len: 4,
        ..SetDef::default()
    };
    b.add_set(Family::Ip, "t", &set);
    let port80 = Element::key(SERVER_A.octets());
    b.add_elements(Family::Ip, "t", "refused", &[port80], false);
    let lookup = Expr::Lookup {
        set: "refused".into(),
        sreg: r(0),
        dreg: None,
        invert: false,
    };
    let mut rule = vec![ip4(true, r(0)), lookup];
    rule.extend(tcp_dport(80));
    rule.push(Expr::Reject(RejectKind::Icmp(icmp_unreach::PORT)));
    b.add_rule(Family::Ip, "t", "out", &rule);
    ok("apply", nft.apply(b));
    refused_at_once(&lab, 80);
    reaches(&lab.client.ns, sa(SERVER_A, 81));
}

#[tokio::test]
async fn a_batch_larger_than_the_default_socket_buffers_applies_whole() {
    need_root!();
    let ns = common::PinnedNs::new("big");
    let nft = ok("nft", plexus_sys::nft::Nft::open(&ns.ns));
    let mut b = nft.batch();
    b.add_table(Family::Ip, "big");
    let n = 20_000usize;
    for i in 0..n {
        let chain = format!("c-{i:05}");
        b.add_chain(Family::Ip, "big", &chain, None);
        b.add_rule(Family::Ip, "big", &chain, &[Expr::Verdict(Verdict::Accept)]);
    }
    assert!(b.len() > 40_000);
    ok("apply a large batch", nft.apply(b));
    assert_eq!(ok("chains", nft.chains(Family::Ip, "big")).len(), n);
    // A large batch that fails still names the message that failed, and applies nothing.
    let mut b = nft.batch();
    for i in 0..n {
        b.add_chain(Family::Ip, "big", &format!("d-{i:05}"), None);
    }
    b.add_elements(
        Family::Ip,
        "big",
        "missing-set",
        &[Element::key([1])],
        false,
    );
    let err = nft
        .apply(b)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("missing-set"), "{err}");
    assert_eq!(ok("chains", nft.chains(Family::Ip, "big")).len(), n);
}
