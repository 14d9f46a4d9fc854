//! The state machine on redb (openraft's `RaftStateMachine`), its snapshots, and the hub
//! that hands applied changes to watchers.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StoredMembership,
};
use plexus_kv::KvPair;
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

use crate::apply::{self, Change, Tables};
use crate::db::{
    self, read_err, write_err, Stored, APPLIED, EXPIRY, KV, MEMBERSHIP, META, REVISION, SNAP_DATA,
    SNAP_META,
};
use crate::types::{Applied, Peer, TypeConfig};

type KeyTx = UnboundedSender<plexus_kv::Result<Option<KvPair>>>;
type TreeTx = UnboundedSender<plexus_kv::Result<Vec<KvPair>>>;

/// Watchers, registered and served under one lock with the apply that feeds them, so a
/// watch sees the state it starts from and then every change after it.
#[derive(Default)]
pub(crate) struct Hub {
    keys: HashMap<String, Vec<(u64, KeyTx)>>,
    trees: Vec<(String, u64, TreeTx)>,
}

impl Hub {
    /// Ends every watch of `client` (its senders are dropped).
    pub(crate) fn drop_client(&mut self, client: u64) {
        for list in self.keys.values_mut() {
            list.retain(|(c, _)| *c != client);
        }
        self.keys.retain(|_, l| !l.is_empty());
        self.trees.retain(|(_, c, _)| *c != client);
    }
}

/// What the state machine and the store share.
pub(crate) struct Shared {
    pub db: Arc<Database>,
    hub: Mutex<Hub>,
}

impl Shared {
    pub(crate) fn new(db: Arc<Database>) -> Arc<Self> {
        Arc::new(Self {
            db,
            hub: Mutex::new(Hub::default()),
        })
    }

    pub(crate) fn hub(&self) -> MutexGuard<'_, Hub> {
        // A panic while holding the lock cannot leave the hub half-updated in a way that
        // matters more than losing watchers: carry on with what is there.
        self.hub.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads one key.
    pub(crate) fn get(&self, key: &str) -> Result<Option<KvPair>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(KV).map_err(|e| e.to_string())?;
        get_in(&table, key)
    }

    /// Every key starting with `prefix`, sorted.
    pub(crate) fn list(&self, prefix: &str) -> Result<Vec<KvPair>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(KV).map_err(|e| e.to_string())?;
        list_in(&table, prefix)
    }

    /// Registers a key watch; returns the current value, read under the hub lock.
    pub(crate) fn watch_key(
        &self,
        client: u64,
        key: &str,
        tx: KeyTx,
    ) -> Result<Option<KvPair>, String> {
        let mut hub = self.hub();
        let current = self.get(key)?;
        hub.keys
            .entry(key.to_string())
            .or_default()
            .push((client, tx));
        Ok(current)
    }

    /// Registers a tree watch; returns the current list, read under the hub lock.
    pub(crate) fn watch_tree(
        &self,
        client: u64,
        prefix: &str,
        tx: TreeTx,
    ) -> Result<Vec<KvPair>, String> {
        let mut hub = self.hub();
        let current = self.list(prefix)?;
        hub.trees.push((prefix.to_string(), client, tx));
        Ok(current)
    }

    /// Deadlines due at `now_ms`: (key, index), at most `limit`.
    pub(crate) fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<(String, u64)>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(EXPIRY).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for item in table
            .range::<(u64, &str)>(..(now_ms.saturating_add(1), ""))
            .map_err(|e| e.to_string())?
        {
            let (k, v) = item.map_err(|e| e.to_string())?;
            out.push((k.value().1.to_string(), v.value()));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Sends changes to watchers (the hub lock held), then drops closed watchers.
    fn dispatch(&self, hub: &mut Hub, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        for (key, pair) in changes {
            if let Some(list) = hub.keys.get_mut(key) {
                list.retain(|(_, tx)| tx.send(Ok(pair.clone().map(Into::into))).is_ok());
            }
        }
        hub.keys.retain(|_, l| !l.is_empty());
        let mut trees = std::mem::take(&mut hub.trees);
        trees.retain(|(prefix, _, tx)| {
            if !changes.iter().any(|(k, _)| k.starts_with(prefix.as_str())) {
                return !tx.is_closed();
            }
            let list = self.list(prefix).map_err(|e| plexus_kv::KvError::Backend {
                url: "raft://".into(),
                message: e,
            });
            tx.send(list).is_ok()
        });
        hub.trees = trees;
    }
}

fn get_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<KvPair>, String> {
    match table.get(key).map_err(|e| e.to_string())? {
        Some(v) => {
            let s: Stored = db::decode(v.value())?;
            Ok(Some(KvPair {
                key: key.to_string(),
                value: s.value,
                last_index: s.index,
            }))
        }
        None => Ok(None),
    }
}

fn list_in(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
) -> Result<Vec<KvPair>, String> {
    let mut out = Vec::new();
    for item in table.range(prefix..).map_err(|e| e.to_string())? {
        let (k, v) = item.map_err(|e| e.to_string())?;
        if !k.value().starts_with(prefix) {
            break;
        }
        let s: Stored = db::decode(v.value())?;
        out.push(KvPair {
            key: k.value().to_string(),
            value: s.value,
            last_index: s.index,
        });
    }
    Ok(out)
}

/// The body of a snapshot.
#[derive(Serialize, Deserialize)]
struct SnapBody {
    revision: u64,
    kvs: Vec<(String, Stored)>,
}

type Membership = StoredMembership<u64, Peer>;

/// The state machine of one node.
pub(crate) struct StateMachine {
    shared: Arc<Shared>,
}

impl StateMachine {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

/// Builds snapshots from a consistent read of the state machine.
pub(crate) struct SnapshotBuilder {
    shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let shared = self.shared.clone();
        let (meta, data) = tokio::task::spawn_blocking(move || build(&shared))
            .await
            .map_err(read_err)?
            .map_err(read_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

fn build(shared: &Shared) -> Result<(SnapshotMeta<u64, Peer>, Vec<u8>), String> {
    let txn = shared.db.begin_read().map_err(|e| e.to_string())?;
    let meta_t = txn.open_table(META).map_err(|e| e.to_string())?;
    let applied: Option<LogId<u64>> = db::meta_get(&meta_t, APPLIED)?.flatten();
    let membership: Membership = db::meta_get(&meta_t, MEMBERSHIP)?.unwrap_or_default();
    let revision: u64 = db::meta_get(&meta_t, REVISION)?.unwrap_or(0);
    let kv = txn.open_table(KV).map_err(|e| e.to_string())?;
    let mut kvs = Vec::new();
    for item in kv.iter().map_err(|e| e.to_string())? {
        let (k, v) = item.map_err(|e| e.to_string())?;
        kvs.push((k.value().to_string(), db::decode(v.value())?));
    }
    drop(txn);
    let data = db::encode(&SnapBody { revision, kvs })?;
    let snapshot_id = match applied {
        Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, revision),
        None => format!("0-0-{revision}"),
    };
    let meta = SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
        snapshot_id,
    };
    // Kept so that a learner far behind gets it without another build.
    let mut w = shared.db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut t = w.open_table(META).map_err(|e| e.to_string())?;
        t.insert(SNAP_META, db::encode(&meta)?.as_slice())
            .map_err(|e| e.to_string())?;
        t.insert(SNAP_DATA, data.as_slice())
            .map_err(|e| e.to_string())?;
    }
    w.set_durability(redb::Durability::None)
        .map_err(|e| e.to_string())?;
    w.commit().map_err(|e| e.to_string())?;
    Ok((meta, data))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, Membership), StorageError<u64>> {
        let txn = self.shared.db.begin_read().map_err(read_err)?;
        let t = txn.open_table(META).map_err(read_err)?;
        let applied = db::meta_get::<Option<LogId<u64>>>(&t, APPLIED)
            .map_err(read_err)?
            .flatten();
        let membership = db::meta_get(&t, MEMBERSHIP)
            .map_err(read_err)?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || apply_batch(&shared, entries))
            .await
            .map_err(write_err)?
            .map_err(write_err)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, Peer>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let shared = self.shared.clone();
        let meta = meta.clone();
        let data = snapshot.into_inner();
        tokio::task::spawn_blocking(move || install(&shared, &meta, data))
            .await
            .map_err(write_err)?
            .map_err(write_err)
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let txn = self.shared.db.begin_read().map_err(read_err)?;
        let t = txn.open_table(META).map_err(read_err)?;
        let meta: Option<SnapshotMeta<u64, Peer>> =
            db::meta_get(&t, SNAP_META).map_err(read_err)?;
        let data = t.get(SNAP_DATA).map_err(read_err)?;
        Ok(match (meta, data) {
            (Some(meta), Some(data)) => Some(Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data.value().to_vec())),
            }),
            _ => None,
        })
    }
}

fn apply_batch(shared: &Shared, entries: Vec<Entry<TypeConfig>>) -> Result<Vec<Applied>, String> {
    let mut hub = shared.hub();
    let mut txn = shared.db.begin_write().map_err(|e| e.to_string())?;
    txn.set_durability(redb::Durability::None)
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(entries.len());
    let mut changes = Vec::new();
    {
        let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
        let mut revision: u64 = db::meta_get(&meta, REVISION)?.unwrap_or(0);
        let mut tables = Tables {
            kv: txn.open_table(KV).map_err(|e| e.to_string())?,
            expiry: txn.open_table(EXPIRY).map_err(|e| e.to_string())?,
        };
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Applied::Done),
                EntryPayload::Normal(cmd) => {
                    out.push(apply::apply(&mut tables, &mut revision, cmd, &mut changes)?)
                }
                EntryPayload::Membership(m) => {
                    let stored = Membership::new(Some(entry.log_id), m);
                    meta.insert(MEMBERSHIP, db::encode(&stored)?.as_slice())
                        .map_err(|e| e.to_string())?;
                    out.push(Applied::Done);
                }
            }
        }
        meta.insert(REVISION, db::encode(&revision)?.as_slice())
            .map_err(|e| e.to_string())?;
        meta.insert(APPLIED, db::encode(&last)?.as_slice())
            .map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())?;
    shared.dispatch(&mut hub, &changes);
    Ok(out)
}

fn install(shared: &Shared, meta: &SnapshotMeta<u64, Peer>, data: Vec<u8>) -> Result<(), String> {
    let body: SnapBody = db::decode(&data)?;
    let mut hub = shared.hub();
    let before: HashMap<String, Option<KvPair>> = hub
        .keys
        .keys()
        .map(|k| Ok((k.clone(), shared.get(k)?)))
        .collect::<Result<_, String>>()?;
    let txn = shared.db.begin_write().map_err(|e| e.to_string())?;
    {
        let mut kv = txn.open_table(KV).map_err(|e| e.to_string())?;
        kv.retain(|_, _| false).map_err(|e| e.to_string())?;
        let mut expiry = txn.open_table(EXPIRY).map_err(|e| e.to_string())?;
        expiry.retain(|_, _| false).map_err(|e| e.to_string())?;
        for (k, s) in &body.kvs {
            kv.insert(k.as_str(), db::encode(s)?.as_slice())
                .map_err(|e| e.to_string())?;
            if let Some(at) = s.expires_at_ms {
                expiry
                    .insert((at, k.as_str()), s.index)
                    .map_err(|e| e.to_string())?;
            }
        }
        let mut t = txn.open_table(META).map_err(|e| e.to_string())?;
        t.insert(REVISION, db::encode(&body.revision)?.as_slice())
            .map_err(|e| e.to_string())?;
        t.insert(APPLIED, db::encode(&meta.last_log_id)?.as_slice())
            .map_err(|e| e.to_string())?;
        t.insert(MEMBERSHIP, db::encode(&meta.last_membership)?.as_slice())
            .map_err(|e| e.to_string())?;
        t.insert(SNAP_META, db::encode(meta)?.as_slice())
            .map_err(|e| e.to_string())?;
        t.insert(SNAP_DATA, data.as_slice())
            .map_err(|e| e.to_string())?;
    }
    // Durable: the log before this point may be purged on the strength of it.
    txn.commit().map_err(|e| e.to_string())?;
    // Watchers see each watched key that the snapshot changed, and every tree's new list.
    let mut changes: Vec<Change> = Vec::new();
    for (key, old) in before {
        let new = shared.get(&key)?;
        if new.as_ref().map(|p| p.last_index) != old.as_ref().map(|p| p.last_index) {
            changes.push((
                key.clone(),
                new.map(|p| crate::types::Pair {
                    key: p.key,
                    value: p.value,
                    index: p.last_index,
                }),
            ));
        }
    }
    // A tree's prefix (empty or ending in '/') is never a leaf key, so it reaches only
    // that tree's watchers, which then get the new list.
    changes.extend(
        hub.trees
            .iter()
            .map(|(prefix, _, _)| (prefix.clone(), None)),
    );
    shared.dispatch(&mut hub, &changes);
    Ok(())
}
