//! The forwarder under a deterministic simulator: scripted servers, a fake clock, and a
//! seeded fault loop.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

fn server(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n], 53))
}

/// `example.com. A` with id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = vec![
        (id >> 8) as u8,
        id as u8,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    for label in name.split('.').filter(|l| !l.is_empty()) {
        m.push(label.len() as u8);
        m.extend_from_slice(label.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// The server's answer to a query it got: same id and question, `rcode`, `flags` ORed in.
fn answer_to(sent: &[u8], rcode: u8, flags: u8) -> Vec<u8> {
    let mut a = sent.to_vec();
    a[2] |= 0x80 | flags;
    a[3] = 0x80 | rcode;
    a
}

fn sends<T>(actions: &[Action<T>]) -> Vec<(SocketAddr, Vec<u8>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, bytes } => Some((*to, bytes.clone())),
            _ => None,
        })
        .collect()
}

fn replies<T: Copy>(actions: &[Action<T>]) -> Vec<(T, Vec<u8>, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reply {
                token,
                bytes,
                cacheable,
            } => Some((*token, bytes.clone(), *cacheable)),
            _ => None,
        })
        .collect()
}

#[test]
fn relays_the_first_servers_answer_with_the_clients_id() {
    let t0 = Instant::now();
    let mut f: Forwarder<u32> = Forwarder::new(ForwarderConfig::default(), 1);
    let out = f.on_query(
        t0,
        7,
        1,
        &query(0xbeef, "example.com"),
        &[server(1), server(2)],
    );
    let s = sends(&out);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, server(1));
    assert_ne!(
        wire::id(&s[0].1),
        Some(0xbeef),
        "ids are the forwarder's own"
    );
    let out = f.on_answer(
        t0 + Duration::from_millis(5),
        server(1),
        &answer_to(&s[0].1, 0, 0),
    );
    let r = replies(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, 7);
    assert_eq!(wire::id(&r[0].1), Some(0xbeef));
    assert!(r[0].2);
    assert_eq!(f.inflight(), 0);
}

#[test]
fn a_dead_first_server_costs_one_short_timeout_once() {
    let cfg = ForwarderConfig::default();
    let t0 = Instant::now();
    let mut f: Forwarder<u32> = Forwarder::new(cfg, 2);
    let ups = [server(1), server(2)];
    let out = f.on_query(t0, 1, 1, &query(1, "a.example"), &ups);
    assert_eq!(sends(&out)[0].0, server(1));
    // Server 1 never answers: at the attempt timeout, server 2 is asked.
    let deadline = f.next_deadline().unwrap();
    assert!(deadline - t0 <= cfg.attempt_min, "{:?}", deadline - t0);
    let out = f.on_timer(deadline);
    let s = sends(&out);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, server(2));
    let out = f.on_answer(deadline, server(2), &answer_to(&s[0].1, 0, 0));
    assert_eq!(replies(&out).len(), 1);
    assert!(f.is_down(server(1), deadline));
    // The next lookups go straight to server 2.
    let t1 = deadline + Duration::from_millis(10);
    let out = f.on_query(t1, 2, 1, &query(2, "b.example"), &ups);
    let s = sends(&out);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].0, server(2));
    let out = f.on_answer(t1, server(2), &answer_to(&s[0].1, 0, 0));
    assert_eq!(replies(&out).len(), 1);
    // Once its down time is over, server 1 is probed alongside server 2.
    let t2 = t1 + cfg.down_for;
    let out = f.on_query(t2, 3, 1, &query(3, "c.example"), &ups);
    let s = sends(&out);
    assert_eq!(
        s.iter().map(|x| x.0).collect::<Vec<_>>(),
        [server(1), server(2)]
    );
    let out = f.on_answer(t2, server(2), &answer_to(&s[1].1, 0, 0));
    assert_eq!(replies(&out).len(), 1, "the probe costs the lookup nothing");
    // A late answer from the probed server is stray, not a second reply.
    let out = f.on_answer(t2, server(1), &answer_to(&s[0].1, 0, 0));
    assert!(replies(&out).is_empty());
}

#[test]
fn servfail_and_refused_move_on_at_once() {
    let t0 = Instant::now();
    let mut f: Forwarder<u32> = Forwarder::new(ForwarderConfig::default(), 3);
    let ups = [server(1), server(2), server(3)];
    let out = f.on_query(t0, 1, 1, &query(9, "x.example"), &ups);
    let s = sends(&out);
    let out = f.on_answer(t0, server(1), &answer_to(&s[0].1, 2, 0));
    let s = sends(&out);
    assert_eq!(s[0].0, server(2));
    let out = f.on_answer(t0, server(2), &answer_to(&s[0].1, 5, 0));
    let s = sends(&out);
    assert_eq!(s[0].0, server(3));
    let out = f.on_answer(t0, server(3), &answer_to(&s[0].1, 5, 0));
    let r = replies(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(wire::rcode(&r[0].1), Some(5), "the last failure is relayed");
    assert!(!r[0].2, "failures are not cached");
    assert_eq!(f.inflight(), 0);
}

#[test]
fn no_answer_at_all_is_servfail_at_the_deadline() {
    let cfg = ForwarderConfig::default();
    let t0 = Instant::now();
    let mut f: Forwarder<u32> = Forwarder::new(cfg, 4);
    f.on_query(t0, 1, 1, &query(5, "y.example"), &[server(1)]);
    let mut now = t0;
    let mut got = Vec::new();
    while let Some(d) = f.next_deadline() {
        now = d;
        got.extend(replies(&f.on_timer(d)));
    }
    assert_eq!(got.len(), 1);
    assert_eq!(wire::rcode(&got[0].1), Some(2));
    assert_eq!(wire::id(&got[0].1), Some(5));
    assert_eq!(now - t0, cfg.total);
    assert_eq!(f.stats().gave_up, 1);
}

#[test]
fn strays_and_spoofs_are_ignored() {
    let t0 = Instant::now();
    let mut f: Forwarder<u32> = Forwarder::new(ForwarderConfig::default(), 5);
    let out = f.on_query(t0, 1, 1, &query(5, "z.example"), &[server(1)]);
    let sent = sends(&out)[0].1.clone();
    // Wrong source, wrong id, wrong question, a query instead of an answer, garbage.
    assert!(f
        .on_answer(t0, server(9), &answer_to(&sent, 0, 0))
        .is_empty());
    let mut wrong_id = answer_to(&sent, 0, 0);
    wrong_id[1] ^= 0xff;
    assert!(f.on_answer(t0, server(1), &wrong_id).is_empty());
    let mut other = answer_to(&query(0, "q.example"), 0, 0);
    wire::set_id(&mut other, wire::id(&sent).unwrap());
    assert!(f.on_answer(t0, server(1), &other).is_empty());
    assert!(f.on_answer(t0, server(1), &sent).is_empty());
    assert!(f.on_answer(t0, server(1), &[1]).is_empty());
    assert_eq!(f.stats().stray, 5);
    let r = replies(&f.on_answer(t0, server(1), &answer_to(&sent, 0, 0)));
    assert_eq!(r.len(), 1);
}

#[test]
fn a_flooding_client_is_refused_and_others_are_not() {
    let cfg = ForwarderConfig {
        max_inflight_per_client: 3,
        ..ForwarderConfig::default()
    };
    let t0 = Instant::now();
    let mut f: Forwarder<u32> = Forwarder::new(cfg, 6);
    for i in 0..3 {
        assert_eq!(
            sends(&f.on_query(t0, i, 1, &query(i as u16, "f.example"), &[server(1)])).len(),
            1
        );
    }
    let r = replies(&f.on_query(t0, 9, 1, &query(9, "f.example"), &[server(1)]));
    assert_eq!(wire::rcode(&r[0].1), Some(5));
    assert_eq!(
        sends(&f.on_query(t0, 10, 2, &query(10, "g.example"), &[server(1)])).len(),
        1
    );
    assert_eq!(f.stats().refused, 1);
}

#[test]
fn truncated_answers_are_asked_again_over_tcp() {
    let t0 = Instant::now();
    let mut f: Forwarder<u32> = Forwarder::new(ForwarderConfig::default(), 7);
    let out = f.on_query(t0, 1, 1, &query(3, "big.example"), &[server(1)]);
    let sent = sends(&out)[0].1.clone();
    let out = f.on_answer(t0, server(1), &answer_to(&sent, 0, 0x02));
    let (ticket, to, bytes) = match &out[..] {
        [Action::Tcp { ticket, to, bytes }] => (*ticket, *to, bytes.clone()),
        other => panic!("{other:?}"),
    };
    assert_eq!(to, server(1));
    let full = answer_to(&bytes, 0, 0);
    let r = replies(&f.on_tcp_answer(t0, ticket, Some(full)));
    assert_eq!(r.len(), 1);
    assert!(!wire::is_truncated(&r[0].1));
    assert_eq!(wire::id(&r[0].1), Some(3));
}

/// Seeded fault loop: servers drop, delay, fail or answer at random; every query gets
/// exactly one reply by its deadline, and nothing stays behind. Replay a failure with
/// `PLEXUS_DNS_SEED=<seed>`.
#[test]
fn fault_loop_every_query_answered_once() {
    let seeds: Vec<u64> = match std::env::var("PLEXUS_DNS_SEED") {
        Ok(s) => vec![s.parse().unwrap()],
        Err(_) => (1..=40).collect(),
    };
    for seed in seeds {
        fault_run(seed);
    }
}

fn fault_run(seed: u64) {
    let cfg = ForwarderConfig::default();
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let t0 = Instant::now();
    let mut f: Forwarder<u32> = Forwarder::new(cfg, seed);
    let ups = [server(1), server(2), server(3)];
    // Per server: drop probability in percent (server 1 is dead half the runs).
    let dead1 = seed % 2 == 0;
    let mut inflight: Vec<(Instant, SocketAddr, Vec<u8>)> = Vec::new();
    let mut answered = std::collections::HashMap::<u32, usize>::new();
    let mut asked_at = std::collections::HashMap::<u32, Instant>::new();
    let mut now = t0;
    let n = 300u32;
    let handle = |actions: Vec<Action<u32>>,
                  now: Instant,
                  inflight: &mut Vec<(Instant, SocketAddr, Vec<u8>)>,
                  answered: &mut std::collections::HashMap<u32, usize>,
                  next: &mut dyn FnMut() -> u64| {
        let mut tcp = Vec::new();
        for a in actions {
            match a {
                Action::Send { to, bytes } => {
                    let r = next() % 100;
                    let drop = (to == server(1) && dead1) || r < 15;
                    if !drop {
                        let delay = Duration::from_millis(next() % 400);
                        let rcode = if next() % 100 < 10 { 2 } else { 0 };
                        let flags = if next() % 100 < 5 { 0x02 } else { 0 };
                        inflight.push((now + delay, to, answer_to(&bytes, rcode, flags)));
                    }
                }
                Action::Tcp { ticket, bytes, .. } => {
                    let ok = next() % 100 < 80;
                    tcp.push((ticket, ok.then(|| answer_to(&bytes, 0, 0))));
                }
                Action::Reply { token, .. } => *answered.entry(token).or_default() += 1,
            }
        }
        tcp
    };
    for i in 0..n {
        now += Duration::from_millis(next() % 20);
        // Deliver what is due, then timers.
        loop {
            inflight.sort_by_key(|x| x.0);
            let due = inflight.first().is_some_and(|x| x.0 <= now);
            let timer_due = f.next_deadline().is_some_and(|d| d <= now);
            if due {
                let (at, from, bytes) = inflight.remove(0);
                let acts = f.on_answer(at, from, &bytes);
                let tcp = handle(acts, at, &mut inflight, &mut answered, &mut next);
                for (t, a) in tcp {
                    let acts = f.on_tcp_answer(at, t, a);
                    handle(acts, at, &mut inflight, &mut answered, &mut next);
                }
            } else if timer_due {
                let d = f.next_deadline().unwrap_or(now);
                let acts = f.on_timer(d);
                handle(acts, d, &mut inflight, &mut answered, &mut next);
            } else {
                break;
            }
        }
        asked_at.insert(i, now);
        let acts = f.on_query(
            now,
            i,
            u64::from(i % 4),
            &query(i as u16, "loop.example"),
            &ups,
        );
        handle(acts, now, &mut inflight, &mut answered, &mut next);
    }
    // Drain.
    loop {
        inflight.sort_by_key(|x| x.0);
        let a = inflight.first().map(|x| x.0);
        let d = f.next_deadline();
        match (a, d) {
            (Some(a), Some(d)) if a <= d => {
                let (at, from, bytes) = inflight.remove(0);
                let acts = f.on_answer(at, from, &bytes);
                let tcp = handle(acts, at, &mut inflight, &mut answered, &mut next);
                for (t, x) in tcp {
                    let acts = f.on_tcp_answer(at, t, x);
                    handle(acts, at, &mut inflight, &mut answered, &mut next);
                }
            }
            (Some(_), None) => {
                let (at, from, bytes) = inflight.remove(0);
                let acts = f.on_answer(at, from, &bytes);
                handle(acts, at, &mut inflight, &mut answered, &mut next);
            }
            (_, Some(d)) => {
                let acts = f.on_timer(d);
                handle(acts, d, &mut inflight, &mut answered, &mut next);
            }
            (None, None) => break,
        }
    }
    for i in 0..n {
        assert_eq!(
            answered.get(&i),
            Some(&1),
            "seed {seed}: query {i} answered {:?} times",
            answered.get(&i)
        );
    }
    assert_eq!(f.inflight(), 0, "seed {seed}");
    assert!(f.by_id.is_empty(), "seed {seed}: ids left behind");
    assert!(f.per_client.is_empty(), "seed {seed}");
}
