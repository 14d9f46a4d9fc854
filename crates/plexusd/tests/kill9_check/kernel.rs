//! The kernel against the store: everything that does not match between what the daemon's
//! namespace and the sandboxes' namespaces hold and what the API says the store holds.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use plexus_drivers::{parse_alias, Marked};
use plexus_sys::netns::Netns;
use serde_json::Value;

use super::{text, Snapshot};
use crate::kill9_daemon::Daemon;

/// The link alias prefix the daemon marks with (its default).
const MARKER: &str = "plexus";

fn links_in(rt: &tokio::runtime::Runtime, ns: &Netns) -> Vec<plexus_sys::rtnl::Link> {
    rt.block_on(async {
        let rtnl = plexus_sys::rtnl::Rtnl::connect(ns).await?;
        rtnl.links().await
    })
    .unwrap_or_else(|e| panic!("listing links in {}: {e}", ns.path().display()))
}

fn addresses_in(rt: &tokio::runtime::Runtime, ns: &Netns, index: u32) -> Vec<(IpAddr, u8)> {
    rt.block_on(async {
        let rtnl = plexus_sys::rtnl::Rtnl::connect(ns).await?;
        rtnl.addresses(index).await
    })
    .unwrap_or_else(|e| panic!("listing addresses in {}: {e}", ns.path().display()))
}

/// The gateways of the default routes inside the namespace at `path`, IPv4 or IPv6
/// (`ip -j route`, run in the namespace).
fn default_gateways(path: &str, v6: bool) -> BTreeSet<IpAddr> {
    let out = Command::new("nsenter")
        .arg(format!("--net={path}"))
        .args([
            "ip",
            "-j",
            if v6 { "-6" } else { "-4" },
            "route",
            "show",
            "default",
        ])
        .output()
        .unwrap_or_else(|e| panic!("ip route in {path}: {e}"));
    let routes: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Array(Vec::new()));
    routes
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|r| text(&r["gateway"]).parse().ok())
        .collect()
}

/// Everything that does not match between the kernel and the store; empty when they agree.
pub fn mismatches(d: &Daemon, rt: &tokio::runtime::Runtime, snap: &Snapshot) -> Vec<String> {
    let mut bad = Vec::new();
    // The records agree with each other.
    for (name, s) in &snap.sbxs {
        for e in &s.endpoints {
            let listed = snap
                .nets
                .values()
                .find(|n| n.id == e.network_id)
                .and_then(|n| n.endpoints.get(&e.id));
            if listed != Some(&s.id) {
                bad.push(format!(
                    "sandbox {name} lists endpoint {} on network {} which that network does not record",
                    e.id, snap.net_name(&e.network_id)
                ));
            }
        }
    }
    for (name, n) in &snap.nets {
        for (ep, sandbox) in &n.endpoints {
            if snap.endpoint(ep).is_none() {
                bad.push(format!(
                    "network {name} records endpoint {ep} (sandbox {sandbox}) that no sandbox lists (ghost endpoint)"
                ));
            }
        }
    }

    // Sandbox namespaces.
    let dir_entries: BTreeSet<String> = std::fs::read_dir(d.netns_dir())
        .map(|it| {
            it.flatten()
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    let recorded: BTreeSet<String> = snap
        .sbxs
        .values()
        .filter(|s| s.owned)
        .map(|s| s.netns.clone())
        .collect();
    for orphan in dir_entries.difference(&recorded) {
        bad.push(format!("orphan namespace {orphan}: no sandbox records it"));
    }
    let mut sandbox_ns = BTreeMap::new();
    for (name, s) in &snap.sbxs {
        match Netns::open(Path::new(&s.netns)) {
            Ok(ns) => {
                sandbox_ns.insert(name.clone(), ns);
            }
            Err(e) => bad.push(format!(
                "sandbox {name}'s namespace {} is missing: {e}",
                s.netns
            )),
        }
    }

    // Links of the daemon's namespace: every one is a marked bridge of a stored network or a
    // marked veth of a stored endpoint, and every stored network and endpoint has its own.
    let mut bridges: BTreeMap<String, String> = BTreeMap::new(); // network id → bridge name
    let mut host_veths: BTreeSet<String> = BTreeSet::new();
    for link in links_in(rt, &d.host_ns) {
        if link.name == "lo" {
            continue;
        }
        match link.alias.as_deref().and_then(|a| parse_alias(MARKER, a)) {
            Some(Marked::Bridge { network }) => {
                if snap.nets.values().any(|n| n.id == network) {
                    if let Some(other) = bridges.insert(network.clone(), link.name.clone()) {
                        bad.push(format!(
                            "network {} has two bridges: {other} and {}",
                            snap.net_name(&network),
                            link.name
                        ));
                    }
                } else {
                    bad.push(format!(
                        "orphan bridge {} (marked for network {network}, which the store does not have)",
                        link.name
                    ));
                }
            }
            Some(Marked::Veth {
                network, endpoint, ..
            }) => match snap.endpoint(&endpoint) {
                Some((_, e)) if e.network_id == network => {
                    host_veths.insert(endpoint);
                }
                _ => bad.push(format!(
                    "orphan veth {} in the daemon's namespace (marked for endpoint {endpoint} on network {network}, which the store does not have)",
                    link.name
                )),
            },
            None => bad.push(format!(
                "orphan unmarked link {} (kind {:?}, alias {:?}) in the daemon's namespace",
                link.name, link.kind, link.alias
            )),
            Some(Marked::Other { kind, .. }) => bad.push(format!(
                "link {} marked as a {kind}, which no driver here makes",
                link.name
            )),
        }
    }
    for (name, n) in &snap.nets {
        if !bridges.contains_key(&n.id) {
            bad.push(format!("network {name} has no bridge in the kernel"));
        }
    }
    for (name, s) in &snap.sbxs {
        for e in &s.endpoints {
            if !host_veths.contains(&e.id) {
                bad.push(format!(
                    "endpoint {} of sandbox {name} on network {} has no veth in the daemon's namespace",
                    e.id,
                    snap.net_name(&e.network_id)
                ));
            }
        }
    }

    // Links inside each sandbox: exactly its endpoints' interfaces, with their addresses.
    for (name, ns) in &sandbox_ns {
        let s = &snap.sbxs[name];
        let mut seen = BTreeSet::new();
        for link in links_in(rt, ns) {
            if link.name == "lo" {
                continue;
            }
            let mark = link.alias.as_deref().and_then(|a| parse_alias(MARKER, a));
            let ep = match &mark {
                Some(Marked::Veth { endpoint, .. }) => {
                    s.endpoints.iter().find(|e| &e.id == endpoint)
                }
                _ => None,
            };
            let Some(ep) = ep else {
                bad.push(format!(
                    "orphan interface {} (alias {:?}) in sandbox {name}",
                    link.name, link.alias
                ));
                continue;
            };
            seen.insert(ep.id.clone());
            if link.name != ep.interface {
                bad.push(format!(
                    "endpoint {} of sandbox {name} is {} in the kernel but {} in the store",
                    ep.id, link.name, ep.interface
                ));
            }
            let addrs = addresses_in(rt, ns, link.index);
            let want = ep
                .ip
                .map(|(a, p)| (IpAddr::V4(a), p))
                .into_iter()
                .chain(ep.ip6.map(|(a, p)| (IpAddr::V6(a), p)));
            for ip in want {
                if !addrs.contains(&ip) {
                    bad.push(format!(
                        "interface {} of sandbox {name} lacks its address {}/{} (has {addrs:?})",
                        link.name, ip.0, ip.1
                    ));
                }
            }
        }
        for e in &s.endpoints {
            if !seen.contains(&e.id) {
                bad.push(format!(
                    "endpoint {} of sandbox {name} ({}) is not in the sandbox's namespace",
                    e.id, e.interface
                ));
            }
        }
    }

    // Default routes: a sandbox with an address of a family has exactly one default route of
    // that family, through the gateway of one of its networks; one without has none.
    for (name, s) in &snap.sbxs {
        if !sandbox_ns.contains_key(name) {
            continue;
        }
        for v6 in [false, true] {
            let gateways: BTreeSet<IpAddr> = s
                .endpoints
                .iter()
                .filter(|e| if v6 { e.ip6.is_some() } else { e.ip.is_some() })
                .filter_map(|e| snap.nets.values().find(|n| n.id == e.network_id))
                .filter_map(|n| {
                    if v6 {
                        n.gateway6.map(IpAddr::V6)
                    } else {
                        Some(IpAddr::V4(n.gateway))
                    }
                })
                .collect();
            let routes = default_gateways(&s.netns, v6);
            let family = if v6 { "IPv6" } else { "IPv4" };
            match (gateways.is_empty(), routes.len()) {
                (true, 0) => {}
                (true, _) => bad.push(format!(
                    "sandbox {name} has {family} default routes {routes:?} but no {family} endpoint"
                )),
                (false, 1) if routes.is_subset(&gateways) => {}
                (false, _) => bad.push(format!(
                    "sandbox {name} has {family} default routes {routes:?}; wants one through one of {gateways:?}"
                )),
            }
        }
    }

    // nftables: exactly the stored networks' bridges and subnets, the stored endpoints' ports.
    let fw = plexus_drivers::firewall::Firewall::open(&d.host_ns)
        .and_then(|fw| fw.state())
        .unwrap_or_else(|e| panic!("reading nftables state: {e}"));
    let want_bridges: BTreeSet<String> = bridges.values().cloned().collect();
    for b in fw.bridges.difference(&want_bridges) {
        bad.push(format!(
            "orphan nft bridge element {b}: no stored network has that bridge"
        ));
    }
    for b in want_bridges.difference(&fw.bridges) {
        bad.push(format!(
            "bridge {b} of a stored network is missing from nft"
        ));
    }
    let want_subnets: BTreeSet<(std::net::IpAddr, u8)> = snap
        .nets
        .values()
        .flat_map(|n| {
            [(IpAddr::V4(n.subnet.0), n.subnet.1)]
                .into_iter()
                .chain(n.subnet6.map(|(a, p)| (IpAddr::V6(a), p)))
        })
        .collect();
    for s in fw.subnets.difference(&want_subnets) {
        bad.push(format!(
            "orphan nft subnet element {}/{}: no stored network has it",
            s.0, s.1
        ));
    }
    for s in want_subnets.difference(&fw.subnets) {
        bad.push(format!(
            "subnet {}/{} of a stored network is missing from nft",
            s.0, s.1
        ));
    }
    for s in want_subnets.difference(&fw.masquerade) {
        bad.push(format!(
            "subnet {}/{} of a stored network is not masqueraded in nft",
            s.0, s.1
        ));
    }
    for s in fw.masquerade.difference(&want_subnets) {
        bad.push(format!(
            "orphan nft masquerade element {}/{}: no stored network has it",
            s.0, s.1
        ));
    }
    for b in fw.internal.difference(&want_bridges) {
        bad.push(format!("orphan nft internal element {b}"));
    }
    if fw.intra != want_bridges {
        bad.push(format!(
            "nft intra set holds {:?}; the stored networks' bridges are {want_bridges:?}",
            fw.intra
        ));
    }
    let want_nat_bridges: BTreeSet<(String, String)> = want_bridges
        .iter()
        .flat_map(|b| ["ip", "ip6"].map(|f| (f.to_string(), b.clone())))
        .collect();
    if fw.nat_bridges != want_nat_bridges {
        bad.push(format!(
            "nft NAT bridge sets hold {:?}; want {want_nat_bridges:?}",
            fw.nat_bridges
        ));
    }
    let mut nft_ports: BTreeMap<String, BTreeSet<(String, u16, u16)>> = BTreeMap::new();
    for p in &fw.ports {
        nft_ports.entry(p.owner.clone()).or_default().insert((
            p.proto.name().to_string(),
            p.host_port,
            p.port,
        ));
    }
    for (owner, ports) in &nft_ports {
        match snap.endpoint(owner) {
            None => bad.push(format!(
                "orphan published ports {ports:?} owned by endpoint {owner}, which the store does not have"
            )),
            Some((sandbox, e)) if &e.ports != ports => bad.push(format!(
                "endpoint {owner} of sandbox {sandbox} publishes {ports:?} in nft but {:?} in the store",
                e.ports
            )),
            Some(_) => {}
        }
    }
    for (name, s) in &snap.sbxs {
        for e in &s.endpoints {
            if !e.ports.is_empty() && !nft_ports.contains_key(&e.id) {
                bad.push(format!(
                    "ports {:?} of sandbox {name} are not published in nft",
                    e.ports
                ));
            }
        }
    }
    bad
}
