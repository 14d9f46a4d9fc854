//! Joins that hand the interface over to the sandbox's runtime (libnetwork's contract with
//! remote drivers, which Plexus's Docker plugin answers): the bridge driver makes the pair
//! in its own namespace before the sandbox's namespace exists, and the runtime moves the
//! other end in and configures it.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use plexus_cnm::{EndpointSpec, ReconcileMode, SandboxSpec};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{Route, Rtnl};

#[tokio::test]
async fn a_handed_off_interface_carries_traffic_once_moved_in_and_leaves_nothing() {
    need_root!();
    let mut w = World::new().await;
    w.network("n1", "10.93.0.0/24", &[]).await;
    w.sandbox("s2").await;
    let e2 = w.connect("s2", "n1").await;

    // The runtime's namespace does not exist yet when the join happens.
    let dir = ok("tempdir", tempfile::tempdir());
    let key = dir.path().join("ctr").display().to_string();
    let sandbox = ok(
        "create sandbox",
        w.controller
            .create_sandbox(SandboxSpec {
                name: "ctr".into(),
                netns: Some(key.clone()),
                networks: vec![("n1".into(), EndpointSpec::default())],
                external_key: true,
                ..SandboxSpec::default()
            })
            .await,
    );
    assert!(sandbox.external_key && !sandbox.owned_netns);
    let eps = ok("endpoints", w.controller.sandbox_endpoints(&sandbox).await);
    let ep = eps[0].0.clone();
    let src = ep.interface.clone().unwrap_or_default();
    assert_eq!(src, format!("plxc{}", &ep.id[..11]));

    // In the daemon's namespace: the other end down, bare and marked; the host end up on
    // the bridge.
    let links = w.host_links().await;
    let peer = links
        .iter()
        .find(|l| l.name == src)
        .unwrap_or_else(|| panic!("no {src} in the daemon's namespace: {links:?}"));
    assert!(!peer.up, "{peer:?}");
    assert!(
        peer.alias
            .as_deref()
            .is_some_and(|a| a.starts_with(&format!("{MARK}:"))),
        "{peer:?}"
    );
    assert!(ok("addresses", w.rh.addresses(peer.index).await).is_empty());
    let host_end = links
        .iter()
        .find(|l| l.name == format!("plxv{}", &ep.id[..11]))
        .unwrap_or_else(|| panic!("no host end: {links:?}"));
    assert!(host_end.up && host_end.master.is_some(), "{host_end:?}");

    // The runtime's part, as dockerd's SetKey does it: moved in as eth0, address, up, route.
    let ns = ok("create netns", Netns::create(dir.path(), "ctr"));
    let runtime = PinnedNs {
        dir,
        name: "ctr".into(),
        ns: ns.clone(),
    };
    ok("move", w.rh.move_to(peer.index, &ns, Some("eth0")).await);
    let rc = ok("rtnl", Rtnl::connect(&ns).await);
    let eth0 = ok("eth0", rc.require_link("eth0").await);
    let mine = ip4(&ep);
    ok("address", rc.add_address(eth0.index, mine.into(), 24).await);
    ok("up", rc.set_up(eth0.index).await);
    ok("lo", rc.set_up(1).await);
    let gateway = Route {
        destination: None,
        gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 93, 0, 1))),
        oif: Some(eth0.index),
    };
    ok("route", rc.add_route(&gateway).await);

    let _srv = Server::start(w.sb("s2"), sa(ip4(&e2), 7000));
    assert_eq!(reaches(&ns, sa(ip4(&e2), 7000)), mine.to_string());

    // Reconciliation leaves the runtime's interface and routes alone.
    let report = ok(
        "reconcile",
        w.controller.reconcile(ReconcileMode::Periodic).await,
    );
    let bridge = report.drivers.get("bridge").cloned().unwrap_or_default();
    assert!(
        bridge.repaired.is_empty() && bridge.endpoints.is_empty() && report.forgotten.is_empty(),
        "{report:?}"
    );
    let names: Vec<String> = links_of(&ns).await.into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["lo", "eth0"]);
    assert_eq!(reaches(&ns, sa(ip4(&e2), 7000)), mine.to_string());

    // The leave takes the pair away wherever its other end is.
    ok("remove", w.controller.remove_sandbox("ctr").await);
    w.bridge.settle().await;
    let names: Vec<String> = links_of(&ns).await.into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["lo"]);
    ok("disconnect", w.controller.disconnect("s2", "n1").await);
    ok("rm", w.controller.delete_network("n1").await);
    assert!(
        w.marked_links().await.is_empty(),
        "{:?}",
        w.marked_links().await
    );
    drop(runtime);
}

#[tokio::test]
async fn a_sandbox_set_up_by_its_runtime_needs_an_absolute_namespace_path() {
    need_root!();
    let w = World::new().await;
    let net = w.network("n1", "10.94.0.0/24", &[]).await;
    for (netns, says) in [
        (None, "netns: missing"),
        (Some("relative/ns".to_string()), "must be absolute"),
    ] {
        let e = w
            .controller
            .create_sandbox(SandboxSpec {
                name: "ctr".into(),
                netns,
                networks: vec![("n1".into(), EndpointSpec::default())],
                external_key: true,
                ..SandboxSpec::default()
            })
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(says), "{e}");
    }
    assert!(ok("sandboxes", w.controller.sandboxes().await).is_empty());
    let bridge = w.bridge.bridge_name(&net.id).await.unwrap_or_default();
    assert_eq!(
        w.marked_links().await,
        [bridge],
        "only the network's bridge"
    );
}
