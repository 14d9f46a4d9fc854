//! The controller: the one place that turns user requests into IPAM allocations, driver calls
//! and store records, and undoes what it did when a later step fails.
//!
//! Each operation runs its steps in an order chosen so that a failure at any step can be undone
//! by reversing the earlier ones, and ends in a single store transaction: the records change all
//! at once or not at all. A crash between the driver's work and that transaction leaves kernel
//! objects or allocations the store does not mention; start-up reconciliation (which compares
//! the kernel and IPAM with the store) removes them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use plexus_ipam::{
    AddressRequest, GatewayRequest, Ipam, PoolRequest, PoolResponse, GLOBAL_SPACE, LOCAL_SPACE,
};
use plexus_kv::{KvError, Store, Txn};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::driver::{
    Driver, DriverError, DriverRegistry, EndpointInfo, InterfaceName, NetworkInfo,
};
use crate::error::{CnmError, Result};
use crate::model::{
    Endpoint, EndpointSpec, IpamPool, IpamPoolSpec, Network, NetworkSpec, Sandbox, Scope,
    DEFAULT_BRIDGE_NETWORK, DEFAULT_BRIDGE_OPTION, PREDEFINED_NETWORKS,
};
use crate::store_layout as keys;

/// Settings of a controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The driver used when a network names none (`bridge`).
    pub default_driver: String,
    /// The prefix of interface names inside sandboxes (`eth`).
    pub interface_prefix: String,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            default_driver: "bridge".into(),
            interface_prefix: "eth".into(),
        }
    }
}

/// The bridge driver's option naming the kernel bridge (Docker's).
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// What plexusd asks of Docker's default network at start: see
/// [`Controller::create_default_bridge`].
#[derive(Debug, Clone, Default)]
pub struct DefaultBridge {
    /// The kernel name of its bridge (`--bridge`; `plexus0` by default).
    pub bridge_name: String,
    /// `--bip`: the gateway address with its subnet's prefix (`172.17.0.1/16`); `None` picks
    /// a subnet.
    pub bip: Option<IpNet>,
    /// Subnets a picked subnet must not overlap: the host's routes.
    pub avoid: Vec<IpNet>,
    /// `--fixed-cidr`: the part of the IPv4 subnet sandboxes get addresses from.
    pub fixed_cidr: Option<IpNet>,
    /// `--ipv6`: sandboxes get an IPv6 address too.
    pub ipv6: bool,
    /// `--fixed-cidr-v6`: the IPv6 subnet (with `ipv6`); `None` takes one from the IPv6
    /// default pools (a ULA /64).
    pub fixed_cidr_v6: Option<IpNet>,
}

impl DefaultBridge {
    /// What an existing default bridge network has that these flags would not give it, one
    /// `--flag: has …, wants …` each: `--bridge`, `--bip` (when given), `--fixed-cidr`,
    /// `--ipv6` and `--fixed-cidr-v6` (when given). Empty when it matches.
    pub fn differences(&self, existing: &Network) -> Vec<String> {
        let mut out = Vec::new();
        let mut differ = |flag: &str, has: String, wants: String| {
            if has != wants {
                out.push(format!("--{flag}: has {has}, wants {wants}"));
            }
        };
        let shown = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        let v4 = existing.ipv4.first();
        differ(
            "bridge",
            shown(existing.spec.options.get(BRIDGE_NAME_OPTION).cloned()),
            self.bridge_name.clone(),
        );
        if let Some(bip) = self.bip {
            differ(
                "bip",
                shown(v4.and_then(|p| p.gateway).map(|g| g.to_string())),
                bip.to_string(),
            );
        }
        differ(
            "fixed-cidr",
            shown(v4.and_then(|p| p.ip_range.clone())),
            shown(self.fixed_cidr.map(|r| r.to_string())),
        );
        differ(
            "ipv6",
            existing.spec.enable_ipv6.to_string(),
            self.ipv6.to_string(),
        );
        if let Some(v6) = self.fixed_cidr_v6 {
            differ(
                "fixed-cidr-v6",
                shown(existing.ipv6.first().map(|p| p.subnet.to_string())),
                v6.trunc().to_string(),
            );
        }
        out
    }

    /// Checks what can be checked before any subnet is picked: `bip` an IPv4 host address
    /// with its subnet's prefix, `fixed_cidr` IPv4, `fixed_cidr_v6` IPv6 and only with
    /// `ipv6`. The error names the field (the flag without its dashes); its reason does not
    /// repeat the value, which the caller has. plexusd checks its flags with this before it
    /// starts anything; [`Controller::create_default_bridge`] checks again.
    pub fn check(&self) -> Result<()> {
        if let Some(bip) = self.bip {
            if !matches!(bip, IpNet::V4(_))
                || bip.addr() == bip.network()
                || bip.prefix_len() >= bip.max_prefix_len() - 1
            {
                return Err(CnmError::invalid(
                    "bip",
                    "not an IPv4 host address with its subnet's prefix (such as 172.17.0.1/16)",
                ));
            }
        }
        if self.fixed_cidr.is_some_and(|r| !matches!(r, IpNet::V4(_))) {
            return Err(CnmError::invalid("fixed-cidr", "not an IPv4 range"));
        }
        match self.fixed_cidr_v6 {
            Some(IpNet::V4(_)) => Err(CnmError::invalid("fixed-cidr-v6", "not an IPv6 subnet")),
            Some(_) if !self.ipv6 => Err(CnmError::invalid("fixed-cidr-v6", "needs --ipv6")),
            _ => Ok(()),
        }
    }
}

/// The Container Network Model's controller.
pub struct Controller {
    store: Arc<dyn Store>,
    ipam: Arc<dyn Ipam>,
    drivers: DriverRegistry,
    config: ControllerConfig,
    /// Mutating operations of one controller run one at a time; the store's transactions
    /// guard against other controllers sharing the store.
    ops: Mutex<()>,
}

fn driver_err(driver: &dyn Driver, e: DriverError) -> CnmError {
    match e {
        DriverError::Invalid(m) => CnmError::Invalid {
            field: format!("{} driver option", driver.name()),
            reason: m,
        },
        DriverError::Conflict(message) => CnmError::Conflict {
            driver: driver.name().to_string(),
            message,
        },
        other => CnmError::Driver {
            driver: driver.name().to_string(),
            message: other.to_string(),
        },
    }
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 255 bytes.
pub fn check_name(kind: &'static str, name: &str) -> Result<()> {
    let field = format!("{kind} name");
    let mut chars = name.chars();
    match chars.next() {
        None => return Err(CnmError::invalid(field, "must not be empty")),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(CnmError::invalid(
                field,
                format!("{name:?} must start with a letter or digit"),
            ))
        }
        _ => {}
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c))) {
        return Err(CnmError::invalid(
            field,
            format!("{name:?} contains {bad:?}; only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
        ));
    }
    if name.len() > 255 {
        return Err(CnmError::invalid(field, "is longer than 255 bytes"));
    }
    Ok(())
}

/// A fresh 64-hex-digit id, like Docker's.
fn new_id() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| CnmError::invalid("id", format!("cannot read /dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Now, as RFC 3339 UTC.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain records cannot fail (no maps with non-string keys).
    serde_json::to_vec(value).unwrap_or_default()
}

impl Controller {
    /// A controller over `store`, allocating from `ipam`, with `drivers`.
    pub fn new(
        store: Arc<dyn Store>,
        ipam: Arc<dyn Ipam>,
        drivers: DriverRegistry,
        config: ControllerConfig,
    ) -> Self {
        Self {
            store,
            ipam,
            drivers,
            config,
            ops: Mutex::new(()),
        }
    }

    async fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>> {
        match self.store.get(key).await {
            Ok(pair) => serde_json::from_slice(&pair.value)
                .map(|v| Some((v, pair.last_index)))
                .map_err(|e| CnmError::Corrupt {
                    key: key.to_string(),
                    reason: e.to_string(),
                }),
            Err(KvError::KeyNotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn load_all<T: DeserializeOwned>(&self, dir: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for pair in self.store.list(dir).await? {
            out.push(
                serde_json::from_slice(&pair.value).map_err(|e| CnmError::Corrupt {
                    key: pair.key.clone(),
                    reason: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }

    fn driver(&self, name: &str) -> Result<Arc<dyn Driver>> {
        self.drivers.get(name).ok_or_else(|| CnmError::Invalid {
            field: "driver".into(),
            reason: format!(
                "unknown driver {name:?}; known drivers: {}",
                self.drivers.names().join(", ")
            ),
        })
    }

    // ---- networks ----

    /// Every network, sorted by name.
    pub async fn networks(&self) -> Result<Vec<Network>> {
        let mut all: Vec<Network> = self.load_all(keys::NETWORKS).await?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The network with this id, name, or unique id prefix (Docker's lookup order).
    pub async fn network(&self, name_or_id: &str) -> Result<Network> {
        let not_found = || CnmError::NotFound {
            kind: "network",
            name: name_or_id.to_string(),
        };
        if name_or_id.is_empty() {
            return Err(not_found());
        }
        if name_or_id.len() == 64 {
            if let Some((n, _)) = self.load::<Network>(&keys::network(name_or_id)).await? {
                return Ok(n);
            }
        }
        if check_name("network", name_or_id).is_ok() {
            if let Some((id, _)) = self.load::<String>(&keys::network_name(name_or_id)).await? {
                if let Some((n, _)) = self.load::<Network>(&keys::network(&id)).await? {
                    return Ok(n);
                }
            }
        }
        let matches: Vec<Network> = self
            .networks()
            .await?
            .into_iter()
            .filter(|n| n.id.starts_with(name_or_id))
            .collect();
        match matches.len() {
            1 => Ok(matches.into_iter().next().ok_or_else(not_found)?),
            0 => Err(not_found()),
            _ => Err(CnmError::invalid(
                "network",
                format!(
                    "{name_or_id:?} matches {} networks by id prefix",
                    matches.len()
                ),
            )),
        }
    }

    async fn request_pools(
        &self,
        space: &str,
        owner: &str,
        specs: &[IpamPoolSpec],
        v6: bool,
        options: &BTreeMap<String, String>,
        done: &mut Vec<String>,
    ) -> Result<Vec<IpamPool>> {
        let default = [IpamPoolSpec::default()];
        let specs = if specs.is_empty() {
            &default[..]
        } else {
            specs
        };
        let mut pools = Vec::new();
        for spec in specs {
            let mut request = PoolRequest::new(space, owner);
            if let Some(s) = &spec.subnet {
                request = request.subnet(s);
            }
            if let Some(r) = &spec.ip_range {
                request = request.ip_range(r);
            }
            request.gateway = match &spec.gateway {
                Some(g) => GatewayRequest::Given(g.clone()),
                None => GatewayRequest::Auto,
            };
            for (name, ip) in &spec.aux_addresses {
                request = request.aux(name, ip);
            }
            for (k, v) in options {
                request = request.option(k, v);
            }
            if v6 {
                request = request.v6();
            }
            let PoolResponse {
                pool_id,
                pool,
                gateway,
                aux_addresses,
                ..
            } = self.ipam.request_pool(request).await?;
            done.push(pool_id.clone());
            pools.push(IpamPool {
                pool_id,
                subnet: pool,
                ip_range: spec.ip_range.clone(),
                gateway,
                aux_addresses,
            });
        }
        Ok(pools)
    }

    async fn release_pools(&self, pool_ids: &[String]) {
        for id in pool_ids.iter().rev() {
            if let Err(e) = self.ipam.release_pool(id).await {
                tracing::warn!(pool = %id, error = %e, "cannot release pool while undoing");
            }
        }
    }

    /// Creates a network: checks the request, allocates its pools, has the driver make it,
    /// and records it, undoing everything if a step fails.
    pub async fn create_network(&self, mut spec: NetworkSpec) -> Result<Network> {
        let _op = self.ops.lock().await;
        check_name("network", &spec.name)?;
        if spec.driver.is_empty() {
            spec.driver = self.config.default_driver.clone();
        }
        let driver = self.driver(&spec.driver)?;
        driver
            .validate_options(&spec.options)
            .map_err(|e| driver_err(driver.as_ref(), e))?;
        if spec.ipv4.len() > 1 || spec.ipv6.len() > 1 {
            return Err(CnmError::invalid(
                "subnet",
                "at most one IPv4 and one IPv6 subnet per network",
            ));
        }
        if !spec.ipv6.is_empty() && !spec.enable_ipv6 {
            return Err(CnmError::invalid(
                "subnet",
                "an IPv6 subnet needs --ipv6 (EnableIPv6)",
            ));
        }
        if self
            .load::<String>(&keys::network_name(&spec.name))
            .await?
            .is_some()
        {
            return Err(CnmError::Exists {
                kind: "network",
                name: spec.name,
            });
        }
        let capability = driver.capability();
        if !capability.multiple_networks
            && self
                .networks()
                .await?
                .iter()
                .any(|n| n.driver == spec.driver)
        {
            return Err(CnmError::invalid(
                "driver",
                format!("only one instance of {:?} network is allowed", spec.driver),
            ));
        }
        let id = new_id()?;
        let space = match capability.scope {
            Scope::Local => LOCAL_SPACE,
            Scope::Global => GLOBAL_SPACE,
        };
        let mut pool_ids = Vec::new();
        let (ipv4, ipv6) = if capability.needs_ipam {
            let owner = spec.name.clone();
            let v4 = self
                .request_pools(
                    space,
                    &owner,
                    &spec.ipv4,
                    false,
                    &spec.ipam_options,
                    &mut pool_ids,
                )
                .await;
            let v4 = match v4 {
                Ok(p) => p,
                Err(e) => {
                    self.release_pools(&pool_ids).await;
                    return Err(e);
                }
            };
            let v6 = if spec.enable_ipv6 {
                match self
                    .request_pools(
                        space,
                        &owner,
                        &spec.ipv6,
                        true,
                        &spec.ipam_options,
                        &mut pool_ids,
                    )
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        self.release_pools(&pool_ids).await;
                        return Err(e);
                    }
                }
            } else {
                Vec::new()
            };
            (v4, v6)
        } else {
            (Vec::new(), Vec::new())
        };
        let network = Network {
            id: id.clone(),
            name: spec.name.clone(),
            driver: spec.driver.clone(),
            scope: capability.scope,
            ipv4,
            ipv6,
            created: now_rfc3339(),
            spec,
        };
        let info = NetworkInfo {
            id: id.clone(),
            name: network.name.clone(),
            options: network.spec.options.clone(),
            ipv4: network.ipv4.clone(),
            ipv6: network.ipv6.clone(),
            internal: network.spec.internal,
            enable_ipv6: network.spec.enable_ipv6,
        };
        if let Err(e) = driver.create_network(&info).await {
            self.release_pools(&pool_ids).await;
            return Err(driver_err(driver.as_ref(), e));
        }
        let txn = Txn::new()
            .compare_absent(keys::network_name(&network.name))
            .put(keys::network(&id), encode(&network))
            .put(keys::network_name(&network.name), encode(&id));
        if let Err(e) = self.store.txn(txn).await {
            let _ = driver.delete_network(&id).await;
            self.release_pools(&pool_ids).await;
            return Err(match e {
                KvError::TxnConflict { .. } => CnmError::Exists {
                    kind: "network",
                    name: network.name,
                },
                other => other.into(),
            });
        }
        tracing::info!(network = %network.name, id = %id, driver = %network.driver, "network created");
        Ok(network)
    }

    /// The endpoints of `sandbox`, each with its network, in the sandbox's order. Reads only
    /// those endpoints (not every endpoint of every network), so its cost does not grow with
    /// the number of other sandboxes.
    pub async fn sandbox_endpoints(&self, sandbox: &Sandbox) -> Result<Vec<(Endpoint, Network)>> {
        if sandbox.endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let networks = self.networks().await?;
        let mut out = Vec::with_capacity(sandbox.endpoints.len());
        for id in &sandbox.endpoints {
            for network in &networks {
                if let Some((ep, _)) = self
                    .load::<Endpoint>(&keys::endpoint(&network.id, id))
                    .await?
                {
                    out.push((ep, network.clone()));
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Endpoints on a network.
    pub async fn endpoints(&self, network_id: &str) -> Result<Vec<Endpoint>> {
        self.load_all(&keys::endpoints_of(network_id)).await
    }

    /// Deletes a network that has no endpoints.
    pub async fn delete_network(&self, name_or_id: &str) -> Result<()> {
        let _op = self.ops.lock().await;
        let network = self.network(name_or_id).await?;
        self.delete_network_locked(&network).await
    }

    async fn delete_network_locked(&self, network: &Network) -> Result<()> {
        if network.is_predefined() {
            return Err(CnmError::Predefined {
                name: network.name.clone(),
            });
        }
        self.remove_network_locked(network).await
    }

    /// Removes a network that has no endpoints, pre-defined or not (the caller decides).
    async fn remove_network_locked(&self, network: &Network) -> Result<()> {
        let endpoints = self.endpoints(&network.id).await?;
        if !endpoints.is_empty() {
            let mut by = Vec::new();
            for ep in &endpoints {
                let sandbox = self
                    .load::<Sandbox>(&keys::sandbox(&ep.sandbox_id))
                    .await?
                    .map(|(s, _)| s.name)
                    .unwrap_or_else(|| ep.sandbox_id.clone());
                by.push(format!("sandbox {sandbox}"));
            }
            return Err(CnmError::InUse {
                what: format!("network {}", network.name),
                by: by.join(", "),
            });
        }
        let driver = self.driver(&network.driver)?;
        // Records first: once they are gone nobody can attach; then the data plane; then the
        // pools. A crash in between leaves only what reconciliation removes.
        let (_, index) = self
            .load::<Network>(&keys::network(&network.id))
            .await?
            .ok_or_else(|| CnmError::NotFound {
                kind: "network",
                name: network.name.clone(),
            })?;
        self.store
            .txn(
                Txn::new()
                    .compare_index(keys::network(&network.id), index)
                    .delete(keys::network(&network.id))
                    .delete(keys::network_name(&network.name)),
            )
            .await?;
        if let Err(e) = driver.delete_network(&network.id).await {
            tracing::warn!(network = %network.name, error = %e, "driver could not delete the network; reconciliation will");
        }
        let pool_ids: Vec<String> = network
            .ipv4
            .iter()
            .chain(&network.ipv6)
            .map(|p| p.pool_id.clone())
            .collect();
        self.release_pools(&pool_ids).await;
        tracing::info!(network = %network.name, "network deleted");
        Ok(())
    }

    /// Makes the [`PREDEFINED_NETWORKS`] that are missing, as Docker's daemon does at start;
    /// returns the names it made. One is skipped (with a warning) when its driver is not
    /// registered, when its name is taken by a network of another driver, or when its
    /// driver, which allows one network only, already has one under another name.
    pub async fn create_predefined_networks(&self) -> Result<Vec<String>> {
        let mut made = Vec::new();
        let networks = self.networks().await?;
        for (name, driver) in PREDEFINED_NETWORKS {
            if self.driver(driver).is_err() {
                tracing::warn!(
                    network = name,
                    driver,
                    "driver not registered: no pre-defined network"
                );
                continue;
            }
            if let Some(other) = networks
                .iter()
                .find(|n| n.name == name || n.driver == driver)
            {
                if !other.is_predefined() {
                    tracing::warn!(network = name, driver, taken_by = %other.name, "pre-defined network not made: its name or its driver's one network is taken");
                }
                continue;
            }
            let spec = NetworkSpec {
                name: name.to_string(),
                driver: driver.to_string(),
                ..Default::default()
            };
            self.create_network(spec).await?;
            made.push(name.to_string());
        }
        Ok(made)
    }

    /// Makes Docker's default network, [`DEFAULT_BRIDGE_NETWORK`] (`bridge`, driver `bridge`),
    /// unless it exists; returns it when it was made now.
    ///
    /// Its subnet is `default.bip`'s when given (`--bip`: the gateway address with the
    /// subnet's prefix), else the first subnet of the default address pools that overlaps
    /// none of `default.avoid` (the host's routes, as dockerd checks for `docker0`). An
    /// existing `bridge` network that [differs](DefaultBridge::differences) from `default`
    /// is remade from it when no sandbox is on it, as dockerd remakes its default network at
    /// every start (keeping its subnet unless `--bip` gives one); with sandboxes it is kept
    /// as it is, and a warning names what differs.
    pub async fn create_default_bridge(&self, default: &DefaultBridge) -> Result<Option<Network>> {
        default.check()?;
        let existing = match self.network(DEFAULT_BRIDGE_NETWORK).await {
            Ok(n) => Some(n),
            Err(CnmError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        // Without --bip, a remade network keeps the subnet and gateway it had (dockerd
        // takes docker0's address likewise): `--bip`, if given, comes first below.
        let mut keep_bip = None;
        let mut remake = None;
        if let Some(existing) = existing {
            if !existing.is_predefined() {
                tracing::warn!(id = %existing.id, "default bridge network not made: a network the user made has the name bridge");
                return Ok(None);
            }
            let changed = default.differences(&existing);
            if changed.is_empty() {
                return Ok(None);
            }
            let changed = changed.join("; ");
            let sandboxes = self.endpoints(&existing.id).await?.len();
            if sandboxes > 0 {
                tracing::warn!(%changed, sandboxes, "the default bridge network differs from the flags but has sandboxes: kept as it is (remove them and restart to apply the flags)");
                return Ok(None);
            }
            keep_bip = existing.ipv4.first().and_then(|p| p.gateway);
            tracing::info!(%changed, "remaking the default bridge network from the flags");
            remake = Some(existing);
        }
        if self.driver("bridge").is_err() {
            tracing::warn!("bridge driver not registered: no default bridge network");
            return Ok(None);
        }
        let (subnet, gateway) = match default.bip.or(keep_bip) {
            Some(bip) => (bip.trunc(), Some(bip.addr())),
            None => match self.free_default_subnet(&default.avoid).await? {
                Some(subnet) => (subnet, None),
                None => {
                    tracing::warn!(avoid = ?default.avoid, "no default address pool subnet is free of the host's routes: no default bridge network (give one with --bip)");
                    return Ok(None);
                }
            },
        };
        if let Some(range) = default.fixed_cidr.filter(|r| !subnet.contains(r)) {
            return Err(CnmError::invalid(
                "fixed-cidr",
                format!("{range}: must be inside the default bridge's subnet {subnet}"),
            ));
        }
        let pool = IpamPoolSpec {
            subnet: Some(subnet.to_string()),
            gateway: gateway.map(|g| g.to_string()),
            ip_range: default.fixed_cidr.map(|r| r.to_string()),
            ..Default::default()
        };
        let ipv6: Vec<IpamPoolSpec> = default
            .fixed_cidr_v6
            .map(|v6| IpamPoolSpec {
                subnet: Some(v6.trunc().to_string()),
                ..Default::default()
            })
            .into_iter()
            .collect();
        let options = [
            (DEFAULT_BRIDGE_OPTION, "true"),
            (BRIDGE_NAME_OPTION, default.bridge_name.as_str()),
            ("com.docker.network.bridge.enable_icc", "true"),
            ("com.docker.network.bridge.enable_ip_masquerade", "true"),
            ("com.docker.network.bridge.host_binding_ipv4", "0.0.0.0"),
        ];
        let spec = NetworkSpec {
            name: DEFAULT_BRIDGE_NETWORK.to_string(),
            driver: "bridge".to_string(),
            ipv4: vec![pool],
            ipv6,
            enable_ipv6: default.ipv6,
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        if let Some(old) = remake {
            // Only now, once the flags are known to fit it.
            let _op = self.ops.lock().await;
            self.remove_network_locked(&old).await?;
        }
        let network = self.create_network(spec).await.map_err(|e| match e {
            // Name the daemon's flags, which is what the user gave.
            // The IPAM's message names the subnet it refused.
            CnmError::Ipam(e)
                if default
                    .fixed_cidr_v6
                    .is_some_and(|v6| e.to_string().contains(&v6.trunc().to_string())) =>
            {
                CnmError::invalid("fixed-cidr-v6", e.to_string())
            }
            CnmError::Ipam(e) if default.bip.is_some() => CnmError::invalid("bip", e.to_string()),
            CnmError::Conflict { message, .. } => CnmError::invalid("bridge", message),
            e => e,
        })?;
        Ok(Some(network))
    }

    /// The first subnet the IPAM would hand a network without `--subnet` that overlaps none
    /// of `avoid`. Asks the IPAM for pools until one fits, holding the misfits meanwhile so
    /// it moves on, then gives them all back.
    async fn free_default_subnet(&self, avoid: &[IpNet]) -> Result<Option<IpNet>> {
        /// How many default-pool subnets to try before giving up.
        const TRIES: usize = 256;
        let overlaps = |a: &IpNet, b: &IpNet| a.contains(&b.network()) || b.contains(&a.network());
        let mut held = Vec::new();
        let mut found = None;
        for _ in 0..TRIES {
            let request = PoolRequest::new(LOCAL_SPACE, DEFAULT_BRIDGE_NETWORK);
            let pool = match self.ipam.request_pool(request).await {
                Ok(pool) => pool,
                // The default pools are used up.
                Err(plexus_ipam::IpamError::DefaultPoolsExhausted { .. }) => break,
                Err(e) => {
                    self.release_pools(&held).await;
                    return Err(e.into());
                }
            };
            held.push(pool.pool_id.clone());
            if !avoid.iter().any(|r| overlaps(r, &pool.pool)) {
                found = Some(pool.pool);
                break;
            }
        }
        self.release_pools(&held).await;
        Ok(found)
    }

    /// Deletes every network without endpoints, except the pre-defined ones; returns their
    /// names.
    pub async fn prune_networks(&self) -> Result<Vec<String>> {
        let _op = self.ops.lock().await;
        let mut pruned = Vec::new();
        for network in self.networks().await? {
            if !network.is_predefined() && self.endpoints(&network.id).await?.is_empty() {
                self.delete_network_locked(&network).await?;
                pruned.push(network.name);
            }
        }
        Ok(pruned)
    }

    // ---- sandboxes ----

    /// Every sandbox, sorted by name.
    pub async fn sandboxes(&self) -> Result<Vec<Sandbox>> {
        let mut all: Vec<Sandbox> = self.load_all(keys::SANDBOXES).await?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The sandbox with this id or name.
    pub async fn sandbox(&self, name_or_id: &str) -> Result<Sandbox> {
        Ok(self.sandbox_indexed(name_or_id).await?.0)
    }

    async fn sandbox_indexed(&self, name_or_id: &str) -> Result<(Sandbox, u64)> {
        if name_or_id.len() == 64 {
            if let Some(found) = self.load::<Sandbox>(&keys::sandbox(name_or_id)).await? {
                return Ok(found);
            }
        }
        if check_name("sandbox", name_or_id).is_ok() {
            if let Some((id, _)) = self.load::<String>(&keys::sandbox_name(name_or_id)).await? {
                if let Some(found) = self.load::<Sandbox>(&keys::sandbox(&id)).await? {
                    return Ok(found);
                }
            }
        }
        Err(CnmError::NotFound {
            kind: "sandbox",
            name: name_or_id.to_string(),
        })
    }

    /// Records a sandbox whose namespace is at `key`. `owned` says whether Plexus made the
    /// namespace (and will delete it).
    pub async fn create_sandbox(&self, name: &str, key: &str, owned: bool) -> Result<Sandbox> {
        self.create_sandbox_then(name, key, owned, false).await
    }

    /// [`create_sandbox`](Self::create_sandbox) for a caller that connects the sandbox right
    /// after (`connects`): the record is then written relaxed ([`Txn::relaxed`]) and made
    /// durable by the connect's own record, one disk flush fewer. A crash in between loses
    /// the sandbox whole (start-up reconciliation removes a namespace Plexus made for it);
    /// a caller whose connect fails deletes the sandbox, as it would anyway.
    pub async fn create_sandbox_then(
        &self,
        name: &str,
        key: &str,
        owned: bool,
        connects: bool,
    ) -> Result<Sandbox> {
        let _op = self.ops.lock().await;
        check_name("sandbox", name)?;
        if key.is_empty() {
            return Err(CnmError::invalid(
                "netns",
                "the namespace path must not be empty",
            ));
        }
        let sandbox = Sandbox {
            id: new_id()?,
            name: name.to_string(),
            key: key.to_string(),
            owned_netns: owned,
            endpoints: Vec::new(),
        };
        let mut txn = Txn::new()
            .compare_absent(keys::sandbox_name(name))
            .put(keys::sandbox(&sandbox.id), encode(&sandbox))
            .put(keys::sandbox_name(name), encode(&sandbox.id));
        txn.relaxed = connects;
        match self.store.txn(txn).await {
            Ok(_) => Ok(sandbox),
            Err(KvError::TxnConflict { .. }) => Err(CnmError::Exists {
                kind: "sandbox",
                name: name.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Disconnects a sandbox from every network and forgets it; returns it so the caller can
    /// delete the namespace if it was Plexus's.
    pub async fn delete_sandbox(&self, name_or_id: &str) -> Result<Sandbox> {
        let _op = self.ops.lock().await;
        let (sandbox, _) = self.sandbox_indexed(name_or_id).await?;
        for ep_id in sandbox.endpoints.clone().iter().rev() {
            let endpoint = self.find_endpoint(ep_id).await?;
            if let Some(endpoint) = endpoint {
                // The sandbox's own removal below is durable and comes after.
                self.disconnect_locked(&sandbox.id, &endpoint, true).await?;
            }
        }
        let (_, index) = self.sandbox_indexed(&sandbox.id).await?;
        self.store
            .txn(
                Txn::new()
                    .compare_index(keys::sandbox(&sandbox.id), index)
                    .delete(keys::sandbox(&sandbox.id))
                    .delete(keys::sandbox_name(&sandbox.name)),
            )
            .await?;
        Ok(sandbox)
    }

    /// The sandbox's endpoint on a network, read through the sandbox's own endpoint list so
    /// the cost does not grow with the number of endpoints on the network.
    async fn endpoint_of(&self, sandbox: &Sandbox, network_id: &str) -> Result<Option<Endpoint>> {
        for id in &sandbox.endpoints {
            if let Some((ep, _)) = self
                .load::<Endpoint>(&keys::endpoint(network_id, id))
                .await?
            {
                return Ok(Some(ep));
            }
        }
        Ok(None)
    }

    async fn find_endpoint(&self, endpoint_id: &str) -> Result<Option<Endpoint>> {
        for network in self.networks().await? {
            if let Some((ep, _)) = self
                .load::<Endpoint>(&keys::endpoint(&network.id, endpoint_id))
                .await?
            {
                return Ok(Some(ep));
            }
        }
        Ok(None)
    }

    // ---- endpoints ----

    /// Connects a sandbox to a network: allocates its addresses, has the driver make the
    /// endpoint and put it into the sandbox, and records it — or undoes all of it.
    pub async fn connect(
        &self,
        sandbox: &str,
        network: &str,
        spec: EndpointSpec,
    ) -> Result<Endpoint> {
        let _op = self.ops.lock().await;
        let (sandbox, _) = self.sandbox_indexed(sandbox).await?;
        let network = self.network(network).await?;
        let driver = self.driver(&network.driver)?;
        for alias in &spec.aliases {
            check_name("alias", alias)?;
        }
        // One read of the sandbox's endpoints serves both this check and the interface name
        // the join tries first.
        let current = self.sandbox_endpoints(&sandbox).await?;
        if current.iter().any(|(ep, _)| ep.network_id == network.id) {
            return Err(CnmError::Exists {
                kind: "endpoint",
                name: format!("{} on network {}", sandbox.name, network.name),
            });
        }
        if spec.ipv4.is_some() && network.spec.ipv4.iter().all(|p| p.subnet.is_none()) {
            // Docker: a user-chosen address needs a user-chosen subnet.
            return Err(CnmError::invalid(
                "ip",
                "user specified IP address is supported only when connecting to networks with user configured subnets",
            ));
        }
        if spec.ipv6.is_some() && !network.spec.enable_ipv6 {
            return Err(CnmError::invalid(
                "ip6",
                "the network does not have IPv6 enabled",
            ));
        }

        let mut allocated: Vec<(String, IpAddr)> = Vec::new();
        let result = self
            .connect_steps(
                &sandbox,
                &network,
                driver.as_ref(),
                spec,
                &current,
                &mut allocated,
            )
            .await;
        if result.is_err() {
            for (pool, addr) in allocated.iter().rev() {
                if let Err(e) = self.ipam.release_address(pool, *addr).await {
                    tracing::warn!(%addr, error = %e, "cannot release address while undoing");
                }
            }
        }
        result
    }

    async fn allocate(
        &self,
        pools: &[IpamPool],
        preferred: Option<&String>,
        mac: Option<&String>,
        allocated: &mut Vec<(String, IpAddr)>,
    ) -> Result<Option<(String, IpNet)>> {
        let Some(pool) = pools.first() else {
            return Ok(None);
        };
        let mut request = match preferred {
            Some(ip) => AddressRequest::preferred(&pool.pool_id, ip),
            None => AddressRequest::next(&pool.pool_id),
        };
        request.mac_address = mac.cloned();
        let response = self.ipam.request_address(request).await?;
        allocated.push((pool.pool_id.clone(), response.address.addr()));
        Ok(Some((pool.pool_id.clone(), response.address)))
    }

    async fn connect_steps(
        &self,
        sandbox: &Sandbox,
        network: &Network,
        driver: &dyn Driver,
        spec: EndpointSpec,
        current: &[(Endpoint, Network)],
        allocated: &mut Vec<(String, IpAddr)>,
    ) -> Result<Endpoint> {
        let v4 = self
            .allocate(
                &network.ipv4,
                spec.ipv4.as_ref(),
                spec.mac.as_ref(),
                allocated,
            )
            .await?;
        let v6 = self
            .allocate(
                &network.ipv6,
                spec.ipv6.as_ref(),
                spec.mac.as_ref(),
                allocated,
            )
            .await?;
        let id = new_id()?;
        let info = EndpointInfo {
            network_id: network.id.clone(),
            endpoint_id: id.clone(),
            ipv4: v4.as_ref().map(|(_, a)| *a),
            ipv6: v6.as_ref().map(|(_, a)| *a),
            mac: spec.mac.clone(),
            ports: spec.ports.clone(),
        };
        let created = driver
            .create_endpoint(&info)
            .await
            .map_err(|e| driver_err(driver, e))?;
        let prefix = network
            .spec
            .options
            .get("com.docker.network.container_iface_prefix")
            .cloned()
            .unwrap_or_else(|| self.config.interface_prefix.clone());
        let interface = InterfaceName {
            prefix: &prefix,
            first: first_free_interface(current, &prefix),
        };
        let mut endpoint = Endpoint {
            id: id.clone(),
            name: sandbox.name.clone(),
            network_id: network.id.clone(),
            sandbox_id: sandbox.id.clone(),
            ipv4: info.ipv4,
            ipv6: info.ipv6,
            pool_ids: v4.iter().chain(v6.iter()).map(|(p, _)| p.clone()).collect(),
            mac: created.mac,
            interface: Some(interface.guess()),
            aliases: spec.aliases,
            ports: created.ports,
        };
        // The record and the driver's kernel work go on at once, so the record's disk flush
        // (about a millisecond) hides behind the join. A crash can then leave a record whose
        // join never finished: start-up reconciliation finds such endpoints lost (see
        // `forget_endpoints`) and rolls them back.
        let (recorded, joined) = tokio::join!(
            self.record_endpoint(sandbox, network, &endpoint),
            driver.join(&network.id, &id, &sandbox.key, interface),
        );
        match (recorded, joined) {
            (Ok(()), Ok(joined)) => {
                // Last, the way out (published ports): start-up reconciliation rolls back an
                // endpoint whose ports a crash left unpublished, as one whose join never
                // finished.
                if let Err(e) = driver.program_external_connectivity(&network.id, &id).await {
                    self.undo_connect(driver, &sandbox.id, &endpoint, true, true)
                        .await;
                    return Err(driver_err(driver, e));
                }
                if joined.interface != endpoint.interface {
                    // The sandbox had the name already (not from Plexus): record the real one.
                    endpoint.interface = joined.interface;
                    self.rewrite_endpoint(&endpoint).await?;
                }
            }
            (Ok(()), Err(e)) => {
                self.undo_connect(driver, &sandbox.id, &endpoint, true, false)
                    .await;
                return Err(driver_err(driver, e));
            }
            (Err(e), Ok(_)) => {
                self.undo_connect(driver, &sandbox.id, &endpoint, false, true)
                    .await;
                return Err(e);
            }
            (Err(_), Err(e)) => {
                self.undo_connect(driver, &sandbox.id, &endpoint, false, false)
                    .await;
                return Err(driver_err(driver, e));
            }
        }
        tracing::info!(sandbox = %sandbox.name, network = %network.name, endpoint = %id, "connected");
        Ok(endpoint)
    }

    /// Undoes a connect cut short once its endpoint was made: the record if `recorded`, the
    /// join if `joined`, then the endpoint. What fails here start-up reconciliation removes.
    async fn undo_connect(
        &self,
        driver: &dyn Driver,
        sandbox_id: &str,
        endpoint: &Endpoint,
        recorded: bool,
        joined: bool,
    ) {
        if recorded {
            if let Err(u) = self.unrecord_endpoint(sandbox_id, endpoint, false).await {
                tracing::warn!(endpoint = %endpoint.id, error = %u, "cannot remove the record of a failed connect; start-up reconciliation will");
            }
        }
        if joined {
            let _ = driver.leave(&endpoint.network_id, &endpoint.id).await;
        }
        let _ = driver
            .delete_endpoint(&endpoint.network_id, &endpoint.id)
            .await;
    }

    /// Records `interface` as the name of `endpoint`'s interface in its sandbox: what
    /// start-up reconciliation does when the data plane marks another name than the record
    /// (a crash after a join that had to take another name than the guess written with the
    /// record, before the record was corrected).
    pub async fn set_interface(&self, endpoint: &Endpoint, interface: &str) -> Result<()> {
        let _op = self.ops.lock().await;
        let mut endpoint = endpoint.clone();
        endpoint.interface = Some(interface.to_string());
        self.rewrite_endpoint(&endpoint).await
    }

    /// Replaces an endpoint's record (same sandbox list).
    async fn rewrite_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        let key = keys::endpoint(&endpoint.network_id, &endpoint.id);
        let (_, index) = self
            .load::<Endpoint>(&key)
            .await?
            .ok_or_else(|| CnmError::NotFound {
                kind: "endpoint",
                name: endpoint.id.clone(),
            })?;
        self.store
            .txn(
                Txn::new()
                    .compare_index(key.clone(), index)
                    .put(key, encode(endpoint)),
            )
            .await?;
        Ok(())
    }

    /// Removes an endpoint's record and its place in its sandbox's list; `relaxed`: no disk
    /// flush of its own (a durable write follows).
    async fn unrecord_endpoint(
        &self,
        sandbox_id: &str,
        endpoint: &Endpoint,
        relaxed: bool,
    ) -> Result<()> {
        let (mut sandbox, index) = self.sandbox_indexed(sandbox_id).await?;
        sandbox.endpoints.retain(|e| e != &endpoint.id);
        let mut txn = Txn::new()
            .compare_index(keys::sandbox(sandbox_id), index)
            .delete(keys::endpoint(&endpoint.network_id, &endpoint.id))
            .put(keys::sandbox(sandbox_id), encode(&sandbox));
        txn.relaxed = relaxed;
        self.store.txn(txn).await?;
        Ok(())
    }

    /// Forgets endpoints whose data plane is gone without a disconnect: the driver found no
    /// finished join for them at start-up (a crash during connect or disconnect, or a sandbox
    /// namespace deleted behind Plexus's back). Only the records go (the driver deletes what
    /// is left of their data plane as unknown, IPAM reconciliation frees their addresses).
    pub async fn forget_endpoints(&self, endpoints: &[Endpoint]) -> Result<()> {
        let _op = self.ops.lock().await;
        for ep in endpoints {
            match self.unrecord_endpoint(&ep.sandbox_id, ep, false).await {
                Ok(()) => {}
                // Its sandbox is gone: only the endpoint's own record is left.
                Err(CnmError::NotFound { .. }) => {
                    self.store
                        .txn(Txn::new().delete(keys::endpoint(&ep.network_id, &ep.id)))
                        .await?;
                }
                Err(e) => return Err(e),
            }
            tracing::info!(endpoint = %ep.id, sandbox = %ep.name, network = %ep.network_id, "endpoint rolled back: its join never finished or its interface is gone");
        }
        Ok(())
    }

    async fn record_endpoint(
        &self,
        sandbox: &Sandbox,
        network: &Network,
        endpoint: &Endpoint,
    ) -> Result<()> {
        let (mut current, index) = self.sandbox_indexed(&sandbox.id).await?;
        let (_, net_index) = self
            .load::<Network>(&keys::network(&network.id))
            .await?
            .ok_or_else(|| CnmError::NotFound {
                kind: "network",
                name: network.name.clone(),
            })?;
        current.endpoints.push(endpoint.id.clone());
        self.store
            .txn(
                Txn::new()
                    .compare_index(keys::sandbox(&sandbox.id), index)
                    // The network must still exist: a concurrent delete loses or we do.
                    .compare_index(keys::network(&network.id), net_index)
                    .compare_absent(keys::endpoint(&network.id, &endpoint.id))
                    .put(keys::endpoint(&network.id, &endpoint.id), encode(endpoint))
                    .put(keys::sandbox(&sandbox.id), encode(&current)),
            )
            .await?;
        Ok(())
    }

    /// Disconnects a sandbox from a network.
    pub async fn disconnect(&self, sandbox: &str, network: &str) -> Result<()> {
        let _op = self.ops.lock().await;
        let (sandbox, _, endpoint) = self.endpoint_on(sandbox, network).await?;
        self.disconnect_locked(&sandbox.id, &endpoint, false).await
    }

    /// The endpoint of `sandbox` on `network` (names or ids), with both.
    async fn endpoint_on(
        &self,
        sandbox: &str,
        network: &str,
    ) -> Result<(Sandbox, Network, Endpoint)> {
        let (sandbox, _) = self.sandbox_indexed(sandbox).await?;
        let network = self.network(network).await?;
        let endpoint = self
            .endpoint_of(&sandbox, &network.id)
            .await?
            .ok_or_else(|| CnmError::NotFound {
                kind: "endpoint",
                name: format!("{} on network {}", sandbox.name, network.name),
            })?;
        Ok((sandbox, network, endpoint))
    }

    /// What the data plane holds for the endpoint of `sandbox` on `network`, as its driver
    /// reports it (libnetwork's `EndpointOperInfo`; the bridge driver: its MAC and published
    /// ports).
    pub async fn endpoint_oper_info(
        &self,
        sandbox: &str,
        network: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>> {
        let (_, network, endpoint) = self.endpoint_on(sandbox, network).await?;
        let driver = self.driver(&network.driver)?;
        driver
            .endpoint_oper_info(&network.id, &endpoint.id)
            .await
            .map_err(|e| driver_err(driver.as_ref(), e))
    }

    /// `relaxed`: the record's removal needs no disk flush of its own (the caller's next
    /// durable write follows).
    async fn disconnect_locked(
        &self,
        sandbox_id: &str,
        endpoint: &Endpoint,
        relaxed: bool,
    ) -> Result<()> {
        let network = self.network(&endpoint.network_id).await?;
        let driver = self.driver(&network.driver)?;
        // The record goes while the driver takes the data plane down (as in connect): the
        // driver takes it out of service in an order that start-up reconciliation reads as
        // "gone" however a crash cuts it short.
        let data_plane = async {
            if let Err(e) = driver
                .revoke_external_connectivity(&network.id, &endpoint.id)
                .await
            {
                tracing::warn!(endpoint = %endpoint.id, error = %e, "revoking external connectivity failed; reconciliation will clean up");
            }
            if let Err(e) = driver.leave(&network.id, &endpoint.id).await {
                tracing::warn!(endpoint = %endpoint.id, error = %e, "leave failed; reconciliation will clean up");
            }
            if let Err(e) = driver.delete_endpoint(&network.id, &endpoint.id).await {
                tracing::warn!(endpoint = %endpoint.id, error = %e, "delete endpoint failed; reconciliation will clean up");
            }
        };
        let (unrecorded, ()) = tokio::join!(
            self.unrecord_endpoint(sandbox_id, endpoint, relaxed),
            data_plane
        );
        unrecorded?;
        let addrs = endpoint.ipv4.iter().chain(endpoint.ipv6.iter());
        for (pool, addr) in endpoint.pool_ids.iter().zip(addrs) {
            if let Err(e) = self.ipam.release_address(pool, addr.addr()).await {
                tracing::warn!(addr = %addr, error = %e, "cannot release address");
            }
        }
        Ok(())
    }
}

/// The first number for `prefix` that none of a sandbox's endpoints (`current`) has in its
/// interface name: the name a join tries first.
fn first_free_interface(current: &[(Endpoint, Network)], prefix: &str) -> u32 {
    let used: BTreeSet<&str> = current
        .iter()
        .filter_map(|(ep, _)| ep.interface.as_deref())
        .collect();
    (0u32..)
        .find(|n| !used.contains(format!("{prefix}{n}").as_str()))
        .unwrap_or(0)
}
