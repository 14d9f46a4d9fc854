//! Real connections through a VIP programmed by `plexus_lb` in the client's namespace (the
//! world is in `common/mod.rs`): spread over backends, a backend leaving and coming back, UDP
//! with replies from the VIP, refusal without backends, client-ip affinity. Needs root.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use plexus_lb::{Dispatcher, View};

#[macro_use]
mod common;
use common::*;

fn vip(port: u16) -> SocketAddr {
    SocketAddr::from((VIP, port))
}

#[test]
fn twenty_thousand_connections_spread_evenly_and_keep_the_client_address() {
    need_root!();
    let world = World::new();
    let _srv = Servers::start(&world, &[80], &[]);
    let lb = ok("open", Dispatcher::open(&world.client.ns));
    let view = one(ID, VIP, &BACKENDS, None);
    ok("apply", lb.apply(&View::default(), &view));
    let answers = tcp_many(&world, vip(80), 20_000);
    let counts = spread(&answers);
    // numgen random: each count is binomial(20000, 1/4), sd 61; ±5% of 5,000 is 4.1 sd, so
    // a fair spread fails this about twice in 10,000 runs.
    assert_eq!(counts.len(), 4, "{counts:?}");
    for (b, n) in &counts {
        assert!((4750..=5250).contains(n), "{b}: {n} of 20000 ({counts:?})");
    }
    assert!(
        answers.iter().all(|a| a.peer.ip() == CLIENT),
        "a backend saw another source than the client"
    );
    // Any port: the VIP forwards them all, the port kept.
    let _other = Servers::start(&world, &[8080], &[]);
    let a = ok("run", world.client.ns.run(|| tcp_once(vip(8080))));
    assert!(BACKENDS.contains(&ok("8080", a).backend));
}

#[test]
fn a_removed_backend_gets_no_new_connection_and_comes_back_when_added() {
    need_root!();
    let world = World::new();
    let _srv = Servers::start(&world, &[80], &[]);
    let lb = ok("open", Dispatcher::open(&world.client.ns));
    let all = one(ID, VIP, &BACKENDS, None);
    ok("apply", lb.apply(&View::default(), &all));
    let three = one(ID, VIP, &BACKENDS[..3], None);
    ok("remove a backend", lb.apply(&all, &three));
    let counts = spread(&tcp_many(&world, vip(80), 1_000));
    assert!(!counts.contains_key(&BACKENDS[3]), "{counts:?}");
    assert_eq!(counts.len(), 3, "{counts:?}");
    ok("add it back", lb.apply(&three, &all));
    let counts = spread(&tcp_many(&world, vip(80), 1_000));
    assert!(
        counts.get(&BACKENDS[3]).copied().unwrap_or(0) > 150,
        "{counts:?}"
    );
    assert_eq!(ok("read", lb.read()), all.normalized());
}

#[test]
fn udp_reaches_backends_and_replies_come_from_the_vip() {
    need_root!();
    let world = World::new();
    let _srv = Servers::start(&world, &[], &[5353]);
    let lb = ok("open", Dispatcher::open(&world.client.ns));
    ok(
        "apply",
        lb.apply(&View::default(), &one(ID, VIP, &BACKENDS, None)),
    );
    let seen = ok(
        "run",
        world
            .client
            .ns
            .run(|| -> std::io::Result<Vec<(SocketAddr, String)>> {
                let mut out = Vec::new();
                for _ in 0..40 {
                    // A new socket each time: a new flow, so a new pick.
                    let s = UdpSocket::bind("0.0.0.0:0")?;
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.send_to(b"q", vip(5353))?;
                    let mut buf = [0u8; 64];
                    let (n, from) = s.recv_from(&mut buf)?;
                    out.push((from, String::from_utf8_lossy(&buf[..n]).into_owned()));
                }
                Ok(out)
            }),
    );
    let seen = ok("udp", seen);
    let mut backends = std::collections::BTreeSet::new();
    for (from, text) in &seen {
        assert_eq!(*from, vip(5353), "the reply must come from the VIP");
        let backend = text.split(' ').next().unwrap_or_default().to_string();
        assert!(text.contains(&CLIENT.to_string()), "{text}");
        backends.insert(backend);
    }
    assert!(backends.len() >= 2, "40 flows all on {backends:?}");
}

#[test]
fn a_service_without_backends_refuses_at_once() {
    need_root!();
    let world = World::new();
    let _srv = Servers::start(&world, &[80], &[]);
    let lb = ok("open", Dispatcher::open(&world.client.ns));
    let empty = one(ID, VIP, &[], None);
    ok("apply", lb.apply(&View::default(), &empty));
    let (took, res) = ok(
        "run",
        world.client.ns.run(|| {
            let start = Instant::now();
            let r = tcp_once(vip(80));
            (start.elapsed(), r)
        }),
    );
    match res {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}"),
        Ok(a) => panic!("connected to {a:?}"),
    }
    assert!(took < Duration::from_millis(100), "refused after {took:?}");
    // A backend comes: the VIP answers.
    let with = one(ID, VIP, &BACKENDS[..1], None);
    ok("add a backend", lb.apply(&empty, &with));
    let a = ok("run", world.client.ns.run(|| tcp_once(vip(80))));
    assert_eq!(ok("connect", a).backend, BACKENDS[0]);
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_backend() {
    need_root!();
    let world = World::new();
    let _srv = Servers::start(&world, &[80], &[]);
    let lb = ok("open", Dispatcher::open(&world.client.ns));
    let sticky = one(ID, VIP, &BACKENDS, Some(Duration::from_secs(600)));
    ok("apply", lb.apply(&View::default(), &sticky));
    let counts = spread(&tcp_many(&world, vip(80), 200));
    assert_eq!(counts.len(), 1, "{counts:?}");
    let chosen = counts.keys().next().copied();
    // Its backend leaves: the client picks another and sticks to it.
    let Some(chosen) = chosen else {
        panic!("no answer")
    };
    let rest: Vec<_> = BACKENDS.iter().copied().filter(|b| *b != chosen).collect();
    let fewer = one(ID, VIP, &rest, Some(Duration::from_secs(600)));
    ok("remove the chosen backend", lb.apply(&sticky, &fewer));
    let counts = spread(&tcp_many(&world, vip(80), 100));
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert!(!counts.contains_key(&chosen), "{counts:?}");
    // Without affinity the same client spreads.
    let loose = one(ID, VIP, &BACKENDS, None);
    ok("affinity off", lb.apply(&fewer, &loose));
    assert_eq!(ok("read", lb.read()), loose);
    let counts = spread(&tcp_many(&world, vip(80), 200));
    assert!(counts.len() >= 3, "{counts:?}");
}

#[test]
fn one_service_at_a_time_from_no_table_to_none() {
    need_root!();
    let world = World::new();
    let _srv = Servers::start(&world, &[80], &[]);
    let lb = ok("open", Dispatcher::open(&world.client.ns));
    let all = one(ID, VIP, &BACKENDS, None);
    let s = |v: &View| v.services.get(ID).cloned();
    // No table yet: adding the service creates it.
    ok("add", lb.apply_service(ID, None, s(&all).as_ref()));
    assert_eq!(ok("read", lb.read()), all.normalized());
    let three = one(ID, VIP, &BACKENDS[..3], None);
    ok(
        "remove a backend",
        lb.apply_service(ID, s(&all).as_ref(), s(&three).as_ref()),
    );
    assert_eq!(ok("read", lb.read()), three.normalized());
    let counts = spread(&tcp_many(&world, vip(80), 600));
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(!counts.contains_key(&BACKENDS[3]), "{counts:?}");
    // A backend change replaces the slot map whole: a stale `old` still lands on `new`.
    ok(
        "stale old",
        lb.apply_service(ID, s(&all).as_ref(), s(&three).as_ref()),
    );
    assert_eq!(ok("read", lb.read()), three.normalized());
    // Adding a service the table has fails whole.
    match lb.apply_service(ID, None, s(&all).as_ref()) {
        Err(plexus_lb::LbError::Diverged { .. }) => {}
        other => panic!("want Diverged, got {other:?}"),
    }
    assert_eq!(ok("read", lb.read()), three.normalized());
    ok("remove", lb.apply_service(ID, s(&three).as_ref(), None));
    assert_eq!(ok("read", lb.read()), View::default());
    let r = ok("run", world.client.ns.run(|| tcp_once(vip(80))));
    assert!(r.is_err(), "the VIP of a removed service answered: {r:?}");
}
