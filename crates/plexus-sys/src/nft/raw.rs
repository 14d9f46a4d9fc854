//! The raw nf_tables connection: a `NETLINK_NETFILTER` socket born inside one namespace,
//! atomic batches and dumps.

use std::io;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Mutex;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::wire::batch::{self, Batch, Op};
use super::wire::{self, nlm};
use crate::error::{libc_errno, Result, SysError};
use crate::netns::Netns;

/// Sequence numbers: each request takes a block, so replies of different requests never mix.
static SEQ: AtomicU32 = AtomicU32::new(1);
const SEQ_BLOCK: u32 = 1 << 16;
const RECV_BUF: usize = 256 * 1024;

/// A connection to nf_tables in one namespace.
pub struct Nft {
    /// Never dropped in place: [`Drop`] hands it to the closing thread.
    sock: Mutex<ManuallyDrop<Socket>>,
    ns: Netns,
    /// How deletions are sent: see `compat.rs`.
    pub(crate) delete_mode: AtomicU8,
}

impl Drop for Nft {
    /// The socket is closed on a background thread: releasing an nf_tables socket waits
    /// for the kernel to finish freeing recently committed transactions (an RCU grace
    /// period, whoever committed them), which would otherwise land on the caller's path.
    fn drop(&mut self) {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let sock = self.sock.get_mut().unwrap_or_else(|p| p.into_inner());
        // SAFETY: taken once, here, as the handle goes; nothing uses the field afterwards.
        let sock = unsafe { ManuallyDrop::take(sock) };
        // The socket's only descriptor moves to the closing thread, so the release (the
        // last reference going) happens there and not here.
        // SAFETY: `sock` owns the descriptor and is forgotten, so it is owned once.
        let fd = unsafe { OwnedFd::from_raw_fd(sock.as_raw_fd()) };
        std::mem::forget(sock);
        closer::close_later(fd);
    }
}

/// Closes descriptors off the caller's path, on one thread made on first use.
mod closer {
    use std::os::fd::OwnedFd;
    use std::sync::mpsc::{channel, Sender};
    use std::sync::{Mutex, OnceLock};

    static CLOSER: OnceLock<Option<Mutex<Sender<OwnedFd>>>> = OnceLock::new();

    /// Hands `fd` to the closing thread; closes it here if there is none.
    pub(super) fn close_later(fd: OwnedFd) {
        let closer = CLOSER.get_or_init(|| {
            let (tx, rx) = channel::<OwnedFd>();
            std::thread::Builder::new()
                .name("nft-close".into())
                .spawn(move || rx.into_iter().for_each(drop))
                .ok()
                .map(|_| Mutex::new(tx))
        });
        if let Some(tx) = closer {
            let tx = tx.lock().unwrap_or_else(|p| p.into_inner());
            // A send fails only if the thread is gone; the descriptor is then dropped here.
            let _ = tx.send(fd);
        }
    }
}

impl std::fmt::Debug for Nft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nft")
            .field("netns", &self.ns.path())
            .finish()
    }
}

fn open_socket() -> io::Result<Socket> {
    let mut s = Socket::new(NETLINK_NETFILTER)?;
    s.bind_auto()?;
    s.connect(&SocketAddr::new(0, 0))?;
    let _ = s.set_rx_buf_sz(1 << 20);
    nix::sys::socket::setsockopt(
        &s,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(5, 0),
    )
    .map_err(io::Error::from)?;
    Ok(s)
}

/// Maps the kernel's errno for `op` to the most precise error.
pub(crate) fn kernel_error(op: &str, errno: i32) -> SysError {
    match errno {
        libc_errno::EEXIST => SysError::Exists { what: op.into() },
        libc_errno::ENOENT => SysError::NotFound { what: op.into() },
        libc_errno::EOPNOTSUPP | nix::libc::EAFNOSUPPORT | nix::libc::EPROTONOSUPPORT => {
            SysError::Unsupported {
                feature: format!("nf_tables: {op}"),
                hint: "the kernel lacks nf_tables or one of its parts (nft_nat, nft_masq, nft_redir, nft_ct, nft_fib, nft_numgen, nft_hash, nft_chain_nat, the bridge family: CONFIG_NF_TABLES_BRIDGE)".into(),
            }
        }
        _ => SysError::Netlink {
            op: op.into(),
            message: io::Error::from_raw_os_error(errno).to_string(),
            errno: Some(errno),
        },
    }
}

fn io_error(op: &str, e: io::Error) -> SysError {
    SysError::Netlink {
        op: op.into(),
        message: e.to_string(),
        errno: e.raw_os_error(),
    }
}

/// Grows the socket's send buffer for a large batch: the kernel refuses a `sendmsg` larger
/// than the send buffer (`EMSGSIZE`). As nft does, `SO_SNDBUFFORCE` passes
/// `net.core.wmem_max` (with `CAP_NET_ADMIN`); without it the plain option is tried, and a
/// batch too large for it fails as before.
fn fit_send_buffer(sock: &Socket, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    // Below the default (`net.core.wmem_default`, about 208 KiB) nothing is needed.
    const DEFAULT: usize = 200 * 1024;
    if bytes > DEFAULT {
        let want = bytes + 64 * 1024;
        if setsockopt(sock, sockopt::SndBufForce, &want).is_err() {
            let _ = setsockopt(sock, sockopt::SndBuf, &want);
        }
    }
}

fn code_of(payload: &[u8]) -> i32 {
    payload
        .get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

impl Nft {
    /// Opens a `NETLINK_NETFILTER` socket inside `ns` (on a short-lived thread there), so
    /// everything sent through it programs that namespace's nf_tables.
    pub fn open(ns: &Netns) -> Result<Self> {
        let sock = ns.run(open_socket)?.map_err(|source| SysError::Netns {
            path: ns.path().to_path_buf(),
            op: "open nf_tables netlink socket",
            source,
        })?;
        Ok(Self {
            sock: Mutex::new(ManuallyDrop::new(sock)),
            ns: ns.clone(),
            delete_mode: AtomicU8::new(super::compat::initial_delete_mode()),
        })
    }

    /// The namespace it programs.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// A new, empty batch for [`apply`](Self::apply).
    pub fn batch(&self) -> Batch {
        Batch::new()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManuallyDrop<Socket>> {
        // A panic while holding the lock leaves nothing half-done on the socket we rely on:
        // every call drains its replies, so a poisoned lock is safe to reuse.
        self.sock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a batch and waits for the kernel's verdict: all of it applied, or none of it and
    /// the error of the first message that failed (naming the object). On a kernel without
    /// `NFT_MSG_DESTROY*` the batch's `destroy_*` become deletions of the objects present.
    pub fn apply(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        if batch.has_destroys() && !self.has_destroy()? {
            return self.apply_without_destroy(&batch);
        }
        self.send_ops(&batch.ops)
    }

    /// Sends `ops` as one batch.
    pub(crate) fn send_ops(&self, ops: &[Op]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let (buf, described) = batch::encode(ops, SEQ.fetch_add(SEQ_BLOCK, Ordering::Relaxed));
        let sock = self.lock();
        fit_send_buffer(&sock, buf.len());
        sock.send(&buf, 0)
            .map_err(|e| io_error("send nf_tables batch", e))?;
        // The kernel handles a batch inside sendmsg: every reply is queued by now. Only the
        // last message asks for an ack (see `batch::encode`); errors always come.
        let mut rx = Vec::with_capacity(RECV_BUF);
        let mut first_error: Option<(u32, i32)> = None;
        let mut acks = 0usize;
        let mut overflowed = false;
        loop {
            rx.clear();
            match sock.recv(&mut rx, nix::libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Replies were dropped (a batch failing in many messages echoes each):
                // read on for the ones that remain.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    overflowed = true;
                    continue;
                }
                Err(e) => return Err(io_error("read nf_tables replies", e)),
            }
            for m in wire::messages(&rx) {
                if m.ty != nlm::ERROR || m.payload.len() < 4 {
                    continue;
                }
                let code = code_of(m.payload);
                if code == 0 {
                    acks += 1;
                } else if first_error.is_none() {
                    first_error = Some((m.seq, -code));
                }
            }
        }
        if let Some((seq, errno)) = first_error {
            let op = described
                .iter()
                .find(|(s, _)| *s == seq)
                .map(|(_, op)| op.clone())
                .unwrap_or_else(|| "nf_tables batch".to_string());
            tracing::debug!(netns = %self.ns.path().display(), %op, errno, "nf_tables batch refused");
            return Err(kernel_error(&op, errno));
        }
        if acks == 0 {
            let what = if overflowed {
                "replies were lost (receive buffer overflow)"
            } else {
                "no acknowledgement"
            };
            return Err(SysError::Netlink {
                op: "apply nf_tables batch".into(),
                message: format!("{what}: whether it applied is unknown"),
                errno: None,
            });
        }
        tracing::trace!(netns = %self.ns.path().display(), messages = ops.len(), "nf_tables batch applied");
        Ok(())
    }

    /// Runs a dump and returns the payloads (after the nfgenmsg header) with their family.
    pub(crate) fn dump(
        &self,
        op: &str,
        m: u8,
        family: u8,
        f: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Vec<(u8, Vec<u8>)>> {
        let seq = SEQ.fetch_add(SEQ_BLOCK, Ordering::Relaxed);
        let req = wire::request(m, nlm::DUMP, family, seq, f);
        let sock = self.lock();
        sock.send(&req, 0).map_err(|e| io_error(op, e))?;
        let mut out = Vec::new();
        let mut rx = Vec::with_capacity(RECV_BUF);
        loop {
            rx.clear();
            match sock.recv(&mut rx, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(op, e)),
            }
            for m in wire::messages(&rx) {
                if m.seq != seq {
                    continue; // a stale reply of an earlier request
                }
                match m.ty {
                    nlm::DONE => return Ok(out),
                    nlm::NOOP => {}
                    nlm::ERROR => {
                        let code = code_of(m.payload);
                        if code == 0 {
                            return Ok(out);
                        }
                        return Err(kernel_error(op, -code));
                    }
                    _ if m.payload.len() >= 4 => {
                        out.push((m.payload[0], m.payload[4..].to_vec()));
                    }
                    _ => {}
                }
            }
        }
    }
}
