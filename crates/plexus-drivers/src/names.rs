//! Names and marks of the kernel objects the drivers make.

/// What a marked link is, read back from its alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Marked {
    /// A network's bridge.
    Bridge {
        /// The network's id.
        network: String,
    },
    /// An endpoint's veth (either end).
    Veth {
        /// The network's id.
        network: String,
        /// The endpoint's id.
        endpoint: String,
        /// On the host end of a finished join: the name of the interface in the sandbox
        /// (what the endpoint's record must say).
        interface: Option<String>,
    },
    /// A kind this version does not know (`<marker>:<kind>:<field>[:<field>…]`): another
    /// driver's, or a later Plexus's. Never deleted as stale by a driver that does not own it.
    Other {
        /// The kind (`macvlan`, `vxlan`, ...).
        kind: String,
        /// The fields after it.
        fields: Vec<String>,
    },
}

/// Reads a link alias: `Some` only if it carries `marker` and a well-formed mark. The grammar
/// is `<marker>:<kind>:<field>[:<field>…]`; kinds other than `bridge` and `veth` are
/// [`Marked::Other`], so drivers can add kinds without older code mistaking them for foreign
/// links or for its own.
pub fn parse_alias(marker: &str, alias: &str) -> Option<Marked> {
    let rest = alias.strip_prefix(marker)?.strip_prefix(':')?;
    let mut parts = rest.split(':');
    let kind = parts.next()?;
    let a = parts.next().filter(|s| !s.is_empty())?;
    match (kind, parts.next(), parts.next(), parts.next()) {
        ("bridge", None, None, None) => Some(Marked::Bridge { network: a.into() }),
        ("veth", Some(b), interface, None)
            if !b.is_empty() && interface.is_none_or(|i| !i.is_empty()) =>
        {
            Some(Marked::Veth {
                network: a.into(),
                endpoint: b.into(),
                interface: interface.map(String::from),
            })
        }
        ("bridge", ..) | ("veth", ..) => None,
        _ => {
            let fields: Vec<String> = rest.split(':').skip(1).map(String::from).collect();
            (!kind.is_empty() && fields.iter().all(|f| !f.is_empty())).then(|| Marked::Other {
                kind: kind.into(),
                fields,
            })
        }
    }
}

/// The alias of a network's bridge.
pub(crate) fn bridge_alias(marker: &str, network: &str) -> String {
    format!("{marker}:bridge:{network}")
}

/// The alias of an endpoint's veth ends.
pub(crate) fn veth_alias(marker: &str, network: &str, endpoint: &str) -> String {
    format!("{marker}:veth:{network}:{endpoint}")
}

/// The alias of an endpoint's host end once joined: the veth alias and the name of the
/// sandbox-side interface, so that start-up reconciliation can correct a record that a crash
/// left with a guessed name.
pub(crate) fn host_veth_alias(
    marker: &str,
    network: &str,
    endpoint: &str,
    interface: &str,
) -> String {
    format!("{}:{interface}", veth_alias(marker, network, endpoint))
}

/// The longest alias the kernel keeps (IFALIASZ - 1).
pub(crate) const MAX_ALIAS: usize = 255;

/// 11 characters naming an id in interface names: its first 11 hex digits (ids are 64 hex
/// digits), or a hash of it for other ids.
pub(crate) fn short(id: &str) -> String {
    let head: String = id.chars().take(11).collect();
    if head.len() == 11 && head.bytes().all(|b| b.is_ascii_hexdigit()) {
        return head.to_ascii_lowercase();
    }
    // FNV-1a, 64 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")[..11].to_string()
}

/// The default bridge name of a network: `plx-` and 11 hex digits of its id (15 bytes).
pub(crate) fn default_bridge(network: &str) -> String {
    format!("plx-{}", short(network))
}

/// The host end of an endpoint's veth pair.
pub(crate) fn host_veth(endpoint: &str) -> String {
    // The firewall's bridge-family notrack rule knows sandbox ports by this prefix.
    format!(
        "{}{}",
        crate::firewall::SANDBOX_PORT_PREFIX,
        short(endpoint)
    )
}

/// The name the sandbox end of an endpoint's veth pair takes when it leaves (so the sandbox
/// may reuse its name at once) until its background deletion is done. Earlier versions also
/// parked it under this name in the host namespace before the join.
pub(crate) fn peer_veth(endpoint: &str) -> String {
    format!("plxc{}", short(endpoint))
}

/// The name a removed network's bridge takes (down, so its routes are gone) until its
/// background deletion is done: its own name may be wanted by a new network at once.
pub(crate) fn retired_bridge(network: &str) -> String {
    format!("plxd{}", short(network))
}

/// Whether `name` is one this crate derives for a link of `kind`: a default bridge
/// (`plx-`, or `plxd` once retired) or either end of a veth (`plxv`, `plxc`), then 11 hex digits. Such a link with
/// no alias at all was left by a daemon that died between making and marking it (the kernel
/// takes no alias at creation).
pub(crate) fn is_derived_name(name: &str, kind: Option<&str>) -> bool {
    let (rest, want) = match name.get(..4) {
        Some("plx-") | Some("plxd") => (&name[4..], "bridge"),
        Some("plxv") | Some("plxc") => (&name[4..], "veth"),
        _ => return false,
    };
    kind == Some(want)
        && rest.len() == 11
        && rest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Docker's MAC for an IPv4 address: `02:42` and the four address bytes; without one, `02:42`
/// and four bytes of a hash of the endpoint id.
pub(crate) fn derive_mac(ipv4: Option<std::net::Ipv4Addr>, endpoint: &str) -> [u8; 6] {
    let tail = match ipv4 {
        Some(ip) => ip.octets(),
        None => {
            let s = short(endpoint);
            let n = u64::from_str_radix(&s, 16).unwrap_or(0);
            let b = n.to_be_bytes();
            [b[4], b[5], b[6], b[7]]
        }
    };
    [0x02, 0x42, tail[0], tail[1], tail[2], tail[3]]
}

/// An endpoint's MAC: the one asked for, or Docker's derived from its IPv4 address
/// ([`derive_mac`]). The error names the field.
pub(crate) fn endpoint_mac(
    endpoint: &plexus_cnm::EndpointInfo,
) -> Result<[u8; 6], plexus_cnm::DriverError> {
    match &endpoint.mac {
        Some(m) => parse_mac(m).ok_or_else(|| {
            plexus_cnm::DriverError::Invalid(format!(
                "mac address {m:?}: must be a unicast aa:bb:cc:dd:ee:ff"
            ))
        }),
        None => Ok(derive_mac(
            endpoint.ipv4.and_then(|a| match a.addr() {
                std::net::IpAddr::V4(v4) => Some(v4),
                std::net::IpAddr::V6(_) => None,
            }),
            &endpoint.endpoint_id,
        )),
    }
}

/// A network's bridge MAC: `02:42` and four bytes of its id, as stable as the id (Docker
/// gives its bridges a random `02:42` address for the same reason: the gateway's MAC must not
/// follow the ports). The bridge driver's own MACs for endpoints carry an IPv4 address there.
pub(crate) fn bridge_mac(network: &str) -> [u8; 6] {
    let n = u64::from_str_radix(&short(network), 16).unwrap_or(0);
    let b = n.to_be_bytes();
    [0x02, 0x42, b[4], b[5], b[6], b[7]]
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`) into a unicast MAC.
pub(crate) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        // Two hex digits: from_str_radix alone would take a sign ("+2").
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        mac[i] = u8::from_str_radix(p, 16).ok()?;
    }
    // Multicast (group) addresses cannot be an interface's.
    if mac[0] & 1 == 1 || mac == [0; 6] {
        return None;
    }
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_round_trip_and_foreign_ones_are_ignored() {
        let b = bridge_alias("plexus", "n1");
        assert_eq!(
            parse_alias("plexus", &b),
            Some(Marked::Bridge {
                network: "n1".into()
            })
        );
        let v = veth_alias("plexus", "n1", "e1");
        assert_eq!(
            parse_alias("plexus", &v),
            Some(Marked::Veth {
                network: "n1".into(),
                endpoint: "e1".into(),
                interface: None,
            })
        );
        let h = host_veth_alias("plexus", "n1", "e1", "eth1");
        assert_eq!(
            parse_alias("plexus", &h),
            Some(Marked::Veth {
                network: "n1".into(),
                endpoint: "e1".into(),
                interface: Some("eth1".into()),
            })
        );
        assert_eq!(parse_alias("plexus", "plexus:veth:n1:e1:"), None);
        assert_eq!(parse_alias("plexus", "plexus:veth:n1:e1:eth1:x"), None);
        assert_eq!(parse_alias("plexus2", &v), None);
        assert_eq!(parse_alias("plex", &v), None);
        assert_eq!(parse_alias("plexus", "plexus:bridge:"), None);
        assert_eq!(
            parse_alias("plexus", "plexus:macvlan:n1:e1"),
            Some(Marked::Other {
                kind: "macvlan".into(),
                fields: vec!["n1".into(), "e1".into()],
            })
        );
        assert_eq!(parse_alias("plexus", "plexus:macvlan:n1:"), None);
        assert_eq!(parse_alias("plexus", "plexus::x"), None);
        assert_eq!(parse_alias("plexus", "docker0"), None);
    }

    #[test]
    fn names_fit_ifnamsiz() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(default_bridge(id), "plx-0123456789a");
        assert_eq!(host_veth(id).len(), 15);
        assert_eq!(peer_veth("x").len(), 15);
        assert_ne!(short("a"), short("b"));
        assert!(is_derived_name(&default_bridge(id), Some("bridge")));
        assert!(is_derived_name(&host_veth(id), Some("veth")));
        assert!(is_derived_name(&peer_veth("x"), Some("veth")));
        assert!(!is_derived_name(&host_veth(id), Some("bridge")));
        assert!(!is_derived_name("plx-mybridge", Some("bridge")));
        assert!(!is_derived_name("eth0", Some("veth")));
    }

    #[test]
    fn macs_follow_docker() {
        let mac = derive_mac(Some(std::net::Ipv4Addr::new(172, 17, 0, 2)), "e");
        assert_eq!(plexus_sys::rtnl::format_mac(&mac), "02:42:ac:11:00:02");
        assert_eq!(parse_mac("02:42:AC:11:00:02"), Some(mac));
        assert_eq!(parse_mac("01:00:5e:00:00:01"), None);
        assert_eq!(parse_mac("02:42:ac:11:00"), None);
        assert_eq!(parse_mac("zz:42:ac:11:00:02"), None);
        // A sign is no hex digit (a plugin's CreateEndpoint answer; fuzz: plugin_answer).
        assert_eq!(parse_mac("+2:42:ac:11:00:02"), None);
        assert_eq!(parse_mac("02:+4:ac:11:00:02"), None);
        assert_eq!(derive_mac(None, "e")[..2], [0x02, 0x42]);
    }
}
