//! Plain data exchanged with a [`Store`](crate::Store).

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;

use crate::error::Result;

/// A key, its value and the index at which it was last modified.
///
/// `last_index` is the backend's modification index (the global revision for redb, memory and
/// etcd; the zxid of the znode's last write, `mzxid`, for ZooKeeper). It only serves to pass
/// back to [`Store::atomic_put`](crate::Store::atomic_put) and friends, and grows with every
/// change of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPair {
    /// The key in canonical form (no leading `/`).
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The index of the key's last modification.
    pub last_index: u64,
}

/// Options of a write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Delete the key this long after the write, unless it is written again.
    pub ttl: Option<Duration>,
}

impl PutOptions {
    /// Options with a time to live.
    pub fn with_ttl(ttl: Duration) -> Self {
        Self { ttl: Some(ttl) }
    }
}

/// Options of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOptions {
    /// The value stored at the lock's key while it is held (who holds it, for diagnostics).
    pub value: Vec<u8>,
    /// How long the lock survives its holder's death (session expiry). Renewal is automatic
    /// while the holder lives.
    pub ttl: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self {
            value: Vec::new(),
            ttl: DEFAULT_LOCK_TTL,
        }
    }
}

/// The lock TTL used when none is given (libkv's default).
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(20);

/// One comparison of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key exists and was last modified at this index.
    Index {
        /// The key.
        key: String,
        /// Its expected `last_index`.
        index: u64,
    },
    /// The key does not exist.
    Absent {
        /// The key.
        key: String,
    },
}

impl Compare {
    /// The key this comparison looks at.
    pub fn key(&self) -> &str {
        match self {
            Compare::Index { key, .. } | Compare::Absent { key } => key,
        }
    }
}

/// One write of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Set the key to this value.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete the key; deleting a missing key is not an error inside a transaction.
    Delete {
        /// The key.
        key: String,
    },
}

impl TxnOp {
    /// The key this operation writes.
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } => key,
        }
    }
}

/// A multi-key transaction: if every comparison holds, every operation is applied, all at once;
/// otherwise nothing is and [`KvError::TxnConflict`](crate::KvError::TxnConflict) names the key.
///
/// ```
/// use plexus_kv::Txn;
/// let txn = Txn::new()
///     .compare_absent("net/a")
///     .put("net/a", b"{}".to_vec())
///     .delete("pending/a");
/// assert_eq!(txn.ops.len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Comparisons, all of which must hold.
    pub compares: Vec<Compare>,
    /// Operations applied when they do. Each key appears at most once.
    pub ops: Vec<TxnOp>,
    /// Relaxed durability: the transaction is atomic and seen by every later read at once,
    /// but a crash may lose it unless a later durable write has committed (which makes it,
    /// and everything before it, durable too, in order). For a write whose loss a later
    /// durable write makes harmless (an address taken for an endpoint recorded right after),
    /// it saves one disk flush. Only the embedded store honours it; etcd and ZooKeeper
    /// commit every transaction durably.
    pub relaxed: bool,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }
    /// Makes the transaction [relaxed](Txn::relaxed).
    pub fn relaxed(mut self) -> Self {
        self.relaxed = true;
        self
    }
    /// Requires `key` to be at `index`.
    pub fn compare_index(mut self, key: impl Into<String>, index: u64) -> Self {
        self.compares.push(Compare::Index {
            key: key.into(),
            index,
        });
        self
    }
    /// Requires `key` to be absent.
    pub fn compare_absent(mut self, key: impl Into<String>) -> Self {
        self.compares.push(Compare::Absent { key: key.into() });
        self
    }
    /// Writes `key`.
    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(TxnOp::Put {
            key: key.into(),
            value,
        });
        self
    }
    /// Deletes `key`.
    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(TxnOp::Delete { key: key.into() });
        self
    }
}

/// The most operations (comparisons plus writes) one transaction may hold: etcd's default
/// `--max-txn-ops` is 128, and the same limit applies everywhere so code never depends on a
/// backend.
pub const MAX_TXN_OPS: usize = 128;

/// A stream of a key's values: the current value first (`None` if absent), then every change.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Option<KvPair>>> + Send>>;

/// A stream of a directory's contents: the current list first, then the whole list after every
/// change. Lists are sorted by key.
pub type TreeWatchStream = Pin<Box<dyn Stream<Item = Result<Vec<KvPair>>> + Send>>;
