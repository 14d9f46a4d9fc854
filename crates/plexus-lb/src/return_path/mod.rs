//! The routing mesh's return path, in a backend's namespace: replies to a connection that
//! came through an ingress sandbox go back through that same sandbox, not the backend's
//! default route.
//!
//! The ingress sandbox does not SNAT (the backend sees the client's address), so a reply is
//! addressed to the client and would follow the backend's default route (its host's
//! gateway bridge), where nothing un-NATs it. Instead:
//!
//! ```text
//! table ip plexus-return {
//!   map gateways { type ether_addr : mark }   # ingress sandbox MAC : its mark,
//!                                             # comment "gateway=<its IP>"
//!   chain mark-in { type filter hook prerouting priority mangle;
//!     iifname <interface> ct state new ct mark set ether saddr map @gateways }
//!                                             # comment "interface=<interface>"
//!   chain route-out { type route hook output priority mangle;
//!     ct mark and 0xff000000 == 0x70000000 meta mark set ct mark }
//! }
//! ip rule add priority 1000 fwmark M lookup M              # per gateway
//! ip route add default via <gateway IP> dev <interface> table M
//! ```
//!
//! A new connection arriving on the ingress interface from an ingress sandbox's MAC
//! address gets that sandbox's conntrack mark; each packet the backend sends on that
//! connection gets the mark as its packet mark in the `route` chain, after which the kernel
//! looks its route up again: the mark's rule sends it to the mark's table, whose one route
//! goes through the sandbox, which un-DNATs it. A connection from anyone else (no element
//! for its MAC) gets no mark and uses the main table.
//!
//! # Marks and tables
//!
//! A gateway's mark is `0x7000_0000 | (its IPv4 address & 0x00ff_ffff)` ([`mark_of`]), and
//! its route table's id is the mark. So:
//!
//! - the mark is derived from the gateway alone: every backend gives a sandbox the same
//!   mark, and [`reconcile`](ReturnPath::reconcile) finds what it wrote from the kernel
//!   (rules and tables in the range, map elements) without a file;
//! - the top byte, `0x70` under the mask `0xff00_0000` ([`MARK_BASE`], [`MARK_MASK`]),
//!   marks the range as this module's: only marks in it are copied to packets, and only
//!   rules and tables in it are deleted as stale. Nothing else sets conntrack marks in a
//!   task's namespace; the kube-proxy bits (`0x4000`, `0x8000`) and Docker's are outside;
//! - the low 24 bits of the address are unique within an ingress network of a /8 or
//!   longer prefix; two gateways whose addresses share them are refused
//!   ([`LbError::Invalid`]);
//! - a table id above 255 needs `FRA_TABLE` (rtnetlink 0.24 and the kernel both handle it).
//!
//! # Reverse-path filtering
//!
//! The client's packets arrive on the ingress interface with the client's source address,
//! whose route (main table, no mark) leaves by the default route's interface: strict
//! reverse-path filtering (`rp_filter=1`, which a namespace inherits from the host's
//! `net.ipv4.conf.all` and `default` unless `net.core.devconf_inherit_init_net` says
//! otherwise) would drop them. When the interface's effective value (the larger of `all`
//! and its own) is 1, [`reconcile`](ReturnPath::reconcile) sets the interface's to 2
//! (loose: any route to the source will do); 0 and 2 are left as they are, and
//! [`remove`](ReturnPath::remove) leaves it (loose filtering costs nothing). Loose
//! filtering still needs some route to the client: a namespace without a default route
//! drops them.
//!
//! # Order
//!
//! [`reconcile`](ReturnPath::reconcile) adds routes, then rules, then the table (one
//! atomic batch), and deletes stale rules and then stale routes last, so a mark never
//! names a rule whose table is empty; [`remove`](ReturnPath::remove) goes the other way. A
//! view without gateways is the same as [`remove`](ReturnPath::remove).

mod table;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use plexus_sys::nft::{Family, Nft};
use plexus_sys::rtnl::{check_ifname, format_mac, FibRule, Route, Rtnl};
use plexus_sys::sysctl::{self, SysctlDir};
use plexus_sys::SysError;

use crate::dispatcher::{netns_of, send};
use crate::error::LbError;
use crate::view::check_unicast;

/// The table, in the `ip` family.
pub const TABLE: &str = "plexus-return";
/// The filter chain on prerouting marking new connections from an ingress sandbox.
pub const MARK_IN_CHAIN: &str = "mark-in";
/// The route chain on output copying the connection's mark to the packet.
pub const ROUTE_OUT_CHAIN: &str = "route-out";
/// The map from an ingress sandbox's MAC address to its mark.
pub const GATEWAYS_MAP: &str = "gateways";
/// The bits every mark of this module has under [`MARK_MASK`].
pub const MARK_BASE: u32 = 0x7000_0000;
/// The bits that say a mark (or a route table id) is this module's.
pub const MARK_MASK: u32 = 0xff00_0000;
/// The priority of the `fwmark` rules: before `main` (32766).
pub const RULE_PRIORITY: u32 = 1000;

/// The mark (and route table id) of the gateway at `ip`.
pub fn mark_of(ip: Ipv4Addr) -> u32 {
    MARK_BASE | (u32::from(ip) & !MARK_MASK)
}

/// Whether a mark or route table id is in this module's range.
pub fn is_ours(mark: u32) -> bool {
    mark & MARK_MASK == MARK_BASE
}

/// What a backend's namespace needs to send replies back through the ingress sandboxes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReturnView {
    /// The backend's interface on the ingress network.
    pub interface: String,
    /// Each ingress sandbox's MAC address on the ingress network, to its IPv4 address
    /// there. None: no return path at all.
    pub gateways: BTreeMap<[u8; 6], Ipv4Addr>,
}

/// Checks a view; errors name the field (`interface`, `gateways[02:42:…].ip`, …).
fn validate(view: &ReturnView) -> Result<(), LbError> {
    if let Err(SysError::Invalid { reason, .. }) = check_ifname("interface", &view.interface) {
        return Err(LbError::invalid(
            "interface",
            format!("{:?} {reason}", view.interface),
        ));
    }
    let mut marks: BTreeMap<u32, [u8; 6]> = BTreeMap::new();
    for (mac, ip) in &view.gateways {
        let field = format!("gateways[{}]", format_mac(mac));
        if mac[0] & 1 != 0 || mac.iter().all(|&b| b == 0) {
            let reason = "a multicast or zero address is no sandbox's";
            return Err(LbError::invalid(field, reason));
        }
        check_unicast(*ip).map_err(|r| LbError::invalid(format!("{field}.ip"), r))?;
        if let Some(other) = marks.insert(mark_of(*ip), *mac) {
            let reason = format!(
                "{ip} has the mark of gateway {} (marks keep an address's low 24 bits)",
                format_mac(&other)
            );
            return Err(LbError::invalid(format!("{field}.ip"), reason));
        }
    }
    Ok(())
}

/// The return path of one backend namespace: its rtnetlink connection and an nf_tables
/// connection in the same namespace.
#[derive(Clone)]
pub struct ReturnPath {
    rtnl: Rtnl,
    nft: std::sync::Arc<Nft>,
}

impl std::fmt::Debug for ReturnPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReturnPath")
            .field("netns", &self.rtnl.netns().path())
            .finish()
    }
}

impl ReturnPath {
    /// Opens nf_tables in `rtnl`'s namespace.
    pub fn new(rtnl: &Rtnl) -> Result<Self, LbError> {
        let ns = rtnl.netns();
        let nft = Nft::open(ns).map_err(|source| LbError::Kernel {
            netns: ns.path().display().to_string(),
            source,
        })?;
        Ok(Self {
            rtnl: rtnl.clone(),
            nft: std::sync::Arc::new(nft),
        })
    }

    fn kernel(&self, source: SysError) -> LbError {
        LbError::Kernel {
            netns: netns_of(&self.nft),
            source,
        }
    }

    /// The view the nftables table holds (`None` when there is no table): the interface
    /// from the `mark-in` rule's comment, the gateways from the map's elements. Rules and
    /// routes are [`reconcile`](Self::reconcile)'s to check.
    pub fn read(&self) -> Result<Option<ReturnView>, LbError> {
        match self.read_table()? {
            Ok(view) => Ok(view),
            Err(what) => Err(LbError::Unexpected {
                netns: netns_of(&self.nft),
                what,
            }),
        }
    }

    /// The table's view, or what in it this crate would not have written.
    fn read_table(&self) -> Result<Result<Option<ReturnView>, String>, LbError> {
        let nft = &self.nft;
        let k = |e| self.kernel(e);
        let tables = nft.tables().map_err(k)?;
        if !tables.iter().any(|(f, t)| *f == Family::Ip && t == TABLE) {
            return Ok(Ok(None));
        }
        let gateways = match nft.elements(Family::Ip, TABLE, GATEWAYS_MAP) {
            Ok(e) => e,
            Err(SysError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(k(e)),
        };
        let dump = table::Dump {
            chains: nft.chains(Family::Ip, TABLE).map_err(k)?,
            sets: nft.sets(Family::Ip, TABLE).map_err(k)?,
            gateways,
            mark_in: nft.rules(Family::Ip, TABLE, MARK_IN_CHAIN).map_err(k)?,
            route_out: nft.rules(Family::Ip, TABLE, ROUTE_OUT_CHAIN).map_err(k)?,
        };
        Ok(table::decode(&dump).map(Some))
    }

    /// Makes the namespace's table, rules and routes match `want` exactly (see the module
    /// documentation for the order), deleting this module's stale rules and route tables
    /// (recognised by [`is_ours`]) and nothing else. The interface must exist. A view
    /// without gateways removes everything.
    pub async fn reconcile(&self, want: &ReturnView) -> Result<(), LbError> {
        validate(want)?;
        if want.gateways.is_empty() {
            return self.remove().await;
        }
        let k = |e| self.kernel(e);
        let link = self.rtnl.require_link(&want.interface).await.map_err(k)?;
        self.loosen_rp_filter(&want.interface)?;
        let wanted: BTreeMap<u32, Route> = want
            .gateways
            .values()
            .map(|ip| {
                let route = Route {
                    destination: None,
                    gateway: Some(IpAddr::V4(*ip)),
                    oif: Some(link.index),
                };
                (mark_of(*ip), route)
            })
            .collect();
        // Routes first: a rule never points at an empty table.
        let tables = self.rtnl.routes_by_table_v4().await.map_err(k)?;
        for (&t, route) in &wanted {
            let have = tables.get(&t).map(Vec::as_slice).unwrap_or_default();
            for r in have.iter().filter(|r| *r != route) {
                self.rtnl.delete_route_in_table(r, t).await.map_err(k)?;
            }
            if !have.contains(route) {
                self.rtnl.add_route_in_table(route, t).await.map_err(k)?;
            }
        }
        let rules: BTreeSet<FibRule> = wanted.keys().map(|&m| rule_of(m)).collect();
        for r in &rules {
            self.rtnl.add_rule(r).await.map_err(k)?;
        }
        self.reconcile_table(want)?;
        // Stale rules, then their tables.
        for r in self.rtnl.rules_v4().await.map_err(k)? {
            if is_ours(r.fwmark) && !rules.contains(&r) {
                self.rtnl.delete_rule(&r).await.map_err(k)?;
            }
        }
        for (t, routes) in &tables {
            if is_ours(*t) && !wanted.contains_key(t) {
                for r in routes {
                    self.delete_route(r, *t).await?;
                }
            }
        }
        Ok(())
    }

    /// The table made to hold `want`: nothing sent when it does; element changes only when
    /// the gateways alone differ; otherwise rebuilt whole in one atomic batch.
    fn reconcile_table(&self, want: &ReturnView) -> Result<(), LbError> {
        let mut b = self.nft.batch();
        match self.read_table()? {
            Ok(Some(have)) if have == *want => return Ok(()),
            Ok(Some(have)) if have.interface == want.interface => {
                table::encode_gateways(&have.gateways, &want.gateways, &mut b);
            }
            Ok(_) => table::encode(want, &mut b),
            Err(what) => {
                tracing::warn!(netns = %netns_of(&self.nft), %what, "return-path table unreadable: rebuilding it");
                table::encode(want, &mut b);
            }
        }
        tracing::debug!(netns = %netns_of(&self.nft), messages = b.len(), "applying return-path change");
        send(&self.nft, b)
    }

    /// A route deleted; one gone already (deleted meanwhile) is no error.
    async fn delete_route(&self, route: &Route, table: u32) -> Result<(), LbError> {
        match self.rtnl.delete_route_in_table(route, table).await {
            Ok(()) | Err(SysError::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.kernel(e)),
        }
    }

    /// Sets the interface's `rp_filter` to 2 when the effective value is 1 (strict).
    fn loosen_rp_filter(&self, interface: &str) -> Result<(), LbError> {
        let ns = self.rtnl.netns();
        let k = |e| self.kernel(e);
        let all = sysctl::read(ns, "net.ipv4.conf.all.rp_filter").map_err(k)?;
        let conf = SysctlDir::open(ns, "net.ipv4.conf").map_err(k)?;
        let own = conf.read(&[interface, "rp_filter"]).map_err(k)?;
        let value = |s: &str| s.parse::<u8>().unwrap_or(0);
        if value(&all).max(value(&own)) == 1 {
            tracing::debug!(netns = %netns_of(&self.nft), interface, "loose reverse-path filtering for the return path");
            conf.write(&[interface, "rp_filter"], "2").map_err(k)?;
        }
        Ok(())
    }

    /// Deletes the table, then this module's rules, then its route tables; what is missing
    /// is no error.
    pub async fn remove(&self) -> Result<(), LbError> {
        let k = |e| self.kernel(e);
        let mut b = self.nft.batch();
        table::encode_remove(&mut b);
        send(&self.nft, b)?;
        for r in self.rtnl.rules_v4().await.map_err(k)? {
            if is_ours(r.fwmark) {
                self.rtnl.delete_rule(&r).await.map_err(k)?;
            }
        }
        for (t, routes) in self.rtnl.routes_by_table_v4().await.map_err(k)? {
            if is_ours(t) {
                for r in &routes {
                    self.delete_route(r, t).await?;
                }
            }
        }
        Ok(())
    }
}

/// The rule of a mark: `priority RULE_PRIORITY fwmark M lookup M`.
fn rule_of(mark: u32) -> FibRule {
    FibRule {
        priority: RULE_PRIORITY,
        fwmark: mark,
        fwmask: u32::MAX,
        table: mark,
    }
}

/// [`ReturnPath::reconcile`] on an nf_tables connection opened for the call.
pub async fn reconcile(rtnl: &Rtnl, want: &ReturnView) -> Result<(), LbError> {
    ReturnPath::new(rtnl)?.reconcile(want).await
}

/// [`ReturnPath::remove`] on an nf_tables connection opened for the call.
pub async fn remove(rtnl: &Rtnl) -> Result<(), LbError> {
    ReturnPath::new(rtnl)?.remove().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(v: &ReturnView) -> String {
        match validate(v) {
            Err(LbError::Invalid { field, .. }) => field,
            other => panic!("want an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn marks_keep_the_low_bits_in_one_range() {
        let m = mark_of(Ipv4Addr::new(10, 255, 0, 2));
        assert_eq!(m, 0x70ff_0002);
        assert!(is_ours(m) && !is_ours(0x4000) && !is_ours(0x7100_0000));
        assert_eq!(rule_of(m).table, m);
    }

    #[test]
    fn bad_input_names_the_field() {
        let mac = [2, 0x42, 0, 0, 0, 1];
        let good = ReturnView {
            interface: "eth1".into(),
            gateways: [(mac, Ipv4Addr::new(10, 0, 0, 2))].into(),
        };
        assert!(validate(&good).is_ok());
        for name in ["", "a/b", "sixteen-chars-xx"] {
            let v = ReturnView {
                interface: name.into(),
                ..good.clone()
            };
            assert_eq!(field_of(&v), "interface", "{name:?}");
        }
        let mut v = good.clone();
        v.gateways
            .insert([1, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(field_of(&v), "gateways[01:00:00:00:00:01]");
        let mut v = good.clone();
        v.gateways.insert(mac, Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(field_of(&v), "gateways[02:42:00:00:00:01].ip");
        // 11.0.0.2 has the low 24 bits of 10.0.0.2.
        let mut v = good;
        v.gateways
            .insert([2, 0x42, 0, 0, 0, 2], Ipv4Addr::new(11, 0, 0, 2));
        assert_eq!(field_of(&v), "gateways[02:42:00:00:00:02].ip");
    }
}
