//! The records of the model: what users ask for (`*Spec`) and what is stored.
//!
//! Field names follow Docker's (`Name`, `Driver`, `IPAM`, `Internal`, `Attachable`, `EnableIPv6`,
//! `Options`, `Labels`) so the API layer maps them one to one.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Where a network's state is shared: this host only, or the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One host (bridge, host, null, macvlan).
    #[default]
    Local,
    /// Every host of the cluster (overlay).
    Global,
}

impl Scope {
    /// Whether it is [`Scope::Local`].
    pub fn is_local(&self) -> bool {
        *self == Scope::Local
    }

    /// Its name as Docker spells it (`local`, `global`).
    pub fn name(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Global => "global",
        }
    }

    /// Parses Docker's names: `local`, and `global` or `swarm` (the same to Plexus); the
    /// error names the field.
    pub fn parse(value: &str) -> Result<Self, crate::CnmError> {
        match value {
            "local" => Ok(Scope::Local),
            "global" | "swarm" => Ok(Scope::Global),
            other => Err(crate::CnmError::invalid(
                "scope",
                format!("unknown scope {other:?}; one of local, global, swarm"),
            )),
        }
    }
}

/// One IPAM pool configuration of a network (`--subnet`, `--ip-range`, `--gateway`,
/// `--aux-address`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IpamPoolSpec {
    /// `--subnet`; `None` lets IPAM pick from the default pools.
    pub subnet: Option<String>,
    /// `--ip-range`.
    pub ip_range: Option<String>,
    /// `--gateway`.
    pub gateway: Option<String>,
    /// `--aux-address name=ip`.
    pub aux_addresses: BTreeMap<String, String>,
}

/// What a user asks for when creating a network (`docker network create`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkSpec {
    /// The network's name, unique on this controller.
    pub name: String,
    /// The driver (`bridge`, `host`, `null`, ...); empty means `bridge`.
    pub driver: String,
    /// IPv4 pool configurations (at most one here, as Docker's bridge allows).
    pub ipv4: Vec<IpamPoolSpec>,
    /// IPv6 pool configurations; used when `enable_ipv6`.
    pub ipv6: Vec<IpamPoolSpec>,
    /// IPAM driver options (`com.docker.network.ipam.serial`, ...).
    pub ipam_options: BTreeMap<String, String>,
    /// `--ipam-driver`: the IPAM driver of the network's pools; empty (or `default`) for the
    /// controller's own.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ipam_driver: String,
    /// `--ipv6`.
    pub enable_ipv6: bool,
    /// `--internal`: no connectivity outside the network.
    pub internal: bool,
    /// `--attachable` (meaningful for cluster networks).
    pub attachable: bool,
    /// `--scope`: must match the driver's data scope when given; `None` takes the driver's.
    #[serde(default)]
    pub scope: Option<Scope>,
    /// `-o key=value` driver options.
    pub options: BTreeMap<String, String>,
    /// `--label key=value`.
    pub labels: BTreeMap<String, String>,
}

/// One allocated pool of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamPool {
    /// IPAM's id for the pool.
    pub pool_id: String,
    /// The subnet.
    pub subnet: IpNet,
    /// `--ip-range`, if given.
    pub ip_range: Option<String>,
    /// The gateway, with the subnet's prefix length.
    pub gateway: Option<IpNet>,
    /// Reserved auxiliary addresses.
    pub aux_addresses: BTreeMap<String, IpAddr>,
}

/// A network as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 64 hex digits, like Docker's ids.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its driver.
    pub driver: String,
    /// Local or global.
    pub scope: Scope,
    /// Allocated IPv4 pools.
    pub ipv4: Vec<IpamPool>,
    /// Allocated IPv6 pools.
    pub ipv6: Vec<IpamPool>,
    /// The spec it was created from (options, labels, flags).
    pub spec: NetworkSpec,
    /// Creation time, RFC 3339.
    pub created: String,
    /// What the driver allocated for the whole cluster when the network was made (a global
    /// network's VXLAN id, ...): [`Driver::allocate_network`](crate::Driver::allocate_network)'s
    /// answer, handed back to the driver with the network's options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_data: BTreeMap<String, String>,
}

/// The networks every daemon has, as Docker's daemon does: `host` (driver `host`: the
/// sandbox is the host's own namespace) and `none` (driver `null`: loopback only), as
/// `(name, driver)`. [`Controller::create_predefined_networks`](crate::Controller::create_predefined_networks)
/// makes them; they cannot be removed, and prune leaves them.
pub const PREDEFINED_NETWORKS: [(&str, &str); 2] = [("host", "host"), ("none", "null")];

/// The name of Docker's default network, driver `bridge` (`docker0` there), which
/// the daemon makes at start (`plexus_drivers::create_default_bridge`) unless plexusd runs
/// with `--bridge none`. Like the [`PREDEFINED_NETWORKS`], it cannot
/// be removed and prune leaves it.
pub const DEFAULT_BRIDGE_NETWORK: &str = "bridge";

/// The network option that sets the TTL of the embedded DNS's answers, in seconds.
pub const DNS_TTL_OPTION: &str = "plexus.dns.ttl";

/// The option that marks the [`DEFAULT_BRIDGE_NETWORK`] (Docker sets it on its own): a
/// network a user named `bridge` without it is an ordinary network.
pub const DEFAULT_BRIDGE_OPTION: &str = "com.docker.network.bridge.default_bridge";

impl Network {
    /// Whether it is one of the [`PREDEFINED_NETWORKS`] or the [`DEFAULT_BRIDGE_NETWORK`]
    /// (with its [`DEFAULT_BRIDGE_OPTION`]).
    pub fn is_predefined(&self) -> bool {
        let default_bridge = self.name == DEFAULT_BRIDGE_NETWORK
            && self.driver == "bridge"
            && self
                .spec
                .options
                .get(DEFAULT_BRIDGE_OPTION)
                .is_some_and(|v| v == "true");
        default_bridge
            || PREDEFINED_NETWORKS
                .iter()
                .any(|(name, driver)| self.name == *name && self.driver == *driver)
    }
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// A published port (`-p [hostIP:]hostPort[-end]:port[/proto]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
pub struct PortBinding {
    /// `tcp`, `udp` or `sctp`.
    pub proto: String,
    /// The container's port.
    pub container_port: u16,
    /// The host address to bind, if restricted.
    pub host_ip: Option<IpAddr>,
    /// The host port; 0 before an ephemeral one is chosen.
    pub host_port: u16,
    /// With a host range for one container port (`-p 8000-8010:80`): the range's last port;
    /// the first free port from `host_port` to here is chosen. 0 (or `host_port`) for one
    /// port. Always 0 in what the driver answers.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub host_port_end: u16,
}

/// What a user asks for when connecting a sandbox to a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EndpointSpec {
    /// `--ip`.
    pub ipv4: Option<String>,
    /// `--ip6`.
    pub ipv6: Option<String>,
    /// `--alias`.
    pub aliases: Vec<String>,
    /// `-p`.
    pub ports: Vec<PortBinding>,
    /// A MAC address to use.
    pub mac: Option<String>,
    /// Driver options of this endpoint (`EndpointSettings.DriverOpts`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// The exact interface name to give it in the sandbox (CNI's `CNI_IFNAME`); the join
    /// fails if the sandbox has a link of that name. `None`: the prefix and the first free
    /// number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// An endpoint as stored: one sandbox's attachment to one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// 64 hex digits.
    pub id: String,
    /// `<sandbox name>` on the network, as Docker names endpoints.
    pub name: String,
    /// The network's id.
    pub network_id: String,
    /// The sandbox's id.
    pub sandbox_id: String,
    /// Its IPv4 address with the subnet's prefix.
    pub ipv4: Option<IpNet>,
    /// Its IPv6 address.
    pub ipv6: Option<IpNet>,
    /// IPAM pool ids the addresses came from, for release.
    pub pool_ids: Vec<String>,
    /// Its MAC address, as the driver chose it.
    pub mac: Option<String>,
    /// The interface name inside the sandbox.
    pub interface: Option<String>,
    /// DNS aliases.
    pub aliases: Vec<String>,
    /// Published ports, with chosen host ports.
    pub ports: Vec<PortBinding>,
    /// Its network's scope: which store holds the record.
    #[serde(default, skip_serializing_if = "Scope::is_local")]
    pub scope: Scope,
    /// The id of the host that made it and owns its data plane; empty in records of a
    /// local network (always this host's).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Its driver options.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// Routes its join added besides the default one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<crate::driver::StaticRoute>,
    /// Its join gave the sandbox no default gateway.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_gateway: bool,
    /// DNS servers that came with its address (a DHCP lease's, through the IPAM driver's
    /// answer): its sandbox's nameservers when the sandbox was given none (`--dns`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// The controller made it, not a user: its sandbox's way out through the gateway network
    /// (Docker's `gateway_<sandbox id>` endpoint on `docker_gwbridge`), because its other
    /// networks give it no default gateway. It goes when they do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub egress: bool,
}

/// A host of the cluster, as it announces itself in the cluster store
/// (`plexus/v1/global/node/<id>`, with a time to live it keeps refreshing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The host's id.
    #[serde(rename = "ID")]
    pub id: String,
    /// The host's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The address it gives the other hosts (`--cluster-advertise`), if any.
    #[serde(rename = "Advertise")]
    pub advertise: Option<std::net::SocketAddr>,
}

/// A sandbox: one container's network stack (a network namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// 64 hex digits.
    pub id: String,
    /// Its name, unique on this controller.
    pub name: String,
    /// The namespace's path (the "sandbox key").
    pub key: String,
    /// Whether Plexus made the namespace (and so deletes it) or it was handed over.
    pub owned_netns: bool,
    /// Endpoint ids, in connection order.
    pub endpoints: Vec<String>,
    /// `--hostname`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `--dns`: nameservers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// `--dns-search`: search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// `--dns-option`: resolver options (`ndots:2`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_options: Vec<String>,
    /// The id of the service it is a task of (`--service`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Labels its creator gave it (the CNI plugin's container id label, for one); only
    /// recorded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its namespace belongs to a runtime that moves the interfaces in and configures them
    /// itself (libnetwork's `OptionUseExternalKey`): joins hand interfaces over
    /// ([`InterfaceName::handoff`](crate::InterfaceName::handoff)), the namespace may not
    /// exist yet, and the sandbox gets no way out of Plexus's own (the runtime routes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external_key: bool,
}

/// What a user asks for when creating a sandbox with
/// [`Controller::create_sandbox`](crate::Controller::create_sandbox).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SandboxSpec {
    /// Its name, unique on this controller.
    pub name: String,
    /// An existing namespace to attach (`/proc/PID/ns/net`); `None` makes a new one.
    pub netns: Option<String>,
    /// `--hostname`.
    pub hostname: Option<String>,
    /// `--dns`: nameserver addresses.
    pub dns: Vec<String>,
    /// `--dns-search`.
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    pub dns_options: Vec<String>,
    /// Networks (name or id) to connect, in order, each with its endpoint's settings.
    pub networks: Vec<(String, EndpointSpec)>,
    /// Published ports, added to the first network's endpoint.
    pub ports: Vec<PortBinding>,
    /// `--service`: the service (name or id) it joins as a task; it must be on at least one
    /// of the service's networks.
    #[serde(default)]
    pub service: Option<String>,
    /// Labels to record with it.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `netns` belongs to a runtime that moves interfaces in itself and may mount it only
    /// later (see [`Sandbox::external_key`]); needs `netns`.
    #[serde(default)]
    pub external_key: bool,
}
