//! The built-in IPAM driver: pure allocation ([`AddressPool`], [`SpaceLayout`]) kept in memory,
//! every change written through a [`Store`] with compare-and-swap.
//!
//! # Persisted layout
//!
//! Under `{root}/{space}/` (root `ipam` by default):
//!
//! | key | value |
//! |---|---|
//! | `version` | a counter bumped by every pool creation and release |
//! | `pools/{subnet}` (`/` written `_`) | the pool record (JSON: subnet, ip-range, owner, generation, gateway, aux addresses, options) |
//! | `addrs/{subnet}/{generation}/{address}` | one key per taken address; the value says what for (`""`, `gateway`, `aux-address NAME`) |
//!
//! Taking an address is one small transaction: the pool record is unchanged, the address key is
//! absent, write it. Two daemons on one store can never both write the same key, so they never
//! hand out the same address: the loser marks the address taken and tries the next one. Pools
//! are created and released in one transaction that compares the space's `version`, so two
//! daemons never create overlapping pools. The generation in address keys keeps the addresses of
//! a released pool (deleted after the pool record) from leaking into a new pool of the same
//! subnet; left-overs of a crash between the two steps are removed on open.

mod addresses;
mod load;
mod pools;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use ipnet::IpNet;
use plexus_kv::{KvError, KvPair, Store, Txn};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::api::{
    parse_bool_option, parse_cidr, parse_ip, AddressRequest, AddressResponse, AddressSpaces,
    Capabilities, GatewayRequest, Ipam, PoolRequest, PoolResponse, OPT_REQUEST_ADDRESS_TYPE,
    OPT_SERIAL, REQUEST_TYPE_GATEWAY,
};
use crate::error::{IpamError, Result};
use crate::pool::{family_name, AddressPool};
use crate::space::{
    blockers, docker_global_defaults, docker_local_defaults, ula_defaults, DefaultPool, SpaceLayout,
};

/// The local address space.
pub const LOCAL_SPACE: &str = "local";
/// The global address space.
pub const GLOBAL_SPACE: &str = "global";

/// How many times an operation re-reads the store after losing a race before giving up.
const MAX_ATTEMPTS: usize = 64;
/// Addresses one transaction of [`BuiltinIpam::request_addresses`] takes (two entries each,
/// plus the pool's comparison, within the store's 128-entry limit).
pub const BATCH_ADDRESSES: usize = 60;
/// Aux addresses one pool request may reserve (they go in the pool's one transaction).
pub const MAX_AUX_ADDRESSES: usize = 100;

/// What the host looks like, for choosing dynamic subnets (read from the kernel by the sys
/// layer and passed in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// On-link routes; a default route (`/0`) is ignored.
    pub routes: Vec<IpNet>,
    /// resolv.conf nameservers.
    pub nameservers: Vec<IpAddr>,
}

/// Configuration of the built-in driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// The store directory the state lives under.
    pub root: String,
    /// IPv4 default pools of the local space (`default-address-pools`).
    pub local_pools: Vec<DefaultPool>,
    /// IPv4 default pools of the global space.
    pub global_pools: Vec<DefaultPool>,
    /// IPv6 default pools (both spaces).
    pub v6_pools: Vec<DefaultPool>,
    /// Host routes and nameservers to avoid.
    pub host: HostInfo,
    /// Write pools and addresses (requests and releases) as relaxed store transactions
    /// ([`plexus_kv::Txn::relaxed`]): one disk flush fewer per call. Only for a caller that
    /// follows each call with a durable write of its own (the CNM controller records the
    /// network or endpoint) and, after a crash, releases pools and addresses none of its
    /// records holds: a crash may lose the last relaxed writes (the store stays a consistent
    /// prefix of what was written). Off by default.
    pub relaxed_writes: bool,
}

impl IpamConfig {
    /// Docker's defaults, with the IPv6 ULA /48 derived from `host_id`.
    pub fn new(host_id: &str) -> Self {
        Self {
            root: "ipam".into(),
            local_pools: docker_local_defaults(),
            global_pools: docker_global_defaults(),
            v6_pools: ula_defaults(host_id),
            host: HostInfo::default(),
            relaxed_writes: false,
        }
    }

    /// Replaces the local default pools by `default-address-pools` entries
    /// (`base=CIDR,size=N`); IPv6 entries replace the IPv6 defaults.
    ///
    /// ```
    /// let cfg = plexus_ipam::IpamConfig::new("host")
    ///     .with_default_address_pools(&["base=10.10.0.0/16,size=24"]).unwrap();
    /// assert_eq!(cfg.local_pools.len(), 1);
    /// ```
    pub fn with_default_address_pools(mut self, entries: &[&str]) -> Result<Self> {
        let pools = entries
            .iter()
            .map(|e| e.parse::<DefaultPool>())
            .collect::<Result<Vec<_>>>()?;
        let (v6, v4): (Vec<_>, Vec<_>) = pools
            .into_iter()
            .partition(|p| matches!(p.base, IpNet::V6(_)));
        if !v4.is_empty() {
            self.local_pools = v4;
        }
        if !v6.is_empty() {
            self.v6_pools = v6;
        }
        Ok(self)
    }

    /// Sets the host's routes and nameservers.
    pub fn with_host(mut self, host: HostInfo) -> Self {
        self.host = host;
        self
    }
}

/// The stored record of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PoolRecord {
    subnet: IpNet,
    ip_range: Option<IpNet>,
    owner: String,
    generation: u64,
    serial: bool,
    gateway: Option<IpAddr>,
    #[serde(default)]
    aux: BTreeMap<String, IpAddr>,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

struct PoolState {
    record: PoolRecord,
    index: u64,
    alloc: AddressPool,
    /// Addresses marked taken locally whose transaction is in flight.
    pending: HashSet<IpAddr>,
}

#[derive(Default)]
struct SpaceState {
    /// The `version` index the cached pool list corresponds to: `Some(None)` when the key is
    /// absent, `None` when never loaded or known to be stale.
    version: Option<Option<u64>>,
    layout: SpaceLayout,
    pools: HashMap<IpNet, PoolState>,
}

#[derive(Default)]
struct State {
    spaces: HashMap<String, SpaceState>,
}

/// The built-in IPAM driver.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use plexus_ipam::{BuiltinIpam, Ipam, IpamConfig, PoolRequest, AddressRequest};
/// let store = plexus_kv::open("memory://", plexus_kv::OpenOptions::default()).await?;
/// let ipam = BuiltinIpam::open(store, IpamConfig::new("host-1")).await?;
/// let pool = ipam.request_pool(PoolRequest::new("local", "bridge")).await?;
/// assert_eq!(pool.pool.to_string(), "172.17.0.0/16");
/// assert_eq!(pool.gateway.unwrap().to_string(), "172.17.0.1/16");
/// let a = ipam.request_address(AddressRequest::next(&pool.pool_id)).await?;
/// assert_eq!(a.address.to_string(), "172.17.0.2/16");
/// # Ok(()) }
/// ```
pub struct BuiltinIpam {
    store: Arc<dyn Store>,
    config: Mutex<IpamConfig>,
    state: Mutex<State>,
    /// Serializes this allocator's pool creations and releases (rare), so its own tasks do not
    /// race each other on the space's version; other daemons still race through the store.
    pool_ops: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn new_generation() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

fn esc(subnet: &IpNet) -> String {
    subnet.to_string().replace('/', "_")
}

/// The normalized name of an address space (`""`, `LocalDefault` → `local`, ...).
pub fn normalize_space(space: &str) -> Result<&'static str> {
    match space {
        "" | LOCAL_SPACE | "LocalDefault" => Ok(LOCAL_SPACE),
        GLOBAL_SPACE | "GlobalDefault" => Ok(GLOBAL_SPACE),
        other => Err(IpamError::UnknownAddressSpace {
            space: other.to_string(),
        }),
    }
}

/// Builds a pool id (`local/172.17.0.0/16`).
pub fn pool_id(space: &str, subnet: &IpNet) -> String {
    format!("{space}/{subnet}")
}

/// Splits a pool id into its space and subnet.
pub fn parse_pool_id(id: &str) -> Result<(&'static str, IpNet)> {
    let (space, subnet) = id.split_once('/').ok_or(IpamError::InvalidPoolId {
        pool_id: id.to_string(),
        reason: "expected SPACE/SUBNET, e.g. local/172.17.0.0/16",
    })?;
    let space = normalize_space(space)?;
    let subnet = subnet
        .parse::<IpNet>()
        .map_err(|_| IpamError::InvalidPoolId {
            pool_id: id.to_string(),
            reason: "the subnet part is not a CIDR",
        })?;
    Ok((space, subnet))
}

fn is_conflict(e: &KvError) -> Option<&str> {
    match e {
        KvError::TxnConflict { key, .. } => Some(key),
        _ => None,
    }
}

/// A request, checked and parsed.
struct ParsedPoolRequest {
    space: &'static str,
    v6: bool,
    subnet: Option<IpNet>,
    size: Option<u8>,
    range: Option<IpNet>,
    gateway: Option<Option<IpAddr>>,
    aux: BTreeMap<String, IpAddr>,
    serial: bool,
}

fn parse_pool_request(req: &PoolRequest) -> Result<ParsedPoolRequest> {
    let space = normalize_space(&req.address_space)?;
    let mut v6 = req.v6;
    let (mut subnet, mut size) = (None, None);
    if let Some(p) = req.pool.as_deref().filter(|p| !p.trim().is_empty()) {
        let net = parse_cidr("subnet", p)?;
        v6 = matches!(net, IpNet::V6(_));
        if net.addr().is_unspecified() && net.prefix_len() > 0 {
            size = Some(net.prefix_len());
        } else if !net.addr().is_unspecified() {
            subnet = Some(net.trunc());
        }
    }
    let range = match req.sub_pool.as_deref().filter(|p| !p.trim().is_empty()) {
        Some(r) => {
            let r = parse_cidr("ip-range", r)?;
            if subnet.is_none() {
                return Err(IpamError::InvalidCidr {
                    field: "ip-range",
                    value: r.to_string(),
                    reason: "an ip-range needs a --subnet".into(),
                });
            }
            Some(r)
        }
        None => None,
    };
    let gateway = match &req.gateway {
        GatewayRequest::Auto => Some(None),
        GatewayRequest::None => None,
        GatewayRequest::Given(g) => {
            let ip = parse_ip("gateway", g)?;
            if subnet.is_none() {
                return Err(IpamError::OutsideSubnet {
                    field: "gateway".into(),
                    value: ip.to_string(),
                    subnet: "(none given: a --gateway needs a --subnet)".into(),
                });
            }
            Some(Some(ip))
        }
    };
    if req.aux_addresses.len() > MAX_AUX_ADDRESSES {
        return Err(IpamError::InvalidOption {
            key: "aux-address".into(),
            value: format!("{} entries", req.aux_addresses.len()),
            reason: format!("at most {MAX_AUX_ADDRESSES} aux addresses per network"),
        });
    }
    let mut aux = BTreeMap::new();
    for (name, ip) in &req.aux_addresses {
        let field = format!("aux-address {name}");
        let ip = parse_ip(&field, ip)?;
        if subnet.is_none() {
            return Err(IpamError::OutsideSubnet {
                field,
                value: ip.to_string(),
                subnet: "(none given: an --aux-address needs a --subnet)".into(),
            });
        }
        aux.insert(name.clone(), ip);
    }
    let serial = match req.options.get(OPT_SERIAL) {
        Some(v) => parse_bool_option(OPT_SERIAL, v)?,
        None => false,
    };
    Ok(ParsedPoolRequest {
        space,
        v6,
        subnet,
        size,
        range,
        gateway,
        aux,
        serial,
    })
}

impl BuiltinIpam {
    /// Opens the driver on `store`, restoring every pool and address, and removing what a crash
    /// may have left of released pools.
    pub async fn open(store: Arc<dyn Store>, config: IpamConfig) -> Result<Self> {
        let ipam = Self {
            store,
            config: Mutex::new(config),
            state: Mutex::new(State::default()),
            pool_ops: tokio::sync::Mutex::new(()),
        };
        for space in [LOCAL_SPACE, GLOBAL_SPACE] {
            ipam.load_space(space, true).await?;
        }
        Ok(ipam)
    }

    /// The store the state lives in.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Replaces the host's routes and nameservers (when the host's network changes).
    pub fn set_host_info(&self, host: HostInfo) {
        lock(&self.config).host = host;
    }

    fn root(&self) -> String {
        lock(&self.config).root.clone()
    }

    fn space_dir(&self, space: &str) -> String {
        format!("{}/{space}", self.root())
    }

    fn version_key(&self, space: &str) -> String {
        format!("{}/version", self.space_dir(space))
    }

    fn pool_key(&self, space: &str, subnet: &IpNet) -> String {
        format!("{}/pools/{}", self.space_dir(space), esc(subnet))
    }

    fn addr_dir(&self, space: &str, subnet: &IpNet, generation: u64) -> String {
        format!(
            "{}/addrs/{}/{generation}",
            self.space_dir(space),
            esc(subnet)
        )
    }

    fn addr_key(&self, space: &str, subnet: &IpNet, generation: u64, ip: IpAddr) -> String {
        format!("{}/{ip}", self.addr_dir(space, subnet, generation))
    }

    async fn get_opt(&self, key: &str) -> Result<Option<KvPair>> {
        match self.store.get(key).await {
            Ok(p) => Ok(Some(p)),
            Err(KvError::KeyNotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl Ipam for BuiltinIpam {
    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::default())
    }

    async fn default_address_spaces(&self) -> Result<AddressSpaces> {
        Ok(AddressSpaces {
            local: LOCAL_SPACE.into(),
            global: GLOBAL_SPACE.into(),
        })
    }

    async fn request_pool(&self, request: PoolRequest) -> Result<PoolResponse> {
        self.do_request_pool(request).await
    }

    async fn release_pool(&self, pool_id: &str) -> Result<()> {
        self.do_release_pool(pool_id).await
    }

    async fn request_address(&self, request: AddressRequest) -> Result<AddressResponse> {
        self.do_request_address(request).await
    }

    async fn release_address(&self, pool_id: &str, address: IpAddr) -> Result<()> {
        self.do_release_address(pool_id, address).await
    }
}
