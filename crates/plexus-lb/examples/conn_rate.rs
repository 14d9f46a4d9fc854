//! Connection set-up through a service VIP programmed by [`plexus_lb::Dispatcher`], with 1
//! and with 10,000 services in the table, against connecting to a backend's address
//! directly from the same namespace, and against the kernel's floor for any NAT (one static
//! `dnat` rule in a namespace of its own). Needs root; run in release:
//!
//! ```text
//! cargo run --release -p plexus-lb --example conn_rate [-- --conns N] [--block B] [--prefix P]
//! ```
//!
//! The world, on a bridge in a hub namespace (all named `<prefix>-*`, pinned under
//! `/run/netns`, removed on exit, also on failure; the default prefix is `plxl<pid>`):
//!
//! ```text
//!   c1    10.232.0.2  the 1-service table (service S, VIP 10.232.0.100)
//!   c10k  10.232.0.3  S too, then 10,000 services: S among them, and L, the last one added
//!   floor 10.232.0.4  no plexus-lb table: `ip daddr 10.232.0.99 dnat to 10.232.0.10` only
//!   be0-3 10.232.0.10-13  TCP listeners on :8100-8119 that accept and close (a thread each)
//! ```
//!
//! Every service has 4 backends; S's and L's are the four real ones, the others' are
//! addresses nobody holds. Each measured connection is `socket`, `connect` (the handshake),
//! then `close` with `SO_LINGER` 0 (a reset: no TIME_WAIT, so 10^5 connections do not run
//! out of ports), timed as a whole, one after another from one thread in the client's
//! namespace. The cases run interleaved in blocks (`--block` connections each, the order
//! rotating from round to round) so the machine's noise hits all alike:
//!
//! - phase `pre` (both clients hold S only): `vip_1` (c1 → S), `vip_pre` (c10k → S, a check
//!   that the two client namespaces cost the same), `direct` (c1 → be0);
//! - then c10k's table goes from S to 10,000 services in one `apply` (timed: `load_ms`);
//! - phase `10k`: `vip_1` (c1 → S), `vip_10k` (c10k → S), `vip_10k_last` (c10k → L),
//!   `direct` (c1 → be0), `direct_10k` (c10k → be0), `floor_dnat` (floor → its static DNAT),
//!   `floor_direct` (floor → be0: no NAT, conntrack on in that namespace too).
//!
//! Each case has a destination port of its own (see [`PORT`]) and the clients use ports
//! 1024-65000.
//!
//! Output: one line per case and phase, `phase=… case=… n=… p50_us=… p99_us=… mean_us=…
//! rate_per_s=…` (the rate is 1 / the mean), and `load_ms=… services=…`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};
use plexus_lb::{Dispatcher, ServiceView, View};
use plexus_sys::netns::Netns;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const NETNS_DIR: &str = "/run/netns";
/// Each case of each phase connects to a port of its own (`PORT + 10 * phase + case`; the
/// VIP keeps the port), so no two cases share a conntrack tuple: a connection closed by a
/// reset leaves its conntrack entry for 10 s, and a new SYN matching it (in either direction,
/// as a direct connection to a backend matches a NATed one's reply) takes the slow "reopen"
/// path. Backends listen on all of them.
const PORT: u16 = 8100;
const PORTS: u16 = 20;
const C1: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 2);
const C10K: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 3);
const FLOOR: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 4);
const BACKENDS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 232, 0, 10),
    Ipv4Addr::new(10, 232, 0, 11),
    Ipv4Addr::new(10, 232, 0, 12),
    Ipv4Addr::new(10, 232, 0, 13),
];
/// S: the measured service, in both tables.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 100);
const ID: &str = "s00000005000";
/// L: the service added last (its id sorts last, so it is the batch's last element).
const VIP_LAST: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 101);
const ID_LAST: &str = "z00000000000";
/// The floor namespace's static DNAT address.
const FLOOR_VIP: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 99);
const SERVICES: u32 = 10_000;

/// Namespaces pinned under /run/netns, deleted on drop (so also when a step fails or
/// panics; a kill leaves them to run.sh's trap, which removes `<prefix>-*`).
struct World {
    names: Vec<String>,
}

impl World {
    fn ns(&mut self, prefix: &str, name: &str) -> Res<Netns> {
        let full = format!("{prefix}-{name}");
        let ns = Netns::create(Path::new(NETNS_DIR), &full)?;
        self.names.push(full);
        Ok(ns)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            if let Err(e) = Netns::delete(Path::new(NETNS_DIR), n) {
                eprintln!("conn_rate: deleting namespace {n}: {e}");
            }
        }
    }
}

fn ip(args: &str) -> Res<()> {
    sh("ip", &args.split_whitespace().collect::<Vec<_>>(), None)
}

fn sh(cmd: &str, args: &[&str], stdin: Option<&str>) -> Res<()> {
    use std::io::Write;
    let mut c = Command::new(cmd);
    c.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("{cmd}: {e}"))?;
    if let (Some(text), Some(mut i)) = (stdin, child.stdin.take()) {
        i.write_all(text.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(())
}

fn service(name: &str, vip: Ipv4Addr, backends: Vec<Ipv4Addr>) -> ServiceView {
    ServiceView {
        name: name.into(),
        vip: IpAddr::V4(vip),
        backends: backends.into_iter().map(IpAddr::V4).collect(),
        affinity: None,
    }
}

fn one() -> View {
    View {
        services: [(ID.to_string(), service("s", VIP, BACKENDS.to_vec()))]
            .into_iter()
            .collect(),
    }
}

/// 10,000 services: S, L, and 9,998 others on 10.64.0.0/10 with backends nobody holds.
fn many() -> View {
    let mut services = BTreeMap::new();
    for i in 0..SERVICES - 1 {
        let base = 0x0a40_0000 + i * 8;
        let bes = (1..5).map(|k| Ipv4Addr::from(base + k)).collect();
        services.insert(
            format!("s{i:011}"),
            service(&format!("svc{i}"), Ipv4Addr::from(base), bes),
        );
    }
    // S's id is one of the others' ids: replaced by the real S.
    services.insert(ID.to_string(), service("s", VIP, BACKENDS.to_vec()));
    services.insert(
        ID_LAST.to_string(),
        service("last", VIP_LAST, BACKENDS.to_vec()),
    );
    debug_assert_eq!(services.len(), SERVICES as usize);
    View { services }
}

/// Accept-and-close on one backend, on every port: each listener is made inside the
/// backend's namespace and accepted from a thread of its own for the life of the process.
fn backend(ns: &Netns, addr: Ipv4Addr) -> Res<()> {
    for port in PORT..PORT + PORTS {
        let l = ns.run(move || TcpListener::bind((addr, port)))??;
        std::thread::Builder::new()
            .name(format!("be-{addr}-{port}"))
            .spawn(move || loop {
                match l.accept() {
                    Ok((c, _)) => drop(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            })?;
    }
    Ok(())
}

/// `n` sequential connect+close to `dst`, timed one by one (ns each).
fn connections(dst: SocketAddr, n: usize) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::with_capacity(n);
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    for _ in 0..n {
        let t0 = Instant::now();
        let s = TcpStream::connect_timeout(&dst, Duration::from_secs(3))?;
        setsockopt(&s.as_fd(), sockopt::Linger, &linger).map_err(std::io::Error::from)?;
        drop(s);
        out.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(out)
}

struct Case {
    name: &'static str,
    ns: Netns,
    dst: SocketAddr,
    samples: Vec<u64>,
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e3
}

/// Runs the cases interleaved, `conns` each in blocks of `block`, the order rotating.
fn phase(label: &str, cases: &mut [Case], conns: usize, block: usize) -> Res<()> {
    // warm-up: ARP, the conntrack and route caches
    for c in cases.iter() {
        let dst = c.dst;
        c.ns.run(move || connections(dst, 200))?
            .map_err(|e| format!("{label}/{}: {dst}: {e}", c.name))?;
    }
    let rounds = conns.div_ceil(block);
    let k = cases.len();
    for r in 0..rounds {
        for j in 0..k {
            let c = &mut cases[(r + j) % k];
            let dst = c.dst;
            let s =
                c.ns.run(move || connections(dst, block))?
                    .map_err(|e| format!("{label}/{}: {dst}: {e}", c.name))?;
            c.samples.extend(s);
        }
    }
    for c in cases.iter() {
        let mut v = c.samples.clone();
        v.sort_unstable();
        let mean = v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1e3;
        println!(
            "phase={label} case={} n={} p50_us={:.1} p99_us={:.1} mean_us={:.1} rate_per_s={:.0}",
            c.name,
            v.len(),
            pct(&v, 0.5),
            pct(&v, 0.99),
            mean,
            1e6 / mean
        );
    }
    Ok(())
}

fn main() -> Res<()> {
    let mut conns = 20_000usize;
    let mut block = 500usize;
    let mut prefix = format!("plxl{}", std::process::id());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a}: a value is needed"));
        match a.as_str() {
            "--conns" => conns = val()?.parse()?,
            "--block" => block = val()?.parse()?,
            "--prefix" => prefix = val()?,
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    let mut w = World { names: Vec::new() };
    let _hub = w.ns(&prefix, "hub")?;
    let c1 = w.ns(&prefix, "c1")?;
    let c10k = w.ns(&prefix, "c10k")?;
    let floor = w.ns(&prefix, "floor")?;
    let bes = (0..4)
        .map(|k| w.ns(&prefix, &format!("be{k}")))
        .collect::<Res<Vec<_>>>()?;
    let hubn = format!("{prefix}-hub");
    ip(&format!("-n {hubn} link set lo up"))?;
    ip(&format!("-n {hubn} link add br0 type bridge"))?;
    ip(&format!("-n {hubn} link set br0 up"))?;
    let ends = [("c1", C1), ("c10k", C10K), ("floor", FLOOR)]
        .into_iter()
        .chain(["be0", "be1", "be2", "be3"].into_iter().zip(BACKENDS));
    for (i, (n, addr)) in ends.enumerate() {
        let full = format!("{prefix}-{n}");
        ip(&format!(
            "-n {hubn} link add v{i} type veth peer name eth0 netns {full}"
        ))?;
        ip(&format!("-n {hubn} link set v{i} master br0 up"))?;
        ip(&format!("-n {full} link set lo up"))?;
        ip(&format!("-n {full} addr add {addr}/24 dev eth0"))?;
        ip(&format!("-n {full} link set eth0 up"))?;
    }
    // The clients' ephemeral ports: 64,000 instead of 28,000, so that a case's connections
    // to its one destination do not wrap around onto tuples conntrack still holds.
    for n in ["c1", "c10k", "floor"] {
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &format!("{prefix}-{n}"),
                "sysctl",
                "-qw",
                "net.ipv4.ip_local_port_range=1024 65000",
            ],
            None,
        )?;
    }
    for (ns, addr) in bes.iter().zip(BACKENDS) {
        backend(ns, addr)?;
    }
    // The floor: one static DNAT rule, nothing else (conntrack and NAT, no plexus-lb).
    sh(
        "ip",
        &["netns", "exec", &format!("{prefix}-floor"), "nft", "-f", "-"],
        Some(&format!(
            "table ip plxl-floor {{\nchain out {{\ntype nat hook output priority -100\nip daddr {FLOOR_VIP} dnat to {}\n}}\n}}\n",
            BACKENDS[0]
        )),
    )?;
    let lb1 = Dispatcher::open(&c1)?;
    let lbk = Dispatcher::open(&c10k)?;
    lb1.apply(&View::default(), &one())?;
    lbk.apply(&View::default(), &one())?;
    let case = |name, ns: &Netns, a, port| Case {
        name,
        ns: ns.clone(),
        dst: SocketAddr::from((a, port)),
        samples: Vec::new(),
    };
    let mut pre = vec![
        case("vip_1", &c1, VIP, PORT),
        case("vip_pre", &c10k, VIP, PORT + 1),
        case("direct", &c1, BACKENDS[0], PORT + 2),
    ];
    phase("pre", &mut pre, conns, block)?;
    let big = many();
    let t0 = Instant::now();
    lbk.apply(&one(), &big)?;
    println!(
        "load_ms={:.0} services={}",
        t0.elapsed().as_secs_f64() * 1e3,
        big.services.len()
    );
    if lbk.read()?.services.len() != big.services.len() {
        return Err("the 10,000-service table does not read back whole".into());
    }
    let mut cases = vec![
        case("vip_1", &c1, VIP, PORT + 10),
        case("vip_10k", &c10k, VIP, PORT + 11),
        case("vip_10k_last", &c10k, VIP_LAST, PORT + 12),
        case("direct", &c1, BACKENDS[0], PORT + 13),
        case("direct_10k", &c10k, BACKENDS[0], PORT + 14),
        case("floor_dnat", &floor, FLOOR_VIP, PORT + 15),
        case("floor_direct", &floor, BACKENDS[0], PORT + 16),
    ];
    phase("10k", &mut cases, conns, block)?;
    lbk.remove()?;
    lb1.remove()?;
    drop(w);
    Ok(())
}
