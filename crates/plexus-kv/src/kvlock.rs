//! A lock built from the store's own operations: create-only put with a TTL to take it, a
//! compare-and-swap refresh every third of the TTL to keep it, a compare-and-delete to give it
//! back. Used by the in-process backends, whose "session" is the holder's renewal task.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{oneshot, watch};

use crate::error::{KvError, Result};
use crate::lock::{LockHandle, LockRelease, Locker};
use crate::store::Store;
use crate::types::{KvPair, LockOptions, PutOptions};

/// A [`Locker`] over any [`Store`].
pub struct KvLocker {
    store: Arc<dyn Store>,
    key: String,
    options: LockOptions,
}

impl KvLocker {
    /// A lock on `key` in `store`.
    pub fn new(store: Arc<dyn Store>, key: String, options: LockOptions) -> Self {
        Self {
            store,
            key,
            options,
        }
    }
}

#[async_trait]
impl Locker for KvLocker {
    async fn lock(&self) -> Result<LockHandle> {
        let ttl = PutOptions::with_ttl(self.options.ttl);
        let pair = loop {
            match self
                .store
                .atomic_put(&self.key, &self.options.value, None, ttl)
                .await
            {
                Ok(pair) => break pair,
                Err(KvError::KeyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            // Held by someone else: wait until the key is gone (released or expired).
            let mut watch = self.store.watch(&self.key).await?;
            while let Some(event) = watch.next().await {
                if event?.is_none() {
                    break;
                }
            }
        };
        let (lost_tx, lost_rx) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        let renewal = tokio::spawn(renew(
            self.store.clone(),
            pair,
            self.options.clone(),
            lost_tx,
            stop_rx,
        ));
        Ok(LockHandle::new(
            self.key.clone(),
            lost_rx,
            Box::new(KvRelease {
                stop: stop_tx,
                renewal,
            }),
        ))
    }
}

/// Refreshes the lock until told to stop; then deletes it if it is still ours.
async fn renew(
    store: Arc<dyn Store>,
    mut pair: KvPair,
    options: LockOptions,
    lost: watch::Sender<Option<String>>,
    mut stop: oneshot::Receiver<()>,
) -> Result<()> {
    let period = options.ttl / 3;
    loop {
        tokio::select! {
            _ = &mut stop => {
                return match store.atomic_delete(&pair.key, &pair).await {
                    Ok(()) | Err(KvError::KeyNotFound { .. }) | Err(KvError::KeyModified { .. }) => Ok(()),
                    Err(e) => Err(e),
                };
            }
            _ = tokio::time::sleep(period) => {
                match store
                    .atomic_put(&pair.key, &options.value, Some(&pair), PutOptions::with_ttl(options.ttl))
                    .await
                {
                    Ok(next) => pair = next,
                    Err(e @ (KvError::KeyNotFound { .. } | KvError::KeyModified { .. } | KvError::Closed { .. })) => {
                        let _ = lost.send(Some(e.to_string()));
                        return Ok(());
                    }
                    // A transient failure: try again next period; the TTL covers two misses.
                    Err(e) => tracing::warn!(key = %pair.key, error = %e, "lock renewal failed"),
                }
            }
        }
    }
}

struct KvRelease {
    stop: oneshot::Sender<()>,
    renewal: tokio::task::JoinHandle<Result<()>>,
}

#[async_trait]
impl LockRelease for KvRelease {
    async fn release(self: Box<Self>) -> Result<()> {
        // If the renewal already ended (lock lost), there is nothing to release.
        let _ = self.stop.send(());
        match self.renewal.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }

    fn release_in_background(self: Box<Self>) {
        let _ = self.stop.send(());
    }
}
