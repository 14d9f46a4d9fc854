//! Keys: X25519 static key pairs and pre-shared keys, in `wg`'s base64 text form.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use boringtun::x25519;
use rand_core::{OsRng, RngCore};

use crate::error::{Result, WgError};

/// Length of every key, in bytes.
pub const KEY_LEN: usize = 32;

/// Decodes `wg`'s text form of a key: 44 characters of standard base64 (with its `=`).
fn decode(field: &'static str, text: &str) -> Result<[u8; KEY_LEN]> {
    let text = text.trim();
    let bytes = STANDARD.decode(text).map_err(|e| WgError::Key {
        field,
        reason: format!("not base64: {e}"),
    })?;
    bytes.as_slice().try_into().map_err(|_| WgError::Key {
        field,
        reason: format!("decodes to {} bytes, a key has {KEY_LEN}", bytes.len()),
    })
}

fn random_bytes() -> [u8; KEY_LEN] {
    let mut bytes = [0u8; KEY_LEN];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A static X25519 private key. Its `Debug` hides the key; [`to_base64`](Self::to_base64)
/// shows it.
#[derive(Clone)]
pub struct PrivateKey(x25519::StaticSecret);

impl PrivateKey {
    /// A fresh key from the operating system's random source (clamped by X25519 itself).
    pub fn generate() -> Self {
        Self(x25519::StaticSecret::from(random_bytes()))
    }

    /// Parses `wg genkey`'s output. Errors name the field `private key`.
    pub fn from_base64(text: &str) -> Result<Self> {
        decode("private key", text).map(|b| Self(x25519::StaticSecret::from(b)))
    }

    /// `wg`'s text form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    /// The public key of this private key (`wg pubkey`).
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.0))
    }

    pub(crate) fn secret(&self) -> &x25519::StaticSecret {
        &self.0
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public {})", self.public_key())
    }
}

impl FromStr for PrivateKey {
    type Err = WgError;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_base64(s)
    }
}

/// A static X25519 public key: a peer's identity. Displays as `wg`'s base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(x25519::PublicKey);

impl PublicKey {
    /// Parses `wg pubkey`'s output. Errors name the field `public key`.
    pub fn from_base64(text: &str) -> Result<Self> {
        decode("public key", text).map(|b| Self(x25519::PublicKey::from(b)))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        self.0.as_bytes()
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(x25519::PublicKey::from(bytes))
    }

    pub(crate) fn inner(&self) -> x25519::PublicKey {
        self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = WgError;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_base64(s)
    }
}

/// A 32-byte symmetric key mixed into the handshake (`wg genpsk`), for post-quantum
/// resistance. Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        Self(random_bytes())
    }

    /// Parses `wg genpsk`'s output. Errors name the field `preshared key`.
    pub fn from_base64(text: &str) -> Result<Self> {
        decode("preshared key", text).map(Self)
    }

    /// `wg`'s text form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    pub(crate) fn bytes(&self) -> [u8; KEY_LEN] {
        self.0
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(..)")
    }
}

impl FromStr for PresharedKey {
    type Err = WgError;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_base64(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_base64() {
        let key = PrivateKey::generate();
        let text = key.to_base64();
        assert_eq!(text.len(), 44);
        let back = PrivateKey::from_base64(&text).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        let public = key.public_key().to_string();
        assert_eq!(PublicKey::from_base64(&public).unwrap(), key.public_key());
        let psk = PresharedKey::generate();
        assert_eq!(PresharedKey::from_base64(&psk.to_base64()).unwrap(), psk);
    }

    #[test]
    fn public_key_matches_wg_pubkey() {
        // RFC 7748's test vector (Alice), as `wg pubkey` computes it.
        let private =
            PrivateKey::from_base64("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=").unwrap();
        assert_eq!(
            private.public_key().to_string(),
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        );
    }

    #[test]
    fn bad_keys_name_their_field() {
        let e = PublicKey::from_base64("not base64!")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid public key: not base64"), "{e}");
        let e = PrivateKey::from_base64("AAAA").unwrap_err().to_string();
        assert_eq!(e, "invalid private key: decodes to 3 bytes, a key has 32");
        let e = PresharedKey::from_base64("").unwrap_err().to_string();
        assert_eq!(e, "invalid preshared key: decodes to 0 bytes, a key has 32");
    }

    #[test]
    fn debug_hides_secrets() {
        let psk = PresharedKey::generate();
        assert!(!format!("{psk:?}").contains(&psk.to_base64()));
        let key = PrivateKey::generate();
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }
}
