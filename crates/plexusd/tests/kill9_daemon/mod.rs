//! The kill -9 loop's harness: a small seeded RNG, and the real `plexusd` (bridge driver,
//! embedded redb store) in a namespace of its own, started, killed with SIGKILL or stopped
//! with SIGTERM, and called over its API.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexus_sys::netns::Netns;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// A small seeded RNG (splitmix64): the same seed gives the same operations and kill delays.

pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> Option<T> {
        if items.is_empty() {
            None
        } else {
            Some(items[self.below(items.len() as u64) as usize].clone())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The daemon, in a namespace of its own; dropping it kills it and unpins every namespace.

pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub host_ns: Netns,
    child: Option<Child>,
}

impl Daemon {
    pub fn new() -> Self {
        plexus_testkit::require_root();
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let host_ns = Netns::create(dir.path(), "host-ns")
            .unwrap_or_else(|e| panic!("making the test's host namespace: {e}"));
        Daemon {
            dir,
            host_ns,
            child: None,
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("plexus.sock")
    }

    pub fn netns_dir(&self) -> PathBuf {
        self.dir.path().join("run").join("netns")
    }

    pub fn store_url(&self) -> String {
        format!(
            "redb://{}",
            self.dir.path().join("state").join("state.db").display()
        )
    }

    /// Starts the daemon without waiting for it.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("plexusd.log"))
            .unwrap_or_else(|e| panic!("log file: {e}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_plexusd"));
        cmd.arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .arg("--run-dir")
            .arg(self.dir.path().join("run"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(["--default-address-pool", "base=10.78.0.0/16,size=24"])
            // The default `bridge` network, outside the pools the loop draws from: sandboxes
            // join it too, but it is never deleted (it cannot be).
            .args(["--bip", "10.79.0.1/24"])
            .env("RUST_LOG", "info")
            // Not dockerd's plugin: tests run many daemons at once.
            .env("PLEXUS_DOCKER_PLUGIN_SOCKET", "none")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        plexus_testkit::process::in_netns(&mut cmd, self.host_ns.fd());
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("starting plexusd: {e}")),
        );
    }

    /// Waits until the API answers (start-up reconciliation is done by then).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = http(&self.socket(), "GET", "/_ping", None) {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("plexusd exited at start ({status}):\n{}", self.log_tail());
                }
            }
            assert!(
                Instant::now() < deadline,
                "plexusd did not answer within 20 s:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn start(&mut self) {
        self.spawn();
        self.wait_ready();
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop(&mut self) {
        let mut child = self.child.take().unwrap_or_else(|| panic!("not running"));
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                assert_eq!(
                    status.code(),
                    Some(0),
                    "plexusd after SIGTERM: {status} (signal {:?})\n{}",
                    status.signal(),
                    self.log_tail()
                );
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("plexusd ignored SIGTERM for 15 s:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("plexusd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// An API call that must answer (any status).
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (status, text) = http(&self.socket(), method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_tail()));
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// An API call that must succeed (2xx).
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, value) = self.api(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path} {} → {status}: {value}\n--- daemon log ---\n{}",
            body.map(|b| b.to_string()).unwrap_or_default(),
            self.log_tail()
        );
        value
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        plexus_testkit::process::kill_resolver(&self.dir.path().join("run"));
        if let Ok(entries) = std::fs::read_dir(self.netns_dir()) {
            for e in entries.flatten() {
                let _ = Netns::delete(&self.netns_dir(), &e.file_name().to_string_lossy());
            }
        }
        let _ = Netns::delete(self.dir.path(), "host-ns");
    }
}

/// One HTTP/1.0 request over the unix socket (the connection closes after the answer).
pub fn http(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, String)> {
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: plexus\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("truncated answer: {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head:?}")))?;
    Ok((status, rest.to_string()))
}
