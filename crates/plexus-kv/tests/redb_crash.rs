//! The embedded store across process crashes: a transaction cut by `kill -9` happened whole
//! or not at all, and a lock whose holder died passes on within its TTL.
//!
//! The crashing process is this test binary itself, re-run on an `#[ignore]`d child test.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plexus_kv::{LockOptions, Store, Txn};
use plexus_testkit::process::ChildGuard;

const DB_ENV: &str = "PLEXUS_KV_CRASH_DB";
const KEYS: usize = 32;

fn spawn_child(test: &str, db: &Path) -> (ChildGuard, impl Iterator<Item = String>) {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut cmd = Command::new(exe);
    cmd.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(DB_ENV, db)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = ChildGuard::spawn(cmd).unwrap_or_else(|e| panic!("spawn child: {e}"));
    let stdout = child.take_stdout().unwrap_or_else(|| panic!("no stdout"));
    let lines = BufReader::new(stdout).lines().map_while(Result::ok);
    (child, lines)
}

async fn open(db: &Path) -> std::sync::Arc<dyn Store> {
    let url = format!("redb://{}", db.display());
    plexus_kv::open(&url, Default::default())
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// Child: rewrites all KEYS keys to the same generation in one transaction, forever.
#[tokio::test]
#[ignore = "run by redb_kill_9_mid_transaction_leaves_store_consistent"]
async fn child_transaction_loop() {
    let Some(db) = std::env::var_os(DB_ENV) else {
        return;
    };
    let store = open(Path::new(&db)).await;
    let start = match store.get("gen").await {
        Ok(p) => String::from_utf8_lossy(&p.value)
            .parse::<u64>()
            .unwrap_or(0),
        Err(_) => 0,
    };
    for generation in start + 1.. {
        let mut txn = Txn::new().put("gen", generation.to_string().into_bytes());
        for k in 0..KEYS {
            // Values of varying size so pages split and merge under the kill.
            let value = format!(
                "{generation}:{}",
                "x".repeat((generation as usize * 37 + k) % 3000)
            );
            txn = txn.put(format!("data/{k:02}"), value.into_bytes());
        }
        if let Err(e) = store.txn(txn).await {
            panic!("txn: {e}");
        }
        if generation == start + 5 {
            println!("READY");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_kill_9_mid_transaction_leaves_store_consistent() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let db = dir.path().join("state.db");
    let mut last_gen = 0;
    for round in 0..8u64 {
        let (mut child, mut lines) = spawn_child("child_transaction_loop", &db);
        assert!(lines.any(|l| l.ends_with("READY")), "child did not start");
        // Kill at a different point of the commit cycle each round.
        std::thread::sleep(Duration::from_millis(20 + round * 37 % 150));
        child.kill();

        let store = open(&db).await;
        let generation: u64 = String::from_utf8_lossy(
            &store
                .get("gen")
                .await
                .unwrap_or_else(|e| panic!("gen: {e}"))
                .value,
        )
        .parse()
        .unwrap_or_else(|e| panic!("gen: {e}"));
        assert!(
            generation > last_gen,
            "no progress or went back: {generation} after {last_gen}"
        );
        last_gen = generation;
        let data = store
            .list("data")
            .await
            .unwrap_or_else(|e| panic!("list: {e}"));
        assert_eq!(data.len(), KEYS);
        for pair in data {
            let value = String::from_utf8_lossy(&pair.value);
            let g = value.split(':').next().unwrap_or("");
            assert_eq!(
                g,
                generation.to_string(),
                "{} is from another transaction",
                pair.key
            );
        }
        store.close().await.unwrap_or_else(|e| panic!("close: {e}"));
        drop(store);
    }
}

/// Child: takes the lock, says so, and holds it until killed.
#[tokio::test]
#[ignore = "run by redb_lock_of_killed_holder_passes_within_ttl"]
async fn child_lock_holder() {
    let Some(db) = std::env::var_os(DB_ENV) else {
        return;
    };
    let store = open(Path::new(&db)).await;
    let locker = store
        .new_lock(
            "locks/leader",
            LockOptions {
                value: b"child".to_vec(),
                ttl: Duration::from_secs(2),
            },
        )
        .unwrap_or_else(|e| panic!("new_lock: {e}"));
    let _held = locker.lock().await.unwrap_or_else(|e| panic!("lock: {e}"));
    println!("LOCKED");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_lock_of_killed_holder_passes_within_ttl() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let db = dir.path().join("state.db");
    let (mut child, mut lines) = spawn_child("child_lock_holder", &db);
    assert!(
        lines.any(|l| l.ends_with("LOCKED")),
        "child did not take the lock"
    );
    child.kill();
    let killed = Instant::now();
    let store = open(&db).await;
    // The dead holder's lock is still recorded until its TTL runs out.
    assert_eq!(
        store.get("locks/leader").await.map(|p| p.value),
        Ok(b"child".to_vec())
    );
    let locker = store
        .new_lock(
            "locks/leader",
            LockOptions {
                value: b"parent".to_vec(),
                ttl: Duration::from_secs(2),
            },
        )
        .unwrap_or_else(|e| panic!("new_lock: {e}"));
    let held = tokio::time::timeout(Duration::from_secs(5), locker.lock()).await;
    assert!(matches!(held, Ok(Ok(_))), "lock did not pass on: {held:?}");
    assert!(
        killed.elapsed() <= Duration::from_secs(2) + Duration::from_millis(800),
        "took {:?}",
        killed.elapsed()
    );
    assert_eq!(
        store.get("locks/leader").await.map(|p| p.value),
        Ok(b"parent".to_vec())
    );
}

/// Child: a relaxed transaction (`r` = g), then a durable write (`d` = g), forever; says
/// `DURABLE g` once the durable write of g has returned.
#[tokio::test]
#[ignore = "run by redb_relaxed_writes_are_made_durable_by_the_next_durable_one"]
async fn child_relaxed_then_durable() {
    let Some(db) = std::env::var_os(DB_ENV) else {
        return;
    };
    let store = open(Path::new(&db)).await;
    let start = match store.get("d").await {
        Ok(p) => String::from_utf8_lossy(&p.value)
            .parse::<u64>()
            .unwrap_or(0),
        Err(_) => 0,
    };
    for g in start + 1.. {
        let relaxed = Txn::new().relaxed().put("r", g.to_string().into_bytes());
        if let Err(e) = store.txn(relaxed).await {
            panic!("relaxed txn: {e}");
        }
        if let Err(e) = store
            .put("d", g.to_string().as_bytes(), Default::default())
            .await
        {
            panic!("put: {e}");
        }
        println!("DURABLE {g}");
    }
}

/// Child: a relaxed transaction (`s` = g), then `sync`, forever; says `SYNCED g` once the
/// sync after g has returned.
#[tokio::test]
#[ignore = "run by redb_relaxed_writes_are_made_durable_by_sync"]
async fn child_relaxed_then_sync() {
    let Some(db) = std::env::var_os(DB_ENV) else {
        return;
    };
    let store = open(Path::new(&db)).await;
    let start = match store.get("s").await {
        Ok(p) => String::from_utf8_lossy(&p.value)
            .parse::<u64>()
            .unwrap_or(0),
        Err(_) => 0,
    };
    for g in start + 1.. {
        let relaxed = Txn::new().relaxed().put("s", g.to_string().into_bytes());
        if let Err(e) = store.txn(relaxed).await {
            panic!("relaxed txn: {e}");
        }
        if let Err(e) = store.sync().await {
            panic!("sync: {e}");
        }
        println!("SYNCED {g}");
    }
}

/// The number at `key`.
async fn number(store: &std::sync::Arc<dyn Store>, key: &str) -> u64 {
    let pair = store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"));
    String::from_utf8_lossy(&pair.value)
        .parse::<u64>()
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Runs the child test `child` on `db`, kills it (-9) at a different moment each `round`
/// while it writes, and returns the last generation it reported as acknowledged.
fn kill_mid_stream(child: &str, db: &Path, round: u64) -> u64 {
    let (mut child, lines) = spawn_child(child, db);
    // Read what the child reports on a thread, so the kill lands mid-stream.
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || {
        for line in lines {
            if let Some(g) = line.rsplit(' ').next().and_then(|g| g.parse().ok()) {
                if tx.send(g).is_err() {
                    break;
                }
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("child did not start: {e}"));
    std::thread::sleep(Duration::from_millis(30 + round * 41 % 120));
    child.kill();
    let _ = reader.join();
    rx.try_iter().last().unwrap_or(first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_relaxed_writes_are_made_durable_by_the_next_durable_one() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let db = dir.path().join("state.db");
    for round in 0..4u64 {
        let acknowledged = kill_mid_stream("child_relaxed_then_durable", &db, round);
        let store = open(&db).await;
        let (r, d) = (number(&store, "r").await, number(&store, "d").await);
        // Every acknowledged durable write survived, and with it the relaxed one before it;
        // a relaxed write is never kept without the ones before it (r is d or d + 1).
        assert!(
            d >= acknowledged,
            "durable write {acknowledged} lost: d = {d}"
        );
        assert!(r == d || r == d + 1, "r = {r}, d = {d}");
        store.close().await.unwrap_or_else(|e| panic!("close: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_relaxed_writes_are_made_durable_by_sync() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let db = dir.path().join("state.db");
    for round in 0..4u64 {
        let acknowledged = kill_mid_stream("child_relaxed_then_sync", &db, round);
        let store = open(&db).await;
        let s = number(&store, "s").await;
        // Every relaxed write whose sync returned survived the kill.
        assert!(
            s >= acknowledged,
            "synced write {acknowledged} lost: s = {s}"
        );
        store.close().await.unwrap_or_else(|e| panic!("close: {e}"));
    }
}
