//! The Raft log on redb (openraft's `RaftLogStorage`).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, RaftLogReader, StorageError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};

use crate::db::{self, read_err, write_err, COMMITTED, LOG, META, PURGED, VOTE};
use crate::types::TypeConfig;

/// The log of one node. Cloning shares the database.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// Writes metadata (durably when `durable`), on the blocking pool: a flush blocks.
    async fn put_meta(
        &self,
        name: &'static str,
        bytes: Vec<u8>,
        durable: bool,
    ) -> Result<(), StorageError<u64>> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut txn = db.begin_write().map_err(|e| e.to_string())?;
            let durability = if durable {
                Durability::Immediate
            } else {
                Durability::None
            };
            txn.set_durability(durability).map_err(|e| e.to_string())?;
            txn.open_table(META)
                .map_err(|e| e.to_string())?
                .insert(name, bytes.as_slice())
                .map_err(|e| e.to_string())?;
            txn.commit().map_err(|e| e.to_string())
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<Option<T>, String> {
        let txn = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = txn.open_table(META).map_err(|e| e.to_string())?;
        db::meta_get(&table, name)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => Bound::Included(*i),
            Bound::Excluded(i) => Bound::Excluded(*i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table
            .range::<u64>((Bound::Included(start), end))
            .map_err(read_err)?
        {
            let (_, v) = item.map_err(read_err)?;
            out.push(db::decode(v.value()).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged_log_id: Option<LogId<u64>> = self.get_meta(PURGED).map_err(read_err)?;
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        let last = match table.last().map_err(read_err)? {
            Some((_, v)) => {
                let e: Entry<TypeConfig> = db::decode(v.value()).map_err(read_err)?;
                Some(e.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let bytes = db::encode(vote).map_err(write_err)?;
        self.put_meta(VOTE, bytes, true).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.get_meta(VOTE).map_err(read_err)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // Not flushed: losing it only means re-learning the commit point from the leader.
        let bytes = db::encode(&committed).map_err(write_err)?;
        self.put_meta(COMMITTED, bytes, false).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        Ok(self
            .get_meta::<Option<LogId<u64>>>(COMMITTED)
            .map_err(read_err)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        for e in entries {
            rows.push((e.log_id.index, db::encode(&e).map_err(write_err)?));
        }
        let db = self.db.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut txn = db.begin_write().map_err(|e| e.to_string())?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| e.to_string())?;
            {
                let mut table = txn.open_table(LOG).map_err(|e| e.to_string())?;
                for (index, bytes) in &rows {
                    table
                        .insert(*index, bytes.as_slice())
                        .map_err(|e| e.to_string())?;
                }
            }
            txn.commit().map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.clone())));
                Err(write_err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let mut txn = db.begin_write().map_err(|e| e.to_string())?;
            txn.set_durability(Durability::Immediate)
                .map_err(|e| e.to_string())?;
            txn.open_table(LOG)
                .map_err(|e| e.to_string())?
                .retain_in::<u64, _>(log_id.index.., |_, _| false)
                .map_err(|e| e.to_string())?;
            txn.commit().map_err(|e| e.to_string())
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let db = self.db.clone();
        let purged = db::encode(&log_id).map_err(write_err)?;
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            let txn = db.begin_write().map_err(|e| e.to_string())?;
            // The purge point first, in the same transaction: the log never has a hole.
            txn.open_table(META)
                .map_err(|e| e.to_string())?
                .insert(PURGED, purged.as_slice())
                .map_err(|e| e.to_string())?;
            txn.open_table(LOG)
                .map_err(|e| e.to_string())?
                .retain_in::<u64, _>(..=log_id.index, |_, _| false)
                .map_err(|e| e.to_string())?;
            txn.commit().map_err(|e| e.to_string())
        })
        .await
        .map_err(write_err)?
        .map_err(write_err)
    }
}
