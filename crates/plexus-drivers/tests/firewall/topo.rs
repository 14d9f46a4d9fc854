//! The topology the firewall tests build, and a TCP server that says who called.
//!
//! ```text
//!   sandbox ns ──veth── [bridge, gateway]  host ns  ext0 ──veth── eth0  outside ns
//! ```

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use plexus_drivers::firewall::{Firewall, NetworkRules, PortMapping, Proto};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{BridgeSpec, Route, Rtnl};
use plexus_sys::sysctl;

use crate::common::{lo_up, ok, PinnedNs};

pub const MARK: &str = "plexus-test";
pub const HOST_EXT: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);
pub const OUTSIDE: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);

/// A TCP server in a namespace that answers every connection with the peer address it sees.
/// Stopped and joined on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(ns: &Netns, addr: SocketAddr) -> Self {
        let listener = plexus_testkit::net::bind_retrying(
            || ok("listen", ns.run(move || TcpListener::bind(addr))),
            Duration::from_secs(2),
        )
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("nonblocking: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, peer)) => {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 16];
                        let _ = conn.read(&mut buf);
                        let _ = conn.write_all(peer.ip().to_string().as_bytes());
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

/// Connects from inside `ns` and returns the address the server saw us as.
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

pub fn reaches(ns: &Netns, addr: SocketAddr) -> String {
    seen_as(ns, addr, Duration::from_secs(3)).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
}

pub fn blocked(ns: &Netns, addr: SocketAddr) -> bool {
    seen_as(ns, addr, Duration::from_millis(800)).is_err()
}

pub fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// A host namespace with an outside peer, bridges and sandboxes.
pub struct Topo {
    pub rh: Rtnl,
    pub sandboxes: Vec<PinnedNs>,
    pub outside: PinnedNs,
    pub host: PinnedNs,
}

/// IPv6 addresses usable at once (no duplicate address detection) in links made or moved
/// into `ns` from now on.
pub fn no_dad(ns: &Netns) {
    for key in [
        "net.ipv6.conf.all.accept_dad",
        "net.ipv6.conf.default.accept_dad",
    ] {
        ok("accept_dad", sysctl::write(ns, key, "0"));
    }
}

impl Topo {
    pub async fn new() -> Self {
        let host = PinnedNs::new("host");
        let outside = PinnedNs::new("outside");
        no_dad(&host.ns);
        no_dad(&outside.ns);
        let rh = ok("connect host", Rtnl::connect(&host.ns).await);
        lo_up(&rh).await;
        let (ext, peer) = ok("veth", rh.add_veth("ext0", "ext0p", None, MARK).await);
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
        ok(
            "ip_forward",
            sysctl::write(&host.ns, "net.ipv4.ip_forward", "1"),
        );
        Self {
            rh,
            sandboxes: Vec::new(),
            outside,
            host,
        }
    }

    /// A bridge with gateway `10.N.0.1/24`.
    pub async fn bridge(&self, name: &str, n: u8) -> u32 {
        let br = ok(
            "bridge",
            self.rh
                .add_bridge(
                    &BridgeSpec {
                        name,
                        ..Default::default()
                    },
                    MARK,
                )
                .await,
        );
        ok(
            "gw",
            self.rh
                .add_address(br.index, Ipv4Addr::new(10, n, 0, 1).into(), 24)
                .await,
        );
        ok("br up", self.rh.set_up(br.index).await);
        br.index
    }

    /// A sandbox `10.N.0.host` on the bridge; returns its index and the host end's ifindex.
    pub async fn sandbox(&mut self, bridge: u32, n: u8, host: u8) -> (usize, u32) {
        let port = format!("vh{}", self.sandboxes.len());
        self.sandbox_on_port(bridge, n, host, &port).await
    }

    /// [`Topo::sandbox`] with the bridge port (the host end of the veth) named `port`.
    pub async fn sandbox_on_port(
        &mut self,
        bridge: u32,
        n: u8,
        host: u8,
        port: &str,
    ) -> (usize, u32) {
        let i = self.sandboxes.len();
        let sb = PinnedNs::new(&format!("sb{i}"));
        no_dad(&sb.ns);
        let (h, peer) = ok(
            "veth",
            self.rh.add_veth(port, &format!("vp{i}"), None, MARK).await,
        );
        ok("attach", self.rh.set_master(h.index, bridge).await);
        ok("up", self.rh.set_up(h.index).await);
        ok(
            "move",
            self.rh.move_to(peer.index, &sb.ns, Some("eth0")).await,
        );
        let rc = ok("connect sandbox", Rtnl::connect(&sb.ns).await);
        lo_up(&rc).await;
        let eth0 = ok("eth0", rc.require_link("eth0").await);
        ok(
            "addr",
            rc.add_address(eth0.index, Ipv4Addr::new(10, n, 0, host).into(), 24)
                .await,
        );
        ok("up", rc.set_up(eth0.index).await);
        ok(
            "default route",
            rc.add_route(&Route {
                destination: None,
                gateway: Some(Ipv4Addr::new(10, n, 0, 1).into()),
                oif: None,
            })
            .await,
        );
        self.sandboxes.push(sb);
        (i, h.index)
    }

    pub fn sb(&self, i: usize) -> &Netns {
        &self.sandboxes[i].ns
    }

    pub fn firewall(&self) -> Firewall {
        let fw = ok("open firewall", Firewall::open(&self.host.ns));
        ok("ensure base", fw.ensure_base());
        fw
    }
}

pub fn net(bridge: &str, n: u8) -> NetworkRules {
    NetworkRules {
        bridge: bridge.into(),
        subnets: vec![(Ipv4Addr::new(10, n, 0, 0).into(), 24)],
        masquerade: true,
        internal: false,
    }
}

pub fn port(host_port: u16, n: u8, host: u8, owner: &str) -> PortMapping {
    PortMapping {
        proto: Proto::Tcp,
        host_ip: None,
        host_port,
        addr: Ipv4Addr::new(10, n, 0, host).into(),
        port: 80,
        owner: owner.into(),
    }
}
