//! The CNI side of the tests: a runtime of the test's own that runs the real `plexus-cni`
//! binary with CNI's variables and a configuration on stdin (as libcni does, spec 1.1 too),
//! and container namespaces the test makes and removes.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use plexus_sys::netns::Netns;
use serde_json::{json, Value};

use crate::common::{plexusd_bin, Daemon};

/// The plugin, next to plexusd in the target dir.
pub fn cni_bin() -> PathBuf {
    let p = plexusd_bin().with_file_name("plexus-cni");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p plexus-cni` (or `cargo test --workspace`) first",
        p.display()
    );
    p
}

/// What the plugin printed and how it exited.
#[derive(Debug)]
pub struct Answer {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Answer {
    /// stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("plexus-cni printed no JSON ({e}): {self:?}"))
    }

    /// Expects success; returns stdout's JSON (or null when empty).
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 0, "plexus-cni failed: {self:?}");
        if self.stdout.trim().is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Expects a CNI error with `code`; returns it.
    pub fn error(&self, code: u64) -> Value {
        assert_ne!(self.status, 0, "plexus-cni should have failed: {self:?}");
        let e = self.json();
        assert_eq!(e["code"], json!(code), "wrong code: {e}");
        assert!(e["cniVersion"].is_string(), "no cniVersion: {e}");
        assert!(e["msg"].is_string(), "no msg: {e}");
        e
    }
}

/// One invocation: the command, container, namespace, interface and stdin.
pub struct Call<'a> {
    pub command: &'a str,
    pub container: Option<&'a str>,
    pub netns: Option<&'a str>,
    pub ifname: Option<&'a str>,
    pub args: Option<&'a str>,
    pub extra_env: Vec<(&'a str, String)>,
}

impl<'a> Call<'a> {
    pub fn new(command: &'a str) -> Self {
        Call {
            command,
            container: None,
            netns: None,
            ifname: None,
            args: None,
            extra_env: Vec::new(),
        }
    }

    pub fn on(command: &'a str, container: &'a str, netns: &'a str, ifname: &'a str) -> Self {
        Call {
            container: Some(container),
            netns: Some(netns),
            ifname: Some(ifname),
            ..Call::new(command)
        }
    }

    /// Runs the plugin with `stdin`.
    pub fn run(&self, stdin: &[u8]) -> Answer {
        let mut cmd = Command::new(cni_bin());
        cmd.env_clear()
            .env("CNI_COMMAND", self.command)
            .env("CNI_PATH", cni_bin().parent().unwrap_or(Path::new("/")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in [
            ("CNI_CONTAINERID", self.container),
            ("CNI_NETNS", self.netns),
            ("CNI_IFNAME", self.ifname),
            ("CNI_ARGS", self.args),
        ] {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("running plexus-cni: {e}"));
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin);
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for plexus-cni: {e}"));
        Answer {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A network configuration for `network` through `d`'s socket, at `version`.
pub fn conf(d: &Daemon, version: &str, network: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": network,
        "type": "plexus-cni",
        "plexus": { "socket": d.socket().display().to_string() },
    })
}

pub fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|e| panic!("encoding: {e}"))
}

/// A container's namespace, as a runtime makes it; removed on drop.
pub struct ContainerNs {
    dir: tempfile::TempDir,
    pub name: String,
    pub ns: Option<Netns>,
}

impl ContainerNs {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ns = Netns::create(dir.path(), name)
            .unwrap_or_else(|e| panic!("making namespace {name}: {e}"));
        ContainerNs {
            dir,
            name: name.to_string(),
            ns: Some(ns),
        }
    }

    pub fn path(&self) -> String {
        self.dir.path().join(&self.name).display().to_string()
    }

    /// Removes the namespace now, as a runtime does when the container is gone.
    pub fn remove(&mut self) {
        self.ns = None;
        let _ = Netns::delete(self.dir.path(), &self.name);
    }

    /// Runs `args` inside the namespace.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.path()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("nsenter {args:?}: {e}"))
    }

    /// The names of the links in the namespace.
    pub fn links(&self) -> Vec<String> {
        let out = self.exec(&["ip", "-o", "link", "show"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
            .collect()
    }
}

impl ContainerNs {
    /// Whether only `lo` is left, within 5 s (a released interface is renamed at once and
    /// deleted by the kernel shortly after, as plexusd retires links).
    pub fn only_lo(&self) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let links = self.links();
            if links == ["lo"] {
                return true;
            }
            if std::time::Instant::now() > deadline {
                eprintln!("links left in {}: {links:?}", self.name);
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for ContainerNs {
    fn drop(&mut self) {
        self.remove();
    }
}
