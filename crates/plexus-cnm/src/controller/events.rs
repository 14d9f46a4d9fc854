//! The event bus: every network, endpoint and sandbox change is recorded as an [`Event`] in
//! the same store transaction as the change, then published to live subscribers in commit
//! order.
//!
//! Revisions are contiguous (1, 2, 3, ...) and survive restarts (the counter continues from
//! `plexus/v1/event-head`). The store keeps the last [`EVENT_HISTORY`] events, older ones are
//! deleted by the transactions that add new ones, so the history is bounded without a sweeper.
//!
//! A subscriber first gets the stored events after the revision it asks for, then live ones;
//! it drops live events it already replayed, so the seam has no gap and no duplicate. Live
//! events go through a bounded broadcast channel: a slow subscriber never blocks a commit, it
//! falls behind; when it has fallen further behind than the channel holds, it reads the missed
//! events back from the store, and only when those were trimmed from the history too does it
//! get [`CnmError::EventsLost`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use plexus_kv::{KvError, KvPair, Store, Txn};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch, Mutex};

use super::{encode, Controller};
use crate::error::{CnmError, Result};
use crate::model::{Endpoint, Network, Sandbox, Scope};
use crate::store_layout as keys;

/// How many events the store keeps.
pub const EVENT_HISTORY: u64 = 10_000;

/// Live events a subscriber may fall behind by before it reads them back from the store.
const LIVE_CAPACITY: usize = 4096;

/// Below this many missing revisions a replay reads them one by one; above, it lists them.
const REPLAY_BY_KEY: u64 = 64;

/// What kind of object an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A network.
    Network,
    /// An endpoint (a sandbox on a network).
    Endpoint,
    /// A sandbox.
    Sandbox,
    /// A service: its `create`, `update` and `destroy`, and its backends' `connect` and
    /// `disconnect` (a task's address on one of its networks joining or leaving it).
    Service,
}

impl EventType {
    /// Its name (`network`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Network => "network",
            EventType::Endpoint => "endpoint",
            EventType::Sandbox => "sandbox",
            EventType::Service => "service",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum EventAction {
    /// A network or sandbox was made.
    Create,
    /// A network or sandbox was removed.
    Destroy,
    /// An endpoint joined a sandbox to a network.
    Connect,
    /// An endpoint was removed.
    Disconnect,
    /// A service was changed.
    Update,
}

impl EventAction {
    /// Its name (`create`), as Docker names the action.
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Create => "create",
            EventAction::Destroy => "destroy",
            EventAction::Connect => "connect",
            EventAction::Disconnect => "disconnect",
            EventAction::Update => "update",
        }
    }
}

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its place in the log: 1, 2, 3, ... with no gap.
    pub revision: u64,
    /// Wall-clock time of the commit, in nanoseconds since the Unix epoch.
    pub time_nano: u64,
    /// The object's kind.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// What happened to it.
    pub action: EventAction,
    /// The object's id (an endpoint event: the endpoint's).
    pub actor: String,
    /// `name`, `type` (the driver) for networks; `name` for sandboxes; for endpoints
    /// `network` (id), `name` and `type` (the network's name and driver), `container` (the
    /// sandbox's id) and `sandbox` (its name). For services `name` and `mode` (`vip`,
    /// `dnsrr`); for a backend's `connect`/`disconnect` (actor: the service's id) also
    /// `network` (id), `endpoint` (id), `container` (the task's sandbox id), `sandbox` (its
    /// name) and its addresses `ipv4`/`ipv6` (without prefix) when it has them.
    pub attributes: BTreeMap<String, String>,
    /// The network's scope (sandboxes: local).
    pub scope: Scope,
    /// For a live event: when its commit returned in this process (what delivery latency is
    /// measured from). `None` for an event read back from the store.
    #[serde(skip)]
    pub committed_at: Option<Instant>,
}

impl Event {
    fn new(kind: EventType, action: EventAction, actor: &str, scope: Scope) -> Self {
        Event {
            revision: 0,
            time_nano: 0,
            kind,
            action,
            actor: actor.to_string(),
            attributes: BTreeMap::new(),
            scope,
            committed_at: None,
        }
    }

    fn attr(mut self, key: &str, value: &str) -> Self {
        self.attributes.insert(key.to_string(), value.to_string());
        self
    }

    /// A network's `create` or `destroy`.
    pub(super) fn network(action: EventAction, n: &Network) -> Self {
        Event::new(EventType::Network, action, &n.id, n.scope)
            .attr("name", &n.name)
            .attr("type", &n.driver)
    }

    /// An endpoint's `connect` or `disconnect`.
    pub(super) fn endpoint(action: EventAction, ep: &Endpoint, n: &Network, sandbox: &str) -> Self {
        Event::new(EventType::Endpoint, action, &ep.id, n.scope)
            .attr("network", &n.id)
            .attr("name", &n.name)
            .attr("type", &n.driver)
            .attr("container", &ep.sandbox_id)
            .attr("sandbox", sandbox)
    }

    /// A service's `create`, `update` or `destroy`.
    pub(super) fn service(action: EventAction, s: &crate::service::Service) -> Self {
        Event::new(EventType::Service, action, &s.id, s.scope)
            .attr("name", &s.name)
            .attr("mode", s.endpoint_mode.as_str())
    }

    /// A backend's `connect` or `disconnect`: `task`'s address `backend` joining or leaving
    /// service `s`.
    pub(super) fn backend(
        action: EventAction,
        s: &crate::service::Service,
        task: &crate::service::Task,
        backend: &crate::service::Backend,
    ) -> Self {
        let mut e = Event::service(action, s)
            .attr("network", &backend.network_id)
            .attr("endpoint", &backend.endpoint_id)
            .attr("container", &task.sandbox_id)
            .attr("sandbox", &task.name);
        if let Some(a) = backend.ipv4 {
            e = e.attr("ipv4", &a.addr().to_string());
        }
        if let Some(a) = backend.ipv6 {
            e = e.attr("ipv6", &a.addr().to_string());
        }
        e
    }

    /// A sandbox's `create` or `destroy`.
    pub(super) fn sandbox(action: EventAction, s: &Sandbox) -> Self {
        Event::new(EventType::Sandbox, action, &s.id, Scope::Local).attr("name", &s.name)
    }
}

/// The controller's event state: the last committed revision and the live channel.
pub(super) struct EventBus {
    /// The last revision committed; `None` until read from the store. Held across a commit,
    /// so revisions, commits and publications all happen in one order.
    head: Mutex<Option<u64>>,
    live: broadcast::Sender<Arc<Event>>,
    closed: watch::Sender<bool>,
}

impl EventBus {
    pub(super) fn new() -> Self {
        Self {
            head: Mutex::new(None),
            live: broadcast::channel(LIVE_CAPACITY).0,
            closed: watch::channel(false).0,
        }
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

async fn read_head(store: &dyn Store) -> Result<u64> {
    match store.get(keys::EVENT_HEAD).await {
        Ok(pair) => serde_json::from_slice(&pair.value).map_err(|e| CnmError::Corrupt {
            key: keys::EVENT_HEAD.to_string(),
            reason: e.to_string(),
        }),
        Err(KvError::KeyNotFound { .. }) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

fn decode_event(pair: &KvPair) -> Result<Event> {
    serde_json::from_slice(&pair.value).map_err(|e| CnmError::Corrupt {
        key: pair.key.clone(),
        reason: e.to_string(),
    })
}

/// Stored events with revisions in `after+1 ..= upto`, in order.
async fn stored_events(store: &dyn Store, after: u64, upto: u64) -> Result<Vec<Event>> {
    if upto <= after {
        return Ok(Vec::new());
    }
    if upto - after <= REPLAY_BY_KEY {
        let mut out = Vec::new();
        for rev in after + 1..=upto {
            match store.get(&keys::event(rev)).await {
                Ok(pair) => out.push(decode_event(&pair)?),
                Err(KvError::KeyNotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    for pair in store.list(keys::EVENTS).await? {
        let event = decode_event(&pair)?;
        if event.revision > after && event.revision <= upto {
            out.push(event);
        }
    }
    Ok(out)
}

/// A stream of events: the stored ones after a revision, then live ones, in revision order.
pub struct Subscription {
    store: Arc<dyn Store>,
    live: broadcast::Receiver<Arc<Event>>,
    closed: watch::Receiver<bool>,
    backlog: VecDeque<Event>,
    /// The last revision handed out (or skipped as already seen).
    last: u64,
}

impl Subscription {
    /// The last revision delivered: subscribe again from here to resume without a gap.
    pub fn last_revision(&self) -> u64 {
        self.last
    }

    /// The next event; `Ok(None)` once the controller closed its events (the daemon stops).
    /// Fails with [`CnmError::EventsLost`] when the subscriber fell so far behind that the
    /// events it missed are no longer stored.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        loop {
            if let Some(event) = self.backlog.pop_front() {
                self.last = event.revision;
                return Ok(Some(event));
            }
            if *self.closed.borrow() {
                return Ok(None);
            }
            let received = tokio::select! {
                r = self.live.recv() => r,
                _ = self.closed.changed() => return Ok(None),
            };
            match received {
                Ok(event) if event.revision <= self.last => {}
                Ok(event) if event.revision == self.last + 1 => {
                    self.last = event.revision;
                    return Ok(Some((*event).clone()));
                }
                // Ahead of what was delivered: read the missing ones from the store first.
                Ok(event) => {
                    self.refill(event.revision - 1).await?;
                    self.backlog.push_back((*event).clone());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let head = read_head(self.store.as_ref()).await?;
                    self.refill(head).await?;
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            }
        }
    }

    /// Queues the stored events after `last` up to `upto`; they must start right after it.
    async fn refill(&mut self, upto: u64) -> Result<()> {
        let events = stored_events(self.store.as_ref(), self.last, upto).await?;
        let first = events.first().map(|e| e.revision);
        if upto > self.last && first != Some(self.last + 1) {
            return Err(CnmError::EventsLost {
                after: self.last,
                oldest: first.unwrap_or(upto + 1),
            });
        }
        self.backlog.extend(events);
        Ok(())
    }
}

impl Controller {
    /// Events from the store after revision `since`, then live ones as they commit, with no
    /// gap and no duplicate in between. `None`: only events committed from now on.
    /// `Some(0)`: everything, which fails with [`CnmError::EventsLost`] once the history
    /// was trimmed (as does any `since` older than the oldest stored event).
    pub async fn subscribe(&self, since: Option<u64>) -> Result<Subscription> {
        self.subscribe_inner(since, true).await
    }

    /// Every event still in the history, then live ones: [`subscribe`](Self::subscribe) for
    /// a reader who selects by time (Docker's `since`) and accepts that old ones are gone.
    pub async fn subscribe_stored(&self) -> Result<Subscription> {
        self.subscribe_inner(Some(0), false).await
    }

    async fn subscribe_inner(&self, since: Option<u64>, strict: bool) -> Result<Subscription> {
        // The receiver first, then the store: whatever commits in between arrives both ways
        // and the revision check drops the second copy.
        let live = self.events.live.subscribe();
        let closed = self.events.closed.subscribe();
        // Through the lock a commit holds until its events are on disk and published.
        let head = self.event_revision().await?;
        let mut sub = Subscription {
            store: self.store.local_store().clone(),
            live,
            closed,
            backlog: VecDeque::new(),
            last: head,
        };
        match since {
            None => {}
            Some(since) if since > head => {
                return Err(CnmError::invalid(
                    "since",
                    format!("revision {since} is after the last one, {head}"),
                ))
            }
            Some(since) => {
                let events = stored_events(self.store.local_store().as_ref(), since, head).await?;
                let first = events.first().map(|e| e.revision);
                if strict && since < head && first != Some(since + 1) {
                    return Err(CnmError::EventsLost {
                        after: since,
                        oldest: first.unwrap_or(head + 1),
                    });
                }
                sub.backlog = events.into();
                sub.last = since;
            }
        }
        Ok(sub)
    }

    /// The last committed event revision (0 before the first).
    pub async fn event_revision(&self) -> Result<u64> {
        let mut head = self.events.head.lock().await;
        if head.is_none() {
            *head = Some(read_head(self.store.local_store().as_ref()).await?);
        }
        Ok(head.unwrap_or(0))
    }

    /// Ends every subscription (their `next` answers `None`): for a daemon that stops, so
    /// streaming answers finish.
    pub fn close_events(&self) {
        self.events.closed.send_replace(true);
    }

    /// Commits `txn` with `events` written into it (revisions assigned, the history
    /// trimmed), then publishes them. The events are lost with the transaction if it fails.
    /// Transactions that carry events are always durable before this returns: a live
    /// subscriber must never see a revision that a crash could take back and give to another
    /// event. The transaction commits relaxed and the store is synced while the observers
    /// follow it, so the disk flush and the observers' work overlap; events are published
    /// once both are done.
    pub(super) async fn commit(
        &self,
        mut txn: Txn,
        events: Vec<Event>,
    ) -> std::result::Result<Vec<KvPair>, CnmError> {
        if events.is_empty() {
            return Ok(self.store.txn(txn).await?);
        }
        let mut head = self.events.head.lock().await;
        let last = match *head {
            Some(h) => h,
            None => read_head(self.store.local_store().as_ref()).await?,
        };
        let time_nano = now_nanos();
        let mut events = events;
        for (i, event) in events.iter_mut().enumerate() {
            let rev = last + 1 + i as u64;
            event.revision = rev;
            event.time_nano = time_nano;
            // Another writer of the same store that took this revision makes us fail
            // rather than overwrite its event.
            txn = txn
                .compare_absent(keys::event(rev))
                .put(keys::event(rev), encode(event));
            if rev > EVENT_HISTORY {
                txn = txn.delete(keys::event(rev - EVENT_HISTORY));
            }
        }
        let new_head = last + events.len() as u64;
        txn = txn.put(keys::EVENT_HEAD, encode(&new_head));
        txn.relaxed = true;
        let written = match self.store.txn(txn).await {
            Ok(w) => w,
            Err(e) => {
                *head = Some(last);
                return Err(e.into());
            }
        };
        *head = Some(new_head);
        let committed = Instant::now();
        let events: Vec<Arc<Event>> = events
            .into_iter()
            .map(|mut event| {
                event.committed_at = Some(committed);
                Arc::new(event)
            })
            .collect();
        // Side by side: the flush, and each observer (the resolver's round trip, the load
        // balancer's tables), none of which depends on another.
        let observed =
            futures::future::join_all(self.observers.iter().map(|o| o.committed(self, &events)));
        let (synced, _) = tokio::join!(self.store.sync(), observed);
        for event in &events {
            // No receiver is not an error: nobody listens.
            let _ = self.events.live.send(event.clone());
        }
        // Held until now: a subscriber reads the head only once it is on disk.
        drop(head);
        if let Err(e) = synced {
            // Applied (every read sees it) but perhaps not on disk: said, not hidden.
            tracing::error!(error = %e, "the store could not flush a committed change to disk; a crash may lose it");
            return Err(e.into());
        }
        Ok(written)
    }
}
