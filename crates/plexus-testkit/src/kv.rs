//! The plexus-kv conformance suite: one set of checks, run against every backend.
//!
//! A backend implements [`KvBackend`] and instantiates the suite with [`kv_conformance!`],
//! which makes one `#[tokio::test]` per check inside a module named after the backend, so that
//! test names carry it (`redb::cas_contention`, `etcd::watch_sees_every_update`, ...).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use plexus_kv::{KvError, KvPair, LockOptions, PutOptions, Store, Txn};
use tokio::time::timeout;

/// A backend under test.
#[async_trait]
pub trait KvBackend: Send + Sync {
    /// A client of the store under test. Successive calls give independent clients (their own
    /// connection and session where the backend has them) that see the same keys; all of them
    /// share a key prefix of their own so that tests never see each other's keys.
    async fn client(&self) -> Arc<dyn Store>;

    /// Whether watch may coalesce consecutive updates of a key (see the plexus-kv docs).
    fn watch_coalesces(&self) -> bool {
        false
    }

    /// How late after its TTL a key may still be seen (the backend's expiry granularity).
    fn ttl_slack(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// The shortest TTL the backend honours.
    fn min_ttl(&self) -> Duration {
        Duration::from_secs(1)
    }

    /// How many increments each of the 16 contending tasks of `cas_contention` makes. The
    /// check is the same at any count (no update lost, none applied twice); a backend whose
    /// every retry is a consensus round in a debug build asks for fewer, to keep the suite's
    /// time.
    fn contention_increments(&self) -> usize {
        200
    }
}

/// Generates the suite for one backend: `kv_conformance!(redb, make_backend())` where
/// `make_backend()` is an async expression giving a [`KvBackend`].
#[macro_export]
macro_rules! kv_conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::kv_conformance!(@tests $make;
                crud, list_and_delete_tree_prefixes, large_values_and_limits, unicode_keys,
                invalid_keys_write_nothing, atomic_put_and_delete, cas_contention,
                transactions_all_or_nothing, watch_sees_every_update, watch_sees_deletes,
                watch_tree_snapshots_are_consistent, ttl_expiry, locks_are_exclusive,
                dropped_lock_passes_on, relaxed_writes_and_sync, closed_store_refuses);
        }
    };
    (@tests $make:expr; $($test:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                let backend = $make.await;
                $crate::kv::$test(&backend).await;
            }
        )*
    };
}

async fn must<T>(what: &str, r: plexus_kv::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Put, get, exists, delete; missing keys give `KeyNotFound`; indexes grow.
pub async fn crud(b: &impl KvBackend) {
    let s = b.client().await;
    let p1 = must("put", s.put("c/k", b"v1", PutOptions::default()).await).await;
    assert_eq!(p1.key, "c/k");
    let got = must("get", s.get("c/k").await).await;
    assert_eq!(got.value, b"v1");
    assert_eq!(got.last_index, p1.last_index);
    assert!(must("exists", s.exists("c/k").await).await);
    let p2 = must("put", s.put("/c/k", b"v2", PutOptions::default()).await).await;
    assert!(
        p2.last_index > p1.last_index,
        "index did not grow: {p1:?} {p2:?}"
    );
    assert_eq!(s.get("c/k").await.map(|p| p.value), Ok(b"v2".to_vec()));
    must("delete", s.delete("c/k").await).await;
    assert!(!must("exists", s.exists("c/k").await).await);
    assert!(matches!(s.get("c/k").await, Err(KvError::KeyNotFound { key }) if key == "c/k"));
    assert!(matches!(
        s.delete("c/k").await,
        Err(KvError::KeyNotFound { .. })
    ));
    // A value may be empty.
    must(
        "put empty",
        s.put("c/empty", b"", PutOptions::default()).await,
    )
    .await;
    assert_eq!(s.get("c/empty").await.map(|p| p.value), Ok(vec![]));
}

/// `list(a)` lists everything under `a/` and nothing else; `delete_tree` likewise.
pub async fn list_and_delete_tree_prefixes(b: &impl KvBackend) {
    let s = b.client().await;
    for k in ["d/a", "d/a/x", "d/a/y/z", "d/ab/x", "d/abc", "d/b/x"] {
        must("put", s.put(k, k.as_bytes(), PutOptions::default()).await).await;
    }
    let keys = |l: Vec<KvPair>| l.into_iter().map(|p| p.key).collect::<Vec<_>>();
    assert_eq!(
        keys(must("list", s.list("d/a").await).await),
        ["d/a/x", "d/a/y/z"]
    );
    assert_eq!(
        keys(must("list", s.list("d/a/").await).await),
        ["d/a/x", "d/a/y/z"]
    );
    assert_eq!(keys(must("list", s.list("d/a/y").await).await), ["d/a/y/z"]);
    assert!(must("list", s.list("d/none").await).await.is_empty());
    let all = must("list", s.list("d").await).await;
    assert_eq!(all.len(), 6);
    assert_eq!(all[0].value, b"d/a");
    must("delete_tree", s.delete_tree("d/a").await).await;
    assert_eq!(
        keys(must("list", s.list("d").await).await),
        ["d/a", "d/ab/x", "d/abc", "d/b/x"]
    );
    // Deleting an empty tree is fine; deleting the root is refused.
    must("delete_tree", s.delete_tree("d/none").await).await;
    assert!(matches!(
        s.delete_tree("/").await,
        Err(KvError::InvalidKey { .. })
    ));
}

/// 1 MiB values round-trip; values over the limit are refused with the key and limit named.
pub async fn large_values_and_limits(b: &impl KvBackend) {
    let s = b.client().await;
    let mib: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    must(
        "put 1 MiB",
        s.put("big/one", &mib, PutOptions::default()).await,
    )
    .await;
    assert!(must("get", s.get("big/one").await).await.value == mib);
    let limit = s.max_value_bytes();
    let over = vec![7u8; limit + 1];
    match s.put("big/over", &over, PutOptions::default()).await {
        Err(KvError::ValueTooLarge {
            key,
            size,
            limit: l,
            ..
        }) => {
            assert_eq!((key.as_str(), size, l), ("big/over", limit + 1, limit));
            let msg = KvError::ValueTooLarge {
                key,
                size,
                limit: l,
                backend: "x",
            }
            .to_string();
            assert!(
                msg.contains("big/over") && msg.contains(&limit.to_string()),
                "{msg}"
            );
        }
        other => panic!("oversized put gave {other:?}"),
    }
    assert!(!must("exists", s.exists("big/over").await).await);
}

/// Keys in any script work and list in byte order.
pub async fn unicode_keys(b: &impl KvBackend) {
    let s = b.client().await;
    let keys = ["u/réseau", "u/网络/端点", "u/сеть", "u/🐳"];
    for k in keys {
        must("put", s.put(k, k.as_bytes(), PutOptions::default()).await).await;
    }
    for k in keys {
        assert_eq!(must("get", s.get(k).await).await.value, k.as_bytes());
    }
    let listed: Vec<String> = must("list", s.list("u").await)
        .await
        .into_iter()
        .map(|p| p.key)
        .collect();
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected);
}

/// Malformed keys are refused, naming the key, and nothing is written.
pub async fn invalid_keys_write_nothing(b: &impl KvBackend) {
    let s = b.client().await;
    for bad in ["", "/", "i//x", "i/x/", "i/./x"] {
        match s.put(bad, b"v", PutOptions::default()).await {
            Err(KvError::InvalidKey { key, .. }) => assert_eq!(key, bad),
            other => panic!("put {bad:?} gave {other:?}"),
        }
        assert!(matches!(s.get(bad).await, Err(KvError::InvalidKey { .. })));
    }
    assert!(must("list", s.list("i").await).await.is_empty());
}

/// Compare-and-swap: create-only, modified, gone.
pub async fn atomic_put_and_delete(b: &impl KvBackend) {
    let s = b.client().await;
    let p1 = must(
        "create",
        s.atomic_put("a/k", b"1", None, PutOptions::default()).await,
    )
    .await;
    assert!(matches!(
        s.atomic_put("a/k", b"x", None, PutOptions::default()).await,
        Err(KvError::KeyExists { key }) if key == "a/k"
    ));
    let p2 = must(
        "cas",
        s.atomic_put("a/k", b"2", Some(&p1), PutOptions::default())
            .await,
    )
    .await;
    assert_eq!(p2.value, b"2");
    assert!(matches!(
        s.atomic_put("a/k", b"3", Some(&p1), PutOptions::default())
            .await,
        Err(KvError::KeyModified { .. })
    ));
    assert!(matches!(
        s.atomic_delete("a/k", &p1).await,
        Err(KvError::KeyModified { .. })
    ));
    assert_eq!(must("get", s.get("a/k").await).await.value, b"2");
    must("cas delete", s.atomic_delete("a/k", &p2).await).await;
    assert!(matches!(
        s.atomic_delete("a/k", &p2).await,
        Err(KvError::KeyNotFound { .. })
    ));
    assert!(matches!(
        s.atomic_put("a/k", b"4", Some(&p2), PutOptions::default())
            .await,
        Err(KvError::KeyNotFound { .. })
    ));
}

/// 16 tasks × 200 compare-and-swap increments of one counter end at exactly 3,200.
pub async fn cas_contention(b: &impl KvBackend) {
    let clients: Vec<Arc<dyn Store>> = futures::future::join_all((0..4).map(|_| b.client())).await;
    must(
        "init",
        clients[0]
            .put("cas/counter", b"0", PutOptions::default())
            .await,
    )
    .await;
    let conflicts = Arc::new(AtomicUsize::new(0));
    let rounds = b.contention_increments();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let s = clients[t % clients.len()].clone();
        let conflicts = conflicts.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                loop {
                    let cur = s.get("cas/counter").await?;
                    let n: u64 = String::from_utf8_lossy(&cur.value)
                        .parse()
                        .unwrap_or(u64::MAX);
                    let next = (n + 1).to_string();
                    match s
                        .atomic_put(
                            "cas/counter",
                            next.as_bytes(),
                            Some(&cur),
                            PutOptions::default(),
                        )
                        .await
                    {
                        Ok(_) => break,
                        Err(KvError::KeyModified { .. }) => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok::<_, KvError>(())
        }));
    }
    for t in tasks {
        must(
            "task",
            t.await.unwrap_or_else(|e| panic!("task panicked: {e}")),
        )
        .await;
    }
    let end = must("get", clients[0].get("cas/counter").await).await;
    assert_eq!(
        String::from_utf8_lossy(&end.value),
        (16 * rounds).to_string()
    );
}

/// A transaction applies whole or not at all, and names the key whose comparison failed.
pub async fn transactions_all_or_nothing(b: &impl KvBackend) {
    let s = b.client().await;
    let a = must("put", s.put("t/a", b"a1", PutOptions::default()).await).await;
    must("put", s.put("t/gone", b"x", PutOptions::default()).await).await;
    let written = must(
        "txn",
        s.txn(
            Txn::new()
                .compare_index("t/a", a.last_index)
                .compare_absent("t/b")
                .put("t/a", b"a2".to_vec())
                .put("t/b", b"b1".to_vec())
                .delete("t/gone")
                .delete("t/never"),
        )
        .await,
    )
    .await;
    assert_eq!(
        written.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(),
        ["t/a", "t/b"]
    );
    assert_eq!(must("get", s.get("t/a").await).await.value, b"a2");
    assert_eq!(must("get", s.get("t/b").await).await.value, b"b1");
    assert!(!must("exists", s.exists("t/gone").await).await);
    // A stale comparison: nothing applied, the key named.
    let stale = s
        .txn(
            Txn::new()
                .compare_absent("t/c")
                .compare_index("t/a", a.last_index)
                .put("t/c", b"c".to_vec())
                .delete("t/b"),
        )
        .await;
    assert!(
        matches!(&stale, Err(KvError::TxnConflict { key, .. }) if key == "t/a"),
        "{stale:?}"
    );
    assert!(!must("exists", s.exists("t/c").await).await);
    assert!(must("exists", s.exists("t/b").await).await);
    // Malformed transactions are refused up front.
    assert!(matches!(
        s.txn(Txn::new().put("t/x", vec![]).delete("t/x")).await,
        Err(KvError::InvalidTxn(_))
    ));
    assert!(matches!(
        s.txn(Txn::new().put("t//x", vec![])).await,
        Err(KvError::InvalidKey { .. })
    ));
    assert!(!must("exists", s.exists("t/x").await).await);
}

/// 1,000 rapid updates are seen in order, none missed (or, where the backend coalesces, in
/// order with the last one delivered).
pub async fn watch_sees_every_update(b: &impl KvBackend) {
    let s = b.client().await;
    let writer = b.client().await;
    let mut w = must("watch", s.watch("w/k").await).await;
    let first = timeout(Duration::from_secs(10), w.next()).await;
    assert!(
        matches!(first, Ok(Some(Ok(None)))),
        "first item should be 'absent': {first:?}"
    );
    let n = 1000u32;
    let write = tokio::spawn(async move {
        for i in 1..=n {
            writer
                .put("w/k", i.to_string().as_bytes(), PutOptions::default())
                .await?;
        }
        Ok::<_, KvError>(())
    });
    let mut seen = Vec::new();
    let mut last_index = 0;
    while seen.last() != Some(&n) {
        let item = timeout(Duration::from_secs(20), w.next()).await;
        let pair = match item {
            Ok(Some(Ok(Some(pair)))) => pair,
            Ok(Some(Err(e))) => panic!("watch error: {e}"),
            other => panic!("watch stalled after {:?}: {other:?}", seen.last()),
        };
        assert!(pair.last_index > last_index, "index went back");
        last_index = pair.last_index;
        seen.push(
            String::from_utf8_lossy(&pair.value)
                .parse::<u32>()
                .unwrap_or(0),
        );
    }
    must("writer", write.await.unwrap_or_else(|e| panic!("{e}"))).await;
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "out of order");
    if !b.watch_coalesces() {
        assert_eq!(seen, (1..=n).collect::<Vec<_>>(), "updates missed");
    }
}

/// Deletes reach watchers, and a key created again after a delete is seen again.
pub async fn watch_sees_deletes(b: &impl KvBackend) {
    let s = b.client().await;
    must("put", s.put("wd/k", b"1", PutOptions::default()).await).await;
    let mut w = must("watch", s.watch("wd/k").await).await;
    assert_eq!(next_value(&mut w).await, Some(b"1".to_vec()));
    must("delete", s.delete("wd/k").await).await;
    assert_eq!(next_value(&mut w).await, None);
    must("put", s.put("wd/k", b"2", PutOptions::default()).await).await;
    assert_eq!(next_value(&mut w).await, Some(b"2".to_vec()));
    must("delete_tree", s.delete_tree("wd").await).await;
    assert_eq!(next_value(&mut w).await, None);
}

/// The next value a watch yields (`None` for absent); panics on error or after 10 s.
pub async fn next_value(w: &mut plexus_kv::WatchStream) -> Option<Vec<u8>> {
    match timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(v))) => v.map(|p| p.value),
        other => panic!("watch gave {other:?}"),
    }
}

/// Each watch_tree list is a state the directory really had: with keys added one at a time,
/// every list is `k00..kNN` for a growing N, and the last list has them all (where the backend
/// coalesces, the last lists may be skipped).
pub async fn watch_tree_snapshots_are_consistent(b: &impl KvBackend) {
    let s = b.client().await;
    let writer = b.client().await;
    must(
        "outside",
        s.put("wt-outside", b"x", PutOptions::default()).await,
    )
    .await;
    let mut w = must("watch_tree", s.watch_tree("wt").await).await;
    let first = timeout(Duration::from_secs(10), w.next()).await;
    assert!(
        matches!(&first, Ok(Some(Ok(l))) if l.is_empty()),
        "{first:?}"
    );
    let n = 50;
    let write = tokio::spawn(async move {
        for i in 0..n {
            writer
                .put(&format!("wt/k{i:02}"), b"v", PutOptions::default())
                .await?;
        }
        writer.delete_tree("wt").await
    });
    let mut last_len = 0;
    let mut saw_full = false;
    loop {
        let list = match timeout(Duration::from_secs(20), w.next()).await {
            Ok(Some(Ok(list))) => list,
            other => panic!("watch_tree gave {other:?}"),
        };
        let keys: Vec<String> = list.iter().map(|p| p.key.clone()).collect();
        let expected: Vec<String> = (0..keys.len()).map(|i| format!("wt/k{i:02}")).collect();
        // A backend that coalesces may go from a partial list straight to the empty one when
        // the delete follows the last put before its read.
        if keys.is_empty() && (saw_full || (b.watch_coalesces() && last_len > 0)) {
            break;
        }
        assert_eq!(keys, expected, "inconsistent snapshot");
        assert!(keys.len() >= last_len, "snapshot went back");
        last_len = keys.len();
        saw_full |= keys.len() == n;
    }
    must("writer", write.await.unwrap_or_else(|e| panic!("{e}"))).await;
}

/// A key written with a TTL disappears after it, and watchers see it go.
pub async fn ttl_expiry(b: &impl KvBackend) {
    let s = b.client().await;
    let ttl = b.min_ttl().max(Duration::from_secs(1));
    let start = tokio::time::Instant::now();
    must(
        "put ttl",
        s.put("ttl/k", b"v", PutOptions::with_ttl(ttl)).await,
    )
    .await;
    must(
        "put plain",
        s.put("ttl/keep", b"v", PutOptions::default()).await,
    )
    .await;
    let mut w = must("watch", s.watch("ttl/k").await).await;
    assert!(matches!(
        timeout(Duration::from_secs(10), w.next()).await,
        Ok(Some(Ok(Some(_))))
    ));
    assert!(
        must("exists", s.exists("ttl/k").await).await,
        "gone before its TTL"
    );
    let gone = timeout(ttl + b.ttl_slack() + Duration::from_secs(5), async {
        loop {
            match w.next().await {
                Some(Ok(None)) => return,
                Some(Ok(Some(_))) => {}
                other => panic!("watch gave {other:?}"),
            }
        }
    })
    .await;
    assert!(gone.is_ok(), "watch never saw the expiry");
    let waited = start.elapsed();
    assert!(
        waited + Duration::from_millis(50) >= ttl,
        "expired early: {waited:?}"
    );
    assert!(waited <= ttl + b.ttl_slack(), "expired late: {waited:?}");
    assert!(!must("exists", s.exists("ttl/k").await).await);
    assert!(must("exists", s.exists("ttl/keep").await).await);
}

/// Two contenders (each with its own client) never hold a lock at once.
pub async fn locks_are_exclusive(b: &impl KvBackend) {
    let held = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for who in 0..2 {
        let s = b.client().await;
        let held = held.clone();
        let rounds = rounds.clone();
        tasks.push(tokio::spawn(async move {
            let opts = LockOptions {
                value: format!("holder-{who}").into_bytes(),
                ttl: Duration::from_secs(10),
            };
            let locker = s.new_lock("locks/x", opts)?;
            for _ in 0..10 {
                let handle = timeout(Duration::from_secs(30), locker.lock())
                    .await
                    .unwrap_or_else(|_| panic!("lock never acquired"))?;
                assert!(!held.swap(true, Ordering::SeqCst), "two holders at once");
                tokio::time::sleep(Duration::from_millis(5)).await;
                held.store(false, Ordering::SeqCst);
                assert!(!handle.is_lost());
                handle.unlock().await?;
                rounds.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, KvError>(())
        }));
    }
    for t in tasks {
        must("contender", t.await.unwrap_or_else(|e| panic!("{e}"))).await;
    }
    assert_eq!(rounds.load(Ordering::SeqCst), 20);
}

/// A holder that drops its handle without unlocking gives the lock up.
pub async fn dropped_lock_passes_on(b: &impl KvBackend) {
    let a = b.client().await;
    let c = b.client().await;
    let opts = LockOptions {
        value: b"a".to_vec(),
        ttl: Duration::from_secs(5),
    };
    let la = must("new_lock", a.new_lock("locks/drop", opts.clone())).await;
    let lc = must("new_lock", c.new_lock("locks/drop", opts)).await;
    let ha = must("lock a", la.lock().await).await;
    // While held, the other contender waits.
    assert!(
        timeout(Duration::from_millis(300), lc.lock())
            .await
            .is_err(),
        "lock not exclusive"
    );
    drop(ha);
    let hc = timeout(Duration::from_secs(10), lc.lock()).await;
    assert!(matches!(hc, Ok(Ok(_))), "lock did not pass on: {hc:?}");
}

/// A relaxed transaction is atomic and seen at once, by this client and another; `sync`
/// then answers (durability across a crash is the redb crash tests' business).
pub async fn relaxed_writes_and_sync(b: &impl KvBackend) {
    let (s, other) = (b.client().await, b.client().await);
    let txn = Txn::new()
        .relaxed()
        .put("rx/a", b"1".to_vec())
        .put("rx/b", b"2".to_vec());
    must("relaxed txn", s.txn(txn).await).await;
    must("sync", s.sync().await).await;
    for (key, value) in [("rx/a", b"1"), ("rx/b", b"2")] {
        assert_eq!(
            must("get", other.get(key).await).await.value,
            value.to_vec()
        );
    }
    // Nothing pending: a sync still answers.
    must("sync again", s.sync().await).await;
}

/// After close, operations fail with `Closed` and watches end.
pub async fn closed_store_refuses(b: &impl KvBackend) {
    let s = b.client().await;
    must("put", s.put("cl/k", b"v", PutOptions::default()).await).await;
    let mut w = must("watch", s.watch("cl/k").await).await;
    assert!(matches!(
        timeout(Duration::from_secs(10), w.next()).await,
        Ok(Some(Ok(Some(_))))
    ));
    must("close", s.close().await).await;
    assert!(matches!(s.get("cl/k").await, Err(KvError::Closed { .. })));
    assert!(matches!(s.sync().await, Err(KvError::Closed { .. })));
    assert!(matches!(
        s.put("cl/k", b"v", PutOptions::default()).await,
        Err(KvError::Closed { .. })
    ));
    let end = timeout(Duration::from_secs(10), async {
        loop {
            match w.next().await {
                None => return,
                Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "watch outlived the store");
}

/// Keys seen in a list, as a set (a helper for backend-specific tests).
pub fn key_set(list: &[KvPair]) -> BTreeSet<String> {
    list.iter().map(|p| p.key.clone()).collect()
}
