//! libnetwork's two built-in address spaces on two stores: `LocalDefault` in this host's own
//! store and `GlobalDefault` in the cluster store, behind one [`Ipam`].

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::api::{
    AddressRequest, AddressResponse, AddressSpaces, Capabilities, Ipam, PoolRequest, PoolResponse,
};
use crate::builtin::{normalize_space, parse_pool_id, GLOBAL_SPACE};
use crate::error::{IpamError, Result};

/// Routes each call to the IPAM of its address space: requests by their space, everything
/// else by the space its pool id names. Without a global IPAM, the global space is refused
/// with an error saying the host has no cluster store.
pub struct ScopedIpam {
    local: Arc<dyn Ipam>,
    global: Option<Arc<dyn Ipam>>,
}

impl ScopedIpam {
    /// `local` serves the local space; `global`, when the host has a cluster store, the
    /// global one.
    pub fn new(local: Arc<dyn Ipam>, global: Option<Arc<dyn Ipam>>) -> Self {
        Self { local, global }
    }

    fn for_space(&self, space: &str) -> Result<&Arc<dyn Ipam>> {
        if normalize_space(space)? != GLOBAL_SPACE {
            return Ok(&self.local);
        }
        self.global
            .as_ref()
            .ok_or_else(|| IpamError::UnknownAddressSpace {
                space: format!(
                    "{space} (global addresses live in the cluster store, and this host has none: start plexusd with --cluster-store)"
                ),
            })
    }

    fn for_pool(&self, pool_id: &str) -> Result<&Arc<dyn Ipam>> {
        let (space, _) = parse_pool_id(pool_id)?;
        self.for_space(space)
    }
}

#[async_trait]
impl Ipam for ScopedIpam {
    async fn capabilities(&self) -> Result<Capabilities> {
        self.local.capabilities().await
    }

    async fn default_address_spaces(&self) -> Result<AddressSpaces> {
        self.local.default_address_spaces().await
    }

    async fn request_pool(&self, request: PoolRequest) -> Result<PoolResponse> {
        self.for_space(&request.address_space)?
            .request_pool(request)
            .await
    }

    async fn release_pool(&self, pool_id: &str) -> Result<()> {
        self.for_pool(pool_id)?.release_pool(pool_id).await
    }

    async fn request_address(&self, request: AddressRequest) -> Result<AddressResponse> {
        self.for_pool(&request.pool_id)?
            .request_address(request)
            .await
    }

    async fn release_address(&self, pool_id: &str, address: IpAddr) -> Result<()> {
        self.for_pool(pool_id)?
            .release_address(pool_id, address)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BuiltinIpam, IpamConfig, LOCAL_SPACE};

    async fn builtin(store: Arc<dyn plexus_kv::Store>) -> Arc<dyn Ipam> {
        Arc::new(
            BuiltinIpam::open(store, IpamConfig::new("h"))
                .await
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn each_space_lives_in_its_own_store() {
        let local_store: Arc<dyn plexus_kv::Store> = Arc::new(plexus_kv::LocalStore::memory());
        let cluster_store: Arc<dyn plexus_kv::Store> = Arc::new(plexus_kv::LocalStore::memory());
        let ipam = ScopedIpam::new(
            builtin(local_store.clone()).await,
            Some(builtin(cluster_store.clone()).await),
        );
        let g = ipam
            .request_pool(PoolRequest::new(GLOBAL_SPACE, "g").subnet("10.200.0.0/24"))
            .await
            .unwrap();
        let l = ipam
            .request_pool(PoolRequest::new(LOCAL_SPACE, "l").subnet("10.200.0.0/24"))
            .await
            .unwrap();
        let a = ipam
            .request_address(AddressRequest::next(&g.pool_id))
            .await
            .unwrap();
        assert!(!cluster_store.list("ipam").await.unwrap().is_empty());
        assert!(!local_store.list("ipam").await.unwrap().is_empty());
        ipam.release_address(&g.pool_id, a.address.addr())
            .await
            .unwrap();
        ipam.release_pool(&g.pool_id).await.unwrap();
        ipam.release_pool(&l.pool_id).await.unwrap();
    }

    #[tokio::test]
    async fn global_space_without_a_cluster_store_is_refused() {
        let store: Arc<dyn plexus_kv::Store> = Arc::new(plexus_kv::LocalStore::memory());
        let ipam = ScopedIpam::new(builtin(store).await, None);
        let err = ipam
            .request_pool(PoolRequest::new("GlobalDefault", "g"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--cluster-store"), "{err}");
    }
}
