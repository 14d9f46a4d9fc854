//! Docker's default `bridge` network as plexusd makes it at start
//! (`plexus_drivers::create_default_bridge`), against the real kernel: the subnet it picks stays
//! clear of the host's routes, sandboxes on it talk and go out masqueraded, it cannot be
//! removed, and a bad `--bip` or a taken bridge name is an error naming the flag that leaves
//! nothing behind.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use ipnet::IpNet;
use plexus_cnm::NetworkSpec;
use plexus_drivers::{create_default_bridge, DefaultBridge};
use plexus_sys::rtnl::BridgeSpec;

/// The host's IPv4 routes, as plexusd reads them.
async fn host_routes(w: &World) -> Vec<IpNet> {
    ok("routes", w.rh.route_destinations_v4().await)
        .into_iter()
        .filter_map(|(ip, len)| IpNet::new(IpAddr::V4(ip), len).ok())
        .collect()
}

fn default_bridge(bip: Option<&str>, avoid: Vec<IpNet>) -> DefaultBridge {
    DefaultBridge {
        bridge_name: "plexus0".into(),
        bip: bip.map(|b| ok("bip", b.parse::<IpNet>())),
        avoid,
        ..Default::default()
    }
}

/// `create_default_bridge(spec)`, which must not fail (`what` names the step): the network
/// made, if any.
async fn make_default(w: &World, what: &str, spec: &DefaultBridge) -> Option<plexus_cnm::Network> {
    ok(what, create_default_bridge(&w.controller, spec).await)
}

fn net(s: &str) -> IpNet {
    ok("cidr", s.parse::<IpNet>())
}

#[tokio::test]
async fn default_bridge_avoids_the_host_routes_carries_traffic_and_stays() {
    need_root!();
    let mut w = World::new().await;
    // Docker's docker0 on this host: 172.17.0.0/16, the first default pool, is routed.
    let docker0 = ok(
        "docker0",
        w.rh.add_bridge(
            &BridgeSpec {
                name: "docker0",
                ..Default::default()
            },
            "test-docker0",
        )
        .await,
    );
    ok(
        "docker0 address",
        w.rh.add_address(docker0.index, Ipv4Addr::new(172, 17, 0, 1).into(), 16)
            .await,
    );
    ok("docker0 up", w.rh.set_up(docker0.index).await);
    let routes = host_routes(&w).await;
    assert!(
        routes.contains(&ok("net", "172.17.0.0/16".parse())),
        "{routes:?}"
    );

    let made = make_default(&w, "default bridge", &default_bridge(None, routes.clone())).await;
    let net = made.unwrap_or_else(|| panic!("no default bridge made"));
    assert_eq!(net.name, "bridge");
    assert_eq!(net.driver, "bridge");
    let pool = &net.ipv4[0];
    assert_eq!(pool.subnet.to_string(), "172.18.0.0/16");
    assert_eq!(
        pool.gateway.map(|g| g.to_string()).as_deref(),
        Some("172.18.0.1/16")
    );
    assert_eq!(
        net.spec
            .options
            .get("com.docker.network.bridge.default_bridge")
            .map(String::as_str),
        Some("true")
    );
    // The kernel: a bridge named as --bridge says, with the gateway's address.
    let links = w.host_links().await;
    let br = links
        .iter()
        .find(|l| l.name == "plexus0")
        .unwrap_or_else(|| panic!("no plexus0: {links:?}"));
    assert_eq!(
        ok("addresses", w.rh.addresses(br.index).await),
        [(IpAddr::V4(Ipv4Addr::new(172, 18, 0, 1)), 16)]
    );

    // Sandboxes on it talk to each other, and go out masqueraded.
    w.sandbox("a").await;
    w.sandbox("b").await;
    let a = w.connect("a", "bridge").await;
    let b = w.connect("b", "bridge").await;
    assert_eq!(ip4(&a), Ipv4Addr::new(172, 18, 0, 2));
    let _srv = Server::start(w.sb("b"), sa(ip4(&b), 7000));
    assert_eq!(reaches(w.sb("a"), sa(ip4(&b), 7000)), ip4(&a).to_string());
    let _out = Server::start(&w.outside.ns, sa(OUTSIDE, 9000));
    assert_eq!(reaches(w.sb("a"), sa(OUTSIDE, 9000)), HOST_EXT.to_string());

    // Made once; cannot be removed, even empty; prune leaves it.
    let again = make_default(&w, "again", &default_bridge(None, routes)).await;
    assert!(again.is_none(), "{again:?}");
    ok("disconnect", w.controller.disconnect("a", "bridge").await);
    ok("disconnect", w.controller.disconnect("b", "bridge").await);
    let kept = w.controller.delete_network("bridge").await;
    assert_eq!(
        kept.map_err(|e| (e.http_status(), e.to_string())).err(),
        Some((
            403,
            "bridge is a pre-defined network and cannot be removed".to_string()
        ))
    );
    assert!(ok("prune", w.controller.prune_networks().await).is_empty());
    // The subnets it passed over went back to the pools: the next network takes the first.
    let next = ok(
        "next",
        w.controller
            .create_network(NetworkSpec {
                name: "next".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(next.ipv4[0].subnet.to_string(), "172.17.0.0/16");
}

#[tokio::test]
async fn bip_gives_the_subnet_and_bad_ones_leave_nothing() {
    need_root!();
    let w = World::new().await;
    let nothing_left = |links: Vec<plexus_sys::rtnl::Link>| {
        assert!(
            links.iter().all(|l| l.name != "plexus0"),
            "a bridge was left: {links:?}"
        );
    };
    // Not a host address with its prefix, or not IPv4: a 400 naming bip, nothing made.
    for bad in ["10.96.0.0/24", "10.96.0.1/32", "10.96.0.1/31", "fd00::1/64"] {
        match create_default_bridge(&w.controller, &default_bridge(Some(bad), Vec::new())).await {
            Err(e) => {
                assert_eq!(e.http_status(), 400, "{bad}: {e}");
                assert!(e.to_string().starts_with("invalid bip: "), "{bad}: {e}");
            }
            Ok(n) => panic!("{bad} accepted: {n:?}"),
        }
    }
    // A subnet another network has: an error naming bip, nothing made.
    w.network("user", "10.97.0.0/24", &[]).await;
    match create_default_bridge(
        &w.controller,
        &default_bridge(Some("10.97.0.1/24"), Vec::new()),
    )
    .await
    {
        Err(e) => assert!(e.to_string().starts_with("invalid bip: "), "{e}"),
        Ok(n) => panic!("overlapping bip accepted: {n:?}"),
    }
    // The bridge name taken by a link that is no bridge: an error naming bridge. (A bridge
    // of the user's under that name is used as it is, as dockerd's --bridge does.)
    let (taken, _) = ok(
        "taken",
        w.rh.add_veth("plexus0", "plexus0-p", None, "someone-else")
            .await,
    );
    match create_default_bridge(
        &w.controller,
        &default_bridge(Some("10.96.0.1/24"), Vec::new()),
    )
    .await
    {
        Err(e) => assert!(e.to_string().starts_with("invalid bridge: "), "{e}"),
        Ok(n) => panic!("taken bridge name accepted: {n:?}"),
    }
    ok("free the name", w.rh.delete_link(taken.index).await);
    let names: Vec<String> = ok("list", w.controller.networks().await)
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["user"]);
    nothing_left(w.host_links().await);

    // A good one gives exactly that subnet and gateway.
    let net = make_default(&w, "bip", &default_bridge(Some("10.96.0.1/24"), Vec::new()))
        .await
        .unwrap_or_else(|| panic!("no default bridge made"));
    assert_eq!(net.ipv4[0].subnet.to_string(), "10.96.0.0/24");
    assert_eq!(
        net.ipv4[0].gateway.map(|g| g.to_string()).as_deref(),
        Some("10.96.0.1/24")
    );
}

/// A network the user named `bridge` (without Docker's default-bridge option) stays theirs:
/// no default bridge is made over it, and they can remove it.
#[tokio::test]
async fn a_users_own_bridge_network_is_left_alone() {
    need_root!();
    let w = World::new().await;
    let mine = w.network("bridge", "10.98.0.0/24", &[]).await;
    let made = make_default(&w, "default bridge", &default_bridge(None, Vec::new())).await;
    assert!(made.is_none(), "{made:?}");
    assert_eq!(
        ok("bridge", w.controller.network("bridge").await).id,
        mine.id
    );
    ok("rm", w.controller.delete_network("bridge").await);
}

/// dockerd's `--fixed-cidr`, `--ipv6` and `--fixed-cidr-v6`: sandboxes get their IPv4 address
/// from the range and an IPv6 address from the given subnet, and talk over IPv6. Bad values
/// are errors naming the flag, and leave nothing.
#[tokio::test]
async fn fixed_cidr_and_ipv6_on_the_default_bridge() {
    need_root!();
    let mut w = World::new().await;
    let bad = [
        (Some("10.97.0.0/24"), false, None, "fixed-cidr"),
        (Some("fd00:97::/64"), false, None, "fixed-cidr"),
        (None, true, Some("10.97.9.0/24"), "fixed-cidr-v6"),
        (None, false, Some("fd00:96::/64"), "fixed-cidr-v6"),
    ];
    for (range, ipv6, v6, field) in bad {
        let spec = DefaultBridge {
            fixed_cidr: range.map(net),
            ipv6,
            fixed_cidr_v6: v6.map(net),
            ..default_bridge(Some("10.96.0.1/16"), Vec::new())
        };
        match create_default_bridge(&w.controller, &spec).await {
            Err(e) => {
                assert_eq!(e.http_status(), 400, "{e}");
                assert!(
                    e.to_string().starts_with(&format!("invalid {field}: ")),
                    "{e}"
                );
            }
            Ok(n) => panic!("{range:?} {v6:?} accepted: {n:?}"),
        }
    }
    assert!(ok("list", w.controller.networks().await).is_empty());
    assert!(w.host_links().await.iter().all(|l| l.name != "plexus0"));

    let spec = DefaultBridge {
        fixed_cidr: Some(net("10.96.5.0/24")),
        ipv6: true,
        fixed_cidr_v6: Some(net("fd00:96::/64")),
        ..default_bridge(Some("10.96.0.1/16"), Vec::new())
    };
    let made = make_default(&w, "made", &spec)
        .await
        .unwrap_or_else(|| panic!("no default bridge made"));
    assert!(made.spec.enable_ipv6);
    assert_eq!(made.ipv6[0].subnet.to_string(), "fd00:96::/64");
    w.sandbox("a").await;
    w.sandbox("b").await;
    let a = w.connect("a", "bridge").await;
    let b = w.connect("b", "bridge").await;
    for ep in [&a, &b] {
        assert!(net("10.96.5.0/24").contains(&IpAddr::V4(ip4(ep))), "{ep:?}");
        assert!(net("fd00:96::/64").contains(&IpAddr::V6(ip6(ep))), "{ep:?}");
    }
    let _srv = Server::start(w.sb("b"), sa(ip6(&b), 7000));
    assert_eq!(reaches(w.sb("a"), sa(ip6(&b), 7000)), ip6(&a).to_string());
}

/// The addresses of the kernel bridge `name`, or `None` when there is no such link.
async fn bridge_addresses(w: &World, name: &str) -> Option<Vec<(IpAddr, u8)>> {
    let link = w.host_links().await.into_iter().find(|l| l.name == name)?;
    Some(ok("addresses", w.rh.addresses(link.index).await))
}

/// As dockerd remakes its default network at every start, a default bridge network whose
/// flags changed is remade from them when no sandbox is on it (a new `--bip`, or a new
/// `--bridge` name; without `--bip` it keeps its subnet), and its old subnet goes back. With
/// a sandbox on it, it stays as it is and the sandbox keeps its address and its way out.
#[tokio::test]
async fn the_default_bridge_follows_changed_flags_unless_it_has_sandboxes() {
    need_root!();
    let mut w = World::new().await;
    let first = make_default(
        &w,
        "first",
        &default_bridge(Some("10.95.0.1/24"), Vec::new()),
    )
    .await
    .unwrap_or_else(|| panic!("no default bridge made"));
    let same = make_default(
        &w,
        "same flags",
        &default_bridge(Some("10.95.0.1/24"), Vec::new()),
    )
    .await;
    assert!(same.is_none(), "remade with the same flags: {same:?}");

    // A new --bip: remade with its subnet; the kernel bridge has the new gateway only.
    let moved = make_default(
        &w,
        "new bip",
        &default_bridge(Some("10.95.1.1/24"), Vec::new()),
    )
    .await
    .unwrap_or_else(|| panic!("not remade for a new --bip"));
    assert_ne!(moved.id, first.id);
    assert_eq!(moved.ipv4[0].subnet.to_string(), "10.95.1.0/24");
    assert_eq!(
        bridge_addresses(&w, "plexus0").await,
        Some(vec![(IpAddr::V4(Ipv4Addr::new(10, 95, 1, 1)), 24)])
    );

    // A new --bridge name and --ipv6, no --bip: remade on the new bridge, same subnet.
    let renamed = DefaultBridge {
        bridge_name: "plexus9".into(),
        ipv6: true,
        ..default_bridge(None, Vec::new())
    };
    let remade = make_default(&w, "new name", &renamed)
        .await
        .unwrap_or_else(|| panic!("not remade for a new --bridge"));
    assert_eq!(remade.ipv4[0].subnet.to_string(), "10.95.1.0/24");
    assert!(
        remade.spec.enable_ipv6 && !remade.ipv6.is_empty(),
        "{remade:?}"
    );
    assert_eq!(bridge_addresses(&w, "plexus0").await, None);
    let v4 = bridge_addresses(&w, "plexus9").await.unwrap_or_default();
    assert!(
        v4.contains(&(IpAddr::V4(Ipv4Addr::new(10, 95, 1, 1)), 24)),
        "{v4:?}"
    );
    // The first subnet went back: a user network may take it.
    w.network("user", "10.95.0.0/24", &[]).await;

    // With a sandbox on it, other flags change nothing.
    w.sandbox("a").await;
    let a = w.connect("a", "bridge").await;
    let kept = make_default(
        &w,
        "with a sandbox",
        &default_bridge(Some("10.95.2.1/24"), Vec::new()),
    )
    .await;
    assert!(kept.is_none(), "remade under a sandbox: {kept:?}");
    let now = ok("bridge", w.controller.network("bridge").await);
    assert_eq!(now.id, remade.id);
    assert_eq!(now.ipv4[0].subnet.to_string(), "10.95.1.0/24");
    assert!(bridge_addresses(&w, "plexus9").await.is_some());
    assert!(net("10.95.1.0/24").contains(&IpAddr::V4(ip4(&a))), "{a:?}");
    let _out = Server::start(&w.outside.ns, sa(OUTSIDE, 9000));
    assert_eq!(reaches(w.sb("a"), sa(OUTSIDE, 9000)), HOST_EXT.to_string());
}
