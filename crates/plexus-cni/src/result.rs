//! CNI's success result (`interfaces`, `ips`, `routes`, `dns`), made from the sandbox plexusd
//! answers with, in the configuration's `cniVersion` (0.3.x and 0.4.0 carry `version` on
//! each address; 1.0.0 and later do not).

use plexus_api_types::{SandboxEndpoint, SandboxResource};
use serde::{Deserialize, Serialize};

use crate::config::at_least;

/// The address the embedded DNS answers on inside every sandbox.
pub const EMBEDDED_DNS: &str = "127.0.0.11";

/// One interface of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Its name (`CNI_IFNAME`).
    pub name: String,
    /// Its MAC address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The namespace it is in (`CNI_NETNS`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// One address of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ip {
    /// `4` or `6`: only before 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The address with its prefix.
    pub address: String,
    /// The gateway, when the network gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The index of its interface in `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The destination.
    pub dst: String,
    /// The next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// The DNS settings of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Dns {
    /// Nameservers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    /// The version of its format.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Interfaces made.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// Addresses given.
    #[serde(default)]
    pub ips: Vec<Ip>,
    /// Routes given.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default)]
    pub dns: Dns,
}

/// The result of `endpoint` of `sandbox`, in `cni_version`'s format.
pub fn from_endpoint(
    cni_version: &str,
    sandbox: &SandboxResource,
    endpoint: &SandboxEndpoint,
) -> CniResult {
    let versioned = !at_least(cni_version, "1.0.0");
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    for (addr, gateway, family, default) in [
        (&endpoint.ipv4_address, &endpoint.gateway, "4", "0.0.0.0/0"),
        (&endpoint.ipv6_address, &endpoint.ipv6_gateway, "6", "::/0"),
    ] {
        if addr.is_empty() {
            continue;
        }
        let gateway = (!gateway.is_empty()).then(|| gateway.clone());
        if let Some(gw) = &gateway {
            routes.push(Route {
                dst: default.to_string(),
                gw: Some(gw.clone()),
            });
        }
        ips.push(Ip {
            version: versioned.then(|| family.to_string()),
            address: addr.clone(),
            gateway,
            interface: Some(0),
        });
    }
    let nameservers = if sandbox.dns.is_empty() {
        vec![EMBEDDED_DNS.to_string()]
    } else {
        sandbox.dns.clone()
    };
    CniResult {
        cni_version: cni_version.to_string(),
        interfaces: vec![Interface {
            name: endpoint.interface.clone(),
            mac: endpoint.mac_address.clone(),
            sandbox: sandbox.netns.clone(),
        }],
        ips,
        routes,
        dns: Dns {
            nameservers,
            search: sandbox.dns_search.clone(),
            options: sandbox.dns_options.clone(),
        },
    }
}
