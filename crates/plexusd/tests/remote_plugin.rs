//! Docker's remote plugins end to end: `testplug` (`crates/plexus-drivers/tests/testplug`), a plugin process
//! serving `NetworkDriver` and `IpamDriver` on a unix socket in the daemon's namespace,
//! found by the real `plexusd` when `plexus network create -d testplug --ipam-driver
//! testplug` first names it; a sandbox on its network gets the plugin's veth with the
//! plugin's address and reaches the plugin's bridge. Then the plugin misbehaves (garbage, a
//! hang, a crash): each sandbox create fails naming the plugin and the call, and leaves no
//! link, no lease and no record; the plugin back, sandboxes work again.
//!
//! The plugin process is this test binary run again (`plugin_process`, which serves only
//! when `TESTPLUG_DIR` is set), so `cargo test -p plexus -p plexusd` builds everything.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../plexus-drivers/tests/testplug/mod.rs"]
mod testplug;
use plexus_testkit::process::ChildGuard;
use testplug as plugin;

mod common;

use common::{json, Daemon};

/// The plugin process: serves until killed, when the test runs it as the plugin.
#[test]
fn plugin_process() {
    let Ok(dir) = std::env::var("TESTPLUG_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    let served = rt.block_on(plugin::serve(&dir.join("testplug.sock"), dir.join("state")));
    panic!("testplug stopped: {served:?}");
}

/// Starts the plugin in the daemon's namespace and waits for its socket.
fn start_plugin(d: &Daemon, dir: &Path) -> ChildGuard {
    let sock = dir.join("testplug.sock");
    let _ = std::fs::remove_file(&sock);
    let mut cmd = Command::new(std::env::current_exe().unwrap_or_else(|e| panic!("exe: {e}")));
    cmd.args([
        "--exact",
        "plugin_process",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("TESTPLUG_DIR", dir)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    plexus_testkit::process::in_netns(&mut cmd, d.host_ns.fd());
    let child = ChildGuard::spawn(cmd).unwrap_or_else(|e| panic!("starting testplug: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "testplug did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The names of the links in the daemon's namespace that the plugin made.
fn plugin_links(d: &Daemon) -> Vec<String> {
    let out = d.plexus_in_ns_cmd(&["ip", "-o", "link", "show"]);
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("tp"))
        .collect()
}

trait InNs {
    fn plexus_in_ns_cmd(&self, args: &[&str]) -> String;
}

impl InNs for Daemon {
    /// Runs a command in the daemon's namespace; its stdout.
    fn plexus_in_ns_cmd(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(args[0]);
        cmd.args(&args[1..]).stdin(Stdio::null());
        plexus_testkit::process::in_netns(&mut cmd, self.host_ns.fd());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

#[test]
fn a_plugin_serves_networks_and_addresses_and_survives_its_own_crash() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let plugins = dir.path().to_path_buf();
    let state = plugins.join("state");
    let mut d = Daemon::new(&[
        "--plugin-dir",
        &plugins.display().to_string(),
        "--plugin-timeout",
        "2",
    ]);
    let mut plug = start_plugin(&d, &plugins);

    // An unknown name is still refused, naming where plugins were looked for.
    let e = d.fails(&["network", "create", "-d", "nosuch", "x"]);
    assert!(e.contains("unknown driver \"nosuch\""), "{e}");
    assert!(e.contains("nosuch.sock"), "{e}");

    let id = d.ok(&[
        "network",
        "create",
        "-d",
        "testplug",
        "--ipam-driver",
        "testplug",
        "--subnet",
        "10.123.0.0/24",
        "tp",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let net = json(&d.ok(&["network", "inspect", "tp"]));
    assert_eq!(net[0]["Driver"], "testplug", "{net}");
    assert_eq!(net[0]["IPAM"]["Driver"], "testplug", "{net}");
    assert_eq!(
        net[0]["IPAM"]["Config"][0]["Gateway"], "10.123.0.1",
        "{net}"
    );
    assert!(plugin_links(&d).contains(&plugin::bridge_name(&id)));
    let calls = plugin::calls(&state);
    assert!(
        calls.contains(&"/IpamDriver.RequestPool".to_string())
            && calls.contains(&"/NetworkDriver.CreateNetwork".to_string()),
        "{calls:?}"
    );

    // A sandbox: the plugin's veth inside as eth0, with the plugin's address, its MAC, the
    // gateway and the static route; it reaches the plugin's bridge.
    d.ok(&["sandbox", "create", "s1", "--network", "tp"]);
    let s1 = json(&d.ok(&["sandbox", "inspect", "s1"]));
    assert_eq!(
        s1[0]["Endpoints"][0]["IPv4Address"], "10.123.0.2/24",
        "{s1}"
    );
    let mac = s1[0]["Endpoints"][0]["MacAddress"].as_str().unwrap_or("");
    assert!(mac.starts_with("02:54:"), "{s1}");
    let addr = d.ok(&["sandbox", "exec", "s1", "--", "ip", "addr", "show", "eth0"]);
    assert!(addr.contains("inet 10.123.0.2/24"), "{addr}");
    assert!(addr.contains(mac), "{addr}");
    let routes = d.ok(&["sandbox", "exec", "s1", "--", "ip", "route"]);
    assert!(
        routes.contains("default via 10.123.0.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("{} via 10.123.0.1 dev eth0", plugin::STATIC_ROUTE)),
        "{routes}"
    );
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
        "10.123.0.1",
    ]);
    assert!(ping.contains("1 received"), "{ping}");
    let leased = plugin::leases(&state);
    assert_eq!(leased, ["10.123.0.1", "10.123.0.2"]);
    let links = plugin_links(&d);

    // Each failure names the plugin and the call, and leaves what was there.
    let unchanged = |what: &str| {
        assert_eq!(plugin::leases(&state), leased, "{what}: leases");
        assert_eq!(plugin_links(&d), links, "{what}: links");
        let ls = d.ok(&["sandbox", "ls"]);
        assert!(!ls.contains("s2"), "{what}: {ls}");
    };
    plugin::set_mode(&state, Some("Join:garbage"));
    let e = d.fails(&["sandbox", "create", "s2", "--network", "tp"]);
    assert!(
        e.contains(
            "plugin \"testplug\": /NetworkDriver.Join: malformed answer: field InterfaceName"
        ),
        "{e}"
    );
    unchanged("garbage");
    plugin::set_mode(&state, Some("CreateEndpoint:error"));
    let e = d.fails(&["sandbox", "create", "s2", "--network", "tp"]);
    assert!(
        e.contains(
            "plugin \"testplug\": /NetworkDriver.CreateEndpoint: testplug refuses CreateEndpoint"
        ),
        "{e}"
    );
    unchanged("error");
    plugin::set_mode(&state, Some("Join:hang"));
    let e = d.fails(&["sandbox", "create", "s2", "--network", "tp"]);
    assert!(
        e.contains("plugin \"testplug\": /NetworkDriver.Join: no answer within"),
        "{e}"
    );
    unchanged("hang");
    plugin::set_mode(&state, None);

    // The plugin dies (its socket stays): clear errors, nothing made.
    plug.kill();
    let started = Instant::now();
    let e = d.fails(&["sandbox", "create", "s2", "--network", "tp"]);
    assert!(
        e.contains("plugin \"testplug\": /IpamDriver.RequestAddress: not responding"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "waited too long"
    );
    unchanged("dead");

    // Back: used again, no restart of the daemon.
    let _plug = start_plugin(&d, &plugins);
    d.ok(&["sandbox", "create", "s2", "--network", "tp"]);
    let s2 = json(&d.ok(&["sandbox", "inspect", "s2"]));
    assert_eq!(
        s2[0]["Endpoints"][0]["IPv4Address"], "10.123.0.3/24",
        "{s2}"
    );
    let ping = d.ok(&[
        "sandbox",
        "exec",
        "s2",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        "10.123.0.2",
    ]);
    assert!(ping.contains("1 received"), "{ping}");

    // plexusd restarts while both are joined: leaving afterwards still takes the plugin's
    // interface out of the sandbox and back under the plugin's name (its alias keeps it).
    d.stop();
    d.start();
    d.ok(&["network", "disconnect", "tp", "s2"]);
    let links = d.ok(&["sandbox", "exec", "s2", "--", "ip", "-o", "link", "show"]);
    assert!(
        !links.contains("eth0"),
        "s2 still has the interface: {links}"
    );
    assert!(
        plugin::strays(&state).is_empty(),
        "{:?}",
        plugin::strays(&state)
    );

    // Removing everything gives everything back.
    d.ok(&["sandbox", "rm", "s1"]);
    d.ok(&["sandbox", "rm", "s2"]);
    assert_eq!(plugin::leases(&state), ["10.123.0.1"]);
    assert_eq!(plugin_links(&d), [plugin::bridge_name(&id)]);
    d.ok(&["network", "rm", "tp"]);
    assert!(plugin::leases(&state).is_empty());
    assert!(plugin_links(&d).is_empty(), "{:?}", plugin_links(&d));
    assert!(
        plugin::strays(&state).is_empty(),
        "{:?}",
        plugin::strays(&state)
    );
}
