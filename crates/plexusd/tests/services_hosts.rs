//! Services across hosts (libnetwork's `service_table`): three real `plexusd` on an
//! underlay bridge with a real etcd, a service on an overlay network with one task per host.
//! Connections to the VIP from a client on host 1 and from one on host 2 reach the tasks of
//! all three hosts; host 3's daemon killed with -9, within the failure-detection time no
//! connection from host 1 goes to host 3's task any more (they all land on hosts 1 and 2);
//! host 3's daemon back, its task is back in the rotation; host 1's daemon restarted while
//! its gossip is cut, the other hosts' tasks do not leave its rotation. Needs root.

// Hosts and their sandboxes go by number.
#![allow(clippy::needless_range_loop)]

mod multihost;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use multihost::{wait_for, Cluster, ClusterStore, Host};

const PORT: u16 = 8080;

/// The service's IPv4 VIP.
fn vip_of(h: &Host, service: &str) -> String {
    let out = h.ok(&["service", "inspect", service]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("{service} has no virtual IP: {v}"))
}

/// Sends `n` connections from `client` on `host` to `vip`; how many each task's listener
/// got, and how many connections failed.
fn spread(
    host: &Host,
    client: &str,
    vip: &str,
    n: usize,
    tasks: &[Receiver<String>],
) -> (Vec<usize>, usize) {
    for t in tasks {
        while t.try_recv().is_ok() {}
    }
    let mut failed = 0;
    for i in 0..n {
        if host.tcp_send(client, vip, PORT, &format!("c{i}")).is_err() {
            failed += 1;
        }
    }
    // The listeners hand a connection over once it is closed: let the last ones arrive.
    std::thread::sleep(Duration::from_millis(300));
    let got = tasks.iter().map(|t| t.try_iter().count()).collect();
    (got, failed)
}

#[test]
fn a_vip_spreads_over_every_hosts_tasks_and_drops_a_dead_host() {
    plexus_testkit::require_root();
    let mut c = Cluster::start(3, ClusterStore::etcd());
    let h = &c.hosts;
    h[0].create_overlay("svc", "10.252.0.0/24");
    h[0].ok(&["service", "create", "web", "--network", "svc"]);
    let vip = vip_of(&h[0], "web");
    for i in 0..3 {
        h[i].ok(&[
            "sandbox",
            "create",
            &format!("web{}", i + 1),
            "--network",
            "svc",
            "--service",
            "web",
        ]);
    }
    let tasks: Vec<Receiver<String>> = (0..3)
        .map(|i| h[i].listen(&format!("web{}", i + 1), PORT))
        .collect();
    h[0].ok(&["sandbox", "create", "client1", "--network", "svc"]);
    h[1].ok(&["sandbox", "create", "client2", "--network", "svc"]);

    // Every host's task gets a share, from host 1's client and from host 2's.
    for (host, client) in [(0, "client1"), (1, "client2")] {
        wait_for(
            &format!("{client} reaching every host's task"),
            Duration::from_secs(30),
            || {
                let (got, failed) = spread(&c.hosts[host], client, &vip, 45, &tasks);
                if failed == 0 && got.iter().all(|&n| n > 0) {
                    eprintln!("{client} on host {}: {got:?}", host + 1);
                    Ok(())
                } else {
                    Err(format!("per task {got:?}, {failed} failed"))
                }
            },
        );
    }

    // Host 3's daemon dies: gossip declares it dead and its task leaves the rotation.
    let bound = Duration::from_millis(
        c.hosts[0].inspect()["FailureDetectionMs"]
            .as_u64()
            .unwrap_or_default(),
    );
    assert!(!bound.is_zero());
    let killed = Instant::now();
    c.hosts[2].kill9();
    let h = &c.hosts;
    // Polled in rounds: the first round of 60 connections none of which reaches host 3.
    // Host 3's task stays reachable (only its daemon died), so while it is in the rotation
    // a round avoids it by chance with probability (2/3)^60, about 3e-11: a round of 15
    // would, 0.2% of the time, over the dozens of rounds before the death is known.
    let gone = loop {
        let (got, failed) = spread(&h[0], "client1", &vip, 60, &tasks);
        if got[2] == 0 && failed == 0 && got[0] + got[1] == 60 {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < bound + Duration::from_secs(5),
            "host 3's task still in the rotation {:?} after the kill (failure detection {bound:?}): {got:?}, {failed} failed\n--- host 1 ---\n{}",
            killed.elapsed(),
            h[0].log()
        );
    };
    eprintln!("host 3 killed: its task out of host 1's rotation after {gone:?} (failure detection {bound:?})");
    assert!(
        gone <= bound + Duration::from_secs(2),
        "{gone:?} > {bound:?}"
    );
    let (got, failed) = spread(&h[0], "client1", &vip, 45, &tasks);
    assert_eq!((got[2], failed), (0, 0), "after host 3's death: {got:?}");
    assert!(got[0] > 0 && got[1] > 0, "{got:?}");

    // Back: its task is load-balanced to again.
    c.hosts[2].start();
    let h = &c.hosts;
    wait_for(
        "host 3's task back in host 1's rotation",
        Duration::from_secs(45),
        || {
            let (got, failed) = spread(&h[0], "client1", &vip, 30, &tasks);
            if failed == 0 && got.iter().all(|&n| n > 0) {
                Ok(())
            } else {
                Err(format!("per task {got:?}, {failed} failed"))
            }
        },
    );

    // Host 1's daemon restarted while its gossip cannot reach the others (the data plane
    // can): the other hosts' tasks stay in its rotation, its tables keeping them until
    // gossip brings them back (at most 30 s).
    c.hosts[0].kill9();
    multihost::nft(
        &c.hosts[0].ns,
        "table inet cut {\n chain in { type filter hook input priority 0; udp dport 7946 drop; tcp dport 7946 drop; }\n chain out { type filter hook output priority 0; udp dport 7946 drop; tcp dport 7946 drop; }\n}\n",
    );
    c.hosts[0].start();
    let h = &c.hosts;
    let (got, failed) = spread(&h[0], "client1", &vip, 45, &tasks);
    assert!(
        failed == 0 && got.iter().all(|&n| n > 0),
        "right after host 1's restart, gossip cut: per task {got:?}, {failed} failed\n{}",
        h[0].log()
    );
    multihost::nft(&h[0].ns, "delete table inet cut");
}
