//! The bridge driver's firewall (`plexus_drivers::firewall`) against the real kernel, with real TCP, inside namespaces the
//! tests make (needs root). Each test builds its own topology:
//!
//! ```text
//!   sandbox ns ──veth── [bridge, gateway]  host ns  ext0 ──veth── eth0  outside ns
//! ```
//!
//! The outside namespace has no route back to the sandboxes' subnets, so egress only works
//! when it is masqueraded. Everything is removed by drop guards, even on failure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use plexus_drivers::firewall::{Firewall, NetworkRules, PortMapping};
use plexus_sys::netns::Netns;
use plexus_sys::nft::{BaseChain, ChainType, Family, Hook, SetDef, Verdict};
use plexus_sys::rtnl::{Route, Rtnl};
use plexus_sys::{sysctl, SysError};

#[macro_use]
mod common;
mod fallback;
mod topo;
use common::{ok, PinnedNs};
use topo::*;

#[tokio::test]
async fn egress_is_masqueraded_to_the_host_address() {
    need_root!();
    let mut t = Topo::new().await;
    let br = t.bridge("plx-a", 91).await;
    let (s1, _) = t.sandbox(br, 91, 2).await;
    let _srv = Server::start(&t.outside.ns, sa(OUTSIDE, 9000));
    // Without masquerade the outside cannot answer (it has no route to 10.91.0.0/24).
    assert!(blocked(t.sb(s1), sa(OUTSIDE, 9000)));

    let fw = t.firewall();
    ok("setup network", fw.setup_network(&net("plx-a", 91)));
    assert_eq!(reaches(t.sb(s1), sa(OUTSIDE, 9000)), HOST_EXT.to_string());

    let st = ok("state", fw.state());
    assert!(st.bridges.contains("plx-a"), "{st:?}");
    let subnet = (IpAddr::from(Ipv4Addr::new(10, 91, 0, 0)), 24);
    assert!(
        st.subnets.contains(&subnet) && st.masquerade.contains(&subnet),
        "{st:?}"
    );
    assert_eq!(st.tables.len(), 4, "{st:?}");

    // Masquerade off (enable_ip_masquerade=false): egress is no longer translated.
    ok("teardown", fw.teardown_network(&net("plx-a", 91)));
    let plain = NetworkRules {
        masquerade: false,
        ..net("plx-a", 91)
    };
    ok("setup without masquerade", fw.setup_network(&plain));
    assert!(ok("state", fw.state()).masquerade.is_empty());
    assert!(blocked(t.sb(s1), sa(OUTSIDE, 9000)));
}

#[tokio::test]
async fn published_port_answers_from_outside_sandboxes_and_the_host() {
    need_root!();
    let mut t = Topo::new().await;
    let br = t.bridge("plx-p", 93).await;
    let (s1, _) = t.sandbox(br, 93, 2).await;
    let (s2, _) = t.sandbox(br, 93, 3).await;
    let _srv = Server::start(t.sb(s1), sa(Ipv4Addr::new(10, 93, 0, 2), 80));
    // 127.0.0.1:PORT from the host: the kernel must route a 127/8 source out of the bridge.
    ok(
        "route_localnet",
        sysctl::write(&t.host.ns, "net.ipv4.conf.plx-p.route_localnet", "1"),
    );
    let fw = t.firewall();
    ok("setup network", fw.setup_network(&net("plx-p", 93)));
    let web = port(8080, 93, 2, "endpoint-s1");
    ok("publish", fw.publish(std::slice::from_ref(&web)));
    ok(
        "publish again is a no-op",
        fw.publish(std::slice::from_ref(&web)),
    );

    let published = sa(HOST_EXT, 8080);
    // From outside: the client's own address is kept.
    assert_eq!(reaches(&t.outside.ns, published), OUTSIDE.to_string());
    // From another sandbox on the same bridge, via the host's address (hairpin), with
    // br_netfilter passing bridged frames to nf_tables (the default here) and without.
    reaches(t.sb(s2), published);
    if sysctl::read(&t.host.ns, "net.bridge.bridge-nf-call-iptables").is_ok() {
        ok(
            "br_netfilter off",
            sysctl::write(&t.host.ns, "net.bridge.bridge-nf-call-iptables", "0"),
        );
        reaches(t.sb(s2), published);
        reaches(t.sb(s2), sa(Ipv4Addr::new(10, 93, 0, 2), 80));
        ok(
            "br_netfilter on",
            sysctl::write(&t.host.ns, "net.bridge.bridge-nf-call-iptables", "1"),
        );
    }
    // From the host itself, and through localhost.
    reaches(&t.host.ns, published);
    reaches(&t.host.ns, sa(Ipv4Addr::LOCALHOST, 8080));
    // Through the gateway address too (a local address).
    reaches(t.sb(s2), sa(Ipv4Addr::new(10, 93, 0, 1), 8080));

    // The same host port again, by someone else: refused, naming the owner.
    let clash = fw.publish(&[port(8080, 93, 3, "endpoint-s2")]);
    match clash {
        Err(e @ SysError::Conflict { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("endpoint-s1") && msg.contains("8080"), "{msg}");
        }
        other => panic!("second publish gave {other:?}"),
    }
    // A port bound to one host address.
    let bound = PortMapping {
        host_ip: Some(HOST_EXT.into()),
        ..port(8081, 93, 2, "endpoint-s1b")
    };
    ok(
        "publish on one address",
        fw.publish(std::slice::from_ref(&bound)),
    );
    reaches(&t.outside.ns, sa(HOST_EXT, 8081));
    // A clash with a port on every address is caught too, in the same batch.
    let batch = [port(8082, 93, 2, "a"), port(8082, 93, 3, "b")];
    assert!(matches!(fw.publish(&batch), Err(SysError::Conflict { .. })));
    assert!(
        blocked(&t.outside.ns, sa(HOST_EXT, 8082)),
        "half a batch was applied"
    );

    // A restarted daemon reads the ports, with their owners, back from the kernel.
    let again = ok("reopen", Firewall::open(&t.host.ns));
    let mut owners: Vec<(u16, String)> = again
        .published()
        .into_iter()
        .map(|p| (p.host_port, p.owner))
        .collect();
    owners.sort();
    assert_eq!(
        owners,
        vec![
            (8080, "endpoint-s1".to_string()),
            (8081, "endpoint-s1b".to_string())
        ]
    );
    assert!(matches!(
        again.publish(&[port(8080, 93, 3, "late")]),
        Err(SysError::Conflict { .. })
    ));
    assert_eq!(ok("state", again.state()).ports, again.published());

    // Withdrawn: the port is gone (nothing on the host listens on 8080: refused at once).
    ok("unpublish", fw.unpublish(std::slice::from_ref(&web)));
    assert!(blocked(&t.outside.ns, published));
    assert!(blocked(t.sb(s2), published));
    reaches(&t.outside.ns, sa(HOST_EXT, 8081));
    ok("unpublish again", fw.unpublish(std::slice::from_ref(&web)));
    // And free for someone else.
    ok(
        "republish",
        fw.publish(&[port(8080, 93, 2, "endpoint-new")]),
    );
    reaches(&t.outside.ns, published);
    // Tearing the network down takes its ports along.
    ok("teardown", fw.teardown_network(&net("plx-p", 93)));
    assert!(ok("state", fw.state()).ports.is_empty());
    assert!(blocked(&t.outside.ns, published));
}

#[tokio::test]
async fn two_networks_cannot_reach_each_other() {
    need_root!();
    let mut t = Topo::new().await;
    let a = t.bridge("plx-a", 94).await;
    let b = t.bridge("plx-b", 95).await;
    let (sa_, _) = t.sandbox(a, 94, 2).await;
    let (sb_, _) = t.sandbox(b, 95, 2).await;
    let target = sa(Ipv4Addr::new(10, 95, 0, 2), 7000);
    let _srv = Server::start(t.sb(sb_), target);
    let _out = Server::start(&t.outside.ns, sa(OUTSIDE, 9000));
    // Routed through the host, they reach each other before Plexus's rules exist.
    reaches(t.sb(sa_), target);

    let fw = t.firewall();
    ok("network a", fw.setup_network(&net("plx-a", 94)));
    ok("network b", fw.setup_network(&net("plx-b", 95)));
    assert!(blocked(t.sb(sa_), target));
    // Egress still works for both.
    assert_eq!(reaches(t.sb(sa_), sa(OUTSIDE, 9000)), HOST_EXT.to_string());
    assert_eq!(reaches(t.sb(sb_), sa(OUTSIDE, 9000)), HOST_EXT.to_string());
    // Nothing unsolicited from outside reaches a sandbox either (routes via the host exist
    // for this check only).
    let ro = ok("connect outside", Rtnl::connect(&t.outside.ns).await);
    ok(
        "route",
        ro.add_route(&Route {
            destination: Some((Ipv4Addr::new(10, 95, 0, 0).into(), 24)),
            gateway: Some(HOST_EXT.into()),
            oif: None,
        })
        .await,
    );
    assert!(blocked(&t.outside.ns, target));
    // A published port of network b is reachable from network a through the host address.
    ok(
        "publish",
        fw.publish(&[PortMapping {
            port: 7000,
            ..port(8080, 95, 2, "endpoint-b")
        }]),
    );
    reaches(t.sb(sa_), sa(HOST_EXT, 8080));
}

#[tokio::test]
async fn icc_false_isolates_sandboxes_but_not_gateway_or_egress() {
    need_root!();
    let mut t = Topo::new().await;
    let br = t.bridge("plx-i", 96).await;
    let (s1, h1) = t.sandbox(br, 96, 2).await;
    let (s2, h2) = t.sandbox(br, 96, 3).await;
    let peer = sa(Ipv4Addr::new(10, 96, 0, 3), 7000);
    let _srv = Server::start(t.sb(s2), peer);
    let _gw = Server::start(&t.host.ns, sa(Ipv4Addr::new(10, 96, 0, 1), 7001));
    let _out = Server::start(&t.outside.ns, sa(OUTSIDE, 9000));
    let fw = t.firewall();
    ok("network", fw.setup_network(&net("plx-i", 96)));
    reaches(t.sb(s1), peer);

    // enable_icc=false: every sandbox port of the bridge is isolated.
    ok("isolate 1", t.rh.set_port_flags(h1, isolated(true)).await);
    ok("isolate 2", t.rh.set_port_flags(h2, isolated(true)).await);
    assert!(blocked(t.sb(s1), peer));
    reaches(t.sb(s1), sa(Ipv4Addr::new(10, 96, 0, 1), 7001));
    assert_eq!(reaches(t.sb(s1), sa(OUTSIDE, 9000)), HOST_EXT.to_string());
    // The same without br_netfilter.
    if sysctl::read(&t.host.ns, "net.bridge.bridge-nf-call-iptables").is_ok() {
        ok(
            "br_netfilter off",
            sysctl::write(&t.host.ns, "net.bridge.bridge-nf-call-iptables", "0"),
        );
        assert!(blocked(t.sb(s1), peer));
        reaches(t.sb(s1), sa(Ipv4Addr::new(10, 96, 0, 1), 7001));
    }
    // Back to icc=true.
    ok("unisolate", t.rh.set_port_flags(h1, isolated(false)).await);
    reaches(t.sb(s1), peer);
}

#[tokio::test]
async fn internal_network_has_no_egress() {
    need_root!();
    let mut t = Topo::new().await;
    let br = t.bridge("plx-n", 97).await;
    let (s1, _) = t.sandbox(br, 97, 2).await;
    let (s2, _) = t.sandbox(br, 97, 3).await;
    let _out = Server::start(&t.outside.ns, sa(OUTSIDE, 9000));
    let peer = sa(Ipv4Addr::new(10, 97, 0, 3), 7000);
    let _srv = Server::start(t.sb(s2), peer);
    let fw = t.firewall();
    let internal = NetworkRules {
        internal: true,
        ..net("plx-n", 97)
    };
    // The outside could answer un-NATed traffic: what blocks is the firewall, not routing.
    let ro = ok("connect outside", Rtnl::connect(&t.outside.ns).await);
    ok(
        "route back",
        ro.add_route(&Route {
            destination: Some((Ipv4Addr::new(10, 97, 0, 0).into(), 24)),
            gateway: Some(HOST_EXT.into()),
            oif: None,
        })
        .await,
    );
    assert_eq!(
        reaches(t.sb(s1), sa(OUTSIDE, 9000)),
        "10.97.0.2",
        "before the network is set up"
    );
    ok("internal network", fw.setup_network(&internal));
    assert!(blocked(t.sb(s1), sa(OUTSIDE, 9000)));
    // Inside the network, sandboxes still talk (and reach their gateway).
    reaches(t.sb(s1), peer);
    let _gw = Server::start(&t.host.ns, sa(Ipv4Addr::new(10, 97, 0, 1), 7001));
    reaches(t.sb(s1), sa(Ipv4Addr::new(10, 97, 0, 1), 7001));
    let st = ok("state", fw.state());
    assert!(
        st.internal.contains("plx-n") && st.masquerade.is_empty(),
        "{st:?}"
    );
    // Nor through a published port: host port 8080 leads to the outside server (the host
    // itself reaches it), but not from the internal sandbox.
    ok(
        "publish",
        fw.publish(&[PortMapping {
            addr: OUTSIDE.into(),
            port: 9000,
            ..port(8080, 97, 9, "endpoint-out")
        }]),
    );
    assert_eq!(
        reaches(&t.host.ns, sa(HOST_EXT, 8080)),
        HOST_EXT.to_string()
    );
    assert!(blocked(t.sb(s1), sa(Ipv4Addr::new(10, 97, 0, 1), 8080)));
    assert!(blocked(t.sb(s1), sa(HOST_EXT, 8080)));
}

/// Connections tracked in `ns` now (`nf_conntrack_count`).
fn conntrack_count(ns: &Netns) -> u64 {
    let v = ok(
        "nf_conntrack_count",
        sysctl::read(ns, "net.netfilter.nf_conntrack_count"),
    );
    v.parse()
        .unwrap_or_else(|e| panic!("nf_conntrack_count {v:?}: {e}"))
}

#[tokio::test]
async fn frames_switched_between_sandbox_ports_skip_conntrack() {
    need_root!();
    let mut t = Topo::new().await;
    let fw = t.firewall();
    let bridge_table = (Family::Bridge, "plexus".to_string());
    assert!(
        ok("state", fw.state()).tables.contains(&bridge_table),
        "ensure_base makes the bridge table"
    );
    assert!(plexus_drivers::firewall::is_plexus_table(
        Family::Bridge,
        "plexus"
    ));
    // The point of the table: bridged frames reach the inet hooks (and conntrack) at all.
    assert_eq!(
        sysctl::read(&t.host.ns, "net.bridge.bridge-nf-call-iptables")
            .ok()
            .as_deref(),
        Some("1"),
        "br_netfilter on in a new namespace"
    );

    // Two sandboxes on bridge ports named as the bridge driver names them, a third on a
    // port named otherwise (like the ports of bridges Plexus does not own).
    let br = t.bridge("plx-t", 88).await;
    ok("setup network", fw.setup_network(&net("plx-t", 88)));
    let (a, _) = t.sandbox_on_port(br, 88, 2, "plxv0000000000a").await;
    let (b, _) = t.sandbox_on_port(br, 88, 3, "plxv0000000000b").await;
    let (c, _) = t.sandbox_on_port(br, 88, 4, "vethc").await;
    let b_addr = Ipv4Addr::new(10, 88, 0, 3);
    let _srv = Server::start(t.sb(b), sa(b_addr, 7000));
    let _gw = Server::start(&t.host.ns, sa(Ipv4Addr::new(10, 88, 0, 1), 7001));
    const N: u64 = 5;

    // Sandbox to sandbox through two plxv ports: switched, nothing tracked.
    reaches(t.sb(a), sa(b_addr, 7000));
    let before = conntrack_count(&t.host.ns);
    for _ in 0..N {
        assert_eq!(reaches(t.sb(a), sa(b_addr, 7000)), "10.88.0.2");
    }
    let after = conntrack_count(&t.host.ns);
    assert!(
        after <= before,
        "{} sandbox-to-sandbox connections added conntrack entries: {before} -> {after}",
        N
    );

    // From a port of another name: tracked as before (Plexus leaves other ports alone).
    let before = conntrack_count(&t.host.ns);
    for _ in 0..N {
        assert_eq!(reaches(t.sb(c), sa(b_addr, 7000)), "10.88.0.4");
    }
    let after = conntrack_count(&t.host.ns);
    assert!(
        after >= before + N,
        "connections from a non-Plexus port should be tracked: {before} -> {after}"
    );

    // Routed: to the gateway (the bridge's own MAC), tracked.
    let before = conntrack_count(&t.host.ns);
    for _ in 0..N {
        assert_eq!(
            reaches(t.sb(a), sa(Ipv4Addr::new(10, 88, 0, 1), 7001)),
            "10.88.0.2"
        );
    }
    let after = conntrack_count(&t.host.ns);
    assert!(
        after >= before + N,
        "connections to the gateway should be tracked: {before} -> {after}"
    );

    // NAT still applies to routed frames from plxv ports: a published port of b, reached
    // from a through the host address (hairpin, masqueraded to the gateway) and the gateway.
    ok("publish", fw.publish(&[port(8080, 88, 3, "endpoint-b")]));
    let _web = Server::start(t.sb(b), sa(b_addr, 80));
    assert_eq!(reaches(t.sb(a), sa(HOST_EXT, 8080)), "10.88.0.1");
    assert_eq!(
        reaches(t.sb(a), sa(Ipv4Addr::new(10, 88, 0, 1), 8080)),
        "10.88.0.1"
    );
    assert_eq!(
        reaches(&t.outside.ns, sa(HOST_EXT, 8080)),
        OUTSIDE.to_string()
    );

    // The bridge table follows the others: networks come and go without touching it,
    // cleanup_all removes it.
    ok("teardown", fw.teardown_network(&net("plx-t", 88)));
    assert!(ok("state", fw.state()).tables.contains(&bridge_table));
    ok("cleanup", fw.cleanup_all());
    let tables = ok("tables", fw.raw().tables());
    assert!(!tables.contains(&bridge_table), "{tables:?}");
}

#[tokio::test]
async fn cleanup_removes_only_plexus_tables() {
    need_root!();
    let t = Topo::new().await;
    let fw = t.firewall();
    // A table Plexus does not own, made through the raw layer.
    let raw = fw.raw();
    let mut b = raw.batch();
    b.add_table(Family::Inet, "foreign");
    b.add_set(
        Family::Inet,
        "foreign",
        &SetDef {
            name: "names".into(),
            key_type: 41,
            key_len: 16,
            interval: false,
            data: None,
            userdata: Vec::new(),
            ..SetDef::default()
        },
    );
    b.add_chain(
        Family::Inet,
        "foreign",
        "fwd",
        Some(BaseChain {
            kind: ChainType::Filter,
            hook: Hook::Forward,
            priority: 10,
            policy: Verdict::Accept,
        }),
    );
    b.add_table(Family::Ip, "plexus"); // same name as ours, other family: not ours
    ok("foreign tables", raw.apply(b));

    ok("network", fw.setup_network(&net("plx-c", 98)));
    ok("publish", fw.publish(&[port(8080, 98, 2, "endpoint-c")]));
    // ensure_base is idempotent and keeps elements.
    ok("ensure again", fw.ensure_base());
    let st = ok("state", fw.state());
    assert!(
        st.bridges.contains("plx-c") && st.ports.len() == 1,
        "{st:?}"
    );

    // Bad input names the field and changes nothing.
    let bad = fw.setup_network(&NetworkRules {
        bridge: "a-bridge-name-too-long".into(),
        ..net("x", 99)
    });
    assert!(
        matches!(
            bad,
            Err(SysError::Invalid {
                field: "bridge name",
                ..
            })
        ),
        "{bad:?}"
    );
    assert!(matches!(
        fw.publish(&[port(0, 98, 2, "z")]),
        Err(SysError::Invalid {
            field: "host port",
            ..
        })
    ));
    // A failing batch applies nothing: the first set exists, the second set name clashes.
    let mut b = raw.batch();
    b.add_table(Family::Inet, "half");
    b.add_set(
        Family::Inet,
        "missing-table",
        &SetDef {
            name: "s".into(),
            key_type: 41,
            key_len: 16,
            interval: false,
            data: None,
            userdata: Vec::new(),
            ..SetDef::default()
        },
    );
    let err = raw
        .apply(b)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("missing-table"), "{err}");
    let tables = ok("tables", raw.tables());
    assert!(!tables.iter().any(|(_, n)| n == "half"), "{tables:?}");

    ok("cleanup", fw.cleanup_all());
    ok("cleanup again", fw.cleanup_all());
    let mut tables = ok("tables", raw.tables());
    tables.sort();
    assert_eq!(
        tables,
        vec![
            (Family::Inet, "foreign".to_string()),
            (Family::Ip, "plexus".to_string()),
        ]
    );
    assert_eq!(ok("state", fw.state()), Default::default());
    assert!(ok("names", raw.elements(Family::Inet, "foreign", "names")).is_empty());
}

#[tokio::test]
async fn reconcile_makes_the_kernel_match_the_store() {
    need_root!();
    let host = PinnedNs::new("rec");
    let fw = ok("open", Firewall::open(&host.ns));
    ok("ensure base", fw.ensure_base());
    let a = net("plx-r1", 80);
    let b = NetworkRules {
        internal: true,
        ..net("plx-r2", 81)
    };
    let p1 = port(8080, 80, 2, "ep-1");
    let p2 = port(8081, 81, 2, "ep-2");
    let p3 = port(8082, 80, 3, "ep-3");
    ok("a", fw.setup_network(&a));
    ok("b", fw.setup_network(&b));
    ok("ports", fw.publish(&[p1.clone(), p2.clone(), p3.clone()]));

    // The store (after a crash) says: network a without masquerade, p1, and p3 moved.
    let a2 = NetworkRules {
        masquerade: false,
        ..a.clone()
    };
    let p3b = PortMapping {
        port: 443,
        ..p3.clone()
    };
    let p4 = PortMapping {
        host_ip: Some(Ipv4Addr::new(10, 80, 0, 1).into()),
        ..port(9000, 80, 4, "ep-4")
    };
    let wanted = [p1.clone(), p3b.clone(), p4.clone()];
    let fresh = ok("reopen", Firewall::open(&host.ns));
    let removed = ok(
        "reconcile",
        fresh.reconcile(std::slice::from_ref(&a2), &wanted),
    );
    assert_eq!(removed.bridges, vec!["plx-r2".to_string()]);
    assert_eq!(
        removed.subnets,
        vec![(IpAddr::from(Ipv4Addr::new(10, 81, 0, 0)), 24)]
    );
    let mut gone: Vec<u16> = removed.ports.iter().map(|p| p.host_port).collect();
    gone.sort();
    assert_eq!(gone, vec![8081, 8082]);

    let st = ok("state", fresh.state());
    assert_eq!(st.bridges.iter().collect::<Vec<_>>(), vec!["plx-r1"]);
    assert!(st.internal.is_empty() && st.masquerade.is_empty(), "{st:?}");
    assert_eq!(
        st.subnets.iter().cloned().collect::<Vec<_>>(),
        vec![(IpAddr::from(Ipv4Addr::new(10, 80, 0, 0)), 24)]
    );
    let mut want = wanted.to_vec();
    want.sort_by_key(|p| (p.proto, p.host_port, p.host_ip));
    assert_eq!(st.ports, want);
    assert_eq!(fresh.published(), want);
    // Idempotent: a second pass finds nothing stale.
    let again = ok("reconcile again", fresh.reconcile(&[a2], &wanted));
    assert_eq!(again, Default::default());
}

#[tokio::test]
async fn ipv6_egress_is_masqueraded_and_ports_are_published() {
    need_root!();
    let mut t = Topo::new().await;
    let br = t.bridge("plx-6", 90).await;
    let (s1, _) = t.sandbox(br, 90, 2).await;
    let v6 = |s: &str| -> Ipv6Addr { s.parse().unwrap_or(Ipv6Addr::UNSPECIFIED) };
    let (host6, out6, gw6, sb6) = (
        v6("fd00:30::1"),
        v6("fd00:30::2"),
        v6("fd00:90::1"),
        v6("fd00:90::2"),
    );
    let ext = ok("ext0", t.rh.require_link("ext0").await);
    ok(
        "host v6",
        t.rh.add_address(ext.index, host6.into(), 64).await,
    );
    ok("gw v6", t.rh.add_address(br, gw6.into(), 64).await);
    let ro = ok("connect outside", Rtnl::connect(&t.outside.ns).await);
    let eth0 = ok("eth0", ro.require_link("eth0").await);
    ok(
        "outside v6",
        ro.add_address(eth0.index, out6.into(), 64).await,
    );
    let rs = ok("connect sandbox", Rtnl::connect(t.sb(s1)).await);
    let eth0 = ok("eth0", rs.require_link("eth0").await);
    ok(
        "sandbox v6",
        rs.add_address(eth0.index, sb6.into(), 64).await,
    );
    ok(
        "v6 default route",
        rs.add_route(&Route {
            destination: None,
            gateway: Some(gw6.into()),
            oif: None,
        })
        .await,
    );
    ok(
        "v6 forwarding",
        sysctl::write(&t.host.ns, "net.ipv6.conf.all.forwarding", "1"),
    );
    let fw = t.firewall();
    let dual = NetworkRules {
        subnets: vec![
            (Ipv4Addr::new(10, 90, 0, 0).into(), 24),
            (v6("fd00:90::").into(), 64),
        ],
        ..net("plx-6", 90)
    };
    ok("dual-stack network", fw.setup_network(&dual));
    let st = ok("state", fw.state());
    assert!(
        st.masquerade.contains(&(v6("fd00:90::").into(), 64)),
        "{st:?}"
    );

    let _out = Server::start(&t.outside.ns, SocketAddr::from((out6, 9000)));
    assert_eq!(
        reaches(t.sb(s1), SocketAddr::from((out6, 9000))),
        host6.to_string()
    );
    let _web = Server::start(t.sb(s1), SocketAddr::from((sb6, 80)));
    let web = PortMapping {
        addr: sb6.into(),
        ..port(8080, 90, 2, "endpoint-v6")
    };
    ok("publish v6", fw.publish(std::slice::from_ref(&web)));
    // The same host port over IPv4 is a different binding.
    ok(
        "publish v4",
        fw.publish(&[port(8080, 90, 2, "endpoint-v4")]),
    );
    let published = SocketAddr::from((host6, 8080));
    assert_eq!(reaches(&t.outside.ns, published), out6.to_string());
    reaches(&t.host.ns, published);
    ok("unpublish v6", fw.unpublish(std::slice::from_ref(&web)));
    assert!(blocked(&t.outside.ns, published));
}

fn isolated(on: bool) -> plexus_sys::rtnl::PortFlags {
    plexus_sys::rtnl::PortFlags {
        isolated: on,
        hairpin: false,
    }
}
