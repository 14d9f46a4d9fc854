//! Addresses of links.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::packet_route::AddressFamily;

use super::Rtnl;
use crate::error::{libc_errno, Result, SysError};

/// The address an address message carries.
fn address_of(m: &AddressMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    })
}

impl Rtnl {
    /// Adds an address to a link.
    pub async fn add_address(&self, index: u32, address: IpAddr, prefix: u8) -> Result<()> {
        let max = if address.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(SysError::Invalid {
                field: "prefix length",
                value: prefix.to_string(),
                reason: "longer than the address",
            });
        }
        self.handle
            .address()
            .add(index, address, prefix)
            .execute()
            .await
            .map_err(|e| {
                SysError::netlink(
                    format!("add address {address}/{prefix} to link {index}"),
                    &format!("address {address}/{prefix}"),
                    e,
                )
            })
    }

    /// Takes `address`/`prefix` off link `index` in one request; [`SysError::NotFound`] if
    /// it has none such. Taking a link's last IPv4 address off also takes its IPv4 routes
    /// out (the kernel disables IPv4 on it).
    pub async fn delete_address(&self, index: u32, address: IpAddr, prefix: u8) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = match address {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Address(address));
        if address.is_ipv4() {
            msg.attributes.push(AddressAttribute::Local(address));
        }
        let what = format!("address {address}/{prefix} on link {index}");
        self.handle.address().del(msg).execute().await.map_err(|e| {
            match SysError::netlink(
                format!("delete address {address}/{prefix} from link {index}"),
                &what,
                e,
            ) {
                // The kernel's answer for an address the link does not hold.
                e if e.errno() == Some(libc_errno::EADDRNOTAVAIL) => SysError::NotFound { what },
                e => e,
            }
        })
    }

    /// The address messages of link `index`.
    async fn address_messages(&self, index: u32) -> Result<Vec<AddressMessage>> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| SysError::netlink("list addresses", &format!("link {index}"), e))
    }

    /// The addresses of a link.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>> {
        let msgs = self.address_messages(index).await?;
        Ok(msgs
            .iter()
            .filter_map(|m| address_of(m).map(|ip| (ip, m.header.prefix_len)))
            .collect())
    }

    /// The index of the link that holds `address`, if any (every link's addresses, one dump):
    /// how a driver finds the underlay interface behind an advertised address.
    pub async fn address_owner(&self, address: IpAddr) -> Result<Option<u32>> {
        let msgs: Vec<AddressMessage> =
            self.handle
                .address()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(|e| SysError::netlink("list addresses", "every link", e))?;
        Ok(msgs
            .iter()
            .find(|m| address_of(m) == Some(address))
            .map(|m| m.header.index))
    }

    /// The addresses of link `index` still tentative (IPv6 duplicate address detection not
    /// done: not usable yet).
    pub async fn tentative(&self, index: u32) -> Result<Vec<IpAddr>> {
        let msgs = self.address_messages(index).await?;
        Ok(msgs
            .iter()
            .filter(|m| {
                // The 32-bit IFA_FLAGS attribute when present, else the header's 8 bits.
                m.attributes
                    .iter()
                    .find_map(|a| match a {
                        AddressAttribute::Flags(f) => Some(f.contains(AddressFlags::Tentative)),
                        _ => None,
                    })
                    .unwrap_or(m.header.flags.contains(AddressHeaderFlags::Tentative))
            })
            .filter_map(address_of)
            .collect())
    }
}
