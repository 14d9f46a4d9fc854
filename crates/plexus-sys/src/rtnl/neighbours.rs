//! Neighbours: IP neighbours (the ARP and NDP caches) and forwarding-database entries of
//! bridge ports and vxlan devices.

use std::net::IpAddr;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;

use super::{format_mac, Rtnl};
use crate::error::{Result, SysError};

/// A neighbour entry as the kernel reports it: an IP neighbour (ARP or NDP cache, see
/// [`Rtnl::neighbours`]) or a forwarding-database entry of a bridge port or a vxlan device (see
/// [`Rtnl::fdb`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// The link it belongs to.
    pub index: u32,
    /// The IP address: the neighbour's own (IP neighbours), or the remote tunnel endpoint
    /// frames to `mac` are sent to (vxlan FDB entries); `None` for a bridge port's entry.
    pub ip: Option<IpAddr>,
    /// The hardware address.
    pub mac: Option<[u8; 6]>,
    /// Whether the entry is static: added by hand (`NUD_PERMANENT` or `NUD_NOARP`), never
    /// learned, never expired.
    pub fixed: bool,
}

impl Rtnl {
    /// asked or needed (replacing an entry the kernel learned or one set before).
    pub async fn set_neighbour(&self, index: u32, ip: IpAddr, mac: [u8; 6]) -> Result<()> {
        self.handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                SysError::netlink(format!("set neighbour {ip}"), &format!("link {index}"), e)
            })
    }

    /// Deletes the IP neighbour `ip` of link `index`.
    pub async fn delete_neighbour(&self, index: u32, ip: IpAddr) -> Result<()> {
        let family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        let message = neighbour_message(family, index, NeighbourFlags::empty(), None, Some(ip));
        let what = format!("neighbour {ip} of link {index}");
        self.delete_neighbour_message(message, "delete neighbour", &what)
            .await
    }

    async fn delete_neighbour_message(
        &self,
        message: NeighbourMessage,
        op: &str,
        what: &str,
    ) -> Result<()> {
        self.handle
            .neighbours()
            .del(message)
            .execute()
            .await
            .map_err(|e| SysError::netlink(op, what, e))
    }

    /// The IP neighbours (both families) of link `index`.
    pub async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>> {
        let all = self.neighbour_dump(None, index).await?;
        Ok(all
            .iter()
            .filter(|m| matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6))
            .map(neighbour_of)
            .collect())
    }

    /// The neighbour messages of link `index`, of `family` (`None`: the IP families).
    async fn neighbour_dump(
        &self,
        family: Option<AddressFamily>,
        index: u32,
    ) -> Result<Vec<NeighbourMessage>> {
        let mut request = self.handle.neighbours().get();
        if let Some(family) = family {
            request = request.set_address_family(family);
        }
        // The kernel then dumps this link's IP neighbours only; the bridge family's dump
        // ignores it without strict checking, hence the filter below too.
        request
            .message_mut()
            .attributes
            .push(NeighbourAttribute::IfIndex(index));
        let all: Vec<NeighbourMessage> = request
            .execute()
            .try_collect()
            .await
            .map_err(|e| SysError::netlink("list neighbours", &format!("link {index}"), e))?;
        Ok(all
            .into_iter()
            .filter(|m| m.header.ifindex == index)
            .collect())
    }

    /// Adds a static forwarding-database entry on link `index`. For a bridge port
    /// (`remote: None`, set again: replaced) the bridge sends frames for `mac` out of that
    /// port without flooding first, and the entry never ages out; for a vxlan device,
    /// `remote` is the tunnel endpoint frames for `mac` go to (the all-zero MAC: where
    /// broadcast, unknown unicast and multicast go, one entry per remote, appended).
    pub async fn add_fdb(&self, index: u32, mac: [u8; 6], remote: Option<IpAddr>) -> Result<()> {
        use rtnetlink::packet_core::{
            NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE,
            NLM_F_REQUEST,
        };
        use rtnetlink::packet_route::RouteNetlinkMessage;

        let mut message = neighbour_message(
            AddressFamily::Bridge,
            index,
            fdb_owner(remote),
            Some(mac),
            remote,
        );
        let mode = if remote.is_some() {
            // On a vxlan device several remotes may share a MAC (the all-zero one above all),
            // so each is appended.
            message.header.state = NeighbourState::Permanent;
            NLM_F_APPEND
        } else {
            // Static on a bridge port (`NUD_NOARP`): never aged.
            message.header.state = NeighbourState::Noarp;
            NLM_F_REPLACE
        };
        let what = format!("fdb entry {} on link {index}", format_mac(&mac));
        let mut request = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(message));
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | mode;
        let mut handle = self.handle.clone();
        let mut answers = handle
            .request(request)
            .map_err(|e| SysError::netlink("add fdb entry", &what, e))?;
        while let Some(answer) = answers.next().await {
            if let NetlinkPayload::Error(e) = answer.payload {
                return Err(SysError::netlink(
                    "add fdb entry",
                    &what,
                    rtnetlink::Error::NetlinkError(e),
                ));
            }
        }
        Ok(())
    }

    /// Sets the one remote of a unicast `mac` on the vxlan device `index`
    /// (`bridge fdb replace MAC dev VXLAN dst REMOTE self permanent`): frames for `mac` are
    /// sent to the tunnel endpoint `remote`, whatever it was before. Unlike
    /// [`Rtnl::add_fdb`], which appends a remote (frames go to every remote a MAC has), a
    /// MAC that moves to another host never keeps its old one. Idempotent.
    pub async fn set_vxlan_fdb(&self, index: u32, mac: [u8; 6], remote: IpAddr) -> Result<()> {
        use rtnetlink::packet_core::{
            NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST,
        };
        use rtnetlink::packet_route::RouteNetlinkMessage;

        let mut message = neighbour_message(
            AddressFamily::Bridge,
            index,
            NeighbourFlags::Own,
            Some(mac),
            Some(remote),
        );
        message.header.state = NeighbourState::Permanent;
        let what = format!(
            "fdb entry {} dst {remote} on link {index}",
            format_mac(&mac)
        );
        let mut request = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(message));
        request.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        let mut handle = self.handle.clone();
        let mut answers = handle
            .request(request)
            .map_err(|e| SysError::netlink("set fdb entry", &what, e))?;
        while let Some(answer) = answers.next().await {
            if let NetlinkPayload::Error(e) = answer.payload {
                return Err(SysError::netlink(
                    "set fdb entry",
                    &what,
                    rtnetlink::Error::NetlinkError(e),
                ));
            }
        }
        Ok(())
    }

    /// Deletes a forwarding-database entry added with [`Rtnl::add_fdb`].
    pub async fn delete_fdb(&self, index: u32, mac: [u8; 6], remote: Option<IpAddr>) -> Result<()> {
        let message = neighbour_message(
            AddressFamily::Bridge,
            index,
            fdb_owner(remote),
            Some(mac),
            remote,
        );
        let what = format!("fdb entry {} on link {index}", format_mac(&mac));
        self.delete_neighbour_message(message, "delete fdb entry", &what)
            .await
    }

    /// The forwarding-database entries of link `index` (a bridge port or a vxlan device):
    /// what `bridge fdb show dev NAME` lists.
    pub async fn fdb(&self, index: u32) -> Result<Vec<Neighbour>> {
        let all = self
            .neighbour_dump(Some(AddressFamily::Bridge), index)
            .await?;
        Ok(all.iter().map(neighbour_of).collect())
    }
}

/// A neighbour message: `family`, link, flags, and the MAC and IP attributes given.
fn neighbour_message(
    family: AddressFamily,
    index: u32,
    flags: NeighbourFlags,
    mac: Option<[u8; 6]>,
    ip: Option<IpAddr>,
) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = family;
    message.header.ifindex = index;
    message.header.flags = flags;
    if let Some(mac) = mac {
        message
            .attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    }
    if let Some(ip) = ip {
        message
            .attributes
            .push(NeighbourAttribute::Destination(ip.into()));
    }
    message
}

/// Who keeps a forwarding entry: a vxlan device itself (`NTF_SELF`, with a remote), or the
/// bridge of the port (`NTF_MASTER`).
fn fdb_owner(remote: Option<IpAddr>) -> NeighbourFlags {
    if remote.is_some() {
        NeighbourFlags::Own
    } else {
        NeighbourFlags::Controller
    }
}

fn neighbour_of(m: &NeighbourMessage) -> Neighbour {
    let mut n = Neighbour {
        index: m.header.ifindex,
        ip: None,
        mac: None,
        fixed: matches!(
            m.header.state,
            NeighbourState::Permanent | NeighbourState::Noarp
        ),
    };
    for a in &m.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                n.ip = Some(IpAddr::V4(*v4))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                n.ip = Some(IpAddr::V6(*v6))
            }
            // A bridge-family entry (vxlan FDB): the address by its length.
            NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
                n.ip = match raw.len() {
                    4 => <[u8; 4]>::try_from(&raw[..]).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(&raw[..]).ok().map(IpAddr::from),
                    _ => None,
                }
            }
            NeighbourAttribute::LinkLayerAddress(l) => n.mac = <[u8; 6]>::try_from(&l[..]).ok(),
            _ => {}
        }
    }
    n
}
