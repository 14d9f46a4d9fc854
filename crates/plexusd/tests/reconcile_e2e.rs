//! End to end, the daemon's reconciliation: the real `plexusd` in a network namespace the
//! test makes, driven by the real `plexus` CLI. At start, the records a crash left half done
//! are rolled back (an endpoint whose join or published ports never finished) or corrected (a
//! guessed interface name); while running, the periodic pass makes a veth deleted by hand
//! again. Needs root.
//!
//! `plexus` is looked up next to `plexusd` in the target dir: `cargo test --workspace` (or
//! `cargo test -p plexus -p plexusd`) builds both.

use std::time::{Duration, Instant};

use plexus_sys::netns::Netns;

mod common;
mod sandbox_traffic;

use common::{json, Daemon};
use sandbox_traffic::{listen_in, receive, run_in, s2_reaches_s1, send_script};

/// What a crash between an endpoint's record and the end of its join leaves (the record is
/// written while the kernel work goes on): the record, with the host end of its pair not up;
/// and a crash during a disconnect: the record, with the host end unmarked. The restarted
/// daemon rolls those endpoints back — gone from their sandboxes, their addresses free
/// again — and leaves the finished endpoints alone.
#[test]
fn an_endpoint_whose_join_never_finished_is_rolled_back_at_start() {
    let mut d = Daemon::new(&[]);
    d.ok(&["network", "create", "--subnet", "10.212.0.0/24", "rb"]);
    d.ok(&[
        "sandbox",
        "create",
        "a",
        "--network",
        "rb",
        "--ip",
        "10.212.0.5",
    ]);
    d.ok(&[
        "sandbox",
        "create",
        "b",
        "--network",
        "rb",
        "--ip",
        "10.212.0.6",
    ]);
    d.ok(&[
        "sandbox",
        "create",
        "e",
        "--network",
        "rb",
        "--ip",
        "10.212.0.7",
    ]);
    let endpoint_of = |name: &str| {
        let s = json(&d.ok(&["sandbox", "inspect", name]));
        let id = s[0]["Endpoints"][0]["EndpointID"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert_eq!(id.len(), 64, "{s}");
        id
    };
    let a_endpoint = endpoint_of("a");
    let e_endpoint = endpoint_of("e");
    d.kill9();

    // The join of a's endpoint stopped short: its host end never came up. The disconnect of
    // e's stopped short: its host end has lost its mark.
    let host_end = format!("plxv{}", &a_endpoint[..11]);
    let e_host_end = format!("plxv{}", &e_endpoint[..11]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let rtnl = plexus_sys::rtnl::Rtnl::connect(&d.host_ns)
            .await
            .unwrap_or_else(|e| panic!("netlink: {e}"));
        let link = rtnl
            .require_link(&host_end)
            .await
            .unwrap_or_else(|e| panic!("{host_end}: {e}"));
        rtnl.set_down(link.index)
            .await
            .unwrap_or_else(|e| panic!("down {host_end}: {e}"));
        rtnl.set_alias_named(&e_host_end, "")
            .await
            .unwrap_or_else(|e| panic!("unmark {e_host_end}: {e}"));
    });
    d.start();

    let a = json(&d.ok(&["sandbox", "inspect", "a"]));
    assert_eq!(
        a[0]["Endpoints"].as_array().map(Vec::len),
        Some(0),
        "a's unfinished endpoint is rolled back: {a}\n{}",
        d.log()
    );
    let a_netns = a[0]["NetNs"].as_str().unwrap_or("").to_string();
    let left = run_in(&a_netns, "cat /proc/net/dev");
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.contains("eth0"), "no eth0 left in a:\n{left}");
    let net = json(&d.ok(&["network", "inspect", "rb"]));
    let members: Vec<String> = net[0]["Containers"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|c| c["EndpointID"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(members.len(), 1, "only b is left on rb: {net}");
    let e = json(&d.ok(&["sandbox", "inspect", "e"]));
    assert_eq!(e[0]["Endpoints"].as_array().map(Vec::len), Some(0), "{e}");
    assert!(!members.contains(&a_endpoint), "{net}");
    // Its address is free again, and the finished endpoint (b) still works.
    d.ok(&[
        "sandbox",
        "create",
        "c",
        "--network",
        "rb",
        "--ip",
        "10.212.0.5",
    ]);
    let b_netns = json(&d.ok(&["sandbox", "inspect", "b"]))[0]["NetNs"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let listener = listen_in(&b_netns);
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let got = receive(listener);
    d.ok(&[
        "sandbox",
        "exec",
        "c",
        "--",
        "bash",
        "-c",
        &send_script("10.212.0.6", port, "after"),
    ]);
    assert_eq!(
        got.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
        Some("after\n"),
        "c reaches b over TCP"
    );
}

/// A crash between an endpoint's join and its external connectivity (the published ports)
/// leaves a record whose ports the kernel lacks. The restarted daemon rolls the endpoint back
/// as one whose connect never finished: no endpoint, no link, its address and host port free.
#[test]
fn a_record_whose_ports_a_crash_left_unpublished_is_rolled_back_at_start() {
    let mut d = Daemon::new(&[]);
    d.ok(&["network", "create", "--subnet", "10.214.0.0/24", "pn"]);
    d.ok(&[
        "sandbox",
        "create",
        "web",
        "--network",
        "pn",
        "-p",
        "18081:80",
    ]);
    let links_before = |d: &Daemon| {
        json(&d.ok(&["network", "inspect", "pn"]))[0]["Containers"]
            .as_object()
            .map(|m| m.len())
            .unwrap_or(0)
    };
    assert_eq!(links_before(&d), 1);
    assert_eq!(d.stop().code(), Some(0));
    // What the crash leaves: everything but the published port.
    let fw = plexus_drivers::firewall::Firewall::open(&d.host_ns)
        .unwrap_or_else(|e| panic!("opening the firewall: {e}"));
    let published = fw.published();
    assert_eq!(published.len(), 1, "{published:?}");
    fw.unpublish(&published)
        .unwrap_or_else(|e| panic!("withdrawing the port: {e}"));
    d.start();
    let web = json(&d.ok(&["sandbox", "inspect", "web"]));
    assert_eq!(
        web[0]["Endpoints"].as_array().map(Vec::len),
        Some(0),
        "{web}\n{}",
        d.log()
    );
    assert_eq!(links_before(&d), 0);
    // The address and the host port are free again: a new connect gets both.
    d.ok(&["network", "connect", "--ip", "10.214.0.2", "pn", "web"]);
    d.ok(&["sandbox", "rm", "web"]);
    d.ok(&[
        "sandbox",
        "create",
        "web2",
        "--network",
        "pn",
        "-p",
        "18081:80",
    ]);
    d.ok(&["sandbox", "rm", "web2"]);
    d.ok(&["network", "rm", "pn"]);
    assert_eq!(d.stop().code(), Some(0));
}

/// A crash after a join that had to take another interface name than the guess written with
/// the endpoint's record (the sandbox's runtime had the name already), before the record was
/// corrected, leaves the guess in the record. The restarted daemon corrects it from the host
/// end's mark, and inspect shows the real name.
#[test]
fn a_record_left_with_a_guessed_interface_name_is_corrected_at_start() {
    let mut d = Daemon::new(&[]);
    d.ok(&["network", "create", "--subnet", "10.214.0.0/24", "nm"]);
    // The runtime's namespace already has an eth0 of its own.
    let ns = Netns::create(d.dir.path(), "rt-ns").unwrap_or_else(|e| panic!("netns: {e}"));
    let ns_path = ns.path().display().to_string();
    let made = run_in(&ns_path, "ip link add eth0 type veth peer name rt-peer");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    d.ok(&[
        "sandbox",
        "create",
        "rt",
        "--netns",
        &ns_path,
        "--network",
        "nm",
    ]);
    let interface = |d: &Daemon| {
        let s = json(&d.ok(&["sandbox", "inspect", "rt"]));
        s[0]["Endpoints"][0]["Interface"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(interface(&d), "eth1");
    d.kill9();

    // What the crash would have left: the record still says the guess.
    d.with_store(|store| async move {
        let records = store
            .list("plexus/v1/endpoint")
            .await
            .unwrap_or_else(|e| panic!("listing endpoints: {e}"));
        assert_eq!(records.len(), 1, "one endpoint record");
        let mut record: serde_json::Value = serde_json::from_slice(&records[0].value)
            .unwrap_or_else(|e| panic!("endpoint record: {e}"));
        assert_eq!(record["interface"], "eth1", "{record}");
        record["interface"] = "eth0".into();
        let value = serde_json::to_vec(&record).unwrap_or_default();
        store
            .txn(plexus_kv::Txn::new().put(records[0].key.clone(), value))
            .await
            .unwrap_or_else(|e| panic!("rewriting the record: {e}"));
    });
    d.start();
    assert_eq!(interface(&d), "eth1", "{}", d.log());
    // The runtime's own eth0 is untouched, and disconnecting removes only Plexus's eth1.
    d.ok(&["network", "disconnect", "nm", "rt"]);
    let links = run_in(&ns_path, "cat /proc/net/dev");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(links.contains("eth0"), "{links}");
    assert!(!links.contains("eth1"), "{links}");
    d.ok(&["sandbox", "rm", "rt"]);
    assert_eq!(d.stop().code(), Some(0));
}

/// The interface index of `name` in the namespace at `netns`, if it has one.
fn ifindex_in(netns: &str, name: &str) -> Option<u32> {
    // `ip`, not /sys/class/net: sysfs shows the namespace it was mounted in, not ours.
    let out = run_in(
        netns,
        &format!("ip -o link show dev {name} 2>/dev/null | cut -d: -f1"),
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Drift repair while running: with `--reconcile-interval 1s`, a sandbox's host-side veth
/// deleted by hand is made again within about an interval (a new link, the same name in the
/// sandbox) and traffic flows again; a link the test made itself is left alone.
#[test]
fn a_veth_deleted_by_hand_is_made_again_by_the_periodic_reconciler() {
    let d = Daemon::new(&["--reconcile-interval", "1s", "--bridge", "none"]);
    let host_ns = d.dir.path().join("host-ns").display().to_string();
    d.ok(&["network", "create", "--subnet", "10.213.0.0/24", "dr"]);
    for (name, ip) in [("s1", "10.213.0.2"), ("s2", "10.213.0.3")] {
        d.ok(&["sandbox", "create", name, "--network", "dr", "--ip", ip]);
    }
    s2_reaches_s1(&d, "before");
    let foreign = run_in(
        &host_ns,
        "ip link add foreign0 type veth peer name foreign1 && ip link set foreign0 up",
    );
    assert!(foreign.status.success(), "{foreign:?}");
    let s1 = json(&d.ok(&["sandbox", "inspect", "s1"]));
    let endpoint = s1[0]["Endpoints"][0]["EndpointID"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(endpoint.len(), 64, "{s1}");
    let s1_netns = s1[0]["NetNs"].as_str().unwrap_or("").to_string();
    let host_end = format!("plxv{}", &endpoint[..11]);
    let before = ifindex_in(&host_ns, &host_end);
    assert!(before.is_some(), "{host_end} missing");

    let del = run_in(&host_ns, &format!("ip link del {host_end}"));
    assert!(del.status.success(), "{del:?}");
    // One interval (and the pass itself): a new host end, eth0 back in s1.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = ifindex_in(&host_ns, &host_end);
        if now.is_some() && now != before && ifindex_in(&s1_netns, "eth0").is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{host_end} not made again within 5 s:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s2_reaches_s1(&d, "after");
    assert!(
        d.log().contains("made again"),
        "the repair is logged:\n{}",
        d.log()
    );
    for name in ["foreign0", "foreign1"] {
        assert!(
            ifindex_in(&host_ns, name).is_some(),
            "{name} was touched:\n{}",
            d.log()
        );
    }
}
