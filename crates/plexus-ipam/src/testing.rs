//! Scenarios that run on any store, for this crate's tests and for other backends' (etcd).
//!
//! ```no_run
//! # async fn f(store: std::sync::Arc<dyn plexus_kv::Store>) {
//! plexus_ipam::testing::race_allocations(store, 1000).await.unwrap();
//! # }
//! ```

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use plexus_kv::Store;

use crate::{AddressRequest, BuiltinIpam, Ipam, IpamConfig, PoolRequest, GLOBAL_SPACE};

/// Two allocators on one store race `total` allocations (half each, all concurrent) from one
/// global pool, then release them concurrently, then race dynamic pool requests. Checks that no
/// address or subnet is handed out twice, that the store holds exactly what was handed out,
/// and that a third allocator opened on the store sees the same state. The store should be
/// empty under `ipam/` (use a fresh store or prefix).
pub async fn race_allocations(store: Arc<dyn Store>, total: usize) -> Result<(), String> {
    race_allocations_between(store.clone(), store, total).await
}

/// Like [`race_allocations`], with each allocator on its own client of the same store (two
/// daemons, two connections): `store_a` and `store_b` must see the same keys.
pub async fn race_allocations_between(
    store: Arc<dyn Store>,
    store_b: Arc<dyn Store>,
    total: usize,
) -> Result<(), String> {
    let e = |what: &str, err: &dyn std::fmt::Display| format!("{what}: {err}");
    let a = Arc::new(
        BuiltinIpam::open(store.clone(), IpamConfig::new("host-a"))
            .await
            .map_err(|x| e("open a", &x))?,
    );
    let b = Arc::new(
        BuiltinIpam::open(store_b, IpamConfig::new("host-b"))
            .await
            .map_err(|x| e("open b", &x))?,
    );
    // A pool large enough for `total` plus the gateway.
    let host_bits = ((total + 3) as f64).log2().ceil() as u8;
    let subnet = format!("10.200.0.0/{}", 32 - host_bits.max(2));
    let pool = a
        .request_pool(PoolRequest::new(GLOBAL_SPACE, "race").subnet(&subnet))
        .await
        .map_err(|x| e("request pool", &x))?;
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let ipam = if i % 2 == 0 { a.clone() } else { b.clone() };
        let id = pool.pool_id.clone();
        tasks.push(tokio::spawn(async move {
            ipam.request_address(AddressRequest::next(&id)).await
        }));
    }
    let mut got: Vec<(usize, IpAddr)> = Vec::with_capacity(total);
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.map_err(|x| e("join", &x))?;
        got.push((i, r.map_err(|x| e("request address", &x))?.address.addr()));
    }
    let distinct: HashSet<IpAddr> = got.iter().map(|(_, ip)| *ip).collect();
    if distinct.len() != total {
        return Err(format!(
            "{} addresses handed out twice among {total}",
            total - distinct.len()
        ));
    }
    if let Some(g) = pool.gateway {
        if distinct.contains(&g.addr()) {
            return Err(format!("the gateway {} was handed out", g.addr()));
        }
    }
    let stored = store
        .list("ipam/global/addrs")
        .await
        .map_err(|x| e("list", &x))?;
    if stored.len() != total + 1 {
        return Err(format!(
            "the store holds {} address keys, expected {} (+ gateway)",
            stored.len(),
            total
        ));
    }
    let c = BuiltinIpam::open(store.clone(), IpamConfig::new("host-c"))
        .await
        .map_err(|x| e("open c", &x))?;
    let seen: HashSet<IpAddr> = c
        .allocated(&pool.pool_id)
        .map_err(|x| e("allocated", &x))?
        .into_iter()
        .collect();
    if seen.len() != total + 1 || !distinct.iter().all(|ip| seen.contains(ip)) {
        return Err(format!(
            "a reopened allocator sees {} addresses, expected {}",
            seen.len(),
            total + 1
        ));
    }
    // Release everything, concurrently, each through the allocator that did not hand it out.
    let mut tasks = Vec::with_capacity(total);
    for (i, ip) in got {
        let ipam = if i % 2 == 0 { b.clone() } else { a.clone() };
        let id = pool.pool_id.clone();
        tasks.push(tokio::spawn(
            async move { ipam.release_address(&id, ip).await },
        ));
    }
    for t in tasks {
        t.await
            .map_err(|x| e("join", &x))?
            .map_err(|x| e("release address", &x))?;
    }
    let left = store
        .list("ipam/global/addrs")
        .await
        .map_err(|x| e("list", &x))?;
    if left.len() != 1 {
        return Err(format!(
            "{} address keys left after releasing all (expected the gateway only)",
            left.len()
        ));
    }
    // Dynamic pools: both race for subnets of the global space.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let ipam = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            ipam.request_pool(PoolRequest::new(GLOBAL_SPACE, &format!("net{i}")))
                .await
        }));
    }
    let mut subnets = Vec::new();
    for t in tasks {
        let r = t.await.map_err(|x| e("join", &x))?;
        subnets.push(r.map_err(|x| e("request pool", &x))?.pool);
    }
    for (i, x) in subnets.iter().enumerate() {
        for y in &subnets[i + 1..] {
            if x.contains(y) || y.contains(x) {
                return Err(format!("pools {x} and {y} overlap"));
            }
        }
    }
    Ok(())
}

/// Allocates pools and addresses (v4 and v6, with holes), drops the allocator, opens a new one
/// on the same store, and checks it sees the same pools and addresses and hands out the holes
/// first. The store should be empty under `ipam/`.
pub async fn restart_roundtrip(store: Arc<dyn Store>) -> Result<(), String> {
    let e = |what: &str, err: &dyn std::fmt::Display| format!("{what}: {err}");
    let first = BuiltinIpam::open(store.clone(), IpamConfig::new("host-r"))
        .await
        .map_err(|x| e("open", &x))?;
    let mut pools = Vec::new();
    for req in [
        PoolRequest::new(GLOBAL_SPACE, "r1").subnet("10.210.0.0/24"),
        PoolRequest::new(GLOBAL_SPACE, "r2").v6(),
    ] {
        let p = first
            .request_pool(req)
            .await
            .map_err(|x| e("request pool", &x))?;
        let mut got = Vec::new();
        for _ in 0..20 {
            got.push(
                first
                    .request_address(AddressRequest::next(&p.pool_id))
                    .await
                    .map_err(|x| e("request address", &x))?
                    .address
                    .addr(),
            );
        }
        first
            .release_address(&p.pool_id, got[5])
            .await
            .map_err(|x| e("release", &x))?;
        pools.push((p.pool_id.clone(), got[5]));
    }
    let before: Vec<Vec<IpAddr>> = pools
        .iter()
        .map(|(id, _)| first.allocated(id).unwrap_or_default())
        .collect();
    drop(first);
    let second = BuiltinIpam::open(store, IpamConfig::new("host-r"))
        .await
        .map_err(|x| e("reopen", &x))?;
    for ((id, hole), before) in pools.iter().zip(before) {
        let after = second.allocated(id).map_err(|x| e("allocated", &x))?;
        if after != before {
            return Err(format!(
                "{id}: {before:?} before the restart, {after:?} after"
            ));
        }
        let a = second
            .request_address(AddressRequest::next(id))
            .await
            .map_err(|x| e("request address", &x))?;
        if a.address.addr() != *hole {
            return Err(format!(
                "{id}: handed out {} after the restart, expected the hole {hole}",
                a.address.addr()
            ));
        }
    }
    Ok(())
}
