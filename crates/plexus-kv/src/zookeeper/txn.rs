//! Transactions: one `multi` read of every key named, the comparisons checked on it, then one
//! `multi` of version checks and writes, started again if anything moved in between.

use std::collections::{HashMap, HashSet};

use zookeeper_client as zk;
use zookeeper_client::{MultiReadResult, MultiWriteError, MultiWriteResult, Stat};

use super::codec::{create_options, encode, index_of, parent_data, parent_of, Mode, Node};
use super::{Inner, BACKEND, MAX_ATTEMPTS, MULTI_OP_OVERHEAD, REQUEST_OVERHEAD};
use crate::error::{KvError, Result};
use crate::store::check_txn;
use crate::types::{Compare, KvPair, Txn, TxnOp};

impl Inner {
    pub(super) async fn txn(&self, txn: Txn) -> Result<Vec<KvPair>> {
        let txn = check_txn(txn, self.max_value(), BACKEND)?;
        let size: usize = txn
            .ops
            .iter()
            .map(|op| match op {
                TxnOp::Put { value, .. } => value.len() + MULTI_OP_OVERHEAD,
                TxnOp::Delete { .. } => MULTI_OP_OVERHEAD,
            })
            .sum::<usize>()
            + txn.compares.len() * MULTI_OP_OVERHEAD;
        if size > self.max_buffer - REQUEST_OVERHEAD {
            return Err(KvError::InvalidTxn(format!(
                "the transaction is about {size} bytes, over the {} bytes a ZooKeeper request may \
                 carry (jute.maxbuffer {} less overhead)",
                self.max_buffer - REQUEST_OVERHEAD,
                self.max_buffer
            )));
        }
        let client = self.client().await?;
        let mut keys: Vec<&str> = Vec::new();
        let mut seen = HashSet::new();
        for k in txn
            .compares
            .iter()
            .map(Compare::key)
            .chain(txn.ops.iter().map(TxnOp::key))
        {
            if seen.insert(k) {
                keys.push(k);
            }
        }
        let put_keys: HashSet<&str> = txn
            .ops
            .iter()
            .filter(|op| matches!(op, TxnOp::Put { .. }))
            .map(TxnOp::key)
            .collect();
        'attempt: for _ in 0..MAX_ATTEMPTS {
            // Read every key involved in one consistent read.
            let mut reader = client.new_multi_reader();
            for k in &keys {
                reader
                    .add_get_data(&self.path(k))
                    .map_err(|e| self.err("txn", e))?;
            }
            let results = reader.commit().await.map_err(|e| self.err("txn", e))?;
            let mut stats: HashMap<&str, Option<Seen>> = HashMap::new();
            for (k, r) in keys.iter().zip(results) {
                let seen = match r {
                    MultiReadResult::Data { data, stat } => {
                        let node = Node::parse(data, &stat);
                        Some(Seen {
                            present: node.is_key(),
                            mode: node.mode(),
                            stat,
                        })
                    }
                    _ => None,
                };
                stats.insert(k, seen);
            }
            let stat_of = |k: &str| stats.get(k).copied().flatten();
            for c in &txn.compares {
                let stat = stat_of(c.key()).filter(|s| s.present).map(|s| s.stat);
                let conflict = |reason: String| KvError::TxnConflict {
                    key: c.key().to_string(),
                    reason,
                };
                match (c, stat) {
                    (Compare::Index { index, .. }, Some(s)) if index_of(&s) != *index => {
                        return Err(conflict(format!(
                            "expected index {index}, found {}",
                            index_of(&s)
                        )))
                    }
                    (Compare::Index { index, .. }, None) => {
                        return Err(conflict(format!("expected index {index}, key is absent")))
                    }
                    (Compare::Absent { .. }, Some(s)) => {
                        return Err(conflict(format!(
                            "expected absent, found index {}",
                            index_of(&s)
                        )))
                    }
                    _ => {}
                }
            }
            // Build the multi: checks first, then writes.
            let mut w = client.new_multi_writer();
            let mut n = 0usize;
            let mut need_parents = Vec::new();
            let mut put_result = Vec::new();
            let mut deleted = Vec::new();
            let zkerr = |e: zk::Error| self.err("txn", e);
            for c in &txn.compares {
                let path = self.path(c.key());
                match (c, stat_of(c.key())) {
                    (_, Some(s)) => {
                        w.add_check_version(&path, s.stat.version).map_err(zkerr)?;
                        n += 1;
                    }
                    (Compare::Absent { key }, None) if !put_keys.contains(key.as_str()) => {
                        // ZooKeeper cannot check absence: create and delete it in the multi.
                        w.add_create(&path, &[], &create_options(Mode::Persistent))
                            .and_then(|_| w.add_delete(&path, None))
                            .map_err(zkerr)?;
                        n += 2;
                        need_parents.push(path);
                    }
                    // A put of the key creates it, which fails if it exists.
                    _ => {}
                }
            }
            for op in &txn.ops {
                let path = self.path(op.key());
                let stat = stat_of(op.key());
                match op {
                    TxnOp::Put { key, value } => {
                        let data = encode(value, Mode::Persistent);
                        match stat {
                            None => {
                                w.add_create(&path, &data, &create_options(Mode::Persistent))
                                    .map_err(zkerr)?;
                                put_result.push(n);
                                n += 1;
                                need_parents.push(path);
                            }
                            Some(s) if s.mode == Mode::Persistent => {
                                w.add_set_data(&path, &data, Some(s.stat.version))
                                    .map_err(zkerr)?;
                                put_result.push(n);
                                n += 1;
                            }
                            Some(s) if s.stat.num_children == 0 => {
                                w.add_delete(&path, Some(s.stat.version))
                                    .and_then(|_| {
                                        w.add_create(
                                            &path,
                                            &data,
                                            &create_options(Mode::Persistent),
                                        )
                                    })
                                    .map_err(zkerr)?;
                                put_result.push(n + 1);
                                n += 2;
                            }
                            Some(_) => {
                                return Err(KvError::Backend {
                                    url: self.url.clone(),
                                    message: format!(
                                        "cannot drop the TTL of key {key:?} in a transaction: \
                                         keys exist under it"
                                    ),
                                })
                            }
                        }
                    }
                    TxnOp::Delete { .. } => match stat {
                        Some(s) if s.present && s.stat.num_children == 0 => {
                            w.add_delete(&path, Some(s.stat.version)).map_err(zkerr)?;
                            n += 1;
                            deleted.push(path);
                        }
                        Some(s) if s.present => {
                            w.add_set_data(&path, &parent_data(s.mode), Some(s.stat.version))
                                .map_err(zkerr)?;
                            n += 1;
                        }
                        _ => {}
                    },
                }
            }
            for path in &need_parents {
                self.ensure_parents(&client, path).await?;
            }
            let results = match w.commit().await {
                Ok(results) => results,
                Err(MultiWriteError::OperationFailed {
                    source:
                        zk::Error::BadVersion
                        | zk::Error::NoNode
                        | zk::Error::NodeExists
                        | zk::Error::NotEmpty,
                    ..
                }) => continue 'attempt,
                Err(e) => return Err(self.err("txn", e.into())),
            };
            // Every write of a multi has the multi's zxid.
            let mut zxid = None;
            for r in &results {
                if let MultiWriteResult::SetData { stat } | MultiWriteResult::Create { stat, .. } =
                    r
                {
                    if !stat.is_invalid() {
                        zxid = Some(index_of(stat));
                    }
                }
            }
            let mut written = Vec::new();
            let puts = txn.ops.iter().filter_map(|op| match op {
                TxnOp::Put { key, value } => Some((key, value)),
                TxnOp::Delete { .. } => None,
            });
            for ((key, value), idx) in puts.zip(put_result) {
                let index = match results.get(idx) {
                    Some(
                        MultiWriteResult::SetData { stat } | MultiWriteResult::Create { stat, .. },
                    ) if !stat.is_invalid() => index_of(stat),
                    _ => match zxid {
                        Some(z) => z,
                        None => match client.check_stat(&self.path(key)).await {
                            Ok(Some(stat)) => index_of(&stat),
                            _ => 0,
                        },
                    },
                };
                written.push(KvPair {
                    key: key.clone(),
                    value: value.clone(),
                    last_index: index,
                });
            }
            for path in &deleted {
                self.cleanup_from(&client, parent_of(path)).await;
            }
            return Ok(written);
        }
        Err(KvError::TxnConflict {
            key: keys.first().map(|k| k.to_string()).unwrap_or_default(),
            reason: format!("the keys kept changing: gave up after {MAX_ATTEMPTS} attempts"),
        })
    }
}

/// A znode as a transaction read it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    present: bool,
    mode: Mode,
    stat: Stat,
}
