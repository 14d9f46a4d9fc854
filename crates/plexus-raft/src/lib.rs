//! # plexus-raft — the embedded Raft store
//!
//! A cluster store with no external server: every member keeps the whole key space, agreed
//! through Raft ([openraft] 0.9), on its own redb file. [`RaftNode`] is a member (start,
//! initialize, learners, membership, metrics, shutdown); [`RaftNode::store`] gives a
//! [`plexus_kv::Store`] on it that passes the same conformance suite as the other backends.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use plexus_raft::{RaftConfig, RaftNode};
//! let node = RaftNode::start(RaftConfig::new(1, "/var/lib/plexus/raft", "127.0.0.1:0")).await?;
//! node.initialize().await?;
//! let store = node.store();
//! store.put("networks/n1", b"{}", Default::default()).await?;
//! # Ok(()) }
//! ```
//!
//! How it gives plexus-kv's semantics:
//!
//! - **Writes** are Raft commands ([`Command`]), proposed on the leader; a follower forwards
//!   them over the transport. The log is fsynced (redb `Durability::Immediate`) before a
//!   member acknowledges an append, so an acknowledged write survives `kill -9` of any
//!   minority. A write is retried only when it cannot have been proposed, so none is applied
//!   twice.
//! - **Indexes** are a revision counted by the state machine, one per command that changes
//!   something (a transaction is one), the same on every member.
//! - **Reads** are linearizable: the leader confirms its leadership with a heartbeat round
//!   and gives its commit index (a read index); the member reads once it has applied it.
//! - **Watches** are fed by this member's apply, registered under the same lock, so a watch
//!   sees its starting state and then every change, with no gap and no repeat.
//! - **TTL**: the leader stamps an absolute deadline from its clock when it proposes; a
//!   timer on the leader proposes `Expire` for keys past it (applied only if the key was not
//!   rewritten). Apply never reads a clock.
//! - **Snapshots** are built every [`RaftConfig::snapshot_every`] entries, the log before
//!   them purged, and sent to a member far behind in 1 MiB chunks. Every message is bounded
//!   ([`transport::MAX_FRAME_BYTES`]); a value over [`RaftConfig::max_value_bytes`] (1 MiB)
//!   or an operation over [`store::MAX_ENTRY_BYTES`] is refused before it is proposed.
//! - **Elections**: heartbeat 50 ms, election timeout 150–300 ms. openraft 0.9 has no
//!   pre-vote message; its leader lease gives the same protection: a member that still hears
//!   from a leader refuses to vote, so a partitioned member coming back cannot depose it.
//! - **Locks** are plexus-kv's [`plexus_kv::KvLocker`] over the store.
//!
//! The network is a [`RaftTransport`] (streams). [`TlsRaftTransport`] is mutual TLS 1.3
//! with node certificates from the cluster CA (plexus-tls): a peer without one, or with one
//! from another CA, is refused, and renewed certificates apply to the next connection.
//! [`TcpTransport`] is plain TCP, for tests and trusted loopback.

#![warn(missing_docs)]

mod apply;
mod db;
mod log_store;
mod member;
mod node;
mod rpc;
mod sm;
pub mod store;
mod tls;
pub mod transport;
mod types;

pub use db::DB_FILE;
pub use node::{NodeMetrics, RaftConfig, RaftNode, RaftNodeError, DEFAULT_MAX_VALUE_BYTES};
pub use store::RaftStore;
pub use tls::TlsRaftTransport;
pub use transport::{BoxConn, Conn, RaftListener, RaftTransport, TcpTransport};
pub use types::{Applied, Cmp, Command, Op, Pair, Peer, Refusal, TypeConfig};
