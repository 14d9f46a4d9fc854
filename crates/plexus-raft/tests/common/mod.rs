//! A cluster of in-process members on loopback, each on its own temporary data directory.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use plexus_raft::{RaftConfig, RaftNode};

pub struct Cluster {
    /// Members by position (node id = position + 1); `None` once shut down.
    pub nodes: Vec<Option<RaftNode>>,
    pub dirs: Vec<tempfile::TempDir>,
    pub snapshot_every: u64,
    /// How long a store operation waits for a leader and an answer.
    pub op_timeout: Duration,
}

pub fn config(id: u64, dir: &std::path::Path, listen: &str, snapshot_every: u64) -> RaftConfig {
    let mut c = RaftConfig::new(id, dir, listen);
    c.snapshot_every = snapshot_every;
    c
}

impl Cluster {
    /// `n` voters, node 1 initialized first, the others added as learners then promoted.
    pub async fn start(n: usize, snapshot_every: u64) -> Cluster {
        Self::start_with(n, snapshot_every, Duration::from_secs(10)).await
    }

    /// Like [`Cluster::start`], with store operations bounded by `op_timeout`.
    pub async fn start_with(n: usize, snapshot_every: u64, op_timeout: Duration) -> Cluster {
        let mut c = Cluster {
            nodes: Vec::new(),
            dirs: Vec::new(),
            snapshot_every,
            op_timeout,
        };
        for _ in 0..n {
            c.add_node().await;
        }
        c.node(0)
            .initialize()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        c.wait_leader(Duration::from_secs(10)).await;
        for i in 1..n {
            let addr = c.node(i).addr().to_string();
            c.node(0)
                .add_learner(i as u64 + 1, &addr)
                .await
                .unwrap_or_else(|e| panic!("add_learner {}: {e}", i + 1));
        }
        let voters: BTreeSet<u64> = (1..=n as u64).collect();
        c.node(0)
            .change_membership(voters, false)
            .await
            .unwrap_or_else(|e| panic!("change_membership: {e}"));
        c
    }

    /// Starts one more node (not yet a member); returns its position.
    pub async fn add_node(&mut self) -> usize {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let id = self.nodes.len() as u64 + 1;
        let mut cfg = config(id, dir.path(), "127.0.0.1:0", self.snapshot_every);
        cfg.op_timeout = self.op_timeout;
        let node = RaftNode::start(cfg)
            .await
            .unwrap_or_else(|e| panic!("start node {id}: {e}"));
        self.nodes.push(Some(node));
        self.dirs.push(dir);
        self.nodes.len() - 1
    }

    pub fn node(&self, i: usize) -> &RaftNode {
        self.nodes[i]
            .as_ref()
            .unwrap_or_else(|| panic!("node {} is down", i + 1))
    }

    /// Position of the leader all running members agree on, waiting up to `within`.
    pub async fn wait_leader(&self, within: Duration) -> usize {
        let start = Instant::now();
        loop {
            let mut seen = BTreeSet::new();
            let mut leader_running = None;
            for (i, n) in self.nodes.iter().enumerate() {
                if let Some(n) = n {
                    let m = n.metrics();
                    if m.voters.contains_key(&m.id) {
                        seen.insert(m.leader);
                    }
                    if m.is_leader {
                        leader_running = Some(i);
                    }
                }
            }
            if let (Some(i), 1) = (leader_running, seen.len()) {
                return i;
            }
            assert!(
                start.elapsed() < within,
                "no leader agreed on within {within:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A running member that does not lead.
    pub async fn follower(&self) -> usize {
        let leader = self.wait_leader(Duration::from_secs(10)).await;
        (0..self.nodes.len())
            .find(|&i| i != leader && self.nodes[i].is_some())
            .unwrap_or_else(|| panic!("no follower"))
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown()
                .await
                .unwrap_or_else(|e| panic!("shutdown: {e}"));
        }
    }

    pub async fn shutdown_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}
