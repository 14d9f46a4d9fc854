//! Docker's `docker_gwbridge`: the local bridge network that gives sandboxes on overlay
//! networks their way out, the policy of what it is made from. The controller makes it on
//! first need (`ControllerConfig::gateway_network`) and attaches such sandboxes to it; a
//! network of this name a user made first is used as it is, as Docker does.

use std::collections::BTreeMap;

use plexus_cnm::NetworkSpec;

use crate::options::{BRIDGE_NAME, ENABLE_ICC, ENABLE_IP_MASQUERADE};

/// The gateway network's name, and its kernel bridge's (Docker's).
pub const GATEWAY_BRIDGE_NETWORK: &str = "docker_gwbridge";

/// The spec the gateway network is made from when missing: driver `bridge`, bridge device
/// `docker_gwbridge`, no traffic between its sandboxes (`enable_icc=false`: their only way
/// is out), masqueraded egress, a subnet from the default local address pools.
pub fn gateway_bridge_spec() -> NetworkSpec {
    let options: BTreeMap<String, String> = [
        (BRIDGE_NAME, GATEWAY_BRIDGE_NETWORK),
        (ENABLE_ICC, "false"),
        (ENABLE_IP_MASQUERADE, "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    NetworkSpec {
        name: GATEWAY_BRIDGE_NETWORK.to_string(),
        driver: "bridge".to_string(),
        options,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_is_a_valid_bridge_network_without_icc() {
        let spec = gateway_bridge_spec();
        assert_eq!(spec.name, "docker_gwbridge");
        assert_eq!(spec.driver, "bridge");
        assert!(spec.ipv4.is_empty() && !spec.internal && !spec.enable_ipv6);
        assert_eq!(spec.options[ENABLE_ICC], "false");
        assert_eq!(spec.options[ENABLE_IP_MASQUERADE], "true");
        // The bridge driver takes its options as they are (the device name fits IFNAMSIZ).
        let parsed =
            crate::options::BridgeOptions::parse(&spec.options).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parsed.bridge_name.as_deref(), Some("docker_gwbridge"));
        assert!(!parsed.enable_icc && parsed.enable_ip_masquerade);
    }
}
