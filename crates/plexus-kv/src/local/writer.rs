//! The writer thread of the in-process engine: batches, commits, expires, notifies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc::UnboundedSender, oneshot};

use super::backing::{Backing, Entry};
use super::now_ms;
use crate::error::{KvError, Result};
use crate::types::{Compare, KvPair, Txn, TxnOp};

/// Most requests applied in one commit.
const MAX_BATCH: usize = 1024;

/// A request to the writer thread.
pub(crate) enum Request {
    Put {
        key: String,
        value: Vec<u8>,
        expires_ms: u64,
        previous: Option<u64>,
        create_only: bool,
        reply: oneshot::Sender<Result<KvPair>>,
    },
    Delete {
        key: String,
        previous: Option<u64>,
        reply: oneshot::Sender<Result<()>>,
    },
    DeleteTree {
        prefix: String,
        reply: oneshot::Sender<Result<()>>,
    },
    Txn {
        txn: Txn,
        reply: oneshot::Sender<Result<Vec<KvPair>>>,
    },
    Watch {
        watcher: Watcher,
        reply: oneshot::Sender<Result<()>>,
    },
    /// Commit durably now, with or without writes of its own (see `Store::sync`).
    Sync {
        reply: oneshot::Sender<Result<()>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
    Shutdown,
}

/// A registered watch.
pub(crate) enum Watcher {
    Key {
        key: String,
        tx: UnboundedSender<Result<Option<KvPair>>>,
    },
    Tree {
        prefix: String,
        tx: UnboundedSender<Result<Vec<KvPair>>>,
    },
}

impl Watcher {
    fn is_closed(&self) -> bool {
        match self {
            Watcher::Key { tx, .. } => tx.is_closed(),
            Watcher::Tree { tx, .. } => tx.is_closed(),
        }
    }
}

/// A reply held back until the batch is committed.
enum Done {
    Pair(oneshot::Sender<Result<KvPair>>, Result<KvPair>),
    Unit(oneshot::Sender<Result<()>>, Result<()>),
    Pairs(oneshot::Sender<Result<Vec<KvPair>>>, Result<Vec<KvPair>>),
}

impl Done {
    fn finish(self, commit_err: Option<&KvError>) {
        fn pick<T>(r: Result<T>, commit_err: Option<&KvError>) -> Result<T> {
            match (r, commit_err) {
                (Ok(_), Some(e)) => Err(e.clone()),
                (r, _) => r,
            }
        }
        // A caller that stopped waiting is not an error.
        match self {
            Done::Pair(tx, r) => drop(tx.send(pick(r, commit_err))),
            Done::Unit(tx, r) => drop(tx.send(pick(r, commit_err))),
            Done::Pairs(tx, r) => drop(tx.send(pick(r, commit_err))),
        }
    }
}

struct Writer {
    backing: Arc<dyn Backing>,
    url: String,
    revision: u64,
    /// (deadline, key) of every entry with a TTL; stale pairs are skipped when reaped.
    expiries: BTreeSet<(u64, String)>,
    watchers: Vec<Watcher>,
    // Per batch:
    pending: BTreeMap<String, Option<Entry>>,
    events: Vec<(String, Option<KvPair>)>,
}

/// Runs the writer until the store is closed or dropped.
pub(crate) fn run(backing: Arc<dyn Backing>, url: String, rx: Receiver<Request>) {
    let mut writer = Writer {
        backing,
        url,
        revision: 0,
        expiries: BTreeSet::new(),
        watchers: Vec::new(),
        pending: BTreeMap::new(),
        events: Vec::new(),
    };
    if let Err(e) = writer.load() {
        tracing::error!(error = %e, "cannot read the store; refusing writes");
        for request in rx {
            fail(request, &e);
        }
        return;
    }
    loop {
        let first = match writer.next_deadline() {
            Some(deadline) => {
                let wait = deadline.saturating_sub(now_ms());
                match rx.recv_timeout(Duration::from_millis(wait)) {
                    Ok(r) => Some(r),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            None => match rx.recv() {
                Ok(r) => Some(r),
                Err(_) => return,
            },
        };
        let mut batch: Vec<Request> = first.into_iter().collect();
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        if let Some(closing) = writer.process(batch) {
            // Let go of the backing (and so of the file) before saying it is closed.
            drop(writer);
            for reply in closing {
                let _ = reply.send(());
            }
            return;
        }
    }
}

fn fail(request: Request, e: &KvError) {
    let e = e.clone();
    match request {
        Request::Put { reply, .. } => drop(reply.send(Err(e))),
        Request::Delete { reply, .. }
        | Request::DeleteTree { reply, .. }
        | Request::Watch { reply, .. }
        | Request::Sync { reply } => drop(reply.send(Err(e))),
        Request::Txn { reply, .. } => drop(reply.send(Err(e))),
        Request::Close { reply } => drop(reply.send(())),
        Request::Shutdown => {}
    }
}

impl Writer {
    fn load(&mut self) -> Result<()> {
        self.revision = self.backing.revision()?;
        for (key, entry) in self.backing.range("")? {
            if entry.expires_ms != 0 {
                self.expiries.insert((entry.expires_ms, key));
            }
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<u64> {
        self.expiries.first().map(|(t, _)| *t)
    }

    /// Applies one batch; returns the close requests to answer when the writer must stop.
    fn process(&mut self, batch: Vec<Request>) -> Option<Vec<oneshot::Sender<()>>> {
        let start_revision = self.revision;
        // Durable unless every write of the batch is a relaxed transaction.
        let mut durable = false;
        // A sync commits even with nothing to write: that flushes the relaxed commits before.
        let mut sync = false;
        let mut done = Vec::with_capacity(batch.len());
        let mut new_watchers = Vec::new();
        let mut closing = Vec::new();
        let mut stop = false;
        self.reap_expired();
        for request in batch {
            match request {
                Request::Put {
                    key,
                    value,
                    expires_ms,
                    previous,
                    create_only,
                    reply,
                } => {
                    durable = true;
                    let r = self.put(key, value, expires_ms, previous, create_only);
                    done.push(Done::Pair(reply, r));
                }
                Request::Delete {
                    key,
                    previous,
                    reply,
                } => {
                    durable = true;
                    let r = self.delete(key, previous);
                    done.push(Done::Unit(reply, r));
                }
                Request::DeleteTree { prefix, reply } => {
                    durable = true;
                    let r = self.delete_tree(&prefix);
                    done.push(Done::Unit(reply, r));
                }
                Request::Txn { txn, reply } => {
                    durable |= !txn.relaxed;
                    let r = self.txn(txn);
                    done.push(Done::Pairs(reply, r));
                }
                Request::Watch { watcher, reply } => new_watchers.push((watcher, reply)),
                Request::Sync { reply } => {
                    durable = true;
                    sync = true;
                    done.push(Done::Unit(reply, Ok(())));
                }
                Request::Close { reply } => {
                    closing.push(reply);
                    stop = true;
                }
                Request::Shutdown => stop = true,
            }
        }

        let commit_err = if self.pending.is_empty() && !sync {
            None
        } else {
            self.backing
                .commit(&self.pending, self.revision, durable)
                .err()
        };
        self.pending.clear();
        let events = std::mem::take(&mut self.events);
        if let Some(e) = &commit_err {
            tracing::error!(url = %self.url, error = %e, "store commit failed");
            self.revision = start_revision;
        } else {
            self.notify(&events);
        }
        for d in done {
            d.finish(commit_err.as_ref());
        }
        for (watcher, reply) in new_watchers {
            let r = self.register(watcher);
            let _ = reply.send(r);
        }
        if stop {
            // Dropping the watchers ends their streams.
            self.watchers.clear();
            return Some(closing);
        }
        None
    }

    /// The live entry at `key` as this batch sees it.
    fn current(&self, key: &str) -> Result<Option<Entry>> {
        let entry = match self.pending.get(key) {
            Some(e) => e.clone(),
            None => self.backing.get(key)?,
        };
        Ok(entry.filter(|e| !e.expired(now_ms())))
    }

    /// Live entries under `prefix` as this batch sees them.
    fn current_range(&self, prefix: &str) -> Result<BTreeMap<String, Entry>> {
        let mut view: BTreeMap<String, Entry> = self.backing.range(prefix)?.into_iter().collect();
        for (key, entry) in self.pending.range(prefix.to_string()..) {
            if !key.starts_with(prefix) {
                break;
            }
            match entry {
                Some(e) => view.insert(key.clone(), e.clone()),
                None => view.remove(key),
            };
        }
        let now = now_ms();
        view.retain(|_, e| !e.expired(now));
        Ok(view)
    }

    fn write(&mut self, key: String, entry: Option<Entry>) {
        if let Some(e) = &entry {
            if e.expires_ms != 0 {
                self.expiries.insert((e.expires_ms, key.clone()));
            }
        }
        let pair = entry.clone().map(|e| e.into_pair(key.clone()));
        self.pending.insert(key.clone(), entry);
        self.events.push((key, pair));
    }

    fn check_previous(&self, key: &str, cur: &Option<Entry>, previous: Option<u64>) -> Result<()> {
        if let Some(expected) = previous {
            match cur {
                None => {
                    return Err(KvError::KeyNotFound {
                        key: key.to_string(),
                    })
                }
                Some(e) if e.index != expected => {
                    return Err(KvError::KeyModified {
                        key: key.to_string(),
                        expected,
                        found: e.index,
                    })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn put(
        &mut self,
        key: String,
        value: Vec<u8>,
        expires_ms: u64,
        previous: Option<u64>,
        create_only: bool,
    ) -> Result<KvPair> {
        let cur = self.current(&key)?;
        if create_only && cur.is_some() {
            return Err(KvError::KeyExists { key });
        }
        self.check_previous(&key, &cur, previous)?;
        self.revision += 1;
        let entry = Entry {
            value,
            index: self.revision,
            expires_ms,
        };
        let pair = entry.clone().into_pair(key.clone());
        self.write(key, Some(entry));
        Ok(pair)
    }

    fn delete(&mut self, key: String, previous: Option<u64>) -> Result<()> {
        let cur = self.current(&key)?;
        if cur.is_none() {
            return Err(KvError::KeyNotFound { key });
        }
        self.check_previous(&key, &cur, previous)?;
        self.revision += 1;
        self.write(key, None);
        Ok(())
    }

    fn delete_tree(&mut self, prefix: &str) -> Result<()> {
        let keys: Vec<String> = self.current_range(prefix)?.into_keys().collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.revision += 1;
        for key in keys {
            self.write(key, None);
        }
        Ok(())
    }

    fn txn(&mut self, txn: Txn) -> Result<Vec<KvPair>> {
        for compare in &txn.compares {
            let cur = self.current(compare.key())?;
            let reason = match (compare, &cur) {
                (Compare::Absent { .. }, None) => None,
                (Compare::Absent { .. }, Some(e)) => {
                    Some(format!("expected absent, found at index {}", e.index))
                }
                (Compare::Index { index, .. }, Some(e)) if e.index == *index => None,
                (Compare::Index { index, .. }, Some(e)) => {
                    Some(format!("expected index {index}, found {}", e.index))
                }
                (Compare::Index { index, .. }, None) => {
                    Some(format!("expected index {index}, found no key"))
                }
            };
            if let Some(reason) = reason {
                return Err(KvError::TxnConflict {
                    key: compare.key().to_string(),
                    reason,
                });
            }
        }
        // Reads first, so that a read error leaves nothing half-applied in the batch.
        let mut present = Vec::with_capacity(txn.ops.len());
        for op in &txn.ops {
            present.push(self.current(op.key())?.is_some());
        }
        self.revision += 1;
        let mut written = Vec::new();
        for (op, present) in txn.ops.into_iter().zip(present) {
            match op {
                TxnOp::Put { key, value } => {
                    let entry = Entry {
                        value,
                        index: self.revision,
                        expires_ms: 0,
                    };
                    written.push(entry.clone().into_pair(key.clone()));
                    self.write(key, Some(entry));
                }
                TxnOp::Delete { key } => {
                    if present {
                        self.write(key, None);
                    }
                }
            }
        }
        Ok(written)
    }

    fn reap_expired(&mut self) {
        let now = now_ms();
        let mut reaped = Vec::new();
        while let Some((deadline, _)) = self.expiries.first() {
            if *deadline > now {
                break;
            }
            if let Some((deadline, key)) = self.expiries.pop_first() {
                reaped.push((deadline, key));
            }
        }
        let mut bumped = false;
        for (deadline, key) in reaped {
            // Only if the entry is still the one that carried this deadline.
            let stored = match self.pending.get(&key) {
                Some(e) => e.clone(),
                None => self.backing.get(&key).ok().flatten(),
            };
            if stored.is_some_and(|e| e.expires_ms == deadline) {
                if !bumped {
                    self.revision += 1;
                    bumped = true;
                }
                self.pending.insert(key.clone(), None);
                self.events.push((key, None));
            }
        }
    }

    fn notify(&mut self, events: &[(String, Option<KvPair>)]) {
        if events.is_empty() {
            return;
        }
        self.watchers.retain(|w| !w.is_closed());
        for watcher in &self.watchers {
            match watcher {
                Watcher::Key { key, tx } => {
                    for (k, pair) in events {
                        if k == key {
                            let _ = tx.send(Ok(pair.clone()));
                        }
                    }
                }
                Watcher::Tree { prefix, tx } => {
                    if events.iter().any(|(k, _)| k.starts_with(prefix.as_str())) {
                        let list = self
                            .current_range(prefix)
                            .map(|m| m.into_iter().map(|(k, e)| e.into_pair(k)).collect());
                        let _ = tx.send(list);
                    }
                }
            }
        }
    }

    fn register(&mut self, watcher: Watcher) -> Result<()> {
        match &watcher {
            Watcher::Key { key, tx } => {
                let cur = self.current(key)?.map(|e| e.into_pair(key.clone()));
                let _ = tx.send(Ok(cur));
            }
            Watcher::Tree { prefix, tx } => {
                let list = self
                    .current_range(prefix)?
                    .into_iter()
                    .map(|(k, e)| e.into_pair(k))
                    .collect();
                let _ = tx.send(Ok(list));
            }
        }
        self.watchers.push(watcher);
        Ok(())
    }
}
