//! [`DhcpIpam`]: the `dhcp` IPAM driver (`--ipam-driver dhcp`), Docker's IPAM API over a LAN's
//! DHCP server.
//!
//! - **`RequestPool`** probes the LAN (`DHCPDISCOVER` → `DHCPOFFER`, nothing requested, so
//!   nothing leased): the pool's subnet is the offer's (or `--subnet`, which must hold it), its
//!   gateway the offer's first router (or `--gateway`). A server that does not answer fails
//!   the network's creation with an error naming the parent; nothing is kept.
//! - **`RequestAddress`** leases an address for the endpoint (`DORA`) with the endpoint's MAC
//!   (which the caller must give: [`Capabilities::requires_mac_address`], as libnetwork asks of
//!   DHCP-backed drivers) and a client id made from it, records the lease and starts its
//!   renewal. The answer's data carries the lease's DNS servers ([`DATA_DNS_SERVERS`]).
//! - **Renewal**: a task per lease wakes at T1 and asks the server to extend the lease; a
//!   failed attempt is tried again after half the time left (1 s to 60 s), and past T2 (a
//!   server that lost its leases does not know this one) the same address is leased anew
//!   (`DISCOVER` asking for it, `REQUEST` only if it is offered). Each renewal rewrites the
//!   record.
//! - **`ReleaseAddress`** stops the renewal, sends `DHCPRELEASE` and forgets the lease;
//!   **`ReleasePool`** does that for every lease left, then forgets the pool.
//! - **Restart**: [`DhcpIpam::open`] reads the lease table and starts every renewal again (at
//!   once for a lease whose T1 passed while the daemon was down), so the leases and their
//!   addresses stay the same.
//!
//! Everything runs in the namespace given in [`DhcpConfig::netns`] (the host's, where the
//! parents are), on the packet socket of `socket.rs`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use ipnet::{IpNet, Ipv4Net};
use plexus_ipam::api::{
    parse_cidr, parse_ip, DATA_DNS_SERVERS, OPT_MAC_ADDRESS, OPT_REQUEST_ADDRESS_TYPE,
    REQUEST_TYPE_GATEWAY,
};
use plexus_ipam::{
    AddressRequest, AddressResponse, AddressSpaces, Capabilities, GatewayRequest, Ipam, IpamError,
    PoolRequest, PoolResponse, GLOBAL_SPACE, LOCAL_SPACE,
};
use plexus_kv::{KvError, PutOptions, Store};
use plexus_sys::netns::Netns;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::client::{self, Exchange, Goal, Identity, Lease, Outcome, Timing};
use crate::error::{DhcpError, Result};
use crate::records::{
    self, format_mac, interface_of, lease_key, leases_dir, parse_duration, parse_mac, pool_key,
    LeaseRecord, PoolRecord, OPT_LEASE_TIMEOUT,
};
use crate::socket::{self, Answered, Link};

/// The driver's name (`--ipam-driver dhcp`).
pub const DRIVER_NAME: &str = "dhcp";

/// How the driver's pool ids begin, so that an IPAM in front of several drivers routes the
/// calls on a pool by its id alone ([`owns_pool`]).
pub const POOL_ID_PREFIX: &str = "dhcp-";

/// Whether `pool_id` is one of this driver's.
pub fn owns_pool(pool_id: &str) -> bool {
    pool_id.starts_with(POOL_ID_PREFIX)
}

/// Settings of the driver.
#[derive(Debug, Clone, Default)]
pub struct DhcpConfig {
    /// The namespace of the parents; `None`: the process's own.
    pub netns: Option<Netns>,
    /// Retries and the default timeout of an exchange (`lease_timeout` overrides the timeout).
    pub timing: Timing,
}

/// The `dhcp` IPAM driver. See the [module docs](self).
pub struct DhcpIpam {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    config: DhcpConfig,
    /// The renewal task of each lease, by its key.
    renewals: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl std::fmt::Debug for DhcpIpam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DhcpIpam")
            .field("netns", &self.inner.config.netns.as_ref().map(|n| n.path()))
            .finish()
    }
}

fn err(e: DhcpError) -> IpamError {
    match e {
        DhcpError::Store(s) => IpamError::Store(s),
        DhcpError::Corrupt { key, reason } => IpamError::Corrupt { key, reason },
        DhcpError::Invalid {
            field,
            value,
            reason,
        } => IpamError::InvalidOption {
            key: field,
            value,
            reason,
        },
        other => IpamError::Driver {
            driver: DRIVER_NAME.into(),
            message: other.to_string(),
        },
    }
}

/// Now, UNIX seconds.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `n` random bytes.
fn random<const N: usize>() -> Result<[u8; N]> {
    use std::io::Read;
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| DhcpError::Io {
            interface: "/dev/urandom".into(),
            op: "read random bytes",
            message: e.to_string(),
        })?;
    Ok(b)
}

fn xid() -> Result<u32> {
    Ok(u32::from_be_bytes(random::<4>()?))
}

/// A random locally administered unicast MAC.
fn random_mac() -> Result<[u8; 6]> {
    let mut m = random::<6>()?;
    m[0] = (m[0] & 0xfc) | 0x02;
    Ok(m)
}

impl DhcpIpam {
    /// The driver over `store`, with every lease of its table renewed again from now on.
    pub async fn open(store: Arc<dyn Store>, config: DhcpConfig) -> Result<Self> {
        let inner = Arc::new(Inner {
            store,
            config,
            renewals: Mutex::new(HashMap::new()),
        });
        let leases = inner.leases().await?;
        let mut renewals = inner.renewals.lock().await;
        for (key, rec) in leases {
            tracing::info!(address = %rec.address, interface = %rec.interface, expires_in = rec.expires().saturating_sub(unix_now()), "DHCP lease restored");
            renewals.insert(key.clone(), spawn_renewal(&inner, key, rec));
        }
        drop(renewals);
        Ok(Self { inner })
    }

    /// Every lease of the table.
    pub async fn leases(&self) -> Result<Vec<LeaseRecord>> {
        Ok(self
            .inner
            .leases()
            .await?
            .into_iter()
            .map(|(_, r)| r)
            .collect())
    }

    /// Every pool of the table.
    pub async fn pools(&self) -> Result<Vec<PoolRecord>> {
        let mut out = Vec::new();
        for pair in list(&self.inner.store, &format!("{}/pool", records::ROOT)).await? {
            out.push(decode(&pair.key, &pair.value)?);
        }
        Ok(out)
    }

    /// Stops every renewal task (the leases stay in the table, for the next start).
    pub async fn shutdown(&self) {
        let mut renewals = self.inner.renewals.lock().await;
        for (_, task) in renewals.drain() {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn list(store: &Arc<dyn Store>, dir: &str) -> Result<Vec<plexus_kv::KvPair>> {
    match store.list(dir).await {
        Ok(l) => Ok(l),
        Err(KvError::KeyNotFound { .. }) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|e| DhcpError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

impl Inner {
    async fn leases(&self) -> Result<Vec<(String, LeaseRecord)>> {
        let mut out = Vec::new();
        for pair in list(&self.store, &format!("{}/lease", records::ROOT)).await? {
            let rec: LeaseRecord = decode(&pair.key, &pair.value)?;
            out.push((pair.key, rec));
        }
        Ok(out)
    }

    async fn pool(&self, pool_id: &str) -> Result<PoolRecord, IpamError> {
        let key = pool_key(pool_id);
        match self.store.get(&key).await {
            Ok(pair) => decode(&key, &pair.value).map_err(err),
            Err(KvError::KeyNotFound { .. }) | Err(KvError::InvalidKey { .. }) => {
                Err(IpamError::PoolNotFound {
                    pool_id: pool_id.to_string(),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn timing(&self, timeout: Duration) -> Timing {
        Timing {
            timeout,
            ..self.config.timing
        }
    }

    /// One exchange on `interface`.
    async fn exchange(
        &self,
        interface: &str,
        identity: &Identity,
        goal: Goal,
        timeout: Duration,
    ) -> Result<Answered> {
        let link = Link::open(self.config.netns.as_ref(), interface).await?;
        let ex = Exchange::new(
            identity.clone(),
            goal,
            xid()?,
            self.timing(timeout),
            Duration::ZERO,
        );
        socket::run(&link, identity, ex).await
    }

    /// Sends the `DHCPRELEASE` of `rec`.
    async fn release(&self, rec: &LeaseRecord) -> Result<()> {
        let identity = rec.identity()?;
        let link = Link::open(self.config.netns.as_ref(), &rec.interface).await?;
        let msg = client::release(&identity, xid()?, rec.address, rec.server);
        socket::send_message(
            &link,
            &identity,
            &msg,
            rec.server_mac(),
            rec.server,
            rec.address,
        )
        .await
    }

    /// Renews `rec` once; the renewed record, written to the store.
    async fn renew(&self, key: &str, rec: &LeaseRecord) -> Result<LeaseRecord> {
        let timeout = match self.pool(&rec.pool_id).await {
            Ok(p) => p.timeout(),
            Err(_) => self.config.timing.timeout,
        };
        let identity = rec.identity()?;
        let renewed = self
            .exchange(
                &rec.interface,
                &identity,
                Goal::Renew {
                    address: rec.address,
                },
                timeout,
            )
            .await;
        let answered = match renewed {
            Ok(a) => a,
            // Past T2 (a server that lost its leases ignores or refuses the renewal): the
            // same address is leased anew, if the LAN's server offers it; nothing is
            // requested when it offers another.
            Err(e) if unix_now() >= rec.rebind_at() => {
                tracing::warn!(address = %rec.address, interface = %rec.interface, error = %e, "renewal past T2 failed; asking for the same address anew");
                self.exchange(
                    &rec.interface,
                    &identity,
                    Goal::Lease {
                        requested: Some(rec.address),
                    },
                    timeout,
                )
                .await?
            }
            Err(e) => return Err(e),
        };
        let Outcome::Leased(lease) = answered.outcome else {
            return Err(DhcpError::invalid(
                "renewal",
                rec.address.to_string(),
                "answered with an offer",
            ));
        };
        let new = LeaseRecord::new(
            &rec.pool_id,
            &rec.interface,
            &identity,
            &lease,
            answered.server_mac,
            unix_now(),
        );
        self.store
            .put(key, &encode(&new), PutOptions::default())
            .await?;
        Ok(new)
    }
}

/// The task that renews `rec` at T1, and again at each new T1, until it is aborted.
fn spawn_renewal(inner: &Arc<Inner>, key: String, rec: LeaseRecord) -> JoinHandle<()> {
    let inner = inner.clone();
    tokio::spawn(async move {
        let mut rec = rec;
        let mut at = rec.renew_at();
        loop {
            if at == u64::MAX {
                return;
            }
            let wait = at.saturating_sub(unix_now());
            tokio::time::sleep(Duration::from_secs(wait)).await;
            match inner.renew(&key, &rec).await {
                Ok(new) => {
                    tracing::info!(address = %new.address, interface = %new.interface, lease_secs = new.lease_secs, "DHCP lease renewed");
                    rec = new;
                    at = rec.renew_at();
                }
                Err(e) => {
                    let now = unix_now();
                    at = rec.retry_at(now);
                    if rec.expires() <= now {
                        tracing::error!(address = %rec.address, interface = %rec.interface, error = %e, "DHCP lease expired and not renewed; trying again");
                    } else {
                        tracing::warn!(address = %rec.address, interface = %rec.interface, error = %e, retry_in = at - now, "DHCP lease renewal failed; trying again");
                    }
                }
            }
        }
    })
}

/// The pool a probe's `offer` describes, checked against `--subnet` and `--gateway`.
fn pool_of(
    request: &PoolRequest,
    interface: &str,
    offer: &Lease,
) -> Result<(Ipv4Net, Option<Ipv4Addr>), IpamError> {
    let offered = Ipv4Net::new(offer.address, offer.prefix_len)
        .map(|n| n.trunc())
        .map_err(|e| IpamError::Driver {
            driver: DRIVER_NAME.into(),
            message: format!(
                "the DHCP server on {interface} offered {}/{}: {e}",
                offer.address, offer.prefix_len
            ),
        })?;
    let subnet = match &request.pool {
        Some(s) => match parse_cidr("subnet", s)? {
            IpNet::V4(n) if n.contains(&offer.address) => n.trunc(),
            other => {
                return Err(IpamError::OutsideSubnet {
                    field: format!("the address the DHCP server on {interface} offered"),
                    value: offer.address.to_string(),
                    subnet: other.to_string(),
                })
            }
        },
        None => offered,
    };
    let gateway = match &request.gateway {
        GatewayRequest::None => None,
        GatewayRequest::Auto => offer.routers.first().copied(),
        GatewayRequest::Given(g) => match parse_ip("gateway", g)? {
            IpAddr::V4(a) if subnet.contains(&a) => Some(a),
            _ => {
                return Err(IpamError::OutsideSubnet {
                    field: "gateway".into(),
                    value: g.clone(),
                    subnet: subnet.to_string(),
                })
            }
        },
    };
    Ok((subnet, gateway))
}

#[async_trait]
impl Ipam for DhcpIpam {
    async fn capabilities(&self) -> plexus_ipam::Result<Capabilities> {
        Ok(Capabilities {
            requires_mac_address: true,
            requires_request_replay: false,
        })
    }

    async fn default_address_spaces(&self) -> plexus_ipam::Result<AddressSpaces> {
        Ok(AddressSpaces {
            local: LOCAL_SPACE.into(),
            global: GLOBAL_SPACE.into(),
        })
    }

    async fn request_pool(&self, request: PoolRequest) -> plexus_ipam::Result<PoolResponse> {
        let space = request.address_space.as_str();
        if space == GLOBAL_SPACE || space.eq_ignore_ascii_case("global") {
            return Err(IpamError::UnknownAddressSpace {
                space: format!(
                    "{space} (the dhcp driver serves one host's LAN: local networks only)"
                ),
            });
        }
        if request.v6 {
            return Err(IpamError::InvalidOption {
                key: "ipv6".into(),
                value: "true".into(),
                reason: "the dhcp IPAM driver leases IPv4 addresses only (no DHCPv6): create the network without --ipv6".into(),
            });
        }
        if let Some(r) = &request.sub_pool {
            return Err(IpamError::InvalidOption {
                key: "ip-range".into(),
                value: r.clone(),
                reason: "the DHCP server chooses the addresses; set its range there".into(),
            });
        }
        if let Some(name) = request.aux_addresses.keys().next() {
            return Err(IpamError::InvalidOption {
                key: format!("aux-address {name}"),
                value: request.aux_addresses[name].clone(),
                reason: "the DHCP server chooses the addresses; reserve them there".into(),
            });
        }
        let interface = interface_of(&request.options, &request.network_options).map_err(err)?;
        let timeout = match request.options.get(OPT_LEASE_TIMEOUT) {
            Some(v) => parse_duration(OPT_LEASE_TIMEOUT, v).map_err(err)?,
            None => self.inner.config.timing.timeout,
        };
        let probe = Identity::for_mac(random_mac().map_err(err)?);
        let answered = self
            .inner
            .exchange(&interface, &probe, Goal::Probe, timeout)
            .await
            .map_err(err)?;
        let (Outcome::Offered(offer) | Outcome::Leased(offer)) = answered.outcome;
        let (subnet, gateway) = pool_of(&request, &interface, &offer)?;
        let suffix: [u8; 4] = random().map_err(err)?;
        let pool_id = format!(
            "{POOL_ID_PREFIX}{}-{}",
            request
                .owner
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let rec = PoolRecord {
            pool_id: pool_id.clone(),
            owner: request.owner.clone(),
            interface: interface.clone(),
            subnet,
            gateway,
            timeout_ms: timeout.as_millis() as u64,
        };
        self.inner
            .store
            .put(&pool_key(&pool_id), &encode(&rec), PutOptions::default())
            .await?;
        tracing::info!(pool = %pool_id, %interface, %subnet, gateway = ?gateway, server = %offer.server, "DHCP pool probed");
        Ok(PoolResponse {
            pool_id,
            pool: IpNet::V4(subnet),
            gateway: gateway
                .and_then(|g| Ipv4Net::new(g, subnet.prefix_len()).ok())
                .map(IpNet::V4),
            aux_addresses: BTreeMap::new(),
            data: BTreeMap::new(),
        })
    }

    async fn release_pool(&self, pool_id: &str) -> plexus_ipam::Result<()> {
        self.inner.pool(pool_id).await?;
        for pair in list(&self.inner.store, &leases_dir(pool_id))
            .await
            .map_err(err)?
        {
            let rec: LeaseRecord = decode(&pair.key, &pair.value).map_err(err)?;
            self.release_address(pool_id, IpAddr::V4(rec.address))
                .await?;
        }
        match self.inner.store.delete(&pool_key(pool_id)).await {
            Ok(()) | Err(KvError::KeyNotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn request_address(
        &self,
        request: AddressRequest,
    ) -> plexus_ipam::Result<AddressResponse> {
        let pool = self.inner.pool(&request.pool_id).await?;
        if request
            .options
            .get(OPT_REQUEST_ADDRESS_TYPE)
            .map(String::as_str)
            == Some(REQUEST_TYPE_GATEWAY)
        {
            return Err(IpamError::InvalidOption {
                key: OPT_REQUEST_ADDRESS_TYPE.into(),
                value: REQUEST_TYPE_GATEWAY.into(),
                reason:
                    "the gateway of a dhcp network is the LAN's router, not an address to lease"
                        .into(),
            });
        }
        let mac_text = request
            .mac_address
            .clone()
            .or_else(|| request.options.get(OPT_MAC_ADDRESS).cloned())
            .unwrap_or_default();
        let mac = parse_mac(&mac_text).ok_or_else(|| IpamError::InvalidAddress {
            field: "mac address (the dhcp driver leases for the endpoint's MAC)".into(),
            value: mac_text.clone(),
        })?;
        let requested = match &request.address {
            None => None,
            Some(a) => match parse_ip("ip", a)? {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => {
                    return Err(IpamError::FamilyMismatch {
                        field: "ip".into(),
                        value: a.clone(),
                        expected: "IPv4",
                    })
                }
            },
        };
        let identity = Identity::for_mac(mac);
        let answered = self
            .inner
            .exchange(
                &pool.interface,
                &identity,
                Goal::Lease { requested },
                pool.timeout(),
            )
            .await
            .map_err(err)?;
        let (Outcome::Leased(lease) | Outcome::Offered(lease)) = answered.outcome;
        let rec = LeaseRecord::new(
            &pool.pool_id,
            &pool.interface,
            &identity,
            &lease,
            answered.server_mac,
            unix_now(),
        );
        // Undo in reverse: a lease the table cannot hold, or outside the pool, is given back.
        let undo = |why: IpamError| async {
            if let Err(e) = self.inner.release(&rec).await {
                tracing::warn!(address = %rec.address, interface = %rec.interface, error = %e, "cannot release a lease while undoing");
            }
            why
        };
        if !pool.subnet.contains(&lease.address) {
            return Err(undo(IpamError::OutsideSubnet {
                field: format!("the address the DHCP server on {} leased", pool.interface),
                value: lease.address.to_string(),
                subnet: pool.subnet.to_string(),
            })
            .await);
        }
        let key = lease_key(&pool.pool_id, lease.address);
        if let Err(e) = self
            .inner
            .store
            .put(&key, &encode(&rec), PutOptions::default())
            .await
        {
            return Err(undo(e.into()).await);
        }
        if let Some(router) = lease.routers.first() {
            if pool.gateway.is_some_and(|g| g != *router) {
                tracing::warn!(address = %lease.address, %router, gateway = ?pool.gateway, "the lease's router is not the network's gateway; the gateway is kept");
            }
        }
        tracing::info!(address = %lease.address, mac = %format_mac(&mac), interface = %pool.interface, lease_secs = lease.lease_secs, "DHCP lease granted");
        let task = spawn_renewal(&self.inner, key.clone(), rec);
        if let Some(old) = self.inner.renewals.lock().await.insert(key, task) {
            old.abort();
        }
        let mut data = BTreeMap::new();
        if !lease.dns.is_empty() {
            let dns: Vec<String> = lease.dns.iter().map(|d| d.to_string()).collect();
            data.insert(DATA_DNS_SERVERS.to_string(), dns.join(","));
        }
        let address = Ipv4Net::new(lease.address, pool.subnet.prefix_len()).map_err(|e| {
            IpamError::Driver {
                driver: DRIVER_NAME.into(),
                message: e.to_string(),
            }
        })?;
        Ok(AddressResponse {
            address: IpNet::V4(address),
            data,
        })
    }

    async fn release_address(&self, pool_id: &str, address: IpAddr) -> plexus_ipam::Result<()> {
        let not_allocated = || IpamError::NotAllocated {
            what: "address",
            value: address.to_string(),
            pool: Some(pool_id.to_string()),
        };
        let IpAddr::V4(v4) = address else {
            return Err(not_allocated());
        };
        let key = lease_key(pool_id, v4);
        let rec: LeaseRecord = match self.inner.store.get(&key).await {
            Ok(pair) => decode(&key, &pair.value).map_err(err)?,
            Err(KvError::KeyNotFound { .. }) | Err(KvError::InvalidKey { .. }) => {
                return Err(not_allocated())
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(task) = self.inner.renewals.lock().await.remove(&key) {
            task.abort();
            let _ = task.await;
        }
        // The server forgets it; if the message cannot go, the lease expires there.
        match self.inner.release(&rec).await {
            Ok(()) => {
                tracing::info!(address = %rec.address, interface = %rec.interface, "DHCP lease released")
            }
            Err(e) => {
                tracing::warn!(address = %rec.address, interface = %rec.interface, error = %e, "cannot send DHCPRELEASE; the lease expires at the server")
            }
        }
        match self.inner.store.delete(&key).await {
            Ok(()) | Err(KvError::KeyNotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
