//! Micro-benchmark of the userspace data plane, printing `key=value` lines:
//!
//! - `seal_*`: raw ChaCha20-Poly1305 (ring, as boringtun uses) sealing 1400-byte packets on
//!   one core, the crypto limit of one worker;
//! - `underlay_tcp_mbps`: one TCP stream over the bare veth between two namespaces;
//! - `tunnel_tcp_mbps`: one TCP stream through two `Device`s over that veth.
//!
//! Needs root (namespaces). Run: `cargo run --release -p plexus-wg --example wg_bench`
//! (`WG_BENCH_SECS` sets each measurement's length, 5 by default; `WG_BENCH_QUEUES` the
//! devices' TUN queues, 1 by default).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{Rtnl, VethPair};
use plexus_wg::{Device, DeviceConfig, PeerConfig, PrivateKey};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn seal(secs: f64) -> Result<(), Error> {
    let key = LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]).map_err(|_| "chacha key")?,
    );
    let mut packet = vec![0x5au8; 1400];
    let mut counter = 0u64;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..1000 {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&counter.to_le_bytes());
            counter += 1;
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    &mut packet,
                )
                .map_err(|_| "seal")?;
            let _ = std::hint::black_box(tag);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let pps = counter as f64 / elapsed;
    println!("seal_packet_bytes=1400");
    println!("seal_pps={pps:.0}");
    println!("seal_gbps={:.2}", pps * 1400.0 * 8.0 / 1e9);
    Ok(())
}

struct Pinned {
    dir: tempfile::TempDir,
    name: String,
    ns: Netns,
}

impl Pinned {
    fn new(name: &str) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let ns = Netns::create(dir.path(), name)?;
        Ok(Self {
            dir,
            name: name.into(),
            ns,
        })
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        let _ = Netns::delete(self.dir.path(), &self.name);
    }
}

/// One TCP stream from `from` to `to_ip` for `secs`; answers megabits per second.
fn tcp_stream(from: &Netns, to: &Netns, to_ip: Ipv4Addr, secs: f64) -> Result<f64, Error> {
    let listener = to.run(move || TcpListener::bind(SocketAddr::new(IpAddr::V4(to_ip), 0)))??;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || -> Result<u64, std::io::Error> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    let mut s = from.run(move || TcpStream::connect_timeout(&addr, Duration::from_secs(10)))??;
    let chunk = vec![0xa5u8; 128 * 1024];
    // Let the handshake and slow start pass before measuring.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(500) {
        s.write_all(&chunk)?;
    }
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed().as_secs_f64() < secs {
        s.write_all(&chunk)?;
        sent += chunk.len() as u64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    s.shutdown(std::net::Shutdown::Write)?;
    server.join().map_err(|_| "receiver panicked")??;
    Ok(sent as f64 * 8.0 / elapsed / 1e6)
}

fn main() -> Result<(), Error> {
    let secs: f64 = std::env::var("WG_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let queues: usize = std::env::var("WG_BENCH_QUEUES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    seal(secs)?;

    let pid = std::process::id();
    let a = Pinned::new(&format!("wgbench-{pid}-a"))?;
    let b = Pinned::new(&format!("wgbench-{pid}-b"))?;
    let (ul_a, ul_b) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
    let (tn_a, tn_b) = (Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (dev_a, dev_b) = rt.block_on(async {
        let ra = Rtnl::connect(&a.ns).await?;
        let rb = Rtnl::connect(&b.ns).await?;
        ra.add_veth_pair(&VethPair {
            name: "ul0",
            master: None,
            mac: None,
            mtu: None,
            peer_name: "ul0",
            peer_ns: &b.ns,
            peer_mac: None,
            gso_ipv4_max_size: None,
        })
        .await?;
        for (r, addr) in [(&ra, ul_a), (&rb, ul_b)] {
            let lo = r.require_link("lo").await?;
            r.set_up(lo.index).await?;
            let ul = r.require_link("ul0").await?;
            r.add_address(ul.index, addr.into(), 24).await?;
            r.set_up(ul.index).await?;
        }
        let mut ca = DeviceConfig::new("wg0", PrivateKey::generate(), a.ns.clone());
        ca.addresses = vec![(tn_a.into(), 24)];
        ca.queues = queues;
        let mut cb = DeviceConfig::new("wg0", PrivateKey::generate(), b.ns.clone());
        cb.addresses = vec![(tn_b.into(), 24)];
        cb.queues = queues;
        Ok::<_, Error>((Device::create(ca).await?, Device::create(cb).await?))
    })?;
    let mut pa = PeerConfig::new(dev_b.public_key());
    pa.endpoint = Some(SocketAddr::new(ul_b.into(), dev_b.listen_addr().port()));
    pa.allowed_ips = vec![format!("{tn_b}/32").parse()?];
    dev_a.add_peer(pa)?;
    let mut pb = PeerConfig::new(dev_a.public_key());
    pb.endpoint = Some(SocketAddr::new(ul_a.into(), dev_a.listen_addr().port()));
    pb.allowed_ips = vec![format!("{tn_a}/32").parse()?];
    dev_b.add_peer(pb)?;

    println!(
        "underlay_tcp_mbps={:.0}",
        tcp_stream(&a.ns, &b.ns, ul_b, secs)?
    );
    println!(
        "tunnel_tcp_mbps={:.0}",
        tcp_stream(&a.ns, &b.ns, tn_b, secs)?
    );
    let c = dev_a.counters();
    println!("tunnel_mtu={}", dev_a.mtu());
    println!("tunnel_queues={queues}");
    println!("tunnel_tx_packets={}", c.tx_packets);
    println!("tunnel_dropped={}", c.dropped + dev_b.counters().dropped);
    Ok(())
}
