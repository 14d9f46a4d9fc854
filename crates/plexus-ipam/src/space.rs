//! Address spaces: default pools and the choice of subnets. Pure logic, no store.
//!
//! ```
//! use plexus_ipam::space::{DefaultPool, SpaceLayout, docker_local_defaults};
//! let mut layout = SpaceLayout::default();
//! let defaults = docker_local_defaults();
//! let first = layout.find_dynamic(&defaults, None, false, &[]).unwrap();
//! assert_eq!(first.to_string(), "172.17.0.0/16");
//! layout.insert(first, "bridge");
//! let pool: DefaultPool = "base=10.10.0.0/16,size=24".parse().unwrap();
//! assert_eq!(pool.to_string(), "base=10.10.0.0/16,size=24");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv6Net};

use crate::error::IpamError;
use crate::pool::{net_bounds, u128_to_ip};

/// A default pool: subnets of prefix length `size` carved out of `base`
/// (`--default-address-pool base=172.17.0.0/16,size=16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DefaultPool {
    /// The prefix subnets are carved from.
    pub base: IpNet,
    /// The prefix length of each subnet.
    pub size: u8,
}

impl DefaultPool {
    /// A pool, checked: `size` at least `base`'s prefix length and at most the family's width.
    pub fn new(base: IpNet, size: u8) -> Result<Self, IpamError> {
        let text = format!("base={base},size={size}");
        if size < base.prefix_len() || size > base.max_prefix_len() {
            return Err(IpamError::InvalidDefaultPool {
                value: text,
                reason: format!(
                    "size must be between the base's prefix length {} and {}",
                    base.prefix_len(),
                    base.max_prefix_len()
                ),
            });
        }
        Ok(Self {
            base: base.trunc(),
            size,
        })
    }
}

impl fmt::Display for DefaultPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "base={},size={}", self.base, self.size)
    }
}

impl FromStr for DefaultPool {
    type Err = IpamError;

    /// Parses `base=CIDR,size=N` (either order, spaces allowed around items).
    fn from_str(s: &str) -> Result<Self, IpamError> {
        let bad = |reason: String| IpamError::InvalidDefaultPool {
            value: s.to_string(),
            reason,
        };
        let (mut base, mut size) = (None, None);
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| bad(format!("{item:?} is not key=value")))?;
            match k.trim() {
                "base" => {
                    base = Some(
                        v.trim()
                            .parse::<IpNet>()
                            .map_err(|e| bad(format!("base {v:?}: {e}")))?,
                    )
                }
                "size" => {
                    size = Some(
                        v.trim()
                            .parse::<u8>()
                            .map_err(|_| bad(format!("size {v:?} is not a prefix length")))?,
                    )
                }
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        let base = base.ok_or_else(|| bad("base is missing".into()))?;
        let size = size.ok_or_else(|| bad("size is missing".into()))?;
        DefaultPool::new(base, size).map_err(|_| {
            bad(format!(
                "size {size} must be between the base's prefix length {} and {}",
                base.prefix_len(),
                base.max_prefix_len()
            ))
        })
    }
}

fn dp(base: &str, size: u8) -> DefaultPool {
    DefaultPool {
        base: base
            .parse()
            .unwrap_or_else(|_| unreachable!("constant {base}")),
        size,
    }
}

/// Docker's local default pools: 172.17-19/16, 172.20/14, 172.24/14, 172.28/14 in /16s,
/// 192.168/16 in /20s — 31 networks.
pub fn docker_local_defaults() -> Vec<DefaultPool> {
    vec![
        dp("172.17.0.0/16", 16),
        dp("172.18.0.0/16", 16),
        dp("172.19.0.0/16", 16),
        dp("172.20.0.0/14", 16),
        dp("172.24.0.0/14", 16),
        dp("172.28.0.0/14", 16),
        dp("192.168.0.0/16", 20),
    ]
}

/// Docker's global default pool: 10.0.0.0/8 in /24s.
pub fn docker_global_defaults() -> Vec<DefaultPool> {
    vec![dp("10.0.0.0/8", 24)]
}

/// The per-host IPv6 default pool: a ULA /48 (`fdXX:XXXX:XXXX::/48`, RFC 4193) whose 40-bit
/// global ID is derived from `host_id` (FNV-1a, stable across releases), in /64s.
pub fn ula_defaults(host_id: &str) -> Vec<DefaultPool> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let global_id = u128::from(h & 0xff_ffff_ffff);
    let addr = (0xfdu128 << 120) | (global_id << 80);
    let base = Ipv6Net::new(Ipv6Addr::from(addr), 48).unwrap_or_else(|_| unreachable!("/48"));
    vec![DefaultPool {
        base: IpNet::V6(base),
        size: 64,
    }]
}

/// One pool held in a space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutEntry {
    /// The pool's subnet.
    pub subnet: IpNet,
    /// The network that owns it.
    pub owner: String,
}

/// The pools of one address space, as disjoint intervals per family.
#[derive(Debug, Clone, Default)]
pub struct SpaceLayout {
    v4: BTreeMap<u128, (u128, LayoutEntry)>,
    v6: BTreeMap<u128, (u128, LayoutEntry)>,
}

/// Why no default subnet was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// Candidates skipped because of host routes or nameservers.
    pub blocked: usize,
    /// Pools of the family in the space.
    pub in_use: usize,
}

impl SpaceLayout {
    fn map(&self, v6: bool) -> &BTreeMap<u128, (u128, LayoutEntry)> {
        if v6 {
            &self.v6
        } else {
            &self.v4
        }
    }

    /// Adds a pool (the caller checked it does not overlap).
    pub fn insert(&mut self, subnet: IpNet, owner: &str) {
        let (s, e) = net_bounds(&subnet);
        let map = if matches!(subnet, IpNet::V6(_)) {
            &mut self.v6
        } else {
            &mut self.v4
        };
        map.insert(
            s,
            (
                e,
                LayoutEntry {
                    subnet,
                    owner: owner.to_string(),
                },
            ),
        );
    }

    /// Removes a pool.
    pub fn remove(&mut self, subnet: &IpNet) {
        let (s, _) = net_bounds(subnet);
        if matches!(subnet, IpNet::V6(_)) {
            self.v6.remove(&s);
        } else {
            self.v4.remove(&s);
        }
    }

    /// How many pools of a family the space holds.
    pub fn len(&self, v6: bool) -> usize {
        self.map(v6).len()
    }

    /// Whether the space holds no pool.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The pool that overlaps `subnet`, if any.
    pub fn overlapping(&self, subnet: &IpNet) -> Option<&LayoutEntry> {
        let (s, e) = net_bounds(subnet);
        self.overlap_range(matches!(subnet, IpNet::V6(_)), s, e)
            .map(|(_, entry)| entry)
    }

    fn overlap_range(&self, v6: bool, s: u128, e: u128) -> Option<(u128, &LayoutEntry)> {
        self.map(v6)
            .range(..=e)
            .next_back()
            .filter(|(_, (end, _))| *end >= s)
            .map(|(_, (end, entry))| (*end, entry))
    }

    /// The first subnet of the default pools, in order, that overlaps no pool of the space and
    /// no blocker (host on-link routes, nameservers). `size` overrides the pools' own size
    /// (a size-only request such as `0.0.0.0/24`).
    pub fn find_dynamic(
        &self,
        defaults: &[DefaultPool],
        size: Option<u8>,
        v6: bool,
        blockers: &[IpNet],
    ) -> Result<IpNet, Exhausted> {
        let blocks: Vec<(u128, u128)> = blockers
            .iter()
            .filter(|b| matches!(b, IpNet::V6(_)) == v6 && b.prefix_len() > 0)
            .map(net_bounds)
            .collect();
        let mut blocked = 0;
        for pool in defaults
            .iter()
            .filter(|p| matches!(p.base, IpNet::V6(_)) == v6)
        {
            let width = u32::from(pool.base.max_prefix_len());
            let plen = size.unwrap_or(pool.size);
            if plen < pool.base.prefix_len() || u32::from(plen) > width || plen == 0 {
                continue;
            }
            let step: u128 = 1u128 << (width - u32::from(plen));
            let (bs, be) = net_bounds(&pool.base);
            let mut cand = bs;
            while let Some(ce) = cand.checked_add(step - 1).filter(|ce| *ce <= be) {
                let taken = self.overlap_range(v6, cand, ce).map(|(end, _)| end);
                let host = blocks
                    .iter()
                    .filter(|(s, e)| *s <= ce && *e >= cand)
                    .map(|(_, e)| *e)
                    .max();
                let skip_to = match (taken, host) {
                    (None, None) => {
                        let net = IpNet::new(u128_to_ip(cand, v6), plen)
                            .unwrap_or_else(|_| unreachable!("valid prefix length"));
                        return Ok(net);
                    }
                    (t, h) => {
                        if h.is_some() {
                            blocked += 1;
                        }
                        t.max(h).unwrap_or(ce)
                    }
                };
                // Next aligned candidate after what blocked this one.
                let Some(next) = skip_to.checked_add(1) else {
                    break;
                };
                let aligned = next.div_ceil(step).checked_mul(step);
                match aligned {
                    Some(a) if a > cand => cand = a,
                    _ => break,
                }
            }
        }
        Err(Exhausted {
            blocked,
            in_use: self.len(v6),
        })
    }
}

/// Blockers from host data: on-link routes and nameservers (as host prefixes).
pub fn blockers(routes: &[IpNet], nameservers: &[IpAddr]) -> Vec<IpNet> {
    routes
        .iter()
        .copied()
        .chain(nameservers.iter().map(|ip| IpNet::from(*ip)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_one_local_networks() {
        let defaults = docker_local_defaults();
        let mut layout = SpaceLayout::default();
        let mut got = Vec::new();
        while let Ok(n) = layout.find_dynamic(&defaults, None, false, &[]) {
            layout.insert(n, "n");
            got.push(n.to_string());
        }
        assert_eq!(got.len(), 31);
        assert_eq!(got[3], "172.20.0.0/16");
        assert_eq!(got[14], "172.31.0.0/16");
        assert_eq!(got[15], "192.168.0.0/20");
        assert_eq!(got[30], "192.168.240.0/20");
    }

    #[test]
    fn routes_and_nameservers_are_skipped() {
        let defaults = docker_local_defaults();
        let layout = SpaceLayout::default();
        let b = blockers(
            &[
                "172.17.5.0/24".parse().unwrap(),
                "0.0.0.0/0".parse().unwrap(),
            ],
            &["172.18.0.53".parse().unwrap()],
        );
        let n = layout.find_dynamic(&defaults, None, false, &b).unwrap();
        assert_eq!(n.to_string(), "172.19.0.0/16");
        // A size-only request carves a /24 next to the route.
        let n = layout.find_dynamic(&defaults, Some(24), false, &b).unwrap();
        assert_eq!(n.to_string(), "172.17.0.0/24");
        let mut layout = SpaceLayout::default();
        layout.insert("172.17.0.0/24".parse().unwrap(), "a");
        let n = layout.find_dynamic(&defaults, Some(24), false, &b).unwrap();
        assert_eq!(n.to_string(), "172.17.1.0/24");
    }

    #[test]
    fn ula() {
        let p = ula_defaults("host-a");
        assert_eq!(p[0].base.prefix_len(), 48);
        assert!(p[0].base.to_string().starts_with("fd"));
        assert_eq!(p, ula_defaults("host-a"));
        assert_ne!(p, ula_defaults("host-b"));
        let n = SpaceLayout::default()
            .find_dynamic(&p, None, true, &[])
            .unwrap();
        assert_eq!(n.prefix_len(), 64);
    }

    #[test]
    fn parse_default_pool() {
        let p: DefaultPool = " size=24, base=10.10.0.0/16 ".parse().unwrap();
        assert_eq!(p, dp("10.10.0.0/16", 24));
        for bad in [
            "base=10.0.0.0/16",
            "size=24",
            "base=x,size=24",
            "base=10.0.0.0/16,size=8",
            "base=10.0.0.0/16,size=33",
            "foo=1",
        ] {
            let e = bad.parse::<DefaultPool>().unwrap_err();
            assert!(e.to_string().contains("base=<CIDR>,size="), "{e}");
        }
    }
}
