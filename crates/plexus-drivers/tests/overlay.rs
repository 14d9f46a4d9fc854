//! The overlay driver across simulated hosts (needs root): each host a namespace on an
//! underlay bridge, its own driver, one in-memory control plane and one cluster store shared
//! by all (see `overlay_harness`). TCP between sandboxes on different hosts; networks kept
//! apart; a leave and a dead host removing FDB and neighbour entries elsewhere; table events
//! out of order, duplicated, moved; VXLAN ids unique across drivers; undo and reconciliation.

mod common;
mod overlay_harness;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use common::{blocked, ok, reaches, sa, Server, MARK};
use overlay_harness::Cluster;
use plexus_cnm::{
    ControlPlane, Desired, DesiredEndpoint, Driver, DriverError, EndpointInfo, InterfaceName,
    NetworkInfo, NodeDiscovery, ReconcileMode, TableEvent, TableEventKind,
};
use plexus_drivers::overlay::{options::VXLANID_LIST, PeerRecord, FIRST_AUTO_VNI, PEER_TABLE};
use plexus_drivers::{DriverConfig, OverlayConfig, OverlayDriver};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;

fn v4(s: &str) -> Ipv4Addr {
    ok("ip", s.parse())
}

/// The MTU of `name` in `ns`.
async fn mtu_in(ns: &Netns, name: &str) -> Option<u32> {
    let r = ok("connect", Rtnl::connect(ns).await);
    ok("link", r.require_link(name).await).mtu
}

/// Whether `name` in `ns` is up.
async fn up_in(ns: &Netns, name: &str) -> bool {
    let r = ok("connect", Rtnl::connect(ns).await);
    ok("link", r.require_link(name).await).up
}

/// The remote hosts `host` has FDB entries for, by MAC's last byte (Docker's MAC ends in the
/// IPv4 address).
async fn fdb_hosts(c: &Cluster, host: usize, net: &NetworkInfo) -> BTreeMap<u8, IpAddr> {
    let (fdb, _) = c.host(host).tables(net).await;
    fdb.iter()
        .filter_map(|n| Some((n.mac?[5], n.ip?)))
        .collect()
}

async fn neighbour_ips(c: &Cluster, host: usize, net: &NetworkInfo) -> BTreeSet<IpAddr> {
    let (_, neigh) = c.host(host).tables(net).await;
    // (The kernel's own entries for IPv6 multicast groups aside.)
    neigh
        .iter()
        .filter_map(|n| n.ip)
        .filter(|ip| !ip.is_multicast())
        .collect()
}

#[tokio::test]
async fn three_hosts_talk_over_one_overlay_and_a_leave_removes_the_peer_everywhere() {
    need_root!();
    let mut c = Cluster::new(3).await;
    let net = c.network("blue", "10.10.0.0/24", &[]).await;
    let vni = c.host(1).driver.vni(&net.id).await;
    assert!(vni.is_some_and(|v| v >= FIRST_AUTO_VNI), "{vni:?}");
    // Nothing on any host before a join.
    for n in 1..=3 {
        assert!(!c.host(n).driver.netns_path(&net.id).exists());
    }
    let e1 = c.attach(1, &net, "s1", "10.10.0.2").await;
    let e2 = c.attach(2, &net, "s2", "10.10.0.3").await;
    let e3 = c.attach(3, &net, "s3", "10.10.0.4").await;
    for n in 1..=3 {
        assert!(c.host(n).driver.netns_path(&net.id).exists());
        // The underlay's 1500 less VXLAN's 50, in the sandbox and in the segment.
        assert_eq!(
            mtu_in(c.host(n).sb(&format!("s{n}")), "eth0").await,
            Some(1450)
        );
        // Loopback up: the join brings it up, as the bridge driver does (the embedded DNS
        // listens there).
        assert!(
            up_in(c.host(n).sb(&format!("s{n}")), "lo").await,
            "host {n}"
        );
    }
    let (_s2, _s3, _s1) = (
        Server::start(c.host(2).sb("s2"), sa(v4("10.10.0.3"), 8080)),
        Server::start(c.host(3).sb("s3"), sa(v4("10.10.0.4"), 8080)),
        Server::start(c.host(1).sb("s1"), sa(v4("10.10.0.2"), 8080)),
    );
    assert_eq!(
        reaches(c.host(1).sb("s1"), sa(v4("10.10.0.3"), 8080)),
        "10.10.0.2"
    );
    assert_eq!(
        reaches(c.host(1).sb("s1"), sa(v4("10.10.0.4"), 8080)),
        "10.10.0.2"
    );
    assert_eq!(
        reaches(c.host(3).sb("s3"), sa(v4("10.10.0.3"), 8080)),
        "10.10.0.4"
    );
    assert_eq!(
        reaches(c.host(2).sb("s2"), sa(v4("10.10.0.2"), 8080)),
        "10.10.0.3"
    );

    // Each host holds exactly the others' endpoints, behind the right hosts.
    let at = |h: u8| IpAddr::V4(Ipv4Addr::new(192, 0, 2, h));
    assert_eq!(
        fdb_hosts(&c, 1, &net).await,
        BTreeMap::from([(3, at(2)), (4, at(3))])
    );
    assert_eq!(
        neighbour_ips(&c, 2, &net).await,
        BTreeSet::from([v4("10.10.0.2").into(), v4("10.10.0.4").into()])
    );
    assert_eq!(c.host(1).driver.peers(&net.id).await.len(), 2);
    assert!(!c.host(1).driver.peers(&net.id).await.contains_key(&e1));

    // s3 leaves: its entries go from hosts 1 and 2, host 3's segment goes.
    c.detach(3, &net, &e3).await;
    for n in [1, 2] {
        let fdb = fdb_hosts(&c, n, &net).await;
        assert!(!fdb.contains_key(&4), "host {n}: {fdb:?}");
        let ips = neighbour_ips(&c, n, &net).await;
        assert!(!ips.contains(&v4("10.10.0.4").into()), "host {n}: {ips:?}");
    }
    assert!(!c.host(3).driver.netns_path(&net.id).exists());
    assert!(!c.hub.members(&net.id).contains(&at(3)));
    assert!(blocked(c.host(1).sb("s1"), sa(v4("10.10.0.4"), 8080)));
    assert_eq!(
        reaches(c.host(1).sb("s1"), sa(v4("10.10.0.3"), 8080)),
        "10.10.0.2"
    );

    // Back on host 3 (a new endpoint, same address): reachable again, from the table.
    let _e3 = c.attach(3, &net, "s3b", "10.10.0.4").await;
    let _s3b = Server::start(c.host(3).sb("s3b"), sa(v4("10.10.0.4"), 8081));
    assert_eq!(
        reaches(c.host(3).sb("s3b"), sa(v4("10.10.0.3"), 8080)),
        "10.10.0.4"
    );
    assert_eq!(
        reaches(c.host(1).sb("s1"), sa(v4("10.10.0.4"), 8081)),
        "10.10.0.2"
    );

    // Removing the network on every host leaves no namespace.
    c.detach(2, &net, &e2).await;
    for n in 1..=3 {
        ok(
            "delete network",
            c.host(n).driver.delete_network(&net.id).await,
        );
        let left: Vec<_> = std::fs::read_dir(c.run_dir(n))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "host {n}: {left:?}");
    }
}

/// Dual-stack endpoints: IPv6 crosses hosts too (NDP answered by the VXLAN device's proxy from
/// the neighbour entries), and an internal network behaves the same (no egress either way).
/// Joins after a network's first on a host only make a veth pair: they stay fast.
#[tokio::test]
async fn ipv6_crosses_hosts_and_later_joins_are_fast() {
    need_root!();
    let mut c = Cluster::new(2).await;
    let mut net = c.network("six", "10.60.0.0/24", &[]).await;
    net.internal = true;
    c.attach(1, &net, "a", "10.60.0.2,fd00:60::2").await;
    c.attach(2, &net, "b", "10.60.0.3,fd00:60::3").await;
    let b6: IpAddr = ok("ip6", "fd00:60::3".parse());
    let _s = Server::start(c.host(2).sb("b"), sa(b6, 5000));
    assert_eq!(reaches(c.host(1).sb("a"), sa(b6, 5000)), "fd00:60::2");
    assert!(neighbour_ips(&c, 1, &net).await.contains(&b6));
    // Later joins on host 1: a veth pair each.
    for i in 0..10u8 {
        c.attach(1, &net, &format!("m{i}"), &format!("10.60.0.{}", 10 + i))
            .await;
    }
    let later = &c.joins[2..];
    let mut sorted = later.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    eprintln!("first join {:?}, later joins median {median:?}", c.joins[0]);
    assert!(
        median < std::time::Duration::from_millis(100),
        "joins: {later:?}"
    );
    // Host 2 learned them all.
    assert_eq!(c.host(2).driver.peers(&net.id).await.len(), 11);
}

#[tokio::test]
async fn two_overlay_networks_on_the_same_hosts_are_kept_apart() {
    need_root!();
    let mut c = Cluster::new(2).await;
    // The same subnet on both: only the segments keep them apart.
    let red = c.network("red", "10.20.0.0/24", &[]).await;
    let green = c
        .network("green", "10.20.0.0/24", &[(VXLANID_LIST, "300")])
        .await;
    assert_eq!(c.host(2).driver.vni(&green.id).await, Some(300));
    assert_ne!(c.host(2).driver.vni(&red.id).await, Some(300));
    c.attach(1, &red, "r1", "10.20.0.2").await;
    c.attach(2, &red, "r2", "10.20.0.3").await;
    c.attach(1, &green, "g1", "10.20.0.4").await;
    c.attach(2, &green, "g2", "10.20.0.5").await;
    let _servers = [
        Server::start(c.host(2).sb("r2"), sa(v4("10.20.0.3"), 9000)),
        Server::start(c.host(2).sb("g2"), sa(v4("10.20.0.5"), 9000)),
        Server::start(c.host(1).sb("g1"), sa(v4("10.20.0.4"), 9000)),
    ];
    assert_eq!(
        reaches(c.host(1).sb("r1"), sa(v4("10.20.0.3"), 9000)),
        "10.20.0.2"
    );
    assert_eq!(
        reaches(c.host(1).sb("g1"), sa(v4("10.20.0.5"), 9000)),
        "10.20.0.4"
    );
    // Across networks: neither on the same host nor on another.
    assert!(blocked(c.host(1).sb("r1"), sa(v4("10.20.0.5"), 9000)));
    assert!(blocked(c.host(1).sb("r1"), sa(v4("10.20.0.4"), 9000)));
    assert!(blocked(c.host(2).sb("r2"), sa(v4("10.20.0.4"), 9000)));
    // Each segment knows only its own network's peers.
    assert_eq!(
        neighbour_ips(&c, 1, &red).await,
        BTreeSet::from([v4("10.20.0.3").into()])
    );
    assert_eq!(
        neighbour_ips(&c, 1, &green).await,
        BTreeSet::from([v4("10.20.0.5").into()])
    );
    // A sandbox on both networks reaches both.
    c.attach(1, &green, "r1", "10.20.0.6").await;
    let both = c.host(1).sb("r1");
    assert_eq!(mtu_in(both, "eth1").await, Some(1450));
}

#[tokio::test]
async fn a_dead_host_is_forgotten_at_once_by_discover_delete() {
    need_root!();
    let mut c = Cluster::new(3).await;
    let net = c.network("svc", "10.30.0.0/24", &[]).await;
    let other = c.network("svc2", "10.31.0.0/24", &[]).await;
    c.attach(1, &net, "s1", "10.30.0.2").await;
    c.attach(2, &net, "s2", "10.30.0.3").await;
    c.attach(3, &net, "s3", "10.30.0.4").await;
    c.attach(3, &net, "s3b", "10.30.0.5").await;
    c.attach(1, &other, "s1", "10.31.0.2").await;
    c.attach(3, &other, "s3", "10.31.0.3").await;
    let _s3 = Server::start(c.host(3).sb("s3"), sa(v4("10.30.0.4"), 7000));
    assert_eq!(
        reaches(c.host(1).sb("s1"), sa(v4("10.30.0.4"), 7000)),
        "10.30.0.2"
    );
    let dead = NodeDiscovery {
        address: IpAddr::V4(c.host(3).addr),
        self_node: false,
    };
    for n in [1, 2] {
        ok(
            "discover_delete",
            c.host(n).driver.discover_delete(&dead).await,
        );
        let peers = c.host(n).driver.peers(&net.id).await;
        assert!(peers.values().all(|p| p.vtep != dead.address), "{peers:?}");
        assert_eq!(
            fdb_hosts(&c, n, &net)
                .await
                .values()
                .filter(|a| **a == dead.address)
                .count(),
            0
        );
        assert!(!neighbour_ips(&c, n, &net)
            .await
            .contains(&v4("10.30.0.4").into()));
    }
    assert!(c.host(1).driver.peers(&other.id).await.is_empty());
    assert!(blocked(c.host(1).sb("s1"), sa(v4("10.30.0.4"), 7000)));
    // Host 2 still reaches host 1.
    let _s1 = Server::start(c.host(1).sb("s1"), sa(v4("10.30.0.2"), 7000));
    assert_eq!(
        reaches(c.host(2).sb("s2"), sa(v4("10.30.0.2"), 7000)),
        "10.30.0.3"
    );
    // A host is never told to forget itself.
    let me = NodeDiscovery {
        address: IpAddr::V4(c.host(3).addr),
        self_node: true,
    };
    ok("self", c.host(3).driver.discover_delete(&me).await);
    assert_eq!(c.host(3).driver.peers(&net.id).await.len(), 2);
}

/// Table events straight to one host's driver: duplicates, a move, a stale delete, a delete
/// before its create, this host's own entry, two records sharing a MAC, a bad value.
#[tokio::test]
async fn table_events_out_of_order_duplicated_and_moved_are_tolerated() {
    need_root!();
    let mut c = Cluster::new(1).await;
    let net = c.network("ev", "10.40.0.0/24", &[]).await;
    c.attach(1, &net, "s1", "10.40.0.2").await;
    let d = c.host(1).driver.clone();
    let host = |n: u8| IpAddr::V4(Ipv4Addr::new(192, 0, 2, n));
    let rec = |ip: u8, at: u8| PeerRecord {
        mac: [0x02, 0x42, 10, 40, 0, ip],
        vtep: host(at),
        ipv4: Some(Ipv4Addr::new(10, 40, 0, ip)),
        ipv6: None,
    };
    let event = |kind, key: &str, r: &PeerRecord| TableEvent {
        kind,
        network_id: net.id.clone(),
        table: PEER_TABLE.into(),
        key: key.into(),
        value: r.encode(),
    };
    use TableEventKind::{Create, Delete, Update};
    let x9 = rec(9, 9);
    ok("create", d.event_notify(&event(Create, "x", &x9)).await);
    ok("duplicate", d.event_notify(&event(Create, "x", &x9)).await);
    assert_eq!(fdb_hosts(&c, 1, &net).await, BTreeMap::from([(9, host(9))]));
    // Moves to host 8: one remote, the new one.
    let x8 = rec(9, 8);
    ok("move", d.event_notify(&event(Update, "x", &x8)).await);
    let (fdb, _) = c.host(1).tables(&net).await;
    assert_eq!(
        fdb.iter().filter(|n| n.mac == Some(x8.mac)).count(),
        1,
        "{fdb:?}"
    );
    assert_eq!(fdb_hosts(&c, 1, &net).await, BTreeMap::from([(9, host(8))]));
    // The old record's delete arrives late: ignored.
    ok(
        "stale delete",
        d.event_notify(&event(Delete, "x", &x9)).await,
    );
    assert_eq!(fdb_hosts(&c, 1, &net).await, BTreeMap::from([(9, host(8))]));
    // A delete of something never seen, then its create.
    let y = rec(11, 7);
    ok(
        "early delete",
        d.event_notify(&event(Delete, "y", &y)).await,
    );
    ok("late create", d.event_notify(&event(Create, "y", &y)).await);
    assert_eq!(fdb_hosts(&c, 1, &net).await.get(&11), Some(&host(7)));
    // This host's own entries are not tunnelled.
    let mine = rec(12, 1);
    ok("own", d.event_notify(&event(Create, "mine", &mine)).await);
    assert!(!fdb_hosts(&c, 1, &net).await.contains_key(&12));
    // A stale record holding x's MAC and address under another key: removing x keeps the
    // kernel pointing at the one left; removing that one too clears it.
    let z = rec(9, 6);
    ok("z", d.event_notify(&event(Create, "z", &z)).await);
    assert_eq!(fdb_hosts(&c, 1, &net).await.get(&9), Some(&host(6)));
    ok("x goes", d.event_notify(&event(Delete, "x", &x8)).await);
    assert_eq!(fdb_hosts(&c, 1, &net).await.get(&9), Some(&host(6)));
    assert!(neighbour_ips(&c, 1, &net)
        .await
        .contains(&v4("10.40.0.9").into()));
    ok("z goes", d.event_notify(&event(Delete, "z", &z)).await);
    assert!(!fdb_hosts(&c, 1, &net).await.contains_key(&9));
    assert!(!neighbour_ips(&c, 1, &net)
        .await
        .contains(&v4("10.40.0.9").into()));
    // Another table, or a network not known, is not the overlay's business.
    let mut other = event(Create, "q", &y);
    other.table = "endpoint_table".into();
    ok("other table", d.event_notify(&other).await);
    let mut unknown = event(Create, "q", &y);
    unknown.network_id = "nope".into();
    ok("unknown network", d.event_notify(&unknown).await);
    // A value this version cannot read: an error naming the entry.
    let mut bad = event(Create, "broken", &y);
    bad.value = vec![7, 1, 2];
    match d.event_notify(&bad).await {
        Err(DriverError::Invalid(m)) => {
            assert!(m.contains("broken") && m.contains(PEER_TABLE), "{m}")
        }
        other => panic!("bad value: {other:?}"),
    }
}

fn info(id: &str, options: &[(&str, &str)]) -> NetworkInfo {
    NetworkInfo {
        id: id.into(),
        name: format!("n-{id}"),
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ipv4: Vec::new(),
        ipv6: Vec::new(),
        internal: false,
        enable_ipv6: false,
    }
}

#[tokio::test]
async fn vxlan_ids_never_collide_across_drivers_sharing_a_store() {
    need_root!();
    let c = Cluster::new(2).await;
    let (a, b) = (c.host(1).driver.clone(), c.host(2).driver.clone());
    // Concurrent allocations from both drivers: all different.
    let mut tasks = Vec::new();
    for i in 0..24u64 {
        let d = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            d.allocate_network(&info(&overlay_harness::id(0x77, i), &[]))
                .await
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        let data = ok("allocate", ok("task", t.await));
        let vni: u32 = ok("vni", data[VXLANID_LIST].parse());
        assert!(vni >= FIRST_AUTO_VNI);
        assert!(ids.insert(vni), "{vni} given twice");
    }
    assert_eq!(
        ok("list", c.store.list("plexus/v1/global/overlay/vni").await).len(),
        24
    );
    // Asked for: taken by another network is a conflict naming the option.
    let taken = *ids.iter().next().unwrap_or(&0);
    match b
        .allocate_network(&info("other", &[(VXLANID_LIST, &taken.to_string())]))
        .await
    {
        Err(DriverError::Conflict(m)) => assert!(m.contains(VXLANID_LIST), "{m}"),
        other => panic!("taken id: {other:?}"),
    }
    // The same network asking again gets its own id back (a retry).
    let first = overlay_harness::id(0x77, 0);
    let again = ok("again", a.allocate_network(&info(&first, &[])).await);
    assert!(ids.contains(&ok("vni", again[VXLANID_LIST].parse::<u32>())));
    // Freed, it can be taken again; another network's id is not freed by mistake.
    let data = ok(
        "requested",
        a.allocate_network(&info("mine", &[(VXLANID_LIST, "5")]))
            .await,
    );
    ok("free by another", b.free_network("not-mine", &data).await);
    assert!(b
        .allocate_network(&info("thief", &[(VXLANID_LIST, "5")]))
        .await
        .is_err());
    ok("free", b.free_network("mine", &data).await);
    ok(
        "now free",
        b.allocate_network(&info("thief", &[(VXLANID_LIST, "5")]))
            .await,
    );
    // Bad options name themselves; encryption is not there yet.
    match a
        .allocate_network(&info("bad", &[(VXLANID_LIST, "0")]))
        .await
    {
        Err(DriverError::Invalid(m)) => assert!(m.contains(VXLANID_LIST), "{m}"),
        other => panic!("vni 0: {other:?}"),
    }
    match a.validate_options(&info("enc", &[("encrypted", "")]).options) {
        Err(DriverError::Unsupported(m)) => assert!(m.contains("not yet"), "{m}"),
        other => panic!("encrypted: {other:?}"),
    }
    // Without a cluster store there is nothing to allocate from.
    let alone = ok(
        "driver",
        OverlayDriver::new(
            DriverConfig::new(c.host(1).ns.ns.clone(), MARK),
            OverlayConfig {
                run_dir: std::env::temp_dir().join("plexus-overlay-unused"),
                control_plane: c.hub.plane(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99))),
            },
        )
        .await,
    );
    match alone.allocate_network(&info("x", &[])).await {
        Err(DriverError::Invalid(m)) => assert!(m.contains("cluster store"), "{m}"),
        other => panic!("no store: {other:?}"),
    }
}

/// A join that fails half way leaves no namespace, link or entry; reconciliation makes a
/// deleted segment again, removes what the store does not know, and traffic flows again.
#[tokio::test]
async fn a_failed_join_leaves_nothing_and_reconcile_repairs_and_sweeps() {
    need_root!();
    let mut c = Cluster::new(2).await;
    let net = c
        .network(
            "rc",
            "10.50.0.0/24",
            &[(plexus_drivers::options::MTU, "1400")],
        )
        .await;
    let d1 = c.host(1).driver.clone();
    // A sandbox that does not exist: the segment made for this first join goes again.
    let ep = EndpointInfo {
        network_id: net.id.clone(),
        endpoint_id: overlay_harness::id(0x0b, 1),
        ipv4: Some(ok("ipnet", "10.50.0.9/24".parse())),
        ipv6: None,
        mac: None,
        ports: Vec::new(),
        options: BTreeMap::new(),
    };
    ok("create", d1.create_endpoint(&ep).await);
    let failed = d1
        .join(
            &net.id,
            &ep.endpoint_id,
            "/nonexistent/sandbox",
            InterfaceName::numbered("eth", 0),
        )
        .await;
    assert!(failed.is_err());
    assert!(!d1.netns_path(&net.id).exists());
    assert!(c.hub.members(&net.id).is_empty());
    let plane = c.hub.plane(IpAddr::V4(c.host(1).addr));
    assert!(plane.entries(&net.id, PEER_TABLE).is_empty());
    ok("delete", d1.delete_endpoint(&net.id, &ep.endpoint_id).await);

    let e1 = c.attach(1, &net, "s1", "10.50.0.2").await;
    let _e2 = c.attach(2, &net, "s2", "10.50.0.3").await;
    assert_eq!(mtu_in(c.host(1).sb("s1"), "eth0").await, Some(1400));
    let _srv = Server::start(c.host(2).sb("s2"), sa(v4("10.50.0.3"), 6000));
    assert_eq!(
        reaches(c.host(1).sb("s1"), sa(v4("10.50.0.3"), 6000)),
        "10.50.0.2"
    );
    let live = ok("live", d1.live_endpoints().await).unwrap_or_default();
    assert_eq!(
        live.get(&e1).and_then(|l| l.interface.clone()).as_deref(),
        Some("eth0")
    );

    // Drift: host 1's VXLAN device deleted by hand; a stray namespace in the run directory.
    let seg = c.host(1).segment(&net).await;
    let vx = ok("vxlan0", seg.require_link("vxlan0").await);
    ok("delete by hand", seg.delete_link(vx.index).await);
    drop(seg);
    assert!(blocked(c.host(1).sb("s1"), sa(v4("10.50.0.3"), 6000)));
    let stray = ok("stray", Netns::create(&c.run_dir(1), "1-deadbeef000"));
    drop(stray);
    let desired = Desired {
        networks: vec![net.clone()],
        endpoints: vec![DesiredEndpoint {
            handed_off: false,
            info: EndpointInfo {
                network_id: net.id.clone(),
                endpoint_id: e1.clone(),
                ipv4: Some(ok("ipnet", "10.50.0.2/24".parse())),
                ipv6: None,
                mac: None,
                ports: Vec::new(),
                options: BTreeMap::new(),
            },
            sandbox_key: c.host(1).sandboxes["s1"].0.path(),
            interface: Some("eth0".into()),
        }],
    };
    let report = ok(
        "reconcile",
        d1.reconcile(&desired, ReconcileMode::Periodic).await,
    );
    assert!(report.endpoints.contains(&e1), "{report:?}");
    assert!(
        report.removed.iter().any(|r| r.contains("1-deadbeef000")),
        "{report:?}"
    );
    assert!(!c.run_dir(1).join("1-deadbeef000").exists());
    c.hub.deliver().await;
    assert_eq!(
        reaches(c.host(1).sb("s1"), sa(v4("10.50.0.3"), 6000)),
        "10.50.0.2"
    );
    // A second pass has nothing to do, and tells the other hosts nothing.
    let told = c.hub.delivered_to(IpAddr::V4(c.host(2).addr));
    let again = ok(
        "reconcile",
        d1.reconcile(&desired, ReconcileMode::Periodic).await,
    );
    c.hub.deliver().await;
    assert_eq!(c.hub.delivered_to(IpAddr::V4(c.host(2).addr)), told);
    assert!(
        again.endpoints.is_empty() && again.removed.is_empty() && again.repaired.is_empty(),
        "{again:?}"
    );

    // A restarted driver (nothing in memory) adopts the segment and its endpoint.
    let fresh = Arc::new(ok(
        "restart",
        OverlayDriver::new(
            DriverConfig {
                cluster_store: Some(c.store.clone()),
                ..DriverConfig::new(c.host(1).ns.ns.clone(), MARK)
            },
            OverlayConfig {
                run_dir: c.run_dir(1),
                control_plane: c.hub.plane(IpAddr::V4(c.host(1).addr)),
            },
        )
        .await,
    ));
    let report = ok(
        "adopt",
        fresh.reconcile(&desired, ReconcileMode::Startup).await,
    );
    assert!(
        report.endpoints.is_empty() && report.removed.is_empty(),
        "{report:?}"
    );
    assert_eq!(fresh.peers(&net.id).await.len(), 1);
    assert_eq!(
        reaches(c.host(1).sb("s1"), sa(v4("10.50.0.3"), 6000)),
        "10.50.0.2"
    );
    // The store forgets the network: everything goes.
    let report = ok(
        "sweep",
        fresh
            .reconcile(&Desired::default(), ReconcileMode::Periodic)
            .await,
    );
    assert!(!fresh.netns_path(&net.id).exists(), "{report:?}");
}
