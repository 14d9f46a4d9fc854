//! # plexus-kv — libkv for Plexus
//!
//! One async [`Store`] API over several backends, chosen by URL, so that every piece of Plexus
//! state (networks, endpoints, sandboxes, address allocations) is written the same way whether
//! the daemon runs alone on its embedded file or shares an HA store with other daemons.
//!
//! | URL | backend |
//! |---|---|
//! | `redb:///var/lib/plexus/state.db` | embedded, the default (libkv's BoltDB) |
//! | `etcd://h1:2379,h2:2379/prefix` | etcd v3 |
//! | `zk://h1:2181/chroot` | ZooKeeper |
//! | `memory://` | in memory, for tests |
//! | `consul://…` | refused: not supported yet (no Consul server to test against) |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> plexus_kv::Result<()> {
//! use plexus_kv::{OpenOptions, PutOptions};
//! let store = plexus_kv::open("memory://", OpenOptions::default()).await?;
//! store.put("networks/n1", b"{}", PutOptions::default()).await?;
//! let pair = store.get("networks/n1").await?;
//! // Compare-and-swap on the index we read.
//! store.atomic_put("networks/n1", b"{\"v\":2}", Some(&pair), PutOptions::default()).await?;
//! assert_eq!(store.list("networks").await?.len(), 1);
//! # Ok(()) }
//! ```
//!
//! ## One semantics for every backend
//!
//! libkv's backends disagree (its Consul watch drops deletes, ZooKeeper watches are one-shot with
//! a gap, BoltDB has no watch at all). Plexus's do not:
//!
//! - **Keys** are `/`-separated; see [`key`]. The key space is flat: `a` and `a/b` may both hold
//!   values, and a directory exists only through the keys under it. `list("a")` returns every
//!   key under `a/` at any depth, never `ab/x`, never `a` itself, and never a parent that was
//!   only created implicitly.
//! - **Indexes**: `last_index` grows with every change of a key and is what compare-and-swap
//!   compares. Its scale is the backend's own (a global revision, or the zxid of a znode's
//!   last write); only pass it back, never compare indexes of different keys.
//! - **Watch** gives the current value first (`None` when absent), then changes in index
//!   order, deletes included as `None`, and never goes back. The last value is always
//!   delivered. Every intermediate value is delivered too, except where the table below says a
//!   backend may *coalesce* consecutive updates of a key into the latest one.
//! - **Watch tree** gives the sorted list of the directory first, then the whole list after
//!   each change; changes committed together may give one list.
//! - **TTL**: a key written with a TTL disappears (watchers see the delete) no sooner than the
//!   TTL after its last write, and soon after it (within the backend's granularity below).
//! - **Locks** are held until `unlock`, drop, or the loss of the holder's session; renewal is
//!   automatic. A lost lock is reported through [`LockHandle::lost`]. A dead holder's lock
//!   passes to the next contender within the lock's TTL.
//! - **Transactions** ([`Txn`]): comparisons on several keys, then puts and deletes on several
//!   keys, all or nothing; at most [`MAX_TXN_OPS`] entries.
//! - **Faults**: every operation on a remote store fails within [`OpenOptions::timeout`] with
//!   an error naming the URL. Watches survive the store going away and coming back (they yield
//!   an `Err` item while it is unreachable, then resume with no missed change). Locks report
//!   loss when their session expires.
//!
//! What each backend uses to give that:
//!
//! | | redb / memory | etcd v3 | ZooKeeper |
//! |---|---|---|---|
//! | index | global revision, one per commit | `mod_revision` | `mzxid`, the zxid of the znode's last write (CAS checks it, then writes at the data version read with it) |
//! | watch | in-process, registered under the writer: every change | watch from revision, resumed from the last seen revision after a reconnect: every change | persistent recursive watch, then a read: may coalesce |
//! | TTL | wall-clock deadline stored with the key, reaped by the writer (~ms) | lease per write | TTL znodes (`extendedTypesEnabled`), ~1 s |
//! | lock | create-only put with TTL, CAS refresh | lease + create-only txn | ephemeral sequential znodes (the standard recipe) |
//! | transaction | one redb write transaction (group commit) | etcd `Txn` | `multi` |
//! | value limit | 16 MiB | 1.5 MiB (server's `--max-request-bytes`) | `jute.maxbuffer` less overhead |

#![warn(missing_docs)]

mod error;
pub mod key;
mod kvlock;
mod local;
mod lock;
mod observed;
mod prefixed;
mod store;
mod types;
mod url;

pub mod etcd;
pub mod zookeeper;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use error::{KvError, Result};
pub use kvlock::KvLocker;
pub use local::LocalStore;
pub use lock::{LockHandle, LockRelease, Locker};
pub use observed::{observed, Observed, StoreObserver, StoreOp};
pub use prefixed::{prefixed, Prefixed};
pub use store::{check_txn, check_value, Store};
pub use types::{
    Compare, KvPair, LockOptions, PutOptions, TreeWatchStream, Txn, TxnOp, WatchStream,
    DEFAULT_LOCK_TTL, MAX_TXN_OPS,
};
pub use url::StoreUrl;

/// TLS client settings for etcd and ZooKeeper.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of the CA that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// The server name to verify, when it differs from the host in the URL.
    pub server_name: Option<String>,
}

/// How to open a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    /// Bound on every remote operation (connect included).
    pub timeout: Duration,
    /// TLS for etcd and ZooKeeper; `None` for plain TCP.
    pub tls: Option<TlsOptions>,
    /// User name and password, for backends that authenticate.
    pub credentials: Option<(String, String)>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            tls: None,
            credentials: None,
        }
    }
}

/// Opens the store named by `url`.
///
/// Errors: [`KvError::InvalidUrl`] for a malformed URL or unknown scheme,
/// [`KvError::Unsupported`] for `consul://`, [`KvError::Unavailable`] or
/// [`KvError::Timeout`] when a remote store cannot be reached within `options.timeout`.
pub async fn open(url: &str, options: OpenOptions) -> Result<Arc<dyn Store>> {
    let parsed = StoreUrl::parse(url)?;
    match parsed.scheme.as_str() {
        "memory" => Ok(Arc::new(LocalStore::memory())),
        "redb" => {
            let path = PathBuf::from(&parsed.path);
            let store = tokio::task::spawn_blocking(move || LocalStore::redb(&path))
                .await
                .map_err(|e| KvError::Backend {
                    url: url.to_string(),
                    message: e.to_string(),
                })??;
            Ok(Arc::new(store))
        }
        "etcd" => etcd::connect(&parsed, &options).await,
        "zk" | "zookeeper" => zookeeper::connect(&parsed, &options).await,
        "consul" => Err(KvError::Unsupported {
            scheme: "consul".into(),
            reason: "no Consul server could be tested here; use etcd:// or zk://",
        }),
        other => Err(KvError::InvalidUrl {
            url: url.to_string(),
            reason: format!("unknown scheme {other:?}; use redb, etcd, zk or memory"),
        }),
    }
}
