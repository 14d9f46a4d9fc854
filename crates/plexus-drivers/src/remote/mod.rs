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
mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use plexus_cnm::{
    Capability, Desired, Driver, DriverError, EndpointCreated, EndpointInfo, ExternalConnectivity,
    InterfaceName, Joined, NetworkInfo, NodeDiscovery, ReconcileMode, Reconciled, Scope,
};
use plexus_ipam::plugin::{PluginClient, PluginDirs, PluginError, Timeouts};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::sys_ctx;

/// The API a network plugin must implement.
pub const NETWORK_DRIVER_API: &str = "NetworkDriver";

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
        let op = "/NetworkDriver.GetCapabilities";
        let caps: wire::CapabilitiesReply =
            client.call(op, &json!({})).await.map_err(plugin_error)?;
        let scope = |field: &str, value: &str, default: Scope| match value {
            "" => Ok(default),
            "local" => Ok(Scope::Local),
            "global" => Ok(Scope::Global),
            other => Err(plugin_error(PluginError::malformed(
                client.name(),
                op,
                field,
                format!("{other:?}: \"local\" or \"global\""),
            ))),
        };
        let data = scope("Scope", &caps.scope, Scope::Local)?;
        let connectivity = scope("ConnectivityScope", &caps.connectivity_scope, data)?;
        let rtnl = Rtnl::connect(&host)
            .await
            .map_err(sys_ctx("host namespace"))?;
        tracing::info!(
            plugin = client.name(),
            scope = data.name(),
            "network plugin activated"
        );
        Ok(Self {
            client,
            capability: Capability {
                scope: data,
                connectivity,
                needs_ipam: true,
                multiple_networks: true,
            },
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
        match self.client.call::<_, Value>(op, body).await {
            Ok(_) | Err(PluginError::NotImplemented { .. }) => Ok(()),
            Err(e) => Err(plugin_error(e)),
        }
    }

    fn malformed(&self, op: &str, field: &str, message: String) -> DriverError {
        plugin_error(PluginError::malformed(
            self.client.name(),
            op,
            field,
            message,
        ))
    }

    /// Checks the plugin's `Interface` answer against what was asked: it may add a MAC
    /// address, never change an address Plexus gave.
    fn check_interface(
        &self,
        endpoint: &EndpointInfo,
        given: Option<wire::EndpointInterface>,
    ) -> Result<Option<[u8; 6]>, DriverError> {
        let op = "/NetworkDriver.CreateEndpoint";
        let Some(got) = given else {
            return Ok(None);
        };
        for (field, asked, answered) in [
            ("Interface.Address", endpoint.ipv4, &got.address),
            ("Interface.AddressIPv6", endpoint.ipv6, &got.address_ipv6),
        ] {
            if answered.is_empty() {
                continue;
            }
            let net = answered
                .parse::<IpNet>()
                .map_err(|_| self.malformed(op, field, format!("{answered:?} is not a CIDR")))?;
            if asked != Some(net) {
                return Err(self.malformed(
                    op,
                    field,
                    format!(
                        "{net}: the endpoint's address is {} (IPAM's), a plugin may not change it",
                        asked
                            .map(|a| a.to_string())
                            .unwrap_or_else(|| "none".into())
                    ),
                ));
            }
        }
        if got.mac_address.is_empty() {
            return Ok(None);
        }
        let mac = crate::names::parse_mac(&got.mac_address).ok_or_else(|| {
            self.malformed(
                op,
                "Interface.MacAddress",
                format!("{:?} is not a unicast MAC address", got.mac_address),
            )
        })?;
        if let Some(asked) = &endpoint.mac {
            if crate::names::parse_mac(asked) != Some(mac) {
                return Err(self.malformed(
                    op,
                    "Interface.MacAddress",
                    format!("{}: the endpoint asked for {asked}", got.mac_address),
                ));
            }
        }
        Ok(Some(mac))
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
            .call(
                "/NetworkDriver.CreateNetwork",
                &wire::create_network(network),
            )
            .await?;
        Ok(())
    }

    async fn delete_network(&self, network_id: &str) -> Result<(), DriverError> {
        let _: Value = self
            .call(
                "/NetworkDriver.DeleteNetwork",
                &json!({ "NetworkID": network_id }),
            )
            .await?;
        Ok(())
    }

    async fn allocate_network(
        &self,
        network: &NetworkInfo,
    ) -> Result<BTreeMap<String, String>, DriverError> {
        #[derive(serde::Deserialize)]
        struct Reply {
            #[serde(rename = "Options", default)]
            options: Option<BTreeMap<String, String>>,
        }
        match self
            .client
            .call::<_, Reply>(
                "/NetworkDriver.AllocateNetwork",
                &wire::allocate_network(network),
            )
            .await
        {
            Ok(r) => Ok(r.options.unwrap_or_default()),
            Err(PluginError::NotImplemented { .. }) => Ok(BTreeMap::new()),
            Err(e) => Err(plugin_error(e)),
        }
    }

    async fn free_network(
        &self,
        network_id: &str,
        _data: &BTreeMap<String, String>,
    ) -> Result<(), DriverError> {
        self.call_optional(
            "/NetworkDriver.FreeNetwork",
            &json!({ "NetworkID": network_id }),
        )
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
        let asked_mac = match &endpoint.mac {
            Some(m) => Some(crate::names::parse_mac(m).ok_or_else(|| {
                DriverError::Invalid(format!("mac-address {m:?}: not a unicast MAC address"))
            })?),
            None => None,
        };
        let reply: wire::CreateEndpointReply = self
            .call(
                "/NetworkDriver.CreateEndpoint",
                &json!({
                    "NetworkID": endpoint.network_id,
                    "EndpointID": endpoint.endpoint_id,
                    "Interface": asked,
                    "Options": wire::endpoint_options(&endpoint.options, &endpoint.ports, &[]),
                }),
            )
            .await?;
        let mac = match self.check_interface(endpoint, reply.interface) {
            Ok(m) => m.or(asked_mac),
            Err(e) => {
                // Made, but not usable: the plugin deletes it again.
                if let Err(u) = self
                    .delete_endpoint(&endpoint.network_id, &endpoint.endpoint_id)
                    .await
                {
                    tracing::warn!(plugin = self.name(), error = %u, "cannot delete the endpoint after a bad answer");
                }
                return Err(e);
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
            .call(
                "/NetworkDriver.DeleteEndpoint",
                &wire::ids(network_id, endpoint_id),
            )
            .await?;
        self.endpoints.lock().await.remove(endpoint_id);
        Ok(())
    }

    async fn endpoint_oper_info(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<BTreeMap<String, Value>, DriverError> {
        #[derive(serde::Deserialize)]
        struct Reply {
            #[serde(rename = "Value", default)]
            value: Option<BTreeMap<String, Value>>,
        }
        match self
            .client
            .call::<_, Reply>(
                "/NetworkDriver.EndpointOperInfo",
                &wire::ids(network_id, endpoint_id),
            )
            .await
        {
            Ok(r) => Ok(r.value.unwrap_or_default()),
            Err(PluginError::NotImplemented { .. }) => Ok(BTreeMap::new()),
            Err(e) => Err(plugin_error(e)),
        }
    }

    async fn join(
        &self,
        network_id: &str,
        endpoint_id: &str,
        sandbox_key: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
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
            .call::<Value>("/NetworkDriver.Leave", &wire::ids(network_id, endpoint_id))
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
            "/NetworkDriver.ProgramExternalConnectivity",
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
        self.call_optional(
            "/NetworkDriver.RevokeExternalConnectivity",
            &wire::ids(network_id, endpoint_id),
        )
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
            "/NetworkDriver.DiscoverNew",
            &wire::node_discovery(node.address, node.self_node),
        )
        .await
    }

    async fn discover_delete(&self, node: &NodeDiscovery) -> Result<(), DriverError> {
        self.call_optional(
            "/NetworkDriver.DiscoverDelete",
            &wire::node_discovery(node.address, node.self_node),
        )
        .await
    }
}
