//! `plexus doctor` for real (needs root): on this machine's kernel beside a running daemon,
//! on a kernel pretended too old or lacking a feature, and in a namespace with a bridge
//! planted in Plexus's default pool. Every namespace is the test's own; the machine's is
//! only read (the kernel probe works in a scratch namespace).

use std::process::{Command, Output, Stdio};

use plexus_sys::netns::Netns;
use plexus_sys::probe::{Feature, KernelFeatures};
use plexus_sys::rtnl::{BridgeSpec, Rtnl};

mod common;

use common::{json, plexus_bin, Daemon};

/// `plexus doctor ARGS` inside `ns` against the daemon at `host`, with `env`.
fn doctor(ns: &Netns, host: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(plexus_bin());
    cmd.arg("-H")
        .arg(host)
        .arg("doctor")
        .args(args)
        .env_remove("PLEXUS_KERNEL_RELEASE")
        .env_remove("PLEXUS_PROBE_MISSING")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    plexus_testkit::process::in_netns(&mut cmd, ns.fd());
    cmd.output()
        .unwrap_or_else(|e| panic!("running plexus doctor: {e}"))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of the report that starts with `status` and mentions `what`.
fn line<'a>(report: &'a str, status: &str, what: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.starts_with(status) && l.contains(what))
        .unwrap_or_else(|| panic!("no {status} line about {what:?} in:\n{report}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

#[test]
fn doctor_on_this_machine_beside_a_running_daemon() {
    let d = Daemon::new(&[]);
    let out = doctor(&d.host_ns, &d.host(), &[], &[]);
    let report = text(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.ends_with("warnings).\n") || report.ends_with("warning).\n"),
        "{report}"
    );
    line(&report, "OK", "kernel: Linux ");
    for required in [
        "network namespaces",
        "veth links",
        "bridge links",
        "nftables NAT",
    ] {
        line(&report, "OK", &format!("{required}: present, for "));
    }
    // What this kernel lacks (ipvlan, IPVS, 802.1q, ESP and WireGuard on the machine this
    // was written on) is named with what it blocks; what it has, as present.
    let kernel = runtime()
        .block_on(KernelFeatures::probe())
        .unwrap_or_else(|e| panic!("probe: {e}"));
    for (feature, blocks) in [
        (Feature::Ipvlan, "blocks the ipvlan driver"),
        (Feature::Vlan, "blocks `-o parent=IF.VLAN`"),
        (Feature::Esp, "blocks Docker-format encrypted overlays"),
        (
            Feature::Wireguard,
            "blocks kernel WireGuard for `-o encrypted`",
        ),
    ] {
        let name = feature.name();
        if kernel.has(feature) {
            line(&report, "OK", &format!("{name}: present"));
        } else {
            let l = line(&report, "WARN", &format!("{name}: missing"));
            assert!(
                l.contains(blocks) && l.contains("-> the kernel needs"),
                "{l}"
            );
        }
    }
    if kernel.has(Feature::Ipvs) {
        line(&report, "OK", "IPVS: present");
    } else {
        let l = line(&report, "OK", "IPVS: missing");
        assert!(l.contains("Plexus load-balances in nftables"), "{l}");
    }
    // The daemon's own bridge (plexus0, in 172.17.0.0/16 here) is not an overlap.
    line(&report, "OK", "no bridge or route of this host overlaps");
    line(&report, "OK", "net.ipv4.ip_forward: on");
    line(
        &report,
        "OK",
        &format!("plexusd: answers at {}", d.socket().display()),
    );
    line(&report, "OK", "store redb://");
    line(&report, "OK", "cluster store: none");

    // The same as JSON.
    let out = doctor(&d.host_ns, &d.host(), &["--format", "json"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let v = json(&text(&out));
    assert_eq!(v["can_run"], true);
    let checks = v["checks"].as_array().cloned().unwrap_or_default();
    let ipvlan = checks
        .iter()
        .find(|c| c["check"] == "feature:ipvlan")
        .unwrap_or_else(|| panic!("{v}"));
    let expected = if kernel.has(Feature::Ipvlan) {
        "ok"
    } else {
        "warn"
    };
    assert_eq!(ipvlan["status"], expected, "{ipvlan}");
    assert!(checks.iter().all(|c| c["status"] != "fail"), "{v}");
    assert!(checks
        .iter()
        .any(|c| c["check"] == "store" && c["status"] == "ok"));
}

#[test]
fn doctor_fails_a_kernel_too_old_or_lacking_a_required_feature() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let ns = Netns::create(dir.path(), "ns").unwrap_or_else(|e| panic!("netns: {e}"));
    let host = format!("unix://{}", dir.path().join("none.sock").display());
    let out = doctor(&ns, &host, &[], &[("PLEXUS_PROBE_MISSING", "veth")]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let l = line(&report, "FAIL", "veth links: missing");
    assert!(
        l.contains("plexusd will not start") && l.contains("module veth"),
        "{l}"
    );
    assert!(
        report.ends_with("Plexus cannot run on this host: 1 check failed.\n"),
        "{report}"
    );
    line(&report, "WARN", "plexusd: not running");

    let out = doctor(&ns, &host, &[], &[("PLEXUS_KERNEL_RELEASE", "5.4.0")]);
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    line(
        &report,
        "FAIL",
        "kernel: Linux 5.4.0 is older than 5.10, the oldest Plexus supports",
    );
    let out = doctor(
        &ns,
        &host,
        &[],
        &[("PLEXUS_KERNEL_RELEASE", "6.1.0-13-cloud-amd64")],
    );
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    line(
        &report,
        "OK",
        "before 6.3, nf_tables objects are deleted in the older form",
    );
    let _ = Netns::delete(dir.path(), "ns");
}

#[test]
fn doctor_warns_of_a_planted_bridge_in_plexus_s_default_pool() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let ns = Netns::create(dir.path(), "planted").unwrap_or_else(|e| panic!("netns: {e}"));
    runtime().block_on(async {
        let rtnl = Rtnl::connect(&ns)
            .await
            .unwrap_or_else(|e| panic!("rtnl: {e}"));
        for (name, ip, len) in [
            ("plantbr0", [172, 17, 0, 1], 16),
            ("farbr0", [10, 99, 0, 1], 24),
        ] {
            let spec = BridgeSpec {
                name,
                ..Default::default()
            };
            let br = rtnl
                .add_bridge(&spec, "test-planted")
                .await
                .unwrap_or_else(|e| panic!("bridge {name}: {e}"));
            rtnl.add_address(br.index, std::net::Ipv4Addr::from(ip).into(), len)
                .await
                .unwrap_or_else(|e| panic!("address of {name}: {e}"));
            rtnl.set_up(br.index)
                .await
                .unwrap_or_else(|e| panic!("up {name}: {e}"));
        }
    });
    let host = format!("unix://{}", dir.path().join("none.sock").display());
    let out = doctor(&ns, &host, &[], &[]);
    let report = text(&out);
    // A warning, not a failure: Plexus runs, its default bridge avoids the subnet.
    assert_eq!(out.status.code(), Some(0), "{report}");
    let l = line(&report, "WARN", "plantbr0");
    assert!(
        l.contains("bridge plantbr0 172.17.0.0/16 overlaps Plexus's address pool 172.17.0.0/16"),
        "{l}"
    );
    assert!(
        l.contains("--default-address-pool") && l.contains("--bip"),
        "{l}"
    );
    assert!(!report.contains("farbr0"), "{report}");
    // Against the pools plexusd would be given instead, the other bridge is in the way.
    let out = doctor(
        &ns,
        &host,
        &["--default-address-pool", "base=10.99.0.0/16,size=24"],
        &[],
    );
    let report = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}");
    line(
        &report,
        "WARN",
        "bridge farbr0 10.99.0.0/24 overlaps Plexus's address pool 10.99.0.0/16",
    );
    assert!(!report.contains("plantbr0"), "{report}");
    // Bad flags name themselves.
    let out = doctor(&ns, &host, &["--default-address-pool", "size=24"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--default-address-pool"));
    let _ = Netns::delete(dir.path(), "planted");
}
