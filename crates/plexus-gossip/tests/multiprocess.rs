//! Real processes on loopback: each node is a `gossip-node` process with its own
//! 127.a.b.i address (a, b random per test, so tests run in parallel without clashes).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const WRONG: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

struct Proc {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<String>,
    addr: SocketAddr,
}

impl Proc {
    fn start(addr: SocketAddr, key: &str, join: Option<SocketAddr>) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gossip-node"));
        cmd.args([
            "--bind",
            &addr.to_string(),
            "--key",
            key,
            "--network",
            "net1",
        ])
        .args([
            "--gossip-ms",
            "100",
            "--probe-ms",
            "300",
            "--probe-timeout-ms",
            "100",
        ])
        .args([
            "--sync-ms",
            "1000",
            "--suspicion-mult",
            "3",
            "--join-retry-ms",
            "300",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if let Some(j) = join {
            cmd.args(["--join", &j.to_string()]);
        }
        let mut child = cmd.spawn().expect("spawn gossip-node");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(l) = line else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let p = Proc {
            child,
            stdin,
            rx,
            addr,
        };
        let ready =
            p.rx.recv_timeout(Duration::from_secs(20))
                .expect("node ready");
        assert!(ready.starts_with("ready"), "{ready}");
        p
    }

    fn cmd(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").expect("write command");
        self.stdin.flush().expect("flush");
        self.rx
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_default()
    }

    fn members(&mut self) -> Vec<(String, String)> {
        let r = self.cmd("members");
        r.split_whitespace()
            .skip(1)
            .filter_map(|m| {
                m.split_once('=')
                    .map(|(a, s)| (a.to_string(), s.to_string()))
            })
            .collect()
    }

    fn alive(&mut self) -> Vec<String> {
        let mut v: Vec<String> = self
            .members()
            .into_iter()
            .filter(|(_, s)| s == "alive")
            .map(|(a, _)| a)
            .collect();
        v.sort();
        v
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A /24 of loopback addresses for one test: 127.(100 + pid % 100).(counter).0/24, so tests
/// of this process never share addresses and other processes very likely do not either.
fn block() -> (u8, u8) {
    static NEXT: AtomicU8 = AtomicU8::new(1);
    let pid = std::process::id();
    let salt = (pid / 100 % 50) as u8;
    (
        100 + (pid % 100) as u8,
        salt * 5 + NEXT.fetch_add(1, Ordering::SeqCst),
    )
}

/// Not 7946 itself, in case something on the machine holds it on every address.
fn port() -> u16 {
    20_000 + (std::process::id() % 10_000) as u16
}

fn addr(b: (u8, u8), i: u8) -> SocketAddr {
    SocketAddr::from(([127, b.0, b.1, i], port()))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            eprintln!("{what}: {:?}", start.elapsed());
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for: {what}");
}

#[test]
fn twenty_processes_form_agree_detect_restart_and_catch_up() {
    let b = block();
    let n = 20u8;
    let seed = addr(b, 1);
    let mut procs: Vec<Proc> = (1..=n)
        .map(|i| Proc::start(addr(b, i), KEY, (i > 1).then_some(seed)))
        .collect();
    let all: Vec<String> = {
        let mut v: Vec<String> = (1..=n).map(|i| addr(b, i).to_string()).collect();
        v.sort();
        v
    };
    wait_until(
        "20 nodes see 20 alive members",
        Duration::from_secs(30),
        || procs.iter_mut().all(|p| p.alive() == all),
    );

    for (i, p) in procs.iter_mut().enumerate() {
        assert_eq!(p.cmd(&format!("put net1 svc k{i} v{i}")), "ok");
    }
    let expect: String = {
        let mut v: Vec<String> = (0..n).map(|i| format!("k{i}=v{i}")).collect();
        v.sort();
        format!("entries {}", v.join(" "))
    };
    wait_until(
        "every node holds the same 20 entries",
        Duration::from_secs(30),
        || {
            procs
                .iter_mut()
                .all(|p| p.cmd("entries net1 svc") == expect)
        },
    );

    // Kill three; the others must declare them dead and hide their entries.
    let victims = [4usize, 9, 15];
    for v in victims {
        procs[v].kill();
    }
    let victim_addrs: Vec<String> = victims.iter().map(|v| procs[*v].addr.to_string()).collect();
    wait_until(
        "17 nodes see the 3 killed as dead",
        Duration::from_secs(40),
        || {
            procs
                .iter_mut()
                .enumerate()
                .filter(|(i, _)| !victims.contains(i))
                .all(|(_, p)| {
                    let m = p.members();
                    victim_addrs
                        .iter()
                        .all(|va| m.iter().any(|(a, s)| a == va && s == "dead"))
                })
        },
    );
    let mut survivors = procs
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| !victims.contains(i));
    let (_, p) = survivors.next().expect("a survivor");
    let e = p.cmd("entries net1 svc");
    assert_eq!(
        e.split_whitespace().count() - 1,
        17,
        "entries of failed owners hidden: {e}"
    );

    // Restart them with empty state: they rejoin and catch up, and write again.
    for v in victims {
        procs[v] = Proc::start(addr(b, v as u8 + 1), KEY, Some(seed));
    }
    wait_until(
        "20 nodes alive again everywhere",
        Duration::from_secs(40),
        || procs.iter_mut().all(|p| p.alive() == all),
    );
    for v in victims {
        assert_eq!(procs[v].cmd(&format!("put net1 svc k{v} v{v}")), "ok");
    }
    wait_until(
        "restarted nodes caught up: same 20 entries everywhere",
        Duration::from_secs(30),
        || {
            procs
                .iter_mut()
                .all(|p| p.cmd("entries net1 svc") == expect)
        },
    );
    let s = procs[0].cmd("stats");
    assert!(s.contains("dropped_unauthenticated=0"), "{s}");
}

#[test]
fn node_with_wrong_key_cannot_join() {
    let b = block();
    let seed = addr(b, 1);
    let mut good: Vec<Proc> = (1..=3u8)
        .map(|i| Proc::start(addr(b, i), KEY, (i > 1).then_some(seed)))
        .collect();
    wait_until(
        "3 good nodes form a cluster",
        Duration::from_secs(20),
        || good.iter_mut().all(|p| p.alive().len() == 3),
    );
    let mut bad = Proc::start(addr(b, 9), WRONG, Some(seed));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        bad.members().len(),
        1,
        "the wrong-key node knows only itself"
    );
    for p in good.iter_mut() {
        let m = p.members();
        assert!(!m.iter().any(|(a, _)| *a == bad.addr.to_string()), "{m:?}");
    }
    let s = good[0].cmd("stats");
    let dropped: u64 = s
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("dropped_unauthenticated="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "seed counted the wrong-key frames: {s}");
}
