//! The device: a TUN interface, a UDP socket, the peers, and the worker threads between them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;

use boringtun::noise::rate_limiter::RateLimiter;
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;
use plexus_sys::tun::{Tun, TunSpec};

use crate::allowed::PrefixTable;
use crate::counters::{Counters, Live};
use crate::error::{Result, WgError};
use crate::io;
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::peer::{Keys, Peer, PeerConfig, GENERATIONS};

/// The default MTU: 1500 less WireGuard's largest overhead (IPv6 underlay: 40 + 8 + 32).
pub const DEFAULT_MTU: u32 = 1420;
/// The smallest MTU accepted (IPv4's minimum datagram a host must take).
pub const MIN_MTU: u32 = 576;
/// The largest MTU accepted: an encrypted packet must still fit in one IPv6 UDP datagram.
pub const MAX_MTU: u32 = 65_535 - 40 - 8 - 32;

/// The most TUN queues (and TUN workers) a device takes.
pub const MAX_QUEUES: usize = 64;

/// Handshake messages a device takes per second before it asks for cookies (under load).
/// Each initiation passes the limiter twice (device, then tunnel), hence twice WireGuard's.
const HANDSHAKE_RATE_LIMIT: u64 = 200;

/// Peer ids fit in `Tunn`'s 24-bit index with the generation bits.
const MAX_PEER_ID: u32 = (1 << 24) / GENERATIONS;

/// How to make a [`Device`].
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The TUN interface's name (at most 15 bytes).
    pub name: String,
    /// This device's static private key.
    pub private_key: PrivateKey,
    /// The address the UDP socket binds (`0.0.0.0:51820`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// The interface's MTU, [`MIN_MTU`]..=[`MAX_MTU`]; [`DEFAULT_MTU`] by default.
    pub mtu: u32,
    /// Addresses given to the interface, with their prefix lengths (the connected routes
    /// follow from them).
    pub addresses: Vec<(IpAddr, u8)>,
    /// The namespace the interface is made in.
    pub netns: Netns,
    /// The namespace the UDP socket is bound in (the underlay); `None`: `netns`.
    pub udp_netns: Option<Netns>,
    /// TUN queues, each read by its own worker thread (above one the device is multi-queue
    /// and the kernel spreads flows over them); 1..=[`MAX_QUEUES`], 1 by default.
    pub queues: usize,
}

impl DeviceConfig {
    /// A device `name` in `netns` with the default MTU, listening on a free port of every
    /// IPv4 address, with no address.
    pub fn new(name: impl Into<String>, private_key: PrivateKey, netns: Netns) -> Self {
        Self {
            name: name.into(),
            private_key,
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            mtu: DEFAULT_MTU,
            addresses: Vec::new(),
            netns,
            udp_netns: None,
            queues: 1,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(WgError::Invalid {
                field: "mtu",
                value: self.mtu.to_string(),
                reason: "must be between 576 and 65455",
            });
        }
        if !(1..=MAX_QUEUES).contains(&self.queues) {
            return Err(WgError::Invalid {
                field: "queues",
                value: self.queues.to_string(),
                reason: "must be between 1 and 64",
            });
        }
        plexus_sys::rtnl::check_ifname("tun name", &self.name).map_err(|source| WgError::Sys {
            device: self.name.clone(),
            source,
        })?;
        for (addr, prefix) in &self.addresses {
            let max = if addr.is_ipv4() { 32 } else { 128 };
            if *prefix > max {
                return Err(WgError::Invalid {
                    field: "address",
                    value: format!("{addr}/{prefix}"),
                    reason: "prefix length is longer than the address",
                });
            }
        }
        Ok(())
    }
}

/// A worker thread's body.
type WorkerBody = Box<dyn FnOnce() + Send>;

/// The peers, by key, by id and by allowed IP.
#[derive(Default)]
pub(crate) struct Peers {
    pub by_key: HashMap<PublicKey, Arc<Peer>>,
    pub by_id: HashMap<u32, Arc<Peer>>,
    pub routes: PrefixTable<Arc<Peer>>,
    next_id: u32,
}

/// What the workers and the handle share.
pub(crate) struct Shared {
    pub name: String,
    pub private_key: PrivateKey,
    pub public_key: PublicKey,
    pub rate_limiter: Arc<RateLimiter>,
    /// The TUN queues; decrypted packets are written to the first.
    pub tun: Vec<OwnedFd>,
    pub udp: UdpSocket,
    pub mtu: u32,
    pub peers: RwLock<Peers>,
    pub live: Live,
    pub stop: AtomicBool,
}

impl Shared {
    pub(crate) fn peers(&self) -> RwLockReadGuard<'_, Peers> {
        self.peers.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn peers_mut(&self) -> RwLockWriteGuard<'_, Peers> {
        self.peers.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn keys(&self) -> Keys<'_> {
        Keys {
            private: &self.private_key,
            rate_limiter: &self.rate_limiter,
        }
    }

    /// Sends one datagram now (outside the workers' batches: control operations).
    fn send_now(&self, datagram: &[u8], to: SocketAddr) {
        if let Err(e) = self.udp.send_to(datagram, to) {
            tracing::debug!(device = %self.name, %to, error = %e, "send");
            Live::add(&self.live.send_errors, 1);
        }
    }
}

/// A userspace WireGuard interface: packets routed to the TUN device are encrypted to the
/// peer whose allowed IPs hold their destination and sent over UDP; datagrams from peers are
/// decrypted and written to the TUN device if their inner source is in the sender's allowed
/// IPs. Dropping it stops the workers and removes the interface.
pub struct Device {
    shared: Arc<Shared>,
    listen: SocketAddr,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.shared.name)
            .field("public_key", &self.shared.public_key)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Makes the interface in `config.netns` (MTU, addresses, up), binds the UDP socket and
    /// starts the workers. Must be called within a tokio runtime (the interface is configured
    /// over rtnetlink). On error nothing is left behind: the interface goes with its queue.
    pub async fn create(config: DeviceConfig) -> Result<Self> {
        config.validate()?;
        let name = config.name.clone();
        let sys = |source| WgError::Sys {
            device: name.clone(),
            source,
        };
        let spec = TunSpec {
            queues: config.queues,
            ..TunSpec::new(&config.name)
        };
        let tun = Tun::create(&config.netns, &spec).map_err(sys)?;
        let rtnl = Rtnl::connect(&config.netns).await.map_err(sys)?;
        let link = rtnl.require_link(&config.name).await.map_err(sys)?;
        rtnl.set_mtu(link.index, config.mtu).await.map_err(sys)?;
        for (addr, prefix) in &config.addresses {
            rtnl.add_address(link.index, *addr, *prefix)
                .await
                .map_err(sys)?;
        }
        rtnl.set_up(link.index).await.map_err(sys)?;
        let udp_ns = config.udp_netns.as_ref().unwrap_or(&config.netns);
        let listen = config.listen;
        let socket_err = |source| WgError::Socket {
            device: name.clone(),
            listen,
            source,
        };
        let udp = udp_ns
            .run(move || UdpSocket::bind(listen))
            .map_err(sys)?
            .map_err(socket_err)?;
        io::tune_socket(&udp);
        let local = udp.local_addr().map_err(socket_err)?;
        let queues = tun.into_queues();
        if queues.is_empty() {
            return Err(sys(plexus_sys::SysError::NotFound {
                what: format!("queue of tun {:?}", config.name),
            }));
        }
        let public_key = config.private_key.public_key();
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            rate_limiter: Arc::new(RateLimiter::new(&public_key.inner(), HANDSHAKE_RATE_LIMIT)),
            private_key: config.private_key,
            public_key,
            tun: queues,
            udp,
            mtu: config.mtu,
            peers: RwLock::new(Peers {
                next_id: rand_id(),
                ..Default::default()
            }),
            live: Live::default(),
            stop: AtomicBool::new(false),
        });
        let mut device = Self {
            shared: shared.clone(),
            listen: local,
            workers: Vec::new(),
        };
        // On error the device is dropped: started workers stop, the interface goes.
        let mut workers: Vec<(String, &'static str, WorkerBody)> = Vec::new();
        for q in 0..shared.tun.len() {
            let s = shared.clone();
            workers.push((
                format!("wg-tun{q}-{}", config.name),
                "tun",
                Box::new(move || io::tun_worker(s, q)),
            ));
        }
        let s = shared.clone();
        workers.push((
            format!("wg-udp-{}", config.name),
            "udp",
            Box::new(move || io::udp_worker(s)),
        ));
        let s = shared.clone();
        workers.push((
            format!("wg-timers-{}", config.name),
            "timers",
            Box::new(move || io::timer_worker(s)),
        ));
        for (thread, worker, body) in workers {
            let handle = std::thread::Builder::new()
                .name(thread)
                .spawn(body)
                .map_err(|source| WgError::Worker {
                    device: config.name.clone(),
                    worker,
                    source,
                })?;
            device.workers.push(handle);
        }
        tracing::info!(device = %config.name, listen = %local, public_key = %public_key, "wireguard device up");
        Ok(device)
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// This device's public key.
    pub fn public_key(&self) -> PublicKey {
        self.shared.public_key
    }

    /// The UDP socket's address (the port chosen when the configuration said 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The interface's MTU.
    pub fn mtu(&self) -> u32 {
        self.shared.mtu
    }

    /// Adds a peer. Errors, changing nothing: the peer exists, it is this device's own key,
    /// or one of its allowed IPs is another peer's.
    pub fn add_peer(&self, config: PeerConfig) -> Result<()> {
        if config.public_key == self.shared.public_key {
            return Err(WgError::Key {
                field: "peer public key",
                reason: "is this device's own public key".into(),
            });
        }
        let mut peers = self.shared.peers_mut();
        if peers.by_key.contains_key(&config.public_key) {
            return Err(WgError::PeerExists {
                peer: config.public_key.to_string(),
            });
        }
        check_routes(&peers, &config)?;
        let id = free_id(&mut peers);
        let peer = Arc::new(Peer::new(&self.shared.keys(), id, &config));
        for prefix in &config.allowed_ips {
            peers.routes.insert(*prefix, peer.clone());
        }
        peers.by_id.insert(id, peer.clone());
        peers.by_key.insert(config.public_key, peer);
        tracing::debug!(device = %self.shared.name, peer = %config.public_key, "peer added");
        Ok(())
    }

    /// Changes a peer: endpoint (kept if `None`), allowed IPs, keepalive and pre-shared key
    /// (a change starts a rotation, as [`set_preshared_key`](Self::set_preshared_key)).
    pub fn update_peer(&self, config: PeerConfig) -> Result<()> {
        let init = {
            let mut peers = self.shared.peers_mut();
            let peer = peers
                .by_key
                .get(&config.public_key)
                .cloned()
                .ok_or_else(|| WgError::PeerNotFound {
                    peer: config.public_key.to_string(),
                })?;
            check_routes(&peers, &config)?;
            peers.routes.retain(|p| !Arc::ptr_eq(p, &peer));
            for prefix in &config.allowed_ips {
                peers.routes.insert(*prefix, peer.clone());
            }
            let mut scratch = [0u8; 256];
            peer.update(&self.shared.keys(), &config, &mut scratch)
        };
        if let Some((init, to)) = init {
            self.shared.send_now(&init, to);
        }
        Ok(())
    }

    /// Removes a peer: its packets are refused from now on and nothing routes to it.
    pub fn remove_peer(&self, key: &PublicKey) -> Result<()> {
        let mut peers = self.shared.peers_mut();
        let peer = peers
            .by_key
            .remove(key)
            .ok_or_else(|| WgError::PeerNotFound {
                peer: key.to_string(),
            })?;
        peers.by_id.remove(&peer.id);
        peers.routes.retain(|p| !Arc::ptr_eq(p, &peer));
        tracing::debug!(device = %self.shared.name, peer = %key, "peer removed");
        Ok(())
    }

    /// Sets (or clears) a peer's pre-shared key. It takes effect with a handshake started
    /// now; until that handshake is confirmed traffic goes on through the current session,
    /// so a rotation (both sides set the new key) loses no packet.
    pub fn set_preshared_key(&self, key: &PublicKey, psk: Option<PresharedKey>) -> Result<()> {
        let peer = self
            .shared
            .peers()
            .by_key
            .get(key)
            .cloned()
            .ok_or_else(|| WgError::PeerNotFound {
                peer: key.to_string(),
            })?;
        let mut scratch = [0u8; 256];
        if let Some((init, to)) = peer.set_psk(&self.shared.keys(), psk, &mut scratch) {
            self.shared.send_now(&init, to);
        }
        Ok(())
    }

    /// The public keys of the configured peers.
    pub fn peers(&self) -> Vec<PublicKey> {
        self.shared.peers().by_key.keys().copied().collect()
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        let peers = self
            .shared
            .peers()
            .by_key
            .values()
            .map(|p| p.counters())
            .collect();
        self.shared.live.snapshot(peers)
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        tracing::info!(device = %self.shared.name, "wireguard device down");
    }
}

fn check_routes(peers: &Peers, config: &PeerConfig) -> Result<()> {
    for prefix in &config.allowed_ips {
        if let Some(owner) = peers.routes.get(prefix) {
            if owner.key != config.public_key {
                return Err(WgError::AllowedIpTaken {
                    prefix: prefix.to_string(),
                    peer: config.public_key.to_string(),
                    owner: owner.key.to_string(),
                });
            }
        }
    }
    Ok(())
}

fn rand_id() -> u32 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u32() % MAX_PEER_ID
}

fn free_id(peers: &mut Peers) -> u32 {
    loop {
        let id = peers.next_id % MAX_PEER_ID;
        peers.next_id = peers.next_id.wrapping_add(1);
        if !peers.by_id.contains_key(&id) {
            return id;
        }
    }
}

/// The UDP socket's file descriptor.
pub(crate) fn udp_fd(shared: &Shared) -> i32 {
    shared.udp.as_raw_fd()
}
