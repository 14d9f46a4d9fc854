//! The etcd v3 backend (being written).

use std::sync::Arc;

use crate::error::{KvError, Result};
use crate::{OpenOptions, Store, StoreUrl};

/// Connects to etcd.
pub async fn connect(_url: &StoreUrl, _options: &OpenOptions) -> Result<Arc<dyn Store>> {
    Err(KvError::Unsupported {
        scheme: "etcd".into(),
        reason: "the etcd backend is being written",
    })
}
