//! A test world: a "host" namespace with an "outside" peer, a controller (memory store,
//! built-in IPAM, the built-in drivers programming the host namespace) and sandboxes handed
//! over by path. Every namespace is removed by a drop guard, even when a test fails.
//!
//! ```text
//!   sandbox ns ──veth── [plx bridge]  host ns  ext0 172.30.0.1 ──veth── eth0 172.30.0.2  outside ns
//! ```
//!
//! The outside namespace has no route to the sandboxes' subnets: egress works only when it is
//! masqueraded.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use plexus_cnm::{
    Controller, ControllerConfig, Desired, DesiredEndpoint, DriverRegistry, Endpoint, EndpointInfo,
    EndpointSpec, IpamPoolSpec, Network, NetworkInfo, NetworkSpec,
};
use plexus_drivers::{register_builtin, BridgeDriver, DriverConfig};
use plexus_ipam::{BuiltinIpam, IpamConfig};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{Link, Rtnl};
use plexus_sys::sysctl;

pub const MARK: &str = "plexus-t";
pub const HOST_EXT: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);

/// Fails the test unless it runs as root (a kernel test that returned early would pass
/// without having run).
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

/// A TCP server in a namespace that answers each connection with the peer address it sees.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(ns: &Netns, addr: SocketAddr) -> Self {
        Self::serve(ns, addr, |mut conn, peer| {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 16];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(peer.ip().to_string().as_bytes());
        })
    }

    /// Listens at `addr` inside `ns` (retrying a while: a fresh IPv6 address stays
    /// tentative until the kernel's link watch sees its link operational, up to a second
    /// after it is up) and hands each connection to `handle` until dropped.
    fn serve(
        ns: &Netns,
        addr: SocketAddr,
        handle: impl Fn(TcpStream, SocketAddr) + Send + 'static,
    ) -> Self {
        let listener = plexus_testkit::net::bind_retrying(
            || ok("listen", ns.run(move || TcpListener::bind(addr))),
            Duration::from_secs(3),
        )
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        ok("nonblocking", listener.set_nonblocking(true));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, peer)) => {
                        let _ = conn.set_nonblocking(false);
                        handle(conn, peer);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP server in a namespace that reads each connection to its end and answers with the
/// number of bytes it got (a bulk transfer's receipt).
pub struct Sink(Server);

impl Sink {
    pub fn start(ns: &Netns, addr: SocketAddr) -> Self {
        Self(Server::serve(ns, addr, |mut conn, _| {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let got = std::io::copy(&mut conn, &mut std::io::sink()).unwrap_or(0);
            let _ = conn.write_all(got.to_string().as_bytes());
        }))
    }
}

/// Sends `bytes` over one TCP connection from inside `ns` and returns how many the
/// [`Sink`] at `addr` says it got.
pub fn send_bulk(ns: &Netns, addr: SocketAddr, bytes: usize) -> std::io::Result<u64> {
    ok(
        "run",
        ns.run(move || -> std::io::Result<u64> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.set_write_timeout(Some(Duration::from_secs(10)))?;
            let chunk = vec![0x5au8; 1 << 20];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len());
                s.write_all(&chunk[..n])?;
                left -= n;
            }
            s.shutdown(std::net::Shutdown::Write)?;
            let mut receipt = String::new();
            s.read_to_string(&mut receipt)?;
            Ok(receipt.trim().parse().unwrap_or(0))
        }),
    )
}

/// Connects from inside `ns`; returns the address the server saw us as.
pub fn seen_as(ns: &Netns, addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    ok(
        "run",
        ns.run(move || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, timeout)?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"hi")?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        }),
    )
}

/// Connects (retrying for a few seconds: see [`Server::start`] on IPv6) and returns the
/// address the server saw.
pub fn reaches(ns: &Netns, addr: SocketAddr) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    loop {
        match seen_as(ns, addr, Duration::from_secs(2)) {
            Ok(seen) => return seen,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("connect to {addr}: {e}"),
        }
    }
}

pub fn blocked(ns: &Netns, addr: SocketAddr) -> bool {
    seen_as(ns, addr, Duration::from_millis(600)).is_err()
}

pub fn sa(ip: impl Into<std::net::IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

pub struct World {
    pub controller: Controller,
    pub bridge: Arc<BridgeDriver>,
    pub sandboxes: BTreeMap<String, PinnedNs>,
    pub rh: Rtnl,
    pub outside: PinnedNs,
    pub host: PinnedNs,
}

async fn lo_up(rtnl: &Rtnl) {
    let lo = ok("lo", rtnl.require_link("lo").await);
    ok("lo up", rtnl.set_up(lo.index).await);
}

impl World {
    /// A world whose host namespace the driver owns (it turns `br_netfilter` off there).
    pub async fn new() -> Self {
        Self::build(true).await
    }

    /// A world where the driver leaves `br_netfilter` on, as on a shared machine.
    pub async fn with_br_netfilter() -> Self {
        Self::build(false).await
    }

    async fn build(owns_namespace: bool) -> Self {
        let host = PinnedNs::new("host");
        let outside = PinnedNs::new("outside");
        for ns in [&host.ns, &outside.ns] {
            for key in [
                "net.ipv6.conf.all.accept_dad",
                "net.ipv6.conf.default.accept_dad",
            ] {
                ok("accept_dad", sysctl::write(ns, key, "0"));
            }
        }
        let rh = ok("connect host", Rtnl::connect(&host.ns).await);
        lo_up(&rh).await;
        // The uplink to the outside: a test link, not marked by the driver's marker.
        let (ext, peer) = ok(
            "veth",
            rh.add_veth("ext0", "ext0p", None, "test-uplink").await,
        );
        ok(
            "move",
            rh.move_to(peer.index, &outside.ns, Some("eth0")).await,
        );
        ok(
            "ext addr",
            rh.add_address(ext.index, HOST_EXT.into(), 24).await,
        );
        ok("ext up", rh.set_up(ext.index).await);
        let ro = ok("connect outside", Rtnl::connect(&outside.ns).await);
        lo_up(&ro).await;
        let eth0 = ok("eth0", ro.require_link("eth0").await);
        ok(
            "outside addr",
            ro.add_address(eth0.index, OUTSIDE.into(), 24).await,
        );
        ok("outside up", ro.set_up(eth0.index).await);

        let store = ok(
            "store",
            plexus_kv::open("memory://", Default::default()).await,
        );
        let ipam = ok(
            "ipam",
            BuiltinIpam::open(store.clone(), IpamConfig::new("host-1")).await,
        );
        let mut registry = DriverRegistry::new();
        let config = DriverConfig {
            owns_namespace,
            ..DriverConfig::new(host.ns.clone(), MARK)
        };
        let bridge = ok("drivers", register_builtin(&mut registry, config).await);
        let controller =
            Controller::new(store, Arc::new(ipam), registry, ControllerConfig::default());
        Self {
            controller,
            bridge,
            sandboxes: BTreeMap::new(),
            rh,
            outside,
            host,
        }
    }

    /// A bridge network on `subnet` with driver options.
    pub async fn network(&self, name: &str, subnet: &str, options: &[(&str, &str)]) -> Network {
        ok(
            &format!("create network {name}"),
            self.controller
                .create_network(net_spec(name, subnet, options))
                .await,
        )
    }

    /// A namespace made by the test and handed to the controller by path.
    pub async fn sandbox(&mut self, name: &str) -> &Netns {
        let ns = PinnedNs::new(name);
        ok(
            "accept_dad",
            sysctl::write(&ns.ns, "net.ipv6.conf.default.accept_dad", "0"),
        );
        ok(
            &format!("create sandbox {name}"),
            self.controller.add_sandbox(name, &ns.path(), false).await,
        );
        self.sandboxes.insert(name.to_string(), ns);
        &self.sandboxes[name].ns
    }

    pub fn sb(&self, name: &str) -> &Netns {
        &self.sandboxes[name].ns
    }

    pub async fn connect(&self, sandbox: &str, network: &str) -> Endpoint {
        self.connect_with(sandbox, network, EndpointSpec::default())
            .await
    }

    pub async fn connect_with(&self, sandbox: &str, network: &str, spec: EndpointSpec) -> Endpoint {
        ok(
            &format!("connect {sandbox} to {network}"),
            self.controller.connect(sandbox, network, spec).await,
        )
    }

    /// Links of the host namespace, once the driver's background deletions are done (leave and network
    /// removal hand them over).
    pub async fn host_links(&self) -> Vec<Link> {
        self.bridge.settle().await;
        ok("links", self.rh.links().await)
    }

    /// IPv6 on the uplink: `fd00:30::1` on the host's `ext0`, `fd00:30::2` on the outside's
    /// `eth0`; returns (host, outside).
    pub async fn outside_v6(&self) -> (std::net::Ipv6Addr, std::net::Ipv6Addr) {
        let host6 = std::net::Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 1);
        let out6 = std::net::Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 2);
        let ext = ok("ext0", self.rh.require_link("ext0").await);
        ok(
            "host v6",
            self.rh.add_address(ext.index, host6.into(), 64).await,
        );
        let ro = ok("outside", Rtnl::connect(&self.outside.ns).await);
        let eth0 = ok("eth0", ro.require_link("eth0").await);
        ok(
            "outside v6",
            ro.add_address(eth0.index, out6.into(), 64).await,
        );
        (host6, out6)
    }

    /// Host links carrying the driver's marker.
    pub async fn marked_links(&self) -> Vec<String> {
        self.host_links()
            .await
            .into_iter()
            .filter(|l| {
                l.alias
                    .as_deref()
                    .is_some_and(|a| a.starts_with(&format!("{MARK}:")))
            })
            .map(|l| l.name)
            .collect()
    }
}

pub fn net_spec(name: &str, subnet: &str, options: &[(&str, &str)]) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        ipv4: vec![IpamPoolSpec {
            subnet: Some(subnet.into()),
            ..Default::default()
        }],
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// The IPv6 address of an endpoint.
pub fn ip6(ep: &Endpoint) -> std::net::Ipv6Addr {
    match ep.ipv6.map(|a| a.addr()) {
        Some(std::net::IpAddr::V6(a)) => a,
        other => panic!("endpoint has no IPv6 address: {other:?}"),
    }
}

/// The IPv4 address of an endpoint.
pub fn ip4(ep: &Endpoint) -> Ipv4Addr {
    match ep.ipv4.map(|a| a.addr()) {
        Some(std::net::IpAddr::V4(a)) => a,
        other => panic!("endpoint has no IPv4 address: {other:?}"),
    }
}

/// Links of a sandbox.
pub async fn links_of(ns: &Netns) -> Vec<Link> {
    let r = ok("connect sandbox", Rtnl::connect(ns).await);
    ok("links", r.links().await)
}

/// `-p HOST:CONTAINER/tcp`.
pub fn tcp(container_port: u16, host_port: u16) -> plexus_cnm::PortBinding {
    plexus_cnm::PortBinding {
        proto: "tcp".into(),
        container_port,
        host_ip: None,
        host_port,
        host_port_end: 0,
    }
}

/// What a driver is told about a recorded network.
pub fn info(n: &Network) -> NetworkInfo {
    NetworkInfo {
        id: n.id.clone(),
        name: n.name.clone(),
        options: n.spec.options.clone(),
        ipv4: n.ipv4.clone(),
        ipv6: n.ipv6.clone(),
        internal: n.spec.internal,
        enable_ipv6: n.spec.enable_ipv6,
    }
}

/// The store's picture of `networks` and `endpoints` as `Controller::reconcile` hands it to
/// a driver (for tests that make the store "forget" something).
pub async fn desired(w: &World, networks: &[&Network], endpoints: &[&Endpoint]) -> Desired {
    let mut out = Desired {
        networks: networks.iter().map(|n| info(n)).collect(),
        endpoints: Vec::new(),
    };
    for ep in endpoints {
        let sandbox = ok("sandbox", w.controller.sandbox(&ep.sandbox_id).await);
        out.endpoints.push(DesiredEndpoint {
            handed_off: false,
            info: EndpointInfo {
                network_id: ep.network_id.clone(),
                endpoint_id: ep.id.clone(),
                ipv4: ep.ipv4,
                ipv6: ep.ipv6,
                mac: ep.mac.clone(),
                ports: ep.ports.clone(),
                options: ep.options.clone(),
            },
            sandbox_key: sandbox.key,
            interface: ep.interface.clone(),
        });
    }
    out
}
