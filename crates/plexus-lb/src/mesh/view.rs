//! What one namespace publishes: its ports, their services, target ports and backends, and
//! where the table listens (its scope); and the rules a view must follow before anything
//! reaches the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use crate::error::LbError;
use crate::view::{check_name, check_unicast};
use crate::MAX_BACKENDS;

/// A published port's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The name in object names and fields: `tcp`, `udp`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The protocol of an IP protocol number.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// The protocol of a [`name`](Self::name).
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

/// A published port: what clients connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortKey {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The published port (1 to 65535).
    pub port: u16,
}

impl fmt::Display for PortKey {
    /// `tcp/8080`: the form fields name a port by.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol.name(), self.port)
    }
}

/// Where a published port's connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView {
    /// The service's name, kept with the port so [`read`](super::Mesh::read) gives it back
    /// (1 to 128 characters, no whitespace or control characters).
    pub service: String,
    /// The port the backends listen on (1 to 65535; the published port itself for a hop to
    /// an ingress sandbox, which keeps the port).
    pub target: u16,
    /// The backends' addresses (tasks, or ingress sandboxes for a host's table). Order and
    /// repeats do not matter; views read back have them sorted and without repeats. None:
    /// the port is refused (see the module documentation).
    pub backends: Vec<Ipv4Addr>,
}

/// Where the table listens: the hooks it has, and the addresses it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshScope {
    /// A cluster host: connections arriving for any local address (or, restricted, those
    /// listed), and connections of the host's own programs (an output chain, loopback
    /// addresses aside).
    Host {
        /// `None`: every local address; otherwise only these (each must also be local:
        /// the `fib daddr type local` guard stays).
        addresses: Option<BTreeSet<Ipv4Addr>>,
    },
    /// The ingress sandbox: connections arriving for its own addresses only (prerouting;
    /// nothing in it starts connections to published ports).
    Gateway,
}

impl Default for MeshScope {
    /// A host publishing on every local address.
    fn default() -> Self {
        MeshScope::Host { addresses: None }
    }
}

/// What one namespace publishes, and how.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshView {
    /// The table's scope. A view without ports is no table at all (nothing to publish), so
    /// its scope is not kept: [`normalized`](Self::normalized) makes it the default.
    pub scope: MeshScope,
    /// The published ports.
    pub ports: BTreeMap<PortKey, PortView>,
}

impl MeshView {
    /// The form [`read`](super::Mesh::read) returns: backends sorted without repeats, and the
    /// default scope when there is no port.
    pub fn normalized(&self) -> Self {
        if self.ports.is_empty() {
            return Self::default();
        }
        let ports = self
            .ports
            .iter()
            .map(|(k, p)| {
                let backends: BTreeSet<Ipv4Addr> = p.backends.iter().copied().collect();
                let p = PortView {
                    backends: backends.into_iter().collect(),
                    ..p.clone()
                };
                (*k, p)
            })
            .collect();
        Self {
            scope: self.scope.clone(),
            ports,
        }
    }
}

/// A validated port: what the planner works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Port {
    pub service: String,
    pub target: u16,
    pub backends: BTreeSet<Ipv4Addr>,
}

/// A validated view: no port means no table (and the default scope).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Table {
    pub scope: MeshScope,
    pub ports: BTreeMap<PortKey, Port>,
}

/// Checks a view and returns it in the planner's terms. Errors name the field
/// (`ports[tcp/8080].target`, `scope.addresses[1]`, …).
pub(crate) fn validate(view: &MeshView) -> Result<Table, LbError> {
    let mut ports = BTreeMap::new();
    for (key, p) in &view.ports {
        ports.insert(*key, validate_port(key, p)?);
    }
    if ports.is_empty() {
        return Ok(Table::default());
    }
    if let MeshScope::Host {
        addresses: Some(addresses),
    } = &view.scope
    {
        if addresses.is_empty() {
            return Err(LbError::invalid(
                "scope.addresses",
                "an empty restriction publishes on no address: give one, or None for all",
            ));
        }
        for (i, a) in addresses.iter().enumerate() {
            check_unicast(*a).map_err(|r| LbError::invalid(format!("scope.addresses[{i}]"), r))?;
        }
    }
    Ok(Table {
        scope: view.scope.clone(),
        ports,
    })
}

fn validate_port(key: &PortKey, p: &PortView) -> Result<Port, LbError> {
    let field = |f: &str| format!("ports[{key}].{f}");
    if key.port == 0 {
        return Err(LbError::invalid(
            field("port"),
            "port 0 cannot be published",
        ));
    }
    if p.target == 0 {
        return Err(LbError::invalid(
            field("target"),
            "port 0 cannot be a target",
        ));
    }
    check_name(&p.service).map_err(|r| LbError::invalid(field("service"), r))?;
    if p.backends.len() > MAX_BACKENDS {
        return Err(LbError::invalid(
            field("backends"),
            format!("{} backends, at most {MAX_BACKENDS}", p.backends.len()),
        ));
    }
    for (i, b) in p.backends.iter().enumerate() {
        check_unicast(*b).map_err(|r| LbError::invalid(field(&format!("backends[{i}]")), r))?;
    }
    Ok(Port {
        service: p.service.clone(),
        target: p.target,
        backends: p.backends.iter().copied().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(service: &str, target: u16, backends: &[[u8; 4]]) -> PortView {
        PortView {
            service: service.into(),
            target,
            backends: backends.iter().map(|b| Ipv4Addr::from(*b)).collect(),
        }
    }

    fn tcp(port: u16) -> PortKey {
        PortKey {
            protocol: Protocol::Tcp,
            port,
        }
    }

    fn view(key: PortKey, p: PortView) -> MeshView {
        MeshView {
            scope: MeshScope::Gateway,
            ports: [(key, p)].into(),
        }
    }

    fn field_of(v: &MeshView) -> String {
        match validate(v) {
            Err(LbError::Invalid { field, .. }) => field,
            other => panic!("want an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn bad_input_names_the_field() {
        let good = port("web", 80, &[[10, 0, 0, 2]]);
        assert_eq!(field_of(&view(tcp(0), good.clone())), "ports[tcp/0].port");
        let f = field_of(&view(tcp(8080), port("web", 0, &[])));
        assert_eq!(f, "ports[tcp/8080].target");
        for name in ["", "a b", "x\u{7}"] {
            let f = field_of(&view(tcp(8080), port(name, 80, &[])));
            assert_eq!(f, "ports[tcp/8080].service", "{name:?}");
        }
        let f = field_of(&view(
            tcp(8080),
            port("web", 80, &[[10, 0, 0, 2], [127, 0, 0, 1]]),
        ));
        assert_eq!(f, "ports[tcp/8080].backends[1]");
        let many: Vec<[u8; 4]> = (0..=MAX_BACKENDS as u32)
            .map(|i| (0x0a01_0000 + i).to_be_bytes())
            .collect();
        let f = field_of(&view(tcp(8080), port("web", 80, &many)));
        assert_eq!(f, "ports[tcp/8080].backends");
        let mut v = view(tcp(8080), good.clone());
        v.scope = MeshScope::Host {
            addresses: Some(BTreeSet::new()),
        };
        assert_eq!(field_of(&v), "scope.addresses");
        v.scope = MeshScope::Host {
            addresses: Some([[10, 0, 0, 1].into(), [224, 0, 0, 1].into()].into()),
        };
        assert_eq!(field_of(&v), "scope.addresses[1]");
        let udp = PortKey {
            protocol: Protocol::Udp,
            port: 0,
        };
        assert_eq!(field_of(&view(udp, good)), "ports[udp/0].port");
    }

    #[test]
    fn a_view_without_ports_is_no_table_whatever_its_scope() {
        let v = MeshView {
            scope: MeshScope::Host {
                addresses: Some(BTreeSet::new()),
            },
            ports: BTreeMap::new(),
        };
        assert_eq!(validate(&v).ok(), Some(Table::default()));
        assert_eq!(v.normalized(), MeshView::default());
        let v = view(
            tcp(1),
            port("web", 80, &[[10, 0, 0, 3], [10, 0, 0, 2], [10, 0, 0, 3]]),
        );
        let n = v.normalized();
        assert_eq!(n.scope, MeshScope::Gateway);
        let want: Vec<Ipv4Addr> = vec![[10, 0, 0, 2].into(), [10, 0, 0, 3].into()];
        assert_eq!(n.ports[&tcp(1)].backends, want);
        assert_eq!(
            validate(&v).map(|t| t.ports[&tcp(1)].backends.len()).ok(),
            Some(2)
        );
    }
}
