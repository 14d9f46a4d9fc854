//! # plexus-api-types — the JSON of Plexus's HTTP API
//!
//! Apart from any I/O (as hickory-dns keeps its protocol types apart from its servers): Docker
//! Engine API v1.41 shapes for networks, and Plexus's own sandbox resource. Request types
//! accept what the docker CLI sends (unknown fields are ignored, as dockerd does); response
//! types print what `docker network inspect` shows. The daemon (`plexus-api`) and the CLI
//! (`plexus`) share them; the CLI depends on nothing else of the daemon, which keeps it small
//! and quick to start.
//!
//! ```
//! let created: plexus_api_types::NetworkCreated =
//!     serde_json::from_str(r#"{"Id":"abc","Warning":""}"#).unwrap();
//! assert_eq!(created.id, "abc");
//! ```

#![warn(missing_docs)]

pub mod cluster;
pub mod kernel;
pub mod service;

pub use cluster::{ClusterHost, ClusterInspect, GossipStats, KeyringInfo};
pub use service::{
    parse_publish, PortConfig, PortRemove, ServiceCreate, ServiceCreated, ServiceEndpoint,
    ServiceEndpointSpec, ServiceNetwork, ServiceNetworkView, ServiceResource, ServiceUpdate,
    TaskAddress, TaskView, VirtualIp,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The Docker Engine API version served.
pub const API_VERSION: &str = "1.41";

/// The sandbox label that marks a sandbox made by the CNI plugin (`plexus-cni`), with the
/// runtime's container id (`CNI_CONTAINERID`) as its value: CNI's garbage collection, and
/// plexusd's at start, release only sandboxes that carry it.
pub const CNI_CONTAINER_LABEL: &str = "io.plexus.cni.container-id";

/// `GET /info`: the part of dockerd's answer a network stack has, and the cluster store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// This host's id (stable across restarts).
    #[serde(rename = "ID")]
    pub id: String,
    /// The host's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The kernel's release.
    #[serde(rename = "KernelVersion")]
    pub kernel_version: String,
    /// `linux`.
    #[serde(rename = "OperatingSystem")]
    pub operating_system: String,
    /// `linux`.
    #[serde(rename = "OSType")]
    pub os_type: String,
    /// `--cluster-store`, credentials removed; empty without one (dockerd's field).
    #[serde(rename = "ClusterStore")]
    pub cluster_store: String,
    /// `--cluster-advertise`; empty without one (dockerd's field).
    #[serde(rename = "ClusterAdvertise")]
    pub cluster_advertise: String,
    /// The cluster store and whether it answers now; absent without one.
    #[serde(
        rename = "PlexusClusterStore",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub plexus_cluster_store: Option<ClusterStoreInfo>,
    /// The local store (`--store`) and whether it answers now, in the same shape; absent from
    /// daemons older than this field.
    #[serde(
        rename = "PlexusStore",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub plexus_store: Option<ClusterStoreInfo>,
}

/// A store as `GET /info` reports it (the cluster store, the local store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStoreInfo {
    /// Its URL, credentials removed.
    #[serde(rename = "URL")]
    pub url: String,
    /// `ok`, or `unavailable: <why>`.
    #[serde(rename = "Status")]
    pub status: String,
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    /// Plexus's version.
    pub version: String,
    /// The Docker API version served.
    #[serde(rename = "ApiVersion")]
    pub api_version: String,
    /// The oldest Docker API version accepted.
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    /// `linux`.
    pub os: String,
    /// The machine architecture (`amd64`, `arm64`).
    pub arch: String,
    /// Build commit (empty when unknown).
    pub git_commit: String,
    /// Toolchain description.
    pub go_version: String,
    /// The running kernel (empty when unknown).
    pub kernel_version: String,
    /// Build time (empty when unknown).
    pub build_time: String,
}

/// One IPAM pool configuration (`IPAM.Config[]`), as sent and as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct IpamConfigEntry {
    /// `--subnet`.
    #[serde(rename = "Subnet", default, skip_serializing_if = "String::is_empty")]
    pub subnet: String,
    /// `--ip-range`.
    #[serde(rename = "IPRange", default, skip_serializing_if = "String::is_empty")]
    pub ip_range: String,
    /// `--gateway`.
    #[serde(rename = "Gateway", default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// `--aux-address name=ip`.
    #[serde(
        rename = "AuxiliaryAddresses",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

/// A network's `IPAM` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Ipam {
    /// The IPAM driver (`default`).
    #[serde(rename = "Driver", default)]
    pub driver: String,
    /// Pool configurations.
    #[serde(rename = "Config", default)]
    pub config: Option<Vec<IpamConfigEntry>>,
    /// IPAM driver options (`--ipam-opt`).
    #[serde(rename = "Options", default)]
    pub options: Option<BTreeMap<String, String>>,
}

/// `POST /networks/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkCreate {
    /// The network's name.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// Refuse a duplicate name (always done; accepted for compatibility).
    #[serde(rename = "CheckDuplicate", default)]
    pub check_duplicate: bool,
    /// The driver; empty means `bridge`.
    #[serde(rename = "Driver", default)]
    pub driver: String,
    /// No connectivity outside the network.
    #[serde(rename = "Internal", default)]
    pub internal: bool,
    /// Attachable by standalone containers.
    #[serde(rename = "Attachable", default)]
    pub attachable: bool,
    /// `local`, `global` or `swarm`; empty takes the driver's scope.
    #[serde(rename = "Scope", default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    /// Ingress network (not supported: must be false).
    #[serde(rename = "Ingress", default)]
    pub ingress: bool,
    /// IPv6 on.
    #[serde(rename = "EnableIPv6", default)]
    pub enable_ipv6: bool,
    /// IPAM settings.
    #[serde(rename = "IPAM", default)]
    pub ipam: Option<Ipam>,
    /// Driver options (`-o`).
    #[serde(rename = "Options", default)]
    pub options: Option<BTreeMap<String, String>>,
    /// Labels.
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The answer to `POST /networks/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkCreated {
    /// The new network's id.
    #[serde(rename = "Id")]
    pub id: String,
    /// Warnings (empty).
    #[serde(rename = "Warning")]
    pub warning: String,
}

/// One sandbox on a network, as `docker network inspect` lists containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkContainer {
    /// The sandbox's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The interface's MAC address.
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
    /// IPv4 address with prefix, or empty.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// IPv6 address with prefix, or empty.
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// `ConfigFrom` of a network (always empty here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ConfigReference {
    /// The config-only network this one was made from.
    #[serde(rename = "Network")]
    pub network: String,
}

/// A network as `GET /networks/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkResource {
    /// Its name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Its id (64 hex digits).
    #[serde(rename = "Id")]
    pub id: String,
    /// Creation time, RFC 3339.
    #[serde(rename = "Created")]
    pub created: String,
    /// `local` or `global`.
    #[serde(rename = "Scope")]
    pub scope: String,
    /// The driver.
    #[serde(rename = "Driver")]
    pub driver: String,
    /// IPv6 on.
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// IPAM driver, options and pools.
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    /// No outside connectivity.
    #[serde(rename = "Internal")]
    pub internal: bool,
    /// Attachable.
    #[serde(rename = "Attachable")]
    pub attachable: bool,
    /// Always false.
    #[serde(rename = "Ingress")]
    pub ingress: bool,
    /// Always empty.
    #[serde(rename = "ConfigFrom")]
    pub config_from: ConfigReference,
    /// Always false.
    #[serde(rename = "ConfigOnly")]
    pub config_only: bool,
    /// Sandboxes on the network, by sandbox id.
    #[serde(rename = "Containers")]
    pub containers: BTreeMap<String, NetworkContainer>,
    /// Driver options.
    #[serde(rename = "Options")]
    pub options: BTreeMap<String, String>,
    /// Labels.
    #[serde(rename = "Labels")]
    pub labels: BTreeMap<String, String>,
}

/// `EndpointConfig.IPAMConfig` of a connect request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EndpointIpamConfig {
    /// `--ip`.
    #[serde(rename = "IPv4Address", default)]
    pub ipv4_address: String,
    /// `--ip6`.
    #[serde(rename = "IPv6Address", default)]
    pub ipv6_address: String,
}

/// `EndpointConfig` of a connect request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EndpointSettings {
    /// Addresses asked for.
    #[serde(rename = "IPAMConfig", default)]
    pub ipam_config: Option<EndpointIpamConfig>,
    /// `--alias`.
    #[serde(rename = "Aliases", default)]
    pub aliases: Option<Vec<String>>,
    /// A MAC address asked for.
    #[serde(rename = "MacAddress", default)]
    pub mac_address: String,
    /// The endpoint's driver options.
    #[serde(rename = "DriverOpts", default)]
    pub driver_opts: Option<BTreeMap<String, String>>,
    /// Plexus's own: the exact interface name inside the sandbox (CNI's `CNI_IFNAME`);
    /// empty: the next `eth<n>`.
    #[serde(
        rename = "Interface",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub interface: String,
}

/// `POST /networks/{id}/connect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkConnect {
    /// The sandbox (container) name or id.
    #[serde(rename = "Container", default)]
    pub container: String,
    /// Endpoint settings.
    #[serde(rename = "EndpointConfig", default)]
    pub endpoint_config: Option<EndpointSettings>,
}

/// `POST /networks/{id}/disconnect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworkDisconnect {
    /// The sandbox (container) name or id.
    #[serde(rename = "Container", default)]
    pub container: String,
    /// Accepted for compatibility.
    #[serde(rename = "Force", default)]
    pub force: bool,
}

/// The answer to `POST /networks/prune`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NetworksPruned {
    /// Names of the deleted networks.
    #[serde(rename = "NetworksDeleted")]
    pub networks_deleted: Vec<String>,
}

/// An error answer, as dockerd sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong.
    pub message: String,
}

/// One network of a sandbox create request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SandboxNetwork {
    /// The network's name or id.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// `--ip`.
    #[serde(rename = "IPv4Address", default)]
    pub ipv4_address: String,
    /// `--ip6`.
    #[serde(rename = "IPv6Address", default)]
    pub ipv6_address: String,
    /// `--alias`.
    #[serde(rename = "Aliases", default)]
    pub aliases: Vec<String>,
    /// The endpoint's driver options.
    #[serde(
        rename = "DriverOpts",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub driver_opts: BTreeMap<String, String>,
    /// The exact interface name inside the sandbox (CNI's `CNI_IFNAME`); empty: the next
    /// `eth<n>`.
    #[serde(
        rename = "Interface",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub interface: String,
}

/// `POST /plexus/sandboxes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SandboxCreate {
    /// The sandbox's name.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// An existing namespace to attach (`/proc/PID/ns/net`); empty makes a new one.
    #[serde(rename = "NetNs", default)]
    pub netns: String,
    /// Networks to connect, in order (the first gets the published ports).
    #[serde(rename = "Networks", default)]
    pub networks: Vec<SandboxNetwork>,
    /// Published ports, `-p` syntax: `[hostIP:][hostPort[-end]:]port[-end][/proto]`.
    #[serde(rename = "Ports", default)]
    pub ports: Vec<String>,
    /// `--hostname`.
    #[serde(rename = "Hostname", default)]
    pub hostname: String,
    /// `--dns`.
    #[serde(rename = "Dns", default)]
    pub dns: Vec<String>,
    /// `--dns-search`.
    #[serde(rename = "DnsSearch", default)]
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    #[serde(rename = "DnsOptions", default)]
    pub dns_options: Vec<String>,
    /// `--service`: the service (name or id) it joins as a task; empty: none.
    #[serde(rename = "Service", default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// Labels, only recorded ([`CNI_CONTAINER_LABEL`] marks the CNI plugin's sandboxes).
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A published port of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortView {
    /// `tcp`, `udp` or `sctp`.
    #[serde(rename = "Proto")]
    pub proto: String,
    /// The sandbox's port.
    #[serde(rename = "ContainerPort")]
    pub container_port: u16,
    /// The host address, empty for all.
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    /// The host port.
    #[serde(rename = "HostPort")]
    pub host_port: u16,
}

/// One endpoint of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxEndpoint {
    /// The network's name.
    #[serde(rename = "Network")]
    pub network: String,
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The endpoint's id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The interface inside the sandbox.
    #[serde(rename = "Interface")]
    pub interface: String,
    /// The MAC address.
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
    /// IPv4 address with prefix, or empty.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// IPv6 address with prefix, or empty.
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
    /// DNS aliases.
    #[serde(rename = "Aliases")]
    pub aliases: Vec<String>,
    /// Published ports.
    #[serde(rename = "Ports")]
    pub ports: Vec<PortView>,
    /// The default gateway its join gave the sandbox (IPv4), or empty.
    #[serde(rename = "Gateway", default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// The IPv6 default gateway its join gave the sandbox, or empty.
    #[serde(
        rename = "IPv6Gateway",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6_gateway: String,
}

/// A sandbox as `GET /plexus/sandboxes/{name}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxResource {
    /// Its id.
    #[serde(rename = "Id")]
    pub id: String,
    /// Its name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The namespace's path (what `plexus sandbox exec` enters).
    #[serde(rename = "NetNs")]
    pub netns: String,
    /// Whether Plexus made the namespace (and deletes it with the sandbox).
    #[serde(rename = "OwnedNetNs")]
    pub owned_netns: bool,
    /// `--hostname` (empty when not given).
    #[serde(rename = "Hostname", default)]
    pub hostname: String,
    /// `--dns`.
    #[serde(rename = "Dns", default)]
    pub dns: Vec<String>,
    /// `--dns-search`.
    #[serde(rename = "DnsSearch", default)]
    pub dns_search: Vec<String>,
    /// `--dns-option`.
    #[serde(rename = "DnsOptions", default)]
    pub dns_options: Vec<String>,
    /// Endpoints, in connection order.
    #[serde(rename = "Endpoints")]
    pub endpoints: Vec<SandboxEndpoint>,
    /// The `resolv.conf` written for it, for a runtime to bind-mount (Docker's
    /// `ResolvConfPath`); empty when the daemon writes none.
    #[serde(
        rename = "ResolvConfPath",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub resolv_conf_path: String,
    /// The `hosts` file written for it (Docker's `HostsPath`).
    #[serde(
        rename = "HostsPath",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub hosts_path: String,
    /// The id of the service it is a task of; empty: none.
    #[serde(rename = "Service", default, skip_serializing_if = "String::is_empty")]
    pub service: String,
    /// Its labels.
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Who an event is about (`Actor` of Docker's events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventActor {
    /// The object's id (a network's for `connect`/`disconnect`).
    #[serde(rename = "ID")]
    pub id: String,
    /// `name`, `type` (the driver), `container` (the sandbox of a connect).
    #[serde(rename = "Attributes", default)]
    pub attributes: BTreeMap<String, String>,
}

/// One line of `GET /events`, as dockerd sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EventMessage {
    /// `network`, or Plexus's `sandbox`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// `create`, `connect`, `disconnect`, `destroy`.
    #[serde(rename = "Action")]
    pub action: String,
    /// The object.
    #[serde(rename = "Actor")]
    pub actor: EventActor,
    /// `local` or `swarm`.
    #[serde(rename = "scope", default)]
    pub scope: String,
    /// Seconds since the Unix epoch.
    #[serde(rename = "time", default)]
    pub time: i64,
    /// Nanoseconds since the Unix epoch.
    #[serde(rename = "timeNano", default)]
    pub time_nano: i64,
}
