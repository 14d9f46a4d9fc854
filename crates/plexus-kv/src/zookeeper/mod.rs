//! The ZooKeeper backend (`zk://h1:2181,h2:2181/chroot?maxbuffer=4194304`), over the
//! `zookeeper-client` crate.
//!
//! # Encoding
//!
//! The flat key space maps onto the znode tree under the chroot: key `a/b` is the znode
//! `/<chroot>/a/b`. Because `a` and `a/b` may both hold values, and because ZooKeeper needs every
//! parent of a znode to exist, a znode is one of:
//!
//! | znode | data | mode |
//! |---|---|---|
//! | a key | `0x01` followed by the value (so an empty value is one byte) | persistent |
//! | a key with a TTL | `0x03`, the TTL in ms (8 bytes, big-endian), the value | TTL |
//! | an implicit parent, created only to hold keys under it (or a deleted key that still has keys under it) | empty | persistent |
//! | a deleted TTL key that still has keys under it | `0x04`, the TTL in ms | TTL |
//! | a lock contender (`<lock key>/lock-<session>-<seq>`) | `0x02` followed by the lock's value | ephemeral sequential |
//!
//! Only keys are keys: `get`, `exists` and `list` ignore the other kinds, so implicit parents
//! and lock nodes never show up. The data carries the TTL because ZooKeeper does not tell a
//! client whether a znode is a TTL znode, and a write must know: a znode's mode is fixed at
//! creation. A znode written by another tool with data that does not start with one of these
//! marks reads as a key with that raw value; one with empty data is a parent.
//!
//! Deleting a key with nothing under it deletes its znode and then every implicit parent left
//! empty above it; deleting a key that has keys under it empties its data. (A TTL key that expires
//! on the server leaves its empty implicit parents behind; they are invisible.)
//!
//! Key segments are escaped into znode names: `%`, control characters and every character
//! ZooKeeper refuses in a path (surrogates — so everything outside the BMP, emoji included — the
//! private use area, U+FFF0..) become `%XX` for each UTF-8 byte; with no chroot, a top-level
//! `zookeeper` becomes `%7Aookeeper` so that it never meets the server's own `/zookeeper`.
//!
//! # Index
//!
//! `last_index` is the znode's `mzxid`, the zxid of the transaction that last wrote it: it grows
//! with every write, keeps growing when a key is deleted and created again (where the data
//! version would restart at 0), and all keys written by one transaction share it. A
//! compare-and-swap reads the znode's stat, fails with `KeyModified` unless `mzxid` is the
//! caller's index, and then writes with the data `version` of that same stat, so the server
//! refuses the write if anything touched the znode in between. The one case this cannot see is
//! the znode being deleted, created again and brought back to the same data version between
//! those two round trips: ZooKeeper can only check versions.
//!
//! # Watches
//!
//! `watch` and `watch_tree` put a persistent (recursive, for a tree) watch on the znode, and read
//! the key or list the tree after every notification, yielding the result when it differs from
//! the last one yielded. Updates made faster than that round trip are *coalesced* into the
//! latest one; the last value is always delivered and indexes never go back. When the
//! connection drops, the stream yields one `Err(Unavailable)`, and after the reconnection (or a
//! new session, if the old one expired) it sets the watch again (zookeeper-client 0.11 does not
//! restore persistent watches itself) and reads again, so the final state is never missed even
//! though ZooKeeper does not replay notifications lost during the disconnection. A tree watch
//! reads every znode it knows of, and those the notifications name, in one `multi` read, and
//! reads again while that finds znodes it did not know: each list is a state the tree had.
//!
//! # TTL
//!
//! Keys with a TTL are TTL znodes, which the server deletes once they have not been written for
//! the TTL (checked every `znode.container.checkIntervalMs`, 60 s by default: set it low) and
//! have no children; a TTL key with keys under it therefore lives until they are gone. TTL
//! znodes need the server to run with `-Dzookeeper.extendedTypesEnabled=true`; without it a TTL
//! write fails with an error that says so. A znode's mode is fixed at creation, so changing a
//! key's TTL (or dropping it) deletes and creates the znode in one `multi`.
//!
//! # Locks
//!
//! The standard recipe: each `lock()` opens a session of its own whose timeout is the lock's
//! TTL (as negotiated: the server clamps it between its `minSessionTimeout` and
//! `maxSessionTimeout`), creates an ephemeral sequential znode under the lock key holding the
//! lock's value, and waits for the deletion of the contender just before it. The holder's lock
//! is lost when its node is deleted, its session expires, or it has been disconnected for half
//! the session timeout (so that it stops acting before the server can give the lock away). A
//! dead holder's session, and so its lock, ends one session timeout (the TTL) after its last
//! contact.
//!
//! # Value limit
//!
//! A request must fit in the server's `jute.maxbuffer` (1 MiB − 1 by default). The client cannot
//! ask the server for it, so the URL says it: `?maxbuffer=BYTES` (default 1048575);
//! [`Store::max_value_bytes`] is that less 64 KiB for the request's own fields. A transaction's
//! values together must fit too.
//!
//! # Sessions
//!
//! A store has one session (timeout 10 s, or `?session_timeout=MS`), opened again when it
//! expires; each held lock has its own (see above). Every operation is bounded by
//! [`OpenOptions::timeout`].
//!
//! # Transactions
//!
//! A `Txn` reads every key it names in one `multi` read, checks its comparisons there (so a
//! failed comparison names the key and both indexes), and commits one `multi` that checks the
//! data version of every key it compared or read (absence is checked by creating and deleting
//! the znode) and writes; if anything moved in between, it starts again. A `Delete` of a key
//! absent at the read is left out of the `multi`.
//!
//! # Layout
//!
//! This file holds `connect`, the shared state (`Inner`) and the [`Store`] methods, which
//! check their arguments and call into:
//!
//! - `session`: sessions, the store's timeout, and how ZooKeeper errors map to [`KvError`];
//! - `codec`: the first-data-byte encoding of keys, parents and lock nodes, and keys as paths;
//! - `ops`: reads and writes of one key, listings, tree reads and deletes, implicit parents;
//! - `txn`: transactions as one `multi` read and one `multi` write;
//! - `watch`: persistent watches, set again after a reconnection;
//! - `lock`: the ephemeral-sequential lock recipe.

mod codec;
mod lock;
mod ops;
mod session;
mod txn;
mod watch;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_stream::wrappers::ReceiverStream;
use zookeeper_client as zk;
use zookeeper_client::{Acls, AddWatchMode, Client, CreateMode};

use self::lock::ZkLocker;
use self::ops::Expect;
use self::session::tls_options;
use self::watch::{start_watch, Reader};
use crate::error::{KvError, Result};
use crate::key;
use crate::lock::Locker;
use crate::store::check_value;
use crate::types::{KvPair, LockOptions, PutOptions, TreeWatchStream, Txn, WatchStream};
use crate::{OpenOptions, Store, StoreUrl};

const BACKEND: &str = "zookeeper";
/// ZooKeeper's default `jute.maxbuffer`.
const DEFAULT_MAX_BUFFER: usize = 0xfffff;
/// Room left in a request for everything but the value.
const REQUEST_OVERHEAD: usize = 64 * 1024;
/// Room per operation of a `multi`.
const MULTI_OP_OVERHEAD: usize = 512;
/// The timeout asked for the store's own session (watches, reads and writes), unless the URL
/// says `?session_timeout=MS`.
const STORE_SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a write is retried when the znode changes under it.
const MAX_ATTEMPTS: usize = 100;
/// Deletes per `multi` in `delete_tree` (a larger tree is deleted in several steps).
const DELETE_BATCH: usize = 1000;
/// Reads per `multi` read in `list`.
const READ_BATCH: usize = 128;
/// The most znodes a tree watch reads in one `multi`; larger trees are listed level by level.
const SNAPSHOT_MAX: usize = 10_000;

/// Connects to ZooKeeper: `zk://h1:2181,h2:2181/chroot?maxbuffer=BYTES`.
///
/// The chroot is created if missing. Errors: [`KvError::Unavailable`] when no server answers,
/// [`KvError::Timeout`] after `options.timeout`, [`KvError::InvalidUrl`] for a bad query or
/// chroot, [`KvError::Backend`] naming the file for unreadable TLS files.
pub async fn connect(url: &StoreUrl, options: &OpenOptions) -> Result<Arc<dyn Store>> {
    let (chroot, query) = match url.path.split_once('?') {
        Some((p, q)) => (p.trim_end_matches('/'), Some(q)),
        None => (url.path.as_str(), None),
    };
    let display_url = url.original.clone();
    let invalid = |reason: String| KvError::InvalidUrl {
        url: url.original.clone(),
        reason,
    };
    if url.hosts.is_empty() {
        return Err(invalid("a ZooKeeper URL needs HOST:PORT endpoints".into()));
    }
    let mut max_buffer = DEFAULT_MAX_BUFFER;
    let mut session_timeout = STORE_SESSION_TIMEOUT;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("maxbuffer", v)) => {
                max_buffer = v
                    .parse()
                    .ok()
                    .filter(|n| *n > REQUEST_OVERHEAD)
                    .ok_or_else(|| {
                        invalid(format!(
                            "maxbuffer={v:?}: expected the server's jute.maxbuffer in bytes, over {REQUEST_OVERHEAD}"
                        ))
                    })?;
            }
            Some(("session_timeout", v)) => {
                session_timeout = v
                    .parse()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        invalid(format!(
                            "session_timeout={v:?}: expected the store session's timeout in ms"
                        ))
                    })?;
            }
            _ => {
                return Err(invalid(format!(
                    "unknown parameter {pair:?}; known: maxbuffer=BYTES, session_timeout=MS"
                )))
            }
        }
    }
    let chroot = key::directory(chroot).map_err(|e| invalid(format!("chroot: {e}")))?;
    let root = if chroot.is_empty() {
        String::new()
    } else {
        format!("/{chroot}")
    };
    let tls = match &options.tls {
        Some(tls) => Some(tls_options(&display_url, tls)?),
        None => None,
    };
    let (closed, _) = tokio::sync::watch::channel(false);
    let inner = Arc::new(Inner {
        url: display_url,
        connect: url.hosts.join(","),
        root,
        timeout: options.timeout,
        max_buffer,
        session_timeout,
        tls,
        credentials: options.credentials.clone(),
        session: tokio::sync::Mutex::new(None),
        closed,
    });
    inner
        .run("connect", async {
            let client = inner.client().await?;
            if !inner.root.is_empty() {
                let opts = CreateMode::Persistent.with_acls(Acls::anyone_all());
                client
                    .mkdir(&inner.root, &opts)
                    .await
                    .map_err(|e| inner.err("create the chroot", e))?;
            }
            Ok(())
        })
        .await?;
    tracing::debug!(url = %inner.url, "connected to ZooKeeper");
    Ok(Arc::new(ZkStore { inner }))
}

/// State shared by a store, its watches and its locks.
struct Inner {
    /// The URL as given, for messages.
    url: String,
    /// `h1:2181,h2:2181`.
    connect: String,
    /// `""` or `/chroot`.
    root: String,
    timeout: Duration,
    max_buffer: usize,
    /// The timeout asked for the store's own session.
    session_timeout: Duration,
    tls: Option<zk::TlsOptions>,
    credentials: Option<(String, String)>,
    /// The store's session, replaced when it expires.
    session: tokio::sync::Mutex<Option<Client>>,
    closed: tokio::sync::watch::Sender<bool>,
}

/// Resolves once the store is closed.
async fn until_closed(closed: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = closed.wait_for(|c| *c).await;
}

/// A ZooKeeper-backed [`Store`].
struct ZkStore {
    inner: Arc<Inner>,
}

#[async_trait]
impl Store for ZkStore {
    fn url(&self) -> &str {
        &self.inner.url
    }

    fn max_value_bytes(&self) -> usize {
        self.inner.max_value()
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> Result<KvPair> {
        let key = key::leaf(key)?;
        let i = &self.inner;
        i.run("put", i.write(key, value, Expect::Any, options))
            .await
    }

    async fn get(&self, key: &str) -> Result<KvPair> {
        let key = key::leaf(key)?;
        let i = &self.inner;
        i.run("get", i.get(key))
            .await?
            .ok_or_else(|| KvError::KeyNotFound {
                key: key.to_string(),
            })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = key::leaf(key)?;
        let i = &self.inner;
        i.run("delete", i.remove(key, None)).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let key = key::leaf(key)?;
        let i = &self.inner;
        i.run("exists", async {
            let client = i.client().await?;
            let node = i.read_node(&client, &i.path(key)).await?;
            Ok(node.is_some_and(|(node, _)| node.is_key()))
        })
        .await
    }

    async fn list(&self, dir: &str) -> Result<Vec<KvPair>> {
        let dir = key::directory(dir)?;
        let i = &self.inner;
        i.run("list", i.list(dir)).await
    }

    async fn delete_tree(&self, dir: &str) -> Result<()> {
        let dir = key::directory_nonroot(dir)?;
        let i = &self.inner;
        i.run("delete_tree", i.delete_tree(dir)).await
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair> {
        let key = key::leaf(key)?;
        let expect = match previous {
            None => Expect::Absent,
            Some(p) => Expect::Index(p.last_index),
        };
        let i = &self.inner;
        i.run("atomic_put", i.write(key, value, expect, options))
            .await
    }

    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()> {
        let key = key::leaf(key)?;
        let i = &self.inner;
        i.run("atomic_delete", i.remove(key, Some(previous.last_index)))
            .await
    }

    async fn sync(&self) -> Result<()> {
        // ZooKeeper acknowledges a write once a quorum has logged it to disk.
        self.inner.run("sync", async { Ok(()) }).await
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<KvPair>> {
        let i = &self.inner;
        i.run("txn", i.txn(txn)).await
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        let key = key::leaf(key)?.to_string();
        let path = self.inner.path(&key);
        let reader: Reader<Option<KvPair>> = Arc::new(move |inner, client, _| {
            let key = key.clone();
            Box::pin(async move { inner.get_with(&client, &key).await })
        });
        let rx = start_watch(&self.inner, path, AddWatchMode::Persistent, reader, "watch").await?;
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn watch_tree(&self, dir: &str) -> Result<TreeWatchStream> {
        let dir = key::directory(dir)?.to_string();
        let path = self.inner.dir_path(&dir);
        let known = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
        let reader: Reader<Vec<KvPair>> = Arc::new(move |inner, client, created| {
            let base = inner.dir_path(&dir);
            let known = known.clone();
            Box::pin(async move {
                let mut paths = known.lock().map(|k| k.clone()).unwrap_or_default();
                paths.extend(created);
                let list = inner.tree_snapshot(&client, &base, &mut paths).await?;
                if let Ok(mut k) = known.lock() {
                    *k = paths;
                }
                Ok(list)
            })
        });
        let rx = start_watch(
            &self.inner,
            path,
            AddWatchMode::PersistentRecursive,
            reader,
            "watch_tree",
        )
        .await?;
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    fn new_lock(&self, key: &str, options: LockOptions) -> Result<Box<dyn Locker>> {
        let key = key::leaf(key)?.to_string();
        if self.inner.is_closed() {
            return Err(self.inner.closed_err());
        }
        check_value(&key, &options.value, self.inner.max_value(), BACKEND)?;
        Ok(Box::new(ZkLocker {
            inner: self.inner.clone(),
            path: self.inner.path(&key),
            key,
            options,
        }))
    }

    async fn close(&self) -> Result<()> {
        self.inner.closed.send_replace(true);
        // Dropping the last handle on the session closes it (ephemeral nodes go with it).
        self.inner.session.lock().await.take();
        tracing::debug!(url = %self.inner.url, "ZooKeeper store closed");
        Ok(())
    }
}
