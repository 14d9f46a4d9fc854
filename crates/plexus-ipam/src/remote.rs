//! A client of Docker's remote IPAM plugin protocol: JSON over HTTP/1.1 on a unix socket (or
//! plain TCP), found by Docker's plugin discovery.
//!
//! Discovery, activation (`/Plugin.Activate` must list `IpamDriver`), retries and timeouts
//! are the plugin transport's ([`crate::plugin`], re-exported here as before).
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> plexus_ipam::Result<()> {
//! use plexus_ipam::remote::{PluginDirs, RemoteIpam};
//! use plexus_ipam::{Ipam, PoolRequest};
//! let ipam = RemoteIpam::connect("dhcp", &PluginDirs::default()).await?;
//! let pool = ipam.request_pool(PoolRequest::new("", "net1").subnet("192.168.1.0/24")).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::api::{
    parse_cidr, parse_ip, AddressRequest, AddressResponse, AddressSpaces, Capabilities,
    GatewayRequest, Ipam, PoolRequest, PoolResponse, DATA_GATEWAY, OPT_MAC_ADDRESS,
    OPT_REQUEST_ADDRESS_TYPE, REQUEST_TYPE_GATEWAY,
};
use crate::error::{IpamError, Result};
use crate::plugin::{PluginClient, PluginError, Timeouts};

pub use crate::plugin::{discover, PluginAddr, PluginDirs};

impl From<PluginError> for IpamError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::NotFound { name, dirs, .. } => IpamError::PluginNotFound { name, dirs },
            PluginError::Call {
                plugin,
                op,
                message,
            } => IpamError::Plugin {
                plugin,
                op,
                message,
            },
            PluginError::NotResponding {
                ref name, ref op, ..
            }
            | PluginError::NotImplemented {
                plugin: ref name,
                ref op,
            }
            | PluginError::Malformed {
                plugin: ref name,
                ref op,
                ..
            } => {
                let full = e.to_string();
                // The message without the "plugin NAME: OP: " the IPAM error adds again.
                let rest = full
                    .split_once(&format!("{op}: "))
                    .map(|(_, m)| m.to_string())
                    .unwrap_or_else(|| full.clone());
                let message = match e {
                    PluginError::NotResponding { .. } => format!("not responding: {rest}"),
                    _ => rest,
                };
                IpamError::Plugin {
                    plugin: name.clone(),
                    op: op.clone(),
                    message,
                }
            }
        }
    }
}

fn plugin_err(plugin: &str, op: &str, message: impl Into<String>) -> IpamError {
    IpamError::Plugin {
        plugin: plugin.to_string(),
        op: op.to_string(),
        message: message.into(),
    }
}

/// Reads a plugin's raw HTTP answer to `op` ([`crate::plugin::read_answer`]), with the
/// failure as an [`IpamError::Plugin`] naming the plugin and the call. No I/O: the fuzz target
/// `api_json` feeds this.
pub fn read_answer<R: DeserializeOwned>(plugin: &str, op: &str, raw: &[u8]) -> Result<R> {
    Ok(crate::plugin::read_answer(plugin, op, raw)?)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RequestPoolWire<'a> {
    address_space: &'a str,
    pool: &'a str,
    sub_pool: &'a str,
    options: &'a BTreeMap<String, String>,
    #[serde(rename = "V6")]
    v6: bool,
}

/// `/IpamDriver.RequestPool`'s answer (public: plexusd's Docker plugin server writes it).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPoolReply {
    /// The pool's id, given back in every later call on it.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The pool, a CIDR.
    pub pool: String,
    /// Driver data (such as the gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RequestAddressWire<'a> {
    #[serde(rename = "PoolID")]
    pool_id: &'a str,
    address: &'a str,
    options: &'a BTreeMap<String, String>,
}

/// `/IpamDriver.RequestAddress`'s answer.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestAddressReply {
    /// The address with the pool's prefix.
    pub address: String,
    /// Driver data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReleaseAddressWire<'a> {
    #[serde(rename = "PoolID")]
    pool_id: &'a str,
    address: String,
}

#[derive(Serialize)]
struct ReleasePoolWire<'a> {
    #[serde(rename = "PoolID")]
    pool_id: &'a str,
}

/// `/IpamDriver.GetCapabilities`'s answer.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CapabilitiesReply {
    /// The driver needs the endpoint's MAC address with each address request.
    #[serde(rename = "RequiresMACAddress", default)]
    pub requires_mac_address: bool,
    /// dockerd must replay its pools and addresses after a restart.
    #[serde(default)]
    pub requires_request_replay: bool,
}

/// `/IpamDriver.GetDefaultAddressSpaces`'s answer.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SpacesReply {
    /// The space of local-scope networks' pools.
    pub local_default_address_space: String,
    /// The space of global-scope networks' pools.
    pub global_default_address_space: String,
}

/// A remote IPAM driver.
#[derive(Debug, Clone)]
pub struct RemoteIpam {
    client: Arc<PluginClient>,
    capabilities: Capabilities,
}

impl RemoteIpam {
    /// Discovers plugin `name`, activates it and reads its capabilities.
    pub async fn connect(name: &str, dirs: &PluginDirs) -> Result<Self> {
        Self::connect_with(name, dirs, Timeouts::default()).await
    }

    /// [`connect`](Self::connect) with these timeouts; the plugin is looked up again in
    /// `dirs` when it stops answering.
    pub async fn connect_with(name: &str, dirs: &PluginDirs, timeouts: Timeouts) -> Result<Self> {
        let (client, _) = PluginClient::activate(name, dirs, "IpamDriver", timeouts).await?;
        Self::with_client(Arc::new(client)).await
    }

    /// Activates the plugin at `addr` and reads its capabilities; every call is bounded by
    /// `timeout`.
    pub async fn with_addr(name: &str, addr: PluginAddr, timeout: Duration) -> Result<Self> {
        let client = PluginClient::with_addr(name, addr, Timeouts::both(timeout));
        client.activate_as("IpamDriver").await?;
        Self::with_client(Arc::new(client)).await
    }

    /// Reads the capabilities of an activated plugin (one that implements `IpamDriver`; a
    /// plugin serving networks too shares its client with the network driver).
    pub async fn with_client(client: Arc<PluginClient>) -> Result<Self> {
        let mut this = Self {
            client,
            capabilities: Capabilities::default(),
        };
        let c: CapabilitiesReply = this
            .call("/IpamDriver.GetCapabilities", &serde_json::json!({}))
            .await?;
        this.capabilities = Capabilities {
            requires_mac_address: c.requires_mac_address,
            requires_request_replay: c.requires_request_replay,
        };
        debug!(plugin = this.name(), ?this.capabilities, "IPAM plugin activated");
        Ok(this)
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.client.name()
    }

    async fn call<Q: Serialize, R: DeserializeOwned>(&self, op: &str, body: &Q) -> Result<R> {
        Ok(self.client.call(op, body).await?)
    }

    async fn request_address_raw(
        &self,
        pool_id: &str,
        address: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<(IpNet, BTreeMap<String, String>)> {
        let op = "/IpamDriver.RequestAddress";
        let r: RequestAddressReply = self
            .call(
                op,
                &RequestAddressWire {
                    pool_id,
                    address,
                    options,
                },
            )
            .await?;
        let net = r.address.parse::<IpNet>().map_err(|e| {
            plugin_err(self.name(), op, format!("bad address {:?}: {e}", r.address))
        })?;
        Ok((net, r.data.unwrap_or_default()))
    }

    /// Undoes a partly made pool (best effort; the error that caused it is what the caller sees).
    async fn undo(&self, pool_id: &str, addresses: &[IpAddr]) {
        for ip in addresses {
            if let Err(e) = self.release_address(pool_id, *ip).await {
                warn!(plugin = %self.name(), %ip, error = %e, "could not undo an address");
            }
        }
        if let Err(e) = self.release_pool(pool_id).await {
            warn!(plugin = %self.name(), pool_id, error = %e, "could not undo a pool");
        }
    }
}

#[async_trait]
impl Ipam for RemoteIpam {
    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(self.capabilities)
    }

    async fn default_address_spaces(&self) -> Result<AddressSpaces> {
        let r: SpacesReply = self
            .call(
                "/IpamDriver.GetDefaultAddressSpaces",
                &serde_json::json!({}),
            )
            .await?;
        Ok(AddressSpaces {
            local: r.local_default_address_space,
            global: r.global_default_address_space,
        })
    }

    async fn request_pool(&self, request: PoolRequest) -> Result<PoolResponse> {
        // Check what can be checked before asking the plugin.
        let pool = request.pool.clone().unwrap_or_default();
        if !pool.is_empty() {
            parse_cidr("subnet", &pool)?;
        }
        let sub_pool = request.sub_pool.clone().unwrap_or_default();
        if !sub_pool.is_empty() {
            parse_cidr("ip-range", &sub_pool)?;
        }
        let gateway = match &request.gateway {
            GatewayRequest::Given(g) => Some(Some(parse_ip("gateway", g)?)),
            GatewayRequest::Auto => Some(None),
            GatewayRequest::None => None,
        };
        let mut aux = BTreeMap::new();
        for (name, ip) in &request.aux_addresses {
            aux.insert(name.clone(), parse_ip(&format!("aux-address {name}"), ip)?);
        }
        let op = "/IpamDriver.RequestPool";
        let r: RequestPoolReply = self
            .call(
                op,
                &RequestPoolWire {
                    address_space: &request.address_space,
                    pool: &pool,
                    sub_pool: &sub_pool,
                    options: &request.options,
                    v6: request.v6,
                },
            )
            .await?;
        let subnet = match r.pool.parse::<IpNet>() {
            Ok(s) => s,
            Err(e) => {
                self.undo(&r.pool_id, &[]).await;
                return Err(plugin_err(
                    self.name(),
                    op,
                    format!("bad pool {:?}: {e}", r.pool),
                ));
            }
        };
        let data = r.data.unwrap_or_default();
        let mut taken = Vec::new();
        let result: Result<(Option<IpNet>, BTreeMap<String, IpAddr>)> = async {
            let mut gw = None;
            if let Some(g) = data.get(DATA_GATEWAY) {
                gw =
                    Some(g.parse::<IpNet>().map_err(|e| {
                        plugin_err(self.name(), op, format!("bad gateway {g:?}: {e}"))
                    })?);
            } else if let Some(want) = gateway {
                if let Some(ip) = want {
                    if !subnet.contains(&ip) {
                        return Err(IpamError::OutsideSubnet {
                            field: "gateway".into(),
                            value: ip.to_string(),
                            subnet: subnet.to_string(),
                        });
                    }
                }
                let mut opts = BTreeMap::new();
                opts.insert(
                    OPT_REQUEST_ADDRESS_TYPE.to_string(),
                    REQUEST_TYPE_GATEWAY.to_string(),
                );
                let addr = want.map(|ip| ip.to_string()).unwrap_or_default();
                let (net, _) = self.request_address_raw(&r.pool_id, &addr, &opts).await?;
                taken.push(net.addr());
                gw = Some(net);
            }
            let mut out = BTreeMap::new();
            for (name, ip) in &aux {
                if !subnet.contains(ip) {
                    return Err(IpamError::OutsideSubnet {
                        field: format!("aux-address {name}"),
                        value: ip.to_string(),
                        subnet: subnet.to_string(),
                    });
                }
                let (net, _) = self
                    .request_address_raw(&r.pool_id, &ip.to_string(), &BTreeMap::new())
                    .await?;
                taken.push(net.addr());
                out.insert(name.clone(), net.addr());
            }
            Ok((gw, out))
        }
        .await;
        match result {
            Ok((gateway, aux_addresses)) => Ok(PoolResponse {
                pool_id: r.pool_id,
                pool: subnet,
                gateway,
                aux_addresses,
                data,
            }),
            Err(e) => {
                self.undo(&r.pool_id, &taken).await;
                Err(e)
            }
        }
    }

    async fn release_pool(&self, pool_id: &str) -> Result<()> {
        let _: serde_json::Value = self
            .call("/IpamDriver.ReleasePool", &ReleasePoolWire { pool_id })
            .await?;
        Ok(())
    }

    async fn request_address(&self, request: AddressRequest) -> Result<AddressResponse> {
        let mut options = request.options.clone();
        if self.capabilities.requires_mac_address {
            let mac = request
                .mac_address
                .as_deref()
                .ok_or_else(|| IpamError::InvalidOption {
                    key: OPT_MAC_ADDRESS.into(),
                    value: String::new(),
                    reason: format!(
                        "IPAM plugin {:?} requires the endpoint's MAC address",
                        self.name()
                    ),
                })?;
            options.insert(OPT_MAC_ADDRESS.to_string(), mac.to_string());
        }
        let address = match request.address.as_deref().filter(|a| !a.trim().is_empty()) {
            Some(a) => parse_ip("ip", a)?.to_string(),
            None => String::new(),
        };
        let (address, data) = self
            .request_address_raw(&request.pool_id, &address, &options)
            .await?;
        Ok(AddressResponse { address, data })
    }

    async fn release_address(&self, pool_id: &str, address: IpAddr) -> Result<()> {
        let _: serde_json::Value = self
            .call(
                "/IpamDriver.ReleaseAddress",
                &ReleaseAddressWire {
                    pool_id,
                    address: address.to_string(),
                },
            )
            .await?;
        Ok(())
    }
}
