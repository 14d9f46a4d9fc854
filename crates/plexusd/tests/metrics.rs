//! Metrics end to end: the real `plexusd` in a namespace of the test's (see `common`), scraped
//! over its API socket and over `--metrics-addr`, the text parsed; counts must move with
//! what is done to the daemon, and a `--metrics-addr` that cannot be bound stops the start.
//! Needs root.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use plexus_sys::netns::Netns;

mod common;

use common::{exit_within, json, Daemon};

/// Runs `bash -c script` inside `ns`.
fn run_in(ns: &Netns, script: &str) -> Output {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script]);
    plexus_testkit::process::in_netns(&mut cmd, ns.fd());
    cmd.output()
        .unwrap_or_else(|e| panic!("bash in {}: {e}", ns.path().display()))
}

/// A fresh namespace's loopback is down: bring it up, so the daemon can listen on it.
fn loopback_up(ns: &Netns) {
    let out = run_in(ns, "ip link set lo up");
    assert!(out.status.success(), "lo up: {out:?}");
}

/// An HTTP answer: status code, headers (lowercase names) and body.
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// One HTTP/1.1 request on `conn`, answered and closed.
fn http(
    mut conn: impl Read + Write,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: plexus\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    conn.write_all(req.as_bytes())
        .unwrap_or_else(|e| panic!("sending {method} {path}: {e}"));
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the answer to {method} {path}: {e}"));
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {raw:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    assert!(
        !headers.contains_key("transfer-encoding"),
        "chunked answer: {head}"
    );
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// What a scrape says: each family's type, and each sample's value by series
/// (`name{labels}` exactly as written).
#[derive(Debug, Default)]
struct Scrape {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// Parses the Prometheus text format, checking every line's shape.
    fn parse(text: &str) -> Scrape {
        let mut out = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line:?}"
                );
                out.types.insert(name.to_string(), kind.to_string());
            } else if line.starts_with("# HELP ") || line.is_empty() {
            } else {
                assert!(!line.starts_with('#'), "unexpected comment {line:?}");
                let (series, value) = line
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("bad sample {line:?}"));
                let name = series.split('{').next().unwrap_or_default();
                assert!(
                    name.starts_with("plexus_")
                        && name
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "bad name in {line:?}"
                );
                if series.contains('{') {
                    assert!(series.ends_with('}'), "bad labels in {line:?}");
                }
                let value: f64 = value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}"));
                out.samples.insert(series.to_string(), value);
            }
        }
        // Every sample belongs to a family that has a TYPE line.
        for series in out.samples.keys() {
            let name = series.split('{').next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| out.types.get(*f).map(String::as_str) == Some("histogram"))
                .unwrap_or(name);
            assert!(out.types.contains_key(family), "{series} has no TYPE line");
        }
        out
    }

    fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// The sum of a family's samples whose series contains every one of `labels`.
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(s, _)| s.split('{').next() == Some(name))
            .filter(|(s, _)| labels.iter().all(|l| s.contains(l)))
            .map(|(_, v)| v)
            .sum()
    }

    fn requests(&self, operation: &str, status: &str) -> f64 {
        self.value(&format!(
            "plexus_api_requests_total{{operation=\"{operation}\",status=\"{status}\"}}"
        ))
    }
}

fn socket_get(d: &Daemon, path: &str, headers: &[(&str, &str)]) -> Answer {
    let conn = std::os::unix::net::UnixStream::connect(d.socket())
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", d.socket().display()));
    http(conn, "GET", path, headers, "")
}

fn scrape_socket(d: &Daemon) -> Scrape {
    let a = socket_get(d, "/metrics", &[]);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.headers.get("content-type").map(String::as_str),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    Scrape::parse(&a.body)
}

/// A GET over TCP inside the daemon's namespace, where `--metrics-addr` listens.
fn tcp_get(d: &Daemon, addr: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let addr = addr.to_string();
    let conn = d
        .host_ns
        .run(move || std::net::TcpStream::connect(addr))
        .unwrap_or_else(|e| panic!("entering the namespace: {e}"))
        .unwrap_or_else(|e| panic!("connecting to --metrics-addr: {e}"));
    http(conn, "GET", path, headers, "")
}

const BRIDGE: &str = "{driver=\"bridge\",scope=\"local\"}";

#[test]
fn metrics_over_the_socket_and_tcp_move_with_operations() {
    let addr = format!("127.0.0.1:{}", plexus_testkit::net::free_port());
    let mut d = Daemon::unstarted(&[
        "--reconcile-interval",
        "1s",
        "--bridge",
        "none",
        "--metrics-addr",
        &addr,
    ]);
    loopback_up(&d.host_ns);
    d.start();

    // Names and types, right after the start.
    let before = scrape_socket(&d);
    for (name, kind) in [
        ("plexus_build_info", "gauge"),
        ("plexus_store_operation_duration_seconds", "histogram"),
        ("plexus_reconcile_passes_total", "counter"),
        ("plexus_reconcile_duration_seconds", "histogram"),
        ("plexus_networks", "gauge"),
        ("plexus_sandboxes", "gauge"),
    ] {
        assert_eq!(
            before.types.get(name).map(String::as_str),
            Some(kind),
            "{name}: {:?}",
            before.types
        );
    }
    assert_eq!(
        before.value("plexus_reconcile_passes_total{mode=\"startup\",result=\"ok\"}"),
        1.0
    );
    assert!(
        before.sum(
            "plexus_store_operation_duration_seconds_count",
            &["store=\"local\""]
        ) > 0.0,
        "{:?}",
        before.samples
    );
    // The pre-defined networks, and no bridge network with `--bridge none`.
    assert_eq!(
        before.value("plexus_networks{driver=\"null\",scope=\"local\"}"),
        1.0
    );
    assert_eq!(before.value(&format!("plexus_networks{BRIDGE}")), 0.0);

    // The same registry over `--metrics-addr`, which serves nothing else.
    let tcp = tcp_get(&d, &addr, "/metrics", &[]);
    assert_eq!(tcp.status, 200, "{}", tcp.body);
    let over_tcp = Scrape::parse(&tcp.body);
    // (The socket's scrape is counted by now: the TCP one has its family too.)
    for (name, kind) in &before.types {
        assert_eq!(over_tcp.types.get(name), Some(kind), "{name}");
    }
    assert_eq!(over_tcp.requests("metrics", "2xx"), 1.0);
    assert_eq!(tcp_get(&d, &addr, "/_ping", &[]).status, 404);
    assert_eq!(tcp_get(&d, &addr, "/networks", &[]).status, 404);
    let open = tcp_get(
        &d,
        &addr,
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    );
    assert_eq!(open.status, 200);
    assert!(
        open.headers
            .get("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        open.headers
    );
    assert!(open.body.ends_with("# EOF\n"), "{}", open.body);

    // A network and a sandbox on it: counters, gauges and store operations move.
    d.ok(&["network", "create", "--subnet", "10.214.0.0/24", "mt"]);
    d.ok(&["sandbox", "create", "s1", "--network", "mt"]);
    let after = scrape_socket(&d);
    assert_eq!(
        after.requests("network_create", "2xx"),
        before.requests("network_create", "2xx") + 1.0
    );
    assert_eq!(
        after.requests("sandbox_create", "2xx"),
        before.requests("sandbox_create", "2xx") + 1.0
    );
    assert_eq!(
        after.value("plexus_api_request_duration_seconds_count{operation=\"network_create\"}"),
        1.0
    );
    assert_eq!(after.value(&format!("plexus_networks{BRIDGE}")), 1.0);
    assert_eq!(after.value(&format!("plexus_endpoints{BRIDGE}")), 1.0);
    assert_eq!(after.value("plexus_sandboxes"), 1.0);
    let txns = |s: &Scrape| {
        s.value("plexus_store_operation_duration_seconds_count{store=\"local\",operation=\"txn\"}")
    };
    assert!(
        txns(&after) >= txns(&before) + 2.0,
        "store transactions: {} then {}",
        txns(&before),
        txns(&after)
    );

    // A refused request is counted with its status class.
    let conn = std::os::unix::net::UnixStream::connect(d.socket())
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let bad = http(conn, "POST", "/networks/create", &[], "{\"Name\": ");
    assert_eq!(bad.status, 400, "{}", bad.body);
    let refused = scrape_socket(&d);
    assert_eq!(
        refused.requests("network_create", "4xx"),
        after.requests("network_create", "4xx") + 1.0
    );
    assert_eq!(
        refused.requests("network_create", "2xx"),
        after.requests("network_create", "2xx")
    );

    // A veth deleted behind the daemon's back: the periodic pass makes it again, and counts it.
    let s1 = json(&d.ok(&["sandbox", "inspect", "s1"]));
    let endpoint = s1[0]["Endpoints"][0]["EndpointID"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(endpoint.len(), 64, "{s1}");
    let host_end = format!("plxv{}", &endpoint[..11]);
    let repaired =
        |s: &Scrape| s.value("plexus_reconcile_repairs_total{mode=\"periodic\",kind=\"endpoint\"}");
    let del = run_in(&d.host_ns, &format!("ip link del {host_end}"));
    assert!(del.status.success(), "{del:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let repair = loop {
        let now = scrape_socket(&d);
        if repaired(&now) >= repaired(&refused) + 1.0 {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "no endpoint repair counted within 10 s: {:?}\n{}",
            now.samples,
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        repair.value("plexus_reconcile_passes_total{mode=\"periodic\",result=\"ok\"}") >= 1.0,
        "{:?}",
        repair.samples
    );
    assert!(
        repair.value("plexus_reconcile_duration_seconds_count{mode=\"periodic\"}") >= 1.0,
        "{:?}",
        repair.samples
    );

    d.ok(&["sandbox", "rm", "s1"]);
    d.ok(&["network", "rm", "mt"]);
    let gone = scrape_socket(&d);
    assert_eq!(gone.value(&format!("plexus_networks{BRIDGE}")), 0.0);
    assert_eq!(gone.value("plexus_sandboxes"), 0.0);
    assert_eq!(d.stop().code(), Some(0));
}

/// Starts plexusd with `--metrics-addr value` and expects it to stop at once, with an error
/// naming the flag and `named`, before making its state dir.
fn refused_at_start(value: &str, named: &str) {
    let d = Daemon::unstarted(&[]);
    loopback_up(&d.host_ns);
    let taken = d
        .host_ns
        .run(|| std::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap_or_else(|e| panic!("entering the namespace: {e}"))
        .unwrap_or_else(|e| panic!("binding: {e}"));
    let taken_addr = taken
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
        .to_string();
    let value = value.replace("TAKEN", &taken_addr);
    let named = named.replace("TAKEN", &taken_addr);
    let mut args = d.args.clone();
    args.extend(["--metrics-addr".to_string(), value.clone()]);
    let mut cmd = d.command(&args);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting plexusd: {e}"));
    let status = exit_within(&mut child, Duration::from_secs(20));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "--metrics-addr {value}: {stderr}"
    );
    assert!(
        stderr.contains("--metrics-addr") && stderr.contains(&named),
        "--metrics-addr {value}: {stderr}"
    );
    assert!(
        !d.dir.path().join("state").exists(),
        "the state dir was made before the flag was checked"
    );
    drop(taken);
}

#[test]
fn a_metrics_addr_that_cannot_be_bound_stops_the_start() {
    refused_at_start("TAKEN", "TAKEN");
    refused_at_start("localhost:9323", "localhost:9323");
    refused_at_start("9323", "9323");
}
