//! Services' names in the embedded DNS end to end: the real plexusd and CLI, `dig` in
//! sandboxes against 127.0.0.11. `SERVICE` answers its virtual IP (or its tasks in dnsrr
//! mode), `tasks.SERVICE` its tasks, PTR of the VIP the service; changes are seen when the
//! command returns; names are scoped to the asker's networks; the resolver keeps answering
//! while plexusd is killed and restarted. Needs root and dig.
//!
//! The daemon's upstream is a dnsmasq in an "outside" namespace that knows no name
//! (`NXDOMAIN` for all), so a forwarded query is told apart from a local answer; the client
//! sandboxes set `ndots`, so a one-label name that misses gets an empty answer instead of a
//! forward (as under Docker). Needs dnsmasq too.

mod common;
mod dns_probe;

use std::time::{Duration, Instant};

use common::{json, Daemon};
use dns_probe::{dig, status, Upstream};

/// `dig +short`: the answer's records, sorted.
fn short(d: &Daemon, sandbox: &str, args: &str) -> Vec<String> {
    let mut v: Vec<String> = dig(d, sandbox, &format!("+short {args}"))
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with(";;"))
        .collect();
    v.sort();
    v
}

/// Asserts `name` is answered here with no record: NOERROR, empty, authoritative.
fn empty(d: &Daemon, sandbox: &str, name: &str) {
    let a = dig(d, sandbox, name);
    assert_eq!(status(&a), "NOERROR", "{name}: {a}");
    assert!(a.contains("ANSWER: 0,"), "{name}: {a}");
}

/// Asserts `name` is not answered here: forwarded, and unknown upstream.
fn forwarded(d: &Daemon, sandbox: &str, name: &str) {
    let a = dig(d, sandbox, name);
    assert_eq!(status(&a), "NXDOMAIN", "{name} should be forwarded: {a}");
}

fn ip_of(d: &Daemon, sandbox: &str) -> String {
    let v = json(&d.ok(&["sandbox", "inspect", sandbox]));
    let cidr = v[0]["Endpoints"][0]["IPv4Address"]
        .as_str()
        .unwrap_or_default();
    cidr.split('/').next().unwrap_or_default().to_string()
}

fn vip_of(d: &Daemon, service: &str) -> String {
    let v = json(&d.ok(&["service", "inspect", service]));
    let cidr = v[0]["Endpoint"]["VirtualIPs"][0]["Addr"]
        .as_str()
        .unwrap_or_else(|| panic!("{service} has no VIP: {v}"));
    cidr.split('/').next().unwrap_or_default().to_string()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A daemon whose host upstream is 198.51.100.2 (an [`Upstream`] once started).
fn daemon() -> (Daemon, tempfile::TempDir) {
    let rc = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = rc.path().join("resolv.conf");
    std::fs::write(&path, "nameserver 198.51.100.2\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let path = path.display().to_string();
    (Daemon::new(&["-b", "none", "--dns-resolv-conf", &path]), rc)
}

fn client(d: &Daemon, name: &str, network: &str) {
    d.ok(&[
        "sandbox",
        "create",
        name,
        "--network",
        network,
        "--dns-option",
        "ndots:1",
    ]);
}

fn task(d: &Daemon, name: &str, network: &str, service: &str) -> String {
    d.ok(&[
        "sandbox",
        "create",
        name,
        "--network",
        network,
        "--service",
        service,
    ]);
    ip_of(d, name)
}

#[test]
fn service_names_answer_as_swarm_and_follow_each_change() {
    let (d, _rc) = daemon();
    let _up = Upstream::start(&d);
    d.ok(&["network", "create", "svcnet", "--subnet", "10.236.1.0/24"]);
    d.ok(&["network", "create", "othernet", "--subnet", "10.236.2.0/24"]);
    client(&d, "client", "svcnet");
    client(&d, "far", "othernet");

    // Created: the name answers at once; tasks. exists, empty.
    d.ok(&["service", "create", "websvc", "--network", "svcnet"]);
    let vip = vip_of(&d, "websvc");
    assert_eq!(short(&d, "client", "websvc"), std::slice::from_ref(&vip));
    empty(&d, "client", "tasks.websvc");
    empty(&d, "client", "websvc AAAA");

    // Each task is in tasks. when its creation returns.
    let mut tasks = Vec::new();
    for t in ["t1", "t2", "t3"] {
        tasks.push(task(&d, t, "svcnet", "websvc"));
        assert_eq!(short(&d, "client", "tasks.websvc"), sorted(tasks.clone()));
    }
    for name in ["websvc", "websvc.svcnet", "WebSvc.SvcNet"] {
        assert_eq!(
            short(&d, "client", name),
            std::slice::from_ref(&vip),
            "{name}"
        );
    }
    for name in ["tasks.websvc", "tasks.websvc.svcnet", "TASKS.WEBSVC"] {
        assert_eq!(short(&d, "client", name), sorted(tasks.clone()), "{name}");
    }
    // A task resolves its own service; its own name is still its own.
    assert_eq!(short(&d, "t1", "websvc"), std::slice::from_ref(&vip));
    assert_eq!(short(&d, "client", "t2"), std::slice::from_ref(&tasks[1]));
    // PTR: the VIP answers the service, a task's address its sandbox.
    assert_eq!(
        short(&d, "client", &format!("-x {vip}")),
        ["websvc.svcnet."]
    );
    assert_eq!(
        short(&d, "client", &format!("-x {}", tasks[0])),
        ["t1.svcnet."]
    );
    // Through `plexus sandbox exec`, with the sandbox's own resolv.conf.
    let out = d.ok(&[
        "sandbox", "exec", "client", "--", "dig", "+short", "+tries=1", "websvc",
    ]);
    assert_eq!(out.trim(), vip);

    // Another network's sandbox does not see it.
    assert!(short(&d, "far", "websvc").is_empty());
    forwarded(&d, "far", "tasks.websvc");
    forwarded(&d, "far", "websvc.svcnet");

    // dnsrr: no task, an empty answer (not forwarded); then its tasks, shuffled.
    d.ok(&[
        "service",
        "create",
        "rrsvc",
        "--network",
        "svcnet",
        "--endpoint-mode",
        "dnsrr",
    ]);
    empty(&d, "client", "rrsvc");
    empty(&d, "client", "rrsvc.svcnet");
    let r1 = task(&d, "r1", "svcnet", "rrsvc");
    let r2 = task(&d, "r2", "svcnet", "rrsvc");
    let both = sorted(vec![r1, r2]);
    assert_eq!(short(&d, "client", "rrsvc"), both);
    assert_eq!(short(&d, "client", "tasks.rrsvc"), both);
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..20 {
        let out = dig(&d, "client", "+short rrsvc");
        firsts.insert(out.lines().next().unwrap_or_default().to_string());
    }
    assert_eq!(firsts.len(), 2, "shuffled: {firsts:?}");

    // update vip -> dnsrr -> vip switches the answers.
    d.ok(&["service", "update", "websvc", "--endpoint-mode", "dnsrr"]);
    assert_eq!(short(&d, "client", "websvc"), sorted(tasks.clone()));
    assert!(short(&d, "client", &format!("-x {vip}")).is_empty());
    d.ok(&["service", "update", "websvc", "--endpoint-mode", "vip"]);
    let vip = vip_of(&d, "websvc");
    assert_eq!(short(&d, "client", "websvc"), std::slice::from_ref(&vip));

    // A task removed is gone when its removal returns.
    d.ok(&["sandbox", "rm", "t3"]);
    let left = sorted(tasks[..2].to_vec());
    assert_eq!(short(&d, "client", "tasks.websvc"), left);

    // Removed (its tasks detached): the names go, a miss as for any unknown name.
    d.ok(&["service", "rm", "--force", "websvc"]);
    empty(&d, "client", "websvc"); // one label, ndots set: empty, as Docker
    forwarded(&d, "client", "tasks.websvc");
    forwarded(&d, "client", "websvc.svcnet");
    assert!(short(&d, "client", &format!("-x {vip}")).is_empty());
    // The detached sandboxes keep their own names.
    assert_eq!(short(&d, "client", "t1"), std::slice::from_ref(&tasks[0]));
}

#[test]
fn service_names_answer_while_plexusd_is_killed_and_after() {
    let (mut d, _rc) = daemon();
    d.ok(&["network", "create", "svcnet", "--subnet", "10.237.1.0/24"]);
    client(&d, "client", "svcnet");
    d.ok(&["service", "create", "websvc", "--network", "svcnet"]);
    let vip = vip_of(&d, "websvc");
    let tasks = sorted(vec![
        task(&d, "t1", "svcnet", "websvc"),
        task(&d, "t2", "svcnet", "websvc"),
    ]);
    let resolver = d.resolver_pid();
    assert!(resolver.is_some(), "the resolver runs");
    let check = |d: &Daemon, when: &str| {
        assert_eq!(
            short(d, "client", "websvc"),
            std::slice::from_ref(&vip),
            "{when}"
        );
        assert_eq!(short(d, "client", "tasks.websvc"), tasks, "{when}");
    };
    check(&d, "before");
    d.kill9();
    for i in 0..5 {
        check(&d, &format!("plexusd down, {i}"));
    }
    d.start();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        check(&d, "after the restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(d.resolver_pid(), resolver, "the same resolver throughout");
    // The restarted daemon feeds it: a new task answers at once.
    let t3 = task(&d, "t3", "svcnet", "websvc");
    let mut all = tasks.clone();
    all.push(t3);
    assert_eq!(short(&d, "client", "tasks.websvc"), sorted(all.clone()));

    // A new resolver is fed everything, services included.
    d.kill_resolver();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if d.resolver_pid() != resolver
            && short(&d, "client", "tasks.websvc") == sorted(all.clone())
            && short(&d, "client", "websvc") == std::slice::from_ref(&vip)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the resolver did not come back with the services:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
