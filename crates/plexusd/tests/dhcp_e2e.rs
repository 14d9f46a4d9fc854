//! `--ipam-driver dhcp` end to end: the real `plexusd` in a namespace the test makes, whose
//! `uplink` (with an address of the host's own, 10.89.0.2) is a veth to a "LAN" namespace where a real dnsmasq serves DHCP (and DNS), driven
//! by the real `plexus` CLI (`network create -d macvlan -o parent=uplink --ipam-driver dhcp`).
//! The sandbox's address is dnsmasq's lease (its lease file says so, for the endpoint's MAC),
//! its default route the lease's router, its names resolved through the lease's DNS server;
//! the lease is renewed, kept across a daemon restart, and released with the sandbox.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;

mod common;

use common::{json, Daemon};

const LAN_GW: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 1);
const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 89, 0, 2);

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The LAN namespace (`lan0`, 10.89.0.1/24) with dnsmasq, `uplink` in the daemon's; a second
/// veth `quiet` leads nowhere. All gone on drop.
struct Lan {
    dir: PathBuf,
    dnsmasq: Child,
}

impl Lan {
    fn new(d: &Daemon) -> Self {
        let dir = d.dir.path().to_path_buf();
        let ns = ok("lan netns", Netns::create(&dir, "lan"));
        let rt = ok(
            "runtime",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        );
        rt.block_on(async {
            let rl = ok("connect lan", Rtnl::connect(&ns).await);
            let rh = ok("connect host", Rtnl::connect(&d.host_ns).await);
            let lo = ok("lo", rl.require_link("lo").await);
            ok("lo up", rl.set_up(lo.index).await);
            for (name, peer) in [("uplink", "lan0"), ("quiet", "quiet0")] {
                let (up, p) = ok(name, rh.add_veth(name, peer, None, "test-lan").await);
                ok("move", rh.move_to(p.index, &ns, None).await);
                ok("up", rh.set_up(up.index).await);
            }
            // The host has an address of its own on the LAN, as a host on its LAN does:
            // the embedded DNS forwards from the host to the lease's DNS server.
            let up = ok("uplink", rh.require_link("uplink").await);
            ok(
                "host address",
                rh.add_address(up.index, HOST_ADDR.into(), 24).await,
            );
            let port = ok("lan0", rl.require_link("lan0").await);
            ok(
                "gateway",
                rl.add_address(port.index, LAN_GW.into(), 24).await,
            );
            ok("lan0 up", rl.set_up(port.index).await);
        });
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--user=root",
            "--no-resolv",
            "--no-hosts",
            "--interface=lan0",
            "--bind-interfaces",
            "--address=/lan.test/10.89.0.77",
            "--dhcp-range=10.89.0.100,10.89.0.150,255.255.255.0,2m",
            "--dhcp-option=option:router,10.89.0.1",
            "--dhcp-option=option:dns-server,10.89.0.1",
            "--dhcp-option=option:T1,3",
            "--log-dhcp",
            // Offers at once (dnsmasq pings an address before offering it by default).
            "--no-ping",
        ])
        .arg(format!(
            "--dhcp-leasefile={}",
            dir.join("dnsmasq.leases").display()
        ))
        .arg(format!(
            "--log-facility={}",
            dir.join("dnsmasq.log").display()
        ))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null());
        plexus_testkit::process::in_netns(&mut cmd, ns.fd());
        let dnsmasq = ok("start dnsmasq", cmd.spawn());
        let lan = Self { dir, dnsmasq };
        wait_for("dnsmasq's lease file", Duration::from_secs(10), || {
            lan.leasefile().exists()
        });
        lan
    }

    fn leasefile(&self) -> PathBuf {
        self.dir.join("dnsmasq.leases")
    }

    /// dnsmasq's leases: `(expiry, mac, address)`.
    fn leases(&self) -> Vec<(u64, String, String)> {
        std::fs::read_to_string(self.leasefile())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.parse().ok()?,
                    f.get(1)?.to_string(),
                    f.get(2)?.to_string(),
                ))
            })
            .collect()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        let _ = Netns::delete(&self.dir, "lan");
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts that `sandbox` gets an answer from the LAN's gateway.
fn ping_lan_gateway(d: &Daemon, sandbox: &str) {
    let gw = LAN_GW.to_string();
    let ping = d.ok(&[
        "sandbox", "exec", sandbox, "--", "ping", "-c", "1", "-W", "3", &gw,
    ]);
    assert!(ping.contains("1 received"), "{sandbox} -> {gw}: {ping}");
}

#[test]
fn a_dhcp_network_leases_renews_keeps_and_releases() {
    let dir = ok("tempdir", tempfile::tempdir());
    // The host's resolver is nowhere: names must go to the lease's DNS server.
    let rc = dir.path().join("resolv.conf");
    ok("resolv.conf", std::fs::write(&rc, "nameserver 192.0.2.1\n"));
    let rc = rc.display().to_string();
    let mut d = Daemon::new(&["--dns-resolv-conf", &rc]);
    let mut lan = Lan::new(&d);

    d.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=uplink",
        "--ipam-driver",
        "dhcp",
        "--ipam-opt",
        "lease_timeout=3s",
        "lan",
    ]);
    let net = json(&d.ok(&["network", "inspect", "lan"]));
    assert_eq!(net[0]["IPAM"]["Driver"], "dhcp", "{net}");
    assert_eq!(
        net[0]["IPAM"]["Config"][0]["Subnet"], "10.89.0.0/24",
        "{net}"
    );
    assert_eq!(net[0]["IPAM"]["Config"][0]["Gateway"], "10.89.0.1", "{net}");
    assert!(lan.leases().is_empty(), "the probe leases nothing");

    // A server that does not answer: an error naming the parent, and no network.
    let e = d.fails(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=quiet",
        "--ipam-driver",
        "dhcp",
        "--ipam-opt",
        "lease_timeout=2s",
        "silent",
    ]);
    assert!(e.contains("no DHCP server answered on parent quiet"), "{e}");
    assert!(!d.ok(&["network", "ls"]).contains("silent"));

    // The sandbox's address is its lease, for its MAC.
    d.ok(&["sandbox", "create", "s1", "--network", "lan"]);
    let s1 = json(&d.ok(&["sandbox", "inspect", "s1"]));
    let ep = &s1[0]["Endpoints"][0];
    let addr = ep["IPv4Address"].as_str().unwrap_or_default().to_string();
    let mac = ep["MacAddress"].as_str().unwrap_or_default().to_string();
    let ip = addr.split('/').next().unwrap_or_default().to_string();
    assert!(
        addr.starts_with("10.89.0.1") && addr.ends_with("/24"),
        "{s1}"
    );
    let leases = lan.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(
        (leases[0].1.as_str(), leases[0].2.as_str()),
        (mac.as_str(), ip.as_str())
    );
    let link = d.ok(&[
        "sandbox", "exec", "s1", "--", "ip", "-br", "link", "show", "eth0",
    ]);
    assert!(
        link.contains(&mac),
        "the device has the lease's MAC: {link}"
    );
    let route = d.ok(&[
        "sandbox", "exec", "s1", "--", "ip", "route", "show", "default",
    ]);
    assert!(route.contains("default via 10.89.0.1 dev eth0"), "{route}");
    ping_lan_gateway(&d, "s1");
    // Names outside go to the lease's DNS server.
    let dig = d.ok(&[
        "sandbox",
        "exec",
        "s1",
        "--",
        "dig",
        "+short",
        "+tries=2",
        "+time=2",
        "www.lan.test",
    ]);
    assert_eq!(dig.trim(), "10.89.0.77", "{dig}");

    // Renewed while it lives (T1 is 3 s): a later expiry, the same address.
    let first = leases[0].0;
    wait_for("a renewal", Duration::from_secs(15), || {
        lan.leases().first().is_some_and(|l| l.0 > first)
    });

    // A restart keeps the lease, the address and the renewals.
    let status = d.stop();
    assert!(status.success(), "{status}");
    let before = lan.leases();
    d.start();
    let s1 = json(&d.ok(&["sandbox", "inspect", "s1"]));
    assert_eq!(s1[0]["Endpoints"][0]["IPv4Address"], addr.as_str(), "{s1}");
    assert_eq!(s1[0]["Endpoints"][0]["MacAddress"], mac.as_str(), "{s1}");
    wait_for(
        "a renewal after the restart",
        Duration::from_secs(15),
        || {
            let now = lan.leases();
            now.len() == 1 && now[0].2 == ip && now[0].0 > before[0].0
        },
    );
    ping_lan_gateway(&d, "s1");

    // Released when the endpoint leaves.
    d.ok(&["sandbox", "rm", "s1"]);
    wait_for("the release", Duration::from_secs(5), || {
        lan.leases().is_empty()
    });

    // The server gone: a new sandbox fails naming the parent, and nothing is left of it.
    let _ = lan.dnsmasq.kill();
    let _ = lan.dnsmasq.wait();
    let e = d.fails(&["sandbox", "create", "s2", "--network", "lan"]);
    assert!(
        e.contains("no DHCP server answered on parent uplink"),
        "{e}"
    );
    assert!(!d.ok(&["sandbox", "ls"]).contains("s2"));
    let net = json(&d.ok(&["network", "inspect", "lan"]));
    assert_eq!(net[0]["Containers"], serde_json::json!({}), "{net}");
    d.ok(&["network", "rm", "lan"]);
    assert!(d.log().contains("DHCP lease released"), "{}", d.log());
}

/// Runs `ip ARGS` in the daemon's namespace; its stdout (it must succeed).
fn host_ip(d: &Daemon, args: &[&str]) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(args).stdin(Stdio::null());
    plexus_testkit::process::in_netns(&mut cmd, d.host_ns.fd());
    let out = ok("ip", cmd.output());
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_dhcp_bridge_network_on_the_hosts_own_lan_bridge() {
    let mut d = Daemon::new(&[]);
    let lan = Lan::new(&d);
    // The host as many are set up: its LAN port on a bridge of its own, which holds the
    // host's address.
    host_ip(&d, &["link", "add", "brlan", "type", "bridge"]);
    host_ip(&d, &["link", "set", "uplink", "master", "brlan"]);
    host_ip(&d, &["addr", "del", "10.89.0.2/24", "dev", "uplink"]);
    host_ip(&d, &["addr", "add", "10.89.0.2/24", "dev", "brlan"]);
    host_ip(&d, &["link", "set", "brlan", "up"]);

    d.ok(&[
        "network",
        "create",
        "-d",
        "bridge",
        "-o",
        "com.docker.network.bridge.name=brlan",
        "--ipam-driver",
        "dhcp",
        "--ipam-opt",
        "lease_timeout=3s",
        "lanbr",
    ]);
    let net = json(&d.ok(&["network", "inspect", "lanbr"]));
    assert_eq!(
        net[0]["IPAM"]["Config"][0]["Subnet"], "10.89.0.0/24",
        "{net}"
    );
    assert_eq!(net[0]["IPAM"]["Config"][0]["Gateway"], "10.89.0.1", "{net}");
    // The LAN's router is the gateway: the bridge does not take its address.
    assert_eq!(
        net[0]["Options"]["com.docker.network.bridge.inhibit_ipv4"], "true",
        "{net}"
    );
    let addrs = host_ip(&d, &["-o", "addr", "show", "dev", "brlan"]);
    assert!(
        addrs.contains("10.89.0.2/24") && !addrs.contains("10.89.0.1/"),
        "{addrs}"
    );

    // The sandbox leases its address from the LAN's server through the bridge.
    d.ok(&["sandbox", "create", "s1", "--network", "lanbr"]);
    let s1 = json(&d.ok(&["sandbox", "inspect", "s1"]));
    let ep = &s1[0]["Endpoints"][0];
    let mac = ep["MacAddress"].as_str().unwrap_or_default().to_string();
    let ip = ep["IPv4Address"]
        .as_str()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let leases = lan.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(
        (leases[0].1.as_str(), leases[0].2.as_str()),
        (mac.as_str(), ip.as_str())
    );
    ping_lan_gateway(&d, "s1");

    // A restart finds the user's bridge again and uses it as it is.
    let status = d.stop();
    assert!(status.success(), "{status}");
    d.start();
    ping_lan_gateway(&d, "s1");

    // Leaving releases the lease; removing the network leaves the user's bridge, its port
    // and its address as they were.
    d.ok(&["sandbox", "rm", "s1"]);
    wait_for("the release", Duration::from_secs(5), || {
        lan.leases().is_empty()
    });
    d.ok(&["network", "rm", "lanbr"]);
    let addrs = host_ip(&d, &["-o", "addr", "show", "dev", "brlan"]);
    assert!(addrs.contains("10.89.0.2/24"), "{addrs}");
    let port = host_ip(&d, &["-o", "link", "show", "uplink"]);
    assert!(port.contains("master brlan"), "{port}");
}
