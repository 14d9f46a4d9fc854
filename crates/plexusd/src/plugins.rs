//! Docker's plugins, found when first named (as dockerd does): `-d NAME` for a driver the
//! daemon does not have, `--ipam-driver NAME`. A plugin serving both APIs is activated once
//! and its client shared.
//!
//! [`Plugins`] is the controller's [`DriverResolver`] and [`IpamResolver`]. Pools of a
//! plugin's IPAM get ids `plugin/NAME/<the plugin's id>`, and [`RoutedIpam`], the
//! controller's own IPAM, sends every call on such a pool to that plugin (looked up again
//! after a restart) and every other call to the built-in IPAM.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use plexus_cnm::{Driver, DriverError, DriverResolver, IpamResolver};
use plexus_drivers::remote::{RemoteDriver, NETWORK_DRIVER_API};
use plexus_ipam::plugin::{PluginClient, PluginDirs, PluginError, Timeouts};
use plexus_ipam::remote::RemoteIpam;
use plexus_ipam::{
    AddressRequest, AddressResponse, AddressSpaces, Capabilities, Ipam, IpamError, PoolRequest,
    PoolResponse, GLOBAL_SPACE, LOCAL_SPACE,
};
use plexus_sys::netns::Netns;
use tokio::sync::Mutex;

/// The API an IPAM plugin implements.
const IPAM_DRIVER_API: &str = "IpamDriver";

/// The prefix of the pool ids of plugins' IPAM.
const POOL_PREFIX: &str = "plugin/";

/// An activated plugin: its client and what it implements.
struct Activated {
    client: Arc<PluginClient>,
    implements: Vec<String>,
}

/// The plugins the daemon has found, by name.
pub struct Plugins {
    dirs: PluginDirs,
    timeouts: Timeouts,
    host: Netns,
    activated: Mutex<BTreeMap<String, Activated>>,
    ipams: Mutex<BTreeMap<String, Arc<RemoteIpam>>>,
}

impl Plugins {
    /// Plugins looked for in `dirs`, waited for as `timeouts` says; network plugins make
    /// their links in `host`.
    pub fn new(dirs: PluginDirs, timeouts: Timeouts, host: Netns) -> Self {
        Self {
            dirs,
            timeouts,
            host,
            activated: Mutex::new(BTreeMap::new()),
            ipams: Mutex::new(BTreeMap::new()),
        }
    }

    /// The client of plugin `name`, activated the first time, checked to implement `api`.
    async fn client(&self, name: &str, api: &str) -> Result<Arc<PluginClient>, PluginError> {
        let mut activated = self.activated.lock().await;
        if !activated.contains_key(name) {
            let (client, implements) =
                PluginClient::activate(name, &self.dirs, api, self.timeouts).await?;
            activated.insert(
                name.to_string(),
                Activated {
                    client: Arc::new(client),
                    implements,
                },
            );
        }
        let Some(a) = activated.get(name) else {
            return Err(PluginError::call(name, "/Plugin.Activate", "lost"));
        };
        if !a.implements.iter().any(|i| i == api) {
            return Err(PluginError::malformed(
                name,
                "/Plugin.Activate",
                "Implements",
                format!("the plugin implements {:?}, not {api}", a.implements),
            ));
        }
        Ok(a.client.clone())
    }

    /// Plugin `name`'s IPAM, found and activated the first time.
    async fn remote_ipam(&self, name: &str) -> Result<Arc<RemoteIpam>, IpamError> {
        if let Some(i) = self.ipams.lock().await.get(name) {
            return Ok(i.clone());
        }
        let client = self.client(name, IPAM_DRIVER_API).await?;
        let ipam = Arc::new(RemoteIpam::with_client(client).await?);
        self.ipams
            .lock()
            .await
            .insert(name.to_string(), ipam.clone());
        tracing::info!(plugin = name, "IPAM plugin registered");
        Ok(ipam)
    }
}

#[async_trait]
impl DriverResolver for Plugins {
    async fn resolve(&self, name: &str) -> Result<Arc<dyn Driver>, DriverError> {
        let client = self
            .client(name, NETWORK_DRIVER_API)
            .await
            .map_err(|e| DriverError::Failed(e.to_string()))?;
        Ok(Arc::new(
            RemoteDriver::with_client(client, self.host.clone()).await?,
        ))
    }
}

#[async_trait]
impl IpamResolver for Plugins {
    async fn resolve(&self, name: &str) -> Result<Arc<dyn Ipam>, IpamError> {
        Ok(Arc::new(Prefixed {
            name: name.to_string(),
            inner: self.remote_ipam(name).await?,
        }))
    }
}

/// A plugin's IPAM as the controller allocates pools from it: the controller's address
/// spaces become the plugin's own defaults, pool ids get the plugin's prefix.
struct Prefixed {
    name: String,
    inner: Arc<RemoteIpam>,
}

fn prefixed(name: &str, pool_id: &str) -> String {
    format!("{POOL_PREFIX}{name}/{pool_id}")
}

#[async_trait]
impl Ipam for Prefixed {
    async fn capabilities(&self) -> plexus_ipam::Result<Capabilities> {
        self.inner.capabilities().await
    }

    async fn default_address_spaces(&self) -> plexus_ipam::Result<AddressSpaces> {
        self.inner.default_address_spaces().await
    }

    async fn request_pool(&self, mut request: PoolRequest) -> plexus_ipam::Result<PoolResponse> {
        if request.address_space == LOCAL_SPACE || request.address_space == GLOBAL_SPACE {
            let spaces = self.inner.default_address_spaces().await?;
            request.address_space = if request.address_space == LOCAL_SPACE {
                spaces.local
            } else {
                spaces.global
            };
        }
        let mut r = self.inner.request_pool(request).await?;
        r.pool_id = prefixed(&self.name, &r.pool_id);
        Ok(r)
    }

    async fn release_pool(&self, pool_id: &str) -> plexus_ipam::Result<()> {
        self.inner.release_pool(strip(pool_id).1).await
    }

    async fn request_address(
        &self,
        mut request: AddressRequest,
    ) -> plexus_ipam::Result<AddressResponse> {
        request.pool_id = strip(&request.pool_id).1.to_string();
        self.inner.request_address(request).await
    }

    async fn release_address(&self, pool_id: &str, address: IpAddr) -> plexus_ipam::Result<()> {
        self.inner.release_address(strip(pool_id).1, address).await
    }
}

/// `plugin/NAME/ID` → `(Some(NAME), ID)`; any other id → `(None, id)`.
fn strip(pool_id: &str) -> (Option<&str>, &str) {
    pool_id
        .strip_prefix(POOL_PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .map(|(name, id)| (Some(name), id))
        .unwrap_or((None, pool_id))
}

/// The controller's IPAM: pools of plugins go to their plugin, the rest to the built-in one.
pub struct RoutedIpam {
    builtin: Arc<dyn Ipam>,
    plugins: Arc<Plugins>,
}

impl RoutedIpam {
    /// Routes plugins' pools through `plugins`, the rest to `builtin`.
    pub fn new(builtin: Arc<dyn Ipam>, plugins: Arc<Plugins>) -> Self {
        Self { builtin, plugins }
    }

    async fn for_pool(&self, pool_id: &str) -> plexus_ipam::Result<(Arc<dyn Ipam>, String)> {
        match strip(pool_id) {
            (Some(name), id) => Ok((self.plugins.remote_ipam(name).await?, id.to_string())),
            (None, id) => Ok((self.builtin.clone(), id.to_string())),
        }
    }
}

#[async_trait]
impl Ipam for RoutedIpam {
    async fn capabilities(&self) -> plexus_ipam::Result<Capabilities> {
        self.builtin.capabilities().await
    }

    async fn default_address_spaces(&self) -> plexus_ipam::Result<AddressSpaces> {
        self.builtin.default_address_spaces().await
    }

    async fn request_pool(&self, request: PoolRequest) -> plexus_ipam::Result<PoolResponse> {
        self.builtin.request_pool(request).await
    }

    async fn release_pool(&self, pool_id: &str) -> plexus_ipam::Result<()> {
        let (ipam, id) = self.for_pool(pool_id).await?;
        ipam.release_pool(&id).await
    }

    async fn request_address(
        &self,
        mut request: AddressRequest,
    ) -> plexus_ipam::Result<AddressResponse> {
        let (ipam, id) = self.for_pool(&request.pool_id).await?;
        request.pool_id = id;
        ipam.request_address(request).await
    }

    async fn release_address(&self, pool_id: &str, address: IpAddr) -> plexus_ipam::Result<()> {
        let (ipam, id) = self.for_pool(pool_id).await?;
        ipam.release_address(&id, address).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_carry_their_plugin() {
        let id = prefixed("testplug", "tp/10.1.0.0/24");
        assert_eq!(id, "plugin/testplug/tp/10.1.0.0/24");
        assert_eq!(strip(&id), (Some("testplug"), "tp/10.1.0.0/24"));
        assert_eq!(strip("local/10.1.0.0/24"), (None, "local/10.1.0.0/24"));
    }
}
