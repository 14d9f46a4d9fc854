//! The bridge driver leaving nothing it does not record, through the controller, against the
//! real kernel, in namespaces the tests make: bad input refused with nothing made, a kernel
//! failure half way through undone, marked orphans removed by reconcile while a restarted
//! driver adopts its own objects; and the (ignored) timing of connect and disconnect.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use common::*;
use plexus_cnm::{Driver, EndpointSpec, IpamPoolSpec, NetworkSpec, PortBinding, ReconcileMode};
use plexus_drivers::firewall::{PortMapping, Proto};
use plexus_drivers::{BridgeDriver, DriverConfig};
use plexus_sys::rtnl::BridgeSpec;

#[tokio::test]
async fn bad_input_is_a_400_naming_the_option_and_leaves_nothing() {
    need_root!();
    let mut w = World::new().await;
    let before = w.host_links().await.len();
    for (k, v) in [
        ("com.docker.network.driver.mtu", "jumbo"),
        ("com.docker.network.driver.mtu", "70000"),
        ("com.docker.network.bridge.enable_icc", "yes"),
        ("com.docker.network.bridge.enable_ip_masquerade", "maybe"),
        ("com.docker.network.bridge.inhibit_ipv4", "2"),
        ("com.docker.network.bridge.host_binding_ipv4", "not-an-ip"),
        ("com.docker.network.bridge.name", "much-too-long-a-name"),
        ("com.docker.network.bridge.nosuch", "1"),
        ("plexus.bridge.mcast_snooping", "on"),
        ("plexus.bridge.gso_ipv4_max_size", "1000000"),
        ("plexus.bridge.gso_ipv4_max_size", "huge"),
    ] {
        match w
            .controller
            .create_network(net_spec("bad", "10.90.0.0/24", &[(k, v)]))
            .await
        {
            Err(e) => {
                assert_eq!(e.http_status(), 400, "{k}={v}: {e}");
                assert!(e.to_string().contains(k), "{k}={v}: {e}");
            }
            Ok(n) => panic!("{k}={v} gave {n:?}"),
        }
    }
    // A bridge name another kind of link uses: a conflict naming it; nothing made.
    ok(
        "a veth named like a bridge",
        w.rh.add_veth("br-taken", "br-taken-p", None, "someone-else")
            .await,
    );
    let taken = w
        .controller
        .create_network(net_spec(
            "t",
            "10.90.0.0/24",
            &[("com.docker.network.bridge.name", "br-taken")],
        ))
        .await;
    assert!(taken
        .err()
        .is_some_and(|e| e.to_string().contains("br-taken")));
    assert_eq!(w.host_links().await.len(), before + 2);
    assert!(w.marked_links().await.is_empty());
    let st = ok("state", w.bridge.firewall().state());
    assert!(st.bridges.is_empty() && st.subnets.is_empty(), "{st:?}");
    // The subnet was released: the same network can be made now.
    w.network("good", "10.90.0.0/24", &[]).await;
    let marked = w.marked_links().await;
    // A sandbox whose namespace does not exist: 400, and no veth left behind.
    ok(
        "sandbox",
        w.controller
            .add_sandbox("ghost", "/nonexistent/netns", false)
            .await,
    );
    match w
        .controller
        .connect("ghost", "good", Default::default())
        .await
    {
        Err(e) => assert_eq!(e.http_status(), 400, "{e}"),
        Ok(ep) => panic!("missing netns gave {ep:?}"),
    }
    // A bad MAC, a bad protocol: 400, nothing left.
    w.sandbox("s").await;
    for spec in [
        EndpointSpec {
            mac: Some("01:00:5e:00:00:01".into()),
            ..Default::default()
        },
        EndpointSpec {
            ports: vec![PortBinding {
                proto: "icmp".into(),
                container_port: 80,
                host_ip: None,
                host_port: 8080,
                host_port_end: 0,
            }],
            ..Default::default()
        },
    ] {
        match w.controller.connect("s", "good", spec).await {
            Err(e) => assert_eq!(e.http_status(), 400, "{e}"),
            Ok(ep) => panic!("bad endpoint gave {ep:?}"),
        }
    }
    assert_eq!(w.marked_links().await, marked);
    assert_eq!(links_of(w.sb("s")).await.len(), 1);
}

#[tokio::test]
async fn a_users_own_bridge_is_used_as_it_is_and_left_in_place() {
    need_root!();
    let w = World::new().await;
    // A bridge the user made (its own alias, no mark of Plexus), as Docker users name
    // one with com.docker.network.bridge.name.
    let user = ok(
        "user bridge",
        w.rh.add_bridge(
            &BridgeSpec {
                name: "br-user",
                ..Default::default()
            },
            "the user's",
        )
        .await,
    );
    let net = w
        .network(
            "u",
            "10.91.0.0/24",
            &[("com.docker.network.bridge.name", "br-user")],
        )
        .await;
    let addrs = ok("addresses", w.rh.addresses(user.index).await);
    assert!(
        addrs.contains(&("10.91.0.1".parse().unwrap(), 24)),
        "the gateway is on the user's bridge: {addrs:?}"
    );
    let link = ok("br-user", w.rh.require_link("br-user").await);
    assert_eq!(link.alias.as_deref(), Some("the user's"), "never marked");
    ok("rm", w.controller.delete_network(&net.id).await);
    let link = ok("br-user after", w.rh.require_link("br-user").await);
    assert_eq!(link.index, user.index, "the user's bridge stays");
    let addrs = ok("addresses", w.rh.addresses(user.index).await);
    assert!(
        !addrs.iter().any(|(a, _)| a.to_string() == "10.91.0.1"),
        "the gateway it was given went with the network: {addrs:?}"
    );
    ok("cleanup", w.rh.delete_link(user.index).await);
}

#[tokio::test]
async fn reconcile_removes_marked_orphans_and_a_restarted_driver_finds_its_objects() {
    need_root!();
    let mut w = World::new().await;
    let n1 = w.network("n1", "10.88.0.0/24", &[]).await;
    let n2 = w.network("n2", "10.89.0.0/24", &[]).await;
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let e1 = w
        .connect_with(
            "s1",
            "n1",
            EndpointSpec {
                ports: vec![tcp(80, 8080)],
                ..Default::default()
            },
        )
        .await;
    w.connect("s2", "n2").await;
    let _web = Server::start(w.sb("s1"), sa(ip4(&e1), 80));
    // Foreign links: another owner's bridge, and one whose marker merely starts like ours.
    ok(
        "foreign",
        w.rh.add_bridge(
            &BridgeSpec {
                name: "foreignbr",
                ..Default::default()
            },
            "someone-else",
        )
        .await,
    );
    ok(
        "look-alike",
        w.rh.add_bridge(
            &BridgeSpec {
                name: "lookalike",
                ..Default::default()
            },
            &format!("{MARK}x:bridge:{}", n1.id),
        )
        .await,
    );
    // Orphans with our marker: a bridge and a veth of things the store does not know, and a
    // published port of an unknown endpoint.
    ok(
        "orphan bridge",
        w.rh.add_bridge(
            &BridgeSpec {
                name: "plx-orphan",
                ..Default::default()
            },
            &format!("{MARK}:bridge:dead"),
        )
        .await,
    );
    ok(
        "orphan veth",
        w.rh.add_veth(
            "plxvorphan",
            "plxcorphan",
            None,
            &format!("{MARK}:veth:{}:beef", n1.id),
        )
        .await,
    );
    ok(
        "orphan port",
        w.bridge.firewall().publish(&[PortMapping {
            proto: Proto::Tcp,
            host_ip: None,
            host_port: 9999,
            addr: Ipv4Addr::new(10, 88, 0, 99).into(),
            port: 80,
            owner: "beef".into(),
        }]),
    );

    // The store lost n2 and its endpoint (say, a crash before they were recorded).
    let known = desired(&w, &[&n1], &[&e1]).await;
    let report = ok(
        "reconcile",
        w.bridge.reconcile(&known, ReconcileMode::Startup).await,
    );
    let n2_bridge = format!("plx-{}", &n2.id[..11]);
    for gone in ["plx-orphan", "plxvorphan", n2_bridge.as_str()] {
        assert!(
            report.removed.contains(&format!("link {gone}")),
            "{gone} not in {report:?}"
        );
    }
    let ports: Vec<&String> = report
        .removed
        .iter()
        .filter(|r| r.starts_with("port "))
        .collect();
    assert_eq!(ports, ["port 9999/tcp of endpoint beef"]);
    // (n2's firewall elements went with its bridge link.)
    let names: BTreeSet<String> = w.host_links().await.into_iter().map(|l| l.name).collect();
    assert!(
        names.contains("foreignbr") && names.contains("lookalike"),
        "{names:?}"
    );
    let n1_bridge = format!("plx-{}", &n1.id[..11]);
    let marked: BTreeSet<String> = w.marked_links().await.into_iter().collect();
    let want: BTreeSet<String> = [n1_bridge.clone(), format!("plxv{}", &e1.id[..11])].into();
    assert_eq!(marked, want);
    let st = ok("state", w.bridge.firewall().state());
    assert_eq!(st.bridges, [n1_bridge.clone()].into());
    assert_eq!(st.ports.len(), 1);
    // What the store knows still works.
    assert_eq!(
        reaches(&w.outside.ns, sa(HOST_EXT, 8080)),
        OUTSIDE.to_string()
    );

    // A restarted daemon: a fresh driver adopts the objects and removes them by id.
    let fresh = ok(
        "restart",
        BridgeDriver::new(DriverConfig::new(w.host.ns.clone(), MARK)).await,
    );
    let again = ok(
        "reconcile",
        fresh.reconcile(&known, ReconcileMode::Startup).await,
    );
    assert!(again.removed.is_empty(), "{again:?}");
    assert_eq!(again.networks, vec![n1.id.clone()]);
    reaches(&w.outside.ns, sa(HOST_EXT, 8080));
    ok("leave", fresh.leave(&n1.id, &e1.id).await);
    ok(
        "delete endpoint",
        fresh.delete_endpoint(&n1.id, &e1.id).await,
    );
    ok("delete network", fresh.delete_network(&n1.id).await);
    fresh.settle().await;
    assert!(
        w.marked_links().await.is_empty(),
        "{:?}",
        w.marked_links().await
    );
    let st = ok("state", fresh.firewall().state());
    assert!(
        st.bridges.is_empty() && st.ports.is_empty() && st.subnets.is_empty(),
        "{st:?}"
    );
    assert_eq!(links_of(w.sb("s1")).await.len(), 1);
}

#[tokio::test]
async fn a_kernel_failure_half_way_through_create_network_is_undone() {
    need_root!();
    let w = World::new().await;
    let before = w.host_links().await.len();
    // IPv6 on a bridge whose MTU is below IPv6's minimum: the kernel refuses the gateway
    // after the bridge exists, so the driver must take the bridge down again.
    let spec = NetworkSpec {
        enable_ipv6: true,
        ipv6: vec![IpamPoolSpec {
            subnet: Some("fd00:87::/64".into()),
            ..Default::default()
        }],
        ..net_spec(
            "half",
            "10.87.0.0/24",
            &[
                ("com.docker.network.driver.mtu", "1000"),
                ("com.docker.network.bridge.name", "br-half"),
            ],
        )
    };
    let r = w.controller.create_network(spec.clone()).await;
    let msg = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("br-half"), "{msg}");
    assert_eq!(w.host_links().await.len(), before);
    let st = ok("state", w.bridge.firewall().state());
    assert!(st.bridges.is_empty() && st.subnets.is_empty(), "{st:?}");
    // Nothing leaked in the store or IPAM either: the same network with a workable MTU.
    let fixed = NetworkSpec {
        options: [(
            "com.docker.network.bridge.name".to_string(),
            "br-half".to_string(),
        )]
        .into(),
        ..spec
    };
    ok("create", w.controller.create_network(fixed).await);
    assert_eq!(w.marked_links().await, ["br-half"]);
}

/// Not a check: prints what connect and disconnect cost through the controller
/// (`cargo test -p plexus-drivers --release -- --ignored --nocapture timing`).
#[tokio::test]
#[ignore]
async fn timing_of_connect_and_disconnect() {
    need_root!();
    let mut w = World::new().await;
    w.network("t", "10.80.0.0/20", &[]).await;
    let n = 200;
    for i in 0..n {
        w.sandbox(&format!("s{i}")).await;
    }
    let bind = |host_port: u16| tcp(80, host_port);
    let mut connect = Vec::new();
    let mut disconnect = Vec::new();
    for i in 0..n {
        let spec = EndpointSpec {
            ports: vec![bind(20000 + i as u16)],
            ..Default::default()
        };
        let t = std::time::Instant::now();
        w.connect_with(&format!("s{i}"), "t", spec).await;
        connect.push(t.elapsed());
    }
    for i in 0..n {
        let t = std::time::Instant::now();
        ok(
            "disconnect",
            w.controller.disconnect(&format!("s{i}"), "t").await,
        );
        disconnect.push(t.elapsed());
    }
    // The driver alone (no store, no IPAM).
    use plexus_cnm::Driver;
    let net = ok("network", w.controller.network("t").await);
    let mut create = Vec::new();
    let mut join = Vec::new();
    let mut leave = Vec::new();
    for i in 0..n {
        let id = format!("{:011x}{:053}", 0xabc000 + i, 0);
        let info = plexus_cnm::EndpointInfo {
            network_id: net.id.clone(),
            endpoint_id: id.clone(),
            ipv4: Some(ok("ip", format!("10.80.8.{}/20", i + 2).parse())),
            ipv6: None,
            mac: None,
            ports: vec![bind(30000 + i as u16)],
            options: Default::default(),
        };
        let t = std::time::Instant::now();
        ok("create", w.bridge.create_endpoint(&info).await);
        create.push(t.elapsed());
        let key = w.sandboxes[&format!("s{i}")].path();
        let t = std::time::Instant::now();
        let eth = plexus_cnm::InterfaceName::numbered("eth", 0);
        ok("join", w.bridge.join(&net.id, &id, &key, eth).await);
        join.push(t.elapsed());
    }
    for i in 0..n {
        let id = format!("{:011x}{:053}", 0xabc000 + i, 0);
        let t = std::time::Instant::now();
        ok("leave", w.bridge.leave(&net.id, &id).await);
        ok("delete", w.bridge.delete_endpoint(&net.id, &id).await);
        leave.push(t.elapsed());
    }
    for v in [&mut create, &mut join, &mut leave] {
        v.sort();
    }
    eprintln!(
        "driver alone: create_endpoint median {:?}, join median {:?}, leave+delete median {:?}",
        create[n / 2],
        join[n / 2],
        leave[n / 2]
    );
    connect.sort();
    disconnect.sort();
    eprintln!(
        "connect (1 published port): first {:?}, median {:?}, last-10% p90 {:?}; disconnect median {:?}",
        connect[0],
        connect[n / 2],
        connect[n * 9 / 10],
        disconnect[n / 2]
    );
}
