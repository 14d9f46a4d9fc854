//! Watches that survive the server going away: a feed of etcd events resumed from the last
//! revision seen, and the key and tree watches built on it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Event, EventType, GetOptions, WatchOptions, WatchStream as EtcdWatchStream};
use tokio::sync::mpsc;

use super::Inner;
use crate::error::{KvError, Result};
use crate::types::{KvPair, TreeWatchStream, WatchStream};

const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What [`EventFeed::next`] gives.
pub(super) enum Feed {
    /// Events of one or more whole revisions, in revision order.
    Events(Vec<Event>),
    /// The stream broke (the first failure after a working stream): it is being reopened.
    Broken(KvError),
    /// The history from the next revision was compacted: the caller must re-read the current
    /// state and [`resume_after`](EventFeed::resume_after) its revision.
    Compacted(i64),
}

/// etcd watch events on a key or a prefix from a given revision, reopened after every break
/// from the revision after the last event delivered, so that none is missed.
pub(super) struct EventFeed {
    inner: Arc<Inner>,
    key: String,
    prefix: bool,
    next_rev: i64,
    stream: Option<EtcdWatchStream>,
    failing: bool,
    backoff: Duration,
}

impl EventFeed {
    /// A feed of changes to `key` (or every key starting with it, if `prefix`) after revision
    /// `after`.
    pub(super) fn new(inner: Arc<Inner>, key: String, prefix: bool, after: i64) -> Self {
        Self {
            inner,
            key,
            prefix,
            next_rev: after + 1,
            stream: None,
            failing: false,
            backoff: BACKOFF_START,
        }
    }

    /// Continues after revision `rev` (after a re-read following [`Feed::Compacted`]).
    pub(super) fn resume_after(&mut self, rev: i64) {
        self.next_rev = rev + 1;
        self.stream = None;
    }

    async fn open(&self) -> Result<EtcdWatchStream> {
        let mut options = WatchOptions::new().with_start_revision(self.next_rev);
        if self.prefix {
            options = options.with_prefix();
        }
        let mut client = self.inner.watch.clone();
        self.inner
            .call("watch", client.watch(self.key.as_str(), Some(options)))
            .await
    }

    /// A failure: reported once per outage, then retried quietly with a growing backoff.
    async fn fail(&mut self, error: KvError) -> Option<Feed> {
        self.stream = None;
        if !self.failing {
            self.failing = true;
            tracing::warn!(url = %self.inner.url, key = %self.key, error = %error,
                resume_from = self.next_rev, "etcd watch interrupted; resuming");
            return Some(Feed::Broken(error));
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        None
    }

    /// The next batch of events. Cancel-safe at every await: dropping the future loses no
    /// event (a reopened stream starts from the revision after the last one returned).
    pub(super) async fn next(&mut self) -> Feed {
        loop {
            if self.stream.is_none() {
                match self.open().await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(e) => match self.fail(e).await {
                        Some(feed) => return feed,
                        None => continue,
                    },
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            let message = stream.message().await;
            match message {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        self.stream = None;
                        if resp.compact_revision() > 0 {
                            tracing::warn!(url = %self.inner.url, key = %self.key,
                                wanted = self.next_rev, compacted = resp.compact_revision(),
                                "etcd watch history compacted; re-reading the current state");
                            return Feed::Compacted(resp.compact_revision());
                        }
                        let error = KvError::Unavailable {
                            url: self.inner.url.clone(),
                            reason: format!(
                                "watch cancelled by the server: {}",
                                resp.cancel_reason()
                            ),
                        };
                        if let Some(feed) = self.fail(error).await {
                            return feed;
                        }
                        continue;
                    }
                    // A working stream again.
                    self.failing = false;
                    self.backoff = BACKOFF_START;
                    let events = resp.events();
                    if let Some(last) = events.last().and_then(|e| e.kv()) {
                        self.next_rev = last.mod_revision() + 1;
                        return Feed::Events(events.to_vec());
                    }
                }
                Ok(None) => {
                    let error = KvError::Unavailable {
                        url: self.inner.url.clone(),
                        reason: "the watch stream ended".into(),
                    };
                    if let Some(feed) = self.fail(error).await {
                        return feed;
                    }
                }
                Err(e) => {
                    let error = self.inner.map_err("watch", e);
                    if let Some(feed) = self.fail(error).await {
                        return feed;
                    }
                }
            }
        }
    }
}

/// Why a watch task stopped waiting.
enum Wake<T> {
    Next(T),
    Stop,
}

/// Waits for `fut` unless the consumer went away or the store closed.
async fn until_stopped<T, I>(
    fut: impl std::future::Future<Output = T>,
    tx: &mpsc::UnboundedSender<I>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Wake<T> {
    tokio::select! {
        v = fut => Wake::Next(v),
        _ = tx.closed() => Wake::Stop,
        _ = shutdown.wait_for(|closed| *closed) => Wake::Stop,
    }
}

fn compacted_error(inner: &Inner, what: &str, compacted: i64) -> KvError {
    KvError::Backend {
        url: inner.url.clone(),
        message: format!(
            "watch on {what}: etcd compacted its history up to revision {compacted}; \
             changes in between were skipped, continuing from the current value"
        ),
    }
}

/// The current value of `full` and the revision it was read at.
async fn read_key(inner: &Inner, full: &str) -> Result<(Option<KvPair>, i64)> {
    let mut kv = inner.kv.clone();
    let resp = inner.call("watch: read", kv.get(full, None)).await?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    Ok((resp.kvs().first().map(|kv| inner.pair(kv)), rev))
}

/// Every pair under `full_prefix` and the revision they were read at.
async fn read_tree(inner: &Inner, full_prefix: &str) -> Result<(BTreeMap<String, KvPair>, i64)> {
    let mut kv = inner.kv.clone();
    let resp = inner
        .call(
            "watch_tree: list",
            kv.get(full_prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    let map = resp
        .kvs()
        .iter()
        .map(|kv| {
            let pair = inner.pair(kv);
            (pair.key.clone(), pair)
        })
        .collect();
    Ok((map, rev))
}

/// `Store::watch`: the current value, then every change, resumed across outages.
pub(super) async fn watch_key(inner: Arc<Inner>, key: String) -> Result<WatchStream> {
    let full = inner.full(&key);
    let (current, rev) = read_key(&inner, &full).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(Ok(current.clone()));
    let mut shutdown = inner.shutdown.subscribe();
    let mut feed = EventFeed::new(inner.clone(), full.clone(), false, rev);
    tokio::spawn(async move {
        // The last index delivered (0: absent), to re-deliver only real changes after a
        // compaction.
        let mut delivered = current.map(|p| p.last_index);
        loop {
            let feed_item = match until_stopped(feed.next(), &tx, &mut shutdown).await {
                Wake::Next(item) => item,
                Wake::Stop => return,
            };
            match feed_item {
                Feed::Events(events) => {
                    for event in events {
                        let Some(kv) = event.kv() else { continue };
                        let item = match event.event_type() {
                            EventType::Put => Some(inner.pair(kv)),
                            EventType::Delete => None,
                        };
                        delivered = item.as_ref().map(|p| p.last_index);
                        if tx.send(Ok(item)).is_err() {
                            return;
                        }
                    }
                }
                Feed::Broken(error) => {
                    if tx.send(Err(error)).is_err() {
                        return;
                    }
                }
                Feed::Compacted(compacted) => {
                    let read = until_stopped(read_key(&inner, &full), &tx, &mut shutdown).await;
                    let (now, rev) = match read {
                        Wake::Stop => return,
                        Wake::Next(Ok(read)) => read,
                        Wake::Next(Err(e)) => {
                            // Try again: the feed re-reports the compaction.
                            let _ = tx.send(Err(e));
                            tokio::time::sleep(BACKOFF_MAX).await;
                            continue;
                        }
                    };
                    let _ = tx.send(Err(compacted_error(&inner, &key, compacted)));
                    let index = now.as_ref().map(|p| p.last_index);
                    if index != delivered {
                        delivered = index;
                        if tx.send(Ok(now)).is_err() {
                            return;
                        }
                    }
                    feed.resume_after(rev);
                }
            }
        }
    });
    Ok(Box::pin(
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
    ))
}

/// `Store::watch_tree`: the sorted list, then the whole list after every revision that
/// changed something under the directory, resumed across outages.
pub(super) async fn watch_tree(inner: Arc<Inner>, dir_prefix: String) -> Result<TreeWatchStream> {
    let full_prefix = inner.full(&dir_prefix);
    let (mut map, rev) = read_tree(&inner, &full_prefix).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    let _ = tx.send(Ok(map.values().cloned().collect()));
    let mut shutdown = inner.shutdown.subscribe();
    let mut feed = EventFeed::new(inner.clone(), full_prefix.clone(), true, rev);
    tokio::spawn(async move {
        loop {
            let feed_item = match until_stopped(feed.next(), &tx, &mut shutdown).await {
                Wake::Next(item) => item,
                Wake::Stop => return,
            };
            match feed_item {
                Feed::Events(events) => {
                    // One list per revision: a transaction's changes come together.
                    let mut current_rev = None;
                    for event in events {
                        let Some(kv) = event.kv() else { continue };
                        let rev = kv.mod_revision();
                        if current_rev.is_some_and(|r| r != rev)
                            && tx.send(Ok(map.values().cloned().collect())).is_err()
                        {
                            return;
                        }
                        current_rev = Some(rev);
                        let pair = inner.pair(kv);
                        match event.event_type() {
                            EventType::Put => {
                                map.insert(pair.key.clone(), pair);
                            }
                            EventType::Delete => {
                                map.remove(&pair.key);
                            }
                        }
                    }
                    if current_rev.is_some()
                        && tx.send(Ok(map.values().cloned().collect())).is_err()
                    {
                        return;
                    }
                }
                Feed::Broken(error) => {
                    if tx.send(Err(error)).is_err() {
                        return;
                    }
                }
                Feed::Compacted(compacted) => {
                    let read =
                        until_stopped(read_tree(&inner, &full_prefix), &tx, &mut shutdown).await;
                    let (now, rev) = match read {
                        Wake::Stop => return,
                        Wake::Next(Ok(read)) => read,
                        Wake::Next(Err(e)) => {
                            let _ = tx.send(Err(e));
                            tokio::time::sleep(BACKOFF_MAX).await;
                            continue;
                        }
                    };
                    let _ = tx.send(Err(compacted_error(&inner, &dir_prefix, compacted)));
                    map = now;
                    if tx.send(Ok(map.values().cloned().collect())).is_err() {
                        return;
                    }
                    feed.resume_after(rev);
                }
            }
        }
    });
    Ok(Box::pin(
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
    ))
}
