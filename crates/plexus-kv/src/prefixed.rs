//! A view of a store under one directory: every key is the view's key below a fixed prefix.
//!
//! Several daemons that share one backend (`--store etcd://…` given to two hosts) each see
//! only their own host-scoped records through a view under their host id, so none of them
//! mistakes another's records for its own (and reconciles them away).

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;

use crate::error::{KvError, Result};
use crate::key;
use crate::lock::Locker;
use crate::store::Store;
use crate::types::{
    Compare, KvPair, LockOptions, PutOptions, TreeWatchStream, Txn, TxnOp, WatchStream,
};

/// A [`Store`] whose keys live under `prefix` in `inner`; keys it returns are the view's own
/// (without the prefix).
pub struct Prefixed {
    inner: Arc<dyn Store>,
    /// Canonical directory, no trailing `/`.
    prefix: String,
    url: String,
}

/// The view of `inner` under the directory `prefix` (a non-root directory, such as
/// `plexus/hosts/3f2a`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> plexus_kv::Result<()> {
/// use plexus_kv::{Store, PutOptions};
/// let store = plexus_kv::open("memory://", Default::default()).await?;
/// let a = plexus_kv::prefixed(store.clone(), "hosts/a")?;
/// a.put("net/1", b"x", PutOptions::default()).await?;
/// assert_eq!(store.get("hosts/a/net/1").await?.value, b"x");
/// assert_eq!(a.list("net").await?[0].key, "net/1");
/// # Ok(()) }
/// ```
pub fn prefixed(inner: Arc<dyn Store>, prefix: &str) -> Result<Arc<dyn Store>> {
    let prefix = key::directory_nonroot(prefix)?.to_string();
    let url = format!("{} (under {prefix})", inner.url());
    Ok(Arc::new(Prefixed { inner, prefix, url }))
}

impl Prefixed {
    fn full(&self, k: &str) -> String {
        let k = k.strip_prefix('/').unwrap_or(k);
        if k.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}/{k}", self.prefix)
        }
    }

    fn full_leaf(&self, k: &str) -> Result<String> {
        Ok(self.full(key::leaf(k)?))
    }

    fn full_dir(&self, dir: &str) -> Result<String> {
        Ok(self.full(key::directory(dir)?))
    }

    /// The view's own key for a backend key (unchanged if it is not under the prefix).
    fn own_key(&self, key: String) -> String {
        key.strip_prefix(&self.prefix)
            .and_then(|r| r.strip_prefix('/'))
            .map(str::to_string)
            .unwrap_or(key)
    }

    /// An error naming the view's keys, which are what the caller gave.
    fn own_err(&self, e: KvError) -> KvError {
        match e {
            KvError::ValueTooLarge {
                key,
                size,
                limit,
                backend,
            } => KvError::ValueTooLarge {
                key: self.own_key(key),
                size,
                limit,
                backend,
            },
            KvError::KeyNotFound { key } => KvError::KeyNotFound {
                key: self.own_key(key),
            },
            KvError::KeyExists { key } => KvError::KeyExists {
                key: self.own_key(key),
            },
            KvError::KeyModified {
                key,
                expected,
                found,
            } => KvError::KeyModified {
                key: self.own_key(key),
                expected,
                found,
            },
            KvError::TxnConflict { key, reason } => KvError::TxnConflict {
                key: self.own_key(key),
                reason,
            },
            other => other,
        }
    }

    fn strip(prefix: &str, mut pair: KvPair) -> KvPair {
        if let Some(rest) = pair
            .key
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('/'))
        {
            pair.key = rest.to_string();
        }
        pair
    }
}

#[async_trait]
impl Store for Prefixed {
    fn url(&self) -> &str {
        &self.url
    }

    fn max_value_bytes(&self) -> usize {
        self.inner.max_value_bytes()
    }

    async fn put(&self, k: &str, value: &[u8], options: PutOptions) -> Result<KvPair> {
        let pair = self
            .inner
            .put(&self.full_leaf(k)?, value, options)
            .await
            .map_err(|e| self.own_err(e))?;
        Ok(Self::strip(&self.prefix, pair))
    }

    async fn get(&self, k: &str) -> Result<KvPair> {
        let pair = self
            .inner
            .get(&self.full_leaf(k)?)
            .await
            .map_err(|e| self.own_err(e))?;
        Ok(Self::strip(&self.prefix, pair))
    }

    async fn delete(&self, k: &str) -> Result<()> {
        self.inner
            .delete(&self.full_leaf(k)?)
            .await
            .map_err(|e| self.own_err(e))
    }

    async fn exists(&self, k: &str) -> Result<bool> {
        self.inner
            .exists(&self.full_leaf(k)?)
            .await
            .map_err(|e| self.own_err(e))
    }

    async fn list(&self, dir: &str) -> Result<Vec<KvPair>> {
        let pairs = self
            .inner
            .list(&self.full_dir(dir)?)
            .await
            .map_err(|e| self.own_err(e))?;
        Ok(pairs
            .into_iter()
            .map(|p| Self::strip(&self.prefix, p))
            .collect())
    }

    async fn delete_tree(&self, dir: &str) -> Result<()> {
        // The root of the view is a directory of the backend, so deleting "everything" here
        // would be allowed below; refuse it as every backend refuses its own root.
        let dir = key::directory_nonroot(dir)?;
        self.inner
            .delete_tree(&self.full(dir))
            .await
            .map_err(|e| self.own_err(e))
    }

    async fn atomic_put(
        &self,
        k: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair> {
        let full = self.full_leaf(k)?;
        let previous = previous.map(|p| KvPair {
            key: full.clone(),
            ..p.clone()
        });
        let pair = self
            .inner
            .atomic_put(&full, value, previous.as_ref(), options)
            .await
            .map_err(|e| self.own_err(e))?;
        Ok(Self::strip(&self.prefix, pair))
    }

    async fn atomic_delete(&self, k: &str, previous: &KvPair) -> Result<()> {
        let full = self.full_leaf(k)?;
        let previous = KvPair {
            key: full.clone(),
            ..previous.clone()
        };
        self.inner
            .atomic_delete(&full, &previous)
            .await
            .map_err(|e| self.own_err(e))
    }

    async fn sync(&self) -> Result<()> {
        self.inner.sync().await
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<KvPair>> {
        let mut out = Txn {
            relaxed: txn.relaxed,
            ..Txn::default()
        };
        for c in txn.compares {
            out.compares.push(match c {
                Compare::Index { key, index } => Compare::Index {
                    key: self.full_leaf(&key)?,
                    index,
                },
                Compare::Absent { key } => Compare::Absent {
                    key: self.full_leaf(&key)?,
                },
            });
        }
        for op in txn.ops {
            out.ops.push(match op {
                TxnOp::Put { key, value } => TxnOp::Put {
                    key: self.full_leaf(&key)?,
                    value,
                },
                TxnOp::Delete { key } => TxnOp::Delete {
                    key: self.full_leaf(&key)?,
                },
            });
        }
        let prefix = self.prefix.clone();
        let pairs = self.inner.txn(out).await.map_err(|e| self.own_err(e))?;
        Ok(pairs.into_iter().map(|p| Self::strip(&prefix, p)).collect())
    }

    async fn watch(&self, k: &str) -> Result<WatchStream> {
        let prefix = self.prefix.clone();
        let stream = self.inner.watch(&self.full_leaf(k)?).await?;
        Ok(Box::pin(stream.map(move |item| {
            item.map(|p| p.map(|p| Self::strip(&prefix, p)))
        })))
    }

    async fn watch_tree(&self, dir: &str) -> Result<TreeWatchStream> {
        let prefix = self.prefix.clone();
        let stream = self.inner.watch_tree(&self.full_dir(dir)?).await?;
        Ok(Box::pin(stream.map(move |item| {
            item.map(|pairs| pairs.into_iter().map(|p| Self::strip(&prefix, p)).collect())
        })))
    }

    fn new_lock(&self, k: &str, options: LockOptions) -> Result<Box<dyn Locker>> {
        self.inner.new_lock(&self.full_leaf(k)?, options)
    }

    /// Closes the backend too: a view is how its owner uses the backend, so closing the
    /// one closes the other (other views of the same backend then refuse as well).
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
