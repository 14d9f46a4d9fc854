//! Per-namespace sysctls (`/proc/sys/net/...`), written from inside the namespace.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

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

/// A directory under `/proc/sys/net` opened once inside a namespace, for the sysctls written
/// on every endpoint (a link's `net.ipv6.conf.<link>.disable_ipv6`).
///
/// Why not the path: every namespace has its own `/proc/sys/net/ipv6` and `.../conf`
/// directories, and the dentry cache keeps one entry per namespace under the same parent and
/// name, newest first. A lookup from `/proc/sys` walks past the entries of every namespace
/// that looked the name up after this one did: the containers of any runtime started since,
/// and Plexus's own IPv6 sandboxes. Here that is 6 µs with none and 170 µs with 700. A name
/// under this directory is this namespace's alone, so [`SysctlDir::write`] costs the same
/// whatever else runs on the machine.
///
/// ```no_run
/// # fn demo(ns: &plexus_sys::netns::Netns) -> plexus_sys::Result<()> {
/// use plexus_sys::sysctl::SysctlDir;
/// let conf = SysctlDir::open(ns, "net.ipv6.conf")?;
/// conf.write(&["eth0", "disable_ipv6"], "1")?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct SysctlDir {
    ns: Netns,
    dir: OwnedFd,
    path: PathBuf,
}

impl SysctlDir {
    /// Opens the directory of the dotted `key` (`net.ipv6.conf`) inside `ns`.
    pub fn open(ns: &Netns, key: &str) -> Result<Self> {
        let path = path_of(key)?;
        let p = path.clone();
        let dir = run_in(ns.fd().as_raw_fd(), move || {
            std::fs::File::open(&p).map(OwnedFd::from)
        })
        .map_err(|source| SysError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            ns: ns.clone(),
            dir,
            path,
        })
    }

    /// Writes `value` to the file `components` name under this directory (`["eth0",
    /// "disable_ipv6"]`; components, not a dotted key, as link names may hold dots).
    pub fn write(&self, components: &[&str], value: &str) -> Result<()> {
        if components.is_empty() {
            return Err(SysError::Invalid {
                field: "sysctl",
                value: String::new(),
                reason: "no file named",
            });
        }
        let mut rel = PathBuf::new();
        for c in components {
            if c.is_empty() || *c == "." || *c == ".." || c.contains('/') {
                return Err(SysError::Invalid {
                    field: "sysctl",
                    value: components.join("/"),
                    reason: "each component must be a plain file name",
                });
            }
            rel.push(c);
        }
        let path = self.path.join(&rel);
        let io = |source| SysError::Io {
            path: path.clone(),
            source,
        };
        // The write may run on the namespace helper thread, and what it runs must own what
        // it uses: a descriptor of its own.
        let dir = self.dir.try_clone().map_err(io)?;
        let value = value.to_string();
        run_in(self.ns.fd().as_raw_fd(), move || {
            let fd = openat(
                &dir,
                &rel,
                OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(std::io::Error::from)?;
            std::fs::File::from(fd).write_all(value.as_bytes())
        })
        .map_err(io)
    }
}
