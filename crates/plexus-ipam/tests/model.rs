//! Property tests: both allocators against a naive model. Any sequence of requests and
//! releases keeps the same taken set as the model, and no address is handed out twice.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use plexus_ipam::dense::DenseSet;
use plexus_ipam::pool::{ip_to_u128, AddressPool};
use plexus_ipam::sparse::SparseSet;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum SetOp {
    Insert(u128),
    Remove(u128),
    Fill(u128, u16),
    FirstClear(u128, u128),
}

fn set_ops(size: u128) -> impl Strategy<Value = Vec<SetOp>> {
    // Offsets cluster at both ends and around chunk edges, where the structures change shape.
    let off = prop_oneof![
        0..size.min(300),
        (size.saturating_sub(300))..size,
        0..size,
        (0u128..4).prop_map(move |k| (k * 4096).saturating_sub(1).min(size - 1)),
    ];
    let op = prop_oneof![
        4 => off.clone().prop_map(SetOp::Insert),
        3 => off.clone().prop_map(SetOp::Remove),
        1 => (off.clone(), 0u16..5000).prop_map(|(a, n)| SetOp::Fill(a, n)),
        2 => (off.clone(), off).prop_map(|(a, b)| SetOp::FirstClear(a.min(b), a.max(b))),
    ];
    proptest::collection::vec(op, 1..120)
}

fn model_first_clear(m: &BTreeSet<u128>, lo: u128, hi: u128, size: u128) -> Option<u128> {
    let hi = hi.min(size - 1);
    let mut x = lo;
    while x <= hi {
        if !m.contains(&x) {
            return Some(x);
        }
        x += 1;
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn dense_set_matches_model((size, ops) in (1u128..13_000).prop_flat_map(|n| (Just(n), set_ops(n)))) {
        let mut s = DenseSet::new(size as u64);
        let mut m = BTreeSet::new();
        for op in ops {
            match op {
                SetOp::Insert(x) => prop_assert_eq!(s.insert(x as u64), m.insert(x)),
                SetOp::Remove(x) => prop_assert_eq!(s.remove(x as u64), m.remove(&x)),
                SetOp::Fill(a, n) => {
                    for x in a..(a + u128::from(n)).min(size) {
                        prop_assert_eq!(s.insert(x as u64), m.insert(x));
                    }
                }
                SetOp::FirstClear(lo, hi) => prop_assert_eq!(
                    s.first_clear(lo as u64, hi as u64).map(u128::from),
                    model_first_clear(&m, lo, hi, size)
                ),
            }
            prop_assert_eq!(u128::from(s.count()), m.len() as u128);
        }
        prop_assert_eq!(s.iter().map(u128::from).collect::<Vec<_>>(), m.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn sparse_set_matches_model((size, ops) in prop_oneof![Just(8u32), Just(64), Just(80), Just(127)]
        .prop_flat_map(|bits| (Just(1u128 << bits), set_ops(1u128 << bits)))) {
        let mut s = SparseSet::new(size);
        let mut m = BTreeSet::new();
        for op in ops {
            match op {
                SetOp::Insert(x) => prop_assert_eq!(s.insert(x), m.insert(x)),
                SetOp::Remove(x) => prop_assert_eq!(s.remove(x), m.remove(&x)),
                SetOp::Fill(a, n) => {
                    for x in a..(a + u128::from(n)).min(size) {
                        prop_assert_eq!(s.insert(x), m.insert(x));
                    }
                }
                SetOp::FirstClear(lo, hi) => {
                    // The naive scan is only affordable over a short span.
                    let hi = hi.min(lo + 6000);
                    prop_assert_eq!(s.first_clear(lo, hi), model_first_clear(&m, lo, hi, size));
                }
            }
            prop_assert_eq!(s.count(), m.len() as u128);
        }
        prop_assert_eq!(s.iter().collect::<Vec<_>>(), m.into_iter().collect::<Vec<_>>());
    }
}

#[derive(Debug, Clone)]
enum PoolOp {
    Next,
    Take(u128),
    Release(u128),
}

/// The naive model of a pool: a set of taken offsets, the host bounds, the dynamic range,
/// and the serial cursor.
struct ModelPool {
    taken: BTreeSet<u128>,
    dynr: (u128, u128),
    serial: bool,
    cursor: Option<u128>,
}

impl ModelPool {
    fn next(&mut self) -> Option<u128> {
        let (lo, hi) = self.dynr;
        let start = match (self.serial, self.cursor) {
            (true, Some(c)) if c >= lo && c < hi => c + 1,
            _ => lo,
        };
        let order = (start..=hi).chain(lo..start);
        for x in order {
            if !self.taken.contains(&x) {
                self.taken.insert(x);
                self.cursor = Some(x);
                return Some(x);
            }
        }
        None
    }
}

fn pool_case() -> impl Strategy<Value = (IpNet, Option<IpNet>, bool, Vec<PoolOp>)> {
    let v4 = (20u8..=32, any::<u32>(), 0u8..=4, any::<bool>()).prop_map(
        |(plen, a, rshift, has_range)| {
            let net: IpNet = format!("{}/{plen}", std::net::Ipv4Addr::from(a))
                .parse()
                .unwrap();
            let net = net.trunc();
            let range = (has_range && plen + rshift <= 32)
                .then(|| IpNet::new(net.network(), plen + rshift).unwrap().trunc());
            (net, range)
        },
    );
    let v6 = (116u8..=128, any::<u128>(), 0u8..=4, any::<bool>()).prop_map(
        |(plen, a, rshift, has_range)| {
            let net: IpNet = format!("{}/{plen}", std::net::Ipv6Addr::from(a))
                .parse()
                .unwrap();
            let net = net.trunc();
            let range = (has_range && plen + rshift <= 128).then(|| {
                // The last sub-range, so ranges do not always start at the subnet.
                IpNet::new(net.broadcast(), plen + rshift).unwrap().trunc()
            });
            (net, range)
        },
    );
    (prop_oneof![v4, v6], any::<bool>()).prop_flat_map(|((net, range), serial)| {
        let size = ip_to_u128(net.broadcast()) - ip_to_u128(net.network()) + 1;
        let off = 0..size.min(5000);
        let op = prop_oneof![
            5 => Just(PoolOp::Next),
            2 => off.clone().prop_map(PoolOp::Take),
            3 => off.prop_map(PoolOp::Release),
        ];
        (
            Just(net),
            Just(range),
            Just(serial),
            proptest::collection::vec(op, 1..200),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn pools_match_model((net, range, serial, ops) in pool_case()) {
        let mut pool = AddressPool::new(net, range, serial).unwrap();
        let base = ip_to_u128(net.network());
        let span = ip_to_u128(net.broadcast()) - base;
        let v6 = matches!(net, IpNet::V6(_));
        let host = match (v6, net.prefix_len()) {
            (false, p) if p >= 31 => (0, span),
            (false, _) => (1, span - 1),
            (true, p) if p >= 127 => (0, span),
            (true, _) => (1, span),
        };
        let dynr = match range {
            None => host,
            Some(r) => (
                (ip_to_u128(r.network()) - base).max(host.0),
                (ip_to_u128(r.broadcast()) - base).min(host.1),
            ),
        };
        let mut m = ModelPool { taken: BTreeSet::new(), dynr, serial, cursor: None };
        let at = |o: u128| -> IpAddr { plexus_ipam::pool::u128_to_ip(base + o, v6) };
        let mut handed = BTreeSet::new();
        for op in ops {
            match op {
                PoolOp::Next => {
                    let got = pool.allocate_next().ok().map(|ip| ip_to_u128(ip) - base);
                    let want = if dynr.0 <= dynr.1 { m.next() } else { None };
                    prop_assert_eq!(got, want);
                    if let Some(o) = got {
                        // Never handed out twice while held.
                        prop_assert!(handed.insert(o), "offset {} handed out twice", o);
                    }
                }
                PoolOp::Take(o) => {
                    let ok = pool.allocate(at(o), "ip").is_ok();
                    let want = o <= span && o >= host.0 && o <= host.1 && !m.taken.contains(&o);
                    prop_assert_eq!(ok, want);
                    if want {
                        m.taken.insert(o);
                        handed.insert(o);
                    }
                }
                PoolOp::Release(o) => {
                    let ok = pool.release(at(o)).is_ok();
                    prop_assert_eq!(ok, m.taken.remove(&o));
                    handed.remove(&o);
                }
            }
            prop_assert_eq!(pool.allocated(), m.taken.len() as u128);
        }
        let got: Vec<u128> = pool.iter().map(|ip| ip_to_u128(ip) - base).collect();
        prop_assert_eq!(got, m.taken.into_iter().collect::<Vec<_>>());
    }
}
