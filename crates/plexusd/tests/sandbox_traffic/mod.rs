//! Traffic between sandboxes and commands in their namespaces, as the end-to-end tests check
//! them: a listener inside a sandbox's namespace, the script a sandbox runs to send to it,
//! and `bash` run in a namespace without the daemon.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use plexus_sys::netns::Netns;

use crate::common::{json, Daemon};

/// Listens on a TCP port inside the namespace at `netns`; returns the listener (it stays in
/// that namespace wherever it is used).
pub fn listen_in(netns: &str) -> std::net::TcpListener {
    Netns::open(Path::new(netns))
        .and_then(|ns| ns.run(|| std::net::TcpListener::bind("0.0.0.0:0")))
        .unwrap_or_else(|e| panic!("entering {netns}: {e}"))
        .unwrap_or_else(|e| panic!("listening in {netns}: {e}"))
}

/// Accepts one connection within 10 s and returns what it sent.
pub fn receive(listener: std::net::TcpListener) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut text = String::new();
            let _ = conn.read_to_string(&mut text);
            let _ = tx.send(text);
        }
    });
    rx
}

/// `bash -c 'echo MESSAGE >/dev/tcp/IP/PORT'`, as a sandbox would run it.
pub fn send_script(ip: &str, port: u16, message: &str) -> String {
    format!("echo {message} >/dev/tcp/{ip}/{port}")
}

/// Runs `bash -c script` inside the namespace at `netns` without the daemon.
pub fn run_in(netns: &str, script: &str) -> Output {
    let ns = Netns::open(Path::new(netns)).unwrap_or_else(|e| panic!("opening {netns}: {e}"));
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script]);
    plexus_testkit::process::in_netns(&mut cmd, ns.fd());
    cmd.output()
        .unwrap_or_else(|e| panic!("bash in {netns}: {e}"))
}

/// `s2` sends `message` over TCP to `s1` (at 10.213.0.2), which receives it.
pub fn s2_reaches_s1(d: &Daemon, message: &str) {
    let s1 = json(&d.ok(&["sandbox", "inspect", "s1"]));
    let listener = listen_in(s1[0]["NetNs"].as_str().unwrap_or(""));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let got = receive(listener);
    d.ok(&[
        "sandbox",
        "exec",
        "s2",
        "--",
        "bash",
        "-c",
        &send_script("10.213.0.2", port, message),
    ]);
    assert_eq!(
        got.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
        Some(format!("{message}\n").as_str()),
        "s2 reaches s1 over TCP on the default bridge"
    );
}
