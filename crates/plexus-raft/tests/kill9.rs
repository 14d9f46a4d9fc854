//! Members as real processes killed with SIGKILL: nothing acknowledged is lost.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plexus_kv::PutOptions;
use plexus_raft::RaftNode;
use plexus_testkit::process::ChildGuard;

fn must<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Starts `plexus-raft-node` and waits until it is ready; returns it and its address.
async fn spawn(id: u64, dir: &Path, listen: &str, extra: &[&str]) -> (ChildGuard, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plexus-raft-node"));
    cmd.args(["--id", &id.to_string(), "--listen", listen])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = must("spawn plexus-raft-node", ChildGuard::spawn(cmd));
    let stdout = child
        .take_stdout()
        .unwrap_or_else(|| panic!("node {id}: no stdout"));
    let addr = tokio::task::spawn_blocking(move || {
        let mut addr = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap_or_default();
            if let Some(a) = line.strip_prefix("listening ") {
                addr = Some(a.to_string());
            }
            if line == "ready" {
                return addr;
            }
        }
        None
    });
    let addr = tokio::time::timeout(Duration::from_secs(60), addr)
        .await
        .unwrap_or_else(|_| panic!("node {id} not ready within 60 s"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("node {id} exited before it was ready"));
    (child, addr)
}

struct Member {
    child: ChildGuard,
    addr: String,
    dir: PathBuf,
}

/// Three member processes and this test's own learner as the client; the leader is killed
/// with SIGKILL during a write loop, then every member at once, and the cluster restarted
/// from its data directories: a fresh member joining it finds every acknowledged write,
/// each applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loses_no_acknowledged_write() {
    let tmp = must("tempdir", tempfile::tempdir());
    let mut members: BTreeMap<u64, Member> = BTreeMap::new();
    for id in 1..=3u64 {
        let dir = tmp.path().join(format!("n{id}"));
        let extra: Vec<String> = match members.get(&1) {
            None => vec!["--init".into()],
            Some(first) => vec!["--join".into(), first.addr.clone()],
        };
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let (child, addr) = spawn(id, &dir, "127.0.0.1:0", &extra).await;
        members.insert(id, Member { child, addr, dir });
    }
    let client = must(
        "client node",
        RaftNode::start(common::config(
            4,
            &tmp.path().join("client"),
            "127.0.0.1:0",
            10_000,
        ))
        .await,
    );
    must("join", client.join(&members[&1].addr).await);
    must(
        "voters",
        client
            .change_membership(BTreeSet::from([1, 2, 3]), true)
            .await,
    );
    let s = client.store();
    let before = must(
        "sentinel",
        s.put("sentinel/before", b"", PutOptions::default()).await,
    );

    let writer = tokio::spawn({
        let s = s.clone();
        async move {
            let mut acked = Vec::new();
            for i in 0..300u32 {
                let key = format!("k9/{i:04}");
                if s.put(&key, i.to_string().as_bytes(), PutOptions::default())
                    .await
                    .is_ok()
                {
                    acked.push(key);
                }
            }
            acked
        }
    });
    while must("list", s.list("k9").await).len() < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let leader = client
        .metrics()
        .leader
        .unwrap_or_else(|| panic!("no leader known"));
    let killed_at = Instant::now();
    members
        .get_mut(&leader)
        .unwrap_or_else(|| panic!("leader {leader} is not a member process"))
        .child
        .kill();
    let acked = writer.await.unwrap_or_else(|e| panic!("writer: {e}"));
    let after = must(
        "sentinel",
        s.put("sentinel/after", b"", PutOptions::default()).await,
    );
    println!(
        "leader {leader} killed; loop done {:?} later, {} writes acknowledged",
        killed_at.elapsed(),
        acked.len()
    );
    let present = must("list", s.list("k9").await);
    assert_eq!(
        after.last_index - before.last_index - 1,
        present.len() as u64,
        "a write was applied twice"
    );

    // Every member at once, then all back from their directories.
    for m in members.values_mut() {
        m.child.kill();
    }
    must("client shutdown", client.shutdown().await);
    drop(s);
    for (id, m) in members.iter_mut() {
        let (child, _) = spawn(*id, &m.dir, &m.addr, &[]).await;
        m.child = child;
    }
    // A member with an empty directory learns the state from them alone.
    let fresh = must(
        "fresh node",
        RaftNode::start(common::config(
            5,
            &tmp.path().join("fresh"),
            "127.0.0.1:0",
            10_000,
        ))
        .await,
    );
    must("join", fresh.join(&members[&1].addr).await);
    let f = fresh.store();
    let again = must("list", f.list("k9").await);
    let keys: BTreeSet<&str> = again.iter().map(|p| p.key.as_str()).collect();
    for key in &acked {
        assert!(keys.contains(key.as_str()), "acknowledged {key} lost");
    }
    assert_eq!(again, present, "the restarted cluster differs from before");
    must(
        "write",
        f.put("k9/after", b"x", PutOptions::default()).await,
    );
    must("fresh shutdown", fresh.shutdown().await);
}
