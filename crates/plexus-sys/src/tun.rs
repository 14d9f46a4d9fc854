//! TUN devices: a layer-3 interface whose packets a process reads and writes through
//! `/dev/net/tun` (the userspace WireGuard data plane is one such process).
//!
//! [`Tun::create`] opens `/dev/net/tun` and names the device with `TUNSETIFF` on a thread
//! inside the target namespace, so the device is born there. The device lives as long as one
//! of its queues (file descriptors) is open: dropping the [`Tun`] removes it, so a failure
//! half-way leaves nothing behind. Addresses, MTU and state are set through
//! [`Rtnl`](crate::rtnl::Rtnl) like any link.
//!
//! ```no_run
//! # fn demo() -> plexus_sys::Result<()> {
//! use plexus_sys::{netns::Netns, tun::{Tun, TunSpec}};
//! let ns = Netns::host()?;
//! let tun = Tun::create(&ns, &TunSpec::new("wg0"))?;
//! assert_eq!(tun.queues().len(), 1);
//! # Ok(()) }
//! ```

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::error::{Result, SysError};
use crate::netns::Netns;
use crate::rtnl::check_ifname;

/// Largest number of queues a multi-queue TUN device takes (the kernel's `MAX_TAP_QUEUES`).
pub const MAX_QUEUES: usize = 256;

const IFF_TUN: i16 = 0x0001;
const IFF_MULTI_QUEUE: i16 = 0x0100;
const IFF_NO_PI: i16 = 0x1000;
const IFF_VNET_HDR: i16 = 0x4000;

mod ioctl {
    /// `struct ifreq` with the `ifr_flags` member.
    #[repr(C)]
    pub struct IfReq {
        pub name: [u8; 16],
        pub flags: i16,
        pub pad: [u8; 22],
    }
    // TUNSETIFF: _IOW('T', 202, int).
    nix::ioctl_write_ptr_bad!(tunsetiff, 0x4004_54ca, IfReq);
}

/// What TUN device to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunSpec<'a> {
    /// The interface's name.
    pub name: &'a str,
    /// How many queues (file descriptors) to open: above one the device is multi-queue
    /// (`IFF_MULTI_QUEUE`), and the kernel spreads flows over the queues.
    pub queues: usize,
    /// Whether every packet read or written is preceded by a `virtio_net_hdr`
    /// (`IFF_VNET_HDR`): the caller then handles offloads (GSO/checksum) itself.
    pub vnet_hdr: bool,
}

impl<'a> TunSpec<'a> {
    /// One queue, no `virtio_net_hdr`: plain IP packets, one per read or write.
    pub fn new(name: &'a str) -> Self {
        Self {
            name,
            queues: 1,
            vnet_hdr: false,
        }
    }
}

/// A TUN device and its open queues. Dropping it closes the queues, which removes the device.
#[derive(Debug)]
pub struct Tun {
    name: String,
    queues: Vec<OwnedFd>,
}

impl Tun {
    /// Makes the TUN device `spec.name` inside `ns`, with no packet-information header
    /// (`IFF_NO_PI`: reads and writes are bare IP packets). The queues are non-blocking.
    /// Errors: [`SysError::Invalid`] naming the field for a bad name or queue count;
    /// [`SysError::Exists`] when a device of another kind (or a TUN device owned by someone
    /// else) has the name; [`SysError::Netlink`] (op `TUNSETIFF …`) for other refusals. On
    /// error nothing is left behind.
    pub fn create(ns: &Netns, spec: &TunSpec<'_>) -> Result<Self> {
        check_ifname("tun name", spec.name)?;
        if spec.queues == 0 || spec.queues > MAX_QUEUES {
            return Err(SysError::Invalid {
                field: "tun queues",
                value: spec.queues.to_string(),
                reason: "must be between 1 and 256",
            });
        }
        let mut flags = IFF_TUN | IFF_NO_PI;
        if spec.queues > 1 {
            flags |= IFF_MULTI_QUEUE;
        }
        if spec.vnet_hdr {
            flags |= IFF_VNET_HDR;
        }
        let name = spec.name.to_string();
        let count = spec.queues;
        let made = ns.run(move || -> Result<Vec<OwnedFd>> {
            let mut queues = Vec::with_capacity(count);
            for _ in 0..count {
                queues.push(open_queue(&name, flags)?);
            }
            Ok(queues)
        })??;
        Ok(Self {
            name: spec.name.to_string(),
            queues: made,
        })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The open queues: read a packet from one, write a packet to any.
    pub fn queues(&self) -> &[OwnedFd] {
        &self.queues
    }

    /// Takes the queues out; the device goes when the last of them is closed.
    pub fn into_queues(self) -> Vec<OwnedFd> {
        self.queues
    }
}

/// Opens `/dev/net/tun` and attaches it to device `name` (made by the first call).
fn open_queue(name: &str, flags: i16) -> Result<OwnedFd> {
    let file = File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|source| SysError::Io {
            path: "/dev/net/tun".into(),
            source,
        })?;
    let mut req = ioctl::IfReq {
        name: [0; 16],
        flags,
        pad: [0; 22],
    };
    // check_ifname bounds the name to 15 bytes: the NUL terminator fits.
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads a `struct ifreq`, which `req` is, alive for the call; the
    // descriptor is open.
    match unsafe { ioctl::tunsetiff(file.as_raw_fd(), &req) } {
        Ok(_) => {}
        Err(nix::Error::EBUSY) | Err(nix::Error::EEXIST) | Err(nix::Error::EINVAL) => {
            // The kernel answers EINVAL when the name belongs to a device of another kind.
            return Err(SysError::Exists {
                what: format!("link {name:?} (not a TUN device this process may attach to)"),
            });
        }
        Err(e) => {
            return Err(SysError::Netlink {
                op: format!("TUNSETIFF tun {name:?}"),
                message: std::io::Error::from(e).to_string(),
                errno: Some(e as i32),
            })
        }
    }
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| SysError::Netlink {
        op: format!("set tun {name:?} non-blocking"),
        message: std::io::Error::from(e).to_string(),
        errno: Some(e as i32),
    })?;
    Ok(OwnedFd::from(file))
}
