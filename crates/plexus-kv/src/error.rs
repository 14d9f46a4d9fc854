//! The one error type every backend returns.

use std::time::Duration;

/// Errors of the key-value layer. Every variant names the key, URL or limit involved so that a
/// message shown to a user says what was wrong without further context.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KvError {
    /// The key or directory is malformed (empty, `//`, trailing `/` on a leaf, ...).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The value is larger than the backend accepts.
    #[error("value for key {key:?} is {size} bytes, over the {backend} limit of {limit} bytes")]
    ValueTooLarge {
        /// The key being written.
        key: String,
        /// The value's size in bytes.
        size: usize,
        /// The backend's limit in bytes.
        limit: usize,
        /// Which backend imposes the limit.
        backend: &'static str,
    },
    /// The key does not exist.
    #[error("key {key:?} not found")]
    KeyNotFound {
        /// The missing key.
        key: String,
    },
    /// A create-only write found the key already present.
    #[error("key {key:?} already exists")]
    KeyExists {
        /// The existing key.
        key: String,
    },
    /// A compare-and-swap found the key at another index than the caller's previous pair.
    #[error("key {key:?} was modified: expected index {expected}, found {found}")]
    KeyModified {
        /// The contended key.
        key: String,
        /// The index the caller expected.
        expected: u64,
        /// The index the store holds (0 if the key is gone).
        found: u64,
    },
    /// A transaction's comparison failed; nothing of the transaction was applied.
    #[error("transaction conflict on key {key:?}: {reason}")]
    TxnConflict {
        /// The first key whose comparison failed.
        key: String,
        /// What the comparison expected.
        reason: String,
    },
    /// A transaction is malformed (duplicate keys, too many operations, ...).
    #[error("invalid transaction: {0}")]
    InvalidTxn(String),
    /// The backend could not be reached or did not answer within the timeout.
    #[error("store {url} unavailable: {reason}")]
    Unavailable {
        /// The store's URL (credentials removed).
        url: String,
        /// Why, as the backend reported it.
        reason: String,
    },
    /// An operation did not complete within the configured timeout.
    #[error("store {url}: {op} timed out after {after:?}")]
    Timeout {
        /// The store's URL (credentials removed).
        url: String,
        /// The operation that timed out.
        op: &'static str,
        /// The configured timeout.
        after: Duration,
    },
    /// The store URL is malformed or names an unknown scheme.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend exists in libkv but is not supported by Plexus yet.
    #[error("store backend {scheme:?} is not supported yet: {reason}")]
    Unsupported {
        /// The URL scheme.
        scheme: String,
        /// Why, and what to use instead.
        reason: &'static str,
    },
    /// The lock's session was lost (expiry, connection loss) while it was held.
    #[error("lock {key:?} was lost: {reason}")]
    LockLost {
        /// The lock's key.
        key: String,
        /// Why it was lost.
        reason: String,
    },
    /// Any other backend failure, with the backend's own message.
    #[error("store {url}: {message}")]
    Backend {
        /// The store's URL (credentials removed).
        url: String,
        /// The backend's message.
        message: String,
    },
    /// The store was closed.
    #[error("store {url} is closed")]
    Closed {
        /// The store's URL.
        url: String,
    },
}

impl KvError {
    /// A short, fixed name of the variant (`not_found`, `unavailable`), as a metric label.
    ///
    /// `not_found`, `exists`, `modified` and `conflict` are answers of ordinary flow (a
    /// lookup of what is absent, compare-and-swap contention); `unavailable`, `timeout`,
    /// `backend`, `closed` and `lock_lost` mean the store itself is in trouble.
    pub fn kind(&self) -> &'static str {
        match self {
            KvError::InvalidKey { .. } => "invalid_key",
            KvError::ValueTooLarge { .. } => "value_too_large",
            KvError::KeyNotFound { .. } => "not_found",
            KvError::KeyExists { .. } => "exists",
            KvError::KeyModified { .. } => "modified",
            KvError::TxnConflict { .. } => "conflict",
            KvError::InvalidTxn(_) => "invalid_txn",
            KvError::Unavailable { .. } => "unavailable",
            KvError::Timeout { .. } => "timeout",
            KvError::InvalidUrl { .. } => "invalid_url",
            KvError::Unsupported { .. } => "unsupported",
            KvError::LockLost { .. } => "lock_lost",
            KvError::Backend { .. } => "backend",
            KvError::Closed { .. } => "closed",
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = KvError> = std::result::Result<T, E>;
