//! The controller: the one place that turns user requests into IPAM allocations, driver calls
//! and store records, and undoes what it did when a later step fails.
//!
//! Each operation runs its steps in an order chosen so that a failure at any step can be undone
//! by reversing the earlier ones, and ends in a single store transaction: the records change all
//! at once or not at all. A crash between the driver's work and that transaction leaves kernel
//! objects or allocations the store does not mention; start-up reconciliation (which compares
//! the kernel and IPAM with the store) removes them.

mod discovery;
mod egress;
mod endpoint;
pub(crate) mod events;
mod network;
pub(crate) mod orchestrate;
mod reconcile;
mod sandbox;
mod service;
mod task;

use std::sync::Arc;

use plexus_ipam::Ipam;
use plexus_kv::{KvError, Store};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::datastore::Datastore;
use crate::driver::{Driver, DriverError, DriverRegistry, DriverResolver, IpamResolver};
use crate::error::{CnmError, Result};
use crate::model::Network;

/// Settings of a controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// The driver used when a network names none (`bridge`).
    pub default_driver: String,
    /// The prefix of interface names inside sandboxes (`eth`).
    pub interface_prefix: String,
    /// This host's id, stable across restarts: the owner recorded in the endpoints it makes
    /// on global networks, and its name in the cluster store.
    pub host_id: String,
    /// The address this host gives the cluster's other hosts (`--cluster-advertise`).
    pub cluster_advertise: Option<std::net::SocketAddr>,
    /// The local network that gives a sandbox its way out when its networks give it no
    /// default gateway (an overlay's join gives none): Docker's `docker_gwbridge`, made from
    /// this spec on first need unless a network of its name exists, which is then used as
    /// it is. `None`: such sandboxes get no way out.
    pub gateway_network: Option<crate::model::NetworkSpec>,
    /// The ingress network (Docker swarm's `ingress`): the global network the routing mesh
    /// runs on, made from this spec when the first global service with an ingress-mode
    /// published port is created (a network of its name is used as it is). Such a service
    /// is on it too (with a virtual IP there), and so is each of its tasks. `None`: global
    /// services cannot publish ingress-mode ports.
    pub ingress_network: Option<crate::model::NetworkSpec>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            default_driver: "bridge".into(),
            interface_prefix: "eth".into(),
            host_id: String::new(),
            cluster_advertise: None,
            gateway_network: None,
            ingress_network: None,
        }
    }
}

/// The Container Network Model's controller.
pub struct Controller {
    store: Datastore,
    ipam: Arc<dyn Ipam>,
    drivers: DriverRegistry,
    /// Consulted for a driver name the registry lacks (plugins); what it gives is kept in
    /// `resolved`.
    resolver: Option<Arc<dyn DriverResolver>>,
    resolved: std::sync::Mutex<std::collections::BTreeMap<String, Arc<dyn Driver>>>,
    /// Gives the IPAM of networks that name an IPAM driver (`--ipam-driver`).
    ipam_resolver: Option<Arc<dyn IpamResolver>>,
    config: ControllerConfig,
    /// Mutating operations of one controller run one at a time; the store's transactions
    /// guard against other controllers sharing the store.
    ops: Mutex<()>,
    /// The event log's head and live channel (events.rs).
    events: events::EventBus,
    /// Where sandbox namespaces come from (orchestrate.rs).
    namespaces: Arc<dyn crate::namespaces::Namespaces>,
    /// Told of each commit before the operation returns (observer.rs).
    observers: Vec<Arc<dyn crate::observer::CommitObserver>>,
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
            store: Datastore::local(store),
            ipam,
            drivers,
            resolver: None,
            resolved: std::sync::Mutex::default(),
            ipam_resolver: None,
            config,
            ops: Mutex::new(()),
            events: events::EventBus::new(),
            namespaces: crate::namespaces::none(),
            observers: Vec::new(),
        }
    }

    /// Adds an observer told of every commit before the operation that made it returns.
    pub fn with_observer(mut self, observer: Arc<dyn crate::observer::CommitObserver>) -> Self {
        self.observers.push(observer);
        self
    }

    pub(super) async fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>> {
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

    pub(super) async fn load_all<T: DeserializeOwned>(&self, dir: &str) -> Result<Vec<T>> {
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

    /// The driver called `name`: a registered one, one resolved before, or one the resolver
    /// finds now (then kept).
    pub(super) async fn driver(&self, name: &str) -> Result<Arc<dyn Driver>> {
        if let Some(d) = self.drivers.get(name) {
            return Ok(d);
        }
        if let Some(d) = self.resolved_driver(name) {
            return Ok(d);
        }
        let unknown = |found: Option<String>| CnmError::Invalid {
            field: "driver".into(),
            reason: match name {
                // Known, but only on a daemon that is part of a cluster.
                "overlay" => "the overlay driver needs a cluster: start plexusd with \
                     --cluster-store and --cluster-advertise"
                    .to_string(),
                _ => format!(
                    "unknown driver {name:?}; known drivers: {}{}",
                    self.drivers.names().join(", "),
                    found.map(|f| format!("; {f}")).unwrap_or_default()
                ),
            },
        };
        let Some(resolver) = &self.resolver else {
            return Err(unknown(None));
        };
        if name == "overlay" || check_name("driver", name).is_err() {
            return Err(unknown(None));
        }
        match resolver.resolve(name).await {
            Ok(d) => {
                tracing::info!(driver = name, "driver plugin registered");
                self.adopt_plugin_driver(name, d.as_ref()).await;
                if let Ok(mut m) = self.resolved.lock() {
                    m.insert(name.to_string(), d.clone());
                }
                Ok(d)
            }
            Err(e) => Err(unknown(Some(e.to_string()))),
        }
    }

    fn resolved_driver(&self, name: &str) -> Option<Arc<dyn Driver>> {
        self.resolved.lock().ok()?.get(name).cloned()
    }

    /// Every driver: the registered ones, then those resolved so far.
    pub(super) fn all_drivers(&self) -> Vec<Arc<dyn Driver>> {
        let mut out: Vec<Arc<dyn Driver>> = self.drivers.iter().map(|(_, d)| d.clone()).collect();
        if let Ok(m) = self.resolved.lock() {
            out.extend(m.values().cloned());
        }
        out
    }

    /// Consults `resolver` for driver names the registry lacks (plugins).
    pub fn with_driver_resolver(mut self, resolver: Arc<dyn DriverResolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Consults `resolver` for the IPAM of networks that name an IPAM driver.
    pub fn with_ipam_resolver(mut self, resolver: Arc<dyn IpamResolver>) -> Self {
        self.ipam_resolver = Some(resolver);
        self
    }

    /// The IPAM that allocates the pools of a network whose IPAM driver is `name` (empty or
    /// `default`: the controller's own).
    pub(super) async fn ipam_for(&self, name: &str) -> Result<Arc<dyn Ipam>> {
        if name.is_empty() || name == "default" {
            return Ok(self.ipam.clone());
        }
        let Some(resolver) = &self.ipam_resolver else {
            return Err(CnmError::invalid(
                "IPAM.Driver",
                format!("unknown IPAM driver {name:?}; only \"default\" is available"),
            ));
        };
        check_name("IPAM.Driver", name)?;
        Ok(resolver.resolve(name).await?)
    }

    /// Adds a cluster store (`--cluster-store`): global-scope networks and their endpoints
    /// are recorded there, shared with the other hosts of the cluster.
    pub fn with_cluster_store(mut self, cluster: Arc<dyn Store>) -> Self {
        self.store = self.store.with_cluster(cluster);
        self
    }

    /// Where the records live: the local store and the cluster store, if any.
    pub fn datastore(&self) -> &Datastore {
        &self.store
    }

    /// This host's id.
    pub fn host_id(&self) -> &str {
        &self.config.host_id
    }

    /// The controller's settings.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The IPAM the controller allocates from.
    pub fn ipam(&self) -> &Arc<dyn Ipam> {
        &self.ipam
    }

    /// Whether a driver called `name` is registered.
    pub fn has_driver(&self, name: &str) -> bool {
        self.drivers.get(name).is_some() || self.resolved_driver(name).is_some()
    }

    /// Removes a network that has no endpoints even when it is pre-defined: for the daemon's
    /// own remaking of Docker's default network at start, never for users' requests.
    pub async fn remove_predefined_network(&self, network: &Network) -> Result<()> {
        let _op = self.ops.lock().await;
        self.remove_network_locked(network).await
    }
}
