//! Deleting on kernels without `NFT_MSG_DESTROY*` (before Linux 6.3: Debian 12's 6.1, Ubuntu
//! 22.04's 5.15, RHEL 9's 5.14).
//!
//! `DESTROY*` deletes an object and treats a missing one as done; the older `DEL*` fails with
//! `ENOENT`, and one failed message aborts its whole batch. The process learns once, by
//! trying, whether the kernel takes `DESTROY*`. Where it does not, a batch's destroys are
//! narrowed to the objects a dump shows present and sent as `DEL*`, still in one batch:
//! sending the deletions one by one would tolerate `ENOENT` too, but would break the
//! atomicity callers rely on (a teardown or a reconcile mixes deletions with additions, and a
//! failure must leave nothing half done). The dump and the batch are not atomic together:
//! should another writer delete an object in between, the batch fails with `ENOENT` and is
//! narrowed and sent again.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering};

use super::raw::Nft;
use super::wire::batch::{elements_body, Batch, Op, Target};
use super::wire::types::Family;
use super::wire::{msg, nlm};
use crate::error::{Result, SysError};

const UNKNOWN: u8 = 0;
const DESTROY: u8 = 1;
const FALLBACK: u8 = 2;
/// Narrow-and-send attempts before a concurrent deleter's `ENOENT` is reported.
const ATTEMPTS: usize = 3;

static PROBE: AtomicU32 = AtomicU32::new(0);
/// What the first probe of this process found: every namespace shares the kernel, so the
/// handles opened after it start knowing (one probe per namespace would cost a batch each).
static PROBED: AtomicU8 = AtomicU8::new(UNKNOWN);
/// Set by [`Nft::force_delete_fallback_everywhere`]: every handle opened afterwards starts in
/// [`FALLBACK`].
static FORCE_EVERYWHERE: AtomicBool = AtomicBool::new(false);

/// How a new handle starts deleting: as this process's first probe found (unknown before
/// it: probed on first use), or the fallback when it is forced process-wide.
pub(crate) fn initial_delete_mode() -> u8 {
    if FORCE_EVERYWHERE.load(Ordering::Relaxed) {
        FALLBACK
    } else {
        PROBED.load(Ordering::Relaxed)
    }
}

type TableKey = (Family, String);

impl Nft {
    /// Whether this kernel takes `NFT_MSG_DESTROY*` (Linux 6.3 and later). Probed on first
    /// use by a batch that makes and destroys a throwaway table (so it changes nothing), then
    /// cached for this handle and the handles the process opens afterwards.
    pub fn has_destroy(&self) -> Result<bool> {
        match self.delete_mode.load(Ordering::Relaxed) {
            DESTROY => return Ok(true),
            FALLBACK => return Ok(false),
            _ => {}
        }
        let found = if self.probe_destroy()? {
            DESTROY
        } else {
            FALLBACK
        };
        PROBED.store(found, Ordering::Relaxed);
        // A fallback forced meanwhile stays.
        let _ =
            self.delete_mode
                .compare_exchange(UNKNOWN, found, Ordering::Relaxed, Ordering::Relaxed);
        Ok(self.delete_mode.load(Ordering::Relaxed) == DESTROY)
    }

    /// Deletes as on kernels before 6.3 (`DEL*` of the objects present) even where `DESTROY*`
    /// exists: for testing that path.
    pub fn force_delete_fallback(&self) {
        self.delete_mode.store(FALLBACK, Ordering::Relaxed);
    }

    /// [`force_delete_fallback`](Self::force_delete_fallback) for every handle this process
    /// opens from now on (handles already open keep their mode). For testing a whole program
    /// (`plexusd` with `PLEXUS_FORCE_NFT_FALLBACK=1`) on the path of kernels before 6.3.
    pub fn force_delete_fallback_everywhere() {
        FORCE_EVERYWHERE.store(true, Ordering::Relaxed);
    }

    fn probe_destroy(&self) -> Result<bool> {
        let name = format!(
            "plexus-probe-{}-{}",
            std::process::id(),
            PROBE.fetch_add(1, Ordering::Relaxed)
        );
        let mut b = Batch::new();
        b.add_table(Family::Inet, &name);
        b.destroy_table(Family::Inet, &name);
        // Exclusive, so a table of that name (unlikely as it is) fails the probe rather than
        // being destroyed; the destroy is sent as is, not narrowed.
        b.ops[0].flags |= nlm::EXCL;
        b.ops[1].target = None;
        match self.send_ops(&b.ops) {
            Ok(()) => Ok(true),
            // An unknown message type: nfnetlink answers EINVAL.
            Err(e) if e.errno() == Some(nix::libc::EINVAL) => Ok(false),
            Err(SysError::Unsupported { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`apply`](Nft::apply) for kernels without `DESTROY*`.
    pub(crate) fn apply_without_destroy(&self, batch: &Batch) -> Result<()> {
        let mut attempt = 1;
        loop {
            let ops = narrow(batch, &mut &*self)?;
            match self.send_ops(&ops) {
                Err(SysError::NotFound { what }) if attempt < ATTEMPTS => {
                    tracing::debug!(%what, attempt, "nf_tables object vanished before its deletion; narrowing again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// An element as a deletion names it: key and interval-end flag.
type ElemId = (Vec<u8>, bool);
type InSet = (TableKey, String);

/// What the kernel holds, as far as narrowing needs to know.
trait Present {
    fn tables(&mut self) -> Result<Vec<TableKey>>;
    fn chains(&mut self, family: Family, table: &str) -> Result<Vec<String>>;
    fn sets(&mut self, family: Family, table: &str) -> Result<Vec<String>>;
    fn rules(&mut self, family: Family, table: &str, chain: &str) -> Result<Vec<u64>>;
    /// A missing set has no elements.
    fn elements(&mut self, family: Family, table: &str, set: &str) -> Result<Vec<ElemId>>;
}

impl Present for &Nft {
    fn tables(&mut self) -> Result<Vec<TableKey>> {
        Nft::tables(self)
    }
    fn chains(&mut self, family: Family, table: &str) -> Result<Vec<String>> {
        Nft::chains(self, family, table)
    }
    fn sets(&mut self, family: Family, table: &str) -> Result<Vec<String>> {
        Nft::sets(self, family, table)
    }
    fn rules(&mut self, family: Family, table: &str, chain: &str) -> Result<Vec<u64>> {
        Ok(Nft::rules(self, family, table, chain)?
            .iter()
            .map(|r| r.handle)
            .collect())
    }
    fn elements(&mut self, family: Family, table: &str, set: &str) -> Result<Vec<ElemId>> {
        match Nft::elements(self, family, table, set) {
            Ok(v) => Ok(v.iter().map(|e| e.identity()).collect()),
            Err(SysError::NotFound { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

/// The batch with each destroy turned into a `DEL*` of what is present (judged by the
/// kernel's state before the batch, less what earlier messages of it delete), or dropped.
/// Other messages are kept as they are, in order.
fn narrow(batch: &Batch, kernel: &mut impl Present) -> Result<Vec<Op>> {
    let mut tables: Option<HashSet<TableKey>> = None;
    let mut chains: HashMap<TableKey, HashSet<String>> = HashMap::new();
    let mut sets: HashMap<TableKey, HashSet<String>> = HashMap::new();
    let mut rules: HashMap<InSet, HashSet<u64>> = HashMap::new();
    let mut elems: HashMap<InSet, HashSet<ElemId>> = HashMap::new();
    let mut out = Vec::with_capacity(batch.ops.len());
    for op in &batch.ops {
        let Some(target) = &op.target else {
            out.push(op.clone());
            continue;
        };
        let key: TableKey = (op.family, op.table.clone());
        let tables = match &mut tables {
            Some(t) => t,
            None => tables.insert(kernel.tables()?.into_iter().collect()),
        };
        if !tables.contains(&key) {
            continue;
        }
        let del = |m: u8, body: Vec<u8>| Op {
            msg: m,
            flags: 0,
            target: None,
            body,
            ..op.clone()
        };
        let (f, t) = (op.family, op.table.as_str());
        match target {
            Target::Table => {
                tables.remove(&key);
                out.push(del(msg::DELTABLE, op.body.clone()));
            }
            Target::Chain { chain } => {
                let have = match chains.entry(key) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(kernel.chains(f, t)?.into_iter().collect()),
                };
                if have.remove(chain) {
                    out.push(del(msg::DELCHAIN, op.body.clone()));
                }
            }
            Target::Rule { chain, handle } => {
                let have = match rules.entry((key, chain.clone())) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(kernel.rules(f, t, chain)?.into_iter().collect()),
                };
                if have.remove(handle) {
                    out.push(del(msg::DELRULE, op.body.clone()));
                }
            }
            Target::Set { set } => {
                let have = match sets.entry(key.clone()) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(kernel.sets(f, t)?.into_iter().collect()),
                };
                if have.remove(set) {
                    // Its elements go with it.
                    elems.insert((key, set.clone()), HashSet::new());
                    out.push(del(msg::DELSET, op.body.clone()));
                }
            }
            Target::Elements { set, elems: wanted } => {
                let have = match elems.entry((key, set.clone())) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => e.insert(kernel.elements(f, t, set)?.into_iter().collect()),
                };
                let keep: Vec<_> = wanted
                    .iter()
                    .filter(|e| have.remove(&e.identity()))
                    .cloned()
                    .collect();
                if !keep.is_empty() {
                    let body = elements_body(t, set, Some((&keep, false)));
                    out.push(del(msg::DELSETELEM, body));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::wire::set::{parse_elements, Element};
    use super::*;

    /// A kernel with table `ip t`, chain `c` (rules 1 and 2), set `s` (elements 1 and 2).
    struct Fake;

    impl Present for Fake {
        fn tables(&mut self) -> Result<Vec<TableKey>> {
            Ok(vec![(Family::Ip, "t".into())])
        }
        fn chains(&mut self, _: Family, _: &str) -> Result<Vec<String>> {
            Ok(vec!["c".into()])
        }
        fn sets(&mut self, _: Family, _: &str) -> Result<Vec<String>> {
            Ok(vec!["s".into()])
        }
        fn rules(&mut self, _: Family, _: &str, _: &str) -> Result<Vec<u64>> {
            Ok(vec![1, 2])
        }
        fn elements(&mut self, _: Family, _: &str, set: &str) -> Result<Vec<ElemId>> {
            Ok(if set == "s" {
                vec![(vec![1], false), (vec![2], false)]
            } else {
                Vec::new()
            })
        }
    }

    #[test]
    fn destroys_become_deletions_of_what_is_present() {
        let (e1, e3) = (Element::key([1]), Element::key([3]));
        let mut b = Batch::new();
        b.destroy_elements(Family::Ip, "t", "s", &[e1.clone(), e3.clone()]);
        b.destroy_elements(Family::Ip, "t", "s", std::slice::from_ref(&e1)); // already deleted above
        b.destroy_elements(Family::Ip, "t", "other", &[e3]);
        b.destroy_rule(Family::Ip, "t", "c", 2);
        b.destroy_rule(Family::Ip, "t", "c", 7);
        b.add_table(Family::Ip, "u");
        b.destroy_chain(Family::Ip, "t", "c");
        b.destroy_chain(Family::Ip, "t", "c");
        b.destroy_set(Family::Ip, "t", "s");
        b.destroy_elements(Family::Ip, "t", "s", &[Element::key([2])]); // went with its set
        b.destroy_table(Family::Ip, "t");
        b.destroy_set(Family::Ip, "t", "s"); // went with its table
        b.destroy_table(Family::Ip, "missing");
        let ops = narrow(&b, &mut Fake).unwrap_or_default();
        let kinds: Vec<u8> = ops.iter().map(|o| o.msg).collect();
        assert_eq!(
            kinds,
            vec![
                msg::DELSETELEM,
                msg::DELRULE,
                msg::NEWTABLE,
                msg::DELCHAIN,
                msg::DELSET,
                msg::DELTABLE
            ]
        );
        assert!(ops.iter().all(|o| o.target.is_none()));
        let deleted = parse_elements(&ops[0].body[..]);
        assert_eq!(deleted, vec![e1], "only the present element is deleted");
    }
}
