//! Reading the firewall back, reconciling it with the store, and removing it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use plexus_sys::nft::{Element, Family};
use plexus_sys::Result;

use super::addr::{family_of, ifname_key, prefix_elements, prefixes_of};
use super::ports::{conflict, validate, PortMapping};
use super::*;

/// What the kernel holds of Plexus, read back for reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallState {
    /// Plexus's tables present.
    pub tables: Vec<(Family, String)>,
    /// Bridges known to the filter table.
    pub bridges: BTreeSet<String>,
    /// Bridges of internal networks.
    pub internal: BTreeSet<String>,
    /// Bridges whose frames between their own ports pass (`intra`: `br . br`).
    pub intra: BTreeSet<String>,
    /// Bridges known to the IPv4 and IPv6 NAT tables, by family name (`ip`, `ip6`).
    pub nat_bridges: BTreeSet<(String, String)>,
    /// Every Plexus subnet.
    pub subnets: BTreeSet<(IpAddr, u8)>,
    /// Subnets masqueraded on egress.
    pub masquerade: BTreeSet<(IpAddr, u8)>,
    /// Published ports, with their owners.
    pub ports: Vec<PortMapping>,
}

impl Firewall {
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
            st.intra = self
                .nft
                .elements(Family::Inet, FILTER_TABLE, INTRA)?
                .iter()
                .map(name)
                .collect();
        }
        for f in [Family::Ip, Family::Ip6] {
            if has(f, NAT_TABLE) {
                st.nat_bridges.extend(
                    self.nft
                        .elements(f, NAT_TABLE, BRIDGES)?
                        .iter()
                        .map(|e| (f.name().to_string(), name(e))),
                );
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
