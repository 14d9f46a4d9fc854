//! A store whose every operation is reported to an observer (its latency and its error, if
//! any), for metrics, without this crate knowing how they are kept.
//!
//! Semantics are the inner store's, unchanged: the view only times each call. A watch is
//! timed until its stream is open; errors its stream yields later are reported one by one
//! with [`StoreObserver::stream_error`]. Locks and `close` pass through untimed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;

use crate::error::{KvError, Result};
use crate::lock::Locker;
use crate::store::Store;
use crate::types::{KvPair, LockOptions, PutOptions, TreeWatchStream, Txn, WatchStream};

/// A [`Store`] operation, as an observer is told of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StoreOp {
    /// [`Store::put`].
    Put,
    /// [`Store::get`].
    Get,
    /// [`Store::delete`].
    Delete,
    /// [`Store::exists`].
    Exists,
    /// [`Store::list`].
    List,
    /// [`Store::delete_tree`].
    DeleteTree,
    /// [`Store::atomic_put`].
    AtomicPut,
    /// [`Store::atomic_delete`].
    AtomicDelete,
    /// [`Store::txn`].
    Txn,
    /// [`Store::sync`].
    Sync,
    /// [`Store::watch`].
    Watch,
    /// [`Store::watch_tree`].
    WatchTree,
}

impl StoreOp {
    /// Every operation, in declaration order.
    pub const ALL: [StoreOp; 12] = [
        StoreOp::Put,
        StoreOp::Get,
        StoreOp::Delete,
        StoreOp::Exists,
        StoreOp::List,
        StoreOp::DeleteTree,
        StoreOp::AtomicPut,
        StoreOp::AtomicDelete,
        StoreOp::Txn,
        StoreOp::Sync,
        StoreOp::Watch,
        StoreOp::WatchTree,
    ];

    /// Its name in snake case (`atomic_put`), as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::Put => "put",
            StoreOp::Get => "get",
            StoreOp::Delete => "delete",
            StoreOp::Exists => "exists",
            StoreOp::List => "list",
            StoreOp::DeleteTree => "delete_tree",
            StoreOp::AtomicPut => "atomic_put",
            StoreOp::AtomicDelete => "atomic_delete",
            StoreOp::Txn => "txn",
            StoreOp::Sync => "sync",
            StoreOp::Watch => "watch",
            StoreOp::WatchTree => "watch_tree",
        }
    }
}

/// Told of every operation of an [`observed`] store. Called on the caller's task right after
/// the operation: keep it quick and never block.
pub trait StoreObserver: Send + Sync + 'static {
    /// `op` took `elapsed` and failed with `error` (`None`: it succeeded).
    fn observe(&self, op: StoreOp, elapsed: Duration, error: Option<&KvError>);

    /// An open watch's stream (`op` is [`StoreOp::Watch`] or [`StoreOp::WatchTree`]) yielded
    /// an error (the store is away; the watch resumes when it is back).
    fn stream_error(&self, op: StoreOp, error: &KvError) {
        let _ = (op, error);
    }
}

/// `inner`, with every operation reported to `observer`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> plexus_kv::Result<()> {
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use plexus_kv::{KvError, Store, StoreObserver, StoreOp};
///
/// #[derive(Default)]
/// struct Seen(Mutex<Vec<(StoreOp, Option<&'static str>)>>);
/// impl StoreObserver for Seen {
///     fn observe(&self, op: StoreOp, _: Duration, error: Option<&KvError>) {
///         if let Ok(mut seen) = self.0.lock() {
///             seen.push((op, error.map(KvError::kind)));
///         }
///     }
/// }
///
/// let seen = Arc::new(Seen::default());
/// let store = plexus_kv::observed(plexus_kv::open("memory://", Default::default()).await?, seen.clone());
/// store.put("a", b"1", Default::default()).await?;
/// assert!(store.get("b").await.is_err());
/// let seen = seen.0.lock().map(|s| s.clone()).unwrap_or_default();
/// assert_eq!(seen, [(StoreOp::Put, None), (StoreOp::Get, Some("not_found"))]);
/// # Ok(()) }
/// ```
pub fn observed(inner: Arc<dyn Store>, observer: Arc<dyn StoreObserver>) -> Arc<dyn Store> {
    Arc::new(Observed { inner, observer })
}

/// The store [`observed`] returns.
pub struct Observed {
    inner: Arc<dyn Store>,
    observer: Arc<dyn StoreObserver>,
}

impl Observed {
    fn report<T>(&self, op: StoreOp, began: Instant, result: Result<T>) -> Result<T> {
        self.observer
            .observe(op, began.elapsed(), result.as_ref().err());
        result
    }
}

#[async_trait]
impl Store for Observed {
    fn url(&self) -> &str {
        self.inner.url()
    }

    fn max_value_bytes(&self) -> usize {
        self.inner.max_value_bytes()
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> Result<KvPair> {
        let began = Instant::now();
        let result = self.inner.put(key, value, options).await;
        self.report(StoreOp::Put, began, result)
    }

    async fn get(&self, key: &str) -> Result<KvPair> {
        let began = Instant::now();
        let result = self.inner.get(key).await;
        self.report(StoreOp::Get, began, result)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let began = Instant::now();
        let result = self.inner.delete(key).await;
        self.report(StoreOp::Delete, began, result)
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let began = Instant::now();
        let result = self.inner.exists(key).await;
        self.report(StoreOp::Exists, began, result)
    }

    async fn list(&self, dir: &str) -> Result<Vec<KvPair>> {
        let began = Instant::now();
        let result = self.inner.list(dir).await;
        self.report(StoreOp::List, began, result)
    }

    async fn delete_tree(&self, dir: &str) -> Result<()> {
        let began = Instant::now();
        let result = self.inner.delete_tree(dir).await;
        self.report(StoreOp::DeleteTree, began, result)
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair> {
        let began = Instant::now();
        let result = self.inner.atomic_put(key, value, previous, options).await;
        self.report(StoreOp::AtomicPut, began, result)
    }

    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()> {
        let began = Instant::now();
        let result = self.inner.atomic_delete(key, previous).await;
        self.report(StoreOp::AtomicDelete, began, result)
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<KvPair>> {
        let began = Instant::now();
        let result = self.inner.txn(txn).await;
        self.report(StoreOp::Txn, began, result)
    }

    async fn sync(&self) -> Result<()> {
        let began = Instant::now();
        let result = self.inner.sync().await;
        self.report(StoreOp::Sync, began, result)
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        let began = Instant::now();
        let result = self.inner.watch(key).await;
        let stream = self.report(StoreOp::Watch, began, result)?;
        let observer = self.observer.clone();
        Ok(Box::pin(stream.inspect(move |item| {
            if let Err(e) = item {
                observer.stream_error(StoreOp::Watch, e);
            }
        })))
    }

    async fn watch_tree(&self, dir: &str) -> Result<TreeWatchStream> {
        let began = Instant::now();
        let result = self.inner.watch_tree(dir).await;
        let stream = self.report(StoreOp::WatchTree, began, result)?;
        let observer = self.observer.clone();
        Ok(Box::pin(stream.inspect(move |item| {
            if let Err(e) = item {
                observer.stream_error(StoreOp::WatchTree, e);
            }
        })))
    }

    fn new_lock(&self, key: &str, options: LockOptions) -> Result<Box<dyn Locker>> {
        self.inner.new_lock(key, options)
    }

    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::LocalStore;

    #[derive(Default)]
    struct Seen {
        ops: Mutex<Vec<(StoreOp, Option<&'static str>)>>,
    }

    impl StoreObserver for Seen {
        fn observe(&self, op: StoreOp, _elapsed: Duration, error: Option<&KvError>) {
            if let Ok(mut ops) = self.ops.lock() {
                ops.push((op, error.map(KvError::kind)));
            }
        }
    }

    #[tokio::test]
    async fn every_operation_is_reported_with_its_error_kind() -> Result<()> {
        let seen = Arc::new(Seen::default());
        let store = observed(Arc::new(LocalStore::memory()), seen.clone());
        let a = store.put("d/a", b"1", PutOptions::default()).await?;
        store.get("d/a").await?;
        assert!(store.get("d/b").await.is_err());
        assert!(store.exists("d/a").await?);
        assert_eq!(store.list("d").await?.len(), 1);
        assert!(store
            .atomic_put("d/a", b"2", None, PutOptions::default())
            .await
            .is_err());
        let a = store
            .atomic_put("d/a", b"2", Some(&a), PutOptions::default())
            .await?;
        store.atomic_delete("d/a", &a).await?;
        store.txn(Txn::new().put("d/c", b"3".to_vec())).await?;
        assert!(store.txn(Txn::new().compare_absent("d/c")).await.is_err());
        let watch = store.watch("d/c").await?;
        let tree = store.watch_tree("d").await?;
        drop((watch, tree));
        store.delete("d/c").await?;
        store.delete_tree("d").await?;
        assert!(store.delete("").await.is_err());
        let ops = seen.ops.lock().map(|o| o.clone()).unwrap_or_default();
        assert_eq!(
            ops,
            [
                (StoreOp::Put, None),
                (StoreOp::Get, None),
                (StoreOp::Get, Some("not_found")),
                (StoreOp::Exists, None),
                (StoreOp::List, None),
                (StoreOp::AtomicPut, Some("exists")),
                (StoreOp::AtomicPut, None),
                (StoreOp::AtomicDelete, None),
                (StoreOp::Txn, None),
                (StoreOp::Txn, Some("conflict")),
                (StoreOp::Watch, None),
                (StoreOp::WatchTree, None),
                (StoreOp::Delete, None),
                (StoreOp::DeleteTree, None),
                (StoreOp::Delete, Some("invalid_key")),
            ]
        );
        let names: std::collections::BTreeSet<_> =
            StoreOp::ALL.iter().map(|op| op.as_str()).collect();
        assert_eq!(names.len(), StoreOp::ALL.len());
        Ok(())
    }
}
