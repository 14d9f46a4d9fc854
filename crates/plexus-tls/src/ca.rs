//! The cluster certificate authority: one self-signed ECDSA P-256 certificate and its key,
//! which issues every node's certificate.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, CertificateSigningRequestDer};
use time::OffsetDateTime;

use crate::identity::{NodeId, NodeIdentity, Role};

/// The CA certificate's file name in a CA directory (see [`ClusterCa::save`]).
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key's file name in a CA directory, written with mode 0600.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// How long a CA made by [`ClusterCa::create`] is valid: ten years.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Certificates start this much in the past so that a peer whose clock is a little behind
/// still accepts them.
const BACKDATE: Duration = Duration::from_secs(300);

/// An error of the certificate authority.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file of a CA directory could not be read or written.
    #[error("CA file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file held something other than the expected PEM.
    #[error("CA file {path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key file's key is not the one the certificate was made for.
    #[error("CA key {key} does not match certificate {cert}")]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// A certificate signing request could not be parsed or its signature is wrong.
    #[error("certificate signing request for node {node}: {reason}")]
    BadCsr {
        /// The node the request was for.
        node: NodeId,
        /// What was wrong.
        reason: String,
    },
    /// A validity does not fit in a certificate.
    #[error("validity of {0:?} is out of range")]
    BadValidity(Duration),
    /// Making or signing a certificate failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The cluster CA: issues node certificates whose subject carries the node id and role.
///
/// Saved as two PEM files in a directory ([`CA_CERT_FILE`], [`CA_KEY_FILE`] with mode 0600).
pub struct ClusterCa {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("ClusterCa")
            .field("digest", &crate::token::ca_digest_hex(&self.cert_der))
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Makes a new self-signed CA valid for [`DEFAULT_CA_VALIDITY`].
    pub fn create() -> Result<Self, CaError> {
        Self::create_with_validity(DEFAULT_CA_VALIDITY)
    }

    /// Makes a new self-signed CA (ECDSA P-256) valid for `validity` from now.
    pub fn create_with_validity(validity: Duration) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "plexus");
        // A name of its own, so that a certificate of another cluster's CA is refused as
        // of an unknown issuer rather than checked against this CA's key.
        let mut tag = [0u8; 8];
        crate::token::fill_random(&mut tag)
            .map_err(|_| CaError::Generate(rcgen::Error::RingUnspecified))?;
        dn.push(
            DnType::CommonName,
            format!("plexus cluster CA {}", crate::token::hex(&tag)),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        (params.not_before, params.not_after) = validity_window(validity)?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_der: cert.der().clone(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA saved by [`ClusterCa::save`] from `dir`, checking the key matches.
    pub fn load(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let cert_der =
            crate::identity::parse_cert_pem(&cert_pem).map_err(|reason| CaError::BadFile {
                path: cert_path.clone(),
                reason,
            })?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::BadFile {
            path: key_path.clone(),
            reason: format!("not a PEM private key: {e}"),
        })?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| CaError::BadFile {
                path: cert_path.clone(),
                reason: format!("not an X.509 certificate: {e}"),
            })?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(CaError::KeyMismatch {
                key: key_path,
                cert: cert_path,
            });
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CaError::BadFile {
            path: cert_path.clone(),
            reason: format!("not a CA certificate: {e}"),
        })?;
        Ok(Self {
            cert_der,
            cert_pem,
            issuer,
        })
    }

    /// Saves the CA in `dir` (made if missing): the certificate world-readable, the key
    /// readable by the owner only. Each file is replaced whole (written aside, then renamed).
    pub fn save(&self, dir: &Path) -> Result<(), CaError> {
        fs::create_dir_all(dir).map_err(|source| CaError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        write_atomic(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes(), 0o644)?;
        write_atomic(
            &dir.join(CA_KEY_FILE),
            self.issuer.key().serialize_pem().as_bytes(),
            0o600,
        )
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The SHA-256 digest of the CA certificate's DER, the one a join token carries.
    pub fn digest(&self) -> [u8; 32] {
        crate::token::ca_digest(&self.cert_der)
    }

    /// Issues a certificate and a fresh key for `node_id` with `role`, valid for `validity`.
    pub fn issue(
        &self,
        node_id: &NodeId,
        role: Role,
        validity: Duration,
    ) -> Result<NodeIdentity, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = node_params(node_id, role, validity)?.signed_by(&key, &self.issuer)?;
        NodeIdentity::from_parts(
            cert.der().clone(),
            self.cert_der.clone(),
            key.serialize_der(),
        )
        .map_err(|reason| CaError::BadCsr {
            node: node_id.clone(),
            reason,
        })
    }

    /// Issues a certificate for the public key of a certificate signing request (DER). The
    /// request's subject and extensions are ignored: the node id and role are the CA's.
    pub fn issue_for_csr(
        &self,
        csr_der: &[u8],
        node_id: &NodeId,
        role: Role,
        validity: Duration,
    ) -> Result<CertificateDer<'static>, CaError> {
        let csr = CertificateSigningRequestDer::from(csr_der);
        let parsed =
            CertificateSigningRequestParams::from_der(&csr).map_err(|e| CaError::BadCsr {
                node: node_id.clone(),
                reason: e.to_string(),
            })?;
        let request = CertificateSigningRequestParams {
            params: node_params(node_id, role, validity)?,
            public_key: parsed.public_key,
        };
        Ok(request.signed_by(&self.issuer)?.der().clone())
    }
}

/// Makes a certificate signing request for a fresh key: (CSR DER, PKCS#8 key DER).
pub(crate) fn make_csr() -> Result<(Vec<u8>, Vec<u8>), rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let csr = CertificateParams::default().serialize_request(&key)?;
    Ok((csr.der().to_vec(), key.serialize_der()))
}

fn node_params(
    node_id: &NodeId,
    role: Role,
    validity: Duration,
) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "plexus");
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    dn.push(DnType::CommonName, node_id.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::URI(node_id.uri().try_into()?),
        // A DNS name too, so that stock verifiers can check a peer by node id.
        SanType::DnsName(node_id.as_str().try_into()?),
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every node is both a server and a client of its peers.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    (params.not_before, params.not_after) = validity_window(validity)?;
    Ok(params)
}

fn validity_window(validity: Duration) -> Result<(OffsetDateTime, OffsetDateTime), CaError> {
    let now = OffsetDateTime::now_utc();
    let after = time::Duration::try_from(validity)
        .ok()
        .and_then(|d| now.checked_add(d))
        .ok_or(CaError::BadValidity(validity))?;
    let before = now - time::Duration::try_from(BACKDATE).unwrap_or(time::Duration::ZERO);
    Ok((before, after))
}

fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    crate::token::fill_random(&mut bytes)
        .map_err(|_| CaError::Generate(rcgen::Error::RingUnspecified))?;
    // Positive, and with no leading zero byte to strip.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `bytes` to `path` with `mode`, through a temporary file renamed over it.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let io = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    // The umask may have narrowed the mode; a key must never be wider than asked.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}
