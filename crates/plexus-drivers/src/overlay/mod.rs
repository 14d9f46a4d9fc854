//! The `overlay` driver: Docker's multi-host networks over VXLAN (`-d overlay`), programmed
//! statically from a control plane.
//!
//! **Per network, cluster-wide**: a VXLAN id, taken once by
//! [`allocate_network`](Driver::allocate_network) with compare-and-swap in the cluster store
//! (`vni.rs`), or the one `com.docker.network.driver.overlay.vxlanid_list` asks for.
//!
//! **Per network, on each host with an endpoint on it** (made at the first join, removed with
//! the last leave, as Docker does): a namespace of its own, pinned at
//! `<run dir>/1-<11 hex of the id>` (Docker's `/var/run/docker/netns/1-<id>`), holding a bridge
//! `br0` and the VXLAN device `vxlan0` on it. The VXLAN device is born in that namespace from
//! the host's connection, so its UDP socket (port 4789, from the host's advertised address)
//! stays on the underlay; learning is off and ARP/NDP proxy on: remote MACs and addresses are
//! only what the control plane says. Networks are kept apart by their namespaces: nothing
//! routes between them. The MTU is `com.docker.network.driver.mtu`, or the MTU of the
//! underlay interface holding the advertised address less VXLAN's 50 bytes.
//!
//! **Per endpoint**: a veth pair made at join in one request, its near end (`ve-<11 hex>`) on
//! `br0` in the network's namespace and its far end born inside the sandbox with its final
//! name, the MAC derived from its IPv4 address (Docker's `02:42:…`), the network's MTU and its
//! addresses. Join publishes the endpoint's [`PeerRecord`] (address, MAC, this host's underlay
//! address) in the network's [`PEER_TABLE`] through the [`ControlPlane`]; leave withdraws it.
//!
//! **Peers** (`peers.rs`): [`event_notify`](Driver::event_notify) for [`PEER_TABLE`] programs a
//! remote endpoint's static FDB entry (its MAC behind its host) and neighbour entries (its
//! addresses at its MAC) on `vxlan0`, and removes them when it goes. This host's own entries
//! are ignored; duplicates, a delete before its create or after a newer update, and an
//! endpoint moving to another host are tolerated; an entry sharing a MAC or an address with
//! another keeps the kernel pointing at the one left. The first join of a network programs
//! every entry the control plane holds ([`ControlPlane::entries`]);
//! [`discover_delete`](Driver::discover_delete) of a host drops all its entries at once.
//!
//! Every step that makes something has its undo, run in reverse when a later one fails. Every
//! link the driver makes is marked (`<marker>:ovbridge:<net>`, `<marker>:vxlan:<net>`,
//! `<marker>:ovveth:<net>:<ep>[:<interface>]`) and every namespace is its own by its folder;
//! [`reconcile`](Driver::reconcile) (`reconcile.rs`) makes again what the store says exists
//! and removes the rest.
//!
//! Not yet: egress (Docker's `docker_gwbridge` with masquerade): a sandbox on an overlay
//! network reaches its peers only; encryption (`-o encrypted` is refused).

mod endpoint;
pub mod options;
mod peer;
mod peers;
mod reconcile;
mod segment;
mod vni;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use plexus_cnm::{
    Capability, ControlPlane, Desired, Driver, DriverError, EndpointCreated, EndpointInfo,
    InterfaceName, Joined, LiveEndpoint, NetworkInfo, NodeDiscovery, ReconcileMode, Reconciled,
    Scope, TableEvent,
};
use plexus_kv::Store;
use plexus_sys::rtnl::Rtnl;
use tokio::sync::Mutex;

use crate::{names, sys_ctx, DriverConfig};
pub use options::OverlayOptions;
pub use peer::{PeerRecord, PEER_TABLE};
pub use vni::{vni_key, FIRST_AUTO_VNI, VNI_DIR};

/// The bridge in a network's namespace.
pub const BRIDGE: &str = "br0";
/// The VXLAN device in a network's namespace.
pub const VXLAN: &str = "vxlan0";

/// What the overlay driver needs besides a [`DriverConfig`].
#[derive(Clone)]
pub struct OverlayConfig {
    /// Where networks' namespaces are pinned (plexusd:
    /// [`Layout::overlay_dir`](crate::reset::Layout::overlay_dir), `<run dir>/overlay`, which
    /// `plexus system reset` empties). Everything in it is the driver's: reconciliation
    /// removes what the store does not know.
    pub run_dir: PathBuf,
    /// The cluster's control plane.
    pub control_plane: Arc<dyn ControlPlane>,
}

/// A network's namespace on this host, with its bridge and VXLAN device.
struct Segment {
    rtnl: Rtnl,
    bridge: u32,
    vxlan: u32,
    mtu: u32,
}

struct NetState {
    info: NetworkInfo,
    vni: u32,
    mtu: Option<u32>,
    /// Present while this host has an endpoint joined on the network.
    segment: Option<Segment>,
    /// Remote endpoints programmed in the segment, by endpoint id.
    peers: BTreeMap<String, PeerRecord>,
}

#[derive(Debug, Clone)]
struct EpState {
    network_id: String,
    ipv4: Option<IpNet>,
    ipv6: Option<IpNet>,
    mac: [u8; 6],
    /// The sandbox's namespace path and the interface's name there, once joined.
    joined: Option<(String, String)>,
}

impl EpState {
    fn record(&self, vtep: IpAddr) -> PeerRecord {
        PeerRecord {
            mac: self.mac,
            vtep,
            ipv4: self.ipv4.and_then(|a| match a.addr() {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            }),
            ipv6: self.ipv6.and_then(|a| match a.addr() {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            }),
        }
    }
}

#[derive(Default)]
struct State {
    networks: HashMap<String, NetState>,
    endpoints: HashMap<String, EpState>,
}

/// The `overlay` driver. See the [module docs](self).
pub struct OverlayDriver {
    marker: String,
    /// The host (underlay) namespace: VXLAN sockets live here.
    rtnl: Rtnl,
    store: Option<Arc<dyn Store>>,
    plane: Arc<dyn ControlPlane>,
    run_dir: PathBuf,
    /// Held for the whole of every call: calls of one driver run one at a time.
    state: Mutex<State>,
}

impl std::fmt::Debug for OverlayDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayDriver")
            .field("host", &self.rtnl.netns().path())
            .field("marker", &self.marker)
            .field("run_dir", &self.run_dir)
            .finish()
    }
}

/// The name of a network's namespace: `1-` and 11 hex digits of its id.
pub fn netns_name(network_id: &str) -> String {
    format!("1-{}", names::short(network_id))
}

/// The near end, in the network's namespace, of an endpoint's veth pair.
pub(crate) fn near_veth(endpoint_id: &str) -> String {
    format!("ve-{}", names::short(endpoint_id))
}

fn bridge_alias(marker: &str, network_id: &str) -> String {
    format!("{marker}:ovbridge:{network_id}")
}

fn vxlan_alias(marker: &str, network_id: &str) -> String {
    format!("{marker}:vxlan:{network_id}")
}

fn veth_alias(marker: &str, network_id: &str, endpoint_id: &str) -> String {
    format!("{marker}:ovveth:{network_id}:{endpoint_id}")
}

/// An endpoint's MAC: the one asked for, or Docker's derived from its IPv4 address.
fn mac_of(endpoint: &EndpointInfo) -> Result<[u8; 6], DriverError> {
    match &endpoint.mac {
        Some(m) => names::parse_mac(m).ok_or_else(|| {
            DriverError::Invalid(format!(
                "mac address {m:?}: must be a unicast aa:bb:cc:dd:ee:ff"
            ))
        }),
        None => Ok(names::derive_mac(
            endpoint.ipv4.and_then(|a| match a.addr() {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            }),
            &endpoint.endpoint_id,
        )),
    }
}

/// The VXLAN id a network's options carry (allocated, or asked for).
fn vni_of(info: &NetworkInfo) -> Result<(u32, Option<u32>), DriverError> {
    let opts = OverlayOptions::parse(&info.options)?;
    let vni = opts.vni.ok_or_else(|| {
        DriverError::Invalid(format!(
            "option {}: network {} has no VXLAN id (it was not allocated in the cluster)",
            options::VXLANID_LIST,
            info.name
        ))
    })?;
    Ok((vni, opts.mtu))
}

impl OverlayDriver {
    /// An overlay driver on `config.host` (the underlay namespace), pinning networks'
    /// namespaces under `overlay.run_dir`, allocating VXLAN ids in `config.cluster_store`.
    pub async fn new(config: DriverConfig, overlay: OverlayConfig) -> Result<Self, DriverError> {
        let marker = config.marker;
        if marker.is_empty() || marker.contains(':') || marker.len() > 64 {
            return Err(DriverError::Invalid(format!(
                "marker {marker:?}: must be 1 to 64 bytes without ':'"
            )));
        }
        let rtnl = Rtnl::connect(&config.host)
            .await
            .map_err(sys_ctx("host namespace"))?;
        Ok(Self {
            marker,
            rtnl,
            store: config.cluster_store,
            plane: overlay.control_plane,
            run_dir: overlay.run_dir,
            state: Mutex::new(State::default()),
        })
    }

    /// Where a network's namespace is pinned (it exists while this host has an endpoint
    /// joined on the network).
    pub fn netns_path(&self, network_id: &str) -> PathBuf {
        self.run_dir.join(netns_name(network_id))
    }

    /// The directory networks' namespaces are pinned in.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The VXLAN id of a network this driver knows.
    pub async fn vni(&self, network_id: &str) -> Option<u32> {
        self.state
            .lock()
            .await
            .networks
            .get(network_id)
            .map(|n| n.vni)
    }

    /// The remote endpoints programmed for a network on this host, by endpoint id.
    pub async fn peers(&self, network_id: &str) -> BTreeMap<String, PeerRecord> {
        self.state
            .lock()
            .await
            .networks
            .get(network_id)
            .map(|n| n.peers.clone())
            .unwrap_or_default()
    }

    fn advertise(&self) -> IpAddr {
        self.plane.advertise_addr()
    }

    fn store(&self) -> Result<&Arc<dyn Store>, DriverError> {
        self.store.as_ref().ok_or_else(|| {
            DriverError::Invalid(
                "overlay networks need a cluster store (--cluster-store): this host has none"
                    .to_string(),
            )
        })
    }
}

#[async_trait]
impl Driver for OverlayDriver {
    fn name(&self) -> &str {
        "overlay"
    }

    fn capability(&self) -> Capability {
        Capability {
            scope: Scope::Global,
            connectivity: Scope::Global,
            needs_ipam: true,
            multiple_networks: true,
        }
    }

    fn validate_options(&self, options: &BTreeMap<String, String>) -> Result<(), DriverError> {
        OverlayOptions::parse(options).map(|_| ())
    }

    /// Takes the network's VXLAN id in the cluster store: the one asked for, or the lowest
    /// free from 4096 on. Given back as `vxlanid_list` with the network's options.
    async fn allocate_network(
        &self,
        network: &NetworkInfo,
    ) -> Result<BTreeMap<String, String>, DriverError> {
        let requested = OverlayOptions::parse(&network.options)?.vni;
        let store = self.store()?;
        let vni = vni::allocate(store, &network.id, requested).await?;
        tracing::info!(network = %network.name, vni, "VXLAN id allocated");
        Ok(BTreeMap::from([(
            options::VXLANID_LIST.to_string(),
            vni.to_string(),
        )]))
    }

    async fn free_network(
        &self,
        network_id: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<(), DriverError> {
        let Some(value) = data.get(options::VXLANID_LIST) else {
            return Ok(());
        };
        let vni = options::parse_vni(value)?;
        vni::free(self.store()?, network_id, vni).await
    }

    /// Records the network; its namespace is made at the first join on this host.
    async fn create_network(&self, network: &NetworkInfo) -> Result<(), DriverError> {
        let (vni, mtu) = vni_of(network)?;
        let mut st = self.state.lock().await;
        match st.networks.get_mut(&network.id) {
            Some(net) if net.vni == vni => net.info = network.clone(),
            Some(net) => {
                return Err(DriverError::Conflict(format!(
                    "network {} exists with VXLAN id {}, not {vni}",
                    network.name, net.vni
                )))
            }
            None => {
                st.networks.insert(
                    network.id.clone(),
                    NetState {
                        info: network.clone(),
                        vni,
                        mtu,
                        segment: None,
                        peers: BTreeMap::new(),
                    },
                );
            }
        }
        tracing::debug!(network = %network.name, vni, "overlay network recorded");
        Ok(())
    }

    async fn delete_network(&self, network_id: &str) -> Result<(), DriverError> {
        let mut st = self.state.lock().await;
        let ids: Vec<String> = st
            .endpoints
            .iter()
            .filter(|(_, e)| e.network_id == network_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.leave_locked(&mut st, network_id, &id).await?;
            st.endpoints.remove(&id);
        }
        if let Some(mut net) = st.networks.remove(network_id) {
            if let Some(segment) = net.segment.take() {
                self.close_segment(network_id, segment).await;
            }
        }
        // A namespace an earlier run left (this one never knew the network).
        self.remove_namespace(network_id).await
    }

    async fn create_endpoint(
        &self,
        endpoint: &EndpointInfo,
    ) -> Result<EndpointCreated, DriverError> {
        let mut st = self.state.lock().await;
        if !st.networks.contains_key(&endpoint.network_id) {
            return Err(DriverError::Failed(format!(
                "network {} is not known to the overlay driver (not created or not restored)",
                endpoint.network_id
            )));
        }
        if st.endpoints.contains_key(&endpoint.endpoint_id) {
            return Err(DriverError::Conflict(format!(
                "endpoint {} already exists",
                endpoint.endpoint_id
            )));
        }
        let mac = mac_of(endpoint)?;
        st.endpoints.insert(
            endpoint.endpoint_id.clone(),
            EpState {
                network_id: endpoint.network_id.clone(),
                ipv4: endpoint.ipv4,
                ipv6: endpoint.ipv6,
                mac,
                joined: None,
            },
        );
        Ok(EndpointCreated {
            mac: Some(plexus_sys::rtnl::format_mac(&mac)),
            ports: Vec::new(),
        })
    }

    async fn delete_endpoint(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        let mut st = self.state.lock().await;
        self.leave_locked(&mut st, network_id, endpoint_id).await?;
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
        let mut st = self.state.lock().await;
        self.join_locked(&mut st, network_id, endpoint_id, sandbox_key, interface)
            .await
    }

    async fn leave(&self, network_id: &str, endpoint_id: &str) -> Result<(), DriverError> {
        let mut st = self.state.lock().await;
        self.leave_locked(&mut st, network_id, endpoint_id).await
    }

    async fn endpoint_oper_info(
        &self,
        _network_id: &str,
        endpoint_id: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>, DriverError> {
        let st = self.state.lock().await;
        Ok(st
            .endpoints
            .get(endpoint_id)
            .map(|ep| {
                BTreeMap::from([(
                    "com.docker.network.endpoint.macaddress".to_string(),
                    serde_json::Value::String(plexus_sys::rtnl::format_mac(&ep.mac)),
                )])
            })
            .unwrap_or_default())
    }

    async fn live_endpoints(&self) -> Result<Option<BTreeMap<String, LiveEndpoint>>, DriverError> {
        self.live().await.map(Some)
    }

    async fn reconcile(
        &self,
        desired: &Desired,
        mode: ReconcileMode,
    ) -> Result<Reconciled, DriverError> {
        self.reconcile_with(desired, mode).await
    }

    async fn discover_new(&self, node: &NodeDiscovery) -> Result<(), DriverError> {
        tracing::debug!(address = %node.address, "host joined the cluster");
        Ok(())
    }

    /// Forgets every endpoint of that host: its FDB and neighbour entries go from every
    /// network at once.
    async fn discover_delete(&self, node: &NodeDiscovery) -> Result<(), DriverError> {
        if node.self_node || node.address == self.advertise() {
            return Ok(());
        }
        let mut st = self.state.lock().await;
        self.forget_host(&mut st, node.address).await
    }

    async fn event_notify(&self, event: &TableEvent) -> Result<(), DriverError> {
        let mut st = self.state.lock().await;
        self.on_event(&mut st, event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_are_derived_from_ids() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(netns_name(id), "1-0123456789a");
        assert_eq!(near_veth(id), "ve-0123456789a");
        assert!(near_veth("some-other-id").len() <= plexus_sys::rtnl::MAX_IFNAME);
    }
}
