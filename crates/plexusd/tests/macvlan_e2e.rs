//! The macvlan driver end to end: the real `plexusd` in a namespace the test makes, whose
//! `uplink` is a veth to a "LAN" namespace holding a bridge with the LAN's gateway, driven by
//! the real `plexus` CLI as a user would (`network create -d macvlan -o parent=…`), with
//! `ping` and TCP from the sandbox to the LAN; then `plexus system reset` removes the parent
//! Plexus made for an `--internal` network and leaves the host's own.

use std::io::Read;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::Duration;

use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{BridgeSpec, Rtnl};

mod common;

use common::{json, Daemon};

const LAN_GW: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The LAN's namespace, pinned in the daemon's temp dir; removed on drop.
struct Lan {
    dir: std::path::PathBuf,
    ns: Netns,
}

impl Lan {
    /// The LAN namespace with its bridge and gateway, and `uplink` in the daemon's.
    fn new(rt: &tokio::runtime::Runtime, d: &Daemon) -> Self {
        let dir = d.dir.path().to_path_buf();
        let ns = ok("lan netns", Netns::create(&dir, "lan"));
        rt.block_on(async {
            let rl = ok("connect lan", Rtnl::connect(&ns).await);
            let rh = ok("connect host", Rtnl::connect(&d.host_ns).await);
            let lo = ok("lo", rl.require_link("lo").await);
            ok("lo up", rl.set_up(lo.index).await);
            let spec = BridgeSpec {
                name: "lanbr",
                ..Default::default()
            };
            let br = ok("lan bridge", rl.add_bridge(&spec, "test-lan").await);
            ok("gateway", rl.add_address(br.index, LAN_GW.into(), 24).await);
            let (up, peer) = ok(
                "uplink",
                rh.add_veth("uplink", "lan0", None, "test-lan").await,
            );
            ok("move", rh.move_to(peer.index, &ns, None).await);
            ok("uplink up", rh.set_up(up.index).await);
            let port = ok("lan0", rl.require_link("lan0").await);
            ok("attach", rl.set_master(port.index, br.index).await);
            ok("lan0 up", rl.set_up(port.index).await);
            ok("bridge up", rl.set_up(br.index).await);
        });
        Self { dir, ns }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Netns::delete(&self.dir, "lan");
    }
}

/// The names of the daemon namespace's links.
fn link_names(rt: &tokio::runtime::Runtime, ns: &Netns) -> Vec<String> {
    rt.block_on(async {
        let r = ok("connect", Rtnl::connect(ns).await);
        ok("links", r.links().await)
            .into_iter()
            .map(|l| l.name)
            .collect()
    })
}

#[test]
fn a_macvlan_network_puts_a_sandbox_on_the_lan() {
    let mut d = Daemon::new(&[]);
    let rt = runtime();
    let lan = Lan::new(&rt, &d);

    let id = d.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        "parent=uplink",
        "--subnet",
        "10.77.0.0/24",
        "--gateway",
        "10.77.0.1",
        "lan",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let ls = d.ok(&["network", "ls", "-f", "name=lan"]);
    assert!(ls.contains("lan       macvlan   local"), "{ls}");
    // Bad input through the CLI names what is wrong, and makes nothing.
    let bad = |opts: &[&str]| {
        let mut args = vec!["network", "create", "-d", "macvlan"];
        args.extend_from_slice(opts);
        args.extend_from_slice(&["--subnet", "10.79.0.0/24", "bad"]);
        d.fails(&args)
    };
    let e = bad(&["-o", "parent=uplink", "-o", "macvlan_mode=wide"]);
    assert!(e.contains("macvlan_mode"), "{e}");
    let e = bad(&["-o", "parent=nosuch0"]);
    assert!(e.contains("parent=\"nosuch0\""), "{e}");
    let e = bad(&["-o", "parent=uplink"]);
    assert!(e.contains("network \"lan\""), "{e}");
    assert!(!d.ok(&["network", "ls"]).contains(" bad "));

    // A sandbox on it: its own address on the LAN, the LAN's gateway as its way out.
    d.ok(&["sandbox", "create", "s1", "--network", "lan"]);
    let s1 = json(&d.ok(&["sandbox", "inspect", "s1"]));
    assert_eq!(s1[0]["Endpoints"][0]["IPv4Address"], "10.77.0.2/24", "{s1}");
    let ping = d.ok(&[
        "sandbox",
        "exec",
        "s1",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        "10.77.0.1",
    ]);
    assert!(ping.contains("1 received"), "{ping}");
    let route = d.ok(&[
        "sandbox", "exec", "s1", "--", "ip", "route", "show", "default",
    ]);
    assert!(route.contains("default via 10.77.0.1 dev eth0"), "{route}");
    // TCP to the LAN, which sees the sandbox's own address (no NAT).
    let listener = ok(
        "listen",
        lan.ns
            .run(|| TcpListener::bind((LAN_GW, 0)))
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string())),
    );
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut conn, peer)) = listener.accept() {
            let mut text = String::new();
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = conn.read_to_string(&mut text);
            let _ = tx.send((peer.ip().to_string(), text));
        }
    });
    d.ok(&[
        "sandbox",
        "exec",
        "s1",
        "--",
        "bash",
        "-c",
        &format!("echo hello >/dev/tcp/{LAN_GW}/{port}"),
    ]);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).ok(),
        Some(("10.77.0.2".to_string(), "hello\n".to_string()))
    );

    d.ok(&["sandbox", "rm", "s1"]);
    d.ok(&["network", "rm", "lan"]);
    assert!(d
        .ok(&["network", "ls", "-q", "-f", "name=lan"])
        .trim()
        .is_empty());
    assert!(link_names(&rt, &d.host_ns).contains(&"uplink".to_string()));

    // An --internal network gets a parent of Plexus's own (a dummy link, or a veth pair
    // where the kernel has none), which `plexus system reset` removes; the uplink stays.
    let iso = d.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--internal",
        "--subnet",
        "10.80.0.0/24",
        "iso",
    ]);
    let iso = iso.trim();
    let parents = [format!("dm-{}", &iso[..12]), format!("plxm{}", &iso[..11])];
    let has_parent = |names: &[String]| names.iter().any(|n| parents.contains(n));
    assert!(has_parent(&link_names(&rt, &d.host_ns)), "{parents:?}");
    d.ok(&["sandbox", "create", "s2", "--network", "iso"]);
    let status = d.stop();
    assert!(status.success(), "{status}");
    let state = d.dir.path().join("state").display().to_string();
    let run = d.dir.path().join("run").display().to_string();
    let out = d.plexus_in_ns(&["system", "reset", "--state-dir", &state, "--run-dir", &run]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let left = link_names(&rt, &d.host_ns);
    assert!(!has_parent(&left), "{left:?}");
    assert!(left.contains(&"uplink".to_string()), "{left:?}");
    assert!(!Path::new(&run).join("netns").exists());
}
