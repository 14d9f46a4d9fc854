//! Where the in-process engine keeps its entries: a map in memory, or a redb file.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::RwLock;

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use crate::error::{KvError, Result};
use crate::types::KvPair;

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: Vec<u8>,
    /// The revision of its last change.
    pub index: u64,
    /// Unix milliseconds after which it no longer exists; 0 for never.
    pub expires_ms: u64,
}

impl Entry {
    /// Whether the entry has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_ms != 0 && self.expires_ms <= now_ms
    }

    /// The entry as a pair for `key`.
    pub fn into_pair(self, key: String) -> KvPair {
        KvPair {
            key,
            value: self.value,
            last_index: self.index,
        }
    }
}

/// Storage for the in-process engine. Reads may come from any thread; `commit` only from the
/// writer thread.
pub trait Backing: Send + Sync + 'static {
    /// The entry at `key`, expired or not.
    fn get(&self, key: &str) -> Result<Option<Entry>>;
    /// Every entry whose key starts with `prefix`, sorted by key.
    fn range(&self, prefix: &str) -> Result<Vec<(String, Entry)>>;
    /// The highest revision committed.
    fn revision(&self) -> Result<u64>;
    /// Applies writes (`None` deletes) and records `revision`, atomically; durably unless
    /// `durable` is false (then a later durable commit makes it durable).
    fn commit(
        &self,
        writes: &BTreeMap<String, Option<Entry>>,
        revision: u64,
        durable: bool,
    ) -> Result<()>;
}

/// A map in memory.
#[derive(Default)]
pub struct MemoryBacking {
    state: RwLock<(BTreeMap<String, Entry>, u64)>,
}

impl Backing for MemoryBacking {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        Ok(state.0.get(key).cloned())
    }

    fn range(&self, prefix: &str) -> Result<Vec<(String, Entry)>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        Ok(state
            .0
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect())
    }

    fn revision(&self) -> Result<u64> {
        Ok(self.state.read().unwrap_or_else(|e| e.into_inner()).1)
    }

    fn commit(
        &self,
        writes: &BTreeMap<String, Option<Entry>>,
        revision: u64,
        _durable: bool,
    ) -> Result<()> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for (key, entry) in writes {
            match entry {
                Some(entry) => state.0.insert(key.clone(), entry.clone()),
                None => state.0.remove(key),
            };
        }
        state.1 = revision;
        Ok(())
    }
}

/// key → (index, expires_ms, value)
const ENTRIES: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("entries");
/// "revision" → the highest committed revision
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A redb file: one write transaction per batch, committed with immediate durability (none
/// when every write of the batch is a relaxed transaction: redb then makes it durable with the
/// next durable commit), so a batch (and so every transaction in it) is on disk whole or not
/// at all.
pub struct RedbBacking {
    db: Database,
    url: String,
}

impl RedbBacking {
    /// Opens or creates the file at `path`.
    pub fn open(path: &Path, url: &str) -> Result<Self> {
        let err = |e: &dyn std::fmt::Display| KvError::Backend {
            url: url.to_string(),
            message: e.to_string(),
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| err(&e))?;
        }
        let db = Database::create(path).map_err(|e| err(&e))?;
        // Make sure both tables exist so that readers never see "table does not exist".
        let txn = db.begin_write().map_err(|e| err(&e))?;
        {
            txn.open_table(ENTRIES).map_err(|e| err(&e))?;
            txn.open_table(META).map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))?;
        Ok(Self {
            db,
            url: url.to_string(),
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> KvError {
        KvError::Backend {
            url: self.url.clone(),
            message: e.to_string(),
        }
    }
}

impl Backing for RedbBacking {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(ENTRIES).map_err(|e| self.err(e))?;
        let found = table.get(key).map_err(|e| self.err(e))?;
        Ok(found.map(|v| {
            let (index, expires_ms, value) = v.value();
            Entry {
                value: value.to_vec(),
                index,
                expires_ms,
            }
        }))
    }

    fn range(&self, prefix: &str) -> Result<Vec<(String, Entry)>> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(ENTRIES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for item in table.range(prefix..).map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            let (index, expires_ms, value) = v.value();
            out.push((
                key.to_string(),
                Entry {
                    value: value.to_vec(),
                    index,
                    expires_ms,
                },
            ));
        }
        Ok(out)
    }

    fn revision(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = txn.open_table(META).map_err(|e| self.err(e))?;
        let found = table.get("revision").map_err(|e| self.err(e))?;
        Ok(found.map(|v| v.value()).unwrap_or(0))
    }

    fn commit(
        &self,
        writes: &BTreeMap<String, Option<Entry>>,
        revision: u64,
        durable: bool,
    ) -> Result<()> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(|e| self.err(e))?;
        if writes.is_empty() {
            // A sync: the empty durable commit makes the relaxed ones before it durable,
            // with no page of its own to write.
            return txn.commit().map_err(|e| self.err(e));
        }
        {
            let mut entries = txn.open_table(ENTRIES).map_err(|e| self.err(e))?;
            for (key, entry) in writes {
                match entry {
                    Some(e) => {
                        entries
                            .insert(key.as_str(), (e.index, e.expires_ms, e.value.as_slice()))
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        entries.remove(key.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert("revision", revision).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }
}
