//! The client's I/O: a packet socket on the parent interface, and the loop that drives one
//! [`Exchange`] over it.
//!
//! Why a packet socket (`AF_PACKET`, whole Ethernet frames) rather than a UDP socket on port
//! 68: the client speaks for an endpoint whose address lives in its sandbox, from the host's
//! side of a parent that may hold no IPv4 address at all. The IP stack of the host would drop
//! the server's broadcast answers there (no address, reverse-path filtering), and could not
//! give the frames the endpoint's MAC as their source. The packet socket is bound to the
//! parent with `ETH_P_ALL`, so it sees frames before macvlan devices or a bridge take them,
//! and carries a classic BPF filter ([`crate::frame::FILTER`]) so that only DHCP client
//! traffic wakes it. It is made inside the namespace of the parents (the host's), through
//! `plexus_sys::netns`, and lives for one exchange.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use dhcproto::v4::Message;
use dhcproto::{Decodable, Encodable};
use plexus_sys::netns::Netns;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

use crate::client::{Exchange, Failure, Identity, Outcome};
use crate::error::{DhcpError, Result};
use crate::frame::{self, BROADCAST_MAC};

/// A packet socket on one interface.
pub struct Link {
    name: String,
    ifindex: i32,
    fd: AsyncFd<OwnedFd>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .finish()
    }
}

fn os_err(interface: &str, op: &'static str) -> DhcpError {
    DhcpError::Io {
        interface: interface.to_string(),
        op,
        message: std::io::Error::last_os_error().to_string(),
    }
}

/// Opens the filtered packet socket on `name`, in the calling thread's namespace.
fn open_here(name: &str) -> Result<(i32, OwnedFd)> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| DhcpError::invalid("parent", name, "contains a NUL byte"))?;
    // SAFETY: `cname` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if ifindex == 0 {
        return Err(DhcpError::invalid(
            "parent",
            name,
            "no such interface in the host namespace",
        ));
    }
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| DhcpError::invalid("parent", name, "interface index out of range"))?;
    // Protocol 0 first: the socket receives nothing until it is filtered and bound.
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if raw < 0 {
        return Err(os_err(name, "open a packet socket"));
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut prog: Vec<libc::sock_filter> = frame::filter_program()
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `prog`, alive for the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(os_err(name, "attach the DHCP socket filter"));
    }
    // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter are set below.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` is a valid sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(os_err(name, "bind the packet socket"));
    }
    Ok((ifindex, fd))
}

impl Link {
    /// The packet socket on interface `name` of namespace `netns` (`None`: the calling
    /// process's own).
    pub async fn open(netns: Option<&Netns>, name: &str) -> Result<Self> {
        let owned = name.to_string();
        let (ifindex, fd) = match netns {
            Some(ns) => ns
                .run_async(move || open_here(&owned))
                .await
                .map_err(|e| DhcpError::Io {
                    interface: name.to_string(),
                    op: "enter the host namespace",
                    message: e.to_string(),
                })??,
            None => open_here(name)?,
        };
        // SAFETY: `fd` is an open descriptor owned by the AsyncFd from here on, so it stays
        // open and the same for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(|e| DhcpError::Io {
            interface: name.to_string(),
            op: "register the packet socket",
            message: e.into_parts().1.to_string(),
        })?;
        Ok(Self {
            name: name.to_string(),
            ifindex,
            fd,
        })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends one whole frame.
    pub async fn send(&self, frame: &[u8]) -> Result<()> {
        loop {
            let mut guard = self
                .fd
                .writable()
                .await
                .map_err(|e| self.io("wait to send", e))?;
            // SAFETY: `frame` is a valid buffer of its length; the socket is bound.
            let rc = guard.try_io(|fd| {
                let n =
                    unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n)
                }
            });
            match rc {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(self.io("send", e)),
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives one frame that passed the filter into `buf`; its length.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(|e| self.io("wait to receive", e))?;
            // SAFETY: `buf` is a valid writable buffer of its length.
            let rc = guard.try_io(|fd| {
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match rc {
                Ok(Ok(n)) => return Ok(n),
                Ok(Err(e)) => return Err(self.io("receive", e)),
                Err(_would_block) => continue,
            }
        }
    }

    fn io(&self, op: &'static str, e: std::io::Error) -> DhcpError {
        DhcpError::Io {
            interface: self.name.clone(),
            op,
            message: e.to_string(),
        }
    }
}

/// What a successful exchange gave, with the MAC of the frame that carried the answer (where
/// the release goes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The offer or lease.
    pub outcome: Outcome,
    /// The Ethernet source of the answer.
    pub server_mac: [u8; 6],
}

/// Drives `exchange` over `link` until it ends: sends what it asks for (broadcast, with the
/// endpoint's MAC as the frame's source), feeds it the answers and the time.
pub async fn run(link: &Link, identity: &Identity, mut exchange: Exchange) -> Result<Answered> {
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut server_mac = BROADCAST_MAC;
    loop {
        while let Some(msg) = exchange.poll_transmit() {
            send_message(
                link,
                identity,
                &msg,
                BROADCAST_MAC,
                Ipv4Addr::BROADCAST,
                Ipv4Addr::UNSPECIFIED,
            )
            .await?;
        }
        if let Some(result) = exchange.result() {
            return match result.clone() {
                Ok(outcome) => Ok(Answered {
                    outcome,
                    server_mac,
                }),
                Err(f) => Err(failure(link.name(), f)),
            };
        }
        let Some(wake) = exchange.poll_timeout() else {
            continue;
        };
        let deadline = start + wake;
        tokio::select! {
            got = link.recv(&mut buf) => {
                let n = got?;
                let Some(rx) = buf.get(..n).and_then(frame::decode) else { continue };
                let Ok(msg) = Message::from_bytes(rx.payload) else { continue };
                exchange.handle_reply(start.elapsed(), &msg);
                if exchange.result().is_some() {
                    server_mac = rx.src_mac;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                exchange.handle_timeout(start.elapsed().max(wake));
            }
        }
    }
}

/// Sends one DHCP message in a frame from the endpoint's MAC.
pub async fn send_message(
    link: &Link,
    identity: &Identity,
    msg: &Message,
    dst_mac: [u8; 6],
    dst_ip: Ipv4Addr,
    src_ip: Ipv4Addr,
) -> Result<()> {
    let payload = msg
        .to_vec()
        .map_err(|e| DhcpError::invalid("DHCP message", format!("{msg:?}"), e.to_string()))?;
    let f = frame::encode(identity.mac, dst_mac, src_ip, dst_ip, &payload);
    link.send(&f).await
}

/// The error of a failed exchange on `interface`.
pub fn failure(interface: &str, f: Failure) -> DhcpError {
    match f {
        Failure::Timeout {
            stage,
            sent,
            waited,
        } => DhcpError::Timeout {
            interface: interface.to_string(),
            waited: round(waited),
            what: stage.sends(),
            sent,
            expected: stage.awaits(),
        },
        Failure::Refused {
            server,
            address,
            message,
        } => DhcpError::Refused {
            interface: interface.to_string(),
            server,
            address,
            message,
        },
        Failure::NotOffered { requested, offered } => DhcpError::NotOffered {
            interface: interface.to_string(),
            requested,
            offered,
        },
    }
}

/// `d` to the tenth of a second, for messages.
fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}
