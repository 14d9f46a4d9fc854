//! Two namespaces joined by a veth (the underlay), a WireGuard device in each.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{Rtnl, VethPair};
use plexus_wg::{Device, DeviceConfig, PeerConfig, PresharedKey, PrivateKey, PublicKey};

/// Fails the test unless it runs as root.
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

pub const UNDERLAY_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const UNDERLAY_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const TUNNEL_A: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub const TUNNEL_B: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

/// A runtime for the set-up's netlink work (the data plane runs on its own threads).
pub fn runtime() -> tokio::runtime::Runtime {
    ok(
        "runtime",
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    )
}

/// Two namespaces, `a` and `b`, joined by veth `ul0` (192.0.2.1/24 ↔ 192.0.2.2/24).
pub struct Underlay {
    pub a: PinnedNs,
    pub b: PinnedNs,
    pub rt: tokio::runtime::Runtime,
}

impl Underlay {
    pub fn new(tag: &str) -> Self {
        let a = PinnedNs::new(&format!("wg-{tag}-a"));
        let b = PinnedNs::new(&format!("wg-{tag}-b"));
        let rt = runtime();
        rt.block_on(async {
            let ra = ok("rtnl a", Rtnl::connect(&a.ns).await);
            let rb = ok("rtnl b", Rtnl::connect(&b.ns).await);
            let pair = VethPair {
                name: "ul0",
                master: None,
                mac: None,
                mtu: None,
                peer_name: "ul0",
                peer_ns: &b.ns,
                peer_mac: None,
                gso_ipv4_max_size: None,
            };
            ok("veth", ra.add_veth_pair(&pair).await);
            for (r, addr) in [(&ra, UNDERLAY_A), (&rb, UNDERLAY_B)] {
                let lo = ok("lo", r.require_link("lo").await);
                ok("lo up", r.set_up(lo.index).await);
                let ul = ok("ul0", r.require_link("ul0").await);
                ok("address", r.add_address(ul.index, addr.into(), 24).await);
                ok("ul0 up", r.set_up(ul.index).await);
            }
        });
        Self { a, b, rt }
    }
}

/// The underlay with a device `wg0` in each namespace, each the other's peer.
pub struct Lab {
    pub dev_a: Device,
    pub dev_b: Device,
    pub key_a: PrivateKey,
    pub key_b: PrivateKey,
    // Dropped last: the devices go first, then the namespaces.
    pub under: Underlay,
}

/// How the peers are configured.
#[derive(Default, Clone)]
pub struct LabOptions {
    pub psk: Option<PresharedKey>,
    /// The key `b` believes `a` has (default: `a`'s real one).
    pub b_thinks_a_is: Option<PublicKey>,
    /// Also give the tunnel IPv6 addresses (`fd99::1/64`, `fd99::2/64`) and allow them.
    pub ipv6: bool,
    /// `b` is not told where `a` is: it learns it from `a`'s handshake.
    pub b_without_endpoint: bool,
    /// TUN queues of each device (0: the default).
    pub queues: usize,
}

pub const TUNNEL6_A: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
pub const TUNNEL6_B: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 2);

impl Lab {
    pub fn new(tag: &str) -> Self {
        Self::with(tag, LabOptions::default())
    }

    pub fn with(tag: &str, opts: LabOptions) -> Self {
        let under = Underlay::new(tag);
        let key_a = PrivateKey::generate();
        let key_b = PrivateKey::generate();
        let (dev_a, dev_b) = under.rt.block_on(async {
            let mut ca = DeviceConfig::new("wg0", key_a.clone(), under.a.ns.clone());
            ca.addresses = vec![(TUNNEL_A.into(), 24)];
            let mut cb = DeviceConfig::new("wg0", key_b.clone(), under.b.ns.clone());
            cb.addresses = vec![(TUNNEL_B.into(), 24)];
            if opts.queues > 0 {
                ca.queues = opts.queues;
                cb.queues = opts.queues;
            }
            if opts.ipv6 {
                ca.addresses.push((TUNNEL6_A.into(), 64));
                cb.addresses.push((TUNNEL6_B.into(), 64));
            }
            (
                ok("device a", Device::create(ca).await),
                ok("device b", Device::create(cb).await),
            )
        });
        let mut pa = PeerConfig::new(key_b.public_key());
        pa.endpoint = Some(SocketAddr::new(
            UNDERLAY_B.into(),
            dev_b.listen_addr().port(),
        ));
        pa.allowed_ips = vec![ok("prefix", format!("{TUNNEL_B}/32").parse())];
        if opts.ipv6 {
            pa.allowed_ips
                .push(ok("prefix", format!("{TUNNEL6_B}/128").parse()));
        }
        pa.preshared_key = opts.psk.clone();
        ok("peer of a", dev_a.add_peer(pa));
        let mut pb = PeerConfig::new(opts.b_thinks_a_is.unwrap_or(key_a.public_key()));
        pb.endpoint = (!opts.b_without_endpoint)
            .then(|| SocketAddr::new(UNDERLAY_A.into(), dev_a.listen_addr().port()));
        pb.allowed_ips = vec![ok("prefix", format!("{TUNNEL_A}/32").parse())];
        if opts.ipv6 {
            pb.allowed_ips
                .push(ok("prefix", format!("{TUNNEL6_A}/128").parse()));
        }
        pb.preshared_key = opts.psk;
        ok("peer of b", dev_b.add_peer(pb));
        Self {
            dev_a,
            dev_b,
            key_a,
            key_b,
            under,
        }
    }
}

/// Runs `f` inside `ns` (sockets made there stay there).
pub fn in_ns<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> T {
    ok("run in netns", ns.run(f))
}

/// A UDP socket bound in `ns` to `ip` (port 0), with a receive timeout. A fresh IPv6
/// address may be tentative for a moment: binding is retried.
pub fn udp(ns: &Netns, ip: impl Into<IpAddr>) -> UdpSocket {
    let ip = ip.into();
    let s = ok(
        "bind udp",
        in_ns(ns, || {
            plexus_testkit::net::bind_retrying(
                || UdpSocket::bind(SocketAddr::new(ip, 0)),
                Duration::from_secs(5),
            )
        }),
    );
    ok(
        "timeout",
        s.set_read_timeout(Some(Duration::from_millis(300))),
    );
    s
}

/// Reads from `s` until a datagram equal to `payload` comes (answered with its source) or
/// the read times out. Other datagrams (late copies of earlier sends) are skipped.
pub fn recv_matching(s: &UdpSocket, payload: &[u8]) -> Option<SocketAddr> {
    let mut buf = [0u8; 2048];
    loop {
        match s.recv_from(&mut buf) {
            Ok((n, src)) if &buf[..n] == payload => return Some(src),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// Reads and discards whatever `s` has until a read times out.
pub fn drain_udp(s: &UdpSocket) {
    let mut buf = [0u8; 2048];
    while s.recv(&mut buf).is_ok() {}
}

/// Sends `payload` from `from` to `to` until `to` echoes it back (the first datagrams wait
/// for the handshake), at most `within`. Answers whether the echo came.
pub fn udp_echo_once(from: &UdpSocket, to: &UdpSocket, payload: &[u8], within: Duration) -> bool {
    let dest = ok("addr", to.local_addr());
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        ok("send", from.send_to(payload, dest));
        if let Some(src) = recv_matching(to, payload) {
            ok("answer", to.send_to(payload, src));
            if recv_matching(from, payload).is_some() {
                return true;
            }
        }
    }
    false
}

/// A TCP listener in `ns` on `ip`.
pub fn tcp_listener(ns: &Netns, ip: Ipv4Addr) -> TcpListener {
    ok(
        "listen",
        in_ns(ns, || TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), 0))),
    )
}

/// A TCP connection from `ns` to `to`.
pub fn tcp_connect(ns: &Netns, to: SocketAddr) -> TcpStream {
    let s = ok(
        "connect",
        in_ns(ns, || {
            TcpStream::connect_timeout(&to, Duration::from_secs(10))
        }),
    );
    ok("timeout", s.set_read_timeout(Some(Duration::from_secs(20))));
    ok(
        "timeout",
        s.set_write_timeout(Some(Duration::from_secs(20))),
    );
    s
}

/// FNV-1a over a byte stream.
pub struct Fnv(pub u64);

impl Fnv {
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    pub fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), for payloads.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Reads everything from `s` until EOF, hashing it; answers (bytes, hash).
pub fn drain(mut s: TcpStream, mut on_progress: impl FnMut(u64)) -> (u64, u64) {
    let mut h = Fnv::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = ok("read", s.read(&mut buf));
        if n == 0 {
            return (total, h.0);
        }
        h.update(&buf[..n]);
        total += n as u64;
        on_progress(total);
    }
}

/// Writes `data` to `s` and closes the write side.
pub fn send_all(mut s: TcpStream, data: &[u8]) {
    for chunk in data.chunks(16 * 1024) {
        ok("write", s.write_all(chunk));
    }
    ok("shutdown", s.shutdown(std::net::Shutdown::Write));
}

/// A raw capture of every frame on interface `ifname` of `ns` (AF_PACKET).
pub struct Capture {
    fd: std::os::fd::OwnedFd,
}

impl Capture {
    pub fn new(ns: &Netns, ifname: &str) -> Self {
        let name = std::ffi::CString::new(ifname).unwrap_or_default();
        let fd = ok(
            "packet socket",
            in_ns(ns, move || -> std::io::Result<std::os::fd::OwnedFd> {
                use std::os::fd::FromRawFd;
                let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
                // SAFETY: plain socket and interface lookups; the fd is owned right away.
                unsafe {
                    let fd =
                        libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK, proto);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let fd = std::os::fd::OwnedFd::from_raw_fd(fd);
                    let index = libc::if_nametoindex(name.as_ptr());
                    if index == 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                    sll.sll_family = libc::AF_PACKET as u16;
                    sll.sll_protocol = proto as u16;
                    sll.sll_ifindex = index as i32;
                    use std::os::fd::AsRawFd;
                    if libc::bind(
                        fd.as_raw_fd(),
                        (&sll as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(fd)
                }
            }),
        );
        Self { fd }
    }

    /// Every frame captured so far.
    pub fn frames(&self) -> Vec<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65_536];
        loop {
            // SAFETY: `buf` is valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                return out;
            }
            out.push(buf[..n as usize].to_vec());
        }
    }
}

/// The UDP payload of an Ethernet/IPv4/UDP frame to `port`, if it is one.
pub fn udp_payload_to(frame: &[u8], port: u16) -> Option<&[u8]> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 17 || ip.len() < ihl + 8 {
        return None;
    }
    let udp = &ip[ihl..];
    let dport = u16::from_be_bytes([udp[2], udp[3]]);
    (dport == port).then(|| &udp[8..])
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}
