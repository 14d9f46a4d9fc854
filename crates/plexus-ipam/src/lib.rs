//! # plexus-ipam — IP address management for Plexus
//!
//! Docker's IPAM, with clear errors, no leaks, and state that two daemons can share.
//!
//! | module | what |
//! |---|---|
//! | [`api`] | the [`Ipam`] trait (Docker's IPAM driver API) and its request/response types |
//! | [`pool`] | one pool's addresses: reserved addresses, ip-range, gateway/aux, lowest-free or serial order (pure) |
//! | [`space`] | default pools (Docker's, `default-address-pools`, per-host IPv6 ULA) and the choice of subnets (pure) |
//! | [`builtin`] | the built-in driver: the pure parts cached in memory, every change a compare-and-swap transaction in a [`plexus_kv::Store`] |
//! | [`plugin`] | Docker's plugin transport: discovery, activation, the JSON POST client with retries and timeouts |
//! | [`remote`] | a client of Docker's remote IPAM plugin protocol over [`plugin`] |
//! | `testing` | (feature `testing`) scenarios taking any `Arc<dyn Store>`, such as the two-allocator race |
//!
//! The IPv4 set is a bitmap compressed by 4096-address chunks ([`dense`]); the IPv6 set is
//! sorted runs ([`sparse`]), whose memory grows with what is allocated.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use plexus_ipam::{AddressRequest, BuiltinIpam, Ipam, IpamConfig, PoolRequest};
//! let store = plexus_kv::open("memory://", plexus_kv::OpenOptions::default()).await?;
//! let ipam = BuiltinIpam::open(store, IpamConfig::new("host-1")).await?;
//! let pool = ipam
//!     .request_pool(PoolRequest::new("local", "web").subnet("10.1.0.0/24").aux("db", "10.1.0.9"))
//!     .await?;
//! let a = ipam.request_address(AddressRequest::preferred(&pool.pool_id, "10.1.0.9")).await;
//! assert_eq!(
//!     a.unwrap_err().to_string(),
//!     "ip 10.1.0.9 is already in use in 10.1.0.0/24 (by aux-address db)"
//! );
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod api;
pub mod builtin;
pub mod dense;
mod error;
pub mod plugin;
pub mod pool;
pub mod remote;
mod scoped;
pub mod space;
pub mod sparse;
#[cfg(feature = "testing")]
pub mod testing;

pub use api::{
    AddressRequest, AddressResponse, AddressSpaces, Capabilities, GatewayRequest, Ipam,
    PoolRequest, PoolResponse,
};
pub use builtin::{BuiltinIpam, HostInfo, IpamConfig, GLOBAL_SPACE, LOCAL_SPACE};
pub use error::{IpamError, Result};
pub use scoped::ScopedIpam;
pub use space::DefaultPool;
