//! One peer: its configuration and its Noise tunnels (boringtun `Tunn`s).
//!
//! A peer has an `active` tunnel, which encrypts everything, and during a pre-shared key
//! rotation a `next` one, made with the new key, whose handshake starts at once. The next
//! tunnel takes over (becomes active) as soon as it has a confirmed session; the old active
//! stays a while as `prev` to decrypt what the peer sent with the old session before it
//! switched too. So a rotation drops no packet: traffic never waits for the new handshake,
//! and if the peer has not rotated yet the old session goes on working.
//!
//! Each tunnel has its own local index (`Tunn`'s 24 bits): the peer's id times four plus a
//! generation, so a receiver index names the peer and the tunnel without a lookup table
//! changing at each rotation.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};

use crate::allowed::AllowedIp;
use crate::counters::{Live, PeerCounters};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};

/// How long a replaced tunnel keeps decrypting after its successor took over.
const PREV_LIFETIME: Duration = Duration::from_secs(30);

/// The first byte of a WireGuard data message.
const DATA_MESSAGE: u8 = 4;
/// A data message's header and tag.
const DATA_OVERHEAD: usize = 32;

/// Tunnels per peer id: active, next and prev always have distinct generations.
pub(crate) const GENERATIONS: u32 = 4;

/// What the configuration says about a peer ([`Device::add_peer`](crate::Device::add_peer)).
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The peer's static public key: its identity.
    pub public_key: PublicKey,
    /// A pre-shared key mixed into the handshake, if any.
    pub preshared_key: Option<PresharedKey>,
    /// Where to send its datagrams. Without one the peer can only be answered, once it has
    /// sent an authenticated packet; with one, it is updated to where the peer's
    /// authenticated packets come from (roaming), as WireGuard does.
    pub endpoint: Option<SocketAddr>,
    /// The prefixes it may send from and that route packets to it.
    pub allowed_ips: Vec<AllowedIp>,
    /// Send a keepalive every so many seconds (to keep NAT mappings open).
    pub persistent_keepalive: Option<u16>,
}

impl PeerConfig {
    /// A peer with no pre-shared key, endpoint, allowed IPs or keepalive.
    pub fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            preshared_key: None,
            endpoint: None,
            allowed_ips: Vec::new(),
            persistent_keepalive: None,
        }
    }
}

/// Which message a datagram for this peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Init,
    Response,
    Cookie,
    Data,
}

/// Where a worker puts what a peer's tunnel produced.
pub(crate) trait Output {
    /// A datagram to send.
    fn network(&mut self, datagram: &[u8], to: SocketAddr);
    /// A decrypted packet for the TUN device.
    fn tunnel(&mut self, packet: &[u8]);
}

struct Slot {
    index: u32,
    tunn: Box<Tunn>,
}

impl Slot {
    fn established(&self) -> bool {
        self.tunn.time_since_last_handshake().is_some()
    }
}

struct State {
    endpoint: Option<SocketAddr>,
    allowed: Vec<AllowedIp>,
    psk: Option<PresharedKey>,
    keepalive: Option<u16>,
    generation: u32,
    active: Slot,
    next: Option<Slot>,
    prev: Option<(Slot, Instant)>,
}

/// The keys a device makes its tunnels with.
pub(crate) struct Keys<'a> {
    pub private: &'a PrivateKey,
    pub rate_limiter: &'a Arc<RateLimiter>,
}

/// A configured peer.
pub(crate) struct Peer {
    pub key: PublicKey,
    pub id: u32,
    state: Mutex<State>,
    last_handshake_nanos: AtomicU64,
    handshakes: AtomicU64,
    tx_bytes: AtomicU64,
    rx_bytes: AtomicU64,
}

fn new_tunn(
    keys: &Keys<'_>,
    peer: &PublicKey,
    psk: Option<&PresharedKey>,
    keepalive: Option<u16>,
    index: u32,
) -> Box<Tunn> {
    Box::new(Tunn::new(
        keys.private.secret().clone(),
        peer.inner(),
        psk.map(PresharedKey::bytes),
        keepalive,
        index,
        Some(keys.rate_limiter.clone()),
    ))
}

impl Peer {
    pub(crate) fn new(keys: &Keys<'_>, id: u32, config: &PeerConfig) -> Self {
        let index = id * GENERATIONS;
        let tunn = new_tunn(
            keys,
            &config.public_key,
            config.preshared_key.as_ref(),
            config.persistent_keepalive,
            index,
        );
        Self {
            key: config.public_key,
            id,
            state: Mutex::new(State {
                endpoint: config.endpoint,
                allowed: config.allowed_ips.clone(),
                psk: config.preshared_key.clone(),
                keepalive: config.persistent_keepalive,
                generation: 0,
                active: Slot { index, tunn },
                next: None,
                prev: None,
            }),
            last_handshake_nanos: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A worker that panicked mid-packet leaves a tunnel boringtun keeps consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes endpoint, allowed IPs and keepalive; a changed pre-shared key starts a
    /// rotation (see [`set_psk`](Self::set_psk)).
    pub(crate) fn update(
        &self,
        keys: &Keys<'_>,
        config: &PeerConfig,
        scratch: &mut [u8],
    ) -> Option<(Vec<u8>, SocketAddr)> {
        {
            let mut s = self.lock();
            if config.endpoint.is_some() {
                s.endpoint = config.endpoint;
            }
            s.allowed = config.allowed_ips.clone();
            s.keepalive = config.persistent_keepalive;
        }
        self.set_psk(keys, config.preshared_key.clone(), scratch)
    }

    /// Starts using `psk`: a new tunnel with it, whose handshake starts now; the returned
    /// initiation is to be sent. Traffic goes on through the current session until the new
    /// one is confirmed. Setting the key in use already does nothing.
    pub(crate) fn set_psk(
        &self,
        keys: &Keys<'_>,
        psk: Option<PresharedKey>,
        scratch: &mut [u8],
    ) -> Option<(Vec<u8>, SocketAddr)> {
        let mut s = self.lock();
        if s.psk == psk {
            return None;
        }
        // A generation whose index neither the active nor the previous tunnel holds (the
        // pending `next`, if any, is replaced).
        let index = loop {
            s.generation = s.generation.wrapping_add(1);
            let index = self.id * GENERATIONS + s.generation % GENERATIONS;
            let taken =
                index == s.active.index || s.prev.as_ref().is_some_and(|(p, _)| p.index == index);
            if !taken {
                break index;
            }
        };
        let mut tunn = new_tunn(keys, &self.key, psk.as_ref(), s.keepalive, index);
        s.psk = psk;
        tracing::debug!(peer = %self.key, index, "pre-shared key changed: new handshake");
        let init = match tunn.format_handshake_initiation(scratch, true) {
            TunnResult::WriteToNetwork(p) => s.endpoint.map(|e| (p.to_vec(), e)),
            _ => None,
        };
        s.next = Some(Slot { index, tunn });
        init
    }

    /// Encrypts `packet` into `dst`; answers the bytes to send and where, if any (the packet
    /// itself, or a handshake initiation while it waits in the tunnel's queue).
    pub(crate) fn encapsulate(
        &self,
        packet: &[u8],
        dst: &mut [u8],
        live: &Live,
    ) -> Option<(usize, SocketAddr)> {
        let mut s = self.lock();
        let Some(endpoint) = s.endpoint else {
            Live::add(&live.dropped, 1);
            return None;
        };
        let use_next = !s.active.established() && s.next.is_some();
        let slot = match (use_next, s.next.as_mut()) {
            (true, Some(next)) => next,
            _ => &mut s.active,
        };
        match slot.tunn.encapsulate(packet, dst) {
            TunnResult::WriteToNetwork(out) => {
                // Or a handshake initiation, the packet waiting in the tunnel's queue.
                self.count_sent(out, live);
                Some((out.len(), endpoint))
            }
            TunnResult::Err(e) => {
                tracing::debug!(peer = %self.key, error = ?e, "encapsulate");
                Live::add(&live.dropped, 1);
                None
            }
            _ => None,
        }
    }

    /// Handles a datagram from `from` addressed to this peer's tunnel `index` (`None`: a
    /// handshake initiation, for the newest tunnel).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn receive(
        &self,
        kind: Kind,
        index: Option<u32>,
        from: SocketAddr,
        datagram: &[u8],
        scratch: &mut [u8],
        out: &mut impl Output,
        live: &Live,
    ) {
        let mut s = self.lock();
        let s = &mut *s;
        let which = match index {
            None if s.next.is_some() => Which::Next,
            None => Which::Active,
            Some(i) if i == s.active.index => Which::Active,
            Some(i) if s.next.as_ref().is_some_and(|n| n.index == i) => Which::Next,
            Some(i) if s.prev.as_ref().is_some_and(|(p, _)| p.index == i) => Which::Prev,
            Some(_) => {
                Live::add(&live.unknown_peer, 1);
                return;
            }
        };
        let slot = match which {
            Which::Active => &mut s.active,
            Which::Next => match s.next.as_mut() {
                Some(n) => n,
                None => return,
            },
            Which::Prev => match s.prev.as_mut() {
                Some((p, _)) => p,
                None => return,
            },
        };
        let mut authenticated = false;
        match slot.tunn.decapsulate(Some(from.ip()), datagram, scratch) {
            TunnResult::Done => authenticated = kind != Kind::Init,
            TunnResult::Err(e) => count_error(kind, e, live),
            TunnResult::WriteToNetwork(p) => {
                authenticated = true;
                out.network(p, from);
                if matches!(kind, Kind::Init | Kind::Response) {
                    self.handshake_done(live);
                }
                // Packets queued while the handshake ran go now.
                while let TunnResult::WriteToNetwork(p) = slot.tunn.decapsulate(None, &[], scratch)
                {
                    self.count_sent(p, live);
                    out.network(p, from);
                }
            }
            TunnResult::WriteToTunnelV4(p, src) => {
                authenticated = true;
                self.deliver(p, src.into(), &s.allowed, out, live);
            }
            TunnResult::WriteToTunnelV6(p, src) => {
                authenticated = true;
                self.deliver(p, src.into(), &s.allowed, out, live);
            }
        }
        if authenticated && kind != Kind::Cookie {
            s.endpoint = Some(from);
        }
        if which == Which::Next {
            promote(s, &self.key);
        }
    }

    /// Counts a datagram about to be sent if it carries a packet (a data message, not a
    /// keepalive or handshake): boringtun adds no padding, so the packet is the datagram less
    /// the data message's overhead.
    fn count_sent(&self, datagram: &[u8], live: &Live) {
        if datagram.first() == Some(&DATA_MESSAGE) && datagram.len() > DATA_OVERHEAD {
            let bytes = (datagram.len() - DATA_OVERHEAD) as u64;
            Live::add(&live.tx_packets, 1);
            Live::add(&live.tx_bytes, bytes);
            self.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    fn deliver(
        &self,
        packet: &[u8],
        src: IpAddr,
        allowed: &[AllowedIp],
        out: &mut impl Output,
        live: &Live,
    ) {
        if !allowed.iter().any(|a| a.contains(src)) {
            Live::add(&live.source_not_allowed, 1);
            return;
        }
        Live::add(&live.rx_packets, 1);
        Live::add(&live.rx_bytes, packet.len() as u64);
        self.rx_bytes
            .fetch_add(packet.len() as u64, Ordering::Relaxed);
        out.tunnel(packet);
    }

    fn handshake_done(&self, live: &Live) {
        Live::add(&live.handshakes, 1);
        self.handshakes.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        self.last_handshake_nanos.store(now, Ordering::Relaxed);
    }

    /// Runs the tunnels' timers (retransmissions, keepalives, rekeying, expiry); datagrams to
    /// send go to `out`.
    pub(crate) fn tick(&self, scratch: &mut [u8], out: &mut impl Output) {
        let mut s = self.lock();
        let s = &mut *s;
        if s.prev
            .as_ref()
            .is_some_and(|(_, since)| since.elapsed() > PREV_LIFETIME)
        {
            s.prev = None;
        }
        let endpoint = s.endpoint;
        let mut run = |slot: &mut Slot| match slot.tunn.update_timers(scratch) {
            TunnResult::WriteToNetwork(p) => {
                if let Some(e) = endpoint {
                    out.network(p, e);
                }
            }
            // A handshake that was given up on: the next packet starts another.
            TunnResult::Err(WireGuardError::ConnectionExpired) => {}
            TunnResult::Err(e) => tracing::debug!(error = ?e, "timers"),
            _ => {}
        };
        run(&mut s.active);
        if let Some(next) = s.next.as_mut() {
            run(next);
        }
    }

    /// This peer's counters.
    pub(crate) fn counters(&self) -> PeerCounters {
        let nanos = self.last_handshake_nanos.load(Ordering::Relaxed);
        let (endpoint, rotation_pending) = {
            let s = self.lock();
            (s.endpoint, s.next.is_some())
        };
        PeerCounters {
            public_key: self.key,
            endpoint,
            rotation_pending,
            last_handshake: (nanos != 0).then(|| UNIX_EPOCH + Duration::from_nanos(nanos)),
            handshakes: self.handshakes.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Active,
    Next,
    Prev,
}

/// Makes `next` the active tunnel once it has a confirmed session.
fn promote(s: &mut State, key: &PublicKey) {
    if !s.next.as_ref().is_some_and(Slot::established) {
        return;
    }
    if let Some(next) = s.next.take() {
        tracing::debug!(peer = %key, index = next.index, "new session took over");
        let old = std::mem::replace(&mut s.active, next);
        s.prev = Some((old, Instant::now()));
    }
}

fn count_error(kind: Kind, e: WireGuardError, live: &Live) {
    use WireGuardError as E;
    let counter = match (kind, &e) {
        (Kind::Data, E::InvalidAeadTag) => &live.bad_mac,
        (Kind::Data, E::DuplicateCounter | E::InvalidCounter) => &live.replays,
        (Kind::Data, E::NoCurrentSession | E::WrongIndex) => &live.unknown_peer,
        (_, E::InvalidMac | E::InvalidPacket | E::IncorrectPacketLength) => &live.malformed,
        (_, E::UnderLoad) => &live.dropped,
        (Kind::Data, _) => &live.malformed,
        _ => &live.handshake_failures,
    };
    tracing::trace!(?kind, error = ?e, "datagram dropped");
    Live::add(counter, 1);
}
