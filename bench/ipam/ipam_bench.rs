//! plexus-ipam benchmark: `cargo run --release -p plexus-ipam --example ipam-bench`
//! (or `bench/ipam/run.sh`). Prints each figure, then one `key=value` line of headline figures.
//!
//! Memory is measured exactly with a counting global allocator: live heap bytes after building
//! a structure minus before, and the peak while building it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use plexus_ipam::pool::AddressPool;
use plexus_ipam::{AddressRequest, BuiltinIpam, Ipam, IpamConfig, PoolRequest};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now =
                    LIVE.fetch_add(new_size - layout.size(), Relaxed) + new_size - layout.size();
                PEAK.fetch_max(now, Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static A: Counting = Counting;

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Runs `f`, returning its value, live bytes it left, and the peak above the start.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let v = f();
    let after = LIVE.load(Relaxed);
    (v, after.saturating_sub(before), PEAK.load(Relaxed) - before)
}

fn alloc_release_ops(serial: bool) -> anyhow::Result<f64> {
    let mut pool = AddressPool::new("10.0.0.0/16".parse()?, None, serial)?;
    for _ in 0..1000 {
        pool.allocate_next()?;
    }
    let n = 20_000_000u64;
    let t = Instant::now();
    for _ in 0..n {
        let ip = pool.allocate_next()?;
        pool.release(std::hint::black_box(ip))?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    // 1. allocate-next + release, IPv4, in memory.
    let ops = alloc_release_ops(false)?;
    println!("ipv4 allocate-next+release (lowest-free, /16 with 1000 taken): {ops:.0} ops/s (target >= 5,000,000)");
    let ops_serial = alloc_release_ops(true)?;
    println!("ipv4 allocate-next+release (serial): {ops_serial:.0} ops/s");

    // 2. Fill a /8.
    let t = Instant::now();
    let (pool, live8, peak8) = measure(|| -> anyhow::Result<AddressPool> {
        let mut pool = AddressPool::new("10.0.0.0/8".parse()?, None, false)?;
        while pool.allocate_next().is_ok() {}
        Ok(pool)
    });
    let fill8 = t.elapsed().as_secs_f64();
    let pool = pool?;
    println!(
        "fill a /8: {} addresses in {fill8:.3} s, {:.3} MiB live, {:.3} MiB peak (targets <= 2 s, <= 8 MiB)",
        pool.allocated(),
        mib(live8),
        mib(peak8)
    );
    drop(pool);
    // Worst case for the chunked bitmap: every other address of a /8 taken.
    let mut pool = AddressPool::new("10.0.0.0/8".parse()?, None, false)?;
    while pool.allocate_next().is_ok() {}
    let base = u32::from(std::net::Ipv4Addr::new(10, 0, 0, 0));
    for i in (2..(1u32 << 24) - 1).step_by(2) {
        pool.release(IpAddr::V4((base + i).into()))?;
    }
    let held = LIVE.load(Relaxed);
    drop(pool);
    let half8 = held.saturating_sub(LIVE.load(Relaxed));
    println!(
        "a /8 with every other address taken (worst case): {:.3} MiB",
        mib(half8)
    );

    // 3. IPv6: one million addresses in a /64, handed out in order and scattered.
    let (pool6, live6, peak6) = measure(|| -> anyhow::Result<AddressPool> {
        let mut pool = AddressPool::new("fd00:1:2:3::/64".parse()?, None, false)?;
        for _ in 0..1_000_000 {
            pool.allocate_next()?;
        }
        Ok(pool)
    });
    drop(pool6?);
    println!(
        "ipv6 /64 with 1,000,000 addresses (allocate-next): {:.3} MiB live, {:.3} MiB peak",
        mib(live6),
        mib(peak6)
    );
    let t = Instant::now();
    let (pool6r, live6r, peak6r) = measure(|| -> anyhow::Result<AddressPool> {
        let mut pool = AddressPool::new("fd00:1:2:3::/64".parse()?, None, false)?;
        let base = u128::from("fd00:1:2:3::".parse::<Ipv6Addr>()?);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut n = 0;
        while n < 1_000_000 {
            // xorshift64*: scattered, non-adjacent addresses (the worst case for runs).
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let off = x.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
            let ip = IpAddr::V6(Ipv6Addr::from(base + u128::from(off)));
            if pool.allocate(ip, "ip6").is_ok() {
                n += 1;
            }
        }
        Ok(pool)
    });
    let t6r = t.elapsed().as_secs_f64();
    drop(pool6r?);
    println!(
        "ipv6 /64 with 1,000,000 scattered preferred addresses: {:.3} MiB live, {:.3} MiB peak, {t6r:.2} s (target <= 64 MiB)",
        mib(live6r),
        mib(peak6r)
    );

    // 4. Persisted allocations through the embedded redb store.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (seq, conc, batched, mem_ops) = rt.block_on(async {
        let dir = tempfile::Builder::new().prefix("ipam-bench").tempdir_in("/tmp")?;
        let url = format!("redb://{}/x.db", dir.path().display());
        let store = plexus_kv::open(&url, Default::default()).await?;
        let ipam = Arc::new(BuiltinIpam::open(store, IpamConfig::new("bench")).await?);
        let pool = ipam
            .request_pool(PoolRequest::new("local", "bench").subnet("10.0.0.0/16"))
            .await?;
        let n = 2_000;
        let t = Instant::now();
        for _ in 0..n {
            ipam.request_address(AddressRequest::next(&pool.pool_id)).await?;
        }
        let seq = n as f64 / t.elapsed().as_secs_f64();
        println!("persisted allocations, redb ({url}), one durable commit each (sequential): {seq:.0} allocations/s");
        let n = 20_000;
        let t = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let ipam = ipam.clone();
            let id = pool.pool_id.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..n / 64 {
                    ipam.request_address(AddressRequest::next(&id)).await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let conc = (n / 64 * 64) as f64 / t.elapsed().as_secs_f64();
        println!("persisted allocations, redb, 64 concurrent allocators (group commit batches): {conc:.0} allocations/s");

        let n = 30_000;
        let t = Instant::now();
        let mut done = 0;
        while done < n {
            done += ipam.request_addresses(&pool.pool_id, 60).await?.len();
        }
        let batched = done as f64 / t.elapsed().as_secs_f64();
        println!("persisted allocations, redb, batched 60 per durable commit (request_addresses): {batched:.0} allocations/s");

        let store = plexus_kv::open("memory://", Default::default()).await?;
        let ipam = BuiltinIpam::open(store, IpamConfig::new("bench")).await?;
        let pool = ipam
            .request_pool(PoolRequest::new("local", "bench").subnet("10.0.0.0/16"))
            .await?;
        let n = 50_000;
        let t = Instant::now();
        for _ in 0..n {
            let a = ipam.request_address(AddressRequest::next(&pool.pool_id)).await?;
            ipam.release_address(&pool.pool_id, a.address.addr()).await?;
        }
        let mem_ops = n as f64 / t.elapsed().as_secs_f64();
        println!("request+release through the memory store (CAS transactions): {mem_ops:.0} pairs/s");
        anyhow::Ok((seq, conc, batched, mem_ops))
    })?;

    println!(
        "ipv4_alloc_release_ops_per_s={ops:.0} ipv4_serial_ops_per_s={ops_serial:.0} fill_slash8_s={fill8:.3} fill_slash8_mib={:.3} fill_slash8_peak_mib={:.3} ipv6_1m_seq_mib={:.3} ipv6_1m_scattered_mib={:.3} redb_durable_allocs_per_s={seq:.0} redb_concurrent_allocs_per_s={conc:.0} redb_batched_allocs_per_s={batched:.0} memory_store_pairs_per_s={mem_ops:.0}",
        mib(live8),
        mib(peak8),
        mib(live6),
        mib(live6r)
    );
    Ok(())
}
