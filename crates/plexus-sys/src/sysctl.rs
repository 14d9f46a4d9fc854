//! Per-namespace sysctls (`/proc/sys/net/...`), written from inside the namespace.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    run_at(ns, &path, move || std::fs::write(&p, value))
}

/// Reads the sysctl `key` inside `ns`, trimmed.
pub fn read(ns: &Netns, key: &str) -> Result<String> {
    let path = path_of(key)?;
    let p = path.clone();
    run_at(ns, &path, move || std::fs::read_to_string(&p)).map(|s| s.trim().to_string())
}

/// Runs `f` inside `ns` (on the helper thread unless this thread is there); an error names
/// `path`.
fn run_at<T: Send + 'static>(
    ns: &Netns,
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    run_in(ns.fd().as_raw_fd(), f).map_err(|source| SysError::Io {
        path: path.to_path_buf(),
        source,
    })
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
    dir: Arc<OwnedFd>,
    path: PathBuf,
}

impl SysctlDir {
    /// Opens the directory of the dotted `key` (`net.ipv6.conf`) inside `ns`.
    pub fn open(ns: &Netns, key: &str) -> Result<Self> {
        let path = path_of(key)?;
        let p = path.clone();
        let dir = run_at(ns, &path, move || {
            std::fs::File::open(&p).map(OwnedFd::from)
        })?;
        Ok(Self {
            ns: ns.clone(),
            dir: Arc::new(dir),
            path,
        })
    }

    /// Writes `value` to the file `components` name under this directory (`["eth0",
    /// "disable_ipv6"]`; components, not a dotted key, as link names may hold dots).
    pub fn write(&self, components: &[&str], value: &str) -> Result<()> {
        let (rel, path) = self.file(components)?;
        // What runs in the namespace must own what it uses: the directory is shared, not
        // duplicated.
        let dir = Arc::clone(&self.dir);
        let value = value.to_string();
        run_at(&self.ns, &path, move || {
            let fd = openat(
                dir.as_ref(),
                &rel,
                OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(std::io::Error::from)?;
            std::fs::File::from(fd).write_all(value.as_bytes())
        })
    }

    /// Reads the file `components` name under this directory, trimmed (`["eth0",
    /// "rp_filter"]`).
    pub fn read(&self, components: &[&str]) -> Result<String> {
        let (rel, path) = self.file(components)?;
        let dir = Arc::clone(&self.dir);
        run_at(&self.ns, &path, move || {
            let fd = openat(
                dir.as_ref(),
                &rel,
                OFlag::O_RDONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(std::io::Error::from)?;
            std::io::read_to_string(std::fs::File::from(fd))
        })
        .map(|s| s.trim().to_string())
    }

    /// The file's path relative to the directory, and its full path (for errors).
    fn file(&self, components: &[&str]) -> Result<(PathBuf, PathBuf)> {
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
        Ok((rel, path))
    }
}
