//! Two `Gossip`s on loopback sharing a cluster store: one keyring made by the first, read by
//! the second; a rotation through the store while entries flow loses none and no frame is
//! refused.

use std::time::{Duration, Instant};

use plexus_cnm::ControlPlane;

use super::plane::GossipControlPlane;
use super::*;

fn fast() -> Config {
    Config {
        gossip_interval: Duration::from_millis(50),
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(80),
        sync_interval: Duration::from_millis(1000),
        join_retry: Duration::from_millis(200),
        ..Config::default()
    }
}

fn addr(i: u8) -> SocketAddr {
    let pid = std::process::id();
    SocketAddr::from((
        [127, 1 + (pid % 99) as u8, 252, i],
        21_000 + (pid % 10_000) as u16,
    ))
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_through_the_store_under_traffic_loses_nothing() {
    let store: Arc<dyn Store> = Arc::new(plexus_kv::LocalStore::memory());
    let a = Gossip::start(store.clone(), "a", addr(1), &[], fast())
        .await
        .unwrap();
    let b = Gossip::start(store.clone(), "b", addr(2), &[addr(1)], fast())
        .await
        .unwrap();
    assert_eq!(
        a.keyring(),
        b.keyring(),
        "the second host reads the first's keyring"
    );
    let old_doc = a.keyring();
    let old = old_doc.primary.clone();
    for g in [&a, &b] {
        tokio::spawn(g.clone().follow_keyring());
    }
    let (pa, pb) = (
        GossipControlPlane::new(a.handle.clone()),
        GossipControlPlane::new(b.handle.clone()),
    );
    pa.join_network("n").unwrap();
    pb.join_network("n").unwrap();
    wait_for("two live members", Duration::from_secs(10), || {
        a.live().len() == 2 && b.live().len() == 2
    })
    .await;

    let writer = {
        let pa = pa.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                pa.put("n", "t", &format!("k{i:03}"), vec![1]).unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let live = {
        let a = a.clone();
        move || a.live()
    };
    let done = keys::rotate(&store, &live, Duration::from_secs(10))
        .await
        .unwrap();
    writer.await.unwrap();
    wait_for("every entry on b", Duration::from_secs(10), || {
        pb.entries("n", "t").len() == 200
    })
    .await;
    wait_for("both on the final keyring", Duration::from_secs(5), || {
        a.keyring() == done && b.keyring() == done
    })
    .await;
    assert_ne!(done.primary, old);
    assert_eq!(done.ids(), vec![done.primary.clone()]);
    for g in [&a, &b] {
        assert_eq!(
            g.handle.stats().dropped_unauthenticated,
            0,
            "a frame was refused"
        );
        assert_eq!(g.live().len(), 2);
    }
    // The old key is gone: a host still holding only it is refused.
    let stale =
        plexus_gossip::runtime::GossipHandle::start(addr(3), fast(), old_doc.keyring().unwrap())
            .await
            .unwrap();
    stale.join(&[addr(1)]);
    wait_for("the stale host refused", Duration::from_secs(5), || {
        a.handle.stats().dropped_unauthenticated > 0
    })
    .await;
    assert_eq!(a.live().len(), 2, "the stale host got in");
    stale.shutdown().await;
    a.handle.shutdown().await;
    b.handle.shutdown().await;
}
