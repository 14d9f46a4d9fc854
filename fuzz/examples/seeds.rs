//! Writes the seed corpora of the fuzz targets into `fuzz/corpus/<target>/seed-*`:
//! valid and broken DNS queries and upstream answers, API request bodies and query values,
//! network plugins' answers, gossip frames made by the codec, endpoint records. Run from anywhere:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --no-default-features --features dns,gossip,lb --example seeds
//! ```
//!
//! Seeds are rewritten in place (same names, same bytes); what the fuzzer added is left.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{self, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use plexus_gossip::codec::{
    encode_frame, AttachUpdate, Body, EntryUpdate, Frame, Header, Item, MemberState, MemberUpdate,
};

type Seeds = Vec<(String, Vec<u8>)>;
type Items = Vec<Item<SocketAddr>>;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus");
    write(&root.join("dns_packet"), dns())?;
    write(&root.join("api_json"), api())?;
    write(&root.join("gossip_frame"), gossip())?;
    write(&root.join("endpoint_record"), endpoint_records())?;
    write(&root.join("service_record"), service_records())?;
    write(&root.join("plugin_answer"), plugin_answers())?;
    Ok(())
}

/// Endpoint records (`endpoint_table` values): whole ones, and ones a reader refuses or
/// reads in part.
fn endpoint_records() -> Seeds {
    use plexus_dns::record::{EndpointRecord, MAX_ADDRS, MAX_NAMES};
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("seed address");
    let full = EndpointRecord {
        sandbox: "web1".into(),
        aliases: vec!["front".into(), "host-one".into()],
        addrs: vec![ip("10.0.0.2"), ip("fd00::2")],
        service: None,
    };
    let bare = EndpointRecord {
        sandbox: "x".into(),
        aliases: vec![],
        addrs: vec![],
        service: None,
    };
    let most = EndpointRecord {
        sandbox: "a".repeat(253),
        aliases: (1..MAX_NAMES).map(|i| format!("alias{i}")).collect(),
        addrs: (0..MAX_ADDRS as u8)
            .map(|i| std::net::IpAddr::from([10, 0, 0, i]))
            .collect(),
        service: None,
    };
    let enc = |r: &EndpointRecord| r.encode().expect("seed record");
    let mut later = enc(&full);
    later.extend_from_slice(&[9, 0, 3, b'n', b'e', b'w']);
    let mut v2 = enc(&full);
    v2[0] = 2;
    let whole = enc(&full);
    vec![
        ("full".into(), whole.clone()),
        ("bare".into(), enc(&bare)),
        ("most".into(), enc(&most)),
        ("later-field".into(), later),
        ("version-2".into(), v2),
        ("cut".into(), whole[..whole.len() - 3].to_vec()),
        (
            "bad-address".into(),
            vec![1, 1, 0, 1, b'a', 3, 0, 5, 1, 2, 3, 4, 5],
        ),
        ("not-utf8".into(), vec![1, 1, 0, 2, 0xc3, 0x28]),
    ]
}

/// Service records (`service_table` and `ingress_table` values): whole ones, and ones a
/// reader refuses.
fn service_records() -> Seeds {
    use plexus_lb::record::{GatewayRecord, TaskRecord, MAX_VIPS};
    let task = TaskRecord {
        service_id: "ab".repeat(32),
        service_name: "web".into(),
        vips: vec![[10, 0, 0, 2].into()],
        addr: [10, 0, 0, 7].into(),
        sandbox: "web1".into(),
    };
    let most = TaskRecord {
        vips: (0..MAX_VIPS as u8).map(|i| [10, 0, 1, i].into()).collect(),
        service_name: "s".repeat(253),
        ..task.clone()
    };
    let enc = |r: &TaskRecord| r.encode().expect("seed record");
    let whole = enc(&task);
    let mut later = whole.clone();
    later.extend_from_slice(&[9, 0, 3, b'n', b'e', b'w']);
    let gateway = GatewayRecord {
        addr: [10, 0, 0, 3].into(),
        mac: [2, 0x42, 10, 0, 0, 3],
    }
    .encode();
    vec![
        ("task".into(), whole.clone()),
        ("task-most".into(), enc(&most)),
        ("task-later-field".into(), later),
        ("task-cut".into(), whole[..whole.len() - 2].to_vec()),
        ("gateway".into(), gateway.clone()),
        ("gateway-cut".into(), gateway[..7].to_vec()),
    ]
}

fn write(dir: &Path, seeds: Seeds) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let n = seeds.len();
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    println!("{}: {n} seeds", dir.display());
    Ok(())
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("seed name")
}

fn query(id: u16, qname: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::new();
    m.set_id(id).set_recursion_desired(true);
    m.add_query(Query::query(name(qname), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

fn bytes(m: &Message) -> Vec<u8> {
    m.to_vec().expect("seed message encodes")
}

/// A response to `q` with `answers`, `rcode` and optionally a SOA in the authority section.
fn response(q: &Message, rcode: ResponseCode, answers: Vec<Record>, soa: Option<u32>) -> Message {
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_recursion_desired(true)
        .set_recursion_available(true)
        .set_response_code(rcode);
    m.add_queries(q.queries().iter().cloned());
    m.insert_answers(answers);
    if let Some(min) = soa {
        let zone = name("example.com.");
        let rd = SOA::new(
            name("ns.example.com."),
            name("host.example.com."),
            1,
            60,
            60,
            60,
            min,
        );
        m.add_name_server(Record::from_rdata(zone, 300, RData::SOA(rd)));
    }
    if let Some(e) = q.extensions() {
        m.set_edns(e.clone());
    }
    m
}

fn dns() -> Seeds {
    use RecordType::*;
    let mut s: Seeds = Vec::new();
    let mut add = |n: &str, b: Vec<u8>| s.push((n.to_string(), b));

    // Queries the zone answers (names, aliases, NAME.NETWORK, case), over UDP and EDNS.
    add("a-name", bytes(&query(1, "web.", A, None)));
    add("a-alias-case", bytes(&query(2, "WWW.Front.", A, None)));
    add("aaaa-qualified", bytes(&query(3, "web.front.", AAAA, None)));
    add("any-v6-net", bytes(&query(4, "edge.wide.", ANY, None)));
    add("a-many-udp", bytes(&query(5, "many.", A, None)));
    add(
        "any-many-edns",
        bytes(&query(6, "many.wide.", ANY, Some(4096))),
    );
    add(
        "aaaa-many-edns-small",
        bytes(&query(7, "many.", AAAA, Some(600))),
    );
    add("mx-known-name", bytes(&query(8, "db.", MX, None)));
    add(
        "ptr-v4",
        bytes(&query(9, "2.0.0.10.in-addr.arpa.", PTR, None)),
    );
    let v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    add("ptr-v6", bytes(&query(10, v6, PTR, Some(1232))));
    add(
        "ptr-bad",
        bytes(&query(11, "300.0.0.10.in-addr.arpa.", PTR, None)),
    );
    add("one-label-miss", bytes(&query(12, "nosuch.", A, None)));
    add("forward", bytes(&query(13, "example.com.", A, None)));
    add("forward-do", {
        let mut q = query(14, "Example.COM.", AAAA, Some(1232));
        if let Some(e) = q.extensions_mut() {
            e.set_dnssec_ok(true);
        }
        bytes(&q)
    });
    add("host-name", bytes(&query(15, "web.front.plexus.", A, None)));
    add(
        "host-miss",
        bytes(&query(16, "nope.back.plexus.", AAAA, None)),
    );
    add("host-outside", bytes(&query(17, "example.org.", A, None)));
    // Refused, not implemented, bad version, format errors.
    add("axfr", bytes(&query(18, "front.", AXFR, None)));
    add("class-chaos", {
        let mut q = query(19, "version.bind.", TXT, None);
        let mut qq = Query::query(name("version.bind."), TXT);
        qq.set_query_class(DNSClass::CH);
        q.take_queries();
        q.add_query(qq);
        bytes(&q)
    });
    add("qtype-opt", bytes(&query(20, "web.", OPT, None)));
    add("opcode-status", {
        let mut q = query(21, "web.", A, None);
        q.set_op_code(OpCode::Status);
        bytes(&q)
    });
    add("edns-v1", {
        let mut q = query(22, "web.", A, Some(1232));
        if let Some(e) = q.extensions_mut() {
            e.set_version(1);
        }
        bytes(&q)
    });
    add("two-questions", {
        let mut q = query(23, "web.", A, None);
        q.add_query(Query::query(name("db."), A));
        bytes(&q)
    });
    add("no-question", {
        let mut q = Message::new();
        q.set_id(24);
        bytes(&q)
    });
    // TCP-sized: a name at the length limit.
    let a63 = "a".repeat(63);
    let long = format!("{a63}.{a63}.{a63}.{}.", "b".repeat(61));
    add("name-255", bytes(&query(25, &long, A, None)));

    // Broken on the wire.
    let web = bytes(&query(26, "web.front.", A, None));
    add("cut-header", web[..11].to_vec());
    add("header-only", web[..12].to_vec());
    add("cut-name", web[..16].to_vec());
    add("cut-type", web[..web.len() - 2].to_vec());
    let h = vec![0, 27, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut loop_self = h.clone();
    loop_self.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    add("compression-loop-self", loop_self);
    let mut loop_two = h.clone();
    loop_two.extend_from_slice(&[3, b'w', b'e', b'b', 0xc0, 12, 0, 1, 0, 1]);
    add("compression-loop-back", loop_two);
    let mut forward_ptr = h.clone();
    forward_ptr.extend_from_slice(&[0xc0, 40, 0, 1, 0, 1]);
    add("compression-forward", forward_ptr);
    let mut label_type = h.clone();
    label_type.extend_from_slice(&[0x41, 1, 2, 3, 0, 0, 1, 0, 1]);
    add("label-extended", label_type);
    let mut count_lies = h.clone();
    count_lies[7] = 5;
    count_lies.extend_from_slice(b"\x03web\x00\x00\x01\x00\x01");
    add("counts-lie", count_lies);
    let mut qr_set = web.clone();
    qr_set[2] |= 0x80;
    add("response-as-query", qr_set);

    // Upstream answers (the harness derives the client's question from them).
    let q = query(30, "example.com.", A, Some(1232));
    let a = |ttl, o: u8| {
        Record::from_rdata(
            name("example.com."),
            ttl,
            RData::A(rdata::A::new(192, 0, 2, o)),
        )
    };
    add(
        "up-answer",
        bytes(&response(
            &q,
            ResponseCode::NoError,
            vec![a(60, 1), a(30, 2)],
            None,
        )),
    );
    add(
        "up-nxdomain-soa",
        bytes(&response(&q, ResponseCode::NXDomain, vec![], Some(30))),
    );
    add(
        "up-nodata-soa",
        bytes(&response(&q, ResponseCode::NoError, vec![], Some(0))),
    );
    add(
        "up-servfail",
        bytes(&response(&q, ResponseCode::ServFail, vec![], None)),
    );
    add(
        "up-refused",
        bytes(&response(&q, ResponseCode::Refused, vec![], None)),
    );
    let mut tc = response(&q, ResponseCode::NoError, vec![a(60, 3)], None);
    tc.set_truncated(true);
    add("up-truncated", bytes(&tc));
    let q6 = query(31, "www.example.com.", AAAA, None);
    let cname = Record::from_rdata(
        name("www.example.com."),
        300,
        RData::CNAME(rdata::CNAME(name("example.com."))),
    );
    let aaaa = Record::from_rdata(
        name("example.com."),
        20,
        RData::AAAA(rdata::AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    );
    add(
        "up-cname-chain",
        bytes(&response(
            &q6,
            ResponseCode::NoError,
            vec![cname, aaaa],
            None,
        )),
    );
    let many: Vec<Record> = (0..60).map(|i| a(120, i as u8)).collect();
    add(
        "up-large",
        bytes(&response(&q, ResponseCode::NoError, many, None)),
    );
    let mut looped = bytes(&response(&q, ResponseCode::NoError, vec![a(60, 9)], None));
    // The answer's owner name (a pointer to the question) made to point at itself.
    if let Some(at) = looped.windows(2).position(|w| w == [0xc0, 12]) {
        looped[at + 1] = at as u8;
    }
    add("up-answer-loop", looped);
    let mut rdlen_lie = bytes(&response(&q, ResponseCode::NoError, vec![a(60, 4)], None));
    let n = rdlen_lie.len();
    rdlen_lie.truncate(n - 2);
    add("up-cut-rdata", rdlen_lie);
    s
}

fn api() -> Seeds {
    let text: &[(&str, &str)] = &[
        ("net-minimal", r#"{"Name":"n1"}"#),
        (
            "net-full",
            r#"{"Name":"n2","CheckDuplicate":true,"Driver":"bridge","Internal":false,"Attachable":true,"Scope":"local","Ingress":false,"EnableIPv6":true,"IPAM":{"Driver":"default","Config":[{"Subnet":"172.30.0.0/16","IPRange":"172.30.5.0/24","Gateway":"172.30.5.254","AuxiliaryAddresses":{"host1":"172.30.1.5"}},{"Subnet":"fd00:30::/64","Gateway":"fd00:30::1"}],"Options":{"opt":"x"}},"Options":{"com.docker.network.bridge.name":"br-n2","plexus.dns.ttl":"30"},"Labels":{"a":"b"}}"#,
        ),
        ("net-ingress", r#"{"Name":"i","Ingress":true}"#),
        ("net-ipam-driver", r#"{"Name":"x","IPAM":{"Driver":"dhcp","Config":[]}}"#),
        ("net-aux-no-subnet", r#"{"Name":"x","IPAM":{"Config":[{"AuxiliaryAddresses":{"a":"1.2.3.4"}}]}}"#),
        ("net-bad-scope", r#"{"Name":"x","Scope":"galaxy"}"#),
        ("net-bad-type", r#"{"Name":7}"#),
        ("net-nulls", r#"{"Name":"n","IPAM":null,"Options":null,"Labels":null}"#),
        (
            "connect",
            r#"{"Container":"web","EndpointConfig":{"IPAMConfig":{"IPv4Address":"172.30.5.9","IPv6Address":"fd00:30::9"},"Aliases":["www","front"],"MacAddress":"02:42:ac:1e:05:09","DriverOpts":{"k":"v"}}}"#,
        ),
        ("connect-empty", r#"{"Container":""}"#),
        ("disconnect", r#"{"Container":"web","Force":true}"#),
        (
            "sandbox",
            r#"{"Name":"web","NetNs":"","Networks":[{"Name":"n1","IPv4Address":"172.30.5.10","Aliases":["www"],"DriverOpts":{"a":"b"},"Interface":"eth0"},{"Name":"n2","IPv6Address":"fd00:30::a"}],"Ports":["8080:80","127.0.0.1:9000-9002:90-92/udp","[::1]:53:53/sctp","443"],"Hostname":"web","Dns":["1.1.1.1"],"DnsSearch":["example.com"],"DnsOptions":["ndots:2"]}"#,
        ),
        ("sandbox-bad-port", r#"{"Name":"s","Ports":["9000-9001:80-82"]}"#),
        ("sandbox-service", r#"{"Name":"t","Networks":[{"Name":"n1"}],"Service":"web"}"#),
        (
            "service",
            r#"{"Name":"web","Networks":[{"Target":"n1"},{"Target":"n2"}],"EndpointSpec":{"Mode":"vip","Ports":[{"Protocol":"tcp","TargetPort":80,"PublishedPort":8080,"PublishMode":"ingress"},{"Protocol":"udp","TargetPort":53,"PublishedPort":5353,"PublishMode":"host"}]},"SessionAffinity":{"Mode":"client-ip","TimeoutSeconds":600},"Labels":{"a":"b"}}"#,
        ),
        ("service-bad-port", r#"{"Name":"s","Networks":[{"Target":"n"}],"EndpointSpec":{"Ports":[{"TargetPort":4294967295,"PublishedPort":0,"PublishMode":"x"}]}}"#),
        (
            "service-update",
            r#"{"Mode":"dnsrr","PortsAdd":[{"TargetPort":443,"PublishedPort":8443}],"PortsRemove":[{"PublishedPort":8080,"Protocol":"tcp"}],"SessionAffinity":{"Mode":"none"},"LabelsAdd":{"x":"y"},"LabelsRemove":["a"]}"#,
        ),
        ("publish-range", "8000-8009:80-89/udp"),
        ("publish-long", "published=8080,target=80,protocol=udp,mode=host"),
        ("sandbox-empty-net", r#"{"Name":"s","Networks":[{"Name":""}]}"#),
        ("deep", r#"{"Name":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#),
        ("unicode", "{\"Name\":\"n\\u00e9\\ud83d\\ude00\",\"Labels\":{\"\\u0000\":\"\"}}"),
        ("empty", "   "),
        ("filters-map", r#"{"name":{"n1":true,"n2":false},"driver":{"bridge":true}}"#),
        ("filters-list", r#"{"label":["a=b","c"],"type":["custom"]}"#),
        ("filters-bad", r#"{"name":"n1"}"#),
        ("port-range", "127.0.0.1:8000-8010:80"),
        ("port-v6", "[fe80::1]:0:65535/tcp"),
        ("port-many-colons", "1:2:3:4"),
        ("ts-unix", "1700000000.123456789"),
        ("ts-negative", "-86400.5"),
        ("ts-rfc3339", "2023-11-14T23:13:20.25+01:00"),
        ("ts-leap", "2016-12-31T23:59:60Z"),
        ("path", "/v1.41/networks/create"),
        ("cidr", "fd00:1::/64"),
        // A remote IPAM plugin's answers, as read off its socket.
        (
            "plugin-sized",
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 46\r\n\r\n{\"PoolID\":\"p1\",\"Pool\":\"10.9.0.0/16\",\"Data\":{}}",
        ),
        (
            "plugin-chunked",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nf\r\n{\"PoolID\":\"p1\",\r\n15\r\n\"Pool\":\"10.9.0.0/16\"}\r\n0\r\n\r\n",
        ),
        ("plugin-err", "HTTP/1.1 200 OK\r\n\r\n{\"Err\":\"no pool left\"}"),
        ("plugin-500", "HTTP/1.0 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom"),
    ];
    text.iter()
        .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec()))
        .collect()
}

/// A network plugin's answers (`plugin_answer`): a byte picking the call (its index in
/// `plexus_drivers::remote::CALLS`; with the high bit, the endpoint that asks for a MAC
/// address), then the HTTP answer as read off the plugin's socket, or its JSON body alone.
fn plugin_answers() -> Seeds {
    const CAPS: u8 = 0;
    const CREATE_NETWORK: u8 = 1;
    const ALLOCATE: u8 = 3;
    const FREE: u8 = 4;
    const CREATE_ENDPOINT: u8 = 5;
    const DELETE_ENDPOINT: u8 = 6;
    const OPER_INFO: u8 = 7;
    const JOIN: u8 = 8;
    const LEAVE: u8 = 9;
    const REVOKE: u8 = 11;
    const DISCOVER_NEW: u8 = 12;
    const WITH_MAC: u8 = 0x80;
    let sized = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1.2+json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let join = r#"{"InterfaceName":{"SrcName":"vethp1a2b","DstPrefix":"eth"},"Gateway":"10.9.0.1","GatewayIPv6":"fd00:9::1","StaticRoutes":[{"Destination":"10.77.0.0/16","RouteType":0,"NextHop":"10.9.0.254"},{"Destination":"fd00:77::/48","RouteType":1}],"DisableGatewayService":false}"#;
    let seeds: Vec<(&str, u8, String)> = vec![
        (
            "drv-caps",
            CAPS,
            sized(r#"{"Scope":"local","ConnectivityScope":"global"}"#),
        ),
        ("drv-caps-json", CAPS, r#"{"Scope":"global"}"#.into()),
        ("drv-caps-bad", CAPS, r#"{"Scope":"galaxy"}"#.into()),
        ("drv-create-network", CREATE_NETWORK, sized("{}")),
        (
            "drv-allocate",
            ALLOCATE,
            r#"{"Options":{"com.docker.network.generic":"x"}}"#.into(),
        ),
        (
            "drv-free-404",
            FREE,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 19\r\n\r\n404 page not found\n".into(),
        ),
        (
            "drv-endpoint",
            CREATE_ENDPOINT,
            sized(
                r#"{"Interface":{"Address":"10.9.0.5/24","AddressIPv6":"fd00:9::5/64","MacAddress":"02:42:0a:09:00:05"}}"#,
            ),
        ),
        (
            "drv-endpoint-mac",
            CREATE_ENDPOINT | WITH_MAC,
            r#"{"Interface":{"MacAddress":"02-42-0A-09-00-07"}}"#.into(),
        ),
        (
            "drv-endpoint-moved",
            CREATE_ENDPOINT,
            r#"{"Interface":{"Address":"10.9.0.99/24"}}"#.into(),
        ),
        (
            "drv-endpoint-null",
            CREATE_ENDPOINT,
            r#"{"Interface":null}"#.into(),
        ),
        (
            "drv-delete-500",
            DELETE_ENDPOINT,
            "HTTP/1.0 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom".into(),
        ),
        (
            "drv-oper-info",
            OPER_INFO,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"Value\":{\"x\":[1\r\n\
             13\r\n,2],\"y\":{\"z\":null}}}\r\n0\r\n\r\n"
                .into(),
        ),
        ("drv-join", JOIN, sized(join)),
        (
            "drv-join-json",
            JOIN,
            r#"{"InterfaceName":{"SrcName":"tap0","DstPrefix":"ethwe"}}"#.into(),
        ),
        (
            "drv-join-bad",
            JOIN,
            r#"{"InterfaceName":{"SrcName":"a/b:c d","DstPrefix":"eth"},"Gateway":"fd00::1"}"#
                .into(),
        ),
        (
            "drv-leave-err",
            LEAVE,
            sized(r#"{"Err":"endpoint e1 not found"}"#),
        ),
        ("drv-revoke-err-json", REVOKE, r#"{"Err":"busy"}"#.into()),
        (
            "drv-discover-404",
            DISCOVER_NEW,
            "HTTP/1.1 404 Not Found\r\n\r\n".into(),
        ),
        (
            "drv-garbage",
            DELETE_ENDPOINT,
            "HTTP/9 abc\r\n\0\u{ff}".into(),
        ),
    ];
    seeds
        .into_iter()
        .map(|(n, call, text)| {
            let mut bytes = vec![call];
            bytes.extend_from_slice(text.as_bytes());
            (n.to_string(), bytes)
        })
        .collect()
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, n], 7946))
}

fn gossip() -> Seeds {
    let me = addr(1);
    let peer = addr(2);
    let header = |seq| Header {
        from: peer,
        epoch: 5,
        seq,
    };
    let member = |node, state| {
        Item::Member(MemberUpdate {
            node,
            incarnation: 3,
            state,
            from: peer,
        })
    };
    let attach = Item::Attach(AttachUpdate {
        node: peer,
        network: "n1".into(),
        ltime: 4,
        joined: true,
    });
    let entry = |key: &str, deleted| {
        Item::Entry(EntryUpdate {
            table: "t".into(),
            key: key.into(),
            owner: peer,
            ltime: 9,
            deleted,
            reap_in_ms: if deleted { 60_000 } else { 0 },
            value: if deleted { vec![] } else { b"value".to_vec() },
        })
    };
    let frames: Vec<(&str, Body<SocketAddr>, Items)> = vec![
        (
            "ping",
            Body::Ping { seq: 1, target: me },
            vec![member(peer, MemberState::Alive)],
        ),
        (
            "ping-req",
            Body::PingReq {
                seq: 2,
                target: addr(3),
            },
            vec![],
        ),
        ("ack", Body::Ack { seq: 3 }, vec![]),
        ("nack", Body::Nack { seq: 4 }, vec![]),
        (
            "gossip",
            Body::Gossip,
            vec![
                member(addr(3), MemberState::Suspect),
                member(me, MemberState::Dead),
                member(addr(4), MemberState::Left),
                attach.clone(),
            ],
        ),
        (
            "table-gossip",
            Body::TableGossip {
                network: "n1".into(),
            },
            vec![entry("k", false), entry("k2", true), entry("k", true)],
        ),
        (
            "member-digest",
            Body::MemberDigest {
                hash: 0xdead_beef,
                count: 3,
            },
            vec![],
        ),
        (
            "push-pull",
            Body::PushPull { reply: false },
            vec![
                member(peer, MemberState::Alive),
                member(addr(3), MemberState::Alive),
                attach,
            ],
        ),
        (
            "sync-digest",
            Body::SyncDigest {
                network: "n1".into(),
                hash: 42,
            },
            vec![],
        ),
        (
            "sync-buckets",
            Body::SyncBuckets {
                network: "n1".into(),
                buckets: (0..16).collect(),
            },
            vec![],
        ),
        (
            "sync-entries",
            Body::SyncEntries {
                network: "n1".into(),
                want: vec![0, 3, 15],
            },
            vec![entry("k3", false)],
        ),
    ];
    let mut out: Seeds = frames
        .into_iter()
        .enumerate()
        .map(|(i, (n, body, items))| {
            let f = Frame {
                header: header(i as u64 + 1),
                body,
                items,
            };
            (n.to_string(), encode_frame(&f))
        })
        .collect();
    // The simulator's address type.
    let sim = Frame::<u32> {
        header: Header {
            from: 2,
            epoch: 1,
            seq: 1,
        },
        body: Body::Ping { seq: 1, target: 1 },
        items: vec![Item::Member(MemberUpdate {
            node: 3,
            incarnation: 0,
            state: MemberState::Suspect,
            from: 2,
        })],
    };
    out.push(("sim-ping".into(), encode_frame(&sim)));
    // A cut frame and one with a trailing byte.
    let mut cut = out[0].1.clone();
    cut.truncate(cut.len() - 3);
    out.push(("cut".into(), cut));
    let mut trailing = out[2].1.clone();
    trailing.push(0);
    out.push(("trailing".into(), trailing));
    out
}
