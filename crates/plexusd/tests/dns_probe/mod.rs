//! The embedded DNS as the end-to-end tests probe it: `bash` and `dig` inside a sandbox's
//! namespace against 127.0.0.11, and an upstream dnsmasq in an "outside" namespace.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use plexus_sys::netns::Netns;

use crate::common::Daemon;

/// `bash -c script` inside the namespace at `netns`.
pub fn run_in(netns: &Path, script: &str) -> Output {
    let ns = Netns::open(netns).unwrap_or_else(|e| panic!("opening {}: {e}", netns.display()));
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script]);
    plexus_testkit::process::in_netns(&mut cmd, ns.fd());
    cmd.output()
        .unwrap_or_else(|e| panic!("bash in {}: {e}", netns.display()))
}

pub fn ok_in(netns: &Path, script: &str) -> String {
    let out = run_in(netns, script);
    assert!(
        out.status.success(),
        "{script} in {}: {}{}",
        netns.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig` inside a sandbox against the embedded DNS: its whole answer.
pub fn dig(d: &Daemon, sandbox: &str, args: &str) -> String {
    let ns = sandbox_ns(d, sandbox);
    let out = run_in(&ns, &format!("dig +tries=1 +time=3 @127.0.0.11 {args}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn status(answer: &str) -> String {
    answer
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("NO ANSWER")
        .to_string()
}

pub fn sandbox_ns(d: &Daemon, sandbox: &str) -> PathBuf {
    d.dir.path().join("run").join("netns").join(sandbox)
}

/// An upstream DNS server (dnsmasq) in its own "outside" namespace, joined to the test's
/// host namespace by a veth pair: 198.51.100.2 answers, 198.51.100.3 is silent.
pub struct Upstream {
    dir: tempfile::TempDir,
    child: Child,
}

pub const UPSTREAM: &str = "198.51.100.2";
pub const DEAD_UPSTREAM: &str = "198.51.100.3";

impl Upstream {
    pub fn start(d: &Daemon) -> Upstream {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let outside = Netns::create(dir.path(), "outside")
            .unwrap_or_else(|e| panic!("making the outside namespace: {e}"));
        let host = d.dir.path().join("host-ns");
        ok_in(
            &host,
            &format!(
                "ip link add up0 type veth peer name up1 netns {out} && \
                 ip addr add 198.51.100.1/24 dev up0 && ip link set up0 up",
                out = outside.path().display()
            ),
        );
        ok_in(
            outside.path(),
            "ip link set lo up && ip addr add 198.51.100.2/24 dev up1 && \
             ip addr add 198.51.100.3/24 dev up1 && ip link set up1 up && \
             nft add table ip t && nft add chain ip t in '{ type filter hook input priority 0; }' && \
             nft add rule ip t in ip daddr 198.51.100.3 drop",
        );
        let log = dir.path().join("dnsmasq.log");
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--listen-address=198.51.100.2",
            "--port=53",
            "--local-ttl=60",
            "--address=/example.test/192.0.2.7",
            // Everything else does not exist (rather than REFUSED for want of upstreams).
            "--address=/#/",
            "--log-queries",
            "--pid-file=",
        ])
        .arg(format!("--log-facility={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        plexus_testkit::process::in_netns(&mut cmd, outside.fd());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting dnsmasq: {e}"));
        let up = Upstream { dir, child };
        // Ready when it answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok_in(
            &host,
            "dig +short +tries=1 +time=1 @198.51.100.2 ready.example.test || true",
        )
        .contains("192.0.2.7")
        {
            assert!(Instant::now() < deadline, "dnsmasq did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        up
    }

    /// How many queries for `name` the upstream has seen.
    pub fn queries_for(&self, name: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains(&format!("query[A] {name} ")))
            .count()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Netns::delete(self.dir.path(), "outside");
    }
}
