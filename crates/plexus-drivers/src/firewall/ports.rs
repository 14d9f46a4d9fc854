//! Published ports: `host_ip:host_port/proto` → `addr:port`, elements of the `ports` and
//! `ports_ip` maps with their owner in the element's comment.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use plexus_sys::nft::{Batch, Element, Family};
use plexus_sys::{Result, SysError};

use super::addr::{addr_len, family_of, ip_bytes, ip_from, port_reg};
use super::*;

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            132 => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// `tcp`, `udp`, `sctp`.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// One published port: `host_ip:host_port/proto` → `addr:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// The protocol.
    pub proto: Proto,
    /// The host address it is published on; `None` for every local address.
    pub host_ip: Option<IpAddr>,
    /// The host port.
    pub host_port: u16,
    /// The sandbox's address.
    pub addr: IpAddr,
    /// The sandbox's port.
    pub port: u16,
    /// Who published it (an endpoint id): named in conflicts, stored in the kernel.
    pub owner: String,
}

impl PortMapping {
    pub(super) fn family(&self) -> Family {
        family_of(self.addr)
    }

    pub(super) fn describe(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("host port {}/{} on {ip}", self.proto.name(), self.host_port),
            None => format!("host port {}/{}", self.proto.name(), self.host_port),
        }
    }

    /// Whether both claim the same host port.
    pub(super) fn clashes(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && self.family() == other.family()
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    pub(super) fn same_binding(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && self.host_ip == other.host_ip
            && self.family() == other.family()
    }

    pub(super) fn key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(24);
        if let Some(ip) = self.host_ip {
            k.extend_from_slice(&ip_bytes(ip));
        }
        k.extend_from_slice(&[self.proto.number(), 0, 0, 0]);
        k.extend_from_slice(&port_reg(self.host_port));
        k
    }

    pub(super) fn element(&self, with_data: bool) -> Element {
        let mut data = ip_bytes(self.addr);
        data.extend_from_slice(&port_reg(self.port));
        let owner: String = self.owner.chars().take(MAX_OWNER).collect();
        let mut udata = vec![UDATA_COMMENT, (owner.len() + 1) as u8];
        udata.extend_from_slice(owner.as_bytes());
        udata.push(0);
        Element {
            key: self.key(),
            data: with_data.then_some(data),
            interval_end: false,
            userdata: with_data.then_some(udata),
            ..Element::default()
        }
    }

    pub(super) fn set(&self) -> &'static str {
        if self.host_ip.is_some() {
            PORTS_IP
        } else {
            PORTS
        }
    }
}

pub(super) fn owner_of(udata: Option<&[u8]>) -> String {
    // nft's TLV: type, length, value (NUL-terminated comment).
    match udata {
        Some([UDATA_COMMENT, len, rest @ ..]) => {
            let v = rest.get(..usize::from(*len)).unwrap_or(rest);
            let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).into_owned()
        }
        _ => String::new(),
    }
}

pub(super) fn port_from(element: &Element, with_ip: bool, f: Family) -> Option<PortMapping> {
    let alen = addr_len(f) as usize;
    let (host_ip, rest) = if with_ip {
        (
            Some(ip_from(element.key.get(..alen)?)?),
            element.key.get(alen..)?,
        )
    } else {
        (None, &element.key[..])
    };
    let proto = Proto::from_number(*rest.first()?)?;
    let host_port = u16::from_be_bytes([*rest.get(4)?, *rest.get(5)?]);
    let data = element.data.as_deref()?;
    let addr = ip_from(data.get(..alen)?)?;
    let port = u16::from_be_bytes([*data.get(alen)?, *data.get(alen + 1)?]);
    Some(PortMapping {
        proto,
        host_ip,
        host_port,
        addr,
        port,
        owner: owner_of(element.userdata.as_deref()),
    })
}

impl Firewall {
    /// Groups port elements by the map they go to: one message per map.
    pub(super) fn by_map<'a>(
        ports: impl IntoIterator<Item = &'a PortMapping>,
        with_data: bool,
    ) -> BTreeMap<(Family, &'static str), Vec<Element>> {
        let mut maps: BTreeMap<(Family, &'static str), Vec<Element>> = BTreeMap::new();
        for p in ports {
            maps.entry((p.family(), p.set()))
                .or_default()
                .push(p.element(with_data));
        }
        maps
    }

    pub(super) fn port_adds<'a>(b: &mut Batch, ports: impl IntoIterator<Item = &'a PortMapping>) {
        for ((f, set), elems) in Self::by_map(ports, true) {
            b.add_elements(f, NAT_TABLE, set, &elems, true);
        }
    }

    pub(super) fn port_deletes(b: &mut Batch, ports: &[PortMapping]) {
        for ((f, set), elems) in Self::by_map(ports, false) {
            b.destroy_elements(f, NAT_TABLE, set, &elems);
        }
    }

    /// Publishes ports, all or none, in one batch of map inserts. A host port already taken
    /// (by this call's other mappings, or earlier ones) fails with [`SysError::Conflict`]
    /// naming its owner. Publishing exactly the same mapping for the same owner again is a
    /// no-op.
    pub fn publish(&self, ports: &[PortMapping]) -> Result<()> {
        let todo = self.unpublished(ports)?;
        if todo.is_empty() {
            return Ok(());
        }
        let mut b = self.nft.batch();
        Self::port_adds(&mut b, todo.iter().copied());
        match self.nft.apply(b) {
            Ok(()) => {}
            Err(SysError::Exists { .. }) => {
                // Someone else (another Firewall on this namespace) got there first.
                self.reload_ports()?;
                let map = self.lock_ports();
                for p in &todo {
                    if let Some(o) = map
                        .get(&(p.proto, p.host_port))
                        .into_iter()
                        .flatten()
                        .find(|o| o.clashes(p))
                    {
                        return Err(conflict(p, o));
                    }
                }
                return Err(SysError::Conflict {
                    what: "a published host port".into(),
                    owner: "an unknown owner".into(),
                });
            }
            Err(e) => return Err(e),
        }
        let mut map = self.lock_ports();
        for p in todo {
            map.entry((p.proto, p.host_port))
                .or_default()
                .push(p.clone());
            tracing::debug!(port = %p.describe(), to = %p.addr, dport = p.port, owner = %p.owner, "port published");
        }
        Ok(())
    }

    /// Checks that `ports` can be published as they stand, without changing anything: the
    /// checks [`publish`](Self::publish) makes first (each mapping valid, no host port taken by
    /// another owner or by another of `ports`: [`SysError::Conflict`] names who has it).
    pub fn check(&self, ports: &[PortMapping]) -> Result<()> {
        self.unpublished(ports).map(drop)
    }

    /// The mappings of `ports` not yet published, once checked as [`check`](Self::check) says.
    pub(super) fn unpublished<'a>(&self, ports: &'a [PortMapping]) -> Result<Vec<&'a PortMapping>> {
        let mut todo: Vec<&PortMapping> = Vec::new();
        let map = self.lock_ports();
        for (i, p) in ports.iter().enumerate() {
            validate(p)?;
            let existing = map.get(&(p.proto, p.host_port)).into_iter().flatten();
            if let Some(o) = existing.chain(ports[..i].iter()).find(|o| o.clashes(p)) {
                if o == p {
                    continue; // already published (or listed twice), identically
                }
                return Err(conflict(p, o));
            }
            todo.push(p);
        }
        Ok(todo)
    }

    /// Withdraws published ports in one batch (matched by protocol, host address and host
    /// port; missing ones are not an error).
    pub fn unpublish(&self, ports: &[PortMapping]) -> Result<()> {
        let mut b = self.nft.batch();
        Self::port_deletes(&mut b, ports);
        self.nft.apply(b)?;
        let mut map = self.lock_ports();
        for p in ports {
            forget(&mut map, p);
        }
        Ok(())
    }

    /// Whether a published port of `proto` uses host port `port` (on any host address), as
    /// this handle knows them. A lookup, not a scan: choosing a port stays flat in the number
    /// of ports published.
    pub fn port_in_use(&self, proto: Proto, port: u16) -> bool {
        self.lock_ports()
            .get(&(proto, port))
            .is_some_and(|v| !v.is_empty())
    }

    /// The ports published, as this handle knows them.
    pub fn published(&self) -> Vec<PortMapping> {
        let mut v: Vec<PortMapping> = self.lock_ports().values().flatten().cloned().collect();
        v.sort_by_key(|p| (p.proto, p.host_port, p.host_ip));
        v
    }
}

pub(super) fn forget(map: &mut HashMap<(Proto, u16), Vec<PortMapping>>, p: &PortMapping) {
    if let Some(v) = map.get_mut(&(p.proto, p.host_port)) {
        v.retain(|o| !o.same_binding(p));
        if v.is_empty() {
            map.remove(&(p.proto, p.host_port));
        }
    }
}

pub(super) fn conflict(p: &PortMapping, owner: &PortMapping) -> SysError {
    SysError::Conflict {
        what: p.describe(),
        owner: format!("{} (-> {}:{})", owner.owner, owner.addr, owner.port),
    }
}

pub(super) fn validate(p: &PortMapping) -> Result<()> {
    let invalid = |field, reason| SysError::Invalid {
        field,
        value: format!("{p:?}"),
        reason,
    };
    if p.host_port == 0 {
        return Err(invalid(
            "host port",
            "must not be 0 (pick an ephemeral port first)",
        ));
    }
    if p.port == 0 {
        return Err(invalid("container port", "must not be 0"));
    }
    if let Some(ip) = p.host_ip {
        if family_of(ip) != p.family() {
            return Err(invalid(
                "host ip",
                "must be of the same family as the sandbox address",
            ));
        }
        if ip.is_unspecified() {
            return Err(invalid(
                "host ip",
                "use None for every address, not 0.0.0.0/::",
            ));
        }
    }
    if p.owner.is_empty() {
        return Err(invalid("owner", "must name who publishes the port"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::addr::contains;
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn port_elements_round_trip() {
        let p = PortMapping {
            proto: Proto::Udp,
            host_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            host_port: 8080,
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            port: 80,
            owner: "ep-1".into(),
        };
        assert_eq!(
            port_from(&p.element(true), true, Family::Ip),
            Some(p.clone())
        );
        let q = PortMapping {
            host_ip: None,
            ..p.clone()
        };
        assert_eq!(
            port_from(&q.element(true), false, Family::Ip),
            Some(q.clone())
        );
        assert!(p.clashes(&q) && q.clashes(&p));
        assert!(contains("10.0.0.0".parse().unwrap_or(p.addr), 24, p.addr));
    }
}
