//! Certificate verifiers: no system roots anywhere, only the cluster CA, or, for a joiner
//! that has none yet, the CA whose digest its token carries.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};

use crate::identity::{NodeId, PeerIdentity, Role};
use crate::token::ca_digest;

/// A peer certificate that chains to the CA but does not name the node or role expected.
#[derive(Debug, thiserror::Error)]
pub enum PeerMismatch {
    /// The certificate names another node.
    #[error("peer is node {found}, expected node {expected}")]
    Node {
        /// The node expected.
        expected: NodeId,
        /// The node the certificate names.
        found: NodeId,
    },
    /// The certificate is for another role.
    #[error("peer {node} is a {found}, expected a {expected}")]
    Role {
        /// The node.
        node: NodeId,
        /// The role expected.
        expected: Role,
        /// The role the certificate names.
        found: Role,
    },
    /// The certificate names no node.
    #[error("peer certificate names no plexus node: {0}")]
    NotANode(String),
    /// No certificate in the chain has the digest the join token carries.
    #[error("peer's CA is not the one the join token names")]
    UnknownCa,
}

fn reject(e: PeerMismatch) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// The crypto provider every config of this crate uses: ring.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Verifies a server's certificate chains to the cluster CA and, if asked, that it names
/// an expected node and role. The TLS server name is not used: nodes are known by id.
#[derive(Debug)]
pub(crate) struct ClusterServerVerifier {
    roots: Arc<RootCertStore>,
    expected_node: Option<NodeId>,
    expected_role: Option<Role>,
    provider: Arc<CryptoProvider>,
}

impl ClusterServerVerifier {
    pub(crate) fn new(
        roots: Arc<RootCertStore>,
        expected_node: Option<NodeId>,
        expected_role: Option<Role>,
    ) -> Self {
        Self {
            roots,
            expected_node,
            expected_role,
            provider: provider(),
        }
    }
}

pub(crate) fn check_peer(
    end_entity: &CertificateDer<'_>,
    expected_node: Option<&NodeId>,
    expected_role: Option<Role>,
) -> Result<PeerIdentity, PeerMismatch> {
    let peer = PeerIdentity::from_cert(end_entity).map_err(PeerMismatch::NotANode)?;
    if let Some(expected) = expected_node {
        if *expected != peer.node_id {
            return Err(PeerMismatch::Node {
                expected: expected.clone(),
                found: peer.node_id,
            });
        }
    }
    if let Some(expected) = expected_role {
        if expected != peer.role {
            return Err(PeerMismatch::Role {
                node: peer.node_id,
                expected,
                found: peer.role,
            });
        }
    }
    Ok(peer)
}

fn verify_chain(
    roots: &RootCertStore,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    provider: &CryptoProvider,
) -> Result<(), rustls::Error> {
    let cert = ParsedCertificate::try_from(end_entity)?;
    verify_server_cert_signed_by_trust_anchor(
        &cert,
        roots,
        intermediates,
        now,
        provider.signature_verification_algorithms.all,
    )
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_chain(&self.roots, end_entity, intermediates, now, &self.provider)?;
        check_peer(end_entity, self.expected_node.as_ref(), self.expected_role).map_err(reject)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A joiner's verifier: the server must send, after its own certificate, a CA certificate
/// whose SHA-256 digest is the token's, and its certificate must chain to that CA and be a
/// manager's.
#[derive(Debug)]
pub(crate) struct PinnedCaVerifier {
    digest: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl PinnedCaVerifier {
    pub(crate) fn new(digest: [u8; 32]) -> Self {
        Self {
            digest,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| ca_digest(c) == self.digest)
            .ok_or_else(|| reject(PeerMismatch::UnknownCa))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        verify_chain(&roots, end_entity, intermediates, now, &self.provider)?;
        check_peer(end_entity, None, Some(Role::Manager)).map_err(reject)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Checks that an issued identity's certificate chains to its CA and matches its key (the
/// key was made here; a certificate for another key would fail every handshake).
pub(crate) fn verify_issued(identity: &crate::identity::NodeIdentity) -> Result<(), String> {
    let roots = crate::enrol::single_root(identity.ca())?;
    let provider = provider();
    verify_chain(&roots, identity.cert(), &[], UnixTime::now(), &provider)
        .map_err(|e| format!("does not chain to the CA: {e}"))?;
    let key = identity.certified_key()?;
    key.keys_match()
        .map_err(|e| format!("not for this node's key: {e}"))
}
