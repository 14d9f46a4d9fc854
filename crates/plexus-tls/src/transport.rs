//! The mutual-TLS transport: a listener that requires a client certificate from the cluster
//! CA and tells the handler who the peer is, a connector that presents the node's
//! certificate and checks the server's, and framed connections between them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_rustls::{TlsAcceptor, TlsConnector as RustlsConnector, TlsStream};

use crate::frame::{read_frame, write_frame, FrameError, DEFAULT_MAX_FRAME};
use crate::identity::{Credentials, NodeId, PeerIdentity, Role};
use crate::verify::{check_peer, provider, ClusterServerVerifier};

/// How long a TLS handshake may take by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An error of the transport.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Binding, accepting or connecting failed.
    #[error("{addr}: {source}")]
    Io {
        /// The address bound or connected to, or the peer's.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TLS handshake failed: a certificate was refused by either side, or the
    /// connection broke.
    #[error("TLS handshake with {addr}: {reason}")]
    Handshake {
        /// The peer's address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The handshake took longer than the handshake timeout.
    #[error("TLS handshake with {addr} timed out after {after:?}")]
    HandshakeTimeout {
        /// The peer's address.
        addr: String,
        /// The timeout.
        after: Duration,
    },
    /// The peer's certificate chains to the CA but names no node.
    #[error("peer {addr}: {reason}")]
    NotANode {
        /// The peer's address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// A TLS configuration could not be built from the credentials.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Reading or writing a frame failed.
    #[error("peer {addr}: {source}")]
    Frame {
        /// The peer's address.
        addr: String,
        /// The frame error.
        source: FrameError,
    },
}

/// Options of a listener or connector.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// The largest frame sent or accepted; a larger one closes the connection.
    pub max_frame: usize,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Listener only: accept clients without a certificate (their
    /// [`TlsConnection::peer`] is `None`), for the join handshake. A client that presents a
    /// certificate must still present one from the cluster CA.
    pub allow_anonymous: bool,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            allow_anonymous: false,
        }
    }
}

fn roots(credentials: &Credentials) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(credentials.current().ca().clone())
        .map_err(|e| TransportError::Config(format!("cluster CA certificate: {e}")))?;
    Ok(Arc::new(roots))
}

/// A TCP listener that speaks mutual TLS with the cluster's nodes.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    options: TransportOptions,
}

impl TlsListener {
    /// Binds `addr` and presents `credentials` (hot-swappable) to every client, requiring a
    /// client certificate from the same CA unless `options.allow_anonymous`.
    pub async fn bind(
        addr: impl ToSocketAddrs + std::fmt::Debug,
        credentials: &Credentials,
        options: TransportOptions,
    ) -> Result<Self, TransportError> {
        let builder = WebPkiClientVerifier::builder_with_provider(roots(credentials)?, provider());
        let builder = if options.allow_anonymous {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        let verifier = builder
            .build()
            .map_err(|e| TransportError::Config(format!("client verifier: {e}")))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(credentials.server_resolver());
        let tcp = TcpListener::bind(&addr)
            .await
            .map_err(|source| TransportError::Io {
                addr: format!("{addr:?}"),
                source,
            })?;
        Ok(Self {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            options,
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.tcp.local_addr().map_err(|source| TransportError::Io {
            addr: "listener".into(),
            source,
        })
    }

    /// Accepts the next TCP connection; its TLS handshake is [`Incoming::handshake`], to run
    /// in the connection's own task so that a slow peer holds up no other.
    pub async fn accept(&self) -> Result<Incoming, TransportError> {
        let (tcp, addr) = self
            .tcp
            .accept()
            .await
            .map_err(|source| TransportError::Io {
                addr: "listener".into(),
                source,
            })?;
        // Frames are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        Ok(Incoming {
            tcp,
            addr,
            acceptor: self.acceptor.clone(),
            options: self.options.clone(),
        })
    }
}

/// An accepted TCP connection before its TLS handshake.
pub struct Incoming {
    tcp: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    options: TransportOptions,
}

impl Incoming {
    /// The client's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs the TLS handshake and reads the client's identity from its certificate.
    pub async fn handshake(self) -> Result<TlsConnection, TransportError> {
        let addr = self.addr.to_string();
        let stream = timed_handshake(
            &addr,
            self.options.handshake_timeout,
            self.acceptor.accept(self.tcp),
        )
        .await?;
        let peer = peer_of(&addr, stream.get_ref().1.peer_certificates())?;
        tracing::debug!(%addr, peer = ?peer.as_ref().map(|p| &p.node_id), "TLS connection accepted");
        Ok(TlsConnection {
            stream: Box::new(TlsStream::Server(stream)),
            peer,
            addr,
            max_frame: self.options.max_frame,
        })
    }
}

/// Connects to cluster nodes, presenting this node's (hot-swappable) certificate and
/// trusting only servers with a certificate from the cluster CA.
#[derive(Clone)]
pub struct TlsConnector {
    credentials: Credentials,
    roots: Arc<RootCertStore>,
    options: TransportOptions,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// A connector presenting `credentials`; servers must hold a certificate from the CA
    /// in the credentials.
    pub fn new(
        credentials: &Credentials,
        options: TransportOptions,
    ) -> Result<Self, TransportError> {
        Ok(Self {
            roots: roots(credentials)?,
            credentials: credentials.clone(),
            options,
        })
    }

    /// The credentials presented.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// The options.
    pub fn options(&self) -> &TransportOptions {
        &self.options
    }

    /// Connects to `addr`; if `expected` is given, the server must be that node.
    pub async fn connect(
        &self,
        addr: &str,
        expected: Option<&NodeId>,
    ) -> Result<TlsConnection, TransportError> {
        self.connect_expecting(addr, expected, None).await
    }

    /// Connects to `addr`; the server must be node `expected` (if given) with `role` (if
    /// given).
    pub async fn connect_expecting(
        &self,
        addr: &str,
        expected: Option<&NodeId>,
        role: Option<Role>,
    ) -> Result<TlsConnection, TransportError> {
        let verifier = ClusterServerVerifier::new(self.roots.clone(), expected.cloned(), role);
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(self.credentials.client_resolver());
        let name = expected.map_or("plexus", NodeId::as_str);
        connect_with(addr, Arc::new(config), name, &self.options).await
    }
}

/// Connects to `addr` with a prepared client configuration, then reads the server's
/// identity (the configuration's verifier has checked it).
pub(crate) async fn connect_with(
    addr: &str,
    config: Arc<ClientConfig>,
    name: &str,
    options: &TransportOptions,
) -> Result<TlsConnection, TransportError> {
    let io = |source| TransportError::Io {
        addr: addr.to_owned(),
        source,
    };
    let tcp = TcpStream::connect(addr).await.map_err(io)?;
    let _ = tcp.set_nodelay(true);
    let server_name = ServerName::try_from(name.to_owned())
        .map_err(|e| TransportError::Config(format!("server name {name:?}: {e}")))?;
    let stream = timed_handshake(
        addr,
        options.handshake_timeout,
        RustlsConnector::from(config).connect(server_name, tcp),
    )
    .await?;
    let peer = peer_of(addr, stream.get_ref().1.peer_certificates())?;
    Ok(TlsConnection {
        stream: Box::new(TlsStream::Client(stream)),
        peer,
        addr: addr.to_owned(),
        max_frame: options.max_frame,
    })
}

/// Runs a TLS handshake (either side) within `limit`; the error names `addr`.
async fn timed_handshake<S>(
    addr: &str,
    limit: Duration,
    handshake: impl std::future::Future<Output = std::io::Result<S>>,
) -> Result<S, TransportError> {
    tokio::time::timeout(limit, handshake)
        .await
        .map_err(|_| TransportError::HandshakeTimeout {
            addr: addr.to_owned(),
            after: limit,
        })?
        .map_err(|e| TransportError::Handshake {
            addr: addr.to_owned(),
            reason: describe(&e),
        })
}

/// The identity in the peer's certificate, if it sent one (the verifier has checked its
/// chain); a certificate that names no node is refused.
fn peer_of(
    addr: &str,
    certificates: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Result<Option<PeerIdentity>, TransportError> {
    certificates
        .and_then(|c| c.first())
        .map(|cert| {
            check_peer(cert, None, None).map_err(|e| TransportError::NotANode {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })
        })
        .transpose()
}

/// Says why a handshake failed; a refusal by this crate's verifiers in its own words.
fn describe(e: &std::io::Error) -> String {
    use rustls::{CertificateError, OtherError};
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(why)))) => {
            format!("peer certificate refused: {why}")
        }
        // rustls's own words name no CA; the cluster has one, so say which was missed.
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {
            "peer certificate is not from this cluster's CA (UnknownIssuer)".to_owned()
        }
        Some(rustls_error) => rustls_error.to_string(),
        None => e.to_string(),
    }
}

/// A byte stream a [`TlsConnection`] runs over. `Sync` so that a protocol holding one in
/// shared state (a connection pool, Raft's network) may take it over
/// ([`TlsConnection::into_stream`]).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static> Stream for T {}

/// The reading half of a split connection.
pub(crate) type StreamReader = ReadHalf<Box<dyn Stream>>;
/// The writing half of a split connection.
pub(crate) type StreamWriter = WriteHalf<Box<dyn Stream>>;

/// A TLS connection to a cluster node carrying length-prefixed frames.
pub struct TlsConnection {
    stream: Box<dyn Stream>,
    peer: Option<PeerIdentity>,
    addr: String,
    max_frame: usize,
}

impl std::fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnection")
            .field("peer", &self.peer)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TlsConnection {
    /// The peer as its certificate names it; `None` for a client without a certificate
    /// (accepted only by a listener with `allow_anonymous`).
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.peer.as_ref()
    }

    /// The peer's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The largest frame sent or accepted.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Sends one frame.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), TransportError> {
        write_frame(&mut self.stream, payload, self.max_frame)
            .await
            .map_err(|source| TransportError::Frame {
                addr: self.addr.clone(),
                source,
            })
    }

    /// Receives one frame; `None` when the peer closed the connection between frames.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, TransportError> {
        read_frame(&mut self.stream, self.max_frame)
            .await
            .map_err(|source| TransportError::Frame {
                addr: self.addr.clone(),
                source,
            })
    }

    /// The raw stream, for a protocol of its own (tests send malformed frames through it).
    pub fn stream_mut(&mut self) -> &mut dyn Stream {
        &mut *self.stream
    }

    /// The decrypted byte stream, for a protocol with framing of its own (plexus-raft's
    /// transport). The handshake is done and the peer checked; frames are the caller's.
    ///
    /// With TLS 1.3 the client finishes its handshake before the server has checked the
    /// client's certificate: a client the server refuses learns it on its first read, as
    /// an I/O error carrying the server's alert.
    pub fn into_stream(self) -> Box<dyn Stream> {
        self.stream
    }

    /// Splits the connection into a reading and a writing half.
    pub(crate) fn into_split(self) -> (StreamReader, StreamWriter) {
        tokio::io::split(self.stream)
    }
}
