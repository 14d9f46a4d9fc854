//! The `Store` trait: libkv's interface plus a multi-key transaction.

use async_trait::async_trait;

use crate::error::{KvError, Result};
use crate::lock::Locker;
use crate::types::{
    KvPair, LockOptions, PutOptions, TreeWatchStream, Txn, TxnOp, WatchStream, MAX_TXN_OPS,
};

/// A key-value store, as libkv defines it. Every backend gives the same semantics (see the
/// crate docs); code written against it never needs to know which backend it has.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The store's URL with credentials removed, for messages.
    fn url(&self) -> &str;

    /// The largest value this store accepts, in bytes.
    fn max_value_bytes(&self) -> usize;

    /// Writes `value` at `key`, creating parents as needed; returns the stored pair.
    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> Result<KvPair>;

    /// Reads `key`; [`KvError::KeyNotFound`] if it is absent.
    async fn get(&self, key: &str) -> Result<KvPair>;

    /// Deletes `key`; [`KvError::KeyNotFound`] if it is absent.
    async fn delete(&self, key: &str) -> Result<()>;

    /// Whether `key` exists.
    async fn exists(&self, key: &str) -> Result<bool>;

    /// Every key strictly under `dir` (at any depth), sorted by key. A directory with nothing
    /// under it gives an empty list. `a` never lists `ab/x`.
    async fn list(&self, dir: &str) -> Result<Vec<KvPair>>;

    /// Deletes every key strictly under `dir`. The root cannot be deleted this way.
    async fn delete_tree(&self, dir: &str) -> Result<()>;

    /// Compare-and-swap: with `previous = None`, creates `key` and fails with
    /// [`KvError::KeyExists`] if it exists; otherwise writes only if the key is still at
    /// `previous.last_index` ([`KvError::KeyModified`] if not, [`KvError::KeyNotFound`] if gone).
    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair>;

    /// Deletes `key` only if it is still at `previous.last_index`.
    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()>;

    /// Applies a multi-key transaction all or nothing; returns the pairs written by its `Put`s,
    /// in order.
    async fn txn(&self, txn: Txn) -> Result<Vec<KvPair>>;

    /// Makes every transaction committed so far durable, [relaxed](Txn::relaxed) ones
    /// included. A caller can so commit relaxed, act on the change (it is seen at once) and
    /// flush to disk at the same time, answering only once this returns. Backends that
    /// commit every write durably (etcd, ZooKeeper) return at once.
    async fn sync(&self) -> Result<()>;

    /// Watches one key: the current value first (`None` if absent), then every change,
    /// deletes included, in index order, until the stream is dropped.
    async fn watch(&self, key: &str) -> Result<WatchStream>;

    /// Watches a directory: the current list first, then the whole list after every change.
    async fn watch_tree(&self, dir: &str) -> Result<TreeWatchStream>;

    /// Makes a lock on `key`; nothing is taken until [`Locker::lock`].
    fn new_lock(&self, key: &str, options: LockOptions) -> Result<Box<dyn Locker>>;

    /// Closes the store: releases held locks, ends watches, closes connections. Further calls
    /// fail with [`KvError::Closed`].
    async fn close(&self) -> Result<()>;
}

/// Checks a value against a backend's limit.
pub fn check_value(key: &str, value: &[u8], limit: usize, backend: &'static str) -> Result<()> {
    if value.len() > limit {
        return Err(KvError::ValueTooLarge {
            key: key.to_string(),
            size: value.len(),
            limit,
            backend,
        });
    }
    Ok(())
}

/// Checks a transaction and returns it with canonical keys: every key valid, values within
/// `limit`, no key written twice, at most [`MAX_TXN_OPS`] entries.
pub fn check_txn(txn: Txn, limit: usize, backend: &'static str) -> Result<Txn> {
    use crate::types::Compare;
    if txn.compares.len() + txn.ops.len() > MAX_TXN_OPS {
        return Err(KvError::InvalidTxn(format!(
            "{} comparisons and operations, over the limit of {MAX_TXN_OPS}",
            txn.compares.len() + txn.ops.len()
        )));
    }
    let mut compares = Vec::with_capacity(txn.compares.len());
    for c in txn.compares {
        compares.push(match c {
            Compare::Index { key, index } => Compare::Index {
                key: crate::key::leaf(&key)?.to_string(),
                index,
            },
            Compare::Absent { key } => Compare::Absent {
                key: crate::key::leaf(&key)?.to_string(),
            },
        });
    }
    let mut ops = Vec::with_capacity(txn.ops.len());
    let mut seen = std::collections::HashSet::new();
    for op in txn.ops {
        let op = match op {
            TxnOp::Put { key, value } => {
                let key = crate::key::leaf(&key)?.to_string();
                check_value(&key, &value, limit, backend)?;
                TxnOp::Put { key, value }
            }
            TxnOp::Delete { key } => TxnOp::Delete {
                key: crate::key::leaf(&key)?.to_string(),
            },
        };
        if !seen.insert(op.key().to_string()) {
            return Err(KvError::InvalidTxn(format!(
                "key {:?} is written twice",
                op.key()
            )));
        }
        ops.push(op);
    }
    Ok(Txn {
        compares,
        ops,
        relaxed: txn.relaxed,
    })
}
