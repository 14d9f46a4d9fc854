//! The `macvlan` and `ipvlan` drivers: Docker's `-d macvlan` and `-d ipvlan`, sandboxes
//! straight on a host interface's wire (one type, [`MacvlanDriver`], two [`Kind`]s sharing
//! one memory: a parent serves one network of either kind).
//!
//! **Per network**: a parent in the host namespace (`parent.rs`): the interface `-o parent`
//! names; or an 802.1q sub-interface `-o parent=eth0.10` that does not exist yet, made (and
//! removed with the network) by the driver, marked `<marker>:vlan:<kind>:<network>` (a
//! sub-interface that already existed is used and left alone); or, without `-o parent`, a
//! dummy link `dm-<12 hex of the id>` as Docker makes, marked `<marker>:dummy:<kind>:<network>`:
//! its sandboxes reach only each other. The kernel is asked at run time whether it has what
//! the network needs (ipvlan devices, 802.1q, dummy links: [`probe_link_kind`]); a missing one is
//! refused naming its module. `--internal` also gets a parent that goes nowhere, whatever
//! `-o parent` says (Docker's rule): a dummy link where the kernel has them, else a veth pair
//! of the driver's own (`plxm<11 hex>`, its other end `plxn…` up and unused, marked
//! `<marker>:lanparent:<kind>:<network>`), which does the same: frames the devices send out
//! the parent end at its peer, which drops them. One network per parent (and per parent and
//! VLAN), across both kinds, as Docker: a second is refused naming the first.
//!
//! **Per endpoint**: a macvlan (or ipvlan) device made at join in one request from the host
//! namespace, born inside the sandbox with its final name (`eth0`) while its parent stays in
//! the host (no move between namespaces); a macvlan device has the endpoint's MAC (Docker's
//! `02:42` and its IPv4 address, as the bridge driver), an ipvlan device (and a passthru
//! macvlan device) its parent's; its MTU
//! is the parent's. It gets the endpoint's addresses, the mark
//! `<marker>:<kind>:<network>:<endpoint>`, and (unless `--internal`) a default route through
//! the network's gateway, which is on the LAN (from `--gateway` or IPAM: nothing on the host
//! holds it); ipvlan `l3`/`l3s` instead route everything out the device (Docker's
//! `default dev eth0`), with no gateway. Leave deletes the device.
//!
//! No NAT, no port publishing: published ports are ignored with a warning, as Docker does;
//! the sandboxes are on the LAN with their own addresses. **The host cannot reach its own
//! macvlan sandboxes through the parent** (nor they the host's addresses on it): the kernel
//! hands frames between a parent and its macvlan devices to neither. A macvlan device of the
//! host's own on the same parent (`ip link add mv0 link eth0 type macvlan mode bridge`, with
//! an address) is the usual way round. `passthru` gives the parent to one device: a second
//! endpoint joined at once is refused.
//!
//! Every step that makes something has its undo, run in reverse when a later one fails.
//! [`reconcile`](Driver::reconcile) (`reconcile.rs`) restores the networks (adopting the
//! parents it made), makes again, at start-up and while running, the device of every endpoint
//! the store records whose sandbox exists, and deletes marked parents and devices the store
//! does not know: parents in the host namespace, devices in the sandboxes of the store's
//! endpoints. `plexus system reset` deletes the parents it made (marked links); the devices
//! go with the sandboxes' namespaces (or with a parent Plexus made).
//!
//! [`probe_link_kind`]: plexus_sys::probe::probe_link_kind

mod endpoint;
pub mod options;
mod parent;
mod reconcile;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use plexus_cnm::{
    Capability, Desired, Driver, DriverError, EndpointCreated, EndpointInfo, InterfaceName, Joined,
    LiveEndpoint, NetworkInfo, ReconcileMode, Reconciled, Scope,
};
use plexus_sys::probe::{self, Feature, Outcome};
use plexus_sys::rtnl::{MacvlanMode, Rtnl, SubLinkKind};
use tokio::sync::Mutex;

use crate::{names, sys_ctx, DriverConfig};
pub use options::LanOptions;
use parent::Parent;

/// Which driver: devices with their own MAC (`macvlan`) or sharing the parent's (`ipvlan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `-d macvlan`.
    Macvlan,
    /// `-d ipvlan`.
    Ipvlan,
}

impl Kind {
    /// The driver's name, also the link kind and the mark's kind (`macvlan`, `ipvlan`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Macvlan => "macvlan",
            Kind::Ipvlan => "ipvlan",
        }
    }

    /// The kernel feature its devices need.
    fn feature(self) -> Feature {
        match self {
            Kind::Macvlan => Feature::Macvlan,
            Kind::Ipvlan => Feature::Ipvlan,
        }
    }
}

/// The mark of an endpoint's device: `<marker>:<kind>:<network>:<endpoint>`.
fn device_alias(marker: &str, kind: Kind, network: &str, endpoint: &str) -> String {
    format!("{marker}:{}:{network}:{endpoint}", kind.name())
}

#[derive(Debug, Clone)]
struct NetState {
    kind: Kind,
    info: NetworkInfo,
    opts: LanOptions,
    parent: Parent,
}

impl NetState {
    /// Whether its devices route everything out the device rather than through the gateway
    /// (ipvlan `l3` and `l3s`).
    fn routes_on_link(&self) -> bool {
        matches!(
            self.opts.kind,
            SubLinkKind::Ipvlan(m, _) if m != plexus_sys::rtnl::IpvlanMode::L2
        )
    }

    fn passthru(&self) -> bool {
        self.opts.kind == SubLinkKind::Macvlan(MacvlanMode::Passthru)
    }
}

#[derive(Debug, Clone)]
struct EpState {
    network_id: String,
    ipv4: Option<IpNet>,
    ipv6: Option<IpNet>,
    /// Its MAC (macvlan); `None` for an ipvlan or passthru macvlan device, which has its
    /// parent's.
    mac: Option<[u8; 6]>,
    /// Where its device is, once joined.
    joined: Option<InSandbox>,
    /// The default routes it gave the sandbox.
    gateways: Vec<IpAddr>,
}

/// A joined endpoint's device: the sandbox's namespace path, its name and index there.
#[derive(Debug, Clone)]
struct InSandbox {
    key: String,
    ifname: String,
    ifindex: u32,
}

#[derive(Default)]
struct State {
    networks: HashMap<String, NetState>,
    endpoints: HashMap<String, EpState>,
}

/// What both drivers share: the host namespace, the memory, what the kernel was found to have.
struct Shared {
    marker: String,
    /// The host namespace, where parents are.
    rtnl: Rtnl,
    /// Held for the whole of every mutating call of either driver.
    state: Mutex<State>,
    /// Link kinds the kernel was found to have (a missing one is asked again next time: a
    /// module may be loaded meanwhile).
    present: std::sync::Mutex<BTreeSet<Feature>>,
    /// Deletes left macvlan devices in their sandboxes in the background.
    reaper: Arc<crate::reaper::Reaper>,
}

/// The `macvlan` or `ipvlan` driver. See the [module docs](self).
pub struct MacvlanDriver {
    kind: Kind,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for MacvlanDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MacvlanDriver")
            .field("kind", &self.kind)
            .field("host", &self.shared.rtnl.netns().path())
            .field("marker", &self.shared.marker)
            .finish()
    }
}

impl MacvlanDriver {
    /// The `macvlan` and `ipvlan` drivers of `config.host`, sharing their memory (a parent
    /// serves one network of either kind), marking what they make with `config.marker`.
    pub async fn pair(config: &DriverConfig) -> Result<(Self, Self), DriverError> {
        let reaper = crate::reaper::Reaper::new(&config.host)
            .await
            .map_err(sys_ctx("link reaper"))?;
        Self::pair_with(config, Arc::new(reaper)).await
    }

    /// Waits until the devices these drivers are deleting in the background are gone (leave
    /// returns once a device is out of service; the kernel's deletion takes longer). For
    /// tests and shutdown.
    pub async fn settle(&self) {
        self.shared.reaper.settle().await;
    }

    /// [`pair`](Self::pair) deleting in the background through `reaper` (the bridge
    /// driver's, so that its `settle` waits for these deletions too).
    pub(crate) async fn pair_with(
        config: &DriverConfig,
        reaper: Arc<crate::reaper::Reaper>,
    ) -> Result<(Self, Self), DriverError> {
        let marker = config.marker.clone();
        if marker.is_empty() || marker.contains(':') || marker.len() > 64 {
            return Err(DriverError::Invalid(format!(
                "marker {marker:?}: must be 1 to 64 bytes without ':'"
            )));
        }
        let rtnl = Rtnl::connect(&config.host)
            .await
            .map_err(sys_ctx("host namespace"))?;
        let shared = Arc::new(Shared {
            marker,
            rtnl,
            state: Mutex::new(State::default()),
            present: std::sync::Mutex::new(BTreeSet::new()),
            reaper,
        });
        Ok((
            Self {
                kind: Kind::Macvlan,
                shared: shared.clone(),
            },
            Self {
                kind: Kind::Ipvlan,
                shared,
            },
        ))
    }

    /// Which driver it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn marker(&self) -> &str {
        &self.shared.marker
    }

    fn rtnl(&self) -> &Rtnl {
        &self.shared.rtnl
    }

    /// `Ok` if the kernel has `feature` (asked now, in a scratch namespace, unless it was
    /// found before), else [`DriverError::Unsupported`] naming what needs it, the feature and
    /// the module that provides it.
    async fn require(&self, feature: Feature, needed_for: &str) -> Result<(), DriverError> {
        let known = self
            .shared
            .present
            .lock()
            .map(|p| p.contains(&feature))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        let outcome = probe::probe_link_kind(feature)
            .await
            .map_err(sys_ctx(format!("asking the kernel for {}", feature.name())))?;
        if outcome == Outcome::Present {
            if let Ok(mut p) = self.shared.present.lock() {
                p.insert(feature);
            }
            return Ok(());
        }
        probe::require(feature, &outcome)
            .map_err(|e| DriverError::Unsupported(format!("{needed_for}: {e}")))
    }

    /// Deletes a link of the host namespace; a missing one is not an error.
    async fn delete_link(&self, index: u32) -> Result<(), DriverError> {
        match self.rtnl().delete_link(index).await {
            Ok(()) | Err(plexus_sys::SysError::NotFound { .. }) => Ok(()),
            Err(e) => Err(sys_ctx(format!("delete link {index}"))(e)),
        }
    }
}

#[async_trait]
impl Driver for MacvlanDriver {
    fn name(&self) -> &str {
        self.kind.name()
    }

    /// Local: each host's network is its own (it reaches the LAN, not other hosts' sandboxes
    /// through Plexus).
    fn capability(&self) -> Capability {
        Capability {
            scope: Scope::Local,
            connectivity: Scope::Local,
            needs_ipam: true,
            multiple_networks: true,
        }
    }

    fn validate_options(&self, options: &BTreeMap<String, String>) -> Result<(), DriverError> {
        LanOptions::parse(self.kind, options).map(|_| ())
    }

    async fn create_network(&self, network: &NetworkInfo) -> Result<(), DriverError> {
        let mut st = self.shared.state.lock().await;
        self.create_network_locked(&mut st, network).await
    }

    async fn delete_network(&self, network_id: &str) -> Result<(), DriverError> {
        let mut st = self.shared.state.lock().await;
        let left: Vec<String> = st
            .endpoints
            .iter()
            .filter(|(_, e)| e.network_id == network_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in left {
            self.unplug_locked(&mut st, &id).await;
            st.endpoints.remove(&id);
        }
        match st.networks.remove(network_id) {
            Some(net) => {
                self.remove_parent(network_id, &net.parent).await?;
                tracing::info!(network = %net.info.name, driver = self.kind.name(), parent = %net.parent.name, "network removed");
                Ok(())
            }
            None => self.remove_unknown_parents(network_id).await,
        }
    }

    async fn create_endpoint(
        &self,
        endpoint: &EndpointInfo,
    ) -> Result<EndpointCreated, DriverError> {
        let mut st = self.shared.state.lock().await;
        let id = &endpoint.endpoint_id;
        let net = st.networks.get(&endpoint.network_id).ok_or_else(|| {
            DriverError::Failed(format!(
                "network {} is not known to the {} driver (not created or not restored)",
                endpoint.network_id,
                self.kind.name()
            ))
        })?;
        if st.endpoints.contains_key(id) {
            return Err(DriverError::Conflict(format!(
                "endpoint {id} already exists"
            )));
        }
        // An ipvlan device, and a passthru macvlan device, have their parent's MAC.
        let own_mac = self.kind == Kind::Macvlan && !net.passthru();
        let mac = match &endpoint.mac {
            _ if own_mac => Some(names::endpoint_mac(endpoint)?),
            Some(m) => {
                return Err(DriverError::Invalid(format!(
                    "mac address {m:?}: an interface on {} network {:?} has its parent's MAC",
                    if net.passthru() {
                        "passthru macvlan"
                    } else {
                        "ipvlan"
                    },
                    net.info.name
                )))
            }
            None => None,
        };
        if !endpoint.ports.is_empty() {
            // Docker ignores -p on these networks: the sandbox has its own address on the LAN.
            tracing::warn!(endpoint = %id, network = %net.info.name, driver = self.kind.name(), "published ports are ignored: the sandbox is on the LAN with its own address");
        }
        st.endpoints.insert(
            id.clone(),
            EpState {
                network_id: endpoint.network_id.clone(),
                ipv4: endpoint.ipv4,
                ipv6: endpoint.ipv6,
                mac,
                joined: None,
                gateways: Vec::new(),
            },
        );
        Ok(EndpointCreated {
            mac: mac.map(|m| plexus_sys::rtnl::format_mac(&m)),
            ports: Vec::new(),
        })
    }

    async fn delete_endpoint(
        &self,
        _network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        let mut st = self.shared.state.lock().await;
        self.unplug_locked(&mut st, endpoint_id).await;
        st.endpoints.remove(endpoint_id);
        Ok(())
    }

    async fn join(
        &self,
        network_id: &str,
        endpoint_id: &str,
        sandbox_key: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        crate::sandbox::refuse_handoff(self.name(), &interface)?;
        let mut st = self.shared.state.lock().await;
        self.join_locked(&mut st, network_id, endpoint_id, sandbox_key, interface)
            .await
    }

    async fn leave(&self, _network_id: &str, endpoint_id: &str) -> Result<(), DriverError> {
        let mut st = self.shared.state.lock().await;
        self.unplug_locked(&mut st, endpoint_id).await;
        Ok(())
    }

    /// The endpoint's MAC (macvlan), as libnetwork reports it.
    async fn endpoint_oper_info(
        &self,
        _network_id: &str,
        endpoint_id: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>, DriverError> {
        let st = self.shared.state.lock().await;
        let mut info = BTreeMap::new();
        if let Some(mac) = st.endpoints.get(endpoint_id).and_then(|e| e.mac) {
            info.insert(
                "com.docker.network.endpoint.macaddress".to_string(),
                serde_json::Value::String(plexus_sys::rtnl::format_mac(&mac)),
            );
        }
        Ok(info)
    }

    /// `None`: an endpoint's device is in its sandbox, which only the store knows; the store's
    /// endpoints get their device back in [`reconcile`](Driver::reconcile) instead of being
    /// rolled back.
    async fn live_endpoints(&self) -> Result<Option<BTreeMap<String, LiveEndpoint>>, DriverError> {
        Ok(None)
    }

    /// Restores the networks (and the parents the driver made), makes again the device of
    /// every recorded endpoint whose sandbox exists, deletes marked parents and devices the
    /// store does not know.
    async fn reconcile(
        &self,
        desired: &Desired,
        mode: ReconcileMode,
    ) -> Result<Reconciled, DriverError> {
        self.reconcile_with(desired, mode).await
    }
}
