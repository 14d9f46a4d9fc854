//! Picking a backend without the number of backends in the rule, shared by the VIP
//! dispatcher (`bes-<id>`) and the routing mesh (`pbe-<proto>-<port>`): `numgen random mod
//! SLOTS` picks a number, and an interval map cuts `[0, SLOTS)` into one nearly even range
//! per backend, so a backend added or removed is element changes of that map only (see the
//! crate documentation for why rules must not change).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use plexus_sys::nft::{ByteOrder, Element, Expr, NumgenKind, SetDef};

/// The random numbers a slot map divides among its backends: `numgen random mod SLOTS`, so
/// the rule never names the number of backends (2³¹: a backend's share is even to 1 part in
/// 2³¹ / [`MAX_BACKENDS`](crate::MAX_BACKENDS)).
pub const SLOTS: u32 = 1 << 31;

/// nft's data type numbers, for `nft list`.
const TYPE_INTEGER: u32 = 4;
const TYPE_IPV4: u32 = 7;

/// The ranges of `backends` (in order): `[0, SLOTS)` cut into as many nearly equal ranges,
/// one per backend, each as `(start, end, backend)` with `end` the number after its last.
pub(crate) fn ranges(backends: &BTreeSet<Ipv4Addr>) -> Vec<(u32, u32, Ipv4Addr)> {
    let n = backends.len() as u64;
    let cut = |k: u64| (k * u64::from(SLOTS) / n) as u32;
    backends
        .iter()
        .enumerate()
        .map(|(k, &backend)| (cut(k as u64), cut(k as u64 + 1), backend))
        .collect()
}

/// The kernel's form of one range: two elements, its start with the backend, and its end.
/// Interval maps compare keys as big-endian bytes: the rule converts numgen's number.
pub(crate) fn range_elements(start: u32, end: u32, backend: Ipv4Addr) -> [Element; 2] {
    [
        Element {
            key: start.to_be_bytes().to_vec(),
            data: Some(backend.octets().to_vec()),
            ..Element::default()
        },
        Element {
            key: end.to_be_bytes().to_vec(),
            interval_end: true,
            ..Element::default()
        },
    ]
}

/// The elements of a slot map holding `backends`.
pub(crate) fn elements(backends: &BTreeSet<Ipv4Addr>) -> Vec<Element> {
    ranges(backends)
        .into_iter()
        .flat_map(|(start, end, b)| range_elements(start, end, b))
        .collect()
}

/// The definition of slot map `name`: `integer : ipv4_addr; flags interval`.
pub(crate) fn map_def(name: &str) -> SetDef {
    SetDef {
        name: name.into(),
        key_type: TYPE_INTEGER,
        key_len: 4,
        interval: true,
        data: Some((TYPE_IPV4, 4)),
        ..SetDef::default()
    }
}

/// `numgen random mod SLOTS map @map` into register `dreg`, the number in `scratch`.
pub(crate) fn pick(map: &str, scratch: u32, dreg: u32) -> [Expr; 3] {
    [
        Expr::Numgen {
            kind: NumgenKind::Random,
            modulus: SLOTS,
            offset: 0,
            dreg: scratch,
        },
        Expr::Byteorder {
            op: ByteOrder::Hton,
            sreg: scratch,
            dreg: scratch,
            len: 4,
            size: 4,
        },
        Expr::Lookup {
            set: map.into(),
            sreg: scratch,
            dreg: Some(dreg),
            invert: false,
        },
    ]
}

/// The comparable form of a map's elements: key, end flag, value; sorted.
pub(crate) fn shape(els: &[Element]) -> Vec<(Vec<u8>, bool, Option<Vec<u8>>)> {
    let mut v: Vec<_> = els
        .iter()
        .map(|e| (e.key.clone(), e.interval_end, e.data.clone()))
        .collect();
    v.sort();
    v
}

/// The backends of slot map `map`'s elements (the ranges' values); an error unless the
/// ranges are exactly those [`elements`] writes for them.
pub(crate) fn decode(map: &str, els: &[Element]) -> Result<BTreeSet<Ipv4Addr>, String> {
    let mut backends = BTreeSet::new();
    for e in els.iter().filter(|e| !e.interval_end) {
        let b: [u8; 4] = e
            .data
            .as_deref()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| format!("{map}: a range without an address"))?;
        backends.insert(Ipv4Addr::from(b));
    }
    if shape(&elements(&backends)) != shape(els) {
        return Err(format!(
            "{map}: ranges other than an even split of [0, {SLOTS}) over {} backends",
            backends.len()
        ));
    }
    Ok(backends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_all_numbers_evenly_and_decode_back() {
        for n in [1u8, 2, 3, 7] {
            let backends: BTreeSet<Ipv4Addr> =
                (1..=n).map(|k| Ipv4Addr::new(10, 0, 0, k)).collect();
            let mut next = 0u32;
            for (start, end, _) in ranges(&backends) {
                assert_eq!(start, next);
                assert!((end - start).abs_diff(SLOTS / u32::from(n)) <= 1);
                next = end;
            }
            assert_eq!(next, SLOTS);
            assert_eq!(decode("m", &elements(&backends)), Ok(backends));
        }
        assert_eq!(decode("m", &[]), Ok(BTreeSet::new()));
        let mut els = elements(&[Ipv4Addr::new(10, 0, 0, 1)].into());
        els.pop();
        assert!(decode("m", &els).is_err(), "a range without its end");
    }
}
