//! Cluster PKI and the mutual-TLS transport of Plexus's cluster nodes.
//!
//! - [`ClusterCa`]: the cluster's certificate authority (ECDSA P-256), saved as PEM; it issues
//!   node certificates naming the node id (`URI:plexus://node/<id>`, CN, a DNS name) and the
//!   role (the subject's OU).
//! - [`JoinToken`], [`JoinTokens`]: `PLXTKN-1-<sha256 of the CA>-<secret>`, Docker swarm's
//!   model; a manager's tokens per role, rotation, expiry.
//! - [`enrol`]: the join handshake ([`enrol::join`], [`Enroller::serve`]) and certificate
//!   renewal over the node's current identity ([`enrol::renew_if_due`]).
//! - [`TlsListener`], [`TlsConnector`]: mutual TLS 1.3 with only the cluster CA trusted, the
//!   peer's [`PeerIdentity`] from its certificate, length-prefixed frames with a size limit,
//!   and [`Credentials`] swapped while they run.
//! - [`rpc`]: request/response over one connection, several in flight, reconnecting.
//!
//! The crate knows nothing of Raft or the store: bytes in, bytes out.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use plexus_tls::*;
//!
//! let ca = ClusterCa::create()?;
//! let id = NodeId::random()?;
//! let me = Credentials::new(ca.issue(&id, Role::Manager, enrol::DEFAULT_NODE_VALIDITY)?)?;
//! let listener = TlsListener::bind("127.0.0.1:0", &me, TransportOptions::default()).await?;
//! let server = rpc::RpcServer::spawn(listener, |peer: PeerIdentity, request: Vec<u8>| async move {
//!     Ok::<_, String>(format!("{} said {} bytes", peer.node_id, request.len()).into_bytes())
//! })?;
//! let connector = TlsConnector::new(&me, TransportOptions::default())?;
//! let client = rpc::RpcClient::new(connector, server.local_addr().to_string(), Some(id));
//! let answer = client.call(b"hello").await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod ca;
pub mod enrol;
pub mod frame;
pub mod identity;
pub mod rpc;
pub mod token;
pub mod transport;
mod verify;

pub use ca::{CaError, ClusterCa};
pub use enrol::{EnrolError, EnrolRequest, Enrolled, Enroller};
pub use frame::{FrameError, DEFAULT_MAX_FRAME};
pub use identity::{Credentials, CredentialsError, NodeId, NodeIdentity, PeerIdentity, Role};
pub use token::{JoinToken, JoinTokens, RandomError, TokenError, TokenParseError};
pub use transport::{TlsConnection, TlsConnector, TlsListener, TransportError, TransportOptions};
pub use verify::PeerMismatch;
