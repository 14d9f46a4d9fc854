//! A netlink socket born inside a chosen namespace.
//!
//! rtnetlink makes its socket through `AsyncSocket::new`, in whatever namespace the calling
//! thread is in. [`NsSocket::new`] instead makes it on a short-lived thread inside the namespace
//! named by [`with_target`], then hands it to tokio like any socket: the socket keeps talking to
//! that namespace, and no tokio worker ever changes namespace.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::task::{Context, Poll};

use netlink_sys::{AsyncSocket, Socket, SocketAddr, TokioSocket};
use nix::sched::{setns, CloneFlags};

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
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: the caller keeps the namespace file open for the whole call.
            let ns = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Socket::new(protocol)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netlink socket thread panicked")))
    })
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
