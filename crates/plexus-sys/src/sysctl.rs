//! Per-namespace sysctls (`/proc/sys/net/...`), written from inside the namespace.

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::error::{Result, SysError};
use crate::netns::Netns;
use crate::socket::netns_helper::run_in;

/// Writes `value` to the sysctl `key` (dotted, `net.ipv4.ip_forward`, or a path under
/// `/proc/sys`) inside `ns`. `/proc/sys/net` shows the namespace of the thread that opens it,
/// so the write happens on Plexus's namespace helper thread, inside `ns`.
pub fn write(ns: &Netns, key: &str, value: &str) -> Result<()> {
    let path = path_of(key)?;
    let value = value.to_string();
    let p = path.clone();
    run_in(ns.fd().as_raw_fd(), move || std::fs::write(&p, value))
        .map_err(|source| SysError::Io { path, source })
}

/// Reads the sysctl `key` inside `ns`, trimmed.
pub fn read(ns: &Netns, key: &str) -> Result<String> {
    let path = path_of(key)?;
    let p = path.clone();
    run_in(ns.fd().as_raw_fd(), move || std::fs::read_to_string(&p))
        .map(|s| s.trim().to_string())
        .map_err(|source| SysError::Io { path, source })
}

fn path_of(key: &str) -> Result<PathBuf> {
    let rel = key.replace('.', "/");
    if key.is_empty() || key.contains("..") || key.starts_with('/') || !rel.starts_with("net/") {
        return Err(SysError::Invalid {
            field: "sysctl",
            value: key.into(),
            reason: "must be a net.* key such as net.ipv4.ip_forward",
        });
    }
    Ok(PathBuf::from("/proc/sys").join(rel))
}
