//! Counters of a device: atomics bumped by the workers, read as one [`Counters`] snapshot.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::keys::PublicKey;

/// The live counters (relaxed atomics: each is exact, a snapshot is not one instant).
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub bad_mac: AtomicU64,
    pub replays: AtomicU64,
    pub unknown_peer: AtomicU64,
    pub malformed: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub handshakes: AtomicU64,
    pub source_not_allowed: AtomicU64,
    pub no_route: AtomicU64,
    pub dropped: AtomicU64,
    pub send_errors: AtomicU64,
}

impl Live {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, peers: Vec<PeerCounters>) -> Counters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            tx_packets: get(&self.tx_packets),
            tx_bytes: get(&self.tx_bytes),
            rx_packets: get(&self.rx_packets),
            rx_bytes: get(&self.rx_bytes),
            bad_mac: get(&self.bad_mac),
            replays: get(&self.replays),
            unknown_peer: get(&self.unknown_peer),
            malformed: get(&self.malformed),
            handshake_failures: get(&self.handshake_failures),
            handshakes: get(&self.handshakes),
            source_not_allowed: get(&self.source_not_allowed),
            no_route: get(&self.no_route),
            dropped: get(&self.dropped),
            send_errors: get(&self.send_errors),
            peers,
        }
    }
}

/// A device's counters at one moment ([`Device::counters`](crate::Device::counters)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets read from the TUN device and encrypted to a peer.
    pub tx_packets: u64,
    /// Their bytes (plaintext IP packets).
    pub tx_bytes: u64,
    /// Packets decrypted and written to the TUN device.
    pub rx_packets: u64,
    /// Their bytes (plaintext IP packets).
    pub rx_bytes: u64,
    /// Data packets whose authentication tag did not verify (forged or corrupted): decryption
    /// failures.
    pub bad_mac: u64,
    /// Data packets with a counter seen already or too old (replays): decryption failures.
    pub replays: u64,
    /// Packets for no configured peer (unknown receiver index, or a handshake from an unknown
    /// static key): decryption failures.
    pub unknown_peer: u64,
    /// Datagrams that are no WireGuard message at all, or fail the handshake MAC check.
    pub malformed: u64,
    /// Handshake messages of a known peer that failed (wrong pre-shared key, stale index, a
    /// replayed initiation).
    pub handshake_failures: u64,
    /// Handshakes completed (as initiator or responder).
    pub handshakes: u64,
    /// Decrypted packets dropped because their inner source is not in the sending peer's
    /// allowed IPs (cryptokey routing).
    pub source_not_allowed: u64,
    /// Packets from the TUN device whose destination no peer's allowed IPs hold.
    pub no_route: u64,
    /// Packets dropped for lack of room (a full TUN queue, a peer without an endpoint).
    pub dropped: u64,
    /// Datagrams the UDP socket refused to send.
    pub send_errors: u64,
    /// Per peer, in no particular order.
    pub peers: Vec<PeerCounters>,
}

impl Counters {
    /// All decryption failures: bad MAC, replay and unknown peer.
    pub fn decrypt_failures(&self) -> u64 {
        self.bad_mac + self.replays + self.unknown_peer
    }

    /// The counters of the peer `key`.
    pub fn peer(&self, key: &PublicKey) -> Option<&PeerCounters> {
        self.peers.iter().find(|p| p.public_key == *key)
    }
}

/// One peer's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCounters {
    /// The peer.
    pub public_key: PublicKey,
    /// Where its datagrams go now (configured, or learnt from its last authenticated packet).
    pub endpoint: Option<SocketAddr>,
    /// When its last handshake completed.
    pub last_handshake: Option<SystemTime>,
    /// Handshakes completed with it.
    pub handshakes: u64,
    /// Plaintext bytes encrypted to it.
    pub tx_bytes: u64,
    /// Plaintext bytes decrypted from it.
    pub rx_bytes: u64,
    /// Whether a pre-shared key change awaits its confirmed handshake (the old session still
    /// carries the traffic): true until the peer has the new key too.
    pub rotation_pending: bool,
}
