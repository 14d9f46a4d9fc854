//! The remote driver against `testplug` (`crates/plexus-drivers/tests/testplug`), a plugin process running in
//! a "host" namespace the test makes: the plugin's veth goes into a sandbox namespace under
//! the sandbox's name with the endpoint's address, the gateway and the static route, and
//! back at leave; a garbage Join leaves the link in the host namespace and the plugin left;
//! a dead plugin is named.
//!
//! The plugin process is this test binary run again (`plugin_process`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use plexus_cnm::{Driver, EndpointInfo, InterfaceName, IpamPool, NetworkInfo, Scope};
use plexus_drivers::remote::RemoteDriver;
use plexus_ipam::plugin::{PluginDirs, Timeouts};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;
mod testplug;
use plexus_testkit::process::ChildGuard;
use testplug as plugin;

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// The plugin process: serves until killed, when the test runs it as the plugin.
#[test]
fn plugin_process() {
    let Ok(dir) = std::env::var("TESTPLUG_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let rt = ok("runtime", tokio::runtime::Runtime::new());
    let served = rt.block_on(plugin::serve(&dir.join("testplug.sock"), dir.join("state")));
    panic!("testplug stopped: {served:?}");
}

fn start_plugin(host: &Netns, dir: &Path) -> ChildGuard {
    let sock = dir.join("testplug.sock");
    let _ = std::fs::remove_file(&sock);
    let mut cmd = Command::new(ok("exe", std::env::current_exe()));
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
    plexus_testkit::process::in_netns(&mut cmd, host.fd());
    let child = ok("starting testplug", ChildGuard::spawn(cmd));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "testplug did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

async fn names(ns: &Netns) -> Vec<String> {
    let r = ok("rtnl", Rtnl::connect(ns).await);
    ok("links", r.links().await)
        .into_iter()
        .map(|l| l.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_interface_goes_into_the_sandbox_and_back() {
    plexus_testkit::require_root();
    let dir = ok("tempdir", tempfile::tempdir());
    let host = ok("host ns", Netns::create(dir.path(), "host"));
    let sandbox = ok("sandbox ns", Netns::create(dir.path(), "sb"));
    let key = sandbox.path().display().to_string();
    let state = dir.path().join("state");
    let mut plug = start_plugin(&host, dir.path());
    let dirs = PluginDirs::single(dir.path());
    let timeouts = Timeouts::both(Duration::from_secs(1));
    let d = ok(
        "connect",
        RemoteDriver::connect("testplug", &dirs, timeouts, host.clone()).await,
    );
    assert_eq!(d.name(), "testplug");
    assert_eq!(d.capability().scope, Scope::Local);

    let net = NetworkInfo {
        id: "a".repeat(64),
        name: "tp".into(),
        options: BTreeMap::new(),
        ipv4: vec![IpamPool {
            pool_id: "tp:10.124.0.0/24".into(),
            subnet: ok("subnet", "10.124.0.0/24".parse()),
            ip_range: None,
            gateway: Some(ok("gw", "10.124.0.1/24".parse())),
            aux_addresses: BTreeMap::new(),
        }],
        ipv6: Vec::new(),
        internal: false,
        enable_ipv6: false,
    };
    ok("create network", d.create_network(&net).await);
    let ep = |id: &str, ip: &str| EndpointInfo {
        network_id: net.id.clone(),
        endpoint_id: id.repeat(64),
        ipv4: Some(ok("ip", ip.parse())),
        ipv6: None,
        mac: None,
        ports: Vec::new(),
        options: BTreeMap::new(),
    };
    let e1 = ep("b", "10.124.0.2/24");
    let made = ok("create endpoint", d.create_endpoint(&e1).await);
    let mac = made.mac.unwrap_or_default();
    assert!(mac.starts_with("02:54:"), "{mac}");

    let joined = ok(
        "join",
        d.join(
            &net.id,
            &e1.endpoint_id,
            &key,
            InterfaceName::numbered("eth", 0),
        )
        .await,
    );
    assert_eq!(joined.interface.as_deref(), Some("eth0"));
    assert_eq!(
        joined.gateways,
        [ok("gw", "10.124.0.1".parse::<std::net::IpAddr>())]
    );
    assert_eq!(joined.static_routes.len(), 1);
    assert_eq!(
        joined.static_routes[0].destination.to_string(),
        plugin::STATIC_ROUTE
    );
    let rs = ok("sandbox rtnl", Rtnl::connect(&sandbox).await);
    let eth0 = ok("eth0", rs.require_link("eth0").await);
    assert!(eth0.up);
    assert_eq!(
        eth0.mac.map(|m| plexus_sys::rtnl::format_mac(&m)),
        Some(mac.clone())
    );
    let addrs = ok("addresses", rs.addresses(eth0.index).await);
    let v4: Vec<_> = addrs.into_iter().filter(|(a, _)| a.is_ipv4()).collect();
    assert_eq!(v4, [(ok("ip", "10.124.0.2".parse()), 24)]);
    let src = plugin::sandbox_end(&e1.endpoint_id);
    assert!(!names(&host).await.contains(&src));

    // Leave: the plugin's link back in the host namespace under its own name.
    ok("leave", d.leave(&net.id, &e1.endpoint_id).await);
    assert!(!names(&sandbox).await.contains(&"eth0".to_string()));
    assert!(names(&host).await.contains(&src));
    ok(
        "delete endpoint",
        d.delete_endpoint(&net.id, &e1.endpoint_id).await,
    );
    assert!(!names(&host).await.contains(&src));

    // A Join answered with garbage: named, nothing in the sandbox, the plugin left.
    let e2 = ep("c", "10.124.0.3/24");
    ok("create endpoint", d.create_endpoint(&e2).await);
    plugin::set_mode(&state, Some("Join:garbage"));
    let e = d
        .join(
            &net.id,
            &e2.endpoint_id,
            &key,
            InterfaceName::numbered("eth", 0),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "plugin \"testplug\": /NetworkDriver.Join: malformed answer: field InterfaceName"
        ),
        "{e}"
    );
    assert_eq!(names(&sandbox).await, ["lo"]);
    assert_eq!(
        plugin::calls(&state).last().map(String::as_str),
        Some("/NetworkDriver.Leave")
    );
    plugin::set_mode(&state, None);
    // The plugin refusing a call: its own words, named.
    plugin::set_mode(&state, Some("DeleteEndpoint:error"));
    let e = d
        .delete_endpoint(&net.id, &e2.endpoint_id)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "plugin \"testplug\": /NetworkDriver.DeleteEndpoint: testplug refuses DeleteEndpoint"
    );
    plugin::set_mode(&state, None);
    ok(
        "delete endpoint",
        d.delete_endpoint(&net.id, &e2.endpoint_id).await,
    );

    // A dead plugin: waited for as long as the timeouts say, then named.
    plug.kill();
    let start = Instant::now();
    let e = d
        .create_endpoint(&ep("d", "10.124.0.4/24"))
        .await
        .unwrap_err()
        .to_string();
    assert!(start.elapsed() >= Duration::from_secs(1));
    assert!(
        e.starts_with("plugin \"testplug\" is not responding: /NetworkDriver.CreateEndpoint"),
        "{e}"
    );
    assert!(e.contains("testplug.sock"), "{e}");
    let _plug = start_plugin(&host, dir.path());
    ok("delete network", d.delete_network(&net.id).await);
    assert!(!names(&host).await.iter().any(|n| n.starts_with("tp")));
    drop(rs);
    let _ = Netns::delete(dir.path(), "sb");
    let _ = Netns::delete(dir.path(), "host");
}
