//! The multi-host harness: "hosts" are network namespaces plugged into an underlay bridge in
//! a namespace of the test's own (host `n` is `10.99.0.n/24` on its `u0`), each running a
//! real `plexusd` whose cluster store (a real etcd or ZooKeeper started by the test) is
//! reached through a proxy on the host's loopback. Everything is removed on drop, also when
//! the test fails.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use plexus_sys::netns::Netns;
use plexus_testkit::net::TcpProxy;
use serde_json::Value;

/// The `plexusd` binary under test.
pub fn plexusd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_plexusd"))
}

/// The `plexus` CLI built beside it.
pub fn plexus_bin() -> PathBuf {
    let p = plexusd_bin().with_file_name("plexus");
    assert!(
        p.exists(),
        "{} is missing: run `cargo test -p plexus -p plexusd` so both binaries are built",
        p.display()
    );
    p
}

/// Runs `ip ARGS` inside `ns`; panics on failure.
pub fn ip(ns: &Netns, args: &[&str]) {
    let status = ns
        .run(|| Command::new("ip").args(args).status())
        .unwrap_or_else(|e| panic!("entering a namespace: {e}"));
    assert!(status.is_ok_and(|s| s.success()), "ip {args:?}");
}

/// Runs `nft -f -` with `script` inside `ns`; panics on failure.
pub fn nft(ns: &Netns, script: &str) {
    let out = ns
        .run(|| {
            let mut child = Command::new("nft")
                .args(["-f", "-"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(script.as_bytes())?;
            }
            child.wait_with_output()
        })
        .unwrap_or_else(|e| panic!("entering a namespace: {e}"))
        .unwrap_or_else(|e| panic!("nft: {e}"));
    assert!(
        out.status.success(),
        "nft {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until `f` succeeds, retrying every 100 ms; panics with its last error after
/// `within`.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!("timed out waiting for {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The underlay: a bridge in a namespace of the test's own.
pub struct Underlay {
    dir: tempfile::TempDir,
    /// The namespace holding the bridge `br0`.
    pub ns: Netns,
}

impl Underlay {
    /// Makes the namespace and its bridge.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ns = Netns::create(dir.path(), "underlay").unwrap_or_else(|e| panic!("netns: {e}"));
        ip(&ns, &["link", "add", "br0", "type", "bridge"]);
        ip(&ns, &["link", "set", "br0", "up"]);
        Self { dir, ns }
    }

    /// Plugs `host` in with address `10.99.0.<n>/24` on its `u0` (`u<n>` on the bridge).
    pub fn plug(&self, host: &Netns, n: u8) {
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

/// The cluster store the hosts share.
pub enum ClusterStore {
    /// A real etcd.
    Etcd(plexus_testkit::etcd::EtcdServer),
    /// A real ZooKeeper.
    Zk(plexus_testkit::zookeeper::ZkServer),
}

impl ClusterStore {
    /// Starts an etcd.
    pub fn etcd() -> Self {
        ClusterStore::Etcd(plexus_testkit::etcd::EtcdServer::start())
    }

    /// Starts a ZooKeeper.
    pub fn zookeeper() -> Self {
        ClusterStore::Zk(plexus_testkit::zookeeper::ZkServer::start())
    }

    fn endpoint(&self) -> std::net::SocketAddr {
        match self {
            ClusterStore::Etcd(s) => s.endpoint(),
            ClusterStore::Zk(s) => s.endpoint(),
        }
    }

    /// The URL a host reaches the store by through a proxy at `proxy`, under `prefix`.
    fn url(&self, proxy: std::net::SocketAddr, prefix: &str) -> String {
        match self {
            ClusterStore::Etcd(_) => format!("etcd://{proxy}/{prefix}"),
            ClusterStore::Zk(_) => plexus_testkit::zookeeper::url_for(proxy, prefix),
        }
    }
}

/// One host: a namespace on the underlay and its `plexusd`.
pub struct Host {
    /// The host's directory: state, run dir, socket, log.
    pub dir: tempfile::TempDir,
    /// The host's network namespace.
    pub ns: Netns,
    /// Its number: its underlay address is `10.99.0.<n>`.
    pub n: u8,
    /// The proxy to the cluster store (cut it to take the store away).
    pub proxy: TcpProxy,
    args: Vec<String>,
    child: Option<Child>,
}

impl Host {
    /// Makes host `n` with a proxy to `store` under `prefix`; `extra` flags go to plexusd.
    /// Not started.
    pub fn new(
        rt: &tokio::runtime::Runtime,
        underlay: &Underlay,
        n: u8,
        store: &ClusterStore,
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
            TcpProxy::start_on(listener, store.endpoint()).unwrap_or_else(|e| panic!("proxy: {e}"))
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
            store.url(proxy.addr(), prefix),
        ];
        if !extra.contains(&"--cluster-advertise") {
            args.extend(["--cluster-advertise".into(), format!("10.99.0.{n}")]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Host {
            dir,
            ns,
            n,
            proxy,
            args,
            child: None,
        }
    }

    /// The underlay address, `10.99.0.<n>`.
    pub fn addr(&self) -> String {
        format!("10.99.0.{}", self.n)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("plexusd.log")).unwrap_or_default()
    }

    /// The API socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("plexus.sock")
    }

    /// Whether the daemon runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts plexusd in the host's namespace and waits for its socket.
    pub fn start(&mut self) {
        let socket = self.socket();
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("plexusd.log"))
            .unwrap_or_else(|e| panic!("log: {e}"));
        let mut cmd = Command::new(plexusd_bin());
        cmd.args(&self.args)
            .env("RUST_LOG", "info")
            // Not dockerd's plugin: tests run many daemons at once.
            .env("PLEXUS_DOCKER_PLUGIN_SOCKET", "none")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        plexus_testkit::process::in_netns(&mut cmd, self.ns.fd());
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("plexusd: {e}")));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("plexusd exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no socket in 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs plexusd in the host's namespace expecting it to exit by itself (refusing to
    /// start) within 30 s; its status and log.
    pub fn run_to_exit(&mut self) -> Exited {
        let mut cmd = Command::new(plexusd_bin());
        cmd.args(&self.args)
            .env("PLEXUS_DOCKER_PLUGIN_SOCKET", "none")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        plexus_testkit::process::in_netns(&mut cmd, self.ns.fd());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("plexusd: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("plexusd did not exit within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("plexusd: {e}"));
        Exited {
            status: out.status,
            log: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// `kill -9` of the daemon (the resolver and the kernel state stay).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, waited for.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }

    /// Runs the CLI against this host.
    pub fn plexus(&self, args: &[&str]) -> Output {
        Command::new(plexus_bin())
            .env("PLEXUS_HOST", format!("unix://{}", self.socket().display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("plexus {args:?}: {e}"))
    }

    /// Runs the CLI; panics (with the daemon's log) unless it succeeds; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.plexus(args);
        assert!(
            out.status.success(),
            "plexus {args:?} on host {} failed: {}\n--- daemon log ---\n{}",
            self.n,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI; panics unless it fails; its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.plexus(args);
        assert!(
            !out.status.success(),
            "plexus {args:?} on host {} succeeded: {}",
            self.n,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `plexus cluster ls --format json`: (address, state) of every host.
    pub fn members(&self) -> Vec<(String, String)> {
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

    /// `plexus cluster inspect` of this host.
    pub fn inspect(&self) -> Value {
        let out = self.ok(&["cluster", "inspect"]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v[0].clone()
    }

    /// A `/metrics` sample's value (0 when absent).
    pub fn metric(&self, sample: &str) -> f64 {
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

    /// The path of sandbox `name`'s namespace.
    pub fn sandbox_ns(&self, name: &str) -> PathBuf {
        self.dir.path().join("run/netns").join(name)
    }

    /// Sandbox `name`'s first IPv4 address on network `network` (or on its first endpoint).
    pub fn sandbox_ip(&self, name: &str, network: Option<&str>) -> String {
        let out = self.ok(&["sandbox", "inspect", name]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let eps = v[0]["Endpoints"].as_array().cloned().unwrap_or_default();
        let ep = eps
            .iter()
            .find(|ep| network.is_none_or(|n| ep["Network"].as_str() == Some(n)))
            .unwrap_or_else(|| panic!("{name} has no endpoint on {network:?}: {v}"));
        ep["IPv4Address"]
            .as_str()
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// Runs `cmd` in sandbox `name`'s namespace (through `nsenter`).
    pub fn in_sandbox(&self, name: &str, cmd: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.sandbox_ns(name).display()))
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter {cmd:?}: {e}"))
    }

    /// Sends `msg` over TCP from sandbox `name` to `ip:port`, within 2 s.
    pub fn tcp_send(&self, name: &str, ip: &str, port: u16, msg: &str) -> Result<(), String> {
        let out = self.in_sandbox(
            name,
            &[
                "timeout",
                "2",
                "bash",
                "-c",
                &format!("echo {msg} >/dev/tcp/{ip}/{port}"),
            ],
        );
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{name} on host {} to {ip}:{port}: {}",
                self.n,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// One ping from sandbox `name` to `ip` (1 s timeout): whether it was answered.
    pub fn ping(&self, name: &str, ip: &str) -> bool {
        self.in_sandbox(name, &["ping", "-c", "1", "-W", "1", ip])
            .status
            .success()
    }

    /// Sandbox `name` listens on TCP `port`; each connection's text arrives on the receiver.
    pub fn listen(&self, name: &str, port: u16) -> Receiver<String> {
        let ns = Netns::open(&self.sandbox_ns(name))
            .unwrap_or_else(|e| panic!("{name}'s namespace: {e}"));
        listen_in(&ns, port)
    }

    /// The remote MAC addresses in the FDB of the VXLAN device of overlay network `net_id`
    /// on this host, with their destination (`<mac> dst <ip>`), sorted.
    pub fn overlay_fdb(&self, net_id: &str) -> Vec<String> {
        let Some(ns) = self.overlay_ns(net_id) else {
            return Vec::new();
        };
        let out = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(["bridge", "fdb", "show", "dev", "vxlan0"])
            .output()
            .unwrap_or_else(|e| panic!("bridge fdb: {e}"));
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(" dst "))
            .map(|l| {
                let mut w = l.split_whitespace();
                let mac = w.next().unwrap_or_default().to_string();
                let dst = l
                    .split(" dst ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .unwrap_or_default();
                format!("{mac} dst {dst}")
            })
            .filter(|l| !l.starts_with("00:00:00:00:00:00"))
            .collect();
        v.sort();
        v
    }

    /// The permanent neighbour entries of the VXLAN device of overlay network `net_id` on
    /// this host (`<ip> <mac>`), sorted.
    pub fn overlay_neigh(&self, net_id: &str) -> Vec<String> {
        let Some(ns) = self.overlay_ns(net_id) else {
            return Vec::new();
        };
        let out = Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(["ip", "neigh", "show", "dev", "vxlan0", "nud", "permanent"])
            .output()
            .unwrap_or_else(|e| panic!("ip neigh: {e}"));
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let ip = w.next()?;
                let mac = l.split(" lladdr ").nth(1)?.split_whitespace().next()?;
                Some(format!("{ip} {mac}"))
            })
            .collect();
        v.sort();
        v
    }

    /// Every endpoint of this host's sandboxes on network `network`: (name, IPv4, MAC).
    pub fn endpoints_on(&self, network: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let ls = self.ok(&["sandbox", "ls", "--format", "json"]);
        for line in ls.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let name = v["Name"].as_str().unwrap_or_default().to_string();
            let inspect = self.ok(&["sandbox", "inspect", &name]);
            let iv: Value =
                serde_json::from_str(&inspect).unwrap_or_else(|e| panic!("{e}: {inspect}"));
            for ep in iv[0]["Endpoints"].as_array().cloned().unwrap_or_default() {
                if ep["Network"].as_str() != Some(network) {
                    continue;
                }
                let ip = ep["IPv4Address"]
                    .as_str()
                    .unwrap_or_default()
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let mac = ep["MacAddress"].as_str().unwrap_or_default().to_string();
                out.push((name.clone(), ip, mac));
            }
        }
        out
    }

    /// The namespace of overlay network `net_id` on this host (`<run>/overlay/1-<short id>`),
    /// if it exists.
    pub fn overlay_ns(&self, net_id: &str) -> Option<PathBuf> {
        let short = net_id.get(..11).unwrap_or(net_id);
        let p = self
            .dir
            .path()
            .join("run/overlay")
            .join(format!("1-{short}"));
        p.exists().then_some(p)
    }

    /// `plexus network create -d overlay --subnet SUBNET --attachable NAME`; the network's id.
    pub fn create_overlay(&self, name: &str, subnet: &str) -> String {
        self.ok(&[
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            subnet,
            "--attachable",
            name,
        ]);
        self.network_id(name)
    }

    /// The id of network `name`.
    pub fn network_id(&self, name: &str) -> String {
        let out = self.ok(&["network", "inspect", name]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v[0]["Id"].as_str().unwrap_or_default().to_string()
    }
}

/// How a daemon that refused to start ended.
pub struct Exited {
    /// Its exit status.
    pub status: std::process::ExitStatus,
    /// What it wrote on stdout and stderr.
    pub log: String,
}

/// A TCP listener on `port` in `ns`; each connection's text arrives on the receiver.
pub fn listen_in(ns: &Netns, port: u16) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let from = listen_in_from(ns, port);
    std::thread::spawn(move || {
        while let Ok((_, text)) = from.recv() {
            if tx.send(text).is_err() {
                return;
            }
        }
    });
    rx
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill9();
        plexus_testkit::process::kill_resolver(&self.dir.path().join("run"));
        for sub in ["run/netns", "run/overlay"] {
            let dir = self.dir.path().join(sub);
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    let _ = Netns::delete(&dir, &e.file_name().to_string_lossy());
                }
            }
        }
        let _ = Netns::delete(self.dir.path(), "host-ns");
    }
}

/// Whether `h` sees exactly `n` hosts, all alive.
pub fn alive(h: &Host, n: usize) -> Result<(), String> {
    let m = h.members();
    let up = m.iter().filter(|(_, s)| s == "alive").count();
    if up == n && m.len() == n {
        Ok(())
    } else {
        Err(format!("{m:?}"))
    }
}

/// A cluster: its store, its underlay and its hosts, and the runtime of the store proxies.
pub struct Cluster {
    /// The hosts, host `i` numbered `i + 1`.
    pub hosts: Vec<Host>,
    underlay: Underlay,
    store: ClusterStore,
    // Dropped last: the proxies run on it.
    rt: tokio::runtime::Runtime,
}

impl Cluster {
    /// `n` hosts sharing `store` (host 1 seeds the others), started, all alive.
    pub fn start(n: u8, store: ClusterStore) -> Cluster {
        let mut c = Cluster::unstarted(n, store, &[]);
        for h in c.hosts.iter_mut() {
            h.start();
        }
        c.wait_alive(n as usize);
        c
    }

    /// `n` hosts sharing `store`, with `extra` flags, not started.
    pub fn unstarted(n: u8, store: ClusterStore, extra: &[&str]) -> Cluster {
        let mut c = Cluster::empty(store);
        let prefix = plexus_testkit::unique("cluster");
        c.hosts = (1..=n)
            .map(|i| {
                let mut flags: Vec<&str> = extra.to_vec();
                if i > 1 {
                    flags.extend(["--cluster-join", "10.99.0.1"]);
                }
                c.host(i, &prefix, &flags)
            })
            .collect();
        c
    }

    /// A cluster with no host yet.
    pub fn empty(store: ClusterStore) -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        Cluster {
            hosts: Vec::new(),
            underlay: Underlay::new(),
            store,
            rt,
        }
    }

    /// Makes (does not start or keep) host `n` on this cluster's underlay and store, under
    /// key prefix `prefix`, with `extra` flags. Drop it before the cluster.
    pub fn host(&self, n: u8, prefix: &str, extra: &[&str]) -> Host {
        Host::new(&self.rt, &self.underlay, n, &self.store, prefix, extra)
    }

    /// Waits until every running host sees `n` alive hosts.
    pub fn wait_alive(&self, n: usize) {
        for h in self.hosts.iter().filter(|h| h.running()) {
            wait_for("every host alive", Duration::from_secs(60), || alive(h, n));
        }
    }

    /// The underlay.
    pub fn underlay(&self) -> &Underlay {
        &self.underlay
    }
}

/// A TCP listener on `port` in `ns`; each connection's peer address and text arrive on the
/// receiver (to see what source address a connection came from).
pub fn listen_in_from(ns: &Netns, port: u16) -> Receiver<(String, String)> {
    let listener = ns
        .run(|| std::net::TcpListener::bind(("0.0.0.0", port)))
        .unwrap_or_else(|e| panic!("setns: {e}"))
        .unwrap_or_else(|e| panic!("bind {port}: {e}"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Ok((mut s, peer)) = listener.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut got = String::new();
            let _ = s.read_to_string(&mut got);
            if tx
                .send((peer.ip().to_string(), got.trim().to_string()))
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

impl Host {
    /// Sandbox `name`'s id.
    pub fn sandbox_id(&self, name: &str) -> String {
        let out = self.ok(&["sandbox", "inspect", name]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v[0]["Id"].as_str().unwrap_or_default().to_string()
    }

    /// The endpoints `plexus network inspect NETWORK` lists, as (sandbox id, endpoint name,
    /// IPv4 address without its prefix), sorted.
    pub fn network_endpoints(&self, network: &str) -> Vec<(String, String, String)> {
        let out = self.ok(&["network", "inspect", network]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let mut eps: Vec<(String, String, String)> = v[0]["Containers"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(id, c)| {
                        let ip = c["IPv4Address"].as_str().unwrap_or_default();
                        (
                            id.clone(),
                            c["Name"].as_str().unwrap_or_default().to_string(),
                            ip.split('/').next().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        eps.sort();
        eps
    }

    /// Runs the CLI inside the host's namespace (`system reset` works on the namespace it
    /// runs in), against this host's socket.
    pub fn plexus_in_ns(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.ns.path().display()))
            .arg(plexus_bin())
            .args(args)
            .env("PLEXUS_HOST", format!("unix://{}", self.socket().display()))
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("plexus {args:?} in the host's namespace: {e}"))
    }

    /// The names of the links in the host's own namespace.
    pub fn links(&self) -> Vec<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.ns.path().display()))
            .args(["ip", "-o", "link", "show"])
            .output()
            .unwrap_or_else(|e| panic!("ip link: {e}"));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }
}
