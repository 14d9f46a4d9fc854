//! The in-process engine behind the `memory://` and `redb://` backends.
//!
//! One writer thread owns every change: it takes requests from a channel, applies all that are
//! queued in one batch (one durable commit for the whole batch: group commit), then answers each
//! caller and feeds the watchers. Watch registration goes through the same thread, so a watch
//! reads the current value and subscribes to later changes with no gap between. Reads go
//! straight to the backing (a `RwLock`ed map, or a redb read transaction).

mod backing;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use backing::{Backing, MemoryBacking, RedbBacking};
use writer::{Request, Watcher};

use crate::error::{KvError, Result};
use crate::key;
use crate::lock::Locker;
use crate::store::{check_txn, check_value, Store};
use crate::types::{KvPair, LockOptions, PutOptions, TreeWatchStream, Txn, WatchStream};

/// Largest value the in-process backends accept by default.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 << 20;

/// A store whose state lives in this process (in memory or in a redb file).
#[derive(Clone)]
pub struct LocalStore {
    shared: Arc<Shared>,
}

struct Shared {
    url: String,
    backend: &'static str,
    max_value: usize,
    /// Taken out on close so that the file is released even while handles remain.
    backing: std::sync::RwLock<Option<Arc<dyn Backing>>>,
    requests: std::sync::mpsc::Sender<Request>,
    closed: AtomicBool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let _ = self.requests.send(Request::Shutdown);
    }
}

impl LocalStore {
    /// A fresh in-memory store.
    pub fn memory() -> Self {
        Self::start(
            "memory://".into(),
            "memory",
            Arc::new(MemoryBacking::default()),
        )
    }

    /// Opens (creating if needed) a redb file. The file is locked: one process at a time.
    pub fn redb(path: &std::path::Path) -> Result<Self> {
        let url = format!("redb://{}", path.display());
        let backing = RedbBacking::open(path, &url)?;
        Ok(Self::start(url, "redb", Arc::new(backing)))
    }

    fn start(url: String, backend: &'static str, backing: Arc<dyn Backing>) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let writer_backing = backing.clone();
        let writer_url = url.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("plexus-kv-{backend}"))
            .spawn(move || writer::run(writer_backing, writer_url, rx));
        if let Err(e) = spawned {
            // Without a writer every write reports the store closed; say why once.
            tracing::error!(error = %e, "cannot start the store writer thread");
        }
        Self {
            shared: Arc::new(Shared {
                url,
                backend,
                max_value: DEFAULT_MAX_VALUE_BYTES,
                backing: std::sync::RwLock::new(Some(backing)),
                requests: tx,
                closed: AtomicBool::new(false),
            }),
        }
    }

    fn closed_err(&self) -> KvError {
        KvError::Closed {
            url: self.shared.url.clone(),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(self.closed_err());
        }
        Ok(())
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        self.check_open()?;
        let (tx, rx) = oneshot::channel();
        self.shared
            .requests
            .send(make(tx))
            .map_err(|_| self.closed_err())?;
        rx.await.map_err(|_| self.closed_err())?
    }

    fn backing(&self) -> Result<Arc<dyn Backing>> {
        self.shared
            .backing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| self.closed_err())
    }

    fn read(&self, key: &str) -> Result<Option<KvPair>> {
        let now = now_ms();
        Ok(self
            .backing()?
            .get(key)?
            .filter(|e| !e.expired(now))
            .map(|e| e.into_pair(key.to_string())))
    }

    fn check_value(&self, key: &str, value: &[u8]) -> Result<()> {
        check_value(key, value, self.shared.max_value, self.shared.backend)
    }
}

/// Milliseconds since the Unix epoch: TTL deadlines are wall-clock so they survive a restart.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn deadline(ttl: Option<Duration>) -> u64 {
    ttl.map(|t| now_ms().saturating_add(t.as_millis().max(1) as u64))
        .unwrap_or(0)
}

#[async_trait]
impl Store for LocalStore {
    fn url(&self) -> &str {
        &self.shared.url
    }

    fn max_value_bytes(&self) -> usize {
        self.shared.max_value
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> Result<KvPair> {
        let key = key::leaf(key)?.to_string();
        self.check_value(&key, value)?;
        let value = value.to_vec();
        let expires_ms = deadline(options.ttl);
        self.call(|reply| Request::Put {
            key,
            value,
            expires_ms,
            previous: None,
            create_only: false,
            reply,
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<KvPair> {
        self.check_open()?;
        let key = key::leaf(key)?;
        self.read(key)?.ok_or_else(|| KvError::KeyNotFound {
            key: key.to_string(),
        })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = key::leaf(key)?.to_string();
        self.call(|reply| Request::Delete {
            key,
            previous: None,
            reply,
        })
        .await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        self.check_open()?;
        Ok(self.read(key::leaf(key)?)?.is_some())
    }

    async fn list(&self, dir: &str) -> Result<Vec<KvPair>> {
        self.check_open()?;
        let prefix = key::dir_prefix(key::directory(dir)?);
        let now = now_ms();
        Ok(self
            .backing()?
            .range(&prefix)?
            .into_iter()
            .filter(|(_, e)| !e.expired(now))
            .map(|(k, e)| e.into_pair(k))
            .collect())
    }

    async fn delete_tree(&self, dir: &str) -> Result<()> {
        let prefix = key::dir_prefix(key::directory_nonroot(dir)?);
        self.call(|reply| Request::DeleteTree { prefix, reply })
            .await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair> {
        let key = key::leaf(key)?.to_string();
        self.check_value(&key, value)?;
        let value = value.to_vec();
        let expires_ms = deadline(options.ttl);
        let previous = previous.map(|p| p.last_index);
        self.call(|reply| Request::Put {
            key,
            value,
            expires_ms,
            create_only: previous.is_none(),
            previous,
            reply,
        })
        .await
    }

    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()> {
        let key = key::leaf(key)?.to_string();
        let previous = Some(previous.last_index);
        self.call(|reply| Request::Delete {
            key,
            previous,
            reply,
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<KvPair>> {
        let txn = check_txn(txn, self.shared.max_value, self.shared.backend)?;
        self.call(|reply| Request::Txn { txn, reply }).await
    }

    async fn sync(&self) -> Result<()> {
        self.call(|reply| Request::Sync { reply }).await
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        let key = key::leaf(key)?.to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        self.call(|reply| Request::Watch {
            watcher: Watcher::Key { key, tx },
            reply,
        })
        .await?;
        Ok(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ))
    }

    async fn watch_tree(&self, dir: &str) -> Result<TreeWatchStream> {
        let prefix = key::dir_prefix(key::directory(dir)?);
        let (tx, rx) = mpsc::unbounded_channel();
        self.call(|reply| Request::Watch {
            watcher: Watcher::Tree { prefix, tx },
            reply,
        })
        .await?;
        Ok(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        ))
    }

    fn new_lock(&self, key: &str, options: LockOptions) -> Result<Box<dyn Locker>> {
        let key = key::leaf(key)?.to_string();
        self.check_value(&key, &options.value)?;
        Ok(Box::new(crate::kvlock::KvLocker::new(
            Arc::new(self.clone()),
            key,
            options,
        )))
    }

    async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (tx, rx) = oneshot::channel();
        if self
            .shared
            .requests
            .send(Request::Close { reply: tx })
            .is_ok()
        {
            // The writer answers once it has let go of the backing.
            let _ = rx.await;
        }
        self.shared
            .backing
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        Ok(())
    }
}
