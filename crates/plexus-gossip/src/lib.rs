//! # plexus-gossip — Plexus's control plane
//!
//! SWIM membership with Lifeguard (local health, dynamic suspicion, buddy system),
//! networkdb-style tables scoped to networks (Lamport-ordered entries, tombstones, owner
//! rules), anti-entropy by digests, every datagram and stream sealed with
//! XChaCha20-Poly1305 from a rotating keyring.
//!
//! The protocol is sans-I/O: [`Node`] takes bytes and the time and returns [`Transmit`]s
//! and [`Event`]s. [`runtime`] drives it over tokio UDP + TCP on one port; [`sim`] drives
//! the same code with virtual time, loss, delay and partitions.
#![warn(missing_docs)]

pub mod codec;
pub mod config;
pub mod error;
pub mod members;
pub mod node;
pub mod queue;
pub mod rng;
pub mod runtime;
pub mod seal;
pub mod sim;
pub mod table;

pub use codec::MemberState;
pub use config::Config;
pub use error::{DecodeError, GossipError, OpenError};
pub use node::{
    EntryEvent, EntryEventKind, EntryInfo, Event, MemberInfo, NetworkInfo, Node, Stats, Transmit,
};
pub use seal::{Key, Keyring};
