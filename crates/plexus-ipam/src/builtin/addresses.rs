//! Addresses: taking one (or a batch) with compare-and-swap on its own key, and giving it
//! back.

use super::*;

impl BuiltinIpam {
    pub(super) async fn do_request_address(&self, req: AddressRequest) -> Result<AddressResponse> {
        let (space, subnet) = parse_pool_id(&req.pool_id)?;
        let v6 = matches!(subnet, IpNet::V6(_));
        let is_gateway = req
            .options
            .get(OPT_REQUEST_ADDRESS_TYPE)
            .is_some_and(|t| t == REQUEST_TYPE_GATEWAY);
        let field = match (is_gateway, v6) {
            (true, _) => "gateway",
            (false, true) => "ip6",
            (false, false) => "ip",
        };
        let preferred = match req.address.as_deref().filter(|a| !a.trim().is_empty()) {
            Some(a) => Some(parse_ip(field, a)?),
            None => None,
        };
        let label = if is_gateway { "gateway" } else { "" };
        let mut reloaded = false;
        let mut pool_races = 0;
        loop {
            // Pick an address under the lock and mark it taken; write it outside the lock.
            let picked = {
                let mut st = lock(&self.state);
                match st
                    .spaces
                    .get_mut(space)
                    .and_then(|s| s.pools.get_mut(&subnet))
                {
                    None => None,
                    Some(pool) => {
                        let r = match preferred {
                            Some(ip) => pool.alloc.allocate(ip, field).map(|_| ip),
                            None => pool.alloc.allocate_next(),
                        };
                        match r {
                            Ok(ip) => {
                                pool.pending.insert(ip);
                                Some(Ok((ip, pool.index, pool.record.generation)))
                            }
                            Err(e) => Some(Err((
                                e,
                                preferred.is_some_and(|ip| pool.pending.contains(&ip)),
                            ))),
                        }
                    }
                }
            };
            let (ip, pool_index, generation) = match picked {
                None => {
                    self.load_pool(space, subnet).await?;
                    continue;
                }
                Some(Ok(v)) => v,
                Some(Err((e, pending))) => {
                    // Our view may be stale (another daemon released addresses): re-read the
                    // pool once before saying it is full or the address is taken.
                    let stale = matches!(
                        e,
                        IpamError::PoolExhausted { .. } | IpamError::AddressInUse { .. }
                    );
                    if stale && !reloaded && !pending {
                        reloaded = true;
                        self.load_pool(space, subnet).await?;
                        continue;
                    }
                    return Err(e);
                }
            };
            let pool_key = self.pool_key(space, &subnet);
            let key = self.addr_key(space, &subnet, generation, ip);
            let txn = Txn::new()
                .compare_index(pool_key.clone(), pool_index)
                .compare_absent(key.clone())
                .put(key.clone(), label.as_bytes().to_vec());
            let result = self.commit(txn).await;
            let mut st = lock(&self.state);
            let pool = st
                .spaces
                .get_mut(space)
                .and_then(|s| s.pools.get_mut(&subnet))
                .filter(|p| p.record.generation == generation);
            match result {
                Ok(_) => {
                    if let Some(pool) = pool {
                        pool.pending.remove(&ip);
                        if is_gateway {
                            pool.alloc.label(ip, "gateway");
                        }
                    }
                    let address = IpNet::new(ip, subnet.prefix_len()).map_err(|e| {
                        IpamError::InvalidCidr {
                            field: "subnet",
                            value: subnet.to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                    debug!(pool = %req.pool_id, %ip, "address allocated");
                    return Ok(AddressResponse {
                        address,
                        data: BTreeMap::new(),
                    });
                }
                Err(e) => {
                    let conflict_key = is_conflict(&e).map(str::to_string);
                    let pool_changed = conflict_key.as_deref() == Some(pool_key.as_str());
                    if let Some(pool) = pool {
                        pool.pending.remove(&ip);
                        if conflict_key.as_deref() != Some(key.as_str()) {
                            // Not taken by someone else: give the mark back.
                            let _ = pool.alloc.release(ip);
                        }
                    }
                    if pool_changed {
                        // The pool was released or re-created: forget it and re-read.
                        if let Some(sp) = st.spaces.get_mut(space) {
                            sp.pools.remove(&subnet);
                            sp.version = None;
                        }
                    }
                    drop(st);
                    match conflict_key {
                        Some(k) if k == key => {
                            // Another writer holds this address; it stays marked here.
                            if preferred.is_some() {
                                return Err(IpamError::AddressInUse {
                                    field: field.to_string(),
                                    address: ip.to_string(),
                                    subnet: subnet.to_string(),
                                    by: None,
                                });
                            }
                            continue;
                        }
                        Some(_) => {
                            pool_races += 1;
                            if pool_races >= MAX_ATTEMPTS {
                                return Err(IpamError::Contention {
                                    op: "request address",
                                    attempts: pool_races,
                                });
                            }
                            continue;
                        }
                        None => return Err(e.into()),
                    }
                }
            }
        }
    }

    /// Allocates `count` next free addresses of a pool, all or nothing, in as few store
    /// transactions as the store's limit allows ([`BATCH_ADDRESSES`] addresses each; a failure
    /// after the first transaction releases what earlier ones took).
    pub async fn request_addresses(
        &self,
        pool_id_text: &str,
        count: usize,
    ) -> Result<Vec<AddressResponse>> {
        let (space, subnet) = parse_pool_id(pool_id_text)?;
        let mut out: Vec<AddressResponse> = Vec::with_capacity(count);
        let mut reloaded = false;
        let mut races = 0;
        while out.len() < count {
            let want = (count - out.len()).min(BATCH_ADDRESSES);
            let picked = {
                let mut st = lock(&self.state);
                match st
                    .spaces
                    .get_mut(space)
                    .and_then(|s| s.pools.get_mut(&subnet))
                {
                    None => None,
                    Some(pool) => {
                        let mut ips = Vec::with_capacity(want);
                        let mut failed = None;
                        for _ in 0..want {
                            match pool.alloc.allocate_next() {
                                Ok(ip) => ips.push(ip),
                                Err(e) => {
                                    failed = Some(e);
                                    break;
                                }
                            }
                        }
                        match failed {
                            Some(e) => {
                                for ip in &ips {
                                    let _ = pool.alloc.release(*ip);
                                }
                                Some(Err(e))
                            }
                            None => {
                                pool.pending.extend(ips.iter().copied());
                                Some(Ok((ips, pool.index, pool.record.generation)))
                            }
                        }
                    }
                }
            };
            let (ips, pool_index, generation) = match picked {
                None => {
                    if let Err(e) = self.load_pool(space, subnet).await {
                        self.undo_batch(pool_id_text, &out).await;
                        return Err(e);
                    }
                    continue;
                }
                Some(Err(e)) => {
                    if !reloaded && matches!(e, IpamError::PoolExhausted { .. }) {
                        reloaded = true;
                        if self.load_pool(space, subnet).await.is_ok() {
                            continue;
                        }
                    }
                    self.undo_batch(pool_id_text, &out).await;
                    return Err(e);
                }
                Some(Ok(v)) => v,
            };
            let pool_key = self.pool_key(space, &subnet);
            let mut txn = Txn::new().compare_index(pool_key.clone(), pool_index);
            let keys: Vec<String> = ips
                .iter()
                .map(|ip| self.addr_key(space, &subnet, generation, *ip))
                .collect();
            for k in &keys {
                txn = txn.compare_absent(k.clone()).put(k.clone(), Vec::new());
            }
            let result = self.commit(txn).await;
            let conflict = match &result {
                Err(e) => is_conflict(e).map(str::to_string),
                Ok(_) => None,
            };
            {
                let mut st = lock(&self.state);
                let mut forget = false;
                if let Some(pool) = st
                    .spaces
                    .get_mut(space)
                    .and_then(|s| s.pools.get_mut(&subnet))
                    .filter(|p| p.record.generation == generation)
                {
                    for (ip, k) in ips.iter().zip(&keys) {
                        pool.pending.remove(ip);
                        if result.is_err() && conflict.as_deref() != Some(k.as_str()) {
                            let _ = pool.alloc.release(*ip);
                        }
                    }
                    forget = conflict.as_deref() == Some(pool_key.as_str());
                }
                if forget {
                    if let Some(sp) = st.spaces.get_mut(space) {
                        sp.pools.remove(&subnet);
                        sp.version = None;
                    }
                }
            }
            match result {
                Ok(_) => {
                    for ip in ips {
                        let address = IpNet::new(ip, subnet.prefix_len()).map_err(|e| {
                            IpamError::InvalidCidr {
                                field: "subnet",
                                value: subnet.to_string(),
                                reason: e.to_string(),
                            }
                        })?;
                        out.push(AddressResponse {
                            address,
                            data: BTreeMap::new(),
                        });
                    }
                }
                Err(e) if conflict.is_some() => {
                    races += 1;
                    if races >= MAX_ATTEMPTS * 16 {
                        self.undo_batch(pool_id_text, &out).await;
                        return Err(IpamError::Contention {
                            op: "request addresses",
                            attempts: races,
                        });
                    }
                    debug!(error = %e, "batch lost a race; retrying");
                }
                Err(e) => {
                    self.undo_batch(pool_id_text, &out).await;
                    return Err(e.into());
                }
            }
        }
        Ok(out)
    }

    pub(super) async fn undo_batch(&self, pool_id: &str, done: &[AddressResponse]) {
        for a in done {
            if let Err(e) = self.do_release_address(pool_id, a.address.addr()).await {
                warn!(pool_id, address = %a.address, error = %e, "could not undo a batch address");
            }
        }
    }

    /// Every write of pools and addresses goes through here: relaxed when the caller
    /// asked for it ([`IpamConfig::relaxed_writes`]).
    pub(super) async fn commit(&self, txn: Txn) -> std::result::Result<Vec<KvPair>, KvError> {
        let relaxed = lock(&self.config).relaxed_writes;
        self.store.txn(Txn { relaxed, ..txn }).await
    }

    pub(super) async fn do_release_address(&self, id: &str, ip: IpAddr) -> Result<()> {
        let (space, subnet) = parse_pool_id(id)?;
        let generation = {
            let st = lock(&self.state);
            st.spaces
                .get(space)
                .and_then(|s| s.pools.get(&subnet))
                .map(|p| p.record.generation)
        };
        let generation = match generation {
            Some(g) => g,
            None => {
                self.load_pool(space, subnet).await?;
                let st = lock(&self.state);
                st.spaces
                    .get(space)
                    .and_then(|s| s.pools.get(&subnet))
                    .map(|p| p.record.generation)
                    .ok_or_else(|| IpamError::PoolNotFound {
                        pool_id: id.to_string(),
                    })?
            }
        };
        let not_allocated = || IpamError::NotAllocated {
            what: "address",
            value: ip.to_string(),
            pool: Some(subnet.to_string()),
        };
        if !subnet.contains(&ip) {
            return Err(not_allocated());
        }
        let key = self.addr_key(space, &subnet, generation, ip);
        let forget = |this: &Self| {
            let mut st = lock(&this.state);
            if let Some(pool) = st
                .spaces
                .get_mut(space)
                .and_then(|s| s.pools.get_mut(&subnet))
            {
                if pool.record.generation == generation && !pool.pending.contains(&ip) {
                    let _ = pool.alloc.release(ip);
                }
            }
        };
        for _ in 0..MAX_ATTEMPTS {
            let Some(pair) = self.get_opt(&key).await? else {
                forget(self);
                return Err(not_allocated());
            };
            let txn = Txn::new()
                .compare_index(key.clone(), pair.last_index)
                .delete(key.clone());
            match self.commit(txn).await.map(drop) {
                Ok(()) => {
                    forget(self);
                    debug!(pool = id, %ip, "address released");
                    return Ok(());
                }
                // Changed or gone meanwhile: the next round reads it again.
                Err(e) if is_conflict(&e).is_some() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Contention {
            op: "release address",
            attempts: MAX_ATTEMPTS,
        })
    }
}
