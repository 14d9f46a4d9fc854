//! Mutual TLS between members: [`TlsRaftTransport`], a [`RaftTransport`] over plexus-tls.
//!
//! Both ends present their node certificate from the cluster CA and trust that CA only;
//! the verification is plexus-tls's ([`TlsListener`], [`TlsConnector`]), this module only
//! hands the checked byte stream to Raft's frames.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use plexus_tls::transport::Incoming;
use plexus_tls::{
    Credentials, NodeId, TlsConnection, TlsConnector, TlsListener, TransportError, TransportOptions,
};
use tokio::sync::{mpsc, Mutex};
use tokio::task::{JoinHandle, JoinSet};

use crate::transport::{BoxConn, RaftListener, RaftTransport};

/// How many handshaken connections wait for the member to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// Members reach each other over mutual TLS 1.3 with certificates from the cluster CA.
///
/// Built from plexus-tls [`Credentials`]: a certificate swapped into them
/// ([`Credentials::replace`]) is presented from the next handshake on, by the listener
/// and the connector alike; connections already open are kept.
///
/// - [`RaftTransport::bind`] gives a listener that requires a client certificate chaining
///   to the cluster CA. Handshakes run in their own tasks: a peer that fails one (another
///   CA, no certificate, not TLS at all, too slow) is logged and dropped, and the listener
///   goes on.
/// - [`RaftTransport::connect`] presents this node's certificate and requires the
///   server's to chain to the CA and, if [`TlsRaftTransport::expect_node`] named the node
///   at that address, to be that node's.
///
/// Errors are [`io::Error`]s whose message names the peer's address and the cause; a
/// refused certificate is [`io::ErrorKind::PermissionDenied`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use plexus_raft::{RaftConfig, RaftNode, TlsRaftTransport};
/// use plexus_tls::{enrol, ClusterCa, Credentials, NodeId, Role};
///
/// let ca = ClusterCa::create()?;
/// let me = NodeId::random()?;
/// let credentials = Credentials::new(ca.issue(&me, Role::Manager, enrol::DEFAULT_NODE_VALIDITY)?)?;
/// let mut config = RaftConfig::new(1, "/var/lib/plexus/raft", "0.0.0.0:4790");
/// config.transport = Arc::new(TlsRaftTransport::new(&credentials)?);
/// let node = RaftNode::start(config).await?;
/// # Ok(()) }
/// ```
pub struct TlsRaftTransport {
    credentials: Credentials,
    options: TransportOptions,
    connector: TlsConnector,
    expected: RwLock<HashMap<String, NodeId>>,
}

impl std::fmt::Debug for TlsRaftTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRaftTransport")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl TlsRaftTransport {
    /// A transport presenting `credentials`, with plexus-tls's default handshake timeout.
    pub fn new(credentials: &Credentials) -> Result<Self, TransportError> {
        Self::with_options(credentials, TransportOptions::default())
    }

    /// A transport with `options`. `options.allow_anonymous` is ignored: a member always
    /// requires its peers' certificates. `options.max_frame` is unused: Raft's frames are
    /// bounded by [`crate::transport::MAX_FRAME_BYTES`].
    pub fn with_options(
        credentials: &Credentials,
        mut options: TransportOptions,
    ) -> Result<Self, TransportError> {
        options.allow_anonymous = false;
        Ok(Self {
            connector: TlsConnector::new(credentials, options.clone())?,
            credentials: credentials.clone(),
            options,
            expected: RwLock::default(),
        })
    }

    /// The credentials presented (replace the identity in them to renew).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// From now on, a connection to `addr` requires the server to be node `node`.
    pub fn expect_node(&self, addr: impl Into<String>, node: NodeId) {
        self.expected
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr.into(), node);
    }

    /// Forgets which node is expected at `addr` (any node of the CA is accepted again).
    pub fn forget_node(&self, addr: &str) {
        self.expected
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
    }

    /// Connects to `addr`, requiring the server to be node `expected` if given (else the
    /// node [`TlsRaftTransport::expect_node`] named for `addr`, if any).
    pub async fn connect_to(&self, addr: &str, expected: Option<&NodeId>) -> io::Result<BoxConn> {
        let remembered = match expected {
            Some(_) => None,
            None => self
                .expected
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(addr)
                .cloned(),
        };
        let conn = self
            .connector
            .connect(addr, expected.or(remembered.as_ref()))
            .await
            .map_err(to_io)?;
        tracing::debug!(%addr, peer = ?conn.peer().map(|p| &p.node_id), "raft TLS connection opened");
        Ok(into_conn(conn))
    }
}

#[async_trait]
impl RaftTransport for TlsRaftTransport {
    async fn bind(&self, addr: &str) -> io::Result<Box<dyn RaftListener>> {
        let listener = TlsListener::bind(addr, &self.credentials, self.options.clone())
            .await
            .map_err(to_io)?;
        let local = listener.local_addr().map_err(to_io)?;
        let (tx, rx) = mpsc::channel(ACCEPTED_BACKLOG);
        let task = tokio::spawn(accept_loop(listener, tx));
        Ok(Box::new(TlsRaftListener {
            local,
            accepted: Mutex::new(rx),
            task,
        }))
    }

    async fn connect(&self, addr: &str) -> io::Result<BoxConn> {
        self.connect_to(addr, None).await
    }
}

/// The listener: a task accepts and handshakes, [`RaftListener::accept`] takes the
/// connections that passed.
struct TlsRaftListener {
    local: SocketAddr,
    accepted: Mutex<mpsc::Receiver<BoxConn>>,
    task: JoinHandle<()>,
}

impl Drop for TlsRaftListener {
    fn drop(&mut self) {
        // Closes the port and every handshake still running.
        self.task.abort();
    }
}

#[async_trait]
impl RaftListener for TlsRaftListener {
    fn local_addr(&self) -> io::Result<String> {
        Ok(self.local.to_string())
    }

    async fn accept(&self) -> io::Result<BoxConn> {
        self.accepted.lock().await.recv().await.ok_or_else(|| {
            io::Error::other(format!("raft TLS listener on {} has stopped", self.local))
        })
    }
}

/// Accepts TCP connections and runs each handshake in its own task, so that neither a
/// slow nor a refused peer holds up the others. Ends when the listener is dropped.
async fn accept_loop(listener: TlsListener, accepted: mpsc::Sender<BoxConn>) {
    let mut handshakes = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            r = listener.accept() => r,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
            () = accepted.closed() => return,
        };
        match incoming {
            Ok(incoming) => {
                handshakes.spawn(handshake(incoming, accepted.clone()));
            }
            Err(e) => {
                // Out of descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "raft TLS accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handshake(incoming: Incoming, accepted: mpsc::Sender<BoxConn>) {
    let addr = incoming.peer_addr();
    match incoming.handshake().await {
        Ok(conn) if conn.peer().is_some() => {
            tracing::debug!(%addr, peer = ?conn.peer().map(|p| &p.node_id), "raft TLS connection accepted");
            // A send fails only when the member has stopped; the connection is dropped.
            let _ = accepted.send(into_conn(conn)).await;
        }
        // Not reachable with anonymous clients refused; kept so that none gets through.
        Ok(_) => tracing::warn!(%addr, "raft peer without a certificate refused"),
        Err(e) => tracing::warn!(%addr, error = %to_io(e), "raft peer refused"),
    }
}

fn into_conn(conn: TlsConnection) -> BoxConn {
    Box::pin(conn.into_stream())
}

/// The transport's error as an [`io::Error`] with the same message (it names the peer's
/// address and the cause) and a kind a caller can act on.
fn to_io(e: TransportError) -> io::Error {
    let kind = match &e {
        TransportError::Io { source, .. } => source.kind(),
        TransportError::Handshake { .. } | TransportError::NotANode { .. } => {
            io::ErrorKind::PermissionDenied
        }
        TransportError::HandshakeTimeout { .. } => io::ErrorKind::TimedOut,
        TransportError::Config(_) => io::ErrorKind::InvalidInput,
        TransportError::Frame { .. } => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e)
}
