//! Docker swarm's `ingress` network: the global overlay network the routing mesh runs on.
//! A global service with an ingress-mode published port is on it, and so are its tasks;
//! each host has one sandbox on it, [`INGRESS_SANDBOX`], that load-balances the published
//! ports it is sent to over the service's tasks on every host.

pub use plexus_cnm::INGRESS_SANDBOX;
use plexus_cnm::{NetworkSpec, Scope};

/// The ingress network's name (Docker's).
pub const INGRESS_NETWORK: &str = "ingress";

/// The spec the ingress network is made from when missing: an overlay network of global
/// scope with a subnet from the global address pools.
pub fn ingress_network_spec() -> NetworkSpec {
    NetworkSpec {
        name: INGRESS_NETWORK.to_string(),
        driver: "overlay".to_string(),
        scope: Some(Scope::Global),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_is_a_global_overlay_named_ingress() {
        let spec = ingress_network_spec();
        assert_eq!(spec.name, "ingress");
        assert_eq!(spec.driver, "overlay");
        assert_eq!(spec.scope, Some(Scope::Global));
        assert!(spec.ipv4.is_empty() && !spec.internal && !spec.attachable);
    }
}
