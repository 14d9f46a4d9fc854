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
//! remove what an earlier run made before [`BridgeDriver::reconcile`] restored its memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};

use async_trait::async_trait;
use ipnet::IpNet;
use plexus_cnm::{
    Capability, Driver, DriverError, EndpointCreated, EndpointInfo, InterfaceName, Joined,
    NetworkInfo, PortBinding, Scope,
};
use plexus_sys::netns::Netns;
use plexus_sys::nft::{Firewall, NetworkRules, PortMapping, Proto};
use plexus_sys::rtnl::{BridgeSpec, Link, PortFlags, Route, Rtnl, VethPair, LOOPBACK_IFINDEX};
use plexus_sys::{sysctl, SysError};
use tokio::sync::Mutex;

use crate::gso;
use crate::names::{self, Marked};
use crate::options::BridgeOptions;
use crate::reaper::Reaper;
use crate::{sys_ctx, DriverConfig};

/// The range ephemeral host ports are taken from (Docker's).
pub const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 49153..=60999;

/// What [`BridgeDriver::reconcile`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Networks of the store whose data plane was (re)made or adopted.
    pub restored: Vec<String>,
    /// Marked links deleted because the store does not know their network or endpoint.
    pub links: Vec<String>,
    /// nftables bridges no known network has.
    pub bridges: Vec<String>,
    /// nftables subnets no known network has.
    pub subnets: Vec<(IpAddr, u8)>,
    /// Published ports whose owner the store does not know.
    pub ports: Vec<PortMapping>,
}

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
    reaper: Reaper,
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

fn subnets(info: &NetworkInfo) -> Vec<(IpAddr, u8)> {
    let v6 = if info.enable_ipv6 {
        &info.ipv6[..]
    } else {
        &[]
    };
    info.ipv4
        .iter()
        .chain(v6)
        .map(|p| (p.subnet.network(), p.subnet.prefix_len()))
        .collect()
}

fn proto_of(binding: &PortBinding) -> Result<Proto, DriverError> {
    match binding.proto.to_ascii_lowercase().as_str() {
        "tcp" | "" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        "sctp" => Ok(Proto::Sctp),
        other => Err(DriverError::Invalid(format!(
            "port {}/{other}: protocol must be tcp, udp or sctp",
            binding.container_port
        ))),
    }
}

/// Waits (at most two seconds) until `addr` on link `index` is no longer tentative, so it can
/// be bound (a tentative IPv6 address cannot). A new IPv6 address stays tentative until the
/// kernel's link watch sees the link operational, up to a second after it went up; a sandbox
/// should be able to use its address as soon as join returns.
async fn wait_usable(rs: &Rtnl, index: u32, addr: std::net::Ipv6Addr) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        // Through the join's own connection: no thread enters the sandbox to find out.
        let usable = rs
            .tentative(index)
            .await
            .map(|t| !t.contains(&IpAddr::V6(addr)))
            .unwrap_or(true);
        if usable {
            return;
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(%addr, "IPv6 address still tentative after 2 s");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A netlink connection into the sandbox whose namespace is at `key`.
async fn sandbox_rtnl(key: &str) -> Result<Rtnl, SysError> {
    Rtnl::connect(&Netns::open(Path::new(key))?).await
}

/// The first port of `range` that no published or already chosen mapping of `proto` has
/// (Docker's `-p 8000-8010:80`).
fn first_free(
    proto: Proto,
    range: std::ops::RangeInclusive<u16>,
    fw: &Firewall,
    chosen: &[PortMapping],
) -> Result<u16, DriverError> {
    let (lo, hi) = (*range.start(), *range.end());
    range
        .into_iter()
        .find(|port| !port_taken(proto, *port, fw, chosen))
        .ok_or_else(|| {
            DriverError::Conflict(format!(
                "no free {} host port left in {lo}-{hi}",
                proto.name()
            ))
        })
}

/// Whether host port `port` of `proto` is published already, or chosen earlier in this call.
fn port_taken(proto: Proto, port: u16, fw: &Firewall, chosen: &[PortMapping]) -> bool {
    fw.port_in_use(proto, port)
        || chosen
            .iter()
            .any(|p| p.proto == proto && p.host_port == port)
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
            reaper,
            rtnl,
            fw,
            state: Mutex::new(State::default()),
            base_ready: AtomicBool::new(false),
            next_port: AtomicU16::new(*EPHEMERAL_PORTS.start()),
        })
    }

    /// Waits until the links this driver is deleting in the background are gone (leave and
    /// network removal return once the link is out of service; the kernel's deletion takes
    /// longer). For tests and shutdown.
    pub async fn settle(&self) {
        self.reaper.settle().await;
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

    /// Makes (or adopts) a network's kernel objects and remembers it. `auto_gso` is
    /// `plexus.bridge.gso_ipv4_max_size=auto` on this host when the caller already knows it (one
    /// link dump for all the networks a restart restores), `None` to look it up if needed.
    async fn create_network_locked(
        &self,
        st: &mut State,
        info: &NetworkInfo,
        auto_gso: Option<Option<u32>>,
    ) -> Result<(), DriverError> {
        if st.networks.contains_key(&info.id) {
            return Ok(());
        }
        let opts = BridgeOptions::parse(&info.options)?;
        let bridge = opts
            .bridge_name
            .clone()
            .unwrap_or_else(|| names::default_bridge(&info.id));
        let alias = names::bridge_alias(&self.marker, &info.id);
        if alias.len() > names::MAX_ALIAS {
            return Err(DriverError::Invalid(format!(
                "network id {:?} is too long",
                info.id
            )));
        }
        let ipv6 = info.enable_ipv6 && !info.ipv6.is_empty();
        self.ensure_host(ipv6)?;
        let gso_ipv4_max_size = match (opts.gso_ipv4_max_size, auto_gso) {
            (Some(size), _) => Some(size),
            (None, Some(auto)) => auto,
            (None, None) => self.auto_gso_ipv4_max_size().await?,
        };
        let mut undo = Vec::new();
        let r = self
            .make_network(info, &opts, &bridge, &alias, ipv6, &mut undo)
            .await;
        match r {
            Ok((index, bridge_mac)) => {
                st.networks.insert(
                    info.id.clone(),
                    NetState {
                        info: info.clone(),
                        opts,
                        bridge: bridge.clone(),
                        bridge_index: index,
                        bridge_mac,
                        gso_ipv4_max_size,
                    },
                );
                tracing::info!(network = %info.name, %bridge, ?gso_ipv4_max_size, "bridge network ready");
                Ok(())
            }
            Err(e) => {
                self.undo(undo).await;
                Err(e)
            }
        }
    }

    /// `plexus.bridge.gso_ipv4_max_size=auto` on this host: see [`gso`](crate::gso).
    async fn auto_gso_ipv4_max_size(&self) -> Result<Option<u32>, DriverError> {
        let links = self.rtnl.links().await.map_err(sys_ctx("host links"))?;
        Ok(gso::auto_ipv4_max_size(&links, |l| self.made_by_us(l)))
    }

    /// Whether this driver made `link`: marked by it, or (made but not yet marked when a
    /// daemon died, or retired and unmarked) unmarked with a name it derives.
    fn made_by_us(&self, link: &Link) -> bool {
        match link.alias.as_deref() {
            Some(alias) => names::parse_alias(&self.marker, alias).is_some(),
            None => names::is_derived_name(&link.name, link.kind.as_deref()),
        }
    }

    async fn make_network(
        &self,
        info: &NetworkInfo,
        opts: &BridgeOptions,
        bridge: &str,
        alias: &str,
        ipv6: bool,
        undo: &mut Vec<Undo>,
    ) -> Result<(u32, [u8; 6]), DriverError> {
        let what = format!("bridge {bridge}");
        let br = match self.rtnl.link(bridge).await.map_err(sys_ctx(&what))? {
            // Ours already (a restart, or reconciliation): adopt it.
            Some(l) if l.alias.as_deref() == Some(alias) => l,
            Some(l) => {
                return Err(DriverError::Conflict(format!(
                    "bridge name {bridge:?} is already used by another interface{}",
                    l.alias
                        .as_deref()
                        .and_then(|a| names::parse_alias(&self.marker, a))
                        .map(|m| match m {
                            Marked::Bridge { network } => format!(" (network {network})"),
                            Marked::Veth { endpoint, .. } => format!(" (endpoint {endpoint})"),
                        })
                        .unwrap_or_default()
                )))
            }
            None => {
                let l = self
                    .rtnl
                    .add_bridge(
                        &BridgeSpec {
                            name: bridge,
                            mtu: opts.mtu,
                            // Fixed, so the gateway's MAC never changes under the sandboxes.
                            mac: Some(names::bridge_mac(&info.id)),
                            mcast_snooping: opts.mcast_snooping,
                        },
                        alias,
                    )
                    .await
                    .map_err(sys_ctx(&what))?;
                undo.push(Undo::DeleteLink(l.index));
                l
            }
        };
        if ipv6 {
            // The gateway is usable at once (no duplicate address detection).
            self.sysctl(&format!("net.ipv6.conf.{bridge}.accept_dad"), "0")?;
        }
        let v4 = info.ipv4.iter().filter(|_| !opts.inhibit_ipv4);
        let v6 = info.ipv6.iter().filter(|_| ipv6);
        for gw in v4.chain(v6).filter_map(|p| p.gateway) {
            match self
                .rtnl
                .add_address(br.index, gw.addr(), gw.prefix_len())
                .await
            {
                Ok(()) | Err(SysError::Exists { .. }) => {}
                Err(e) => return Err(sys_ctx(format!("gateway {gw} on {bridge}"))(e)),
            }
        }
        self.sysctl(&format!("net.ipv4.conf.{bridge}.route_localnet"), "1")?;
        self.rtnl.set_up(br.index).await.map_err(sys_ctx(&what))?;
        let rules = NetworkRules {
            bridge: bridge.to_string(),
            subnets: subnets(info),
            masquerade: opts.enable_ip_masquerade,
            internal: info.internal,
        };
        self.fw
            .setup_network(&rules)
            .map_err(sys_ctx(format!("firewall of {bridge}")))?;
        undo.push(Undo::Teardown(rules));
        let mac = br
            .mac
            .as_deref()
            .and_then(|m| <[u8; 6]>::try_from(m).ok())
            .unwrap_or_else(|| names::bridge_mac(&info.id));
        Ok((br.index, mac))
    }

    /// Removes a network's firewall elements and bridge, knowing only the kernel: the bridge
    /// is found by its mark, the subnets by its addresses.
    async fn delete_unknown_network(&self, network_id: &str) -> Result<(), DriverError> {
        let alias = names::bridge_alias(&self.marker, network_id);
        let links = self.rtnl.links().await.map_err(sys_ctx("list links"))?;
        for link in links.iter().filter(|l| l.alias.as_deref() == Some(&alias)) {
            self.remove_bridge_link(link).await?;
        }
        Ok(())
    }

    async fn remove_bridge_link(&self, link: &Link) -> Result<(), DriverError> {
        let addrs = self
            .rtnl
            .addresses(link.index)
            .await
            .map_err(sys_ctx(format!("addresses of {}", link.name)))?;
        let subnets = addrs
            .into_iter()
            .filter(|(a, _)| !matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
            .filter_map(|(a, len)| IpNet::new(a, len).ok())
            .map(|n| (n.network(), n.prefix_len()))
            .collect();
        let rules = NetworkRules {
            bridge: link.name.clone(),
            subnets,
            masquerade: true,
            internal: true,
        };
        self.fw
            .teardown_network(&rules)
            .map_err(sys_ctx(format!("firewall of {}", link.name)))?;
        self.delete_link(link.index).await
    }

    /// Picks host ports for the bindings and builds the mappings.
    fn mappings(
        &self,
        net: &NetState,
        ep: &EndpointInfo,
    ) -> Result<(Vec<PortMapping>, Vec<PortBinding>), DriverError> {
        let mut out: Vec<PortMapping> = Vec::new();
        let mut bindings = Vec::new();
        for b in &ep.ports {
            let proto = proto_of(b)?;
            if b.container_port == 0 {
                return Err(DriverError::Invalid(format!(
                    "port 0/{}: the container port must not be 0",
                    proto.name()
                )));
            }
            let mut targets: Vec<(IpAddr, Option<IpAddr>)> = Vec::new();
            if let Some(v4) = ep.ipv4 {
                match b.host_ip {
                    None => targets.push((v4.addr(), net.opts.host_binding_ipv4.map(IpAddr::V4))),
                    Some(ip @ IpAddr::V4(_)) => {
                        targets.push((v4.addr(), (!ip.is_unspecified()).then_some(ip)))
                    }
                    Some(IpAddr::V6(_)) => {}
                }
            }
            if let Some(v6) = ep.ipv6 {
                match b.host_ip {
                    None => targets.push((v6.addr(), None)),
                    Some(ip @ IpAddr::V6(_)) => {
                        targets.push((v6.addr(), (!ip.is_unspecified()).then_some(ip)))
                    }
                    Some(IpAddr::V4(_)) => {}
                }
            }
            if targets.is_empty() {
                return Err(DriverError::Invalid(format!(
                    "port {}/{}: the endpoint has no address of the host ip's family",
                    b.container_port,
                    proto.name()
                )));
            }
            let host_port = if b.host_port == 0 {
                self.ephemeral(proto, &out)?
            } else if b.host_port_end > b.host_port {
                first_free(proto, b.host_port..=b.host_port_end, &self.fw, &out)?
            } else if b.host_port_end != 0 && b.host_port_end < b.host_port {
                return Err(DriverError::Invalid(format!(
                    "host port range {}-{}: ends before it starts",
                    b.host_port, b.host_port_end
                )));
            } else {
                b.host_port
            };
            for (addr, host_ip) in &targets {
                out.push(PortMapping {
                    proto,
                    host_ip: *host_ip,
                    host_port,
                    addr: *addr,
                    port: b.container_port,
                    owner: ep.endpoint_id.clone(),
                });
            }
            let mut filled = b.clone();
            filled.host_port = host_port;
            filled.host_port_end = 0;
            if filled.host_ip.is_none() && ep.ipv4.is_some() && ep.ipv6.is_none() {
                filled.host_ip = net.opts.host_binding_ipv4.map(IpAddr::V4);
            }
            bindings.push(filled);
        }
        Ok((out, bindings))
    }

    /// A host port in [`EPHEMERAL_PORTS`] that nobody has for `proto`.
    fn ephemeral(&self, proto: Proto, chosen: &[PortMapping]) -> Result<u16, DriverError> {
        let (lo, hi) = (*EPHEMERAL_PORTS.start(), *EPHEMERAL_PORTS.end());
        let span = u32::from(hi - lo) + 1;
        let start = self.next_port.load(Ordering::Relaxed).clamp(lo, hi);
        for i in 0..span {
            let port = lo + ((u32::from(start - lo) + i) % span) as u16;
            if !port_taken(proto, port, &self.fw, chosen) {
                let next = if port == hi { lo } else { port + 1 };
                self.next_port.store(next, Ordering::Relaxed);
                return Ok(port);
            }
        }
        Err(DriverError::Conflict(format!(
            "no free {} host port left in {lo}-{hi}",
            proto.name()
        )))
    }

    /// Whether an endpoint's bridge port needs hairpin mode: only with published ports (so a
    /// sandbox reaches its own through a host address) and only where `br_netfilter` may be
    /// on (the driver turns it off in namespaces it owns, and then the path is routed).
    fn needs_hairpin(&self, publishes: bool) -> bool {
        publishes && !self.owns_namespace
    }

    /// Makes the veth pair of a joining endpoint in one request: the host end on the bridge
    /// (down, unmarked: [`BridgeDriver::join_locked`] brings it into service last), the other
    /// end straight inside the sandbox as `interface`'s guess or, if the kernel says that is
    /// taken, the first free `<prefix><n>` after it (then the sandbox's links are listed).
    /// Returns the sandbox-side name.
    async fn make_pair(
        &self,
        net: &NetState,
        endpoint_id: &str,
        ep: &EpState,
        rs: &Rtnl,
        interface: InterfaceName<'_>,
    ) -> Result<String, DriverError> {
        let host_name = names::host_veth(endpoint_id);
        let mut n = interface.first;
        let mut taken: Option<BTreeSet<String>> = None;
        let mut cleared_host_end = false;
        loop {
            let name = match interface.exact {
                Some(exact) => exact.to_string(),
                None => format!("{}{n}", interface.prefix),
            };
            if taken.as_ref().is_some_and(|t| t.contains(&name)) {
                n += 1;
                continue;
            }
            let pair = VethPair {
                name: &host_name,
                master: Some(net.bridge_index),
                mac: Some(net.bridge_mac),
                mtu: net.opts.mtu,
                peer_name: &name,
                peer_ns: rs.netns(),
                peer_mac: Some(ep.mac),
                gso_ipv4_max_size: net.gso_ipv4_max_size,
            };
            match self.rtnl.add_veth_pair(&pair).await {
                Ok(()) => return Ok(name),
                Err(SysError::Exists { .. }) if n < interface.first + 64 => {
                    // Either the sandbox has the name (not through us, or it took it
                    // meanwhile), or a host end of an earlier run of this endpoint is left
                    // over (ours: derived from its id).
                    let left = self
                        .rtnl
                        .link(&host_name)
                        .await
                        .map_err(sys_ctx(format!("veth {host_name}")))?;
                    match left {
                        Some(l) if !cleared_host_end => {
                            cleared_host_end = true;
                            self.delete_link(l.index).await?;
                        }
                        _ => {
                            if let Some(exact) = interface.exact {
                                return Err(DriverError::Conflict(format!(
                                    "interface name {exact:?} is taken in the sandbox"
                                )));
                            }
                            if taken.is_none() {
                                let links = rs.links().await.map_err(sys_ctx("sandbox links"))?;
                                taken = Some(links.into_iter().map(|l| l.name).collect());
                            }
                            n += 1;
                        }
                    }
                }
                Err(e) => {
                    return Err(sys_ctx(format!(
                        "veth {host_name} into the sandbox as {name}"
                    ))(e))
                }
            }
        }
    }

    /// Takes a joined endpoint's veth pair out of service at once and deletes it in the
    /// background. First the host end loses its mark: from then on start-up reconciliation
    /// counts the endpoint as gone (and deletes the link as unmarked), whatever else a crash
    /// cuts short. Then the sandbox side is renamed off its name and brought down, which
    /// drops its routes and frees the name for the next join; deleting the host end later
    /// takes the pair away. Returns the connection to the sandbox, if it could be opened.
    async fn retire_veth(&self, endpoint_id: &str, at: &InSandbox) -> Option<Rtnl> {
        let host_name = names::host_veth(endpoint_id);
        if let Err(e) = self.rtnl.set_alias_named(&host_name, "").await {
            tracing::debug!(endpoint = %endpoint_id, error = %e, "host end not unmarked");
        }
        let retired = async {
            let rs = sandbox_rtnl(&at.key).await?;
            rs.retire(at.ifindex, &names::peer_veth(endpoint_id))
                .await
                .map(|()| rs)
        }
        .await;
        self.reaper.delete(host_name, String::new());
        match retired {
            Ok(rs) => Some(rs),
            Err(e) => {
                // The sandbox (or its interface) is gone already: the host end goes anyway.
                tracing::debug!(endpoint = %endpoint_id, interface = %at.ifname, error = %e, "sandbox interface not retired");
                None
            }
        }
    }

    /// Deletes an endpoint's veth pair wherever its other end is (links marked as this
    /// endpoint's only; the host end's mark also names the sandbox-side interface).
    async fn delete_veth(&self, network_id: &str, endpoint_id: &str) -> Result<(), DriverError> {
        for name in [names::host_veth(endpoint_id), names::peer_veth(endpoint_id)] {
            let link = self
                .rtnl
                .link(&name)
                .await
                .map_err(sys_ctx(format!("link {name}")))?;
            let Some(link) = link else { continue };
            let mark = link
                .alias
                .as_deref()
                .and_then(|a| names::parse_alias(&self.marker, a));
            if matches!(mark, Some(Marked::Veth { network, endpoint, .. })
                if network == network_id && endpoint == endpoint_id)
            {
                self.delete_link(link.index).await?;
            }
        }
        Ok(())
    }

    async fn join_locked(
        &self,
        st: &mut State,
        network_id: &str,
        endpoint_id: &str,
        sandbox_key: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        let ep = st.endpoints.get(endpoint_id).cloned().ok_or_else(|| {
            DriverError::Failed(format!(
                "endpoint {endpoint_id} is not known to the bridge driver"
            ))
        })?;
        if ep.network_id != network_id {
            return Err(DriverError::Failed(format!(
                "endpoint {endpoint_id} is on network {}, not {network_id}",
                ep.network_id
            )));
        }
        let net = st.networks.get(network_id).cloned().ok_or_else(|| {
            DriverError::Failed(format!(
                "network {network_id} is not known to the bridge driver"
            ))
        })?;
        if let Some(at) = &ep.joined {
            return Err(DriverError::Conflict(format!(
                "endpoint {endpoint_id} is already in sandbox {}",
                at.key
            )));
        }
        let prefix = interface.prefix;
        let bad_prefix = prefix.is_empty() || prefix.len() > plexus_sys::rtnl::MAX_IFNAME - 3;
        if interface.exact.is_none() && bad_prefix {
            return Err(DriverError::Invalid(format!(
                "interface prefix {prefix:?}: must be 1 to 12 bytes"
            )));
        }
        let alias = names::veth_alias(&self.marker, &ep.network_id, endpoint_id);
        // Room for the host end's mark, which adds the interface name.
        if alias.len() + 1 + plexus_sys::rtnl::MAX_IFNAME > names::MAX_ALIAS {
            return Err(DriverError::Invalid(format!(
                "endpoint id {endpoint_id:?} is too long"
            )));
        }
        let rs = sandbox_rtnl(sandbox_key)
            .await
            .map_err(sys_ctx("sandbox"))?;
        let name = self
            .make_pair(&net, endpoint_id, &ep, &rs, interface)
            .await?;
        let host_name = names::host_veth(endpoint_id);
        let port = PortFlags {
            isolated: !net.opts.enable_icc,
            hairpin: self.needs_hairpin(!ep.ports.is_empty()),
        };
        let done = async {
            let (ifindex, gateways) = self.configure(&net, &ep, endpoint_id, &rs, &name).await?;
            // Last, the host end: marked and up. Start-up reconciliation takes an endpoint
            // whose host end is not both for one whose join never finished.
            let host_alias =
                names::host_veth_alias(&self.marker, &ep.network_id, endpoint_id, &name);
            self.rtnl
                .activate_port(&host_name, port, &host_alias)
                .await
                .map_err(sys_ctx(format!("veth {host_name}")))?;
            if let Some(IpAddr::V6(v6)) = ep.ipv6.map(|a| a.addr()) {
                // Usable once the pair has its carrier (both ends up).
                wait_usable(&rs, ifindex, v6).await;
            }
            Ok::<_, DriverError>((ifindex, gateways))
        }
        .await;
        match done {
            Ok((ifindex, gateways)) => {
                if let Some(e) = st.endpoints.get_mut(endpoint_id) {
                    e.joined = Some(InSandbox {
                        key: sandbox_key.to_string(),
                        ifname: name.clone(),
                        ifindex,
                    });
                    e.gateways = gateways.clone();
                }
                tracing::debug!(endpoint = %endpoint_id, sandbox = %sandbox_key, interface = %name, "joined");
                Ok(Joined {
                    interface: Some(name),
                    gateways,
                    ..Joined::default()
                })
            }
            Err(e) => {
                // Ours (just made, named from the endpoint id), marked or not; deleting the
                // host end takes the sandbox side along.
                let gone = match self.rtnl.link(&host_name).await {
                    Ok(Some(l)) => self.delete_link(l.index).await,
                    Ok(None) => Ok(()),
                    Err(e) => Err(sys_ctx(format!("veth {host_name}"))(e)),
                };
                if let Err(e) = gone {
                    tracing::warn!(error = %e, "cannot delete veth after failed join");
                }
                Err(e)
            }
        }
    }

    /// Sets up a freshly made pair inside the sandbox: addresses, the interface (marked and
    /// up), loopback and the default route. Returns the interface's index and the gateways it
    /// routed through.
    async fn configure(
        &self,
        net: &NetState,
        ep: &EpState,
        endpoint_id: &str,
        rs: &Rtnl,
        name: &str,
    ) -> Result<(u32, Vec<IpAddr>), DriverError> {
        let what = format!("sandbox interface {name}");
        let link = rs.require_link(name).await.map_err(sys_ctx(&what))?;
        if ep.ipv6.is_some() {
            // Usable at once, as Docker does with IFA_F_NODAD.
            if let Err(e) =
                sysctl::write(rs.netns(), &format!("net.ipv6.conf.{name}.accept_dad"), "0")
            {
                tracing::debug!(error = %e, "accept_dad not set");
            }
        }
        for addr in ep.ipv4.iter().chain(ep.ipv6.iter()) {
            rs.add_address(link.index, addr.addr(), addr.prefix_len())
                .await
                .map_err(sys_ctx(&what))?;
        }
        let alias = names::veth_alias(&self.marker, &ep.network_id, endpoint_id);
        rs.set_up_marked(link.index, &alias, ep.ipv6.is_some())
            .await
            .map_err(sys_ctx(&what))?;
        // Loopback is up in a sandbox once it has an endpoint; a no-op request then.
        rs.set_up(LOOPBACK_IFINDEX)
            .await
            .map_err(sys_ctx("sandbox lo"))?;
        let mut gateways = Vec::new();
        if !net.info.internal {
            let v4 = net.info.ipv4.first().filter(|_| ep.ipv4.is_some());
            let v6 = net.info.ipv6.first().filter(|_| ep.ipv6.is_some());
            for gw in v4.into_iter().chain(v6).filter_map(|p| p.gateway) {
                let route = Route {
                    destination: None,
                    gateway: Some(gw.addr()),
                    oif: Some(link.index),
                };
                match rs.add_route(&route).await {
                    Ok(()) => gateways.push(gw.addr()),
                    // Another network already gives the sandbox its default route.
                    Err(SysError::Exists { .. }) => {}
                    Err(e) => return Err(sys_ctx(format!("default route via {gw}"))(e)),
                }
            }
        }
        Ok((link.index, gateways))
    }

    /// The endpoints whose join finished and whose pair still stands: their host end
    /// (named from the endpoint id) is marked and up. `join` marks the host end and brings it
    /// up last and `leave` unmarks it first, so an endpoint the store records but this set lacks was
    /// cut short by a crash (connect or disconnect), or its sandbox's namespace, and with it
    /// the pair, is gone. The daemon forgets such endpoints before [`BridgeDriver::reconcile`].
    ///
    /// Each live endpoint comes with the name its interface has in the sandbox, as its join
    /// marked it (`None` for a pair marked by an older Plexus): a crash between a join that
    /// had to take another name than the record's guess and the record's correction leaves
    /// the record with the guess, and the daemon corrects it from this.
    pub async fn live_endpoints(&self) -> Result<BTreeMap<String, Option<String>>, DriverError> {
        // Background deletions first: a link being deleted is not live.
        self.reaper.settle().await;
        let links = self.rtnl.links().await.map_err(sys_ctx("list links"))?;
        Ok(links
            .into_iter()
            .filter(|l| l.up)
            .filter_map(
                |l| match names::parse_alias(&self.marker, l.alias.as_deref()?) {
                    Some(Marked::Veth {
                        endpoint,
                        interface,
                        ..
                    }) if l.name == names::host_veth(&endpoint) => Some((endpoint, interface)),
                    _ => None,
                },
            )
            .collect())
    }

    /// The endpoints whose ports are published in the kernel. Start-up reconciliation rolls
    /// back a recorded endpoint with ports that has none published: a crash came between its
    /// join and its external connectivity, or between revoking that and its leave.
    pub fn publishing_endpoints(&self) -> BTreeSet<String> {
        self.fw.published().into_iter().map(|p| p.owner).collect()
    }

    /// Makes the kernel match the store after a restart or a crash.
    ///
    /// `networks` are the store's networks of this driver (their records carry everything the
    /// data plane needs), `endpoints` the ids of every endpoint in the store. Each network's
    /// bridge, addresses and firewall elements are made or adopted (idempotently) and the
    /// driver's memory restored; then marked links whose network or endpoint the store does not
    /// know are deleted, and so are the nftables elements (bridges, subnets, published ports)
    /// that no known network or endpoint has. Other links are never touched, except one with
    /// no alias at all and a name this driver derives from an id (`plx-`, `plxv`, `plxc` and
    /// 11 hex digits): a daemon died between making and marking it. The bridge driver is the
    /// only user of Plexus's nftables network sets in its namespace.
    pub async fn reconcile(
        &self,
        networks: &[NetworkInfo],
        endpoints: &BTreeSet<String>,
    ) -> Result<Reconciled, DriverError> {
        let mut st = self.state.lock().await;
        // Background deletions first, so the scan below sees the kernel as it will be.
        self.reaper.settle().await;
        let mut out = Reconciled::default();
        let known: BTreeSet<&str> = networks.iter().map(|n| n.id.as_str()).collect();
        // Forget what the store no longer has.
        st.networks.retain(|id, _| known.contains(id.as_str()));
        st.endpoints
            .retain(|id, e| endpoints.contains(id) && known.contains(e.network_id.as_str()));
        let auto_gso = if networks.iter().any(|n| !st.networks.contains_key(&n.id)) {
            Some(self.auto_gso_ipv4_max_size().await?)
        } else {
            None
        };
        for info in networks {
            if !st.networks.contains_key(&info.id) {
                match self.create_network_locked(&mut st, info, auto_gso).await {
                    Ok(()) => out.restored.push(info.id.clone()),
                    Err(e) => {
                        tracing::warn!(network = %info.name, error = %e, "cannot restore network")
                    }
                }
            }
        }
        let links = self.rtnl.links().await.map_err(sys_ctx("list links"))?;
        for link in &links {
            let Some(mark) = link
                .alias
                .as_deref()
                .and_then(|a| names::parse_alias(&self.marker, a))
            else {
                // Made, but not yet marked, when a daemon died: no alias at all and a name
                // this driver derives from an id.
                if link.alias.is_none() && names::is_derived_name(&link.name, link.kind.as_deref())
                {
                    match self.delete_link(link.index).await {
                        Ok(()) => out.links.push(link.name.clone()),
                        Err(e) => {
                            tracing::warn!(link = %link.name, error = %e, "cannot delete unmarked link")
                        }
                    }
                }
                continue;
            };
            let stale = match &mark {
                Marked::Bridge { network } => !known.contains(network.as_str()),
                Marked::Veth {
                    network, endpoint, ..
                } => !known.contains(network.as_str()) || !endpoints.contains(endpoint),
            };
            if !stale {
                continue;
            }
            let r = match mark {
                Marked::Bridge { .. } => self.remove_bridge_link(link).await,
                Marked::Veth { .. } => self.delete_link(link.index).await,
            };
            match r {
                Ok(()) => out.links.push(link.name.clone()),
                Err(e) => tracing::warn!(link = %link.name, error = %e, "cannot delete stale link"),
            }
        }
        // Endpoints' memory after a restart: the veth is in the kernel; ports are by owner.
        let rules: Vec<NetworkRules> = st.networks.values().map(NetState::rules).collect();
        let ports: Vec<PortMapping> = self
            .fw
            .state()
            .map_err(sys_ctx("firewall state"))?
            .ports
            .into_iter()
            .filter(|p| endpoints.contains(&p.owner))
            .collect();
        let removed = self
            .fw
            .reconcile(&rules, &ports)
            .map_err(sys_ctx("firewall reconcile"))?;
        out.bridges = removed.bridges;
        out.subnets = removed.subnets;
        out.ports = removed.ports;
        tracing::info!(
            restored = out.restored.len(),
            links = out.links.len(),
            bridges = out.bridges.len(),
            ports = out.ports.len(),
            "bridge driver reconciled with the store"
        );
        Ok(out)
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
                if let Some(link) = self.marked_link(&net.bridge, &alias).await? {
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
        let mac = match &endpoint.mac {
            Some(m) => names::parse_mac(m).ok_or_else(|| {
                DriverError::Invalid(format!(
                    "mac address {m:?}: must be a unicast aa:bb:cc:dd:ee:ff"
                ))
            })?,
            None => names::derive_mac(
                endpoint.ipv4.and_then(|a| match a.addr() {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                }),
                id,
            ),
        };
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
}

impl BridgeDriver {
    /// Gives the sandbox at `key` a default route through another joined, non-internal
    /// endpoint of this driver, as Docker moves the gateway when the gateway endpoint leaves.
    /// `sandbox`: the connection to it, if the caller has one.
    async fn hand_over_default_route(
        &self,
        st: &mut State,
        key: &str,
        sandbox: Option<Rtnl>,
    ) -> Result<(), DriverError> {
        let next = st.endpoints.iter().find_map(|(id, e)| {
            // The sandbox first: a string compare, where the network lookup hashes (this
            // walks every endpoint of the driver).
            let at = e.joined.as_ref().filter(|at| at.key == key)?;
            let net = st.networks.get(&e.network_id)?;
            (!net.info.internal).then(|| (id.clone(), at.ifindex, net.clone(), e.clone()))
        });
        let Some((id, ifindex, net, ep)) = next else {
            return Ok(());
        };
        let rs = match sandbox {
            Some(rs) => rs,
            None => sandbox_rtnl(key).await.map_err(sys_ctx("sandbox"))?,
        };
        let v4 = net.info.ipv4.first().filter(|_| ep.ipv4.is_some());
        let v6 = net.info.ipv6.first().filter(|_| ep.ipv6.is_some());
        let mut added = Vec::new();
        for gw in v4.into_iter().chain(v6).filter_map(|p| p.gateway) {
            let route = Route {
                destination: None,
                gateway: Some(gw.addr()),
                oif: Some(ifindex),
            };
            match rs.add_route(&route).await {
                Ok(()) => added.push(gw.addr()),
                Err(SysError::Exists { .. }) => {}
                Err(e) => return Err(sys_ctx(format!("default route via {gw}"))(e)),
            }
        }
        if let Some(e) = st.endpoints.get_mut(&id) {
            e.gateways.extend(added);
        }
        Ok(())
    }

    /// The ports the firewall has published for `endpoint_id` (it read them from the kernel
    /// when it was opened: a restarted daemon finds them).
    fn published_by(&self, endpoint_id: &str) -> Vec<PortMapping> {
        self.fw
            .published()
            .into_iter()
            .filter(|p| p.owner == endpoint_id)
            .collect()
    }

    /// Withdraws an endpoint's published ports: from memory, or by owner from the firewall
    /// (which read them from the kernel when it was opened: a restarted daemon finds them).
    fn unpublish_locked(&self, st: &mut State, endpoint_id: &str) -> Result<(), DriverError> {
        let ports: Vec<PortMapping> = match st.endpoints.get_mut(endpoint_id) {
            Some(ep) if ep.published => {
                ep.published = false;
                ep.ports.clone()
            }
            Some(_) => Vec::new(),
            None => self.published_by(endpoint_id),
        };
        if !ports.is_empty() {
            self.fw.unpublish(&ports).map_err(sys_ctx("unpublish"))?;
        }
        Ok(())
    }

    async fn delete_endpoint_locked(
        &self,
        st: &mut State,
        network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        self.unpublish_locked(st, endpoint_id)?;
        match st.endpoints.get(endpoint_id).map(|ep| ep.joined.clone()) {
            Some(Some(at)) => {
                self.retire_veth(endpoint_id, &at).await;
            }
            // Never joined, or left already: it has no pair.
            Some(None) => {}
            None => self.delete_veth(network_id, endpoint_id).await?,
        }
        st.endpoints.remove(endpoint_id);
        Ok(())
    }
}
