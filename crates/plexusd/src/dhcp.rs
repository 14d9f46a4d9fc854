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

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_dhcp::records::{lease_key, pool_key, LeaseRecord, PoolRecord};
    use plexus_kv::{PutOptions, Store};

    fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// What a crash between a lease and the endpoint's record leaves: a pool and a lease
    /// nothing holds. Reconciliation forgets both (the release to the server fails here, on
    /// an interface that does not exist, and the lease then expires there).
    #[tokio::test]
    async fn leases_and_pools_nothing_holds_are_released() {
        let store: Arc<dyn Store> = Arc::new(plexus_kv::LocalStore::memory());
        let pool = PoolRecord {
            pool_id: "dhcp-gone-00000000".into(),
            owner: "gone".into(),
            interface: "nosuch0".into(),
            subnet: ok("subnet", "10.90.0.0/24".parse()),
            gateway: None,
            timeout_ms: 1000,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let lease = LeaseRecord {
            pool_id: pool.pool_id.clone(),
            interface: "nosuch0".into(),
            mac: "02:00:00:00:00:01".into(),
            client_id: "01020000000001".into(),
            address: Ipv4Addr::new(10, 90, 0, 5),
            prefix_len: 24,
            routers: Vec::new(),
            dns: Vec::new(),
            server: Ipv4Addr::new(10, 90, 0, 1),
            server_mac: "02:00:00:00:00:fe".into(),
            lease_secs: 3600,
            t1_secs: 1800,
            t2_secs: 3150,
            granted: now,
        };
        let put = |key: String, value: Vec<u8>| {
            let store = store.clone();
            async move { store.put(&key, &value, PutOptions::default()).await }
        };
        ok(
            "pool",
            put(
                pool_key(&pool.pool_id),
                ok("json", serde_json::to_vec(&pool)),
            )
            .await,
        );
        ok(
            "lease",
            put(
                lease_key(&pool.pool_id, lease.address),
                ok("json", serde_json::to_vec(&lease)),
            )
            .await,
        );
        let dhcp = ok(
            "open",
            DhcpIpam::open(store.clone(), plexus_dhcp::DhcpConfig::default()).await,
        );
        let builtin = ok(
            "builtin",
            plexus_ipam::BuiltinIpam::open(store.clone(), plexus_ipam::IpamConfig::new("h")).await,
        );
        let controller = Controller::new(
            store.clone(),
            Arc::new(builtin),
            plexus_cnm::DriverRegistry::new(),
            plexus_cnm::ControllerConfig::default(),
        );
        assert_eq!(ok("reconcile", reconcile(&controller, &dhcp).await), (1, 1));
        assert!(ok("leases", dhcp.leases().await).is_empty());
        assert!(ok("pools", dhcp.pools().await).is_empty());
        assert_eq!(ok("again", reconcile(&controller, &dhcp).await), (0, 0));
    }
}
