//! Reads and writes outside transactions: one key (`get`, `put`, compare-and-swap, `delete`),
//! listings and tree reads that are a state the tree had, `delete_tree`, and the implicit
//! parents that writes create and deletes clean up.

use std::collections::BTreeSet;

use zookeeper_client as zk;
use zookeeper_client::{Client, MultiReadResult, MultiWriteError, MultiWriteResult, Stat};

use super::codec::{
    base_dir_of, create_options, decode, encode, index_of, join, parent_data, parent_of,
    wanted_mode, Mode, Node,
};
use super::{Inner, BACKEND, DELETE_BATCH, MAX_ATTEMPTS, READ_BATCH, SNAPSHOT_MAX};
use crate::error::{KvError, Result};
use crate::store::check_value;
use crate::types::{KvPair, PutOptions};

/// What a write expects to find.
#[derive(Debug, Clone, Copy)]
pub(super) enum Expect {
    Any,
    Absent,
    Index(u64),
}

impl Inner {
    /// Creates the missing parents of `path` as implicit parents.
    pub(super) async fn ensure_parents(&self, client: &Client, path: &str) -> Result<()> {
        let mut ancestors = Vec::new();
        let mut p = parent_of(path);
        while p.len() > self.root.len() && p != "/" {
            ancestors.push(p);
            p = parent_of(p);
        }
        let opts = create_options(Mode::Persistent);
        // Find the deepest ancestor that exists (or that we create), then go down.
        let mut i = 0;
        while i < ancestors.len() {
            match client.create(ancestors[i], &[], &opts).await {
                Ok(_) | Err(zk::Error::NodeExists) => break,
                Err(zk::Error::NoNode) => i += 1,
                Err(zk::Error::NoChildrenForEphemerals) => {
                    return Err(KvError::Backend {
                        url: self.url.clone(),
                        message: format!("{} is a lock node and cannot hold keys", ancestors[i]),
                    })
                }
                Err(e) => return Err(self.err("create parent", e)),
            }
        }
        if i == ancestors.len() && !self.root.is_empty() {
            // The chroot itself is gone (deleted by hand): make it again.
            client
                .mkdir(&self.root, &opts)
                .await
                .map_err(|e| self.err("create the chroot", e))?;
        }
        for a in ancestors[..i.min(ancestors.len())].iter().rev() {
            match client.create(a, &[], &opts).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                // Removed by a concurrent cleanup: the caller retries.
                Err(zk::Error::NoNode) => return Ok(()),
                Err(e) => return Err(self.err("create parent", e)),
            }
        }
        Ok(())
    }

    /// Deletes `path` and its ancestors while they are empty implicit parents (best effort).
    pub(super) async fn cleanup_from(&self, client: &Client, mut path: &str) {
        while path.len() > self.root.len() && path != "/" {
            let Ok(Some(stat)) = client.check_stat(path).await else {
                return;
            };
            if stat.data_length != 0 || stat.num_children != 0 || stat.ephemeral_owner != 0 {
                return;
            }
            if client.delete(path, Some(stat.version)).await.is_err() {
                return;
            }
            path = parent_of(path);
        }
    }

    /// Reads a znode: what it is, and its stat; `None` if it does not exist.
    pub(super) async fn read_node(
        &self,
        client: &Client,
        path: &str,
    ) -> Result<Option<(Node, Stat)>> {
        match client.get_data(path).await {
            Ok((data, stat)) => Ok(Some((Node::parse(data, &stat), stat))),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(self.err("read", e)),
        }
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<KvPair>> {
        let client = self.client().await?;
        self.get_with(&client, key).await
    }

    pub(super) async fn get_with(&self, client: &Client, key: &str) -> Result<Option<KvPair>> {
        match client.get_data(&self.path(key)).await {
            Ok((data, stat)) => Ok(decode(data, &stat).map(|value| KvPair {
                key: key.to_string(),
                value,
                last_index: index_of(&stat),
            })),
            Err(zk::Error::NoNode) => Ok(None),
            Err(e) => Err(self.err("get", e)),
        }
    }

    /// The write behind `put` and `atomic_put`.
    pub(super) async fn write(
        &self,
        key: &str,
        value: &[u8],
        expect: Expect,
        options: PutOptions,
    ) -> Result<KvPair> {
        check_value(key, value, self.max_value(), BACKEND)?;
        let client = self.client().await?;
        let path = self.path(key);
        let want = wanted_mode(&options);
        let data = encode(value, want);
        let op = if options.ttl.is_some() {
            "write with TTL"
        } else {
            "write"
        };
        let pair = |stat: &Stat| KvPair {
            key: key.to_string(),
            value: value.to_vec(),
            last_index: index_of(stat),
        };
        for _ in 0..MAX_ATTEMPTS {
            let Some((node, stat)) = self.read_node(&client, &path).await? else {
                if let Expect::Index(_) = expect {
                    return Err(KvError::KeyNotFound {
                        key: key.to_string(),
                    });
                }
                match client.create(&path, &data, &create_options(want)).await {
                    Ok((stat, _)) => return Ok(pair(&stat)),
                    Err(zk::Error::NodeExists) => continue,
                    Err(zk::Error::NoNode) => {
                        self.ensure_parents(&client, &path).await?;
                        continue;
                    }
                    Err(e) => return Err(self.err(op, e)),
                }
            };
            let present = node.is_key();
            match expect {
                Expect::Absent if present => {
                    return Err(KvError::KeyExists {
                        key: key.to_string(),
                    })
                }
                Expect::Index(_) if !present => {
                    return Err(KvError::KeyNotFound {
                        key: key.to_string(),
                    })
                }
                Expect::Index(index) if index_of(&stat) != index => {
                    return Err(KvError::KeyModified {
                        key: key.to_string(),
                        expected: index,
                        found: index_of(&stat),
                    })
                }
                _ => {}
            }
            if node.mode() == want {
                match client.set_data(&path, &data, Some(stat.version)).await {
                    Ok(stat) => return Ok(pair(&stat)),
                    Err(zk::Error::BadVersion | zk::Error::NoNode) => continue,
                    Err(e) => return Err(self.err(op, e)),
                }
            }
            if stat.num_children != 0 {
                return Err(KvError::Backend {
                    url: self.url.clone(),
                    message: format!(
                        "cannot change the TTL of key {key:?}: keys exist under it, and ZooKeeper \
                         fixes a znode's TTL when it is created"
                    ),
                });
            }
            // Another mode: delete and create in one multi.
            let mut w = client.new_multi_writer();
            w.add_delete(&path, Some(stat.version))
                .and_then(|_| w.add_create(&path, &data, &create_options(want)))
                .map_err(|e| self.err(op, e))?;
            match w.commit().await {
                Ok(results) => {
                    let stat = match results.into_iter().nth(1) {
                        Some(MultiWriteResult::Create { stat, .. }) if !stat.is_invalid() => stat,
                        _ => match client.check_stat(&path).await {
                            Ok(Some(stat)) => stat,
                            Ok(None) => continue,
                            Err(e) => return Err(self.err("stat", e)),
                        },
                    };
                    return Ok(pair(&stat));
                }
                Err(MultiWriteError::OperationFailed {
                    source: zk::Error::BadVersion | zk::Error::NoNode | zk::Error::NotEmpty,
                    ..
                }) => continue,
                Err(e) => return Err(self.err(op, e.into())),
            }
        }
        Err(self.gave_up(key))
    }

    /// The delete behind `delete` and `atomic_delete`.
    pub(super) async fn remove(&self, key: &str, expected: Option<u64>) -> Result<()> {
        let client = self.client().await?;
        let path = self.path(key);
        let not_found = || KvError::KeyNotFound {
            key: key.to_string(),
        };
        for _ in 0..MAX_ATTEMPTS {
            let (node, stat) = match self.read_node(&client, &path).await? {
                Some((node, stat)) if node.is_key() => (node, stat),
                _ => return Err(not_found()),
            };
            if let Some(index) = expected {
                if index_of(&stat) != index {
                    return Err(KvError::KeyModified {
                        key: key.to_string(),
                        expected: index,
                        found: index_of(&stat),
                    });
                }
            }
            if stat.num_children == 0 {
                match client.delete(&path, Some(stat.version)).await {
                    Ok(()) => {
                        self.cleanup_from(&client, parent_of(&path)).await;
                        return Ok(());
                    }
                    Err(zk::Error::BadVersion | zk::Error::NotEmpty | zk::Error::NoNode) => {
                        continue
                    }
                    Err(e) => return Err(self.err("delete", e)),
                }
            }
            // Keys live under it: it stays as an implicit parent.
            match client
                .set_data(&path, &parent_data(node.mode()), Some(stat.version))
                .await
            {
                Ok(_) => return Ok(()),
                Err(zk::Error::BadVersion | zk::Error::NoNode) => continue,
                Err(e) => return Err(self.err("delete", e)),
            }
        }
        Err(self.gave_up(key))
    }

    /// Every znode strictly under `base`, parents before children.
    async fn subtree(&self, client: &Client, base: &str) -> Result<Vec<String>> {
        let mut all = Vec::new();
        let mut level = vec![base.to_string()];
        while !level.is_empty() {
            let mut next = Vec::new();
            for chunk in level.chunks(READ_BATCH) {
                let mut reader = client.new_multi_reader();
                for p in chunk {
                    reader
                        .add_get_children(p)
                        .map_err(|e| self.err("list", e))?;
                }
                let results = reader.commit().await.map_err(|e| self.err("list", e))?;
                for (p, r) in chunk.iter().zip(results) {
                    if let MultiReadResult::Children { children } = r {
                        for c in children {
                            if p == "/" && c == "zookeeper" {
                                continue;
                            }
                            next.push(join(p, &c));
                        }
                    }
                }
            }
            all.extend(next.iter().cloned());
            level = next;
        }
        Ok(all)
    }

    pub(super) async fn list(&self, dir: &str) -> Result<Vec<KvPair>> {
        let client = self.client().await?;
        self.list_with(&client, dir).await
    }

    /// Lists `dir`. ZooKeeper reads one level of the tree at a time, so a znode listed by its
    /// parent may be gone when its data is read (a delete in between, or a `multi` seen half
    /// applied): then the listing is not a state the tree had, and it is read again.
    pub(super) async fn list_with(&self, client: &Client, dir: &str) -> Result<Vec<KvPair>> {
        let mut last = Vec::new();
        for _ in 0..MAX_ATTEMPTS {
            let (list, consistent) = self.list_once(client, dir).await?;
            if consistent {
                return Ok(list);
            }
            last = list;
            tokio::task::yield_now().await;
        }
        tracing::warn!(url = %self.url, %dir, "the tree kept changing while listed");
        Ok(last)
    }

    async fn list_once(&self, client: &Client, dir: &str) -> Result<(Vec<KvPair>, bool)> {
        let base = self.dir_path(dir);
        let mut consistent = true;
        let mut out = Vec::new();
        let mut level = vec![base];
        let mut first = true;
        while !level.is_empty() {
            let mut next = Vec::new();
            for chunk in level.chunks(READ_BATCH) {
                let mut reader = client.new_multi_reader();
                for p in chunk {
                    if !first {
                        reader.add_get_data(p).map_err(|e| self.err("list", e))?;
                    }
                    reader
                        .add_get_children(p)
                        .map_err(|e| self.err("list", e))?;
                }
                let results = reader.commit().await.map_err(|e| self.err("list", e))?;
                let per = if first { 1 } else { 2 };
                let mut results = results.into_iter();
                for p in chunk {
                    let mut parts = Vec::with_capacity(per);
                    for _ in 0..per {
                        if let Some(r) = results.next() {
                            parts.push(r);
                        }
                    }
                    for r in parts {
                        match r {
                            MultiReadResult::Data { data, stat } => {
                                if let (Some(value), Some(key)) =
                                    (decode(data, &stat), self.key_of(p))
                                {
                                    out.push(KvPair {
                                        key,
                                        value,
                                        last_index: index_of(&stat),
                                    });
                                }
                            }
                            MultiReadResult::Children { children } => {
                                for c in children {
                                    if p == "/" && c == "zookeeper" {
                                        continue;
                                    }
                                    next.push(join(p, &c));
                                }
                            }
                            // Listed by its parent, gone now.
                            _ => consistent &= first,
                        }
                    }
                }
            }
            first = false;
            level = next;
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((out, consistent))
    }

    /// Reads the tree under `base` in one `multi` read of every znode in `known` (updated to
    /// the znodes found), plus more rounds while it finds znodes it did not know: the result is
    /// the first read that saw every child of what it read, which is a state the tree had.
    pub(super) async fn tree_snapshot(
        &self,
        client: &Client,
        base: &str,
        known: &mut BTreeSet<String>,
    ) -> Result<Vec<KvPair>> {
        for _ in 0..MAX_ATTEMPTS {
            known.remove(base);
            if known.len() >= SNAPSHOT_MAX {
                known.clear();
                return self
                    .list_with(client, base_dir_of(self, base).as_str())
                    .await;
            }
            let paths: Vec<&String> = known.iter().collect();
            let mut reader = client.new_multi_reader();
            for p in std::iter::once(base).chain(paths.iter().map(|p| p.as_str())) {
                reader
                    .add_get_data(p)
                    .and_then(|_| reader.add_get_children(p))
                    .map_err(|e| self.err("watch_tree", e))?;
            }
            let results = reader
                .commit()
                .await
                .map_err(|e| self.err("watch_tree", e))?;
            let mut out = Vec::new();
            let mut present = BTreeSet::new();
            let mut listed = BTreeSet::new();
            let mut results = results.into_iter();
            for p in std::iter::once(base).chain(paths.iter().map(|p| p.as_str())) {
                for _ in 0..2 {
                    match results.next() {
                        Some(MultiReadResult::Data { data, stat }) if p != base => {
                            present.insert(p.to_string());
                            if let (Some(value), Some(key)) = (decode(data, &stat), self.key_of(p))
                            {
                                out.push(KvPair {
                                    key,
                                    value,
                                    last_index: index_of(&stat),
                                });
                            }
                        }
                        Some(MultiReadResult::Children { children }) => {
                            for c in children {
                                if !(p == "/" && c == "zookeeper") {
                                    listed.insert(join(p, &c));
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            let complete = listed.is_subset(&present);
            *known = listed;
            if complete {
                out.sort_by(|a, b| a.key.cmp(&b.key));
                return Ok(out);
            }
        }
        Err(KvError::Unavailable {
            url: self.url.clone(),
            reason: format!("the tree under {base} kept changing while read"),
        })
    }

    pub(super) async fn delete_tree(&self, dir: &str) -> Result<()> {
        let client = self.client().await?;
        let base = self.dir_path(dir);
        for _ in 0..MAX_ATTEMPTS {
            let nodes = self.subtree(&client, &base).await?;
            if nodes.is_empty() {
                self.cleanup_from(&client, &base).await;
                return Ok(());
            }
            let mut conflict = false;
            // Children before parents; one multi for a tree of up to DELETE_BATCH znodes.
            let ordered: Vec<&String> = nodes.iter().rev().collect();
            for chunk in ordered.chunks(DELETE_BATCH) {
                let mut w = client.new_multi_writer();
                for p in chunk {
                    w.add_delete(p, None)
                        .map_err(|e| self.err("delete_tree", e))?;
                }
                match w.commit().await {
                    Ok(_) => {}
                    Err(MultiWriteError::OperationFailed {
                        source: zk::Error::NoNode | zk::Error::NotEmpty,
                        ..
                    }) => {
                        conflict = true;
                        break;
                    }
                    Err(e) => return Err(self.err("delete_tree", e.into())),
                }
            }
            if !conflict {
                self.cleanup_from(&client, &base).await;
                return Ok(());
            }
        }
        Err(self.gave_up(dir))
    }
}
