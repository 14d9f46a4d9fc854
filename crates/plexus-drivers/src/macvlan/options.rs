//! The macvlan and ipvlan drivers' options, with Docker's names (`docker network create -d
//! macvlan -o parent=eth0 -o macvlan_mode=bridge`).
//!
//! As for the other drivers, names in the `com.docker.network.` and `plexus.` namespaces (and
//! names without a dot, such as Docker's own `parent`) must be known; names in other
//! namespaces belong to other tools and are ignored, as Docker does.

use std::collections::BTreeMap;

use plexus_cnm::DriverError;
use plexus_sys::rtnl::{IpvlanFlag, IpvlanMode, MacvlanMode, SubLinkKind, MAX_VLAN_ID};

use super::Kind;

/// `parent`: the host interface the network's devices hang off (`eth0`), or an 802.1q
/// sub-interface of one (`eth0.10`), which the driver makes if it does not exist and removes
/// with the network. Empty or absent: a parent that goes nowhere (a dummy link, as Docker),
/// so the network's sandboxes reach only each other.
pub const PARENT: &str = "parent";
/// `macvlan_mode`: `bridge` (the default), `private`, `vepa` or `passthru`.
pub const MACVLAN_MODE: &str = "macvlan_mode";
/// `ipvlan_mode`: `l2` (the default), `l3` or `l3s`.
pub const IPVLAN_MODE: &str = "ipvlan_mode";
/// `ipvlan_flag`: `bridge` (the default), `private` or `vepa`.
pub const IPVLAN_FLAG: &str = "ipvlan_flag";
/// `com.docker.network.container_iface_prefix`: accepted (the controller passes it to `join`).
pub const CONTAINER_IFACE_PREFIX: &str = crate::options::CONTAINER_IFACE_PREFIX;

/// A parent as `-o parent` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentName {
    /// The interface's name (`eth0`, `eth0.10`).
    pub name: String,
    /// For `NAME.ID` with a numeric id: the interface an 802.1q sub-interface would be made
    /// on, and the VLAN id (1 to 4094), used when `name` does not exist.
    pub vlan: Option<(String, u16)>,
}

/// A network's options, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanOptions {
    /// `parent`; `None` for none (a dummy parent).
    pub parent: Option<ParentName>,
    /// The device kind and its mode.
    pub kind: SubLinkKind,
}

fn invalid(name: &str, value: &str, reason: &str) -> DriverError {
    DriverError::Invalid(format!("option {name}={value:?}: {reason}"))
}

fn parse_parent(value: &str) -> Result<Option<ParentName>, DriverError> {
    if value.is_empty() {
        return Ok(None);
    }
    if value == "lo" {
        return Err(invalid(PARENT, value, "loopback cannot be a parent"));
    }
    plexus_sys::rtnl::check_ifname("parent", value)
        .map_err(|e| invalid(PARENT, value, &e.to_string()))?;
    let vlan = match value.rsplit_once('.') {
        Some((base, id)) if !base.is_empty() && !id.is_empty() => {
            match id.parse::<u32>() {
                Ok(vid) if (1..=u32::from(MAX_VLAN_ID)).contains(&vid) => {
                    Some((base.to_string(), vid as u16))
                }
                Ok(_) => {
                    return Err(invalid(
                        PARENT,
                        value,
                        &format!("VLAN id {id} is out of range: 802.1q ids are 1 to {MAX_VLAN_ID}"),
                    ))
                }
                // `br.lan`: a name with a dot, not a VLAN.
                Err(_) => None,
            }
        }
        _ => None,
    };
    Ok(Some(ParentName {
        name: value.to_string(),
        vlan,
    }))
}

fn parse_macvlan_mode(value: &str) -> Result<MacvlanMode, DriverError> {
    match value {
        "" | "bridge" => Ok(MacvlanMode::Bridge),
        "private" => Ok(MacvlanMode::Private),
        "vepa" => Ok(MacvlanMode::Vepa),
        "passthru" => Ok(MacvlanMode::Passthru),
        _ => Err(invalid(
            MACVLAN_MODE,
            value,
            "must be bridge (the default), private, vepa or passthru",
        )),
    }
}

fn parse_ipvlan_mode(value: &str) -> Result<IpvlanMode, DriverError> {
    match value {
        "" | "l2" => Ok(IpvlanMode::L2),
        "l3" => Ok(IpvlanMode::L3),
        "l3s" => Ok(IpvlanMode::L3s),
        _ => Err(invalid(
            IPVLAN_MODE,
            value,
            "must be l2 (the default), l3 or l3s",
        )),
    }
}

fn parse_ipvlan_flag(value: &str) -> Result<IpvlanFlag, DriverError> {
    match value {
        "" | "bridge" => Ok(IpvlanFlag::Bridge),
        "private" => Ok(IpvlanFlag::Private),
        "vepa" => Ok(IpvlanFlag::Vepa),
        _ => Err(invalid(
            IPVLAN_FLAG,
            value,
            "must be bridge (the default), private or vepa",
        )),
    }
}

impl LanOptions {
    /// Parses and checks the options of a network of `kind`; the error names the option and
    /// says what is wrong.
    pub fn parse(kind: Kind, options: &BTreeMap<String, String>) -> Result<Self, DriverError> {
        let mut parent = None;
        let (mut macvlan, mut ipvlan, mut flag) =
            (MacvlanMode::Bridge, IpvlanMode::L2, IpvlanFlag::Bridge);
        let other = |name: &str| {
            let known = match kind {
                Kind::Macvlan => [PARENT, MACVLAN_MODE].join(", "),
                Kind::Ipvlan => [PARENT, IPVLAN_MODE, IPVLAN_FLAG].join(", "),
            };
            DriverError::Invalid(format!(
                "unknown option {name:?}; the {} driver knows {known} and {CONTAINER_IFACE_PREFIX}",
                kind.name()
            ))
        };
        for (name, value) in options {
            match (name.as_str(), kind) {
                (PARENT, _) => parent = parse_parent(value)?,
                (MACVLAN_MODE, Kind::Macvlan) => macvlan = parse_macvlan_mode(value)?,
                (IPVLAN_MODE, Kind::Ipvlan) => ipvlan = parse_ipvlan_mode(value)?,
                (IPVLAN_FLAG, Kind::Ipvlan) => flag = parse_ipvlan_flag(value)?,
                (CONTAINER_IFACE_PREFIX, _) => {}
                (n, _) if n.starts_with("plexus.dns.") => {}
                (n, _)
                    if n.starts_with("com.docker.network.")
                        || n.starts_with("plexus.")
                        || !n.contains('.') =>
                {
                    return Err(other(n))
                }
                _ => {}
            }
        }
        let kind = match kind {
            Kind::Macvlan => SubLinkKind::Macvlan(macvlan),
            Kind::Ipvlan => SubLinkKind::Ipvlan(ipvlan, flag),
        };
        Ok(Self { parent, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: Kind, pairs: &[(&str, &str)]) -> Result<LanOptions, DriverError> {
        LanOptions::parse(
            kind,
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn docker_names_and_defaults() {
        let o = parse(Kind::Macvlan, &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.parent, None);
        assert_eq!(o.kind, SubLinkKind::Macvlan(MacvlanMode::Bridge));
        let o = parse(
            Kind::Macvlan,
            &[
                (PARENT, "eth0.10"),
                (MACVLAN_MODE, "passthru"),
                (CONTAINER_IFACE_PREFIX, "lan"),
                ("io.example.x", "y"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            o.parent,
            Some(ParentName {
                name: "eth0.10".into(),
                vlan: Some(("eth0".into(), 10)),
            })
        );
        assert_eq!(o.kind, SubLinkKind::Macvlan(MacvlanMode::Passthru));
        let o = parse(
            Kind::Ipvlan,
            &[
                (PARENT, "br.lan"),
                (IPVLAN_MODE, "l3s"),
                (IPVLAN_FLAG, "vepa"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.parent.and_then(|p| p.vlan), None);
        assert_eq!(
            o.kind,
            SubLinkKind::Ipvlan(IpvlanMode::L3s, IpvlanFlag::Vepa)
        );
        assert_eq!(
            parse(Kind::Ipvlan, &[(PARENT, "")]).map(|o| o.parent),
            Ok(None)
        );
    }

    #[test]
    fn bad_options_name_the_option() {
        for (kind, k, v) in [
            (Kind::Macvlan, MACVLAN_MODE, "l2"),
            (Kind::Macvlan, IPVLAN_MODE, "l2"),
            (Kind::Ipvlan, MACVLAN_MODE, "bridge"),
            (Kind::Ipvlan, IPVLAN_MODE, "l4"),
            (Kind::Ipvlan, IPVLAN_FLAG, "passthru"),
            (Kind::Macvlan, PARENT, "eth0.0"),
            (Kind::Macvlan, PARENT, "eth0.4095"),
            (Kind::Macvlan, PARENT, "an-interface-name-too-long"),
            (Kind::Macvlan, PARENT, "lo"),
            (Kind::Macvlan, "com.docker.network.driver.mtu", "1400"),
            (Kind::Ipvlan, "bogus", "1"),
        ] {
            match parse(kind, &[(k, v)]) {
                Err(DriverError::Invalid(m)) => assert!(m.contains(k), "{k}: {m}"),
                other => panic!("{k}={v:?} gave {other:?}"),
            }
        }
    }
}
