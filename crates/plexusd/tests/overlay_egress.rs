//! The way out of overlay networks through a per-host gateway bridge (Docker's
//! `docker_gwbridge`), across real `plexusd` processes on two hosts (namespaces on an underlay
//! bridge, a real etcd): a sandbox on an overlay network reaches a host outside the overlay,
//! masqueraded behind its own host's address; one on an `--internal` overlay does not; the
//! sandboxes on a gateway bridge cannot reach each other through it; the gateway endpoint goes
//! with its sandbox, gives its address back, survives a restart of the daemon, keeps the
//! network from being removed while there, and `plexus system reset` removes the bridge.
//! Needs root.

mod multihost;

use std::time::Duration;

use multihost::{listen_in_from, wait_for, Cluster, ClusterStore, Host};

const GW: &str = "docker_gwbridge";

/// `plexus network create -d overlay --attachable --subnet SUBNET [--internal] NAME` on `host`.
fn overlay(host: &Host, name: &str, subnet: &str, internal: bool) {
    let mut args = vec![
        "network",
        "create",
        "-d",
        "overlay",
        "--attachable",
        "--subnet",
        subnet,
    ];
    if internal {
        args.push("--internal");
    }
    args.push(name);
    host.ok(&args);
}

/// The gateway endpoint's name of the sandbox `name` on `host`: `gateway_<12 of its id>`.
fn gateway_of(host: &Host, name: &str) -> String {
    let id = host.sandbox_id(name);
    format!("gateway_{}", &id[..12])
}

/// Sends from sandbox `name` of `host` to `10.99.0.2:port` (host 2's own address, outside
/// every overlay) until it gets through, within 10 s.
fn reach_host2(host: &Host, name: &str, port: u16, msg: &str) {
    wait_for(
        &format!("{name} reaching 10.99.0.2:{port}"),
        Duration::from_secs(10),
        || host.tcp_send(name, "10.99.0.2", port, msg),
    );
}

#[test]
fn overlay_sandboxes_get_out_masqueraded_internal_ones_do_not_and_stay_apart_on_the_bridge() {
    plexus_testkit::require_root();
    let c = Cluster::start(2, ClusterStore::etcd());
    let h = &c.hosts;
    // Host 1's gateway network is the user's own, made first with a subnet of their choice
    // (used as it is); the other test has it made on need.
    h[0].ok(&[
        "network",
        "create",
        "--subnet",
        "10.30.0.0/24",
        "-o",
        "com.docker.network.bridge.name=docker_gwbridge",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        GW,
    ]);
    overlay(&h[0], "web", "10.241.0.0/24", false);
    overlay(&h[0], "sealed", "10.242.0.0/24", true);
    h[0].ok(&["sandbox", "create", "a", "--network", "web"]);
    h[0].ok(&["sandbox", "create", "b", "--network", "web"]);
    h[0].ok(&["sandbox", "create", "x", "--network", "sealed"]);
    let inbox = listen_in_from(&h[1].ns, 8080);

    // (1) Out of the overlay, to host 2's own address: it arrives from host 1's address
    // (masqueraded), and the gateway bridge lists the sandbox's gateway endpoint.
    reach_host2(&h[0], "a", 8080, "from-a");
    let (peer, text) = inbox
        .recv_timeout(Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("host 2 got nothing: {e}"));
    assert_eq!((peer.as_str(), text.as_str()), ("10.99.0.1", "from-a"));
    let on_gw = h[0].network_endpoints(GW);
    let names: Vec<&str> = on_gw.iter().map(|(_, n, _)| n.as_str()).collect();
    for s in ["a", "b"] {
        assert!(
            names.contains(&gateway_of(&h[0], s).as_str()),
            "{s}'s gateway endpoint not on {GW}: {on_gw:?}"
        );
    }
    // Its default route is the gateway bridge's; the overlay is its own interface.
    let route = h[0].in_sandbox("a", &["ip", "route", "show", "default"]);
    let route = String::from_utf8_lossy(&route.stdout);
    assert!(route.contains("dev eth1"), "a's default route: {route}");

    // (2) An internal overlay: no way out, no gateway endpoint.
    assert!(
        h[0].tcp_send("x", "10.99.0.2", 8080, "from-x").is_err(),
        "x reached host 2"
    );
    assert!(
        inbox.recv_timeout(Duration::from_millis(500)).is_err(),
        "host 2 heard from x"
    );
    let x_id = h[0].sandbox_id("x");
    assert!(
        h[0].network_endpoints(GW)
            .iter()
            .all(|(id, ..)| id != &x_id),
        "x has a gateway endpoint"
    );
    let x_eps = h[0].ok(&["sandbox", "inspect", "x"]);
    assert!(!x_eps.contains(GW), "{x_eps}");

    // (3) a and b do not reach each other through the gateway bridge (no traffic between its
    // sandboxes), and do over their overlay network.
    let (ga, gb) = (
        h[0].sandbox_ip("a", Some(GW)),
        h[0].sandbox_ip("b", Some(GW)),
    );
    let ob = h[0].sandbox_ip("b", Some("web"));
    assert!(
        ga.starts_with("10.30.0.") && gb.starts_with("10.30.0.") && ga != gb,
        "{ga} {gb}"
    );
    let b_inbox = h[0].listen("b", 7000);
    wait_for("a pinging b over web", Duration::from_secs(10), || {
        h[0].ping("a", &ob)
            .then_some(())
            .ok_or_else(|| "no answer".to_string())
    });
    h[0].tcp_send("a", &ob, 7000, "over-web")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        b_inbox.recv_timeout(Duration::from_secs(3)).ok().as_deref(),
        Some("over-web")
    );
    assert!(!h[0].ping("a", &gb), "a reached b on {GW}");
    assert!(!h[0].ping("b", &ga), "b reached a on {GW}");
    assert!(
        h[0].tcp_send("a", &gb, 7000, "over-gw").is_err(),
        "a connected to b on {GW}"
    );
    assert!(b_inbox.recv_timeout(Duration::from_millis(500)).is_err());
}

#[test]
fn the_gateway_endpoint_goes_with_its_sandbox_survives_restarts_and_reset_removes_the_bridge() {
    plexus_testkit::require_root();
    let mut c = Cluster::start(2, ClusterStore::etcd());
    overlay(&c.hosts[0], "web", "10.243.0.0/24", false);
    let inbox = listen_in_from(&c.hosts[1].ns, 8081);
    let h0 = &mut c.hosts[0];
    h0.ok(&["sandbox", "create", "a", "--network", "web"]);
    let ga = h0.sandbox_ip("a", Some(GW));
    let gateway_a = gateway_of(h0, "a");

    // (4) The gateway network cannot go while a gateway endpoint is on it, and says why.
    let err = h0.fails(&["network", "rm", GW]);
    assert!(
        err.contains(&gateway_a) && err.contains("way out"),
        "network rm {GW}: {err}"
    );
    assert!(h0.links().iter().any(|l| l == GW), "{:?}", h0.links());

    // A restart keeps it: the same endpoint, traffic still goes out, and its address is not
    // handed out again.
    h0.stop();
    h0.start();
    let names: Vec<String> = h0
        .network_endpoints(GW)
        .into_iter()
        .map(|(_, n, _)| n)
        .collect();
    assert_eq!(names, vec![gateway_a.clone()]);
    reach_host2(h0, "a", 8081, "after-restart");
    let got = inbox.recv_timeout(Duration::from_secs(3)).ok();
    assert_eq!(
        got,
        Some(("10.99.0.1".to_string(), "after-restart".to_string()))
    );
    h0.ok(&["sandbox", "create", "b", "--network", "web"]);
    let gb = h0.sandbox_ip("b", Some(GW));
    assert_ne!(ga, gb, "b got a's address on {GW}");

    // Removing the sandbox removes its gateway endpoint and gives its address back.
    h0.ok(&["sandbox", "rm", "a"]);
    let left = h0.network_endpoints(GW);
    assert!(
        left.iter().all(|(_, n, _)| n != &gateway_a),
        "a's gateway endpoint stayed: {left:?}"
    );
    h0.ok(&["sandbox", "create", "c", "--network", "web"]);
    assert_eq!(
        h0.sandbox_ip("c", Some(GW)),
        ga,
        "a's address was not given back"
    );

    // Once no sandbox needs it, it can be removed; the next one makes it again.
    h0.ok(&["sandbox", "rm", "b", "c"]);
    assert!(h0.network_endpoints(GW).is_empty());
    h0.ok(&["network", "rm", GW]);
    wait_for(
        "the gateway bridge gone",
        Duration::from_secs(5),
        || match h0.links().iter().any(|l| l == GW) {
            true => Err(format!("{GW} still there")),
            false => Ok(()),
        },
    );
    h0.ok(&["sandbox", "create", "d", "--network", "web"]);
    reach_host2(h0, "d", 8081, "from-d");

    // `plexus system reset` (daemon stopped) removes the gateway bridge with the rest.
    h0.stop();
    assert!(h0.links().iter().any(|l| l == GW));
    let state = h0.dir.path().join("state").display().to_string();
    let run = h0.dir.path().join("run").display().to_string();
    let out = h0.plexus_in_ns(&["system", "reset", "--state-dir", &state, "--run-dir", &run]);
    assert!(
        out.status.success(),
        "reset: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let links = h0.links();
    assert!(
        !links.iter().any(|l| l == GW || l.starts_with("plx")),
        "left after reset: {links:?}"
    );
}
