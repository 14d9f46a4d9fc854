//! The remote driver: a network driver that is a plugin process speaking Docker's
//! `NetworkDriver` protocol (libnetwork's `drivers/remote`) over the plugin transport
//! ([`plexus_ipam::plugin`]).
//!
//! Every [`Driver`] call maps to a `/NetworkDriver.*` call with Docker's JSON shapes
//! ([`wire`]). The plugin makes the interfaces; Plexus puts them in sandboxes: a join moves
//! the link the plugin names (`InterfaceName.SrcName`, in the host namespace) into the
//! sandbox as `DstPrefix` and a free number, gives it the endpoint's addresses, the plugin's
//! gateway and static routes ([`join`]). A leave asks the plugin first, then moves the link
//! back to the host namespace under its own name, where the plugin's `DeleteEndpoint` finds
//! it (libnetwork's order).
//!
//! Errors name the plugin and the call: the plugin's own (`{"Err": "…"}`), a field of the
//! wrong shape (`malformed answer: field StaticRoutes[0].Destination: …`), a plugin that
//! stops answering. A call that fails half way undoes what it did (an endpoint whose answer
//! cannot be used is deleted again, a join that cannot finish is left again), so the
//! controller's own undo finds nothing half-made.
//!
//! ```no_run
//! # async fn demo() -> Result<(), plexus_cnm::DriverError> {
//! use plexus_drivers::remote::RemoteDriver;
//! use plexus_ipam::plugin::{PluginDirs, Timeouts};
//! let host = plexus_sys::netns::Netns::host().map_err(plexus_drivers::sys_error)?;
//! let weave = RemoteDriver::connect("weave", &PluginDirs::default(), Timeouts::default(), host)
//!     .await?;
//! # let _ = weave; Ok(()) }
//! ```

mod join;
pub mod wire;

pub use wire::JoinPlan;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use plexus_cnm::{
    Capability, Desired, Driver, DriverError, EndpointCreated, EndpointInfo, ExternalConnectivity,
    InterfaceName, Joined, NetworkInfo, NodeDiscovery, ReconcileMode, Reconciled, Scope,
};
use plexus_ipam::plugin::{read_answer, PluginClient, PluginDirs, PluginError, Timeouts};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::sys_ctx;

/// The API a network plugin must implement.
pub const NETWORK_DRIVER_API: &str = "NetworkDriver";

const OP_GET_CAPABILITIES: &str = "/NetworkDriver.GetCapabilities";
const OP_CREATE_NETWORK: &str = "/NetworkDriver.CreateNetwork";
const OP_DELETE_NETWORK: &str = "/NetworkDriver.DeleteNetwork";
const OP_ALLOCATE_NETWORK: &str = "/NetworkDriver.AllocateNetwork";
const OP_FREE_NETWORK: &str = "/NetworkDriver.FreeNetwork";
const OP_CREATE_ENDPOINT: &str = "/NetworkDriver.CreateEndpoint";
const OP_DELETE_ENDPOINT: &str = "/NetworkDriver.DeleteEndpoint";
const OP_ENDPOINT_OPER_INFO: &str = "/NetworkDriver.EndpointOperInfo";
const OP_JOIN: &str = "/NetworkDriver.Join";
const OP_LEAVE: &str = "/NetworkDriver.Leave";
const OP_PROGRAM_EXTERNAL: &str = "/NetworkDriver.ProgramExternalConnectivity";
const OP_REVOKE_EXTERNAL: &str = "/NetworkDriver.RevokeExternalConnectivity";
const OP_DISCOVER_NEW: &str = "/NetworkDriver.DiscoverNew";
const OP_DISCOVER_DELETE: &str = "/NetworkDriver.DiscoverDelete";

/// Every `NetworkDriver` call the driver makes, in the protocol's order.
pub const CALLS: [&str; 14] = [
    OP_GET_CAPABILITIES,
    OP_CREATE_NETWORK,
    OP_DELETE_NETWORK,
    OP_ALLOCATE_NETWORK,
    OP_FREE_NETWORK,
    OP_CREATE_ENDPOINT,
    OP_DELETE_ENDPOINT,
    OP_ENDPOINT_OPER_INFO,
    OP_JOIN,
    OP_LEAVE,
    OP_PROGRAM_EXTERNAL,
    OP_REVOKE_EXTERNAL,
    OP_DISCOVER_NEW,
    OP_DISCOVER_DELETE,
];

/// The calls whose answer carries nothing and that a plugin may leave out (a 404 is
/// fine, as libnetwork takes it). AllocateNetwork and EndpointOperInfo may be left out too;
/// their answers carry something.
const OPTIONAL_CALLS: [&str; 5] = [
    OP_FREE_NETWORK,
    OP_PROGRAM_EXTERNAL,
    OP_REVOKE_EXTERNAL,
    OP_DISCOVER_NEW,
    OP_DISCOVER_DELETE,
];

/// A plugin's answer to one `NetworkDriver` call, checked as the driver checks it before
/// using it ([`read_driver_answer`]).
#[derive(Debug, Clone, PartialEq)]
pub enum DriverAnswer {
    /// `GetCapabilities`: what the driver is (its scopes; `""` is `local`, and the
    /// connectivity scope defaults to the data scope).
    Capabilities(Capability),
    /// `CreateEndpoint`: the plugin's `Interface`, which keeps the endpoint's addresses.
    Endpoint(EndpointAnswer),
    /// `Join`: the interface to move into the sandbox, the gateways and static routes.
    Join(JoinPlan),
    /// `EndpointOperInfo`: its `Value` (empty when the plugin does not implement the call).
    OperInfo(BTreeMap<String, Value>),
    /// `AllocateNetwork`: its `Options` (empty when the plugin does not implement the call).
    Allocated(BTreeMap<String, String>),
    /// Any other call: the answer's JSON, unused by the driver; `None` when the plugin does
    /// not implement an optional call (FreeNetwork, Program/RevokeExternalConnectivity,
    /// DiscoverNew/Delete).
    Other(Option<Value>),
}

/// A `CreateEndpoint` answer, checked: a plugin may add a MAC address, never change an
/// address Plexus gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointAnswer {
    /// The plugin's `Interface.Address`, if it gave one: always the endpoint's IPv4 address.
    pub ipv4: Option<IpNet>,
    /// The plugin's `Interface.AddressIPv6`, if it gave one: always the endpoint's IPv6
    /// address.
    pub ipv6: Option<IpNet>,
    /// The MAC address the endpoint gets: the plugin's `Interface.MacAddress` (a unicast
    /// address, the one the endpoint asked for if it asked), else the one asked for.
    pub mac: Option<[u8; 6]>,
}

/// Reads plugin `plugin`'s raw HTTP answer to `/NetworkDriver.*` call `op` (everything it
/// sent, headers included) and checks it exactly as [`RemoteDriver`] does before using it:
/// the status, the body and its `Err` ([`plexus_ipam::plugin::read_answer`]), then for
/// `GetCapabilities` the scopes, for `CreateEndpoint` the `Interface` against `endpoint`
/// (the endpoint asked for; other calls ignore it), for `Join` every field
/// ([`JoinPlan`]); a 404 to a call a plugin may leave out is an empty answer. No I/O: the
/// plugin's bytes are untrusted, and the fuzz target `plugin_answer` feeds this.
///
/// A refusal is a [`DriverError::Failed`] naming the plugin and the call (and the field,
/// for a malformed answer), the driver's error; an `endpoint` whose own MAC address is not
/// a unicast one is [`DriverError::Invalid`] before the answer is read.
pub fn read_driver_answer(
    plugin: &str,
    op: &str,
    raw: &[u8],
    endpoint: &EndpointInfo,
) -> Result<DriverAnswer, DriverError> {
    match op {
        OP_GET_CAPABILITIES => {
            let caps = read_answer(plugin, op, raw).map_err(plugin_error)?;
            capability(plugin, caps)
                .map(DriverAnswer::Capabilities)
                .map_err(plugin_error)
        }
        OP_CREATE_ENDPOINT => {
            let asked_mac = asked_mac(endpoint)?;
            let reply: wire::CreateEndpointReply =
                read_answer(plugin, op, raw).map_err(plugin_error)?;
            check_interface(plugin, endpoint, asked_mac, reply.interface)
                .map(DriverAnswer::Endpoint)
                .map_err(plugin_error)
        }
        OP_JOIN => {
            let reply = read_answer(plugin, op, raw).map_err(plugin_error)?;
            wire::join_plan(plugin, reply)
                .map(DriverAnswer::Join)
                .map_err(plugin_error)
        }
        OP_ENDPOINT_OPER_INFO => {
            oper_info(read_answer(plugin, op, raw)).map(DriverAnswer::OperInfo)
        }
        OP_ALLOCATE_NETWORK => allocated(read_answer(plugin, op, raw)).map(DriverAnswer::Allocated),
        op if OPTIONAL_CALLS.contains(&op) => {
            optional(read_answer(plugin, op, raw)).map(DriverAnswer::Other)
        }
        _ => read_answer(plugin, op, raw)
            .map(|v| DriverAnswer::Other(Some(v)))
            .map_err(plugin_error),
    }
}

/// What the driver remembers of an endpoint between its calls.
#[derive(Debug, Clone, Default)]
struct EpState {
    network_id: String,
    ipv4: Option<IpNet>,
    ipv6: Option<IpNet>,
    mac: Option<[u8; 6]>,
    joined: Option<join::InSandbox>,
}

/// A network driver served by a plugin.
pub struct RemoteDriver {
    client: Arc<PluginClient>,
    capability: Capability,
    rtnl: Rtnl,
    endpoints: Mutex<BTreeMap<String, EpState>>,
}

/// A plugin's failure as a driver error: the plugin's refusals of options are the user's
/// fault, the rest failures. The message names the plugin and the call.
fn plugin_error(e: PluginError) -> DriverError {
    DriverError::Failed(e.to_string())
}

/// `GetCapabilities`' answer as the driver's capability: each scope `""`, `"local"` or
/// `"global"`; the data scope defaults to local, the connectivity scope to the data scope.
fn capability(plugin: &str, caps: wire::CapabilitiesReply) -> Result<Capability, PluginError> {
    let scope = |field: &str, value: &str, default: Scope| match value {
        "" => Ok(default),
        "local" => Ok(Scope::Local),
        "global" => Ok(Scope::Global),
        other => Err(PluginError::malformed(
            plugin,
            OP_GET_CAPABILITIES,
            field,
            format!("{other:?}: \"local\" or \"global\""),
        )),
    };
    let data = scope("Scope", &caps.scope, Scope::Local)?;
    let connectivity = scope("ConnectivityScope", &caps.connectivity_scope, data)?;
    Ok(Capability {
        scope: data,
        connectivity,
        needs_ipam: true,
        multiple_networks: true,
    })
}

/// The MAC address an endpoint asks for, checked before the plugin is asked.
fn asked_mac(endpoint: &EndpointInfo) -> Result<Option<[u8; 6]>, DriverError> {
    endpoint
        .mac
        .as_deref()
        .map(|m| {
            crate::names::parse_mac(m).ok_or_else(|| {
                DriverError::Invalid(format!("mac-address {m:?}: not a unicast MAC address"))
            })
        })
        .transpose()
}

/// Checks the plugin's `Interface` answer to `CreateEndpoint` against what was asked: it
/// may add a MAC address, never change an address Plexus gave. `asked_mac` is the
/// endpoint's own MAC address ([`asked_mac`]).
fn check_interface(
    plugin: &str,
    endpoint: &EndpointInfo,
    asked_mac: Option<[u8; 6]>,
    given: Option<wire::EndpointInterface>,
) -> Result<EndpointAnswer, PluginError> {
    let malformed = |field: &str, message: String| {
        PluginError::malformed(plugin, OP_CREATE_ENDPOINT, field, message)
    };
    let Some(got) = given else {
        return Ok(EndpointAnswer {
            mac: asked_mac,
            ..EndpointAnswer::default()
        });
    };
    let address = |field: &str, asked: Option<IpNet>, answered: &str| {
        if answered.is_empty() {
            return Ok(None);
        }
        let net = answered
            .parse::<IpNet>()
            .map_err(|_| malformed(field, format!("{answered:?} is not a CIDR")))?;
        if asked != Some(net) {
            return Err(malformed(
                field,
                format!(
                    "{net}: the endpoint's address is {} (IPAM's), a plugin may not change it",
                    asked
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "none".into())
                ),
            ));
        }
        Ok(Some(net))
    };
    let ipv4 = address("Interface.Address", endpoint.ipv4, &got.address)?;
    let ipv6 = address("Interface.AddressIPv6", endpoint.ipv6, &got.address_ipv6)?;
    if got.mac_address.is_empty() {
        return Ok(EndpointAnswer {
            ipv4,
            ipv6,
            mac: asked_mac,
        });
    }
    let mac = crate::names::parse_mac(&got.mac_address).ok_or_else(|| {
        malformed(
            "Interface.MacAddress",
            format!("{:?} is not a unicast MAC address", got.mac_address),
        )
    })?;
    if let (Some(asked), Some(text)) = (asked_mac, &endpoint.mac) {
        if asked != mac {
            return Err(malformed(
                "Interface.MacAddress",
                format!("{}: the endpoint asked for {text}", got.mac_address),
            ));
        }
    }
    Ok(EndpointAnswer {
        ipv4,
        ipv6,
        mac: Some(mac),
    })
}

/// `EndpointOperInfo`'s answer: its `Value`; a plugin that does not implement the call has
/// nothing to say.
fn oper_info(
    answer: Result<wire::OperInfoReply, PluginError>,
) -> Result<BTreeMap<String, Value>, DriverError> {
    match answer {
        Ok(r) => Ok(r.value.unwrap_or_default()),
        Err(PluginError::NotImplemented { .. }) => Ok(BTreeMap::new()),
        Err(e) => Err(plugin_error(e)),
    }
}

/// `AllocateNetwork`'s answer: its `Options`; a plugin that does not implement the call
/// has none.
fn allocated(
    answer: Result<wire::AllocateNetworkReply, PluginError>,
) -> Result<BTreeMap<String, String>, DriverError> {
    match answer {
        Ok(r) => Ok(r.options.unwrap_or_default()),
        Err(PluginError::NotImplemented { .. }) => Ok(BTreeMap::new()),
        Err(e) => Err(plugin_error(e)),
    }
}

/// The answer to one of the [`OPTIONAL_CALLS`]: `None` when the plugin does not implement
/// it (404), as libnetwork takes it.
fn optional(answer: Result<Value, PluginError>) -> Result<Option<Value>, DriverError> {
    match answer {
        Ok(v) => Ok(Some(v)),
        Err(PluginError::NotImplemented { .. }) => Ok(None),
        Err(e) => Err(plugin_error(e)),
    }
}

impl RemoteDriver {
    /// Finds plugin `name` in `dirs`, activates it (it must implement `NetworkDriver`) and
    /// reads its capabilities; `host` is where it makes its links.
    pub async fn connect(
        name: &str,
        dirs: &PluginDirs,
        timeouts: Timeouts,
        host: Netns,
    ) -> Result<Self, DriverError> {
        let (client, _) = PluginClient::activate(name, dirs, NETWORK_DRIVER_API, timeouts)
            .await
            .map_err(plugin_error)?;
        Self::with_client(Arc::new(client), host).await
    }

    /// The driver over an activated plugin (one that serves IPAM too shares its client
    /// with the [`RemoteIpam`](plexus_ipam::remote::RemoteIpam)).
    pub async fn with_client(client: Arc<PluginClient>, host: Netns) -> Result<Self, DriverError> {
        let caps: wire::CapabilitiesReply = client
            .call(OP_GET_CAPABILITIES, &json!({}))
            .await
            .map_err(plugin_error)?;
        let capability = capability(client.name(), caps).map_err(plugin_error)?;
        let rtnl = Rtnl::connect(&host)
            .await
            .map_err(sys_ctx("host namespace"))?;
        tracing::info!(
            plugin = client.name(),
            scope = capability.scope.name(),
            "network plugin activated"
        );
        Ok(Self {
            client,
            capability,
            rtnl,
            endpoints: Mutex::new(BTreeMap::new()),
        })
    }

    /// The plugin's client.
    pub fn client(&self) -> &Arc<PluginClient> {
        &self.client
    }

    async fn call<R: DeserializeOwned>(&self, op: &str, body: &Value) -> Result<R, DriverError> {
        self.client.call(op, body).await.map_err(plugin_error)
    }

    /// A call whose answer carries nothing; a plugin that does not implement it (404) is
    /// fine, as libnetwork takes it for the optional calls.
    async fn call_optional(&self, op: &str, body: &Value) -> Result<(), DriverError> {
        debug_assert!(OPTIONAL_CALLS.contains(&op), "{op} is not an optional call");
        optional(self.client.call(op, body).await).map(|_| ())
    }
}

#[async_trait]
impl Driver for RemoteDriver {
    fn name(&self) -> &str {
        self.client.name()
    }

    fn capability(&self) -> Capability {
        self.capability
    }

    fn validate_options(&self, _options: &BTreeMap<String, String>) -> Result<(), DriverError> {
        // The plugin's to judge, at CreateNetwork.
        Ok(())
    }

    async fn create_network(&self, network: &NetworkInfo) -> Result<(), DriverError> {
        let _: Value = self
            .call(OP_CREATE_NETWORK, &wire::create_network(network))
            .await?;
        Ok(())
    }

    async fn delete_network(&self, network_id: &str) -> Result<(), DriverError> {
        let _: Value = self
            .call(OP_DELETE_NETWORK, &json!({ "NetworkID": network_id }))
            .await?;
        Ok(())
    }

    async fn allocate_network(
        &self,
        network: &NetworkInfo,
    ) -> Result<BTreeMap<String, String>, DriverError> {
        allocated(
            self.client
                .call(OP_ALLOCATE_NETWORK, &wire::allocate_network(network))
                .await,
        )
    }

    async fn free_network(
        &self,
        network_id: &str,
        _data: &BTreeMap<String, String>,
    ) -> Result<(), DriverError> {
        self.call_optional(OP_FREE_NETWORK, &json!({ "NetworkID": network_id }))
            .await
    }

    async fn create_endpoint(
        &self,
        endpoint: &EndpointInfo,
    ) -> Result<EndpointCreated, DriverError> {
        let asked = wire::EndpointInterface {
            address: endpoint.ipv4.map(|a| a.to_string()).unwrap_or_default(),
            address_ipv6: endpoint.ipv6.map(|a| a.to_string()).unwrap_or_default(),
            mac_address: endpoint.mac.clone().unwrap_or_default(),
        };
        let asked_mac = asked_mac(endpoint)?;
        let reply: wire::CreateEndpointReply = self
            .call(
                OP_CREATE_ENDPOINT,
                &json!({
                    "NetworkID": endpoint.network_id,
                    "EndpointID": endpoint.endpoint_id,
                    "Interface": asked,
                    "Options": wire::endpoint_options(&endpoint.options, &endpoint.ports, &[]),
                }),
            )
            .await?;
        let mac = match check_interface(self.name(), endpoint, asked_mac, reply.interface) {
            Ok(answer) => answer.mac,
            Err(e) => {
                // Made, but not usable: the plugin deletes it again.
                if let Err(u) = self
                    .delete_endpoint(&endpoint.network_id, &endpoint.endpoint_id)
                    .await
                {
                    tracing::warn!(plugin = self.name(), error = %u, "cannot delete the endpoint after a bad answer");
                }
                return Err(plugin_error(e));
            }
        };
        self.endpoints.lock().await.insert(
            endpoint.endpoint_id.clone(),
            EpState {
                network_id: endpoint.network_id.clone(),
                ipv4: endpoint.ipv4,
                ipv6: endpoint.ipv6,
                mac,
                joined: None,
            },
        );
        Ok(EndpointCreated {
            mac: mac.map(|m| plexus_sys::rtnl::format_mac(&m)),
            ports: endpoint.ports.clone(),
        })
    }

    async fn delete_endpoint(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        let _: Value = self
            .call(OP_DELETE_ENDPOINT, &wire::ids(network_id, endpoint_id))
            .await?;
        self.endpoints.lock().await.remove(endpoint_id);
        Ok(())
    }

    async fn endpoint_oper_info(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<BTreeMap<String, Value>, DriverError> {
        oper_info(
            self.client
                .call(OP_ENDPOINT_OPER_INFO, &wire::ids(network_id, endpoint_id))
                .await,
        )
    }

    async fn join(
        &self,
        network_id: &str,
        endpoint_id: &str,
        sandbox_key: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        crate::sandbox::refuse_handoff(self.name(), &interface)?;
        let mut eps = self.endpoints.lock().await;
        let ep = eps.get(endpoint_id).cloned().unwrap_or_else(|| EpState {
            network_id: network_id.to_string(),
            ..EpState::default()
        });
        if ep.network_id != network_id {
            return Err(DriverError::Failed(format!(
                "endpoint {endpoint_id} is on network {}, not {network_id}",
                ep.network_id
            )));
        }
        if let Some(at) = &ep.joined {
            return Err(DriverError::Conflict(format!(
                "endpoint {endpoint_id} is already in sandbox {}",
                at.key
            )));
        }
        let (joined, at) = self
            .join_sandbox(network_id, endpoint_id, &ep, sandbox_key, interface)
            .await?;
        eps.entry(endpoint_id.to_string()).or_insert(ep).joined = Some(at);
        Ok(joined)
    }

    async fn leave(&self, network_id: &str, endpoint_id: &str) -> Result<(), DriverError> {
        let mut eps = self.endpoints.lock().await;
        let at = eps.get_mut(endpoint_id).and_then(|e| e.joined.take());
        let left = self
            .call::<Value>(OP_LEAVE, &wire::ids(network_id, endpoint_id))
            .await;
        if let Some(at) = &at {
            self.unplug(at).await;
        }
        left.map(|_| ())
    }

    async fn program_external_connectivity_with(
        &self,
        network_id: &str,
        endpoint_id: &str,
        options: &ExternalConnectivity,
    ) -> Result<(), DriverError> {
        self.call_optional(
            OP_PROGRAM_EXTERNAL,
            &json!({
                "NetworkID": network_id,
                "EndpointID": endpoint_id,
                "Options": wire::endpoint_options(
                    &BTreeMap::new(),
                    &options.port_bindings,
                    &options.exposed_ports,
                ),
            }),
        )
        .await
    }

    async fn program_external_connectivity(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        self.program_external_connectivity_with(
            network_id,
            endpoint_id,
            &ExternalConnectivity::default(),
        )
        .await
    }

    async fn revoke_external_connectivity(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        self.call_optional(OP_REVOKE_EXTERNAL, &wire::ids(network_id, endpoint_id))
            .await
    }

    async fn reconcile(
        &self,
        desired: &Desired,
        _mode: ReconcileMode,
    ) -> Result<Reconciled, DriverError> {
        // The plugin keeps its own state and objects: the driver only learns again where
        // the interfaces of endpoints it does not remember are, so that a leave after a
        // restart takes each back to the plugin's name (which its alias carries).
        let mut eps = self.endpoints.lock().await;
        for d in &desired.endpoints {
            eps.entry(d.info.endpoint_id.clone())
                .or_insert_with(|| EpState {
                    network_id: d.info.network_id.clone(),
                    ipv4: d.info.ipv4,
                    ipv6: d.info.ipv6,
                    mac: d.info.mac.as_deref().and_then(crate::names::parse_mac),
                    joined: d.interface.as_ref().map(|ifname| join::InSandbox {
                        key: d.sandbox_key.clone(),
                        ifname: ifname.clone(),
                        src_name: String::new(),
                    }),
                });
        }
        Ok(Reconciled::default())
    }

    async fn discover_new(&self, node: &NodeDiscovery) -> Result<(), DriverError> {
        self.call_optional(
            OP_DISCOVER_NEW,
            &wire::node_discovery(node.address, node.self_node),
        )
        .await
    }

    async fn discover_delete(&self, node: &NodeDiscovery) -> Result<(), DriverError> {
        self.call_optional(
            OP_DISCOVER_DELETE,
            &wire::node_discovery(node.address, node.self_node),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(mac: Option<&str>) -> EndpointInfo {
        EndpointInfo {
            network_id: "n1".into(),
            endpoint_id: "e1".into(),
            ipv4: Some("10.9.0.5/24".parse().unwrap()),
            ipv6: Some("fd00:9::5/64".parse().unwrap()),
            mac: mac.map(String::from),
            ports: Vec::new(),
            options: BTreeMap::new(),
        }
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn refusal(op: &str, raw: &[u8], ep: &EndpointInfo) -> String {
        match read_driver_answer("p", op, raw, ep) {
            Err(DriverError::Failed(m)) => m,
            other => panic!("{op}: {other:?}"),
        }
    }

    #[test]
    fn a_join_answer_is_read_as_the_driver_reads_it() {
        let ep = endpoint(None);
        let raw =
            ok(r#"{"InterfaceName":{"SrcName":"tpc1","DstPrefix":"eth"},"Gateway":"10.9.0.1"}"#);
        let Ok(DriverAnswer::Join(plan)) = read_driver_answer("p", OP_JOIN, &raw, &ep) else {
            panic!("a good Join answer refused");
        };
        assert_eq!(
            (plan.src_name.as_str(), plan.dst_prefix.as_str()),
            ("tpc1", "eth")
        );
        assert_eq!(plan.gateway, Some("10.9.0.1".parse().unwrap()));
        let raw = ok(r#"{"InterfaceName":{"SrcName":"a/b","DstPrefix":"eth"}}"#);
        let e = refusal(OP_JOIN, &raw, &ep);
        assert!(
            e.starts_with(
                "plugin \"p\": /NetworkDriver.Join: malformed answer: field InterfaceName.SrcName: "
            ),
            "{e}"
        );
    }

    #[test]
    fn a_create_endpoint_answer_keeps_the_endpoints_addresses() {
        let op = OP_CREATE_ENDPOINT;
        let ep = endpoint(None);
        let raw = ok(r#"{"Interface":{"Address":"10.9.0.5/24","MacAddress":"02:42:0a:09:00:05"}}"#);
        let answer = read_driver_answer("p", op, &raw, &ep).unwrap();
        assert_eq!(
            answer,
            DriverAnswer::Endpoint(EndpointAnswer {
                ipv4: ep.ipv4,
                ipv6: None,
                mac: Some([0x02, 0x42, 10, 9, 0, 5]),
            })
        );
        for (body, field) in [
            (
                r#"{"Interface":{"Address":"10.9.0.6/24"}}"#,
                "Interface.Address",
            ),
            (
                r#"{"Interface":{"Address":"10.9.0.5/16"}}"#,
                "Interface.Address",
            ),
            (
                r#"{"Interface":{"AddressIPv6":"fd00:9::6/64"}}"#,
                "Interface.AddressIPv6",
            ),
            (
                r#"{"Interface":{"AddressIPv6":"10.9.0.5/24"}}"#,
                "Interface.AddressIPv6",
            ),
            (
                r#"{"Interface":{"MacAddress":"01:00:5e:00:00:01"}}"#,
                "Interface.MacAddress",
            ),
            (
                r#"{"Interface":{"MacAddress":"+2:42:0a:09:00:05"}}"#,
                "Interface.MacAddress",
            ),
        ] {
            let e = refusal(op, &ok(body), &ep);
            assert!(
                e.starts_with(&format!(
                    "plugin \"p\": {op}: malformed answer: field {field}: "
                )),
                "{body}: {e}"
            );
        }
        // An endpoint that asked for a MAC address keeps it.
        let asked = endpoint(Some("02:42:0a:09:00:07"));
        let e = refusal(op, &raw, &asked);
        assert!(e.contains("field Interface.MacAddress: 02:42:0a:09:00:05: the endpoint asked for 02:42:0a:09:00:07"), "{e}");
        let answer = read_driver_answer("p", op, &ok("{}"), &asked).unwrap();
        let DriverAnswer::Endpoint(EndpointAnswer { mac, .. }) = answer else {
            panic!("{answer:?}");
        };
        assert_eq!(mac, Some([0x02, 0x42, 10, 9, 0, 7]));
    }

    #[test]
    fn capabilities_errors_and_calls_left_out() {
        let ep = endpoint(None);
        let global = ok(r#"{"Scope":"global"}"#);
        let Ok(DriverAnswer::Capabilities(c)) =
            read_driver_answer("p", OP_GET_CAPABILITIES, &global, &ep)
        else {
            panic!("a global plugin refused");
        };
        assert_eq!((c.scope, c.connectivity), (Scope::Global, Scope::Global));
        let e = refusal(
            OP_GET_CAPABILITIES,
            &ok(r#"{"ConnectivityScope":"galaxy"}"#),
            &ep,
        );
        assert!(e.contains("field ConnectivityScope: \"galaxy\""), "{e}");
        let e = refusal(OP_LEAVE, &ok(r#"{"Err":"no such endpoint"}"#), &ep);
        assert_eq!(e, "plugin \"p\": /NetworkDriver.Leave: no such endpoint");
        // A 404: fine for the calls a plugin may leave out, not for the others.
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        for op in OPTIONAL_CALLS {
            assert_eq!(
                read_driver_answer("p", op, missing, &ep),
                Ok(DriverAnswer::Other(None))
            );
        }
        assert_eq!(
            read_driver_answer("p", OP_ENDPOINT_OPER_INFO, missing, &ep),
            Ok(DriverAnswer::OperInfo(BTreeMap::new()))
        );
        let e = refusal(OP_DELETE_ENDPOINT, missing, &ep);
        assert!(
            e.ends_with("not implemented by the plugin (HTTP 404)"),
            "{e}"
        );
    }
}
