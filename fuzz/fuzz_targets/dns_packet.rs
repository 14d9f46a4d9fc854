//! `dns_packet`: the embedded DNS's packet path, fed one datagram per run.
//!
//! The same bytes go through every place a packet from outside reaches:
//! - as a client's query: `answer::answer` (the fast path for local A/AAAA, else the
//!   general one) over UDP and TCP for three sandboxes of a fixed zone (one that forwards,
//!   one with `ndots` set, one only on an internal network) and `answer::answer_host`;
//! - through the `wire` helpers (`question`, `ttl_offsets`, `age`, `bare_error`, …);
//! - as an upstream's answer: `cache::Cache::insert` then `get` for a client's query with
//!   the same question, and `forward::Forwarder::on_answer` (then `on_tcp_answer` when it
//!   asks for TCP) after a query with that question is in flight.
//!
//! Invariants checked, beyond "no panic": a `Reply` decodes (hickory) as a response with
//! the query's id; over UDP it fits the client's limit (`answer::max_size`); only messages
//! without a header or that are responses are dropped; cache hits and forwarded answers
//! carry the client's id; nothing stays in flight once the forwarder's deadline passed.

#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;
use plexus_dns::answer::{self, CacheKey, DropReason, Outcome, Transport};
use plexus_dns::cache::{Cache, CacheConfig};
use plexus_dns::forward::{Action, Forwarder, ForwarderConfig};
use plexus_dns::wire;
use plexus_dns::zone::{EndpointInfo, NetworkInfo, Records, SandboxInfo, SandboxView, Zone};

/// The host listener's domain.
const HOST_DOMAIN: &str = "plexus";
/// The id of the client query the upstream-side checks forward.
const CLIENT_ID: u16 = 0xbeef;

struct Fixture {
    zone: Zone,
    /// (sandbox, its view): forwards; `ndots` set; internal only.
    views: Vec<(&'static str, SandboxView)>,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(fixture);

/// A small zone: `front` (IPv4 and IPv6), `back` (internal), `wide` (a name with enough
/// addresses that its answer must be truncated over UDP, even at the EDNS size).
fn fixture() -> Fixture {
    let mut r = Records::default();
    for (id, name, ttl, internal) in [
        ("n1", "front", 5, false),
        ("n2", "back", 30, true),
        ("n3", "Wide", 600, false),
    ] {
        r.upsert_network(NetworkInfo {
            id: id.into(),
            name: name.into(),
            ttl,
            internal,
        });
    }
    for (id, ndots, upstreams) in [
        ("web", false, vec![]),
        ("db", true, vec!["192.0.2.53:53"]),
        ("lonely", false, vec![]),
        ("svc0", false, vec![]),
    ] {
        r.upsert_sandbox(SandboxInfo {
            id: id.into(),
            name: id.into(),
            netns: "/nonexistent".into(),
            upstreams: upstreams.iter().filter_map(|s| s.parse().ok()).collect(),
            ndots_set: ndots,
        });
    }
    let addr = |s: &str| s.parse::<IpAddr>().expect("fixture address");
    let mut eps: Vec<EndpointInfo> = vec![
        ep(
            "e1",
            "n1",
            "web",
            &["web", "www", "Front-End."],
            &["10.0.0.2", "fd00::2"],
            0,
        ),
        ep("e2", "n1", "db", &["db"], &["10.0.0.3"], 0),
        ep(
            "e3",
            "n2",
            "db",
            &["db", "primary"],
            &["10.1.0.3", "fd01::3"],
            1,
        ),
        ep(
            "e4",
            "n2",
            "lonely",
            &["lonely", "hermit"],
            &["10.1.0.4"],
            0,
        ),
        ep("e5", "n3", "web", &["web", "edge"], &["2001:db8::5"], 1),
    ];
    for i in 0..40u32 {
        let id = format!("w{i}");
        let v4 = format!("10.2.{}.{}", i / 200, i % 200 + 2);
        let v6 = format!("2001:db8:2::{:x}", i + 2);
        eps.push(EndpointInfo {
            id: id.clone(),
            network_id: "n3".into(),
            sandbox_id: if i == 0 { "svc0".into() } else { id },
            names: vec![format!("svc{i}"), "many".into()],
            addrs: vec![addr(&v4), addr(&v6)],
            order: 0,
            host: None,
            service: None,
        });
    }
    for e in eps {
        r.upsert_endpoint(e);
    }
    let zone = r.zone().clone();
    let views = ["web", "db", "lonely"]
        .into_iter()
        .map(|s| (s, (*zone.sandboxes[s]).clone()))
        .collect();
    Fixture { zone, views }
}

fn ep(id: &str, net: &str, sb: &str, names: &[&str], addrs: &[&str], order: u32) -> EndpointInfo {
    EndpointInfo {
        id: id.into(),
        network_id: net.into(),
        sandbox_id: sb.into(),
        names: names.iter().map(|s| s.to_string()).collect(),
        addrs: addrs
            .iter()
            .map(|a| a.parse().expect("fixture address"))
            .collect(),
        order,
        host: None,
        service: None,
    }
}

/// A deterministic shuffle source (an LCG seeded by the input).
fn shuffler(seed: usize) -> impl FnMut(usize) -> usize {
    let mut s = seed as u64 ^ 0x9e37_79b9_7f4a_7c15;
    move |n| {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((s >> 33) % n.max(1) as u64) as usize
    }
}

fuzz_target!(|data: &[u8]| {
    let fx = &*FIXTURE;
    for transport in [Transport::Udp, Transport::Tcp] {
        for (name, view) in &fx.views {
            let out = answer::answer(data, transport, &fx.zone, view, &mut shuffler(data.len()));
            check_outcome(data, transport, &out, Some((name, view)));
        }
        let out = answer::answer_host(
            data,
            transport,
            &fx.zone,
            HOST_DOMAIN,
            &mut shuffler(data.len()),
        );
        check_outcome(data, transport, &out, None);
    }
    check_wire(data);
    check_cache(data);
    for tcp_answer in [true, false] {
        check_forwarder(data, tcp_answer);
    }
});

/// What every outcome of `answer`/`answer_host` must satisfy.
fn check_outcome(
    query: &[u8],
    transport: Transport,
    out: &Outcome,
    sandbox: Option<(&&str, &SandboxView)>,
) {
    let decoded = answer::decode(query);
    match out {
        Outcome::Drop(DropReason::NoHeader) => {
            assert!(
                query.len() < wire::HEADER_LEN,
                "dropped a query with a header"
            );
        }
        Outcome::Drop(DropReason::Response) => {
            assert!(wire::is_response(query), "dropped a query as a response");
        }
        Outcome::Reply(bytes) => {
            assert!(
                query.len() >= wire::HEADER_LEN,
                "answered a headerless message"
            );
            assert!(!wire::is_response(query), "answered a response");
            let reply = match Message::from_vec(bytes) {
                Ok(m) => m,
                Err(e) => panic!("reply does not decode: {e}; reply {bytes:02x?}"),
            };
            assert_eq!(reply.message_type(), MessageType::Response);
            assert_eq!(Some(reply.id()), wire::id(query), "reply id");
            let limit = match (transport, &decoded) {
                (Transport::Tcp, _) => usize::from(u16::MAX),
                (Transport::Udp, Ok(q)) => answer::max_size(q, Transport::Udp),
                (Transport::Udp, Err(_)) => 512,
            };
            assert!(
                bytes.len() <= limit,
                "reply of {} bytes over the limit of {limit}",
                bytes.len()
            );
            if let Ok(q) = &decoded {
                assert_eq!(reply.queries(), q.queries(), "reply's question");
                assert_eq!(reply.op_code(), q.op_code());
            }
        }
        Outcome::Forward(f) => {
            let Some((name, view)) = sandbox else {
                panic!("the host listener forwarded a query");
            };
            assert!(view.forward, "sandbox {name} forwards but may not");
            let q = match &decoded {
                Ok(q) => q,
                Err(_) => panic!("forwarded a query that does not decode"),
            };
            assert_eq!(f.query.id(), q.id());
            assert_eq!(f.max_size, answer::max_size(q, transport));
            assert_eq!(
                f.key.name,
                f.key.name.to_lowercase(),
                "cache key not lower case"
            );
        }
    }
}

/// The byte-level helpers agree with each other and stay inside the message.
fn check_wire(data: &[u8]) {
    let _ = (wire::is_truncated(data), wire::rcode(data));
    let mut copy = data.to_vec();
    wire::set_id(&mut copy, 0x1234);
    if data.len() >= 2 {
        assert_eq!(wire::id(&copy), Some(0x1234));
        assert_eq!(copy[2..], data[2..]);
    } else {
        assert_eq!(copy, data);
    }
    if let Some(q) = wire::question(data) {
        assert_eq!(q.start, wire::HEADER_LEN);
        assert!(q.end <= data.len() && q.end >= q.start + 5);
    }
    if let Some(offsets) = wire::ttl_offsets(data) {
        let mut aged = data.to_vec();
        wire::age(&mut aged, &offsets, 7);
        for &at in &offsets {
            assert!(at + 4 <= data.len(), "TTL offset {at} past the end");
            let (Some(before), Some(after)) = (wire::ttl_at(data, at), wire::ttl_at(&aged, at))
            else {
                panic!("TTL at {at} unreadable");
            };
            assert!(after <= before && before - after <= 7);
        }
        let touched = |i: usize| offsets.iter().any(|&at| (at..at + 4).contains(&i));
        for (i, (a, b)) in data.iter().zip(&aged).enumerate() {
            assert!(a == b || touched(i), "age changed byte {i}, not a TTL");
        }
    }
    match wire::bare_error(data, 1) {
        Some(b) => {
            assert!(data.len() >= wire::HEADER_LEN);
            let m = match Message::from_vec(&b) {
                Ok(m) => m,
                Err(e) => panic!("bare error does not decode: {e}"),
            };
            assert_eq!(Some(m.id()), wire::id(data));
            assert_eq!(m.message_type(), MessageType::Response);
            assert_eq!(wire::rcode(&b), Some(1));
        }
        None => assert!(data.len() < wire::HEADER_LEN),
    }
}

/// A client's query asking the question of `answer` (its bytes as they are), or `None`
/// when `answer` has no single question.
fn client_query(answer: &[u8]) -> Option<Vec<u8>> {
    let q = wire::question(answer)?;
    let mut m = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    wire::set_id(&mut m, CLIENT_ID);
    m.extend_from_slice(&answer[q]);
    Some(m)
}

fn key() -> (u64, CacheKey) {
    (
        7,
        CacheKey {
            name: "example.com.".into(),
            qtype: 1,
            qclass: 1,
            dnssec: (false, false),
        },
    )
}

/// The input as an upstream's answer, kept and served from the cache.
fn check_cache(data: &[u8]) {
    let mut cache = Cache::new(CacheConfig {
        capacity: 4,
        ..CacheConfig::default()
    });
    let t0 = Instant::now();
    let query = client_query(data).unwrap_or_else(|| {
        let mut q = vec![0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        q
    });
    if !cache.insert(key(), data, t0) {
        assert!(cache.get(&key(), &query, t0).is_none());
        return;
    }
    assert!(
        Message::from_vec(data).is_ok(),
        "kept an answer that does not decode"
    );
    assert!(!wire::is_truncated(data), "kept a truncated answer");
    let Some(hit) = cache.get(&key(), &query, t0) else {
        panic!("a kept answer is not served at once");
    };
    cache_hit_ok(data, &hit);
    if let Some(later) = cache.get(&key(), &query, t0 + Duration::from_secs(3)) {
        cache_hit_ok(data, &later);
    }
    // A later lookup past any TTL the cache keeps misses and evicts.
    assert!(cache
        .get(&key(), &query, t0 + Duration::from_secs(3601))
        .is_none());
    assert!(cache.is_empty());
}

/// A hit is the kept answer: the client's id, the same code and records, TTLs no higher.
/// "The kept answer" is what hickory makes of the upstream's bytes once encoded again (the
/// cache keeps that encoding): decoding is not a fixpoint for oddities such as an `OPT`
/// record in the answer section, whose option bytes hickory drops.
fn cache_hit_ok(stored: &[u8], hit: &[u8]) {
    assert_eq!(
        wire::id(hit),
        Some(CLIENT_ID),
        "a cache hit keeps the client's id"
    );
    let kept = Message::from_vec(stored)
        .and_then(|m| m.to_vec())
        .and_then(|b| Message::from_vec(&b));
    let (Ok(kept), Ok(served)) = (kept, Message::from_vec(hit)) else {
        panic!("cache hit does not decode");
    };
    assert_eq!(served.response_code(), kept.response_code());
    let sections = |m: &Message| [m.answers().to_vec(), m.name_servers().to_vec()];
    for (a, b) in sections(&kept).iter().zip(sections(&served).iter()) {
        assert_eq!(a.len(), b.len(), "a cache hit lost or gained records");
        for (k, s) in a.iter().zip(b) {
            assert_eq!(
                (k.name(), k.record_type(), k.data()),
                (s.name(), s.record_type(), s.data())
            );
            assert!(s.ttl() <= k.ttl(), "a cache hit raised a TTL");
        }
    }
}

fn server(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n], 53))
}

/// The input as an upstream's datagram, after a client's query with its question went out.
fn check_forwarder(data: &[u8], tcp_answer: bool) {
    let query = client_query(data).unwrap_or_else(|| {
        let mut q = vec![0xbe, 0xef, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x07example\x03com\x00\x00\x1c\x00\x01");
        q
    });
    let t0 = Instant::now();
    let mut f: Forwarder<u32> = Forwarder::new(ForwarderConfig::default(), data.len() as u64);
    let first = f.on_query(t0, 1, 1, &query, &[server(1), server(2)]);
    let Some(Action::Send { to, bytes }) = first.first() else {
        panic!("no query sent upstream: {first:?}");
    };
    assert_eq!(*to, server(1));
    let Some(upstream_id) = wire::id(bytes) else {
        panic!("query sent without an id");
    };
    // The raw datagram from a server never asked is stray.
    assert!(
        f.on_answer(t0, server(9), data).is_empty(),
        "an answer from a server never asked was taken"
    );
    let mut answer = data.to_vec();
    wire::set_id(&mut answer, upstream_id);
    let mut actions = f.on_answer(t0 + Duration::from_millis(5), server(1), &answer);
    let mut replies = 0;
    let mut round = 0;
    while let Some(action) = actions.pop() {
        round += 1;
        assert!(round < 16, "the forwarder keeps asking");
        match action {
            Action::Reply {
                token,
                bytes,
                cacheable,
            } => {
                assert_eq!(token, 1);
                replies += 1;
                assert_eq!(wire::id(&bytes), Some(CLIENT_ID), "reply id");
                if cacheable {
                    assert_eq!(bytes.get(2..), answer.get(2..), "relayed answer changed");
                    let mut c = Cache::new(CacheConfig {
                        capacity: 4,
                        ..CacheConfig::default()
                    });
                    c.insert(key(), &bytes, t0);
                }
            }
            Action::Tcp {
                ticket,
                to,
                bytes: _,
            } => {
                assert_eq!(to, server(1), "TCP retry to another server");
                let tcp = tcp_answer.then(|| answer.clone());
                actions.extend(f.on_tcp_answer(t0 + Duration::from_millis(9), ticket, tcp));
            }
            Action::Send { to, bytes } => {
                assert_ne!(to, server(1), "asked the same server again over UDP");
                assert_eq!(bytes.get(2..), query.get(2..));
            }
        }
    }
    // Past the deadline, whatever is still in flight is answered.
    for action in f.on_timer(t0 + Duration::from_secs(10)) {
        match action {
            Action::Reply { bytes, .. } => {
                replies += 1;
                assert_eq!(wire::id(&bytes), Some(CLIENT_ID), "timeout reply id");
            }
            other => panic!("after the deadline: {other:?}"),
        }
    }
    assert_eq!(replies, 1, "the client got {replies} replies");
    assert_eq!(f.inflight(), 0);
}
