//! The routing mesh across hosts: three real `plexusd` on an underlay bridge with a real
//! etcd, a client in an "outside" namespace on the same underlay (`10.99.0.200`, no Plexus
//! there). A service on an overlay network publishing `8080 → 80` in ingress mode, one task
//! per host: the port answers on every host's address, connections through each host reach
//! the tasks of all three, and every task sees the outside client's own address (no SNAT).
//! A `mode=host` port answers only on the hosts that run a task, and reaches only that
//! host's task. A host's daemon killed with -9: connections through the other hosts go on
//! and avoid its task once gossip has declared it dead. Needs root.

// Hosts and their sandboxes go by number.
#![allow(clippy::needless_range_loop)]

mod multihost;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use multihost::{listen_in_from, wait_for, Cluster, ClusterStore, Host};
use plexus_sys::netns::Netns;

const OUTSIDE: &str = "10.99.0.200";

/// A namespace on the underlay that is no host of the cluster: the outside client.
struct Outside {
    dir: tempfile::TempDir,
    ns: Netns,
}

impl Outside {
    fn new(c: &Cluster) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ns = Netns::create(dir.path(), "outside").unwrap_or_else(|e| panic!("netns: {e}"));
        multihost::ip(&ns, &["link", "set", "lo", "up"]);
        c.underlay().plug(&ns, 200);
        Self { dir, ns }
    }

    /// One TCP connection to `addr:port` carrying `msg`, within 2 s.
    fn send(&self, addr: &str, port: u16, msg: &str) -> Result<(), String> {
        let to: SocketAddr = format!("{addr}:{port}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        self.ns
            .run(|| -> std::io::Result<()> {
                let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
                s.write_all(msg.as_bytes())
            })
            .unwrap_or_else(|e| panic!("setns: {e}"))
            .map_err(|e| format!("outside to {to}: {e}"))
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Netns::delete(self.dir.path(), "outside");
    }
}

/// Task `name` of `host` listens on `port`: (peer address, text) of each connection.
fn listen(host: &Host, name: &str, port: u16) -> Receiver<(String, String)> {
    let ns = Netns::open(&host.sandbox_ns(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    listen_in_from(&ns, port)
}

/// `n` connections from outside to `addr:port`: per task, the peers its listener saw; and
/// how many connections failed.
fn spread(
    outside: &Outside,
    addr: &str,
    port: u16,
    n: usize,
    tasks: &[Receiver<(String, String)>],
) -> (Vec<Vec<String>>, usize) {
    for t in tasks {
        while t.try_recv().is_ok() {}
    }
    let failed = (0..n)
        .filter(|i| outside.send(addr, port, &format!("c{i}")).is_err())
        .count();
    std::thread::sleep(Duration::from_millis(300));
    let got = tasks
        .iter()
        .map(|t| t.try_iter().map(|(peer, _)| peer).collect())
        .collect();
    (got, failed)
}

#[test]
fn a_published_port_answers_on_every_host_and_keeps_the_client_address() {
    plexus_testkit::require_root();
    let mut c = Cluster::start(3, ClusterStore::etcd());
    let outside = Outside::new(&c);
    let h = &c.hosts;
    h[0].create_overlay("app", "10.251.0.0/24");
    h[0].ok(&[
        "service",
        "create",
        "web",
        "--network",
        "app",
        "-p",
        "published=8080,target=80",
    ]);
    // The service is on the ingress network too, as in Docker swarm.
    let inspect = h[1].ok(&["network", "ls"]);
    assert!(inspect.contains("ingress"), "{inspect}");
    for i in 0..3 {
        h[i].ok(&[
            "sandbox",
            "create",
            &format!("web{}", i + 1),
            "--network",
            "app",
            "--service",
            "web",
        ]);
    }
    let tasks: Vec<_> = (0..3)
        .map(|i| listen(&h[i], &format!("web{}", i + 1), 80))
        .collect();

    for host in 0..3 {
        let addr = h[host].addr();
        wait_for(
            &format!("{addr}:8080 reaching every host's task from outside"),
            Duration::from_secs(30),
            || {
                let (got, failed) = spread(&outside, &addr, 8080, 45, &tasks);
                let counts: Vec<usize> = got.iter().map(Vec::len).collect();
                if failed == 0 && counts.iter().all(|&n| n > 0) {
                    let peers: Vec<&String> = got.iter().flatten().collect();
                    assert!(
                        peers.iter().all(|p| *p == OUTSIDE),
                        "a task saw another address than the client's: {peers:?}"
                    );
                    eprintln!("through host {}: {counts:?}", host + 1);
                    Ok(())
                } else {
                    Err(format!("per task {counts:?}, {failed} failed"))
                }
            },
        );
    }

    // mode=host: only the hosts with a task answer, each with its own task.
    h[0].ok(&[
        "service",
        "create",
        "api",
        "--network",
        "app",
        "-p",
        "published=9090,target=90,mode=host",
    ]);
    for i in 0..2 {
        h[i].ok(&[
            "sandbox",
            "create",
            &format!("api{}", i + 1),
            "--network",
            "app",
            "--service",
            "api",
        ]);
    }
    let api: Vec<_> = (0..2)
        .map(|i| listen(&h[i], &format!("api{}", i + 1), 90))
        .collect();
    for host in 0..2 {
        let addr = h[host].addr();
        wait_for(
            &format!("{addr}:9090 reaching host {}'s task only", host + 1),
            Duration::from_secs(20),
            || {
                let (got, failed) = spread(&outside, &addr, 9090, 10, &api);
                let counts: Vec<usize> = got.iter().map(Vec::len).collect();
                let mut want = vec![0, 0];
                want[host] = 10;
                if failed == 0 && counts == want {
                    assert!(got.iter().flatten().all(|p| p == OUTSIDE), "{got:?}");
                    Ok(())
                } else {
                    Err(format!("per task {counts:?}, {failed} failed"))
                }
            },
        );
    }
    let refused = outside.send(&h[2].addr(), 9090, "x");
    assert!(
        refused.is_err(),
        "host 3 has no task of api: its port 9090 must not answer"
    );

    // Host 3's daemon dies: hosts 1 and 2 go on answering, and stop sending to its task
    // once it is declared dead.
    let bound = Duration::from_millis(
        c.hosts[0].inspect()["FailureDetectionMs"]
            .as_u64()
            .unwrap_or_default(),
    );
    let killed = Instant::now();
    c.hosts[2].kill9();
    let h = &c.hosts;
    let addr = h[0].addr();
    loop {
        let (got, failed) = spread(&outside, &addr, 8080, 60, &tasks);
        let counts: Vec<usize> = got.iter().map(Vec::len).collect();
        if failed == 0 && counts[2] == 0 && counts[0] + counts[1] == 60 {
            eprintln!(
                "host 3 out of the mesh {:?} after its kill (failure detection {bound:?})",
                killed.elapsed()
            );
            break;
        }
        assert!(
            killed.elapsed() < bound + Duration::from_secs(10),
            "host 3's task still reached through host 1 {:?} after the kill: {counts:?}, {failed} failed\n--- host 1 ---\n{}",
            killed.elapsed(),
            h[0].log()
        );
    }
}
