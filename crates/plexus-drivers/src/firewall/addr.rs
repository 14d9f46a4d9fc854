//! Addresses, prefixes and interface names as set elements.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use plexus_sys::nft::{Element, Family};
use plexus_sys::rtnl::check_ifname;
use plexus_sys::{Result, SysError};

use super::IFNAMSIZ;

pub(super) fn family_of(ip: IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::Ip,
        IpAddr::V6(_) => Family::Ip6,
    }
}

pub(super) fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

pub(super) fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// A port as a register holds it: big-endian in the first two bytes, zero padded.
pub(super) fn port_reg(port: u16) -> [u8; 4] {
    let [a, b] = port.to_be_bytes();
    [a, b, 0, 0]
}

pub(super) fn ifname_key(name: &str) -> Result<Vec<u8>> {
    check_ifname("bridge name", name)?;
    let mut k = name.as_bytes().to_vec();
    k.resize(IFNAMSIZ, 0);
    Ok(k)
}

pub(super) fn addr_len(f: Family) -> u32 {
    if f == Family::Ip6 {
        16
    } else {
        4
    }
}

pub(super) fn to_u128(ip: IpAddr) -> (u128, u32) {
    match ip {
        IpAddr::V4(a) => (u32::from(a) as u128, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

pub(super) fn from_u128(v: u128, bits: u32) -> IpAddr {
    if bits == 32 {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(v))
    }
}

/// The interval elements (start, and end unless it runs to the top) of a prefix.
pub(super) fn prefix_elements(addr: IpAddr, len: u8) -> Result<(IpAddr, Vec<Element>)> {
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
pub(super) fn prefixes_of(elems: &[Element]) -> BTreeSet<(IpAddr, u8)> {
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

pub(super) fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
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
}
