//! The bridge driver's firewall: Plexus's own nf_tables tables, atomic batches, and set- and
//! map-driven rules so that adding a network, an endpoint or a published port is an element
//! insert, never a rule rescan.
//!
//! Built on the general layer of [`plexus_sys::nft`] (tables, sets, maps, expressions);
//! this module is the policy: which tables, chains, sets and rules, and what an element
//! means. `base.rs` makes the tables and their fixed rules, `network.rs` adds and removes a
//! network's elements, `ports.rs` publishes ports, `state.rs` reads it all back and
//! reconciles it with the store, `addr.rs` turns addresses and prefixes into elements.
//!
//! # What the kernel holds
//!
//! Plexus touches only its own tables: `inet plexus` (filtering), `ip plexus-nat` /
//! `ip6 plexus-nat` (NAT) and `bridge plexus` (no conntrack for switched frames);
//! [`Firewall::cleanup_all`] deletes those four and nothing else.
//!
//! ```text
//! table inet plexus
//!   set bridges  { type ifname }          every Plexus bridge
//!   set internal { type ifname }          bridges of --internal networks
//!   set intra    { type ifname . ifname } (br . br) for every Plexus bridge
//!   chain forward { type filter hook forward priority filter; policy accept;
//!     iifname . oifname @intra accept             within one network (seen with br_netfilter)
//!     ct state established,related accept
//!     iifname @internal drop ; oifname @internal drop      internal: no way in or out
//!     ct status dnat accept                       published ports, from any other network
//!     iifname @bridges oifname @bridges drop      isolation between networks
//!     iifname @bridges accept                     egress
//!     oifname @bridges drop }                     nothing unsolicited reaches a sandbox
//! table ip plexus-nat   (ip6 alike, with ipv6 addresses)
//!   set bridges   { type ifname }
//!   set nets      { type ipv4_addr; flags interval }   every Plexus subnet
//!   set masq_nets { type ipv4_addr; flags interval }   subnets with enable_ip_masquerade
//!   map ports     { type inet_proto . inet_service : ipv4_addr . inet_service }
//!   map ports_ip  { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//!   chain prerouting/output { type nat hook prerouting/output priority dstnat;
//!     dnat to ip daddr . meta l4proto . th dport map @ports_ip
//!     fib daddr type local dnat to meta l4proto . th dport map @ports }
//!   chain postrouting { type nat hook postrouting priority srcnat;
//!     ip saddr @masq_nets oifname != @bridges masquerade          egress
//!     ct status dnat ip saddr @nets oifname @bridges masquerade   hairpin via the host address
//!     ct status dnat ip saddr 127.0.0.0/8 oifname @bridges masquerade }   localhost
//! table bridge plexus
//!   chain prerouting { type filter hook prerouting priority -300; policy accept;
//!     iifname "plxv*" meta pkttype other notrack }   switched between two sandbox ports
//! ```
//!
//! Notes on choices:
//! - **br_netfilter either way**: the rules are correct whether bridged frames traverse the
//!   inet hooks or not. On kernels with `CONFIG_BRIDGE_NETFILTER=y` (this one) every new
//!   namespace starts with `net.bridge.bridge-nf-call-iptables=1`, so frames between two
//!   ports of one bridge reach `forward` with `iifname == oifname == bridge`; the `intra` set
//!   lets them pass before the internal and isolation drops (nft cannot compare two
//!   registers, a concatenated lookup of `(br . br)` can). A driver may turn the sysctl off
//!   in a namespace it owns (throughput), and the rules still hold.
//! - **No conntrack for switched frames** (`bridge plexus`): with `br_netfilter` on, every
//!   IP frame a bridge switches between two of its ports goes through the inet hooks, and
//!   because these tables use `ct` and NAT, through connection tracking and the NAT hooks:
//!   a conntrack entry per sandbox-to-sandbox connection and a lookup per frame, for frames
//!   that need neither (no NAT applies to them, `forward` accepts them through `intra`).
//!   The bridge's prerouting chain at -300 runs before `br_netfilter` (priority 0) hands
//!   the frame to the inet hooks, and there `meta pkttype` still tells switched from routed:
//!   `br_handle_frame` sets `PACKET_HOST` on frames addressed to the bridge's own MAC
//!   *before* the bridge prerouting hook, so `other` (`PACKET_OTHERHOST`, from
//!   `eth_type_trans` on the port) means "for another port's host: switched, not routed".
//!   Such frames are marked untracked; `nf_conntrack_in` then ignores them and the NAT
//!   hooks skip packets without a conntrack. Everything routed through the bridge — egress,
//!   published ports through the gateway or a host address, hairpin — is addressed to the
//!   bridge's MAC and stays tracked, so NAT and `ct status dnat` work as before. (From
//!   `br_netfilter`'s own `setup_pre_routing` on, the inet hooks see `PACKET_HOST`, which
//!   is why this lives in the bridge family.) Only frames entering through the bridge
//!   driver's sandbox ports ([`SANDBOX_PORT_PREFIX`], `plxv…`) are concerned, so other
//!   bridges of the namespace (Docker's, libvirt's) keep their tracking. The port name is
//!   the scope rather than the bridge (`meta ibrname @bridges`) because that needs
//!   `nft_meta_bridge` (`CONFIG_NFT_BRIDGE_META`), which not every kernel has (this one
//!   refuses the rule with `EOPNOTSUPP`): the prefix costs one 4-byte compare and no
//!   per-network element. The table is applied in a batch of its own and is optional: a
//!   kernel without bridge-family nf_tables runs Plexus with tracked frames. Multicast
//!   and broadcast frames (ARP, neighbour discovery) are not `other` and are left alone.
//! - **icc=false** is not done here: it would depend on `br_netfilter`. The bridge driver
//!   sets the bridge port `isolated` flag
//!   ([`Rtnl::set_port_flags`](plexus_sys::rtnl::Rtnl::set_port_flags)) on every sandbox
//!   port of such a network: isolated ports cannot talk to each other but reach the bridge
//!   itself (gateway, egress, published ports), with or without `br_netfilter`, at no
//!   per-packet cost.
//! - **Hairpin**: without `br_netfilter` (or with `bridge-nf-call-iptables=0`), a sandbox reaching a peer on its own bridge through
//!   the host's address would get the answer straight over the bridge, un-NATed; the DNATed
//!   connection is therefore masqueraded to the gateway when it comes from a Plexus subnet.
//!   Outside clients keep their source address.
//! - **Localhost**: `127.0.0.1:PORT` from the host works when the driver sets
//!   `net.ipv4.conf.<bridge>.route_localnet=1` (the kernel otherwise refuses to route a
//!   127/8 source out of a non-loopback device, and treats the answer as martian); the
//!   third postrouting rule then masquerades it to the gateway address.
//! - **Published ports reach across networks**: `ct status dnat accept` precedes the
//!   isolation drop, so another network's sandbox reaches a published port through the host
//!   address, as any outside client does. It follows the internal drops: an internal
//!   network neither reaches out through a published port nor has its own reachable.
//! - Published ports carry their owner in the element's comment (userdata), so a restarted
//!   daemon reads back who has which port ([`Firewall::state`]).
//!
//! Calls are synchronous: each is one short kernel round trip (no network wait), fine from
//! async code. Deletions use `destroy_*`, which need no Linux 6.3: on older kernels
//! [`Nft`] deletes what is present instead (see [`Nft::has_destroy`]).
//!
//! ```no_run
//! # fn demo(ns: &plexus_sys::netns::Netns) -> plexus_sys::Result<()> {
//! use plexus_drivers::firewall::{Firewall, NetworkRules, PortMapping, Proto};
//! let fw = Firewall::open(ns)?;
//! fw.ensure_base()?;
//! fw.setup_network(&NetworkRules {
//!     bridge: "plx0".into(),
//!     subnets: vec![("10.10.0.0".parse().unwrap(), 24)],
//!     masquerade: true,
//!     internal: false,
//! })?;
//! fw.publish(&[PortMapping {
//!     proto: Proto::Tcp,
//!     host_ip: None,
//!     host_port: 8080,
//!     addr: "10.10.0.2".parse().unwrap(),
//!     port: 80,
//!     owner: "endpoint-1".into(),
//! }])?;
//! # Ok(()) }
//! ```

mod addr;
mod base;
mod network;
mod ports;
mod state;

use std::collections::HashMap;
use std::sync::Mutex;

use plexus_sys::netns::Netns;
use plexus_sys::nft::{Family, Nft};
use plexus_sys::{Result, SysError};

use ports::port_from;

pub use network::NetworkRules;
pub use ports::{PortMapping, Proto};
pub use state::{FirewallState, Reconciled};

/// The filtering table (`inet`), and the name of the bridge-family table too.
pub const FILTER_TABLE: &str = "plexus";
/// The NAT tables (`ip` and `ip6`).
pub const NAT_TABLE: &str = "plexus-nat";
/// How the bridge driver names the host end of every sandbox's veth pair, the bridge port
/// (`plxv` and 11 hex digits). Frames entering a bridge through such a port and addressed
/// to another port's host are not tracked (the `bridge plexus` table).
pub const SANDBOX_PORT_PREFIX: &str = "plxv";

const FORWARD: &str = "forward";
const PREROUTING: &str = "prerouting";
const OUTPUT: &str = "output";
const POSTROUTING: &str = "postrouting";
const BRIDGES: &str = "bridges";
const INTERNAL: &str = "internal";
const INTRA: &str = "intra";
const NETS: &str = "nets";
const MASQ_NETS: &str = "masq_nets";
const PORTS: &str = "ports";
const PORTS_IP: &str = "ports_ip";

// nft's data type numbers (for `nft list`; the kernel only stores them).
const TYPE_IFNAME: u32 = 41;
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const fn concat(a: u32, b: u32) -> u32 {
    (a << 6) | b
}
const IFNAMSIZ: usize = 16;

/// nft's set userdata saying the key is in host byte order (`NFTNL_UDATA_SET_KEYBYTEORDER`,
/// `BYTEORDER_HOST_ENDIAN`), so `nft list` prints interface names as strings.
fn ifname_udata() -> Vec<u8> {
    let mut u = vec![0, 4];
    u.extend_from_slice(&1u32.to_ne_bytes());
    u
}
/// The bridge family's prerouting priority that runs before `br_netfilter` (0) and before
/// bridge conntrack (-200): `NF_BR_PRI_NAT_DST_BRIDGED`, which `nft` prints as `dstnat`.
const BRIDGE_EARLY: i32 = -300;
/// nft's comment TLV type in element userdata.
const UDATA_COMMENT: u8 = 0;
const MAX_OWNER: usize = 200;

/// Plexus's firewall in one namespace.
#[derive(Debug)]
pub struct Firewall {
    nft: Nft,
    /// Published ports by (protocol, host port).
    ports: Mutex<HashMap<(Proto, u16), Vec<PortMapping>>>,
}

impl Firewall {
    /// Connects to nf_tables in `ns` and loads the published ports the kernel already holds
    /// (so a restarted daemon knows who has which port), and probes whether the kernel has
    /// `NFT_MSG_DESTROY` ([`Nft::has_destroy`]).
    pub fn open(ns: &Netns) -> Result<Self> {
        let fw = Self {
            nft: Nft::open(ns)?,
            ports: Mutex::new(HashMap::new()),
        };
        fw.reload_ports()?;
        // Learn at start how deletions will go, rather than inside the first unpublish.
        if !fw.nft.has_destroy()? {
            tracing::info!(netns = %ns.path().display(), "nf_tables without NFT_MSG_DESTROY (Linux before 6.3): deletions are narrowed to the objects present");
        }
        Ok(fw)
    }

    /// The raw connection, for rules Plexus does not model.
    pub fn raw(&self) -> &Nft {
        &self.nft
    }

    fn lock_ports(&self) -> std::sync::MutexGuard<'_, HashMap<(Proto, u16), Vec<PortMapping>>> {
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn kernel_ports(&self) -> Result<Vec<PortMapping>> {
        let mut out = Vec::new();
        for f in [Family::Ip, Family::Ip6] {
            for (set, with_ip) in [(PORTS, false), (PORTS_IP, true)] {
                match self.nft.elements(f, NAT_TABLE, set) {
                    Ok(elems) => out.extend(elems.iter().filter_map(|e| port_from(e, with_ip, f))),
                    Err(SysError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    fn reload_ports(&self) -> Result<()> {
        let ports = self.kernel_ports()?;
        let mut map = self.lock_ports();
        map.clear();
        for p in ports {
            map.entry((p.proto, p.host_port)).or_default().push(p);
        }
        Ok(())
    }
}

/// The routing mesh's table in the daemon's namespace (services' published ports, made by
/// plexusd through plexus-lb's `mesh`): named here so that a reset finds it.
pub const MESH_TABLE: &str = "plexus-mesh";

/// Whether a table is one of Plexus's.
pub fn is_plexus_table(family: Family, name: &str) -> bool {
    matches!(
        (family, name),
        (Family::Inet, FILTER_TABLE)
            | (Family::Ip, NAT_TABLE)
            | (Family::Ip6, NAT_TABLE)
            | (Family::Bridge, FILTER_TABLE)
            | (Family::Ip, MESH_TABLE)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firewall_is_shareable_across_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Firewall>();
    }
}
