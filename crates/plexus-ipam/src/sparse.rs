//! The IPv6 allocator's set: sorted runs of taken offsets, so memory grows with the number of
//! runs, not with the size of the subnet. Addresses handed out in order form one run; a set of
//! scattered addresses costs one map entry each (16 bytes of payload when the subnet has at most
//! 64 host bits, 32 bytes otherwise).

use std::collections::BTreeMap;

/// An offset type of the run map.
trait Off: Copy + Ord + std::fmt::Debug {
    const MAX: u128;
    fn from_u128(v: u128) -> Self;
    fn to_u128(self) -> u128;
}

impl Off for u64 {
    const MAX: u128 = u64::MAX as u128;
    fn from_u128(v: u128) -> Self {
        v as u64
    }
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
}

impl Off for u128 {
    const MAX: u128 = u128::MAX;
    fn from_u128(v: u128) -> Self {
        v
    }
    fn to_u128(self) -> u128 {
        self
    }
}

/// Runs `start → end` (inclusive); adjacent runs are always merged.
#[derive(Debug, Clone, Default)]
struct Runs<T: Off> {
    runs: BTreeMap<T, T>,
}

impl<T: Off> Runs<T> {
    fn containing(&self, off: T) -> Option<(T, T)> {
        self.runs
            .range(..=off)
            .next_back()
            .filter(|(_, e)| **e >= off)
            .map(|(s, e)| (*s, *e))
    }

    fn insert(&mut self, off: u128) -> bool {
        let o = T::from_u128(off);
        if self.containing(o).is_some() {
            return false;
        }
        let left = off
            .checked_sub(1)
            .and_then(|p| self.containing(T::from_u128(p)));
        let right_start = off
            .checked_add(1)
            .filter(|r| *r <= T::MAX)
            .map(T::from_u128);
        let right = right_start.and_then(|r| self.runs.get(&r).copied().map(|e| (r, e)));
        match (left, right) {
            (Some((ls, _)), Some((rs, re))) => {
                self.runs.remove(&rs);
                self.runs.insert(ls, re);
            }
            (Some((ls, _)), None) => {
                self.runs.insert(ls, o);
            }
            (None, Some((rs, re))) => {
                self.runs.remove(&rs);
                self.runs.insert(o, re);
            }
            (None, None) => {
                self.runs.insert(o, o);
            }
        }
        true
    }

    fn remove(&mut self, off: u128) -> bool {
        let o = T::from_u128(off);
        let Some((s, e)) = self.containing(o) else {
            return false;
        };
        if s == o {
            self.runs.remove(&s);
        } else {
            self.runs.insert(s, T::from_u128(off - 1));
        }
        if e != o {
            self.runs.insert(T::from_u128(off + 1), e);
        }
        true
    }

    fn first_clear(&self, lo: u128, hi: u128) -> Option<u128> {
        if lo > hi {
            return None;
        }
        let candidate = match self.containing(T::from_u128(lo)) {
            None => lo,
            // Runs are merged, so the address after a run is free.
            Some((_, e)) => e.to_u128().checked_add(1)?,
        };
        (candidate <= hi).then_some(candidate)
    }
}

/// A set of offsets `0..size` (`size` ≤ 2¹²⁸ − 1) as sorted runs.
#[derive(Debug, Clone)]
pub struct SparseSet {
    size: u128,
    count: u128,
    repr: Repr,
}

#[derive(Debug, Clone)]
enum Repr {
    Small(Runs<u64>),
    Large(Runs<u128>),
}

impl SparseSet {
    /// An empty set of `size` offsets.
    pub fn new(size: u128) -> Self {
        // Offsets go up to size - 1: a /64 (size 2^64) still fits u64 offsets.
        let repr = if size.saturating_sub(1) <= u128::from(u64::MAX) {
            Repr::Small(Runs::default())
        } else {
            Repr::Large(Runs::default())
        };
        Self {
            size,
            count: 0,
            repr,
        }
    }

    /// How many offsets the set can hold.
    pub fn size(&self) -> u128 {
        self.size
    }

    /// How many offsets are set.
    pub fn count(&self) -> u128 {
        self.count
    }

    /// How many runs the set holds.
    pub fn runs(&self) -> usize {
        match &self.repr {
            Repr::Small(r) => r.runs.len(),
            Repr::Large(r) => r.runs.len(),
        }
    }

    /// Whether `off` is set.
    pub fn contains(&self, off: u128) -> bool {
        if off >= self.size {
            return false;
        }
        match &self.repr {
            Repr::Small(r) => r.containing(off as u64).is_some(),
            Repr::Large(r) => r.containing(off).is_some(),
        }
    }

    /// Sets `off`; false if already set or out of range.
    pub fn insert(&mut self, off: u128) -> bool {
        if off >= self.size {
            return false;
        }
        let done = match &mut self.repr {
            Repr::Small(r) => r.insert(off),
            Repr::Large(r) => r.insert(off),
        };
        self.count += u128::from(done);
        done
    }

    /// Clears `off`; false if it was not set.
    pub fn remove(&mut self, off: u128) -> bool {
        if off >= self.size {
            return false;
        }
        let done = match &mut self.repr {
            Repr::Small(r) => r.remove(off),
            Repr::Large(r) => r.remove(off),
        };
        self.count -= u128::from(done);
        done
    }

    /// The lowest clear offset in `lo..=hi`.
    pub fn first_clear(&self, lo: u128, hi: u128) -> Option<u128> {
        let hi = hi.min(self.size.checked_sub(1)?);
        match &self.repr {
            Repr::Small(r) => r.first_clear(lo, hi),
            Repr::Large(r) => r.first_clear(lo, hi),
        }
    }

    /// Every set offset, in order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = u128> + '_> {
        match &self.repr {
            Repr::Small(r) => Box::new(
                r.runs
                    .iter()
                    .flat_map(|(s, e)| u128::from(*s)..=u128::from(*e)),
            ),
            Repr::Large(r) => Box::new(r.runs.iter().flat_map(|(s, e)| *s..=*e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_split() {
        let mut s = SparseSet::new(1 << 64);
        assert!(matches!(s.repr, Repr::Small(_)));
        assert!(s.insert(u128::from(u64::MAX)));
        assert!(s.insert(0));
        assert_eq!(s.runs(), 2);
        assert!(s.remove(u128::from(u64::MAX)));
        assert!(s.remove(0));
        for i in [5u128, 7, 6, 4, 8] {
            assert!(s.insert(i));
        }
        assert_eq!(s.runs(), 1);
        assert_eq!(s.first_clear(4, 100), Some(9));
        assert!(s.remove(6));
        assert_eq!(s.runs(), 2);
        assert_eq!(s.first_clear(0, 100), Some(0));
        assert_eq!(s.first_clear(4, 100), Some(6));
        assert!(!s.remove(6));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![4, 5, 7, 8]);
        let mut big = SparseSet::new(u128::MAX);
        assert!(big.insert(u128::MAX - 1));
        assert_eq!(big.first_clear(u128::MAX - 1, u128::MAX), None);
    }
}
