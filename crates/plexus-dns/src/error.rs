//! Errors of the resolver and of its control channel.

use std::path::PathBuf;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A kernel operation (namespaces, nftables) failed.
    #[error(transparent)]
    Sys(#[from] plexus_sys::SysError),
    /// The control channel carried something that is not the protocol.
    #[error("resolver control protocol: {0}")]
    Protocol(String),
    /// The resolver refused a request.
    #[error("resolver: {0}")]
    Refused(String),
    /// The resolver's control socket does not answer.
    #[error("the resolver is not running (no answer on {})", .0.display())]
    NotRunning(PathBuf),
}

impl DnsError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        DnsError::Io {
            what: what.into(),
            source,
        }
    }
}
