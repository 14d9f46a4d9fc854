//! # plexus-gossip — Plexus's control plane
//!
//! SWIM membership with Lifeguard (local health multiplier, dynamic suspicion timeouts with
//! independent confirmations, buddy system), networkdb-style tables scoped to networks
//! (Lamport-ordered entries, tombstones, owner rules), anti-entropy by digests, and every
//! datagram and stream sealed with XChaCha20-Poly1305 from a rotating keyring.
//!
//! ## Modules
//! - [`codec`]: the wire format (bounded decoder, no allocation beyond the frame's size).
//! - [`seal`]: keyring, seal/open, replay windows.
//! - [`members`]: the member store and Lifeguard's suspicion formula.
//! - [`table`]: entry storage, the merge order `(lamport, owner)`, visibility rules, digests.
//! - [`queue`]: transmit-limited broadcast queues.
//! - [`node`]: the sans-I/O protocol state machine ([`Node`]): bytes and time in,
//!   [`Transmit`]s and [`Event`]s out.
//! - [`runtime`]: tokio driver, UDP + TCP on one port ([`config::DEFAULT_PORT`]).
//! - [`sim`]: deterministic simulator driving the same [`Node`] with virtual time, loss,
//!   delay and partitions.
//!
//! ## Invariants
//! - Nothing is parsed before it is authenticated: a frame that no key opens is counted in
//!   [`Stats::dropped_unauthenticated`] and dropped; replayed frames (per sender, epoch and
//!   channel) are counted in [`Stats::dropped_replay`].
//! - An entry is a last-writer-wins register under the total order `(lamport time, owner)`,
//!   so any two nodes that saw the same events hold the same table (and the same digest).
//! - An entry is visible only while its owner is alive or suspect and attached to the
//!   network since before the entry was written; a node that leaves a network or a later
//!   life of it supersedes its older entries; an owner re-asserts (or retracts) anything
//!   it sees about itself that it does not hold, which also heals restarts with empty state.
//! - Each node keeps a Lamport clock, witnessed on every received event and ticked on every
//!   local one, shared by attachment and table events so they are comparable.
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
