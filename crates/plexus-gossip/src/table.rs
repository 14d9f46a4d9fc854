//! networkdb table storage and merge rules (pure).
//!
//! An entry is a last-writer-wins register ordered by `(lamport time, owner)`: a total order,
//! so every node that has seen the same set of events holds the same entry whatever the
//! order of arrival. Deletes are tombstones ordered the same way and kept for the reap
//! interval. Visibility is separate from storage: an entry is visible only while its owner
//! is an active member attached to the network since before the entry was written (see
//! [`visible`]); entries written before the owner's latest attach/leave event are dropped
//! (see [`superseded`]).

use std::collections::BTreeMap;

use crate::codec::Address;
use crate::rng::stable_hash;

/// Number of digest buckets per network table.
pub const BUCKETS: usize = 64;

/// A stored entry (maybe a tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<A> {
    /// Value (empty for tombstones).
    pub value: Vec<u8>,
    /// Writer.
    pub owner: A,
    /// Writer's Lamport time.
    pub ltime: u64,
    /// Tombstone?
    pub deleted: bool,
    /// For tombstones: local time (ms) at which it is reaped.
    pub reap_at: u64,
}

impl<A: Address> Entry<A> {
    /// The total order used by merges.
    pub fn version(&self) -> (u64, A) {
        (self.ltime, self.owner)
    }
}

/// Result of a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merge<A> {
    /// The stored entry is as new or newer: nothing changed.
    Ignored,
    /// The incoming entry replaced the previous one (if any).
    Applied(Option<Entry<A>>),
}

/// Key of an entry inside one network: (table, key).
pub type EntryKey = (String, String);

/// All entries of one network, with incrementally maintained digests.
#[derive(Debug, Clone)]
pub struct Table<A> {
    entries: BTreeMap<EntryKey, Entry<A>>,
    buckets: [u64; BUCKETS],
}

impl<A: Address> Default for Table<A> {
    fn default() -> Self {
        Self {
            entries: BTreeMap::new(),
            buckets: [0; BUCKETS],
        }
    }
}

/// Bucket of a key.
pub fn bucket_of(table: &str, key: &str) -> usize {
    (stable_hash(&[table.as_bytes(), key.as_bytes()]) % BUCKETS as u64) as usize
}

fn entry_hash<A: Address>(table: &str, key: &str, e: &Entry<A>) -> u64 {
    let mut owner = Vec::with_capacity(20);
    e.owner.encode(&mut owner);
    stable_hash(&[
        table.as_bytes(),
        key.as_bytes(),
        &owner,
        &e.ltime.to_be_bytes(),
        &[e.deleted as u8],
    ])
}

impl<A: Address> Table<A> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn toggle(&mut self, k: &EntryKey, e: &Entry<A>) {
        self.buckets[bucket_of(&k.0, &k.1)] ^= entry_hash(&k.0, &k.1, e);
    }

    /// Merges an incoming entry under the `(ltime, owner)` order.
    pub fn merge(&mut self, table: &str, key: &str, incoming: Entry<A>) -> Merge<A> {
        let k = (table.to_string(), key.to_string());
        if let Some(cur) = self.entries.get(&k) {
            if cur.version() >= incoming.version() {
                return Merge::Ignored;
            }
        }
        self.toggle(&k, &incoming);
        let prev = self.entries.insert(k.clone(), incoming);
        if let Some(p) = &prev {
            self.toggle(&k, p);
        }
        Merge::Applied(prev)
    }

    /// Removes an entry outright (reaping, purging).
    pub fn remove(&mut self, table: &str, key: &str) -> Option<Entry<A>> {
        let k = (table.to_string(), key.to_string());
        let e = self.entries.remove(&k)?;
        self.toggle(&k, &e);
        Some(e)
    }

    /// The stored entry.
    pub fn get(&self, table: &str, key: &str) -> Option<&Entry<A>> {
        self.entries.get(&(table.to_string(), key.to_string()))
    }

    /// Every stored entry in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&EntryKey, &Entry<A>)> {
        self.entries.iter()
    }

    /// Number of stored entries (tombstones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whole-table digest.
    pub fn digest(&self) -> u64 {
        self.buckets.iter().fold(0, |a, b| a ^ b)
    }

    /// Per-bucket digests.
    pub fn buckets(&self) -> &[u64; BUCKETS] {
        &self.buckets
    }

    /// Buckets whose digest differs from `other`'s.
    pub fn differing(&self, other: &[u64]) -> Vec<u16> {
        (0..BUCKETS)
            .filter(|i| other.get(*i).copied() != Some(self.buckets[*i]))
            .map(|i| i as u16)
            .collect()
    }

    /// Entries that fall into the given buckets.
    pub fn entries_in(&self, buckets: &[u16]) -> Vec<(EntryKey, Entry<A>)> {
        let mut want = [false; BUCKETS];
        for b in buckets {
            if let Some(w) = want.get_mut(*b as usize) {
                *w = true;
            }
        }
        self.entries
            .iter()
            .filter(|(k, _)| want[bucket_of(&k.0, &k.1)])
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    /// Removes every entry matching `pred`; returns them.
    pub fn remove_where(
        &mut self,
        mut pred: impl FnMut(&EntryKey, &Entry<A>) -> bool,
    ) -> Vec<(EntryKey, Entry<A>)> {
        let keys: Vec<EntryKey> = self
            .entries
            .iter()
            .filter(|(k, e)| pred(k, e))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(e) = self.entries.remove(&k) {
                self.toggle(&k, &e);
                out.push((k, e));
            }
        }
        out
    }

    /// Reaps tombstones whose time has come.
    pub fn reap(&mut self, now: u64) -> usize {
        self.remove_where(|_, e| e.deleted && e.reap_at <= now)
            .len()
    }
}

/// Attachment of a node to a network: its Lamport time and whether it joined or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attach {
    /// Owner's Lamport time of the event.
    pub ltime: u64,
    /// Joined (true) or left (false).
    pub joined: bool,
}

/// Whether an attach event replaces the current one (newer Lamport time wins).
pub fn attach_newer(current: Option<Attach>, incoming: Attach) -> bool {
    match current {
        None => true,
        Some(c) => incoming.ltime > c.ltime,
    }
}

/// An entry written before its owner's latest attach or leave event belongs to an earlier
/// membership of the network (or to a network the owner left): it is dropped.
pub fn superseded<A: Address>(entry: &Entry<A>, attach: Option<Attach>) -> bool {
    matches!(attach, Some(a) if !a.joined || entry.ltime <= a.ltime)
}

/// Whether a stored entry is visible: not a tombstone, owner active (not failed or left),
/// owner attached to the network since before the entry was written.
pub fn visible<A: Address>(entry: &Entry<A>, attach: Option<Attach>, owner_active: bool) -> bool {
    !entry.deleted && owner_active && matches!(attach, Some(a) if a.joined && a.ltime < entry.ltime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e(owner: u32, ltime: u64, deleted: bool, v: u8) -> Entry<u32> {
        Entry {
            value: if deleted { vec![] } else { vec![v] },
            owner,
            ltime,
            deleted,
            reap_at: 0,
        }
    }

    #[test]
    fn lamport_order_and_ties() {
        let mut t = Table::new();
        assert_eq!(t.merge("t", "k", e(1, 5, false, 1)), Merge::Applied(None));
        assert_eq!(t.merge("t", "k", e(2, 4, false, 2)), Merge::Ignored);
        assert_eq!(t.merge("t", "k", e(1, 5, false, 1)), Merge::Ignored);
        // Same ltime, higher owner wins: a total order.
        assert!(matches!(
            t.merge("t", "k", e(2, 5, false, 3)),
            Merge::Applied(Some(_))
        ));
        assert_eq!(t.get("t", "k").map(|x| x.value.clone()), Some(vec![3]));
        // Tombstone newer wins, older value cannot resurrect.
        assert!(matches!(
            t.merge("t", "k", e(1, 6, true, 0)),
            Merge::Applied(_)
        ));
        assert_eq!(t.merge("t", "k", e(2, 5, false, 9)), Merge::Ignored);
        assert!(t.get("t", "k").is_some_and(|x| x.deleted));
    }

    #[test]
    fn reap_tombstones() {
        let mut t = Table::new();
        let mut d = e(1, 2, true, 0);
        d.reap_at = 100;
        t.merge("t", "a", d);
        t.merge("t", "b", e(1, 3, false, 1));
        assert_eq!(t.reap(99), 0);
        assert_eq!(t.reap(100), 1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.digest(), {
            let mut u = Table::new();
            u.merge("t", "b", e(1, 3, false, 1));
            u.digest()
        });
    }

    #[test]
    fn owner_leave_rules() {
        let joined = Some(Attach {
            ltime: 10,
            joined: true,
        });
        let left = Some(Attach {
            ltime: 20,
            joined: false,
        });
        let rejoined = Some(Attach {
            ltime: 30,
            joined: true,
        });
        let x = e(1, 15, false, 1);
        assert!(visible(&x, joined, true));
        assert!(!visible(&x, joined, false), "failed owner hides");
        assert!(!visible(&x, None, true), "unknown attachment hides");
        assert!(!superseded(&x, joined));
        assert!(superseded(&x, left), "owner left: entry dropped");
        assert!(superseded(&x, rejoined), "from an earlier membership");
        assert!(!visible(&x, rejoined, true));
        assert!(visible(&e(1, 31, false, 1), rejoined, true));
        assert!(attach_newer(
            joined,
            Attach {
                ltime: 20,
                joined: false
            }
        ));
        assert!(!attach_newer(
            left,
            Attach {
                ltime: 10,
                joined: true
            }
        ));
    }

    proptest! {
        #[test]
        fn merge_is_order_independent(
            events in proptest::collection::vec((0u8..4, 0u32..4, 1u64..20, any::<bool>(), any::<u8>()), 1..40),
            seed in any::<u64>(),
        ) {
            // An owner never writes two different events with the same ltime.
            let mut seen = std::collections::HashSet::new();
            let evs: Vec<_> = events.into_iter().filter(|(_, o, l, _, _)| seen.insert((*o, *l))).collect();
            let mut a = Table::new();
            for (k, o, l, d, v) in &evs {
                a.merge("t", &k.to_string(), e(*o, *l, *d, *v));
            }
            let mut shuffled = evs.clone();
            crate::rng::Rng::new(seed).shuffle(&mut shuffled);
            let mut b = Table::new();
            for (k, o, l, d, v) in &shuffled {
                b.merge("t", &k.to_string(), e(*o, *l, *d, *v));
                // Duplicates are harmless.
                b.merge("t", &k.to_string(), e(*o, *l, *d, *v));
            }
            prop_assert_eq!(a.digest(), b.digest());
            prop_assert_eq!(a.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
            // The survivor of each key is the maximum version.
            for (k, ent) in a.iter() {
                let max = evs.iter().filter(|x| x.0.to_string() == k.1).map(|x| (x.2, x.1)).max();
                prop_assert_eq!(Some(ent.version()), max);
            }
            prop_assert!(a.differing(b.buckets()).is_empty());
        }
    }
}
