//! # plexus-wg — a userspace WireGuard data plane
//!
//! For `-o encrypted` overlay networks on hosts without the WireGuard module: a
//! [`Device`] is a TUN interface in a chosen network namespace, one UDP socket (in the same
//! namespace or the underlay's), and peers, each with a boringtun Noise tunnel
//! (`boringtun::noise::Tunn`; this crate implements no cryptography). Packets the kernel
//! routes to the interface are encrypted to the peer whose allowed IPs hold their destination;
//! datagrams from peers are decrypted and delivered only if their inner source is in that
//! peer's allowed IPs (cryptokey routing).
//!
//! - [`keys`]: [`PrivateKey`], [`PublicKey`], [`PresharedKey`] in `wg`'s base64;
//! - [`AllowedIp`]: a prefix;
//! - [`Device`]: [`Device::create`], then [`add_peer`](Device::add_peer),
//!   [`update_peer`](Device::update_peer), [`remove_peer`](Device::remove_peer),
//!   [`set_preshared_key`](Device::set_preshared_key) at run time, and
//!   [`counters`](Device::counters);
//! - the I/O: threads per device (TUN → UDP, one per TUN queue; UDP → TUN; timers every
//!   100 ms) with `recvmmsg`/`sendmmsg` batches and buffers allocated once.
//!
//! A pre-shared key rotation starts a handshake with the new key at once and keeps the
//! current session for traffic until the new one is confirmed, so no packet waits or is
//! lost; packets sent before a peer's first handshake wait in its tunnel's queue.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::net::SocketAddr;
//! use plexus_sys::netns::Netns;
//! use plexus_wg::{Device, DeviceConfig, PeerConfig, PrivateKey, PublicKey};
//! let mut config = DeviceConfig::new("wg0", PrivateKey::generate(), Netns::host()?);
//! config.listen = SocketAddr::from(([0, 0, 0, 0], 51820));
//! config.addresses = vec![("10.99.0.1".parse()?, 24)];
//! let device = Device::create(config).await?;
//! let mut peer = PeerConfig::new(PublicKey::from_base64("hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=")?);
//! peer.endpoint = Some("192.0.2.2:51820".parse()?);
//! peer.allowed_ips = vec!["10.99.0.2/32".parse()?];
//! device.add_peer(peer)?;
//! println!("{} peers, {} handshakes", device.peers().len(), device.counters().handshakes);
//! # Ok(()) }
//! ```
//!
//! Not here (yet): GSO/GRO offloads (`IFF_VNET_HDR`, UDP GSO): each packet is one read or
//! write on the TUN device; one UDP worker decrypts everything.

#![warn(missing_docs)]

mod allowed;
mod counters;
mod device;
mod error;
mod io;
pub mod keys;
mod mmsg;
mod peer;

pub use allowed::AllowedIp;
pub use counters::{Counters, PeerCounters};
pub use device::{Device, DeviceConfig, DEFAULT_MTU, MAX_MTU, MAX_QUEUES, MIN_MTU};
pub use error::{Result, WgError};
pub use keys::{PresharedKey, PrivateKey, PublicKey};
pub use peer::PeerConfig;
