//! plexus-cni: a CNI plugin (spec 0.3.0 to 1.1.0: ADD, DEL, CHECK, VERSION, STATUS, GC) that
//! forwards to plexusd over its unix socket, so podman, containerd or Kubernetes attach
//! containers to Plexus networks.
//!
//! [`run`] is the whole plugin: the environment and stdin in, stdout and the exit status
//! out. The configuration ([`config`]) names the Plexus network and the socket; [`ops`] maps
//! each command onto plexusd's sandboxes; [`result`] shapes the answer; errors are CNI's
//! ([`error`]), naming the field or variable at fault.

pub mod client;
pub mod config;
pub mod env;
pub mod error;
pub mod netns;
pub mod ops;
pub mod result;

use serde_json::json;

use crate::config::{NetConf, DEFAULT_SOCKET, LATEST_VERSION, SUPPORTED_VERSIONS};
use crate::env::{Command, Env};
use crate::error::{code, CniError, Result};
use crate::ops::Plugin;

/// What the plugin prints and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// stdout: a result, a version answer, an error, or nothing.
    pub stdout: String,
    /// 0 on success, 1 on an error.
    pub status: i32,
}

/// The `cniVersion` stdin asks for, if it is one plexus-cni speaks (for error answers, which
/// must be in the caller's version even when the rest of stdin is bad).
fn asked_version(stdin: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    let s = v.get("cniVersion")?.as_str()?;
    SUPPORTED_VERSIONS.contains(&s).then(|| s.to_string())
}

/// The daemon's socket: the configuration's `plexus.socket`, else `PLEXUS_HOST` (as the
/// `plexus` CLI takes it), else plexusd's default.
fn socket(conf: &NetConf, plexus_host: Option<String>) -> Result<String> {
    if let Some(s) = &conf.socket {
        return Ok(s.clone());
    }
    match plexus_host.filter(|h| !h.is_empty()) {
        Some(h) => config::socket_path(&h, "PLEXUS_HOST")
            .map_err(|e| CniError::new(code::INVALID_ENV, "invalid PLEXUS_HOST", e.details)),
        None => Ok(DEFAULT_SOCKET.to_string()),
    }
}

/// Runs one invocation: `get` reads the environment, `stdin` is the configuration.
pub fn run(get: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let version = asked_version(stdin).unwrap_or_else(|| LATEST_VERSION.to_string());
    match execute(&get, stdin, &version) {
        Ok(stdout) => Outcome { stdout, status: 0 },
        Err(e) => {
            tracing::debug!(code = e.code, msg = %e.msg, details = %e.details, "failed");
            Outcome {
                stdout: e.to_json(&version),
                status: 1,
            }
        }
    }
}

fn execute(get: &impl Fn(&str) -> Option<String>, stdin: &[u8], version: &str) -> Result<String> {
    if let Some(Ok(Command::Version)) = get("CNI_COMMAND").map(|c| Command::parse(&c)) {
        return Ok(json!({
            "cniVersion": version,
            "supportedVersions": SUPPORTED_VERSIONS,
        })
        .to_string());
    }
    let env = Env::read(get)?;
    let conf = NetConf::parse(stdin)?;
    let socket = socket(&conf, get("PLEXUS_HOST"))?;
    let command = env.command;
    let plugin = Plugin::new(env, conf, socket);
    match command {
        Command::Add => {
            let result = plugin.add()?;
            serde_json::to_string(&result).map_err(|e| {
                CniError::new(code::IO_FAILURE, "cannot encode the result", e.to_string())
            })
        }
        Command::Del => plugin.del().map(|()| String::new()),
        Command::Check => {
            if !config::at_least(plugin.cni_version(), "0.4.0") {
                return Err(CniError::new(
                    code::INCOMPATIBLE_VERSION,
                    "incompatible CNI version",
                    format!(
                        "CHECK needs cniVersion 0.4.0 or later; the configuration says {}",
                        plugin.cni_version()
                    ),
                ));
            }
            plugin.check().map(|()| String::new())
        }
        Command::Status => {
            plugin.needs_1_1("STATUS")?;
            plugin.status().map(|()| String::new())
        }
        Command::Gc => {
            plugin.needs_1_1("GC")?;
            plugin.gc().map(|_| String::new())
        }
        Command::Version => Ok(String::new()),
    }
}
