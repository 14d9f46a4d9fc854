//! The embedded DNS across hosts: three real `plexusd` on an underlay bridge with a real
//! etcd, an overlay network with one sandbox per host. From every host each sandbox's name,
//! aliases and hostname answer with its address, and every host answers alike; a sandbox
//! removed on one host stops answering on the others within seconds; a host killed with -9
//! stops answering on the others within the failure-detection time, its own sandbox still
//! answers the others' names meanwhile, and its names answer everywhere again once its
//! daemon is back; another overlay network's names never answer. Needs root and dig.

// Hosts and their sandboxes go by number.
#![allow(clippy::needless_range_loop)]

mod multihost;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use multihost::{wait_for, Cluster, ClusterStore, Host};

/// `dig` from sandbox `sandbox` on `host` against the embedded DNS: the reply's status
/// (`None`: no reply) and the data of its answer's records, sorted (several addresses come
/// shuffled).
fn ask(host: &Host, sandbox: &str, args: &[&str]) -> (Option<String>, Vec<String>) {
    let mut cmd = vec!["dig", "+tries=1", "+time=1", "@127.0.0.11"];
    cmd.extend_from_slice(args);
    let out = host.in_sandbox(sandbox, &cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .map(str::to_string);
    let mut records: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect();
    records.sort();
    (status, records)
}

/// The data of the records `args` gets.
fn dig(host: &Host, sandbox: &str, args: &[&str]) -> Vec<String> {
    ask(host, sandbox, args).1
}

/// Waits until `name` answers `want` (sorted) from `sandbox` on `host`.
fn wait_answer(host: &Host, sandbox: &str, name: &str, want: &[String], within: Duration) {
    wait_for(
        &format!("{name} from {sandbox} on host {}", host.n),
        within,
        || {
            let (status, got) = ask(host, sandbox, &[name]);
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?} ({status:?}), want {want:?}"))
            }
        },
    );
}

/// Waits until `name` gets a reply without an address from `sandbox` on `host`; returns
/// when the query that first got one was sent.
fn wait_gone(host: &Host, sandbox: &str, name: &str, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let asked = Instant::now();
        let (status, got) = ask(host, sandbox, &[name]);
        if status.is_some() && got.is_empty() {
            return asked;
        }
        assert!(
            Instant::now() < deadline,
            "{name} still answers {got:?} ({status:?}) from {sandbox} on host {} after {within:?}",
            host.n
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts `name` gets a reply without an address from `sandbox` on `host`.
fn assert_none(host: &Host, sandbox: &str, name: &str) {
    let (status, got) = ask(host, sandbox, &[name]);
    assert!(
        status.is_some() && got.is_empty(),
        "{name} from {sandbox} on host {}: {got:?} ({status:?})",
        host.n
    );
}

/// Asks `name` from `sandbox` on `host` over and over in a thread, keeping the answers
/// that were not `want`.
struct Asker {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Asker {
    fn start(host: &Host, sandbox: &str, name: &str, want: &str) -> Asker {
        let ns = host.sandbox_ns(sandbox);
        let (name, want) = (name.to_string(), want.to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut asked, mut wrong) = (0, Vec::new());
            while !stopped.load(Ordering::SeqCst) {
                let out = std::process::Command::new("nsenter")
                    .arg(format!("--net={}", ns.display()))
                    .args(["dig", "+short", "+tries=1", "+time=1", "@127.0.0.11", &name])
                    .output()
                    .unwrap_or_else(|e| panic!("nsenter dig: {e}"));
                let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
                asked += 1;
                if got != want {
                    wrong.push(got);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (asked, wrong)
        });
        Asker { stop, thread }
    }

    /// Stops; how many were asked, and the wrong answers.
    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .unwrap_or_else(|_| panic!("the asking thread panicked"))
    }
}

/// Every name of `names` as `sandbox` on `host` hears it.
fn answers(host: &Host, sandbox: &str, names: &[&str]) -> BTreeMap<String, Vec<String>> {
    names
        .iter()
        .map(|n| (n.to_string(), dig(host, sandbox, &[n])))
        .collect()
}

#[test]
fn names_cross_hosts_go_with_their_host_and_come_back() {
    plexus_testkit::require_root();
    let mut c = Cluster::start(3, ClusterStore::etcd());
    let h = &c.hosts;
    for (name, subnet) in [("blue", "10.253.0.0/24"), ("red", "10.254.0.0/24")] {
        h[0].create_overlay(name, subnet);
    }
    // One blue sandbox per host: web1 and web3 share the alias `front`, web3 has `back` too,
    // web2 a hostname; host 2 also has `temp2` (alias `temp`), host 1 a red sandbox and
    // host 3 another, `secret`. All set ndots: a one-label name that is not theirs gets an
    // empty answer at once (as under Docker) instead of waiting for the host's servers,
    // which the hosts' namespaces do not reach.
    let sandboxes: [(usize, &[&str]); 6] = [
        (0, &["web1", "--network", "blue", "--alias", "front"]),
        (1, &["web2", "--hostname", "api2", "--network", "blue"]),
        (1, &["temp2", "--network", "blue", "--alias", "temp"]),
        (
            2,
            &[
                "web3",
                "--network",
                "blue",
                "--alias",
                "front",
                "--alias",
                "back",
            ],
        ),
        (0, &["red1", "--network", "red"]),
        (2, &["secret", "--network", "red"]),
    ];
    for (host, args) in sandboxes {
        let mut cmd = vec!["sandbox", "create", "--dns-option", "ndots:1"];
        cmd.extend_from_slice(args);
        h[host].ok(&cmd);
    }
    let ip: Vec<String> = (0..3)
        .map(|i| h[i].sandbox_ip(&format!("web{}", i + 1), None))
        .collect();
    let temp_ip = h[1].sandbox_ip("temp2", None);
    let secret_ip = h[2].sandbox_ip("secret", None);
    let mut front = vec![ip[0].clone(), ip[2].clone()];
    front.sort();
    let expected: Vec<(&str, Vec<String>)> = vec![
        ("web1", vec![ip[0].clone()]),
        ("web2", vec![ip[1].clone()]),
        ("api2", vec![ip[1].clone()]),
        ("web3", vec![ip[2].clone()]),
        ("back", vec![ip[2].clone()]),
        ("web3.blue", vec![ip[2].clone()]),
        ("API2.Blue", vec![ip[1].clone()]),
        ("front", front.clone()),
        ("temp", vec![temp_ip.clone()]),
    ];
    let names: Vec<&str> = expected.iter().map(|(n, _)| *n).collect();

    // From every host, every name and alias answers its sandbox's address (the local ones
    // and the remote ones), and PTR the sandbox's name.
    for i in 0..3 {
        let me = format!("web{}", i + 1);
        for (name, want) in &expected {
            wait_answer(&h[i], &me, name, want, Duration::from_secs(20));
        }
        for (j, addr) in ip.iter().enumerate() {
            assert_eq!(
                dig(&h[i], &me, &["-x", addr]),
                [format!("web{}.blue.", j + 1)],
                "PTR of web{} from host {}",
                j + 1,
                i + 1
            );
        }
        // Another network's names do not answer, though they do cross hosts on it.
        assert_none(&h[i], &me, "secret");
    }
    wait_answer(
        &h[0],
        "red1",
        "secret",
        &[secret_ip],
        Duration::from_secs(20),
    );
    assert_none(&h[0], "red1", "web2");
    // Alike on every host.
    let seen: Vec<_> = (0..3)
        .map(|i| answers(&h[i], &format!("web{}", i + 1), &names))
        .collect();
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);

    // A sandbox removed on host 2: gone on hosts 1 and 3 within a few seconds.
    let removed = Instant::now();
    h[1].ok(&["sandbox", "rm", "temp2"]);
    for i in [0, 2] {
        let me = format!("web{}", i + 1);
        let gone = wait_gone(&h[i], &me, "temp", Duration::from_secs(5));
        eprintln!(
            "temp2 removed on host 2: gone on host {} after {:?}",
            i + 1,
            gone.saturating_duration_since(removed)
        );
        assert_none(&h[i], &me, "temp2");
    }

    // Host 3's daemon killed: hosts 1 and 2 stop answering its names within the
    // failure-detection time; its own sandbox still answers theirs (the resolver runs on).
    let bound = Duration::from_millis(
        h[0].inspect()["FailureDetectionMs"]
            .as_u64()
            .unwrap_or_default(),
    );
    assert!(!bound.is_zero());
    let killed = Instant::now();
    c.hosts[2].kill9();
    let h = &c.hosts;
    for i in 0..2 {
        let me = format!("web{}", i + 1);
        let left = bound.saturating_sub(killed.elapsed()) + Duration::from_secs(1);
        let gone = wait_gone(&h[i], &me, "web3", left);
        eprintln!(
            "host 3 killed: web3 gone on host {} after {:?} (failure detection {bound:?})",
            i + 1,
            gone.duration_since(killed)
        );
        assert!(
            gone.duration_since(killed) <= bound,
            "web3 answered on host {} for {:?}, more than the failure-detection time {bound:?}",
            i + 1,
            gone.duration_since(killed)
        );
        assert_none(&h[i], &me, "back");
        assert_eq!(dig(&h[i], &me, &["front"]), [ip[0].clone()]);
    }
    assert_eq!(dig(&h[2], "web3", &["web1"]), [ip[0].clone()]);
    assert_eq!(dig(&h[2], "web3", &["api2"]), [ip[1].clone()]);

    // Back: host 3's sandbox answers the others' names throughout its daemon's restart
    // (asked over and over from a thread meanwhile), and its own names answer again
    // everywhere, alike.
    let asker = Asker::start(&c.hosts[2], "web3", "web1", &ip[0]);
    c.hosts[2].start();
    let h = &c.hosts;
    let after: Vec<(&str, Vec<String>)> = expected
        .iter()
        .filter(|(n, _)| *n != "temp")
        .cloned()
        .collect();
    for i in 0..3 {
        let me = format!("web{}", i + 1);
        for (name, want) in &after {
            wait_answer(&h[i], &me, name, want, Duration::from_secs(30));
        }
    }
    let (asked, wrong) = asker.stop();
    assert!(
        wrong.is_empty() && asked > 10,
        "web1 from web3 on host 3 while its daemon restarted: {} of {asked} answers wrong: {wrong:?}",
        wrong.len()
    );
    let names: Vec<&str> = after.iter().map(|(n, _)| *n).collect();
    let seen: Vec<_> = (0..3)
        .map(|i| answers(&h[i], &format!("web{}", i + 1), &names))
        .collect();
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
    assert!(
        seen[0].values().all(|v| !v.is_empty()),
        "every name answers: {:?}",
        seen[0]
    );
}
