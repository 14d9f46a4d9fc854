//! Connection set-up through the routing mesh (a published port on a host, DNATed by
//! [`plexus_lb::mesh`] to the host's ingress sandbox and from there to a backend, the
//! replies going back by [`plexus_lb::return_path`]) against connecting to a backend's
//! address directly over the same hops. Needs root; run in release:
//!
//! ```text
//! cargo run --release -p plexus-lb --example mesh_rate [-- --conns N] [--block B] [--prefix P]
//! ```
//!
//! The world, in 10.239.0.0/16 (no other example or test uses it), all namespaces named
//! `<prefix>-*`, pinned under `/run/netns` and removed on exit, also on failure (the
//! default prefix is `plxm<pid>`):
//!
//! ```text
//!  client 10.239.1.2 ── cl: host 10.239.1.1 ─ ing 10.239.2.1 ── eth0: ingress 10.239.2.2
//!  (default via .1.1)      Host-scope mesh table                Gateway-scope mesh table
//!                          10.239.3/24 and 10.239.4/24          (default via 10.239.2.1)
//!                          via 10.239.2.2                       ovl 10.239.3.2 ── br0 (hub)
//!                                                               dir 10.239.4.2 ── br1 (hub)
//!  be0 eth0 10.239.3.10 (br0), eth1 10.239.4.10 (br1)   return path: the ingress's ovl MAC
//!  be1 eth0 10.239.3.11 (br0), eth1 10.239.4.11 (br1)   → 10.239.3.2 on eth0; after the
//!                                                       check 10.239.1.0/24 via 10.239.4.2
//! ```
//!
//! `br0` is the ingress network (an overlay in a cluster), `br1` a second network alike
//! between the ingress namespace and the backends, for the direct connections: the return
//! path marks every new connection arriving from the ingress's MAC on `eth0`, so a direct
//! connection over `eth0` would take the return path too; over `eth1` it uses none of the
//! mesh's machinery, with as many hops and the same kind of link.
//!
//! Cases (each its own destination ports, see [`PORT`] and [`TARGET`]):
//!
//! - `mesh`: client → 10.239.1.1:8100, the published port: the host's table DNATs to
//!   10.239.2.2:8100 (the ingress), the ingress's to one of the backends' 10.239.3.1x:9100
//!   (`numgen random`), the backend's reply takes the return path's mark, table and route back
//!   through the ingress (which un-DNATs) and the host (likewise);
//! - `direct`: client → 10.239.4.1x:9101 (be0 and be1 in turn) routed through the host and
//!   the ingress namespace, no NAT, no mark;
//! - `direct_rp`: client → 10.239.3.1x:9102 (in turn), the same over the ingress network: no
//!   NAT, but the backends mark it and route the replies by the return path (its share);
//! - `floor_dnat`: client → 10.239.1.1:8103 DNATed by one static rule on the host to
//!   10.239.3.10:9103 (no plexus-lb table involved; the replies by the return path): the
//!   kernel's cost of one NAT on that path;
//! - `floor_2dnat`: client → 10.239.1.1:8104, a static rule on the host to the ingress
//!   (10.239.2.2:8104) and one there to 10.239.3.10:9104: the mesh's shape (two NATs and the
//!   return path) without plexus-lb's tables.
//!
//! The static rules sit in a table of their own (`ip plxm-floor`) before the mesh's
//! (priority dstnat - 10), so a floor connection meets no plexus-lb rule; the other cases
//! pass its failing comparisons (two on the host, one in the ingress) on their first
//! packet.
//!
//! Before measuring, a check that the mesh's replies really go by the return path: the
//! backends' route to the client's subnet leads nowhere at first (via 10.239.4.99, which
//! nobody holds: the kernel needs some route before the return path's `route` chain can
//! send a reply elsewhere), so 20 mesh connections must complete (the return path carries
//! their replies) while a direct one must not; then the route is replaced by the one via the
//! ingress namespace (10.239.4.2). The backends' `rp_filter` is 0 (pinned, whatever the
//! host's defaults).
//!
//! A measured connection is `socket`, `connect` (the handshake) and `close` with
//! `SO_LINGER` 0 (a reset), timed as a whole, one after another from one thread in the
//! client's namespace; the cases run interleaved in blocks (`--block` each, the order
//! rotating from round to round), as in `conn_rate`. The backends accept and close (a thread
//! per port and backend) and count what they accept and whose address they saw: every case
//! must show the client's own address (nothing SNATs), and as many connections as the client
//! made; the example fails otherwise.
//!
//! Output: per case `case=… n=… p50_us=… p99_us=… mean_us=… rate_per_s=…
//! block_rate_per_s=…` (rate = 1 / the mean; block rate = the median over the case's blocks
//! of each block's connections per second), per case `check case=… made=… accepted=…
//! not_client=… be0=… be1=…`, and last `mesh_ratio=… mesh_ratio_p50=… mesh_ratio_mean=…`:
//! the mesh's rate over direct's, from the block rates (the headline: a rate, and one that
//! the machine's stalls, a few connections of milliseconds in a block here and there, do not
//! swing), from the medians (direct p50 / mesh p50), and from the means (1 / mean: on a
//! shared machine this one moves by tens of percent from run to run).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};
use plexus_lb::mesh::{Mesh, MeshScope, MeshView, PortKey, PortView, Protocol};
use plexus_lb::return_path::{self, ReturnView};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const NETNS_DIR: &str = "/run/netns";
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 239, 1, 2);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 239, 1, 1);
const HOST_ING: Ipv4Addr = Ipv4Addr::new(10, 239, 2, 1);
const INGRESS: Ipv4Addr = Ipv4Addr::new(10, 239, 2, 2);
/// The ingress namespace on the ingress network, and on the direct one.
const INGRESS_OVL: Ipv4Addr = Ipv4Addr::new(10, 239, 3, 2);
const INGRESS_DIR: Ipv4Addr = Ipv4Addr::new(10, 239, 4, 2);
/// The backends on the ingress network (mesh, `direct_rp`, floors) and on the direct one.
const BE_OVL: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 239, 3, 10), Ipv4Addr::new(10, 239, 3, 11)];
const BE_DIR: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 239, 4, 10), Ipv4Addr::new(10, 239, 4, 11)];
/// The backends' first gateway to the client's subnet: nobody holds it.
const NOWHERE: Ipv4Addr = Ipv4Addr::new(10, 239, 4, 99);
/// Published ports: `PORT + case` (mesh 8100, floors 8103 and 8104). The backends listen on
/// `TARGET + case` (9100-9104) and 9105 (the check's direct attempt): no two cases share a
/// conntrack tuple anywhere on the path (a connection closed by a reset leaves its entry for
/// 10 s, and a SYN matching one, in either direction, takes conntrack's slow "reopen" path).
const PORT: u16 = 8100;
const TARGET: u16 = 9100;
const TARGETS: u16 = 6;
const MESH: u16 = 0;
const DIRECT: u16 = 1;
const DIRECT_RP: u16 = 2;
const FLOOR: u16 = 3;
const FLOOR2: u16 = 4;
const CHECK: u16 = 5;

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
                eprintln!("mesh_rate: deleting namespace {n}: {e}");
            }
        }
    }
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

/// `ip -n <ns> <args>` (`ns` is the full name).
fn ip(ns: &str, args: &str) -> Res<()> {
    let mut a = vec!["-n", ns];
    a.extend(args.split_whitespace());
    sh("ip", &a, None)
}

/// `sysctl -qw` in a namespace.
fn sysctl(ns: &str, settings: &[&str]) -> Res<()> {
    let mut a = vec!["netns", "exec", ns, "sysctl", "-qw"];
    a.extend(settings);
    sh("ip", &a, None)
}

/// `nft -f -` in a namespace.
fn nft(ns: &str, ruleset: &str) -> Res<()> {
    sh(
        "ip",
        &["netns", "exec", ns, "nft", "-f", "-"],
        Some(ruleset),
    )
}

/// What the backends accepted, per target port (case) and backend, and from whom.
#[derive(Default)]
struct Seen {
    accepted: [[AtomicU64; TARGETS as usize]; 2],
    not_client: [AtomicU64; TARGETS as usize],
    strangers: Mutex<Vec<String>>,
}

impl Seen {
    fn accepted(&self, case: u16) -> [u64; 2] {
        [0, 1].map(|b| self.accepted[b][case as usize].load(Ordering::Relaxed))
    }
}

/// Accept-and-close on one backend, on every target port and both of its addresses:
/// each listener is made inside the backend's namespace and accepted from a thread of its
/// own for the life of the process, counting what it takes.
fn backend(ns: &Netns, k: usize, seen: &Arc<Seen>) -> Res<()> {
    for case in 0..TARGETS {
        let port = TARGET + case;
        let l = ns.run(move || TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)))??;
        let seen = seen.clone();
        std::thread::Builder::new()
            .name(format!("be{k}-{port}"))
            .spawn(move || loop {
                match l.accept() {
                    Ok((c, peer)) => {
                        drop(c);
                        seen.accepted[k][case as usize].fetch_add(1, Ordering::Relaxed);
                        if peer.ip() != IpAddr::V4(CLIENT) {
                            seen.not_client[case as usize].fetch_add(1, Ordering::Relaxed);
                            let mut s = seen.strangers.lock().unwrap_or_else(|e| e.into_inner());
                            if s.len() < 10 {
                                s.push(format!("be{k}:{port} from {peer}"));
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            })?;
    }
    Ok(())
}

/// `n` sequential connect+close, to `dsts` in turn (starting at `from`), timed one by one
/// (ns each).
fn connections(
    dsts: &[SocketAddr],
    from: usize,
    n: usize,
    timeout: Duration,
) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::with_capacity(n);
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    for i in 0..n {
        let dst = dsts[(from + i) % dsts.len()];
        let t0 = Instant::now();
        let s = TcpStream::connect_timeout(&dst, timeout)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{dst}: {e}")))?;
        setsockopt(&s.as_fd(), sockopt::Linger, &linger).map_err(std::io::Error::from)?;
        drop(s);
        out.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(out)
}

struct Case {
    name: &'static str,
    /// The index of its target port (`TARGET + case`).
    case: u16,
    dsts: Vec<SocketAddr>,
    /// Connections made (warm-up and check included).
    made: u64,
    samples: Vec<u64>,
    /// Each measured block's rate (connections per second of the block's connections).
    blocks: Vec<f64>,
}

impl Case {
    fn run(&mut self, client: &Netns, n: usize, record: bool) -> Res<()> {
        let dsts = self.dsts.clone();
        let from = self.made as usize;
        let s = client
            .run(move || connections(&dsts, from, n, Duration::from_secs(3)))?
            .map_err(|e| format!("{}: {e}", self.name))?;
        self.made += n as u64;
        if record {
            let ns: u64 = s.iter().sum();
            self.blocks.push(n as f64 * 1e9 / ns.max(1) as f64);
            self.samples.extend(s);
        }
        Ok(())
    }

    fn p50(&self) -> f64 {
        let mut v = self.samples.clone();
        v.sort_unstable();
        pct(&v, 0.5)
    }

    /// The median of the blocks' rates: a rate that a stall of a few blocks does not move.
    fn block_rate(&self) -> f64 {
        let mut v = self.blocks.clone();
        v.sort_unstable_by(f64::total_cmp);
        v.get(v.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or(f64::NAN)
    }

    fn mean(&self) -> f64 {
        self.samples.iter().sum::<u64>() as f64 / self.samples.len().max(1) as f64 / 1e3
    }
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e3
}

fn tcp(port: u16) -> PortKey {
    PortKey {
        protocol: Protocol::Tcp,
        port,
    }
}

/// One published port: the host's view sends it to the ingress (keeping the port), the
/// ingress's to the backends at the target port.
fn views() -> (MeshView, MeshView) {
    let host = MeshView {
        scope: MeshScope::Host { addresses: None },
        ports: [(
            tcp(PORT + MESH),
            PortView {
                service: "bench".into(),
                target: PORT + MESH,
                backends: vec![INGRESS],
            },
        )]
        .into(),
    };
    let gateway = MeshView {
        scope: MeshScope::Gateway,
        ports: [(
            tcp(PORT + MESH),
            PortView {
                service: "bench".into(),
                target: TARGET + MESH,
                backends: BE_OVL.to_vec(),
            },
        )]
        .into(),
    };
    (host, gateway)
}

/// The namespaces and links of the module documentation's picture, the backends' route to
/// the client leading nowhere (replaced after the check).
fn build(prefix: &str, w: &mut World) -> Res<Vec<Netns>> {
    let names = ["hub", "client", "host", "ingress", "be0", "be1"];
    let mut nss = Vec::new();
    for n in names {
        nss.push(w.ns(prefix, n)?);
    }
    let n = |s: &str| format!("{prefix}-{s}");
    let (hub, client, host, ingress) = (n("hub"), n("client"), n("host"), n("ingress"));
    for s in names {
        ip(&n(s), "link set lo up")?;
    }
    ip(&hub, "link add br0 type bridge")?;
    ip(&hub, "link add br1 type bridge")?;
    ip(&hub, "link set br0 up")?;
    ip(&hub, "link set br1 up")?;
    // client ── host
    ip(
        &host,
        &format!("link add cl type veth peer name eth0 netns {client}"),
    )?;
    ip(&host, &format!("addr add {HOST}/24 dev cl"))?;
    ip(&host, "link set cl up")?;
    ip(&client, &format!("addr add {CLIENT}/24 dev eth0"))?;
    ip(&client, "link set eth0 up")?;
    ip(&client, &format!("route add default via {HOST}"))?;
    // host ── ingress
    ip(
        &host,
        &format!("link add ing type veth peer name eth0 netns {ingress}"),
    )?;
    ip(&host, &format!("addr add {HOST_ING}/24 dev ing"))?;
    ip(&host, "link set ing up")?;
    ip(&ingress, &format!("addr add {INGRESS}/24 dev eth0"))?;
    ip(&ingress, "link set eth0 up")?;
    ip(&ingress, &format!("route add default via {HOST_ING}"))?;
    ip(&host, &format!("route add 10.239.3.0/24 via {INGRESS}"))?;
    ip(&host, &format!("route add 10.239.4.0/24 via {INGRESS}"))?;
    // ingress ── br0 (the ingress network), br1 (the direct one)
    for (veth, end, br, addr) in [
        ("vi", "ovl", "br0", INGRESS_OVL),
        ("vd", "dir", "br1", INGRESS_DIR),
    ] {
        ip(
            &hub,
            &format!("link add {veth} type veth peer name {end} netns {ingress}"),
        )?;
        ip(&hub, &format!("link set {veth} master {br} up"))?;
        ip(&ingress, &format!("addr add {addr}/24 dev {end}"))?;
        ip(&ingress, &format!("link set {end} up"))?;
    }
    for ns in [&host, &ingress] {
        sysctl(ns, &["net.ipv4.ip_forward=1"])?;
    }
    // The client's ephemeral ports: 64,000 instead of 28,000, so that a case's connections
    // do not wrap around onto tuples conntrack still holds.
    sysctl(&client, &["net.ipv4.ip_local_port_range=1024 65000"])?;
    for k in 0..2 {
        let be = n(&format!("be{k}"));
        for (veth, end, br, addr) in [
            ("vb", "eth0", "br0", BE_OVL[k]),
            ("wb", "eth1", "br1", BE_DIR[k]),
        ] {
            ip(
                &hub,
                &format!("link add {veth}{k} type veth peer name {end} netns {be}"),
            )?;
            ip(&hub, &format!("link set {veth}{k} master {br} up"))?;
            ip(&be, &format!("addr add {addr}/24 dev {end}"))?;
            ip(&be, &format!("link set {end} up"))?;
        }
        // No reverse-path filtering, whatever the host's defaults (the same for all cases).
        sysctl(
            &be,
            &[
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.eth0.rp_filter=0",
                "net.ipv4.conf.eth1.rp_filter=0",
            ],
        )?;
        // The check's route to the client: to an address nobody holds.
        ip(
            &be,
            &format!("route add 10.239.1.0/24 via {NOWHERE} dev eth1"),
        )?;
    }
    // The floors: static DNATs in a table of their own, before the mesh's.
    nft(
        &host,
        &format!(
            "table ip plxm-floor {{\nchain pre {{\ntype nat hook prerouting priority -110\n\
             ip daddr {HOST} tcp dport {} dnat to {}:{}\n\
             ip daddr {HOST} tcp dport {} dnat to {INGRESS}:{}\n}}\n}}\n",
            PORT + FLOOR,
            BE_OVL[0],
            TARGET + FLOOR,
            PORT + FLOOR2,
            PORT + FLOOR2
        ),
    )?;
    nft(
        &ingress,
        &format!(
            "table ip plxm-floor {{\nchain pre {{\ntype nat hook prerouting priority -110\n\
             ip daddr {INGRESS} tcp dport {} dnat to {}:{}\n}}\n}}\n",
            PORT + FLOOR2,
            BE_OVL[0],
            TARGET + FLOOR2
        ),
    )?;
    Ok(nss)
}

/// Waits (up to 3 s) for the backends to have accepted what the client made, then prints a
/// check line per case; errors on a connection from another address than the client's or a
/// count that does not match.
fn check(cases: &[Case], seen: &Seen) -> Res<()> {
    let total = |c: &Case| seen.accepted(c.case).iter().sum::<u64>();
    let t0 = Instant::now();
    while cases.iter().any(|c| total(c) < c.made) && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut bad = Vec::new();
    for c in cases {
        let [b0, b1] = seen.accepted(c.case);
        let other = seen.not_client[c.case as usize].load(Ordering::Relaxed);
        println!(
            "check case={} made={} accepted={} not_client={other} be0={b0} be1={b1}",
            c.name,
            c.made,
            b0 + b1
        );
        if other > 0 {
            bad.push(format!("{}: {other} connections not from {CLIENT}", c.name));
        }
        if b0 + b1 != c.made {
            bad.push(format!("{}: {} made, {} accepted", c.name, c.made, b0 + b1));
        }
    }
    let strangers = seen.strangers.lock().unwrap_or_else(|e| e.into_inner());
    if !strangers.is_empty() {
        eprintln!("mesh_rate: connections from others than the client: {strangers:?}");
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad.join("; ").into())
    }
}

fn main() -> Res<()> {
    let mut conns = 20_000usize;
    let mut block = 500usize;
    let mut prefix = format!("plxm{}", std::process::id());
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
    let block = block.max(1);
    let mut w = World { names: Vec::new() };
    let nss = build(&prefix, &mut w)?;
    let [_hub, client, host, ingress, be0, be1] =
        <[Netns; 6]>::try_from(nss).map_err(|_| "six namespaces")?;
    let seen = Arc::new(Seen::default());
    for (k, ns) in [&be0, &be1].into_iter().enumerate() {
        backend(ns, k, &seen)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The return path: the ingress's MAC on the ingress network → its address there.
    let rtnls = rt.block_on(async {
        let ing = Rtnl::connect(&ingress).await?;
        let link = ing.require_link("ovl").await?;
        let mac: [u8; 6] = link
            .mac
            .unwrap_or_default()
            .as_slice()
            .try_into()
            .map_err(|_| "the ingress's ovl has no MAC address")?;
        let view = ReturnView {
            interface: "eth0".into(),
            gateways: [(mac, INGRESS_OVL)].into(),
        };
        let mut rtnls = Vec::new();
        for ns in [&be0, &be1] {
            let r = Rtnl::connect(ns).await?;
            return_path::reconcile(&r, &view).await?;
            rtnls.push(r);
        }
        Res::Ok(rtnls)
    })?;
    let (host_view, gateway_view) = views();
    let host_mesh = Mesh::open(&host)?;
    host_mesh.apply(&MeshView::default(), &host_view)?;
    let gateway_mesh = Mesh::open(&ingress)?;
    gateway_mesh.apply(&MeshView::default(), &gateway_view)?;
    if host_mesh.read()? != host_view.normalized()
        || gateway_mesh.read()? != gateway_view.normalized()
    {
        return Err("the mesh tables do not read back as applied".into());
    }
    let at = |a: Ipv4Addr, p: u16| SocketAddr::from((a, p));
    let both = |addrs: [Ipv4Addr; 2], p: u16| addrs.map(|a| at(a, p)).to_vec();
    let case = |name, case, dsts| Case {
        name,
        case,
        dsts,
        made: 0,
        samples: Vec::new(),
        blocks: Vec::new(),
    };
    let mut cases = vec![
        case("mesh", MESH, vec![at(HOST, PORT + MESH)]),
        case("direct", DIRECT, both(BE_DIR, TARGET + DIRECT)),
        case("direct_rp", DIRECT_RP, both(BE_OVL, TARGET + DIRECT_RP)),
        case("floor_dnat", FLOOR, vec![at(HOST, PORT + FLOOR)]),
        case("floor_2dnat", FLOOR2, vec![at(HOST, PORT + FLOOR2)]),
    ];
    // The check: the backends' route to the client leads nowhere yet. Mesh connections
    // complete (their replies go by the return path), a direct one does not.
    cases[0].run(&client, 20, false)?;
    let dst = at(BE_DIR[0], TARGET + CHECK);
    let r = client.run(move || TcpStream::connect_timeout(&dst, Duration::from_millis(300)))?;
    if r.is_ok() {
        return Err(format!(
            "{dst} answered before the backends had a route to the client: \
             the return-path check proves nothing"
        )
        .into());
    }
    for be in ["be0", "be1"] {
        ip(
            &format!("{prefix}-{be}"),
            &format!("route replace 10.239.1.0/24 via {INGRESS_DIR} dev eth1"),
        )?;
    }
    // Warm-up (ARP, conntrack, route caches), then the rounds.
    for c in cases.iter_mut() {
        c.run(&client, 200, false)?;
    }
    let rounds = conns.div_ceil(block);
    let k = cases.len();
    for r in 0..rounds {
        for j in 0..k {
            cases[(r + j) % k].run(&client, block, true)?;
        }
    }
    for c in &cases {
        let mut v = c.samples.clone();
        v.sort_unstable();
        let mean = c.mean();
        println!(
            "case={} n={} p50_us={:.1} p99_us={:.1} mean_us={:.1} rate_per_s={:.0} block_rate_per_s={:.0}",
            c.name,
            v.len(),
            pct(&v, 0.5),
            pct(&v, 0.99),
            mean,
            1e6 / mean,
            c.block_rate()
        );
    }
    check(&cases, &seen)?;
    let by = |n: &str| cases.iter().find(|c| c.name == n).ok_or("case");
    let (mesh, direct) = (by("mesh")?, by("direct")?);
    println!(
        "mesh_ratio={:.3} mesh_ratio_p50={:.3} mesh_ratio_mean={:.3}",
        mesh.block_rate() / direct.block_rate(),
        direct.p50() / mesh.p50(),
        direct.mean() / mesh.mean(),
    );
    host_mesh.remove()?;
    gateway_mesh.remove()?;
    rt.block_on(async {
        for r in &rtnls {
            return_path::remove(r).await?;
        }
        Res::Ok(())
    })?;
    drop(w);
    Ok(())
}
