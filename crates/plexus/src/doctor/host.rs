//! This namespace's settings and neighbours: forwarding, `br_netfilter`, and links or routes
//! in Plexus's address pools.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use anyhow::{anyhow, Result};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;

use super::{Check, Status};

/// Docker's local default pools, which plexusd uses without `--default-address-pool`
/// (`plexus_ipam::space::docker_local_defaults`; a test keeps the two equal).
pub(super) const DEFAULT_POOLS: [&str; 7] = [
    "172.17.0.0/16",
    "172.18.0.0/16",
    "172.19.0.0/16",
    "172.20.0.0/14",
    "172.24.0.0/14",
    "172.28.0.0/14",
    "192.168.0.0/16",
];

/// The prefix of the link aliases of what Plexus makes (plexusd's default marker).
const PLEXUS_ALIAS: &str = "plexus:";

/// An IPv4 prefix, its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Net {
    addr: Ipv4Addr,
    len: u8,
}

impl Net {
    fn new(addr: Ipv4Addr, len: u8) -> Self {
        let len = len.min(32);
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Self {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            len,
        }
    }

    fn parse(s: &str) -> Option<Self> {
        let (addr, len) = s.split_once('/')?;
        let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
        Some(Self::new(addr.parse().ok()?, len))
    }

    fn overlaps(self, other: Net) -> bool {
        let shorter = self.len.min(other.len);
        Net::new(self.addr, shorter) == Net::new(other.addr, shorter)
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The IPv4 pools to check: the bases of `--default-address-pool` entries, or Docker's
/// defaults. An entry that does not parse is an error naming the flag.
pub(super) fn pools(entries: &[String]) -> Result<Vec<Net>> {
    if entries.is_empty() {
        return Ok(DEFAULT_POOLS.iter().filter_map(|p| Net::parse(p)).collect());
    }
    let mut out = Vec::new();
    for entry in entries {
        let base = entry
            .split(',')
            .filter_map(|item| item.trim().split_once('='))
            .find(|(k, _)| k.trim() == "base")
            .map(|(_, v)| v.trim())
            .ok_or_else(|| {
                anyhow!("invalid --default-address-pool {entry:?}: expected base=CIDR,size=N")
            })?;
        if base.contains(':') {
            continue; // IPv6: the host's IPv6 routes are not checked
        }
        out.push(Net::parse(base).ok_or_else(|| {
            anyhow!("invalid --default-address-pool {entry:?}: base {base:?} is not an IPv4 CIDR")
        })?);
    }
    Ok(out)
}

fn sysctl(key: &str) -> Option<String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::read_to_string(path)
        .ok()
        .map(|v| v.trim().to_string())
}

/// IPv4 and IPv6 forwarding in this namespace.
pub(super) fn forwarding() -> [Check; 2] {
    let v4 = match sysctl("net.ipv4.ip_forward").as_deref() {
        Some("1") => Check::new("ip_forward", Status::Ok, "net.ipv4.ip_forward: on"),
        Some(_) => Check::new(
            "ip_forward",
            Status::Warn,
            "net.ipv4.ip_forward: off; sandboxes reach nothing beyond this host without it",
        )
        .fix("nothing to do: plexusd turns it on when it makes its first bridge network"),
        None => Check::new(
            "ip_forward",
            Status::Fail,
            "net.ipv4.ip_forward cannot be read: no IPv4 in this namespace?",
        ),
    };
    let v6 = match sysctl("net.ipv6.conf.all.forwarding").as_deref() {
        Some("1") => Check::new(
            "ipv6_forwarding",
            Status::Ok,
            "net.ipv6.conf.all.forwarding: on",
        ),
        Some(_) => Check::new(
            "ipv6_forwarding",
            Status::Warn,
            "net.ipv6.conf.all.forwarding: off; IPv6 networks reach nothing beyond this host without it",
        )
        .fix("plexusd turns it on with the first IPv6 network; with it on, interfaces with accept_ra=1 stop taking router advertisements: set net.ipv6.conf.IF.accept_ra=2 where this host configures itself by them"),
        None => Check::new(
            "ipv6_forwarding",
            Status::Ok,
            "IPv6 is off in this kernel or namespace: IPv6 networks cannot be made",
        ),
    };
    [v4, v6]
}

/// Whether `br_netfilter` hands bridged frames to the IP hooks.
pub(super) fn br_netfilter() -> Check {
    match sysctl("net.bridge.bridge-nf-call-iptables").as_deref() {
        None => Check::new(
            "br_netfilter",
            Status::Ok,
            "br_netfilter: not loaded; frames a bridge switches skip the IP firewall hooks",
        ),
        Some("0") => Check::new(
            "br_netfilter",
            Status::Ok,
            "br_netfilter: loaded, but bridge-nf-call-iptables=0: frames a bridge switches skip the IP firewall hooks",
        ),
        Some(_) => Check::new(
            "br_netfilter",
            Status::Warn,
            "br_netfilter: loaded with bridge-nf-call-iptables=1: frames a bridge switches between two of its ports also pass the IP forward hooks (iptables, and nftables ip/inet tables), so other software's forward rules (a DROP policy, Docker's, firewalld's) apply to traffic between sandboxes of one network; Plexus's own rules allow for it",
        )
        .fix("if sandboxes of one network cannot reach each other, look at other forward rules, or set net.bridge.bridge-nf-call-iptables=0 (Kubernetes needs it 1)"),
    }
}

/// One IPv4 prefix some link of this namespace holds or routes to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    link: String,
    kind: Option<String>,
    net: Net,
}

/// The prefixes the links of this namespace hold (addresses) or route to (main table),
/// loopback and links Plexus made aside.
async fn held() -> Result<Vec<Held>> {
    let ns = Netns::host()?;
    let rtnl = Rtnl::connect(&ns).await?;
    let links = rtnl.links().await?;
    let foreign: Vec<_> = links
        .iter()
        .filter(|l| l.name != "lo")
        .filter(|l| {
            !l.alias
                .as_deref()
                .is_some_and(|a| a.starts_with(PLEXUS_ALIAS))
        })
        .collect();
    let mut out = BTreeSet::new();
    for link in &foreign {
        for (ip, len) in rtnl.addresses(link.index).await? {
            if let IpAddr::V4(v4) = ip {
                out.insert(Held {
                    link: link.name.clone(),
                    kind: link.kind.clone(),
                    net: Net::new(v4, len),
                });
            }
        }
    }
    for route in rtnl.main_routes_v4().await? {
        let (Some((IpAddr::V4(dst), len)), Some(oif)) = (route.destination, route.oif) else {
            continue;
        };
        if let Some(link) = foreign.iter().find(|l| l.index == oif) {
            out.insert(Held {
                link: link.name.clone(),
                kind: link.kind.clone(),
                net: Net::new(dst, len),
            });
        }
    }
    Ok(out.into_iter().collect())
}

/// One check per link prefix overlapping one of `pools`, or one saying there is none.
pub(super) async fn overlaps(pools: &[Net]) -> Vec<Check> {
    let held = match held().await {
        Ok(h) => h,
        Err(e) => {
            return vec![Check::new(
                "overlap",
                Status::Warn,
                format!("links and routes not read: {e:#}"),
            )
            .fix("run plexus doctor as root, as plexusd runs")]
        }
    };
    let found = overlapping(&held, pools);
    if found.is_empty() {
        let list: Vec<String> = pools.iter().map(Net::to_string).collect();
        return vec![Check::new(
            "overlap",
            Status::Ok,
            format!(
                "no bridge or route of this host overlaps Plexus's address pools ({})",
                list.join(", ")
            ),
        )];
    }
    found
        .into_iter()
        .map(|(h, pool)| {
            let what = match h.kind.as_deref() {
                Some(kind) => format!("{kind} {}", h.link),
                None => h.link.clone(),
            };
            Check::new(
                format!("overlap:{}:{}", h.link, h.net),
                Status::Warn,
                format!(
                    "{what} {} overlaps Plexus's address pool {pool}: plexusd's default bridge avoids it, but a network made without --subnet may get a subnet there and clash with {}",
                    h.net, h.link
                ),
            )
            .fix(format!(
                "start plexusd with --default-address-pool base=CIDR,size=N in a range free on this host (and --bip for its default bridge), give networks a --subnet, or remove {}",
                h.link
            ))
        })
        .collect()
}

fn overlapping<'a>(held: &'a [Held], pools: &[Net]) -> Vec<(&'a Held, Net)> {
    held.iter()
        .filter_map(|h| pools.iter().find(|p| p.overlaps(h.net)).map(|p| (h, *p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Net {
        Net::parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn prefixes_overlap_when_one_contains_the_other() {
        assert!(net("172.17.0.0/16").overlaps(net("172.17.0.1/16")));
        assert!(net("172.17.0.0/16").overlaps(net("172.17.5.0/24")));
        assert!(net("172.20.0.0/14").overlaps(net("172.22.0.0/16")));
        assert!(net("192.168.0.0/16").overlaps(net("192.168.1.0/24")));
        assert!(net("10.0.0.0/8").overlaps(net("10.1.2.3/32")));
        assert!(!net("172.17.0.0/16").overlaps(net("172.16.0.0/16")));
        assert!(!net("192.168.0.0/16").overlaps(net("192.0.2.0/24")));
        assert_eq!(net("172.17.0.1/16").to_string(), "172.17.0.0/16");
    }

    #[test]
    fn a_planted_bridge_is_found_and_a_far_route_is_not() {
        let held = vec![
            Held {
                link: "docker0".into(),
                kind: Some("bridge".into()),
                net: net("172.17.0.1/16"),
            },
            Held {
                link: "eth0".into(),
                kind: None,
                net: net("192.0.2.0/24"),
            },
        ];
        let pools = pools(&[]).unwrap();
        let found = overlapping(&held, &pools);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0.link, "docker0");
        assert_eq!(found[0].1, net("172.17.0.0/16"));
    }

    #[test]
    fn pool_flags_parse_and_name_the_flag_when_wrong() {
        let p = pools(&[
            "base=10.10.0.0/16,size=24".into(),
            "size=64,base=fd00::/48".into(),
        ])
        .unwrap();
        assert_eq!(p, vec![net("10.10.0.0/16")]);
        let e = pools(&["size=24".into()]).unwrap_err().to_string();
        assert!(e.contains("--default-address-pool"), "{e}");
        let e = pools(&["base=10.10.0.0,size=24".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--default-address-pool"), "{e}");
    }

    #[test]
    fn the_default_pools_are_plexus_ipam_s() {
        let ipam: Vec<String> = plexus_ipam::space::docker_local_defaults()
            .iter()
            .map(|p| p.base.to_string())
            .collect();
        assert_eq!(ipam, DEFAULT_POOLS);
    }
}
