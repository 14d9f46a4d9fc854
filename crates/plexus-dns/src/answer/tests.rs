use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::*;
use crate::zone::{EndpointInfo, NetworkInfo, Records, SandboxInfo};

fn records() -> Records {
    let mut r = Records::default();
    for (id, name, internal) in [("n1", "front", false), ("n2", "back", true)] {
        r.upsert_network(NetworkInfo {
            id: id.into(),
            name: name.into(),
            ttl: 5,
            internal,
        });
    }
    for s in ["web", "db", "lonely"] {
        r.upsert_sandbox(SandboxInfo {
            id: s.into(),
            name: s.into(),
            netns: "/x".into(),
            upstreams: vec![],
            ndots_set: s == "db",
        });
    }
    let eps = [
        (
            "e1",
            "n1",
            "web",
            vec!["web", "www"],
            vec!["10.0.0.2", "fd00::2"],
        ),
        ("e2", "n1", "db", vec!["db"], vec!["10.0.0.3"]),
        ("e3", "n2", "db", vec!["db", "primary"], vec!["10.1.0.3"]),
        ("e4", "n2", "lonely", vec!["lonely"], vec!["10.1.0.4"]),
    ];
    for (id, net, sb, names, addrs) in eps {
        r.upsert_endpoint(EndpointInfo {
            id: id.into(),
            network_id: net.into(),
            sandbox_id: sb.into(),
            names: names.into_iter().map(String::from).collect(),
            addrs: addrs.into_iter().map(|a| a.parse().unwrap()).collect(),
            order: 0,
            host: None,
            service: None,
        });
    }
    r
}

fn q(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(42).set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

fn ask(sandbox: &str, bytes: &[u8]) -> Outcome {
    let r = records();
    let z = r.zone();
    let view = z.sandboxes[sandbox].clone();
    answer(bytes, Transport::Udp, z, &view, &mut |n| n - 1)
}

fn reply(o: Outcome) -> Message {
    match o {
        Outcome::Reply(b) => Message::from_vec(&b).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn names_aliases_and_qualified_names_case_insensitively() {
    for name in ["web.", "WWW.", "web.front.", "Www.Front."] {
        let m = reply(ask("db", &q(name, RecordType::A)));
        assert_eq!(m.response_code(), ResponseCode::NoError, "{name}");
        assert_eq!(addrs(&m), ["10.0.0.2".parse::<IpAddr>().unwrap()], "{name}");
        assert_eq!(m.id(), 42);
        assert!(m.authoritative() && m.recursion_available() && m.recursion_desired());
        assert_eq!(m.answers()[0].ttl(), 5);
        assert_eq!(
            m.queries()[0].name().to_ascii(),
            name,
            "the question as asked"
        );
    }
    let m = reply(ask("db", &q("web.", RecordType::AAAA)));
    assert_eq!(addrs(&m), ["fd00::2".parse::<IpAddr>().unwrap()]);
}

#[test]
fn a_known_name_without_the_type_is_an_empty_answer() {
    let m = reply(ask("web", &q("db.", RecordType::AAAA)));
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    let m = reply(ask("web", &q("db.", RecordType::MX)));
    assert!(m.answers().is_empty());
}

#[test]
fn first_network_wins_and_other_networks_are_invisible() {
    // db is on both networks; web is only on n1 and must not see n2's names.
    let m = reply(ask("db", &q("primary.", RecordType::A)));
    assert_eq!(addrs(&m), ["10.1.0.3".parse::<IpAddr>().unwrap()]);
    match ask("web", &q("primary.", RecordType::A)) {
        Outcome::Forward(f) => assert_eq!(f.key.name, "primary."),
        other => panic!("{other:?}"),
    }
    match ask("web", &q("lonely.back.", RecordType::A)) {
        Outcome::Forward(_) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn ptr_answers_name_dot_network() {
    let m = reply(ask("web", &q("3.0.0.10.in-addr.arpa.", RecordType::PTR)));
    let names: Vec<String> = m
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::PTR(p) => Some(p.0.to_ascii()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["db.front."]);
    // An address of a network web is not on is forwarded, not answered.
    assert!(matches!(
        ask("web", &q("4.0.1.10.in-addr.arpa.", RecordType::PTR)),
        Outcome::Forward(_)
    ));
}

#[test]
fn internal_only_sandboxes_do_not_forward() {
    let m = reply(ask("lonely", &q("example.com.", RecordType::A)));
    assert_eq!(m.response_code(), ResponseCode::ServFail);
}

#[test]
fn single_label_miss_with_ndots_set_is_empty_not_forwarded() {
    let m = reply(ask("db", &q("nothere.", RecordType::A)));
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    assert!(matches!(
        ask("web", &q("nothere.", RecordType::A)),
        Outcome::Forward(_)
    ));
}

#[test]
fn several_addresses_are_shuffled() {
    let mut r = Records::default();
    r.upsert_network(NetworkInfo {
        id: "n".into(),
        name: "n".into(),
        ttl: 5,
        internal: false,
    });
    r.upsert_sandbox(SandboxInfo {
        id: "c".into(),
        name: "c".into(),
        netns: "/x".into(),
        upstreams: vec![],
        ndots_set: false,
    });
    for i in 0..8u8 {
        r.upsert_endpoint(EndpointInfo {
            id: format!("e{i}"),
            network_id: "n".into(),
            sandbox_id: if i == 0 { "c".into() } else { format!("s{i}") },
            names: vec![format!("s{i}"), "svc".into()],
            addrs: vec![IpAddr::from([10, 0, 0, i + 2])],
            order: 0,
            host: None,
            service: None,
        });
    }
    let z = r.zone();
    let view = z.sandboxes["c"].clone();
    let mut seed = 1u64;
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..50 {
        let mut rnd = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as usize) % n
        };
        let m = reply(answer(
            &q("svc.", RecordType::A),
            Transport::Udp,
            z,
            &view,
            &mut rnd,
        ));
        let a = addrs(&m);
        assert_eq!(a.len(), 8);
        firsts.insert(a[0]);
    }
    assert!(firsts.len() > 3, "answers are shuffled: {firsts:?}");
}

#[test]
fn bad_input_gets_the_right_code() {
    // No header: dropped.
    assert!(matches!(
        ask("web", &[1, 2, 3]),
        Outcome::Drop(DropReason::NoHeader)
    ));
    // A response: dropped.
    let mut resp = q("web.", RecordType::A);
    resp[2] |= 0x80;
    assert!(matches!(
        ask("web", &resp),
        Outcome::Drop(DropReason::Response)
    ));
    // Truncated question: FORMERR with the id.
    let whole = q("web.", RecordType::A);
    let m = reply(ask("web", &whole[..whole.len() - 3]));
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    assert_eq!(m.id(), 42);
    // A compression loop in the question.
    let mut lp = whole[..12].to_vec();
    lp.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    assert_eq!(
        reply(ask("web", &lp)).response_code(),
        ResponseCode::FormErr
    );
    // Section counts the datagram cannot hold (a full decode would reserve room for
    // 65,535 entries per section): FORMERR with the id, without decoding.
    let mut lying = whole.clone();
    lying[6..12].fill(0xff);
    let m = reply(ask("web", &lying));
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    assert_eq!(m.id(), 42);
    // Two questions.
    let mut two = Message::new();
    two.set_id(1);
    two.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
    two.add_query(Query::query(Name::from_ascii("b.").unwrap(), RecordType::A));
    let m = reply(ask("web", &two.to_vec().unwrap()));
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    // Found by the fuzz target dns_packet: so many questions that the FORMERR echoing
    // them was 524 bytes over UDP. Cut to the header, with TC.
    let mut many = Message::new();
    many.set_id(3);
    for i in 0..24 {
        let name = Name::from_ascii(format!("{i:02}{}.", "x".repeat(58))).unwrap();
        many.add_query(Query::query(name, RecordType::A));
    }
    let Outcome::Reply(b) = ask("web", &many.to_vec().unwrap()) else {
        panic!("no reply to many questions");
    };
    assert!(b.len() <= 512, "{} bytes over UDP", b.len());
    let m = Message::from_vec(&b).unwrap();
    assert_eq!((m.id(), m.response_code()), (3, ResponseCode::FormErr));
    assert!(m.truncated());
    // Another opcode.
    let mut st = Message::new();
    st.set_id(1).set_op_code(hickory_proto::op::OpCode::Status);
    st.add_query(Query::query(Name::from_ascii("a.").unwrap(), RecordType::A));
    assert_eq!(
        reply(ask("web", &st.to_vec().unwrap())).response_code(),
        ResponseCode::NotImp
    );
    // Chaos class, zone transfer: refused.
    let mut ch = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
    ch.set_query_class(DNSClass::CH);
    let mut m = Message::new();
    m.set_id(1).add_query(ch);
    assert_eq!(
        reply(ask("web", &m.to_vec().unwrap())).response_code(),
        ResponseCode::Refused
    );
    assert_eq!(
        reply(ask("web", &q("front.", RecordType::AXFR))).response_code(),
        ResponseCode::Refused
    );
    // EDNS version 1: BADVERS.
    let mut m = Message::new();
    m.set_id(1).add_query(Query::query(
        Name::from_ascii("web.").unwrap(),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_version(1);
    m.set_edns(e);
    let r = reply(ask("web", &m.to_vec().unwrap()));
    // BADVERS and BADSIG share the value 16.
    assert_eq!(
        u16::from(r.response_code()),
        u16::from(ResponseCode::BADVERS)
    );
    assert_eq!(r.message_type(), MessageType::Response);
}

#[test]
fn big_answers_are_truncated_over_udp_and_whole_over_tcp() {
    let mut r = Records::default();
    r.upsert_network(NetworkInfo {
        id: "n".into(),
        name: "n".into(),
        ttl: 5,
        internal: false,
    });
    r.upsert_sandbox(SandboxInfo {
        id: "c".into(),
        name: "c".into(),
        netns: "/x".into(),
        upstreams: vec![],
        ndots_set: false,
    });
    for i in 0..100u8 {
        r.upsert_endpoint(EndpointInfo {
            id: format!("e{i}"),
            network_id: "n".into(),
            sandbox_id: if i == 0 { "c".into() } else { format!("s{i}") },
            names: vec![format!("s{i}"), "many".into()],
            addrs: vec![IpAddr::from([10, 0, 1, i])],
            order: 0,
            host: None,
            service: None,
        });
    }
    let z = r.zone();
    let view = z.sandboxes["c"].clone();
    let bytes = q("many.", RecordType::A);
    let Outcome::Reply(b) = answer(&bytes, Transport::Udp, z, &view, &mut |_| 0) else {
        panic!()
    };
    assert!(b.len() <= 512);
    let m = Message::from_vec(&b).unwrap();
    assert!(m.truncated());
    let Outcome::Reply(b) = answer(&bytes, Transport::Tcp, z, &view, &mut |_| 0) else {
        panic!()
    };
    let m = Message::from_vec(&b).unwrap();
    assert!(!m.truncated());
    assert_eq!(m.answers().len(), 100);
}

/// The fast path gives the general path's bytes for everything it takes, and declines the
/// rest.
#[test]
fn fast_path_matches_the_general_path() {
    let r = records();
    let z = r.zone();
    let view = z.sandboxes["db"].clone();
    let with_edns = |name: &str, t: RecordType, payload: u16, version: u8| {
        let mut m = Message::new();
        m.set_id(7)
            .set_recursion_desired(true)
            .set_checking_disabled(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        let mut e = Edns::new();
        e.set_max_payload(payload);
        e.set_version(version);
        m.set_edns(e);
        m.to_vec().unwrap()
    };
    let taken = [
        q("web.", RecordType::A),
        q("WeB.FrOnT.", RecordType::A),
        q("web.", RecordType::AAAA),
        q("primary.", RecordType::AAAA),
        with_edns("www.", RecordType::A, 4096, 0),
        with_edns("www.", RecordType::A, 100, 0),
    ];
    for bytes in &taken {
        for t in [Transport::Udp, Transport::Tcp] {
            let fast = fast::answer(bytes, t, z, &view, &mut |n| n - 1)
                .unwrap_or_else(|| panic!("fast path declined {bytes:?}"));
            let Outcome::Reply(general) = general(bytes, t, z, &view, &mut |n| n - 1) else {
                panic!("general path did not reply");
            };
            assert_eq!(fast, general, "{:?}", Message::from_vec(bytes).unwrap());
        }
    }
    // An odd byte in a label: `w!b`.
    let mut odd = q("web.", RecordType::A);
    odd[14] = b'!';
    let declined = [
        odd,
        q("nothere.", RecordType::A),
        q("web.", RecordType::MX),
        q("3.0.0.10.in-addr.arpa.", RecordType::PTR),
        with_edns("www.", RecordType::A, 4096, 1),
    ];
    for bytes in &declined {
        assert!(fast::answer(bytes, Transport::Udp, z, &view, &mut |n| n - 1).is_none());
    }
    // Truncated or trailing bytes: declined, and the general path answers FORMERR.
    let whole = q("web.", RecordType::A);
    assert!(fast::answer(
        &whole[..whole.len() - 1],
        Transport::Udp,
        z,
        &view,
        &mut |_| 0
    )
    .is_none());
    let mut trailing = whole.clone();
    trailing.push(0);
    assert!(fast::answer(&trailing, Transport::Udp, z, &view, &mut |_| 0).is_none());
}

/// Network `app` with client `c` (which forwards, ndots not set), vip service `websvc` with
/// eight tasks, and dnsrr service `rr` with none.
fn services() -> Records {
    use crate::zone::{ServiceInfo, ServiceMode, ServiceNetwork, ServiceRef};
    let mut r = Records::default();
    r.upsert_network(NetworkInfo {
        id: "n".into(),
        name: "app".into(),
        ttl: 7,
        internal: false,
    });
    r.upsert_sandbox(SandboxInfo {
        id: "c".into(),
        name: "c".into(),
        netns: "/x".into(),
        upstreams: vec![],
        ndots_set: false,
    });
    r.upsert_endpoint(EndpointInfo {
        id: "ec".into(),
        network_id: "n".into(),
        sandbox_id: "c".into(),
        names: vec!["c".into()],
        addrs: vec![IpAddr::from([10, 0, 0, 2])],
        order: 0,
        host: None,
        service: None,
    });
    for (id, name, mode, vips) in [
        (
            "s1",
            "websvc",
            ServiceMode::Vip,
            vec![IpAddr::from([10, 0, 0, 100])],
        ),
        ("s2", "rr", ServiceMode::Dnsrr, vec![]),
    ] {
        r.upsert_service(ServiceInfo {
            id: id.into(),
            name: name.into(),
            mode,
            networks: vec![ServiceNetwork {
                network_id: "n".into(),
                vips,
            }],
        });
    }
    for i in 0..8u8 {
        r.upsert_endpoint(EndpointInfo {
            id: format!("e{i}"),
            network_id: "n".into(),
            sandbox_id: format!("t{i}"),
            names: vec![format!("t{i}")],
            addrs: vec![IpAddr::from([10, 0, 0, 10 + i])],
            order: 0,
            host: None,
            service: Some(ServiceRef {
                id: "s1".into(),
                name: "websvc".into(),
            }),
        });
    }
    r
}

#[test]
fn services_answer_vip_tasks_ptr_and_empty_names() {
    let r = services();
    let z = r.zone();
    let view = z.sandboxes["c"].clone();
    let mut seed = 7u64;
    let mut rnd = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n
    };
    let mut ask =
        |name: &str, t: RecordType| reply(answer(&q(name, t), Transport::Udp, z, &view, &mut rnd));
    for name in ["websvc.", "WebSvc.App."] {
        let m = ask(name, RecordType::A);
        assert_eq!(addrs(&m), [IpAddr::from([10, 0, 0, 100])], "{name}");
        assert_eq!(m.answers()[0].ttl(), 7);
    }
    // No IPv6 VIP: an empty answer.
    let m = ask("websvc.", RecordType::AAAA);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
    // tasks.: every backend, shuffled.
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..30 {
        let a = addrs(&ask("TASKS.websvc.", RecordType::A));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (10..18)
                .map(|i| IpAddr::from([10, 0, 0, i]))
                .collect::<Vec<_>>()
        );
        firsts.insert(a[0]);
    }
    assert!(firsts.len() > 3, "tasks. answers are shuffled: {firsts:?}");
    // PTR of the VIP: the service; of a task: its sandbox.
    let ptrs = |m: Message| -> Vec<String> {
        m.answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::PTR(p) => Some(p.0.to_ascii()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        ptrs(ask("100.0.0.10.in-addr.arpa.", RecordType::PTR)),
        ["websvc.app."]
    );
    assert_eq!(
        ptrs(ask("11.0.0.10.in-addr.arpa.", RecordType::PTR)),
        ["t1.app."]
    );
    // A dnsrr service without tasks, and its tasks.: empty answers, not forwarded.
    for name in ["rr.", "tasks.rr.", "rr.app.", "tasks.rr.app."] {
        let m = ask(name, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{name}");
        assert!(m.answers().is_empty(), "{name}");
        assert!(m.authoritative(), "{name}: answered here");
    }
}
