//! Request/response RPC over a [`TlsConnection`]: bytes in, bytes out, several requests in
//! flight on one connection, matched by a `u64` request id.
//!
//! A frame is `kind (u8) | request id (u64, big-endian) | payload`; kinds are request,
//! response and error response (payload: the handler's message, UTF-8).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::frame::{read_frame, write_frame, FrameError};
use crate::identity::{NodeId, PeerIdentity};
use crate::transport::{
    StreamReader, StreamWriter, TlsConnection, TlsConnector, TlsListener, TransportError,
};

const KIND_REQUEST: u8 = 0;
const KIND_RESPONSE: u8 = 1;
const KIND_ERROR: u8 = 2;
const HEADER: usize = 9;

/// Requests a server runs at once on one connection; more wait to be read.
const MAX_IN_FLIGHT: usize = 1024;

/// How long a call waits for its response by default.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// An error of an RPC call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// Connecting failed (refused, TLS handshake, certificate).
    #[error("connecting to {addr}: {reason}")]
    Connect {
        /// The server's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The connection broke before the response came; the request may or may not have run.
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost {
        /// The server's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// No response within the call timeout.
    #[error("no response from {addr} within {after:?}")]
    Timeout {
        /// The server's address.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The server's handler answered with an error.
    #[error("{addr} answered with an error: {message}")]
    Remote {
        /// The server's address.
        addr: String,
        /// The handler's message.
        message: String,
    },
    /// The request is larger than the frame limit; nothing was sent.
    #[error("request of {len} bytes is over the {max}-byte frame limit")]
    TooLarge {
        /// The request's length.
        len: usize,
        /// The limit, less the RPC header.
        max: usize,
    },
}

fn encode(kind: u8, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER + payload.len());
    frame.push(kind);
    frame.extend_from_slice(&id.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn decode(frame: &[u8]) -> Option<(u8, u64, &[u8])> {
    let (head, payload) = frame.split_at_checked(HEADER)?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&head[1..]);
    Some((head[0], u64::from_be_bytes(id), payload))
}

/// Runs the writing half: frames from `rx` until it closes or writing fails.
async fn write_loop(
    mut writer: StreamWriter,
    mut rx: mpsc::Receiver<Vec<u8>>,
    max: usize,
) -> Result<(), FrameError> {
    while let Some(frame) = rx.recv().await {
        write_frame(&mut writer, &frame, max).await?;
    }
    let _ = writer.shutdown().await;
    Ok(())
}

/// Serves RPCs on `listener` until it fails: each connection in its own task, each
/// request in its own task; `handler` gets the authenticated peer and the request bytes.
/// Clients without a node certificate are dropped.
pub async fn serve<H, Fut>(listener: TlsListener, handler: H) -> TransportError
where
    H: Fn(PeerIdentity, Vec<u8>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
{
    // Connections live in the set, so that dropping this future closes them all.
    let mut connections = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(incoming) => incoming,
                Err(e) => return e,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let handler = handler.clone();
        connections.spawn(async move {
            let addr = incoming.peer_addr();
            match incoming.handshake().await {
                Ok(conn) => serve_connection(conn, handler).await,
                Err(e) => tracing::warn!(%addr, error = %e, "RPC connection refused"),
            }
        });
    }
}

/// Serves RPCs on one accepted connection until the peer closes it or breaks the protocol
/// (an over-size or malformed frame closes it).
pub async fn serve_connection<H, Fut>(conn: TlsConnection, handler: H)
where
    H: Fn(PeerIdentity, Vec<u8>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
{
    let addr = conn.addr().to_owned();
    let Some(peer) = conn.peer().cloned() else {
        tracing::warn!(%addr, "RPC client without a node certificate dropped");
        return;
    };
    let max = conn.max_frame();
    let (mut reader, writer) = conn.into_split();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
    // Aborted if this future is dropped (its server stopped), which closes the connection.
    let mut writer = AbortOnDrop(tokio::spawn(write_loop(writer, rx, max)));
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let end = loop {
        let frame = match read_frame(&mut reader, max).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        };
        let Some((KIND_REQUEST, id, payload)) = decode(&frame) else {
            break Some("frame is not an RPC request".to_owned());
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break None;
        };
        let payload = payload.to_vec();
        let (handler, peer, tx) = (handler.clone(), peer.clone(), tx.clone());
        tokio::spawn(async move {
            let reply = match handler(peer, payload).await {
                Ok(body) if body.len() + HEADER <= max => encode(KIND_RESPONSE, id, &body),
                Ok(body) => encode(
                    KIND_ERROR,
                    id,
                    format!(
                        "response of {} bytes is over the {}-byte frame limit",
                        body.len(),
                        max - HEADER
                    )
                    .as_bytes(),
                ),
                Err(message) => encode(KIND_ERROR, id, message.as_bytes()),
            };
            let _ = tx.send(reply).await;
            drop(permit);
        });
    };
    if let Some(reason) = end {
        tracing::warn!(%addr, peer = %peer.node_id, %reason, "RPC connection closed");
    } else {
        drop(tx);
        let _ = (&mut writer.0).await;
    }
}

struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running RPC server: serves until dropped.
pub struct RpcServer {
    addr: SocketAddr,
    task: JoinHandle<TransportError>,
}

impl RpcServer {
    /// Serves `handler` on `listener` in a task (see [`serve`]).
    pub fn spawn<H, Fut>(listener: TlsListener, handler: H) -> Result<Self, TransportError>
    where
        H: Fn(PeerIdentity, Vec<u8>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, String>> + Send + 'static,
    {
        let addr = listener.local_addr()?;
        Ok(Self {
            addr,
            task: tokio::spawn(serve(listener, handler)),
        })
    }

    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Vec<u8>, RpcError>>>>>;

/// One connection of a client.
struct ClientConn {
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn fail_all(pending: &Pending, closed: &AtomicBool, error: RpcError) {
    closed.store(true, Ordering::SeqCst);
    let waiting: Vec<_> = match pending.lock() {
        Ok(mut map) => map.drain().collect(),
        Err(poisoned) => poisoned.into_inner().drain().collect(),
    };
    for (_, reply) in waiting {
        let _ = reply.send(Err(error.clone()));
    }
}

/// An RPC client of one server: one connection, made on the first call and made again by
/// the next call after it broke. A call cut short by a broken connection fails with
/// [`RpcError::ConnectionLost`] and is not resent (the request may have run).
pub struct RpcClient {
    connector: TlsConnector,
    addr: String,
    expected: Option<NodeId>,
    timeout: Duration,
    next_id: AtomicU64,
    conn: tokio::sync::Mutex<Option<Arc<ClientConn>>>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("addr", &self.addr)
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl RpcClient {
    /// A client of the server at `addr`, which must be node `expected` if given.
    pub fn new(connector: TlsConnector, addr: impl Into<String>, expected: Option<NodeId>) -> Self {
        Self {
            connector,
            addr: addr.into(),
            expected,
            timeout: DEFAULT_CALL_TIMEOUT,
            next_id: AtomicU64::new(1),
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Sets how long a call waits for its response.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn connection(&self) -> Result<Arc<ClientConn>, RpcError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            if !conn.closed.load(Ordering::SeqCst) {
                return Ok(conn.clone());
            }
            tracing::debug!(addr = %self.addr, "RPC connection broken, reconnecting");
        }
        let conn = self
            .connector
            .connect(&self.addr, self.expected.as_ref())
            .await
            .map_err(|e| RpcError::Connect {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
        let max = conn.max_frame();
        let (reader, writer) = conn.into_split();
        let (tx, rx) = mpsc::channel::<Vec<u8>>(64);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let addr = self.addr.clone();
        let write_task = {
            let (pending, closed, addr) = (pending.clone(), closed.clone(), addr.clone());
            tokio::spawn(async move {
                if let Err(e) = write_loop(writer, rx, max).await {
                    let reason = e.to_string();
                    fail_all(&pending, &closed, RpcError::ConnectionLost { addr, reason });
                }
            })
        };
        let read_task = {
            let (pending, closed) = (pending.clone(), closed.clone());
            tokio::spawn(read_responses(reader, max, addr, pending, closed))
        };
        let conn = Arc::new(ClientConn {
            tx,
            pending,
            closed,
            tasks: [write_task, read_task],
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Sends `request` and waits for its response, connecting first if there is no live
    /// connection.
    pub async fn call(&self, request: &[u8]) -> Result<Vec<u8>, RpcError> {
        let max = self.connector.options().max_frame.saturating_sub(HEADER);
        if request.len() > max {
            return Err(RpcError::TooLarge {
                len: request.len(),
                max,
            });
        }
        let conn = self.connection().await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        if let Ok(mut map) = conn.pending.lock() {
            map.insert(id, reply_tx);
        }
        let lost = |reason: &str| RpcError::ConnectionLost {
            addr: self.addr.clone(),
            reason: reason.to_owned(),
        };
        let forget = || {
            if let Ok(mut map) = conn.pending.lock() {
                map.remove(&id);
            }
        };
        // The reader may have failed every pending call before this one was added.
        if conn.closed.load(Ordering::SeqCst)
            || conn
                .tx
                .send(encode(KIND_REQUEST, id, request))
                .await
                .is_err()
        {
            forget();
            return Err(lost("closed"));
        }
        match tokio::time::timeout(self.timeout, reply_rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(lost("closed")),
            Err(_) => {
                forget();
                Err(RpcError::Timeout {
                    addr: self.addr.clone(),
                    after: self.timeout,
                })
            }
        }
    }
}

async fn read_responses(
    mut reader: StreamReader,
    max: usize,
    addr: String,
    pending: Pending,
    closed: Arc<AtomicBool>,
) {
    let reason = loop {
        let frame = match read_frame(&mut reader, max).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break "closed by the server".to_owned(),
            Err(e) => break e.to_string(),
        };
        let Some((kind, id, payload)) = decode(&frame) else {
            break "malformed response frame".to_owned();
        };
        let result = match kind {
            KIND_RESPONSE => Ok(payload.to_vec()),
            KIND_ERROR => Err(RpcError::Remote {
                addr: addr.clone(),
                message: String::from_utf8_lossy(payload).into_owned(),
            }),
            _ => break format!("response frame of unknown kind {kind}"),
        };
        let waiter = pending.lock().ok().and_then(|mut map| map.remove(&id));
        if let Some(waiter) = waiter {
            let _ = waiter.send(result);
        }
    };
    tracing::debug!(%addr, %reason, "RPC connection ended");
    fail_all(&pending, &closed, RpcError::ConnectionLost { addr, reason });
}
