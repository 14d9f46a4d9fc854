//! Services' virtual IPs with real traffic, through the real `plexusd` and `plexus` CLI:
//! connections from a client sandbox's namespace to a VIP spread over the tasks, follow
//! tasks leaving and joining, refuse at once without tasks, keep a client with affinity,
//! carry UDP; `service update` reaches the kernel; the tables outlive a kill -9, follow the
//! store after a restart and are repaired at start and by the periodic pass; and a seeded
//! kill loop (`PLEXUS_SEED`, `PLEXUS_LB_KILLS`) checks every sandbox's table against the
//! store after each restart. Needs root.

mod common;
mod lb_traffic;

use std::net::SocketAddr;
use std::time::Duration;

use common::Daemon;
use lb_traffic::*;

const ARGS: &[&str] = &["--bridge", "none", "--reconcile-interval", "300ms"];

fn setup_web(d: &Daemon, subnet: &str, tasks: &[&str]) -> (String, String) {
    d.ok(&["network", "create", "--subnet", subnet, "app"]);
    let id = d.ok(&["service", "create", "web", "--network", "app"]);
    for t in tasks {
        d.ok(&[
            "sandbox",
            "create",
            t,
            "--network",
            "app",
            "--service",
            "web",
        ]);
        serve(d, t);
    }
    d.ok(&["sandbox", "create", "client", "--network", "app"]);
    let (client, _) = sandbox(d, "client");
    (id.trim().to_string(), client)
}

#[test]
fn connections_spread_evenly_and_follow_tasks() {
    let d = Daemon::new(ARGS);
    let (_, client) = setup_web(&d, "10.241.0.0/24", &["t0", "t1", "t2", "t3"]);
    let vip = SocketAddr::from((vip_of(&d, "web"), NAME_PORT));
    let client_addr = addr_of(&d, "client").to_string();

    let n = std::env::var("PLEXUS_LB_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000usize);
    let began = std::time::Instant::now();
    let t = connect_many(&client, vip, n);
    eprintln!(
        "{n} connections through the VIP in {:?}: {:?}",
        began.elapsed(),
        t.by_task
    );
    assert_eq!(t.failed, 0, "{:?}", t.first_error);
    assert_eq!(t.by_task.len(), 4, "{:?}", t.by_task);
    let even = n as f64 / 4.0;
    for (task, c) in &t.by_task {
        let off = (*c as f64 - even).abs() / even;
        assert!(off <= 0.05, "{task} got {c} of {n} (±5% of {even} allowed)");
    }
    assert_eq!(
        t.peers.iter().collect::<Vec<_>>(),
        [&client_addr],
        "every backend sees the client's own address"
    );

    // A task removed: no new connection reaches it.
    d.ok(&["sandbox", "rm", "t3"]);
    let t = connect_many(&client, vip, 1000);
    assert_eq!(t.failed, 0, "{:?}", t.first_error);
    assert!(!t.by_task.contains_key("t3"), "{:?}", t.by_task);
    assert_eq!(t.by_task.len(), 3, "{:?}", t.by_task);

    // A task disconnected from the service's network: the same.
    d.ok(&["network", "disconnect", "app", "t2"]);
    let t = connect_many(&client, vip, 1000);
    assert_eq!(t.failed, 0, "{:?}", t.first_error);
    assert!(!t.by_task.contains_key("t2"), "{:?}", t.by_task);
    assert_eq!(t.by_task.len(), 2, "{:?}", t.by_task);

    // A new task joins: it gets connections.
    d.ok(&[
        "sandbox",
        "create",
        "t4",
        "--network",
        "app",
        "--service",
        "web",
    ]);
    serve(&d, "t4");
    let t = connect_many(&client, vip, 1000);
    assert_eq!(t.failed, 0, "{:?}", t.first_error);
    assert!(
        t.by_task.get("t4").copied().unwrap_or(0) > 200,
        "{:?}",
        t.by_task
    );

    // A task reaches its own service through the VIP (hairpin through output DNAT).
    let (t0, _) = sandbox(&d, "t0");
    let t = connect_many(&t0, vip, 60);
    assert_eq!(t.failed, 0, "{:?}", t.first_error);
    assert!(t.by_task.contains_key("t0"), "{:?}", t.by_task);
    // t0, t1, t4 and the client see the VIP; t2, on no network now, sees none.
    assert_eq!(check_kernel_follows_store(&d, "after the changes"), 4);
}

#[test]
fn refusal_affinity_udp_and_updates() {
    let d = Daemon::new(ARGS);
    let (_, client) = setup_web(&d, "10.242.0.0/24", &["t0", "t1", "t2"]);
    let vip = vip_of(&d, "web");

    // No tasks: refused at once.
    d.ok(&["service", "create", "empty", "--network", "app"]);
    let empty = SocketAddr::from((vip_of(&d, "empty"), NAME_PORT));
    let (err, took) = try_connect(&client, empty);
    assert_eq!(err, Some(std::io::ErrorKind::ConnectionRefused), "{took:?}");
    assert!(took < Duration::from_millis(100), "refused in {took:?}");

    // UDP through the VIP: answered from the VIP.
    let (answer, from) = udp_ask(&client, SocketAddr::from((vip, UDP_PORT)))
        .unwrap_or_else(|e| panic!("UDP through the VIP: {e}\n{}", tail(&d.log())));
    assert_eq!(from, SocketAddr::from((vip, UDP_PORT)), "{answer}");
    assert!(answer.starts_with('t'), "{answer}");

    // Affinity: one client, one backend.
    d.ok(&["service", "update", "web", "--affinity", "client-ip"]);
    let web = json_id(&d, "web");
    let have = kernel_view(&client);
    assert!(have.services[&web[..12]].affinity.is_some(), "{have:?}");
    let t = connect_many(&client, SocketAddr::from((vip, NAME_PORT)), 200);
    assert_eq!(t.failed, 0, "{:?}", t.first_error);
    assert_eq!(t.by_task.len(), 1, "{:?}", t.by_task);
    d.ok(&["service", "update", "web", "--affinity", "none"]);
    assert!(kernel_view(&client).services[&web[..12]].affinity.is_none());
    let t = connect_many(&client, SocketAddr::from((vip, NAME_PORT)), 200);
    assert_eq!(t.by_task.len(), 3, "{:?}", t.by_task);

    // vip -> dnsrr: the VIP is no longer dispatched (nor refused): no entry.
    d.ok(&["service", "update", "web", "--endpoint-mode", "dnsrr"]);
    let have = kernel_view(&client);
    assert!(!have.services.contains_key(&web[..12]), "{have:?}");
    assert!(!have.services.values().any(|s| s.vip == vip), "{have:?}");
    // And back: a new VIP, dispatched.
    d.ok(&["service", "update", "web", "--endpoint-mode", "vip"]);
    let vip2 = SocketAddr::from((vip_of(&d, "web"), NAME_PORT));
    let t = connect_many(&client, vip2, 30);
    assert_eq!(t.failed, 0, "{:?}", t.first_error);
    // A service removed leaves the table.
    d.ok(&["service", "rm", "--force", "empty"]);
    check_kernel_follows_store(&d, "after the updates");
    assert_eq!(metric(&d, "plexus_lb_services"), Some(1.0));
    let ok = metric(&d, "plexus_lb_updates_total{result=\"ok\"}").unwrap_or(0.0);
    assert!(ok >= 10.0, "{ok}");
    let timed = metric(&d, "plexus_lb_update_seconds_count").unwrap_or(0.0);
    assert!(timed >= ok, "{timed} < {ok}");
}

fn json_id(d: &Daemon, service: &str) -> String {
    common::json(&d.ok(&["service", "inspect", service]))[0]["ID"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn traffic_outlives_kill9_and_tables_are_repaired() {
    let mut d = Daemon::new(ARGS);
    let (_, client) = setup_web(&d, "10.243.0.0/24", &["t0", "t1"]);
    let vip = vip_of(&d, "web");
    let mut stream = Stream::open(&client, SocketAddr::from((vip, ECHO_PORT)));
    let first = stream
        .echo("before")
        .unwrap_or_else(|e| panic!("echo: {e}"));

    d.kill9();
    // While plexusd is down: the stream goes on, new connections are made.
    for i in 0..20 {
        let back = stream
            .echo(&format!("down{i}"))
            .unwrap_or_else(|e| panic!("the stream broke while plexusd was down: {e}"));
        assert_eq!(back.split(' ').next(), first.split(' ').next(), "{back}");
    }
    let t = connect_many(&client, SocketAddr::from((vip, NAME_PORT)), 200);
    assert_eq!(t.failed, 0, "{:?}", t.first_error);
    assert_eq!(t.by_task.len(), 2, "{:?}", t.by_task);

    d.start();
    assert!(
        !d.log().contains("repaired to the store's view"),
        "the tables equalled the store: nothing to repair\n{}",
        tail(&d.log())
    );
    assert!(
        stream.echo("after").is_ok(),
        "the stream survives the restart"
    );
    // A change in the store's terms after the restart: the kernel follows.
    d.ok(&["sandbox", "rm", "t1"]);
    let t0 = addr_of(&d, "t0");
    let have = kernel_view(&client);
    let backends: Vec<_> = have
        .services
        .values()
        .flat_map(|s| s.backends.clone())
        .collect();
    assert_eq!(backends, [std::net::IpAddr::V4(t0)], "{have:?}");
    check_kernel_follows_store(&d, "after the restart");

    // A table deleted by hand: the periodic pass puts it back.
    let nft = |path: &str| {
        lb_traffic::ns(path);
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={path}"))
            .args(["nft", "delete", "table", "ip", "plexus-lb"])
            .output()
            .unwrap_or_else(|e| panic!("nsenter nft: {e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    nft(&client);
    assert!(kernel_view(&client).services.is_empty());
    assert!(
        eventually(Duration::from_secs(5), || !kernel_view(&client)
            .services
            .is_empty()),
        "the periodic pass did not repair the table\n{}",
        tail(&d.log())
    );
    check_kernel_follows_store(&d, "after the periodic repair");

    // Deleted while plexusd is down: repaired at start, before it serves (no periodic pass).
    d.kill9();
    nft(&client);
    d.start_with(6, &["--bridge", "none", "--reconcile-interval", "0"]);
    check_kernel_follows_store(&d, "right after a start");

    // SIGTERM is no different: plexusd's exit leaves the tables, traffic goes on.
    assert!(d.stop().success(), "{}", tail(&d.log()));
    assert!(!kernel_view(&client).services.is_empty());
    let t = connect_many(&client, SocketAddr::from((vip, NAME_PORT)), 50);
    assert_eq!(t.failed, 0, "{:?}", t.first_error);
}

#[test]
fn kill_loop_kernel_equals_store() {
    let mut d = Daemon::new(&["--bridge", "none", "--reconcile-interval", "0"]);
    let kills: usize = std::env::var("PLEXUS_LB_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (mut rng, seed) = Rng::from_env();
    eprintln!("PLEXUS_SEED={seed} PLEXUS_LB_KILLS={kills}");
    d.ok(&["network", "create", "--subnet", "10.244.0.0/24", "n1"]);
    d.ok(&["network", "create", "--subnet", "10.245.0.0/24", "n2"]);
    d.ok(&["sandbox", "create", "c1", "--network", "n1"]);
    d.ok(&[
        "sandbox",
        "create",
        "c2",
        "--network",
        "n1",
        "--network",
        "n2",
    ]);
    let nets: [&[&str]; 3] = [&["n1"], &["n2"], &["n1", "n2"]];
    let mut next = 0usize;
    let (mut compared, mut backends) = (0, 0);
    for kill in 0..kills {
        let ops = 1 + rng.below(3);
        for i in 0..=ops {
            let args = random_op(&d, &mut rng, &nets, &mut next);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            if i < ops {
                let _ = d.plexus(&refs);
                continue;
            }
            // The last one in flight when plexusd is killed.
            let mut child = std::process::Command::new(common::plexus_bin())
                .env("PLEXUS_HOST", d.host())
                .args(&refs)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("plexus: {e}"));
            std::thread::sleep(Duration::from_millis(rng.below(40) as u64));
            d.kill9();
            let _ = child.wait();
        }
        d.start();
        compared +=
            check_kernel_follows_store(&d, &format!("PLEXUS_SEED={seed}: after kill {kill}"));
        backends += expected_views(&d)
            .values()
            .flat_map(|(_, v)| v.services.values())
            .map(|s| s.backends.len())
            .sum::<usize>();
    }
    let repaired = d.log().matches("repaired to the store's view").count();
    eprintln!("{kills} kills: {compared} (sandbox, VIP) entries and {backends} backends compared with the kernel; {repaired} tables repaired at start");
    assert!(
        compared > 0 && backends > 0,
        "the loop made nothing to compare"
    );
}

/// A random change: service create/update/rm, task create/rm, a client's network
/// connect/disconnect.
fn random_op(d: &Daemon, rng: &mut Rng, nets: &[&[&str]; 3], next: &mut usize) -> Vec<String> {
    let services: Vec<String> = d
        .ok(&["service", "ls", "--format", "{{.Name}}"])
        .lines()
        .map(str::to_string)
        .collect();
    let tasks: Vec<String> = d
        .ok(&["sandbox", "ls", "-q"])
        .lines()
        .filter(|l| l.starts_with('t'))
        .map(str::to_string)
        .collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    *next += 1;
    let pick = |rng: &mut Rng, v: &[String]| v[rng.below(v.len())].clone();
    match rng.below(7) {
        0 | 1 if services.len() < 5 => {
            let mut a = s(&["service", "create", &format!("s{next}")]);
            for n in nets[rng.below(3)] {
                a.extend(s(&["--network", n]));
            }
            if rng.below(3) == 0 {
                a.extend(s(&["--affinity", "client-ip", "--affinity-timeout", "30s"]));
            }
            if rng.below(5) == 0 {
                a.extend(s(&["--endpoint-mode", "dnsrr"]));
            }
            if rng.below(2) == 0 {
                // A port of its own: no two services ever ask for the same one.
                a.extend(s(&[
                    "-p",
                    &format!("published={},target=80", 20000 + *next),
                ]));
            }
            a
        }
        2 if !services.is_empty() => {
            let svc = pick(rng, &services);
            match rng.below(6) {
                0 => s(&["service", "update", &svc, "--affinity", "client-ip"]),
                1 => s(&["service", "update", &svc, "--affinity", "none"]),
                2 => s(&["service", "update", &svc, "--endpoint-mode", "dnsrr"]),
                3 => s(&[
                    "service",
                    "update",
                    &svc,
                    "--publish-add",
                    &format!("published={},target=81,protocol=udp", 30000 + *next),
                ]),
                4 => {
                    // Whatever it publishes over TCP goes (an error when it has none).
                    let ports = common::json(&d.ok(&["service", "inspect", &svc]));
                    let first = ports[0]["Endpoint"]["Ports"]
                        .as_array()
                        .and_then(|p| p.first().cloned());
                    match first {
                        Some(p) => s(&[
                            "service",
                            "update",
                            &svc,
                            "--publish-rm",
                            &format!(
                                "{}/{}",
                                p["PublishedPort"].as_u64().unwrap_or(0),
                                p["Protocol"].as_str().unwrap_or("tcp")
                            ),
                        ]),
                        None => s(&["service", "update", &svc, "--affinity", "none"]),
                    }
                }
                _ => s(&["service", "update", &svc, "--endpoint-mode", "vip"]),
            }
        }
        3 if !services.is_empty() && rng.below(3) == 0 => {
            s(&["service", "rm", "--force", &pick(rng, &services)])
        }
        3..=4 if !services.is_empty() && tasks.len() < 8 => {
            let svc = pick(rng, &services);
            let mut a = s(&["sandbox", "create", &format!("t{next}"), "--service", &svc]);
            // Both networks: at least one is the service's.
            for n in ["n1", "n2"] {
                a.extend(s(&["--network", n]));
            }
            a
        }
        5 if !tasks.is_empty() => s(&["sandbox", "rm", &pick(rng, &tasks)]),
        _ => {
            if rng.below(2) == 0 {
                s(&["network", "connect", "n2", "c1"])
            } else {
                s(&["network", "disconnect", "n2", "c1"])
            }
        }
    }
}
