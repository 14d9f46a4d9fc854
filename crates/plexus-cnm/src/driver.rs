//! The driver API, in the shape of libnetwork's: the controller calls a driver to make a
//! network, to make an endpoint, to join it to a sandbox and to open it to the outside; the
//! driver never calls back into the controller or the API.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;

use crate::model::{IpamPool, PortBinding, Scope};
use crate::reconcile::{Desired, LiveEndpoint, ReconcileMode, Reconciled};

/// A driver's failure: a message for the user, and whether it is the user's fault.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DriverError {
    /// Bad input (an unknown or malformed option): the message names the option.
    #[error("{0}")]
    Invalid(String),
    /// A clash with something that exists (a port published twice, a bridge name in use).
    #[error("{0}")]
    Conflict(String),
    /// The kernel cannot do it (a missing module): the message says what is missing.
    #[error("{0}")]
    Unsupported(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

/// What a driver is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capability {
    /// Where its networks' state lives (libnetwork's `DataScope`): a global-scope driver's
    /// networks are recorded in the cluster store and seen by every host.
    pub scope: Scope,
    /// How far its networks reach (libnetwork's `ConnectivityScope`): `Global` when
    /// endpoints on different hosts talk over one network (overlay), `Local` when a network
    /// ends at the host (bridge, host, null; macvlan reaches the LAN but each host's network
    /// is its own).
    pub connectivity: Scope,
    /// Whether its networks need IP addresses from IPAM (`null` and `host` do not).
    pub needs_ipam: bool,
    /// Whether more than one network of this driver may exist (`host` and `null`: no).
    pub multiple_networks: bool,
}

/// What a driver is told about a network it must create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    /// The network's id.
    pub id: String,
    /// The network's name.
    pub name: String,
    /// Driver options (`-o`).
    pub options: BTreeMap<String, String>,
    /// IPv4 pools, with gateways.
    pub ipv4: Vec<IpamPool>,
    /// IPv6 pools.
    pub ipv6: Vec<IpamPool>,
    /// `--internal`.
    pub internal: bool,
    /// `--ipv6`.
    pub enable_ipv6: bool,
}

/// What a driver is told about an endpoint it must create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The network's id.
    pub network_id: String,
    /// The endpoint's id.
    pub endpoint_id: String,
    /// Its IPv4 address, if any.
    pub ipv4: Option<IpNet>,
    /// Its IPv6 address, if any.
    pub ipv6: Option<IpNet>,
    /// A MAC address asked for, if any.
    pub mac: Option<String>,
    /// Published ports.
    pub ports: Vec<PortBinding>,
    /// The endpoint's own driver options (`EndpointSettings.DriverOpts`).
    pub options: BTreeMap<String, String>,
}

/// What a driver made for an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointCreated {
    /// The MAC address it gave the interface.
    pub mac: Option<String>,
    /// Published ports with ephemeral host ports filled in.
    pub ports: Vec<PortBinding>,
}

/// How a join names the interface it puts in a sandbox: `prefix` and a number, the lowest
/// from `first` on whose name is free in the sandbox. `first` is the controller's guess from
/// its records (the first number none of the sandbox's endpoints uses), so a driver can try
/// [`InterfaceName::guess`] without listing the sandbox's links and look further only if the
/// kernel says the name is taken. With `exact` (CNI's `CNI_IFNAME`) the name is that one and
/// no other: a join whose name is taken in the sandbox fails with [`DriverError::Conflict`].
///
/// With `handoff` the interface is not put in the sandbox at all: the driver makes it in the
/// daemon's own namespace, down and without addresses or routes, under a name of its choice
/// (returned in [`Joined::interface`]), for the runtime that owns the sandbox to move in and
/// configure itself (libnetwork's contract with remote drivers: `Join` answers `SrcName`,
/// and dockerd moves and renames that link when it sets the container's namespace up). The
/// sandbox's namespace need not exist yet. A driver that cannot do this refuses with
/// [`DriverError::Unsupported`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceName<'a> {
    /// The name's prefix (`eth`, or `com.docker.network.container_iface_prefix`).
    pub prefix: &'a str,
    /// The number to try first.
    pub first: u32,
    /// The exact name asked for, if any (then `prefix` and `first` are not used).
    pub exact: Option<&'a str>,
    /// Made in the daemon's namespace for the runtime to move in (see above).
    pub handoff: bool,
}

impl<'a> InterfaceName<'a> {
    /// `prefix` and the first number to try.
    pub fn numbered(prefix: &'a str, first: u32) -> Self {
        Self {
            prefix,
            first,
            exact: None,
            handoff: false,
        }
    }

    /// Exactly `name`.
    pub fn exact(name: &'a str) -> Self {
        Self {
            prefix: "",
            first: 0,
            exact: Some(name),
            handoff: false,
        }
    }

    /// Made in the daemon's namespace, named by the driver, for the runtime to move in.
    pub fn handoff() -> Self {
        Self {
            prefix: "",
            first: 0,
            exact: None,
            handoff: true,
        }
    }

    /// The name to try first: the exact one, or `prefix` + `first` (`eth0`); empty for a
    /// hand-off, whose name the driver chooses.
    pub fn guess(&self) -> String {
        match self.exact {
            Some(name) => name.to_string(),
            None if self.handoff => String::new(),
            None => format!("{}{}", self.prefix, self.first),
        }
    }
}

/// A route a join asks for in the sandbox, besides the default one (libnetwork's
/// `StaticRoute`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StaticRoute {
    /// Where it leads.
    pub destination: IpNet,
    /// Through this gateway; `None`: directly connected on the endpoint's interface.
    pub next_hop: Option<IpAddr>,
}

/// A node of the cluster that joined or left (libnetwork's `DiscoverNew`/`DiscoverDelete`
/// with `NodeDiscovery`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDiscovery {
    /// The node's address on the data plane.
    pub address: IpAddr,
    /// Whether it is this node.
    pub self_node: bool,
}

/// What happened to a control-plane table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableEventKind {
    /// A new entry.
    Create,
    /// A changed entry.
    Update,
    /// A removed entry.
    Delete,
}

/// A control-plane table entry of a network changed (libnetwork's `EventNotify`): how a
/// global driver learns what peers published (an overlay's endpoint addresses, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEvent {
    /// Created, updated or deleted.
    pub kind: TableEventKind,
    /// The network's id.
    pub network_id: String,
    /// The table's name.
    pub table: String,
    /// The entry's key.
    pub key: String,
    /// The entry's value (the old one for a delete).
    pub value: Vec<u8>,
}

/// What a caller asks of an endpoint's way out (libnetwork's options of
/// `ProgramExternalConnectivity`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalConnectivity {
    /// Ports to publish, as the endpoint's record holds them (host ports chosen).
    pub port_bindings: Vec<PortBinding>,
    /// Ports the sandbox exposes (Docker's `ExposedPorts`), as `(protocol, port)`.
    pub exposed_ports: Vec<(String, u16)>,
}

/// What a join put inside the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Joined {
    /// The interface's name inside the sandbox (`eth0`); for a hand-off, its name in the
    /// daemon's namespace, which the runtime moves in.
    pub interface: Option<String>,
    /// The gateway(s) it routes through.
    pub gateways: Vec<IpAddr>,
    /// Further routes the sandbox needs through this endpoint.
    pub static_routes: Vec<StaticRoute>,
    /// The endpoint gives the sandbox no default gateway (libnetwork's
    /// `DisableGatewayService`).
    pub disable_gateway: bool,
}

/// A network driver.
#[async_trait]
pub trait Driver: Send + Sync {
    /// The driver's name (`bridge`).
    fn name(&self) -> &str;

    /// What it is.
    fn capability(&self) -> Capability;

    /// Checks driver options before anything is allocated; the error names the option.
    fn validate_options(&self, options: &BTreeMap<String, String>) -> Result<(), DriverError>;

    /// Makes the network's data plane (a bridge, a VXLAN device, nothing). A global-scope
    /// network is created on the host that makes it, and also on every host before each
    /// endpoint made there (with [`allocate_network`](Driver::allocate_network)'s data in the
    /// options): a global driver must take a network it knows already as done.
    async fn create_network(&self, network: &NetworkInfo) -> Result<(), DriverError>;

    /// Removes it; removing a network the driver does not know is not an error.
    async fn delete_network(&self, network_id: &str) -> Result<(), DriverError>;

    /// Makes an endpoint (a veth pair, a macvlan device, ...), not yet in any sandbox.
    async fn create_endpoint(
        &self,
        endpoint: &EndpointInfo,
    ) -> Result<EndpointCreated, DriverError>;

    /// Removes an endpoint; unknown endpoints are not an error.
    async fn delete_endpoint(&self, network_id: &str, endpoint_id: &str)
        -> Result<(), DriverError>;

    /// Puts the endpoint into the sandbox at `sandbox_key` (a namespace path), named as
    /// `interface` says, with its addresses and routes.
    async fn join(
        &self,
        network_id: &str,
        endpoint_id: &str,
        sandbox_key: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError>;

    /// Takes the endpoint out of the sandbox; idempotent.
    async fn leave(&self, network_id: &str, endpoint_id: &str) -> Result<(), DriverError>;

    /// Connects a joined endpoint to the world outside its network: the bridge driver
    /// publishes its ports here (libnetwork's `ProgramExternalConnectivity`, which the
    /// controller calls once the join is done). The default does nothing.
    async fn program_external_connectivity(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        let _ = (network_id, endpoint_id);
        Ok(())
    }

    /// Undoes [`program_external_connectivity`](Driver::program_external_connectivity)
    /// (libnetwork's `RevokeExternalConnectivity`, called before the leave); idempotent.
    async fn revoke_external_connectivity(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        let _ = (network_id, endpoint_id);
        Ok(())
    }

    /// What the data plane holds for an endpoint, for inspection (libnetwork's
    /// `EndpointOperInfo`): keys such as `com.docker.network.endpoint.macaddress` and
    /// `com.docker.network.portmap`. The default has nothing to say.
    async fn endpoint_oper_info(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>, DriverError> {
        let _ = (network_id, endpoint_id);
        Ok(BTreeMap::new())
    }

    // Reconciliation (kept together at the end of the trait).

    /// The endpoints whose data plane is finished in the kernel, by id, with what the kernel
    /// says of each; `None` when the driver keeps no kernel state per endpoint (every
    /// recorded endpoint counts as live). Start-up reconciliation rolls back a recorded
    /// endpoint missing here (or with ports, none published). The default: `None`.
    async fn live_endpoints(&self) -> Result<Option<BTreeMap<String, LiveEndpoint>>, DriverError> {
        Ok(None)
    }

    /// Makes the kernel match `desired`, the store's networks and endpoints of this driver:
    /// restores what is missing (and the driver's memory after a restart) and deletes only
    /// objects carrying the driver's mark that `desired` does not know; a kernel object the
    /// driver did not make is never touched. [`ReconcileMode::Periodic`] also makes again an
    /// endpoint's interface deleted behind Plexus's back (as long as its sandbox exists).
    /// The default: nothing to do.
    async fn reconcile(
        &self,
        desired: &Desired,
        mode: ReconcileMode,
    ) -> Result<Reconciled, DriverError> {
        let _ = (desired, mode);
        Ok(Reconciled::default())
    }

    // The rest of libnetwork's driver API. The defaults do nothing, so a driver that needs
    // none of it (a local one) is unchanged.

    /// libnetwork's `NetworkAllocate`: for a global-scope network, takes what must be
    /// unique in the cluster (a VXLAN id) once, when the network is created; the answer is
    /// stored with the network ([`Network::driver_data`](crate::Network::driver_data)) and
    /// given back with its options to [`create_network`](Driver::create_network).
    async fn allocate_network(
        &self,
        network: &NetworkInfo,
    ) -> Result<BTreeMap<String, String>, DriverError> {
        let _ = network;
        Ok(BTreeMap::new())
    }

    /// libnetwork's `NetworkFree`: gives back what
    /// [`allocate_network`](Driver::allocate_network) took.
    async fn free_network(
        &self,
        network_id: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<(), DriverError> {
        let _ = (network_id, data);
        Ok(())
    }

    /// libnetwork's `DiscoverNew`: a node joined the cluster.
    async fn discover_new(&self, node: &NodeDiscovery) -> Result<(), DriverError> {
        let _ = node;
        Ok(())
    }

    /// libnetwork's `DiscoverDelete`: a node left the cluster.
    async fn discover_delete(&self, node: &NodeDiscovery) -> Result<(), DriverError> {
        let _ = node;
        Ok(())
    }

    /// libnetwork's `EventNotify`: an entry of a control-plane table of one of the
    /// driver's networks was created, updated or deleted.
    async fn event_notify(&self, event: &TableEvent) -> Result<(), DriverError> {
        let _ = event;
        Ok(())
    }

    /// [`program_external_connectivity`](Driver::program_external_connectivity) with the
    /// caller's options (port bindings, exposed ports), which is what the controller calls;
    /// the default ignores them and calls that.
    async fn program_external_connectivity_with(
        &self,
        network_id: &str,
        endpoint_id: &str,
        options: &ExternalConnectivity,
    ) -> Result<(), DriverError> {
        let _ = options;
        self.program_external_connectivity(network_id, endpoint_id)
            .await
    }
}

/// Finds drivers the registry does not have, by name, when one is first asked for (dockerd's
/// lazy plugin lookup: `docker network create -d weave` finds, activates and registers the
/// plugin `weave`). The controller keeps what it gives and asks again for a name it gave an
/// error for; plexus-cnm itself knows nothing of plugins.
#[async_trait]
pub trait DriverResolver: Send + Sync {
    /// The driver called `name`; the error says why there is none (not found, and where it
    /// was looked for; not answering).
    async fn resolve(&self, name: &str) -> Result<Arc<dyn Driver>, DriverError>;
}

/// Finds IPAM drivers other than the controller's own by name (`--ipam-driver NAME`), when a
/// network that names one is created.
///
/// The contract: an IPAM given here hands out pool ids that the controller's own
/// [`Ipam`](plexus_ipam::Ipam) recognises and routes back to it, since addresses are later
/// asked for and released through that one, by pool id alone (plexusd prefixes them).
#[async_trait]
pub trait IpamResolver: Send + Sync {
    /// The IPAM driver called `name`.
    async fn resolve(
        &self,
        name: &str,
    ) -> Result<Arc<dyn plexus_ipam::Ipam>, plexus_ipam::IpamError>;
}

/// The drivers a controller knows, by name.
#[derive(Clone, Default)]
pub struct DriverRegistry {
    drivers: BTreeMap<String, Arc<dyn Driver>>,
}

impl DriverRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a driver under its own name (replacing one of the same name).
    pub fn register(&mut self, driver: Arc<dyn Driver>) {
        self.drivers.insert(driver.name().to_string(), driver);
    }

    /// The driver called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Driver>> {
        self.drivers.get(name).cloned()
    }

    /// Every driver's name.
    pub fn names(&self) -> Vec<String> {
        self.drivers.keys().cloned().collect()
    }

    /// Every driver, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<dyn Driver>)> {
        self.drivers.iter().map(|(name, d)| (name.as_str(), d))
    }
}
