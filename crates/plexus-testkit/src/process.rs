//! Child processes that cannot outlive the test that started them.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// A child process killed (SIGKILL) and reaped on drop; it also dies with the test process
/// (`PR_SET_PDEATHSIG`), so a panicking or killed test leaves no server behind.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Spawns `cmd` as a guarded child.
    ///
    /// The death signal is tied to the thread that forks; tests run on short-lived threads, so
    /// the fork happens on a thread that lives as long as the process.
    pub fn spawn(cmd: Command) -> io::Result<Self> {
        let child = spawner::spawn(cmd)?;
        Ok(Self { child: Some(child) })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Takes the child's stdout, if it was piped.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.as_mut().and_then(|c| c.stdout.take())
    }

    /// Kills the child with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

mod spawner {
    use super::*;
    use std::sync::mpsc;
    use std::sync::{Mutex, OnceLock};

    type Job = (Command, mpsc::Sender<io::Result<Child>>);

    fn queue() -> &'static Mutex<mpsc::Sender<Job>> {
        static QUEUE: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
        QUEUE.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("testkit-spawner".into())
                .spawn(move || {
                    for (mut cmd, reply) in rx {
                        // SAFETY: prctl is async-signal-safe; nothing else runs between fork
                        // and exec.
                        unsafe {
                            cmd.pre_exec(|| {
                                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                    return Err(io::Error::last_os_error());
                                }
                                Ok(())
                            });
                        }
                        let _ = reply.send(cmd.spawn());
                    }
                    // Keep this thread alive: its exit would kill every child.
                    loop {
                        std::thread::park();
                    }
                })
                .map(|_| ())
                .unwrap_or_else(|e| panic!("cannot start the spawner thread: {e}"));
            Mutex::new(tx)
        })
    }

    pub fn spawn(cmd: Command) -> io::Result<Child> {
        let (tx, rx) = mpsc::channel();
        queue()
            .lock()
            .map_err(|_| io::Error::other("spawner poisoned"))?
            .send((cmd, tx))
            .map_err(|_| io::Error::other("spawner gone"))?;
        rx.recv().map_err(|_| io::Error::other("spawner gone"))?
    }
}

/// Kills the embedded DNS resolver that a plexusd with `run_dir` started (it outlives plexusd
/// by design, so a test that ends must end it): the pid in `<run_dir>/dns/resolver.pid`, if
/// that process is still `plexusd --internal-resolver`.
pub fn kill_resolver(run_dir: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(run_dir.join("dns").join("resolver.pid")) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == b"--internal-resolver")
    {
        // SAFETY: kill(2) with a pid and a signal number has no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Makes `cmd` run in the network namespace `netns` (a file descriptor of `/proc/…/ns/net` or
/// a bind-mounted namespace): the child calls `setns` between fork and exec. `netns` must
/// stay open until `cmd` is spawned.
pub fn in_netns<'c>(cmd: &'c mut Command, netns: std::os::fd::BorrowedFd<'_>) -> &'c mut Command {
    use std::os::fd::AsRawFd;
    let fd = netns.as_raw_fd();
    // SAFETY: only setns, async-signal-safe, runs between fork and exec; the descriptor is
    // the caller's and open until the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })
    }
}
