//! CNI's error result: `{"cniVersion", "code", "msg", "details"}` on stdout, with the spec's
//! well-known codes (0–99) and plexus-cni's own (100 and up).

use serde::Serialize;

/// The spec's well-known error codes, and plexus-cni's own.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration; the message names it.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables; the message names them.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure (reading the configuration from stdin).
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content (the configuration is not JSON, or not of the right shape).
    pub const DECODING_FAILURE: u32 = 6;
    /// Invalid network configuration (an unknown Plexus network, a bad value).
    pub const INVALID_NETWORK_CONFIG: u32 = 7;
    /// Try again later: plexusd is not answering.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot service ADD requests.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// plexusd refused or failed the request (its message is the details).
    pub const DAEMON_REFUSED: u32 = 100;
    /// The attachment is not as its record says (CHECK).
    pub const CHECK_FAILED: u32 = 101;
    /// The container is attached already, in another namespace or on another network with
    /// this interface name.
    pub const CONFLICT: u32 = 102;
}

/// An error as CNI reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    /// The code (see [`code`]).
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// What exactly was wrong, naming the field, variable or object.
    pub details: String,
}

impl CniError {
    /// An error with `code`, `msg` and `details`.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The JSON the plugin prints for it, in `cni_version`'s format.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            details: &'a str,
        }
        let wire = Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_string(&wire).unwrap_or_else(|_| {
            format!(
                "{{\"cniVersion\":\"{cni_version}\",\"code\":{},\"msg\":\"error\"}}",
                self.code
            )
        })
    }
}

/// A result of this crate.
pub type Result<T> = std::result::Result<T, CniError>;
