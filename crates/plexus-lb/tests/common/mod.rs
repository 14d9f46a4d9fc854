//! A small world for the load balancer: a hub namespace holding a bridge, a client namespace
//! (the sandbox whose table is under test) and four backend namespaces on it, all in
//! 10.231.0.0/24. Backends answer TCP and UDP on every port they are asked to with their own
//! address and the peer they saw. Every namespace is removed by a drop guard, even when a test
//! fails; each test has its own hub, so tests run in parallel.
//!
//! ```text
//!   client 10.231.0.2 ──┐
//!   be0    10.231.0.10 ─┤
//!   be1    10.231.0.11 ─┼── br0 (hub namespace)
//!   be2    10.231.0.12 ─┤
//!   be3    10.231.0.13 ─┘        VIPs: 10.231.0.100 and up (no interface has them)
//! ```

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use plexus_lb::{ServiceView, View};
use plexus_sys::netns::Netns;

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);
pub const BACKENDS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 231, 0, 10),
    Ipv4Addr::new(10, 231, 0, 11),
    Ipv4Addr::new(10, 231, 0, 12),
    Ipv4Addr::new(10, 231, 0, 13),
];
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 100);
pub const ID: &str = "web000000001";

#[macro_export]
macro_rules! need_root {
    () => {
        plexus_testkit::require_root()
    };
}

pub fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

pub use plexus_testkit::netns::PinnedNs;

/// Shell commands inside a test namespace (set-up and inspection only).
pub trait Sh {
    /// Runs `cmd` with `sh -ec` inside the namespace; fails the test if it fails.
    fn sh(&self, cmd: &str) -> String;
}

impl Sh for PinnedNs {
    fn sh(&self, cmd: &str) -> String {
        let out = ok(
            "nsenter",
            Command::new("nsenter")
                .arg(format!("--net={}", self.path()))
                .args(["sh", "-ec", cmd])
                .output(),
        );
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The world: hub, client, four backends.
pub struct World {
    pub hub: PinnedNs,
    pub client: PinnedNs,
    pub backends: Vec<PinnedNs>,
}

impl World {
    pub fn new() -> Self {
        let hub = PinnedNs::new("hub");
        hub.sh("ip link set lo up; ip link add br0 type bridge; ip link set br0 up");
        let client = PinnedNs::new("client");
        let backends: Vec<PinnedNs> = (0..4).map(|k| PinnedNs::new(&format!("be{k}"))).collect();
        let ends = std::iter::once((&client, CLIENT, "c")).chain(
            backends
                .iter()
                .zip(BACKENDS)
                .zip(["b0", "b1", "b2", "b3"])
                .map(|((p, a), n)| (p, a, n)),
        );
        for (p, addr, n) in ends {
            hub.sh(&format!(
                "ip link add v{n} type veth peer name eth0 netns {}; ip link set v{n} master br0 up",
                p.path()
            ));
            p.sh(&format!(
                "ip link set lo up; ip addr add {addr}/24 dev eth0; ip link set eth0 up"
            ));
        }
        Self {
            hub,
            client,
            backends,
        }
    }
}

/// TCP and UDP servers in every backend: each answers with `"<own address> <peer>"`.
pub struct Servers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Servers {
    pub fn start(world: &World, tcp: &[u16], udp: &[u16]) -> Self {
        let backends: Vec<_> = world.backends.iter().zip(BACKENDS).collect();
        Self::start_on(&backends, tcp, udp)
    }

    /// Servers in the namespaces given, each answering from its address.
    pub fn start_on(backends: &[(&PinnedNs, Ipv4Addr)], tcp: &[u16], udp: &[u16]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &(p, own) in backends {
            for &port in tcp {
                let l = ok(
                    "listen",
                    ok("run", p.ns.run(move || TcpListener::bind((own, port)))),
                );
                ok("nonblocking", l.set_nonblocking(true));
                let flag = stop.clone();
                threads.push(std::thread::spawn(move || serve_tcp(l, own, &flag)));
            }
            for &port in udp {
                let s = ok(
                    "bind udp",
                    ok("run", p.ns.run(move || UdpSocket::bind((own, port)))),
                );
                ok(
                    "timeout",
                    s.set_read_timeout(Some(Duration::from_millis(50))),
                );
                let flag = stop.clone();
                threads.push(std::thread::spawn(move || serve_udp(s, own, &flag)));
            }
        }
        Self { stop, threads }
    }
}

fn serve_tcp(l: TcpListener, own: Ipv4Addr, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut c, peer)) => {
                let _ = c.set_nonblocking(false);
                let _ = c.write_all(format!("{own} {peer}").as_bytes());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

fn serve_udp(s: UdpSocket, own: Ipv4Addr, stop: &AtomicBool) {
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((_, peer)) = s.recv_from(&mut buf) {
            let _ = s.send_to(format!("{own} {peer}").as_bytes(), peer);
        }
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

/// What a backend answered: its own address and the peer it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub backend: Ipv4Addr,
    pub peer: SocketAddr,
}

fn parse(text: &str) -> std::io::Result<Answer> {
    let mut parts = text.split(' ');
    match (
        parts.next().map(str::parse::<Ipv4Addr>),
        parts.next().map(str::parse::<SocketAddr>),
    ) {
        (Some(Ok(backend)), Some(Ok(peer))) => Ok(Answer { backend, peer }),
        _ => Err(std::io::Error::other(format!("bad answer {text:?}"))),
    }
}

/// One TCP connection (inside the namespace's thread) and its answer.
pub fn tcp_once(dst: SocketAddr) -> std::io::Result<Answer> {
    tcp_once_within(dst, Duration::from_secs(3))
}

/// One TCP connection, given up after `timeout` (to connect, then to read the answer).
pub fn tcp_once_within(dst: SocketAddr, timeout: Duration) -> std::io::Result<Answer> {
    let mut s = TcpStream::connect_timeout(&dst, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    parse(&text)
}

/// `n` TCP connections from the client to `dst`, in one thread inside its namespace.
pub fn tcp_many(world: &World, dst: SocketAddr, n: usize) -> Vec<Answer> {
    tcp_many_from(&world.client.ns, dst, n)
}

/// `n` TCP connections from `ns` to `dst`, in one thread inside it.
pub fn tcp_many_from(ns: &Netns, dst: SocketAddr, n: usize) -> Vec<Answer> {
    let res = ok(
        "run",
        ns.run(move || (0..n).map(|_| tcp_once(dst)).collect::<Vec<_>>()),
    );
    res.into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("connection {i} to {dst}: {e}")))
        .collect()
}

/// How many answers came from each backend.
pub fn spread(answers: &[Answer]) -> BTreeMap<Ipv4Addr, usize> {
    let mut m = BTreeMap::new();
    for a in answers {
        *m.entry(a.backend).or_insert(0) += 1;
    }
    m
}

/// A view of one service.
pub fn one(id: &str, vip: Ipv4Addr, backends: &[Ipv4Addr], affinity: Option<Duration>) -> View {
    View {
        services: [(
            id.to_string(),
            ServiceView {
                name: "web".into(),
                vip: IpAddr::V4(vip),
                backends: backends.iter().map(|b| IpAddr::V4(*b)).collect(),
                affinity,
            },
        )]
        .into_iter()
        .collect(),
    }
}
