//! Enrolment: the join handshake that gives a new node its certificate, and renewal of a
//! node's certificate over its existing mutual-TLS identity.
//!
//! The joiner connects trusting only a manager whose CA has the digest in its token (no
//! system roots), sends the token and a certificate signing request for a key it made and
//! keeps; the manager checks the token, issues a certificate naming a fresh node id and
//! the token's role, and returns it with the CA certificate. Renewal is the same exchange
//! without a token, over a connection on which the node presented its current certificate;
//! the manager issues the same node id and role again. One request per connection; each
//! message is one JSON frame.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::ca::{make_csr, CaError, ClusterCa};
use crate::identity::{CredentialsError, NodeId, NodeIdentity, Role};
use crate::token::{hex, unhex_vec, JoinToken, JoinTokens, RandomError, TokenError};
use crate::transport::{
    connect_with, TlsConnection, TlsConnector, TlsListener, TransportError, TransportOptions,
};
use crate::verify::{provider, PinnedCaVerifier};

/// How long node certificates issued at join and renewal are valid by default: 90 days.
pub const DEFAULT_NODE_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);

/// An error of enrolment, on either side.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// Connecting, the TLS handshake or a frame failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The manager refused; its reason.
    #[error("manager {addr} refused: {reason}")]
    Refused {
        /// The manager's address.
        addr: String,
        /// The manager's reason.
        reason: String,
    },
    /// Manager side: the join token is wrong, rotated or expired; nothing was issued.
    #[error("join from {addr} refused: {source}")]
    Token {
        /// The joiner's address.
        addr: String,
        /// Why the token was refused.
        source: TokenError,
    },
    /// Manager side: a renewal from a client without a node certificate.
    #[error("renewal from {addr} refused: no node certificate presented")]
    NotAuthenticated {
        /// The client's address.
        addr: String,
    },
    /// A message was not what the protocol says.
    #[error("enrolment with {addr}: {reason}")]
    Protocol {
        /// The peer's address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// The certificate returned is not for this node's key, node or CA.
    #[error("certificate from {addr} is unusable: {reason}")]
    BadCertificate {
        /// The manager's address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// Issuing failed.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// No key could be made.
    #[error(transparent)]
    Random(#[from] RandomError),
    /// The renewed identity could not be installed.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Request {
    Join { token: String, csr: String },
    Renew { csr: String },
}

/// An enrolment request as a manager reads it, before its token or key is checked: what
/// anyone who reaches the join port may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrolRequest {
    /// First contact: the join token and the certificate signing request (DER).
    Join {
        /// The token, well formed (its secret is not checked yet).
        token: JoinToken,
        /// The CSR's DER bytes.
        csr: Vec<u8>,
    },
    /// A renewal over the node's current certificate: the CSR (DER).
    Renew {
        /// The CSR's DER bytes.
        csr: Vec<u8>,
    },
}

impl EnrolRequest {
    /// Reads one request frame (JSON: `{"join":{"token":…,"csr":<hex>}}` or
    /// `{"renew":{"csr":<hex>}}`); the error says what is wrong.
    pub fn parse(frame: &[u8]) -> Result<Self, String> {
        let request: Request =
            serde_json::from_slice(frame).map_err(|e| format!("bad request: {e}"))?;
        let csr = |hex: &str| unhex_vec(hex).ok_or_else(|| "CSR is not hexadecimal".to_string());
        Ok(match request {
            Request::Join { token, csr: hex } => Self::Join {
                token: token.parse().map_err(|e| format!("join token: {e}"))?,
                csr: csr(&hex)?,
            },
            Request::Renew { csr: hex } => Self::Renew { csr: csr(&hex)? },
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Issued {
        node_id: NodeId,
        role: Role,
        cert: String,
        ca: String,
    },
    Refused {
        reason: String,
    },
}

/// What a manager issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Enrolled {
    /// The node the certificate names.
    pub node_id: NodeId,
    /// Its role.
    pub role: Role,
    /// Whether it renewed an existing node's certificate rather than admitted a new node.
    pub renewal: bool,
}

/// The manager's side: the CA and the join tokens.
pub struct Enroller {
    ca: Arc<ClusterCa>,
    tokens: RwLock<JoinTokens>,
    validity: Duration,
}

impl std::fmt::Debug for Enroller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enroller")
            .field("ca", &self.ca)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

impl Enroller {
    /// An enroller issuing from `ca`, admitting `tokens`, certificates valid for `validity`.
    pub fn new(ca: Arc<ClusterCa>, tokens: JoinTokens, validity: Duration) -> Self {
        Self {
            ca,
            tokens: RwLock::new(tokens),
            validity,
        }
    }

    /// The current join tokens.
    pub fn tokens(&self) -> JoinTokens {
        match self.tokens.read() {
            Ok(tokens) => tokens.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the join tokens (after a rotation, or as the cluster store holds them).
    pub fn set_tokens(&self, tokens: JoinTokens) {
        match self.tokens.write() {
            Ok(mut slot) => *slot = tokens,
            Err(poisoned) => *poisoned.into_inner() = tokens,
        }
    }

    /// Rotates `role`'s token (the old one fails from now on) and returns the new one.
    pub fn rotate(
        &self,
        role: Role,
        expires: Option<SystemTime>,
    ) -> Result<JoinToken, RandomError> {
        // Under the write lock, so that two rotations cannot lose one another's change.
        let mut tokens = match self.tokens.write() {
            Ok(tokens) => tokens,
            Err(poisoned) => poisoned.into_inner(),
        };
        tokens.rotate(role, expires)
    }

    /// Answers one enrolment request on `conn`: a join (checked against the tokens) or a
    /// renewal (the connection's peer certificate names the node). A refused request gets
    /// the reason and nothing is issued.
    pub async fn serve(&self, conn: &mut TlsConnection) -> Result<Enrolled, EnrolError> {
        let addr = conn.addr().to_owned();
        let result = self.answer(conn).await;
        let response = match &result {
            Ok((enrolled, cert)) => Response::Issued {
                node_id: enrolled.node_id.clone(),
                role: enrolled.role,
                cert: hex(cert),
                ca: hex(self.ca.cert_der()),
            },
            Err(e) => Response::Refused {
                reason: match e {
                    EnrolError::Token { source, .. } => source.to_string(),
                    other => other.to_string(),
                },
            },
        };
        let bytes = serde_json::to_vec(&response).map_err(|e| EnrolError::Protocol {
            addr: addr.clone(),
            reason: e.to_string(),
        })?;
        conn.send(&bytes).await?;
        match result {
            Ok((enrolled, _)) => {
                tracing::info!(%addr, node = %enrolled.node_id, role = %enrolled.role,
                    renewal = enrolled.renewal, "node certificate issued");
                Ok(enrolled)
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "enrolment refused");
                Err(e)
            }
        }
    }

    async fn answer(
        &self,
        conn: &mut TlsConnection,
    ) -> Result<(Enrolled, CertificateDer<'static>), EnrolError> {
        let addr = conn.addr().to_owned();
        let protocol = |reason: String| EnrolError::Protocol {
            addr: addr.clone(),
            reason,
        };
        let frame = conn
            .recv()
            .await?
            .ok_or_else(|| protocol("closed before the request".into()))?;
        let request = EnrolRequest::parse(&frame).map_err(protocol)?;
        let (enrolled, csr) = match request {
            EnrolRequest::Join { token, csr } => {
                let role = self
                    .tokens()
                    .check(&token, SystemTime::now())
                    .map_err(|source| EnrolError::Token {
                        addr: addr.clone(),
                        source,
                    })?;
                let enrolled = Enrolled {
                    node_id: NodeId::random()?,
                    role,
                    renewal: false,
                };
                (enrolled, csr)
            }
            EnrolRequest::Renew { csr } => {
                let peer = conn
                    .peer()
                    .ok_or_else(|| EnrolError::NotAuthenticated { addr: addr.clone() })?;
                let enrolled = Enrolled {
                    node_id: peer.node_id.clone(),
                    role: peer.role,
                    renewal: true,
                };
                (enrolled, csr)
            }
        };
        let cert = self
            .ca
            .issue_for_csr(&csr, &enrolled.node_id, enrolled.role, self.validity)?;
        Ok((enrolled, cert))
    }

    /// Serves enrolment on `listener` (which should allow anonymous clients, for joins)
    /// until dropped: one request per connection, each in its own task.
    pub fn spawn(self: Arc<Self>, listener: TlsListener) -> JoinHandle<TransportError> {
        tokio::spawn(async move {
            loop {
                let incoming = match listener.accept().await {
                    Ok(incoming) => incoming,
                    Err(e) => return e,
                };
                let enroller = self.clone();
                tokio::spawn(async move {
                    let addr = incoming.peer_addr();
                    match incoming.handshake().await {
                        Ok(mut conn) => {
                            let _ = enroller.serve(&mut conn).await;
                        }
                        Err(e) => tracing::warn!(%addr, error = %e, "enrolment connection refused"),
                    }
                });
            }
        })
    }
}

/// Joins the cluster through the manager at `addr` with `token`: returns the identity the
/// manager issued (a fresh node id, the token's role), with the key made here.
pub async fn join(
    addr: &str,
    token: &JoinToken,
    options: &TransportOptions,
) -> Result<NodeIdentity, EnrolError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCaVerifier::new(token.ca_digest())))
        .with_no_client_auth();
    let mut conn = connect_with(addr, Arc::new(config), "plexus", options).await?;
    let identity = exchange(&mut conn, Some(token), None).await?;
    if !token.trusts(identity.ca()) {
        return Err(EnrolError::BadCertificate {
            addr: addr.to_owned(),
            reason: "CA certificate returned is not the one the join token names".into(),
        });
    }
    Ok(identity)
}

/// Renews this node's certificate through the manager at `addr`, over mutual TLS with the
/// current certificate: returns the new identity (same node id and role, a new key).
pub async fn renew(connector: &TlsConnector, addr: &str) -> Result<NodeIdentity, EnrolError> {
    let current = connector.credentials().current();
    let mut conn = connector
        .connect_expecting(addr, None, Some(Role::Manager))
        .await?;
    exchange(&mut conn, None, Some(&current)).await
}

/// Renews through the first of `managers` that answers if less than a third of the current
/// certificate's validity is left, and installs the new one in the connector's credentials
/// (the next handshake of every listener and connector using them presents it). Returns
/// whether it renewed.
pub async fn renew_if_due(
    connector: &TlsConnector,
    managers: &[String],
    now: SystemTime,
) -> Result<bool, EnrolError> {
    if !connector.credentials().current().needs_renewal(now) {
        return Ok(false);
    }
    let mut last = None;
    for addr in managers {
        match renew(connector, addr).await {
            Ok(identity) => {
                connector.credentials().replace(identity)?;
                return Ok(true);
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "certificate renewal failed");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| EnrolError::Protocol {
        addr: String::new(),
        reason: "no manager to renew through".into(),
    }))
}

/// Checks every `every` whether the certificate is due for renewal and renews it through
/// `managers` (see [`renew_if_due`]), until the task is aborted.
pub fn spawn_renewal(
    connector: TlsConnector,
    managers: Vec<String>,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = renew_if_due(&connector, &managers, SystemTime::now()).await {
                tracing::warn!(error = %e, "certificate renewal failed; retrying later");
            }
        }
    })
}

/// Sends a join (with `token`) or renewal (of `current`) request and checks the answer.
async fn exchange(
    conn: &mut TlsConnection,
    token: Option<&JoinToken>,
    current: Option<&NodeIdentity>,
) -> Result<NodeIdentity, EnrolError> {
    let addr = conn.addr().to_owned();
    let protocol = |reason: String| EnrolError::Protocol {
        addr: addr.clone(),
        reason,
    };
    let bad = |reason: String| EnrolError::BadCertificate {
        addr: addr.clone(),
        reason,
    };
    let (csr, key) = make_csr().map_err(CaError::from)?;
    let request = match token {
        Some(token) => Request::Join {
            token: token.to_string(),
            csr: hex(&csr),
        },
        None => Request::Renew { csr: hex(&csr) },
    };
    let bytes = serde_json::to_vec(&request).map_err(|e| protocol(e.to_string()))?;
    conn.send(&bytes).await?;
    let frame = conn
        .recv()
        .await?
        .ok_or_else(|| protocol("closed before the answer".into()))?;
    let response: Response =
        serde_json::from_slice(&frame).map_err(|e| protocol(format!("bad answer: {e}")))?;
    let (node_id, role, cert, ca) = match response {
        Response::Refused { reason } => return Err(EnrolError::Refused { addr, reason }),
        Response::Issued {
            node_id,
            role,
            cert,
            ca,
        } => (node_id, role, cert, ca),
    };
    let cert = CertificateDer::from(unhex_vec(&cert).ok_or_else(|| bad("not hex".into()))?);
    let ca = CertificateDer::from(unhex_vec(&ca).ok_or_else(|| bad("CA not hex".into()))?);
    let identity = NodeIdentity::from_parts(cert, ca, key).map_err(&bad)?;
    if identity.node_id() != &node_id || identity.role() != role {
        return Err(bad(
            "the certificate names another node or role than the answer".into(),
        ));
    }
    if let Some(current) = current {
        if identity.node_id() != current.node_id() || identity.ca() != current.ca() {
            return Err(bad(
                "the renewed certificate is for another node or CA".into()
            ));
        }
    }
    crate::verify::verify_issued(&identity).map_err(&bad)?;
    Ok(identity)
}

/// A root store holding only `ca`.
pub(crate) fn single_root(ca: &CertificateDer<'static>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| format!("CA certificate: {e}"))?;
    Ok(roots)
}
