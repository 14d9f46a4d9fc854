//! plexusd as a real dockerd's network and IPAM plugin (issue 22). The test starts Debian's
//! `dockerd` (docker.io 20.10) itself, inside the test's network namespace, with its own data
//! root, exec root, pid file and API socket under a temp dir and `--iptables=false
//! --ip6tables=false --bridge=none` (it never touches the machine's firewall or links), and
//! plexusd beside it with `--docker-plugin-socket /run/docker/plugins/plexus-test-<pid>-<n>.sock`
//! (dockerd finds plugins only in /run/docker/plugins). The image is busybox, made with
//! `docker import` from `/bin/busybox` (`busybox-static`). Needs root; `./scripts/test`
//! installs docker.io and busybox-static.
//!
//! What a user sees: containers on a `-d <plugin>` network reach each other by address, a
//! published port answers in the test's namespace, a plexusd restart under running
//! containers changes nothing and they leave cleanly after it (no link, nft element, record
//! or IPAM allocation left), `docker network ls` and `plexus network ls` list the same
//! networks, and bad input is refused with Docker's errors, nothing half-made.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plexus_testkit::process::{in_netns, ChildGuard};

mod common;

use common::{json, Daemon, Outside};

/// One dockerd at a time: each takes seconds and a few hundred MB to start.
static SERIAL: Mutex<()> = Mutex::new(());

const DOCKERD: &str = "/usr/sbin/dockerd";
const DOCKER: &str = "/usr/bin/docker";
const BUSYBOX: &str = "/bin/busybox";
const IMAGE: &str = "plexus-bb:test";

/// The plugin's socket, unique to the test, removed on drop (plexusd removes it when it
/// stops; a killed one leaves it).
struct PluginSocket {
    name: String,
    path: PathBuf,
}

impl PluginSocket {
    fn new(n: u32) -> Self {
        let name = format!("plexus-test-{}-{n}", std::process::id());
        let path = PathBuf::from(format!("/run/docker/plugins/{name}.sock"));
        PluginSocket { name, path }
    }
}

impl Drop for PluginSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A dockerd in the test's namespace; stopped with SIGTERM (it stops its containers), its
/// mounts under the temp dir undone, on drop.
struct Dockerd {
    root: PathBuf,
    socket: PathBuf,
    child: Option<ChildGuard>,
}

impl Dockerd {
    fn start(d: &Daemon) -> Dockerd {
        let root = d.dir.path().join("docker");
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("docker dir: {e}"));
        let socket = root.join("docker.sock");
        let log = std::fs::File::create(root.join("dockerd.log"))
            .unwrap_or_else(|e| panic!("dockerd log: {e}"));
        let mut cmd = Command::new(DOCKERD);
        cmd.arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--userland-proxy=false",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        in_netns(&mut cmd, d.host_ns.fd());
        let child = ChildGuard::spawn(cmd).unwrap_or_else(|e| panic!("starting dockerd: {e}"));
        let mut this = Dockerd {
            root,
            socket,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if this
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .status
                .success()
            {
                return this;
            }
            let running = this.child.as_mut().is_some_and(|c| c.is_running());
            assert!(
                running && Instant::now() < deadline,
                "dockerd did not start:\n{}",
                this.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new(DOCKER)
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running docker {args:?}: {e}"))
    }

    /// `docker ARGS`, which must succeed: its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\n--- dockerd ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 40)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `docker ARGS`, which must fail: its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            !out.status.success(),
            "docker {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The busybox image, from `/bin/busybox`.
    fn import_busybox(&self) {
        assert!(
            Path::new(BUSYBOX).exists(),
            "{BUSYBOX} is missing: apt-get install busybox-static (./scripts/test does)"
        );
        let img = self.root.join("img");
        let bin = img.join("bin");
        std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("image dir: {e}"));
        std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap_or_else(|e| panic!("busybox: {e}"));
        for tool in [
            "sh", "ping", "httpd", "sleep", "ip", "mkdir", "echo", "true", "wget", "cat",
        ] {
            std::os::unix::fs::symlink("busybox", bin.join(tool))
                .unwrap_or_else(|e| panic!("symlink {tool}: {e}"));
        }
        let tar = self.root.join("img.tar");
        let made = Command::new("tar")
            .arg("-C")
            .arg(&img)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap_or_else(|e| panic!("tar: {e}"));
        assert!(made.success(), "tar failed");
        self.ok(&["import", &tar.display().to_string(), IMAGE]);
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first (dockerd would wait for each on SIGTERM), then dockerd itself.
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.pid() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            child.kill();
        }
        // What a dockerd that could not clean up left mounted under its roots.
        let root = self.root.display().to_string();
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&root))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A command's output, run in the test's namespace.
fn in_ns(d: &Daemon, program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    in_netns(&mut cmd, d.host_ns.fd());
    cmd.output()
        .unwrap_or_else(|e| panic!("running {program} {args:?}: {e}"))
}

/// dockerd and its runtime are installed (a missing one fails the test: it must not pass
/// without having run), and dockerd's plugin directory exists.
fn require_docker() {
    for tool in [DOCKERD, DOCKER, "/usr/bin/containerd", "/usr/sbin/runc"] {
        if !Path::new(tool).exists() {
            panic!("{tool} is missing: apt-get install docker.io (./scripts/test does)");
        }
    }
    if !Path::new("/run/docker/plugins").exists() {
        std::fs::create_dir_all("/run/docker/plugins")
            .unwrap_or_else(|e| panic!("/run/docker/plugins: {e}"));
    }
}

/// The world outside the host: the host is 192.0.2.1 there, the outside 192.0.2.2 (with no
/// route to the containers' subnets).
fn outside(d: &Daemon) -> Outside {
    Outside::new(d, ("dpout", &["192.0.2.1/24"]), ("dpin", "192.0.2.2/24"))
}

/// `curl URL` from the outside: the body.
fn curl(outside: &Outside, url: &str) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "3", url]).stdin(Stdio::null());
    in_netns(&mut cmd, outside.ns.fd());
    let out = cmd.output().unwrap_or_else(|e| panic!("curl: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Setup {
    plugin: PluginSocket,
    d: Daemon,
    docker: Dockerd,
}

fn setup(n: u32) -> Setup {
    plexus_testkit::require_root();
    require_docker();
    let plugin = PluginSocket::new(n);
    let d = Daemon::new(&[
        "--bridge",
        "none",
        "--docker-plugin-socket",
        &plugin.path.display().to_string(),
    ]);
    // Published ports are tried on 127.0.0.1 in the test's namespace.
    let up = in_ns(&d, "ip", &["link", "set", "lo", "up"]);
    assert!(
        up.status.success(),
        "lo up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let docker = Dockerd::start(&d);
    docker.import_busybox();
    Setup { plugin, d, docker }
}

/// The address of container `name` on its (only) network.
fn address(docker: &Dockerd, name: &str) -> String {
    docker.ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        name,
    ])
}

/// `ping -c 2` from container `from` to `to`, until it answers (within 10 s).
fn pings(docker: &Dockerd, from: &str, to: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if docker
            .docker(&["exec", from, "ping", "-c", "2", "-W", "2", to])
            .status
            .success()
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the published port 18080 answers in the test's namespace (waiting up to 10 s for
/// the container's server).
fn published(d: &Daemon) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = in_ns(d, "curl", &["-s", "-m", "3", "http://127.0.0.1:18080/"]);
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if body.contains("hello-from-plexus") || Instant::now() > deadline {
            return body;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The Plexus network names `plexus network ls` lists.
fn plexus_networks(d: &Daemon) -> Vec<String> {
    d.ok(&["network", "ls", "--format", "{{.Name}}"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// The records of the store under `dir`, with plexusd stopped.
fn records(d: &Daemon, dir: &str) -> Vec<String> {
    d.with_store(|store| async move {
        store
            .list(dir)
            .await
            .unwrap_or_else(|e| panic!("listing {dir}: {e}"))
            .into_iter()
            .map(|p| p.key)
            .collect()
    })
}

#[test]
fn containers_on_a_plexus_network_talk_publish_and_leave_after_a_restart() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Setup {
        plugin,
        mut d,
        docker,
    } = setup(1);
    let p = plugin.name.as_str();

    // A network of the plugin's driver and IPAM: the same network in both lists.
    let id = docker.ok(&[
        "network",
        "create",
        "-d",
        p,
        "--ipam-driver",
        p,
        "--subnet",
        "10.83.0.0/24",
        "pn",
    ]);
    let listed = docker.ok(&["network", "ls", "--filter", &format!("driver={p}"), "-q"]);
    assert_eq!(listed, id[..12], "docker network ls");
    let plexus_name = format!("docker-{}", &id[..12]);
    assert!(
        plexus_networks(&d).contains(&plexus_name),
        "plexus network ls"
    );
    let inspected = json(&d.ok(&["network", "inspect", &plexus_name]));
    assert_eq!(inspected[0]["IPAM"]["Config"][0]["Subnet"], "10.83.0.0/24");
    assert_eq!(inspected[0]["IPAM"]["Config"][0]["Gateway"], "10.83.0.1");
    assert_eq!(inspected[0]["Labels"]["plexus.docker.network"], id.as_str());

    // Two containers reach each other by address; one publishes a port.
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "ca",
        "--network",
        "pn",
        IMAGE,
        "sleep",
        "600",
    ]);
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "cb",
        "--network",
        "pn",
        "-p",
        "18080:80",
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /www && echo hello-from-plexus > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    let (ip_a, ip_b) = (address(&docker, "ca"), address(&docker, "cb"));
    assert!(
        ip_a.starts_with("10.83.0.") && ip_b.starts_with("10.83.0."),
        "{ip_a} {ip_b}"
    );
    let shown = docker.ok(&["exec", "ca", "ip", "-4", "addr", "show", "eth0"]);
    assert!(shown.contains(&format!("inet {ip_a}/24")), "{shown}");
    let routes = docker.ok(&["exec", "ca", "ip", "route"]);
    assert!(
        routes.contains("default via 10.83.0.1 dev eth0"),
        "{routes}"
    );
    let gateway = docker.ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}",
        "ca",
    ]);
    assert_eq!(gateway, "10.83.0.1", "docker inspect's gateway");
    // The interface is in place before the container's process starts: its first command
    // reaches another container, with no retry.
    for _ in 0..3 {
        let first = docker.docker(&[
            "run",
            "--rm",
            "--network",
            "pn",
            IMAGE,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &ip_a,
        ]);
        assert!(
            first.status.success(),
            "a new container's first packet was lost: {}\n{}",
            String::from_utf8_lossy(&first.stdout),
            String::from_utf8_lossy(&first.stderr)
        );
    }
    assert!(
        pings(&docker, "ca", &ip_b),
        "a does not reach b:\n{}",
        d.log()
    );
    assert!(pings(&docker, "cb", &ip_a), "b does not reach a");
    // By name too: dockerd's resolver answers, Plexus's stays out of its containers.
    assert!(pings(&docker, "ca", "cb"), "a does not reach b by name");
    let sandboxes = d.ok(&["sandbox", "ls", "--format", "{{.Name}}"]);
    assert_eq!(
        sandboxes
            .lines()
            .filter(|l| l.starts_with("docker-"))
            .count(),
        2,
        "{sandboxes}"
    );

    assert_eq!(published(&d).trim(), "hello-from-plexus", "published port");

    // Egress through Plexus (masqueraded: the outside has no route back), and the published
    // port from the outside, to the host's address there.
    let outside = outside(&d);
    assert!(
        pings(&docker, "ca", "192.0.2.2"),
        "no way out:\n{}",
        d.log()
    );
    assert_eq!(
        curl(&outside, "http://192.0.2.1:18080/").trim(),
        "hello-from-plexus",
        "published port from the outside"
    );
    // Isolation: a container of another plugin network does not reach them.
    docker.ok(&[
        "network",
        "create",
        "-d",
        p,
        "--ipam-driver",
        p,
        "--subnet",
        "10.88.0.0/24",
        "pn2",
    ]);
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "cc",
        "--network",
        "pn2",
        IMAGE,
        "sleep",
        "600",
    ]);
    let isolated = docker.docker(&["exec", "cc", "ping", "-c", "2", "-W", "1", &ip_a]);
    assert!(!isolated.status.success(), "another network reaches {ip_a}");
    docker.ok(&["rm", "-f", "cc"]);
    docker.ok(&["network", "rm", "pn2"]);

    // --internal: containers reach each other, nothing else; no default route.
    docker.ok(&[
        "network",
        "create",
        "-d",
        p,
        "--ipam-driver",
        p,
        "--internal",
        "--subnet",
        "10.87.0.0/24",
        "pin",
    ]);
    for name in ["ci1", "ci2"] {
        docker.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "pin",
            IMAGE,
            "sleep",
            "600",
        ]);
    }
    let ip_i2 = address(&docker, "ci2");
    assert!(
        pings(&docker, "ci1", &ip_i2),
        "internal network: no traffic inside"
    );
    let routes = docker.ok(&["exec", "ci1", "ip", "route"]);
    assert!(!routes.contains("default"), "internal network: {routes}");
    let out = docker.docker(&["exec", "ci1", "ping", "-c", "1", "-W", "1", "192.0.2.2"]);
    assert!(
        !out.status.success(),
        "an internal network reaches the outside"
    );
    docker.ok(&["rm", "-f", "ci1", "ci2"]);
    docker.ok(&["network", "rm", "pin"]);

    // IPv6 (libnetwork turns IPv6 on for the interfaces it moves in): a container started
    // on the network, one connected to it running.
    docker.ok(&[
        "network",
        "create",
        "-d",
        p,
        "--ipam-driver",
        p,
        "--ipv6",
        "--subnet",
        "10.91.0.0/24",
        "--subnet",
        "fd00:91::/64",
        "n6",
    ]);
    docker.ok(&[
        "run",
        "-d",
        "--name",
        "cd",
        "--network",
        "n6",
        IMAGE,
        "sleep",
        "600",
    ]);
    docker.ok(&["network", "connect", "n6", "ca"]);
    let v6 = |name: &str| {
        docker.ok(&[
            "inspect",
            "-f",
            "{{(index .NetworkSettings.Networks \"n6\").GlobalIPv6Address}}",
            name,
        ])
    };
    let (v6_a, v6_d) = (v6("ca"), v6("cd"));
    assert!(
        v6_a.starts_with("fd00:91::") && v6_d.starts_with("fd00:91::"),
        "{v6_a} {v6_d}"
    );
    let shown = docker.ok(&["exec", "cd", "ip", "-6", "addr", "show", "eth0"]);
    assert!(shown.contains(&format!("inet6 {v6_d}/64")), "{shown}");
    assert!(pings(&docker, "cd", &v6_a), "no IPv6 between containers");
    docker.ok(&["network", "disconnect", "n6", "ca"]);
    docker.ok(&["rm", "-f", "cd"]);
    docker.ok(&["network", "rm", "n6"]);

    // dockerd's own IPAM: a second network, connected and disconnected on a running container.
    docker.ok(&[
        "network",
        "create",
        "-d",
        p,
        "--subnet",
        "10.89.0.0/24",
        "dn",
    ]);
    docker.ok(&["network", "connect", "dn", "ca"]);
    let both = docker.ok(&["exec", "ca", "ip", "-4", "addr"]);
    // dockerd numbers the interfaces it moves in (`eth<n>`, never reusing a number).
    assert!(
        both.lines().any(|l| l.contains("inet 10.89.0.2/24")
            && l.contains(" eth")
            && !l.ends_with(" eth0")),
        "{both}"
    );
    docker.ok(&["network", "disconnect", "dn", "ca"]);
    let one = docker.ok(&["exec", "ca", "ip", "-4", "addr"]);
    assert!(!one.contains("10.89.0."), "{one}");
    docker.ok(&["network", "rm", "dn"]);

    // plexusd restarts under running containers: traffic goes on, and they leave cleanly.
    assert!(d.stop().success(), "plexusd stop:\n{}", d.log());
    assert!(pings(&docker, "ca", &ip_b), "traffic stopped with plexusd");
    d.start();
    assert!(pings(&docker, "ca", &ip_b), "traffic after the restart");
    assert_eq!(
        published(&d).trim(),
        "hello-from-plexus",
        "published port after the restart"
    );
    // The restart's reconciliation kept what dockerd holds: the pool is still taken.
    let taken = d.fails(&["network", "create", "--subnet", "10.83.0.0/24", "clash"]);
    assert!(taken.contains("overlaps 10.83.0.0/24"), "{taken}");
    docker.ok(&["rm", "-f", "ca", "cb"]);
    assert_eq!(d.ok(&["sandbox", "ls", "-q"]), "", "sandboxes left");
    docker.ok(&["network", "rm", "pn"]);
    let left = plexus_networks(&d);
    assert!(!left.iter().any(|n| n.starts_with("docker-")), "{left:?}");
    // The pool is free again for Plexus's own networks.
    d.ok(&["network", "create", "--subnet", "10.83.0.0/24", "again"]);
    d.ok(&["network", "rm", "again"]);

    // Nothing in the kernel: no link but loopback (bridges go in the background), no nft
    // element of the containers' addresses or the published port.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let links = String::from_utf8_lossy(&in_ns(&d, "ip", &["-o", "link"]).stdout).into_owned();
        let others: Vec<&str> = links
            .lines()
            .filter(|l| !l.contains(": lo:") && !l.contains(": dpout@"))
            .collect();
        if others.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "links left: {others:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let ruleset =
        String::from_utf8_lossy(&in_ns(&d, "nft", &["list", "ruleset"]).stdout).into_owned();
    for gone in [
        "10.83.0.", "18080", "10.89.0.", "10.88.0.", "10.91.0.", "fd00:91:",
    ] {
        assert!(!ruleset.contains(gone), "nft still has {gone}:\n{ruleset}");
    }
    // Nothing in the store.
    assert!(d.stop().success(), "plexusd stop");
    assert_eq!(records(&d, "plexus/v1/docker-plugin"), Vec::<String>::new());
    assert_eq!(records(&d, "plexus/v1/sandbox"), Vec::<String>::new());
    assert_eq!(records(&d, "plexus/v1/endpoint"), Vec::<String>::new());
    assert!(
        !plugin.path.exists(),
        "plexusd removes its plugin socket when it stops"
    );
    drop(docker);
}

#[test]
fn bad_input_gives_dockers_errors_and_makes_nothing() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Setup { plugin, d, docker } = setup(2);
    let p = plugin.name.as_str();

    // An option Plexus does not know, in its namespace: refused, naming it.
    let e = docker.fails(&[
        "network",
        "create",
        "-d",
        p,
        "--ipam-driver",
        p,
        "--subnet",
        "10.84.0.0/24",
        "-o",
        "plexus.nonsense=1",
        "bad1",
    ]);
    assert!(e.contains("plexus.nonsense"), "{e}");
    // A subnet one of Plexus's own networks has: refused by Plexus's IPAM.
    d.ok(&["network", "create", "--subnet", "10.85.0.0/24", "mine"]);
    let e = docker.fails(&[
        "network",
        "create",
        "-d",
        p,
        "--ipam-driver",
        p,
        "--subnet",
        "10.85.0.0/25",
        "bad2",
    ]);
    assert!(
        e.contains("IpamDriver.RequestPool") && e.contains("overlaps 10.85.0.0/24"),
        "{e}"
    );
    // The same with dockerd's own IPAM: refused when the Plexus network is made.
    let e = docker.fails(&[
        "network",
        "create",
        "-d",
        p,
        "--subnet",
        "10.85.0.128/25",
        "bad3",
    ]);
    assert!(e.contains("overlaps 10.85.0.0/24"), "{e}");
    // Nothing half-made on either side.
    let ours = docker.ok(&["network", "ls", "--filter", &format!("driver={p}"), "-q"]);
    assert_eq!(ours, "", "docker network ls");
    let theirs = plexus_networks(&d);
    assert!(
        !theirs.iter().any(|n| n.starts_with("docker-")),
        "{theirs:?}"
    );
    // The pools dockerd was refused or gave back are free.
    d.ok(&["network", "create", "--subnet", "10.84.0.0/24", "free"]);
    drop(docker);
}
