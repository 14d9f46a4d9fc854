//! Kernels other than this one, forced on this one (needs root): the start-up refusal of a
//! kernel too old or lacking a required feature (`PLEXUS_KERNEL_RELEASE`,
//! `PLEXUS_PROBE_MISSING`), and the whole daemon on the nf_tables deletion path of kernels
//! before 6.3 (`PLEXUS_FORCE_NFT_FALLBACK=1`), with traffic. Each daemon runs in a network
//! namespace the test makes.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use plexus_drivers::firewall::{FILTER_TABLE, NAT_TABLE};
use plexus_sys::netns::Netns;
use plexus_sys::nft::{Family, Nft};
use plexus_sys::rtnl::Rtnl;

mod common;

use common::{json, plexusd_bin, Daemon};

/// Runs plexusd to its end inside `ns` with `env`, with the dirs and socket under `dir`.
fn run_plexusd(dir: &Path, ns: &Netns, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(plexusd_bin());
    cmd.arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--run-dir")
        .arg(dir.join("run"))
        .env("RUST_LOG", "info")
        // Not dockerd's plugin: tests run many daemons at once.
        .env("PLEXUS_DOCKER_PLUGIN_SOCKET", "none")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    plexus_testkit::process::in_netns(&mut cmd, ns.fd());
    cmd.output()
        .unwrap_or_else(|e| panic!("running plexusd: {e}"))
}

fn links_in(ns: &Netns) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let rtnl = Rtnl::connect(ns)
            .await
            .unwrap_or_else(|e| panic!("rtnl: {e}"));
        rtnl.links()
            .await
            .unwrap_or_else(|e| panic!("links: {e}"))
            .into_iter()
            .map(|l| l.name)
            .collect()
    })
}

fn this_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_else(|e| panic!("osrelease: {e}"))
        .trim()
        .to_string()
}

#[test]
fn plexusd_refuses_a_kernel_too_old_or_lacking_a_required_feature_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let ns = Netns::create(dir.path(), "host-ns").unwrap_or_else(|e| panic!("netns: {e}"));
    // What a new namespace has (loopback, and fallback tunnels on some kernels).
    let fresh = links_in(&ns);
    let refused = |env: &[(&str, &str)]| -> String {
        let out = run_plexusd(dir.path(), &ns, env);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{env:?} not refused:\n{stderr}");
        // Nothing was made: no state or run dir, no link, no nf_tables table.
        assert!(!dir.path().join("state").exists(), "state dir made");
        assert!(!dir.path().join("run").exists(), "run dir made");
        assert_eq!(links_in(&ns), fresh, "links made");
        let nft = Nft::open(&ns).unwrap_or_else(|e| panic!("nft: {e}"));
        let tables = nft.tables().unwrap_or_else(|e| panic!("tables: {e}"));
        assert!(tables.is_empty(), "tables made: {tables:?}");
        // The message, apart from the log lines before it.
        stderr
            .lines()
            .find(|l| l.starts_with("plexusd: "))
            .unwrap_or_else(|| panic!("no message:\n{stderr}"))
            .to_string()
    };

    let err = refused(&[("PLEXUS_KERNEL_RELEASE", "5.4.0-150-generic")]);
    assert!(
        err.contains(
            "plexusd: Linux 5.4.0-150-generic is older than 5.10, the oldest Plexus supports"
        ),
        "{err}"
    );

    let err = refused(&[("PLEXUS_PROBE_MISSING", "veth")]);
    let release = this_release();
    assert!(
        err.contains(&format!(
            "plexusd: the kernel (Linux {release}) lacks veth links (CONFIG_VETH, module veth): Plexus needs it for every sandbox interface"
        )),
        "{err}"
    );

    // Both at once: the release and every required feature missing are named; an optional
    // one is not.
    let err = refused(&[
        ("PLEXUS_KERNEL_RELEASE", "4.19.0-26-amd64"),
        ("PLEXUS_PROBE_MISSING", "nftables,nft-nat,ipvlan"),
    ]);
    assert!(
        err.contains("Linux 4.19.0-26-amd64 is older than 5.10"),
        "{err}"
    );
    assert!(err.contains("lacks nftables ("), "{err}");
    assert!(err.contains("lacks nftables NAT ("), "{err}");
    assert!(!err.contains("ipvlan"), "{err}");

    // A forcing variable with a bad value names itself.
    let err = refused(&[("PLEXUS_PROBE_MISSING", "warp")]);
    assert!(
        err.contains("PLEXUS_PROBE_MISSING") && err.contains("warp"),
        "{err}"
    );
    let err = refused(&[("PLEXUS_FORCE_NFT_FALLBACK", "yes")]);
    assert!(err.contains("PLEXUS_FORCE_NFT_FALLBACK"), "{err}");

    let _ = Netns::delete(dir.path(), "host-ns");
}

/// Listens on `port` (0: any) inside the namespace at `netns`.
fn listen_in(netns: &str, port: u16) -> std::net::TcpListener {
    Netns::open(Path::new(netns))
        .and_then(|ns| ns.run(move || std::net::TcpListener::bind(("0.0.0.0", port))))
        .unwrap_or_else(|e| panic!("entering {netns}: {e}"))
        .unwrap_or_else(|e| panic!("listening in {netns}: {e}"))
}

/// Accepts one connection within 10 s and returns what it sent.
fn receive(listener: std::net::TcpListener) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut text = String::new();
            let _ = conn.read_to_string(&mut text);
            let _ = tx.send(text);
        }
    });
    rx
}

/// `bash -c 'echo MESSAGE >/dev/tcp/IP/PORT'` inside `ns`.
fn send_from(ns: &Netns, ip: &str, port: u16, message: &str) -> Output {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", &format!("echo {message} >/dev/tcp/{ip}/{port}")]);
    plexus_testkit::process::in_netns(&mut cmd, ns.fd());
    cmd.output().unwrap_or_else(|e| panic!("bash: {e}"))
}

/// Every element of every set of Plexus's tables in `ns`, by set.
fn plexus_elements(ns: &Netns) -> Vec<(String, usize)> {
    let nft = Nft::open(ns).unwrap_or_else(|e| panic!("nft: {e}"));
    let mut out = Vec::new();
    for (family, table) in [
        (Family::Inet, FILTER_TABLE),
        (Family::Ip, NAT_TABLE),
        (Family::Ip6, NAT_TABLE),
    ] {
        for set in nft
            .sets(family, table)
            .unwrap_or_else(|e| panic!("sets of {table}: {e}"))
        {
            let n = nft
                .elements(family, table, &set)
                .unwrap_or_else(|e| panic!("elements of {set}: {e}"))
                .len();
            if n > 0 {
                out.push((format!("{} {table} {set}", family.name()), n));
            }
        }
    }
    out
}

#[test]
fn the_whole_daemon_on_the_pre_6_3_deletion_path_carries_traffic_and_cleans_up() {
    let mut d = Daemon::with_env(&["--bridge", "none"], &[("PLEXUS_FORCE_NFT_FALLBACK", "1")]);
    let log = d.log();
    assert!(
        log.contains("PLEXUS_FORCE_NFT_FALLBACK=1"),
        "the forcing is announced:\n{log}"
    );
    assert!(
        log.contains("nf_tables without NFT_MSG_DESTROY"),
        "the firewall took the pre-6.3 path:\n{log}"
    );

    d.ok(&["network", "create", "--subnet", "10.230.0.0/24", "fb"]);
    d.ok(&[
        "sandbox",
        "create",
        "s1",
        "--network",
        "fb",
        "--ip",
        "10.230.0.10",
        "-p",
        "18081:80",
    ]);
    d.ok(&["sandbox", "create", "s2"]);
    d.ok(&["network", "connect", "--ip", "10.230.0.20", "fb", "s2"]);
    let netns_of = |name: &str| -> String {
        json(&d.ok(&["sandbox", "inspect", name]))[0]["NetNs"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (s1_netns, s2_netns) = (netns_of("s1"), netns_of("s2"));
    let s1 = Netns::open(Path::new(&s1_netns)).unwrap_or_else(|e| panic!("s1: {e}"));
    let s2 = Netns::open(Path::new(&s2_netns)).unwrap_or_else(|e| panic!("s2: {e}"));

    // Sandbox to sandbox.
    let listener = listen_in(&s2_netns, 0);
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let got = receive(listener);
    let sent = send_from(&s1, "10.230.0.20", port, "hello");
    assert!(sent.status.success(), "{sent:?}");
    assert_eq!(
        got.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
        Some("hello\n")
    );
    // The published port, from the host namespace through the gateway address.
    let listener = listen_in(&s1_netns, 80);
    let got = receive(listener);
    let sent = send_from(&d.host_ns, "10.230.0.1", 18081, "published");
    assert!(sent.status.success(), "{sent:?}\n{}", d.log());
    assert_eq!(
        got.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
        Some("published\n")
    );
    let held = plexus_elements(&d.host_ns);
    assert!(
        held.iter().any(|(set, _)| set.ends_with(" ports")),
        "the port is in the kernel: {held:?}"
    );

    // Unpublish (disconnect), disconnect, remove: every deletion on the fallback path.
    d.ok(&["network", "disconnect", "fb", "s1"]);
    let held = plexus_elements(&d.host_ns);
    assert!(
        !held.iter().any(|(set, _)| set.contains(" ports")),
        "the port is gone: {held:?}"
    );
    // From s2 (the test's host namespace has no loopback up, which local delivery needs):
    // the host now refuses the port instead of forwarding it.
    let sent = send_from(&s2, "10.230.0.1", 18081, "closed");
    let stderr = String::from_utf8_lossy(&sent.stderr);
    assert!(
        !sent.status.success() && stderr.contains("refused"),
        "the port no longer answers: {stderr}"
    );
    d.ok(&["network", "disconnect", "fb", "s2"]);
    assert_eq!(d.ok(&["network", "rm", "fb"]), "fb\n");
    assert_eq!(d.ok(&["sandbox", "rm", "s1", "s2"]), "s1\ns2\n");

    // No element left, and no link of Plexus's once retired links are reaped.
    assert_eq!(plexus_elements(&d.host_ns), Vec::<(String, usize)>::new());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let links = links_in(&d.host_ns);
        if !links.iter().any(|l| l.starts_with("plx")) {
            break;
        }
        assert!(Instant::now() < deadline, "links left: {links:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The removal of a network that is gone, and a second start (reconciliation deletes
    // on the same path), go through too.
    let err = d.fails(&["network", "rm", "fb"]);
    assert!(err.contains("fb"), "{err}");
    assert_eq!(d.stop().code(), Some(0));
    d.start();
    assert_eq!(
        d.ok(&["network", "ls", "--format", "{{.Name}}"]),
        "host\nnone\n"
    );
    let log = d.log();
    assert!(!log.contains("ERROR"), "{log}");
    assert_eq!(d.stop().code(), Some(0));
}
