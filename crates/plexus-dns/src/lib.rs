//! # plexus-dns — embedded DNS for sandboxes
//!
//! Every sandbox on a network that serves names asks `127.0.0.11`, as under Docker: the
//! resolver answers the names of the sandbox's own networks and forwards the rest, through a
//! cache, to the sandbox's `--dns` servers or the host's.
//!
//! Protocol apart from I/O, as hickory-dns does it:
//! - [`wire`]: byte-level reads and rewrites of messages (ids, TTLs) for the hot paths;
//! - [`names`]: names as the zone keys them, reverse names as addresses;
//! - [`zone`]: what the daemon tells the resolver, and the immutable [`Zone`] snapshot
//!   queries are answered from;
//! - [`record`]: an endpoint as other hosts learn it through the cluster's control plane
//!   (the versioned bytes of `endpoint_table`);
//! - [`answer`]: a query's bytes to a reply, a forward or a drop — plain functions;
//! - [`cache`]: forwarded answers, aged in place, with negative caching;
//! - [`forward`]: the upstream state machine (health, racing, failover), sans I/O;
//! - [`resolvconf`]: the host's `resolv.conf` read, a sandbox's `resolv.conf` and `hosts`
//!   written;
//! - [`control`]: the protocol between plexusd and the resolver, and plexusd's client;
//! - [`server`]: the resolver process — listeners in sandbox namespaces, the forwarding task,
//!   the control socket.

#![warn(missing_docs)]

pub mod answer;
pub mod cache;
pub mod control;
mod error;
pub mod forward;
pub mod names;
pub mod record;
pub mod resolvconf;
pub mod server;
pub mod wire;
pub mod zone;

pub use error::DnsError;
pub use zone::Zone;
