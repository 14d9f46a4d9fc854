//! End to end: the real `plexusd` binary, in a network namespace the test makes (so bridges
//! and firewall rules never touch the machine's own), with temp state and run dirs, driven by
//! the real `plexus` CLI (and by docker's CLI, which `./scripts/test` installs). Needs root.
//!
//! `plexus` is looked up next to `plexusd` in the target dir: `cargo test --workspace` (or
//! `cargo test -p plexus -p plexusd`) builds both. The daemon's reconciliation (records a
//! crash left half done, drift while running) is tested the same way in `reconcile_e2e.rs`.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use plexus_sys::netns::Netns;

mod common;
mod sandbox_traffic;

use common::{docker_cli, exit_within, json, plexusd_bin, Daemon};
use sandbox_traffic::{listen_in, receive, run_in, s2_reaches_s1, send_script};

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

fn has_netns_in(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| m.contains(&dir.display().to_string()))
        .unwrap_or(false)
}

#[test]
fn cli_against_the_daemon_and_state_survives_a_restart() {
    let mut d = Daemon::new(&["--default-address-pool", "base=10.211.0.0/16,size=24"]);

    // Create: the id is printed, as docker does.
    let id = d.ok(&[
        "network",
        "create",
        "--subnet",
        "10.210.0.0/24",
        "--gateway",
        "10.210.0.254",
        "--label",
        "team=a",
        "n1",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    d.ok(&["network", "create", "n2"]);
    // Docker's pre-defined networks are there, and theirs to keep.
    let taken = d.fails(&["network", "create", "-d", "null", "none"]);
    assert!(
        taken.contains("network with name none already exists"),
        "{taken}"
    );
    let kept = d.fails(&["network", "rm", "host"]);
    assert!(
        kept.contains("host is a pre-defined network and cannot be removed"),
        "{kept}"
    );

    // ls: docker's columns, 12-char ids, sorted by name.
    let ls = d.ok(&["network", "ls"]);
    let ls = lines(&ls);
    assert_eq!(ls[0], "NETWORK ID     NAME      DRIVER    SCOPE");
    assert!(ls[1].contains("   bridge    bridge    local"), "{ls:?}");
    assert!(ls[2].contains("   host      host      local"), "{ls:?}");
    assert_eq!(ls[3], format!("{}   n1        bridge    local", &id[..12]));
    assert!(ls[4].contains("   n2        bridge    local"), "{ls:?}");
    assert!(ls[5].contains("   none      null      local"), "{ls:?}");
    assert_eq!(
        d.ok(&["network", "ls", "-q", "-f", "name=n1"]).trim(),
        &id[..12]
    );
    let row = json(
        d.ok(&["network", "ls", "--format", "json", "-f", "label=team=a"])
            .trim(),
    );
    assert_eq!(row["Name"], "n1");
    assert_eq!(row["Driver"], "bridge");
    assert_eq!(
        d.ok(&["network", "ls", "--format", "{{.Name}}"]),
        "bridge\nhost\nn1\nn2\nnone\n"
    );

    // inspect: a JSON array of Docker-shaped networks.
    let inspected = json(&d.ok(&["network", "inspect", "n1"]));
    let n1 = &inspected[0];
    assert_eq!(n1["Id"], id.as_str());
    assert_eq!(n1["IPAM"]["Config"][0]["Subnet"], "10.210.0.0/24");
    assert_eq!(n1["IPAM"]["Config"][0]["Gateway"], "10.210.0.254");
    assert_eq!(n1["Labels"]["team"], "a");
    let n2 = json(&d.ok(&["network", "inspect", "n2"]));
    let subnet = n2[0]["IPAM"]["Config"][0]["Subnet"].as_str().unwrap_or("");
    assert!(subnet.starts_with("10.211."), "default pool used: {subnet}");

    // Errors as docker prints them.
    let err = d.fails(&["network", "create", "n1"]);
    assert_eq!(
        err.trim(),
        "Error response from daemon: network with name n1 already exists"
    );
    let err = d.fails(&["network", "create", "-d", "warp", "x"]);
    assert!(
        err.starts_with("Error response from daemon: invalid driver"),
        "{err}"
    );
    let err = d.fails(&["network", "inspect", "ghost"]);
    assert!(err.contains("network ghost not found"), "{err}");

    // Sandboxes: made, addressed, entered with `sandbox exec`.
    d.ok(&[
        "sandbox",
        "create",
        "s1",
        "--network",
        "n1",
        "--ip",
        "10.210.0.10",
        "--alias",
        "web",
        "-p",
        "18080:80",
        "-p",
        "53/udp",
    ]);
    d.ok(&["sandbox", "create", "s2", "--network", "n1"]);
    let inside = d.ok(&["sandbox", "exec", "s1", "--", "cat", "/proc/net/fib_trie"]);
    assert!(
        inside.contains("10.210.0.10"),
        "s1's namespace has its address:\n{inside}"
    );
    // Real traffic, sandbox to sandbox, through `sandbox exec`.
    let s2 = json(&d.ok(&["sandbox", "inspect", "s2"]));
    let s2_netns = s2[0]["NetNs"].as_str().unwrap_or("").to_string();
    let s1_netns = json(&d.ok(&["sandbox", "inspect", "s1"]))[0]["NetNs"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let s2_ip = s2[0]["Endpoints"][0]["IPv4Address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .unwrap_or("")
        .to_string();
    let listener = listen_in(&s2_netns);
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let got = receive(listener);
    d.ok(&[
        "sandbox",
        "exec",
        "s1",
        "--",
        "bash",
        "-c",
        &send_script(&s2_ip, port, "hello"),
    ]);
    assert_eq!(
        got.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
        Some("hello\n"),
        "s1 reaches s2 over TCP"
    );

    let err = d.fails(&["network", "rm", "n1"]);
    // Both users are named (in endpoint-id order).
    assert!(err.contains("network n1 has active endpoints ("), "{err}");
    assert!(
        err.contains("sandbox s1") && err.contains("sandbox s2"),
        "{err}"
    );
    let err = d.fails(&["sandbox", "create", "s3", "--netns", "/nonexistent/ns"]);
    assert!(err.contains("/nonexistent/ns"), "{err}");

    // Restart: SIGTERM exits 0 and leaves the data plane; the state comes back.
    let status = d.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "signal {:?}\n{}",
        status.signal(),
        d.log()
    );
    assert!(!d.socket().exists(), "socket removed at shutdown");
    assert!(
        has_netns_in(&d.dir.path().join("run")),
        "sandbox namespaces stay up"
    );
    // Traffic flows while the daemon is down.
    let listener = listen_in(&s2_netns);
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let got = receive(listener);
    let sent = run_in(&s1_netns, &send_script(&s2_ip, port, "down"));
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(
        got.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
        Some("down\n")
    );
    d.start();
    let names = d.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(names, "bridge\nhost\nn1\nn2\nnone\n");
    let s1 = json(&d.ok(&["sandbox", "inspect", "s1"]));
    assert_eq!(s1[0]["Endpoints"][0]["IPv4Address"], "10.210.0.10/24");
    assert_eq!(s1[0]["Endpoints"][0]["Aliases"], serde_json::json!(["web"]));
    let ports = &s1[0]["Endpoints"][0]["Ports"];
    assert_eq!(
        ports[0]["HostPort"], 18080,
        "published ports survive: {ports}"
    );
    assert_eq!(ports[0]["ContainerPort"], 80);
    assert_eq!(ports[1]["Proto"], "udp");
    assert!(
        ports[1]["HostPort"].as_u64().unwrap_or(0) > 0,
        "ephemeral port chosen: {ports}"
    );
    let inside = d.ok(&["sandbox", "exec", "s1", "--", "cat", "/proc/net/fib_trie"]);
    assert!(
        inside.contains("10.210.0.10"),
        "address survived the restart"
    );
    let listener = listen_in(&s2_netns);
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let got = receive(listener);
    d.ok(&[
        "sandbox",
        "exec",
        "s1",
        "--",
        "bash",
        "-c",
        &send_script(&s2_ip, port, "again"),
    ]);
    assert_eq!(
        got.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
        Some("again\n")
    );

    // Disconnect, connect with --ip, remove everything.
    d.ok(&["network", "disconnect", "n1", "s2"]);
    d.ok(&["network", "connect", "--ip", "10.210.0.20", "n1", "s2"]);
    let n1 = json(&d.ok(&["network", "inspect", "n1"]));
    let addrs: Vec<&str> = n1[0]["Containers"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|c| c["IPv4Address"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(addrs.contains(&"10.210.0.20/24"), "{addrs:?}");
    // A namespace handed over by path is used, and kept when the sandbox goes.
    let ext = Netns::create(d.dir.path(), "ext-ns").unwrap_or_else(|e| panic!("ext netns: {e}"));
    let ext_path = ext.path().display().to_string();
    d.ok(&[
        "sandbox",
        "create",
        "ext",
        "--netns",
        &ext_path,
        "--network",
        "n1",
        "--ip",
        "10.210.0.30",
    ]);
    let inside = d.ok(&["sandbox", "exec", "ext", "--", "cat", "/proc/net/fib_trie"]);
    assert!(inside.contains("10.210.0.30"), "{inside}");
    assert_eq!(d.ok(&["sandbox", "rm", "ext"]), "ext\n");
    assert!(
        Netns::open(ext.path()).is_ok(),
        "a given namespace is not Plexus's to delete"
    );
    let _ = Netns::delete(d.dir.path(), "ext-ns");

    // An orphan namespace in the daemon's netns dir (a crash between making it and recording
    // the sandbox) is removed at start.
    let netns_dir = d.dir.path().join("run").join("netns");
    Netns::create(&netns_dir, "orphan").unwrap_or_else(|e| panic!("orphan netns: {e}"));
    assert_eq!(d.stop().code(), Some(0));
    d.start();
    assert!(
        !netns_dir.join("orphan").exists(),
        "orphan namespace removed at start"
    );
    assert!(netns_dir.join("s1").exists(), "recorded namespaces kept");

    assert_eq!(d.ok(&["sandbox", "rm", "s1", "s2"]), "s1\ns2\n");
    assert!(
        !has_netns_in(&d.dir.path().join("run")),
        "owned namespaces removed"
    );
    assert_eq!(d.ok(&["network", "rm", "n1"]), "n1\n");
    let pruned = d.ok(&["network", "prune", "-f"]);
    assert_eq!(pruned, "Deleted Networks:\nn2\n");
    assert_eq!(
        d.ok(&["network", "ls", "--format", "{{.Name}}"]),
        "bridge\nhost\nnone\n"
    );

    // The socket is 0660; after a crash its stale file is replaced at start.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.socket())
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o660, "socket mode {mode:o}");
    d.kill9();
    assert!(d.socket().exists(), "a killed daemon leaves its socket");
    d.start();
    assert_eq!(
        d.ok(&["network", "ls", "--format", "{{.Name}}"]),
        "bridge\nhost\nnone\n"
    );
    let status = d.stop();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn bad_daemon_flags_fail_clearly() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let run = |extra: &[&str]| -> (Option<i32>, String) {
        let out = Command::new(plexusd_bin())
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .args(extra)
            .env("PLEXUS_DOCKER_PLUGIN_SOCKET", "none")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running plexusd: {e}"));
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--default-address-pool", "base=10.0.0.0/8,size=4"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--default-address-pool"), "{err}");
    let (code, err) = run(&["-H", "tcp://0.0.0.0:2375"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unix:///"), "{err}");
    let (code, err) = run(&["--store", "bogus://x"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("bogus://x"), "{err}");
    let (code, err) = run(&["--reconcile-interval", "5 parsecs"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--reconcile-interval"), "{err}");
}

#[test]
fn docker_cli_against_plexusd() {
    let docker = docker_cli();
    let mut d = Daemon::new(&[]);
    let config = d.dir.path().join("docker-config");
    let run = |args: &[&str]| -> Output {
        Command::new(&docker)
            .env("DOCKER_CONFIG", &config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT")
            .arg("-H")
            .arg(d.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running docker {args:?}: {e}"))
    };
    let ok = |args: &[&str]| -> String {
        let out = run(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let id = ok(&[
        "network",
        "create",
        "--subnet",
        "10.212.0.0/24",
        "--label",
        "k=v",
        "dn",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let ls = ok(&["network", "ls"]);
    assert!(ls.starts_with("NETWORK ID"), "{ls}");
    assert!(ls.contains(&format!("{}   dn ", &id.trim()[..12])), "{ls}");
    assert_eq!(
        ok(&["network", "ls", "-q", "--filter", "name=dn"]).trim(),
        &id.trim()[..12]
    );
    let inspected = json(&ok(&["network", "inspect", "dn"]));
    assert_eq!(inspected[0]["IPAM"]["Config"][0]["Subnet"], "10.212.0.0/24");
    assert_eq!(inspected[0]["Labels"]["k"], "v");
    assert_eq!(
        ok(&["network", "inspect", "-f", "{{.Driver}} {{.Scope}}", "dn"]).trim(),
        "bridge local"
    );
    let kept = run(&["network", "rm", "none"]);
    assert!(
        String::from_utf8_lossy(&kept.stderr).contains("none is a pre-defined network"),
        "{}",
        String::from_utf8_lossy(&kept.stderr)
    );
    let dup = run(&["network", "create", "dn"]);
    assert!(!dup.status.success());
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&dup.stderr)
    );
    // A Plexus sandbox stands in for a container.
    d.ok(&["sandbox", "create", "box"]);
    ok(&["network", "connect", "--ip", "10.212.0.7", "dn", "box"]);
    let inspected = json(&ok(&["network", "inspect", "dn"]));
    let containers = inspected[0]["Containers"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let c = containers.values().next().cloned().unwrap_or_default();
    assert_eq!(c["Name"], "box");
    assert_eq!(c["IPv4Address"], "10.212.0.7/24");
    let busy = run(&["network", "rm", "dn"]);
    assert!(String::from_utf8_lossy(&busy.stderr).contains("sandbox box"));
    ok(&["network", "disconnect", "dn", "box"]);
    d.ok(&["sandbox", "rm", "box"]);
    ok(&["network", "create", "dn2"]);
    let pruned = ok(&["network", "prune", "-f"]);
    assert!(pruned.contains("dn2"), "{pruned}");
    assert!(pruned.contains("dn"), "{pruned}");
    assert_eq!(
        ok(&["network", "ls", "--format", "{{.Name}}"]).trim(),
        "bridge\nhost\nnone"
    );
    ok(&["network", "create", "dn"]);
    assert_eq!(ok(&["network", "rm", "dn"]).trim(), "dn");
    assert!(!ok(&["network", "ls"]).contains(" dn "));
    assert_eq!(d.stop().code(), Some(0));
}

/// Docker's default network follows dockerd's flags: `--bridge none` makes none; a start
/// with `--bridge NAME --bip CIDR` makes `bridge` there, sandboxes join it through the CLI,
/// it cannot be removed, and it survives a restart. A bad flag stops the daemon with an error
/// naming it.
#[test]
fn default_bridge_network_follows_the_bridge_and_bip_flags() {
    let mut d = Daemon::new(&["--bridge", "none"]);
    assert_eq!(
        d.ok(&["network", "ls", "--format", "{{.Name}}"]),
        "host\nnone\n"
    );
    assert_eq!(d.stop().code(), Some(0));
    let base = d.args.len() - 2;
    d.start_with(base, &["--bridge", "plxe2e0", "--bip", "10.213.0.1/24"]);
    assert_eq!(
        d.ok(&["network", "ls", "--format", "{{.Name}}"]),
        "bridge\nhost\nnone\n"
    );
    let bridge = json(&d.ok(&["network", "inspect", "bridge"]));
    assert_eq!(bridge[0]["Driver"], "bridge");
    assert_eq!(bridge[0]["IPAM"]["Config"][0]["Subnet"], "10.213.0.0/24");
    assert_eq!(bridge[0]["IPAM"]["Config"][0]["Gateway"], "10.213.0.1");
    assert_eq!(
        bridge[0]["Options"]["com.docker.network.bridge.name"],
        "plxe2e0"
    );
    assert_eq!(
        bridge[0]["Options"]["com.docker.network.bridge.default_bridge"],
        "true"
    );
    d.ok(&["sandbox", "create", "s1", "--network", "bridge"]);
    d.ok(&["sandbox", "create", "s2", "--network", "bridge"]);
    let s1 = json(&d.ok(&["sandbox", "inspect", "s1"]));
    assert_eq!(s1[0]["Endpoints"][0]["IPv4Address"], "10.213.0.2/24");
    s2_reaches_s1(&d, "hello");
    let kept = d.fails(&["network", "rm", "bridge"]);
    assert!(
        kept.contains("bridge is a pre-defined network and cannot be removed"),
        "{kept}"
    );
    assert_eq!(d.stop().code(), Some(0));
    d.start();
    let s1 = json(&d.ok(&["sandbox", "inspect", "s1"]));
    assert_eq!(s1[0]["Endpoints"][0]["IPv4Address"], "10.213.0.2/24");
    s2_reaches_s1(&d, "hello");
    d.ok(&["sandbox", "rm", "s1", "s2"]);
    assert_eq!(d.stop().code(), Some(0));

    // No sandbox on it any more: a new --bip remakes it at start, as dockerd does.
    d.start_with(base, &["--bridge", "plxe2e0", "--bip", "10.213.1.1/24"]);
    let bridge = json(&d.ok(&["network", "inspect", "bridge"]));
    assert_eq!(bridge[0]["IPAM"]["Config"][0]["Subnet"], "10.213.1.0/24");
    d.ok(&["sandbox", "create", "s1", "--network", "bridge"]);
    let s1 = json(&d.ok(&["sandbox", "inspect", "s1"]));
    assert_eq!(s1[0]["Endpoints"][0]["IPv4Address"], "10.213.1.2/24");
    d.ok(&["sandbox", "rm", "s1"]);
    assert_eq!(d.stop().code(), Some(0));

    // Bad flags: the daemon stops at once, naming the flag.
    for (flag, value, says) in [
        (
            "--bip",
            "10.213.0.300/24",
            "invalid --bip \"10.213.0.300/24\"",
        ),
        ("--bip", "10.213.0.0/24", "invalid --bip \"10.213.0.0/24\""),
        ("--bridge", "a-name-too-long-for-linux", "invalid --bridge"),
        (
            "--fixed-cidr",
            "10.213.0",
            "invalid --fixed-cidr \"10.213.0\"",
        ),
        (
            "--fixed-cidr-v6",
            "fd00::/129",
            "invalid --fixed-cidr-v6 \"fd00::/129\"",
        ),
    ] {
        let mut args = d.args[..base].to_vec();
        args.extend([flag.to_string(), value.to_string()]);
        let mut child = d
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("plexusd: {e}"));
        // A daemon that took the flag would serve: stop it rather than wait forever.
        let running = exit_within(&mut child, Duration::from_secs(15)).is_none();
        if running {
            let _ = child.kill();
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("plexusd: {e}"));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!running, "{flag} {value} was taken: the daemon ran\n{err}");
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {err}");
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}
