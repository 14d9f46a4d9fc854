//! The plexus-kv conformance suite on a three-member cluster, with clients on the leader
//! and on followers.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plexus_kv::Store;
use plexus_testkit::kv::KvBackend;
use plexus_testkit::kv_conformance;

struct Raft {
    cluster: common::Cluster,
    /// Positions of the members clients are made on, in turn.
    on: Vec<usize>,
    next: AtomicUsize,
}

#[async_trait]
impl KvBackend for Raft {
    async fn client(&self) -> Arc<dyn Store> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.on.len();
        self.cluster.node(self.on[i]).store()
    }
    fn ttl_slack(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn contention_increments(&self) -> usize {
        // 16 × 25 contended increments: each retry is a read index and a proposal through
        // debug-built openraft, CPU-bound on two cores.
        25
    }
}

/// Every client on the leader.
async fn on_leader() -> Raft {
    let cluster = common::Cluster::start(3, 10_000).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    Raft {
        cluster,
        on: vec![leader],
        next: AtomicUsize::new(0),
    }
}

/// Clients on a follower, the leader and the other follower in turn (the first on a
/// follower), so writes are forwarded and reads go through a read index.
async fn mixed() -> Raft {
    let cluster = common::Cluster::start(3, 10_000).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    Raft {
        cluster,
        on: vec![followers[0], leader, followers[1]],
        next: AtomicUsize::new(0),
    }
}

kv_conformance!(leader, on_leader());
kv_conformance!(followers, mixed());
