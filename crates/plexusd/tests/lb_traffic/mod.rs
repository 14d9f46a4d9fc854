//! Traffic through services' virtual IPs for `services_traffic.rs`: servers in task
//! sandboxes' namespaces that answer with their name and the peer they saw, a client loop
//! run inside a sandbox's namespace (a thread entered with setns, no process per
//! connection), and the view each sandbox should have, computed from the API's answers.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use plexus_lb::{ServiceView, View};
use plexus_sys::netns::Netns;

use crate::common::{json, Daemon};

/// The TCP port the task servers answer on: one line, `<name> <peer address>`, then close.
pub const NAME_PORT: u16 = 80;
/// The TCP port the task servers echo lines on, for streams.
pub const ECHO_PORT: u16 = 81;
/// The UDP port the task servers answer on: `<name> <peer address>`.
pub const UDP_PORT: u16 = 5300;

pub fn ns(path: &str) -> Netns {
    Netns::open(Path::new(path)).unwrap_or_else(|e| panic!("opening {path}: {e}"))
}

/// A sandbox's namespace path and its IPv4 addresses by network id.
pub fn sandbox(d: &Daemon, name: &str) -> (String, BTreeMap<String, Ipv4Addr>) {
    let v = json(&d.ok(&["sandbox", "inspect", name]));
    let s = &v[0];
    let mut addrs = BTreeMap::new();
    for ep in s["Endpoints"].as_array().cloned().unwrap_or_default() {
        let a = ep["IPv4Address"].as_str().unwrap_or("");
        if let Some(ip) = a.split('/').next().and_then(|a| a.parse().ok()) {
            addrs.insert(ep["NetworkID"].as_str().unwrap_or("").to_string(), ip);
        }
    }
    (s["NetNs"].as_str().unwrap_or("").to_string(), addrs)
}

/// The first IPv4 address of a sandbox.
pub fn addr_of(d: &Daemon, name: &str) -> Ipv4Addr {
    let (_, addrs) = sandbox(d, name);
    *addrs
        .values()
        .next()
        .unwrap_or_else(|| panic!("{name} has no IPv4 address"))
}

/// A service's first virtual IP.
pub fn vip_of(d: &Daemon, service: &str) -> Ipv4Addr {
    let v = json(&d.ok(&["service", "inspect", service]));
    let a = v[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .unwrap_or("")
        .to_string();
    a.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{service} has no virtual IP: {v}"))
}

/// Starts the TCP (name, echo) and UDP servers of task `name` in its namespace. They run
/// until the test process ends.
pub fn serve(d: &Daemon, name: &str) {
    let (path, _) = sandbox(d, name);
    let ns = ns(&path);
    let (tcp, echo, udp) = ns
        .run(|| {
            (
                TcpListener::bind(("0.0.0.0", NAME_PORT)),
                TcpListener::bind(("0.0.0.0", ECHO_PORT)),
                UdpSocket::bind(("0.0.0.0", UDP_PORT)),
            )
        })
        .unwrap_or_else(|e| panic!("entering {path}: {e}"));
    let (tcp, echo, udp) = (
        tcp.unwrap_or_else(|e| panic!("listen in {name}: {e}")),
        echo.unwrap_or_else(|e| panic!("listen in {name}: {e}")),
        udp.unwrap_or_else(|e| panic!("bind in {name}: {e}")),
    );
    let n = name.to_string();
    std::thread::spawn(move || {
        for conn in tcp.incoming().flatten() {
            let mut conn = conn;
            let peer = conn
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = conn.write_all(format!("{n} {peer}\n").as_bytes());
        }
    });
    let n = name.to_string();
    std::thread::spawn(move || {
        for conn in echo.incoming().flatten() {
            let n = n.clone();
            std::thread::spawn(move || {
                let mut w = match conn.try_clone() {
                    Ok(w) => w,
                    Err(_) => return,
                };
                for line in BufReader::new(conn).lines().map_while(Result::ok) {
                    if w.write_all(format!("{n} {line}\n").as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let n = name.to_string();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(format!("{n} {}", from.ip()).as_bytes(), from);
        }
    });
}

/// What a run of connections saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Answers by task name.
    pub by_task: BTreeMap<String, usize>,
    /// The peer addresses the tasks reported.
    pub peers: BTreeSet<String>,
    /// Connections that failed, with the first error.
    pub failed: usize,
    pub first_error: Option<String>,
}

/// One connection to `to`: the answering task's name and the peer it saw.
pub fn ask(to: SocketAddr) -> std::io::Result<(String, String)> {
    let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut text = String::new();
    c.read_to_string(&mut text)?;
    let mut parts = text.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(n), Some(p)) => Ok((n.to_string(), p.to_string())),
        _ => Err(std::io::Error::other(format!("answer {text:?}"))),
    }
}

/// `n` connections to `to`, one after the other, from inside the namespace at `netns`.
pub fn connect_many(netns: &str, to: SocketAddr, n: usize) -> Tally {
    ns(netns)
        .run(move || {
            // Room for every connection's source port.
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65000");
            let mut t = Tally::default();
            for _ in 0..n {
                match ask(to) {
                    Ok((name, peer)) => {
                        *t.by_task.entry(name).or_default() += 1;
                        t.peers.insert(peer);
                    }
                    Err(e) => {
                        t.failed += 1;
                        t.first_error.get_or_insert(e.to_string());
                    }
                }
            }
            t
        })
        .unwrap_or_else(|e| panic!("entering {netns}: {e}"))
}

/// One UDP datagram to `to` from inside `netns`: the answer and where it came from.
pub fn udp_ask(netns: &str, to: SocketAddr) -> std::io::Result<(String, SocketAddr)> {
    ns(netns)
        .run(move || {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.send_to(b"hello", to)?;
            let mut buf = [0u8; 512];
            let (n, from) = s.recv_from(&mut buf)?;
            Ok((String::from_utf8_lossy(&buf[..n]).into_owned(), from))
        })
        .unwrap_or_else(|e| panic!("entering {netns}: {e}"))
}

/// A connection attempt from inside `netns`: its error kind (if any) and how long it took.
pub fn try_connect(netns: &str, to: SocketAddr) -> (Option<std::io::ErrorKind>, Duration) {
    ns(netns)
        .run(move || {
            let began = Instant::now();
            let r = TcpStream::connect_timeout(&to, Duration::from_secs(3));
            (r.err().map(|e| e.kind()), began.elapsed())
        })
        .unwrap_or_else(|e| panic!("entering {netns}: {e}"))
}

/// The table's view in the namespace at `netns`.
pub fn kernel_view(netns: &str) -> View {
    plexus_lb::read(&ns(netns)).unwrap_or_else(|e| panic!("reading {netns}'s table: {e}"))
}

/// The key of a service's VIP on its `index`-th network (plexusd's `lb::model::key`).
pub fn key(id: &str, index: usize) -> String {
    if index == 0 {
        return id[..12].to_string();
    }
    format!("{}{}", &id[..11], char::from(b'f' + index as u8))
}

fn v4(addr: &str) -> Option<IpAddr> {
    addr.split('/')
        .next()
        .and_then(|a| a.parse::<IpAddr>().ok())
        .filter(IpAddr::is_ipv4)
}

/// Every sandbox's namespace and the view it should have, computed from `service
/// inspect` and `sandbox inspect` (the store's terms), independently of plexusd's code.
pub fn expected_views(d: &Daemon) -> BTreeMap<String, (String, View)> {
    // (network, key, view) of every VIP.
    let mut entries: Vec<(String, String, ServiceView)> = Vec::new();
    let ids = d.ok(&["service", "ls", "-q"]);
    for id in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let v = json(&d.ok(&["service", "inspect", id]));
        let s = &v[0];
        if s["Endpoint"]["Spec"]["Mode"].as_str() == Some("dnsrr") {
            continue;
        }
        let full = s["ID"].as_str().unwrap_or("").to_string();
        let affinity = (s["SessionAffinity"]["Mode"].as_str() == Some("client-ip")).then(|| {
            Duration::from_secs(s["SessionAffinity"]["TimeoutSeconds"].as_u64().unwrap_or(0))
        });
        let nets: Vec<String> = s["Networks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|n| n["Target"].as_str().unwrap_or("").to_string())
            .collect();
        let vips = s["Endpoint"]["VirtualIPs"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let tasks = s["Tasks"].as_array().cloned().unwrap_or_default();
        for (i, net) in nets.iter().enumerate() {
            let Some(vip) = vips
                .iter()
                .filter(|x| x["NetworkID"].as_str() == Some(net))
                .find_map(|x| v4(x["Addr"].as_str().unwrap_or("")))
            else {
                continue;
            };
            let backends = tasks
                .iter()
                .flat_map(|t| t["Addresses"].as_array().cloned().unwrap_or_default())
                .filter(|a| a["NetworkID"].as_str() == Some(net))
                .filter_map(|a| v4(a["Addr"].as_str().unwrap_or("")))
                .collect();
            let view = ServiceView {
                name: s["Name"].as_str().unwrap_or("").to_string(),
                vip,
                backends,
                affinity,
            };
            entries.push((net.clone(), key(&full, i), view.normalized()));
        }
    }
    let mut out = BTreeMap::new();
    for name in d.ok(&["sandbox", "ls", "-q"]).lines().map(str::trim) {
        if name.is_empty() {
            continue;
        }
        let v = json(&d.ok(&["sandbox", "inspect", name]));
        let path = v[0]["NetNs"].as_str().unwrap_or("").to_string();
        let nets: BTreeSet<String> = v[0]["Endpoints"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| e["NetworkID"].as_str().unwrap_or("").to_string())
            .collect();
        let mut view = View::default();
        for (net, key, sv) in &entries {
            if nets.contains(net) {
                view.services.insert(key.clone(), sv.clone());
            }
        }
        out.insert(name.to_string(), (path, view));
    }
    out
}

/// The published ports the daemon's namespace should answer, computed from `service
/// inspect` (local services: each port over the tasks' first IPv4 address, in the order
/// the service lists them): (protocol, published port) → (target port, backends).
pub fn expected_mesh(d: &Daemon) -> BTreeMap<(String, u16), (u16, BTreeSet<Ipv4Addr>)> {
    let mut out = BTreeMap::new();
    let ids = d.ok(&["service", "ls", "-q"]);
    for id in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let v = json(&d.ok(&["service", "inspect", id]));
        let s = &v[0];
        let backends: BTreeSet<Ipv4Addr> = s["Tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|t| {
                t["Addresses"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .find_map(|a| match v4(a["Addr"].as_str().unwrap_or("")) {
                        Some(IpAddr::V4(a)) => Some(a),
                        _ => None,
                    })
            })
            .collect();
        for p in s["Endpoint"]["Ports"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let proto = p["Protocol"].as_str().unwrap_or("tcp").to_string();
            let published = p["PublishedPort"].as_u64().unwrap_or(0) as u16;
            let target = p["TargetPort"].as_u64().unwrap_or(0) as u16;
            out.insert((proto, published), (target, backends.clone()));
        }
    }
    out
}

/// The daemon's namespace's published ports as the kernel holds them, in
/// [`expected_mesh`]'s terms.
pub fn kernel_mesh(d: &Daemon) -> BTreeMap<(String, u16), (u16, BTreeSet<Ipv4Addr>)> {
    let view = plexus_lb::mesh::read(&d.host_ns)
        .unwrap_or_else(|e| panic!("reading the host's mesh table: {e}"));
    view.ports
        .iter()
        .map(|(k, p)| {
            (
                (k.protocol.name().to_string(), k.port),
                (p.target, p.backends.iter().copied().collect()),
            )
        })
        .collect()
}

/// Checks that every sandbox's table, and the daemon's published ports, hold what the
/// store gives them; returns how many (sandbox, VIP) entries and published ports were
/// compared.
pub fn check_kernel_follows_store(d: &Daemon, when: &str) -> usize {
    let want = expected_mesh(d);
    assert_eq!(
        kernel_mesh(d),
        want,
        "{when}: the published ports differ from the store\n--- log tail ---\n{}",
        tail(&d.log())
    );
    let mut compared = want.len();
    for (name, (path, want)) in expected_views(d) {
        compared += want.services.len();
        let have = kernel_view(&path);
        assert_eq!(
            have,
            want.normalized(),
            "{when}: sandbox {name}'s table differs from the store\n--- log tail ---\n{}",
            tail(&d.log())
        );
    }
    compared
}

pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Waits up to `within` for `f` to hold.
pub fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A stream through the VIP's echo port: a line sent, its echo read.
pub struct Stream {
    conn: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Stream {
    pub fn open(netns: &str, to: SocketAddr) -> Self {
        let conn = ns(netns)
            .run(move || TcpStream::connect_timeout(&to, Duration::from_secs(2)))
            .unwrap_or_else(|e| panic!("entering {netns}: {e}"))
            .unwrap_or_else(|e| panic!("streaming to {to}: {e}"));
        let _ = conn.set_read_timeout(Some(Duration::from_secs(3)));
        let reader = BufReader::new(conn.try_clone().unwrap_or_else(|e| panic!("clone: {e}")));
        Stream { conn, reader }
    }

    /// Sends `line`; returns the echo (`<task> <line>`).
    pub fn echo(&mut self, line: &str) -> std::io::Result<String> {
        self.conn.write_all(format!("{line}\n").as_bytes())?;
        let mut back = String::new();
        self.reader.read_line(&mut back)?;
        Ok(back.trim().to_string())
    }
}

/// A tiny deterministic generator (xorshift64*), seeded by `PLEXUS_SEED`.
pub struct Rng(u64);

impl Rng {
    pub fn from_env() -> (Self, u64) {
        let seed = std::env::var("PLEXUS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        (Rng(seed.max(1)), seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A sample of `/metrics` over the API socket (`name{labels}` as printed), or `None`.
pub fn metric(d: &Daemon, sample: &str) -> Option<f64> {
    let mut conn = std::os::unix::net::UnixStream::connect(d.socket())
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", d.socket().display()));
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: plexus\r\n\r\n")
        .unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    let mut text = String::new();
    let _ = conn.read_to_string(&mut text);
    text.lines().find_map(|l| {
        l.strip_prefix(sample)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}
