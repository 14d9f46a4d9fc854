//! Join tokens: `PLXTKN-1-<sha256 of the CA certificate, hex>-<128-bit secret, hex>`.
//!
//! As Docker swarm's `SWMTKN-1-…`: the joiner checks the manager's CA by the digest, the
//! manager checks the secret, which says the role the joiner gets. [`JoinTokens`] is the
//! manager's side: one secret per role, rotation, optional expiry.

use std::fmt;
use std::str::FromStr;
use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::identity::Role;

/// The token's prefix: the format and its version.
pub const TOKEN_PREFIX: &str = "PLXTKN";
/// The token format version.
pub const TOKEN_VERSION: &str = "1";
/// Length of the CA digest in hex characters (SHA-256).
pub const DIGEST_HEX_LEN: usize = 64;
/// Length of the secret in hex characters (128 bits).
pub const SECRET_HEX_LEN: usize = 32;

/// A join token as a joiner holds it: the CA digest and a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    ca_digest: [u8; 32],
    secret: [u8; 16],
}

/// Why a string is not a join token; each names the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenParseError {
    /// Not four `-`-separated parts.
    #[error(
        "join token is malformed: expected PLXTKN-1-<ca digest>-<secret>, got {parts} part(s)"
    )]
    Malformed {
        /// How many parts the string had.
        parts: usize,
    },
    /// The first part is not `PLXTKN`.
    #[error("join token prefix is {0:?}, not \"PLXTKN\"")]
    WrongPrefix(String),
    /// The version is not `1`.
    #[error("join token version is {0:?}, not \"1\"")]
    WrongVersion(String),
    /// The CA digest is not 64 hex characters.
    #[error("join token CA digest has {0} characters, not 64")]
    BadDigestLength(usize),
    /// The CA digest is not hex.
    #[error("join token CA digest is not hexadecimal")]
    BadDigest,
    /// The secret is not 32 hex characters.
    #[error("join token secret has {0} characters, not 32")]
    BadSecretLength(usize),
    /// The secret is not hex.
    #[error("join token secret is not hexadecimal")]
    BadSecret,
}

impl JoinToken {
    /// A token for the CA whose certificate has `ca_digest`, with a fresh random secret.
    pub fn generate(ca_digest: [u8; 32]) -> Result<Self, RandomError> {
        let mut secret = [0u8; 16];
        fill_random(&mut secret)?;
        Ok(Self { ca_digest, secret })
    }

    /// The SHA-256 digest of the CA certificate this token trusts.
    pub fn ca_digest(&self) -> [u8; 32] {
        self.ca_digest
    }

    /// Whether `ca` is the CA this token names.
    pub fn trusts(&self, ca: &CertificateDer<'_>) -> bool {
        bool::from(ca_digest(ca).ct_eq(&self.ca_digest))
    }

    /// Compares the secrets in constant time.
    pub fn secret_matches(&self, other: &JoinToken) -> bool {
        bool::from(self.secret.ct_eq(&other.secret))
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}-{TOKEN_VERSION}-{}-{}",
            hex(&self.ca_digest),
            hex(&self.secret)
        )
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs.
        write!(
            f,
            "JoinToken({TOKEN_PREFIX}-{TOKEN_VERSION}-{}-…)",
            hex(&self.ca_digest)
        )
    }
}

impl FromStr for JoinToken {
    type Err = TokenParseError;

    fn from_str(s: &str) -> Result<Self, TokenParseError> {
        let parts: Vec<&str> = s.trim().split('-').collect();
        if parts.len() != 4 {
            return Err(TokenParseError::Malformed { parts: parts.len() });
        }
        if parts[0] != TOKEN_PREFIX {
            return Err(TokenParseError::WrongPrefix(parts[0].to_owned()));
        }
        if parts[1] != TOKEN_VERSION {
            return Err(TokenParseError::WrongVersion(parts[1].to_owned()));
        }
        if parts[2].len() != DIGEST_HEX_LEN {
            return Err(TokenParseError::BadDigestLength(parts[2].len()));
        }
        if parts[3].len() != SECRET_HEX_LEN {
            return Err(TokenParseError::BadSecretLength(parts[3].len()));
        }
        let mut ca_digest = [0u8; 32];
        unhex(parts[2], &mut ca_digest).ok_or(TokenParseError::BadDigest)?;
        let mut secret = [0u8; 16];
        unhex(parts[3], &mut secret).ok_or(TokenParseError::BadSecret)?;
        Ok(Self { ca_digest, secret })
    }
}

/// Why a manager refuses a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token names another CA.
    #[error("join token is for another cluster CA")]
    WrongCa,
    /// The secret is no role's current one (wrong, or rotated away).
    #[error("join token secret is not valid (wrong or rotated)")]
    InvalidSecret,
    /// The secret is a role's, but its expiry has passed.
    #[error("join token for {role}s expired")]
    Expired {
        /// The role the token was for.
        role: Role,
    },
}

/// One role's current secret.
#[derive(Clone, Serialize, Deserialize)]
struct RoleSecret {
    secret: [u8; 16],
    expires: Option<SystemTime>,
}

/// A manager's join tokens: one secret per role, each with an optional expiry.
///
/// Serializable, so that the cluster store can hold it; rotating a role's token makes the
/// old one fail at once.
#[derive(Clone, Serialize, Deserialize)]
pub struct JoinTokens {
    ca_digest: [u8; 32],
    manager: RoleSecret,
    worker: RoleSecret,
}

impl fmt::Debug for JoinTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTokens")
            .field("ca_digest", &hex(&self.ca_digest))
            .field("manager_expires", &self.manager.expires)
            .field("worker_expires", &self.worker.expires)
            .finish_non_exhaustive()
    }
}

impl JoinTokens {
    /// Fresh tokens for both roles, for the CA whose certificate has `ca_digest`, without
    /// expiry.
    pub fn generate(ca_digest: [u8; 32]) -> Result<Self, RandomError> {
        let fresh = || -> Result<RoleSecret, RandomError> {
            Ok(RoleSecret {
                secret: JoinToken::generate(ca_digest)?.secret,
                expires: None,
            })
        };
        Ok(Self {
            ca_digest,
            manager: fresh()?,
            worker: fresh()?,
        })
    }

    fn slot(&self, role: Role) -> &RoleSecret {
        match role {
            Role::Manager => &self.manager,
            Role::Worker => &self.worker,
        }
    }

    fn slot_mut(&mut self, role: Role) -> &mut RoleSecret {
        match role {
            Role::Manager => &mut self.manager,
            Role::Worker => &mut self.worker,
        }
    }

    /// The current token for `role` (what `plexus cluster join-token ROLE` prints).
    pub fn token(&self, role: Role) -> JoinToken {
        JoinToken {
            ca_digest: self.ca_digest,
            secret: self.slot(role).secret,
        }
    }

    /// When `role`'s token expires, if it does.
    pub fn expires(&self, role: Role) -> Option<SystemTime> {
        self.slot(role).expires
    }

    /// Replaces `role`'s secret with a fresh one expiring at `expires` (never if `None`);
    /// the old token stops working. Returns the new token.
    pub fn rotate(
        &mut self,
        role: Role,
        expires: Option<SystemTime>,
    ) -> Result<JoinToken, RandomError> {
        let secret = JoinToken::generate(self.ca_digest)?.secret;
        let slot = self.slot_mut(role);
        slot.secret = secret;
        slot.expires = expires;
        tracing::info!(%role, ?expires, "join token rotated");
        Ok(self.token(role))
    }

    /// Sets when `role`'s current token expires (never if `None`).
    pub fn set_expiry(&mut self, role: Role, expires: Option<SystemTime>) {
        self.slot_mut(role).expires = expires;
    }

    /// The role `token` admits at `now`: its CA must be this cluster's and its secret a
    /// role's current, unexpired one. Both secrets are compared in constant time.
    pub fn check(&self, token: &JoinToken, now: SystemTime) -> Result<Role, TokenError> {
        if !bool::from(token.ca_digest.ct_eq(&self.ca_digest)) {
            return Err(TokenError::WrongCa);
        }
        let is_manager = token.secret.ct_eq(&self.manager.secret);
        let is_worker = token.secret.ct_eq(&self.worker.secret);
        let role = if bool::from(is_manager) {
            Role::Manager
        } else if bool::from(is_worker) {
            Role::Worker
        } else {
            return Err(TokenError::InvalidSecret);
        };
        match self.slot(role).expires {
            Some(at) if now >= at => Err(TokenError::Expired { role }),
            _ => Ok(role),
        }
    }
}

/// The SHA-256 digest of a certificate's DER.
pub fn ca_digest(cert: &CertificateDer<'_>) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The SHA-256 digest of a certificate's DER, lower-case hex.
pub fn ca_digest_hex(cert: &CertificateDer<'_>) -> String {
    hex(&ca_digest(cert))
}

/// The operating system's random number generator failed: no secret can be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomError;

pub(crate) fn fill_random(out: &mut [u8]) -> Result<(), RandomError> {
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), out).map_err(|_| RandomError)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn unhex(text: &str, out: &mut [u8]) -> Option<()> {
    let text = text.as_bytes();
    if text.len() != out.len() * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (i, pair) in text.chunks(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(())
}

pub(crate) fn unhex_vec(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    let mut out = vec![0u8; text.len() / 2];
    unhex(text, &mut out)?;
    Some(out)
}
