//! The names of the mesh table's objects. Names carry the protocol and port, so the kernel
//! alone says which published port an object belongs to.

use super::view::{PortKey, Protocol};

/// The table, in the `ip` family.
pub const TABLE: &str = "plexus-mesh";
/// The nat base chain on prerouting with the one dispatch rule.
pub const PREROUTING_CHAIN: &str = "prerouting";
/// Host scope only: the nat base chain on output with the same rule, for the host's own
/// programs.
pub const OUTPUT_CHAIN: &str = "output";
/// The verdict map `protocol . port → goto port-<protocol>-<port>`; each element's comment
/// keeps the service's name and the target port.
pub const PORTS_MAP: &str = "ports";
/// Host scope with a restriction only: the local addresses published on.
pub const ADDRESSES_SET: &str = "addresses";

/// `port-<protocol>-<port>`: the published port's chain.
pub fn port_chain(key: &PortKey) -> String {
    format!("port-{}-{}", key.protocol.name(), key.port)
}

/// `pbe-<protocol>-<port>`: the published port's interval map from a random number to a
/// backend.
pub fn slots_map(key: &PortKey) -> String {
    format!("pbe-{}-{}", key.protocol.name(), key.port)
}

fn parse_key(rest: &str) -> Option<PortKey> {
    let (protocol, port) = rest.split_once('-')?;
    let port: u16 = port.parse().ok()?;
    // One spelling per port: `port-tcp-080` would name no port this crate writes.
    if port == 0 || port.to_string() != rest[protocol.len() + 1..] {
        return None;
    }
    Some(PortKey {
        protocol: Protocol::from_name(protocol)?,
        port,
    })
}

/// The port of a `port-<protocol>-<port>` chain.
pub fn parse_port_chain(name: &str) -> Option<PortKey> {
    parse_key(name.strip_prefix("port-")?)
}

/// The port of a `pbe-<protocol>-<port>` map.
pub fn parse_slots_map(name: &str) -> Option<PortKey> {
    parse_key(name.strip_prefix("pbe-")?)
}

/// The comment of a port's element in [`PORTS_MAP`]: `service=<name> target=<port>`.
pub fn port_comment(service: &str, target: u16) -> String {
    format!("service={service} target={target}")
}

/// The service and target port in a [`port_comment`].
pub fn parse_port_comment(c: &str) -> Option<(String, u16)> {
    let (service, target) = c.split_once(' ')?;
    let service = service.strip_prefix("service=")?;
    let target: u16 = target.strip_prefix("target=")?.parse().ok()?;
    if service.is_empty() || target == 0 {
        return None;
    }
    Some((service.to_string(), target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        let k = PortKey {
            protocol: Protocol::Udp,
            port: 53,
        };
        assert_eq!(parse_port_chain(&port_chain(&k)), Some(k));
        assert_eq!(parse_slots_map(&slots_map(&k)), Some(k));
        assert_eq!(parse_slots_map("port-udp-53"), None);
        for bad in [
            "port-tcp-0",
            "port-tcp-080",
            "port-sctp-1",
            "port-tcp-",
            "port-tcp-70000",
        ] {
            assert_eq!(parse_port_chain(bad), None, "{bad}");
        }
        let c = port_comment("web.1", 8080);
        assert_eq!(parse_port_comment(&c), Some(("web.1".into(), 8080)));
        for bad in [
            "service=a",
            "service= target=1",
            "service=a target=0",
            "name=a target=1",
        ] {
            assert_eq!(parse_port_comment(bad), None, "{bad}");
        }
    }
}
