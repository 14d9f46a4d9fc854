//! Error types.

use thiserror::Error;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The frame ended early.
    #[error("truncated frame")]
    Truncated,
    /// A length field exceeds its limit.
    #[error("field too long")]
    TooLong,
    /// A field has an invalid value.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Why a sealed frame could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OpenError {
    /// Shorter than the seal overhead.
    #[error("frame shorter than the seal overhead")]
    Truncated,
    /// Unknown version or channel byte.
    #[error("unknown seal version or channel")]
    BadHeader,
    /// No key in the keyring authenticates it.
    #[error("no key opens the frame")]
    NoKey,
}

/// Errors of the public API.
#[derive(Debug, Error)]
pub enum GossipError {
    /// The node is not attached to the network.
    #[error("not attached to network {0:?}")]
    NotAttached(String),
    /// A name or value is too long for the wire.
    #[error("{0} too long")]
    TooLong(&'static str),
    /// Keyring operation refused.
    #[error("keyring: {0}")]
    Keyring(&'static str),
    /// Invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// I/O error of the runtime.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The runtime has stopped.
    #[error("the gossip runtime has stopped")]
    Stopped,
}
