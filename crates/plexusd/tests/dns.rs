//! The embedded DNS end to end: a real plexusd in a test-made host namespace, sandboxes
//! asking 127.0.0.11 with `dig`, an upstream dnsmasq in an "outside" namespace, and the
//! daemon killed and restarted under a query loop. Needs root, dig and dnsmasq (the test
//! command installs them).

mod common;
mod dns_probe;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{docker_cli, json, Daemon};
use dns_probe::{dig, ok_in, sandbox_ns, status, Upstream, DEAD_UPSTREAM, UPSTREAM};
use plexus_sys::netns::Netns;

/// `dig +short`: the answer's records, one per line.
fn short(d: &Daemon, sandbox: &str, args: &str) -> Vec<String> {
    dig(d, sandbox, &format!("+short {args}"))
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with(";;"))
        .collect()
}

fn ip_of(d: &Daemon, sandbox: &str, network: &str) -> String {
    let v = json(&d.ok(&["sandbox", "inspect", sandbox]));
    let eps = v[0]["Endpoints"].as_array().cloned().unwrap_or_default();
    let ep = eps
        .iter()
        .find(|e| e["Network"] == network)
        .unwrap_or_else(|| panic!("{sandbox} has no endpoint on {network}: {v}"));
    let cidr = ep["IPv4Address"].as_str().unwrap_or_default();
    cidr.split('/').next().unwrap_or_default().to_string()
}

/// A daemon whose host upstream is the test's dnsmasq.
fn daemon(pool: &str, extra: &[&str]) -> (Daemon, tempfile::TempDir) {
    let rc = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let path = rc.path().join("resolv.conf");
    std::fs::write(
        &path,
        format!("nameserver {UPSTREAM}\nsearch corp.example\n"),
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    let path = path.display().to_string();
    let mut args = vec![
        "-b",
        "none",
        "--default-address-pool",
        pool,
        "--dns-resolv-conf",
        &path,
    ];
    args.extend_from_slice(extra);
    (Daemon::new(&args), rc)
}

#[test]
fn names_aliases_ptr_isolation_and_live_updates() {
    let (d, _rc) = daemon(
        "base=10.213.0.0/16,size=24",
        &["--dns-host-addr", "127.0.0.1:5353"],
    );
    let _up = Upstream::start(&d);
    d.ok(&["network", "create", "front", "--subnet", "10.213.1.0/24"]);
    d.ok(&[
        "network",
        "create",
        "back",
        "--internal",
        "--subnet",
        "10.213.2.0/24",
        "-o",
        "plexus.dns.ttl=30",
    ]);
    d.ok(&[
        "sandbox",
        "create",
        "web",
        "--network",
        "front",
        "--alias",
        "www",
    ]);
    d.ok(&[
        "sandbox",
        "create",
        "db",
        "--network",
        "front",
        "--network",
        "back",
        "--alias",
        "primary",
    ]);
    d.ok(&["sandbox", "create", "cache", "--network", "back"]);
    let web = ip_of(&d, "web", "front");
    let db_back = ip_of(&d, "db", "back");

    // Names, aliases, NAME.NETWORK, case-insensitively, over UDP and TCP.
    for name in ["web", "www", "web.front", "WWW.Front"] {
        assert_eq!(short(&d, "db", name), std::slice::from_ref(&web), "{name}");
    }
    assert_eq!(short(&d, "db", "+tcp web"), std::slice::from_ref(&web));
    // The way to the resolver is stateless: those queries left no connection-tracking
    // entry in the sandbox, whose other traffic is then not tracked (nor slowed) either.
    let tracked = ok_in(
        &sandbox_ns(&d, "db"),
        "cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo 0",
    );
    assert_eq!(tracked.trim(), "0", "conntrack entries in the sandbox");
    let full = dig(&d, "db", "web");
    assert!(full.contains("\t5\tIN\tA\t"), "default TTL 5: {full}");
    // PTR gives NAME.NETWORK.
    assert_eq!(short(&d, "db", &format!("-x {web}")), ["web.front."]);
    // The network's TTL option.
    let full = dig(&d, "cache", "primary");
    assert!(
        full.contains("\t30\tIN\tA\t"),
        "TTL from plexus.dns.ttl: {full}"
    );
    assert_eq!(
        short(&d, "cache", "primary"),
        std::slice::from_ref(&db_back)
    );

    // Isolation: web (front only) cannot resolve cache (back only); db (both) sees both.
    let miss = dig(&d, "web", "cache");
    assert_eq!(
        status(&miss),
        "NXDOMAIN",
        "forwarded and unknown upstream: {miss}"
    );
    assert_eq!(short(&d, "db", "cache").len(), 1);
    // A sandbox only on an internal network does not forward.
    assert_eq!(status(&dig(&d, "cache", "a.example.test")), "SERVFAIL");

    // Connect and disconnect are visible by the time the command returns.
    d.ok(&["network", "connect", "--alias", "kv", "front", "cache"]);
    let cache_front = ip_of(&d, "cache", "front");
    assert_eq!(short(&d, "web", "kv"), std::slice::from_ref(&cache_front));
    assert_eq!(short(&d, "web", "cache.front"), [cache_front]);
    d.ok(&["network", "disconnect", "front", "cache"]);
    assert_eq!(status(&dig(&d, "web", "kv")), "NXDOMAIN");

    // The host's own listener: NAME.NETWORK.plexus.
    let host = d.dir.path().join("host-ns");
    ok_in(&host, "ip link set lo up");
    let out = ok_in(
        &host,
        "dig +short +tries=1 +time=3 -p 5353 @127.0.0.1 web.front.plexus",
    );
    assert_eq!(out.trim(), web);
    let out = ok_in(
        &host,
        "dig +tries=1 +time=3 -p 5353 @127.0.0.1 nothere.front.plexus",
    );
    assert_eq!(status(&out), "NXDOMAIN");

    // resolv.conf and hosts, as `sandbox exec` shows them.
    let rc = d.ok(&["sandbox", "exec", "web", "--", "cat", "/etc/resolv.conf"]);
    assert!(rc.contains("nameserver 127.0.0.11"), "{rc}");
    assert!(rc.contains("search corp.example"), "{rc}");
    assert!(rc.contains("ndots:0"), "{rc}");
    let hosts = d.ok(&["sandbox", "exec", "web", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{web}\tweb")), "{hosts}");
    let host_rc = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert!(
        !host_rc.contains("127.0.0.11"),
        "the host's file is untouched"
    );

    // Removal: names go with the sandbox and its files with it.
    let v = json(&d.ok(&["sandbox", "inspect", "web"]));
    let files = PathBuf::from(v[0]["ResolvConfPath"].as_str().unwrap_or_default());
    assert!(files.exists(), "{}", files.display());
    d.ok(&["sandbox", "rm", "web"]);
    assert_eq!(status(&dig(&d, "db", "www")), "NXDOMAIN");
    assert!(!files.exists(), "resolv.conf removed with the sandbox");

    // A bad TTL is refused, naming the option.
    let err = d.fails(&["network", "create", "bad", "-o", "plexus.dns.ttl=soon"]);
    assert!(err.contains("plexus.dns.ttl"), "{err}");
}

#[test]
fn forwarding_caches_and_fails_over() {
    let (d, _rc) = daemon("base=10.214.0.0/16,size=24", &[]);
    let up = Upstream::start(&d);
    d.ok(&["network", "create", "n", "--subnet", "10.214.1.0/24"]);
    d.ok(&["sandbox", "create", "a", "--network", "n"]);
    d.ok(&[
        "sandbox",
        "create",
        "b",
        "--network",
        "n",
        "--dns",
        DEAD_UPSTREAM,
        "--dns",
        UPSTREAM,
    ]);

    // Forwarded through the host's upstream, then from the cache: one upstream query.
    for _ in 0..5 {
        assert_eq!(short(&d, "a", "one.example.test"), ["192.0.2.7"]);
    }
    assert_eq!(
        up.queries_for("one.example.test"),
        1,
        "the cache answered the rest"
    );
    // Over TCP too.
    assert_eq!(short(&d, "a", "+tcp two.example.test"), ["192.0.2.7"]);

    // b's first server is dead: the first lookup costs one short timeout, the next ones
    // nothing.
    let t = Instant::now();
    assert_eq!(short(&d, "b", "three.example.test"), ["192.0.2.7"]);
    let first = t.elapsed();
    assert!(
        first < Duration::from_millis(1500),
        "first lookup took {first:?}"
    );
    let t = Instant::now();
    for name in ["four", "five", "six"] {
        assert_eq!(
            short(&d, "b", &format!("{name}.example.test")),
            ["192.0.2.7"]
        );
    }
    let next = t.elapsed() / 3;
    assert!(
        next < Duration::from_millis(300),
        "later lookups took {next:?} each"
    );

    // The counters reach /metrics (read from the resolver every second).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("curl")
            .args(["-s", "--unix-socket"])
            .arg(d.socket())
            .arg("http://plexus/metrics")
            .output()
            .unwrap_or_else(|e| panic!("curl: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |series: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(series))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let cached = value("plexus_dns_answers_total{kind=\"cache\"}");
        let timeouts = value("plexus_dns_upstream_failures_total{event=\"timeout\"}");
        if cached >= 4.0 && timeouts >= 1.0 && text.contains("plexus_dns_resolver_up 1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "DNS counters not on /metrics:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A query for `name` (type A) with id `id`.
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// The first A record's address in an answer.
fn first_a(answer: &[u8]) -> Option<Ipv4Addr> {
    let tail = answer.get(answer.len().checked_sub(4)?..)?;
    (answer.get(7).copied()? > 0).then(|| Ipv4Addr::new(tail[0], tail[1], tail[2], tail[3]))
}

/// A UDP socket inside the sandbox's namespace, talking to 127.0.0.11:53.
fn sandbox_socket(d: &Daemon, sandbox: &str) -> UdpSocket {
    let ns = Netns::open(&sandbox_ns(d, sandbox)).unwrap_or_else(|e| panic!("netns: {e}"));
    let s = ns
        .run(|| UdpSocket::bind("127.0.0.1:0"))
        .unwrap_or_else(|e| panic!("setns: {e}"))
        .unwrap_or_else(|e| panic!("bind: {e}"));
    s.connect(SocketAddr::from(([127, 0, 0, 11], 53)))
        .unwrap_or_else(|e| panic!("connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    s
}

#[test]
fn answers_keep_coming_while_plexusd_is_killed_and_restarted() {
    let (mut d, _rc) = daemon("base=10.215.0.0/16,size=24", &[]);
    d.ok(&["network", "create", "n", "--subnet", "10.215.1.0/24"]);
    d.ok(&["sandbox", "create", "a", "--network", "n"]);
    d.ok(&["sandbox", "create", "b", "--network", "n"]);
    let b: Ipv4Addr = ip_of(&d, "b", "n")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let sock = sandbox_socket(&d, "a");
    let resolver = d.resolver_pid();
    assert!(resolver.is_some(), "the resolver runs");
    let mut buf = [0u8; 512];
    let mut ask = |i: u16| -> Result<Ipv4Addr, String> {
        sock.send(&query(i, "b"))
            .map_err(|e| format!("send: {e}"))?;
        let n = sock.recv(&mut buf).map_err(|e| format!("query {i}: {e}"))?;
        first_a(&buf[..n]).ok_or_else(|| format!("query {i}: no address"))
    };
    let mut failures = Vec::new();
    let mut i = 0u16;
    let mut loop_for = |d: &Daemon, dur: Duration, failures: &mut Vec<String>| {
        let _ = d;
        let end = Instant::now() + dur;
        while Instant::now() < end {
            i = i.wrapping_add(1);
            match ask(i) {
                Ok(ip) if ip == b => {}
                Ok(ip) => failures.push(format!("query {i}: {ip}")),
                Err(e) => failures.push(e),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    loop_for(&d, Duration::from_millis(300), &mut failures);
    d.kill9();
    loop_for(&d, Duration::from_millis(500), &mut failures);
    d.start();
    loop_for(&d, Duration::from_millis(1500), &mut failures);
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        d.resolver_pid(),
        resolver,
        "the same resolver served throughout"
    );
    // The restarted daemon feeds it: a new sandbox's name answers at once.
    d.ok(&["sandbox", "create", "c", "--network", "n"]);
    let c = ip_of(&d, "c", "n");
    assert_eq!(short(&d, "a", "c"), [c]);

    // Killed, the resolver is started again by the daemon's supervisor and fed again.
    d.kill_resolver();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if short(&d, "a", "c").len() == 1 && d.resolver_pid() != resolver {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the resolver did not come back:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn bad_packets_and_a_users_own_server_on_port_53() {
    let (d, _rc) = daemon("base=10.216.0.0/16,size=24", &[]);
    d.ok(&["network", "create", "n", "--subnet", "10.216.1.0/24"]);
    d.ok(&["sandbox", "create", "ant", "--network", "n"]);
    d.ok(&["sandbox", "create", "bee", "--network", "n"]);
    let b: Ipv4Addr = ip_of(&d, "bee", "n")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let sock = sandbox_socket(&d, "ant");
    let mut buf = [0u8; 4096];
    // Garbage: too short (dropped), a truncated question (FORMERR), a compression loop
    // (FORMERR), a response (dropped), a huge datagram.
    let mut truncated = query(7, "bee");
    truncated.truncate(15);
    let mut looped = query(8, "bee")[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let mut response = query(9, "bee");
    response[2] |= 0x80;
    let mut huge = vec![0, 5, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    huge.extend_from_slice(&[0x3f; 2988]);
    for (bytes, rcode) in [
        (vec![1, 2, 3], None),
        (truncated, Some(1)),
        (looped, Some(1)),
        (response, None),
        (huge, Some(1)),
    ] {
        sock.send(&bytes).unwrap_or_else(|e| panic!("send: {e}"));
        match rcode {
            Some(code) => {
                let n = sock
                    .recv(&mut buf)
                    .unwrap_or_else(|e| panic!("no answer: {e}"));
                assert_eq!(buf[3] & 0x0f, code, "{:?}", &buf[..n]);
            }
            None => assert!(sock.recv(&mut buf).is_err(), "dropped, not answered"),
        }
    }
    // A flood of junk does not stop good answers.
    for i in 0..2000u16 {
        let _ = sock.send(&i.to_be_bytes());
    }
    // The kernel may drop datagrams while the socket's buffer is full of junk: a client
    // asks again, as resolvers do.
    let mut got = None;
    for attempt in 0..3u16 {
        sock.send(&query(42 + attempt, "bee"))
            .unwrap_or_else(|e| panic!("send: {e}"));
        if let Ok(n) = sock.recv(&mut buf) {
            got = first_a(&buf[..n]);
            break;
        }
    }
    assert_eq!(got, Some(b), "answered after the junk");

    // The user's own DNS server on 0.0.0.0:53 inside a sandbox works beside the resolver.
    let ns = sandbox_ns(&d, "bee");
    let pid_file = d.dir.path().join("user-dnsmasq.pid");
    ok_in(
        &ns,
        &format!(
            "dnsmasq --no-resolv --no-hosts --port=53 --address=/user.test/192.0.2.99 \
             --pid-file={}",
            pid_file.display()
        ),
    );
    let users = ok_in(
        &sandbox_ns(&d, "ant"),
        &format!("dig +short +tries=2 +time=2 @{b} x.user.test"),
    );
    let own = short(&d, "bee", "ant");
    let user_pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
    let _ = Command::new("kill").arg(user_pid.trim()).status();
    assert_eq!(
        users.trim(),
        "192.0.2.99",
        "the user's server answers on b's address"
    );
    assert_eq!(own.len(), 1, "and b still resolves names: {own:?}");
}

#[test]
fn docker_cli_connect_alias_resolves() {
    let docker = docker_cli();
    let (d, _rc) = daemon("base=10.217.0.0/16,size=24", &[]);
    d.ok(&["network", "create", "n", "--subnet", "10.217.1.0/24"]);
    d.ok(&["sandbox", "create", "a", "--network", "n"]);
    d.ok(&["sandbox", "create", "b"]);
    let out = Command::new(docker)
        .env("DOCKER_CONFIG", d.dir.path().join("docker-config"))
        .args([
            "-H",
            &d.host(),
            "network",
            "connect",
            "--alias",
            "api",
            "n",
            "b",
        ])
        .output()
        .unwrap_or_else(|e| panic!("docker: {e}"));
    assert!(
        out.status.success(),
        "docker network connect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = ip_of(&d, "b", "n");
    assert_eq!(short(&d, "a", "api"), std::slice::from_ref(&b));
    assert_eq!(short(&d, "a", "api.n"), [b]);
}

/// A resolver left running by the plexusd before an upgrade, speaking an older control
/// protocol (here one that reports none), is stopped at start and a new one answers: the
/// old one would refuse the requests it does not know.
#[test]
fn a_resolver_speaking_an_older_protocol_is_replaced_at_start() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::{Arc, Mutex};

    let mut d = Daemon::unstarted(&["-b", "none"]);
    let dns_dir = d.dir.path().join("run").join("dns");
    std::fs::create_dir_all(&dns_dir).unwrap();
    let control = dns_dir.join("control.sock");
    // The old resolver: a process to stop, and its control socket answering Stats
    // without a protocol until that process is gone.
    let old = Arc::new(Mutex::new(
        std::process::Command::new("sleep")
            .arg("120")
            .spawn()
            .unwrap(),
    ));
    let old_pid = old.lock().unwrap().id();
    let listener = UnixListener::bind(&control).unwrap();
    let serving = {
        let old = old.clone();
        std::thread::spawn(move || {
            let answer = format!(
                "{{\"stats\":{{\"queries_udp\":0,\"queries_tcp\":0,\"answers_local\":0,\
                 \"answers_nodata\":0,\"answers_error\":0,\"forwarded\":0,\"cache_hits\":0,\
                 \"dropped\":0,\"upstream_timeouts\":0,\"upstream_failures\":0,\
                 \"upstream_gave_up\":0,\"refused_overload\":0,\"sandboxes\":0,\"pid\":{old_pid}}}}}\n"
            );
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let mut out = conn.try_clone().unwrap();
                for line in BufReader::new(conn).lines() {
                    if line.is_err() || old.lock().unwrap().try_wait().unwrap().is_some() {
                        return;
                    }
                    if out.write_all(answer.as_bytes()).is_err() {
                        break;
                    }
                }
                if old.lock().unwrap().try_wait().unwrap().is_some() {
                    return;
                }
            }
        })
    };
    d.start();
    let status = old.lock().unwrap().wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(15),
        "the old resolver was sent SIGTERM"
    );
    // The fake stopped answering once its process was gone (its thread may still wait in
    // accept on the unlinked socket: left to end with the test).
    drop(serving);
    let new_pid = d.resolver_pid().expect("a new resolver wrote its pid");
    assert_ne!(new_pid as u32, old_pid);

    d.ok(&["network", "create", "app", "--subnet", "10.213.9.0/24"]);
    d.ok(&["sandbox", "create", "web", "--network", "app"]);
    d.ok(&["sandbox", "create", "cli", "--network", "app"]);
    assert_eq!(short(&d, "cli", "web"), vec![ip_of(&d, "web", "app")]);
}
