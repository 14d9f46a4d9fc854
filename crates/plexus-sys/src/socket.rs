//! A netlink socket born inside a chosen namespace.
//!
//! rtnetlink makes its socket through `AsyncSocket::new`, in whatever namespace the calling
//! thread is in. [`NsSocket::new`] instead makes it on a helper thread inside the namespace
//! named by [`with_target`], then hands it to tokio like any socket: the socket keeps talking to
//! that namespace, and no tokio worker ever changes namespace.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::task::{Context, Poll};

use netlink_sys::{AsyncSocket, Socket, SocketAddr, TokioSocket};

thread_local! {
    static TARGET: Cell<Option<RawFd>> = const { Cell::new(None) };
}

/// Runs `f` (which makes an [`NsSocket`]) with sockets born in the namespace open at `fd`.
pub(crate) fn with_target<T>(fd: RawFd, f: impl FnOnce() -> T) -> T {
    struct Reset(Option<RawFd>);
    impl Drop for Reset {
        fn drop(&mut self) {
            TARGET.with(|t| t.set(self.0));
        }
    }
    let _reset = Reset(TARGET.with(|t| t.replace(Some(fd))));
    f()
}

/// A tokio netlink socket made inside the target namespace.
pub struct NsSocket(TokioSocket);

fn socket_in(fd: RawFd, protocol: isize) -> io::Result<Socket> {
    netns_helper::run_in(fd, move || Socket::new(protocol))
}

/// One long-lived thread that makes sockets inside other namespaces: it enters the target,
/// runs the job and goes back home. Spawning a thread per socket cost more than the rest of
/// a typical netlink exchange. A helper that cannot go back home ends itself, and the next
/// call starts a fresh one.
pub(crate) mod netns_helper {
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsFd, BorrowedFd, RawFd};
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Mutex, PoisonError};

    use nix::sched::{setns, CloneFlags};

    type Job = Box<dyn FnOnce(&File) -> bool + Send>;

    static HELPER: Mutex<Option<Sender<Job>>> = Mutex::new(None);

    fn start() -> io::Result<Sender<Job>> {
        let (tx, rx) = channel::<Job>();
        let (ready_tx, ready) = channel();
        std::thread::Builder::new()
            .name("plexus-netns".into())
            .spawn(move || {
                let home = match File::open("/proc/thread-self/ns/net") {
                    Ok(f) => {
                        let _ = ready_tx.send(Ok(()));
                        f
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for job in rx {
                    if !job(&home) {
                        // Stuck in a foreign namespace: this thread must not run more jobs.
                        return;
                    }
                }
            })?;
        ready
            .recv()
            .map_err(|_| io::Error::other("netns helper thread died"))??;
        Ok(tx)
    }

    /// Whether `target` is the calling thread's network namespace (same inode).
    fn is_current(target: BorrowedFd<'_>) -> bool {
        let Ok(here) = nix::sys::stat::stat("/proc/thread-self/ns/net") else {
            return false;
        };
        nix::sys::stat::fstat(target)
            .map(|t| t.st_dev == here.st_dev && t.st_ino == here.st_ino)
            .unwrap_or(false)
    }

    /// Runs `f` inside the namespace open at `fd` (the caller keeps it open until this
    /// returns) and returns its result.
    pub(crate) fn run_in<T: Send + 'static>(
        fd: RawFd,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        // SAFETY: as below, the caller keeps `fd` open for the call.
        if is_current(unsafe { BorrowedFd::borrow_raw(fd) }) {
            // Already there (the daemon's own namespace): no hop to the helper.
            return f();
        }
        let (reply_tx, reply) = channel();
        let job: Job = Box::new(move |home: &File| {
            // SAFETY: the caller keeps `fd` open until it has our reply.
            let target = unsafe { BorrowedFd::borrow_raw(fd) };
            let result = setns(target, CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)
                .and_then(|()| f());
            let back = setns(home.as_fd(), CloneFlags::CLONE_NEWNET).is_ok();
            let _ = reply_tx.send(result);
            back
        });
        {
            let mut helper = HELPER.lock().unwrap_or_else(PoisonError::into_inner);
            let sender = match helper.take() {
                Some(s) => s,
                None => start()?,
            };
            match sender.send(job) {
                Ok(()) => *helper = Some(sender),
                Err(e) => {
                    // The helper ended: start another one for this job.
                    let fresh = start()?;
                    fresh
                        .send(e.0)
                        .map_err(|_| io::Error::other("netns helper thread died"))?;
                    *helper = Some(fresh);
                }
            }
        }
        reply
            .recv()
            .map_err(|_| io::Error::other("netns helper thread died"))?
    }
}

impl AsyncSocket for NsSocket {
    fn socket_ref(&self) -> &Socket {
        self.0.socket_ref()
    }

    fn socket_mut(&mut self) -> &mut Socket {
        self.0.socket_mut()
    }

    fn new(protocol: isize) -> io::Result<Self> {
        let socket = match TARGET.with(|t| t.get()) {
            Some(fd) => socket_in(fd, protocol)?,
            None => Socket::new(protocol)?,
        };
        socket.set_non_blocking(true)?;
        // Registering with the reactor needs a runtime: callers are async.
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other("netlink sockets need a tokio runtime"));
        }
        let raw = socket.into_raw_fd();
        // SAFETY: `raw` is a netlink socket we own; TokioSocket takes it over.
        Ok(Self(unsafe { TokioSocket::from_raw_fd(raw) }))
    }

    fn poll_send(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.poll_send(cx, buf)
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        addr: &SocketAddr,
    ) -> Poll<io::Result<usize>> {
        self.0.poll_send_to(cx, buf, addr)
    }

    fn poll_recv<B>(&self, cx: &mut Context<'_>, buf: &mut B) -> Poll<io::Result<()>>
    where
        B: bytes::BufMut,
    {
        self.0.poll_recv(cx, buf)
    }

    fn poll_recv_from<B>(&self, cx: &mut Context<'_>, buf: &mut B) -> Poll<io::Result<SocketAddr>>
    where
        B: bytes::BufMut,
    {
        self.0.poll_recv_from(cx, buf)
    }

    fn poll_recv_from_full(&self, cx: &mut Context<'_>) -> Poll<io::Result<(Vec<u8>, SocketAddr)>> {
        self.0.poll_recv_from_full(cx)
    }
}

impl AsRawFd for NsSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
