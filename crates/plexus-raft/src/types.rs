//! The Raft type configuration and the commands the state machine applies.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// A member's node data, kept in the Raft membership: where it listens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// The address the member's transport listens on (`host:port`).
    pub addr: String,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.addr)
    }
}

openraft::declare_raft_types!(
    /// The Raft type configuration of the store.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = Peer,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// One comparison of a transaction (plexus-kv's `Compare`, serializable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmp {
    /// The key exists at this modification index.
    Index(String, u64),
    /// The key is absent.
    Absent(String),
}

/// One write of a transaction (plexus-kv's `TxnOp`, serializable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Set the key.
    Put(String, #[serde(with = "serde_bytes")] Vec<u8>),
    /// Delete the key (absent is fine).
    Delete(String),
}

/// A Store operation as a Raft command. Applying it reads no clock: expiry deadlines are
/// absolute times stamped by the leader before it proposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Write a key; `ttl_ms` is turned into `expires_at_ms` by the leader.
    Put {
        /// The key.
        key: String,
        /// The value.
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        /// Time to live, as asked by the client.
        ttl_ms: Option<u64>,
        /// Absolute deadline (milliseconds since the epoch, the leader's clock).
        expires_at_ms: Option<u64>,
        /// Compare-and-swap: `Some(None)` create only, `Some(Some(i))` only at index `i`.
        previous: Option<Option<u64>>,
    },
    /// Delete a key; with `previous`, only at that index.
    Delete {
        /// The key.
        key: String,
        /// The index the key must be at.
        previous: Option<u64>,
    },
    /// Delete every key under `prefix` (which ends in `/`).
    DeleteTree {
        /// The prefix.
        prefix: String,
    },
    /// A transaction: all comparisons hold, then all operations apply.
    Txn {
        /// Comparisons.
        compares: Vec<Cmp>,
        /// Writes.
        ops: Vec<Op>,
    },
    /// Proposed by the leader for a key past its deadline; applies only if the key is still
    /// at `index` (not rewritten meanwhile).
    Expire {
        /// The key.
        key: String,
        /// Its modification index when found expired.
        index: u64,
    },
}

impl Command {
    /// Turns a TTL into an absolute deadline from `now_ms` (the leader's clock).
    pub(crate) fn stamp(&mut self, now_ms: u64) {
        if let Command::Put {
            ttl_ms: Some(ttl),
            expires_at_ms,
            ..
        } = self
        {
            *expires_at_ms = Some(now_ms.saturating_add(*ttl));
        }
    }
}

/// A key as the state machine answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The key.
    pub key: String,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// The revision that last modified it.
    pub index: u64,
}

impl From<Pair> for plexus_kv::KvPair {
    fn from(p: Pair) -> Self {
        plexus_kv::KvPair {
            key: p.key,
            value: p.value,
            last_index: p.index,
        }
    }
}

/// Why a command was applied as a no-op (the same on every member: it is decided by the log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The key is absent.
    NotFound(String),
    /// A create-only write found the key.
    Exists(String),
    /// A compare-and-swap found another index.
    Modified {
        /// The key.
        key: String,
        /// The index expected.
        expected: u64,
        /// The index found (0 when gone).
        found: u64,
    },
    /// A transaction's comparison failed.
    Conflict {
        /// The key.
        key: String,
        /// What was expected.
        reason: String,
    },
}

impl Refusal {
    pub(crate) fn into_kv(self) -> plexus_kv::KvError {
        use plexus_kv::KvError;
        match self {
            Refusal::NotFound(key) => KvError::KeyNotFound { key },
            Refusal::Exists(key) => KvError::KeyExists { key },
            Refusal::Modified {
                key,
                expected,
                found,
            } => KvError::KeyModified {
                key,
                expected,
                found,
            },
            Refusal::Conflict { key, reason } => KvError::TxnConflict { key, reason },
        }
    }
}

/// The result of applying one log entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Nothing to say (blank and membership entries, deletes).
    #[default]
    Done,
    /// The pairs written, in order.
    Written(Vec<Pair>),
    /// Refused, nothing changed.
    Refused(Refusal),
}
