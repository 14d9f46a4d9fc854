//! The tokio runtime over real loopback sockets, in one process: watch events, diagnostics,
//! and a key rotation under traffic that loses nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use plexus_gossip::runtime::GossipHandle;
use plexus_gossip::{Config, EntryEventKind, Event, Keyring, MemberState};

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
        [127, 1 + (pid % 99) as u8, 250, i],
        20_000 + (pid % 10_000) as u16,
    ))
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
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
async fn watch_diagnostics_and_key_rotation_over_real_sockets() {
    let k1 = [1u8; 32];
    let k2 = [2u8; 32];
    let mut nodes = Vec::new();
    for i in 1..=4u8 {
        let h = GossipHandle::start(addr(i), fast(), Keyring::new(k1))
            .await
            .expect("start");
        h.join_network("net").expect("join network");
        if i > 1 {
            h.join(&[addr(1)]);
        }
        nodes.push(h);
    }
    wait_until("4 members everywhere", Duration::from_secs(15), || {
        nodes.iter().all(|n| {
            n.members()
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .count()
                == 4
        })
    })
    .await;
    let mut watch = nodes[3].watch();
    let mut table_watch = nodes[2].watch_table("net", "svc");
    nodes[0].put("net", "svc", "web", b"10.0.0.2").expect("put");
    let ev = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::Entry(e)) = watch.recv().await {
                return e;
            }
        }
    })
    .await
    .expect("watch event");
    let tev = tokio::time::timeout(Duration::from_secs(5), table_watch.next())
        .await
        .expect("table watch event");
    assert!(matches!(tev, Some(Ok(e)) if e.key == "web" && e.kind == EntryEventKind::Create));
    nodes[0].delete("net", "svc", "web").expect("delete");
    let tev = tokio::time::timeout(Duration::from_secs(5), table_watch.next())
        .await
        .expect("table watch delete");
    assert!(matches!(tev, Some(Ok(e)) if e.key == "web" && e.kind == EntryEventKind::Delete));
    nodes[0]
        .put("net", "svc", "web", b"10.0.0.2")
        .expect("put again");
    assert_eq!(ev.kind, EntryEventKind::Create);
    assert_eq!(
        (ev.key.as_str(), ev.value.as_slice()),
        ("web", &b"10.0.0.2"[..])
    );
    assert_eq!(ev.owner, addr(1));

    // Rotation with traffic in between every step.
    let mut n = 0;
    for step in 0..3 {
        for h in &nodes {
            match step {
                0 => h.add_key(k2).expect("add"),
                1 => h.use_key(&k2).expect("use"),
                _ => h.remove_key(&k1).expect("remove"),
            }
            for w in &nodes {
                w.put("net", "t", &format!("k{n}"), b"v").expect("put");
                n += 1;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    wait_until(
        "all entries everywhere after rotation",
        Duration::from_secs(15),
        || nodes.iter().all(|h| h.entries("net", "t").len() == n),
    )
    .await;
    for h in &nodes {
        assert_eq!(
            h.stats().dropped_unauthenticated,
            0,
            "nothing lost to the rotation"
        );
    }
    // Diagnostics.
    let nets = nodes[2].networks();
    assert_eq!(nets.len(), 1);
    assert_eq!(nets[0].nodes.len(), 4);
    assert!(nodes[2]
        .table_dump("net")
        .iter()
        .any(|e| e.key == "web" && e.visible));

    // Graceful leave is seen as Left.
    nodes[3].leave(Duration::from_millis(300)).await;
    wait_until("leave seen", Duration::from_secs(10), || {
        nodes[..3].iter().all(|h| {
            h.members()
                .iter()
                .any(|m| m.addr == addr(4) && m.state == MemberState::Left)
        })
    })
    .await;
    for h in &nodes[..3] {
        h.shutdown().await;
    }
}
