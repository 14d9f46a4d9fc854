//! Applying commands to the key space: pure functions of the command and the tables, so
//! every member reaches the same state (no clock, no randomness).

use redb::{ReadableTable, Table};

use crate::db::{self, Stored};
use crate::types::{Applied, Cmp, Command, Op, Pair, Refusal};

/// A change of one key, for watchers.
pub(crate) type Change = (String, Option<Pair>);

pub(crate) struct Tables<'t> {
    pub kv: Table<'t, &'static str, &'static [u8]>,
    pub expiry: Table<'t, (u64, &'static str), u64>,
}

impl Tables<'_> {
    fn get(&self, key: &str) -> Result<Option<Stored>, String> {
        match self.kv.get(key).map_err(|e| e.to_string())? {
            Some(v) => db::decode(v.value()).map(Some),
            None => Ok(None),
        }
    }

    fn set(&mut self, key: &str, stored: &Stored) -> Result<(), String> {
        self.unset_expiry(key)?;
        let bytes = db::encode(stored)?;
        self.kv
            .insert(key, bytes.as_slice())
            .map_err(|e| e.to_string())?;
        if let Some(at) = stored.expires_at_ms {
            self.expiry
                .insert((at, key), stored.index)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn unset_expiry(&mut self, key: &str) -> Result<(), String> {
        if let Some(old) = self.get(key)? {
            if let Some(at) = old.expires_at_ms {
                self.expiry.remove((at, key)).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<bool, String> {
        self.unset_expiry(key)?;
        Ok(self.kv.remove(key).map_err(|e| e.to_string())?.is_some())
    }

    fn keys_under(&self, prefix: &str) -> Result<Vec<String>, String> {
        let mut keys = Vec::new();
        for item in self.kv.range(prefix..).map_err(|e| e.to_string())? {
            let (k, _) = item.map_err(|e| e.to_string())?;
            if !k.value().starts_with(prefix) {
                break;
            }
            keys.push(k.value().to_string());
        }
        Ok(keys)
    }
}

/// Applies one command at the next revision; `revision` is advanced only when something
/// changed. Returns the answer and the changes.
pub(crate) fn apply(
    t: &mut Tables<'_>,
    revision: &mut u64,
    cmd: Command,
    changes: &mut Vec<Change>,
) -> Result<Applied, String> {
    let next = *revision + 1;
    let index_of = |s: &Option<Stored>| s.as_ref().map(|s| s.index).unwrap_or(0);
    match cmd {
        Command::Put {
            key,
            value,
            expires_at_ms,
            previous,
            ..
        } => {
            let current = t.get(&key)?;
            match (previous, &current) {
                (Some(None), Some(_)) => return Ok(Applied::Refused(Refusal::Exists(key))),
                (Some(Some(_)), None) => return Ok(Applied::Refused(Refusal::NotFound(key))),
                (Some(Some(expected)), Some(cur)) if cur.index != expected => {
                    let found = cur.index;
                    return Ok(Applied::Refused(Refusal::Modified {
                        key,
                        expected,
                        found,
                    }));
                }
                _ => {}
            }
            let stored = Stored {
                value,
                index: next,
                expires_at_ms,
            };
            t.set(&key, &stored)?;
            *revision = next;
            let pair = Pair {
                key: key.clone(),
                value: stored.value,
                index: next,
            };
            changes.push((key, Some(pair.clone())));
            Ok(Applied::Written(vec![pair]))
        }
        Command::Delete { key, previous } => {
            let current = t.get(&key)?;
            if current.is_none() {
                return Ok(Applied::Refused(Refusal::NotFound(key)));
            }
            if let Some(expected) = previous {
                let found = index_of(&current);
                if found != expected {
                    return Ok(Applied::Refused(Refusal::Modified {
                        key,
                        expected,
                        found,
                    }));
                }
            }
            t.remove(&key)?;
            *revision = next;
            changes.push((key, None));
            Ok(Applied::Done)
        }
        Command::DeleteTree { prefix } => {
            let keys = t.keys_under(&prefix)?;
            if !keys.is_empty() {
                for k in keys {
                    t.remove(&k)?;
                    changes.push((k, None));
                }
                *revision = next;
            }
            Ok(Applied::Done)
        }
        Command::Txn { compares, ops } => {
            for c in compares {
                match c {
                    Cmp::Index(key, index) => {
                        let found = index_of(&t.get(&key)?);
                        if found != index {
                            return Ok(Applied::Refused(Refusal::Conflict {
                                key,
                                reason: format!("expected index {index}, found {found}"),
                            }));
                        }
                    }
                    Cmp::Absent(key) => {
                        if t.get(&key)?.is_some() {
                            return Ok(Applied::Refused(Refusal::Conflict {
                                key,
                                reason: "expected absent, found present".into(),
                            }));
                        }
                    }
                }
            }
            let mut written = Vec::new();
            let mut changed = false;
            for op in ops {
                match op {
                    Op::Put(key, value) => {
                        let stored = Stored {
                            value,
                            index: next,
                            expires_at_ms: None,
                        };
                        t.set(&key, &stored)?;
                        let pair = Pair {
                            key: key.clone(),
                            value: stored.value,
                            index: next,
                        };
                        changes.push((key, Some(pair.clone())));
                        written.push(pair);
                        changed = true;
                    }
                    Op::Delete(key) => {
                        if t.remove(&key)? {
                            changes.push((key, None));
                            changed = true;
                        }
                    }
                }
            }
            if changed {
                *revision = next;
            }
            Ok(Applied::Written(written))
        }
        Command::Expire { key, index } => {
            if matches!(t.get(&key)?, Some(s) if s.index == index) {
                t.remove(&key)?;
                *revision = next;
                changes.push((key, None));
            }
            Ok(Applied::Done)
        }
    }
}
