//! The etcd v3 backend, over the `etcd-client` crate.
//!
//! - **Keys** live under the URL's prefix: with `etcd://h:2379/plexus`, the key `a/b` is stored
//!   as `plexus/a/b` and read back as `a/b`.
//! - **Index**: `last_index` is the key's `mod_revision` (a cluster-wide revision, so it grows
//!   with every change of the key).
//! - **Compare-and-swap and transactions** are etcd `Txn`s comparing `mod_revision` (or
//!   `create_revision == 0` for "absent"); when one fails, its `else` branch reads the compared
//!   keys so the error names the key and what it held.
//! - **TTL**: every write with a TTL gets a lease of its own, its TTL rounded up to whole
//!   seconds (etcd's granularity); a later write replaces the lease (or drops it).
//! - **Watch** reads the current value, then watches from the next revision. When the watch
//!   stream breaks (server down, connection cut) it yields one `Err(Unavailable)`, retries with
//!   a backoff, and re-watches from the revision after the last one it delivered, so no change
//!   is missed. If etcd compacted that history meanwhile, it yields an `Err` saying so and then
//!   the current state.
//! - **Locks**: a lease with the lock's TTL, kept alive by a background task; taking the lock
//!   is a create-only put of the key under that lease, waiting on a watch for the key's delete
//!   when someone else holds it. A holder whose keep-alives fail for longer than the TTL (the
//!   server has expired the lease by then), or whose key vanishes, is told through
//!   [`LockHandle::lost`](crate::LockHandle::lost).
//! - **Faults**: every call is bounded by [`OpenOptions::timeout`] and every error names the
//!   URL (credentials never appear in it).

mod lock;
mod watch;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions,
    GetOptions, Identity, KeyValue, KvClient, LeaseClient, PutOptions as EtcdPutOptions,
    TlsOptions as EtcdTls, Txn as EtcdTxn, TxnOp as EtcdTxnOp, TxnOpResponse, WatchClient,
};

use crate::error::{KvError, Result};
use crate::key;
use crate::lock::Locker;
use crate::store::{check_txn, check_value, Store};
use crate::types::{
    Compare, KvPair, LockOptions, PutOptions, TreeWatchStream, Txn, TxnOp, WatchStream,
};
use crate::{OpenOptions, StoreUrl, TlsOptions};

/// The largest value the etcd backend accepts: etcd's default `--max-request-bytes` (1.5 MiB)
/// less 16 KiB of headroom for the key and the request's framing.
pub const MAX_VALUE_BYTES: usize = 1536 * 1024 - 16 * 1024;

// gRPC status codes (stable numbers of the gRPC spec) that mean "the cluster is not reachable
// now" rather than "the request is wrong", and "not found" for a lease already gone.
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_NOT_FOUND: i32 = 5;
const GRPC_UNAVAILABLE: i32 = 14;

/// The largest gRPC response the client decodes: a `list` of many large values, or a watch
/// batch of them, can be far larger than tonic's default 4 MiB.
const MAX_RESPONSE_BYTES: usize = 1 << 30;

/// Connects to the etcd cluster named by `url` (`etcd://h1:2379,h2:2379/prefix`).
///
/// The connection is checked with one read before this returns, so an unreachable cluster
/// fails here, within `options.timeout`, with an error naming the URL. TLS settings come from
/// `options.tls` (a file that cannot be read is named in the error), user and password from
/// `options.credentials`.
pub async fn connect(url: &StoreUrl, options: &OpenOptions) -> Result<Arc<dyn Store>> {
    Ok(Arc::new(EtcdStore::connect(url, options).await?))
}

/// A [`Store`] on etcd v3. Cloning is cheap and gives the same connection.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

/// What every call, watch task and lock task shares.
pub(crate) struct Inner {
    /// The URL without credentials, for messages.
    url: String,
    /// `"path/"`, or `""` when the URL has no path.
    prefix: String,
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
    timeout: Duration,
    closed: AtomicBool,
    /// Turns true on close: watch and lock tasks end.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Leases of locks held or being taken, revoked on close.
    leases: Mutex<HashSet<i64>>,
}

/// Endpoints and credentials split out of the URL's host list (`user:pw@h:2379` is accepted,
/// though `OpenOptions::credentials` is the better place for them).
struct Endpoints {
    hosts: Vec<String>,
    credentials: Option<(String, String)>,
}

fn split_endpoints(url: &StoreUrl) -> Endpoints {
    let mut credentials = None;
    let hosts = url
        .hosts
        .iter()
        .map(|h| match h.rsplit_once('@') {
            Some((userinfo, host)) => {
                if credentials.is_none() {
                    let (user, pw) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                    credentials = Some((user.to_string(), pw.to_string()));
                }
                host.to_string()
            }
            None => h.clone(),
        })
        .collect();
    Endpoints { hosts, credentials }
}

/// Reads one TLS file, naming it in the error.
fn read_tls_file(url: &str, what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| KvError::Backend {
        url: url.to_string(),
        message: format!("cannot read the TLS {what} file {}: {e}", path.display()),
    })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(KvError::Backend {
            url: url.to_string(),
            message: format!(
                "the TLS {what} file {} is not PEM (no -----BEGIN line)",
                path.display()
            ),
        });
    }
    Ok(bytes)
}

fn tls_config(url: &str, tls: &TlsOptions) -> Result<EtcdTls> {
    let mut config = EtcdTls::new();
    match &tls.ca_file {
        Some(ca) => {
            config = config.ca_certificate(Certificate::from_pem(read_tls_file(url, "CA", ca)?));
        }
        None => config = config.with_native_roots(),
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let cert = read_tls_file(url, "client certificate", cert)?;
            let key = read_tls_file(url, "client key", key)?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        (None, None) => {}
        (Some(cert), None) => {
            return Err(KvError::Backend {
                url: url.to_string(),
                message: format!(
                    "TLS client certificate {} given without its key file",
                    cert.display()
                ),
            })
        }
        (None, Some(key)) => {
            return Err(KvError::Backend {
                url: url.to_string(),
                message: format!(
                    "TLS client key {} given without its certificate file",
                    key.display()
                ),
            })
        }
    }
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
}

/// An error and its sources, on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Whole seconds, rounded up, at least 1: etcd's lease granularity.
pub(crate) fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    secs.clamp(1, i64::MAX as u64) as i64
}

impl EtcdStore {
    /// Connects and checks the connection with one read (see [`connect`]).
    pub async fn connect(url: &StoreUrl, options: &OpenOptions) -> Result<Self> {
        let endpoints = split_endpoints(url);
        let display = if url.path.is_empty() {
            format!("etcd://{}", endpoints.hosts.join(","))
        } else {
            format!("etcd://{}/{}", endpoints.hosts.join(","), url.path)
        };
        if endpoints.hosts.is_empty() {
            return Err(KvError::InvalidUrl {
                url: display,
                reason: "no endpoint; use etcd://HOST:PORT[,HOST:PORT…]/prefix".into(),
            });
        }
        let prefix = key::directory(&url.path).map_err(|e| KvError::InvalidUrl {
            url: display.clone(),
            reason: format!("bad key prefix: {e}"),
        })?;
        let prefix = key::dir_prefix(prefix);
        let timeout = options.timeout;

        let mut connect = ConnectOptions::new()
            .with_connect_timeout(timeout)
            // etcd refuses pings more often than every 5 s (--grpc-keepalive-min-time).
            .with_keep_alive(
                Duration::from_secs(10),
                timeout.min(Duration::from_secs(10)),
            )
            .with_keep_alive_while_idle(true);
        let scheme = match &options.tls {
            Some(tls) => {
                connect = connect.with_tls(tls_config(&display, tls)?);
                "https"
            }
            None => "http",
        };
        if let Some((user, password)) = options.credentials.clone().or(endpoints.credentials) {
            connect = connect
                .with_user(user, password)
                .with_auto_token_refresh(true);
        }
        let urls: Vec<String> = endpoints
            .hosts
            .iter()
            .map(|h| format!("{scheme}://{h}"))
            .collect();

        let unavailable = |e: etcd_client::Error| KvError::Unavailable {
            url: display.clone(),
            reason: describe(&e),
        };
        let client = match tokio::time::timeout(timeout, Client::connect(urls, Some(connect))).await
        {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => {
                return Err(KvError::Timeout {
                    url: display,
                    op: "connect",
                    after: timeout,
                })
            }
        };
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            url: display,
            prefix,
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_RESPONSE_BYTES),
            lease: client.lease_client(),
            timeout,
            closed: AtomicBool::new(false),
            shutdown,
            leases: Mutex::new(HashSet::new()),
        });
        // One read proves the cluster answers (and that TLS and credentials work).
        let mut kv = inner.kv.clone();
        // (etcd refuses an empty key, which `full("")` is without a prefix.)
        let probe = inner.full(".plexus-probe");
        inner
            .call(
                "connect",
                kv.get(probe, Some(GetOptions::new().with_count_only())),
            )
            .await?;
        tracing::debug!(url = %inner.url, "connected to etcd");
        Ok(Self { inner })
    }
}

impl Inner {
    /// The etcd key of a canonical key.
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The canonical key of an etcd key under the prefix.
    fn strip(&self, full: &[u8]) -> String {
        let rest = full.strip_prefix(self.prefix.as_bytes()).unwrap_or(full);
        String::from_utf8_lossy(rest).into_owned()
    }

    fn pair(&self, kv: &KeyValue) -> KvPair {
        KvPair {
            key: self.strip(kv.key()),
            value: kv.value().to_vec(),
            last_index: kv.mod_revision().max(0) as u64,
        }
    }

    fn closed_err(&self) -> KvError {
        KvError::Closed {
            url: self.url.clone(),
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_err());
        }
        Ok(())
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Maps a client error to ours: connection trouble is `Unavailable`, the rest `Backend`.
    fn map_err(&self, op: &'static str, e: etcd_client::Error) -> KvError {
        use etcd_client::Error as E;
        let unavailable = |reason: String| KvError::Unavailable {
            url: self.url.clone(),
            reason: format!("{op}: {reason}"),
        };
        match &e {
            E::GRpcStatus(status) => match status.code() as i32 {
                GRPC_CANCELLED | GRPC_UNKNOWN | GRPC_DEADLINE_EXCEEDED | GRPC_UNAVAILABLE => {
                    unavailable(describe(&e))
                }
                _ => KvError::Backend {
                    url: self.url.clone(),
                    message: format!("{op}: {}", status.message()),
                },
            },
            E::TransportError(_) | E::IoError(_) | E::WatchError(_) => unavailable(describe(&e)),
            _ => KvError::Backend {
                url: self.url.clone(),
                message: format!("{op}: {}", describe(&e)),
            },
        }
    }

    /// Runs one remote call within the timeout, mapping its errors.
    async fn call<T, F>(&self, op: &'static str, fut: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        self.check_open()?;
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.map_err(op, e)),
            Err(_) => Err(KvError::Timeout {
                url: self.url.clone(),
                op,
                after: self.timeout,
            }),
        }
    }

    /// Bounds a sequence of calls (a lease grant, then the write) by one timeout, so that an
    /// operation made of several round trips still fails within `OpenOptions::timeout`.
    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(KvError::Timeout {
                url: self.url.clone(),
                op,
                after: self.timeout,
            }),
        }
    }

    /// A lease for a write with `ttl` (0: none).
    async fn lease_for(&self, ttl: Option<Duration>) -> Result<i64> {
        match ttl {
            None => Ok(0),
            Some(ttl) => {
                let mut lease = self.lease.clone();
                let granted = self
                    .call("grant lease", lease.grant(ttl_secs(ttl), None))
                    .await?;
                Ok(granted.id())
            }
        }
    }

    /// Revokes a lease; a lease already gone is fine.
    async fn revoke(&self, id: i64) -> Result<()> {
        let mut lease = self.lease.clone();
        match tokio::time::timeout(self.timeout, lease.revoke(id)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(etcd_client::Error::GRpcStatus(s))) if s.code() as i32 == GRPC_NOT_FOUND => {
                Ok(())
            }
            Ok(Err(e)) => Err(self.map_err("revoke lease", e)),
            Err(_) => Err(KvError::Timeout {
                url: self.url.clone(),
                op: "revoke lease",
                after: self.timeout,
            }),
        }
    }

    fn put_options(lease: i64) -> Option<EtcdPutOptions> {
        (lease != 0).then(|| EtcdPutOptions::new().with_lease(lease))
    }

    /// A read of `full` in a transaction's `else` branch.
    fn read_op(full: &str) -> EtcdTxnOp {
        EtcdTxnOp::get(full, None)
    }
}

/// The first key-value of the `index`-th response of a failed transaction's `else` branch.
fn else_read(responses: &[TxnOpResponse], index: usize) -> Option<&KeyValue> {
    match responses.get(index) {
        Some(TxnOpResponse::Get(get)) => get.kvs().first(),
        _ => None,
    }
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> u64 {
    header.map(|h| h.revision()).unwrap_or(0).max(0) as u64
}

#[async_trait]
impl Store for EtcdStore {
    fn url(&self) -> &str {
        &self.inner.url
    }

    fn max_value_bytes(&self) -> usize {
        MAX_VALUE_BYTES
    }

    async fn put(&self, key: &str, value: &[u8], options: PutOptions) -> Result<KvPair> {
        let inner = &self.inner;
        inner.check_open()?;
        let key = key::leaf(key)?;
        check_value(key, value, MAX_VALUE_BYTES, "etcd")?;
        let mut kv = inner.kv.clone();
        let write = async {
            let lease = inner.lease_for(options.ttl).await?;
            inner
                .call(
                    "put",
                    kv.put(inner.full(key), value, Inner::put_options(lease)),
                )
                .await
        };
        // With a TTL the put is two round trips (grant, put): bound them together.
        let resp = match options.ttl {
            Some(_) => inner.bounded("put", write).await?,
            None => write.await?,
        };
        Ok(KvPair {
            key: key.to_string(),
            value: value.to_vec(),
            last_index: header_revision(resp.header()),
        })
    }

    async fn get(&self, key: &str) -> Result<KvPair> {
        let inner = &self.inner;
        inner.check_open()?;
        let key = key::leaf(key)?;
        let mut kv = inner.kv.clone();
        let resp = inner.call("get", kv.get(inner.full(key), None)).await?;
        resp.kvs()
            .first()
            .map(|kv| inner.pair(kv))
            .ok_or_else(|| KvError::KeyNotFound {
                key: key.to_string(),
            })
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        let key = key::leaf(key)?;
        let mut kv = inner.kv.clone();
        let resp = inner
            .call("delete", kv.delete(inner.full(key), None))
            .await?;
        if resp.deleted() == 0 {
            return Err(KvError::KeyNotFound {
                key: key.to_string(),
            });
        }
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let inner = &self.inner;
        inner.check_open()?;
        let key = key::leaf(key)?;
        let mut kv = inner.kv.clone();
        let resp = inner
            .call(
                "exists",
                kv.get(inner.full(key), Some(GetOptions::new().with_count_only())),
            )
            .await?;
        Ok(resp.count() > 0)
    }

    async fn list(&self, dir: &str) -> Result<Vec<KvPair>> {
        let inner = &self.inner;
        inner.check_open()?;
        let prefix = inner.full(&key::dir_prefix(key::directory(dir)?));
        let mut kv = inner.kv.clone();
        let resp = inner
            .call(
                "list",
                kv.get(prefix, Some(GetOptions::new().with_prefix())),
            )
            .await?;
        // etcd returns a range sorted by key bytes, which is the order of the canonical keys.
        Ok(resp.kvs().iter().map(|kv| inner.pair(kv)).collect())
    }

    async fn delete_tree(&self, dir: &str) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        let prefix = inner.full(&key::dir_prefix(key::directory_nonroot(dir)?));
        let mut kv = inner.kv.clone();
        inner
            .call(
                "delete_tree",
                kv.delete(prefix, Some(DeleteOptions::new().with_prefix())),
            )
            .await?;
        Ok(())
    }

    async fn atomic_put(
        &self,
        key: &str,
        value: &[u8],
        previous: Option<&KvPair>,
        options: PutOptions,
    ) -> Result<KvPair> {
        let inner = &self.inner;
        inner.check_open()?;
        let key = key::leaf(key)?;
        check_value(key, value, MAX_VALUE_BYTES, "etcd")?;
        let full = inner.full(key);
        let compare = match previous {
            None => EtcdCompare::create_revision(full.as_str(), CompareOp::Equal, 0),
            Some(p) => EtcdCompare::mod_revision(
                full.as_str(),
                CompareOp::Equal,
                i64::try_from(p.last_index).unwrap_or(i64::MAX),
            ),
        };
        let mut kv = inner.kv.clone();
        let write = async {
            let lease = inner.lease_for(options.ttl).await?;
            let txn = EtcdTxn::new()
                .when([compare])
                .and_then([EtcdTxnOp::put(
                    full.as_str(),
                    value,
                    Inner::put_options(lease),
                )])
                .or_else([Inner::read_op(&full)]);
            inner.call("atomic_put", kv.txn(txn)).await
        };
        let resp = match options.ttl {
            Some(_) => inner.bounded("atomic_put", write).await?,
            None => write.await?,
        };
        if resp.succeeded() {
            return Ok(KvPair {
                key: key.to_string(),
                value: value.to_vec(),
                last_index: header_revision(resp.header()),
            });
        }
        let responses = resp.op_responses();
        let found = else_read(&responses, 0);
        Err(match (previous, found) {
            (None, _) => KvError::KeyExists {
                key: key.to_string(),
            },
            (Some(_), None) => KvError::KeyNotFound {
                key: key.to_string(),
            },
            (Some(p), Some(kv)) => KvError::KeyModified {
                key: key.to_string(),
                expected: p.last_index,
                found: kv.mod_revision().max(0) as u64,
            },
        })
    }

    async fn atomic_delete(&self, key: &str, previous: &KvPair) -> Result<()> {
        let inner = &self.inner;
        inner.check_open()?;
        let key = key::leaf(key)?;
        let full = inner.full(key);
        let txn = EtcdTxn::new()
            .when([EtcdCompare::mod_revision(
                full.as_str(),
                CompareOp::Equal,
                i64::try_from(previous.last_index).unwrap_or(i64::MAX),
            )])
            .and_then([EtcdTxnOp::delete(full.as_str(), None)])
            .or_else([Inner::read_op(&full)]);
        let mut kv = inner.kv.clone();
        let resp = inner.call("atomic_delete", kv.txn(txn)).await?;
        if resp.succeeded() {
            return Ok(());
        }
        let responses = resp.op_responses();
        Err(match else_read(&responses, 0) {
            None => KvError::KeyNotFound {
                key: key.to_string(),
            },
            Some(kv) => KvError::KeyModified {
                key: key.to_string(),
                expected: previous.last_index,
                found: kv.mod_revision().max(0) as u64,
            },
        })
    }

    async fn sync(&self) -> Result<()> {
        // etcd acknowledges a write once a quorum has it on disk.
        self.inner.check_open()
    }

    async fn txn(&self, txn: Txn) -> Result<Vec<KvPair>> {
        let inner = &self.inner;
        inner.check_open()?;
        let txn = check_txn(txn, MAX_VALUE_BYTES, "etcd")?;
        let compares: Vec<EtcdCompare> = txn
            .compares
            .iter()
            .map(|c| match c {
                Compare::Index { key, index } => EtcdCompare::mod_revision(
                    inner.full(key),
                    CompareOp::Equal,
                    i64::try_from(*index).unwrap_or(i64::MAX),
                ),
                Compare::Absent { key } => {
                    EtcdCompare::create_revision(inner.full(key), CompareOp::Equal, 0)
                }
            })
            .collect();
        let ops: Vec<EtcdTxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { key, value } => EtcdTxnOp::put(inner.full(key), value.clone(), None),
                TxnOp::Delete { key } => EtcdTxnOp::delete(inner.full(key), None),
            })
            .collect();
        let reads: Vec<EtcdTxnOp> = txn
            .compares
            .iter()
            .map(|c| Inner::read_op(&inner.full(c.key())))
            .collect();
        let request = EtcdTxn::new().when(compares).and_then(ops).or_else(reads);
        let mut kv = inner.kv.clone();
        let resp = inner.call("txn", kv.txn(request)).await?;
        if resp.succeeded() {
            let revision = header_revision(resp.header());
            return Ok(txn
                .ops
                .into_iter()
                .filter_map(|op| match op {
                    TxnOp::Put { key, value } => Some(KvPair {
                        key,
                        value,
                        last_index: revision,
                    }),
                    TxnOp::Delete { .. } => None,
                })
                .collect());
        }
        // Find the first comparison that failed, from the reads of the `else` branch.
        let responses = resp.op_responses();
        for (i, c) in txn.compares.iter().enumerate() {
            let found = else_read(&responses, i);
            let reason = match (c, found) {
                (Compare::Index { index, .. }, None) => {
                    format!("expected index {index}, but the key is absent")
                }
                (Compare::Index { index, .. }, Some(kv))
                    if kv.mod_revision().max(0) as u64 != *index =>
                {
                    format!("expected index {index}, found {}", kv.mod_revision())
                }
                (Compare::Absent { .. }, Some(kv)) => {
                    format!("expected absent, found at index {}", kv.mod_revision())
                }
                _ => continue,
            };
            return Err(KvError::TxnConflict {
                key: c.key().to_string(),
                reason,
            });
        }
        // Every comparison holds now: a concurrent writer changed a key back in between.
        Err(KvError::TxnConflict {
            key: txn
                .compares
                .first()
                .map(|c| c.key().to_string())
                .unwrap_or_default(),
            reason: "a compared key changed while the transaction ran".into(),
        })
    }

    async fn watch(&self, key: &str) -> Result<WatchStream> {
        self.inner.check_open()?;
        let key = key::leaf(key)?;
        watch::watch_key(self.inner.clone(), key.to_string()).await
    }

    async fn watch_tree(&self, dir: &str) -> Result<TreeWatchStream> {
        self.inner.check_open()?;
        let dir = key::directory(dir)?;
        watch::watch_tree(self.inner.clone(), key::dir_prefix(dir)).await
    }

    fn new_lock(&self, key: &str, options: LockOptions) -> Result<Box<dyn Locker>> {
        self.inner.check_open()?;
        let key = key::leaf(key)?;
        check_value(key, &options.value, MAX_VALUE_BYTES, "etcd")?;
        Ok(Box::new(lock::EtcdLocker::new(
            self.inner.clone(),
            key.to_string(),
            options,
        )))
    }

    async fn close(&self) -> Result<()> {
        let inner = &self.inner;
        if inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        inner.shutdown.send_replace(true);
        let leases: Vec<i64> = match inner.leases.lock() {
            Ok(mut held) => held.drain().collect(),
            Err(poisoned) => poisoned.into_inner().drain().collect(),
        };
        for id in leases {
            if let Err(e) = inner.revoke(id).await {
                tracing::warn!(url = %inner.url, lease = id, error = %e, "cannot revoke a lock lease on close; it expires with its TTL");
            }
        }
        tracing::debug!(url = %inner.url, "etcd store closed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(1)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ttl_secs(Duration::ZERO), 1);
    }

    #[test]
    fn credentials_never_reach_the_url() {
        let url = StoreUrl::parse("etcd://me:secret@h1:2379,h2:2379/p").unwrap();
        let e = split_endpoints(&url);
        assert_eq!(e.hosts, ["h1:2379", "h2:2379"]);
        assert_eq!(e.credentials, Some(("me".into(), "secret".into())));
    }

    #[test]
    fn bad_tls_files_are_named() {
        let tls = TlsOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let err = tls_config("etcd://h:1", &tls).unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/ca.pem") && err.contains("etcd://h:1"),
            "{err}"
        );
    }
}
