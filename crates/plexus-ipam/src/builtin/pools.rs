//! Pools: choosing a subnet (requested or from the default pools), creating and releasing
//! it in one transaction compared against the space's version.

use super::*;

impl BuiltinIpam {
    pub(super) fn defaults_for(&self, space: &str, v6: bool) -> (Vec<DefaultPool>, Vec<IpNet>) {
        let cfg = lock(&self.config);
        let pools = if v6 {
            cfg.v6_pools.clone()
        } else if space == GLOBAL_SPACE {
            cfg.global_pools.clone()
        } else {
            cfg.local_pools.clone()
        };
        (pools, blockers(&cfg.host.routes, &cfg.host.nameservers))
    }

    pub(super) fn response(space: &str, record: &PoolRecord) -> PoolResponse {
        PoolResponse {
            pool_id: pool_id(space, &record.subnet),
            pool: record.subnet,
            gateway: record
                .gateway
                .and_then(|g| IpNet::new(g, record.subnet.prefix_len()).ok()),
            aux_addresses: record.aux.clone(),
            data: BTreeMap::new(),
        }
    }

    /// Addresses currently taken in a pool, as this allocator sees them (tests, inspect).
    pub fn allocated(&self, pool_id: &str) -> Result<Vec<IpAddr>> {
        let (space, subnet) = parse_pool_id(pool_id)?;
        let st = lock(&self.state);
        let pool = st
            .spaces
            .get(space)
            .and_then(|s| s.pools.get(&subnet))
            .ok_or_else(|| IpamError::PoolNotFound {
                pool_id: pool_id.to_string(),
            })?;
        Ok(pool.alloc.iter().collect())
    }

    /// The pools of a space with their owners, as this allocator sees them.
    pub fn pools(&self, space: &str) -> Result<Vec<(String, IpNet, String)>> {
        let space = normalize_space(space)?;
        let st = lock(&self.state);
        let mut out: Vec<_> = st
            .spaces
            .get(space)
            .map(|s| {
                s.pools
                    .values()
                    .map(|p| {
                        (
                            pool_id(space, &p.record.subnet),
                            p.record.subnet,
                            p.record.owner.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        Ok(out)
    }

    /// Builds the pool a request asks for, against the cached space; returns it with the
    /// transaction that creates it, or the existing pool for a replayed request.
    pub(super) fn plan_pool(
        &self,
        req: &PoolRequest,
        p: &ParsedPoolRequest,
        version: Option<&KvPair>,
    ) -> Result<std::result::Result<(PoolRecord, Txn), PoolResponse>> {
        let (defaults, host_blockers) = self.defaults_for(p.space, p.v6);
        let version_key = self.version_key(p.space);
        let st = lock(&self.state);
        let empty = SpaceState::default();
        let sp = st.spaces.get(p.space).unwrap_or(&empty);
        let subnet = match p.subnet {
            Some(subnet) => {
                if let Some(e) = sp.layout.overlapping(&subnet) {
                    if let Some(existing) = sp.pools.get(&e.subnet) {
                        let r = &existing.record;
                        if r.subnet == subnet
                            && r.owner == req.owner
                            && r.ip_range == p.range.map(|r| r.trunc())
                        {
                            // A replayed request of the same network: give it its pool.
                            return Ok(Err(Self::response(p.space, r)));
                        }
                    }
                    return Err(IpamError::Overlap {
                        field: "subnet",
                        subnet: subnet.to_string(),
                        existing: e.subnet.to_string(),
                        owner: e.owner.clone(),
                        space: p.space.to_string(),
                    });
                }
                subnet
            }
            None => sp
                .layout
                .find_dynamic(&defaults, p.size, p.v6, &host_blockers)
                .map_err(|ex| IpamError::DefaultPoolsExhausted {
                    family: family_name(p.v6),
                    space: p.space.to_string(),
                    pools: defaults
                        .iter()
                        .filter(|d| matches!(d.base, IpNet::V6(_)) == p.v6)
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                    in_use: ex.in_use,
                    blocked: ex.blocked,
                    example: match (p.v6, p.space) {
                        (true, _) => "base=fd42:1::/48,size=64".into(),
                        (false, GLOBAL_SPACE) => "base=100.64.0.0/10,size=24".into(),
                        (false, _) => "base=10.10.0.0/16,size=24".into(),
                    },
                })?,
        };
        let mut alloc = AddressPool::new(subnet, p.range, p.serial)?;
        let mut gateway = None;
        let mut labels: Vec<(IpAddr, String)> = Vec::new();
        match p.gateway {
            Some(Some(ip)) => {
                alloc.allocate_labelled(ip, "gateway", "gateway")?;
                gateway = Some(ip);
                labels.push((ip, "gateway".into()));
            }
            Some(None) => {
                let ip = alloc.allocate_next()?;
                alloc.label(ip, "gateway");
                gateway = Some(ip);
                labels.push((ip, "gateway".into()));
            }
            None => {}
        }
        for (name, ip) in &p.aux {
            let field = format!("aux-address {name}");
            alloc.allocate_labelled(*ip, &field, &field)?;
            labels.push((*ip, field));
        }
        let record = PoolRecord {
            subnet,
            ip_range: alloc.range(),
            owner: req.owner.clone(),
            generation: new_generation(),
            serial: p.serial,
            gateway,
            aux: p.aux.clone(),
            options: req.options.clone(),
        };
        let value = serde_json::to_vec(&record).map_err(|e| IpamError::Corrupt {
            key: self.pool_key(p.space, &subnet),
            reason: e.to_string(),
        })?;
        let next_version = version
            .and_then(|v| std::str::from_utf8(&v.value).ok()?.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let mut txn = match version {
            Some(v) => Txn::new().compare_index(version_key.clone(), v.last_index),
            None => Txn::new().compare_absent(version_key.clone()),
        };
        let pool_key = self.pool_key(p.space, &subnet);
        txn = txn
            .compare_absent(pool_key.clone())
            .put(pool_key, value)
            .put(version_key, next_version.to_string().into_bytes());
        for (ip, label) in labels {
            txn = txn.put(
                self.addr_key(p.space, &subnet, record.generation, ip),
                label.into_bytes(),
            );
        }
        Ok(Ok((record, txn)))
    }

    pub(super) async fn do_request_pool(&self, req: PoolRequest) -> Result<PoolResponse> {
        let p = parse_pool_request(&req)?;
        let _serial = self.pool_ops.lock().await;
        for attempt in 0..MAX_ATTEMPTS {
            let version = self.get_opt(&self.version_key(p.space)).await?;
            let current = version.as_ref().map(|v| v.last_index);
            let cached = lock(&self.state)
                .spaces
                .get(p.space)
                .and_then(|s| s.version);
            if cached != Some(current) {
                self.load_space(p.space, false).await?;
                continue;
            }
            let (record, txn) = match self.plan_pool(&req, &p, version.as_ref())? {
                Ok(planned) => planned,
                Err(existing) => return Ok(existing),
            };
            match self.commit(txn).await {
                Ok(pairs) => {
                    let (pool_index, version_index) = match (pairs.first(), pairs.get(1)) {
                        (Some(a), Some(b)) => (a.last_index, b.last_index),
                        _ => {
                            return Err(IpamError::Corrupt {
                                key: self.pool_key(p.space, &record.subnet),
                                reason: "the store returned no pairs for the pool's write".into(),
                            })
                        }
                    };
                    let mut state = Self::build_pool(record.clone(), pool_index, &[])?;
                    if let Some(g) = record.gateway {
                        state.alloc.mark(g);
                        state.alloc.label(g, "gateway");
                    }
                    for (name, ip) in &record.aux {
                        state.alloc.mark(*ip);
                        state.alloc.label(*ip, &format!("aux-address {name}"));
                    }
                    let mut st = lock(&self.state);
                    let sp = st.spaces.entry(p.space.to_string()).or_default();
                    sp.layout.insert(record.subnet, &record.owner);
                    sp.pools.insert(record.subnet, state);
                    if sp.version == Some(current) {
                        sp.version = Some(Some(version_index));
                    }
                    info!(space = p.space, subnet = %record.subnet, owner = %record.owner, "pool allocated");
                    return Ok(Self::response(p.space, &record));
                }
                Err(e) if is_conflict(&e).is_some() => {
                    debug!(attempt, error = %e, "pool request lost a race; retrying");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention {
            op: "request pool",
            attempts: MAX_ATTEMPTS,
        })
    }

    pub(super) async fn do_release_pool(&self, id: &str) -> Result<()> {
        let (space, subnet) = parse_pool_id(id)?;
        let pool_key = self.pool_key(space, &subnet);
        let version_key = self.version_key(space);
        let _serial = self.pool_ops.lock().await;
        for _ in 0..MAX_ATTEMPTS {
            let Some(pair) = self.get_opt(&pool_key).await? else {
                return Err(IpamError::NotAllocated {
                    what: "pool",
                    value: id.to_string(),
                    pool: None,
                });
            };
            let record = Self::decode_record(&pair)?;
            let version = self.get_opt(&version_key).await?;
            let next = version
                .as_ref()
                .and_then(|v| std::str::from_utf8(&v.value).ok()?.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            let txn = match &version {
                Some(v) => Txn::new().compare_index(version_key.clone(), v.last_index),
                None => Txn::new().compare_absent(version_key.clone()),
            }
            .compare_index(pool_key.clone(), pair.last_index)
            .delete(pool_key.clone())
            .put(version_key.clone(), next.to_string().into_bytes());
            match self.commit(txn).await {
                Ok(pairs) => {
                    {
                        let mut st = lock(&self.state);
                        if let Some(sp) = st.spaces.get_mut(space) {
                            if sp.pools.remove(&subnet).is_some() {
                                sp.layout.remove(&subnet);
                            }
                            let old = version.as_ref().map(|v| v.last_index);
                            if sp.version == Some(old) {
                                sp.version = Some(pairs.first().map(|p| p.last_index));
                            }
                        }
                    }
                    let dir = self.addr_dir(space, &subnet, record.generation);
                    if let Err(e) = self.store.delete_tree(&dir).await {
                        // The pool is gone; its addresses are collected on the next open.
                        warn!(%dir, error = %e, "could not delete a released pool's addresses");
                    }
                    info!(space, %subnet, "pool released");
                    return Ok(());
                }
                Err(e) if is_conflict(&e).is_some() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention {
            op: "release pool",
            attempts: MAX_ATTEMPTS,
        })
    }
}
