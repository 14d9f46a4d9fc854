//! The overlay driver's options, with Docker's names (`docker network create -d overlay -o …`).
//!
//! As for the bridge driver, names in the `com.docker.network.` and `plexus.` namespaces (and
//! names without a dot) must be known; names in other namespaces belong to other tools and
//! are ignored, as Docker does.

use std::collections::BTreeMap;

use plexus_cnm::DriverError;
use plexus_sys::rtnl::MAX_VNI;

/// `com.docker.network.driver.overlay.vxlanid_list`: the VXLAN id the network must have
/// (Docker takes a comma-separated list, one per subnet; Plexus keeps a network's subnets on
/// one segment, so one id). Also how [`allocate_network`](plexus_cnm::Driver::allocate_network)
/// hands the allocated id back with the network's options.
pub const VXLANID_LIST: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// `com.docker.network.driver.mtu`: the MTU of the network's interfaces; by default the
/// underlay interface's MTU less VXLAN's 50 bytes.
pub const MTU: &str = crate::options::MTU;

/// `encrypted`: IPsec between hosts. Not yet: refused with a clear error.
pub const ENCRYPTED: &str = "encrypted";

/// `com.docker.network.internal`: `--internal` as a label (the flag itself reaches the driver
/// as [`NetworkInfo::internal`](plexus_cnm::NetworkInfo::internal)).
pub const INTERNAL: &str = "com.docker.network.internal";

/// `com.docker.network.container_iface_prefix`: accepted (the controller passes it to `join`).
pub const CONTAINER_IFACE_PREFIX: &str = crate::options::CONTAINER_IFACE_PREFIX;

/// The overlay driver's options, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverlayOptions {
    /// The VXLAN id asked for (or allocated); `None`: allocate one.
    pub vni: Option<u32>,
    /// `com.docker.network.driver.mtu`; `None`: the underlay's MTU less 50.
    pub mtu: Option<u32>,
}

fn invalid(name: &str, value: &str, reason: &str) -> DriverError {
    DriverError::Invalid(format!("option {name}={value:?}: {reason}"))
}

/// Parses a VXLAN id as [`VXLANID_LIST`] holds it.
pub(super) fn parse_vni(value: &str) -> Result<u32, DriverError> {
    let ids: Vec<&str> = value.split(',').map(str::trim).collect();
    if ids.len() != 1 {
        return Err(invalid(
            VXLANID_LIST,
            value,
            "one id per network (Plexus keeps a network's subnets on one VXLAN segment)",
        ));
    }
    let vni: u32 = ids[0]
        .parse()
        .map_err(|_| invalid(VXLANID_LIST, value, "must be a number"))?;
    if vni == 0 || vni > MAX_VNI {
        return Err(invalid(
            VXLANID_LIST,
            value,
            &format!("must be from 1 to {MAX_VNI}"),
        ));
    }
    Ok(vni)
}

impl OverlayOptions {
    /// Parses and checks options; the error names the option and says what is wrong.
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, DriverError> {
        let mut o = Self::default();
        for (name, value) in options {
            match name.as_str() {
                VXLANID_LIST => o.vni = Some(parse_vni(value)?),
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
                ENCRYPTED => {
                    return Err(DriverError::Unsupported(format!(
                        "option {ENCRYPTED}: encrypted overlay networks are not yet supported \
                         (IPsec between hosts comes with the encryption issue)"
                    )))
                }
                INTERNAL => match value.as_str() {
                    "" | "1" | "t" | "T" | "true" | "TRUE" | "True" | "0" | "f" | "F" | "false"
                    | "FALSE" | "False" => {}
                    _ => return Err(invalid(name, value, "must be true or false")),
                },
                CONTAINER_IFACE_PREFIX => {}
                n if n.starts_with("plexus.dns.") => {}
                n if n.starts_with("com.docker.network.")
                    || n.starts_with("plexus.")
                    || !n.contains('.') =>
                {
                    return Err(DriverError::Invalid(format!(
                        "option {name}: unknown to the overlay driver"
                    )))
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

    fn opts(pairs: &[(&str, &str)]) -> Result<OverlayOptions, DriverError> {
        OverlayOptions::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn docker_names_parse_and_bad_values_name_the_option() {
        let o = opts(&[
            (VXLANID_LIST, "4242"),
            (MTU, "1400"),
            ("com.example.x", "y"),
        ]);
        assert_eq!(
            o,
            Ok(OverlayOptions {
                vni: Some(4242),
                mtu: Some(1400)
            })
        );
        for (name, value) in [
            (VXLANID_LIST, "0"),
            (VXLANID_LIST, "16777216"),
            (VXLANID_LIST, "12,13"),
            (VXLANID_LIST, "x"),
            (MTU, "40"),
            (MTU, "big"),
            ("com.docker.network.driver.overlay.nope", "1"),
            (INTERNAL, "maybe"),
        ] {
            match opts(&[(name, value)]) {
                Err(DriverError::Invalid(m)) => assert!(m.contains(name), "{m}"),
                other => panic!("{name}={value}: {other:?}"),
            }
        }
        match opts(&[(ENCRYPTED, "")]) {
            Err(DriverError::Unsupported(m)) => {
                assert!(m.contains("encrypted") && m.contains("not yet"), "{m}")
            }
            other => panic!("encrypted: {other:?}"),
        }
    }
}
