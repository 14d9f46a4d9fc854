//! Members failing, coming back and joining: what a user of the store sees.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::Cluster;
use plexus_kv::{KvError, PutOptions, Txn};
use plexus_raft::RaftNode;

/// The node's last applied index once it has stopped moving (entries of a membership
/// change or a new term may still be arriving just after a cluster starts).
async fn settled_applied(node: &RaftNode) -> u64 {
    let mut last = node.metrics().last_applied;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = node.metrics().last_applied;
        if now == last {
            return now;
        }
        last = now;
    }
}

fn must<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The leader is shut down in the middle of a loop of writes from a follower's client:
/// a new leader is elected within a second, every acknowledged write is there afterwards,
/// and none was applied twice (the revision grew by exactly one per key present).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_killed_during_writes_loses_nothing() {
    let mut c = Cluster::start(3, 10_000).await;
    let old_leader = c.wait_leader(Duration::from_secs(10)).await;
    let client_at = c.follower().await;
    let s = c.node(client_at).store();
    let before = must(
        "sentinel",
        s.put("sentinel/before", b"", PutOptions::default()).await,
    );

    let writer = tokio::spawn({
        let s = s.clone();
        async move {
            let mut acked = Vec::new();
            let mut failed = 0;
            for i in 0..300u32 {
                let key = format!("loop/{i:04}");
                match s
                    .put(&key, i.to_string().as_bytes(), PutOptions::default())
                    .await
                {
                    Ok(_) => acked.push(key),
                    Err(_) => failed += 1,
                }
            }
            (acked, failed)
        }
    });
    // Let the loop run, then take the leader away.
    while must("list", s.list("loop").await).len() < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = Instant::now();
    c.stop(old_leader).await;
    let new_leader = c.wait_leader(Duration::from_secs(5)).await;
    let elected_after = killed_at.elapsed();
    assert_ne!(new_leader, old_leader);
    let (acked, failed) = writer.await.unwrap_or_else(|e| panic!("writer: {e}"));
    println!(
        "new leader after {elected_after:?}; {} writes acknowledged, {failed} failed",
        acked.len()
    );
    assert!(
        elected_after < Duration::from_secs(1),
        "new leader only after {elected_after:?}"
    );

    let after = must(
        "sentinel",
        s.put("sentinel/after", b"", PutOptions::default()).await,
    );
    let present = must("list", s.list("loop").await);
    let present_keys: BTreeSet<String> = present.iter().map(|p| p.key.clone()).collect();
    for key in &acked {
        assert!(present_keys.contains(key), "acknowledged {key} is lost");
    }
    for p in &present {
        let i: u32 = p.key["loop/".len()..].parse().unwrap_or(u32::MAX);
        assert_eq!(
            p.value,
            i.to_string().into_bytes(),
            "{} has a wrong value",
            p.key
        );
    }
    // One revision per applied put: a put applied twice would show as a gap.
    assert_eq!(
        after.last_index - before.last_index - 1,
        present.len() as u64,
        "revisions between the sentinels do not match the keys written: a write applied twice"
    );
    // The other follower agrees.
    let other = (0..3)
        .find(|&i| i != old_leader && i != client_at)
        .unwrap_or_else(|| panic!("no third member"));
    let theirs = must("list", c.node(other).store().list("loop").await);
    assert_eq!(theirs, present);
    c.shutdown_all().await;
}

/// A member shut down and started again on its data directory comes back with its state
/// and catches up on what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarted_member_catches_up() {
    let mut c = Cluster::start(3, 10_000).await;
    let f = c.follower().await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let s = c.node(leader).store();
    for i in 0..50 {
        must(
            "put",
            s.put(&format!("r/a{i:02}"), b"1", PutOptions::default())
                .await,
        );
    }
    // Let the follower apply, then stop it.
    must("sync", c.node(f).store().sync().await);
    let addr = c.node(f).addr().to_string();
    let old_store = c.node(f).store();
    c.stop(f).await;
    // A store of a node that was shut down answers Closed, and is dropped before the
    // node starts again on its directory.
    assert!(matches!(
        old_store.get("r/a01").await,
        Err(KvError::Closed { .. })
    ));
    drop(old_store);
    for i in 0..50 {
        must(
            "put",
            s.put(&format!("r/b{i:02}"), b"2", PutOptions::default())
                .await,
        );
    }
    must("delete", s.delete("r/a00").await);
    let id = f as u64 + 1;
    let node = must(
        "restart",
        RaftNode::start(common::config(id, c.dirs[f].path(), &addr, 10_000)).await,
    );
    c.nodes[f] = Some(node);
    let store = c.node(f).store();
    let listed = must("list", store.list("r").await);
    assert_eq!(
        listed.len(),
        99,
        "restarted member sees {} keys",
        listed.len()
    );
    assert!(matches!(
        store.get("r/a00").await,
        Err(KvError::KeyNotFound { .. })
    ));
    // And it serves writes again, forwarded to the leader.
    must("put", store.put("r/c", b"3", PutOptions::default()).await);
    assert_eq!(must("get", s.get("r/c").await).value, b"3");
    c.shutdown_all().await;
}

/// A member restarted on another address re-announces itself: the membership records the
/// new address and the leader replicates to it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_back_on_another_address_is_reached_there() {
    let mut c = Cluster::start(3, 10_000).await;
    let f = c.follower().await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let s = c.node(leader).store();
    let old_addr = c.node(f).addr().to_string();
    c.stop(f).await;
    must("put", s.put("moved/k", b"v", PutOptions::default()).await);
    let id = f as u64 + 1;
    let node = must(
        "restart",
        RaftNode::start(common::config(id, c.dirs[f].path(), "127.0.0.1:0", 10_000)).await,
    );
    let new_addr = node.addr().to_string();
    assert_ne!(new_addr, old_addr);
    c.nodes[f] = Some(node);
    let start = Instant::now();
    loop {
        let leader = c.wait_leader(Duration::from_secs(10)).await;
        let m = c.node(leader).metrics();
        if m.voters.get(&id) == Some(&new_addr) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "membership still has {:?} for node {id}",
            m.voters.get(&id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = must("get", c.node(f).store().get("moved/k").await);
    assert_eq!(got.value, b"v");
    c.shutdown_all().await;
}

/// A learner added behind a compacted log gets the state by snapshot (in several chunks),
/// catches up, and is promoted to a voter.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learner_behind_a_snapshot_catches_up_and_votes() {
    let mut c = Cluster::start(3, 100).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let s = c.node(leader).store();
    let value = vec![7u8; 16 << 10];
    // 400 keys of 16 KiB: about 6 MiB of state, more than one snapshot chunk.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let s = s.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..100 {
                s.put(&format!("snap/{t}/{i:03}"), &value, PutOptions::default())
                    .await?;
            }
            Ok::<_, KvError>(())
        }));
    }
    for t in tasks {
        must("writer", t.await.unwrap_or_else(|e| panic!("{e}")));
    }
    // Compaction on every member, so the learner can only be sent a snapshot.
    for i in 0..3 {
        // Applied up to the leader's commit first: the snapshot covers every write.
        must("sync", c.node(i).store().sync().await);
        must("snapshot", c.node(i).trigger_snapshot().await);
    }
    let start = Instant::now();
    while (0..3).any(|i| c.node(i).metrics().snapshot.unwrap_or(0) < 300) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no snapshot built: {:?}",
            (0..3).map(|i| c.node(i).metrics()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let new = c.add_node().await;
    let id = new as u64 + 1;
    let addr = c.node(new).addr().to_string();
    // Leadership may move under load: ask whoever leads at the time.
    let mut tries = 0;
    loop {
        let leader = c.wait_leader(Duration::from_secs(10)).await;
        match c.node(leader).add_learner(id, &addr).await {
            Ok(()) => break,
            Err(e) if tries < 5 => {
                tries += 1;
                println!("add_learner on {}: {e}", leader + 1);
            }
            Err(e) => panic!("add_learner: {e}"),
        }
    }
    let start = Instant::now();
    loop {
        let m = c.node(new).metrics();
        if m.snapshot.is_some() && m.last_applied >= 400 && m.learners.contains_key(&id) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "learner did not catch up by snapshot: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut tries = 0;
    let leader = loop {
        let leader = c.wait_leader(Duration::from_secs(10)).await;
        match c
            .node(leader)
            .change_membership(BTreeSet::from([1, 2, 3, id]), false)
            .await
        {
            Ok(()) => break leader,
            Err(e) if tries < 5 => {
                tries += 1;
                println!("promote on {}: {e}", leader + 1);
            }
            Err(e) => panic!("promote: {e}"),
        }
    };
    let m = c.node(leader).metrics();
    assert!(m.voters.contains_key(&id), "not a voter: {m:?}");
    let listed = must("list", c.node(new).store().list("snap").await);
    assert_eq!(listed.len(), 400);
    assert!(listed.iter().all(|p| p.value == value));
    c.shutdown_all().await;
}

/// Values over the limit, and transactions too big for one entry, are refused with the key
/// and limit named, on the leader and on a follower, and nothing is proposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversize_writes_are_refused_and_change_nothing() {
    let mut c = Cluster::start(3, 10_000).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let f = c.follower().await;
    let applied = settled_applied(c.node(leader)).await;
    for at in [leader, f] {
        let s = c.node(at).store();
        let limit = s.max_value_bytes();
        assert_eq!(limit, 1 << 20);
        let over = vec![1u8; limit + 1];
        match s.put("big/k", &over, PutOptions::default()).await {
            Err(e @ KvError::ValueTooLarge { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("big/k") && msg.contains(&limit.to_string()),
                    "{msg}"
                );
            }
            other => panic!("oversize put gave {other:?}"),
        }
        assert!(matches!(
            s.atomic_put("big/k", &over, None, PutOptions::default())
                .await,
            Err(KvError::ValueTooLarge { .. })
        ));
        let mut txn = Txn::new();
        for i in 0..5 {
            txn = txn.put(format!("big/t{i}"), vec![2u8; limit]);
        }
        match s.txn(txn).await {
            Err(KvError::InvalidTxn(msg)) => assert!(msg.contains("limit"), "{msg}"),
            other => panic!("oversize txn gave {other:?}"),
        }
        assert!(must("list", s.list("big").await).is_empty());
    }
    assert_eq!(
        c.node(leader).metrics().last_applied,
        applied,
        "something was proposed"
    );
    c.shutdown_all().await;
}

/// Administration refuses what would break the cluster, naming the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_membership_changes_are_refused() {
    let mut c = Cluster::start(3, 10_000).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let err = c
        .node(leader)
        .change_membership(BTreeSet::from([1, 2, 9]), false)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("node 9 is not a member"), "{err}");
    let err = c
        .node(leader)
        .change_membership(BTreeSet::new(), false)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("at least one voter"), "{err}");
    // A second initialize of a node already in a cluster.
    assert!(c.node(leader).initialize().await.is_err());
    assert_eq!(c.node(leader).metrics().voters.len(), 3);
    c.shutdown_all().await;
}

/// A member that has lost its quorum refuses writes and linearizable reads within the
/// operation timeout, saying why, and applies nothing; the last acknowledged value is
/// what the cluster holds when the others come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minority_refuses_writes_and_says_so() {
    let mut c = Cluster::start_with(3, 10_000, Duration::from_secs(1)).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    let s = c.node(leader).store();
    must("put", s.put("q/k", b"1", PutOptions::default()).await);
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let addrs: Vec<String> = others
        .iter()
        .map(|&i| c.node(i).addr().to_string())
        .collect();
    let applied = settled_applied(c.node(leader)).await;
    for &i in &others {
        c.stop(i).await;
    }
    let started = Instant::now();
    match s.put("q/k", b"2", PutOptions::default()).await {
        Err(e @ KvError::Unavailable { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("raft://"), "{msg}");
        }
        other => panic!("write without quorum gave {other:?}"),
    }
    assert!(matches!(
        s.get("q/k").await,
        Err(KvError::Unavailable { .. })
    ));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        c.node(leader).metrics().last_applied,
        applied,
        "applied without quorum"
    );
    // The others come back: the cluster serves again. The refused write was never
    // acknowledged; whether it lands is the cluster's decision, made once.
    for (&i, addr) in others.iter().zip(&addrs) {
        let mut cfg = common::config(i as u64 + 1, c.dirs[i].path(), addr, 10_000);
        cfg.op_timeout = Duration::from_secs(10);
        c.nodes[i] = Some(must("restart", RaftNode::start(cfg).await));
    }
    let back = c.node(others[0]).store();
    let v = must("get", back.get("q/k").await).value;
    assert!(v == b"1" || v == b"2", "{v:?}");
    must("put", back.put("q/k", b"3", PutOptions::default()).await);
    let leader = c.wait_leader(Duration::from_secs(10)).await;
    assert_eq!(
        must("get", c.node(leader).store().get("q/k").await).value,
        b"3"
    );
    c.shutdown_all().await;
}
