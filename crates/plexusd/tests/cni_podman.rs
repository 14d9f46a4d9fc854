//! podman (Debian's 4.3) with `--network-backend cni` on a Plexus network through
//! plexus-cni: its configuration (`CONTAINERS_CONF`), CNI config dir, plugin dir, storage and
//! run dirs are the test's own, and its image is busybox put in with `podman import`. A
//! container gets its address from Plexus, another reaches it, `podman rm -f` releases both.
//! podman brings the container's `lo` up itself: no plugin but plexus-cni is needed.
//!
//! Needs root, podman and a static busybox (`./scripts/test` installs `podman` and
//! `busybox-static`); the plexus-cni binary next to plexusd (`cargo test --workspace`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::json;

mod cni_harness;
mod common;

use cni_harness::cni_bin;
use common::{json as parse_json, Daemon};

/// podman with the test's own configuration and directories; removes its containers and
/// image on drop.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new(socket: &Path, network: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let root = dir.path();
        for sub in ["bin", "conf", "img/bin", "root", "runroot", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).unwrap_or_else(|e| panic!("mkdir {sub}: {e}"));
        }
        std::fs::copy(cni_bin(), root.join("bin/plexus-cni"))
            .unwrap_or_else(|e| panic!("copying plexus-cni: {e}"));
        // Rootful podman asks for rlimits above what a container host may grant; the
        // defaults here are within any.
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\n\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n",
            root.join("bin").display(),
            root.join("conf").display()
        );
        std::fs::write(root.join("containers.conf"), conf).unwrap_or_else(|e| panic!("{e}"));
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [{
                "type": "plexus-cni",
                "plexus": { "socket": socket.display().to_string() },
                "capabilities": { "ips": true, "aliases": true, "portMappings": true },
            }],
        });
        std::fs::write(
            root.join("conf").join(format!("{network}.conflist")),
            conflist.to_string(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Podman { dir }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let root = self.dir.path();
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", root.join("containers.conf"))
            .arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("runroot"))
            .arg("--tmpdir")
            .arg(root.join("tmp"))
            .args(["--storage-driver", "vfs", "--network-backend", "cni"])
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("podman {args:?}: {e}"))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Imports a busybox image named `bb`.
    fn import_busybox(&self) {
        let img = self.dir.path().join("img");
        std::fs::copy(busybox(), img.join("bin/busybox")).unwrap_or_else(|e| panic!("{e}"));
        let _ = std::os::unix::fs::symlink("busybox", img.join("bin/sh"));
        let tar = self.dir.path().join("bb.tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&img)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap_or_else(|e| panic!("tar: {e}"));
        assert!(status.success(), "tar failed");
        self.ok(&["import", &tar.display().to_string(), "bb"]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-af", "-t", "0"]);
        let _ = self.run(&["rmi", "-af"]);
        // vfs mounts nothing, but a storage driver that did must not outlive the test.
        let prefix = self.dir.path().display().to_string();
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                if m.starts_with(&prefix) {
                    let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
    }
}

/// A static busybox (`busybox-static`): the image's only binary.
fn busybox() -> PathBuf {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{}: needs a static busybox: apt-get install busybox-static (./scripts/test does)",
                plexus_testkit::skip::test_name()
            )
        })
}

fn podman_installed() {
    let found = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{}: needs podman: apt-get install podman (./scripts/test does)",
        plexus_testkit::skip::test_name()
    );
}

fn sandbox_exists(d: &Daemon, name: &str) -> bool {
    d.plexus(&["sandbox", "inspect", name]).status.success()
}

fn network_containers(d: &Daemon, network: &str) -> usize {
    let v = parse_json(&d.ok(&["network", "inspect", network]));
    v[0]["Containers"].as_object().map_or(0, |m| m.len())
}

#[test]
fn podman_containers_on_a_plexus_network_through_plexus_cni() {
    podman_installed();
    let d = Daemon::new(&["--default-address-pool", "base=10.233.0.0/16,size=24"]);
    d.ok(&["network", "create", "--subnet", "10.233.1.0/24", "pnet"]);
    let podman = Podman::new(&d.socket(), "pnet");
    podman.import_busybox();
    // podman must be able to run a container at all here (no network involved).
    let probe = podman.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "bb",
        "/bin/busybox",
        "true",
    ]);
    if !probe.status.success() {
        plexus_testkit::skip(&format!(
            "podman cannot run containers on this machine: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        ));
        return;
    }
    let listed = podman.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(listed.lines().any(|l| l == "pnet plexus-cni"), "{listed}");

    let c1 = podman.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--network",
        "pnet",
        "bb",
        "/bin/busybox",
        "sleep",
        "600",
    ]);
    let ip1 = podman.ok(&[
        "inspect",
        "c1",
        "--format",
        "{{.NetworkSettings.Networks.pnet.IPAddress}}",
    ]);
    assert!(
        ip1.starts_with("10.233.1."),
        "c1's address {ip1:?} is not from Plexus's subnet"
    );
    let gw = podman.ok(&[
        "inspect",
        "c1",
        "--format",
        "{{.NetworkSettings.Networks.pnet.Gateway}}",
    ]);
    assert_eq!(gw, "10.233.1.1");
    assert!(
        sandbox_exists(&d, &format!("cni-{c1}")),
        "no Plexus sandbox for c1"
    );
    // A fixed address through the `ips` capability (`--ip`).
    podman.ok(&[
        "run",
        "-d",
        "--name",
        "c2",
        "--network",
        "pnet",
        "--ip",
        "10.233.1.50",
        "bb",
        "/bin/busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(network_containers(&d, "pnet"), 2);

    // One container reaches the other, both ways, and a fresh one reaches c1.
    let ping = |from: &str, to: &str| {
        podman
            .run(&[
                "exec",
                from,
                "/bin/busybox",
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                to,
            ])
            .status
            .success()
    };
    assert!(ping("c2", &ip1), "c2 cannot reach c1 at {ip1}");
    assert!(ping("c1", "10.233.1.50"), "c1 cannot reach c2");
    let once = podman.run(&[
        "run",
        "--rm",
        "--network",
        "pnet",
        "bb",
        "/bin/busybox",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        &ip1,
    ]);
    assert!(
        once.status.success(),
        "a --rm container cannot reach c1: {}",
        String::from_utf8_lossy(&once.stderr)
    );
    assert_eq!(
        network_containers(&d, "pnet"),
        2,
        "the --rm container was not released"
    );

    // podman rm -f releases them: no sandbox, no endpoint, the address free again.
    podman.ok(&["rm", "-f", "-t", "0", "c1", "c2"]);
    assert_eq!(network_containers(&d, "pnet"), 0);
    assert!(!sandbox_exists(&d, &format!("cni-{c1}")));
    assert_eq!(d.ok(&["sandbox", "ls", "-q"]).lines().count(), 0);
    podman.ok(&[
        "run",
        "--rm",
        "--network",
        "pnet",
        "--ip",
        "10.233.1.50",
        "bb",
        "/bin/busybox",
        "true",
    ]);
}
