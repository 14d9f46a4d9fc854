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

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use zookeeper_client as zk;
use zookeeper_client::{
    Acls, AddWatchMode, Client, CreateMode, EventType, MultiReadResult, MultiWriteError,
    MultiWriteResult, SessionState, Stat,
};

use crate::error::{KvError, Result};
use crate::key;
use crate::lock::{LockHandle, LockRelease, Locker};
use crate::store::{check_txn, check_value};
use crate::types::{
    Compare, KvPair, LockOptions, PutOptions, TreeWatchStream, Txn, TxnOp, WatchStream,
};
use crate::{OpenOptions, Store, StoreUrl, TlsOptions};

const BACKEND: &str = "zookeeper";
/// First data byte of a key's znode.
const KEY_MARK: u8 = 0x01;
/// First data byte of a lock contender's znode.
const LOCK_MARK: u8 = 0x02;
/// First data byte of a key's znode with a TTL (then the TTL in ms, 8 bytes big-endian).
const TTL_KEY_MARK: u8 = 0x03;
/// First data byte of a TTL znode left as a parent (then the TTL in ms).
const TTL_PARENT_MARK: u8 = 0x04;
/// Name prefix of lock contenders' znodes.
const LOCK_PREFIX: &str = "lock-";
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
    let (closed, _) = watch::channel(false);
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

fn tls_options(url: &str, tls: &TlsOptions) -> Result<zk::TlsOptions> {
    // zookeeper-client builds its rustls config from the process-wide provider, and with both
    // of rustls's providers compiled in (etcd's and zookeeper-client's) rustls cannot choose
    // one: choose ring, unless the program installed one already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path).map_err(|e| KvError::Backend {
            url: url.to_string(),
            message: format!("cannot read the TLS {what} {}: {e}", path.display()),
        })
    };
    let mut options = zk::TlsOptions::new();
    if let Some(ca) = &tls.ca_file {
        let pem = read(ca, "CA file")?;
        options = options.with_pem_ca(&pem).map_err(|e| KvError::Backend {
            url: url.to_string(),
            message: format!("invalid TLS CA file {}: {e}", ca.display()),
        })?;
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let cert_pem = read(cert, "certificate")?;
            let key_pem = read(key, "key")?;
            options = options
                .with_pem_identity(&cert_pem, &key_pem)
                .map_err(|e| KvError::Backend {
                    url: url.to_string(),
                    message: format!(
                        "invalid TLS client identity {} / {}: {e}",
                        cert.display(),
                        key.display()
                    ),
                })?;
        }
        (None, None) => {}
        _ => {
            return Err(KvError::Backend {
                url: url.to_string(),
                message: "TLS needs both cert_file and key_file for a client certificate".into(),
            })
        }
    }
    if tls.server_name.is_some() {
        return Err(KvError::Backend {
            url: url.to_string(),
            message: "TLS server_name is not supported by the ZooKeeper client; name the server \
                      in the URL as its certificate does"
                .into(),
        });
    }
    Ok(options)
}

/// A znode's mode. ZooKeeper does not tell clients whether a znode is a TTL znode (its stat
/// shows no owner), so the data says it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Persistent,
    /// TTL in milliseconds.
    Ttl(u64),
    Ephemeral,
}

/// The mode a write asks for.
fn wanted_mode(options: &PutOptions) -> Mode {
    match options.ttl {
        Some(ttl) => Mode::Ttl((ttl.as_millis() as u64).max(1)),
        None => Mode::Persistent,
    }
}

fn create_options(mode: Mode) -> zk::CreateOptions<'static> {
    let opts = CreateMode::Persistent.with_acls(Acls::anyone_all());
    match mode {
        Mode::Ttl(ms) => opts.with_ttl(Duration::from_millis(ms)),
        _ => opts,
    }
}

/// What a znode is, from its data (see the module docs).
#[derive(Debug)]
enum Node {
    Key { value: Vec<u8>, mode: Mode },
    Parent { mode: Mode },
    Lock,
}

impl Node {
    fn parse(mut data: Vec<u8>, stat: &Stat) -> Node {
        // Only plain ephemeral znodes show their owner.
        if stat.ephemeral_owner != 0 {
            return Node::Lock;
        }
        let ttl = |data: &[u8]| -> Option<u64> {
            Some(u64::from_be_bytes(data.get(1..9)?.try_into().ok()?))
        };
        match data.first() {
            None => Node::Parent {
                mode: Mode::Persistent,
            },
            Some(&KEY_MARK) => {
                data.remove(0);
                Node::Key {
                    value: data,
                    mode: Mode::Persistent,
                }
            }
            Some(&LOCK_MARK) => Node::Lock,
            Some(&TTL_KEY_MARK) if data.len() >= 9 => {
                let mode = Mode::Ttl(ttl(&data).unwrap_or(0));
                data.drain(..9);
                Node::Key { value: data, mode }
            }
            Some(&TTL_PARENT_MARK) if data.len() >= 9 => Node::Parent {
                mode: Mode::Ttl(ttl(&data).unwrap_or(0)),
            },
            // Written by another tool: a key with that raw value.
            Some(_) => Node::Key {
                value: data,
                mode: Mode::Persistent,
            },
        }
    }

    fn mode(&self) -> Mode {
        match self {
            Node::Key { mode, .. } | Node::Parent { mode } => *mode,
            Node::Lock => Mode::Ephemeral,
        }
    }

    fn is_key(&self) -> bool {
        matches!(self, Node::Key { .. })
    }

    fn into_value(self) -> Option<Vec<u8>> {
        match self {
            Node::Key { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// A key's data.
fn encode(value: &[u8], mode: Mode) -> Vec<u8> {
    let mut data = Vec::with_capacity(value.len() + 9);
    match mode {
        Mode::Ttl(ms) => {
            data.push(TTL_KEY_MARK);
            data.extend_from_slice(&ms.to_be_bytes());
        }
        _ => data.push(KEY_MARK),
    }
    data.extend_from_slice(value);
    data
}

/// The data of a deleted key that still has keys under it.
fn parent_data(mode: Mode) -> Vec<u8> {
    match mode {
        Mode::Ttl(ms) => {
            let mut data = vec![TTL_PARENT_MARK];
            data.extend_from_slice(&ms.to_be_bytes());
            data
        }
        _ => Vec::new(),
    }
}

/// The value of a key's znode, or `None` for a parent or lock node.
fn decode(data: Vec<u8>, stat: &Stat) -> Option<Vec<u8>> {
    Node::parse(data, stat).into_value()
}

fn index_of(stat: &Stat) -> u64 {
    stat.mzxid.max(0) as u64
}

fn escape_segment(segment: &str, top_without_chroot: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(segment.len());
    for c in segment.chars() {
        let u = u32::from(c);
        let refused = c == '%'
            || u < 0x20
            || (0x7f..=0x9f).contains(&u)
            || (0xd800..=0xf8ff).contains(&u)
            || u >= 0xfff0;
        if refused {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    if top_without_chroot && out == "zookeeper" {
        out = "%7Aookeeper".into();
    }
    out
}

fn unescape_segment(name: &str) -> Option<String> {
    if !name.contains('%') {
        return Some(name.to_string());
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
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
    closed: watch::Sender<bool>,
}

impl Inner {
    fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    fn closed_err(&self) -> KvError {
        KvError::Closed {
            url: self.url.clone(),
        }
    }

    /// Runs one operation under the store's timeout.
    async fn run<T>(&self, op: &'static str, f: impl Future<Output = Result<T>>) -> Result<T> {
        if self.is_closed() {
            return Err(self.closed_err());
        }
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(KvError::Timeout {
                url: self.url.clone(),
                op,
                after: self.timeout,
            }),
        }
    }

    fn err(&self, op: &str, e: zk::Error) -> KvError {
        use zk::Error as E;
        match e {
            E::ClientClosed if self.is_closed() => self.closed_err(),
            E::ConnectionLoss
            | E::NoHosts
            | E::SessionExpired
            | E::Timeout
            | E::SessionMoved
            | E::ClientClosed
            | E::Throttled => KvError::Unavailable {
                url: self.url.clone(),
                reason: format!("{op}: {e}"),
            },
            E::Unimplemented if op.contains("TTL") => self.ttl_unsupported(),
            other => KvError::Backend {
                url: self.url.clone(),
                message: format!("{op}: {other}"),
            },
        }
    }

    fn ttl_unsupported(&self) -> KvError {
        KvError::Backend {
            url: self.url.clone(),
            message: "the ZooKeeper server refused a TTL znode: TTL keys need the server to run \
                      with -Dzookeeper.extendedTypesEnabled=true"
                .into(),
        }
    }

    fn gave_up(&self, key: &str) -> KvError {
        KvError::Backend {
            url: self.url.clone(),
            message: format!("key {key:?} kept changing: gave up after {MAX_ATTEMPTS} attempts"),
        }
    }

    fn max_value(&self) -> usize {
        self.max_buffer - REQUEST_OVERHEAD - 1
    }

    /// Opens a new session.
    async fn new_session(&self, session_timeout: Duration) -> Result<Client> {
        let mut connector = Client::connector()
            .with_session_timeout(session_timeout)
            .with_fail_eagerly();
        if let Some((user, password)) = &self.credentials {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        if let Some(tls) = &self.tls {
            connector = connector.with_tls(tls.clone());
        }
        // Every host is tried once per attempt; attempts go on until the timeout, so that a
        // server still starting is waited for, and a dead one is reported with its error.
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let attempt = connector.clone();
            let result = if self.tls.is_some() {
                attempt.secure_connect(&self.connect).await
            } else {
                attempt.connect(&self.connect).await
            };
            match result {
                Ok(client) => return Ok(client),
                Err(e @ (zk::Error::NoHosts | zk::Error::ConnectionLoss | zk::Error::Timeout))
                    if tokio::time::Instant::now() + Duration::from_millis(200) < deadline =>
                {
                    tracing::debug!(url = %self.url, error = %e, "ZooKeeper connect failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(KvError::Unavailable {
                        url: self.url.clone(),
                        reason: format!("cannot open a ZooKeeper session at {}: {e}", self.connect),
                    })
                }
            }
        }
    }

    /// The store's session, opening a new one if it ended.
    async fn client(&self) -> Result<Client> {
        if self.is_closed() {
            return Err(self.closed_err());
        }
        let mut guard = self.session.lock().await;
        if let Some(client) = guard.as_ref() {
            if !client.state().is_terminated() {
                return Ok(client.clone());
            }
            tracing::info!(url = %self.url, "ZooKeeper session ended; opening a new one");
        }
        let client = self.new_session(self.session_timeout).await?;
        if self.is_closed() {
            return Err(self.closed_err());
        }
        *guard = Some(client.clone());
        Ok(client)
    }

    fn path(&self, key: &str) -> String {
        let mut path = self.root.clone();
        for (i, segment) in key.split('/').enumerate() {
            path.push('/');
            path.push_str(&escape_segment(segment, i == 0 && self.root.is_empty()));
        }
        path
    }

    fn dir_path(&self, dir: &str) -> String {
        if dir.is_empty() {
            if self.root.is_empty() {
                "/".into()
            } else {
                self.root.clone()
            }
        } else {
            self.path(dir)
        }
    }

    /// The key of a znode path under the root, if it decodes.
    fn key_of(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix(&self.root)?.strip_prefix('/')?;
        let mut key = String::with_capacity(rest.len());
        for (i, name) in rest.split('/').enumerate() {
            if i > 0 {
                key.push('/');
            }
            key.push_str(&unescape_segment(name)?);
        }
        Some(key)
    }

    /// Creates the missing parents of `path` as implicit parents.
    async fn ensure_parents(&self, client: &Client, path: &str) -> Result<()> {
        let mut ancestors = Vec::new();
        let mut p = parent_of(path);
        while p.len() > self.root.len() && p != "/" {
            ancestors.push(p);
            p = parent_of(p);
        }
        let opts = create_options(Mode::Persistent);
        // Find the deepest ancestor that exists (or that we create), then go down.
        let mut i = 0;
        while i < ancestors.len() {
            match client.create(ancestors[i], &[], &opts).await {
                Ok(_) | Err(zk::Error::NodeExists) => break,
                Err(zk::Error::NoNode) => i += 1,
                Err(zk::Error::NoChildrenForEphemerals) => {
                    return Err(KvError::Backend {
                        url: self.url.clone(),
                        message: format!("{} is a lock node and cannot hold keys", ancestors[i]),
                    })
                }
                Err(e) => return Err(self.err("create parent", e)),
            }
        }
        if i == ancestors.len() && !self.root.is_empty() {
            // The chroot itself is gone (deleted by hand): make it again.
            client
                .mkdir(&self.root, &opts)
                .await
                .map_err(|e| self.err("create the chroot", e))?;
        }
        for a in ancestors[..i.min(ancestors.len())].iter().rev() {
            match client.create(a, &[], &opts).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                // Removed by a concurrent cleanup: the caller retries.
                Err(zk::Error::NoNode) => return Ok(()),
                Err(e) => return Err(self.err("create parent", e)),
            }
        }
        Ok(())
    }

    /// Deletes `path` and its ancestors while they are empty implicit parents (best effort).
    async fn cleanup_from(&self, client: &Client, mut path: &str) {
        while path.len() > self.root.len() && path != "/" {
            let Ok(Some(stat)) = client.check_stat(path).await else {
                return;
            };
            if stat.data_length != 0 || stat.num_children != 0 || stat.ephemeral_owner != 0 {
                return;
            }
            if client.delete(path, Some(stat.version)).await.is_err() {
                return;
            }
            path = parent_of(path);
        }
    }

    /// Reads a znode: what it is, and its stat; `None` if it does not exist.
    async fn read_node(&self, client: &Client, path: &str) -> Result<Option<(Node, Stat)>> {
        match client.get_data(path).await {
            Ok((data, stat)) => Ok(Some((Node::parse(data, &stat), stat))),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(self.err("read", e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        let client = self.client().await?;
        self.get_with(&client, key).await
    }

    async fn get_with(&self, client: &Client, key: &str) -> Result<Option<KvPair>> {
        match client.get_data(&self.path(key)).await {
            Ok((data, stat)) => Ok(decode(data, &stat).map(|value| KvPair {
                key: key.to_string(),
                value,
                last_index: index_of(&stat),
            })),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(self.err("get", e)),
        }
    }

    /// The write behind `put` and `atomic_put`.
    async fn write(
        &self,
        key: &str,
        value: &[u8],
        expect: Expect,
        options: PutOptions,
    ) -> Result<KvPair> {
        check_value(key, value, self.max_value(), BACKEND)?;
        let client = self.client().await?;
        let path = self.path(key);
        let want = wanted_mode(&options);
        let data = encode(value, want);
        let op = if options.ttl.is_some() {
            "write with TTL"
        } else {
            "write"
        };
        let pair = |stat: &Stat| KvPair {
            key: key.to_string(),
            value: value.to_vec(),
            last_index: index_of(stat),
        };
        for _ in 0..MAX_ATTEMPTS {
            let Some((node, stat)) = self.read_node(&client, &path).await? else {
                if let Expect::Index(_) = expect {
                    return Err(KvError::KeyNotFound {
                        key: key.to_string(),
                    });
                }
                match client.create(&path, &data, &create_options(want)).await {
                    Ok((stat, _)) => return Ok(pair(&stat)),
                    Err(zk::Error::NodeExists) => continue,
                    Err(zk::Error::NoNode) => {
                        self.ensure_parents(&client, &path).await?;
                        continue;
                    }
                    Err(e) => return Err(self.err(op, e)),
                }
            };
            let present = node.is_key();
            match expect {
                Expect::Absent if present => {
                    return Err(KvError::KeyExists {
                        key: key.to_string(),
                    })
                }
                Expect::Index(_) if !present => {
                    return Err(KvError::KeyNotFound {
                        key: key.to_string(),
                    })
                }
                Expect::Index(index) if index_of(&stat) != index => {
                    return Err(KvError::KeyModified {
                        key: key.to_string(),
                        expected: index,
                        found: index_of(&stat),
                    })
                }
                _ => {}
            }
            if node.mode() == want {
                match client.set_data(&path, &data, Some(stat.version)).await {
                    Ok(stat) => return Ok(pair(&stat)),
                    Err(zk::Error::BadVersion | zk::Error::NoNode) => continue,
                    Err(e) => return Err(self.err(op, e)),
                }
            }
            if stat.num_children != 0 {
                return Err(KvError::Backend {
                    url: self.url.clone(),
                    message: format!(
                        "cannot change the TTL of key {key:?}: keys exist under it, and ZooKeeper \
                         fixes a znode's TTL when it is created"
                    ),
                });
            }
            // Another mode: delete and create in one multi.
            let mut w = client.new_multi_writer();
            w.add_delete(&path, Some(stat.version))
                .and_then(|_| w.add_create(&path, &data, &create_options(want)))
                .map_err(|e| self.err(op, e))?;
            match w.commit().await {
                Ok(results) => {
                    let stat = match results.into_iter().nth(1) {
                        Some(MultiWriteResult::Create { stat, .. }) if !stat.is_invalid() => stat,
                        _ => match client.check_stat(&path).await {
                            Ok(Some(stat)) => stat,
                            Ok(None) => continue,
                            Err(e) => return Err(self.err("stat", e)),
                        },
                    };
                    return Ok(pair(&stat));
                }
                Err(MultiWriteError::OperationFailed {
                    source: zk::Error::BadVersion | zk::Error::NoNode | zk::Error::NotEmpty,
                    ..
                }) => continue,
                Err(e) => return Err(self.err(op, e.into())),
            }
        }
        Err(self.gave_up(key))
    }

    /// The delete behind `delete` and `atomic_delete`.
    async fn remove(&self, key: &str, expected: Option<u64>) -> Result<()> {
        let client = self.client().await?;
        let path = self.path(key);
        let not_found = || KvError::KeyNotFound {
            key: key.to_string(),
        };
        for _ in 0..MAX_ATTEMPTS {
            let (node, stat) = match self.read_node(&client, &path).await? {
                Some((node, stat)) if node.is_key() => (node, stat),
                _ => return Err(not_found()),
            };
            if let Some(index) = expected {
                if index_of(&stat) != index {
                    return Err(KvError::KeyModified {
                        key: key.to_string(),
                        expected: index,
                        found: index_of(&stat),
                    });
                }
            }
            if stat.num_children == 0 {
                match client.delete(&path, Some(stat.version)).await {
                    Ok(()) => {
                        self.cleanup_from(&client, parent_of(&path)).await;
                        return Ok(());
                    }
                    Err(zk::Error::BadVersion | zk::Error::NotEmpty | zk::Error::NoNode) => {
                        continue
                    }
                    Err(e) => return Err(self.err("delete", e)),
                }
            }
            // Keys live under it: it stays as an implicit parent.
            match client
                .set_data(&path, &parent_data(node.mode()), Some(stat.version))
                .await
            {
                Ok(_) => return Ok(()),
                Err(zk::Error::BadVersion | zk::Error::NoNode) => continue,
                Err(e) => return Err(self.err("delete", e)),
            }
        }
        Err(self.gave_up(key))
    }

    /// Every znode strictly under `base`, parents before children.
    async fn subtree(&self, client: &Client, base: &str) -> Result<Vec<String>> {
        let mut all = Vec::new();
        let mut level = vec![base.to_string()];
        while !level.is_empty() {
            let mut next = Vec::new();
            for chunk in level.chunks(READ_BATCH) {
                let mut reader = client.new_multi_reader();
                for p in chunk {
                    reader
                        .add_get_children(p)
                        .map_err(|e| self.err("list", e))?;
                }
                let results = reader.commit().await.map_err(|e| self.err("list", e))?;
                for (p, r) in chunk.iter().zip(results) {
                    if let MultiReadResult::Children { children } = r {
                        for c in children {
                            if p == "/" && c == "zookeeper" {
                                continue;
                            }
                            next.push(join(p, &c));
                        }
                    }
                }
            }
            all.extend(next.iter().cloned());
            level = next;
        }
        Ok(all)
    }

    async fn list(&self, dir: &str) -> Result<Vec<KvPair>> {
        let client = self.client().await?;
        self.list_with(&client, dir).await
    }

    /// Lists `dir`. ZooKeeper reads one level of the tree at a time, so a znode listed by its
    /// parent may be gone when its data is read (a delete in between, or a `multi` seen half
    /// applied): then the listing is not a state the tree had, and it is read again.
    async fn list_with(&self, client: &Client, dir: &str) -> Result<Vec<KvPair>> {
        let mut last = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let (list, consistent) = self.list_once(client, dir).await?;
            if consistent {
                return Ok(list);
            }
            last = list;
            tokio::task::yield_now().await;
        }
        tracing::warn!(url = %self.url, %dir, "the tree kept changing while listed");
        Ok(last)
    }

    async fn list_once(&self, client: &Client, dir: &str) -> Result<(Vec<KvPair>, bool)> {
        let base = self.dir_path(dir);
        let mut consistent = true;
        let mut out = Vec::new();
        let mut level = vec![base];
        let mut first = true;
        while !level.is_empty() {
            let mut next = Vec::new();
            for chunk in level.chunks(READ_BATCH) {
                let mut reader = client.new_multi_reader();
                for p in chunk {
                    if !first {
                        reader.add_get_data(p).map_err(|e| self.err("list", e))?;
                    }
                    reader
                        .add_get_children(p)
                        .map_err(|e| self.err("list", e))?;
                }
                let results = reader.commit().await.map_err(|e| self.err("list", e))?;
                let per = if first { 1 } else { 2 };
                let mut results = results.into_iter();
                for p in chunk {
                    let mut parts = Vec::with_capacity(per);
                    for _ in 0..per {
                        if let Some(r) = results.next() {
                            parts.push(r);
                        }
                    }
                    for r in parts {
                        match r {
                            MultiReadResult::Data { data, stat } => {
                                if let (Some(value), Some(key)) =
                                    (decode(data, &stat), self.key_of(p))
                                {
                                    out.push(KvPair {
                                        key,
                                        value,
                                        last_index: index_of(&stat),
                                    });
                                }
                            }
                            MultiReadResult::Children { children } => {
                                for c in children {
                                    if p == "/" && c == "zookeeper" {
                                        continue;
                                    }
                                    next.push(join(p, &c));
                                }
                            }
                            // Listed by its parent, gone now.
                            _ => consistent &= first,
                        }
                    }
                }
            }
            first = false;
            level = next;
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((out, consistent))
    }

    /// Reads the tree under `base` in one `multi` read of every znode in `known` (updated to
    /// the znodes found), plus more rounds while it finds znodes it did not know: the result is
    /// the first read that saw every child of what it read, which is a state the tree had.
    async fn tree_snapshot(
        &self,
        client: &Client,
        base: &str,
        known: &mut BTreeSet<String>,
    ) -> Result<Vec<KvPair>> {
        for _ in 0..MAX_ATTEMPTS {
            known.remove(base);
            if known.len() >= SNAPSHOT_MAX {
                known.clear();
                return self
                    .list_with(client, base_dir_of(self, base).as_str())
                    .await;
            }
            let paths: Vec<&String> = known.iter().collect();
            let mut reader = client.new_multi_reader();
            for p in std::iter::once(base).chain(paths.iter().map(|p| p.as_str())) {
                reader
                    .add_get_data(p)
                    .and_then(|_| reader.add_get_children(p))
                    .map_err(|e| self.err("watch_tree", e))?;
            }
            let results = reader
                .commit()
                .await
                .map_err(|e| self.err("watch_tree", e))?;
            let mut out = Vec::new();
            let mut present = BTreeSet::new();
            let mut listed = BTreeSet::new();
            let mut results = results.into_iter();
            for p in std::iter::once(base).chain(paths.iter().map(|p| p.as_str())) {
                for _ in 0..2 {
                    match results.next() {
                        Some(MultiReadResult::Data { data, stat }) if p != base => {
                            present.insert(p.to_string());
                            if let (Some(value), Some(key)) = (decode(data, &stat), self.key_of(p))
                            {
                                out.push(KvPair {
                                    key,
                                    value,
                                    last_index: index_of(&stat),
                                });
                            }
                        }
                        Some(MultiReadResult::Children { children }) => {
                            for c in children {
                                if !(p == "/" && c == "zookeeper") {
                                    listed.insert(join(p, &c));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            let complete = listed.is_subset(&present);
            *known = listed;
            if complete {
                out.sort_by(|a, b| a.key.cmp(&b.key));
                return Ok(out);
            }
        }
        Err(KvError::Unavailable {
            url: self.url.clone(),
            reason: format!("the tree under {base} kept changing while read"),
        })
    }

    async fn delete_tree(&self, dir: &str) -> Result<()> {
        let client = self.client().await?;
        let base = self.dir_path(dir);
        for _ in 0..MAX_ATTEMPTS {
            let nodes = self.subtree(&client, &base).await?;
            if nodes.is_empty() {
                self.cleanup_from(&client, &base).await;
                return Ok(());
            }
            let mut conflict = false;
            // Children before parents; one multi for a tree of up to DELETE_BATCH znodes.
            let ordered: Vec<&String> = nodes.iter().rev().collect();
            for chunk in ordered.chunks(DELETE_BATCH) {
                let mut w = client.new_multi_writer();
                for p in chunk {
                    w.add_delete(p, None)
                        .map_err(|e| self.err("delete_tree", e))?;
                }
                match w.commit().await {
                    Ok(_) => {}
                    Err(MultiWriteError::OperationFailed {
                        source: zk::Error::NoNode | zk::Error::NotEmpty,
                        ..
                    }) => {
                        conflict = true;
                        break;
                    }
                    Err(e) => return Err(self.err("delete_tree", e.into())),
                }
            }
            if !conflict {
                self.cleanup_from(&client, &base).await;
                return Ok(());
            }
        }
        Err(self.gave_up(dir))
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<KvPair>> {
        let txn = check_txn(txn, self.max_value(), BACKEND)?;
        let size: usize = txn
            .ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { value, .. } => value.len() + MULTI_OP_OVERHEAD,
                TxnOp::Delete { .. } => MULTI_OP_OVERHEAD,
            })
            .sum::<usize>()
            + txn.compares.len() * MULTI_OP_OVERHEAD;
        if size > self.max_buffer - REQUEST_OVERHEAD {
            return Err(KvError::InvalidTxn(format!(
                "the transaction is about {size} bytes, over the {} bytes a ZooKeeper request may \
                 carry (jute.maxbuffer {} less overhead)",
                self.max_buffer - REQUEST_OVERHEAD,
                self.max_buffer
            )));
        }
        let client = self.client().await?;
        let mut keys: Vec<&str> = Vec::new();
        let mut seen = HashSet::new();
        for k in txn
            .compares
            .iter()
            .map(Compare::key)
            .chain(txn.ops.iter().map(TxnOp::key))
        {
            if seen.insert(k) {
                keys.push(k);
            }
        }
        let put_keys: HashSet<&str> = txn
            .ops
            .iter()
            .filter(|op| matches!(op, TxnOp::Put { .. }))
            .map(TxnOp::key)
            .collect();
        'attempt: for _ in 0..MAX_ATTEMPTS {
            // Read every key involved in one consistent read.
            let mut reader = client.new_multi_reader();
            for k in &keys {
                reader
                    .add_get_data(&self.path(k))
                    .map_err(|e| self.err("txn", e))?;
            }
            let results = reader.commit().await.map_err(|e| self.err("txn", e))?;
            let mut stats: HashMap<&str, Option<Seen>> = HashMap::new();
            for (k, r) in keys.iter().zip(results) {
                let seen = match r {
                    MultiReadResult::Data { data, stat } => {
                        let node = Node::parse(data, &stat);
                        Some(Seen {
                            present: node.is_key(),
                            mode: node.mode(),
                            stat,
                        })
                    }
                    _ => None,
                };
                stats.insert(k, seen);
            }
            let stat_of = |k: &str| stats.get(k).copied().flatten();
            for c in &txn.compares {
                let stat = stat_of(c.key()).filter(|s| s.present).map(|s| s.stat);
                let conflict = |reason: String| KvError::TxnConflict {
                    key: c.key().to_string(),
                    reason,
                };
                match (c, stat) {
                    (Compare::Index { index, .. }, Some(s)) if index_of(&s) != *index => {
                        return Err(conflict(format!(
                            "expected index {index}, found {}",
                            index_of(&s)
                        )))
                    }
                    (Compare::Index { index, .. }, None) => {
                        return Err(conflict(format!("expected index {index}, key is absent")))
                    }
                    (Compare::Absent { .. }, Some(s)) => {
                        return Err(conflict(format!(
                            "expected absent, found index {}",
                            index_of(&s)
                        )))
                    }
                    _ => {}
                }
            }
            // Build the multi: checks first, then writes.
            let mut w = client.new_multi_writer();
            let mut n = 0usize;
            let mut need_parents = Vec::new();
            let mut put_result = Vec::new();
            let mut deleted = Vec::new();
            let zkerr = |e: zk::Error| self.err("txn", e);
            for c in &txn.compares {
                let path = self.path(c.key());
                match (c, stat_of(c.key())) {
                    (_, Some(s)) => {
                        w.add_check_version(&path, s.stat.version).map_err(zkerr)?;
                        n += 1;
                    }
                    (Compare::Absent { key }, None) if !put_keys.contains(key.as_str()) => {
                        // ZooKeeper cannot check absence: create and delete it in the multi.
                        w.add_create(&path, &[], &create_options(Mode::Persistent))
                            .and_then(|_| w.add_delete(&path, None))
                            .map_err(zkerr)?;
                        n += 2;
                        need_parents.push(path);
                    }
                    // A put of the key creates it, which fails if it exists.
                    _ => {}
                }
            }
            for op in &txn.ops {
                let path = self.path(op.key());
                let stat = stat_of(op.key());
                match op {
                    TxnOp::Put { key, value } => {
                        let data = encode(value, Mode::Persistent);
                        match stat {
                            None => {
                                w.add_create(&path, &data, &create_options(Mode::Persistent))
                                    .map_err(zkerr)?;
                                put_result.push(n);
                                n += 1;
                                need_parents.push(path);
                            }
                            Some(s) if s.mode == Mode::Persistent => {
                                w.add_set_data(&path, &data, Some(s.stat.version))
                                    .map_err(zkerr)?;
                                put_result.push(n);
                                n += 1;
                            }
                            Some(s) if s.stat.num_children == 0 => {
                                w.add_delete(&path, Some(s.stat.version))
                                    .and_then(|_| {
                                        w.add_create(
                                            &path,
                                            &data,
                                            &create_options(Mode::Persistent),
                                        )
                                    })
                                    .map_err(zkerr)?;
                                put_result.push(n + 1);
                                n += 2;
                            }
                            Some(_) => {
                                return Err(KvError::Backend {
                                    url: self.url.clone(),
                                    message: format!(
                                        "cannot drop the TTL of key {key:?} in a transaction: \
                                         keys exist under it"
                                    ),
                                })
                            }
                        }
                    }
                    TxnOp::Delete { .. } => match stat {
                        Some(s) if s.present && s.stat.num_children == 0 => {
                            w.add_delete(&path, Some(s.stat.version)).map_err(zkerr)?;
                            n += 1;
                            deleted.push(path);
                        }
                        Some(s) if s.present => {
                            w.add_set_data(&path, &parent_data(s.mode), Some(s.stat.version))
                                .map_err(zkerr)?;
                            n += 1;
                        }
                        _ => {}
                    },
                }
            }
            for path in &need_parents {
                self.ensure_parents(&client, path).await?;
            }
            let results = match w.commit().await {
                Ok(results) => results,
                Err(MultiWriteError::OperationFailed {
                    source:
                        zk::Error::BadVersion
                        | zk::Error::NoNode
                        | zk::Error::NodeExists
                        | zk::Error::NotEmpty,
                    ..
                }) => continue 'attempt,
                Err(e) => return Err(self.err("txn", e.into())),
            };
            // Every write of a multi has the multi's zxid.
            let mut zxid = None;
            for r in &results {
                if let MultiWriteResult::SetData { stat } | MultiWriteResult::Create { stat, .. } =
                    r
                {
                    if !stat.is_invalid() {
                        zxid = Some(index_of(stat));
                    }
                }
            }
            let mut written = Vec::new();
            let puts = txn.ops.iter().filter_map(|op| match op {
                TxnOp::Put { key, value } => Some((key, value)),
                TxnOp::Delete { .. } => None,
            });
            for ((key, value), idx) in puts.zip(put_result) {
                let index = match results.get(idx) {
                    Some(
                        MultiWriteResult::SetData { stat } | MultiWriteResult::Create { stat, .. },
                    ) if !stat.is_invalid() => index_of(stat),
                    _ => match zxid {
                        Some(z) => z,
                        None => match client.check_stat(&self.path(key)).await {
                            Ok(Some(stat)) => index_of(&stat),
                            _ => 0,
                        },
                    },
                };
                written.push(KvPair {
                    key: key.clone(),
                    value: value.clone(),
                    last_index: index,
                });
            }
            for path in &deleted {
                self.cleanup_from(&client, parent_of(path)).await;
            }
            return Ok(written);
        }
        Err(KvError::TxnConflict {
            key: keys.first().map(|k| k.to_string()).unwrap_or_default(),
            reason: format!("the keys kept changing: gave up after {MAX_ATTEMPTS} attempts"),
        })
    }
}

/// A znode as a transaction read it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    present: bool,
    mode: Mode,
    stat: Stat,
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Any,
    Absent,
    Index(u64),
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

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;
/// Reads a watch's current state.
/// The paths named by the notifications that caused the read (empty for the first read).
type Reader<T> = Arc<dyn Fn(Arc<Inner>, Client, Vec<String>) -> BoxFuture<Result<T>> + Send + Sync>;

/// A state a watch may yield: whether `next` may follow `last`.
trait WatchState: Clone + PartialEq + Send + Sync + 'static {
    fn may_follow(&self, last: &Self) -> bool;
}

impl WatchState for Option<KvPair> {
    fn may_follow(&self, last: &Self) -> bool {
        match (self, last) {
            (Some(new), Some(old)) => new.last_index > old.last_index,
            (a, b) => a != b,
        }
    }
}

impl WatchState for Vec<KvPair> {
    fn may_follow(&self, last: &Self) -> bool {
        self != last
    }
}

/// Registers the watch, reads the current state, and hands the rest to a task.
async fn start_watch<T: WatchState>(
    inner: &Arc<Inner>,
    path: String,
    mode: AddWatchMode,
    reader: Reader<T>,
    op: &'static str,
) -> Result<mpsc::Receiver<Result<T>>> {
    let (watcher, first) = inner
        .run(op, async {
            let client = inner.client().await?;
            let watcher = client
                .watch(&path, mode)
                .await
                .map_err(|e| inner.err(op, e))?;
            let first = reader(inner.clone(), client, Vec::new()).await?;
            Ok((watcher, first))
        })
        .await?;
    let (tx, rx) = mpsc::channel(64);
    // The channel is empty: this cannot fail.
    let _ = tx.try_send(Ok(first.clone()));
    tokio::spawn(watch_task(
        inner.clone(),
        path,
        mode,
        watcher,
        first,
        tx,
        reader,
    ));
    Ok(rx)
}

async fn watch_task<T: WatchState>(
    inner: Arc<Inner>,
    path: String,
    mode: AddWatchMode,
    mut watcher: zk::PersistentWatcher,
    mut last: T,
    tx: mpsc::Sender<Result<T>>,
    reader: Reader<T>,
) {
    let mut closed = inner.closed.subscribe();
    let mut reported = false;
    loop {
        // Events of one session.
        loop {
            let event = tokio::select! {
                e = watcher.changed() => e,
                _ = until_closed(&mut closed) => return,
                _ = tx.closed() => return,
            };
            // One read answers every notification already queued.
            let mut events = vec![event];
            while !events.last().is_some_and(|e| {
                e.event_type == EventType::Session && e.session_state.is_terminated()
            }) {
                match watcher.changed().now_or_never() {
                    Some(e) => events.push(e),
                    None => break,
                }
            }
            let mut connected = true;
            let mut ended = false;
            let mut reconnected = false;
            for event in &events {
                if event.event_type != EventType::Session {
                    continue;
                }
                match event.session_state {
                    SessionState::Disconnected => {
                        connected = false;
                        if !reported {
                            reported = true;
                            let e = KvError::Unavailable {
                                url: inner.url.clone(),
                                reason: format!("watch on {path}: connection to ZooKeeper lost"),
                            };
                            if tx.send(Err(e)).await.is_err() {
                                return;
                            }
                        }
                    }
                    s if s.is_terminated() => ended = true,
                    _ => {
                        connected = true;
                        reconnected = true;
                    }
                }
            }
            if ended || (connected && reconnected) {
                // zookeeper-client 0.11 does not set persistent watches again after a
                // reconnection (its SetWatches request leaves them out), and ZooKeeper drops
                // the notifications of the outage anyway: watch again, then read.
                break;
            }
            if !connected {
                // The reconnection will say when to read.
                continue;
            }
            // A change, or a reconnection: read again.
            let Ok(client) = inner.client().await else {
                continue;
            };
            let paths: Vec<String> = events
                .iter()
                .filter(|e| e.event_type == EventType::NodeCreated)
                .map(|e| e.path.clone())
                .collect();
            match tokio::time::timeout(inner.timeout, reader(inner.clone(), client, paths)).await {
                Ok(Ok(state)) => {
                    reported = false;
                    if state.may_follow(&last) {
                        last = state.clone();
                        if tx.send(Ok(state)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(%path, error = %e, "watch read failed; waiting for the next event");
                    if !reported {
                        reported = true;
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(_) => {
                    tracing::debug!(%path, "watch read timed out; waiting for the next event");
                }
            }
        }
        // Reconnected, or the session ended (then open a new one): watch again, read again.
        // The old watcher is dropped only once the new one is registered.
        loop {
            if inner.is_closed() {
                return;
            }
            let attempt = async {
                let client = inner.client().await?;
                let w = client
                    .watch(&path, mode)
                    .await
                    .map_err(|e| inner.err("watch", e))?;
                let state = reader(inner.clone(), client, Vec::new()).await?;
                Ok::<_, KvError>((w, state))
            };
            match tokio::time::timeout(inner.timeout, attempt).await {
                Ok(Ok((w, state))) => {
                    watcher = w;
                    reported = false;
                    if state.may_follow(&last) {
                        last = state.clone();
                        if tx.send(Ok(state)).await.is_err() {
                            return;
                        }
                    }
                    break;
                }
                Ok(Err(KvError::Closed { .. })) => return,
                result => {
                    if !reported {
                        reported = true;
                        let e = match result {
                            Ok(Err(e)) => e,
                            _ => KvError::Timeout {
                                url: inner.url.clone(),
                                op: "watch",
                                after: inner.timeout,
                            },
                        };
                        if tx.send(Err(e)).await.is_err() {
                            return;
                        }
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                        _ = until_closed(&mut closed) => return,
                        _ = tx.closed() => return,
                    }
                }
            }
        }
    }
}

/// A lock on one key: the standard ZooKeeper recipe, one session per held lock.
struct ZkLocker {
    inner: Arc<Inner>,
    key: String,
    path: String,
    options: LockOptions,
}

impl ZkLocker {
    fn sequence(name: &str) -> Option<i64> {
        name.strip_prefix(LOCK_PREFIX)?
            .rsplit('-')
            .next()?
            .parse()
            .ok()
    }

    /// Creates this contender's node; returns its full path.
    async fn enqueue(&self, client: &Client) -> Result<String> {
        let inner = &self.inner;
        let prefix = format!(
            "{}/{LOCK_PREFIX}{:016x}-",
            self.path,
            client.session_id().0 as u64
        );
        let mut data = Vec::with_capacity(self.options.value.len() + 1);
        data.push(LOCK_MARK);
        data.extend_from_slice(&self.options.value);
        let opts = CreateMode::EphemeralSequential.with_acls(Acls::anyone_all());
        for _ in 0..MAX_ATTEMPTS {
            match client.create(&prefix, &data, &opts).await {
                Ok((_, seq)) => return Ok(format!("{prefix}{seq}")),
                Err(zk::Error::NoNode) => inner.ensure_parents(client, &prefix).await?,
                Err(e) => return Err(inner.err("lock", e)),
            }
        }
        Err(inner.gave_up(&self.key))
    }

    /// One step of the wait: `Ok(true)` once ours is the first node.
    async fn step(&self, client: &Client, me: &str) -> Result<Option<zk::OneshotWatcher>> {
        let inner = &self.inner;
        let children = client
            .list_children(&self.path)
            .await
            .map_err(|e| inner.err("lock", e))?;
        let mut contenders: Vec<(i64, String)> = children
            .into_iter()
            .filter_map(|c| Self::sequence(&c).map(|s| (s, c)))
            .collect();
        contenders.sort();
        let my_name = me.rsplit('/').next().unwrap_or(me);
        let Some(pos) = contenders.iter().position(|(_, c)| c == my_name) else {
            return Err(KvError::LockLost {
                key: self.key.clone(),
                reason: "this contender's node was deleted while waiting".into(),
            });
        };
        if pos == 0 {
            return Ok(None);
        }
        let before = join(&self.path, &contenders[pos - 1].1);
        let (stat, watcher) = client
            .check_and_watch_stat(&before)
            .await
            .map_err(|e| inner.err("lock", e))?;
        Ok(stat.map(|_| watcher))
    }
}

#[async_trait]
impl Locker for ZkLocker {
    async fn lock(&self) -> Result<LockHandle> {
        let inner = &self.inner;
        let client = inner
            .run("lock", inner.new_session(self.options.ttl))
            .await?;
        let me = inner.run("lock", self.enqueue(&client)).await?;
        let mut state = client.state_watcher();
        let mut closed = inner.closed.subscribe();
        loop {
            let waiting = inner.run("lock", self.step(&client, &me)).await?;
            let Some(watcher) = waiting else { break };
            tokio::select! {
                _ = watcher.changed() => {}
                // Dropping the session on return takes this contender's node away.
                _ = until_closed(&mut closed) => return Err(inner.closed_err()),
                s = wait_terminal(&mut state) => {
                    return Err(KvError::Unavailable {
                        url: inner.url.clone(),
                        reason: format!("lock {:?}: the lock session ended ({s}) while waiting", self.key),
                    });
                }
            }
        }
        tracing::debug!(key = %self.key, node = %me, "lock acquired");
        let (lost_tx, lost_rx) = watch::channel(None);
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(hold(
            inner.clone(),
            client,
            self.key.clone(),
            me,
            lost_tx,
            stop_rx,
        ));
        Ok(LockHandle::new(
            self.key.clone(),
            lost_rx,
            Box::new(ZkRelease {
                stop: stop_tx,
                task,
            }),
        ))
    }
}

/// Resolves once the store is closed.
async fn until_closed(closed: &mut watch::Receiver<bool>) {
    let _ = closed.wait_for(|c| *c).await;
}

async fn wait_terminal(state: &mut zk::StateWatcher) -> SessionState {
    loop {
        let s = state.changed().await;
        if s.is_terminated() {
            return s;
        }
    }
}

/// Keeps a held lock: watches its node and its session until released or lost.
async fn hold(
    inner: Arc<Inner>,
    client: Client,
    key: String,
    me: String,
    lost: watch::Sender<Option<String>>,
    mut stop: oneshot::Receiver<()>,
) -> Result<()> {
    let mut closed = inner.closed.subscribe();
    let mut state = client.state_watcher();
    let grace = client.session_timeout() / 2;
    let mut disconnected_at: Option<tokio::time::Instant> = None;
    let lose = |reason: String| {
        tracing::warn!(%key, %reason, "lock lost");
        let _ = lost.send(Some(reason));
    };
    let mut node_watch =
        match tokio::time::timeout(inner.timeout, client.check_and_watch_stat(&me)).await {
            Ok(Ok((Some(_), w))) => Box::pin(w.changed()),
            Ok(Ok((None, _))) => {
                lose("the lock node was deleted".into());
                return Ok(());
            }
            Ok(Err(e)) => {
                lose(format!("cannot watch the lock node: {e}"));
                return Ok(());
            }
            Err(_) => {
                lose("cannot watch the lock node: timed out".into());
                return Ok(());
            }
        };
    loop {
        let deadline = disconnected_at.map(|t| t + grace);
        tokio::select! {
            _ = &mut stop => break,
            _ = until_closed(&mut closed) => break,
            event = &mut node_watch => {
                match event.event_type {
                    EventType::NodeDeleted => {
                        lose("the lock node was deleted".into());
                        return Ok(());
                    }
                    EventType::Session => {
                        lose(format!("the lock session ended: {}", event.session_state));
                        return Ok(());
                    }
                    _ => match tokio::time::timeout(inner.timeout, client.check_and_watch_stat(&me)).await {
                        Ok(Ok((Some(_), w))) => node_watch = Box::pin(w.changed()),
                        _ => {
                            lose("the lock node is gone".into());
                            return Ok(());
                        }
                    },
                }
            }
            s = state.changed() => {
                match s {
                    SessionState::Disconnected => {
                        disconnected_at.get_or_insert_with(tokio::time::Instant::now);
                    }
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => disconnected_at = None,
                    other => {
                        lose(format!("the lock session ended: {other}"));
                        return Ok(());
                    }
                }
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                lose(format!(
                    "disconnected from ZooKeeper for {grace:?}, half the lock's session timeout: \
                     the server may give the lock away"
                ));
                return Ok(());
            }
        }
    }
    // Release: delete the node, then end the session (which would delete it anyway).
    let result = match tokio::time::timeout(inner.timeout, client.delete(&me, None)).await {
        Ok(Ok(())) | Ok(Err(zk::Error::NoNode)) => {
            inner.cleanup_from(&client, parent_of(&me)).await;
            Ok(())
        }
        Ok(Err(e)) => Err(inner.err("unlock", e)),
        Err(_) => Err(KvError::Timeout {
            url: inner.url.clone(),
            op: "unlock",
            after: inner.timeout,
        }),
    };
    tracing::debug!(%key, "lock released");
    result
}

struct ZkRelease {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<()>>,
}

#[async_trait]
impl LockRelease for ZkRelease {
    async fn release(self: Box<Self>) -> Result<()> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(Ok(()))
    }

    fn release_in_background(self: Box<Self>) {
        // The holding task deletes the node and closes the session on its own.
        let _ = self.stop.send(());
    }
}

/// The directory whose znode is `base`.
fn base_dir_of(inner: &Inner, base: &str) -> String {
    inner.key_of(base).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_escape_and_round_trip() {
        for s in [
            "réseau",
            "网络",
            "🐳",
            "a%b",
            "tab\there",
            "zookeeper",
            "\u{e000}x",
        ] {
            let e = escape_segment(s, false);
            assert!(!e
                .chars()
                .any(|c| c == '\u{1f433}' || c == '\t' || c == '\u{e000}'));
            assert_eq!(unescape_segment(&e).as_deref(), Some(s));
        }
        assert_eq!(escape_segment("🐳", false), "%F0%9F%90%B3");
        assert_eq!(escape_segment("zookeeper", true), "%7Aookeeper");
        assert_eq!(escape_segment("zookeeper", false), "zookeeper");
        assert_eq!(
            unescape_segment("%7Aookeeper").as_deref(),
            Some("zookeeper")
        );
        assert_eq!(unescape_segment("bad%zz"), None);
    }

    #[test]
    fn node_encoding() {
        let stat = Stat {
            czxid: 1,
            mzxid: 1,
            pzxid: 1,
            ctime: 0,
            mtime: 0,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 1,
            num_children: 0,
        };
        let parse = |data: Vec<u8>| Node::parse(data, &stat);
        assert!(matches!(parse(encode(b"v", Mode::Persistent)),
            Node::Key { value, mode: Mode::Persistent } if value == b"v"));
        assert!(matches!(parse(encode(b"", Mode::Ttl(1500))),
            Node::Key { value, mode: Mode::Ttl(1500) } if value.is_empty()));
        assert!(matches!(
            parse(parent_data(Mode::Persistent)),
            Node::Parent {
                mode: Mode::Persistent
            }
        ));
        assert!(matches!(
            parse(parent_data(Mode::Ttl(7))),
            Node::Parent { mode: Mode::Ttl(7) }
        ));
        assert!(matches!(parse(vec![LOCK_MARK, 1]), Node::Lock));
        assert!(matches!(parse(b"raw".to_vec()), Node::Key { value, .. } if value == b"raw"));
        let ephemeral = Stat {
            ephemeral_owner: 0x1234,
            ..stat
        };
        assert!(matches!(
            Node::parse(encode(b"v", Mode::Persistent), &ephemeral),
            Node::Lock
        ));
    }

    #[test]
    fn paths() {
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert_eq!(ZkLocker::sequence("lock-00ab-0000000012"), Some(12));
        assert_eq!(ZkLocker::sequence("other"), None);
    }
}
