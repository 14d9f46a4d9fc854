//! The workers: three threads per device, each batching its system calls.
//!
//! - `tun` (one per TUN queue): reads up to [`BATCH`] packets from the TUN queue per wake-up, encrypts each to
//!   its peer (longest-prefix match on the destination) straight into a send batch, and
//!   sends the batch with one `sendmmsg`;
//! - `udp`: receives up to [`BATCH`] datagrams with one `recvmmsg`, hands each to its peer
//!   (by receiver index, or by the static key inside a handshake initiation), writes the
//!   decrypted packets to the TUN queue and sends answers (handshake responses, queued
//!   packets) in one batch;
//! - `timers`: runs every peer's timers every [`TICK`] (retransmissions, keepalives,
//!   rekeying) and resets the handshake rate limiter.
//!
//! Buffers are allocated once per worker; the hot paths allocate nothing. Workers wake at
//! least every [`TICK`] to notice that the device is being dropped.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};

use crate::counters::Live;
use crate::device::{udp_fd, Peers, Shared};
use crate::keys::PublicKey;
use crate::mmsg::Batch;
use crate::peer::{Kind, Output, GENERATIONS};

/// Datagrams or packets moved per system call at most.
pub(crate) const BATCH: usize = 32;
/// The timer period, and the longest a worker sleeps.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// A received datagram's buffer: the largest UDP payload, so a peer with a larger MTU is
/// still understood.
const RX_SLOT: usize = 65_536;
/// WireGuard's data message overhead (header and tag).
const OVERHEAD: usize = 32;
/// The socket buffers asked for: a burst of a few thousand full-size datagrams.
const SOCKET_BUFFER: libc::c_int = 4 << 20;

/// Enlarges the socket's buffers (beyond the sysctl limits when privileged).
pub(crate) fn tune_socket(socket: &std::net::UdpSocket) {
    let fd = socket.as_raw_fd();
    for (forced, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let set = |opt| {
            // SAFETY: an int option with its size.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&SOCKET_BUFFER as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(forced) != 0 && set(plain) != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "socket buffer size");
        }
    }
}

/// Waits until `fd` is readable or [`TICK`] passes.
fn wait_readable(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, TICK.as_millis() as libc::c_int) };
    n > 0
}

fn stopped(shared: &Shared) -> bool {
    shared.stop.load(Ordering::Relaxed)
}

/// The size of a send slot: an encrypted packet of the MTU, or a handshake message.
fn tx_slot(mtu: u32) -> usize {
    (mtu as usize + OVERHEAD + 64).max(256)
}

/// The queue decrypted packets are written to (any queue injects into the stack).
fn first_queue(shared: &Shared) -> RawFd {
    shared.tun.first().map(|q| q.as_raw_fd()).unwrap_or(-1)
}

/// Writes one packet to the TUN queue.
fn write_tun(fd: RawFd, packet: &[u8], live: &Live) {
    // SAFETY: `packet` is valid for its length during the call.
    let n = unsafe { libc::write(fd, packet.as_ptr().cast(), packet.len()) };
    if n < 0 {
        tracing::trace!(error = %std::io::Error::last_os_error(), "tun write");
        Live::add(&live.dropped, 1);
    }
}

/// TUN queue `queue` → peers → UDP.
pub(crate) fn tun_worker(shared: Arc<Shared>, queue: usize) {
    let Some(tun) = shared.tun.get(queue).map(|q| q.as_raw_fd()) else {
        return;
    };
    let udp = udp_fd(&shared);
    let mut packet = vec![0u8; shared.mtu as usize + 64];
    let mut batch = Batch::new(BATCH, tx_slot(shared.mtu));
    while !stopped(&shared) {
        if !wait_readable(tun) {
            continue;
        }
        {
            let peers = shared.peers();
            while !batch.is_full() {
                // SAFETY: `packet` is valid for its length during the call.
                let n = unsafe { libc::read(tun, packet.as_mut_ptr().cast(), packet.len()) };
                if n <= 0 {
                    break;
                }
                let packet = &packet[..n as usize];
                let Some(peer) = Tunn::dst_address(packet).and_then(|d| peers.routes.lookup(d))
                else {
                    Live::add(&shared.live.no_route, 1);
                    continue;
                };
                if let Some((len, to)) = peer.encapsulate(packet, batch.next_buf(), &shared.live) {
                    batch.commit(len, to);
                }
            }
        }
        if batch.len() > 0 {
            let refused = batch.send(udp);
            Live::add(&shared.live.send_errors, refused as u64);
        }
    }
}

/// Collects what peers produce: datagrams into a batch (sent when full), packets to the TUN.
struct Sink<'a> {
    tx: &'a mut Batch,
    udp: RawFd,
    tun: RawFd,
    live: &'a Live,
}

impl Sink<'_> {
    fn flush(&mut self) {
        if self.tx.len() > 0 {
            let refused = self.tx.send(self.udp);
            Live::add(&self.live.send_errors, refused as u64);
        }
    }
}

impl Output for Sink<'_> {
    fn network(&mut self, datagram: &[u8], to: SocketAddr) {
        if self.tx.is_full() {
            self.flush();
        }
        if !self.tx.push(datagram, to) {
            Live::add(&self.live.dropped, 1);
        }
    }

    fn tunnel(&mut self, packet: &[u8]) {
        write_tun(self.tun, packet, self.live);
    }
}

/// UDP → peers → TUN (and answers back to UDP).
pub(crate) fn udp_worker(shared: Arc<Shared>) {
    let udp = udp_fd(&shared);
    let mut rx = Batch::new(BATCH, RX_SLOT);
    let mut tx = Batch::new(BATCH, tx_slot(shared.mtu));
    let mut scratch = vec![0u8; RX_SLOT];
    while !stopped(&shared) {
        if !wait_readable(udp) {
            continue;
        }
        let n = match rx.recv(udp) {
            Ok(n) => n,
            Err(e) => {
                // ICMP errors of earlier sends surface here; the socket goes on.
                tracing::trace!(error = %e, "recvmmsg");
                continue;
            }
        };
        let mut sink = Sink {
            tx: &mut tx,
            udp,
            tun: first_queue(&shared),
            live: &shared.live,
        };
        {
            let peers = shared.peers();
            for i in 0..n {
                let (datagram, from, truncated) = rx.received(i);
                let Some(from) = from else { continue };
                if truncated {
                    Live::add(&shared.live.malformed, 1);
                    continue;
                }
                dispatch(&shared, &peers, datagram, from, &mut scratch, &mut sink);
            }
        }
        sink.flush();
    }
}

/// Hands one datagram to its peer.
fn dispatch(
    shared: &Shared,
    peers: &Peers,
    datagram: &[u8],
    from: SocketAddr,
    scratch: &mut [u8],
    sink: &mut Sink<'_>,
) {
    let live = &shared.live;
    let (kind, receiver) = match Tunn::parse_incoming_packet(datagram) {
        Ok(Packet::HandshakeInit(_)) => (Kind::Init, None),
        Ok(Packet::HandshakeResponse(p)) => (Kind::Response, Some(p.receiver_idx)),
        Ok(Packet::PacketCookieReply(p)) => (Kind::Cookie, Some(p.receiver_idx)),
        Ok(Packet::PacketData(p)) => (Kind::Data, Some(p.receiver_idx)),
        Err(_) => {
            Live::add(&live.malformed, 1);
            return;
        }
    };
    let peer = match receiver {
        Some(idx) => peers.by_id.get(&((idx >> 8) / GENERATIONS)),
        None => {
            // Who sent an initiation is inside it, encrypted: check its MAC (and the load)
            // before paying for the Diffie-Hellman that reveals it.
            let mut cookie = [0u8; 64];
            let init =
                match shared
                    .rate_limiter
                    .verify_packet(Some(from.ip()), datagram, &mut cookie)
                {
                    Ok(Packet::HandshakeInit(init)) => init,
                    Ok(_) => return,
                    Err(TunnResult::WriteToNetwork(reply)) => {
                        sink.network(reply, from);
                        return;
                    }
                    Err(TunnResult::Err(WireGuardError::InvalidMac)) => {
                        Live::add(&live.malformed, 1);
                        return;
                    }
                    Err(_) => {
                        Live::add(&live.dropped, 1);
                        return;
                    }
                };
            match parse_handshake_anon(
                shared.private_key.secret(),
                &shared.public_key.inner(),
                &init,
            ) {
                Ok(half) => peers
                    .by_key
                    .get(&PublicKey::from_bytes(half.peer_static_public)),
                Err(_) => None,
            }
        }
    };
    match peer {
        Some(peer) => peer.receive(
            kind,
            receiver.map(|idx| idx >> 8),
            from,
            datagram,
            scratch,
            sink,
            live,
        ),
        None => Live::add(&live.unknown_peer, 1),
    }
}

/// Every peer's timers, every [`TICK`].
pub(crate) fn timer_worker(shared: Arc<Shared>) {
    let udp = udp_fd(&shared);
    let mut tx = Batch::new(BATCH, tx_slot(shared.mtu));
    let mut scratch = vec![0u8; tx_slot(shared.mtu)];
    let mut peers = Vec::new();
    while !stopped(&shared) {
        std::thread::sleep(TICK);
        shared.rate_limiter.reset_count();
        peers.clear();
        peers.extend(shared.peers().by_key.values().cloned());
        let mut sink = Sink {
            tx: &mut tx,
            udp,
            tun: first_queue(&shared),
            live: &shared.live,
        };
        for peer in &peers {
            peer.tick(&mut scratch, &mut sink);
        }
        sink.flush();
    }
}
