//! nf_tables for Plexus: its own tables, atomic batches, and set- and map-driven rules so that
//! adding a network, an endpoint or a published port is an element insert, never a rule rescan.
//!
//! # Library choice
//!
//! The messages are encoded here (module `wire`, whose building blocks are re-exported:
//! [`Batch`], [`Expr`], [`SetDef`], [`Element`]) and sent by [`Nft`] over a plain
//! `NETLINK_NETFILTER` socket from `netlink-sys`, born inside the target namespace (opened on
//! a thread inside it through [`Netns::run`]). The
//! alternatives were weighed first: `rustables` 0.9 has no maps (`NFTA_SET_DATA_*`), no
//! concatenations, no `fib`; `netlink-packet-netfilter` 0.4's `nftables` module covers
//! tables, chains, sets and a few expressions but not `nat`, `masq`, `ct`, `fib` or
//! `counter`, so it would have needed our own expression encoders anyway (as DESIGN.md
//! foresaw) on top of a second netlink-packet-core generation. A small encoder of exactly what
//! Plexus sends is less code than the glue, has no `nft` process and no JSON schema, and
//! every batch is atomic (`NFNL_MSG_BATCH_BEGIN` … `END`: all or nothing).
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
//!   ([`Rtnl::set_port_flags`](crate::rtnl::Rtnl::set_port_flags)) on every sandbox
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
//! async code. Deletions use `NFT_MSG_DESTROY*` (missing objects are not errors), which needs
//! Linux ≥ 6.3.
//!
//! ```no_run
//! # fn demo(ns: &plexus_sys::netns::Netns) -> plexus_sys::Result<()> {
//! use plexus_sys::nft::{Firewall, NetworkRules, PortMapping, Proto};
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

mod raw;
mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

pub use raw::Nft;
pub use wire::{
    ct_state, ct_status, pkttype, BaseChain, Batch, ChainType, CmpOp, CtKey, Element, Expr, Family,
    Hook, MetaKey, NatKind, PayloadBase, SetDef, Verdict, REG32_00,
};

use crate::error::{Result, SysError};
use crate::netns::Netns;
use crate::rtnl::check_ifname;

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
const RTN_LOCAL: u32 = 2;
/// The bridge family's prerouting priority that runs before `br_netfilter` (0) and before
/// bridge conntrack (-200): `NF_BR_PRI_NAT_DST_BRIDGED`, which `nft` prints as `dstnat`.
const BRIDGE_EARLY: i32 = -300;
/// nft's comment TLV type in element userdata.
const UDATA_COMMENT: u8 = 0;
const MAX_OWNER: usize = 200;

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Sctp => 132,
        }
    }

    fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            132 => Some(Proto::Sctp),
            _ => None,
        }
    }

    /// `tcp`, `udp`, `sctp`.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }
}

/// What the firewall needs to know of one bridge network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    /// The bridge's interface name.
    pub bridge: String,
    /// The network's subnets (IPv4 and/or IPv6), as prefix and length.
    pub subnets: Vec<(IpAddr, u8)>,
    /// `com.docker.network.bridge.enable_ip_masquerade`: masquerade egress.
    pub masquerade: bool,
    /// `--internal`: nothing is forwarded into or out of the bridge.
    pub internal: bool,
}

/// One published port: `host_ip:host_port/proto` → `addr:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// The protocol.
    pub proto: Proto,
    /// The host address it is published on; `None` for every local address.
    pub host_ip: Option<IpAddr>,
    /// The host port.
    pub host_port: u16,
    /// The sandbox's address.
    pub addr: IpAddr,
    /// The sandbox's port.
    pub port: u16,
    /// Who published it (an endpoint id): named in conflicts, stored in the kernel.
    pub owner: String,
}

impl PortMapping {
    fn family(&self) -> Family {
        family_of(self.addr)
    }

    fn describe(&self) -> String {
        match self.host_ip {
            Some(ip) => format!("host port {}/{} on {ip}", self.proto.name(), self.host_port),
            None => format!("host port {}/{}", self.proto.name(), self.host_port),
        }
    }

    /// Whether both claim the same host port.
    fn clashes(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && self.family() == other.family()
            && match (self.host_ip, other.host_ip) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    fn same_binding(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && self.host_ip == other.host_ip
            && self.family() == other.family()
    }

    fn key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(24);
        if let Some(ip) = self.host_ip {
            k.extend_from_slice(&ip_bytes(ip));
        }
        k.extend_from_slice(&[self.proto.number(), 0, 0, 0]);
        k.extend_from_slice(&port_reg(self.host_port));
        k
    }

    fn element(&self, with_data: bool) -> Element {
        let mut data = ip_bytes(self.addr);
        data.extend_from_slice(&port_reg(self.port));
        let owner: String = self.owner.chars().take(MAX_OWNER).collect();
        let mut udata = vec![UDATA_COMMENT, (owner.len() + 1) as u8];
        udata.extend_from_slice(owner.as_bytes());
        udata.push(0);
        Element {
            key: self.key(),
            data: with_data.then_some(data),
            interval_end: false,
            userdata: with_data.then_some(udata),
        }
    }

    fn set(&self) -> &'static str {
        if self.host_ip.is_some() {
            PORTS_IP
        } else {
            PORTS
        }
    }
}

/// What the kernel holds of Plexus, read back for reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallState {
    /// Plexus's tables present.
    pub tables: Vec<(Family, String)>,
    /// Bridges known to the filter table.
    pub bridges: BTreeSet<String>,
    /// Bridges of internal networks.
    pub internal: BTreeSet<String>,
    /// Every Plexus subnet.
    pub subnets: BTreeSet<(IpAddr, u8)>,
    /// Subnets masqueraded on egress.
    pub masquerade: BTreeSet<(IpAddr, u8)>,
    /// Published ports, with their owners.
    pub ports: Vec<PortMapping>,
}

/// Plexus's firewall in one namespace.
#[derive(Debug)]
pub struct Firewall {
    nft: Nft,
    /// Published ports by (protocol, host port).
    ports: Mutex<HashMap<(Proto, u16), Vec<PortMapping>>>,
}

fn family_of(ip: IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::Ip,
        IpAddr::V6(_) => Family::Ip6,
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// A port as a register holds it: big-endian in the first two bytes, zero padded.
fn port_reg(port: u16) -> [u8; 4] {
    let [a, b] = port.to_be_bytes();
    [a, b, 0, 0]
}

fn ifname_key(name: &str) -> Result<Vec<u8>> {
    check_ifname("bridge name", name)?;
    let mut k = name.as_bytes().to_vec();
    k.resize(IFNAMSIZ, 0);
    Ok(k)
}

fn addr_len(f: Family) -> u32 {
    if f == Family::Ip6 {
        16
    } else {
        4
    }
}

fn to_u128(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn from_u128(v: u128, bits: u32) -> IpAddr {
    if bits == 32 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// The interval elements (start, and end unless it runs to the top) of a prefix.
fn prefix_elements(addr: IpAddr, len: u8) -> Result<(IpAddr, Vec<Element>)> {
    let (v, bits) = to_u128(addr);
    if u32::from(len) > bits {
        return Err(SysError::Invalid {
            field: "subnet prefix length",
            value: format!("{addr}/{len}"),
            reason: "longer than the address",
        });
    }
    let host = bits - u32::from(len);
    let size: u128 = if host >= 128 { 0 } else { 1u128 << host };
    let start = if host >= 128 { 0 } else { v & !(size - 1) };
    let start_ip = from_u128(start, bits);
    let mut elems = vec![Element {
        key: ip_bytes(start_ip),
        ..Element::default()
    }];
    let max = if bits == 32 { 1u128 << 32 } else { 0 };
    let end = start.wrapping_add(size);
    let overflow = size == 0
        || (bits == 32 && end >= max)
        || (bits == 128 && end < start)
        || (bits == 128 && end == 0);
    if !overflow {
        elems.push(Element {
            key: ip_bytes(from_u128(end, bits)),
            interval_end: true,
            ..Element::default()
        });
    }
    Ok((start_ip, elems))
}

/// Reassembles prefixes from the elements of an interval set.
fn prefixes_of(elems: &[Element]) -> BTreeSet<(IpAddr, u8)> {
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for e in elems {
        if let Some(ip) = ip_from(&e.key) {
            let (v, bits) = to_u128(ip);
            if e.interval_end {
                ends.push((v, bits));
            } else {
                starts.push((v, bits));
            }
        }
    }
    ends.sort();
    let mut out = BTreeSet::new();
    for (s, bits) in starts {
        let end = ends
            .iter()
            .find(|(e, b)| *b == bits && *e > s)
            .map(|(e, _)| *e);
        let size = match end {
            Some(e) => e - s,
            None if bits == 32 => (1u128 << 32) - s,
            None => u128::MAX - s + 1,
        };
        // size == 0 only for ::/0 (the whole v6 space).
        let host = if size == 0 {
            128
        } else {
            size.trailing_zeros()
        };
        out.insert((from_u128(s, bits), (bits - host.min(bits)) as u8));
    }
    out
}

fn r(n: u32) -> u32 {
    REG32_00 + n
}

fn lookup(set: &str, sreg: u32) -> Expr {
    Expr::Lookup {
        set: set.into(),
        sreg,
        dreg: None,
        invert: false,
    }
}

fn meta(key: MetaKey) -> Expr {
    Expr::Meta { key, dreg: r(0) }
}

fn ct_bits(key: CtKey, bits: u32) -> [Expr; 3] {
    [
        Expr::Ct { key, dreg: r(0) },
        Expr::Bitwise {
            sreg: r(0),
            dreg: r(0),
            mask: bits.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Neq,
            data: vec![0; 4],
        },
    ]
}

fn nat_sets(f: Family) -> Vec<SetDef> {
    let (ip_type, alen) = if f == Family::Ip6 {
        (TYPE_IP6ADDR, 16)
    } else {
        (TYPE_IPADDR, 4)
    };
    let proto_service = concat(TYPE_INET_PROTOCOL, TYPE_INET_SERVICE);
    vec![
        SetDef {
            name: BRIDGES.into(),
            key_type: TYPE_IFNAME,
            key_len: IFNAMSIZ as u32,
            interval: false,
            data: None,
            userdata: ifname_udata(),
        },
        SetDef {
            name: NETS.into(),
            key_type: ip_type,
            key_len: alen,
            interval: true,
            data: None,
            userdata: Vec::new(),
        },
        SetDef {
            name: MASQ_NETS.into(),
            key_type: ip_type,
            key_len: alen,
            interval: true,
            data: None,
            userdata: Vec::new(),
        },
        SetDef {
            name: PORTS.into(),
            key_type: proto_service,
            key_len: 8,
            interval: false,
            data: Some((concat(ip_type, TYPE_INET_SERVICE), alen + 4)),
            userdata: Vec::new(),
        },
        SetDef {
            name: PORTS_IP.into(),
            key_type: concat(concat(ip_type, TYPE_INET_PROTOCOL), TYPE_INET_SERVICE),
            key_len: alen + 8,
            interval: false,
            data: Some((concat(ip_type, TYPE_INET_SERVICE), alen + 4)),
            userdata: Vec::new(),
        },
    ]
}

/// The DNAT rules of a prerouting or output chain.
fn dnat_rules(f: Family) -> Vec<Vec<Expr>> {
    let alen = addr_len(f);
    let w = alen / 4; // registers an address takes
    let daddr = if f == Family::Ip6 { 24 } else { 16 };
    let dport = |dreg| Expr::Payload {
        base: PayloadBase::Transport,
        offset: 2,
        len: 2,
        dreg,
    };
    let dnat = Expr::Nat {
        kind: NatKind::Dnat,
        family: f,
        addr: r(0),
        port: Some(r(w)),
    };
    vec![
        vec![
            Expr::Payload {
                base: PayloadBase::Network,
                offset: daddr,
                len: alen,
                dreg: r(0),
            },
            Expr::Meta {
                key: MetaKey::L4Proto,
                dreg: r(w),
            },
            dport(r(w + 1)),
            Expr::Lookup {
                set: PORTS_IP.into(),
                sreg: r(0),
                dreg: Some(r(0)),
                invert: false,
            },
            dnat.clone(),
        ],
        vec![
            Expr::FibDaddrType { dreg: r(0) },
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Eq,
                data: RTN_LOCAL.to_ne_bytes().to_vec(),
            },
            Expr::Meta {
                key: MetaKey::L4Proto,
                dreg: r(0),
            },
            dport(r(1)),
            Expr::Lookup {
                set: PORTS.into(),
                sreg: r(0),
                dreg: Some(r(0)),
                invert: false,
            },
            dnat,
        ],
    ]
}

fn postrouting_rules(f: Family) -> Vec<Vec<Expr>> {
    let alen = addr_len(f);
    let saddr = Expr::Payload {
        base: PayloadBase::Network,
        offset: if f == Family::Ip6 { 8 } else { 12 },
        len: alen,
        dreg: r(0),
    };
    let mut rules = vec![
        vec![
            saddr.clone(),
            lookup(MASQ_NETS, r(0)),
            meta(MetaKey::OifName),
            Expr::Lookup {
                set: BRIDGES.into(),
                sreg: r(0),
                dreg: None,
                invert: true,
            },
            Expr::Counter,
            Expr::Masquerade,
        ],
        {
            let mut v = ct_bits(CtKey::Status, ct_status::DNAT).to_vec();
            v.extend([
                saddr.clone(),
                lookup(NETS, r(0)),
                meta(MetaKey::OifName),
                lookup(BRIDGES, r(0)),
                Expr::Counter,
                Expr::Masquerade,
            ]);
            v
        },
    ];
    if f == Family::Ip {
        let mut v = ct_bits(CtKey::Status, ct_status::DNAT).to_vec();
        v.extend([
            saddr,
            Expr::Bitwise {
                sreg: r(0),
                dreg: r(0),
                mask: vec![255, 0, 0, 0],
                xor: vec![0; 4],
            },
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Eq,
                data: vec![127, 0, 0, 0],
            },
            meta(MetaKey::OifName),
            lookup(BRIDGES, r(0)),
            Expr::Counter,
            Expr::Masquerade,
        ]);
        rules.push(v);
    }
    rules
}

fn forward_rules() -> Vec<Vec<Expr>> {
    let accept = Expr::Verdict(Verdict::Accept);
    let drop = Expr::Verdict(Verdict::Drop);
    let mut est = ct_bits(CtKey::State, ct_state::ESTABLISHED | ct_state::RELATED).to_vec();
    est.push(accept.clone());
    let mut dnat = ct_bits(CtKey::Status, ct_status::DNAT).to_vec();
    dnat.push(accept.clone());
    vec![
        // First: with br_netfilter on, every frame switched between two sandboxes of one
        // network comes through here (untracked, so `ct state` would not match it anyway).
        vec![
            Expr::Meta {
                key: MetaKey::IifName,
                dreg: r(0),
            },
            Expr::Meta {
                key: MetaKey::OifName,
                dreg: r(IFNAMSIZ as u32 / 4),
            },
            lookup(INTRA, r(0)),
            accept.clone(),
        ],
        est,
        vec![
            meta(MetaKey::IifName),
            lookup(INTERNAL, r(0)),
            Expr::Counter,
            drop.clone(),
        ],
        vec![
            meta(MetaKey::OifName),
            lookup(INTERNAL, r(0)),
            Expr::Counter,
            drop.clone(),
        ],
        dnat,
        vec![
            meta(MetaKey::IifName),
            lookup(BRIDGES, r(0)),
            meta(MetaKey::OifName),
            lookup(BRIDGES, r(0)),
            Expr::Counter,
            drop.clone(),
        ],
        vec![meta(MetaKey::IifName), lookup(BRIDGES, r(0)), accept],
        vec![
            meta(MetaKey::OifName),
            lookup(BRIDGES, r(0)),
            Expr::Counter,
            drop,
        ],
    ]
}

/// `iifname "plxv*" meta pkttype other notrack`: frames a bridge switches from a sandbox
/// port to another port are not tracked.
fn notrack_rule() -> Vec<Expr> {
    vec![
        meta(MetaKey::IifName),
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Eq,
            data: SANDBOX_PORT_PREFIX.as_bytes().to_vec(),
        },
        meta(MetaKey::PktType),
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Eq,
            data: vec![pkttype::OTHERHOST],
        },
        Expr::Notrack,
    ]
}

fn owner_of(udata: Option<&[u8]>) -> String {
    // nft's TLV: type, length, value (NUL-terminated comment).
    match udata {
        Some([UDATA_COMMENT, len, rest @ ..]) => {
            let v = rest.get(..usize::from(*len)).unwrap_or(rest);
            let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).into_owned()
        }
        _ => String::new(),
    }
}

fn port_from(element: &Element, with_ip: bool, f: Family) -> Option<PortMapping> {
    let alen = addr_len(f) as usize;
    let (host_ip, rest) = if with_ip {
        (
            Some(ip_from(element.key.get(..alen)?)?),
            element.key.get(alen..)?,
        )
    } else {
        (None, &element.key[..])
    };
    let proto = Proto::from_number(*rest.first()?)?;
    let host_port = u16::from_be_bytes([*rest.get(4)?, *rest.get(5)?]);
    let data = element.data.as_deref()?;
    let addr = ip_from(data.get(..alen)?)?;
    let port = u16::from_be_bytes([*data.get(alen)?, *data.get(alen + 1)?]);
    Some(PortMapping {
        proto,
        host_ip,
        host_port,
        addr,
        port,
        owner: owner_of(element.userdata.as_deref()),
    })
}

impl Firewall {
    /// Connects to nf_tables in `ns` and loads the published ports the kernel already holds
    /// (so a restarted daemon knows who has which port).
    pub fn open(ns: &Netns) -> Result<Self> {
        let fw = Self {
            nft: Nft::open(ns)?,
            ports: Mutex::new(HashMap::new()),
        };
        fw.reload_ports()?;
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

    /// Creates Plexus's tables, sets and chains, and (re)writes their fixed rules, in one
    /// batch. Idempotent: the sets and their elements (networks, ports) survive a second call.
    pub fn ensure_base(&self) -> Result<()> {
        let mut b = self.nft.batch();
        b.add_table(Family::Inet, FILTER_TABLE);
        for (name, fields) in [(BRIDGES, 1), (INTERNAL, 1), (INTRA, 2)] {
            b.add_set(
                Family::Inet,
                FILTER_TABLE,
                &SetDef {
                    name: name.into(),
                    key_type: if fields == 1 {
                        TYPE_IFNAME
                    } else {
                        concat(TYPE_IFNAME, TYPE_IFNAME)
                    },
                    key_len: (IFNAMSIZ * fields) as u32,
                    interval: false,
                    data: None,
                    userdata: if fields == 1 {
                        ifname_udata()
                    } else {
                        Vec::new()
                    },
                },
            );
        }
        b.add_chain(
            Family::Inet,
            FILTER_TABLE,
            FORWARD,
            Some(BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Forward,
                priority: 0,
                policy: Verdict::Accept,
            }),
        );
        b.flush_chain(Family::Inet, FILTER_TABLE, FORWARD);
        for rule in forward_rules() {
            b.add_rule(Family::Inet, FILTER_TABLE, FORWARD, &rule);
        }
        for f in [Family::Ip, Family::Ip6] {
            b.add_table(f, NAT_TABLE);
            for set in nat_sets(f) {
                b.add_set(f, NAT_TABLE, &set);
            }
            for (chain, hook, priority) in [
                (PREROUTING, Hook::Prerouting, -100),
                (OUTPUT, Hook::Output, -100),
                (POSTROUTING, Hook::Postrouting, 100),
            ] {
                b.add_chain(
                    f,
                    NAT_TABLE,
                    chain,
                    Some(BaseChain {
                        kind: ChainType::Nat,
                        hook,
                        priority,
                        policy: Verdict::Accept,
                    }),
                );
                b.flush_chain(f, NAT_TABLE, chain);
                let rules = if hook == Hook::Postrouting {
                    postrouting_rules(f)
                } else {
                    dnat_rules(f)
                };
                for rule in rules {
                    b.add_rule(f, NAT_TABLE, chain, &rule);
                }
            }
        }
        self.nft.apply(b)?;
        // Separately, and optional: without it frames between sandboxes stay tracked when
        // br_netfilter is on (slower, still correct), so a kernel without nf_tables for the
        // bridge family still runs Plexus.
        let mut b = self.nft.batch();
        b.add_table(Family::Bridge, FILTER_TABLE);
        b.add_chain(
            Family::Bridge,
            FILTER_TABLE,
            PREROUTING,
            Some(BaseChain {
                kind: ChainType::Filter,
                hook: Hook::Prerouting,
                priority: BRIDGE_EARLY,
                policy: Verdict::Accept,
            }),
        );
        b.flush_chain(Family::Bridge, FILTER_TABLE, PREROUTING);
        b.add_rule(Family::Bridge, FILTER_TABLE, PREROUTING, &notrack_rule());
        if let Err(e) = self.nft.apply(b) {
            tracing::warn!(error = %e, "no bridge-family notrack rule: frames between sandboxes are tracked when br_netfilter is on");
        }
        tracing::debug!(netns = %self.nft.netns().path().display(), "plexus nf_tables base ensured");
        Ok(())
    }

    fn network_elements(net: &NetworkRules) -> Result<NetElements> {
        let bridge = ifname_key(&net.bridge)?;
        let mut nets: HashMap<Family, Vec<Element>> = HashMap::new();
        for &(addr, len) in &net.subnets {
            let (_, elems) = prefix_elements(addr, len)?;
            nets.entry(family_of(addr)).or_default().extend(elems);
        }
        Ok(NetElements { bridge, nets })
    }

    fn network_adds(b: &mut Batch, net: &NetworkRules, e: &NetElements) {
        let bridge = [Element {
            key: e.bridge.clone(),
            ..Element::default()
        }];
        let intra = [Element {
            key: [e.bridge.clone(), e.bridge.clone()].concat(),
            ..Element::default()
        }];
        b.add_elements(Family::Inet, FILTER_TABLE, BRIDGES, &bridge, false);
        b.add_elements(Family::Inet, FILTER_TABLE, INTRA, &intra, false);
        if net.internal {
            b.add_elements(Family::Inet, FILTER_TABLE, INTERNAL, &bridge, false);
        }
        for f in [Family::Ip, Family::Ip6] {
            b.add_elements(f, NAT_TABLE, BRIDGES, &bridge, false);
            if let Some(nets) = e.nets.get(&f) {
                b.add_elements(f, NAT_TABLE, NETS, nets, false);
                if net.masquerade && !net.internal {
                    b.add_elements(f, NAT_TABLE, MASQ_NETS, nets, false);
                }
            }
        }
    }

    /// Adds a network: its bridge to the isolation sets, its subnets to the NAT sets
    /// (masqueraded unless internal or masquerade is off). One batch of element inserts;
    /// adding the same network again is harmless.
    pub fn setup_network(&self, net: &NetworkRules) -> Result<()> {
        let e = Self::network_elements(net)?;
        let mut b = self.nft.batch();
        Self::network_adds(&mut b, net, &e);
        self.nft.apply(b).map_err(|e| named(e, &net.bridge))?;
        tracing::debug!(bridge = %net.bridge, subnets = ?net.subnets, masquerade = net.masquerade, internal = net.internal, "network firewall set up");
        Ok(())
    }

    /// Removes a network's elements, and the published ports that point into its subnets.
    /// Missing elements are not an error (for clean-up and reconciliation).
    pub fn teardown_network(&self, net: &NetworkRules) -> Result<()> {
        let e = Self::network_elements(net)?;
        // Ports published through another handle count too.
        self.reload_ports()?;
        let bridge = [Element {
            key: e.bridge.clone(),
            ..Element::default()
        }];
        let intra = [Element {
            key: [e.bridge.clone(), e.bridge.clone()].concat(),
            ..Element::default()
        }];
        let inside = |p: &PortMapping| net.subnets.iter().any(|&(a, len)| contains(a, len, p.addr));
        let ports: Vec<PortMapping> = self
            .lock_ports()
            .values()
            .flatten()
            .filter(|p| inside(p))
            .cloned()
            .collect();
        let mut b = self.nft.batch();
        b.destroy_elements(Family::Inet, FILTER_TABLE, BRIDGES, &bridge);
        b.destroy_elements(Family::Inet, FILTER_TABLE, INTRA, &intra);
        b.destroy_elements(Family::Inet, FILTER_TABLE, INTERNAL, &bridge);
        for f in [Family::Ip, Family::Ip6] {
            b.destroy_elements(f, NAT_TABLE, BRIDGES, &bridge);
            if let Some(nets) = e.nets.get(&f) {
                b.destroy_elements(f, NAT_TABLE, NETS, nets);
                b.destroy_elements(f, NAT_TABLE, MASQ_NETS, nets);
            }
        }
        Self::port_deletes(&mut b, &ports);
        self.nft.apply(b).map_err(|e| named(e, &net.bridge))?;
        let mut map = self.lock_ports();
        for p in &ports {
            forget(&mut map, p);
        }
        tracing::debug!(bridge = %net.bridge, ports = ports.len(), "network firewall torn down");
        Ok(())
    }

    /// Groups port elements by the map they go to: one message per map.
    fn by_map<'a>(
        ports: impl IntoIterator<Item = &'a PortMapping>,
        with_data: bool,
    ) -> BTreeMap<(Family, &'static str), Vec<Element>> {
        let mut maps: BTreeMap<(Family, &'static str), Vec<Element>> = BTreeMap::new();
        for p in ports {
            maps.entry((p.family(), p.set()))
                .or_default()
                .push(p.element(with_data));
        }
        maps
    }

    fn port_adds<'a>(b: &mut Batch, ports: impl IntoIterator<Item = &'a PortMapping>) {
        for ((f, set), elems) in Self::by_map(ports, true) {
            b.add_elements(f, NAT_TABLE, set, &elems, true);
        }
    }

    fn port_deletes(b: &mut Batch, ports: &[PortMapping]) {
        for ((f, set), elems) in Self::by_map(ports, false) {
            b.destroy_elements(f, NAT_TABLE, set, &elems);
        }
    }

    /// Publishes ports, all or none, in one batch of map inserts. A host port already taken
    /// (by this call's other mappings, or earlier ones) fails with [`SysError::Conflict`]
    /// naming its owner. Publishing exactly the same mapping for the same owner again is a
    /// no-op.
    pub fn publish(&self, ports: &[PortMapping]) -> Result<()> {
        let todo = self.unpublished(ports)?;
        if todo.is_empty() {
            return Ok(());
        }
        let mut b = self.nft.batch();
        Self::port_adds(&mut b, todo.iter().copied());
        match self.nft.apply(b) {
            Ok(()) => {}
            Err(SysError::Exists { .. }) => {
                // Someone else (another Firewall on this namespace) got there first.
                self.reload_ports()?;
                let map = self.lock_ports();
                for p in &todo {
                    if let Some(o) = map
                        .get(&(p.proto, p.host_port))
                        .into_iter()
                        .flatten()
                        .find(|o| o.clashes(p))
                    {
                        return Err(conflict(p, o));
                    }
                }
                return Err(SysError::Conflict {
                    what: "a published host port".into(),
                    owner: "an unknown owner".into(),
                });
            }
            Err(e) => return Err(e),
        }
        let mut map = self.lock_ports();
        for p in todo {
            map.entry((p.proto, p.host_port))
                .or_default()
                .push(p.clone());
            tracing::debug!(port = %p.describe(), to = %p.addr, dport = p.port, owner = %p.owner, "port published");
        }
        Ok(())
    }

    /// Checks that `ports` can be published as they stand, without changing anything: the
    /// checks [`publish`](Self::publish) makes first (each mapping valid, no host port taken by
    /// another owner or by another of `ports`: [`SysError::Conflict`] names who has it).
    pub fn check(&self, ports: &[PortMapping]) -> Result<()> {
        self.unpublished(ports).map(drop)
    }

    /// The mappings of `ports` not yet published, once checked as [`check`](Self::check) says.
    fn unpublished<'a>(&self, ports: &'a [PortMapping]) -> Result<Vec<&'a PortMapping>> {
        let mut todo: Vec<&PortMapping> = Vec::new();
        let map = self.lock_ports();
        for (i, p) in ports.iter().enumerate() {
            validate(p)?;
            let existing = map.get(&(p.proto, p.host_port)).into_iter().flatten();
            if let Some(o) = existing.chain(ports[..i].iter()).find(|o| o.clashes(p)) {
                if o == p {
                    continue; // already published (or listed twice), identically
                }
                return Err(conflict(p, o));
            }
            todo.push(p);
        }
        Ok(todo)
    }

    /// Withdraws published ports in one batch (matched by protocol, host address and host
    /// port; missing ones are not an error).
    pub fn unpublish(&self, ports: &[PortMapping]) -> Result<()> {
        let mut b = self.nft.batch();
        Self::port_deletes(&mut b, ports);
        self.nft.apply(b)?;
        let mut map = self.lock_ports();
        for p in ports {
            forget(&mut map, p);
        }
        Ok(())
    }

    /// Whether a published port of `proto` uses host port `port` (on any host address), as
    /// this handle knows them. A lookup, not a scan: choosing a port stays flat in the number
    /// of ports published.
    pub fn port_in_use(&self, proto: Proto, port: u16) -> bool {
        self.lock_ports()
            .get(&(proto, port))
            .is_some_and(|v| !v.is_empty())
    }

    /// The ports published, as this handle knows them.
    pub fn published(&self) -> Vec<PortMapping> {
        let mut v: Vec<PortMapping> = self.lock_ports().values().flatten().cloned().collect();
        v.sort_by_key(|p| (p.proto, p.host_port, p.host_ip));
        v
    }

    /// Reads back what the kernel holds of Plexus (tables, bridges, subnets, ports), so a
    /// restarted daemon can reconcile it with its store.
    pub fn state(&self) -> Result<FirewallState> {
        let mut st = FirewallState::default();
        let tables = self.nft.tables()?;
        st.tables = tables
            .into_iter()
            .filter(|(f, n)| is_plexus_table(*f, n))
            .collect();
        st.tables.sort();
        let has = |f: Family, n: &str| st.tables.iter().any(|(tf, tn)| *tf == f && tn == n);
        let name = |e: &Element| {
            let end = e.key.iter().position(|&c| c == 0).unwrap_or(e.key.len());
            String::from_utf8_lossy(&e.key[..end]).into_owned()
        };
        if has(Family::Inet, FILTER_TABLE) {
            st.bridges = self
                .nft
                .elements(Family::Inet, FILTER_TABLE, BRIDGES)?
                .iter()
                .map(name)
                .collect();
            st.internal = self
                .nft
                .elements(Family::Inet, FILTER_TABLE, INTERNAL)?
                .iter()
                .map(name)
                .collect();
        }
        for f in [Family::Ip, Family::Ip6] {
            if has(f, NAT_TABLE) {
                st.subnets
                    .extend(prefixes_of(&self.nft.elements(f, NAT_TABLE, NETS)?));
                st.masquerade
                    .extend(prefixes_of(&self.nft.elements(f, NAT_TABLE, MASQ_NETS)?));
            }
        }
        st.ports = self.kernel_ports()?;
        st.ports.sort_by_key(|p| (p.proto, p.host_port, p.host_ip));
        Ok(st)
    }

    /// Makes the kernel match the store: after [`ensure_base`](Self::ensure_base), one batch
    /// removes every Plexus element (bridge, subnet, published port) that `networks` and
    /// `ports` do not describe and adds whatever they describe and the kernel lacks. For
    /// start-up after a crash; returns what was removed.
    pub fn reconcile(
        &self,
        networks: &[NetworkRules],
        ports: &[PortMapping],
    ) -> Result<Reconciled> {
        for (i, p) in ports.iter().enumerate() {
            validate(p)?;
            if let Some(o) = ports[..i].iter().find(|o| o.clashes(p)) {
                return Err(conflict(p, o));
            }
        }
        let mut want_bridges = BTreeSet::new();
        let mut want_internal = BTreeSet::new();
        let mut want_nets = BTreeSet::new();
        let mut want_masq = BTreeSet::new();
        for n in networks {
            ifname_key(&n.bridge)?;
            want_bridges.insert(n.bridge.clone());
            if n.internal {
                want_internal.insert(n.bridge.clone());
            }
            for &(a, len) in &n.subnets {
                let (start, _) = prefix_elements(a, len)?;
                want_nets.insert((start, len));
                if n.masquerade && !n.internal {
                    want_masq.insert((start, len));
                }
            }
        }
        self.ensure_base()?;
        let st = self.state()?;
        let names = |f: Family, table: &str, set: &str| -> Result<BTreeSet<String>> {
            Ok(self
                .nft
                .elements(f, table, set)?
                .iter()
                .map(|e| {
                    let k = e.key.get(..IFNAMSIZ).unwrap_or(&e.key);
                    let end = k.iter().position(|&c| c == 0).unwrap_or(k.len());
                    String::from_utf8_lossy(&k[..end]).into_owned()
                })
                .collect())
        };
        let mut seen = st.bridges.clone();
        seen.extend(st.internal.iter().cloned());
        seen.extend(names(Family::Inet, FILTER_TABLE, INTRA)?);
        for f in [Family::Ip, Family::Ip6] {
            seen.extend(names(f, NAT_TABLE, BRIDGES)?);
        }
        let mut out = Reconciled {
            bridges: seen.difference(&want_bridges).cloned().collect(),
            subnets: st
                .subnets
                .iter()
                .chain(st.masquerade.iter())
                .filter(|n| !want_nets.contains(n))
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            ports: st
                .ports
                .iter()
                .filter(|p| !ports.contains(p))
                .cloned()
                .collect(),
        };
        let mut b = self.nft.batch();
        for name in &out.bridges {
            let key = ifname_key(name)?;
            let one = [Element {
                key: key.clone(),
                ..Element::default()
            }];
            let pair = [Element {
                key: [key.clone(), key].concat(),
                ..Element::default()
            }];
            b.destroy_elements(Family::Inet, FILTER_TABLE, BRIDGES, &one);
            b.destroy_elements(Family::Inet, FILTER_TABLE, INTERNAL, &one);
            b.destroy_elements(Family::Inet, FILTER_TABLE, INTRA, &pair);
            for f in [Family::Ip, Family::Ip6] {
                b.destroy_elements(f, NAT_TABLE, BRIDGES, &one);
            }
        }
        for name in st.internal.difference(&want_internal) {
            let one = [Element {
                key: ifname_key(name)?,
                ..Element::default()
            }];
            b.destroy_elements(Family::Inet, FILTER_TABLE, INTERNAL, &one);
        }
        for (set, have, want) in [
            (NETS, &st.subnets, &want_nets),
            (MASQ_NETS, &st.masquerade, &want_masq),
        ] {
            for &(a, len) in have.difference(want) {
                let (_, elems) = prefix_elements(a, len)?;
                b.destroy_elements(family_of(a), NAT_TABLE, set, &elems);
            }
        }
        Self::port_deletes(&mut b, &out.ports);
        for n in networks {
            let e = Self::network_elements(n)?;
            Self::network_adds(&mut b, n, &e);
        }
        Self::port_adds(&mut b, ports.iter().filter(|p| !st.ports.contains(p)));
        self.nft.apply(b)?;
        self.reload_ports()?;
        out.ports.sort_by_key(|p| (p.proto, p.host_port, p.host_ip));
        tracing::info!(
            stale_bridges = out.bridges.len(),
            stale_subnets = out.subnets.len(),
            stale_ports = out.ports.len(),
            "nf_tables reconciled with the store"
        );
        Ok(out)
    }

    /// Deletes Plexus's four tables (and so all its rules, sets and elements) in one batch;
    /// no other table is touched. Idempotent.
    pub fn cleanup_all(&self) -> Result<()> {
        let mut b = self.nft.batch();
        b.destroy_table(Family::Inet, FILTER_TABLE);
        b.destroy_table(Family::Ip, NAT_TABLE);
        b.destroy_table(Family::Ip6, NAT_TABLE);
        b.destroy_table(Family::Bridge, FILTER_TABLE);
        self.nft.apply(b)?;
        self.lock_ports().clear();
        tracing::debug!(netns = %self.nft.netns().path().display(), "plexus nf_tables removed");
        Ok(())
    }
}

/// Whether a table is one of Plexus's.
pub fn is_plexus_table(family: Family, name: &str) -> bool {
    matches!(
        (family, name),
        (Family::Inet, FILTER_TABLE)
            | (Family::Ip, NAT_TABLE)
            | (Family::Ip6, NAT_TABLE)
            | (Family::Bridge, FILTER_TABLE)
    )
}

/// What [`Firewall::reconcile`] removed from the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Bridges no network of the store has.
    pub bridges: Vec<String>,
    /// Subnets no network of the store has (or no longer masquerades).
    pub subnets: Vec<(IpAddr, u8)>,
    /// Published ports the store does not have (or has differently).
    pub ports: Vec<PortMapping>,
}

struct NetElements {
    bridge: Vec<u8>,
    nets: HashMap<Family, Vec<Element>>,
}

fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    let (n, bits) = to_u128(net);
    let (v, vbits) = to_u128(ip);
    if bits != vbits || u32::from(len) > bits {
        return false;
    }
    let host = bits - u32::from(len);
    if host >= 128 {
        return true;
    }
    (n >> host) == (v >> host)
}

fn forget(map: &mut HashMap<(Proto, u16), Vec<PortMapping>>, p: &PortMapping) {
    if let Some(v) = map.get_mut(&(p.proto, p.host_port)) {
        v.retain(|o| !o.same_binding(p));
        if v.is_empty() {
            map.remove(&(p.proto, p.host_port));
        }
    }
}

fn conflict(p: &PortMapping, owner: &PortMapping) -> SysError {
    SysError::Conflict {
        what: p.describe(),
        owner: format!("{} (-> {}:{})", owner.owner, owner.addr, owner.port),
    }
}

fn validate(p: &PortMapping) -> Result<()> {
    let invalid = |field, reason| SysError::Invalid {
        field,
        value: format!("{p:?}"),
        reason,
    };
    if p.host_port == 0 {
        return Err(invalid(
            "host port",
            "must not be 0 (pick an ephemeral port first)",
        ));
    }
    if p.port == 0 {
        return Err(invalid("container port", "must not be 0"));
    }
    if let Some(ip) = p.host_ip {
        if family_of(ip) != p.family() {
            return Err(invalid(
                "host ip",
                "must be of the same family as the sandbox address",
            ));
        }
        if ip.is_unspecified() {
            return Err(invalid(
                "host ip",
                "use None for every address, not 0.0.0.0/::",
            ));
        }
    }
    if p.owner.is_empty() {
        return Err(invalid("owner", "must name who publishes the port"));
    }
    Ok(())
}

/// Adds the bridge name to a "not found" error (a missing table: `ensure_base` not called).
fn named(e: SysError, bridge: &str) -> SysError {
    match e {
        SysError::NotFound { what } => SysError::NotFound {
            what: format!("{what} (for bridge {bridge:?}; was ensure_base called?)"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_round_trip_through_interval_elements() {
        for (a, l) in [
            ("10.1.2.0", 24u8),
            ("10.1.2.77", 24),
            ("192.168.0.0", 16),
            ("255.255.255.0", 24),
            ("fd00:1::", 64),
        ] {
            let ip: IpAddr = a.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let (start, elems) = prefix_elements(ip, l).unwrap_or_else(|e| panic!("{e}"));
            let back = prefixes_of(&elems);
            assert_eq!(back, BTreeSet::from([(start, l)]), "{a}/{l}");
        }
        assert!(prefix_elements(IpAddr::V4(Ipv4Addr::LOCALHOST), 33).is_err());
    }

    #[test]
    fn firewall_is_shareable_across_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Firewall>();
        shareable::<Nft>();
    }

    #[test]
    fn port_elements_round_trip() {
        let p = PortMapping {
            proto: Proto::Udp,
            host_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            host_port: 8080,
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            port: 80,
            owner: "ep-1".into(),
        };
        assert_eq!(
            port_from(&p.element(true), true, Family::Ip),
            Some(p.clone())
        );
        let q = PortMapping {
            host_ip: None,
            ..p.clone()
        };
        assert_eq!(
            port_from(&q.element(true), false, Family::Ip),
            Some(q.clone())
        );
        assert!(p.clashes(&q) && q.clashes(&p));
        assert!(contains("10.0.0.0".parse().unwrap_or(p.addr), 24, p.addr));
    }
}
