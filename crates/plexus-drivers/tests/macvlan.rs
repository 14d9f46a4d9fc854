//! The macvlan and ipvlan drivers through the controller, against the real kernel, with real
//! TCP, in namespaces the tests make. A "LAN" namespace holds a bridge with the LAN's gateway
//! addresses and a veth whose other end, `uplink` in the test's host namespace, is the
//! networks' parent:
//!
//! ```text
//!   sandbox ns  eth0 (macvlan) ─┐
//!   sandbox ns  eth0 (macvlan) ─┴─ uplink  host ns ──veth── lan0 [lanbr 10.77.0.1]  LAN ns
//! ```
//!
//! What this kernel lacks (ipvlan, 802.1q, dummy links) is refused with an error naming the
//! module, and the tests of what needs it say so with `plexus_testkit::skip`.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::*;
use plexus_cnm::{EndpointSpec, IpamPoolSpec, Network, NetworkSpec, ReconcileMode};
use plexus_drivers::{DriverConfig, MacvlanDriver};
use plexus_sys::probe::{probe_link_kind, Feature, Outcome};
use plexus_sys::rtnl::{BridgeSpec, PortFlags, Rtnl};

const LAN_GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const LAN_GW6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 1);
/// An address of the LAN's router outside the network's subnet: reached through the
/// gateway (the sandboxes' default route).
const BEYOND: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const PARENT: &str = "uplink";
const PARENT_MTU: u32 = 1400;

/// The LAN: its namespace and its side of the uplink.
struct Lan {
    ns: PinnedNs,
    rl: Rtnl,
    /// `lan0`'s index in the LAN namespace (a port of `lanbr`).
    port: u32,
}

/// Makes the LAN and the parent `uplink` in the world's host namespace.
async fn lan(w: &World) -> Lan {
    let ns = PinnedNs::new("lan");
    ok(
        "accept_dad",
        plexus_sys::sysctl::write(&ns.ns, "net.ipv6.conf.default.accept_dad", "0"),
    );
    let rl = ok("connect lan", Rtnl::connect(&ns.ns).await);
    let lo = ok("lo", rl.require_link("lo").await);
    ok("lo up", rl.set_up(lo.index).await);
    let spec = BridgeSpec {
        name: "lanbr",
        ..Default::default()
    };
    let br = ok("lan bridge", rl.add_bridge(&spec, "test-lan").await);
    for (addr, len) in [
        (IpAddr::V4(LAN_GW), 24),
        (IpAddr::V4(BEYOND), 24),
        (IpAddr::V6(LAN_GW6), 64),
    ] {
        ok("lan address", rl.add_address(br.index, addr, len).await);
    }
    let (up, peer) = ok(
        "uplink",
        w.rh.add_veth(PARENT, "lan0", Some(PARENT_MTU), "test-lan")
            .await,
    );
    ok("move", w.rh.move_to(peer.index, &ns.ns, None).await);
    ok("uplink up", w.rh.set_up(up.index).await);
    let port = ok("lan0", rl.require_link("lan0").await);
    ok("attach", rl.set_master(port.index, br.index).await);
    ok("lan0 up", rl.set_up(port.index).await);
    ok("bridge up", rl.set_up(br.index).await);
    Lan {
        ns,
        rl,
        port: port.index,
    }
}

/// A network of `driver` on the LAN's subnet, its gateway the LAN's.
fn spec(name: &str, driver: &str, options: &[(&str, &str)]) -> NetworkSpec {
    NetworkSpec {
        driver: driver.into(),
        ipv4: vec![IpamPoolSpec {
            subnet: Some("10.77.0.0/24".into()),
            gateway: Some(LAN_GW.to_string()),
            ..Default::default()
        }],
        ..net_spec(name, "10.77.0.0/24", options)
    }
}

/// A network of `driver` on a subnet of its own (IPAM refuses a second on the LAN's).
fn spec_aside(name: &str, driver: &str, options: &[(&str, &str)]) -> NetworkSpec {
    NetworkSpec {
        driver: driver.into(),
        ..net_spec(name, "10.79.0.0/24", options)
    }
}

async fn make(w: &World, s: NetworkSpec) -> Network {
    ok(
        &format!("create network {}", s.name),
        w.controller.create_network(s).await,
    )
}

/// Whether the kernel has `feature`, and why not.
async fn kernel_has(feature: Feature) -> Result<(), String> {
    match ok("probe", probe_link_kind(feature).await) {
        Outcome::Present => Ok(()),
        Outcome::Missing(why) => Err(why),
    }
}

async fn eth0(ns: &plexus_sys::netns::Netns) -> plexus_sys::rtnl::Link {
    links_of(ns)
        .await
        .into_iter()
        .find(|l| l.name == "eth0")
        .unwrap_or_else(|| panic!("no eth0 in the sandbox"))
}

#[tokio::test]
async fn bridge_mode_sandboxes_reach_each_other_and_the_lan_over_ipv4_and_ipv6() {
    need_root!();
    let mut w = World::new().await;
    let lan = lan(&w).await;
    let s = NetworkSpec {
        enable_ipv6: true,
        ipv6: vec![IpamPoolSpec {
            subnet: Some("fd00:77::/64".into()),
            gateway: Some(LAN_GW6.to_string()),
            ..Default::default()
        }],
        ..spec("lan1", "macvlan", &[("parent", PARENT)])
    };
    let net = make(&w, s).await;
    assert_eq!(net.scope, plexus_cnm::Scope::Local);
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let e1 = w.connect("s1", "lan1").await;
    let e2 = w.connect("s2", "lan1").await;
    assert_eq!(e1.interface.as_deref(), Some("eth0"));
    assert_eq!(e1.mac.as_deref(), Some("02:42:0a:4d:00:02"));
    let dev = eth0(w.sb("s1")).await;
    assert_eq!(dev.kind.as_deref(), Some("macvlan"));
    assert_eq!(dev.mac, Some(vec![0x02, 0x42, 10, 77, 0, 2]));
    assert_eq!(dev.mtu, Some(PARENT_MTU), "the parent's MTU");
    assert_eq!(
        dev.alias,
        Some(format!("{MARK}:macvlan:{}:{}", net.id, e1.id))
    );
    // Nothing of the endpoint's in the host namespace: the device was born in the sandbox.
    assert!(
        w.marked_links().await.is_empty(),
        "{:?}",
        w.marked_links().await
    );

    // Sandbox to sandbox, over both families, switched by the parent's macvlan port.
    let _s2 = Server::start(w.sb("s2"), sa(ip4(&e2), 7000));
    assert_eq!(
        reaches(w.sb("s1"), sa(ip4(&e2), 7000)),
        ip4(&e1).to_string()
    );
    let _s2v6 = Server::start(w.sb("s2"), sa(ip6(&e2), 7001));
    assert_eq!(
        reaches(w.sb("s1"), sa(ip6(&e2), 7001)),
        ip6(&e1).to_string()
    );
    // The LAN's gateway, and beyond it through the default route; the LAN sees the
    // sandbox's own address (no NAT).
    let _gw = Server::start(&lan.ns.ns, sa(LAN_GW, 7002));
    assert_eq!(reaches(w.sb("s1"), sa(LAN_GW, 7002)), ip4(&e1).to_string());
    let _gw6 = Server::start(&lan.ns.ns, sa(LAN_GW6, 7003));
    assert_eq!(reaches(w.sb("s1"), sa(LAN_GW6, 7003)), ip6(&e1).to_string());
    let _beyond = Server::start(&lan.ns.ns, sa(BEYOND, 7004));
    assert_eq!(reaches(w.sb("s2"), sa(BEYOND, 7004)), ip4(&e2).to_string());
    // The LAN reaches a sandbox; the host, with an address on the parent, does not (the
    // kernel hands frames between a parent and its macvlan devices to neither).
    let _s1 = Server::start(w.sb("s1"), sa(ip4(&e1), 7005));
    assert_eq!(reaches(&lan.ns.ns, sa(ip4(&e1), 7005)), LAN_GW.to_string());
    let up = ok("uplink", w.rh.require_link(PARENT).await);
    ok(
        "host address",
        w.rh.add_address(up.index, Ipv4Addr::new(10, 77, 0, 250).into(), 24)
            .await,
    );
    assert!(
        blocked(&w.host.ns, sa(ip4(&e1), 7005)),
        "the host reached its own macvlan child"
    );

    // Disconnect takes the device out of service at once (no address, no route in the
    // sandbox) and deletes it in the background; a reconnect right away with the same
    // address, so the same MAC, gets the same name. Removing the network leaves the host's
    // parent alone.
    ok("disconnect", w.controller.disconnect("s1", "lan1").await);
    let r1 = ok("sandbox rtnl", Rtnl::connect(w.sb("s1")).await);
    for l in ok("links", r1.links().await) {
        if l.name != "lo" {
            let held = ok("addresses", r1.addresses(l.index).await);
            assert!(held.is_empty(), "{} still holds {held:?}", l.name);
        }
    }
    let routes = ok("routes", r1.main_routes_v4().await);
    assert!(routes.is_empty(), "{routes:?}");
    let same = EndpointSpec {
        ipv4: Some(ip4(&e1).to_string()),
        ..EndpointSpec::default()
    };
    let again = w.connect_with("s1", "lan1", same).await;
    assert_eq!(again.mac, e1.mac);
    assert!(links_of(w.sb("s1")).await.iter().any(|l| l.name == "eth0"));
    assert_eq!(
        reaches(w.sb("s1"), sa(ip4(&e2), 7000)),
        ip4(&again).to_string()
    );
    ok("disconnect", w.controller.disconnect("s1", "lan1").await);
    w.bridge.settle().await;
    let left: Vec<String> = links_of(w.sb("s1"))
        .await
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(left, ["lo"], "the retired device is deleted");
    ok("disconnect", w.controller.disconnect("s2", "lan1").await);
    ok("remove", w.controller.delete_network("lan1").await);
    assert!(ok("parent", w.rh.link(PARENT).await).is_some());
}

#[tokio::test]
async fn private_mode_keeps_sandboxes_apart_but_not_from_the_lan() {
    need_root!();
    let mut w = World::new().await;
    let lan = lan(&w).await;
    let opts = [("parent", PARENT), ("macvlan_mode", "private")];
    make(&w, spec("priv", "macvlan", &opts)).await;
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let e1 = w.connect("s1", "priv").await;
    let e2 = w.connect("s2", "priv").await;
    let _gw = Server::start(&lan.ns.ns, sa(LAN_GW, 7000));
    assert_eq!(reaches(w.sb("s1"), sa(LAN_GW, 7000)), ip4(&e1).to_string());
    assert_eq!(reaches(w.sb("s2"), sa(LAN_GW, 7000)), ip4(&e2).to_string());
    let _s2 = Server::start(w.sb("s2"), sa(ip4(&e2), 7001));
    assert!(blocked(w.sb("s1"), sa(ip4(&e2), 7001)));
    // Not even when the switch sends frames back where they came from.
    ok(
        "hairpin",
        lan.rl
            .set_port_flags(
                lan.port,
                PortFlags {
                    hairpin: true,
                    isolated: false,
                },
            )
            .await,
    );
    assert!(blocked(w.sb("s1"), sa(ip4(&e2), 7001)));
}

#[tokio::test]
async fn vepa_mode_reaches_other_sandboxes_only_through_a_switch_that_sends_back() {
    need_root!();
    let mut w = World::new().await;
    let lan = lan(&w).await;
    let opts = [("parent", PARENT), ("macvlan_mode", "vepa")];
    make(&w, spec("vepa", "macvlan", &opts)).await;
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let e1 = w.connect("s1", "vepa").await;
    let e2 = w.connect("s2", "vepa").await;
    let _gw = Server::start(&lan.ns.ns, sa(LAN_GW, 7000));
    assert_eq!(reaches(w.sb("s1"), sa(LAN_GW, 7000)), ip4(&e1).to_string());
    let _s2 = Server::start(w.sb("s2"), sa(ip4(&e2), 7001));
    // Everything leaves through the parent; the LAN's bridge does not send a frame back out
    // the port it came in by...
    assert!(blocked(w.sb("s1"), sa(ip4(&e2), 7001)));
    // ...until that port is in hairpin mode (802.1Qbg reflective relay).
    ok(
        "hairpin",
        lan.rl
            .set_port_flags(
                lan.port,
                PortFlags {
                    hairpin: true,
                    isolated: false,
                },
            )
            .await,
    );
    assert_eq!(
        reaches(w.sb("s1"), sa(ip4(&e2), 7001)),
        ip4(&e1).to_string()
    );
}

#[tokio::test]
async fn passthru_gives_the_parent_to_one_endpoint_at_a_time() {
    need_root!();
    let mut w = World::new().await;
    let lan = lan(&w).await;
    let opts = [("parent", PARENT), ("macvlan_mode", "passthru")];
    make(&w, spec("pt", "macvlan", &opts)).await;
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let e1 = w.connect("s1", "pt").await;
    // The device has the parent's MAC (the kernel's rule for passthru).
    let parent = ok("uplink", w.rh.require_link(PARENT).await);
    assert_eq!(eth0(w.sb("s1")).await.mac, parent.mac);
    assert_eq!(e1.mac, None);
    let _gw = Server::start(&lan.ns.ns, sa(LAN_GW, 7000));
    assert_eq!(reaches(w.sb("s1"), sa(LAN_GW, 7000)), ip4(&e1).to_string());
    let second = w
        .controller
        .connect("s2", "pt", Default::default())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        second.contains("passthru") && second.contains("one endpoint at a time"),
        "{second}"
    );
    assert!(links_of(w.sb("s2")).await.iter().all(|l| l.name != "eth0"));
    // Once the first leaves, the parent is free for another.
    ok("disconnect", w.controller.disconnect("s1", "pt").await);
    let e2 = w.connect("s2", "pt").await;
    assert_eq!(reaches(w.sb("s2"), sa(LAN_GW, 7000)), ip4(&e2).to_string());
}

#[tokio::test]
async fn an_internal_network_gets_a_parent_that_goes_nowhere() {
    need_root!();
    let mut w = World::new().await;
    let lan = lan(&w).await;
    // `-o parent` is ignored with --internal, as Docker does.
    let s = NetworkSpec {
        internal: true,
        ..spec("int", "macvlan", &[("parent", PARENT)])
    };
    let net = make(&w, s).await;
    let dummy = kernel_has(Feature::Dummy).await;
    let (kind, name) = match &dummy {
        Ok(()) => ("dummy", format!("dm-{}", &net.id[..12])),
        Err(_) => ("lanparent", format!("plxm{}", &net.id[..11])),
    };
    let parent = ok("parent", w.rh.require_link(&name).await);
    assert_eq!(
        parent.alias,
        Some(format!("{MARK}:{kind}:macvlan:{}", net.id))
    );
    assert!(parent.up);
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let e1 = w.connect("s1", "int").await;
    let e2 = w.connect("s2", "int").await;
    let _s2 = Server::start(w.sb("s2"), sa(ip4(&e2), 7000));
    assert_eq!(
        reaches(w.sb("s1"), sa(ip4(&e2), 7000)),
        ip4(&e1).to_string()
    );
    // No way out: no default route, and the LAN is not on the parent.
    let rs = ok("rtnl", Rtnl::connect(w.sb("s1")).await);
    let main = ok("routes", rs.routes_in_table_v4(254).await);
    assert!(main.iter().all(|r| r.destination.is_some()), "{main:?}");
    let _gw = Server::start(&lan.ns.ns, sa(LAN_GW, 7001));
    assert!(blocked(w.sb("s1"), sa(LAN_GW, 7001)));
    ok("disconnect", w.controller.disconnect("s1", "int").await);
    ok("disconnect", w.controller.disconnect("s2", "int").await);
    ok("remove", w.controller.delete_network("int").await);
    assert!(ok("parent gone", w.rh.link(&name).await).is_none());
    assert!(ok("uplink kept", w.rh.link(PARENT).await).is_some());
}

#[tokio::test]
async fn without_a_parent_the_network_needs_dummy_links() {
    need_root!();
    let w = World::new().await;
    let before = w.marked_links().await;
    let s = spec("nowhere", "macvlan", &[]);
    match kernel_has(Feature::Dummy).await {
        Ok(()) => {
            let net = make(&w, s).await;
            let name = format!("dm-{}", &net.id[..12]);
            let dm = ok("dummy", w.rh.require_link(&name).await);
            assert_eq!(dm.kind.as_deref(), Some("dummy"));
            ok("remove", w.controller.delete_network("nowhere").await);
            assert!(ok("gone", w.rh.link(&name).await).is_none());
        }
        Err(why) => {
            let e = w.controller.create_network(s).await.err();
            let e = e.map(|e| e.to_string()).unwrap_or_default();
            assert!(
                e.contains("no option parent") && e.contains("module dummy"),
                "{e}"
            );
            assert_eq!(w.marked_links().await, before);
            assert!(ok("networks", w.controller.networks().await)
                .iter()
                .all(|n| n.name != "nowhere"));
            plexus_testkit::skip(&format!(
                "this kernel has no dummy links ({why}): a macvlan network without -o parent is refused, not made"
            ));
        }
    }
}

#[tokio::test]
async fn bad_input_names_the_field_and_makes_nothing() {
    need_root!();
    let w = World::new().await;
    let _lan = lan(&w).await;
    make(&w, spec("first", "macvlan", &[("parent", PARENT)])).await;
    let before = w.marked_links().await;
    for (driver, opts, want) in [
        (
            "macvlan",
            vec![("parent", PARENT), ("macvlan_mode", "l2")],
            "macvlan_mode",
        ),
        (
            "macvlan",
            vec![("parent", PARENT), ("ipvlan_mode", "l2")],
            "ipvlan_mode",
        ),
        (
            "macvlan",
            vec![("parent", PARENT), ("color", "blue")],
            "color",
        ),
        ("macvlan", vec![("parent", "nosuch0")], "parent=\"nosuch0\""),
        (
            "macvlan",
            vec![("parent", "nosuch0.10")],
            "no interface \"nosuch0\"",
        ),
        ("macvlan", vec![("parent", "uplink.4095")], "1 to 4094"),
        ("macvlan", vec![("parent", "uplink.0")], "1 to 4094"),
        ("macvlan", vec![("parent", "lo")], "loopback"),
        // One network per parent, whatever the mode.
        (
            "macvlan",
            vec![("parent", PARENT), ("macvlan_mode", "private")],
            "network \"first\"",
        ),
        (
            "ipvlan",
            vec![("parent", PARENT), ("ipvlan_flag", "sideways")],
            "ipvlan_flag",
        ),
        (
            "ipvlan",
            vec![("parent", PARENT), ("macvlan_mode", "bridge")],
            "macvlan_mode",
        ),
    ] {
        let e = w
            .controller
            .create_network(spec_aside("bad", driver, &opts))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("{driver} {opts:?} was accepted"));
        assert!(e.contains(want), "{driver} {opts:?}: {e}");
        let names: Vec<String> = ok("networks", w.controller.networks().await)
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert!(!names.contains(&"bad".to_string()), "{names:?}");
        assert_eq!(w.marked_links().await, before, "{driver} {opts:?}");
    }
    // The same parent through the other driver is taken too (or the kernel has no ipvlan).
    let e = w
        .controller
        .create_network(spec_aside("bad", "ipvlan", &[("parent", PARENT)]))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("network \"first\"") || e.contains("module ipvlan"),
        "{e}"
    );
}

#[tokio::test]
async fn a_vlan_parent_is_made_and_removed_only_when_plexus_made_it() {
    need_root!();
    let w = World::new().await;
    let _lan = lan(&w).await;
    let before = w.marked_links().await;
    let s = spec("v10", "macvlan", &[("parent", "uplink.10")]);
    if let Err(why) = kernel_has(Feature::Vlan).await {
        let e = w.controller.create_network(s).await.err();
        let e = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("parent=\"uplink.10\"") && e.contains("module 8021q"),
            "{e}"
        );
        assert_eq!(w.marked_links().await, before);
        assert!(ok("no sub-interface", w.rh.link("uplink.10").await).is_none());
        return plexus_testkit::skip(&format!("this kernel has no 802.1q links ({why})"));
    }
    let net = make(&w, s).await;
    let vlan = ok("uplink.10", w.rh.require_link("uplink.10").await);
    assert_eq!(vlan.kind.as_deref(), Some("vlan"));
    assert_eq!(vlan.alias, Some(format!("{MARK}:vlan:macvlan:{}", net.id)));
    // The same parent and VLAN again: refused naming the first.
    let e = w
        .controller
        .create_network(spec_aside("again", "macvlan", &[("parent", "uplink.10")]))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("network \"v10\""), "{e}");
    ok("remove", w.controller.delete_network("v10").await);
    assert!(ok("gone", w.rh.link("uplink.10").await).is_none());
    // A sub-interface the host had already is used and left alone.
    let up = ok("uplink", w.rh.require_link(PARENT).await);
    ok(
        "own vlan",
        w.rh.add_vlan("uplink.20", up.index, 20, "mine").await,
    );
    make(&w, spec("v20", "macvlan", &[("parent", "uplink.20")])).await;
    ok("remove", w.controller.delete_network("v20").await);
    assert!(ok("kept", w.rh.link("uplink.20").await).is_some());
}

#[tokio::test]
async fn ipvlan_networks_where_the_kernel_has_them() {
    need_root!();
    let mut w = World::new().await;
    let lan = lan(&w).await;
    let before = w.marked_links().await;
    let s = spec("iv", "ipvlan", &[("parent", PARENT)]);
    if let Err(why) = kernel_has(Feature::Ipvlan).await {
        let e = w.controller.create_network(s).await.err();
        let e = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("ipvlan network") && e.contains("module ipvlan"),
            "{e}"
        );
        assert_eq!(w.marked_links().await, before);
        return plexus_testkit::skip(&format!("this kernel has no ipvlan links ({why})"));
    }
    make(&w, s).await;
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let e1 = w.connect("s1", "iv").await;
    let e2 = w.connect("s2", "iv").await;
    let parent = ok("uplink", w.rh.require_link(PARENT).await);
    let dev = eth0(w.sb("s1")).await;
    assert_eq!(dev.kind.as_deref(), Some("ipvlan"));
    assert_eq!(dev.mac, parent.mac, "an ipvlan device has its parent's MAC");
    let _s2 = Server::start(w.sb("s2"), sa(ip4(&e2), 7000));
    assert_eq!(
        reaches(w.sb("s1"), sa(ip4(&e2), 7000)),
        ip4(&e1).to_string()
    );
    let _gw = Server::start(&lan.ns.ns, sa(LAN_GW, 7001));
    assert_eq!(reaches(w.sb("s1"), sa(LAN_GW, 7001)), ip4(&e1).to_string());
    ok("disconnect", w.controller.disconnect("s1", "iv").await);
    ok("disconnect", w.controller.disconnect("s2", "iv").await);
    ok("remove", w.controller.delete_network("iv").await);
    // l3: everything out the device, no gateway (Docker's `default dev eth0`).
    make(
        &w,
        spec(
            "iv3",
            "ipvlan",
            &[("parent", PARENT), ("ipvlan_mode", "l3")],
        ),
    )
    .await;
    let e1 = w.connect("s1", "iv3").await;
    assert!(e1.disable_gateway);
    let rs = ok("rtnl", Rtnl::connect(w.sb("s1")).await);
    let main = ok("routes", rs.routes_in_table_v4(254).await);
    assert!(
        main.iter()
            .any(|r| r.destination.is_none() && r.gateway.is_none()),
        "{main:?}"
    );
}

#[tokio::test]
async fn reconciliation_puts_a_deleted_device_back_and_removes_unknown_ones() {
    need_root!();
    let mut w = World::new().await;
    let lan = lan(&w).await;
    let net = make(&w, spec("lan1", "macvlan", &[("parent", PARENT)])).await;
    w.sandbox("s1").await;
    let e1 = w.connect("s1", "lan1").await;
    let _gw = Server::start(&lan.ns.ns, sa(LAN_GW, 7000));
    let rs = ok("rtnl", Rtnl::connect(w.sb("s1")).await);

    // Deleted behind Plexus's back while running: made again by the periodic pass.
    ok("delete", rs.delete_link(eth0(w.sb("s1")).await.index).await);
    let report = ok(
        "reconcile",
        w.controller.reconcile(ReconcileMode::Periodic).await,
    );
    let done = report.drivers.get("macvlan").cloned().unwrap_or_default();
    assert_eq!(done.endpoints, std::slice::from_ref(&e1.id), "{report:?}");
    assert_eq!(
        eth0(w.sb("s1")).await.mac,
        Some(vec![0x02, 0x42, 10, 77, 0, 2])
    );
    assert_eq!(reaches(w.sb("s1"), sa(LAN_GW, 7000)), ip4(&e1).to_string());

    // A restarted daemon: fresh drivers, knowing only the kernel and the store. The device
    // deleted meanwhile comes back at start-up; a device and a parent marked for what the
    // store does not know go.
    ok("delete", rs.delete_link(eth0(w.sb("s1")).await.index).await);
    let up = ok("uplink", w.rh.require_link(PARENT).await);
    let stray = plexus_sys::rtnl::SubLink {
        name: "eth9",
        parent: up.index,
        kind: plexus_sys::rtnl::SubLinkKind::Macvlan(plexus_sys::rtnl::MacvlanMode::Bridge),
        mac: None,
        mtu: None,
        born_in: Some(w.sb("s1")),
    };
    ok("stray device", w.rh.add_sublink(&stray).await);
    let eth9 = ok("eth9", rs.require_link("eth9").await);
    let gone_ep = format!("{MARK}:macvlan:{}:0123456789ab", net.id);
    ok("mark", rs.set_alias_named("eth9", &gone_ep).await);
    let gone_net = format!("{MARK}:lanparent:macvlan:0123456789ab");
    ok(
        "stray parent",
        w.rh.add_veth("plxm-stray", "plxn-stray", None, &gone_net)
            .await,
    );
    let (macvlan, _ipvlan) = ok(
        "drivers",
        MacvlanDriver::pair(&DriverConfig::new(w.host.ns.clone(), MARK)).await,
    );
    let desired = desired(&w, &[&net], &[&e1]).await;
    let done = ok(
        "startup",
        plexus_cnm::Driver::reconcile(&macvlan, &desired, ReconcileMode::Startup).await,
    );
    assert_eq!(done.networks, std::slice::from_ref(&net.id));
    assert_eq!(done.endpoints, std::slice::from_ref(&e1.id));
    // Both ends of the stray pair are marked; deleting either takes the other.
    assert_eq!(done.removed.len(), 3, "{done:?}");
    assert!(ok("stray parent gone", w.rh.link("plxm-stray").await).is_none());
    assert!(links_of(w.sb("s1"))
        .await
        .iter()
        .all(|l| l.index != eth9.index));
    assert_eq!(reaches(w.sb("s1"), sa(LAN_GW, 7000)), ip4(&e1).to_string());
    // The restored driver knows the endpoint: its leave takes the device out of service
    // and deletes it.
    ok(
        "leave",
        plexus_cnm::Driver::leave(&macvlan, &net.id, &e1.id).await,
    );
    assert!(blocked(w.sb("s1"), sa(LAN_GW, 7000)));
    macvlan.settle().await;
    assert!(links_of(w.sb("s1")).await.iter().all(|l| l.name != "eth0"));
}
