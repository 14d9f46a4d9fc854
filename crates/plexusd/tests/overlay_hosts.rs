//! The overlay driver across real `plexusd` processes on three hosts (namespaces on an
//! underlay bridge, a real etcd): a network made on one host is listed and attachable on the
//! others; sandboxes on every host ping and connect to each other over VXLAN, their peers
//! learnt through gossip; two overlay networks on the same hosts are kept apart. Bad input
//! across hosts (overlapping subnets, a taken VXLAN id, a network made without
//! `--attachable`, an advertise address that is not the host's) is refused with the field
//! named and nothing made. Needs root.

// Hosts and their sandboxes go by number.
#![allow(clippy::needless_range_loop)]

mod multihost;

use std::time::Duration;

use multihost::{wait_for, Cluster, ClusterStore};

#[test]
fn sandboxes_on_three_hosts_talk_and_two_networks_stay_apart() {
    plexus_testkit::require_root();
    talk_and_stay_apart(Cluster::start(3, ClusterStore::etcd()));
}

/// The same on ZooKeeper as the cluster store.
#[test]
fn sandboxes_on_three_hosts_talk_with_zookeeper_as_the_store() {
    plexus_testkit::require_root();
    talk_and_stay_apart(Cluster::start(3, ClusterStore::zookeeper()));
}

fn talk_and_stay_apart(c: Cluster) {
    let h = &c.hosts;
    h[0].create_overlay("blue", "10.251.0.0/24");
    h[1].create_overlay("red", "10.252.0.0/24");
    // Global scope: both are listed on every host.
    for host in h {
        let ls = host.ok(&["network", "ls"]);
        assert!(ls.contains("blue") && ls.contains("red"), "{ls}");
    }
    for (i, host) in h.iter().enumerate() {
        host.ok(&[
            "sandbox",
            "create",
            &format!("blue{i}"),
            "--network",
            "blue",
        ]);
        host.ok(&["sandbox", "create", &format!("red{i}"), "--network", "red"]);
    }
    let blue: Vec<String> = (0..3)
        .map(|i| h[i].sandbox_ip(&format!("blue{i}"), None))
        .collect();
    let red: Vec<String> = (0..3)
        .map(|i| h[i].sandbox_ip(&format!("red{i}"), None))
        .collect();
    assert!(blue.iter().all(|a| a.starts_with("10.251.0.")), "{blue:?}");
    assert!(red.iter().all(|a| a.starts_with("10.252.0.")), "{red:?}");

    // Every blue sandbox reaches every other one, by ping and by TCP.
    let inbox: Vec<_> = (0..3)
        .map(|i| h[i].listen(&format!("blue{i}"), 7777))
        .collect();
    for from in 0..3 {
        for to in (0..3).filter(|&t| t != from) {
            let me = format!("blue{from}");
            wait_for(
                &format!("{me} pinging blue{to}"),
                Duration::from_secs(20),
                || {
                    if h[from].ping(&me, &blue[to]) {
                        Ok(())
                    } else {
                        Err("no answer".into())
                    }
                },
            );
            let msg = format!("from{from}to{to}");
            h[from]
                .tcp_send(&me, &blue[to], 7777, &msg)
                .unwrap_or_else(|e| panic!("{e}"));
            let got = inbox[to]
                .recv_timeout(Duration::from_secs(3))
                .unwrap_or_else(|e| panic!("blue{to} got nothing: {e}"));
            assert_eq!(got, msg);
        }
    }
    // Red talks across hosts too.
    wait_for("red0 pinging red2", Duration::from_secs(20), || {
        if h[0].ping("red0", &red[2]) {
            Ok(())
        } else {
            Err("no answer".into())
        }
    });
    // Apart: a blue sandbox does not reach a red one, on another host or on its own, and
    // blue's forwarding table holds none of red's hosts' endpoints.
    for (from, to) in [(0, 1), (1, 1), (2, 0)] {
        assert!(
            !h[from].ping(&format!("blue{from}"), &red[to]),
            "blue{from} reached red{to}"
        );
    }
    let blue_id = h[0].network_id("blue");
    let fdb = h[0].overlay_fdb(&blue_id);
    assert_eq!(fdb.len(), 2, "blue's FDB on host 1: {fdb:?}");
}

#[test]
fn bad_input_across_hosts_is_refused_and_nothing_is_made() {
    plexus_testkit::require_root();
    let c = Cluster::start(2, ClusterStore::etcd());
    let h = &c.hosts;
    h[0].ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.253.0.0/24",
        "-o",
        "com.docker.network.driver.overlay.vxlanid_list=4242",
        "first",
    ]);
    // A subnet overlapping another global network's, asked on the other host.
    let err = h[1].fails(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.253.0.128/25",
        "second",
    ]);
    assert!(
        err.contains("10.253.0.128/25") && err.contains("first"),
        "{err}"
    );
    // The VXLAN id the first one holds.
    let err = h[1].fails(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.254.0.0/24",
        "-o",
        "com.docker.network.driver.overlay.vxlanid_list=4242",
        "third",
    ]);
    assert!(
        err.contains("4242") && err.contains("vxlanid_list"),
        "{err}"
    );
    // Nothing was made: neither host lists them, and the subnet and id are still free.
    for host in h {
        let ls = host.ok(&["network", "ls"]);
        assert!(!ls.contains("second") && !ls.contains("third"), "{ls}");
    }
    h[1].ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.254.0.0/24",
        "-o",
        "com.docker.network.driver.overlay.vxlanid_list=4243",
        "third",
    ]);
    // A sandbox cannot join a cluster network made without --attachable (Docker's rule for
    // standalone containers); nothing is left of the attempt.
    let err = h[1].fails(&["sandbox", "create", "lone", "--network", "first"]);
    assert!(err.contains("not manually attachable"), "{err}");
    assert!(!h[1].ok(&["sandbox", "ls"]).contains("lone"));
    assert!(!h[1].sandbox_ns("lone").exists());

    // A daemon told to advertise an address that is not its own refuses to start, naming it.
    let mut wrong = c.host(3, "elsewhere", &["--cluster-advertise", "10.99.0.77"]);
    let out = wrong.run_to_exit();
    assert!(
        !out.status.success()
            && out.log.contains("--cluster-advertise")
            && out.log.contains("10.99.0.77"),
        "{}",
        out.log
    );
}

/// Twenty hosts, a sandbox on each: every host's VXLAN device holds the other nineteen, and
/// the first host's sandbox reaches the last one's.
#[test]
fn twenty_hosts_see_every_endpoint() {
    plexus_testkit::require_root();
    let n = 20;
    let c = Cluster::start(n, ClusterStore::etcd());
    let h = &c.hosts;
    let id = h[0].create_overlay("wide", "10.250.0.0/24");
    for (i, host) in h.iter().enumerate() {
        host.ok(&["sandbox", "create", &format!("w{i}"), "--network", "wide"]);
    }
    for host in h {
        wait_for(
            "every host holding every other endpoint",
            Duration::from_secs(30),
            || match host.overlay_fdb(&id).len() {
                l if l == n as usize - 1 => Ok(()),
                l => Err(format!("host {} holds {l}", host.n)),
            },
        );
    }
    let last = h[n as usize - 1].sandbox_ip(&format!("w{}", n - 1), None);
    wait_for("w0 pinging the last", Duration::from_secs(10), || {
        if h[0].ping("w0", &last) {
            Ok(())
        } else {
            Err("no answer".into())
        }
    });
}
