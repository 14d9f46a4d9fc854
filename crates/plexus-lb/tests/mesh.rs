//! The routing mesh with real traffic (needs root): a client connects to a host's published
//! port, the host's table sends it to the ingress sandbox, whose table sends it to a
//! backend, which sees the client's address and answers back through the sandbox by its
//! return path. Every namespace is removed by a drop guard, even when a test fails; each
//! test has its own world, in 10.232.0.0/16 (no other test of the crate uses it), so tests
//! run in parallel.
//!
//! ```text
//!  client 10.232.1.2 ── cl: host 10.232.1.1, .3 ── ing 10.232.2.1 ── eth0: ingress 10.232.2.2
//!                         (routes only its links)                   (default via 10.232.2.1)
//!                                                                    ovl 10.232.3.2 ──┐
//!  be0 eth0 10.232.3.10 ─────────────────────────────────────────────────────────────┼ br0 (hub)
//!  be1 eth0 10.232.3.11 ─────────────────────────────────────────────────────────────┘
//!  be0 gw0 10.232.4.10, be1 gw0 10.232.4.11 ── br0 10.232.4.1 (decoy: does not forward)
//! ```
//!
//! The backends' default route leads to the decoy, which does not forward: without the
//! return path a reply to the client is lost. Their `rp_filter` is strict (1), as on
//! many hosts, so the return path must loosen it on the ingress interface.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use plexus_lb::mesh::{Mesh, MeshScope, MeshView, PortKey, PortView, Protocol};
use plexus_lb::return_path::{self, ReturnPath, ReturnView};
use plexus_sys::rtnl::Rtnl;

#[macro_use]
mod common;
use common::*;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 232, 1, 2);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 232, 1, 1);
const HOST_OTHER: Ipv4Addr = Ipv4Addr::new(10, 232, 1, 3);
const INGRESS: Ipv4Addr = Ipv4Addr::new(10, 232, 2, 2);
const INGRESS_OVERLAY: Ipv4Addr = Ipv4Addr::new(10, 232, 3, 2);
const BES: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 232, 3, 10), Ipv4Addr::new(10, 232, 3, 11)];
/// Another ingress sandbox that is not there: its rule and table exist, nothing uses them.
const OTHER_GATEWAY: ([u8; 6], Ipv4Addr) = ([2, 0, 0, 0, 0, 0x99], Ipv4Addr::new(10, 232, 3, 3));
/// The backends' default gateway, which does not forward.
const DECOY: Ipv4Addr = Ipv4Addr::new(10, 232, 4, 1);
const PUBLISHED: u16 = 8080;
const TARGET: u16 = 80;

struct MeshWorld {
    client: PinnedNs,
    host: PinnedNs,
    ingress: PinnedNs,
    _hub: PinnedNs,
    _decoy: PinnedNs,
    backends: Vec<PinnedNs>,
}

impl MeshWorld {
    fn new() -> Self {
        let client = PinnedNs::new("client");
        let host = PinnedNs::new("host");
        let ingress = PinnedNs::new("ingress");
        let hub = PinnedNs::new("hub");
        let backends: Vec<PinnedNs> = (0..2).map(|k| PinnedNs::new(&format!("be{k}"))).collect();
        for p in [&client, &host, &ingress, &hub] {
            p.sh("ip link set lo up");
        }
        host.sh(&format!(
            "ip link add cl type veth peer name eth0 netns {c}; \
             ip addr add {HOST}/24 dev cl; ip addr add {HOST_OTHER}/24 dev cl; ip link set cl up; \
             ip link add ing type veth peer name eth0 netns {i}; \
             ip addr add 10.232.2.1/24 dev ing; ip link set ing up; \
             sysctl -qw net.ipv4.ip_forward=1",
            c = client.path(),
            i = ingress.path(),
        ));
        client.sh(&format!(
            "ip addr add {CLIENT}/24 dev eth0; ip link set eth0 up"
        ));
        hub.sh(&format!(
            "ip link add br0 type bridge; ip link set br0 up; \
             ip link add vi type veth peer name ovl netns {i}; ip link set vi master br0 up",
            i = ingress.path(),
        ));
        ingress.sh(&format!(
            "ip addr add {INGRESS}/24 dev eth0; ip link set eth0 up; \
             ip route add default via 10.232.2.1; \
             ip addr add {INGRESS_OVERLAY}/24 dev ovl; ip link set ovl up; \
             sysctl -qw net.ipv4.ip_forward=1"
        ));
        let decoy = PinnedNs::new("decoy");
        decoy.sh(&format!(
            "ip link set lo up; ip link add br0 type bridge; \
             ip addr add {DECOY}/24 dev br0; ip link set br0 up"
        ));
        for (k, (p, addr)) in backends.iter().zip(BES).enumerate() {
            hub.sh(&format!(
                "ip link add vb{k} type veth peer name eth0 netns {}; ip link set vb{k} master br0 up",
                p.path()
            ));
            p.sh(&format!(
                "ip link set lo up; ip addr add {addr}/24 dev eth0; ip link set eth0 up; \
                 ip link add gw0 type veth peer name d{k} netns {d}; \
                 ip addr add 10.232.4.1{k}/24 dev gw0; ip link set gw0 up; \
                 ip route add default via {DECOY}; \
                 sysctl -qw net.ipv4.conf.all.rp_filter=1",
                d = decoy.path(),
            ));
            decoy.sh(&format!("ip link set d{k} master br0 up"));
        }
        Self {
            client,
            host,
            ingress,
            _hub: hub,
            _decoy: decoy,
            backends,
        }
    }

    fn servers(&self, tcp: &[u16], udp: &[u16]) -> Servers {
        let on: Vec<_> = self.backends.iter().zip(BES).collect();
        Servers::start_on(&on, tcp, udp)
    }

    /// The MAC address of the ingress sandbox's overlay interface.
    async fn ingress_mac(&self) -> [u8; 6] {
        let rtnl = ok("rtnl", Rtnl::connect(&self.ingress.ns).await);
        let link = ok("ovl", rtnl.require_link("ovl").await);
        let mac = link.mac.unwrap_or_default();
        ok("mac", mac.as_slice().try_into())
    }

    /// The backends' return path through the ingress sandbox (and one absent sandbox).
    async fn return_paths(&self) -> (ReturnView, Vec<ReturnPath>) {
        let view = ReturnView {
            interface: "eth0".into(),
            gateways: [(self.ingress_mac().await, INGRESS_OVERLAY), OTHER_GATEWAY].into(),
        };
        let mut paths = Vec::new();
        for p in &self.backends {
            let rtnl = ok("rtnl", Rtnl::connect(&p.ns).await);
            let rp = ok("return path", ReturnPath::new(&rtnl));
            ok("reconcile return path", rp.reconcile(&view).await);
            paths.push(rp);
        }
        (view, paths)
    }

    /// The host's table sending `keys` to the ingress sandbox (the port kept), the
    /// sandbox's sending them to `backends` at `TARGET`.
    fn publish(&self, keys: &[PortKey], backends: &[Ipv4Addr], scope: MeshScope) -> (Mesh, Mesh) {
        let host = ok("open host", Mesh::open(&self.host.ns));
        let to_ingress = view(scope, keys, |k| port(k.port, &[INGRESS]));
        ok("host table", host.apply(&MeshView::default(), &to_ingress));
        let gateway = ok("open ingress", Mesh::open(&self.ingress.ns));
        let to_backends = view(MeshScope::Gateway, keys, |_| port(TARGET, backends));
        ok(
            "ingress table",
            gateway.apply(&MeshView::default(), &to_backends),
        );
        (host, gateway)
    }
}

fn tcp(port: u16) -> PortKey {
    PortKey {
        protocol: Protocol::Tcp,
        port,
    }
}

fn port(target: u16, backends: &[Ipv4Addr]) -> PortView {
    PortView {
        service: "web".into(),
        target,
        backends: backends.to_vec(),
    }
}

fn view(scope: MeshScope, keys: &[PortKey], f: impl Fn(&PortKey) -> PortView) -> MeshView {
    MeshView {
        scope,
        ports: keys.iter().map(|k| (*k, f(k))).collect(),
    }
}

fn all_addresses() -> MeshScope {
    MeshScope::Host { addresses: None }
}

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// One TCP connection attempt from `ns`, with a short timeout: how long it took, and what
/// came of it.
fn try_tcp(ns: &PinnedNs, dst: SocketAddr) -> (Duration, std::io::Result<Answer>) {
    ok(
        "run",
        ns.ns.run(move || {
            let start = Instant::now();
            let r = tcp_once_within(dst, Duration::from_secs(1));
            (start.elapsed(), r)
        }),
    )
}

fn refused_at_once(ns: &PinnedNs, dst: SocketAddr) {
    let (took, r) = try_tcp(ns, dst);
    match r {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{dst}: {e}"),
        Ok(a) => panic!("{dst} answered: {a:?}"),
    }
    assert!(
        took < Duration::from_secs(1),
        "{dst} refused after {took:?}"
    );
}

#[tokio::test]
async fn published_ports_reach_both_backends_with_the_client_address() {
    need_root!();
    let w = MeshWorld::new();
    let _srv = w.servers(&[TARGET], &[]);
    let _rp = w.return_paths().await;
    let (host, gateway) = w.publish(&[tcp(PUBLISHED)], &BES, all_addresses());
    let answers = tcp_many_from(&w.client.ns, at(HOST, PUBLISHED), 2_000);
    let counts = spread(&answers);
    // Each count is binomial(2000, 1/2), sd 22.4: ±120 is 5.4 sd.
    assert_eq!(counts.len(), 2, "{counts:?}");
    for (b, n) in &counts {
        assert!((880..=1120).contains(n), "{b}: {n} of 2000 ({counts:?})");
    }
    let peers: BTreeMap<Ipv4Addr, usize> = answers.iter().fold(BTreeMap::new(), |mut m, a| {
        if let std::net::IpAddr::V4(ip) = a.peer.ip() {
            *m.entry(ip).or_insert(0) += 1;
        }
        m
    });
    assert_eq!(peers.keys().collect::<Vec<_>>(), [&CLIENT], "{peers:?}");
    // The host's own programs reach the published port (output chain), from the host's
    // address; loopback is left alone, and nothing listens there: refused at once.
    let own = tcp_many_from(&w.host.ns, at(HOST, PUBLISHED), 20);
    assert!(own.iter().all(|a| a.peer.ip() == HOST), "{own:?}");
    refused_at_once(&w.host, at(Ipv4Addr::LOCALHOST, PUBLISHED));
    // The kernel describes itself.
    let want = view(all_addresses(), &[tcp(PUBLISHED)], |_| {
        port(PUBLISHED, &[INGRESS])
    });
    assert_eq!(ok("read host", host.read()), want);
    let want = view(MeshScope::Gateway, &[tcp(PUBLISHED)], |_| {
        port(TARGET, &BES)
    });
    assert_eq!(ok("read ingress", gateway.read()), want);
}

#[tokio::test]
async fn without_the_return_path_replies_are_lost() {
    need_root!();
    let w = MeshWorld::new();
    let _srv = w.servers(&[TARGET], &[]);
    let (rview, paths) = w.return_paths().await;
    w.publish(&[tcp(PUBLISHED)], &BES, all_addresses());
    assert_eq!(
        tcp_many_from(&w.client.ns, at(HOST, PUBLISHED), 10).len(),
        10
    );
    for rp in &paths {
        ok("remove return path", rp.remove().await);
        assert_eq!(ok("read", rp.read()), None);
    }
    let rules = w.backends[0].sh("ip rule show");
    assert!(!rules.contains("fwmark"), "{rules}");
    let tables = w.backends[0].sh("ip route show table all");
    assert!(
        !tables.contains(&format!("via {INGRESS_OVERLAY} ")),
        "{tables}"
    );
    // The replies follow the default route into the dummy: no connection completes.
    for _ in 0..4 {
        let (_, r) = try_tcp(&w.client, at(HOST, PUBLISHED));
        assert!(
            r.is_err(),
            "a connection answered without the return path: {r:?}"
        );
    }
    for rp in &paths {
        ok("reconcile", rp.reconcile(&rview).await);
    }
    assert_eq!(
        tcp_many_from(&w.client.ns, at(HOST, PUBLISHED), 10).len(),
        10
    );
    // Strict reverse-path filtering (from `all`) was loosened on the ingress interface
    // only.
    let conf = |i: &str| format!("net.ipv4.conf.{i}.rp_filter");
    let keys = [conf("all"), conf("eth0"), conf("gw0")].join(" ");
    let rp_filter = w.backends[0].sh(&format!("sysctl -n {keys}"));
    assert_eq!(
        rp_filter.split_whitespace().collect::<Vec<_>>(),
        ["1", "2", "0"]
    );
}

#[tokio::test]
async fn udp_goes_the_same_way() {
    need_root!();
    let w = MeshWorld::new();
    let _srv = w.servers(&[], &[TARGET]);
    let _rp = w.return_paths().await;
    let key = PortKey {
        protocol: Protocol::Udp,
        port: PUBLISHED,
    };
    w.publish(&[key], &BES, all_addresses());
    let seen = ok(
        "run",
        w.client
            .ns
            .run(|| -> std::io::Result<Vec<(SocketAddr, String)>> {
                let mut out = Vec::new();
                for _ in 0..40 {
                    // A new socket each time: a new flow, so a new pick.
                    let s = UdpSocket::bind("0.0.0.0:0")?;
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.send_to(b"q", at(HOST, PUBLISHED))?;
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
        assert_eq!(
            *from,
            at(HOST, PUBLISHED),
            "the reply must come from the published port"
        );
        let mut parts = text.split(' ');
        backends.insert(parts.next().unwrap_or_default().to_string());
        let peer = parts.next().unwrap_or_default();
        assert!(peer.starts_with(&format!("{CLIENT}:")), "{text}");
    }
    assert_eq!(backends.len(), 2, "40 flows all on {backends:?}");
}

#[tokio::test]
async fn a_port_without_backends_is_refused_at_once() {
    need_root!();
    let w = MeshWorld::new();
    let _srv = w.servers(&[TARGET], &[]);
    let _rp = w.return_paths().await;
    let (host, gateway) = w.publish(&[tcp(PUBLISHED)], &[], all_addresses());
    // On the ingress sandbox: the host sends it there, nothing there takes it.
    refused_at_once(&w.client, at(HOST, PUBLISHED));
    // On the host itself.
    let with_empty = view(all_addresses(), &[tcp(PUBLISHED), tcp(9090)], |k| {
        let to = if k.port == 9090 {
            vec![]
        } else {
            vec![INGRESS]
        };
        port(k.port, &to)
    });
    let before = ok("read", host.read());
    ok("host: add an empty port", host.apply(&before, &with_empty));
    refused_at_once(&w.client, at(HOST, 9090));
    // A backend comes: the port answers.
    let empty = ok("read", gateway.read());
    let one = view(MeshScope::Gateway, &[tcp(PUBLISHED)], |_| {
        port(TARGET, &BES[..1])
    });
    ok("a backend", gateway.apply(&empty, &one));
    let a = tcp_many_from(&w.client.ns, at(HOST, PUBLISHED), 1);
    assert_eq!(a[0].backend, BES[0]);
}

#[tokio::test]
async fn a_restricted_host_publishes_on_its_listed_addresses_only() {
    need_root!();
    let w = MeshWorld::new();
    let _srv = w.servers(&[TARGET], &[]);
    let _rp = w.return_paths().await;
    let only = MeshScope::Host {
        addresses: Some([HOST].into()),
    };
    let (host, _) = w.publish(&[tcp(PUBLISHED)], &BES, only.clone());
    assert_eq!(tcp_many_from(&w.client.ns, at(HOST, PUBLISHED), 5).len(), 5);
    refused_at_once(&w.client, at(HOST_OTHER, PUBLISHED));
    assert_eq!(ok("read", host.read()).scope, only);
    // The other address listed instead: element changes of the set.
    let have = ok("read", host.read());
    let other = MeshView {
        scope: MeshScope::Host {
            addresses: Some([HOST_OTHER].into()),
        },
        ..have.clone()
    };
    ok("switch addresses", host.apply(&have, &other));
    refused_at_once(&w.client, at(HOST, PUBLISHED));
    assert_eq!(
        tcp_many_from(&w.client.ns, at(HOST_OTHER, PUBLISHED), 5).len(),
        5
    );
    // No restriction: both.
    let all = MeshView {
        scope: all_addresses(),
        ..have
    };
    ok("no restriction", host.apply(&other, &all));
    for ip in [HOST, HOST_OTHER] {
        assert_eq!(tcp_many_from(&w.client.ns, at(ip, PUBLISHED), 5).len(), 5);
    }
    assert_eq!(ok("read", host.read()), all);
    // Gateway scope: prerouting only, the host's own programs are no longer NATed.
    let gateway = MeshView {
        scope: MeshScope::Gateway,
        ..all.clone()
    };
    ok("gateway scope", host.apply(&all, &gateway));
    assert_eq!(ok("read", host.read()), gateway);
    assert_eq!(tcp_many_from(&w.client.ns, at(HOST, PUBLISHED), 5).len(), 5);
    refused_at_once(&w.host, at(HOST, PUBLISHED));
    ok("back to a host", host.apply(&gateway, &all));
    assert_eq!(tcp_many_from(&w.host.ns, at(HOST, PUBLISHED), 5).len(), 5);
}

#[tokio::test]
async fn a_removed_backend_gets_no_new_connection() {
    need_root!();
    let w = MeshWorld::new();
    let _srv = w.servers(&[TARGET], &[]);
    let _rp = w.return_paths().await;
    let (_, gateway) = w.publish(&[tcp(PUBLISHED)], &BES, all_addresses());
    let both = ok("read", gateway.read());
    let one = view(MeshScope::Gateway, &[tcp(PUBLISHED)], |_| {
        port(TARGET, &BES[1..])
    });
    ok("remove be0", gateway.apply(&both, &one));
    let counts = spread(&tcp_many_from(&w.client.ns, at(HOST, PUBLISHED), 300));
    assert_eq!(counts.keys().collect::<Vec<_>>(), [&BES[1]], "{counts:?}");
    ok("add it back", gateway.apply(&one, &both));
    let counts = spread(&tcp_many_from(&w.client.ns, at(HOST, PUBLISHED), 300));
    assert_eq!(counts.len(), 2, "{counts:?}");
    // The last port removed: no table.
    let none = MeshView::default();
    ok("remove the port", gateway.apply(&both, &none));
    let tables = w.ingress.sh("nft list tables");
    assert!(!tables.contains("plexus-mesh"), "{tables}");
}

#[tokio::test]
async fn read_gives_the_views_back_and_reconcile_repairs() {
    need_root!();
    let w = MeshWorld::new();
    let _srv = w.servers(&[TARGET], &[]);
    let (rview, paths) = w.return_paths().await;
    let keys = [tcp(PUBLISHED), tcp(8443)];
    let (host, gateway) = w.publish(&keys, &BES, all_addresses());
    let want = view(MeshScope::Gateway, &keys, |_| port(TARGET, &BES));
    assert_eq!(ok("read", gateway.read()), want);
    // A port's element deleted by hand: its chain and map are left without it.
    w.ingress.sh(&format!(
        "nft delete element ip plexus-mesh ports {{ tcp . {PUBLISHED} }}"
    ));
    assert_ne!(ok("read", gateway.read()), want);
    ok("reconcile", gateway.reconcile(&want));
    assert_eq!(ok("read", gateway.read()), want);
    let counts = spread(&tcp_many_from(&w.client.ns, at(HOST, PUBLISHED), 100));
    assert_eq!(counts.len(), 2, "{counts:?}");
    // A stale `from` fails whole; reconcile takes the host to a restriction.
    let only = view(
        MeshScope::Host {
            addresses: Some([HOST].into()),
        },
        &keys,
        |k| port(k.port, &[INGRESS]),
    );
    match host.apply(&MeshView::default(), &only) {
        Err(plexus_lb::LbError::Diverged { .. }) => {}
        other => panic!("want Diverged, got {other:?}"),
    }
    ok("reconcile host", host.reconcile(&only));
    assert_eq!(ok("read", host.read()), only);
    ok("reconcile again", host.reconcile(&only));
    // The return path: a rule and a map element deleted by hand, a stale rule of ours
    // added; reconcile puts back exactly what the view says.
    let be = &w.backends[0];
    let mark = return_path::mark_of(INGRESS_OVERLAY);
    be.sh(&format!("ip rule del fwmark {mark:#x} lookup {mark}"));
    be.sh("nft flush map ip plexus-return gateways");
    be.sh("ip rule add priority 1000 fwmark 0x70000063 lookup 1879048291");
    be.sh("ip route add default via 10.232.3.99 dev eth0 table 1879048291");
    ok("reconcile return path", paths[0].reconcile(&rview).await);
    assert_eq!(ok("read", paths[0].read()), Some(rview.clone()));
    ok("reconcile again", paths[0].reconcile(&rview).await);
    let rules = be.sh("ip rule show");
    assert!(!rules.contains("0x70000063"), "{rules}");
    assert_eq!(rules.matches("fwmark").count(), 2, "{rules}");
    let stale = be.sh("ip route show table 1879048291");
    assert!(stale.trim().is_empty(), "{stale}");
    let counts = spread(&tcp_many_from(&w.client.ns, at(HOST, PUBLISHED), 100));
    assert_eq!(counts.len(), 2, "{counts:?}");
    ok("remove", gateway.remove());
    ok("remove again", plexus_lb::mesh::remove(&w.ingress.ns));
    assert_eq!(ok("read", gateway.read()), MeshView::default());
}
