//! Reading a space's pools and taken addresses back from the store (on open, and after
//! another daemon's change), and removing what a crash left between two steps.

use super::*;

impl BuiltinIpam {
    pub(super) fn decode_record(pair: &KvPair) -> Result<PoolRecord> {
        serde_json::from_slice(&pair.value).map_err(|e| IpamError::Corrupt {
            key: pair.key.clone(),
            reason: e.to_string(),
        })
    }

    /// Builds a pool's state from its record and its address keys.
    pub(super) fn build_pool(
        record: PoolRecord,
        index: u64,
        addrs: &[KvPair],
    ) -> Result<PoolState> {
        let mut alloc = AddressPool::new(record.subnet, record.ip_range, record.serial)?;
        for pair in addrs {
            let Some(ip) = pair
                .key
                .rsplit('/')
                .next()
                .and_then(|s| s.parse::<IpAddr>().ok())
            else {
                warn!(key = %pair.key, "ignoring a malformed address key");
                continue;
            };
            alloc.mark(ip);
            let label = String::from_utf8_lossy(&pair.value);
            if !label.is_empty() {
                alloc.label(ip, &label);
            }
        }
        if record.serial {
            let hi = alloc.highest_in_range();
            alloc.set_cursor(hi);
        }
        Ok(PoolState {
            record,
            index,
            alloc,
            pending: HashSet::new(),
        })
    }

    /// Loads (or reloads) one space: its version, its pool records and, for pools not cached
    /// at the same generation, their addresses. With `gc`, also removes address keys of pools
    /// that no longer exist.
    pub(super) async fn load_space(&self, space: &'static str, gc: bool) -> Result<()> {
        let version = self.get_opt(&self.version_key(space)).await?;
        let pools_dir = format!("{}/pools", self.space_dir(space));
        let records = self.store.list(&pools_dir).await?;
        let mut loaded = Vec::new();
        for pair in &records {
            loaded.push((Self::decode_record(pair)?, pair.last_index));
        }
        // Pools whose cached generation is still current keep their state.
        let keep: HashSet<(IpNet, u64)> = {
            let st = lock(&self.state);
            st.spaces
                .get(space)
                .map(|s| {
                    s.pools
                        .values()
                        .map(|p| (p.record.subnet, p.record.generation))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut fresh = HashMap::new();
        for (record, index) in loaded {
            if keep.contains(&(record.subnet, record.generation)) {
                fresh.insert(record.subnet, (record, index, None));
                continue;
            }
            let dir = self.addr_dir(space, &record.subnet, record.generation);
            let addrs = self.store.list(&dir).await?;
            let state = Self::build_pool(record.clone(), index, &addrs)?;
            fresh.insert(record.subnet, (record, index, Some(state)));
        }
        if gc {
            let addrs_dir = format!("{}/addrs", self.space_dir(space));
            let mut orphans = HashSet::new();
            for pair in self.store.list(&addrs_dir).await? {
                let Some(rest) = pair.key.strip_prefix(&format!("{addrs_dir}/")) else {
                    continue;
                };
                let mut parts = rest.splitn(3, '/');
                let (Some(sub), Some(generation)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let live = fresh.values().any(|(r, _, _)| {
                    esc(&r.subnet) == sub && r.generation.to_string() == generation
                });
                if !live {
                    orphans.insert(format!("{addrs_dir}/{sub}/{generation}"));
                }
            }
            for dir in orphans {
                info!(%dir, "removing addresses left by a released pool");
                self.store.delete_tree(&dir).await?;
            }
        }
        let mut st = lock(&self.state);
        let sp = st.spaces.entry(space.to_string()).or_default();
        let mut old = std::mem::take(&mut sp.pools);
        sp.layout = SpaceLayout::default();
        for (subnet, (record, index, state)) in fresh {
            let state = match state {
                Some(s) => Some(s),
                None => old.remove(&subnet).map(|mut s| {
                    s.index = index;
                    s
                }),
            };
            // The layout always holds every stored pool (it guards against overlaps); the
            // address state of one that could not be kept is loaded again on use.
            sp.layout.insert(subnet, &record.owner);
            if let Some(s) = state {
                sp.pools.insert(subnet, s);
            }
        }
        sp.version = Some(version.map(|v| v.last_index));
        debug!(space, pools = sp.pools.len(), "address space loaded");
        Ok(())
    }

    /// Loads one pool into the cache; `PoolNotFound` if its record is absent.
    pub(super) async fn load_pool(&self, space: &'static str, subnet: IpNet) -> Result<()> {
        let key = self.pool_key(space, &subnet);
        let Some(pair) = self.get_opt(&key).await? else {
            let mut st = lock(&self.state);
            if let Some(sp) = st.spaces.get_mut(space) {
                if sp.pools.remove(&subnet).is_some() {
                    // Released elsewhere: the space's view is stale; re-read it before the
                    // next pool request.
                    sp.version = None;
                }
            }
            return Err(IpamError::PoolNotFound {
                pool_id: pool_id(space, &subnet),
            });
        };
        let record = Self::decode_record(&pair)?;
        let addrs = self
            .store
            .list(&self.addr_dir(space, &subnet, record.generation))
            .await?;
        let state = Self::build_pool(record.clone(), pair.last_index, &addrs)?;
        let mut st = lock(&self.state);
        let sp = st.spaces.entry(space.to_string()).or_default();
        if sp.layout.overlapping(&subnet).is_none() {
            sp.layout.insert(subnet, &record.owner);
        }
        sp.pools.insert(subnet, state);
        Ok(())
    }
}
