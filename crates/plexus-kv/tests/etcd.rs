//! The conformance suite on a real etcd, plus what only a remote store can show: surviving a
//! server crash, losing a lock with the connection, bounded failures, leases, TLS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use plexus_kv::{KvError, LockOptions, OpenOptions, PutOptions, Store, TlsOptions};
use plexus_testkit::etcd::{test_options, EtcdBackend, EtcdServer, ServerTls, TestCerts};
use plexus_testkit::kv_conformance;
use plexus_testkit::net::TcpProxy;
use tokio::time::timeout;

kv_conformance!(etcd, EtcdBackend::new());

async fn open(url: &str, options: OpenOptions) -> Arc<dyn Store> {
    plexus_kv::open(url, options)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

fn start_server() -> EtcdServer {
    EtcdServer::start()
}

/// The next item of a watch, within 20 s.
async fn next_item(w: &mut plexus_kv::WatchStream) -> plexus_kv::Result<Option<Vec<u8>>> {
    match timeout(Duration::from_secs(20), w.next()).await {
        Ok(Some(item)) => item.map(|v| v.map(|p| p.value)),
        other => panic!("watch gave {other:?}"),
    }
}

/// kill -9 the server while a watch runs, write nothing while it is down, restart it: the
/// watch reports the outage once, then resumes from the last revision it delivered. Every
/// write before and after the outage is seen, in order, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_watch_resumes_after_kill9_with_no_missed_event() {
    let server = tokio::task::spawn_blocking(start_server).await.unwrap();
    let url = server.url("crash");
    let s = open(&url, test_options()).await;
    let mut w = s.watch("k").await.unwrap();
    let mut tree = s.watch_tree("dir").await.unwrap();
    assert_eq!(next_item(&mut w).await, Ok(None));
    assert!(
        matches!(timeout(Duration::from_secs(10), tree.next()).await, Ok(Some(Ok(l))) if l.is_empty())
    );
    for i in 1..=3 {
        s.put("k", format!("before-{i}").as_bytes(), PutOptions::default())
            .await
            .unwrap();
    }
    s.put("dir/a", b"1", PutOptions::default()).await.unwrap();
    for i in 1..=3 {
        assert_eq!(
            next_item(&mut w).await,
            Ok(Some(format!("before-{i}").into_bytes()))
        );
    }

    let server = Arc::new(server);
    let s2 = server.clone();
    tokio::task::spawn_blocking(move || s2.kill9())
        .await
        .unwrap();
    // The outage is reported, once.
    match next_item(&mut w).await {
        Err(KvError::Unavailable { url: u, .. }) => assert_eq!(u, url),
        other => panic!("expected one Unavailable item, got {other:?}"),
    }
    // Writes fail (within the timeout) while it is down.
    let down = s.put("k", b"lost", PutOptions::default()).await;
    assert!(down.is_err(), "a put succeeded with the server down");

    let s2 = server.clone();
    tokio::task::spawn_blocking(move || s2.restart())
        .await
        .unwrap();
    // Writes after the restart, from this client (reconnected) and a new one.
    let other = open(&url, test_options()).await;
    for i in 1..=3 {
        let client = if i % 2 == 0 { &s } else { &other };
        client
            .put("k", format!("after-{i}").as_bytes(), PutOptions::default())
            .await
            .unwrap();
    }
    other.delete("k").await.unwrap();
    other
        .put("dir/b", b"2", PutOptions::default())
        .await
        .unwrap();
    let mut after = Vec::new();
    while after.len() < 4 {
        match next_item(&mut w).await {
            Ok(v) => after.push(v),
            // Reconnecting may report the outage more than once is not allowed: one only.
            Err(e) => panic!("second error item after the restart: {e}"),
        }
    }
    assert_eq!(
        after,
        [
            Some(b"after-1".to_vec()),
            Some(b"after-2".to_vec()),
            Some(b"after-3".to_vec()),
            None
        ]
    );
    // The tree watch resumed too and ends on both keys.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "tree watch did not resume");
        match timeout(Duration::from_secs(20), tree.next()).await {
            Ok(Some(Ok(list))) => {
                let keys: Vec<_> = list.iter().map(|p| p.key.as_str()).collect();
                if keys == ["dir/a", "dir/b"] {
                    break;
                }
                assert!(keys == ["dir/a"], "unexpected snapshot {keys:?}");
            }
            Ok(Some(Err(KvError::Unavailable { .. }))) => {}
            other => panic!("tree watch gave {other:?}"),
        }
    }
    s.close().await.unwrap();
    other.close().await.unwrap();
}

/// The holder's connection is cut: its handle reports the loss, and the other contender gets
/// the lock within the TTL (plus etcd's expiry granularity).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_lock_passes_on_when_holder_connection_is_cut() {
    let server = tokio::task::spawn_blocking(start_server).await.unwrap();
    let proxy = TcpProxy::start(server.endpoint()).await.unwrap();
    let prefix = plexus_testkit::unique("cut");
    let holder_url = format!("etcd://{}/{prefix}", proxy.addr());
    let options = OpenOptions {
        timeout: Duration::from_secs(2),
        ..OpenOptions::default()
    };
    let holder = open(&holder_url, options.clone()).await;
    let other = open(&server.url(&prefix), options).await;
    let ttl = Duration::from_secs(3);
    let opts = |who: &str| LockOptions {
        value: who.as_bytes().to_vec(),
        ttl,
    };
    let mut held = holder
        .new_lock("locks/l", opts("holder"))
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert_eq!(other.get("locks/l").await.unwrap().value, b"holder");
    let contender = other.new_lock("locks/l", opts("other")).unwrap();
    let waiting = tokio::spawn(async move {
        let handle = contender.lock().await;
        (Instant::now(), handle)
    });
    // Renewals keep it held well past the TTL.
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    assert!(!held.is_lost(), "lost while connected");
    assert!(!waiting.is_finished(), "taken while held");

    let cut = Instant::now();
    proxy.cut();
    let reason = timeout(ttl + Duration::from_secs(2), held.lost())
        .await
        .unwrap_or_else(|_| panic!("the holder was never told it lost the lock"));
    let lost_after = cut.elapsed();
    let (taken_at, handle) = timeout(ttl + Duration::from_secs(3), waiting)
        .await
        .unwrap_or_else(|_| panic!("the lock never passed on"))
        .unwrap();
    let handle = handle.unwrap();
    let taken_after = taken_at - cut;
    eprintln!("holder told after {lost_after:?} ({reason}); other took it after {taken_after:?}");
    assert!(
        lost_after <= ttl + Duration::from_millis(500),
        "loss reported late: {lost_after:?}"
    );
    assert!(
        taken_after <= ttl + Duration::from_millis(1500),
        "passed on late: {taken_after:?}"
    );
    // The holder learns before (or as) the other takes it: never two holders.
    assert!(
        lost_after <= taken_after + Duration::from_millis(100),
        "{lost_after:?} > {taken_after:?}"
    );
    assert_eq!(other.get("locks/l").await.unwrap().value, b"other");
    handle.unlock().await.unwrap();
    assert!(!other.exists("locks/l").await.unwrap());
    drop(held);
}

/// With the server stopped, every operation fails within the configured timeout, naming the
/// URL; opening a store on it fails the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_unreachable_fails_within_timeout_naming_the_url() {
    let server = tokio::task::spawn_blocking(start_server).await.unwrap();
    let url = server.url("down");
    let limit = Duration::from_millis(800);
    let options = OpenOptions {
        timeout: limit,
        ..OpenOptions::default()
    };
    let s = open(&url, options.clone()).await;
    s.put("k", b"v", PutOptions::default()).await.unwrap();
    let server = tokio::task::spawn_blocking(move || {
        server.kill9();
        server
    })
    .await
    .unwrap();
    let check = |what: &str, started: Instant, e: KvError| {
        let took = started.elapsed();
        assert!(
            took < limit + Duration::from_millis(500),
            "{what} took {took:?}"
        );
        assert!(
            matches!(e, KvError::Unavailable { .. } | KvError::Timeout { .. }),
            "{what}: {e:?}"
        );
        assert!(
            e.to_string().contains(&url),
            "{what}: {e} does not name {url}"
        );
    };
    let t = Instant::now();
    check("get", t, s.get("k").await.unwrap_err());
    let t = Instant::now();
    check(
        "put",
        t,
        s.put("k", b"v", PutOptions::default()).await.unwrap_err(),
    );
    let t = Instant::now();
    check(
        "ttl put",
        t,
        s.put("k", b"v", PutOptions::with_ttl(Duration::from_secs(5)))
            .await
            .unwrap_err(),
    );
    let t = Instant::now();
    check("list", t, s.list("").await.unwrap_err());
    let t = Instant::now();
    check("watch", t, s.watch("k").await.err().unwrap());
    let t = Instant::now();
    let lock = s.new_lock("l", LockOptions::default()).unwrap();
    check("lock", t, lock.lock().await.unwrap_err());
    let t = Instant::now();
    check(
        "open",
        t,
        plexus_kv::open(&url, options.clone()).await.err().unwrap(),
    );
    // A port where nothing ever listened.
    let nowhere = format!("etcd://127.0.0.1:{}/x", plexus_testkit::net::free_port());
    let t = Instant::now();
    let e = plexus_kv::open(&nowhere, options).await.err().unwrap();
    assert!(t.elapsed() < limit + Duration::from_millis(500));
    assert!(e.to_string().contains(&nowhere), "{e}");
    drop(server);
}

/// TTLs are leases: a key written with a TTL is gone after it (rounded up to whole seconds),
/// a rewrite without TTL keeps it, a rewrite with a TTL restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_ttl_via_leases() {
    let backend = EtcdBackend::new().await;
    let s = backend.client().await;
    use plexus_testkit::kv::KvBackend as _;
    let start = Instant::now();
    s.put(
        "ttl/short",
        b"v",
        PutOptions::with_ttl(Duration::from_millis(1200)),
    )
    .await
    .unwrap();
    s.put(
        "ttl/kept",
        b"v",
        PutOptions::with_ttl(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    s.put("ttl/kept", b"v2", PutOptions::default())
        .await
        .unwrap();
    s.put(
        "ttl/renewed",
        b"v",
        PutOptions::with_ttl(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.put(
        "ttl/renewed",
        b"v2",
        PutOptions::with_ttl(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let renewed_at = Instant::now();
    // 1.2 s rounds up to 2 s: still there at 1.5 s.
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(start.elapsed())).await;
    assert!(
        s.exists("ttl/short").await.unwrap(),
        "expired before its rounded-up TTL"
    );
    let mut w = s.watch("ttl/short").await.unwrap();
    assert!(matches!(next_item(&mut w).await, Ok(Some(_))));
    assert_eq!(next_item(&mut w).await, Ok(None));
    let gone = start.elapsed();
    assert!(
        gone >= Duration::from_secs(2) && gone <= Duration::from_millis(3700),
        "{gone:?}"
    );
    assert!(
        s.exists("ttl/renewed").await.unwrap(),
        "the rewrite did not restart the TTL"
    );
    tokio::time::sleep(
        Duration::from_secs(2).saturating_sub(renewed_at.elapsed()) + backend.ttl_slack(),
    )
    .await;
    assert!(
        !s.exists("ttl/renewed").await.unwrap(),
        "the renewed TTL never ran out"
    );
    assert!(
        s.exists("ttl/kept").await.unwrap(),
        "a write without TTL kept the old lease"
    );
}

/// A store on a TLS etcd (server cert checked against a generated CA, client certificate for
/// mutual TLS) works; without the client certificate it is refused; unreadable files are named.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_tls_connects_with_ca_and_client_cert() {
    let certs = TestCerts::generate().unwrap();
    let tls = ServerTls {
        cert_file: certs.server_cert.clone(),
        key_file: certs.server_key.clone(),
        client_ca_file: Some(certs.ca_file.clone()),
    };
    let server = tokio::task::spawn_blocking(move || EtcdServer::start_tls(tls))
        .await
        .unwrap();
    let url = server.url("tls");
    let client_tls = TlsOptions {
        ca_file: Some(certs.ca_file.clone()),
        cert_file: Some(certs.client_cert.clone()),
        key_file: Some(certs.client_key.clone()),
        server_name: Some("localhost".into()),
    };
    let options = OpenOptions {
        timeout: Duration::from_secs(5),
        tls: Some(client_tls.clone()),
        ..OpenOptions::default()
    };
    let s = open(&url, options.clone()).await;
    let p = s
        .put("k", b"over tls", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(s.get("k").await.unwrap(), p);
    let mut w = s.watch("k").await.unwrap();
    assert_eq!(next_item(&mut w).await, Ok(Some(b"over tls".to_vec())));
    s.close().await.unwrap();

    // No client certificate: the server refuses the handshake.
    let short = OpenOptions {
        timeout: Duration::from_secs(2),
        tls: Some(TlsOptions {
            cert_file: None,
            key_file: None,
            ..client_tls.clone()
        }),
        ..OpenOptions::default()
    };
    let refused = plexus_kv::open(&url, short).await.err().unwrap();
    assert!(refused.to_string().contains(&url), "{refused}");
    // Plain TCP to a TLS port fails too.
    let plain = OpenOptions {
        timeout: Duration::from_secs(2),
        ..OpenOptions::default()
    };
    assert!(plexus_kv::open(&url, plain).await.is_err());

    // Bad files are named.
    for (field, path) in [
        ("ca", "/nonexistent/ca.pem"),
        ("cert", "/nonexistent/client.pem"),
        ("key", "/nonexistent/client-key.pem"),
    ] {
        let mut bad = client_tls.clone();
        match field {
            "ca" => bad.ca_file = Some(path.into()),
            "cert" => bad.cert_file = Some(path.into()),
            _ => bad.key_file = Some(path.into()),
        }
        let options = OpenOptions {
            tls: Some(bad),
            ..options.clone()
        };
        let e = plexus_kv::open(&url, options)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(path), "{e} does not name {path}");
    }
    // A file that is not PEM is named too.
    let not_pem = certs.dir().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let options = OpenOptions {
        tls: Some(TlsOptions {
            ca_file: Some(not_pem.clone()),
            ..client_tls
        }),
        ..options
    };
    let e = plexus_kv::open(&url, options)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains(&not_pem.display().to_string()), "{e}");
}

/// The prefix isolates stores: keys are stored as `prefix/key` and read back without it, and a
/// store on another prefix sees none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_prefix_isolates_keys() {
    let a = EtcdBackend::new().await;
    let b = EtcdBackend::new().await;
    use plexus_testkit::kv::KvBackend as _;
    let sa = a.client().await;
    let sb = b.client().await;
    sa.put("x/y", b"a", PutOptions::default()).await.unwrap();
    assert_eq!(
        sa.list("")
            .await
            .unwrap()
            .iter()
            .map(|p| p.key.as_str())
            .collect::<Vec<_>>(),
        ["x/y"]
    );
    assert!(sb.list("").await.unwrap().is_empty());
    assert!(matches!(
        sb.get("x/y").await,
        Err(KvError::KeyNotFound { .. })
    ));
    // The raw key, seen from a store without a prefix.
    let root_url = a
        .url()
        .rsplit_once('/')
        .map(|(base, _)| base.to_string())
        .unwrap();
    let root = open(&root_url, test_options()).await;
    let prefix = a
        .url()
        .rsplit_once('/')
        .map(|(_, p)| p.to_string())
        .unwrap();
    assert_eq!(
        root.get(&format!("{prefix}/x/y")).await.unwrap().value,
        b"a"
    );
}

/// A watch whose connection is cut while the history it needs is compacted away resumes with
/// an error saying so, then the current value; later changes flow as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_watch_after_compaction_rereads_current_value() {
    let backend = EtcdBackend::new().await;
    let url = backend.url().to_string();
    let (base, prefix) = url.trim_start_matches("etcd://").split_once('/').unwrap();
    let endpoint: std::net::SocketAddr = base.parse().unwrap();
    let proxy = TcpProxy::start(endpoint).await.unwrap();
    let watcher = open(&format!("etcd://{}/{prefix}", proxy.addr()), test_options()).await;
    let writer = open(&url, test_options()).await;
    writer.put("k", b"v0", PutOptions::default()).await.unwrap();
    let mut w = watcher.watch("k").await.unwrap();
    assert_eq!(next_item(&mut w).await, Ok(Some(b"v0".to_vec())));

    proxy.cut();
    assert!(matches!(
        next_item(&mut w).await,
        Err(KvError::Unavailable { .. })
    ));
    let mut last = None;
    for i in 1..=5 {
        last = Some(
            writer
                .put("k", format!("v{i}").as_bytes(), PutOptions::default())
                .await
                .unwrap(),
        );
    }
    let rev = last.map(|p| p.last_index as i64).unwrap();
    let mut raw = etcd_client::Client::connect([format!("http://{base}")], None)
        .await
        .unwrap();
    raw.compact(rev, None).await.unwrap();
    proxy.restore();

    match next_item(&mut w).await {
        Err(KvError::Backend { message, .. }) => {
            assert!(message.contains("compacted"), "{message}")
        }
        other => panic!("expected the compaction to be reported, got {other:?}"),
    }
    assert_eq!(next_item(&mut w).await, Ok(Some(b"v5".to_vec())));
    writer.put("k", b"v6", PutOptions::default()).await.unwrap();
    assert_eq!(next_item(&mut w).await, Ok(Some(b"v6".to_vec())));
}

/// A lock whose key is deleted behind its holder's back is reported lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_lock_reports_loss_when_its_key_vanishes() {
    let backend = EtcdBackend::new().await;
    use plexus_testkit::kv::KvBackend as _;
    let holder = backend.client().await;
    let other = backend.client().await;
    let opts = LockOptions {
        value: b"h".to_vec(),
        ttl: Duration::from_secs(10),
    };
    let mut handle = holder
        .new_lock("locks/v", opts)
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert!(!handle.is_lost());
    other.delete("locks/v").await.unwrap();
    let reason = timeout(Duration::from_secs(5), handle.lost())
        .await
        .expect("loss not reported");
    assert!(reason.contains("deleted"), "{reason}");
    handle.unlock().await.unwrap();
}
