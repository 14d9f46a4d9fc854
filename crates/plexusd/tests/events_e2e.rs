//! Events end to end: the real `plexusd`, `plexus events` and docker's own `docker events`
//! (`./scripts/test` installs the docker CLI) against it, across a restart of the daemon.
//! Needs root.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{docker_cli, Daemon};

fn now() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", t.as_secs(), t.subsec_nanos())
}

fn docker(docker: &std::path::Path, d: &Daemon, args: &[&str]) -> Output {
    Command::new(docker)
        .env("DOCKER_CONFIG", d.dir.path().join("docker-config"))
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_CONTEXT")
        .arg("-H")
        .arg(d.host())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running docker {args:?}: {e}"))
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `<time> <type> <action> <id> (attrs)` → `type action id (attrs)`, checking the time's form.
fn without_time(line: &str) -> String {
    let (time, rest) = line.split_once(' ').unwrap_or(("", line));
    assert!(
        time.len() >= 30 && time.as_bytes()[10] == b'T' && time.contains('.'),
        "docker's RFC 3339 nano time: {line}"
    );
    rest.to_string()
}

#[test]
fn events_replay_across_a_restart_for_plexus_and_docker() {
    let mut d = Daemon::new(&["--bridge", "none"]);
    let since = now();
    let net = d.ok(&["network", "create", "--subnet", "10.214.0.0/24", "evn"]);
    let net = net.trim().to_string();
    let sb = d.ok(&[
        "sandbox",
        "create",
        "box",
        "--hostname",
        "box.local",
        "--dns",
        "10.0.0.53",
    ]);
    let sb = sb.trim().to_string();
    let shown = d.ok(&["sandbox", "inspect", "-f", "{{.Hostname}} {{.Dns}}", "box"]);
    assert_eq!(shown.trim(), "box.local [10.0.0.53]");
    d.ok(&["network", "connect", "evn", "box"]);
    // A restart in between: the log is in the store.
    assert_eq!(d.stop().code(), Some(0));
    d.start();
    d.ok(&["network", "disconnect", "evn", "box"]);
    // A kill -9 too: nothing committed is lost.
    d.kill9();
    d.start();
    d.ok(&["sandbox", "rm", "box"]);
    d.ok(&["network", "rm", "evn"]);
    let until = now();

    let expected = [
        format!("network create {net} (name=evn, type=bridge)"),
        format!("sandbox create {sb} (name=box)"),
        format!("network connect {net} (container={sb}, name=evn, type=bridge)"),
        format!("network disconnect {net} (container={sb}, name=evn, type=bridge)"),
        format!("sandbox destroy {sb} (name=box)"),
        format!("network destroy {net} (name=evn, type=bridge)"),
    ];
    let printed = d.ok(&["events", "--since", &since, "--until", &until]);
    let got: Vec<String> = printed.lines().map(without_time).collect();
    assert_eq!(got, expected, "plexus events");
    let only = d.ok(&[
        "events",
        "--since",
        &since,
        "--until",
        &until,
        "--filter",
        "event=connect",
    ]);
    assert_eq!(
        only.lines().map(without_time).collect::<Vec<_>>(),
        [expected[2].clone()]
    );

    // Bad input: clear errors from the daemon.
    let err = d.fails(&["events", "--since", "4102444800"]);
    assert!(
        err.contains("invalid since") && err.contains("future"),
        "{err}"
    );
    let err = d.fails(&["events", "--filter", "image=x", "--until", &until]);
    assert!(err.contains("invalid filter \"image\""), "{err}");

    let docker_bin = docker_cli();
    let out = docker(
        &docker_bin,
        &d,
        &[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "type=network",
        ],
    );
    let printed = ok(out, "docker events");
    let got: Vec<String> = printed.lines().map(without_time).collect();
    let network_only: Vec<String> = expected
        .iter()
        .filter(|l| l.starts_with("network "))
        .cloned()
        .collect();
    assert_eq!(got, network_only, "docker events");
    // Live: a stream open until a moment from now sees a network made meanwhile.
    let live_until = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + Duration::from_secs(3);
    let live_until = live_until.as_secs().to_string();
    let child = Command::new(&docker_bin)
        .env("DOCKER_CONFIG", d.dir.path().join("docker-config"))
        .env_remove("DOCKER_HOST")
        .arg("-H")
        .arg(d.host())
        .args(["events", "--until", &live_until, "--format", "{{json .}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("docker events: {e}"));
    std::thread::sleep(Duration::from_millis(500));
    let live_net = d.ok(&["network", "create", "live"]);
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("docker events: {e}"));
    let printed = ok(out, "docker events (live)");
    let lines: Vec<serde_json::Value> = printed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{printed}");
    assert_eq!(lines[0]["Type"], "network");
    assert_eq!(lines[0]["Action"], "create");
    assert_eq!(lines[0]["Actor"]["ID"], live_net.trim());
    // A since in the future is refused.
    let out = docker(&docker_bin, &d, &["events", "--since", "4102444800"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in the future"), "{err}");
    stop_with_a_stream_open(&mut d);
}

/// SIGTERM while `plexus events` streams: the daemon ends the stream and exits at once.
fn stop_with_a_stream_open(d: &mut Daemon) {
    let mut watcher = Command::new(common::plexus_bin())
        .env("PLEXUS_HOST", d.host())
        .arg("events")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("plexus events: {e}"));
    std::thread::sleep(Duration::from_millis(300));
    let began = std::time::Instant::now();
    assert_eq!(d.stop().code(), Some(0));
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "the open stream held the shutdown for {:?}",
        began.elapsed()
    );
    let status = common::exit_within(&mut watcher, Duration::from_secs(5));
    if status.is_none() {
        let _ = watcher.kill();
    }
    let _ = watcher.wait();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "plexus events ends with the stream"
    );
}
