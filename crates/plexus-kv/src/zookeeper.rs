//! The ZooKeeper backend (being written).

use std::sync::Arc;

use crate::error::{KvError, Result};
use crate::{OpenOptions, Store, StoreUrl};

/// Connects to ZooKeeper.
pub async fn connect(_url: &StoreUrl, _options: &OpenOptions) -> Result<Arc<dyn Store>> {
    Err(KvError::Unsupported {
        scheme: "zk".into(),
        reason: "the ZooKeeper backend is being written",
    })
}
