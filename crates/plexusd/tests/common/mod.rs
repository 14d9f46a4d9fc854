//! The harness of the end-to-end tests: the real `plexusd` in a network namespace the test
//! makes, with temp state and run dirs, driven by the real `plexus` CLI.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use plexus_sys::netns::Netns;

/// The child's exit status once it exits, or `None` if it still runs after `within`.
pub fn exit_within(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A daemon and everything it made; dropping it kills the daemon and unpins namespaces.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub host_ns: Netns,
    pub child: Option<Child>,
    pub args: Vec<String>,
    /// Environment variables plexusd is started with (besides `RUST_LOG`).
    pub env: Vec<(String, String)>,
}

pub fn plexusd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_plexusd"))
}

pub fn plexus_bin() -> PathBuf {
    let p = plexusd_bin().with_file_name("plexus");
    assert!(
        p.exists(),
        "{} is missing: run `cargo test -p plexus -p plexusd` (or --workspace) so both binaries are built",
        p.display()
    );
    p
}

impl Daemon {
    pub fn new(extra: &[&str]) -> Self {
        Self::with_env(extra, &[])
    }

    /// [`Daemon::new`] with environment variables for plexusd.
    pub fn with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut d = Self::unstarted_with_env(extra, env);
        d.start();
        d
    }

    /// The directories, namespace and arguments of a daemon, not started yet: to prepare
    /// its namespace first, or to run it with [`Daemon::command`] and watch it fail.
    pub fn unstarted(extra: &[&str]) -> Self {
        Self::unstarted_with_env(extra, &[])
    }

    fn unstarted_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        plexus_testkit::require_root();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let host_ns = Netns::create(dir.path(), "host-ns")
            .unwrap_or_else(|e| panic!("making the test's host namespace: {e}"));
        let mut args = vec![
            "--state-dir".to_string(),
            dir.path().join("state").display().to_string(),
            "--run-dir".to_string(),
            dir.path().join("run").display().to_string(),
            "-H".to_string(),
            format!("unix://{}", dir.path().join("plexus.sock").display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Daemon {
            dir,
            host_ns,
            child: None,
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("plexus.sock")
    }

    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// plexusd with `args`, to run inside the test's host namespace.
    pub fn command(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(plexusd_bin());
        cmd.args(args)
            .env("RUST_LOG", "info")
            // Not dockerd's plugin: tests run many daemons at once.
            .env("PLEXUS_DOCKER_PLUGIN_SOCKET", "none")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        plexus_testkit::process::in_netns(&mut cmd, self.host_ns.fd());
        cmd
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("plexusd.log"))
            .unwrap_or_else(|e| panic!("log file: {e}"));
        let mut cmd = self.command(&self.args);
        cmd.stdout(Stdio::null()).stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting plexusd: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("plexusd exited early ({status}):\n{}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "plexusd did not listen within 20 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("plexusd.log")).unwrap_or_default()
    }

    /// SIGKILL: the socket file stays behind, as after a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap_or_else(|| panic!("not running"));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        match exit_within(&mut child, Duration::from_secs(15)) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("plexusd ignored SIGTERM for 15 s:\n{}", self.log());
            }
        }
    }

    /// Starts again with the first `keep` arguments and then `extra`.
    pub fn start_with(&mut self, keep: usize, extra: &[&str]) {
        self.args.truncate(keep);
        self.args.extend(extra.iter().map(|s| s.to_string()));
        self.start();
    }

    pub fn plexus(&self, args: &[&str]) -> Output {
        Command::new(plexus_bin())
            .env("PLEXUS_HOST", self.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running plexus {args:?}: {e}"))
    }

    /// Runs the CLI inside the test's host namespace (the daemon's), as `plexus system
    /// reset` must be.
    pub fn plexus_in_ns(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(plexus_bin());
        cmd.env("PLEXUS_HOST", self.host())
            .args(args)
            .stdin(Stdio::null());
        plexus_testkit::process::in_netns(&mut cmd, self.host_ns.fd());
        cmd.output()
            .unwrap_or_else(|e| panic!("running plexus {args:?}: {e}"))
    }

    /// Runs the CLI and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.plexus(args);
        assert!(
            out.status.success(),
            "plexus {args:?} failed ({}): {}\n--- daemon log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI and expects exit code 1; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.plexus(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "plexus {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Daemon {
    /// The embedded DNS resolver's process id, if it runs.
    pub fn resolver_pid(&self) -> Option<i32> {
        let pid_file = self.dir.path().join("run").join("dns").join("resolver.pid");
        std::fs::read_to_string(pid_file).ok()?.trim().parse().ok()
    }

    /// Kills the resolver plexusd started (it outlives plexusd by design).
    pub fn kill_resolver(&self) {
        plexus_testkit::process::kill_resolver(&self.dir.path().join("run"));
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.kill_resolver();
        let netns = self.dir.path().join("run").join("netns");
        if let Ok(entries) = std::fs::read_dir(&netns) {
            for e in entries.flatten() {
                let _ = Netns::delete(&netns, &e.file_name().to_string_lossy());
            }
        }
        let _ = Netns::delete(self.dir.path(), "host-ns");
    }
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Docker's CLI; fails the test if none is installed (`./scripts/test` installs Debian's
/// `docker.io`): a test that drives it must not pass without it.
pub fn docker_cli() -> PathBuf {
    ["/usr/bin/docker", "/usr/local/bin/docker"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|p| p.join("docker"))
                    .find(|p| p.exists())
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: needs the docker CLI: apt-get install docker.io (./scripts/test does)",
                plexus_testkit::skip::test_name()
            )
        })
}

/// Runs `ip ARGS` inside `ns` (the test's own set-up); fails the test if it fails.
pub fn ip_in(ns: &Netns, args: &[&str]) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace outside the daemon's, plugged into it by a veth pair: `daemon_end` in the
/// daemon's namespace holding `daemon_addrs`, `outside_end` here holding `outside_addr`
/// (CIDRs). Deleted when dropped.
pub struct Outside {
    dir: tempfile::TempDir,
    /// The namespace.
    pub ns: Netns,
    /// Its path, for `nsenter --net=`.
    pub path: String,
}

impl Outside {
    pub fn new(
        d: &Daemon,
        (daemon_end, daemon_addrs): (&str, &[&str]),
        (outside_end, outside_addr): (&str, &str),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ns = Netns::create(dir.path(), "outside").unwrap_or_else(|e| panic!("netns: {e}"));
        let path = ns.path().display().to_string();
        let host = &d.host_ns;
        ip_in(
            host,
            &[
                "link",
                "add",
                daemon_end,
                "type",
                "veth",
                "peer",
                "name",
                outside_end,
            ],
        );
        ip_in(host, &["link", "set", outside_end, "netns", &path]);
        for addr in daemon_addrs {
            ip_in(host, &["addr", "add", addr, "dev", daemon_end]);
        }
        ip_in(host, &["link", "set", daemon_end, "up"]);
        ip_in(&ns, &["addr", "add", outside_addr, "dev", outside_end]);
        ip_in(&ns, &["link", "set", outside_end, "up"]);
        ip_in(&ns, &["link", "set", "lo", "up"]);
        Self { dir, ns, path }
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Netns::delete(self.dir.path(), "outside");
    }
}

impl Daemon {
    /// Runs `f` on the daemon's own store, opened from the test (plexusd stopped: redb lets
    /// one process at a time have it), and closes it again before returning.
    pub fn with_store<T, F>(&self, f: impl FnOnce(std::sync::Arc<dyn plexus_kv::Store>) -> F) -> T
    where
        F: std::future::Future<Output = T>,
    {
        let url = format!(
            "redb://{}",
            self.dir.path().join("state").join("state.db").display()
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        rt.block_on(async {
            let store = plexus_kv::open(&url, plexus_kv::OpenOptions::default())
                .await
                .unwrap_or_else(|e| panic!("opening {url}: {e}"));
            let out = f(store.clone()).await;
            store
                .close()
                .await
                .unwrap_or_else(|e| panic!("closing {url}: {e}"));
            out
        })
    }
}
