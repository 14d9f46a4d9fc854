//! Who a node is: its id and role, the certificate and key it holds, and the hot-swappable
//! credentials its listener and connector present.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use serde::{Deserialize, Serialize};
use x509_parser::extensions::GeneralName;

use crate::ca::{write_atomic, CaError};

/// The URI prefix of a node certificate's subject alternative name.
pub const NODE_URI_PREFIX: &str = "plexus://node/";

/// The longest node id: one DNS label.
const MAX_NODE_ID: usize = 63;

/// A node's id: independent of its address, carried by its certificate.
///
/// One DNS label: 1 to 63 characters of `a-z`, `0-9` and `-`, not starting or ending with `-`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

/// A node id that is not one DNS label of lower-case letters, digits and hyphens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node id {0:?} is not 1-63 characters of a-z, 0-9 and '-' (not first or last)")]
pub struct BadNodeId(pub String);

impl NodeId {
    /// A fresh random node id (128 bits, hex).
    pub fn random() -> Result<Self, crate::token::RandomError> {
        let mut bytes = [0u8; 16];
        crate::token::fill_random(&mut bytes)?;
        Ok(Self(crate::token::hex(&bytes)))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The node's URI, `plexus://node/<id>`, its certificate's subject alternative name.
    pub fn uri(&self) -> String {
        format!("{NODE_URI_PREFIX}{}", self.0)
    }
}

impl FromStr for NodeId {
    type Err = BadNodeId;

    fn from_str(s: &str) -> Result<Self, BadNodeId> {
        let ok = !s.is_empty()
            && s.len() <= MAX_NODE_ID
            && !s.starts_with('-')
            && !s.ends_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(BadNodeId(s.to_owned()))
        }
    }
}

impl TryFrom<String> for NodeId {
    type Error = BadNodeId;
    fn try_from(s: String) -> Result<Self, BadNodeId> {
        s.parse()
    }
}

impl From<NodeId> for String {
    fn from(id: NodeId) -> String {
        id.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node's role in the cluster, carried by its certificate (the subject's OU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A manager: a Raft voter, and the nodes that issue certificates.
    Manager,
    /// A worker: reads and writes through the managers.
    Worker,
}

impl Role {
    /// `manager` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "manager" => Ok(Role::Manager),
            "worker" => Ok(Role::Worker),
            other => Err(format!("role {other:?} is neither manager nor worker")),
        }
    }
}

/// The peer at the other end of a mutual-TLS connection, as its certificate names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The peer's node id.
    pub node_id: NodeId,
    /// The peer's role.
    pub role: Role,
    /// When the peer's certificate expires.
    pub not_after: SystemTime,
}

impl PeerIdentity {
    /// Reads the node id (URI SAN `plexus://node/<id>`) and role (subject OU) of a node
    /// certificate. It does not verify the certificate: the TLS handshake has.
    pub fn from_cert(cert: &CertificateDer<'_>) -> Result<Self, String> {
        let (_, x509) = x509_parser::parse_x509_certificate(cert)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let san = x509
            .subject_alternative_name()
            .map_err(|e| format!("bad subject alternative name: {e}"))?
            .ok_or("no subject alternative name")?;
        let mut ids = san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(uri) => uri.strip_prefix(NODE_URI_PREFIX),
            _ => None,
        });
        let id = ids.next().ok_or("no plexus://node/ URI")?;
        if ids.next().is_some() {
            return Err("more than one plexus://node/ URI".into());
        }
        let node_id: NodeId = id.parse().map_err(|e: BadNodeId| e.to_string())?;
        let mut units = x509.subject().iter_organizational_unit();
        let role = units
            .next()
            .ok_or("no role (subject OU)")?
            .as_str()
            .map_err(|e| format!("role (subject OU) is not a string: {e}"))?
            .parse::<Role>()?;
        if units.next().is_some() {
            return Err("more than one role (subject OU)".into());
        }
        let not_after = to_system_time(x509.validity().not_after.timestamp());
        Ok(Self {
            node_id,
            role,
            not_after,
        })
    }
}

/// A node certificate issued by the cluster CA, with its private key and the CA
/// certificate: everything a node needs to speak mutual TLS in the cluster.
#[derive(Clone)]
pub struct NodeIdentity {
    cert: CertificateDer<'static>,
    ca: CertificateDer<'static>,
    key_pkcs8: Vec<u8>,
    peer: PeerIdentity,
    not_before: SystemTime,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("NodeIdentity")
            .field("node_id", &self.peer.node_id)
            .field("role", &self.peer.role)
            .field("not_before", &self.not_before)
            .field("not_after", &self.peer.not_after)
            .finish_non_exhaustive()
    }
}

/// File names of a node identity directory (see [`NodeIdentity::save`]).
pub const NODE_CERT_FILE: &str = "node.pem";
/// The node key's file name, written with mode 0600.
pub const NODE_KEY_FILE: &str = "node-key.pem";

impl NodeIdentity {
    /// Puts together a node certificate, the CA certificate and the node's PKCS#8 key (DER).
    /// It checks that the certificate names a node and that the key is well formed.
    pub fn from_parts(
        cert: CertificateDer<'static>,
        ca: CertificateDer<'static>,
        key_pkcs8: Vec<u8>,
    ) -> Result<Self, String> {
        let peer = PeerIdentity::from_cert(&cert)?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let not_before = to_system_time(x509.validity().not_before.timestamp());
        let identity = Self {
            cert,
            ca,
            key_pkcs8,
            peer,
            not_before,
        };
        identity.certified_key()?;
        Ok(identity)
    }

    /// The node id.
    pub fn node_id(&self) -> &NodeId {
        &self.peer.node_id
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.peer.role
    }

    /// The node certificate, DER.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The cluster CA certificate, DER.
    pub fn ca(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// The start of the certificate's validity.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The end of the certificate's validity.
    pub fn not_after(&self) -> SystemTime {
        self.peer.not_after
    }

    /// When the node should renew: once less than a third of the validity is left.
    pub fn renew_at(&self) -> SystemTime {
        let total = self
            .peer
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.peer.not_after - total / 3
    }

    /// Whether, at `now`, less than a third of the validity is left.
    pub fn needs_renewal(&self, now: SystemTime) -> bool {
        now >= self.renew_at()
    }

    /// The certificate and key as rustls uses them (chain: node, CA).
    pub(crate) fn certified_key(&self) -> Result<CertifiedKey, String> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()));
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| format!("node key: {e}"))?;
        Ok(CertifiedKey::new(
            vec![self.cert.clone(), self.ca.clone()],
            signer,
        ))
    }

    /// Saves the identity in `dir` (made if missing): [`NODE_CERT_FILE`], the key in
    /// [`NODE_KEY_FILE`] with mode 0600, and the CA certificate in
    /// [`crate::ca::CA_CERT_FILE`].
    pub fn save(&self, dir: &Path) -> Result<(), CaError> {
        std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        write_atomic(
            &dir.join(crate::ca::CA_CERT_FILE),
            pem_encode("CERTIFICATE", &self.ca).as_bytes(),
            0o644,
        )?;
        write_atomic(
            &dir.join(NODE_KEY_FILE),
            pem_encode("PRIVATE KEY", &self.key_pkcs8).as_bytes(),
            0o600,
        )?;
        write_atomic(
            &dir.join(NODE_CERT_FILE),
            pem_encode("CERTIFICATE", &self.cert).as_bytes(),
            0o644,
        )
    }

    /// Loads an identity saved by [`NodeIdentity::save`].
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map_err(|source| CaError::Io {
                    path: path.clone(),
                    source,
                })
                .map(|text| (path, text))
        };
        let bad = |path: &Path, reason: String| CaError::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        let (ca_path, ca) = read(crate::ca::CA_CERT_FILE)?;
        let (cert_path, cert) = read(NODE_CERT_FILE)?;
        let (key_path, key) = read(NODE_KEY_FILE)?;
        let ca = parse_cert_pem(&ca).map_err(|r| bad(&ca_path, r))?;
        let cert = parse_cert_pem(&cert).map_err(|r| bad(&cert_path, r))?;
        let key = pem_decode(&key, "PRIVATE KEY").map_err(|r| bad(&key_path, r))?;
        Self::from_parts(cert, ca, key).map_err(|r| bad(&cert_path, r))
    }
}

/// The credentials a listener or connector presents, swappable while they run: the next
/// handshake uses the identity last given to [`Credentials::replace`].
#[derive(Clone)]
pub struct Credentials {
    inner: Arc<CredentialsInner>,
}

struct CredentialsInner {
    current: ArcSwap<(NodeIdentity, Arc<CertifiedKey>)>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Credentials")
            .field(&self.inner.current.load().0)
            .finish()
    }
}

/// A replacement identity that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The key does not load.
    #[error("identity of node {node}: {reason}")]
    BadIdentity {
        /// The node.
        node: NodeId,
        /// What was wrong.
        reason: String,
    },
    /// The replacement is for another node or another CA.
    #[error("replacement identity is for node {new} of another CA or id than node {current}")]
    Mismatch {
        /// The node the credentials are for.
        current: NodeId,
        /// The node the replacement was for.
        new: NodeId,
    },
}

impl Credentials {
    /// Credentials presenting `identity`.
    pub fn new(identity: NodeIdentity) -> Result<Self, CredentialsError> {
        let key = Self::key(&identity)?;
        Ok(Self {
            inner: Arc::new(CredentialsInner {
                current: ArcSwap::from_pointee((identity, key)),
            }),
        })
    }

    fn key(identity: &NodeIdentity) -> Result<Arc<CertifiedKey>, CredentialsError> {
        identity
            .certified_key()
            .map(Arc::new)
            .map_err(|reason| CredentialsError::BadIdentity {
                node: identity.node_id().clone(),
                reason,
            })
    }

    /// The identity presented now.
    pub fn current(&self) -> NodeIdentity {
        self.inner.current.load().0.clone()
    }

    /// Presents `identity` from the next handshake on. It must be the same node's, from the
    /// same CA (the peers' verifiers trust that CA only); otherwise nothing changes.
    pub fn replace(&self, identity: NodeIdentity) -> Result<(), CredentialsError> {
        let current = self.current();
        if current.node_id() != identity.node_id() || current.ca() != identity.ca() {
            return Err(CredentialsError::Mismatch {
                current: current.node_id().clone(),
                new: identity.node_id().clone(),
            });
        }
        let key = Self::key(&identity)?;
        tracing::info!(node = %identity.node_id(), not_after = ?identity.not_after(),
            "node certificate replaced");
        self.inner.current.store(Arc::new((identity, key)));
        Ok(())
    }

    pub(crate) fn server_resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::new(self.clone())
    }

    pub(crate) fn client_resolver(&self) -> Arc<dyn ResolvesClientCert> {
        Arc::new(self.clone())
    }
}

impl ResolvesServerCert for Credentials {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.inner.current.load().1.clone())
    }
}

impl ResolvesClientCert for Credentials {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.inner.current.load().1.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// Reads one PEM certificate.
pub(crate) fn parse_cert_pem(text: &str) -> Result<CertificateDer<'static>, String> {
    pem_decode(text, "CERTIFICATE").map(CertificateDer::from)
}

fn pem_decode(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(text.as_bytes()).map_err(|e| format!("not PEM: {e}"))?;
    if pem.label != label {
        return Err(format!("PEM block is {:?}, not {label:?}", pem.label));
    }
    Ok(pem.contents)
}

pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    use std::fmt::Write;
    let b64 = base64(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        let _ = writeln!(out, "{}", String::from_utf8_lossy(chunk));
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
