//! The CLI without a daemon: usage, docker-style errors and exit codes. (The CLI against a
//! real daemon is tested in `crates/plexusd/tests/e2e.rs`; this test also makes cargo build
//! the `plexus` binary that test drives.)

use std::process::Command;

fn plexus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_plexus"))
        .args(args)
        .env_remove("PLEXUS_HOST")
        .output()
        .unwrap_or_else(|e| panic!("running plexus: {e}"))
}

#[test]
fn no_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let host = format!("unix://{}", dir.path().join("none.sock").display());
    let out = plexus(&["-H", &host, "network", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Cannot connect to the Plexus daemon at unix://"),
        "{err}"
    );
    assert!(err.contains("none.sock"), "{err}");
}

#[test]
fn usage_errors() {
    let out = plexus(&["network", "create"]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    let out = plexus(&["-H", "tcp://x", "network", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unix:///"));
    let out = plexus(&["network", "create", "--aux-address", "bad", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--aux-address"));
    let out = plexus(&["sandbox", "create", "s", "--ip", "10.0.0.2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--network"));
    let out = plexus(&["network", "connect", "--driver-opt", "bad", "n", "s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--driver-opt"));
    let out = plexus(&["events", "--format", "{{.Type}}"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format"));
    let out = plexus(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("network"));
}
