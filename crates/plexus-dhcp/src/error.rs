//! The one error type of the crate.

use std::net::Ipv4Addr;
use std::time::Duration;

use plexus_kv::KvError;

/// Errors of DHCP address management. Every variant names the interface, field or record
/// involved, so the message alone tells a user what was wrong.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DhcpError {
    /// No DHCP server answered in time.
    #[error("no DHCP server answered on parent {interface} within {waited:?} ({sent} {what} sent, no {expected} came back)")]
    Timeout {
        /// The interface the client talked on (the network's parent).
        interface: String,
        /// How long the client waited.
        waited: Duration,
        /// What it sent (`DHCPDISCOVER`, `DHCPREQUEST`).
        what: &'static str,
        /// How many times.
        sent: u32,
        /// What it waited for (`DHCPOFFER`, `DHCPACK`).
        expected: &'static str,
    },
    /// The server refused a request (`DHCPNAK`).
    #[error("DHCP server {server} on {interface} refused {address}: {message}")]
    Refused {
        /// The interface.
        interface: String,
        /// The server that answered.
        server: Ipv4Addr,
        /// The address asked for.
        address: Ipv4Addr,
        /// The server's message, if it gave one.
        message: String,
    },
    /// The server offered another address than the one asked for (`--ip`).
    #[error("ip {requested}: the DHCP server on {interface} offered {offered} instead")]
    NotOffered {
        /// The interface.
        interface: String,
        /// The address asked for.
        requested: Ipv4Addr,
        /// The address offered.
        offered: Ipv4Addr,
    },
    /// A field or option is malformed or missing.
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// The field or option (`parent`, `lease_timeout`, `mac address`, ...).
        field: String,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A system call on the interface failed.
    #[error("DHCP on {interface}: {op}: {message}")]
    Io {
        /// The interface.
        interface: String,
        /// What was being done (`open a packet socket`, `send`, ...).
        op: &'static str,
        /// The system's error.
        message: String,
    },
    /// The lease table's store failed.
    #[error("DHCP lease store: {0}")]
    Store(#[from] KvError),
    /// A stored record could not be decoded.
    #[error("corrupt DHCP record {key:?}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl DhcpError {
    /// An [`DhcpError::Invalid`].
    pub fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field: field.into(),
            value: value.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = DhcpError> = std::result::Result<T, E>;
