//! The gossip control plane across real `plexusd` processes: three hosts (namespaces on an
//! underlay bridge in a namespace of the test's own) sharing a real etcd through proxies.
//! They join (`plexus cluster ls` shows three alive everywhere); a host whose key differs
//! (it was given another cluster store, so another keyring, and joins through a seed) is
//! refused, logged and counted; `plexus cluster key rotate` moves every host to the new key
//! with nothing refused; a host killed with -9 is seen dead within the configured
//! failure-detection time, and is alive again once restarted. Needs root.
//!
//! Table plumbing (the control plane to the drivers) is tested in-process in
//! `src/gossip/plane_tests.rs` and `rotate_tests.rs`; the overlay across hosts in
//! `overlay_hosts.rs`.

mod multihost;

use std::time::{Duration, Instant};

use multihost::{alive, wait_for, Cluster, ClusterStore, Host};
use serde_json::Value;

#[test]
fn three_hosts_join_refuse_a_foreign_key_rotate_detect_a_kill_and_rejoin() {
    plexus_testkit::require_root();
    let cluster = Cluster::empty(ClusterStore::etcd());
    // Host 1 seeds nobody; host 2 joins through --cluster-join; host 3 through the hosts the
    // cluster store lists.
    let mut hosts: Vec<Host> = vec![
        cluster.host(1, "cluster", &[]),
        cluster.host(2, "cluster", &["--cluster-join", "10.99.0.1"]),
        cluster.host(3, "cluster", &[]),
    ];
    for h in hosts.iter_mut() {
        h.start();
    }
    for h in &hosts {
        wait_for("three alive hosts", Duration::from_secs(30), || alive(h, 3));
    }
    let table = hosts[0].ok(&["cluster", "ls"]);
    assert!(
        table.starts_with("HOST ID") && table.contains("10.99.0.3:7946") && table.contains('*'),
        "{table}"
    );
    let keyring = hosts[0].inspect()["Keyring"].clone();
    for h in &hosts[1..] {
        assert_eq!(h.inspect()["Keyring"]["Primary"], keyring["Primary"]);
    }
    let inspect = hosts[0].ok(&["cluster", "inspect", "10.99.0.2"]);
    assert!(inspect.contains("\"10.99.0.2:7946\""), "{inspect}");
    assert!(
        !inspect.contains("\"Key\""),
        "key material must never be shown: {inspect}"
    );
    let out = hosts[0].plexus(&["cluster", "inspect", "nosuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("\"nosuch\""), "{err}");
    wait_for(
        "three alive in the metrics",
        Duration::from_secs(3),
        || match hosts[0].metric("plexus_gossip_members{state=\"alive\"}") {
            3.0 => Ok(()),
            n => Err(format!("{n}")),
        },
    );
    assert!(hosts[0].metric("plexus_gossip_messages_received_total{transport=\"udp\"}") > 0.0);

    // A host of another cluster store has another keyring: it is refused, counted, logged.
    let mut foreign = cluster.host(4, "other", &["--cluster-join", "10.99.0.1"]);
    foreign.start();
    wait_for("refused frames counted", Duration::from_secs(20), || {
        let failures = hosts[0].inspect()["Stats"]["DecryptionFailures"]
            .as_u64()
            .unwrap_or(0);
        if failures > 0 && hosts[0].metric("plexus_gossip_decryption_failures_total") > 0.0 {
            Ok(())
        } else {
            Err(format!("{failures} failures"))
        }
    });
    wait_for("the refusal logged", Duration::from_secs(5), || {
        if hosts[0].log().contains("gossip frames refused") {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    for h in &hosts {
        alive(h, 3).unwrap_or_else(|e| panic!("the foreign host got in: {e}"));
    }
    alive(&foreign, 1).unwrap_or_else(|e| panic!("the foreign host joined: {e}"));
    // And the refused host says why it is alone (after its seeds' grace, 10 s).
    wait_for(
        "the refused host's warning",
        Duration::from_secs(20),
        || {
            if foreign.log().contains("no other host answers gossip") {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    );
    foreign.kill9();

    // Rotation: every host ends on the new key, nobody refused a frame of the cluster's.
    std::thread::sleep(Duration::from_secs(2));
    let refused: Vec<u64> = hosts
        .iter()
        .map(|h| {
            h.inspect()["Stats"]["DecryptionFailures"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    let primary = hosts[1]
        .ok(&["cluster", "key", "rotate"])
        .trim()
        .to_string();
    assert_ne!(Value::from(primary.clone()), keyring["Primary"]);
    for (h, before) in hosts.iter().zip(&refused) {
        wait_for("the new key everywhere", Duration::from_secs(10), || {
            let k = h.inspect()["Keyring"].clone();
            if k["Primary"].as_str() == Some(primary.as_str())
                && k["Keys"].as_array().map(Vec::len) == Some(1)
            {
                Ok(())
            } else {
                Err(k.to_string())
            }
        });
        let after = h.inspect()["Stats"]["DecryptionFailures"]
            .as_u64()
            .unwrap_or(0);
        assert_eq!(after, *before, "frames refused during the rotation");
        alive(h, 3).unwrap_or_else(|e| panic!("a host was lost in the rotation: {e}"));
    }

    // kill -9: the others see it dead within the configured failure-detection time.
    let bound = hosts[0].inspect()["FailureDetectionMs"]
        .as_u64()
        .unwrap_or(0);
    assert!(bound > 0);
    let killed = Instant::now();
    hosts[2].kill9();
    for h in &hosts[..2] {
        let left = Duration::from_millis(bound).saturating_sub(killed.elapsed());
        wait_for("the killed host dead", left, || {
            let m = h.members();
            if m.iter().any(|(a, s)| a == "10.99.0.3:7946" && s == "dead") {
                Ok(())
            } else {
                Err(format!("{m:?}"))
            }
        });
    }
    eprintln!(
        "kill -9 seen dead after {} ms (bound {bound} ms)",
        killed.elapsed().as_millis()
    );
    // The metrics follow within a reading (every second).
    wait_for(
        "the dead host in the metrics",
        Duration::from_secs(3),
        || match hosts[0].metric("plexus_gossip_members{state=\"dead\"}") {
            1.0 => Ok(()),
            n => Err(format!("{n}")),
        },
    );

    // It comes back (a new life at the same address): alive again everywhere.
    hosts[2].start();
    for h in &hosts {
        wait_for("the restarted host alive", Duration::from_secs(30), || {
            alive(h, 3)
        });
    }
}
