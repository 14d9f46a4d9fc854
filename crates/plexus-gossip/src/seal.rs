//! AEAD sealing (XChaCha20-Poly1305) with a rotating keyring, and replay protection.
//!
//! A sealed frame is `[version][channel][24-byte nonce][ciphertext + 16-byte tag]`, with the
//! version and channel bytes as associated data. The nonce is a per-sender random 16-byte
//! prefix followed by a 64-bit counter, so nonces never repeat. Sending uses the primary key;
//! opening tries every key of the ring, so a rotation (add everywhere, switch primary, remove
//! the old key) loses no message. A frame that no key opens is dropped before any parsing.

use std::collections::HashMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::codec::Address;
use crate::error::{GossipError, OpenError};
use crate::rng::Rng;

/// Seal format version.
const SEAL_VERSION: u8 = 1;
/// Bytes a seal adds to a plaintext.
pub const SEAL_OVERHEAD: usize = 2 + 24 + 16;
/// Most keys a ring holds (bounds the trial decryption cost per frame).
pub const MAX_KEYS: usize = 8;

/// Which channel a frame travels on (bound into the seal; separate replay windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// UDP datagram.
    Datagram = 1,
    /// TCP stream frame.
    Stream = 2,
}

/// A 256-bit key.
pub type Key = [u8; 32];

/// The keyring: one primary key for sending, all keys for receiving.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(Key, XChaCha20Poly1305)>,
    primary: usize,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("keys", &self.keys.len())
            .field("primary", &self.primary)
            .finish()
    }
}

impl Keyring {
    /// A ring with one (primary) key.
    pub fn new(primary: Key) -> Self {
        Self {
            keys: vec![(primary, XChaCha20Poly1305::new(&primary.into()))],
            primary: 0,
        }
    }

    /// Parses a 64-hex-digit key.
    pub fn parse_key(hex: &str) -> Result<Key, GossipError> {
        let hex = hex.trim();
        if hex.len() != 64 {
            return Err(GossipError::Keyring("a key is 64 hex digits"));
        }
        let mut k = [0u8; 32];
        for (i, slot) in k.iter_mut().enumerate() {
            *slot = u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16)
                .map_err(|_| GossipError::Keyring("a key is 64 hex digits"))?;
        }
        Ok(k)
    }

    /// Adds a receiving key (no-op if present).
    pub fn add(&mut self, key: Key) -> Result<(), GossipError> {
        if self.keys.iter().any(|(k, _)| *k == key) {
            return Ok(());
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(GossipError::Keyring("keyring full"));
        }
        self.keys.push((key, XChaCha20Poly1305::new(&key.into())));
        Ok(())
    }

    /// Makes a key already in the ring the primary (sending) key.
    pub fn use_key(&mut self, key: &Key) -> Result<(), GossipError> {
        match self.keys.iter().position(|(k, _)| k == key) {
            Some(i) => {
                self.primary = i;
                Ok(())
            }
            None => Err(GossipError::Keyring("key not in ring")),
        }
    }

    /// Removes a key; the primary cannot be removed.
    pub fn remove(&mut self, key: &Key) -> Result<(), GossipError> {
        let i = self
            .keys
            .iter()
            .position(|(k, _)| k == key)
            .ok_or(GossipError::Keyring("key not in ring"))?;
        if i == self.primary {
            return Err(GossipError::Keyring("cannot remove the primary key"));
        }
        self.keys.remove(i);
        if self.primary > i {
            self.primary -= 1;
        }
        Ok(())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never empty (there is always a primary), but clippy wants this.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The primary key.
    pub fn primary(&self) -> Key {
        self.keys[self.primary].0
    }
}

/// Seals and opens frames with a keyring.
#[derive(Debug, Clone)]
pub struct Sealer {
    /// The keyring.
    pub keyring: Keyring,
    prefix: [u8; 16],
    counter: u64,
}

impl Sealer {
    /// A sealer whose nonce prefix comes from `rng`.
    pub fn new(keyring: Keyring, rng: &mut Rng) -> Self {
        let mut prefix = [0u8; 16];
        rng.fill(&mut prefix);
        Self {
            keyring,
            prefix,
            counter: 0,
        }
    }

    /// Seals `plaintext` for `channel` with the primary key.
    pub fn seal(&mut self, channel: Channel, plaintext: &[u8]) -> Vec<u8> {
        self.counter = self.counter.wrapping_add(1);
        let mut nonce = [0u8; 24];
        nonce[..16].copy_from_slice(&self.prefix);
        nonce[16..].copy_from_slice(&self.counter.to_be_bytes());
        let aad = [SEAL_VERSION, channel as u8];
        let cipher = &self.keyring.keys[self.keyring.primary].1;
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&aad);
        out.extend_from_slice(&nonce);
        match cipher.encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        ) {
            Ok(ct) => out.extend_from_slice(&ct),
            // Encryption only fails for absurd lengths; send nothing useful then.
            Err(_) => out.clear(),
        }
        out
    }

    /// Opens a sealed frame expected on `channel`.
    pub fn open(&self, channel: Channel, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        open_with(&self.keyring, channel, sealed)
    }
}

/// Opens `sealed` with any key of `keyring`.
pub fn open_with(keyring: &Keyring, channel: Channel, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(OpenError::Truncated);
    }
    if sealed[0] != SEAL_VERSION || sealed[1] != channel as u8 {
        return Err(OpenError::BadHeader);
    }
    let aad = [sealed[0], sealed[1]];
    let nonce = XNonce::from_slice(&sealed[2..26]);
    let ct = &sealed[26..];
    // Primary first: the common case after a rotation completes.
    let order = std::iter::once(keyring.primary)
        .chain((0..keyring.keys.len()).filter(|i| *i != keyring.primary));
    for i in order {
        if let Ok(pt) = keyring.keys[i]
            .1
            .decrypt(nonce, Payload { msg: ct, aad: &aad })
        {
            return Ok(pt);
        }
    }
    Err(OpenError::NoKey)
}

#[derive(Debug, Clone, Copy)]
struct Window {
    epoch: u64,
    top: u64,
    bits: u64,
}

/// Sliding-window replay protection (64 frames), per sender and channel.
///
/// A sender's epoch grows across restarts; frames of an older epoch are refused.
#[derive(Debug, Default)]
pub struct ReplayGuard<A> {
    windows: HashMap<(A, u8), Window>,
}

/// Most senders tracked before the table is reset (bounds memory).
const MAX_WINDOWS: usize = 1 << 16;

impl<A: Address> ReplayGuard<A> {
    /// An empty guard.
    pub fn new() -> Self {
        Self {
            windows: HashMap::new(),
        }
    }

    /// Accepts `(epoch, seq)` from `from` once; false for a replay or a stale epoch.
    pub fn check(&mut self, from: A, channel: Channel, epoch: u64, seq: u64) -> bool {
        if self.windows.len() >= MAX_WINDOWS {
            self.windows.clear();
        }
        let w = self.windows.entry((from, channel as u8)).or_insert(Window {
            epoch,
            top: seq,
            bits: 0,
        });
        if epoch < w.epoch {
            return false;
        }
        if epoch > w.epoch {
            *w = Window {
                epoch,
                top: seq,
                bits: 1,
            };
            return true;
        }
        if seq > w.top || w.bits == 0 {
            let shift = seq.saturating_sub(w.top);
            w.bits = if shift >= 64 { 0 } else { w.bits << shift };
            w.bits |= 1;
            w.top = w.top.max(seq);
            return true;
        }
        let d = w.top - seq;
        if d >= 64 || w.bits & (1 << d) != 0 {
            return false;
        }
        w.bits |= 1 << d;
        true
    }

    /// Senders tracked.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// True when no sender is tracked.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_rotation() {
        let mut rng = Rng::new(1);
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        let mut a = Sealer::new(Keyring::new(k1), &mut rng);
        let mut b = Sealer::new(Keyring::new(k1), &mut rng);
        let s = a.seal(Channel::Datagram, b"hello");
        assert_eq!(b.open(Channel::Datagram, &s).ok(), Some(b"hello".to_vec()));
        assert_eq!(b.open(Channel::Stream, &s), Err(OpenError::BadHeader));
        // Rotation: add k2 everywhere, switch a's primary, b still opens; remove k1.
        a.keyring.add(k2).unwrap();
        b.keyring.add(k2).unwrap();
        a.keyring.use_key(&k2).unwrap();
        let s2 = a.seal(Channel::Datagram, b"x");
        assert!(b.open(Channel::Datagram, &s2).is_ok());
        let s_old = b.seal(Channel::Datagram, b"old");
        assert!(a.open(Channel::Datagram, &s_old).is_ok());
        b.keyring.use_key(&k2).unwrap();
        a.keyring.remove(&k1).unwrap();
        b.keyring.remove(&k1).unwrap();
        assert!(a.keyring.remove(&k2).is_err());
        let s3 = b.seal(Channel::Datagram, b"y");
        assert!(a.open(Channel::Datagram, &s3).is_ok());
        assert_eq!(a.open(Channel::Datagram, &s_old), Err(OpenError::NoKey));
        let mut t = s3.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert_eq!(a.open(Channel::Datagram, &t), Err(OpenError::NoKey));
        assert_eq!(
            a.open(Channel::Datagram, &t[..10]),
            Err(OpenError::Truncated)
        );
    }

    #[test]
    fn replay_window() {
        let mut g = ReplayGuard::<u32>::new();
        let c = Channel::Datagram;
        assert!(g.check(1, c, 5, 10));
        assert!(!g.check(1, c, 5, 10));
        assert!(g.check(1, c, 5, 8));
        assert!(!g.check(1, c, 5, 8));
        assert!(g.check(1, c, 5, 11));
        assert!(g.check(1, c, 5, 200));
        assert!(!g.check(1, c, 5, 100));
        assert!(!g.check(1, c, 4, 1000));
        assert!(g.check(1, c, 6, 1));
        assert!(g.check(1, Channel::Stream, 6, 1));
        assert!(!g.check(1, c, 5, 1000));
    }
}
