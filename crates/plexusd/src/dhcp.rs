//! The `dhcp` IPAM driver in the daemon (`--ipam-driver dhcp`, `plexus_dhcp`): found by name
//! for a network that names it ([`DhcpResolver`]), its pools' calls routed to it by pool id
//! ([`WithDhcp`], in front of the controller's own IPAM), and its lease table checked against
//! the records at start ([`reconcile`]).
//!
//! The driver itself restores its leases and their renewals when it is opened (before the
//! controller starts), so a restart keeps every lease and its address.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::{Context, Result};
use async_trait::async_trait;
use plexus_cnm::{Controller, IpamResolver};
use plexus_dhcp::{owns_pool, DhcpIpam, DRIVER_NAME};
use plexus_ipam::{
    AddressRequest, AddressResponse, AddressSpaces, Capabilities, Ipam, IpamError, PoolRequest,
    PoolResponse,
};

/// The controller's own IPAM: calls on the `dhcp` driver's pools go to it, every other call
/// to `other`.
pub struct WithDhcp {
    dhcp: Arc<DhcpIpam>,
    other: Arc<dyn Ipam>,
}

impl WithDhcp {
    /// `other` (the built-in IPAM, or what routes to it), with the `dhcp` driver's pools.
    pub fn new(dhcp: Arc<DhcpIpam>, other: Arc<dyn Ipam>) -> Self {
        Self { dhcp, other }
    }

    fn for_pool(&self, pool_id: &str) -> &dyn Ipam {
        if owns_pool(pool_id) {
            self.dhcp.as_ref()
        } else {
            self.other.as_ref()
        }
    }
}

#[async_trait]
impl Ipam for WithDhcp {
    async fn capabilities(&self) -> plexus_ipam::Result<Capabilities> {
        self.other.capabilities().await
    }

    async fn default_address_spaces(&self) -> plexus_ipam::Result<AddressSpaces> {
        self.other.default_address_spaces().await
    }

    /// Pools are asked of the driver a network names (the controller's resolver): this one
    /// only serves networks of the default driver.
    async fn request_pool(&self, request: PoolRequest) -> plexus_ipam::Result<PoolResponse> {
        self.other.request_pool(request).await
    }

    async fn release_pool(&self, pool_id: &str) -> plexus_ipam::Result<()> {
        self.for_pool(pool_id).release_pool(pool_id).await
    }

    async fn request_address(
        &self,
        request: AddressRequest,
    ) -> plexus_ipam::Result<AddressResponse> {
        self.for_pool(&request.pool_id)
            .request_address(request)
            .await
    }

    async fn release_address(&self, pool_id: &str, address: IpAddr) -> plexus_ipam::Result<()> {
        self.for_pool(pool_id)
            .release_address(pool_id, address)
            .await
    }
}

/// Finds the `dhcp` driver by name; any other name is `next`'s to find (plugins), or unknown.
pub struct DhcpResolver {
    dhcp: Arc<DhcpIpam>,
    next: Option<Arc<dyn IpamResolver>>,
}

impl DhcpResolver {
    /// The `dhcp` driver, then `next`.
    pub fn new(dhcp: Arc<DhcpIpam>, next: Option<Arc<dyn IpamResolver>>) -> Self {
        Self { dhcp, next }
    }
}

#[async_trait]
impl IpamResolver for DhcpResolver {
    async fn resolve(&self, name: &str) -> Result<Arc<dyn Ipam>, IpamError> {
        if name == DRIVER_NAME {
            return Ok(self.dhcp.clone());
        }
        match &self.next {
            Some(next) => next.resolve(name).await,
            None => Err(IpamError::InvalidOption {
                key: "IPAM.Driver".into(),
                value: name.into(),
                reason: format!("unknown IPAM driver; known: default, {DRIVER_NAME}"),
            }),
        }
    }
}

/// Releases the leases no endpoint holds and the pools no network holds (what a crash
/// between the lease and the record leaves): returns how many of each.
pub async fn reconcile(controller: &Controller, dhcp: &DhcpIpam) -> Result<(usize, usize)> {
    let networks = controller
        .networks()
        .await
        .context("listing networks for DHCP leases")?;
    let mut pools = BTreeSet::new();
    let mut held: BTreeSet<(String, Ipv4Addr)> = BTreeSet::new();
    for n in &networks {
        for p in n.ipv4.iter().filter(|p| owns_pool(&p.pool_id)) {
            pools.insert(p.pool_id.clone());
        }
        if !n.ipv4.iter().any(|p| owns_pool(&p.pool_id)) {
            continue;
        }
        for ep in controller
            .endpoints(&n.id)
            .await
            .context("listing endpoints for DHCP leases")?
        {
            let addrs = ep.ipv4.iter().chain(ep.ipv6.iter());
            for (pool, addr) in ep.pool_ids.iter().zip(addrs) {
                if let IpAddr::V4(a) = addr.addr() {
                    held.insert((pool.clone(), a));
                }
            }
        }
    }
    let mut leases = 0;
    for l in dhcp
        .leases()
        .await
        .context("reading the DHCP lease table")?
    {
        if held.contains(&(l.pool_id.clone(), l.address)) {
            continue;
        }
        tracing::info!(address = %l.address, interface = %l.interface, "releasing a DHCP lease no endpoint holds");
        match dhcp
            .release_address(&l.pool_id, IpAddr::V4(l.address))
            .await
        {
            Ok(()) => leases += 1,
            Err(e) => {
                tracing::warn!(address = %l.address, error = %e, "cannot release a DHCP lease")
            }
        }
    }
    let mut released_pools = 0;
    for p in dhcp.pools().await.context("reading the DHCP pools")? {
        if pools.contains(&p.pool_id) {
            continue;
        }
        tracing::info!(pool = %p.pool_id, owner = %p.owner, "releasing a DHCP pool no network holds");
        match dhcp.release_pool(&p.pool_id).await {
            Ok(()) => released_pools += 1,
            Err(e) => tracing::warn!(pool = %p.pool_id, error = %e, "cannot release a DHCP pool"),
        }
    }
    Ok((leases, released_pools))
}
