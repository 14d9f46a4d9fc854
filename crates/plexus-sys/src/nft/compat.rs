//! Deleting on kernels without `NFT_MSG_DESTROY*` (before Linux 6.3: Debian 12's 6.1, Ubuntu
//! 22.04's 5.15, RHEL 9's 5.14).
//!
//! `DESTROY*` deletes an object and treats a missing one as done; the older `DEL*` fails with
//! `ENOENT`, and one failed message aborts its whole batch. Each [`Nft`] learns once, by
//! trying, whether the kernel takes `DESTROY*`. Where it does not, a batch's destroys are
//! narrowed to the objects a dump shows present and sent as `DEL*`, still in one batch:
//! sending the deletions one by one would tolerate `ENOENT` too, but would break the
//! atomicity callers rely on (a teardown or a reconcile mixes deletions with additions, and a
//! failure must leave nothing half done). The dump and the batch are not atomic together:
//! should another writer delete an object in between, the batch fails with `ENOENT` and is
//! narrowed and sent again.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};

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

type TableKey = (Family, String);

impl Nft {
    /// Whether this kernel takes `NFT_MSG_DESTROY*` (Linux 6.3 and later). Probed on first
    /// use by a batch that makes and destroys a throwaway table (so it changes nothing), then
    /// cached for this handle.
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
            let ops = self.narrow(batch)?;
            match self.send_ops(&ops) {
                Err(SysError::NotFound { what }) if attempt < ATTEMPTS => {
                    tracing::debug!(%what, attempt, "nf_tables object vanished before its deletion; narrowing again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The batch with each destroy turned into a `DEL*` of what is present (judged by the
    /// kernel's state before the batch, less what earlier messages of it delete), or dropped.
    fn narrow(&self, batch: &Batch) -> Result<Vec<Op>> {
        let mut tables: Option<HashSet<TableKey>> = None;
        let mut chains: HashMap<TableKey, HashSet<String>> = HashMap::new();
        let mut sets: HashMap<TableKey, HashSet<String>> = HashMap::new();
        let mut rules: HashMap<(TableKey, String), HashSet<u64>> = HashMap::new();
        let mut elems: HashMap<(TableKey, String), HashSet<(Vec<u8>, bool)>> = HashMap::new();
        let mut out = Vec::with_capacity(batch.ops.len());
        for op in &batch.ops {
            let Some(target) = &op.target else {
                out.push(op.clone());
                continue;
            };
            let key: TableKey = (op.family, op.table.clone());
            if tables.is_none() {
                tables = Some(self.tables()?.into_iter().collect());
            }
            let present = tables.as_mut().is_some_and(|t| t.contains(&key));
            if !present {
                continue;
            }
            let del = |m: u8, body: Vec<u8>| Op {
                msg: m,
                flags: 0,
                target: None,
                body,
                ..op.clone()
            };
            match target {
                Target::Table => {
                    if let Some(t) = tables.as_mut() {
                        t.remove(&key);
                    }
                    out.push(del(msg::DELTABLE, op.body.clone()));
                }
                Target::Chain { chain } => {
                    if !chains.contains_key(&key) {
                        let names = self.chains(op.family, &op.table)?;
                        chains.insert(key.clone(), names.into_iter().collect());
                    }
                    if chains.get_mut(&key).is_some_and(|c| c.remove(chain)) {
                        out.push(del(msg::DELCHAIN, op.body.clone()));
                    }
                }
                Target::Rule { chain, handle } => {
                    let k = (key.clone(), chain.clone());
                    if !rules.contains_key(&k) {
                        let r = self.rules(op.family, &op.table, chain)?;
                        rules.insert(k.clone(), r.iter().map(|r| r.handle).collect());
                    }
                    if rules.get_mut(&k).is_some_and(|r| r.remove(handle)) {
                        out.push(del(msg::DELRULE, op.body.clone()));
                    }
                }
                Target::Set { set } => {
                    if !sets.contains_key(&key) {
                        let names = self.sets(op.family, &op.table)?;
                        sets.insert(key.clone(), names.into_iter().collect());
                    }
                    if sets.get_mut(&key).is_some_and(|s| s.remove(set)) {
                        elems.remove(&(key.clone(), set.clone()));
                        out.push(del(msg::DELSET, op.body.clone()));
                    }
                }
                Target::Elements { set, elems: wanted } => {
                    let k = (key.clone(), set.clone());
                    if !elems.contains_key(&k) {
                        let have = match self.elements(op.family, &op.table, set) {
                            Ok(v) => v.iter().map(|e| e.identity()).collect(),
                            Err(SysError::NotFound { .. }) => HashSet::new(),
                            Err(e) => return Err(e),
                        };
                        elems.insert(k.clone(), have);
                    }
                    let Some(have) = elems.get_mut(&k) else {
                        continue;
                    };
                    let keep: Vec<_> = wanted
                        .iter()
                        .filter(|e| have.remove(&e.identity()))
                        .cloned()
                        .collect();
                    if !keep.is_empty() {
                        let body = elements_body(&op.table, set, Some((&keep, false)));
                        out.push(del(msg::DELSETELEM, body));
                    }
                }
            }
        }
        Ok(out)
    }
}
