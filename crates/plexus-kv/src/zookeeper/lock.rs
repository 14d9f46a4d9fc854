//! Locks: the ephemeral-sequential recipe, one session per held lock; the holder gives the lock
//! up after half the session timeout without a connection.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{oneshot, watch};
use zookeeper_client as zk;
use zookeeper_client::{Acls, Client, CreateMode, EventType, SessionState};

use super::codec::{join, parent_of, LOCK_MARK};
use super::{until_closed, Inner, MAX_ATTEMPTS};
use crate::error::{KvError, Result};
use crate::lock::{LockHandle, LockRelease, Locker};
use crate::types::LockOptions;

/// Name prefix of lock contenders' znodes.
const LOCK_PREFIX: &str = "lock-";

/// A lock on one key: the standard ZooKeeper recipe, one session per held lock.
pub(super) struct ZkLocker {
    pub(super) inner: Arc<Inner>,
    pub(super) key: String,
    /// The lock key's znode, under which the contenders queue.
    pub(super) path: String,
    pub(super) options: LockOptions,
}

impl ZkLocker {
    fn sequence(name: &str) -> Option<i64> {
        name.strip_prefix(LOCK_PREFIX)?
            .rsplit('-')
            .next()?
            .parse()
            .ok()
    }

    /// Creates this contender's node; returns its full path.
    async fn enqueue(&self, client: &Client) -> Result<String> {
        let inner = &self.inner;
        let prefix = format!(
            "{}/{LOCK_PREFIX}{:016x}-",
            self.path,
            client.session_id().0 as u64
        );
        let mut data = Vec::with_capacity(self.options.value.len() + 1);
        data.push(LOCK_MARK);
        data.extend_from_slice(&self.options.value);
        let opts = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
        for _ in 0..MAX_ATTEMPTS {
            match client.create(&prefix, &data, &opts).await {
                Ok((_, seq)) => return Ok(format!("{prefix}{seq}")),
                Err(zk::Error::NoNode) => inner.ensure_parents(client, &prefix).await?,
                Err(e) => return Err(inner.err("lock", e)),
            }
        }
        Err(inner.gave_up(&self.key))
    }

    /// One step of the wait: `Ok(true)` once ours is the first node.
    async fn step(&self, client: &Client, me: &str) -> Result<Option<zk::OneshotWatcher>> {
        let inner = &self.inner;
        let children = client
            .list_children(&self.path)
            .await
            .map_err(|e| inner.err("lock", e))?;
        let mut contenders: Vec<(i64, String)> = children
            .into_iter()
            .filter_map(|c| Self::sequence(&c).map(|s| (s, c)))
            .collect();
        contenders.sort();
        let my_name = me.rsplit('/').next().unwrap_or(me);
        let Some(pos) = contenders.iter().position(|(_, c)| c == my_name) else {
            return Err(KvError::LockLost {
                key: self.key.clone(),
                reason: "this contender's node was deleted while waiting".into(),
            });
        };
        if pos == 0 {
            return Ok(None);
        }
        let before = join(&self.path, &contenders[pos - 1].1);
        let (stat, watcher) = client
            .check_and_watch_stat(&before)
            .await
            .map_err(|e| inner.err("lock", e))?;
        Ok(stat.map(|_| watcher))
    }
}

#[async_trait]
impl Locker for ZkLocker {
    async fn lock(&self) -> Result<LockHandle> {
        let inner = &self.inner;
        let client = inner
            .run("lock", inner.new_session(self.options.ttl))
            .await?;
        let me = inner.run("lock", self.enqueue(&client)).await?;
        let mut state = client.state_watcher();
        let mut closed = inner.closed.subscribe();
        loop {
            let waiting = inner.run("lock", self.step(&client, &me)).await?;
            let Some(watcher) = waiting else { break };
            tokio::select! {
                _ = watcher.changed() => {}
                // Dropping the session on return takes this contender's node away.
                _ = until_closed(&mut closed) => return Err(inner.closed_err()),
                s = wait_terminal(&mut state) => {
                    return Err(KvError::Unavailable {
                        url: inner.url.clone(),
                        reason: format!("lock {:?}: the lock session ended ({s}) while waiting", self.key),
                    });
                }
            }
        }
        tracing::debug!(key = %self.key, node = %me, "lock acquired");
        let (lost_tx, lost_rx) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(hold(
            inner.clone(),
            client,
            self.key.clone(),
            me,
            lost_tx,
            stop_rx,
        ));
        Ok(LockHandle::new(
            self.key.clone(),
            lost_rx,
            Box::new(ZkRelease {
                stop: stop_tx,
                task,
            }),
        ))
    }
}

async fn wait_terminal(state: &mut zk::StateWatcher) -> SessionState {
    loop {
        let s = state.changed().await;
        if s.is_terminated() {
            return s;
        }
    }
}

/// Keeps a held lock: watches its node and its session until released or lost.
async fn hold(
    inner: Arc<Inner>,
    client: Client,
    key: String,
    me: String,
    lost: watch::Sender<Option<String>>,
    mut stop: oneshot::Receiver<()>,
) -> Result<()> {
    let mut closed = inner.closed.subscribe();
    let mut state = client.state_watcher();
    let grace = client.session_timeout() / 2;
    let mut disconnected_at: Option<tokio::time::Instant> = None;
    let lose = |reason: String| {
        tracing::warn!(%key, %reason, "lock lost");
        let _ = lost.send(Some(reason));
    };
    let mut node_watch =
        match tokio::time::timeout(inner.timeout, client.check_and_watch_stat(&me)).await {
            Ok(Ok((Some(_), w))) => Box::pin(w.changed()),
            Ok(Ok((None, _))) => {
                lose("the lock node was deleted".into());
                return Ok(());
            }
            Ok(Err(e)) => {
                lose(format!("cannot watch the lock node: {e}"));
                return Ok(());
            }
            Err(_) => {
                lose("cannot watch the lock node: timed out".into());
                return Ok(());
            }
        };
    loop {
        let deadline = disconnected_at.map(|t| t + grace);
        tokio::select! {
            _ = &mut stop => break,
            _ = until_closed(&mut closed) => break,
            event = &mut node_watch => {
                match event.event_type {
                    EventType::NodeDeleted => {
                        lose("the lock node was deleted".into());
                        return Ok(());
                    }
                    EventType::Session => {
                        lose(format!("the lock session ended: {}", event.session_state));
                        return Ok(());
                    }
                    _ => match tokio::time::timeout(inner.timeout, client.check_and_watch_stat(&me)).await {
                        Ok(Ok((Some(_), w))) => node_watch = Box::pin(w.changed()),
                        _ => {
                            lose("the lock node is gone".into());
                            return Ok(());
                        }
                    },
                }
            }
            s = state.changed() => {
                match s {
                    SessionState::Disconnected => {
                        disconnected_at.get_or_insert_with(tokio::time::Instant::now);
                    }
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => disconnected_at = None,
                    other => {
                        lose(format!("the lock session ended: {other}"));
                        return Ok(());
                    }
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                lose(format!(
                    "disconnected from ZooKeeper for {grace:?}, half the lock's session timeout: \
                     the server may give the lock away"
                ));
                return Ok(());
            }
        }
    }
    // Release: delete the node, then end the session (which would delete it anyway).
    let result = match tokio::time::timeout(inner.timeout, client.delete(&me, None)).await {
        Ok(Ok(())) | Ok(Err(zk::Error::NoNode)) => {
            inner.cleanup_from(&client, parent_of(&me)).await;
            Ok(())
        }
        Ok(Err(e)) => Err(inner.err("unlock", e)),
        Err(_) => Err(KvError::Timeout {
            url: inner.url.clone(),
            op: "unlock",
            after: inner.timeout,
        }),
    };
    tracing::debug!(%key, "lock released");
    result
}

struct ZkRelease {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

#[async_trait]
impl LockRelease for ZkRelease {
    async fn release(self: Box<Self>) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(Ok(()))
    }

    fn release_in_background(self: Box<Self>) {
        // The holding task deletes the node and closes the session on its own.
        let _ = self.stop.send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contender_sequence() {
        assert_eq!(ZkLocker::sequence("lock-00ab-0000000012"), Some(12));
        assert_eq!(ZkLocker::sequence("other"), None);
    }
}
