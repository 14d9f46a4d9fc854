//! Several real `plexusd` processes, each in a host namespace of its own with its own local
//! state, sharing one real etcd (or ZooKeeper) as their cluster store, or as their `--store`.
//! Each makes local networks and sandboxes with traffic between them; all restart; each keeps
//! every endpoint and address of its own and none frees another's. Needs root.
//!
//! The servers listen on this namespace's loopback; each host reaches them through a proxy
//! whose listener was bound inside the host's namespace.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use plexus_sys::netns::Netns;
use plexus_testkit::net::TcpProxy;

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

/// One host: a namespace, a state dir, a proxy to the shared server, and its daemon.
struct Host {
    dir: tempfile::TempDir,
    ns: Netns,
    proxy: TcpProxy,
    args: Vec<String>,
    child: Option<Child>,
}

impl Host {
    /// A host whose daemon reaches `server` through a proxy; `store_args` gets the proxy's
    /// address and returns the store flags.
    fn new(
        rt: &tokio::runtime::Runtime,
        server: std::net::SocketAddr,
        store_args: impl Fn(std::net::SocketAddr) -> Vec<String>,
    ) -> Host {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ns = Netns::create(dir.path(), "host-ns").unwrap_or_else(|e| panic!("netns: {e}"));
        let listener = ns
            .run(|| {
                // Loopback starts down in a new namespace.
                let up = Command::new("ip")
                    .args(["link", "set", "lo", "up"])
                    .status();
                assert!(up.is_ok_and(|s| s.success()), "lo up");
                std::net::TcpListener::bind("127.0.0.1:0")
            })
            .unwrap_or_else(|e| panic!("entering the host namespace: {e}"))
            .unwrap_or_else(|e| panic!("binding the proxy in the host namespace: {e}"));
        let proxy = {
            let _rt = rt.enter();
            TcpProxy::start_on(listener, server).unwrap_or_else(|e| panic!("proxy: {e}"))
        };
        let mut args = vec![
            "--state-dir".to_string(),
            dir.path().join("state").display().to_string(),
            "--run-dir".to_string(),
            dir.path().join("run").display().to_string(),
            "-H".to_string(),
            format!("unix://{}", dir.path().join("plexus.sock").display()),
            "--bridge".to_string(),
            "none".to_string(),
        ];
        args.extend(store_args(proxy.addr()));
        Host {
            dir,
            ns,
            proxy,
            args,
            child: None,
        }
    }

    /// Gives the host's loopback `ip` (a `--cluster-advertise` address must be the host's).
    fn add_address(&self, ip: &str) {
        let added = self
            .ns
            .run(|| {
                Command::new("ip")
                    .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
                    .status()
            })
            .unwrap_or_else(|e| panic!("entering the host namespace: {e}"));
        assert!(added.is_ok_and(|s| s.success()), "ip addr add {ip}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("plexusd.log")).unwrap_or_default()
    }

    fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(plexusd_bin());
        cmd.args(args)
            .env("RUST_LOG", "info")
            // Not dockerd's plugin: tests run many daemons at once.
            .env("PLEXUS_DOCKER_PLUGIN_SOCKET", "none")
            .stdin(Stdio::null());
        plexus_testkit::process::in_netns(&mut cmd, self.ns.fd());
        cmd
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("plexusd.log"))
            .unwrap_or_else(|e| panic!("log: {e}"));
        let child = self
            .command(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting plexusd: {e}"));
        self.child = Some(child);
        let socket = self.dir.path().join("plexus.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("plexusd exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "plexusd did not listen within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("plexusd ignored SIGTERM:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Runs plexusd with `extra` arguments to completion (a start that must fail).
    fn run_to_exit(&self, extra: &[&str]) -> Output {
        let mut args = self.args[..8].to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = self
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting plexusd: {e}"));
        let deadline = Instant::now() + Duration::from_secs(40);
        while !matches!(child.try_wait(), Ok(Some(_))) {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("plexusd {extra:?} kept running; it should have refused to start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("wait: {e}"))
    }

    fn plexus(&self, args: &[&str]) -> Output {
        Command::new(plexus_bin())
            .env(
                "PLEXUS_HOST",
                format!("unix://{}", self.dir.path().join("plexus.sock").display()),
            )
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

    /// The sandbox's IPv4 addresses, from `plexus sandbox inspect`.
    fn addresses(&self, sandbox: &str) -> Vec<String> {
        let out = self.ok(&["sandbox", "inspect", sandbox]);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect JSON: {e}: {out}"));
        let mut addrs: Vec<String> = Vec::new();
        collect(&v, "IPv4Address", &mut addrs);
        addrs.retain(|a| !a.is_empty());
        addrs
    }

    /// `from` sends a line over TCP to sandbox `to` at its first IPv4 address; panics unless
    /// it arrives.
    fn reach(&self, from: &str, to: &str) {
        let out = self.ok(&["sandbox", "inspect", to]);
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect JSON: {e}: {out}"));
        let netns = v[0]["NetNs"].as_str().unwrap_or_default().to_string();
        let ip = self.addresses(to)[0]
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let listener = Netns::open(std::path::Path::new(&netns))
            .and_then(|ns| ns.run(|| std::net::TcpListener::bind("0.0.0.0:0")))
            .unwrap_or_else(|e| panic!("entering {netns}: {e}"))
            .unwrap_or_else(|e| panic!("listening in {netns}: {e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
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
        let script = format!("echo hello-{to} >/dev/tcp/{ip}/{port}");
        self.ok(&["sandbox", "exec", from, "--", "bash", "-c", &script]);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
            Some(format!("hello-{to}\n").as_str()),
            "{from} reaches {to} at {ip}:{port}"
        );
    }
}

/// Every string value under `key`, anywhere in `v`.
fn collect(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_string());
                    }
                }
                collect(x, key, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect(x, key, out)),
        _ => {}
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        plexus_testkit::process::kill_resolver(&self.dir.path().join("run"));
        let _ = Netns::delete(self.dir.path(), "host-ns");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// `hosts` daemons sharing `server` as their cluster store (`url` of the proxy's address):
/// each makes the same local network (same name, same subnet: local spaces are per host)
/// and two sandboxes talking over TCP, then all restart and keep everything.
fn hosts_share_a_cluster_store(
    server: std::net::SocketAddr,
    url: impl Fn(std::net::SocketAddr) -> String,
    hosts: usize,
) {
    plexus_testkit::require_root();
    let rt = runtime();
    // The test's own view of the cluster store, to see the hosts' records.
    let direct = rt
        .block_on(plexus_kv::open(&url(server), Default::default()))
        .unwrap_or_else(|e| panic!("opening the cluster store: {e}"));
    let hosts_in_store = || {
        rt.block_on(direct.list("plexus/v1/global/node"))
            .unwrap_or_else(|e| panic!("listing hosts: {e}"))
            .len()
    };
    let mut all: Vec<Host> = (0..hosts)
        .map(|i| {
            let h = Host::new(&rt, server, |addr| {
                vec![
                    "--cluster-store".into(),
                    url(addr),
                    "--cluster-advertise".into(),
                    format!("192.0.2.{}:7946", i + 1),
                    "--cluster-store-opt".into(),
                    "discovery.heartbeat=1".into(),
                    "--cluster-store-opt".into(),
                    "discovery.ttl=3".into(),
                ]
            });
            h.add_address(&format!("192.0.2.{}", i + 1));
            h
        })
        .collect();
    for h in all.iter_mut() {
        h.start();
    }
    let mut before = Vec::new();
    for h in &all {
        let info = h.ok(&["info"]);
        assert!(
            info.contains("Cluster Store: ") && info.contains("(ok)"),
            "{info}"
        );
        h.ok(&["network", "create", "--subnet", "10.77.0.0/24", "local"]);
        h.ok(&[
            "sandbox",
            "create",
            "a",
            "--network",
            "local",
            "--ip",
            "10.77.0.2",
        ]);
        h.ok(&["sandbox", "create", "b", "--network", "local"]);
        h.reach("a", "b");
        let ls = h.ok(&["network", "ls", "--format", "{{.Name}}"]);
        // Only this host's local network (the others' are not in its view).
        assert_eq!(
            ls.lines().filter(|l| *l == "local").count(),
            1,
            "network ls: {ls}"
        );
        before.push((h.addresses("a"), h.addresses("b")));
    }
    assert_eq!(hosts_in_store(), hosts, "every host announces itself");
    for h in all.iter_mut() {
        h.stop();
    }
    for h in all.iter_mut() {
        h.start();
    }
    // A host that stops refreshing its record is forgotten once the record's TTL is over;
    // the others' records stay (each refreshes every second).
    if let Some(mut c) = all[0].child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while hosts_in_store() != hosts - 1 {
        assert!(
            Instant::now() < deadline,
            "a dead host's record outlived its TTL: {} records",
            hosts_in_store()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(hosts_in_store(), hosts - 1, "live hosts keep their records");
    all[0].start();
    for (h, (a, b)) in all.iter().zip(&before) {
        assert_eq!(&h.addresses("a"), a, "{}", h.log());
        assert_eq!(&h.addresses("b"), b, "{}", h.log());
        h.reach("b", "a");
        // Neither address was freed: a new sandbox gets a third one.
        h.ok(&["sandbox", "create", "c", "--network", "local"]);
        let c = h.addresses("c");
        assert!(!a.contains(&c[0]) && !b.contains(&c[0]), "{c:?} reused");
    }
}

#[test]
fn three_hosts_share_an_etcd_cluster_store() {
    plexus_testkit::require_root();
    let etcd = plexus_testkit::etcd::EtcdServer::start();
    hosts_share_a_cluster_store(etcd.endpoint(), |a| format!("etcd://{a}/cluster"), 3);
}

#[test]
fn two_hosts_share_a_zookeeper_cluster_store() {
    plexus_testkit::require_root();
    let zk = plexus_testkit::zookeeper::ZkServer::start();
    hosts_share_a_cluster_store(
        zk.endpoint(),
        |a| plexus_testkit::zookeeper::url_for(a, "cluster"),
        2,
    );
}

/// Two daemons given the same `--store etcd://…` (not a cluster store): each sees only its
/// own records, so neither reconciles the other's endpoints away nor frees their addresses.
#[test]
fn two_hosts_sharing_one_store_keep_their_own() {
    plexus_testkit::require_root();
    let etcd = plexus_testkit::etcd::EtcdServer::start();
    let rt = runtime();
    let mut all: Vec<Host> = (0..2)
        .map(|_| {
            Host::new(&rt, etcd.endpoint(), |a| {
                vec!["--store".into(), format!("etcd://{a}/shared")]
            })
        })
        .collect();
    for h in all.iter_mut() {
        h.start();
    }
    let mut before = Vec::new();
    for h in &all {
        // The same name and subnet on both: each host's records are its own.
        h.ok(&["network", "create", "--subnet", "10.88.0.0/24", "n"]);
        h.ok(&["sandbox", "create", "s1", "--network", "n"]);
        h.ok(&["sandbox", "create", "s2", "--network", "n"]);
        h.reach("s1", "s2");
        before.push((h.addresses("s1"), h.addresses("s2")));
    }
    // Restart one at a time: each start reconciles while the other's records are there.
    for h in all.iter_mut() {
        h.stop();
        h.start();
    }
    for (h, (s1, s2)) in all.iter().zip(&before) {
        assert_eq!(&h.addresses("s1"), s1, "{}", h.log());
        assert_eq!(&h.addresses("s2"), s2, "{}", h.log());
        h.reach("s2", "s1");
        h.ok(&["sandbox", "create", "s3", "--network", "n"]);
        let s3 = h.addresses("s3");
        assert!(
            !s1.contains(&s3[0]) && !s2.contains(&s3[0]),
            "{s3:?} reused"
        );
    }
}

/// While the cluster store is away, local networks keep working and `plexus info` says so;
/// when it is back, so is the status. A cluster store that does not answer at start, or is
/// not shareable, and a malformed advertise address stop the daemon with a message naming
/// the flag.
#[test]
fn cluster_store_away_and_bad_flags() {
    plexus_testkit::require_root();
    let etcd = plexus_testkit::etcd::EtcdServer::start();
    let rt = runtime();
    let mut h = Host::new(&rt, etcd.endpoint(), |a| {
        vec!["--cluster-store".into(), format!("etcd://{a}/cluster")]
    });
    h.start();
    h.ok(&["network", "create", "--subnet", "10.66.0.0/24", "n"]);
    h.proxy.cut();
    let info = h.ok(&["info"]);
    assert!(info.contains("unavailable"), "{info}");
    let ls = h.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(ls.lines().any(|l| l == "n"), "{ls}");
    h.ok(&["network", "create", "--subnet", "10.66.1.0/24", "m"]);
    h.ok(&["sandbox", "create", "a", "--network", "m"]);
    h.ok(&["sandbox", "rm", "a"]);
    h.ok(&["network", "rm", "m"]);
    h.proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = h.ok(&["info"]);
        if info.contains("(ok)") {
            break;
        }
        assert!(Instant::now() < deadline, "still: {info}");
        std::thread::sleep(Duration::from_millis(200));
    }
    h.stop();

    // Nothing listens on this port.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("etcd://{dead}/cluster");
    let out = h.run_to_exit(&["--cluster-store", &url]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without its cluster store");
    assert!(
        err.contains("--cluster-store") && err.contains(&dead.to_string()),
        "{err}"
    );

    let redb = format!("redb://{}/x.db", h.dir.path().display());
    let out = h.run_to_exit(&["--cluster-store", &redb]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--cluster-store"),
        "{err}"
    );

    let out = h.run_to_exit(&[
        "--cluster-store",
        &format!("etcd://{}/cluster", h.proxy.addr()),
        "--cluster-store-opt",
        "discovery.ttl=nope",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("discovery.ttl"),
        "{err}"
    );

    // Well formed, but not an address of this host.
    for bad in ["eth0", "192.0.2.1:x", "192.0.2.99"] {
        let out = h.run_to_exit(&[
            "--cluster-store",
            &format!("etcd://{}/cluster", h.proxy.addr()),
            "--cluster-advertise",
            bad,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("--cluster-advertise"),
            "{bad}: {err}"
        );
    }
    let out = h.run_to_exit(&[
        "--cluster-store",
        &format!("etcd://{}/cluster", h.proxy.addr()),
        "--cluster-join",
        "192.0.2.5",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--cluster-join"),
        "{err}"
    );
}
