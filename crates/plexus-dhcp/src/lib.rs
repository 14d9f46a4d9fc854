//! # plexus-dhcp — DHCP address management for Plexus (`--ipam-driver dhcp`)
//!
//! Each endpoint of a network whose IPAM driver is `dhcp` (a macvlan network on a host
//! interface's LAN) gets its address from the LAN's DHCP server: no `--subnet` needed, the
//! subnet, gateway and DNS servers come from the server. The lease is the endpoint's own (its
//! MAC, a client id made from it), renewed while the endpoint lives, released when it
//! leaves, and kept across a restart of the daemon.
//!
//! | module | what |
//! |---|---|
//! | [`client`] | the DHCPv4 client as a sans-I/O state machine (probe, lease, renew; release) |
//! | [`frame`] | DHCP messages in Ethernet/IPv4/UDP frames, and the socket filter (pure) |
//! | [`socket`] | a filtered packet socket on the parent, and the loop that drives an exchange |
//! | [`records`] | the pool and lease records in the store, the options, lease times (pure) |
//! | [`ipam`] | [`DhcpIpam`], the [`plexus_ipam::Ipam`] driver: pools, leases, renewals |
//!
//! **Why a crate of its own** rather than a module of `plexus-ipam`: it needs a DHCP codec
//! ([`dhcproto`]), raw packet sockets and network namespaces (`plexus-sys`), none of which the
//! allocator and its remote-plugin client should carry; it depends on `plexus-ipam` only for
//! the [`Ipam`](plexus_ipam::Ipam) trait, so the controller sees one more IPAM driver.
//!
//! **Why the client runs in the host namespace on the parent** rather than in the sandbox:
//! the first lease is needed before the endpoint's device exists (the controller allocates
//! addresses, then the driver makes the device with them), and a renewal must not depend on
//! the sandbox's namespace being there. The client therefore speaks for the endpoint from the
//! parent, with the endpoint's MAC as `chaddr` and as the frames' source, and the broadcast
//! flag, so that the answers reach the host, which does not hold the leased address.
//!
//! Options follow net-dhcp's names where it has one: `--ipam-opt lease_timeout=10s` bounds
//! each exchange; `--ipam-opt parent=IF` names the interface when the network's own `-o
//! parent` (or bridge name) does not.
//!
//! **Limits.** IPv4 only (no DHCPv6). ipvlan networks: the controller gives each endpoint of
//! a MAC-first IPAM driver a MAC of its own, which the ipvlan driver refuses (its devices have
//! the parent's MAC). Bridge networks: not yet: the pool's probe needs the bridge, on the
//! LAN, at `network create`, while Plexus's bridge driver makes its own bridge afterwards
//! (refusing one that exists) and puts no uplink on it (net-dhcp's model: a bridge of the
//! user's with the LAN interface in it). The embedded DNS forwards to a lease's DNS servers
//! from the host, which must reach them.
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn plexus_kv::Store>) -> Result<(), Box<dyn std::error::Error>> {
//! use plexus_dhcp::{DhcpConfig, DhcpIpam};
//! use plexus_ipam::{AddressRequest, Ipam, PoolRequest};
//! let ipam = DhcpIpam::open(store, DhcpConfig::default()).await?;
//! let mut pool = PoolRequest::new("local", "lan");
//! pool.network_options.insert("parent".into(), "eth1".into());
//! let pool = ipam.request_pool(pool).await?; // the LAN's subnet and router
//! let mut req = AddressRequest::next(&pool.pool_id);
//! req.mac_address = Some("02:42:0a:00:00:05".into());
//! let lease = ipam.request_address(req).await?; // DISCOVER, OFFER, REQUEST, ACK
//! ipam.release_address(&pool.pool_id, lease.address.addr()).await?; // DHCPRELEASE
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod client;
mod error;
pub mod frame;
pub mod ipam;
pub mod records;
pub mod socket;

pub use error::{DhcpError, Result};
pub use ipam::{owns_pool, DhcpConfig, DhcpIpam, DRIVER_NAME, POOL_ID_PREFIX};
