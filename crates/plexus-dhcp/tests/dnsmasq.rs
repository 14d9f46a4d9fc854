//! The `dhcp` IPAM driver against a real DHCP server: dnsmasq in a LAN namespace, the driver
//! in a "host" namespace whose `uplink` (one end of a veth pair) is the parent:
//!
//! ```text
//!   host ns  uplink ──veth── lan0 [10.88.0.1/24, dnsmasq]  LAN ns
//! ```
//!
//! Leases are checked where the server keeps them: dnsmasq's lease file. Needs root and
//! dnsmasq (scripts/test installs it).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_dhcp::client::Timing;
use plexus_dhcp::{DhcpConfig, DhcpIpam};
use plexus_ipam::{AddressRequest, Ipam, PoolRequest};
use plexus_kv::Store;
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const PARENT: &str = "uplink";

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The two namespaces, the veth between them, and dnsmasq when started: all gone on drop.
struct Lan {
    dir: tempfile::TempDir,
    host: Netns,
    dnsmasq: Option<Child>,
}

impl Lan {
    async fn new() -> Lan {
        let dir = ok("tempdir", tempfile::tempdir());
        let host = ok("host ns", Netns::create(dir.path(), "host"));
        let lan = ok("lan ns", Netns::create(dir.path(), "lan"));
        let rh = ok("rtnl host", Rtnl::connect(&host).await);
        let rl = ok("rtnl lan", Rtnl::connect(&lan).await);
        let (up, peer) = ok("veth", rh.add_veth(PARENT, "lan0", None, "test-dhcp").await);
        ok("move", rh.move_to(peer.index, &lan, None).await);
        ok("uplink up", rh.set_up(up.index).await);
        let lo = ok("lo", rl.require_link("lo").await);
        ok("lo up", rl.set_up(lo.index).await);
        let port = ok("lan0", rl.require_link("lan0").await);
        ok(
            "address",
            rl.add_address(port.index, IpAddr::V4(SERVER), 24).await,
        );
        ok("lan0 up", rl.set_up(port.index).await);
        Lan {
            dir,
            host,
            dnsmasq: None,
        }
    }

    fn leasefile(&self) -> PathBuf {
        self.dir.path().join("dnsmasq.leases")
    }

    /// Starts dnsmasq on `lan0`: addresses .100 to .150, 2-minute leases, the router and two
    /// DNS servers, renewal after `t1` seconds.
    fn serve(&mut self, t1: u32) {
        self.serve_with(t1, 105);
    }

    /// [`serve`](Self::serve), rebinding after `t2` seconds.
    fn serve_with(&mut self, t1: u32, t2: u32) {
        let ns = self.dir.path().join("lan");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args([
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--user=root",
                "--port=0",
                "--interface=lan0",
                "--bind-interfaces",
                "--dhcp-range=10.88.0.100,10.88.0.150,255.255.255.0,2m",
                "--dhcp-option=option:router,10.88.0.1",
                "--dhcp-option=option:dns-server,10.88.0.53,10.88.0.54",
                "--log-dhcp",
                // Offers at once (dnsmasq pings an address before offering it by default).
                "--no-ping",
            ])
            .arg(format!("--dhcp-option=option:T1,{t1}"))
            .arg(format!("--dhcp-option=option:T2,{t2}"))
            .arg(format!("--dhcp-leasefile={}", self.leasefile().display()))
            .arg(format!(
                "--log-facility={}",
                self.dir.path().join("dnsmasq.log").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("dnsmasq.pid").display()
            ))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        self.dnsmasq = Some(ok("start dnsmasq", child));
        // It serves once it has written its lease file.
        wait_for("dnsmasq's lease file", Duration::from_secs(10), || {
            self.leasefile().exists()
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// dnsmasq's leases: `(expiry, mac, address, client id)`.
    fn leases(&self) -> Vec<(u64, String, Ipv4Addr, String)> {
        let text = std::fs::read_to_string(self.leasefile()).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.parse().ok()?,
                    f.get(1)?.to_string(),
                    f.get(2)?.parse().ok()?,
                    f.get(4)?.to_string(),
                ))
            })
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }

    async fn ipam(&self, store: Arc<dyn Store>) -> DhcpIpam {
        let config = DhcpConfig {
            netns: Some(self.host.clone()),
            timing: Timing {
                timeout: Duration::from_secs(5),
                ..Timing::default()
            },
        };
        ok("open", DhcpIpam::open(store, config).await)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.stop();
        let _ = Netns::delete(self.dir.path(), "host");
        let _ = Netns::delete(self.dir.path(), "lan");
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn wait_for_async(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pool_request(owner: &str) -> PoolRequest {
    let mut r = PoolRequest::new("local", owner);
    r.network_options = BTreeMap::from([("parent".to_string(), PARENT.to_string())]);
    r
}

fn address_request(pool: &str, mac: &str) -> AddressRequest {
    let mut r = AddressRequest::next(pool);
    r.mac_address = Some(mac.to_string());
    r
}

fn memory() -> Arc<dyn Store> {
    Arc::new(plexus_kv::LocalStore::memory())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_given_renewed_and_released() {
    let mut lan = Lan::new().await;
    lan.serve(3);
    let ipam = lan.ipam(memory()).await;

    let pool = ok("pool", ipam.request_pool(pool_request("lan")).await);
    assert_eq!(pool.pool.to_string(), "10.88.0.0/24");
    assert_eq!(
        pool.gateway.map(|g| g.to_string()),
        Some("10.88.0.1/24".into())
    );
    assert!(lan.leases().is_empty(), "the probe leases nothing");

    let mac = "02:00:00:88:00:01";
    let got = ok(
        "address",
        ipam.request_address(address_request(&pool.pool_id, mac))
            .await,
    );
    let IpAddr::V4(addr) = got.address.addr() else {
        panic!("{got:?}")
    };
    assert_eq!(got.address.prefix_len(), 24);
    assert!((100..=150).contains(&addr.octets()[3]), "{addr}");
    assert_eq!(
        got.data
            .get(plexus_ipam::api::DATA_DNS_SERVERS)
            .map(String::as_str),
        Some("10.88.0.53,10.88.0.54")
    );
    let leases = lan.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    let (expiry, lmac, laddr, client_id) = leases[0].clone();
    assert_eq!((lmac.as_str(), laddr), (mac, addr));
    assert_eq!(
        client_id, "01:02:00:00:88:00:01",
        "the endpoint's client id"
    );

    // T1 is 3 s: the lease is renewed (a later expiry in the server's file), same address.
    wait_for_async("a renewal", Duration::from_secs(15), || {
        lan.leases().first().is_some_and(|l| l.0 > expiry)
    })
    .await;
    assert_eq!(lan.leases()[0].2, addr);
    assert_eq!(ok("table", ipam.leases().await).len(), 1);

    ok(
        "release",
        ipam.release_address(&pool.pool_id, IpAddr::V4(addr)).await,
    );
    wait_for_async("the release", Duration::from_secs(5), || {
        lan.leases().is_empty()
    })
    .await;
    assert!(lan.log().contains("DHCPRELEASE"), "{}", lan.log());
    assert!(ok("table", ipam.leases().await).is_empty());
    let again = ipam
        .release_address(&pool.pool_id, IpAddr::V4(addr))
        .await
        .unwrap_err();
    assert!(again.to_string().contains("never allocated"), "{again}");
    ok("release pool", ipam.release_pool(&pool.pool_id).await);
    assert!(ok("pools", ipam.pools().await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_and_renews_the_same_leases() {
    let mut lan = Lan::new().await;
    lan.serve(3);
    let store = memory();
    let first = lan.ipam(store.clone()).await;
    let pool = ok("pool", first.request_pool(pool_request("lan")).await);
    let mut addrs = Vec::new();
    for mac in ["02:00:00:88:00:0a", "02:00:00:88:00:0b"] {
        let got = ok(
            "address",
            first
                .request_address(address_request(&pool.pool_id, mac))
                .await,
        );
        addrs.push(got.address.addr());
    }
    // The daemon stops: its renewals with it.
    first.shutdown().await;
    drop(first);
    let before = lan.leases();
    assert_eq!(before.len(), 2);
    tokio::time::sleep(Duration::from_secs(4)).await;

    let second = lan.ipam(store).await;
    let table: Vec<IpAddr> = ok("table", second.leases().await)
        .iter()
        .map(|l| IpAddr::V4(l.address))
        .collect();
    assert_eq!(table.len(), 2);
    for a in &addrs {
        assert!(table.contains(a), "{a} kept: {table:?}");
    }
    // T1 passed while it was down: both are renewed at once, with the same addresses.
    wait_for_async(
        "renewals after the restart",
        Duration::from_secs(10),
        || {
            let now = lan.leases();
            now.len() == 2
                && before
                    .iter()
                    .all(|b| now.iter().any(|n| n.2 == b.2 && n.1 == b.1 && n.0 > b.0))
        },
    )
    .await;
    for a in addrs {
        ok("release", second.release_address(&pool.pool_id, a).await);
    }
    wait_for_async("the releases", Duration::from_secs(5), || {
        lan.leases().is_empty()
    })
    .await;
    ok("release pool", second.release_pool(&pool.pool_id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_lan_times_out_naming_the_parent_and_keeps_nothing() {
    let mut lan = Lan::new().await;
    let store = memory();
    let ipam = lan.ipam(store.clone()).await;
    let mut req = pool_request("quiet");
    req.options
        .insert("lease_timeout".to_string(), "2s".to_string());
    let start = Instant::now();
    let e = ipam.request_pool(req).await.unwrap_err().to_string();
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(
        e.contains("no DHCP server answered on parent uplink") && e.contains("DHCPDISCOVER"),
        "{e}"
    );
    assert!(ok("list", store.list("").await).is_empty(), "nothing kept");

    // A server that answers the probe, then goes quiet: the address request times out and
    // leaves no lease, here or at the server.
    lan.serve(60);
    let pool = ok("pool", ipam.request_pool(pool_request("lan")).await);
    lan.stop();
    let e = ipam
        .request_address(address_request(&pool.pool_id, "02:00:00:88:00:0c"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no DHCP server answered on parent uplink"),
        "{e}"
    );
    assert!(ok("table", ipam.leases().await).is_empty());
    assert!(lan.leases().is_empty());

    // Bad input names its field.
    let e = ipam
        .request_address(AddressRequest::next(&pool.pool_id))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("mac address"), "{e}");
    let e = ipam
        .request_pool(PoolRequest::new("local", "x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("parent"), "{e}");
    let mut missing = pool_request("x");
    missing
        .network_options
        .insert("parent".into(), "nosuch0".into());
    let e = ipam.request_pool(missing).await.unwrap_err().to_string();
    assert!(e.contains("nosuch0"), "{e}");
    ok("release pool", ipam.release_pool(&pool.pool_id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lost_its_leases_gives_the_same_address_again() {
    let mut lan = Lan::new().await;
    lan.serve_with(2, 4);
    let ipam = lan.ipam(memory()).await;
    let pool = ok("pool", ipam.request_pool(pool_request("lan")).await);
    let mac = "02:00:00:88:00:0d";
    let got = ok(
        "address",
        ipam.request_address(address_request(&pool.pool_id, mac))
            .await,
    );
    let IpAddr::V4(addr) = got.address.addr() else {
        panic!("{got:?}")
    };
    // The server restarts with no lease file: renewals go unanswered until T2, when the
    // same address is leased anew.
    lan.stop();
    ok("forget", std::fs::remove_file(lan.leasefile()));
    lan.serve_with(2, 4);
    wait_for_async("the lease again", Duration::from_secs(20), || {
        lan.leases().iter().any(|l| l.1 == mac && l.2 == addr)
    })
    .await;
    let table = ok("table", ipam.leases().await);
    assert_eq!(table.len(), 1);
    assert_eq!(table[0].address, addr);
    ok(
        "release",
        ipam.release_address(&pool.pool_id, IpAddr::V4(addr)).await,
    );
    ok("release pool", ipam.release_pool(&pool.pool_id).await);
}
