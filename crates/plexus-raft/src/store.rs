//! `RaftStore`: plexus-kv's `Store` on a member of the cluster.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use plexus_kv::{
    check_txn, check_value, key, Compare, KvError, KvLocker, KvPair, LockOptions, Locker,
    PutOptions, Result, Store, TreeWatchStream, Txn, TxnOp, WatchStream,
};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::member::Inner;
use crate::types::{Applied, Cmp, Command, Op, Refusal};

/// The backend name in plexus-kv errors.
const BACKEND: &str = "raft";

/// The largest encoded command proposed (a transaction of many values): well under the
/// transport's frame limit, so one entry always fits in one append request.
pub const MAX_ENTRY_BYTES: usize = 4 << 20;

/// A client of the key space on one member. Writes go through the leader, reads wait for a
/// read index, watches follow this member's applied changes. Clones share the client (its
/// watches and its closed state).
#[derive(Clone)]
pub struct RaftStore {
    inner: Arc<Inner>,
    client: u64,
    closed: Arc<AtomicBool>,
}

impl RaftStore {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        let client = inner.next_client.fetch_add(1, Ordering::Relaxed);
        Self {
            inner,
            client,
            closed: Arc::default(),
        }
    }

    fn open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) || self.inner.stopped.load(Ordering::Acquire) {
            return Err(KvError::Closed {
                url: self.inner.url.clone(),
            });
        }
        Ok(())
    }

    fn backend(&self, message: String) -> KvError {
        KvError::Backend {
            url: self.inner.url.clone(),
            message,
        }
    }

    async fn write(&self, cmd: Command) -> Result<Applied> {
        self.open()?;
        let size = postcard::experimental::serialized_size(&cmd)
            .map_err(|e| self.backend(e.to_string()))?;
        if size > MAX_ENTRY_BYTES {
            return Err(KvError::InvalidTxn(format!(
                "{size} bytes in one operation, over the raft entry limit of {MAX_ENTRY_BYTES}"
            )));
        }
        if let Some(refusal) = self.doomed(&cmd) {
            return Err(refusal.into_kv());
        }
        match self.inner.write(cmd).await? {
            Applied::Refused(r) => Err(r.into_kv()),
            a => Ok(a),
        }
    }

    /// A compare-and-swap bound to fail, refused without a Raft round. Any member's
    /// applied state is a committed state, and a key's index only grows (a key deleted and
    /// written again gets a new, larger one): once it is past the expected index, the
    /// comparison can never hold again. Anything less certain goes to the log.
    fn doomed(&self, cmd: &Command) -> Option<Refusal> {
        let index_now = |key: &str| {
            self.inner
                .shared
                .get(key)
                .ok()
                .flatten()
                .map(|p| p.last_index)
        };
        match cmd {
            Command::Put {
                key,
                previous: Some(Some(expected)),
                ..
            }
            | Command::Delete {
                key,
                previous: Some(expected),
            } => match index_now(key) {
                Some(found) if found > *expected => Some(Refusal::Modified {
                    key: key.clone(),
                    expected: *expected,
                    found,
                }),
                _ => None,
            },
            Command::Txn { compares, .. } => compares.iter().find_map(|c| match c {
                Cmp::Index(key, index) => match index_now(key) {
                    Some(found) if found > *index => Some(Refusal::Conflict {
                        key: key.clone(),
                        reason: format!("expected index {index}, found {found}"),
                    }),
                    _ => None,
                },
                Cmp::Absent(_) => None,
            }),
            _ => None,
        }
    }

    async fn written_one(&self, cmd: Command, key: &str) -> Result<KvPair> {
        match self.write(cmd).await? {
            Applied::Written(mut pairs) if pairs.len() == 1 => Ok(pairs.remove(0).into()),
            other => Err(self.backend(format!("unexpected answer {other:?} for {key:?}"))),
        }
    }

    async fn read_ready(&self) -> Result<()> {
        self.open()?;
        self.inner.read_barrier().await
    }
}

impl RaftStore {
    /// A watch on the local state machine, once it is up to date (a read barrier): `register`
    /// reads the current value and registers the sender under the state machine's watch
    /// lock, so the stream is the current value, then every change after it, none missed.
    async fn watch_from<T: Send + 'static>(
        &self,
        register: impl FnOnce(
                &crate::sm::Shared,
                u64,
                tokio::sync::mpsc::UnboundedSender<Result<T>>,
            ) -> std::result::Result<T, String>
            + Send
            + 'static,
    ) -> Result<std::pin::Pin<Box<dyn futures::Stream<Item = Result<T>> + Send>>> {
        self.read_ready().await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let shared = self.inner.shared.clone();
        let client = self.client;
        let current = tokio::task::spawn_blocking(move || register(&shared, client, tx))
            .await
            .map_err(|e| self.backend(e.to_string()))?
            .map_err(|e| self.backend(e))?;
        let first = futures::stream::once(async move { Ok(current) });
        Ok(Box::pin(first.chain(UnboundedReceiverStream::new(rx))))
    }
}

fn ttl_ms(options: PutOptions) -> Option<u64> {
    options
        .ttl
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

#[async_trait]
impl Store for RaftStore {
    fn url(&self) -> &str {
        &self.inner.url
    }

    fn max_value_bytes(&self) -> usize {
        self.inner.max_value_bytes
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> Result<KvPair> {
        let key = key::leaf(key)?;
        check_value(key, value, self.inner.max_value_bytes, BACKEND)?;
        let cmd = Command::Put {
            key: key.to_string(),
            value: value.to_vec(),
            ttl_ms: ttl_ms(options),
            expires_at_ms: None,
            previous: None,
        };
        self.written_one(cmd, key).await
    }

    async fn get(&self, key: &str) -> Result<KvPair> {
        let key = key::leaf(key)?;
        self.read_ready().await?;
        self.inner
            .shared
            .get(key)
            .map_err(|e| self.backend(e))?
            .ok_or_else(|| KvError::KeyNotFound {
                key: key.to_string(),
            })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = key::leaf(key)?;
        self.write(Command::Delete {
            key: key.to_string(),
            previous: None,
        })
        .await
        .map(|_| ())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        match self.get(key).await {
            Ok(_) => Ok(true),
            Err(KvError::KeyNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, dir: &str) -> Result<Vec<KvPair>> {
        let prefix = key::dir_prefix(key::directory(dir)?);
        self.read_ready().await?;
        self.inner.shared.list(&prefix).map_err(|e| self.backend(e))
    }

    async fn delete_tree(&self, dir: &str) -> Result<()> {
        let prefix = key::dir_prefix(key::directory_nonroot(dir)?);
        self.write(Command::DeleteTree { prefix }).await.map(|_| ())
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair> {
        let key = key::leaf(key)?;
        check_value(key, value, self.inner.max_value_bytes, BACKEND)?;
        let cmd = Command::Put {
            key: key.to_string(),
            value: value.to_vec(),
            ttl_ms: ttl_ms(options),
            expires_at_ms: None,
            previous: Some(previous.map(|p| p.last_index)),
        };
        self.written_one(cmd, key).await
    }

    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()> {
        let key = key::leaf(key)?;
        self.write(Command::Delete {
            key: key.to_string(),
            previous: Some(previous.last_index),
        })
        .await
        .map(|_| ())
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<KvPair>> {
        // Raft commits every entry durably: a relaxed transaction is simply a transaction.
        let txn = check_txn(txn, self.inner.max_value_bytes, BACKEND)?;
        let compares = txn
            .compares
            .into_iter()
            .map(|c| match c {
                Compare::Index { key, index } => Cmp::Index(key, index),
                Compare::Absent { key } => Cmp::Absent(key),
            })
            .collect();
        let ops = txn
            .ops
            .into_iter()
            .map(|o| match o {
                TxnOp::Put { key, value } => Op::Put(key, value),
                TxnOp::Delete { key } => Op::Delete(key),
            })
            .collect();
        match self.write(Command::Txn { compares, ops }).await? {
            Applied::Written(pairs) => Ok(pairs.into_iter().map(Into::into).collect()),
            other => Err(self.backend(format!("unexpected answer {other:?} to a transaction"))),
        }
    }

    async fn sync(&self) -> Result<()> {
        self.read_ready().await
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        let key = key::leaf(key)?.to_string();
        self.watch_from(move |shared, client, tx| shared.watch_key(client, &key, tx))
            .await
    }

    async fn watch_tree(&self, dir: &str) -> Result<TreeWatchStream> {
        let prefix = key::dir_prefix(key::directory(dir)?);
        self.watch_from(move |shared, client, tx| shared.watch_tree(client, &prefix, tx))
            .await
    }

    fn new_lock(&self, key: &str, options: LockOptions) -> Result<Box<dyn Locker>> {
        let key = key::leaf(key)?.to_string();
        self.open()?;
        Ok(Box::new(KvLocker::new(
            Arc::new(self.clone()),
            key,
            options,
        )))
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::Release);
        self.inner.shared.hub().drop_client(self.client);
        Ok(())
    }
}
