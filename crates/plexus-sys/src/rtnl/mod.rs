//! Links, addresses, routes, policy-routing rules and neighbours of one namespace, through
//! rtnetlink: the connection ([`Rtnl`]) here, its requests by kind in `links`, `addresses`,
//! `routes` (of the main table or another), `rules` and `neighbours` (forwarding-database
//! entries included), and links made on top of another (macvlan, ipvlan, 802.1q, dummy) in
//! `sublinks`.

mod addresses;
mod links;
mod neighbours;
mod routes;
mod rules;
mod sublinks;
mod vxlan;

pub use links::{BridgeSpec, Link, PortFlags, VethPair};
pub use neighbours::Neighbour;
pub use routes::Route;
pub use rules::FibRule;
pub use sublinks::{IpvlanFlag, IpvlanMode, MacvlanMode, SubLink, SubLinkKind, MAX_VLAN_ID};
pub use vxlan::{VxlanSpec, MAX_VNI, VXLAN_OVERHEAD, VXLAN_PORT};

use std::os::fd::AsRawFd;

use rtnetlink::Handle;

use crate::error::{Result, SysError};
use crate::netns::Netns;
use crate::socket::{with_target, NsSocket};
use crate::sysctl;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Index of `lo` in every network namespace (the kernel registers it first, as index 1).
pub const LOOPBACK_IFINDEX: u32 = 1;

/// The largest GSO/GRO packet every kernel and device takes (64 KiB): the kernel's default.
pub const GSO_LEGACY_MAX_SIZE: u32 = 65_536;

/// The largest GSO/GRO packet ("BIG TCP") a veth takes on kernels that have BIG TCP
/// (IPv6 since 5.19, IPv4 since 6.3): the kernel's `GSO_MAX_SIZE`.
pub const GSO_MAX_SIZE: u32 = 524_280;

/// Checks an interface name the way the kernel will (`dev_valid_name`), so the error names
/// the field.
pub fn check_ifname(field: &'static str, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_IFNAME {
        Some("is longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is reserved")
    } else if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || kernel_isspace(b) || b == 0)
    {
        Some("must not contain '/', ':' or spaces")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SysError::Invalid {
            field,
            value: name.into(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The kernel's `isspace` (`lib/ctype.c`, Latin-1): tab, newline, vertical tab, form feed,
/// carriage return, space and no-break space (0xa0, a byte of UTF-8 `U+00A0`, `à`, `Ġ`…).
/// Rust's `is_ascii_whitespace` leaves out the vertical tab and 0xa0.
fn kernel_isspace(b: u8) -> bool {
    matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0xa0)
}

/// How a request names the link it changes: by index, or by name (no lookup first).
#[derive(Debug, Clone, Copy)]
enum LinkRef<'a> {
    Index(u32),
    Name(&'a str),
}

/// Aborts the connection task when the last clone of an [`Rtnl`] goes.
struct ConnectionTask(tokio::task::JoinHandle<()>);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A netlink connection to one namespace. Clones share the connection; requests from
/// several tasks may be in flight at once.
#[derive(Clone)]
pub struct Rtnl {
    handle: Handle,
    ns: Netns,
    /// `/proc/sys/net/ipv6/conf` of `ns`, opened at the first veth pair that finds it.
    ipv6_conf: std::sync::Arc<tokio::sync::OnceCell<sysctl::SysctlDir>>,
    _connection: std::sync::Arc<ConnectionTask>,
}

impl Rtnl {
    /// Connects to `ns`. Must be called from within a tokio runtime.
    pub async fn connect(ns: &Netns) -> Result<Self> {
        let fd = ns.fd().as_raw_fd();
        let (connection, handle, _) =
            with_target(fd, rtnetlink::new_connection_with_socket::<NsSocket>).map_err(|e| {
                SysError::Netns {
                    path: ns.path().to_path_buf(),
                    op: "open netlink socket",
                    source: e,
                }
            })?;
        let connection = tokio::spawn(connection);
        Ok(Self {
            handle,
            ns: ns.clone(),
            ipv6_conf: Default::default(),
            _connection: std::sync::Arc::new(ConnectionTask(connection)),
        })
    }

    /// The namespace this connection talks to.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }
}

/// A hardware address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked_as_the_kernel_does() {
        for ok in ["eth0", "tpc1", "a", "veth-1_x.2", "123456789012345", "é"] {
            assert!(check_ifname("name", ok).is_ok(), "{ok:?}");
        }
        // The kernel's isspace has the vertical tab and 0xa0 (as in UTF-8 "à" and U+00A0),
        // which a network plugin's Join answer reached the kernel with (fuzz: plugin_answer).
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\x0bb",
            "v\u{e0}",
            "a\u{a0}b",
            "a\0",
            "1234567890123456",
        ] {
            let e = check_ifname("SrcName", bad).unwrap_err().to_string();
            assert!(e.contains("SrcName"), "{bad:?}: {e}");
        }
    }
}
