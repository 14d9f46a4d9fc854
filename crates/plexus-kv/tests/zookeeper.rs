//! The conformance suite on a real ZooKeeper server, plus what only ZooKeeper can show: a
//! server killed and restarted under a watch, a lock holder's session lost, a stopped server,
//! TTL znodes, implicit parents.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use plexus_kv::{KvError, LockOptions, OpenOptions, PutOptions, Store};
use plexus_testkit::kv::KvBackend;
use plexus_testkit::kv_conformance;
use plexus_testkit::net::TcpProxy;
use plexus_testkit::zookeeper::{test_options, url_for, ZkBackend, ZkServer};
use tokio::time::timeout;

kv_conformance!(zookeeper, ZkBackend::new());

async fn open(url: &str, options: OpenOptions) -> Arc<dyn Store> {
    plexus_kv::open(url, options)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

async fn start_server() -> Arc<ZkServer> {
    Arc::new(
        tokio::task::spawn_blocking(ZkServer::start)
            .await
            .unwrap_or_else(|e| panic!("starting ZooKeeper: {e}")),
    )
}

/// The next item of a watch, within 20 s.
async fn next_item(w: &mut plexus_kv::WatchStream) -> plexus_kv::Result<Option<Vec<u8>>> {
    match timeout(Duration::from_secs(20), w.next()).await {
        Ok(Some(item)) => item.map(|v| v.map(|p| p.value)),
        other => panic!("watch gave {other:?}"),
    }
}

/// kill -9 the server while a watch runs, restart it on the same port and data: the watch
/// reports the outage once, then resumes and delivers the writes made after the restart (the
/// last one always), indexes still growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zk_watch_resumes_after_kill9_and_restart() {
    let server = start_server().await;
    let url = server.url("crash");
    let s = open(&url, test_options()).await;
    s.put("k", b"before", PutOptions::default()).await.unwrap();
    let mut w = s.watch("k").await.unwrap();
    let mut tree = s.watch_tree("dir").await.unwrap();
    assert_eq!(next_item(&mut w).await, Ok(Some(b"before".to_vec())));
    assert!(matches!(
        timeout(Duration::from_secs(10), tree.next()).await,
        Ok(Some(Ok(l))) if l.is_empty()
    ));
    let before = s.get("k").await.unwrap();

    let s2 = server.clone();
    tokio::task::spawn_blocking(move || s2.kill9())
        .await
        .unwrap();
    match next_item(&mut w).await {
        Err(KvError::Unavailable { url: u, .. }) => assert_eq!(u, url),
        other => panic!("expected one Unavailable item, got {other:?}"),
    }
    assert!(
        s.put("k", b"lost", PutOptions::default()).await.is_err(),
        "a put succeeded with the server down"
    );

    let s2 = server.clone();
    tokio::task::spawn_blocking(move || s2.restart())
        .await
        .unwrap();
    // Writes after the restart, from this client (its session survived) and a new one.
    let other = open(&url, test_options()).await;
    for i in 1..=5 {
        other
            .put("k", format!("after-{i}").as_bytes(), PutOptions::default())
            .await
            .unwrap();
    }
    s.put("dir/a", b"1", PutOptions::default()).await.unwrap();
    let mut last_index = before.last_index;
    loop {
        let item = timeout(Duration::from_secs(20), w.next()).await;
        let pair = match item {
            Ok(Some(Ok(Some(pair)))) => pair,
            // At most one more report while reconnecting.
            Ok(Some(Err(KvError::Unavailable { .. }))) => continue,
            other => panic!("watch after the restart gave {other:?}"),
        };
        assert!(pair.last_index > last_index, "index went back: {pair:?}");
        last_index = pair.last_index;
        assert_ne!(pair.value, b"lost");
        if pair.value == b"after-5" {
            break;
        }
    }
    let list = loop {
        match timeout(Duration::from_secs(20), tree.next()).await {
            Ok(Some(Ok(l))) if !l.is_empty() => break l,
            Ok(Some(_)) => {}
            other => panic!("watch_tree after the restart gave {other:?}"),
        }
    };
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].key, "dir/a");
}

/// The lock holder's connection is cut until its session expires: its handle reports the loss
/// (before anyone else can take the lock), and the other contender gets the lock within the
/// lock's TTL (the session timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zk_lock_passes_on_when_the_holders_session_is_cut() {
    let server = ZkBackend::new().await;
    let shared = plexus_testkit::zookeeper::shared();
    let proxy = TcpProxy::start(shared.endpoint()).await.unwrap();
    let chroot = plexus_testkit::unique("lockcut");
    let holder = open(&url_for(proxy.addr(), &chroot), test_options()).await;
    let contender = open(&shared.url(&chroot), test_options()).await;
    drop(server);
    let ttl = Duration::from_secs(2);
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
    let locker = contender.new_lock("locks/l", opts("contender")).unwrap();
    let waiting = tokio::spawn(async move {
        let handle = locker.lock().await;
        (Instant::now(), handle)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "the lock was not exclusive");
    assert!(!held.is_lost());

    let cut = Instant::now();
    proxy.cut();
    let reason = timeout(ttl + Duration::from_secs(3), held.lost())
        .await
        .unwrap_or_else(|_| panic!("the cut-off holder never reported the loss"));
    let lost_at = Instant::now();
    assert!(held.is_lost());
    let (acquired_at, handle) = timeout(ttl + Duration::from_secs(5), waiting)
        .await
        .unwrap_or_else(|_| panic!("the contender never got the lock"))
        .unwrap();
    let handle = handle.unwrap();
    assert!(
        lost_at <= acquired_at,
        "the old holder still believed it held the lock when the contender got it ({reason})"
    );
    assert!(
        acquired_at - cut <= ttl + Duration::from_millis(1500),
        "the lock passed on {:?} after the cut, TTL {ttl:?}",
        acquired_at - cut
    );
    proxy.restore();
    handle.unlock().await.unwrap();
    held.unlock().await.ok();
}

/// With the server stopped, every operation fails within the timeout with an error naming
/// the URL, and so does opening a store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zk_stopped_server_fails_within_timeout() {
    let server = start_server().await;
    let url = server.url("down");
    let options = OpenOptions {
        timeout: Duration::from_secs(2),
        ..OpenOptions::default()
    };
    let s = open(&url, options.clone()).await;
    s.put("k", b"v", PutOptions::default()).await.unwrap();
    let s2 = server.clone();
    tokio::task::spawn_blocking(move || s2.kill9())
        .await
        .unwrap();
    let bound = options.timeout + Duration::from_millis(1500);
    let check = |what: &str, started: Instant, r: Result<(), KvError>| {
        let took = started.elapsed();
        match r {
            Err(e @ (KvError::Unavailable { .. } | KvError::Timeout { .. })) => {
                assert!(
                    e.to_string().contains(&url),
                    "{what}: {e} does not name {url}"
                );
            }
            other => panic!("{what} with the server down gave {other:?}"),
        }
        assert!(took <= bound, "{what} took {took:?}");
    };
    let t = Instant::now();
    check(
        "put",
        t,
        s.put("k", b"w", PutOptions::default()).await.map(drop),
    );
    let t = Instant::now();
    check("get", t, s.get("k").await.map(drop));
    let t = Instant::now();
    check("list", t, s.list("").await.map(drop));
    let t = Instant::now();
    check("watch", t, s.watch("k").await.map(drop));
    let t = Instant::now();
    check(
        "lock",
        t,
        s.new_lock("l", LockOptions::default())
            .unwrap()
            .lock()
            .await
            .map(drop),
    );
    let t = Instant::now();
    check(
        "open",
        t,
        plexus_kv::open(&url, options.clone()).await.map(drop),
    );
}

/// TTL keys: gone after the TTL, kept alive by rewriting, made permanent by a write without
/// TTL; a server without TTL znodes refuses them with an error that says how to enable them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zk_ttl_keys() {
    let b = ZkBackend::new().await;
    let s = b.client().await;
    let ttl = Duration::from_secs(1);
    s.put("t/gone", b"1", PutOptions::with_ttl(ttl))
        .await
        .unwrap();
    s.put("t/kept", b"1", PutOptions::with_ttl(ttl))
        .await
        .unwrap();
    s.put("t/perm", b"1", PutOptions::with_ttl(ttl))
        .await
        .unwrap();
    s.put("t/perm", b"2", PutOptions::default()).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1800) {
        s.put("t/kept", b"again", PutOptions::with_ttl(ttl))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        !s.exists("t/gone").await.unwrap(),
        "the TTL key outlived its TTL"
    );
    assert!(
        s.exists("t/kept").await.unwrap(),
        "a rewritten TTL key expired"
    );
    assert_eq!(s.get("t/perm").await.unwrap().value, b"2");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert!(!s.exists("t/kept").await.unwrap());
    assert!(s.exists("t/perm").await.unwrap());

    let plain = Arc::new(
        tokio::task::spawn_blocking(|| ZkServer::try_start("", false))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("starting ZooKeeper: {e}")),
    );
    let s = open(&plain.url("nottl"), test_options()).await;
    match s.put("k", b"v", PutOptions::with_ttl(ttl)).await {
        Err(e) => assert!(
            e.to_string().contains("extendedTypesEnabled"),
            "unclear error: {e}"
        ),
        Ok(p) => panic!("a TTL put succeeded without TTL znodes: {p:?}"),
    }
    s.put("k", b"v", PutOptions::default()).await.unwrap();
}

/// Parents created only to hold keys never show up, in `list`, `get`, `exists` or
/// `watch_tree`, nor do lock nodes; a deleted key that still has keys under it stays as a
/// parent, and empty parents are removed with the last key under them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zk_implicit_parents_are_not_keys() {
    let b = ZkBackend::new().await;
    let s = b.client().await;
    let keys = |l: Vec<plexus_kv::KvPair>| l.into_iter().map(|p| p.key).collect::<Vec<_>>();
    s.put("p/a/b/c", b"deep", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(keys(s.list("p").await.unwrap()), ["p/a/b/c"]);
    assert_eq!(keys(s.list("").await.unwrap()), ["p/a/b/c"]);
    assert!(!s.exists("p/a/b").await.unwrap());
    assert!(matches!(
        s.get("p/a").await,
        Err(KvError::KeyNotFound { .. })
    ));
    assert!(matches!(
        s.delete("p/a").await,
        Err(KvError::KeyNotFound { .. })
    ));
    // A parent becomes a key, and back.
    s.put("p/a", b"mid", PutOptions::default()).await.unwrap();
    assert_eq!(keys(s.list("p").await.unwrap()), ["p/a", "p/a/b/c"]);
    s.delete("p/a").await.unwrap();
    assert_eq!(keys(s.list("p").await.unwrap()), ["p/a/b/c"]);
    // Lock nodes are not keys either.
    let lock = s
        .new_lock("p/a", LockOptions::default())
        .unwrap()
        .lock()
        .await
        .unwrap();
    assert_eq!(keys(s.list("p").await.unwrap()), ["p/a/b/c"]);
    let mut tree = s.watch_tree("p").await.unwrap();
    match timeout(Duration::from_secs(10), tree.next()).await {
        Ok(Some(Ok(l))) => assert_eq!(keys(l), ["p/a/b/c"]),
        other => panic!("watch_tree gave {other:?}"),
    }
    lock.unlock().await.unwrap();
    // The last key gone, its empty parents go too: nothing is left under the chroot but `p`'s
    // own absence.
    s.delete("p/a/b/c").await.unwrap();
    assert!(s.list("").await.unwrap().is_empty());
    let shared = plexus_testkit::zookeeper::shared();
    let raw = zookeeper_client::Client::connect(&shared.endpoint().to_string())
        .await
        .unwrap();
    let chroot = b
        .url()
        .split('/')
        .nth(3)
        .unwrap()
        .split('?')
        .next()
        .unwrap();
    let left = raw.list_children(&format!("/{chroot}")).await.unwrap();
    assert!(left.is_empty(), "znodes left behind: {left:?}");
    match timeout(Duration::from_secs(10), tree.next()).await {
        Ok(Some(Ok(l))) => assert!(l.is_empty(), "{l:?}"),
        other => panic!("watch_tree gave {other:?}"),
    }
}

/// TLS with a client certificate: the store works over the server's secure port; without the
/// client certificate the server refuses it; an unreadable file is named in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zk_tls_with_client_certificate() {
    use plexus_kv::TlsOptions;
    use plexus_testkit::etcd::TestCerts;
    use plexus_testkit::zookeeper::ZkTls;
    let certs = TestCerts::generate().unwrap();
    let tls = ZkTls {
        cert_file: certs.server_cert.clone(),
        key_file: certs.server_key.clone(),
        ca_file: certs.ca_file.clone(),
        need_client_auth: true,
    };
    let server = tokio::task::spawn_blocking(move || ZkServer::try_start_tls(&tls))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("starting ZooKeeper with TLS: {e}"));
    let url = url_for(server.secure_endpoint().unwrap(), "tls");
    let client_tls = TlsOptions {
        ca_file: Some(certs.ca_file.clone()),
        cert_file: Some(certs.client_cert.clone()),
        key_file: Some(certs.client_key.clone()),
        server_name: None,
    };
    let options = OpenOptions {
        tls: Some(client_tls.clone()),
        ..test_options()
    };
    let s = open(&url, options.clone()).await;
    s.put("k", b"secret", PutOptions::default()).await.unwrap();
    assert_eq!(s.get("k").await.unwrap().value, b"secret");
    let mut w = s.watch("k").await.unwrap();
    assert_eq!(next_item(&mut w).await, Ok(Some(b"secret".to_vec())));
    s.close().await.unwrap();

    let no_cert = OpenOptions {
        tls: Some(TlsOptions {
            cert_file: None,
            key_file: None,
            ..client_tls.clone()
        }),
        timeout: Duration::from_secs(2),
        ..OpenOptions::default()
    };
    assert!(
        plexus_kv::open(&url, no_cert).await.is_err(),
        "the server accepted a client without a certificate"
    );
    let missing = OpenOptions {
        tls: Some(TlsOptions {
            ca_file: Some(certs.dir().join("nope.pem")),
            ..client_tls
        }),
        ..test_options()
    };
    match plexus_kv::open(&url, missing).await {
        Err(e) => assert!(e.to_string().contains("nope.pem"), "{e}"),
        Ok(_) => panic!("opened with a missing CA file"),
    }
}

/// The watching store's connection is cut until its session expires: the watch reports the
/// outage, then opens a new session, watches again, and delivers the write made meanwhile and
/// the writes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zk_watch_survives_session_expiry() {
    let shared = tokio::task::spawn_blocking(plexus_testkit::zookeeper::shared)
        .await
        .unwrap();
    let proxy = TcpProxy::start(shared.endpoint()).await.unwrap();
    let chroot = plexus_testkit::unique("expiry");
    let watching = open(
        &format!("{}&session_timeout=1000", url_for(proxy.addr(), &chroot)),
        test_options(),
    )
    .await;
    let writer = open(&shared.url(&chroot), test_options()).await;
    writer.put("k", b"1", PutOptions::default()).await.unwrap();
    let mut w = watching.watch("k").await.unwrap();
    assert_eq!(next_item(&mut w).await, Ok(Some(b"1".to_vec())));

    proxy.cut();
    assert!(
        matches!(next_item(&mut w).await, Err(KvError::Unavailable { .. })),
        "the outage was not reported"
    );
    writer.put("k", b"2", PutOptions::default()).await.unwrap();
    // Well past the session timeout (1 s, in ticks of 200 ms).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.restore();
    let mut seen = Vec::new();
    while seen.last().map(Vec::as_slice) != Some(b"2".as_slice()) {
        match next_item(&mut w).await {
            Ok(Some(v)) => seen.push(v),
            Ok(None) => panic!("the key vanished"),
            Err(_) => {}
        }
    }
    writer.put("k", b"3", PutOptions::default()).await.unwrap();
    loop {
        match next_item(&mut w).await {
            Ok(Some(v)) if v == b"3" => break,
            Ok(Some(v)) => assert_eq!(v, b"2"),
            other => panic!("after the new session the watch gave {other:?}"),
        }
    }
    // The store works on its new session.
    watching
        .put("k", b"4", PutOptions::default())
        .await
        .unwrap();
    assert_eq!(writer.get("k").await.unwrap().value, b"4");
}
