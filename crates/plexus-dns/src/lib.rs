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
//! - [`answer`]: a query's bytes to a reply, a forward or a drop — plain functions;
//! - [`cache`]: forwarded answers, aged in place, with negative caching;
//! - [`forward`]: the upstream state machine (health, racing, failover), sans I/O.

#![warn(missing_docs)]

pub mod answer;
pub mod cache;
pub mod forward;
pub mod names;
pub mod wire;
pub mod zone;

pub use zone::Zone;
