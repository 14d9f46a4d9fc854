//! Locks on etcd: a lease kept alive by a background task, and a create-only put of the lock's
//! key under that lease.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Compare as EtcdCompare, CompareOp, EventType, LeaseKeepAliveStream, LeaseKeeper,
    Txn as EtcdTxn, TxnOp as EtcdTxnOp,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::watch::{EventFeed, Feed};
use super::{else_read, ttl_secs, Inner};
use crate::error::{KvError, Result};
use crate::lock::{LockHandle, LockRelease, Locker};
use crate::types::LockOptions;

/// How soon a failed keep-alive is retried.
const KEEPALIVE_RETRY: Duration = Duration::from_millis(200);

/// A lock on one etcd key.
pub(super) struct EtcdLocker {
    inner: Arc<Inner>,
    key: String,
    full: String,
    options: LockOptions,
}

impl EtcdLocker {
    pub(super) fn new(inner: Arc<Inner>, key: String, options: LockOptions) -> Self {
        let full = inner.full(&key);
        Self {
            inner,
            key,
            full,
            options,
        }
    }
}

#[async_trait]
impl Locker for EtcdLocker {
    async fn lock(&self) -> Result<LockHandle> {
        let inner = &self.inner;
        let mut session = Session::start(inner, self.options.ttl).await?;
        let acquired_at = loop {
            inner.check_open()?;
            if session.is_lost() {
                // The lease expired while we waited (the cluster was away): start over.
                session = Session::start(inner, self.options.ttl).await?;
            }
            let full = self.full.as_str();
            let txn = EtcdTxn::new()
                .when([EtcdCompare::create_revision(full, CompareOp::Equal, 0)])
                .and_then([EtcdTxnOp::put(
                    full,
                    self.options.value.clone(),
                    Inner::put_options(session.lease),
                )])
                .or_else([Inner::read_op(full)]);
            let mut kv = inner.kv.clone();
            let resp = inner.call("lock", kv.txn(txn)).await?;
            let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            if resp.succeeded() {
                break rev;
            }
            let responses = resp.op_responses();
            if else_read(&responses, 0).is_none() {
                // Released between the comparison and the read: try again at once.
                continue;
            }
            // Held by someone else: wait for the key's delete (release or lease expiry).
            let mut feed = EventFeed::new(inner.clone(), self.full.clone(), false, rev);
            let mut shutdown = inner.shutdown.subscribe();
            let mut lost = session.lost.clone();
            loop {
                tokio::select! {
                    feed_item = feed.next() => match feed_item {
                        Feed::Events(events) => {
                            if events.iter().any(|e| e.event_type() == EventType::Delete) {
                                break;
                            }
                        }
                        // The feed resumes by itself and will not miss the delete.
                        Feed::Broken(_) => {}
                        Feed::Compacted(_) => break,
                    },
                    _ = shutdown.wait_for(|closed| *closed) => return Err(inner.closed_err()),
                    _ = lost.changed() => break,
                }
            }
        };
        tracing::debug!(url = %inner.url, key = %self.key, lease = session.lease, "lock acquired");
        let monitor = tokio::spawn(monitor_key(
            inner.clone(),
            self.full.clone(),
            session.lease,
            acquired_at,
            session.lost_tx.clone(),
        ));
        Ok(LockHandle::new(
            self.key.clone(),
            session.lost.clone(),
            Box::new(EtcdRelease {
                session: Some(session),
                full: self.full.clone(),
                monitor,
            }),
        ))
    }
}

/// A lease with its keep-alive task. Dropped without [`end`](Self::end), it stops renewing
/// and revokes the lease in the background.
struct Session {
    inner: Arc<Inner>,
    lease: i64,
    lost: watch::Receiver<Option<String>>,
    lost_tx: watch::Sender<Option<String>>,
    keeper: JoinHandle<()>,
    ended: bool,
}

impl Session {
    async fn start(inner: &Arc<Inner>, ttl: Duration) -> Result<Self> {
        let granted_at = Instant::now();
        let mut client = inner.lease.clone();
        let granted = inner
            .call("lock: grant lease", client.grant(ttl_secs(ttl), None))
            .await?;
        let lease = granted.id();
        let ttl = Duration::from_secs(granted.ttl().max(1) as u64);
        match inner.leases.lock() {
            Ok(mut held) => held.insert(lease),
            Err(poisoned) => poisoned.into_inner().insert(lease),
        };
        let (lost_tx, lost) = watch::channel(None);
        let keeper = tokio::spawn(keep_alive(
            inner.clone(),
            lease,
            ttl,
            granted_at,
            lost_tx.clone(),
        ));
        Ok(Self {
            inner: inner.clone(),
            lease,
            lost,
            lost_tx,
            keeper,
            ended: false,
        })
    }

    fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    fn forget(&mut self) {
        self.ended = true;
        self.keeper.abort();
        match self.inner.leases.lock() {
            Ok(mut held) => held.remove(&self.lease),
            Err(poisoned) => poisoned.into_inner().remove(&self.lease),
        };
    }

    /// Stops renewing, deletes `full` if it is still ours, and revokes the lease.
    async fn end(mut self, full: &str) -> Result<()> {
        self.forget();
        if self.inner.is_closed() {
            // close() revoked every lease already.
            return Ok(());
        }
        let txn = EtcdTxn::new()
            .when([EtcdCompare::lease(full, CompareOp::Equal, self.lease)])
            .and_then([EtcdTxnOp::delete(full, None)]);
        let mut kv = self.inner.kv.clone();
        self.inner.call("unlock", kv.txn(txn)).await?;
        self.inner.revoke(self.lease).await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        self.forget();
        let inner = self.inner.clone();
        let lease = self.lease;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = inner.revoke(lease).await {
                    tracing::debug!(url = %inner.url, lease, error = %e, "cannot revoke an abandoned lock lease; it expires with its TTL");
                }
            });
        }
    }
}

/// One keep-alive round trip: `Some(ttl)` while the lease lives, `None` once it has expired.
async fn refresh(
    inner: &Inner,
    lease: i64,
    ttl: Duration,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> std::result::Result<Option<Duration>, etcd_client::Error> {
    match stream {
        None => {
            let mut client = inner.lease.clone();
            match client.keep_alive(lease).await {
                // Opening the stream sent a keep-alive and saw a live lease.
                Ok(opened) => {
                    *stream = Some(opened);
                    Ok(Some(ttl))
                }
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(None),
                Err(e) => Err(e),
            }
        }
        Some((keeper, responses)) => {
            keeper.keep_alive().await?;
            match responses.message().await? {
                Some(r) if r.ttl() > 0 => Ok(Some(Duration::from_secs(r.ttl() as u64))),
                Some(_) => Ok(None),
                None => Err(etcd_client::Error::LeaseKeepAliveError(
                    "the keep-alive stream ended".into(),
                )),
            }
        }
    }
}

/// Renews `lease` every third of its TTL. Reports the lock lost when the server says the lease
/// is gone, or when no renewal got through for a whole TTL (the server expires it then: the
/// deadline counts from when the last successful renewal was *sent*, so it is never later
/// than the server's), or when the store closes.
async fn keep_alive(
    inner: Arc<Inner>,
    lease: i64,
    ttl: Duration,
    granted_at: Instant,
    lost: watch::Sender<Option<String>>,
) {
    let period = (ttl / 3).max(Duration::from_millis(100));
    let mut deadline = granted_at + ttl;
    let mut next = granted_at + period;
    let mut stream = None;
    let mut shutdown = inner.shutdown.subscribe();
    let report = |reason: String| {
        tracing::warn!(url = %inner.url, lease, %reason, "etcd lock lost");
        lost.send_replace(Some(reason));
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next.min(deadline)) => {}
            _ = shutdown.wait_for(|closed| *closed) => {
                report("the store was closed".into());
                return;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            report(format!(
                "no keep-alive reached {} for {ttl:?}: the lease has expired",
                inner.url
            ));
            return;
        }
        let budget = (deadline - now).min(inner.timeout);
        match tokio::time::timeout(budget, refresh(&inner, lease, ttl, &mut stream)).await {
            Ok(Ok(Some(granted))) => {
                deadline = now + granted;
                next = now + period;
            }
            Ok(Ok(None)) => {
                report("the lock's lease expired".into());
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(url = %inner.url, lease, error = %e, "lock keep-alive failed; retrying");
                stream = None;
                next = Instant::now() + KEEPALIVE_RETRY;
            }
            Err(_) => {
                stream = None;
                next = Instant::now();
            }
        }
    }
}

/// Watches a held lock's key: its delete (or its overwrite by a write that is not ours) means
/// the lock is gone.
async fn monitor_key(
    inner: Arc<Inner>,
    full: String,
    lease: i64,
    acquired_at: i64,
    lost: watch::Sender<Option<String>>,
) {
    let mut feed = EventFeed::new(inner.clone(), full.clone(), false, acquired_at);
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let feed_item = tokio::select! {
            item = feed.next() => item,
            // The keep-alive task reports the close.
            _ = shutdown.wait_for(|closed| *closed) => return,
        };
        let gone = match feed_item {
            Feed::Events(events) => events.iter().find_map(|e| match (e.event_type(), e.kv()) {
                (EventType::Delete, _) => Some("the lock's key was deleted".to_string()),
                (EventType::Put, Some(kv)) if kv.lease() != lease => {
                    Some("the lock's key was overwritten by another writer".to_string())
                }
                _ => None,
            }),
            Feed::Broken(_) => None,
            Feed::Compacted(_) => {
                let mut kv = inner.kv.clone();
                match inner.call("lock: check", kv.get(full.as_str(), None)).await {
                    Ok(resp) => match resp.kvs().first() {
                        Some(kv) if kv.lease() == lease => {
                            feed.resume_after(resp.header().map(|h| h.revision()).unwrap_or(0));
                            None
                        }
                        _ => Some("the lock's key was deleted".to_string()),
                    },
                    Err(_) => None,
                }
            }
        };
        if let Some(reason) = gone {
            tracing::warn!(url = %inner.url, key = %full, %reason, "etcd lock lost");
            lost.send_replace(Some(reason));
            return;
        }
    }
}

/// The release side of a held etcd lock.
struct EtcdRelease {
    session: Option<Session>,
    full: String,
    monitor: JoinHandle<()>,
}

#[async_trait]
impl LockRelease for EtcdRelease {
    async fn release(mut self: Box<Self>) -> Result<()> {
        self.monitor.abort();
        match self.session.take() {
            Some(session) => match session.end(&self.full).await {
                // Gone already is released.
                Err(KvError::Closed { .. }) => Ok(()),
                other => other,
            },
            None => Ok(()),
        }
    }

    fn release_in_background(mut self: Box<Self>) {
        self.monitor.abort();
        let Some(session) = self.session.take() else {
            return;
        };
        let full = std::mem::take(&mut self.full);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = session.end(&full).await {
                        tracing::debug!(key = %full, error = %e, "background unlock failed; the lease expires with its TTL");
                    }
                });
            }
            // No runtime: the session's drop stops renewing; the lease expires with its TTL.
            Err(_) => drop(session),
        }
    }
}
