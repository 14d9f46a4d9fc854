//! Errors of the kernel layer.

use std::path::PathBuf;

/// What went wrong talking to the kernel. Every variant names the object (namespace path, link
/// name, address) and the operation.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A namespace operation (create, open, enter, delete) failed.
    #[error("network namespace {path}: {op}: {source}")]
    Netns {
        /// The namespace's path.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a netlink request.
    #[error("{op}: {message}")]
    Netlink {
        /// The request, with the object it named (`create bridge "br0"`).
        op: String,
        /// The kernel's answer (errno text) or the transport failure.
        message: String,
        /// The errno, when the kernel gave one.
        errno: Option<i32>,
    },
    /// The object already exists.
    #[error("{what} already exists")]
    Exists {
        /// The object (`link "br0"`).
        what: String,
    },
    /// The object does not exist.
    #[error("{what} not found")]
    NotFound {
        /// The object (`link "br0"`).
        what: String,
    },
    /// The running kernel lacks a feature.
    #[error("the kernel does not support {feature}: {hint}")]
    Unsupported {
        /// The feature (`ipvlan links`).
        feature: String,
        /// What to do about it.
        hint: String,
    },
    /// An argument is malformed (an interface name too long, ...).
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        /// The argument's name.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The object is taken by someone else (a host port published by another endpoint).
    #[error("{what} is already in use by {owner}")]
    Conflict {
        /// The object (`host port tcp/8080`).
        what: String,
        /// Who has it.
        owner: String,
    },
    /// A file operation failed (sysctls, namespace files).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = SysError> = std::result::Result<T, E>;

impl SysError {
    /// Maps an rtnetlink failure of `op` on `what` to the most precise variant.
    pub(crate) fn netlink(op: impl Into<String>, what: &str, e: rtnetlink::Error) -> Self {
        let op = op.into();
        if let rtnetlink::Error::NetlinkError(msg) = &e {
            let errno = msg.code.map(|c| -c.get());
            return match errno {
                Some(libc_errno::EEXIST) => SysError::Exists { what: what.into() },
                Some(libc_errno::ENODEV) | Some(libc_errno::ENOENT) | Some(libc_errno::ESRCH) => {
                    SysError::NotFound { what: what.into() }
                }
                Some(libc_errno::EOPNOTSUPP) => SysError::Unsupported {
                    feature: op.clone(),
                    hint: "the kernel lacks this feature or module".into(),
                },
                _ => SysError::Netlink {
                    op,
                    message: errno
                        .map(|n| std::io::Error::from_raw_os_error(n).to_string())
                        .unwrap_or_else(|| e.to_string()),
                    errno,
                },
            };
        }
        SysError::Netlink {
            op,
            message: e.to_string(),
            errno: None,
        }
    }

    /// The errno behind a netlink failure, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            SysError::Netlink { errno, .. } => *errno,
            SysError::Exists { .. } | SysError::Conflict { .. } => Some(libc_errno::EEXIST),
            SysError::NotFound { .. } => Some(libc_errno::ENODEV),
            SysError::Unsupported { .. } => Some(libc_errno::EOPNOTSUPP),
            _ => None,
        }
    }
}

/// The errno values this crate distinguishes (Linux numbering).
pub(crate) mod libc_errno {
    pub const ENOENT: i32 = nix::libc::ENOENT;
    pub const ESRCH: i32 = nix::libc::ESRCH;
    pub const EEXIST: i32 = nix::libc::EEXIST;
    pub const ENODEV: i32 = nix::libc::ENODEV;
    pub const EOPNOTSUPP: i32 = nix::libc::EOPNOTSUPP;
    pub const EADDRNOTAVAIL: i32 = nix::libc::EADDRNOTAVAIL;
}
