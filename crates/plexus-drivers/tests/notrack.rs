//! With `br_netfilter` on (as on a machine Docker also runs on), traffic between two
//! sandboxes of one bridge network is switched without connection tracking, while traffic
//! the host routes (to the gateway, published ports) is still tracked and NATed. What a
//! user sees: the host's conntrack table does not grow with sandbox-to-sandbox connections.

mod common;

use std::net::Ipv4Addr;

use common::*;
use plexus_cnm::EndpointSpec;
use plexus_sys::netns::Netns;
use plexus_sys::sysctl;

/// Connections tracked in `ns` now (`nf_conntrack_count`).
fn conntrack_count(ns: &Netns) -> u64 {
    let v = ok(
        "nf_conntrack_count",
        sysctl::read(ns, "net.netfilter.nf_conntrack_count"),
    );
    v.parse()
        .unwrap_or_else(|e| panic!("nf_conntrack_count {v:?}: {e}"))
}

const N: u64 = 5;

#[tokio::test]
async fn sandbox_to_sandbox_skips_conntrack_and_routed_traffic_does_not() {
    need_root!();
    let mut w = World::with_br_netfilter().await;
    w.network("n1", "10.89.0.0/24", &[]).await;
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let e1 = w.connect("s1", "n1").await;
    let e2 = w
        .connect_with(
            "s2",
            "n1",
            EndpointSpec {
                ports: vec![tcp(80, 8089)],
                ..Default::default()
            },
        )
        .await;
    // Without br_netfilter bridged frames never reach conntrack and this test proves nothing.
    assert_eq!(
        sysctl::read(&w.host.ns, "net.bridge.bridge-nf-call-iptables")
            .ok()
            .as_deref(),
        Some("1"),
        "br_netfilter must be on in the host namespace"
    );
    let _s2 = Server::start(w.sb("s2"), sa(ip4(&e2), 7000));
    let _web = Server::start(w.sb("s2"), sa(ip4(&e2), 80));
    let gateway = Ipv4Addr::new(10, 89, 0, 1);
    let _gw = Server::start(&w.host.ns, sa(gateway, 7001));

    // Sandbox to sandbox: they talk, and the host tracks none of it.
    assert_eq!(
        reaches(w.sb("s1"), sa(ip4(&e2), 7000)),
        ip4(&e1).to_string()
    );
    let before = conntrack_count(&w.host.ns);
    for _ in 0..N {
        assert_eq!(
            reaches(w.sb("s1"), sa(ip4(&e2), 7000)),
            ip4(&e1).to_string()
        );
    }
    let after = conntrack_count(&w.host.ns);
    assert!(
        after <= before,
        "{N} sandbox-to-sandbox connections added conntrack entries: {before} -> {after}"
    );

    // Sandbox to the gateway (routed by the host): tracked.
    let before = conntrack_count(&w.host.ns);
    for _ in 0..N {
        assert_eq!(reaches(w.sb("s1"), sa(gateway, 7001)), ip4(&e1).to_string());
    }
    let after = conntrack_count(&w.host.ns);
    assert!(
        after >= before + N,
        "{N} connections to the gateway should be tracked: {before} -> {after}"
    );

    // And NAT still works for routed traffic from sandbox ports: s2's published port from
    // s1 through the host address (hairpin, masqueraded to the gateway), from the outside
    // (the client's address kept).
    assert_eq!(reaches(w.sb("s1"), sa(HOST_EXT, 8089)), gateway.to_string());
    assert_eq!(
        reaches(&w.outside.ns, sa(HOST_EXT, 8089)),
        OUTSIDE.to_string()
    );
}
