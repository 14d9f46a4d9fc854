//! Errors of the data plane.

use std::net::SocketAddr;

/// What went wrong configuring or running a [`Device`](crate::Device). Every variant names
/// the field, peer or object at fault; a failed call changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum WgError {
    /// A key (private, public or pre-shared) is malformed.
    #[error("invalid {field}: {reason}")]
    Key {
        /// Which key (`private key`, `peer public key`, `preshared key`).
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range or malformed.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// The field (`mtu`, `allowed ip`, ...).
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A peer with this public key is configured already.
    #[error("peer {peer} already exists")]
    PeerExists {
        /// The peer's public key (base64).
        peer: String,
    },
    /// No peer has this public key.
    #[error("peer {peer} not found")]
    PeerNotFound {
        /// The peer's public key (base64).
        peer: String,
    },
    /// An allowed IP is routed to another peer already.
    #[error("allowed ip {prefix} of peer {peer} is already routed to peer {owner}")]
    AllowedIpTaken {
        /// The prefix.
        prefix: String,
        /// The peer being configured.
        peer: String,
        /// The peer that has it.
        owner: String,
    },
    /// The kernel refused to make or configure the TUN device or namespace work failed.
    #[error("device {device}: {source}")]
    Sys {
        /// The device's name.
        device: String,
        /// The kernel layer's error.
        #[source]
        source: plexus_sys::SysError,
    },
    /// The UDP socket could not be made or bound.
    #[error("device {device}: UDP socket on {listen}: {source}")]
    Socket {
        /// The device's name.
        device: String,
        /// The address it was to listen on.
        listen: SocketAddr,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// A worker thread could not be started.
    #[error("device {device}: start worker {worker}: {source}")]
    Worker {
        /// The device's name.
        device: String,
        /// The worker (`udp`, `tun`, `timers`).
        worker: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = WgError> = std::result::Result<T, E>;
