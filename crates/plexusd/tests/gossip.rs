//! The gossip control plane across real `plexusd` processes: three hosts (namespaces on an
//! underlay bridge in a namespace of the test's own) sharing a real etcd through proxies.
//! They join (`plexus cluster ls` shows three alive everywhere); a host whose key differs
//! (it was given another cluster store, so another keyring, and joins through a seed) is
//! refused, logged and counted; `plexus cluster key rotate` moves every host to the new key
//! with nothing refused; a host killed with -9 is seen dead within the configured
//! failure-detection time, and is alive again once restarted. Needs root.
//!
//! Table plumbing (the control plane to the drivers) is tested in-process in
//! `src/gossip/plane_tests.rs` and `rotate_tests.rs`.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use plexus_sys::netns::Netns;
use plexus_testkit::net::TcpProxy;
use serde_json::Value;

fn plexusd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_plexusd"))
}

fn plexus_bin() -> PathBuf {
    let p = plexusd_bin().with_file_name("plexus");
    assert!(
        p.exists(),
        "{} is missing: run `cargo test -p plexus -p plexusd` so both binaries are built",
        p.display()
    );
    p
}

/// Runs `ip ARGS` inside `ns`; panics on failure.
fn ip(ns: &Netns, args: &[&str]) {
    let status = ns
        .run(|| Command::new("ip").args(args).status())
        .unwrap_or_else(|e| panic!("entering a namespace: {e}"));
    assert!(status.is_ok_and(|s| s.success()), "ip {args:?}");
}

/// The underlay: a bridge in a namespace of the test's own.
struct Underlay {
    dir: tempfile::TempDir,
    ns: Netns,
}

impl Underlay {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ns = Netns::create(dir.path(), "underlay").unwrap_or_else(|e| panic!("netns: {e}"));
        ip(&ns, &["link", "add", "br0", "type", "bridge"]);
        ip(&ns, &["link", "set", "br0", "up"]);
        Self { dir, ns }
    }

    /// Plugs `host` in with address `10.99.0.<n>/24` on its `u0`.
    fn plug(&self, host: &Netns, n: u8) {
        let peer = format!("u{n}");
        let under = self.dir.path().join("underlay");
        ip(
            host,
            &["link", "add", "u0", "type", "veth", "peer", "name", &peer],
        );
        ip(
            host,
            &["link", "set", &peer, "netns", &under.display().to_string()],
        );
        ip(&self.ns, &["link", "set", &peer, "master", "br0", "up"]);
        ip(
            host,
            &["addr", "add", &format!("10.99.0.{n}/24"), "dev", "u0"],
        );
        ip(host, &["link", "set", "u0", "up"]);
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        let _ = Netns::delete(self.dir.path(), "underlay");
    }
}

struct Host {
    dir: tempfile::TempDir,
    ns: Netns,
    _proxy: TcpProxy,
    args: Vec<String>,
    child: Option<Child>,
}

impl Host {
    fn new(
        rt: &tokio::runtime::Runtime,
        underlay: &Underlay,
        n: u8,
        server: std::net::SocketAddr,
        prefix: &str,
        extra: &[&str],
    ) -> Host {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ns = Netns::create(dir.path(), "host-ns").unwrap_or_else(|e| panic!("netns: {e}"));
        ip(&ns, &["link", "set", "lo", "up"]);
        underlay.plug(&ns, n);
        let listener = ns
            .run(|| std::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("entering the host namespace: {e}"))
            .unwrap_or_else(|e| panic!("binding the proxy: {e}"));
        let proxy = {
            let _rt = rt.enter();
            TcpProxy::start_on(listener, server).unwrap_or_else(|e| panic!("proxy: {e}"))
        };
        let mut args: Vec<String> = vec![
            "--state-dir".into(),
            dir.path().join("state").display().to_string(),
            "--run-dir".into(),
            dir.path().join("run").display().to_string(),
            "-H".into(),
            format!("unix://{}", dir.path().join("plexus.sock").display()),
            "--bridge".into(),
            "none".into(),
            "--cluster-store".into(),
            format!("etcd://{}/{prefix}", proxy.addr()),
            "--cluster-advertise".into(),
            format!("10.99.0.{n}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Host {
            dir,
            ns,
            _proxy: proxy,
            args,
            child: None,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("plexusd.log")).unwrap_or_default()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("plexus.sock")
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("plexusd.log"))
            .unwrap_or_else(|e| panic!("log: {e}"));
        let mut cmd = Command::new(plexusd_bin());
        cmd.args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let fd = self.ns.fd().as_raw_fd();
        // SAFETY: only async-signal-safe calls (setns) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("plexusd: {e}")));
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(self.socket()).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("plexusd exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no socket in 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn plexus(&self, args: &[&str]) -> Output {
        Command::new(plexus_bin())
            .env("PLEXUS_HOST", format!("unix://{}", self.socket().display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("plexus {args:?}: {e}"))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.plexus(args);
        assert!(
            out.status.success(),
            "plexus {args:?} failed: {}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `plexus cluster ls --format json`: (address, state) of every host.
    fn members(&self) -> Vec<(String, String)> {
        self.ok(&["cluster", "ls", "--format", "json"])
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                (
                    v["Address"].as_str().unwrap_or_default().to_string(),
                    v["State"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn inspect(&self) -> Value {
        let out = self.ok(&["cluster", "inspect"]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v[0].clone()
    }

    /// A `/metrics` sample's value (0 when absent).
    fn metric(&self, sample: &str) -> f64 {
        let mut conn = std::os::unix::net::UnixStream::connect(self.socket())
            .unwrap_or_else(|e| panic!("socket: {e}"));
        conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .unwrap_or_else(|e| panic!("write: {e}"));
        let mut text = String::new();
        let _ = conn.read_to_string(&mut text);
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
        plexus_testkit::process::kill_resolver(&self.dir.path().join("run"));
        let netns = self.dir.path().join("run").join("netns");
        if let Ok(entries) = std::fs::read_dir(&netns) {
            for e in entries.flatten() {
                let _ = Netns::delete(&netns, &e.file_name().to_string_lossy());
            }
        }
        let _ = Netns::delete(self.dir.path(), "host-ns");
    }
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!("timed out waiting for {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn alive(h: &Host, n: usize) -> Result<(), String> {
    let m = h.members();
    let up = m.iter().filter(|(_, s)| s == "alive").count();
    if up == n && m.len() == n {
        Ok(())
    } else {
        Err(format!("{m:?}"))
    }
}

#[test]
fn three_hosts_join_refuse_a_foreign_key_rotate_detect_a_kill_and_rejoin() {
    plexus_testkit::require_root();
    let etcd = plexus_testkit::etcd::EtcdServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let underlay = Underlay::new();
    // Host 1 seeds nobody; host 2 joins through --cluster-join; host 3 through the hosts the
    // cluster store lists.
    let mut hosts = vec![
        Host::new(&rt, &underlay, 1, etcd.endpoint(), "cluster", &[]),
        Host::new(
            &rt,
            &underlay,
            2,
            etcd.endpoint(),
            "cluster",
            &["--cluster-join", "10.99.0.1"],
        ),
        Host::new(&rt, &underlay, 3, etcd.endpoint(), "cluster", &[]),
    ];
    for h in hosts.iter_mut() {
        h.start();
    }
    for h in &hosts {
        wait_for("three alive hosts", Duration::from_secs(30), || alive(h, 3));
    }
    let table = hosts[0].ok(&["cluster", "ls"]);
    assert!(
        table.starts_with("HOST ID") && table.contains("10.99.0.3:7946") && table.contains('*'),
        "{table}"
    );
    let keyring = hosts[0].inspect()["Keyring"].clone();
    for h in &hosts[1..] {
        assert_eq!(h.inspect()["Keyring"]["Primary"], keyring["Primary"]);
    }
    let inspect = hosts[0].ok(&["cluster", "inspect", "10.99.0.2"]);
    assert!(inspect.contains("\"10.99.0.2:7946\""), "{inspect}");
    assert!(
        !inspect.contains("\"Key\""),
        "key material must never be shown: {inspect}"
    );
    let out = hosts[0].plexus(&["cluster", "inspect", "nosuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("\"nosuch\""), "{err}");
    wait_for(
        "three alive in the metrics",
        Duration::from_secs(3),
        || match hosts[0].metric("plexus_gossip_members{state=\"alive\"}") {
            3.0 => Ok(()),
            n => Err(format!("{n}")),
        },
    );
    assert!(hosts[0].metric("plexus_gossip_messages_received_total{transport=\"udp\"}") > 0.0);

    // A host of another cluster store has another keyring: it is refused, counted, logged.
    let mut foreign = Host::new(
        &rt,
        &underlay,
        4,
        etcd.endpoint(),
        "other",
        &["--cluster-join", "10.99.0.1"],
    );
    foreign.start();
    wait_for("refused frames counted", Duration::from_secs(20), || {
        let failures = hosts[0].inspect()["Stats"]["DecryptionFailures"]
            .as_u64()
            .unwrap_or(0);
        if failures > 0 && hosts[0].metric("plexus_gossip_decryption_failures_total") > 0.0 {
            Ok(())
        } else {
            Err(format!("{failures} failures"))
        }
    });
    wait_for("the refusal logged", Duration::from_secs(5), || {
        if hosts[0].log().contains("gossip frames refused") {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    for h in &hosts {
        alive(h, 3).unwrap_or_else(|e| panic!("the foreign host got in: {e}"));
    }
    alive(&foreign, 1).unwrap_or_else(|e| panic!("the foreign host joined: {e}"));
    // And the refused host says why it is alone (after its seeds' grace, 10 s).
    wait_for(
        "the refused host's warning",
        Duration::from_secs(20),
        || {
            if foreign.log().contains("no other host answers gossip") {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    );
    foreign.kill9();

    // Rotation: every host ends on the new key, nobody refused a frame of the cluster's.
    std::thread::sleep(Duration::from_secs(2));
    let refused: Vec<u64> = hosts
        .iter()
        .map(|h| {
            h.inspect()["Stats"]["DecryptionFailures"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    let primary = hosts[1]
        .ok(&["cluster", "key", "rotate"])
        .trim()
        .to_string();
    assert_ne!(Value::from(primary.clone()), keyring["Primary"]);
    for (h, before) in hosts.iter().zip(&refused) {
        wait_for("the new key everywhere", Duration::from_secs(10), || {
            let k = h.inspect()["Keyring"].clone();
            if k["Primary"].as_str() == Some(primary.as_str())
                && k["Keys"].as_array().map(Vec::len) == Some(1)
            {
                Ok(())
            } else {
                Err(k.to_string())
            }
        });
        let after = h.inspect()["Stats"]["DecryptionFailures"]
            .as_u64()
            .unwrap_or(0);
        assert_eq!(after, *before, "frames refused during the rotation");
        alive(h, 3).unwrap_or_else(|e| panic!("a host was lost in the rotation: {e}"));
    }

    // kill -9: the others see it dead within the configured failure-detection time.
    let bound = hosts[0].inspect()["FailureDetectionMs"]
        .as_u64()
        .unwrap_or(0);
    assert!(bound > 0);
    let killed = Instant::now();
    hosts[2].kill9();
    for h in &hosts[..2] {
        let left = Duration::from_millis(bound).saturating_sub(killed.elapsed());
        wait_for("the killed host dead", left, || {
            let m = h.members();
            if m.iter().any(|(a, s)| a == "10.99.0.3:7946" && s == "dead") {
                Ok(())
            } else {
                Err(format!("{m:?}"))
            }
        });
    }
    eprintln!(
        "kill -9 seen dead after {} ms (bound {bound} ms)",
        killed.elapsed().as_millis()
    );
    // The metrics follow within a reading (every second).
    wait_for(
        "the dead host in the metrics",
        Duration::from_secs(3),
        || match hosts[0].metric("plexus_gossip_members{state=\"dead\"}") {
            1.0 => Ok(()),
            n => Err(format!("{n}")),
        },
    );

    // It comes back (a new life at the same address): alive again everywhere.
    hosts[2].start();
    for h in &hosts {
        wait_for("the restarted host alive", Duration::from_secs(30), || {
            alive(h, 3)
        });
    }
}

/// The overlay driver through real daemons: a network made on one host is attachable on
/// another, and sandboxes on the two talk over VXLAN, their peers learnt through gossip.
#[test]
fn overlay_sandboxes_on_two_hosts_talk() {
    plexus_testkit::require_root();
    let etcd = plexus_testkit::etcd::EtcdServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let underlay = Underlay::new();
    let mut hosts = vec![
        Host::new(&rt, &underlay, 1, etcd.endpoint(), "ov", &[]),
        Host::new(
            &rt,
            &underlay,
            2,
            etcd.endpoint(),
            "ov",
            &["--cluster-join", "10.99.0.1"],
        ),
    ];
    for h in hosts.iter_mut() {
        h.start();
    }
    for h in &hosts {
        wait_for("two alive hosts", Duration::from_secs(30), || alive(h, 2));
    }
    hosts[0].ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.251.0.0/24",
        "--attachable",
        "ov",
    ]);
    // Listed on the other host too (global scope).
    assert!(hosts[1].ok(&["network", "ls"]).contains("ov"));
    hosts[0].ok(&["sandbox", "create", "a", "--network", "ov"]);
    hosts[1].ok(&["sandbox", "create", "b", "--network", "ov"]);
    let inspect: Value = serde_json::from_str(&hosts[0].ok(&["sandbox", "inspect", "a"]))
        .unwrap_or_else(|e| panic!("inspect: {e}"));
    let a_ip = inspect[0]["Endpoints"][0]["IPv4Address"]
        .as_str()
        .unwrap_or_default()
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(a_ip.starts_with("10.251.0."), "{inspect}");
    let a_ns = Netns::open(&hosts[0].dir.path().join("run/netns/a"))
        .unwrap_or_else(|e| panic!("a's namespace: {e}"));
    let listener = a_ns
        .run(|| std::net::TcpListener::bind("0.0.0.0:7777"))
        .unwrap_or_else(|e| panic!("setns: {e}"))
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok((mut s, _)) = listener.accept() {
            let mut got = String::new();
            let _ = std::io::Read::read_to_string(&mut s, &mut got);
            let _ = tx.send(got);
        }
    });
    let b_ns = hosts[1].dir.path().join("run/netns/b");
    wait_for(
        "b reaching a over the overlay",
        Duration::from_secs(20),
        || {
            let out = Command::new("nsenter")
                .arg(format!("--net={}", b_ns.display()))
                .args([
                    "timeout",
                    "3",
                    "bash",
                    "-c",
                    &format!("echo across >/dev/tcp/{a_ip}/7777"),
                ])
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned());
            }
            match rx.recv_timeout(Duration::from_secs(3)) {
                Ok(m) if m.trim() == "across" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    );
}
