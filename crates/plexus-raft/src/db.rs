//! The node's redb file: the Raft log, its metadata and the state machine, in one database.
//!
//! Log appends and votes commit with `Durability::Immediate` (fsync): an acknowledged write
//! is on disk on a quorum. State machine applies commit without a flush of their own; redb
//! makes them durable with the next durable commit, and a crash that loses them only sends
//! openraft back to re-apply committed entries from the log.

use std::path::Path;
use std::sync::Arc;

use openraft::{StorageError, StorageIOError};
use redb::{Database, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Log entries by index.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Raft and state machine metadata by name.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
/// The key space.
pub(crate) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Keys with a deadline, by (deadline in ms, key) → the index that set it.
pub(crate) const EXPIRY: TableDefinition<(u64, &str), u64> = TableDefinition::new("kv_expiry");

pub(crate) const VOTE: &str = "vote";
pub(crate) const COMMITTED: &str = "committed";
pub(crate) const PURGED: &str = "purged";
pub(crate) const APPLIED: &str = "applied";
pub(crate) const MEMBERSHIP: &str = "membership";
pub(crate) const REVISION: &str = "revision";
pub(crate) const SNAP_META: &str = "snapshot_meta";
pub(crate) const SNAP_DATA: &str = "snapshot_data";

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Stored {
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub index: u64,
    pub expires_at_ms: Option<u64>,
}

/// The file name of a node's database inside its data directory.
pub const DB_FILE: &str = "raft.redb";

/// Opens (or creates) the node's database and its tables.
pub(crate) fn open(dir: &Path) -> Result<Arc<Database>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let path = dir.join(DB_FILE);
    let db = Database::create(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        txn.open_table(LOG).map_err(|e| e.to_string())?;
        txn.open_table(META).map_err(|e| e.to_string())?;
        txn.open_table(KV).map_err(|e| e.to_string())?;
        txn.open_table(EXPIRY).map_err(|e| e.to_string())?;
    }
    txn.commit().map_err(|e| e.to_string())?;
    Ok(Arc::new(db))
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(v).map_err(|e| e.to_string())
}

pub(crate) fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, String> {
    postcard::from_bytes(b).map_err(|e| e.to_string())
}

/// A storage error for openraft from any displayable failure.
pub(crate) fn read_err(e: impl ToString) -> StorageError<u64> {
    StorageIOError::read(openraft::AnyError::error(e)).into()
}

pub(crate) fn write_err(e: impl ToString) -> StorageError<u64> {
    StorageIOError::write(openraft::AnyError::error(e)).into()
}

/// Reads one metadata value from a table of a read or write transaction.
pub(crate) fn meta_get<T: DeserializeOwned>(
    table: &impl redb::ReadableTable<&'static str, &'static [u8]>,
    name: &str,
) -> Result<Option<T>, String> {
    match table.get(name).map_err(|e| e.to_string())? {
        Some(v) => decode(v.value()).map(Some),
        None => Ok(None),
    }
}
