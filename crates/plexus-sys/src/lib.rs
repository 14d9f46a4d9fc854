//! # plexus-sys — the kernel, for Plexus
//!
//! Everything Plexus asks of the kernel, through system calls and netlink only (no `ip`,
//! `iptables` or `nft` processes):
//!
//! - [`netns`]: create, open, enter and delete network namespaces;
//! - [`rtnl`]: links (bridge, veth, vxlan, macvlan, ipvlan, 802.1q, dummy), addresses, routes
//!   (of any table) and policy-routing rules of one namespace, through a netlink socket born
//!   inside it;
//! - [`nft`]: nf_tables over netlink: tables, chains, rules, sets, maps and the expressions
//!   rules are made of, in atomic batches (no policy: the drivers choose the rules);
//! - [`sysctl`]: per-namespace `net.*` sysctls;
//! - [`tun`]: TUN devices born inside a namespace (`/dev/net/tun`, `TUNSETIFF`);
//! - [`probe`]: what the running kernel supports (its release; link kinds, nf_tables rule
//!   kinds, `NFT_MSG_DESTROY`, IPVS, ESP, TUN), found by trying it in a scratch namespace.
//!
//! This crate knows nothing of networks, endpoints or sandboxes: it is the vocabulary the
//! drivers speak.
//!
//! ```no_run
//! # async fn demo() -> plexus_sys::Result<()> {
//! use plexus_sys::{netns::Netns, rtnl::{BridgeSpec, Rtnl}};
//! let ns = Netns::create(std::path::Path::new("/run/plexus/netns"), "demo")?;
//! let rtnl = Rtnl::connect(&ns).await?;
//! let spec = BridgeSpec { name: "plx0", mtu: Some(1500), ..Default::default() };
//! let br = rtnl.add_bridge(&spec, "plexus").await?;
//! rtnl.set_up(br.index).await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod error;
pub mod netns;
pub mod nft;
pub mod probe;
pub mod rtnl;
mod socket;
pub mod sysctl;
pub mod tun;

pub use error::{Result, SysError};
