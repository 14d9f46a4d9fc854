//! The member store: every known node's SWIM record, indexed by slot, and the Lifeguard
//! suspicion timeout formula. Plain data, no I/O.

use std::collections::HashMap;

use crate::codec::{Address, MemberState};

/// Record state code for a slot that is allocated but not a known member.
const UNKNOWN: u8 = 0;

/// One member record (8 bytes: the simulator keeps 10,000 × 10,000 of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    /// Incarnation.
    pub inc: u32,
    state: u8,
}

impl Rec {
    /// The state, if the slot is a known member.
    pub fn state(&self) -> Option<MemberState> {
        match self.state {
            1 => Some(MemberState::Alive),
            2 => Some(MemberState::Suspect),
            3 => Some(MemberState::Dead),
            4 => Some(MemberState::Left),
            _ => None,
        }
    }
    /// Alive or suspect.
    pub fn active(&self) -> bool {
        matches!(self.state, 1 | 2)
    }
}

fn code(s: MemberState) -> u8 {
    match s {
        MemberState::Alive => 1,
        MemberState::Suspect => 2,
        MemberState::Dead => 3,
        MemberState::Left => 4,
    }
}

/// Slot-indexed member records.
#[derive(Debug, Default)]
pub struct Members<A> {
    index: HashMap<A, u32>,
    addrs: Vec<A>,
    recs: Vec<Rec>,
    active: usize,
}

impl<A: Address> Members<A> {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            index: HashMap::new(),
            addrs: Vec::new(),
            recs: Vec::new(),
            active: 0,
        }
    }

    /// Reserves room for `n` slots (simulator bootstrap).
    pub fn reserve_exact(&mut self, n: usize) {
        self.addrs.reserve_exact(n);
        self.recs.reserve_exact(n);
    }

    /// The slot of `a`, if allocated.
    pub fn slot(&self, a: &A) -> Option<u32> {
        match a.dense() {
            Some(i) => (i < self.recs.len() && self.addrs[i] == *a).then_some(i as u32),
            None => self.index.get(a).copied(),
        }
    }

    /// The slot of `a`, allocating one (state unknown) if needed.
    pub fn ensure(&mut self, a: A) -> u32 {
        if let Some(s) = self.slot(&a) {
            return s;
        }
        match a.dense() {
            Some(i) => {
                while self.recs.len() <= i {
                    self.addrs.push(a);
                    self.recs.push(Rec {
                        inc: 0,
                        state: UNKNOWN,
                    });
                }
                self.addrs[i] = a;
                i as u32
            }
            None => {
                let s = self.recs.len() as u32;
                self.addrs.push(a);
                self.recs.push(Rec {
                    inc: 0,
                    state: UNKNOWN,
                });
                self.index.insert(a, s);
                s
            }
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> usize {
        self.recs.len()
    }

    /// The record of a slot.
    pub fn rec(&self, slot: u32) -> Rec {
        self.recs.get(slot as usize).copied().unwrap_or(Rec {
            inc: 0,
            state: UNKNOWN,
        })
    }

    /// The address of a slot.
    pub fn addr(&self, slot: u32) -> A {
        self.addrs[slot as usize]
    }

    /// Record of an address.
    pub fn get(&self, a: &A) -> Option<(u32, Rec)> {
        let s = self.slot(a)?;
        let r = self.rec(s);
        r.state().map(|_| (s, r))
    }

    /// Sets a slot's record.
    pub fn set(&mut self, slot: u32, inc: u32, state: MemberState) {
        if let Some(r) = self.recs.get_mut(slot as usize) {
            let was = r.active();
            *r = Rec {
                inc,
                state: code(state),
            };
            match (was, r.active()) {
                (false, true) => self.active += 1,
                (true, false) => self.active -= 1,
                _ => {}
            }
        }
    }

    /// Forgets a member (the slot stays allocated, state unknown).
    pub fn forget(&mut self, slot: u32) {
        if let Some(r) = self.recs.get_mut(slot as usize) {
            if r.active() {
                self.active -= 1;
            }
            *r = Rec {
                inc: 0,
                state: UNKNOWN,
            };
        }
    }

    /// Alive or suspect members.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Known members (slot, record).
    pub fn iter(&self) -> impl Iterator<Item = (u32, Rec)> + '_ {
        self.recs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.state != UNKNOWN)
            .map(|(i, r)| (i as u32, *r))
    }
}

/// Lifeguard suspicion timeout (ms) after `confirmations` independent suspicions:
/// `max - (max - min) · ln(c + 1) / ln(k + 1)`, never below `min`.
pub fn suspicion_timeout(min: u64, max: u64, k: u32, confirmations: u32) -> u64 {
    if k == 0 || confirmations >= k {
        return min;
    }
    let frac = ((confirmations as f64) + 1.0).ln() / ((k as f64) + 1.0).ln();
    let t = max as f64 - (max.saturating_sub(min)) as f64 * frac;
    (t as u64).max(min)
}

/// Shortest suspicion timeout (ms): `mult × max(1, log10(n)) × probe_interval`.
pub fn suspicion_min(mult: u32, n: usize, probe_interval_ms: u64) -> u64 {
    let scale = (n.max(1) as f64).log10().max(1.0);
    (mult as f64 * scale * probe_interval_ms as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_counts() {
        let mut m = Members::<u32>::new();
        let s = m.ensure(5);
        assert_eq!(s, 5);
        assert!(m.get(&5).is_none());
        m.set(s, 1, MemberState::Alive);
        assert_eq!(m.active(), 1);
        m.set(s, 1, MemberState::Dead);
        assert_eq!(m.active(), 0);
        assert_eq!(m.iter().count(), 1);
        m.forget(s);
        assert_eq!(m.iter().count(), 0);
    }

    #[test]
    fn lifeguard_timeouts_shrink_with_confirmations() {
        let min = suspicion_min(4, 100, 1000);
        assert_eq!(min, 8000);
        let max = 6 * min;
        assert_eq!(suspicion_timeout(min, max, 2, 0), max);
        let one = suspicion_timeout(min, max, 2, 1);
        assert!(one < max && one > min);
        assert_eq!(suspicion_timeout(min, max, 2, 2), min);
    }
}
