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

    fn decode_record(pair: &KvPair) -> Result<PoolRecord> {
        serde_json::from_slice(&pair.value).map_err(|e| IpamError::Corrupt {
            key: pair.key.clone(),
            reason: e.to_string(),
        })
    }

    /// Builds a pool's state from its record and its address keys.
    fn build_pool(record: PoolRecord, index: u64, addrs: &[KvPair]) -> Result<PoolState> {
        let mut alloc = AddressPool::new(record.subnet, record.ip_range, record.serial)?;
        for pair in addrs {
            let Some(ip) = pair
                .key
                .rsplit('/')
                .next()
                .and_then(|s| s.parse::<IpAddr>().ok())
            else {
                warn!(key = %pair.key, "ignoring a malformed address key");
                continue;
            };
            alloc.mark(ip);
            let label = String::from_utf8_lossy(&pair.value);
            if !label.is_empty() {
                alloc.label(ip, &label);
            }
        }
        if record.serial {
            let hi = alloc.highest_in_range();
            alloc.set_cursor(hi);
        }
        Ok(PoolState {
            record,
            index,
            alloc,
            pending: HashSet::new(),
        })
    }

    /// Loads (or reloads) one space: its version, its pool records and, for pools not cached
    /// at the same generation, their addresses. With `gc`, also removes address keys of pools
    /// that no longer exist.
    async fn load_space(&self, space: &'static str, gc: bool) -> Result<()> {
        let version = self.get_opt(&self.version_key(space)).await?;
        let pools_dir = format!("{}/pools", self.space_dir(space));
        let records = self.store.list(&pools_dir).await?;
        let mut loaded = Vec::new();
        for pair in &records {
            loaded.push((Self::decode_record(pair)?, pair.last_index));
        }
        // Pools whose cached generation is still current keep their state.
        let keep: HashSet<(IpNet, u64)> = {
            let st = lock(&self.state);
            st.spaces
                .get(space)
                .map(|s| {
                    s.pools
                        .values()
                        .map(|p| (p.record.subnet, p.record.generation))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut fresh = HashMap::new();
        for (record, index) in loaded {
            if keep.contains(&(record.subnet, record.generation)) {
                fresh.insert(record.subnet, (record, index, None));
                continue;
            }
            let dir = self.addr_dir(space, &record.subnet, record.generation);
            let addrs = self.store.list(&dir).await?;
            let state = Self::build_pool(record.clone(), index, &addrs)?;
            fresh.insert(record.subnet, (record, index, Some(state)));
        }
        if gc {
            let addrs_dir = format!("{}/addrs", self.space_dir(space));
            let mut orphans = HashSet::new();
            for pair in self.store.list(&addrs_dir).await? {
                let Some(rest) = pair.key.strip_prefix(&format!("{addrs_dir}/")) else {
                    continue;
                };
                let mut parts = rest.splitn(3, '/');
                let (Some(sub), Some(generation)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let live = fresh.values().any(|(r, _, _)| {
                    esc(&r.subnet) == sub && r.generation.to_string() == generation
                });
                if !live {
                    orphans.insert(format!("{addrs_dir}/{sub}/{generation}"));
                }
            }
            for dir in orphans {
                info!(%dir, "removing addresses left by a released pool");
                self.store.delete_tree(&dir).await?;
            }
        }
        let mut st = lock(&self.state);
        let sp = st.spaces.entry(space.to_string()).or_default();
        let mut old = std::mem::take(&mut sp.pools);
        sp.layout = SpaceLayout::default();
        for (subnet, (record, index, state)) in fresh {
            let state = match state {
                Some(s) => Some(s),
                None => old.remove(&subnet).map(|mut s| {
                    s.index = index;
                    s
                }),
            };
            // The layout always holds every stored pool (it guards against overlaps); the
            // address state of one that could not be kept is loaded again on use.
            sp.layout.insert(subnet, &record.owner);
            if let Some(s) = state {
                sp.pools.insert(subnet, s);
            }
        }
        sp.version = Some(version.map(|v| v.last_index));
        debug!(space, pools = sp.pools.len(), "address space loaded");
        Ok(())
    }

    /// Loads one pool into the cache; `PoolNotFound` if its record is absent.
    async fn load_pool(&self, space: &'static str, subnet: IpNet) -> Result<()> {
        let key = self.pool_key(space, &subnet);
        let Some(pair) = self.get_opt(&key).await? else {
            let mut st = lock(&self.state);
            if let Some(sp) = st.spaces.get_mut(space) {
                if sp.pools.remove(&subnet).is_some() {
                    // Released elsewhere: the space's view is stale; re-read it before the
                    // next pool request.
                    sp.version = None;
                }
            }
            return Err(IpamError::PoolNotFound {
                pool_id: pool_id(space, &subnet),
            });
        };
        let record = Self::decode_record(&pair)?;
        let addrs = self
            .store
            .list(&self.addr_dir(space, &subnet, record.generation))
            .await?;
        let state = Self::build_pool(record.clone(), pair.last_index, &addrs)?;
        let mut st = lock(&self.state);
        let sp = st.spaces.entry(space.to_string()).or_default();
        if sp.layout.overlapping(&subnet).is_none() {
            sp.layout.insert(subnet, &record.owner);
        }
        sp.pools.insert(subnet, state);
        Ok(())
    }

    fn defaults_for(&self, space: &str, v6: bool) -> (Vec<DefaultPool>, Vec<IpNet>) {
        let cfg = lock(&self.config);
        let pools = if v6 {
            cfg.v6_pools.clone()
        } else if space == GLOBAL_SPACE {
            cfg.global_pools.clone()
        } else {
            cfg.local_pools.clone()
        };
        (pools, blockers(&cfg.host.routes, &cfg.host.nameservers))
    }

    fn response(space: &str, record: &PoolRecord) -> PoolResponse {
        PoolResponse {
            pool_id: pool_id(space, &record.subnet),
            pool: record.subnet,
            gateway: record
                .gateway
                .and_then(|g| IpNet::new(g, record.subnet.prefix_len()).ok()),
            aux_addresses: record.aux.clone(),
            data: BTreeMap::new(),
        }
    }

    /// Addresses currently taken in a pool, as this allocator sees them (tests, inspect).
    pub fn allocated(&self, pool_id: &str) -> Result<Vec<IpAddr>> {
        let (space, subnet) = parse_pool_id(pool_id)?;
        let st = lock(&self.state);
        let pool = st
            .spaces
            .get(space)
            .and_then(|s| s.pools.get(&subnet))
            .ok_or_else(|| IpamError::PoolNotFound {
                pool_id: pool_id.to_string(),
            })?;
        Ok(pool.alloc.iter().collect())
    }

    /// The pools of a space with their owners, as this allocator sees them.
    pub fn pools(&self, space: &str) -> Result<Vec<(String, IpNet, String)>> {
        let space = normalize_space(space)?;
        let st = lock(&self.state);
        let mut out: Vec<_> = st
            .spaces
            .get(space)
            .map(|s| {
                s.pools
                    .values()
                    .map(|p| {
                        (
                            pool_id(space, &p.record.subnet),
                            p.record.subnet,
                            p.record.owner.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    /// Builds the pool a request asks for, against the cached space; returns it with the
    /// transaction that creates it, or the existing pool for a replayed request.
    fn plan_pool(
        &self,
        req: &PoolRequest,
        p: &ParsedPoolRequest,
        version: Option<&KvPair>,
    ) -> Result<std::result::Result<(PoolRecord, Txn), PoolResponse>> {
        let (defaults, host_blockers) = self.defaults_for(p.space, p.v6);
        let version_key = self.version_key(p.space);
        let st = lock(&self.state);
        let empty = SpaceState::default();
        let sp = st.spaces.get(p.space).unwrap_or(&empty);
        let subnet = match p.subnet {
            Some(subnet) => {
                if let Some(e) = sp.layout.overlapping(&subnet) {
                    if let Some(existing) = sp.pools.get(&e.subnet) {
                        let r = &existing.record;
                        if r.subnet == subnet
                            && r.owner == req.owner
                            && r.ip_range == p.range.map(|r| r.trunc())
                        {
                            // A replayed request of the same network: give it its pool.
                            return Ok(Err(Self::response(p.space, r)));
                        }
                    }
                    return Err(IpamError::Overlap {
                        field: "subnet",
                        subnet: subnet.to_string(),
                        existing: e.subnet.to_string(),
                        owner: e.owner.clone(),
                        space: p.space.to_string(),
                    });
                }
                subnet
            }
            None => sp
                .layout
                .find_dynamic(&defaults, p.size, p.v6, &host_blockers)
                .map_err(|ex| IpamError::DefaultPoolsExhausted {
                    family: family_name(p.v6),
                    space: p.space.to_string(),
                    pools: defaults
                        .iter()
                        .filter(|d| matches!(d.base, IpNet::V6(_)) == p.v6)
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                    in_use: ex.in_use,
                    blocked: ex.blocked,
                    example: match (p.v6, p.space) {
                        (true, _) => "base=fd42:1::/48,size=64".into(),
                        (false, GLOBAL_SPACE) => "base=100.64.0.0/10,size=24".into(),
                        (false, _) => "base=10.10.0.0/16,size=24".into(),
                    },
                })?,
        };
        let mut alloc = AddressPool::new(subnet, p.range, p.serial)?;
        let mut gateway = None;
        let mut labels: Vec<(IpAddr, String)> = Vec::new();
        match p.gateway {
            Some(Some(ip)) => {
                alloc.allocate_labelled(ip, "gateway", "gateway")?;
                gateway = Some(ip);
                labels.push((ip, "gateway".into()));
            }
            Some(None) => {
                let ip = alloc.allocate_next()?;
                alloc.label(ip, "gateway");
                gateway = Some(ip);
                labels.push((ip, "gateway".into()));
            }
            None => {}
        }
        for (name, ip) in &p.aux {
            let field = format!("aux-address {name}");
            alloc.allocate_labelled(*ip, &field, &field)?;
            labels.push((*ip, field));
        }
        let record = PoolRecord {
            subnet,
            ip_range: alloc.range(),
            owner: req.owner.clone(),
            generation: new_generation(),
            serial: p.serial,
            gateway,
            aux: p.aux.clone(),
            options: req.options.clone(),
        };
        let value = serde_json::to_vec(&record).map_err(|e| IpamError::Corrupt {
            key: self.pool_key(p.space, &subnet),
            reason: e.to_string(),
        })?;
        let next_version = version
            .and_then(|v| std::str::from_utf8(&v.value).ok()?.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let mut txn = match version {
            Some(v) => Txn::new().compare_index(version_key.clone(), v.last_index),
            None => Txn::new().compare_absent(version_key.clone()),
        };
        let pool_key = self.pool_key(p.space, &subnet);
        txn = txn
            .compare_absent(pool_key.clone())
            .put(pool_key, value)
            .put(version_key, next_version.to_string().into_bytes());
        for (ip, label) in labels {
            txn = txn.put(
                self.addr_key(p.space, &subnet, record.generation, ip),
                label.into_bytes(),
            );
        }
        Ok(Ok((record, txn)))
    }

    async fn do_request_pool(&self, req: PoolRequest) -> Result<PoolResponse> {
        let p = parse_pool_request(&req)?;
        let _serial = self.pool_ops.lock().await;
        for attempt in 0..MAX_ATTEMPTS {
            let version = self.get_opt(&self.version_key(p.space)).await?;
            let current = version.as_ref().map(|v| v.last_index);
            let cached = lock(&self.state)
                .spaces
                .get(p.space)
                .and_then(|s| s.version);
            if cached != Some(current) {
                self.load_space(p.space, false).await?;
                continue;
            }
            let (record, txn) = match self.plan_pool(&req, &p, version.as_ref())? {
                Ok(planned) => planned,
                Err(existing) => return Ok(existing),
            };
            match self.commit(txn).await {
                Ok(pairs) => {
                    let (pool_index, version_index) = match (pairs.first(), pairs.get(1)) {
                        (Some(a), Some(b)) => (a.last_index, b.last_index),
                        _ => {
                            return Err(IpamError::Corrupt {
                                key: self.pool_key(p.space, &record.subnet),
                                reason: "the store returned no pairs for the pool's write".into(),
                            })
                        }
                    };
                    let mut state = Self::build_pool(record.clone(), pool_index, &[])?;
                    if let Some(g) = record.gateway {
                        state.alloc.mark(g);
                        state.alloc.label(g, "gateway");
                    }
                    for (name, ip) in &record.aux {
                        state.alloc.mark(*ip);
                        state.alloc.label(*ip, &format!("aux-address {name}"));
                    }
                    let mut st = lock(&self.state);
                    let sp = st.spaces.entry(p.space.to_string()).or_default();
                    sp.layout.insert(record.subnet, &record.owner);
                    sp.pools.insert(record.subnet, state);
                    if sp.version == Some(current) {
                        sp.version = Some(Some(version_index));
                    }
                    info!(space = p.space, subnet = %record.subnet, owner = %record.owner, "pool allocated");
                    return Ok(Self::response(p.space, &record));
                }
                Err(e) if is_conflict(&e).is_some() => {
                    debug!(attempt, error = %e, "pool request lost a race; retrying");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention {
            op: "request pool",
            attempts: MAX_ATTEMPTS,
        })
    }

    async fn do_release_pool(&self, id: &str) -> Result<()> {
        let (space, subnet) = parse_pool_id(id)?;
        let pool_key = self.pool_key(space, &subnet);
        let version_key = self.version_key(space);
        let _serial = self.pool_ops.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let Some(pair) = self.get_opt(&pool_key).await? else {
                return Err(IpamError::NotAllocated {
                    what: "pool",
                    value: id.to_string(),
                    pool: None,
                });
            };
            let record = Self::decode_record(&pair)?;
            let version = self.get_opt(&version_key).await?;
            let next = version
                .as_ref()
                .and_then(|v| std::str::from_utf8(&v.value).ok()?.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            let txn = match &version {
                Some(v) => Txn::new().compare_index(version_key.clone(), v.last_index),
                None => Txn::new().compare_absent(version_key.clone()),
            }
            .compare_index(pool_key.clone(), pair.last_index)
            .delete(pool_key.clone())
            .put(version_key.clone(), next.to_string().into_bytes());
            match self.commit(txn).await {
                Ok(pairs) => {
                    {
                        let mut st = lock(&self.state);
                        if let Some(sp) = st.spaces.get_mut(space) {
                            if sp.pools.remove(&subnet).is_some() {
                                sp.layout.remove(&subnet);
                            }
                            let old = version.as_ref().map(|v| v.last_index);
                            if sp.version == Some(old) {
                                sp.version = Some(pairs.first().map(|p| p.last_index));
                            }
                        }
                    }
                    let dir = self.addr_dir(space, &subnet, record.generation);
                    if let Err(e) = self.store.delete_tree(&dir).await {
                        // The pool is gone; its addresses are collected on the next open.
                        warn!(%dir, error = %e, "could not delete a released pool's addresses");
                    }
                    info!(space, %subnet, "pool released");
                    return Ok(());
                }
                Err(e) if is_conflict(&e).is_some() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention {
            op: "release pool",
            attempts: MAX_ATTEMPTS,
        })
    }

    async fn do_request_address(&self, req: AddressRequest) -> Result<AddressResponse> {
        let (space, subnet) = parse_pool_id(&req.pool_id)?;
        let v6 = matches!(subnet, IpNet::V6(_));
        let is_gateway = req
            .options
            .get(OPT_REQUEST_ADDRESS_TYPE)
            .is_some_and(|t| t == REQUEST_TYPE_GATEWAY);
        let field = match (is_gateway, v6) {
            (true, _) => "gateway",
            (false, true) => "ip6",
            (false, false) => "ip",
        };
        let preferred = match req.address.as_deref().filter(|a| !a.trim().is_empty()) {
            Some(a) => Some(parse_ip(field, a)?),
            None => None,
        };
        let label = if is_gateway { "gateway" } else { "" };
        let mut reloaded = false;
        let mut pool_races = 0;
        loop {
            // Pick an address under the lock and mark it taken; write it outside the lock.
            let picked = {
                let mut st = lock(&self.state);
                match st
                    .spaces
                    .get_mut(space)
                    .and_then(|s| s.pools.get_mut(&subnet))
                {
                    None => None,
                    Some(pool) => {
                        let r = match preferred {
                            Some(ip) => pool.alloc.allocate(ip, field).map(|_| ip),
                            None => pool.alloc.allocate_next(),
                        };
                        match r {
                            Ok(ip) => {
                                pool.pending.insert(ip);
                                Some(Ok((ip, pool.index, pool.record.generation)))
                            }
                            Err(e) => Some(Err((
                                e,
                                preferred.is_some_and(|ip| pool.pending.contains(&ip)),
                            ))),
                        }
                    }
                }
            };
            let (ip, pool_index, generation) = match picked {
                None => {
                    self.load_pool(space, subnet).await?;
                    continue;
                }
                Some(Ok(v)) => v,
                Some(Err((e, pending))) => {
                    // Our view may be stale (another daemon released addresses): re-read the
                    // pool once before saying it is full or the address is taken.
                    let stale = matches!(
                        e,
                        IpamError::PoolExhausted { .. } | IpamError::AddressInUse { .. }
                    );
                    if stale && !reloaded && !pending {
                        reloaded = true;
                        self.load_pool(space, subnet).await?;
                        continue;
                    }
                    return Err(e);
                }
            };
            let pool_key = self.pool_key(space, &subnet);
            let key = self.addr_key(space, &subnet, generation, ip);
            let txn = Txn::new()
                .compare_index(pool_key.clone(), pool_index)
                .compare_absent(key.clone())
                .put(key.clone(), label.as_bytes().to_vec());
            let result = self.commit(txn).await;
            let mut st = lock(&self.state);
            let pool = st
                .spaces
                .get_mut(space)
                .and_then(|s| s.pools.get_mut(&subnet))
                .filter(|p| p.record.generation == generation);
            match result {
                Ok(_) => {
                    if let Some(pool) = pool {
                        pool.pending.remove(&ip);
                        if is_gateway {
                            pool.alloc.label(ip, "gateway");
                        }
                    }
                    let address = IpNet::new(ip, subnet.prefix_len()).map_err(|e| {
                        IpamError::InvalidCidr {
                            field: "subnet",
                            value: subnet.to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                    debug!(pool = %req.pool_id, %ip, "address allocated");
                    return Ok(AddressResponse {
                        address,
                        data: BTreeMap::new(),
                    });
                }
                Err(e) => {
                    let conflict_key = is_conflict(&e).map(str::to_string);
                    let pool_changed = conflict_key.as_deref() == Some(pool_key.as_str());
                    if let Some(pool) = pool {
                        pool.pending.remove(&ip);
                        if conflict_key.as_deref() != Some(key.as_str()) {
                            // Not taken by someone else: give the mark back.
                            let _ = pool.alloc.release(ip);
                        }
                    }
                    if pool_changed {
                        // The pool was released or re-created: forget it and re-read.
                        if let Some(sp) = st.spaces.get_mut(space) {
                            sp.pools.remove(&subnet);
                            sp.version = None;
                        }
                    }
                    drop(st);
                    match conflict_key {
                        Some(k) if k == key => {
                            // Another writer holds this address; it stays marked here.
                            if preferred.is_some() {
                                return Err(IpamError::AddressInUse {
                                    field: field.to_string(),
                                    address: ip.to_string(),
                                    subnet: subnet.to_string(),
                                    by: None,
                                });
                            }
                            continue;
                        }
                        Some(_) => {
                            pool_races += 1;
                            if pool_races >= MAX_ATTEMPTS {
                                return Err(IpamError::Contention {
                                    op: "request address",
                                    attempts: pool_races,
                                });
                            }
                            continue;
                        }
                        None => return Err(e.into()),
                    }
                }
            }
        }
    }

    /// Allocates `count` next free addresses of a pool, all or nothing, in as few store
    /// transactions as the store's limit allows ([`BATCH_ADDRESSES`] addresses each; a failure
    /// after the first transaction releases what earlier ones took).
    pub async fn request_addresses(
        &self,
        pool_id_text: &str,
        count: usize,
    ) -> Result<Vec<AddressResponse>> {
        let (space, subnet) = parse_pool_id(pool_id_text)?;
        let mut out: Vec<AddressResponse> = Vec::with_capacity(count);
        let mut reloaded = false;
        let mut races = 0;
        while out.len() < count {
            let want = (count - out.len()).min(BATCH_ADDRESSES);
            let picked = {
                let mut st = lock(&self.state);
                match st
                    .spaces
                    .get_mut(space)
                    .and_then(|s| s.pools.get_mut(&subnet))
                {
                    None => None,
                    Some(pool) => {
                        let mut ips = Vec::with_capacity(want);
                        let mut failed = None;
                        for _ in 0..want {
                            match pool.alloc.allocate_next() {
                                Ok(ip) => ips.push(ip),
                                Err(e) => {
                                    failed = Some(e);
                                    break;
                                }
                            }
                        }
                        match failed {
                            Some(e) => {
                                for ip in &ips {
                                    let _ = pool.alloc.release(*ip);
                                }
                                Some(Err(e))
                            }
                            None => {
                                pool.pending.extend(ips.iter().copied());
                                Some(Ok((ips, pool.index, pool.record.generation)))
                            }
                        }
                    }
                }
            };
            let (ips, pool_index, generation) = match picked {
                None => {
                    if let Err(e) = self.load_pool(space, subnet).await {
                        self.undo_batch(pool_id_text, &out).await;
                        return Err(e);
                    }
                    continue;
                }
                Some(Err(e)) => {
                    if !reloaded && matches!(e, IpamError::PoolExhausted { .. }) {
                        reloaded = true;
                        if self.load_pool(space, subnet).await.is_ok() {
                            continue;
                        }
                    }
                    self.undo_batch(pool_id_text, &out).await;
                    return Err(e);
                }
                Some(Ok(v)) => v,
            };
            let pool_key = self.pool_key(space, &subnet);
            let mut txn = Txn::new().compare_index(pool_key.clone(), pool_index);
            let keys: Vec<String> = ips
                .iter()
                .map(|ip| self.addr_key(space, &subnet, generation, *ip))
                .collect();
            for k in &keys {
                txn = txn.compare_absent(k.clone()).put(k.clone(), Vec::new());
            }
            let result = self.commit(txn).await;
            let conflict = match &result {
                Err(e) => is_conflict(e).map(str::to_string),
                Ok(_) => None,
            };
            {
                let mut st = lock(&self.state);
                let mut forget = false;
                if let Some(pool) = st
                    .spaces
                    .get_mut(space)
                    .and_then(|s| s.pools.get_mut(&subnet))
                    .filter(|p| p.record.generation == generation)
                {
                    for (ip, k) in ips.iter().zip(&keys) {
                        pool.pending.remove(ip);
                        if result.is_err() && conflict.as_deref() != Some(k.as_str()) {
                            let _ = pool.alloc.release(*ip);
                        }
                    }
                    forget = conflict.as_deref() == Some(pool_key.as_str());
                }
                if forget {
                    if let Some(sp) = st.spaces.get_mut(space) {
                        sp.pools.remove(&subnet);
                        sp.version = None;
                    }
                }
            }
            match result {
                Ok(_) => {
                    for ip in ips {
                        let address = IpNet::new(ip, subnet.prefix_len()).map_err(|e| {
                            IpamError::InvalidCidr {
                                field: "subnet",
                                value: subnet.to_string(),
                                reason: e.to_string(),
                            }
                        })?;
                        out.push(AddressResponse {
                            address,
                            data: BTreeMap::new(),
                        });
                    }
                }
                Err(e) if conflict.is_some() => {
                    races += 1;
                    if races >= MAX_ATTEMPTS * 16 {
                        self.undo_batch(pool_id_text, &out).await;
                        return Err(IpamError::Contention {
                            op: "request addresses",
                            attempts: races,
                        });
                    }
                    debug!(error = %e, "batch lost a race; retrying");
                }
                Err(e) => {
                    self.undo_batch(pool_id_text, &out).await;
                    return Err(e.into());
                }
            }
        }
        Ok(out)
    }

    async fn undo_batch(&self, pool_id: &str, done: &[AddressResponse]) {
        for a in done {
            if let Err(e) = self.do_release_address(pool_id, a.address.addr()).await {
                warn!(pool_id, address = %a.address, error = %e, "could not undo a batch address");
            }
        }
    }

    /// Every write of pools and addresses goes through here: relaxed when the caller
    /// asked for it ([`IpamConfig::relaxed_writes`]).
    async fn commit(&self, txn: Txn) -> std::result::Result<Vec<KvPair>, KvError> {
        let relaxed = lock(&self.config).relaxed_writes;
        self.store.txn(Txn { relaxed, ..txn }).await
    }

    async fn do_release_address(&self, id: &str, ip: IpAddr) -> Result<()> {
        let (space, subnet) = parse_pool_id(id)?;
        let generation = {
            let st = lock(&self.state);
            st.spaces
                .get(space)
                .and_then(|s| s.pools.get(&subnet))
                .map(|p| p.record.generation)
        };
        let generation = match generation {
            Some(g) => g,
            None => {
                self.load_pool(space, subnet).await?;
                let st = lock(&self.state);
                st.spaces
                    .get(space)
                    .and_then(|s| s.pools.get(&subnet))
                    .map(|p| p.record.generation)
                    .ok_or_else(|| IpamError::PoolNotFound {
                        pool_id: id.to_string(),
                    })?
            }
        };
        let not_allocated = || IpamError::NotAllocated {
            what: "address",
            value: ip.to_string(),
            pool: Some(subnet.to_string()),
        };
        if !subnet.contains(&ip) {
            return Err(not_allocated());
        }
        let key = self.addr_key(space, &subnet, generation, ip);
        let forget = |this: &Self| {
            let mut st = lock(&this.state);
            if let Some(pool) = st
                .spaces
                .get_mut(space)
                .and_then(|s| s.pools.get_mut(&subnet))
            {
                if pool.record.generation == generation && !pool.pending.contains(&ip) {
                    let _ = pool.alloc.release(ip);
                }
            }
        };
        for _ in 0..MAX_ATTEMPTS {
            let Some(pair) = self.get_opt(&key).await? else {
                forget(self);
                return Err(not_allocated());
            };
            let txn = Txn::new()
                .compare_index(key.clone(), pair.last_index)
                .delete(key.clone());
            match self.commit(txn).await.map(drop) {
                Ok(()) => {
                    forget(self);
                    debug!(pool = id, %ip, "address released");
                    return Ok(());
                }
                // Changed or gone meanwhile: the next round reads it again.
                Err(e) if is_conflict(&e).is_some() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention {
            op: "release address",
            attempts: MAX_ATTEMPTS,
        })
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
