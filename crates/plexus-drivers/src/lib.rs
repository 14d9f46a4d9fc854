//! # plexus-drivers — the built-in network drivers
//!
//! Implementations of [`plexus_cnm::Driver`] on top of [`plexus_sys`]:
//!
//! - [`BridgeDriver`] (`bridge`): Docker's user-defined bridge networks — a Linux bridge per
//!   network with the gateway address(es), a veth pair per endpoint, masqueraded egress,
//!   isolation between networks, `--internal`, `enable_icc=false` (bridge port isolation),
//!   published ports (nftables maps, no userland proxy) and IPv6, with Docker's option names
//!   ([`options`]);
//! - [`OverlayDriver`] (`overlay`): Docker's multi-host networks over VXLAN — a VXLAN id
//!   unique in the cluster (compare-and-swap in the cluster store), per network and host a
//!   namespace with a bridge and the VXLAN device, static FDB and neighbour entries for remote
//!   endpoints from the [`ControlPlane`](plexus_cnm::ControlPlane)'s peer table;
//! - [`MacvlanDriver`] (`macvlan` and `ipvlan`): Docker's `-d macvlan` and `-d ipvlan` —
//!   sandboxes straight on a host interface's wire (`-o parent=eth0`, or an 802.1q
//!   sub-interface `eth0.10` the driver makes), each with its own address on the LAN and the
//!   LAN's gateway, no NAT and no published ports; one network per parent; the device born
//!   inside the sandbox; kinds the kernel lacks (ipvlan, 802.1q, dummy links) refused at run
//!   time naming the module;
//! - [`HostDriver`] (`host`): the sandbox is the host's own namespace; nothing to make;
//! - [`NullDriver`] (`null`, Docker's `none` network): loopback only;
//! - [`RemoteDriver`](remote::RemoteDriver) (any other name): a plugin process speaking
//!   Docker's `NetworkDriver` protocol, found by Docker's plugin discovery; the plugin makes
//!   the links, Plexus moves them into sandboxes and configures them there.
//!
//! A driver programs one "host" namespace, given at construction (in production the daemon's
//! own, in tests one the test made). Every kernel object the bridge driver makes carries a
//! marker: links get the alias `<marker>:bridge:<network id>` or
//! `<marker>:veth:<network id>:<endpoint id>` (a joined host end adds `:<interface>`, the
//! interface's name in the sandbox), published ports carry their endpoint id as
//! owner inside Plexus's nftables tables. The bridge driver's
//! [`Driver::reconcile`](plexus_cnm::Driver::reconcile) uses the marks to make the kernel
//! match the store after a restart or a crash, and to repair drift while running, deleting
//! only what it marked. The macvlan and ipvlan drivers mark the same way: an endpoint's device
//! in its sandbox `<marker>:macvlan:<network id>:<endpoint id>` (or `ipvlan`), a parent they
//! made `<marker>:vlan:<kind>:<network id>` (an 802.1q sub-interface), `…:dummy:…` or
//! `…:lanparent:…` (a veth pair standing in for a dummy link).
//!
//! [`reset`] removes everything Plexus made on a host, and nothing else, by the same marks and
//! names (`plexus system reset`); its [`Layout`](reset::Layout) is where the daemon's files are.
//!
//! ```no_run
//! # async fn demo() -> Result<(), plexus_cnm::DriverError> {
//! use plexus_drivers::{register_builtin, DriverConfig};
//! let host = plexus_sys::netns::Netns::host().map_err(plexus_drivers::sys_error)?;
//! let mut registry = plexus_cnm::DriverRegistry::new();
//! let bridge = register_builtin(&mut registry, DriverConfig::new(host, "plexus")).await?;
//! # let _ = bridge; Ok(()) }
//! ```

#![warn(missing_docs)]

mod bridge;
pub mod default_bridge;
pub mod firewall;
pub mod gateway_bridge;
mod gso;
mod host;
pub mod ingress;
pub mod macvlan;
mod names;
mod null;
pub mod options;
pub mod overlay;
mod reaper;
pub mod remote;
pub mod reset;
mod sandbox;

use std::sync::Arc;

pub use bridge::BridgeDriver;
pub use default_bridge::{create_default_bridge, DefaultBridge};
pub use gateway_bridge::{gateway_bridge_spec, GATEWAY_BRIDGE_NETWORK};
pub use host::HostDriver;
pub use ingress::{ingress_network_spec, INGRESS_NETWORK, INGRESS_SANDBOX};
pub use macvlan::MacvlanDriver;
pub use names::{parse_alias, Marked};
pub use null::NullDriver;
pub use overlay::{OverlayConfig, OverlayDriver};

use plexus_cnm::{ControlPlane, DriverError, DriverRegistry};
use plexus_sys::netns::Netns;
use plexus_sys::SysError;

/// How a driver is set up: the namespace it programs, the marker of what it makes and, in a
/// cluster, the cluster store and (with gossip) the control plane.
#[derive(Clone)]
pub struct DriverConfig {
    /// The "host" namespace: where bridges, host veth ends and firewall rules live.
    pub host: Netns,
    /// The link alias prefix that marks every link the driver makes (no `:`).
    pub marker: String,
    /// Whether the namespace is Plexus's own (made for it): the driver then also turns
    /// `br_netfilter` off there (`net.bridge.bridge-nf-call-ip{,6}tables=0`) for throughput.
    /// Leave `false` for a namespace shared with other software (the machine's own).
    pub owns_namespace: bool,
    /// The cluster store (`--cluster-store`), for what must be unique across hosts (the
    /// overlay driver's VXLAN ids); `None` on a host outside a cluster, where global-scope
    /// drivers refuse to allocate networks.
    pub cluster_store: Option<Arc<dyn plexus_kv::Store>>,
    /// The cluster's control plane (plexusd's gossip, with `--cluster-store` and
    /// `--cluster-advertise`): network-scoped tables for global drivers. `None` outside a
    /// cluster.
    pub control_plane: Option<Arc<dyn ControlPlane>>,
}

impl DriverConfig {
    /// A configuration for `host`, marking objects with `marker`; `owns_namespace` false, no
    /// cluster store, no control plane.
    pub fn new(host: Netns, marker: impl Into<String>) -> Self {
        Self {
            host,
            marker: marker.into(),
            owns_namespace: false,
            cluster_store: None,
            control_plane: None,
        }
    }

    /// The same configuration with the cluster's control plane.
    pub fn with_control_plane(mut self, control_plane: Arc<dyn ControlPlane>) -> Self {
        self.control_plane = Some(control_plane);
        self
    }
}

impl std::fmt::Debug for DriverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverConfig")
            .field("host", &self.host.path())
            .field("marker", &self.marker)
            .field("owns_namespace", &self.owns_namespace)
            .field(
                "cluster_store",
                &self.cluster_store.as_ref().map(|s| s.url()),
            )
            .field(
                "control_plane",
                &self.control_plane.as_ref().map(|c| c.advertise_addr()),
            )
            .finish()
    }
}

/// Registers `bridge`, `host`, `null`, `macvlan` and `ipvlan` in `registry`, and returns the
/// bridge driver (the daemon waits for its background deletions at shutdown,
/// [`BridgeDriver::settle`]).
pub async fn register_builtin(
    registry: &mut DriverRegistry,
    config: DriverConfig,
) -> Result<Arc<BridgeDriver>, DriverError> {
    let bridge = Arc::new(BridgeDriver::new(config.clone()).await?);
    registry.register(bridge.clone());
    let (macvlan, ipvlan) = MacvlanDriver::pair_with(&config, bridge.reaper()).await?;
    registry.register(Arc::new(macvlan));
    registry.register(Arc::new(ipvlan));
    registry.register(Arc::new(HostDriver::new(config.host.clone())));
    registry.register(Arc::new(NullDriver::new()));
    Ok(bridge)
}

/// Turns a kernel error into a driver error of the right class: bad input and missing
/// namespaces are the user's fault ([`DriverError::Invalid`]), clashes are conflicts, missing
/// kernel features are [`DriverError::Unsupported`], the rest [`DriverError::Failed`].
pub fn sys_error(e: SysError) -> DriverError {
    match &e {
        SysError::Invalid { .. } => DriverError::Invalid(e.to_string()),
        SysError::Conflict { .. } | SysError::Exists { .. } => DriverError::Conflict(e.to_string()),
        SysError::Unsupported { .. } => DriverError::Unsupported(e.to_string()),
        SysError::Netns { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            DriverError::Invalid(e.to_string())
        }
        _ => DriverError::Failed(e.to_string()),
    }
}

/// [`sys_error`] with what was being done in front of the message.
pub(crate) fn sys_ctx(what: impl std::fmt::Display) -> impl FnOnce(SysError) -> DriverError {
    move |e| match sys_error(e) {
        DriverError::Invalid(m) => DriverError::Invalid(format!("{what}: {m}")),
        DriverError::Conflict(m) => DriverError::Conflict(format!("{what}: {m}")),
        DriverError::Unsupported(m) => DriverError::Unsupported(format!("{what}: {m}")),
        DriverError::Failed(m) => DriverError::Failed(format!("{what}: {m}")),
    }
}
