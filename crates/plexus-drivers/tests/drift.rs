//! Drift repair: kernel objects deleted behind Plexus's back (by hand, with `ip` and `nft`)
//! are made again by one periodic reconciliation pass, with real traffic before and after;
//! objects Plexus did not make are never touched.

mod common;

use std::process::Command;

use common::*;
use plexus_cnm::{EndpointSpec, ReconcileMode, ReconcileReport};
use plexus_sys::netns::Netns;

/// Runs `cmd args…` inside `ns` (the child inherits the namespace of the thread that forks
/// it) and returns its stdout; panics, with its stderr, if it fails.
fn sh(ns: &Netns, cmd: &str, args: &[&str]) -> String {
    let (cmd, args): (String, Vec<String>) =
        (cmd.into(), args.iter().map(|a| a.to_string()).collect());
    let shown = format!("{cmd} {}", args.join(" "));
    let out = ok(
        "enter namespace",
        ns.run(move || Command::new(&cmd).args(&args).output()),
    );
    let out = out.unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One periodic pass through the controller, as plexusd's background task runs it.
async fn periodic(w: &World) -> ReconcileReport {
    ok(
        "periodic reconcile",
        w.controller.reconcile(ReconcileMode::Periodic).await,
    )
}

/// A veth pair and a table with an element that Plexus did not make, in the host namespace.
fn make_foreign(host: &Netns) {
    sh(
        host,
        "ip",
        &[
            "link", "add", "foreign0", "type", "veth", "peer", "name", "foreign1",
        ],
    );
    sh(host, "ip", &["link", "set", "foreign0", "up"]);
    sh(host, "nft", &["add", "table", "inet", "foreign"]);
    sh(
        host,
        "nft",
        &["add", "set", "inet", "foreign", "s", "{ type ipv4_addr; }"],
    );
    sh(
        host,
        "nft",
        &["add", "element", "inet", "foreign", "s", "{ 192.0.2.7 }"],
    );
}

/// The foreign objects are as [`make_foreign`] left them.
async fn assert_foreign_untouched(w: &World) {
    let links = w.host_links().await;
    for name in ["foreign0", "foreign1"] {
        let link = links.iter().find(|l| l.name == name);
        assert!(link.is_some(), "{name} is gone: {links:?}");
        assert_eq!(link.and_then(|l| l.alias.clone()), None, "{name}");
    }
    assert!(
        links.iter().any(|l| l.name == "foreign0" && l.up),
        "foreign0 is down"
    );
    let table = sh(&w.host.ns, "nft", &["list", "table", "inet", "foreign"]);
    assert!(table.contains("192.0.2.7"), "{table}");
}

#[tokio::test]
async fn deleted_veth_bridge_and_port_element_are_made_again_by_one_pass() {
    need_root!();
    let mut w = World::new().await;
    let net = w.network("n1", "10.93.0.0/24", &[]).await;
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
    let e2 = w.connect("s2", "n1").await;
    make_foreign(&w.host.ns);
    let _web = Server::start(w.sb("s1"), sa(ip4(&e1), 80));
    let _s2 = Server::start(w.sb("s2"), sa(ip4(&e2), 7000));
    let _out = Server::start(&w.outside.ns, sa(OUTSIDE, 9000));
    let works = |w: &World| {
        assert_eq!(
            reaches(w.sb("s1"), sa(ip4(&e2), 7000)),
            ip4(&e1).to_string()
        );
        assert_eq!(reaches(w.sb("s2"), sa(ip4(&e1), 80)), ip4(&e2).to_string());
        assert_eq!(
            reaches(&w.outside.ns, sa(HOST_EXT, 8080)),
            OUTSIDE.to_string()
        );
        // Egress through the default route, masqueraded.
        assert_eq!(reaches(w.sb("s1"), sa(OUTSIDE, 9000)), HOST_EXT.to_string());
    };
    works(&w);
    // Nothing drifted: a pass changes nothing.
    let calm = periodic(&w).await;
    assert!(calm.is_empty(), "{calm:?}");

    // By hand: s1's host-side veth (its sandbox side goes with it), the network's bridge
    // (s2's port is let go), and the published port's nft element.
    let host_veth = format!("plxv{}", &e1.id[..11]);
    let bridge = format!("plx-{}", &net.id[..11]);
    sh(&w.host.ns, "ip", &["link", "del", &host_veth]);
    sh(&w.host.ns, "ip", &["link", "del", &bridge]);
    sh(
        &w.host.ns,
        "nft",
        &[
            "delete",
            "element",
            "ip",
            "plexus-nat",
            "ports",
            "{ tcp . 8080 }",
        ],
    );
    assert!(
        links_of(w.sb("s1")).await.iter().all(|l| l.name != "eth0"),
        "s1 still has eth0"
    );
    assert!(blocked(w.sb("s2"), sa(ip4(&e1), 80)));
    assert!(blocked(&w.outside.ns, sa(HOST_EXT, 8080)));

    let report = periodic(&w).await;
    let done = report
        .drivers
        .get("bridge")
        .unwrap_or_else(|| panic!("the bridge driver repaired nothing: {report:?}"));
    assert_eq!(done.endpoints, [e1.id.as_str()], "{report:?}");
    assert!(
        done.repaired.contains(&format!("bridge {bridge}")),
        "{report:?}"
    );
    // s2's port, let go by the deleted bridge, is on the new one.
    assert!(
        done.repaired
            .contains(&format!("veth plxv{} on bridge {bridge}", &e2.id[..11])),
        "{report:?}"
    );
    assert!(
        done.repaired
            .contains(&format!("port 8080/tcp of endpoint {}", e1.id)),
        "{report:?}"
    );
    assert!(
        done.removed.is_empty() && done.unrepaired.is_empty(),
        "{report:?}"
    );
    assert!(report.forgotten.is_empty(), "{report:?}");

    // The same interface as before: name, MAC, address.
    let eth0 = links_of(w.sb("s1"))
        .await
        .into_iter()
        .find(|l| l.name == "eth0")
        .unwrap_or_else(|| panic!("no eth0 in s1 after the repair"));
    assert!(eth0.up);
    assert_eq!(eth0.mac, Some(vec![0x02, 0x42, 10, 93, 0, 2]));
    works(&w);
    assert_foreign_untouched(&w).await;
    // And the repair is complete: the next pass has nothing to do.
    let after = periodic(&w).await;
    assert!(after.is_empty(), "{after:?}");
    // A host end set down by hand comes up again.
    sh(&w.host.ns, "ip", &["link", "set", &host_veth, "down"]);
    assert!(blocked(w.sb("s2"), sa(ip4(&e1), 80)));
    let report = periodic(&w).await;
    let repaired = report.drivers.get("bridge").map(|d| d.repaired.clone());
    assert_eq!(
        repaired,
        Some(vec![format!("veth {host_veth} up")]),
        "{report:?}"
    );
    works(&w);
    // The repaired endpoint leaves cleanly.
    ok("disconnect", w.controller.disconnect("s1", "n1").await);
    ok("disconnect", w.controller.disconnect("s2", "n1").await);
    ok("rm", w.controller.delete_network("n1").await);
    assert!(
        w.marked_links().await.is_empty(),
        "{:?}",
        w.marked_links().await
    );
    assert_foreign_untouched(&w).await;
}

/// An endpoint whose sandbox's namespace is gone cannot be plugged again: a periodic pass
/// says so and keeps its record (the user disconnects it); the start-up pass rolls it back.
#[tokio::test]
async fn an_endpoint_whose_sandbox_is_gone_is_reported_then_rolled_back_at_start() {
    need_root!();
    let mut w = World::new().await;
    w.network("n1", "10.94.0.0/24", &[]).await;
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let e1 = w.connect("s1", "n1").await;
    let e2 = w.connect("s2", "n1").await;
    // The sandbox's namespace goes (its veth with it, once the kernel has cleaned the
    // namespace up, which it does in the background), behind Plexus's back.
    w.sandboxes.remove("s1");
    let host_veth = format!("plxv{}", &e1.id[..11]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while w.host_links().await.iter().any(|l| l.name == host_veth) {
        assert!(
            std::time::Instant::now() < deadline,
            "{host_veth} outlived its sandbox"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let report = periodic(&w).await;
    let done = report.drivers.get("bridge");
    let why = done.and_then(|d| d.unrepaired.get(&e1.id));
    assert!(why.is_some_and(|w| w.contains("namespace")), "{report:?}");
    assert!(report.forgotten.is_empty(), "{report:?}");
    assert_eq!(
        ok("endpoints", w.controller.endpoints(&e1.network_id).await).len(),
        2
    );
    let started = ok(
        "start-up reconcile",
        w.controller.reconcile(ReconcileMode::Startup).await,
    );
    assert_eq!(started.forgotten, [e1.id.as_str()], "{started:?}");
    let left = ok("endpoints", w.controller.endpoints(&e1.network_id).await);
    assert_eq!(
        left.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        [e2.id.as_str()]
    );
}

/// Plexus's nat table deleted by hand, then a disconnect (whose withdrawal of its published
/// port finds no table): the endpoint leaves the store all the same, and the next pass
/// makes the table again, holding only the ports of known endpoints.
#[tokio::test]
async fn a_deleted_nat_table_comes_back_with_only_known_ports() {
    need_root!();
    let mut w = World::new().await;
    w.network("n1", "10.95.0.0/24", &[]).await;
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let spec = |port| EndpointSpec {
        ports: vec![tcp(80, port)],
        ..Default::default()
    };
    w.connect_with("s1", "n1", spec(8081)).await;
    let e2 = w.connect_with("s2", "n1", spec(8082)).await;
    let _web = Server::start(w.sb("s2"), sa(ip4(&e2), 80));
    sh(&w.host.ns, "nft", &["delete", "table", "ip", "plexus-nat"]);
    assert!(blocked(&w.outside.ns, sa(HOST_EXT, 8082)));
    ok("disconnect", w.controller.disconnect("s1", "n1").await);
    assert!(links_of(w.sb("s1")).await.iter().all(|l| l.name != "eth0"));

    let report = periodic(&w).await;
    assert!(report.failed.is_empty(), "{report:?}");
    let st = ok("state", w.bridge.firewall().state());
    assert_eq!(
        st.ports.iter().map(|p| p.host_port).collect::<Vec<_>>(),
        [8082],
        "{st:?}"
    );
    assert_eq!(
        reaches(&w.outside.ns, sa(HOST_EXT, 8082)),
        OUTSIDE.to_string()
    );
    assert!(blocked(&w.outside.ns, sa(HOST_EXT, 8081)));
}

/// A bridge of an `enable_icc=false` network deleted by hand comes back with its ports
/// isolated again: egress works again and sandbox-to-sandbox traffic stays refused.
#[tokio::test]
async fn a_remade_bridge_keeps_its_ports_isolated() {
    need_root!();
    let mut w = World::new().await;
    let net = w
        .network(
            "icc",
            "10.96.0.0/24",
            &[("com.docker.network.bridge.enable_icc", "false")],
        )
        .await;
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    w.connect("s1", "icc").await;
    let e2 = w.connect("s2", "icc").await;
    let _s2 = Server::start(w.sb("s2"), sa(ip4(&e2), 7000));
    let _out = Server::start(&w.outside.ns, sa(OUTSIDE, 9000));
    assert!(blocked(w.sb("s1"), sa(ip4(&e2), 7000)));
    assert_eq!(reaches(w.sb("s1"), sa(OUTSIDE, 9000)), HOST_EXT.to_string());

    let bridge = format!("plx-{}", &net.id[..11]);
    sh(&w.host.ns, "ip", &["link", "del", &bridge]);
    assert!(blocked(w.sb("s1"), sa(OUTSIDE, 9000)));
    let report = periodic(&w).await;
    let repaired = report.drivers.get("bridge").map(|d| d.repaired.len());
    // The bridge and both host ends put back on it.
    assert_eq!(repaired, Some(3), "{report:?}");
    assert_eq!(reaches(w.sb("s1"), sa(OUTSIDE, 9000)), HOST_EXT.to_string());
    assert_eq!(reaches(w.sb("s2"), sa(OUTSIDE, 9000)), HOST_EXT.to_string());
    assert!(
        blocked(w.sb("s1"), sa(ip4(&e2), 7000)),
        "s1 reaches s2 across a remade icc=false bridge"
    );
}
