//! How a Plexus network made by `CreateNetwork` uses what dockerd already holds of Plexus's
//! IPAM: its pools take ids `docker/<the pool id dockerd holds>`; [`AdoptResolver`] gives
//! the controller, for the IPAM driver [`ADOPT_DRIVER`], an IPAM that hands back dockerd's
//! pool and gateway without allocating them; [`WithDockerPools`], in front of the
//! controller's own IPAM, answers address requests on such pools with the address dockerd
//! holds (refusing any other) and leaves releases to dockerd.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use plexus_cnm::IpamResolver;
use plexus_ipam::{
    AddressRequest, AddressResponse, AddressSpaces, Capabilities, GatewayRequest, Ipam, IpamError,
    PoolRequest, PoolResponse,
};

use super::state::{address_key, pool_key, AddressRecord, PluginState, PoolRecord};

/// The IPAM driver name of Plexus networks that adopt dockerd's pools.
pub const ADOPT_DRIVER: &str = "docker-plugin";

/// The IPAM option naming the IPv4 pool dockerd holds.
pub const OPT_POOL_V4: &str = "plexus.docker.pool";

/// The IPAM option naming the IPv6 pool dockerd holds.
pub const OPT_POOL_V6: &str = "plexus.docker.pool6";

/// The prefix of adopted pools' ids.
const PREFIX: &str = "docker/";

/// The pool dockerd holds under an adopted pool's id, if it is one.
pub fn adopted(pool_id: &str) -> Option<&str> {
    pool_id.strip_prefix(PREFIX)
}

fn driver_err(message: String) -> IpamError {
    IpamError::Driver {
        driver: ADOPT_DRIVER.to_string(),
        message,
    }
}

fn store_err(e: super::Refusal) -> IpamError {
    driver_err(e.0)
}

/// The address dockerd holds at `addr` in `pool_id`.
async fn held(
    state: &PluginState,
    pool_id: &str,
    addr: IpAddr,
) -> Result<AddressRecord, IpamError> {
    state
        .get::<AddressRecord>(&address_key(pool_id, addr))
        .await
        .map_err(store_err)?
        .ok_or_else(|| {
            driver_err(format!(
                "address {addr} was not given by dockerd (RequestAddress) in pool {pool_id:?}"
            ))
        })
}

/// The controller's IPAM with adopted pools answered from dockerd's records.
pub struct WithDockerPools {
    state: PluginState,
    inner: Arc<dyn Ipam>,
}

impl WithDockerPools {
    /// `inner` for every pool but the adopted ones.
    pub fn new(state: PluginState, inner: Arc<dyn Ipam>) -> Self {
        Self { state, inner }
    }
}

#[async_trait]
impl Ipam for WithDockerPools {
    async fn capabilities(&self) -> plexus_ipam::Result<Capabilities> {
        self.inner.capabilities().await
    }

    async fn default_address_spaces(&self) -> plexus_ipam::Result<AddressSpaces> {
        self.inner.default_address_spaces().await
    }

    async fn request_pool(&self, request: PoolRequest) -> plexus_ipam::Result<PoolResponse> {
        self.inner.request_pool(request).await
    }

    /// dockerd releases its pool (`ReleasePool`).
    async fn release_pool(&self, pool_id: &str) -> plexus_ipam::Result<()> {
        if adopted(pool_id).is_some() {
            return Ok(());
        }
        self.inner.release_pool(pool_id).await
    }

    /// Only the address dockerd gave the endpoint, handed back as it is.
    async fn request_address(
        &self,
        request: AddressRequest,
    ) -> plexus_ipam::Result<AddressResponse> {
        let Some(pool) = adopted(&request.pool_id) else {
            return self.inner.request_address(request).await;
        };
        let Some(given) = &request.address else {
            return Err(driver_err(
                "dockerd assigns the addresses on this network: connect with the address it gave"
                    .into(),
            ));
        };
        let addr: IpAddr = given.parse().map_err(|_| IpamError::InvalidAddress {
            field: "ip".into(),
            value: given.clone(),
        })?;
        let record = held(&self.state, pool, addr).await?;
        Ok(AddressResponse {
            address: record.address,
            data: BTreeMap::new(),
        })
    }

    /// dockerd releases its addresses (`ReleaseAddress`).
    async fn release_address(&self, pool_id: &str, address: IpAddr) -> plexus_ipam::Result<()> {
        if adopted(pool_id).is_some() {
            return Ok(());
        }
        self.inner.release_address(pool_id, address).await
    }
}

/// The IPAM of [`ADOPT_DRIVER`]: a pool request names the pool dockerd holds.
struct Adopter {
    state: PluginState,
    inner: WithDockerPools,
}

#[async_trait]
impl Ipam for Adopter {
    async fn capabilities(&self) -> plexus_ipam::Result<Capabilities> {
        Ok(Capabilities::default())
    }

    async fn default_address_spaces(&self) -> plexus_ipam::Result<AddressSpaces> {
        self.inner.default_address_spaces().await
    }

    async fn request_pool(&self, request: PoolRequest) -> plexus_ipam::Result<PoolResponse> {
        let key = if request.v6 { OPT_POOL_V6 } else { OPT_POOL_V4 };
        let Some(pool_id) = request.options.get(key) else {
            return Err(IpamError::InvalidOption {
                key: key.to_string(),
                value: String::new(),
                reason: "missing: only the Docker plugin makes networks of this IPAM driver".into(),
            });
        };
        let record: PoolRecord = self
            .state
            .get(&pool_key(pool_id))
            .await
            .map_err(store_err)?
            .ok_or_else(|| IpamError::PoolNotFound {
                pool_id: pool_id.clone(),
            })?;
        if let Some(subnet) = &request.pool {
            let asked: IpNet = plexus_ipam::api::parse_cidr("subnet", subnet)?;
            if asked != record.subnet {
                return Err(driver_err(format!(
                    "subnet {asked} is not the pool {pool_id:?} dockerd holds ({})",
                    record.subnet
                )));
            }
        }
        let gateway = match &request.gateway {
            GatewayRequest::Given(g) => {
                let addr = plexus_ipam::api::parse_ip("gateway", g)?;
                let held = held(&self.state, pool_id, addr).await?;
                Some(held.address)
            }
            GatewayRequest::Auto | GatewayRequest::None => None,
        };
        let mut aux = BTreeMap::new();
        for (name, ip) in &request.aux_addresses {
            let addr = plexus_ipam::api::parse_ip("aux-address", ip)?;
            held(&self.state, pool_id, addr).await?;
            aux.insert(name.clone(), addr);
        }
        Ok(PoolResponse {
            pool_id: format!("{PREFIX}{pool_id}"),
            pool: record.subnet,
            gateway,
            aux_addresses: aux,
            data: BTreeMap::new(),
        })
    }

    async fn release_pool(&self, pool_id: &str) -> plexus_ipam::Result<()> {
        self.inner.release_pool(pool_id).await
    }

    async fn request_address(
        &self,
        request: AddressRequest,
    ) -> plexus_ipam::Result<AddressResponse> {
        self.inner.request_address(request).await
    }

    async fn release_address(&self, pool_id: &str, address: IpAddr) -> plexus_ipam::Result<()> {
        self.inner.release_address(pool_id, address).await
    }
}

/// Finds [`ADOPT_DRIVER`]; any other name is `next`'s.
pub struct AdoptResolver {
    state: PluginState,
    next: Arc<dyn IpamResolver>,
}

impl AdoptResolver {
    /// [`ADOPT_DRIVER`], then `next`.
    pub fn new(state: PluginState, next: Arc<dyn IpamResolver>) -> Self {
        Self { state, next }
    }
}

#[async_trait]
impl IpamResolver for AdoptResolver {
    async fn resolve(&self, name: &str) -> Result<Arc<dyn Ipam>, IpamError> {
        if name != ADOPT_DRIVER {
            return self.next.resolve(name).await;
        }
        // Pool requests only: addresses are asked of the controller's IPAM, which routes
        // adopted pools to `WithDockerPools` by their ids.
        Ok(Arc::new(Adopter {
            state: self.state.clone(),
            inner: WithDockerPools::new(self.state.clone(), Arc::new(NoIpam)),
        }))
    }
}

/// Refuses everything: what the adopting IPAM has behind it (it never allocates).
struct NoIpam;

#[async_trait]
impl Ipam for NoIpam {
    async fn capabilities(&self) -> plexus_ipam::Result<Capabilities> {
        Ok(Capabilities::default())
    }

    async fn default_address_spaces(&self) -> plexus_ipam::Result<AddressSpaces> {
        Ok(AddressSpaces {
            local: plexus_ipam::LOCAL_SPACE.into(),
            global: plexus_ipam::GLOBAL_SPACE.into(),
        })
    }

    async fn request_pool(&self, _: PoolRequest) -> plexus_ipam::Result<PoolResponse> {
        Err(driver_err("allocates nothing".into()))
    }

    async fn release_pool(&self, _: &str) -> plexus_ipam::Result<()> {
        Ok(())
    }

    async fn request_address(&self, _: AddressRequest) -> plexus_ipam::Result<AddressResponse> {
        Err(driver_err("allocates nothing".into()))
    }

    async fn release_address(&self, _: &str, _: IpAddr) -> plexus_ipam::Result<()> {
        Ok(())
    }
}
