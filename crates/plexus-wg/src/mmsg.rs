//! Batches of datagrams for `recvmmsg`/`sendmmsg`: one system call moves many datagrams.
//! Buffers, addresses and headers are allocated once and reused for every batch.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// `slots` buffers of `slot_size` bytes, each with a peer address and a length.
pub(crate) struct Batch {
    buf: Vec<u8>,
    slot_size: usize,
    lens: Vec<usize>,
    addrs: Vec<libc::sockaddr_storage>,
    addr_lens: Vec<libc::socklen_t>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Slots filled (to send) or received.
    len: usize,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` only ever point into this batch's own
// buffers, and are rewritten before each system call.
unsafe impl Send for Batch {}

impl Batch {
    pub(crate) fn new(slots: usize, slot_size: usize) -> Self {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all
        // zeroes is a valid value.
        let (addrs, iovs, hdrs) = unsafe {
            (
                vec![zeroed::<libc::sockaddr_storage>(); slots],
                vec![zeroed::<libc::iovec>(); slots],
                vec![zeroed::<libc::mmsghdr>(); slots],
            )
        };
        Self {
            buf: vec![0; slots * slot_size],
            slot_size,
            lens: vec![0; slots],
            addrs,
            addr_lens: vec![0; slots],
            iovs,
            hdrs,
            len: 0,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.lens.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == self.capacity()
    }

    /// The free slot's buffer, to fill and then [`commit`](Self::commit).
    pub(crate) fn next_buf(&mut self) -> &mut [u8] {
        let at = self.len * self.slot_size;
        &mut self.buf[at..at + self.slot_size]
    }

    /// Marks the free slot as holding `len` bytes for `to`.
    pub(crate) fn commit(&mut self, len: usize, to: SocketAddr) {
        let i = self.len;
        self.lens[i] = len.min(self.slot_size);
        self.addr_lens[i] = write_addr(&mut self.addrs[i], to);
        self.len += 1;
    }

    /// Copies `bytes` into the free slot for `to`; too large a datagram is refused (false).
    pub(crate) fn push(&mut self, bytes: &[u8], to: SocketAddr) -> bool {
        if bytes.len() > self.slot_size || self.is_full() {
            return false;
        }
        self.next_buf()[..bytes.len()].copy_from_slice(bytes);
        self.commit(bytes.len(), to);
        true
    }

    /// Received slot `i`: its bytes, where it came from, and whether it was cut short.
    pub(crate) fn received(&self, i: usize) -> (&[u8], Option<SocketAddr>, bool) {
        let at = i * self.slot_size;
        let truncated = self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (
            &self.buf[at..at + self.lens[i]],
            read_addr(&self.addrs[i]),
            truncated,
        )
    }

    fn prepare(&mut self, lens_from_slots: bool) {
        let base = self.buf.as_mut_ptr();
        for i in 0..self.capacity() {
            let len = if lens_from_slots {
                self.lens[i]
            } else {
                self.slot_size
            };
            self.iovs[i] = libc::iovec {
                // SAFETY: `i * slot_size` is inside `buf`.
                iov_base: unsafe { base.add(i * self.slot_size) }.cast(),
                iov_len: len,
            };
            let hdr = &mut self.hdrs[i];
            hdr.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = if lens_from_slots {
                self.addr_lens[i]
            } else {
                size_of::<libc::sockaddr_storage>() as libc::socklen_t
            };
            hdr.msg_hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
    }

    /// Receives up to a batch without waiting; answers how many came (0: none waiting).
    pub(crate) fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.prepare(false);
        // SAFETY: every header points at this batch's own buffers, which outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.capacity() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.len = 0;
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = (self.hdrs[i].msg_len as usize).min(self.slot_size);
        }
        self.len = n;
        Ok(n)
    }

    /// Sends every filled slot and empties the batch. A datagram the kernel refuses is
    /// skipped; answers how many were refused.
    pub(crate) fn send(&mut self, fd: RawFd) -> usize {
        let total = self.len;
        self.prepare(true);
        let mut at = 0;
        let mut refused = 0;
        while at < total {
            // SAFETY: headers `at..total` point at this batch's own buffers.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.hdrs.as_mut_ptr().add(at),
                    (total - at) as libc::c_uint,
                    0,
                )
            };
            if n > 0 {
                at += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if e.kind() == io::ErrorKind::WouldBlock {
                wait_writable(fd);
                continue;
            }
            // The first datagram failed (no route, ICMP unreachable): skip it.
            tracing::trace!(error = %e, "sendmmsg");
            refused += 1;
            at += 1;
        }
        self.len = 0;
        refused
    }
}

fn wait_writable(fd: RawFd) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, 100) };
}

fn write_addr(storage: &mut libc::sockaddr_storage, addr: SocketAddr) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

fn read_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_goes_out_and_comes_back_whole() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        let mut out = Batch::new(8, 64);
        for i in 0..5u8 {
            assert!(out.push(&[i; 10], to));
        }
        assert!(!out.push(&[0; 65], to), "too large a datagram is refused");
        assert_eq!(out.send(a.as_raw_fd()), 0);
        let mut got = Batch::new(8, 64);
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.len() < 5 && std::time::Instant::now() < deadline {
            let n = got.recv(b.as_raw_fd()).unwrap();
            for i in 0..n {
                let (bytes, from, truncated) = got.received(i);
                assert_eq!(from, Some(a.local_addr().unwrap()));
                assert!(!truncated);
                seen.push(bytes.to_vec());
            }
        }
        let want: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 10]).collect();
        assert_eq!(seen, want);
    }
}
