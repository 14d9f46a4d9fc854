//! Looks inside a container's namespace from a thread of its own (`setns` changes only the
//! calling thread): whether a path is a network namespace at all, and, for CHECK, which
//! interfaces and addresses it holds.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::IpAddr;

use nix::sched::{setns, CloneFlags};

use crate::error::{code, CniError, Result};

/// `NSFS_MAGIC`: the file system of namespace files (`/proc/PID/ns/net`, their bind mounts).
const NSFS_MAGIC: i64 = 0x6e73_6673;

fn bad_netns(path: &str, why: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::INVALID_ENV,
        "invalid CNI_NETNS",
        format!("CNI_NETNS={path}: {why}"),
    )
}

/// Checks that `path` is a namespace file (error code 4, naming `CNI_NETNS`).
pub fn check(path: &str) -> Result<()> {
    let stat = nix::sys::statfs::statfs(path).map_err(|e| bad_netns(path, e.desc()))?;
    #[allow(clippy::unnecessary_cast)]
    let kind = stat.filesystem_type().0 as i64;
    if kind != NSFS_MAGIC {
        return Err(bad_netns(path, "not a namespace file"));
    }
    Ok(())
}

/// Whether two paths name the same namespace (the same path, or the same namespace file
/// reached two ways: a bind mount and `/proc/PID/ns/net`).
pub fn same(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    if a == b {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The interfaces of a link inside the namespace: name → (up, addresses).
pub type Links = BTreeMap<String, (bool, BTreeSet<IpAddr>)>;

/// Every interface of the namespace at `path` with whether it is up and its addresses.
pub fn links(path: &str) -> Result<Links> {
    let file = File::open(path).map_err(|e| bad_netns(path, e))?;
    let owned = path.to_string();
    let worker = std::thread::spawn(move || -> Result<Links> {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| bad_netns(&owned, e.desc()))?;
        let addrs = nix::ifaddrs::getifaddrs().map_err(|e| {
            CniError::new(
                code::IO_FAILURE,
                "cannot list the namespace's interfaces",
                format!("CNI_NETNS={owned}: {e}"),
            )
        })?;
        let mut out = Links::new();
        for a in addrs {
            let entry = out.entry(a.interface_name.clone()).or_default();
            entry.0 |= a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
            let ip = a.address.as_ref().and_then(|s| {
                s.as_sockaddr_in()
                    .map(|v4| IpAddr::V4(v4.ip()))
                    .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
            });
            if let Some(ip) = ip {
                entry.1.insert(ip);
            }
        }
        Ok(out)
    });
    worker.join().map_err(|_| {
        CniError::new(
            code::IO_FAILURE,
            "cannot list the namespace's interfaces",
            format!("CNI_NETNS={path}: the worker thread panicked"),
        )
    })?
}
