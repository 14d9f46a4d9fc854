//! Network namespaces: create (bind-mounted so they outlive their creator), open by path,
//! run code inside one, delete.
//!
//! A thread that enters a namespace is thrown away afterwards: code never switches the
//! namespace of a thread it does not own (least of all a tokio worker). Sockets made inside a
//! namespace stay bound to it wherever they are used afterwards, which is how the rest of the
//! crate talks to a namespace from ordinary async code.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Result, SysError};

// NS_GET_NSTYPE from <linux/nsfs.h>: _IO(0xb7, 0x3), answers the CLONE_NEW* kind of a
// namespace file (Linux 4.11+).
mod nsfs {
    nix::ioctl_none!(ns_get_nstype, 0xb7, 0x3);
}
use nsfs::ns_get_nstype;

/// An open network namespace.
#[derive(Debug, Clone)]
pub struct Netns {
    path: PathBuf,
    file: Arc<File>,
}

fn io_err(path: &Path, op: &'static str, source: std::io::Error) -> SysError {
    SysError::Netns {
        path: path.to_path_buf(),
        op,
        source,
    }
}

fn nix_err(path: &Path, op: &'static str, e: nix::Error) -> SysError {
    io_err(path, op, std::io::Error::from(e))
}

impl Netns {
    /// Creates a new, empty namespace and pins it at `dir/name` with a bind mount, like
    /// `ip netns add` does under `/run/netns`. Fails with [`SysError::Exists`] if the file
    /// exists.
    pub fn create(dir: &Path, name: &str) -> Result<Self> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(SysError::Invalid {
                field: "namespace name",
                value: name.into(),
                reason: "must be a non-empty file name without '/'",
            });
        }
        std::fs::create_dir_all(dir).map_err(|e| io_err(dir, "create directory", e))?;
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(SysError::Exists {
                    what: format!("network namespace {}", path.display()),
                });
            }
            Err(e) => return Err(io_err(&path, "create mount point", e)),
        }
        let target = path.clone();
        let made = std::thread::Builder::new()
            .name("plexus-netns-new".into())
            .spawn(move || -> Result<()> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| nix_err(&target, "unshare", e))?;
                mount(
                    Some(Path::new("/proc/thread-self/ns/net")),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| nix_err(&target, "bind mount", e))
            })
            .map_err(|e| io_err(&path, "spawn thread", e))?
            .join()
            .unwrap_or_else(|_| {
                Err(io_err(
                    &path,
                    "create",
                    std::io::Error::other("thread panicked"),
                ))
            });
        if let Err(e) = made {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Self::open(&path)
    }

    /// Opens an existing namespace by path: a pinned one (`/run/netns/x`) or a process's
    /// (`/proc/PID/ns/net`).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| io_err(path, "open", e))?;
        // Make sure it is a network namespace and not any file: the namespace ioctl answers
        // only on namespace files, and says which kind (no thread has to enter it).
        // SAFETY: NS_GET_NSTYPE takes no argument; `file` is open for the call.
        let kind = unsafe { ns_get_nstype(file.as_raw_fd()) };
        match kind {
            Ok(k) if k == CloneFlags::CLONE_NEWNET.bits() => Ok(Self {
                path: path.to_path_buf(),
                file: Arc::new(file),
            }),
            Ok(_) | Err(nix::Error::ENOTTY) | Err(nix::Error::EINVAL) => Err(SysError::Invalid {
                field: "netns path",
                value: path.display().to_string(),
                reason: "not a network namespace",
            }),
            Err(e) => Err(nix_err(path, "check", e)),
        }
    }

    /// A new namespace pinned only by the returned handle: it disappears with the last clone
    /// (and the last socket made inside). For probing and scratch work.
    pub fn anonymous() -> Result<Self> {
        let path = PathBuf::from("/proc/thread-self/ns/net");
        let file = std::thread::Builder::new()
            .name("plexus-netns-anon".into())
            .spawn(|| -> std::io::Result<File> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                File::open("/proc/thread-self/ns/net")
            })
            .map_err(|e| io_err(&path, "spawn thread", e))?
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("thread panicked")))
            .map_err(|e| io_err(&path, "unshare", e))?;
        Ok(Self {
            path: PathBuf::from("(anonymous)"),
            file: Arc::new(file),
        })
    }

    /// The namespace this process started in.
    pub fn host() -> Result<Self> {
        Self::open(Path::new("/proc/self/ns/net"))
    }

    /// The path it was opened or created at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open namespace file.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `f` on a fresh thread inside this namespace and returns its result. The thread is
    /// discarded afterwards. Sockets and child processes made by `f` belong to the namespace.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = &self.file;
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|e| nix_err(&self.path, "enter", e))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| {
                Err(io_err(
                    &self.path,
                    "run",
                    std::io::Error::other("code run in the namespace panicked"),
                ))
            })
        })
    }

    /// Like [`run`](Self::run), from async code: the blocking part runs on tokio's blocking
    /// pool, never on a worker.
    pub async fn run_async<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let ns = self.clone();
        tokio::task::spawn_blocking(move || ns.run(f))
            .await
            .unwrap_or_else(|e| Err(io_err(&self.path, "run", std::io::Error::other(e))))
    }

    /// Unpins and removes a namespace made by [`create`](Self::create). Its interfaces go
    /// when the last process or socket inside lets go of it. Removing a missing one is not an
    /// error (deletion is idempotent, for clean-up paths).
    pub fn delete(dir: &Path, name: &str) -> Result<()> {
        let path = dir.join(name);
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(nix_err(&path, "unmount", e)),
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, "remove", e)),
        }
    }
}
