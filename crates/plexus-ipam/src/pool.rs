//! One pool's addresses: pure allocation logic, no store.
//!
//! ```
//! use plexus_ipam::pool::AddressPool;
//! let mut pool = AddressPool::new("10.1.0.0/30".parse().unwrap(), None, false).unwrap();
//! assert_eq!(pool.allocate_next().unwrap().to_string(), "10.1.0.1");
//! assert_eq!(pool.allocate_next().unwrap().to_string(), "10.1.0.2");
//! let err = pool.allocate_next().unwrap_err();
//! assert_eq!(err.to_string(), "no free address in 10.1.0.0/30");
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::dense::DenseSet;
use crate::error::{IpamError, Result};
use crate::sparse::SparseSet;

/// The set of taken offsets of a pool: a chunked bitmap for IPv4, sorted runs for IPv6.
#[derive(Debug, Clone)]
pub enum AddrSet {
    /// IPv4: a chunk-compressed bitmap.
    Dense(DenseSet),
    /// IPv6: sorted runs.
    Sparse(SparseSet),
}

impl AddrSet {
    fn contains(&self, off: u128) -> bool {
        match self {
            AddrSet::Dense(d) => d.contains(off as u64),
            AddrSet::Sparse(s) => s.contains(off),
        }
    }
    fn insert(&mut self, off: u128) -> bool {
        match self {
            AddrSet::Dense(d) => d.insert(off as u64),
            AddrSet::Sparse(s) => s.insert(off),
        }
    }
    fn remove(&mut self, off: u128) -> bool {
        match self {
            AddrSet::Dense(d) => d.remove(off as u64),
            AddrSet::Sparse(s) => s.remove(off),
        }
    }
    fn first_clear(&self, lo: u128, hi: u128) -> Option<u128> {
        match self {
            AddrSet::Dense(d) => d
                .first_clear(lo as u64, hi.min(u128::from(u64::MAX)) as u64)
                .map(u128::from),
            AddrSet::Sparse(s) => s.first_clear(lo, hi),
        }
    }
    fn count(&self) -> u128 {
        match self {
            AddrSet::Dense(d) => u128::from(d.count()),
            AddrSet::Sparse(s) => s.count(),
        }
    }
}

/// The numeric value of an address (IPv4 in the low 32 bits).
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of a numeric value in the family of `like`.
pub fn u128_to_ip(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// First and last numeric addresses of a prefix.
pub fn net_bounds(net: &IpNet) -> (u128, u128) {
    (ip_to_u128(net.network()), ip_to_u128(net.broadcast()))
}

/// `IPv4` or `IPv6`.
pub fn family_name(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// One pool's allocation state: which addresses of the subnet are taken, which are reserved,
/// where dynamic addresses come from (the ip-range), and in which order (lowest free or serial).
#[derive(Debug, Clone)]
pub struct AddressPool {
    subnet: IpNet,
    range: Option<IpNet>,
    base: u128,
    /// Host offsets that can be handed out at all (network/broadcast/anycast excluded).
    host_lo: u128,
    host_hi: u128,
    /// Offsets dynamic allocation draws from (the ip-range within the hosts).
    dyn_lo: u128,
    dyn_hi: u128,
    set: AddrSet,
    serial: bool,
    cursor: Option<u128>,
    /// Every dynamic offset in `dyn_lo..low_hint` is taken (lowest-free searches start here).
    low_hint: u128,
    /// The subnet's last offset.
    span: u128,
    v6: bool,
    labels: HashMap<u128, String>,
}

impl AddressPool {
    /// A pool over `subnet` (host bits are ignored), handing out dynamic addresses from
    /// `range` when given, in serial order when `serial`.
    ///
    /// Errors: the range is of the other family, outside the subnet, or larger than it.
    pub fn new(subnet: IpNet, range: Option<IpNet>, serial: bool) -> Result<Self> {
        let subnet = subnet.trunc();
        let v6 = matches!(subnet, IpNet::V6(_));
        let (base, last) = net_bounds(&subnet);
        let span = last - base;
        let plen = subnet.prefix_len();
        let (host_lo, host_hi) = if v6 {
            if plen >= 127 {
                (0, span)
            } else {
                (1, span)
            }
        } else if plen >= 31 {
            (0, span)
        } else {
            (1, span - 1)
        };
        let (mut dyn_lo, mut dyn_hi) = (host_lo, host_hi);
        let range = range.map(|r| r.trunc());
        if let Some(r) = range {
            if matches!(r, IpNet::V6(_)) != v6 {
                return Err(IpamError::FamilyMismatch {
                    field: "ip-range".into(),
                    value: r.to_string(),
                    expected: family_name(v6),
                });
            }
            if r.prefix_len() < plen {
                return Err(IpamError::RangeLargerThanSubnet {
                    range: r.to_string(),
                    subnet: subnet.to_string(),
                });
            }
            if !subnet.contains(&r) {
                return Err(IpamError::OutsideSubnet {
                    field: "ip-range".into(),
                    value: r.to_string(),
                    subnet: subnet.to_string(),
                });
            }
            let (rs, re) = net_bounds(&r);
            dyn_lo = (rs - base).max(host_lo);
            dyn_hi = (re - base).min(host_hi);
        }
        let set = if v6 {
            AddrSet::Sparse(SparseSet::new(span.saturating_add(1)))
        } else {
            AddrSet::Dense(DenseSet::new(span as u64 + 1))
        };
        Ok(Self {
            subnet,
            range,
            base,
            host_lo,
            host_hi,
            dyn_lo,
            dyn_hi,
            set,
            serial,
            cursor: None,
            low_hint: dyn_lo,
            span,
            v6,
            labels: HashMap::new(),
        })
    }

    /// The pool's subnet.
    pub fn subnet(&self) -> IpNet {
        self.subnet
    }

    /// The ip-range, if any.
    pub fn range(&self) -> Option<IpNet> {
        self.range
    }

    /// Whether dynamic allocation is serial (round-robin).
    pub fn serial(&self) -> bool {
        self.serial
    }

    /// Whether the pool is IPv6.
    pub fn is_v6(&self) -> bool {
        self.v6
    }

    /// How many addresses are taken (gateway and aux addresses included).
    pub fn allocated(&self) -> u128 {
        self.set.count()
    }

    /// The taken set (for memory measurements and inspection).
    pub fn addr_set(&self) -> &AddrSet {
        &self.set
    }

    /// The last address handed out dynamically (the serial cursor).
    pub fn cursor(&self) -> Option<IpAddr> {
        self.cursor.map(|o| self.addr(o))
    }

    /// Moves the serial cursor (used on restore).
    pub fn set_cursor(&mut self, ip: Option<IpAddr>) {
        self.cursor = ip.and_then(|ip| self.offset(ip));
    }

    fn addr(&self, off: u128) -> IpAddr {
        u128_to_ip(self.base + off, self.is_v6())
    }

    /// The offset of `ip` in the subnet, if it is inside.
    pub fn offset(&self, ip: IpAddr) -> Option<u128> {
        if ip.is_ipv6() != self.v6 {
            return None;
        }
        let off = ip_to_u128(ip).checked_sub(self.base)?;
        (off <= self.span).then_some(off)
    }

    fn range_name(&self) -> String {
        self.range.unwrap_or(self.subnet).to_string()
    }

    /// Hands out the next free dynamic address: the lowest free one, or in serial mode the
    /// first free one after the last handed out (wrapping around).
    pub fn allocate_next(&mut self) -> Result<IpAddr> {
        let from = match (self.serial, self.cursor) {
            (true, Some(c)) if c >= self.dyn_lo && c < self.dyn_hi => c + 1,
            (true, _) => self.dyn_lo,
            // Lowest free: nothing below the hint is free.
            (false, _) => self.low_hint.max(self.dyn_lo),
        };
        let off = self
            .set
            .first_clear(from, self.dyn_hi)
            .or_else(|| {
                if self.serial && from > self.dyn_lo {
                    self.set.first_clear(self.dyn_lo, from - 1)
                } else {
                    None
                }
            })
            .ok_or_else(|| IpamError::PoolExhausted {
                range: self.range_name(),
            })?;
        self.set.insert(off);
        self.cursor = Some(off);
        if !self.serial {
            self.low_hint = off.saturating_add(1);
        }
        Ok(self.addr(off))
    }

    /// Checks that `ip` could be taken, as field `field`, without taking it.
    pub fn check_available(&self, ip: IpAddr, field: &str) -> Result<u128> {
        let off = self.check_in_pool(ip, field)?;
        if self.set.contains(off) {
            return Err(IpamError::AddressInUse {
                field: field.to_string(),
                address: ip.to_string(),
                subnet: self.subnet.to_string(),
                by: self.labels.get(&off).cloned(),
            });
        }
        Ok(off)
    }

    fn check_in_pool(&self, ip: IpAddr, field: &str) -> Result<u128> {
        if ip.is_ipv6() != self.is_v6() {
            return Err(IpamError::FamilyMismatch {
                field: field.to_string(),
                value: ip.to_string(),
                expected: family_name(self.is_v6()),
            });
        }
        let off = self.offset(ip).ok_or_else(|| IpamError::OutsideSubnet {
            field: field.to_string(),
            value: ip.to_string(),
            subnet: self.subnet.to_string(),
        })?;
        if off < self.host_lo || off > self.host_hi {
            let what = match (self.is_v6(), off < self.host_lo) {
                (true, _) => "subnet-router anycast",
                (false, true) => "network",
                (false, false) => "broadcast",
            };
            return Err(IpamError::AddressReserved {
                field: field.to_string(),
                address: ip.to_string(),
                subnet: self.subnet.to_string(),
                what,
            });
        }
        Ok(off)
    }

    /// Takes a given address (`--ip`, gateway, aux address), named `field` in errors.
    /// Preferred addresses may lie outside the ip-range but not outside the subnet.
    pub fn allocate(&mut self, ip: IpAddr, field: &str) -> Result<()> {
        let off = self.check_available(ip, field)?;
        self.set.insert(off);
        Ok(())
    }

    /// Takes `ip` and labels it (`gateway`, `aux-address host1`) for error messages.
    pub fn allocate_labelled(&mut self, ip: IpAddr, field: &str, label: &str) -> Result<()> {
        self.allocate(ip, field)?;
        self.label(ip, label);
        Ok(())
    }

    /// Labels a taken address.
    pub fn label(&mut self, ip: IpAddr, label: &str) {
        if let Some(off) = self.offset(ip) {
            self.labels.insert(off, label.to_string());
        }
    }

    /// Marks `ip` taken without checks (restore, or learning another writer's allocation).
    /// Returns false if it was already taken or is not in the subnet.
    pub fn mark(&mut self, ip: IpAddr) -> bool {
        match self.offset(ip) {
            Some(off) => self.set.insert(off),
            None => false,
        }
    }

    /// Whether `ip` is taken.
    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.offset(ip).is_some_and(|o| self.set.contains(o))
    }

    /// Gives back `ip`. Errors if it was never allocated.
    pub fn release(&mut self, ip: IpAddr) -> Result<()> {
        match self.offset(ip) {
            Some(off) if self.set.remove(off) => {
                self.low_hint = self.low_hint.min(off);
                if !self.labels.is_empty() {
                    self.labels.remove(&off);
                }
                Ok(())
            }
            _ => Err(IpamError::NotAllocated {
                what: "address",
                value: ip.to_string(),
                pool: Some(self.subnet.to_string()),
            }),
        }
    }

    /// Every taken address, in order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = IpAddr> + '_> {
        match &self.set {
            AddrSet::Dense(d) => Box::new(d.iter().map(|o| self.addr(u128::from(o)))),
            AddrSet::Sparse(s) => Box::new(s.iter().map(|o| self.addr(o))),
        }
    }

    /// The highest taken dynamic address (to resume a serial cursor after a restart).
    pub fn highest_in_range(&self) -> Option<IpAddr> {
        // Walks back from the top of the range; cheap for the sparse set via iteration order.
        self.iter()
            .filter(|ip| {
                self.offset(*ip)
                    .is_some_and(|o| o >= self.dyn_lo && o <= self.dyn_hi)
            })
            .last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn reserved_addresses() {
        let mut p = AddressPool::new("10.0.0.0/24".parse().unwrap(), None, false).unwrap();
        let e = p.allocate(ip("10.0.0.0"), "ip").unwrap_err();
        assert!(e.to_string().contains("network address"), "{e}");
        let e = p.allocate(ip("10.0.0.255"), "ip").unwrap_err();
        assert!(e.to_string().contains("broadcast"), "{e}");
        let mut p31 = AddressPool::new("10.0.0.0/31".parse().unwrap(), None, false).unwrap();
        assert_eq!(p31.allocate_next().unwrap(), ip("10.0.0.0"));
        assert_eq!(p31.allocate_next().unwrap(), ip("10.0.0.1"));
        let mut p32 = AddressPool::new("10.0.0.7/32".parse().unwrap(), None, false).unwrap();
        assert_eq!(p32.allocate_next().unwrap(), ip("10.0.0.7"));
        let mut v6 = AddressPool::new("fd00::/64".parse().unwrap(), None, false).unwrap();
        let e = v6.allocate(ip("fd00::"), "ip6").unwrap_err();
        assert!(e.to_string().contains("anycast"), "{e}");
        assert_eq!(v6.allocate_next().unwrap(), ip("fd00::1"));
    }

    #[test]
    fn range_and_serial() {
        let mut p = AddressPool::new(
            "10.0.0.0/16".parse().unwrap(),
            Some("10.0.5.0/30".parse().unwrap()),
            true,
        )
        .unwrap();
        // The range's own network/broadcast are ordinary hosts of the subnet.
        let got: Vec<_> = (0..4).map(|_| p.allocate_next().unwrap()).collect();
        assert_eq!(got[0], ip("10.0.5.0"));
        assert_eq!(got[3], ip("10.0.5.3"));
        assert!(p.allocate_next().is_err());
        p.release(ip("10.0.5.1")).unwrap();
        p.release(ip("10.0.5.0")).unwrap();
        // Serial: after 10.0.5.3 it wraps to the first free, 10.0.5.0.
        assert_eq!(p.allocate_next().unwrap(), ip("10.0.5.0"));
        assert_eq!(p.allocate_next().unwrap(), ip("10.0.5.1"));
        let e = AddressPool::new(
            "10.0.0.0/24".parse().unwrap(),
            Some("10.0.0.0/16".parse().unwrap()),
            false,
        )
        .unwrap_err();
        assert!(matches!(e, IpamError::RangeLargerThanSubnet { .. }));
        let e = AddressPool::new(
            "10.0.0.0/24".parse().unwrap(),
            Some("10.0.1.0/25".parse().unwrap()),
            false,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "ip-range 10.0.1.0/25 is outside the subnet 10.0.0.0/24"
        );
    }
}
