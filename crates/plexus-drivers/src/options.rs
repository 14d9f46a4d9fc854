//! The bridge driver's options, with Docker's names (`docker network create -o …`).
//!
//! Option names in the `com.docker.network.` and `plexus.` namespaces (and names without a
//! dot) must be known; names in other namespaces belong to other tools and are ignored, as
//! Docker does. Booleans take Go's `strconv.ParseBool` spellings (`true`, `false`, `1`, `0`,
//! `t`, `f`, `TRUE`, `False`, …), as Docker does.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use plexus_cnm::DriverError;
use plexus_sys::rtnl::GSO_LEGACY_MAX_SIZE;

/// `com.docker.network.bridge.name`: the bridge's interface name.
pub const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
/// `com.docker.network.bridge.enable_icc`: whether sandboxes of the network reach each other.
pub const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
/// `com.docker.network.bridge.enable_ip_masquerade`: whether egress is masqueraded.
pub const ENABLE_IP_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
/// `com.docker.network.bridge.host_binding_ipv4`: the default host address of published ports.
pub const HOST_BINDING_IPV4: &str = "com.docker.network.bridge.host_binding_ipv4";
/// `com.docker.network.driver.mtu`: the MTU of the bridge and of every sandbox interface.
pub const MTU: &str = "com.docker.network.driver.mtu";
/// `com.docker.network.bridge.inhibit_ipv4`: no IPv4 gateway address on the bridge.
pub const INHIBIT_IPV4: &str = "com.docker.network.bridge.inhibit_ipv4";
/// `com.docker.network.container_iface_prefix`: the prefix of interface names in sandboxes
/// (the controller passes it to `join`).
pub const CONTAINER_IFACE_PREFIX: &str = "com.docker.network.container_iface_prefix";
/// `com.docker.network.bridge.default_bridge`: accepted (Docker sets it on its `bridge`
/// network); Plexus has no special default bridge.
pub const DEFAULT_BRIDGE: &str = "com.docker.network.bridge.default_bridge";

/// `plexus.bridge.mcast_snooping`: whether the bridge snoops IGMP/MLD to send multicast only
/// to ports that joined a group (default false: multicast is flooded, like broadcast). Off by
/// default because, with snooping on, the kernel re-arms per-port multicast state on every
/// port whenever any port comes up or goes down: a cost that grows with the number of
/// sandboxes on the network.
pub const MCAST_SNOOPING: &str = "plexus.bridge.mcast_snooping";

/// `plexus.bridge.gso_ipv4_max_size`: the largest IPv4 GSO/GRO packet of the network's veth
/// pairs, in bytes, from 65536 (the kernel's default) to 524280; above 65536 that is IPv4
/// "BIG TCP": TCP between sandboxes moves fewer, larger packets through the bridge and its
/// netfilter hooks. `auto` (the default) takes the smallest IPv4 limit among the host's own
/// interfaces (those Plexus did not make, loopback aside), so traffic leaving the host is
/// never cut into segments in software by an interface that does not take big packets; on a
/// kernel without IPv4 BIG TCP (before 6.3) `auto` keeps 65536. IPv6 stays at 64 KiB: see
/// the `gso` module.
pub const GSO_IPV4_MAX_SIZE: &str = "plexus.bridge.gso_ipv4_max_size";

/// Every option name the bridge driver knows.
pub const KNOWN: [&str; 10] = [
    BRIDGE_NAME,
    ENABLE_ICC,
    ENABLE_IP_MASQUERADE,
    HOST_BINDING_IPV4,
    MTU,
    INHIBIT_IPV4,
    CONTAINER_IFACE_PREFIX,
    DEFAULT_BRIDGE,
    MCAST_SNOOPING,
    GSO_IPV4_MAX_SIZE,
];

/// The bridge driver's options, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeOptions {
    /// The bridge name asked for; `None` for `plx-<11 hex digits of the network id>`.
    pub bridge_name: Option<String>,
    /// `enable_icc` (default true).
    pub enable_icc: bool,
    /// `enable_ip_masquerade` (default true).
    pub enable_ip_masquerade: bool,
    /// `host_binding_ipv4`; `None` (or 0.0.0.0) for every host address.
    pub host_binding_ipv4: Option<Ipv4Addr>,
    /// `com.docker.network.driver.mtu`; `None` for the kernel's default.
    pub mtu: Option<u32>,
    /// `inhibit_ipv4` (default false).
    pub inhibit_ipv4: bool,
    /// `container_iface_prefix`.
    pub container_iface_prefix: Option<String>,
    /// `plexus.bridge.mcast_snooping` (default false).
    pub mcast_snooping: bool,
    /// `plexus.bridge.gso_ipv4_max_size`; `None` for `auto` (the default).
    pub gso_ipv4_max_size: Option<u32>,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        Self {
            bridge_name: None,
            enable_icc: true,
            enable_ip_masquerade: true,
            host_binding_ipv4: None,
            mtu: None,
            inhibit_ipv4: false,
            container_iface_prefix: None,
            mcast_snooping: false,
            gso_ipv4_max_size: None,
        }
    }
}

fn invalid(name: &str, value: &str, reason: &str) -> DriverError {
    DriverError::Invalid(format!("option {name}={value:?}: {reason}"))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(name: &str, value: &str) -> Result<bool, DriverError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(invalid(name, value, "must be true or false")),
    }
}

/// Checks an interface name (or prefix) the way the kernel and the sysctl paths need it.
fn check_ifname(name: &str, value: &str, max: usize) -> Result<(), DriverError> {
    if value.is_empty() {
        return Err(invalid(name, value, "must not be empty"));
    }
    if value.len() > max {
        return Err(invalid(
            name,
            value,
            &format!("must be at most {max} bytes"),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(invalid(
            name,
            value,
            &format!("contains {bad:?}; only letters, digits, '-' and '_' are allowed"),
        ));
    }
    Ok(())
}

/// Whether an option name is one the bridge driver must know.
fn ours(name: &str) -> bool {
    // `plexus.dns.*` belongs to the embedded DNS, checked by the controller for every driver.
    if name.starts_with("plexus.dns.") {
        return false;
    }
    name.starts_with("com.docker.network.") || name.starts_with("plexus.") || !name.contains('.')
}

impl BridgeOptions {
    /// Parses and checks options; the error names the option and says what is wrong.
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, DriverError> {
        let mut o = Self::default();
        for (name, value) in options {
            match name.as_str() {
                BRIDGE_NAME => {
                    check_ifname(name, value, plexus_sys::rtnl::MAX_IFNAME)?;
                    o.bridge_name = Some(value.clone());
                }
                ENABLE_ICC => o.enable_icc = parse_bool(name, value)?,
                ENABLE_IP_MASQUERADE => o.enable_ip_masquerade = parse_bool(name, value)?,
                INHIBIT_IPV4 => o.inhibit_ipv4 = parse_bool(name, value)?,
                MCAST_SNOOPING => o.mcast_snooping = parse_bool(name, value)?,
                DEFAULT_BRIDGE => {
                    parse_bool(name, value)?;
                }
                HOST_BINDING_IPV4 => {
                    let ip: Ipv4Addr = value
                        .parse()
                        .map_err(|_| invalid(name, value, "must be an IPv4 address"))?;
                    if ip.is_multicast() || ip.is_broadcast() {
                        return Err(invalid(name, value, "must be a unicast address"));
                    }
                    o.host_binding_ipv4 = (!ip.is_unspecified()).then_some(ip);
                }
                MTU => {
                    let mtu: u32 = value
                        .trim()
                        .parse()
                        .map_err(|_| invalid(name, value, "must be a number"))?;
                    if !(68..=65535).contains(&mtu) {
                        return Err(invalid(name, value, "must be between 68 and 65535"));
                    }
                    o.mtu = Some(mtu);
                }
                GSO_IPV4_MAX_SIZE if value == "auto" => o.gso_ipv4_max_size = None,
                GSO_IPV4_MAX_SIZE => {
                    let (min, max) = (GSO_LEGACY_MAX_SIZE, plexus_sys::rtnl::GSO_MAX_SIZE);
                    let size: u32 = value
                        .trim()
                        .parse()
                        .map_err(|_| invalid(name, value, "must be \"auto\" or a number"))?;
                    if !(min..=max).contains(&size) {
                        return Err(invalid(
                            name,
                            value,
                            &format!("must be between {min} and {max}"),
                        ));
                    }
                    o.gso_ipv4_max_size = Some(size);
                }
                CONTAINER_IFACE_PREFIX => {
                    // Room for a number after it.
                    check_ifname(name, value, plexus_sys::rtnl::MAX_IFNAME - 3)?;
                    o.container_iface_prefix = Some(value.clone());
                }
                other if ours(other) => {
                    return Err(DriverError::Invalid(format!(
                        "unknown option {other:?}; the bridge driver knows {}",
                        KNOWN.join(", ")
                    )));
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<BridgeOptions, DriverError> {
        BridgeOptions::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_and_docker_names() {
        assert_eq!(parse(&[]), Ok(BridgeOptions::default()));
        let o = parse(&[
            (BRIDGE_NAME, "br-web"),
            (ENABLE_ICC, "false"),
            (ENABLE_IP_MASQUERADE, "0"),
            (HOST_BINDING_IPV4, "127.0.0.1"),
            (MTU, "1400"),
            (INHIBIT_IPV4, "True"),
            (CONTAINER_IFACE_PREFIX, "net"),
            (MCAST_SNOOPING, "true"),
            (GSO_IPV4_MAX_SIZE, "196608"),
            ("io.example.label", "anything"),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(o.mcast_snooping);
        assert_eq!(o.gso_ipv4_max_size, Some(196_608));
        assert_eq!(
            parse(&[(GSO_IPV4_MAX_SIZE, "auto")]).map(|o| o.gso_ipv4_max_size),
            Ok(None)
        );
        assert_eq!(o.bridge_name.as_deref(), Some("br-web"));
        assert!(!o.enable_icc && !o.enable_ip_masquerade && o.inhibit_ipv4);
        assert_eq!(o.mtu, Some(1400));
        assert_eq!(o.host_binding_ipv4, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(
            parse(&[(HOST_BINDING_IPV4, "0.0.0.0")]).map(|o| o.host_binding_ipv4),
            Ok(None)
        );
    }

    #[test]
    fn bad_options_name_the_option() {
        for (k, v) in [
            (MTU, "big"),
            (MTU, "67"),
            (MTU, "65536"),
            (ENABLE_ICC, "yes"),
            (ENABLE_IP_MASQUERADE, ""),
            (INHIBIT_IPV4, "maybe"),
            (HOST_BINDING_IPV4, "::1"),
            (HOST_BINDING_IPV4, "nope"),
            (BRIDGE_NAME, "a-name-that-is-too-long"),
            (BRIDGE_NAME, "a.b"),
            (BRIDGE_NAME, ""),
            (CONTAINER_IFACE_PREFIX, "eth/"),
            (MCAST_SNOOPING, "on"),
            (GSO_IPV4_MAX_SIZE, "65535"),
            (GSO_IPV4_MAX_SIZE, "524281"),
            (GSO_IPV4_MAX_SIZE, "big"),
            ("com.docker.network.bridge.enable_iccc", "true"),
            ("bogus", "1"),
            ("plexus.nothing", "1"),
        ] {
            match parse(&[(k, v)]) {
                Err(DriverError::Invalid(m)) => assert!(m.contains(k), "{k}: {m}"),
                other => panic!("{k}={v:?} gave {other:?}"),
            }
        }
    }
}
