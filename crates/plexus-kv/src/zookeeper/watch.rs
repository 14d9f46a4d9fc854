//! Watches: a persistent (or persistent recursive) watch, a read after every notification, and
//! the watch set again after a reconnection or a new session, since zookeeper-client 0.11 does
//! not restore persistent watches itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use zookeeper_client as zk;
use zookeeper_client::{AddWatchMode, Client, EventType, SessionState};

use super::{until_closed, Inner};
use crate::error::{KvError, Result};
use crate::types::KvPair;

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;
/// Reads a watch's current state.
/// The paths named by the notifications that caused the read (empty for the first read).
pub(super) type Reader<T> =
    Arc<dyn Fn(Arc<Inner>, Client, Vec<String>) -> BoxFuture<Result<T>> + Send + Sync>;

/// A state a watch may yield: whether `next` may follow `last`.
pub(super) trait WatchState: Clone + PartialEq + Send + Sync + 'static {
    fn may_follow(&self, last: &Self) -> bool;
}

impl WatchState for Option<KvPair> {
    fn may_follow(&self, last: &Self) -> bool {
        match (self, last) {
            (Some(new), Some(old)) => new.last_index > old.last_index,
            (a, b) => a != b,
        }
    }
}

impl WatchState for Vec<KvPair> {
    fn may_follow(&self, last: &Self) -> bool {
        self != last
    }
}

/// Registers the watch, reads the current state, and hands the rest to a task.
pub(super) async fn start_watch<T: WatchState>(
    inner: &Arc<Inner>,
    path: String,
    mode: AddWatchMode,
    reader: Reader<T>,
    op: &'static str,
) -> Result<mpsc::Receiver<Result<T>>> {
    let (watcher, first) = inner
        .run(op, async {
            let client = inner.client().await?;
            let watcher = client
                .watch(&path, mode)
                .await
                .map_err(|e| inner.err(op, e))?;
            let first = reader(inner.clone(), client, Vec::new()).await?;
            Ok((watcher, first))
        })
        .await?;
    let (tx, rx) = mpsc::channel(64);
    // The channel is empty: this cannot fail.
    let _ = tx.try_send(Ok(first.clone()));
    tokio::spawn(watch_task(
        inner.clone(),
        path,
        mode,
        watcher,
        first,
        tx,
        reader,
    ));
    Ok(rx)
}

async fn watch_task<T: WatchState>(
    inner: Arc<Inner>,
    path: String,
    mode: AddWatchMode,
    mut watcher: zk::PersistentWatcher,
    mut last: T,
    tx: mpsc::Sender<Result<T>>,
    reader: Reader<T>,
) {
    let mut closed = inner.closed.subscribe();
    let mut reported = false;
    loop {
        // Events of one session.
        loop {
            let event = tokio::select! {
                e = watcher.changed() => e,
                _ = until_closed(&mut closed) => return,
                _ = tx.closed() => return,
            };
            // One read answers every notification already queued.
            let mut events = vec![event];
            while !events.last().is_some_and(|e| {
                e.event_type == EventType::Session && e.session_state.is_terminated()
            }) {
                match watcher.changed().now_or_never() {
                    Some(e) => events.push(e),
                    None => break,
                }
            }
            let mut connected = true;
            let mut ended = false;
            let mut reconnected = false;
            for event in &events {
                if event.event_type != EventType::Session {
                    continue;
                }
                match event.session_state {
                    SessionState::Disconnected => {
                        connected = false;
                        if !reported {
                            reported = true;
                            let e = KvError::Unavailable {
                                url: inner.url.clone(),
                                reason: format!("watch on {path}: connection to ZooKeeper lost"),
                            };
                            if tx.send(Err(e)).await.is_err() {
                                return;
                            }
                        }
                    }
                    s if s.is_terminated() => ended = true,
                    _ => {
                        connected = true;
                        reconnected = true;
                    }
                }
            }
            if ended || (connected && reconnected) {
                // zookeeper-client 0.11 does not set persistent watches again after a
                // reconnection (its SetWatches request leaves them out), and ZooKeeper drops
                // the notifications of the outage anyway: watch again, then read.
                break;
            }
            if !connected {
                // The reconnection will say when to read.
                continue;
            }
            // A change, or a reconnection: read again.
            let Ok(client) = inner.client().await else {
                continue;
            };
            let paths: Vec<String> = events
                .iter()
                .filter(|e| e.event_type == EventType::NodeCreated)
                .map(|e| e.path.clone())
                .collect();
            match tokio::time::timeout(inner.timeout, reader(inner.clone(), client, paths)).await {
                Ok(Ok(state)) => {
                    reported = false;
                    if state.may_follow(&last) {
                        last = state.clone();
                        if tx.send(Ok(state)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(%path, error = %e, "watch read failed; waiting for the next event");
                    if !reported {
                        reported = true;
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(_) => {
                    tracing::debug!(%path, "watch read timed out; waiting for the next event");
                }
            }
        }
        // Reconnected, or the session ended (then open a new one): watch again, read again.
        // The old watcher is dropped only once the new one is registered.
        loop {
            if inner.is_closed() {
                return;
            }
            let attempt = async {
                let client = inner.client().await?;
                let w = client
                    .watch(&path, mode)
                    .await
                    .map_err(|e| inner.err("watch", e))?;
                let state = reader(inner.clone(), client, Vec::new()).await?;
                Ok::<_, KvError>((w, state))
            };
            match tokio::time::timeout(inner.timeout, attempt).await {
                Ok(Ok((w, state))) => {
                    watcher = w;
                    reported = false;
                    if state.may_follow(&last) {
                        last = state.clone();
                        if tx.send(Ok(state)).await.is_err() {
                            return;
                        }
                    }
                    break;
                }
                Ok(Err(KvError::Closed { .. })) => return,
                result => {
                    if !reported {
                        reported = true;
                        let e = match result {
                            Ok(Err(e)) => e,
                            _ => KvError::Timeout {
                                url: inner.url.clone(),
                                op: "watch",
                                after: inner.timeout,
                            },
                        };
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                        _ = until_closed(&mut closed) => return,
                        _ = tx.closed() => return,
                    }
                }
            }
        }
    }
}
