//! A three-namespace lab for nf_tables expressions: a client, a router (where the rules
//! under test usually go) and a server with two addresses per family ("backends"), joined
//! by veth pairs. Servers answer every TCP connection with the two ends they saw.
//!
//! ```text
//!   client 10.0.0.2-9   ──veth── c0 10.0.0.1  router  s0 10.1.0.1 ──veth── server 10.1.0.2, 10.1.0.3
//!          fd00::2                 fd00::1              fd00:1::1          fd00:1::2, fd00:1::3
//! ```

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::socket::{self as sock, AddressFamily, SockFlag, SockType, SockaddrStorage};
use plexus_sys::netns::Netns;
use plexus_sys::nft::Nft;
use plexus_sys::rtnl::{Route, Rtnl};
use plexus_sys::sysctl;

use super::{lo_up, ok, PinnedNs};

const MARK: &str = "plexus-test";
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const ROUTER_C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const ROUTER_S: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
pub const SERVER_A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
pub const SERVER_B: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);

pub fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// What a server saw of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The server's own end (after any DNAT).
    pub local: SocketAddr,
    /// The client's end as it arrived (after any SNAT).
    pub peer: SocketAddr,
}

/// TCP servers in a namespace, answering with [`Seen`]; stopped and joined on drop.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Servers {
    pub fn start(ns: &Netns, addrs: &[SocketAddr]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &addr in addrs {
            let listener = plexus_testkit::net::bind_retrying(
                || ok("listen", ns.run(move || TcpListener::bind(addr))),
                Duration::from_secs(3),
            )
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            ok("nonblocking", listener.set_nonblocking(true));
            let flag = stop.clone();
            threads.push(std::thread::spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, peer)) => {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                            let local = conn.local_addr().unwrap_or(addr);
                            let mut buf = [0u8; 16];
                            let _ = conn.read(&mut buf);
                            let _ = conn.write_all(format!("{local} {peer}").as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                }
            }));
        }
        Self { stop, threads }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn storage(a: SocketAddr) -> SockaddrStorage {
    match a {
        SocketAddr::V4(a) => SockaddrStorage::from(a),
        SocketAddr::V6(a) => SockaddrStorage::from(a),
    }
}

fn connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let family = match src {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd: OwnedFd = sock::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    sock::bind(fd.as_raw_fd(), &storage(SocketAddr::new(src, 0)))?;
    let tv = nix::sys::time::TimeVal::new(
        timeout.as_secs() as i64,
        timeout.subsec_micros() as nix::libc::suseconds_t,
    );
    sock::setsockopt(&fd, sock::sockopt::SendTimeout, &tv)?;
    sock::connect(fd.as_raw_fd(), &storage(dst))?;
    Ok(TcpStream::from(fd))
}

/// Connects from inside `ns` (from source address `src` if given) and returns what the
/// server saw.
pub fn talk_from(
    ns: &Netns,
    src: Option<IpAddr>,
    dst: SocketAddr,
    timeout: Duration,
) -> std::io::Result<Seen> {
    ok(
        "run",
        ns.run(move || -> std::io::Result<Seen> {
            let mut s = match src {
                None => TcpStream::connect_timeout(&dst, timeout)?,
                Some(src) => connect_from(src, dst, timeout)?,
            };
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"hi")?;
            let mut buf = [0u8; 128];
            let n = s.read(&mut buf)?;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let mut parts = text.split(' ').map(|p| p.parse::<SocketAddr>());
            match (parts.next(), parts.next()) {
                (Some(Ok(local)), Some(Ok(peer))) => Ok(Seen { local, peer }),
                _ => Err(std::io::Error::other(format!("bad answer {text:?}"))),
            }
        }),
    )
}

/// What the server saw of a connection from `ns` to `dst`; panics if it fails.
pub fn reaches(ns: &Netns, dst: SocketAddr) -> Seen {
    talk_from(ns, None, dst, Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("connect to {dst}: {e}"))
}

/// Whether a connection from `ns` to `dst` fails (dropped or refused).
pub fn blocked(ns: &Netns, dst: SocketAddr) -> bool {
    talk_from(ns, None, dst, Duration::from_millis(700)).is_err()
}

pub fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// The lab: three namespaces, removed on drop, and an nf_tables handle in the router.
pub struct Lab {
    pub client: PinnedNs,
    pub router: PinnedNs,
    pub server: PinnedNs,
    /// nf_tables of the router.
    pub nft: Nft,
    /// The router's interface index towards the server.
    pub s0: u32,
}

fn no_dad(ns: &Netns) {
    for key in [
        "net.ipv6.conf.all.accept_dad",
        "net.ipv6.conf.default.accept_dad",
    ] {
        ok("accept_dad", sysctl::write(ns, key, "0"));
    }
}

async fn end(
    rr: &Rtnl,
    (name, peer): (&str, &PinnedNs),
    addrs: &[(IpAddr, u8)],
    gw: (Ipv4Addr, Ipv6Addr),
    near: &[(IpAddr, u8)],
) -> u32 {
    let (r, p) = ok(
        "veth",
        rr.add_veth(name, &format!("{name}p"), None, MARK).await,
    );
    ok("move", rr.move_to(p.index, &peer.ns, Some("eth0")).await);
    for &(a, l) in near {
        ok("router addr", rr.add_address(r.index, a, l).await);
    }
    ok("router up", rr.set_up(r.index).await);
    let rp = ok("connect", Rtnl::connect(&peer.ns).await);
    lo_up(&rp).await;
    let eth0 = ok("eth0", rp.require_link("eth0").await);
    for &(a, l) in addrs {
        ok("addr", rp.add_address(eth0.index, a, l).await);
    }
    ok("up", rp.set_up(eth0.index).await);
    for g in [IpAddr::V4(gw.0), IpAddr::V6(gw.1)] {
        let route = Route {
            destination: None,
            gateway: Some(g),
            oif: None,
        };
        ok("default route", rp.add_route(&route).await);
    }
    r.index
}

impl Lab {
    pub async fn new() -> Self {
        let client = PinnedNs::new("client");
        let router = PinnedNs::new("router");
        let server = PinnedNs::new("server");
        for ns in [&client.ns, &router.ns, &server.ns] {
            no_dad(ns);
        }
        let rr = ok("connect router", Rtnl::connect(&router.ns).await);
        lo_up(&rr).await;
        let mut caddrs: Vec<(IpAddr, u8)> = (2..10)
            .map(|h| (Ipv4Addr::new(10, 0, 0, h).into(), 24))
            .collect();
        caddrs.push((v6("fd00::2").into(), 64));
        end(
            &rr,
            ("c0", &client),
            &caddrs,
            (ROUTER_C, v6("fd00::1")),
            &[(ROUTER_C.into(), 24), (v6("fd00::1").into(), 64)],
        )
        .await;
        let saddrs: Vec<(IpAddr, u8)> = vec![
            (SERVER_A.into(), 24),
            (SERVER_B.into(), 24),
            (v6("fd00:1::2").into(), 64),
            (v6("fd00:1::3").into(), 64),
        ];
        let s0 = end(
            &rr,
            ("s0", &server),
            &saddrs,
            (ROUTER_S, v6("fd00:1::1")),
            &[(ROUTER_S.into(), 24), (v6("fd00:1::1").into(), 64)],
        )
        .await;
        ok(
            "ip_forward",
            sysctl::write(&router.ns, "net.ipv4.ip_forward", "1"),
        );
        ok(
            "ipv6 forwarding",
            sysctl::write(&router.ns, "net.ipv6.conf.all.forwarding", "1"),
        );
        let nft = ok("nft", Nft::open(&router.ns));
        Self {
            client,
            router,
            server,
            nft,
            s0,
        }
    }
}

// Rule building blocks.

use plexus_sys::nft::{
    ct_state, BaseChain, Batch, ChainType, CmpOp, CtKey, Element, Expr, Family, Hook, MetaKey,
    NatKind, PayloadBase, SetDef, Verdict, REG32_00,
};

/// The 32-bit register `n`.
pub fn r(n: u32) -> u32 {
    REG32_00 + n
}

pub fn cmp(sreg: u32, data: &[u8]) -> Expr {
    Expr::Cmp {
        sreg,
        op: CmpOp::Eq,
        data: data.to_vec(),
    }
}

/// `ip daddr` (or `ip saddr`) into `dreg`.
pub fn ip4(daddr: bool, dreg: u32) -> Expr {
    Expr::Payload {
        base: PayloadBase::Network,
        offset: if daddr { 16 } else { 12 },
        len: 4,
        dreg,
    }
}

/// `th dport` into `dreg`.
pub fn dport(dreg: u32) -> Expr {
    Expr::Payload {
        base: PayloadBase::Transport,
        offset: 2,
        len: 2,
        dreg,
    }
}

/// `tcp dport PORT`.
pub fn tcp_dport(port: u16) -> Vec<Expr> {
    vec![
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: r(0),
        },
        cmp(r(0), &[6]),
        dport(r(0)),
        cmp(r(0), &port.to_be_bytes()),
    ]
}

/// `ip daddr ADDR tcp dport PORT`.
pub fn to4(addr: Ipv4Addr, port: u16) -> Vec<Expr> {
    let mut v = vec![ip4(true, r(0)), cmp(r(0), &addr.octets())];
    v.extend(tcp_dport(port));
    v
}

/// `ct state new`.
pub fn ct_new() -> Vec<Expr> {
    vec![
        Expr::Ct {
            key: CtKey::State,
            dreg: r(0),
        },
        Expr::Bitwise {
            sreg: r(0),
            dreg: r(0),
            mask: ct_state::NEW.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Neq,
            data: vec![0; 4],
        },
    ]
}

/// Bytes into register `dreg`.
pub fn imm(dreg: u32, data: &[u8]) -> Expr {
    Expr::Immediate {
        dreg,
        data: data.to_vec(),
    }
}

pub fn then(mut v: Vec<Expr>, more: impl IntoIterator<Item = Expr>) -> Vec<Expr> {
    v.extend(more);
    v
}

pub fn base(kind: ChainType, hook: Hook, priority: i32) -> Option<BaseChain> {
    Some(BaseChain {
        kind,
        hook,
        priority,
        policy: Verdict::Accept,
    })
}

/// An address and port as a map value or DNAT registers hold them (the port padded to a
/// register).
pub fn addr_port(addr: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut v = addr.octets().to_vec();
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v
}

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// A map from a 4-byte number (numgen, jhash) to backend address and port.
pub fn backends_map(name: &str) -> SetDef {
    SetDef {
        name: name.into(),
        key_len: 4,
        data: Some((0, 8)),
        ..SetDef::default()
    }
}

pub fn backend(n: u32, addr: Ipv4Addr, port: u16) -> Element {
    Element {
        key: n.to_ne_bytes().to_vec(),
        data: Some(addr_port(addr, port)),
        ..Element::default()
    }
}

/// `dnat to` the address and port in r0 and r1.
pub fn dnat4() -> Expr {
    Expr::Nat {
        kind: NatKind::Dnat,
        family: Family::Ip,
        addr: Some(r(0)),
        addr_max: None,
        port: Some(r(1)),
        port_max: None,
    }
}

/// A NAT table `t` with a prerouting chain.
pub fn nat_table(nft: &Nft) -> Batch {
    let mut b = nft.batch();
    b.add_table(Family::Ip, "t");
    b.add_chain(
        Family::Ip,
        "t",
        "pre",
        base(ChainType::Nat, Hook::Prerouting, -100),
    );
    b
}

/// A filter table `t` with a forward chain (policy accept).
pub fn filter_table(nft: &Nft) -> Batch {
    let mut b = nft.batch();
    b.add_table(Family::Ip, "t");
    b.add_chain(
        Family::Ip,
        "t",
        "fwd",
        base(ChainType::Filter, Hook::Forward, 0),
    );
    b
}

/// Which backend address served each of `n` connections to `dst`.
pub fn served(lab: &Lab, dst: std::net::SocketAddr, n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|_| reaches(&lab.client.ns, dst).local.ip())
        .collect()
}
