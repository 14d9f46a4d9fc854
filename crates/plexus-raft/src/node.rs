//! A member of the cluster: its Raft, its listener, its leader-only tasks, and the
//! administration the daemon needs (initialize, learners, membership, metrics).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{Config, Raft, ServerState, SnapshotPolicy};
use plexus_kv::Store;
use tokio::task::JoinHandle;

use crate::db;
use crate::log_store::LogStore;
use crate::member::{announce, expire_keys, serve, Inner};
use crate::rpc::{Admin, Network, Pool};
use crate::sm::{Shared, StateMachine};
use crate::store::RaftStore;
use crate::transport::{RaftTransport, TcpTransport};
use crate::types::Peer;

/// The value limit of the Raft store, as plexus-kv's `max_value_bytes`: larger values are
/// refused before anything is proposed.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;

/// How to start a node.
#[derive(Clone)]
pub struct RaftConfig {
    /// The node's id, unique in the cluster and independent of its address.
    pub id: u64,
    /// Where the node keeps its database (`raft.redb`).
    pub data_dir: PathBuf,
    /// The address to listen on (`host:port`; port 0 picks one).
    pub listen: String,
    /// The address other members use, when it differs from the bound one.
    pub advertise: Option<String>,
    /// How members reach each other.
    pub transport: Arc<dyn RaftTransport>,
    /// A snapshot is built, and the log before it purged, every this many entries.
    pub snapshot_every: u64,
    /// The leader's heartbeat period.
    pub heartbeat: Duration,
    /// A follower starts an election after a random wait in this range without a leader.
    pub election_timeout: (Duration, Duration),
    /// The largest value accepted.
    pub max_value_bytes: usize,
    /// How long a store operation waits for a leader and an answer.
    pub op_timeout: Duration,
    /// How often the leader looks for expired keys.
    pub ttl_tick: Duration,
}

impl RaftConfig {
    /// A configuration with the defaults: plain TCP, heartbeat 50 ms, elections after
    /// 150–300 ms, a snapshot every 10,000 entries, 1 MiB values.
    pub fn new(id: u64, data_dir: impl Into<PathBuf>, listen: impl Into<String>) -> Self {
        Self {
            id,
            data_dir: data_dir.into(),
            listen: listen.into(),
            advertise: None,
            transport: Arc::new(TcpTransport),
            snapshot_every: 10_000,
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(150), Duration::from_millis(300)),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            op_timeout: Duration::from_secs(10),
            ttl_tick: Duration::from_millis(100),
        }
    }
}

/// Errors of starting and administering a node. Each names the node, address or path.
#[derive(Debug, thiserror::Error)]
pub enum RaftNodeError {
    /// The data directory or its database could not be opened.
    #[error("raft node {id}: data directory {path}: {reason}")]
    Storage {
        /// The node.
        id: u64,
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("raft node {id}: cannot listen on {addr}: {source}")]
    Bind {
        /// The node.
        id: u64,
        /// The address.
        addr: String,
        /// The error.
        source: std::io::Error,
    },
    /// The configuration is invalid (timeouts out of order, ...).
    #[error("raft node {id}: invalid configuration: {reason}")]
    Config {
        /// The node.
        id: u64,
        /// Why.
        reason: String,
    },
    /// A cluster operation was refused or failed.
    #[error("raft node {id}: {op} failed: {reason}")]
    Cluster {
        /// The node that was asked.
        id: u64,
        /// The operation.
        op: &'static str,
        /// Why.
        reason: String,
    },
}

/// What [`RaftNode::metrics`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMetrics {
    /// This node's id.
    pub id: u64,
    /// The leader this node knows, if any.
    pub leader: Option<u64>,
    /// Whether this node leads.
    pub is_leader: bool,
    /// Voters, with their addresses.
    pub voters: BTreeMap<u64, String>,
    /// Learners (members that do not vote), with their addresses.
    pub learners: BTreeMap<u64, String>,
    /// The index of the last entry applied here.
    pub last_applied: u64,
    /// The index of the last entry in the latest snapshot, if any.
    pub snapshot: Option<u64>,
    /// The current term.
    pub term: u64,
}

/// A running member. Dropping it does not stop it: call [`RaftNode::shutdown`].
pub struct RaftNode {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl RaftNode {
    /// Opens the data directory, binds the listener and starts Raft. A node restarted on
    /// the same directory comes back with its log, vote and state; if it now listens on
    /// another address, it tells the leader, which records it in the membership.
    pub async fn start(config: RaftConfig) -> Result<RaftNode, RaftNodeError> {
        let id = config.id;
        let raft_config = Config {
            cluster_name: "plexus".into(),
            heartbeat_interval: millis(config.heartbeat),
            election_timeout_min: millis(config.election_timeout.0),
            election_timeout_max: millis(config.election_timeout.1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: 0,
            snapshot_max_chunk_size: 1 << 20,
            max_payload_entries: 256,
            install_snapshot_timeout: 2_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftNodeError::Config {
            id,
            reason: e.to_string(),
        })?;
        let dir = config.data_dir.clone();
        let database = open_db(&dir)
            .await
            .map_err(|reason| RaftNodeError::Storage {
                id,
                path: dir.clone(),
                reason,
            })?;
        let listener = config
            .transport
            .bind(&config.listen)
            .await
            .map_err(|source| RaftNodeError::Bind {
                id,
                addr: config.listen.clone(),
                source,
            })?;
        let bound = listener
            .local_addr()
            .map_err(|source| RaftNodeError::Bind {
                id,
                addr: config.listen.clone(),
                source,
            })?;
        let addr = config.advertise.clone().unwrap_or(bound);
        let shared = Shared::new(database);
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            Network {
                transport: config.transport.clone(),
            },
            LogStore::new(shared.db.clone()),
            StateMachine::new(shared.clone()),
        )
        .await
        .map_err(|e| RaftNodeError::Cluster {
            id,
            op: "start",
            reason: e.to_string(),
        })?;
        let inner = Arc::new(Inner {
            id,
            raft,
            shared,
            pool: Pool::new(config.transport.clone()),
            url: format!("raft://{id}@{addr}"),
            addr,
            max_value_bytes: config.max_value_bytes,
            op_timeout: config.op_timeout,
            next_client: AtomicU64::new(1),
            stopped: Default::default(),
        });
        let tasks = vec![
            tokio::spawn(serve(listener, inner.clone())),
            tokio::spawn(expire_keys(inner.clone(), config.ttl_tick)),
            tokio::spawn(announce(inner.clone())),
        ];
        tracing::info!(id, addr = %inner.addr, "raft node started");
        Ok(RaftNode {
            inner,
            tasks: Mutex::new(tasks),
        })
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The address other members reach this node at.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Makes a one-member cluster of this node. Refused if it is already in a cluster.
    pub async fn initialize(&self) -> Result<(), RaftNodeError> {
        let members = BTreeMap::from([(
            self.inner.id,
            Peer {
                addr: self.inner.addr.clone(),
            },
        )]);
        self.inner
            .raft
            .initialize(members)
            .await
            .map_err(|e| self.cluster_err("initialize", e))
    }

    /// Adds node `id`, listening at `addr`, as a learner, and waits until it has caught up
    /// (by log or snapshot). Asked of any member, done by the leader.
    pub async fn add_learner(&self, id: u64, addr: &str) -> Result<(), RaftNodeError> {
        let op = Admin::AddLearner {
            id,
            addr: addr.to_string(),
        };
        self.inner
            .admin(op, None)
            .await
            .map_err(|reason| self.cluster_err("add_learner", reason))
    }

    /// Joins a cluster through the member listening at `via`: the leader adds this node
    /// as a learner and sends it the state. Promote it with [`RaftNode::change_membership`].
    pub async fn join(&self, via: &str) -> Result<(), RaftNodeError> {
        let op = Admin::AddLearner {
            id: self.inner.id,
            addr: self.inner.addr.clone(),
        };
        self.inner
            .admin(op, Some(via.to_string()))
            .await
            .map_err(|reason| self.cluster_err("join", reason))
    }

    /// Makes exactly `voters` the voting members (each must be a member already); members
    /// left out stay as learners when `keep_as_learners`, else are removed. Asked of any
    /// member, done by the leader.
    pub async fn change_membership(
        &self,
        voters: BTreeSet<u64>,
        keep_as_learners: bool,
    ) -> Result<(), RaftNodeError> {
        if voters.is_empty() {
            return Err(self.cluster_err("change_membership", "a cluster needs at least one voter"));
        }
        let op = Admin::ChangeMembership {
            voters,
            retain: keep_as_learners,
        };
        self.inner
            .admin(op, None)
            .await
            .map_err(|reason| self.cluster_err("change_membership", reason))
    }

    /// Removes learner `id` from the cluster (demote a voter first). Asked of any member,
    /// done by the leader.
    pub async fn remove_learner(&self, id: u64) -> Result<(), RaftNodeError> {
        if self.metrics().voters.contains_key(&id) {
            return Err(self.cluster_err(
                "remove_learner",
                format!("node {id} is a voter; demote it first"),
            ));
        }
        let op = Admin::RemoveNodes {
            ids: BTreeSet::from([id]),
        };
        self.inner
            .admin(op, None)
            .await
            .map_err(|reason| self.cluster_err("remove_learner", reason))
    }

    /// Leader, members and progress as this node sees them.
    pub fn metrics(&self) -> NodeMetrics {
        let m = self.inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voter_ids: BTreeSet<u64> = membership.voter_ids().collect();
        let mut voters = BTreeMap::new();
        let mut learners = BTreeMap::new();
        for (id, peer) in membership.nodes() {
            if voter_ids.contains(id) {
                voters.insert(*id, peer.addr.clone());
            } else {
                learners.insert(*id, peer.addr.clone());
            }
        }
        NodeMetrics {
            id: m.id,
            leader: m.current_leader,
            is_leader: m.state == ServerState::Leader,
            voters,
            learners,
            last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot: m.snapshot.map(|l| l.index),
            term: m.current_term,
        }
    }

    /// Builds a snapshot now (and purges the log before it).
    pub async fn trigger_snapshot(&self) -> Result<(), RaftNodeError> {
        self.inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| self.cluster_err("snapshot", e))
    }

    /// A client of the key space on this node: writes go to the leader (forwarded if this
    /// node does not lead), reads are linearizable, watches follow this node's state.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::new(RaftStore::new(self.inner.clone()))
    }

    /// Stops Raft, the listener and the node's tasks, and closes the database.
    ///
    /// The database file stays open until every store of the node is dropped too (they
    /// answer `Closed` meanwhile): drop them before starting the node again on its
    /// directory.
    pub async fn shutdown(&self) -> Result<(), RaftNodeError> {
        self.inner
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| self.cluster_err("shutdown", e))?;
        // Watches end with the node.
        *self.inner.shared.hub() = Default::default();
        Ok(())
    }

    fn cluster_err(&self, op: &'static str, e: impl std::fmt::Display) -> RaftNodeError {
        RaftNodeError::Cluster {
            id: self.inner.id,
            op,
            reason: e.to_string(),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Opens the database, waiting a little for a previous run in this process to let go.
async fn open_db(dir: &std::path::Path) -> Result<Arc<redb::Database>, String> {
    let mut last = String::new();
    for _ in 0..50 {
        let d = dir.to_path_buf();
        match tokio::task::spawn_blocking(move || db::open(&d))
            .await
            .map_err(|e| e.to_string())?
        {
            Ok(db) => return Ok(db),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last)
}
