//! The `bridge` driver: Docker's user-defined bridge networks.
//!
//! Per network: a Linux bridge (`plx-<11 hex of the id>` or `com.docker.network.bridge.name`)
//! holding the gateway address(es), `route_localnet=1` (so `127.0.0.1:PORT` reaches published
//! ports), and the network's elements in Plexus's nftables sets (isolation, masquerade,
//! internal). Per endpoint: a veth pair, made at join with one netlink request, whose host end
//! (`plxv…`) is a bridge port (isolated when `enable_icc=false`) and whose other end is born
//! inside the sandbox as `<prefix><n>` with the endpoint's MAC and MTU, then gets its addresses
//! and default route (born there, not moved: a move between namespaces waits for an RCU grace
//! period); published ports are elements of the nftables port maps, owned by the endpoint id.
//!
//! Deleting a link is slow in the kernel (RCU grace periods), so leave and network removal take
//! the link out of service at once (renamed to `plxc…`/`plxd…` and down) and delete it in the
//! background ([`BridgeDriver::settle`] waits for that).
//!
//! Every step that makes something has its undo, run in reverse order when a later step fails,
//! so a failed call leaves nothing behind. Deletions are idempotent and work from the kernel
//! alone (names are derived from ids; ports are found by owner), so a restarted daemon can
//! remove what an earlier run made before reconciliation restored its memory. Reconciliation
//! (`reconcile.rs`, through [`Driver::reconcile`]) also repairs drift while running: a bridge,
//! a veth pair or a published port deleted behind Plexus's back is made again.

mod endpoint;
mod network;
mod ports;
mod reconcile;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use async_trait::async_trait;
use ipnet::IpNet;
use plexus_cnm::{
    Capability, Desired, Driver, DriverError, EndpointCreated, EndpointInfo, InterfaceName, Joined,
    LiveEndpoint, NetworkInfo, ReconcileMode, Reconciled, Scope,
};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{Link, Rtnl};
use plexus_sys::{sysctl, SysError};
use tokio::sync::Mutex;

use crate::firewall::{Firewall, NetworkRules, PortMapping};
use crate::names;
use crate::options::BridgeOptions;
use crate::reaper::Reaper;
use crate::{sys_ctx, DriverConfig};
use network::subnets;
use std::sync::Arc;

/// The range ephemeral host ports are taken from (Docker's).
pub const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49153..=60999;

#[derive(Debug, Clone)]
struct NetState {
    info: NetworkInfo,
    opts: BridgeOptions,
    bridge: String,
    bridge_index: u32,
    /// The bridge's MAC, which every host end of its veth pairs carries too: ports sharing
    /// the bridge's address add no local entry to its forwarding database, so adding or
    /// removing a port never walks one entry per port (the kernel allows equal addresses).
    bridge_mac: [u8; 6],
    /// IPv4 GSO/GRO limit of its veth pairs (`plexus.bridge.gso_ipv4_max_size`, `auto`
    /// resolved when the network was made or restored); `None` for the kernel's 64 KiB.
    gso_ipv4_max_size: Option<u32>,
    /// The bridge is one the user made (named by `com.docker.network.bridge.name`, carrying
    /// no mark of Plexus), as Docker uses an existing bridge: used as it is, never marked,
    /// renamed or deleted; only the gateway addresses Plexus gave it go with the network.
    foreign: bool,
}

impl NetState {
    fn rules(&self) -> NetworkRules {
        NetworkRules {
            bridge: self.bridge.clone(),
            subnets: subnets(&self.info),
            masquerade: self.opts.enable_ip_masquerade,
            internal: self.info.internal,
        }
    }
}

#[derive(Debug, Clone)]
struct EpState {
    network_id: String,
    ipv4: Option<IpNet>,
    ipv6: Option<IpNet>,
    mac: [u8; 6],
    /// Its published ports, chosen (and checked free) when it was made.
    ports: Vec<PortMapping>,
    /// Whether `ports` are in the kernel: from its external connectivity on, until revoked.
    published: bool,
    /// Where its interface is, once joined.
    joined: Option<InSandbox>,
    /// The default routes it gave the sandbox (none when another network already had).
    gateways: Vec<IpAddr>,
}

/// A joined endpoint's interface: the sandbox's namespace path, and the interface's name and
/// index there (kept so leaving needs no lookup).
#[derive(Debug, Clone)]
struct InSandbox {
    key: String,
    ifname: String,
    ifindex: u32,
    /// Handed over to the sandbox's runtime ([`InterfaceName::handoff`]): `ifname` and
    /// `ifindex` are what the driver made in its own namespace; the runtime moved, renamed
    /// and configured it, so the driver leaves the sandbox's side alone.
    handed_off: bool,
}

#[derive(Default)]
struct State {
    networks: HashMap<String, NetState>,
    endpoints: HashMap<String, EpState>,
}

/// The `bridge` driver. See the [module docs](self).
pub struct BridgeDriver {
    host: Netns,
    marker: String,
    owns_namespace: bool,
    rtnl: Rtnl,
    fw: Firewall,
    reaper: Arc<Reaper>,
    /// Held for the whole of every mutating call: calls of one driver run one at a time.
    state: Mutex<State>,
    base_ready: AtomicBool,
    next_port: AtomicU16,
}

impl std::fmt::Debug for BridgeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeDriver")
            .field("host", &self.host.path())
            .field("marker", &self.marker)
            .finish()
    }
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

/// Steps to undo, run in reverse order.
enum Undo {
    DeleteLink(u32),
    Teardown(NetworkRules),
}

impl BridgeDriver {
    /// A bridge driver programming `config.host`, marking what it makes with `config.marker`.
    /// Loads the published ports the kernel already holds (a restarted daemon knows them).
    pub async fn new(config: DriverConfig) -> Result<Self, DriverError> {
        let DriverConfig {
            host,
            marker,
            owns_namespace,
            ..
        } = config;
        if marker.is_empty() || marker.contains(':') || marker.len() > 64 {
            return Err(DriverError::Invalid(format!(
                "marker {marker:?}: must be 1 to 64 bytes without ':'"
            )));
        }
        let rtnl = Rtnl::connect(&host)
            .await
            .map_err(sys_ctx("host namespace"))?;
        let fw = Firewall::open(&host).map_err(sys_ctx("host firewall"))?;
        let reaper = Reaper::new(&host)
            .await
            .map_err(sys_ctx("host namespace"))?;
        Ok(Self {
            host,
            marker,
            owns_namespace,
            reaper: Arc::new(reaper),
            rtnl,
            fw,
            state: Mutex::new(State::default()),
            base_ready: AtomicBool::new(false),
            next_port: AtomicU16::new(*EPHEMERAL_PORTS.start()),
        })
    }

    /// Waits until the links this driver (and the macvlan drivers registered with it by
    /// [`register_builtin`](crate::register_builtin)) is deleting in the background are gone
    /// (leave and network removal return once the link is out of service; the kernel's
    /// deletion takes longer). For tests and shutdown.
    pub async fn settle(&self) {
        self.reaper.settle().await;
    }

    /// Its background deleter, for the drivers registered with it.
    pub(crate) fn reaper(&self) -> Arc<Reaper> {
        self.reaper.clone()
    }

    /// The marker of the links this driver makes.
    pub fn marker(&self) -> &str {
        &self.marker
    }

    /// The bridge's interface name of a network this driver knows.
    pub async fn bridge_name(&self, network_id: &str) -> Option<String> {
        self.state
            .lock()
            .await
            .networks
            .get(network_id)
            .map(|n| n.bridge.clone())
    }

    /// The firewall of the host namespace (to read its state).
    pub fn firewall(&self) -> &Firewall {
        &self.fw
    }

    fn sysctl(&self, key: &str, value: &str) -> Result<(), DriverError> {
        sysctl::write(&self.host, key, value).map_err(sys_ctx(format!("sysctl {key}={value}")))
    }

    /// Host-wide settings, once: nft base, forwarding, br_netfilter off where we own the
    /// namespace.
    fn ensure_host(&self, ipv6: bool) -> Result<(), DriverError> {
        if !self.base_ready.load(Ordering::Acquire) {
            self.fw.ensure_base().map_err(sys_ctx("nftables base"))?;
            self.sysctl("net.ipv4.ip_forward", "1")?;
            if self.owns_namespace {
                for key in [
                    "net.bridge.bridge-nf-call-iptables",
                    "net.bridge.bridge-nf-call-ip6tables",
                ] {
                    // Absent when br_netfilter is not loaded: nothing to turn off.
                    if let Err(e) = sysctl::write(&self.host, key, "0") {
                        tracing::debug!(%key, error = %e, "br_netfilter sysctl not set");
                    }
                }
            }
            self.base_ready.store(true, Ordering::Release);
        }
        if ipv6 {
            self.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        }
        Ok(())
    }

    async fn undo(&self, steps: Vec<Undo>) {
        for step in steps.into_iter().rev() {
            let r = match &step {
                Undo::DeleteLink(i) => self.delete_link(*i).await,
                Undo::Teardown(rules) => self.fw.teardown_network(rules).map_err(sys_ctx("undo")),
            };
            if let Err(e) = r {
                tracing::warn!(error = %e, "undo step failed; reconciliation will clean up");
            }
        }
    }

    async fn delete_link(&self, index: u32) -> Result<(), DriverError> {
        match self.rtnl.delete_link(index).await {
            Ok(()) | Err(SysError::NotFound { .. }) => Ok(()),
            Err(e) => Err(sys_ctx(format!("delete link {index}"))(e)),
        }
    }

    /// The link `name` if it carries exactly `alias`.
    async fn marked_link(&self, name: &str, alias: &str) -> Result<Option<Link>, DriverError> {
        let link = self
            .rtnl
            .link(name)
            .await
            .map_err(sys_ctx(format!("link {name}")))?;
        Ok(link.filter(|l| l.alias.as_deref() == Some(alias)))
    }
}

#[async_trait]
impl Driver for BridgeDriver {
    fn name(&self) -> &str {
        "bridge"
    }

    fn capability(&self) -> Capability {
        Capability {
            scope: Scope::Local,
            connectivity: Scope::Local,
            needs_ipam: true,
            multiple_networks: true,
        }
    }

    fn validate_options(&self, options: &BTreeMap<String, String>) -> Result<(), DriverError> {
        BridgeOptions::parse(options).map(|_| ())
    }

    async fn create_network(&self, network: &NetworkInfo) -> Result<(), DriverError> {
        let mut st = self.state.lock().await;
        if let Some(name) = BridgeOptions::parse(&network.options)?.bridge_name {
            if let Some(other) = st.networks.values().find(|n| n.bridge == name) {
                if other.info.id != network.id {
                    return Err(DriverError::Conflict(format!(
                        "bridge name {name:?} is already used by network {}",
                        other.info.name
                    )));
                }
            }
        }
        self.create_network_locked(&mut st, network, None).await
    }

    async fn delete_network(&self, network_id: &str) -> Result<(), DriverError> {
        let mut st = self.state.lock().await;
        let left: Vec<String> = st
            .endpoints
            .iter()
            .filter(|(_, e)| e.network_id == network_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in left {
            self.delete_endpoint_locked(&mut st, network_id, &id)
                .await?;
        }
        match st.networks.get(network_id).cloned() {
            Some(net) => {
                self.fw
                    .teardown_network(&net.rules())
                    .map_err(sys_ctx(format!("firewall of {}", net.bridge)))?;
                let alias = names::bridge_alias(&self.marker, network_id);
                if net.foreign {
                    self.remove_gateways(&net).await;
                } else if let Some(link) = self.marked_link(&net.bridge, &alias).await? {
                    // Out of service at once (down: its routes go; renamed: a new network
                    // may take its name), deleted in the background.
                    let retired = names::retired_bridge(network_id);
                    self.rtnl
                        .retire(link.index, &retired)
                        .await
                        .map_err(sys_ctx(format!("bridge {}", net.bridge)))?;
                    self.reaper.delete(retired, alias);
                }
                st.networks.remove(network_id);
                tracing::info!(network = %net.info.name, bridge = %net.bridge, "bridge network removed");
                Ok(())
            }
            None => self.delete_unknown_network(network_id).await,
        }
    }

    async fn create_endpoint(
        &self,
        endpoint: &EndpointInfo,
    ) -> Result<EndpointCreated, DriverError> {
        let mut st = self.state.lock().await;
        let id = &endpoint.endpoint_id;
        let net = st
            .networks
            .get(&endpoint.network_id)
            .cloned()
            .ok_or_else(|| {
                DriverError::Failed(format!(
                    "network {} is not known to the bridge driver (not created or not restored)",
                    endpoint.network_id
                ))
            })?;
        if st.endpoints.contains_key(id) {
            return Err(DriverError::Conflict(format!(
                "endpoint {id} already exists"
            )));
        }
        let mac = mac_of(endpoint)?;
        let (mappings, bindings) = self.mappings(&net, endpoint)?;
        // Taken ports are refused now, before any kernel work; they are published once the
        // endpoint is joined (its external connectivity). The veth pair is made at join,
        // straight inside the sandbox.
        self.fw.check(&mappings).map_err(sys_ctx("publish"))?;
        st.endpoints.insert(
            id.clone(),
            EpState {
                network_id: endpoint.network_id.clone(),
                ipv4: endpoint.ipv4,
                ipv6: endpoint.ipv6,
                mac,
                ports: mappings,
                published: false,
                joined: None,
                gateways: Vec::new(),
            },
        );
        Ok(EndpointCreated {
            mac: Some(plexus_sys::rtnl::format_mac(&mac)),
            ports: bindings,
        })
    }

    async fn delete_endpoint(
        &self,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        let mut st = self.state.lock().await;
        self.delete_endpoint_locked(&mut st, network_id, endpoint_id)
            .await
    }

    async fn join(
        &self,
        network_id: &str,
        endpoint_id: &str,
        sandbox_key: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        let mut st = self.state.lock().await;
        self.join_locked(&mut st, network_id, endpoint_id, sandbox_key, interface)
            .await
    }

    async fn leave(&self, network_id: &str, endpoint_id: &str) -> Result<(), DriverError> {
        let mut st = self.state.lock().await;
        let Some(ep) = st.endpoints.get_mut(endpoint_id) else {
            // Not in memory (a restarted daemon): find the pair by its names. Deleting it
            // from the host side takes the sandbox's interface (and its routes) along.
            return self.delete_veth(network_id, endpoint_id).await;
        };
        let (joined, had_default) = (ep.joined.take(), !ep.gateways.is_empty());
        ep.gateways.clear();
        let Some(at) = joined else {
            return Ok(());
        };
        let sandbox = self.retire_veth(endpoint_id, &at).await;
        if had_default {
            // The sandbox lost its default route: another of its networks gives it one.
            if let Err(e) = self
                .hand_over_default_route(&mut st, &at.key, sandbox)
                .await
            {
                tracing::warn!(sandbox = %at.key, error = %e, "no default route handed over");
            }
        }
        Ok(())
    }

    /// Publishes the endpoint's ports (one nftables batch), which its creation chose and
    /// checked free.
    async fn program_external_connectivity(
        &self,
        _network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        let mut st = self.state.lock().await;
        let ep = st.endpoints.get_mut(endpoint_id).ok_or_else(|| {
            DriverError::Failed(format!(
                "endpoint {endpoint_id} is not known to the bridge driver"
            ))
        })?;
        if ep.published || ep.ports.is_empty() {
            return Ok(());
        }
        self.fw.publish(&ep.ports).map_err(sys_ctx("publish"))?;
        ep.published = true;
        Ok(())
    }

    /// Withdraws the endpoint's published ports.
    async fn revoke_external_connectivity(
        &self,
        _network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        let mut st = self.state.lock().await;
        self.unpublish_locked(&mut st, endpoint_id)
    }

    /// The endpoint's MAC and its published ports, as libnetwork's bridge driver reports
    /// them (`com.docker.network.endpoint.macaddress`, `com.docker.network.portmap`).
    async fn endpoint_oper_info(
        &self,
        _network_id: &str,
        endpoint_id: &str,
    ) -> Result<BTreeMap<String, serde_json::Value>, DriverError> {
        let st = self.state.lock().await;
        let (mac, ports) = match st.endpoints.get(endpoint_id) {
            Some(ep) => (
                Some(plexus_sys::rtnl::format_mac(&ep.mac)),
                if ep.published {
                    ep.ports.clone()
                } else {
                    Vec::new()
                },
            ),
            // A restarted daemon knows the ports by owner.
            None => (None, self.published_by(endpoint_id)),
        };
        let portmap: Vec<serde_json::Value> = ports
            .iter()
            .map(|p| {
                let host_ip = p.host_ip.map_or_else(
                    || if p.addr.is_ipv4() { "0.0.0.0" } else { "::" }.to_string(),
                    |ip| ip.to_string(),
                );
                serde_json::json!({
                    "Proto": p.proto.number(),
                    "IP": p.addr.to_string(),
                    "Port": p.port,
                    "HostIP": host_ip,
                    "HostPort": p.host_port,
                    "HostPortEnd": p.host_port,
                })
            })
            .collect();
        let mut info = BTreeMap::new();
        if let Some(mac) = mac {
            info.insert(
                "com.docker.network.endpoint.macaddress".to_string(),
                serde_json::Value::String(mac),
            );
        }
        info.insert(
            "com.docker.network.portmap".to_string(),
            serde_json::Value::Array(portmap),
        );
        Ok(info)
    }

    /// Endpoints whose host end is marked and up (join marks it and brings it up last, leave
    /// unmarks it first), with their interface names as the mark says and whether their ports
    /// are published.
    async fn live_endpoints(&self) -> Result<Option<BTreeMap<String, LiveEndpoint>>, DriverError> {
        self.live().await.map(Some)
    }

    /// Restores the networks (bridge, addresses, firewall elements) and the driver's memory;
    /// periodically also makes again deleted bridges, pairs and port elements; deletes only
    /// marked links and Plexus firewall elements the store does not know.
    async fn reconcile(
        &self,
        desired: &Desired,
        mode: ReconcileMode,
    ) -> Result<Reconciled, DriverError> {
        self.reconcile_with(desired, mode).await
    }
}
