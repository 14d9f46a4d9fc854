//! plexus-kv benchmark: put / get / atomic_put throughput and latency per backend, with 1 and
//! with 64 concurrent clients, and — for etcd — the same loops through `etcd-client` directly,
//! to show what the Plexus layer costs.
//!
//! Run it through `bench/kv/run.sh`, which starts (and stops) its own etcd. By hand:
//!
//! ```sh
//! cargo run --release -p plexus-kv --example kv-bench -- \
//!     --etcd 127.0.0.1:2379 [--url NAME=URL]... [--seconds 1.5] [--only etcd,redb]
//! ```
//!
//! "Clients" are concurrent tasks sharing one store (one connection for etcd), as the tasks of
//! one daemon would. Each client works on a key of its own (`put` rewrites it, `get` reads it,
//! `atomic_put` compare-and-swaps it on the index its previous write returned), so the figures
//! measure the store, not contention. For the embedded redb store every put is a durable
//! commit: with 1 client that is one fsync per write; with 64 the writer thread commits all
//! queued writes at once (group commit). The last line holds the headline figures as
//! `key=value` pairs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use plexus_kv::{KvPair, OpenOptions, PutOptions, Store};

/// The value written by every put (a small JSON document's worth).
const VALUE: [u8; 128] = [b'x'; 128];

/// Interleaved rounds of Plexus and of etcd-client per figure (each a quarter of `--seconds`).
const ROUNDS: usize = 12;

/// Concurrency levels measured.
const CLIENTS: [usize; 2] = [1, 64];

/// The backends measured, in order: the single list to extend. Each is `(name, url)`;
/// `--url NAME=URL` adds more without touching this file (e.g. `--url zk=zk://127.0.0.1:2181/b`).
fn backends(args: &Args, redb_path: &std::path::Path) -> Vec<(String, String)> {
    let mut list = vec![
        ("memory".to_string(), "memory://".to_string()),
        (
            "redb".to_string(),
            format!("redb://{}", redb_path.display()),
        ),
    ];
    if let Some(endpoint) = &args.etcd {
        list.push(("etcd".to_string(), format!("etcd://{endpoint}/kv-bench")));
    }
    list.extend(args.urls.iter().cloned());
    list.retain(|(name, _)| args.only.as_ref().is_none_or(|o| o.contains(name)));
    list
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Put,
    Get,
    AtomicPut,
}

impl Op {
    const ALL: [Op; 3] = [Op::Put, Op::Get, Op::AtomicPut];
    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::AtomicPut => "atomic_put",
        }
    }
}

/// What one client remembers between its operations.
#[derive(Default)]
struct ClientState {
    /// The pair of its key as last written (for the next compare-and-swap).
    last: Option<KvPair>,
    /// The same, as a raw etcd revision (direct client).
    last_rev: i64,
}

/// Something the loops can drive: a Plexus store, or etcd-client directly.
#[async_trait]
trait Driver: Send + Sync {
    /// Writes the client's key once, so gets find it and compare-and-swaps have an index.
    async fn prepare(&self, client: usize, state: &mut ClientState) -> Result<()>;
    async fn op(&self, op: Op, client: usize, state: &mut ClientState) -> Result<()>;
}

fn key(client: usize) -> String {
    format!("bench/c{client:03}")
}

struct Plexus(Arc<dyn Store>);

#[async_trait]
impl Driver for Plexus {
    async fn prepare(&self, client: usize, state: &mut ClientState) -> Result<()> {
        state.last = Some(
            self.0
                .put(&key(client), &VALUE, PutOptions::default())
                .await?,
        );
        Ok(())
    }

    async fn op(&self, op: Op, client: usize, state: &mut ClientState) -> Result<()> {
        let k = key(client);
        match op {
            Op::Put => {
                state.last = Some(self.0.put(&k, &VALUE, PutOptions::default()).await?);
            }
            Op::Get => {
                self.0.get(&k).await?;
            }
            Op::AtomicPut => {
                let next = self
                    .0
                    .atomic_put(&k, &VALUE, state.last.as_ref(), PutOptions::default())
                    .await?;
                state.last = Some(next);
            }
        }
        Ok(())
    }
}

/// The same operations straight through etcd-client, with the same prefix and transactions
/// as the Plexus backend.
struct Direct {
    kv: etcd_client::KvClient,
    prefix: String,
}

#[async_trait]
impl Driver for Direct {
    async fn prepare(&self, client: usize, state: &mut ClientState) -> Result<()> {
        let mut kv = self.kv.clone();
        let resp = kv
            .put(format!("{}{}", self.prefix, key(client)), VALUE, None)
            .await?;
        state.last_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok(())
    }

    async fn op(&self, op: Op, client: usize, state: &mut ClientState) -> Result<()> {
        let k = format!("{}{}", self.prefix, key(client));
        let mut kv = self.kv.clone();
        match op {
            Op::Put => {
                let resp = kv.put(k, VALUE, None).await?;
                state.last_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            Op::Get => {
                let resp = kv.get(k, None).await?;
                if resp.kvs().is_empty() {
                    bail!("direct get: key missing");
                }
            }
            Op::AtomicPut => {
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        k.as_str(),
                        CompareOp::Equal,
                        state.last_rev,
                    )])
                    .and_then([TxnOp::put(k.as_str(), VALUE, None)])
                    .or_else([TxnOp::get(k.as_str(), None)]);
                let resp = kv.txn(txn).await?;
                if !resp.succeeded() {
                    bail!("direct compare-and-swap failed");
                }
                state.last_rev = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
        }
        Ok(())
    }
}

/// Throughput and latency of one run.
#[derive(Default, Clone)]
struct Stats {
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// CPU time this process (the client side) spent during the run.
    cpu: Duration,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.ops += other.ops;
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.cpu += other.cpu;
    }
    /// Client CPU time per operation.
    fn cpu_per_op(&self) -> Duration {
        self.cpu / (self.ops.max(1) as u32)
    }
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 * p).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1]
    }
}

/// Runs `op` from `clients` concurrent tasks for `duration`.
async fn run(driver: Arc<dyn Driver>, op: Op, clients: usize, duration: Duration) -> Result<Stats> {
    let mut states = Vec::with_capacity(clients);
    for c in 0..clients {
        let mut state = ClientState::default();
        driver.prepare(c, &mut state).await?;
        states.push(state);
    }
    let cpu_before = process_cpu();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(clients);
    for (c, mut state) in states.into_iter().enumerate() {
        let driver = driver.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            while Instant::now() < deadline {
                let t = Instant::now();
                driver.op(op, c, &mut state).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut stats = Stats::default();
    for t in tasks {
        let latencies = t.await.context("bench task panicked")??;
        stats.ops += latencies.len();
        stats.latencies.extend(latencies);
    }
    stats.elapsed = start.elapsed();
    stats.cpu = process_cpu().saturating_sub(cpu_before);
    Ok(stats)
}

struct Args {
    etcd: Option<String>,
    urls: Vec<(String, String)>,
    only: Option<Vec<String>>,
    seconds: f64,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        etcd: None,
        urls: Vec::new(),
        only: None,
        seconds: 1.5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--etcd" => args.etcd = Some(value()?),
            "--url" => {
                let v = value()?;
                let (name, url) = v.split_once('=').context("--url takes NAME=URL")?;
                args.urls.push((name.to_string(), url.to_string()));
            }
            "--only" => args.only = Some(value()?.split(',').map(str::to_string).collect()),
            "--seconds" => args.seconds = value()?.parse().context("--seconds")?,
            "-h" | "--help" => {
                println!(
                    "kv-bench [--etcd HOST:PORT] [--url NAME=URL]... [--only a,b] [--seconds S]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

/// Opens a store, retrying while a just-started server comes up.
async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match plexus_kv::open(url, OpenOptions::default()).await {
            Ok(store) => return Ok(store),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(%url, error = %e, "waiting for the store");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("open {url}")),
        }
    }
}

/// CPU time used so far by every thread of this process, from the scheduler's own accounting
/// (`/proc/self/task/*/schedstat`, nanoseconds). Unlike wall-clock throughput it does not
/// depend on what else runs on the machine, so it measures the client-side cost of a layer.
fn process_cpu() -> Duration {
    let mut total = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            if let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) {
                total += stat
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Duration::from_nanos(total)
}

/// The machine's 1-minute load average (the figures mean little on a busy machine).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn fmt_latency(d: Duration) -> String {
    if d >= Duration::from_millis(1) {
        format!("{:.2}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.1}us", d.as_secs_f64() * 1e6)
    }
}

fn line(backend: &str, op: Op, clients: usize, stats: &mut Stats) {
    let p50 = stats.percentile(0.50);
    let p99 = stats.percentile(0.99);
    println!(
        "{backend:<20} {:<11} clients={clients:<3} {:>10.0} ops/s  p50={:>9}  p99={:>9}",
        op.name(),
        stats.ops_per_sec(),
        fmt_latency(p50),
        fmt_latency(p99)
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let duration = Duration::from_secs_f64(args.seconds);
    let dir = tempfile::tempdir().context("temp dir for redb")?;
    let redb_path = dir.path().join("bench.db");
    let mut headline: Vec<(String, String)> = Vec::new();
    println!(
        "plexus-kv benchmark: {:.1} s per run (etcd: {ROUNDS} interleaved rounds of {:.2} s each for Plexus and for etcd-client), {}-byte values, clients = concurrent tasks on one store; load average {}",
        args.seconds,
        args.seconds / 4.0,
        VALUE.len(),
        load_average()
    );

    for (name, url) in backends(&args, &redb_path) {
        let store = match open(&url).await {
            Ok(store) => store,
            Err(e) => {
                // One backend down must not cost the others' figures.
                println!("\n== {name}: cannot open {url}: {e:#}; skipped");
                headline.push((format!("{name}_error"), "1".into()));
                continue;
            }
        };
        // The direct etcd-client loop, for etcd only.
        let direct: Option<Arc<dyn Driver>> = match (&args.etcd, name.as_str()) {
            (Some(endpoint), "etcd") => {
                // The same connection settings as the Plexus backend, so that the difference
                // is the layer's code alone.
                let timeout = OpenOptions::default().timeout;
                let options = etcd_client::ConnectOptions::new()
                    .with_connect_timeout(timeout)
                    .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10))
                    .with_keep_alive_while_idle(true);
                let client =
                    etcd_client::Client::connect([format!("http://{endpoint}")], Some(options))
                        .await
                        .context("etcd-client connect")?;
                Some(Arc::new(Direct {
                    kv: client.kv_client(),
                    prefix: "kv-bench-direct/".into(),
                }))
            }
            _ => None,
        };
        let plexus: Arc<dyn Driver> = Arc::new(Plexus(store.clone()));
        println!("\n== {name} ({})", store.url());
        let mut ratios = Vec::new();
        let mut cpu_shares: Vec<f64> = Vec::new();
        let mut put_ops = Vec::new();
        for clients in CLIENTS {
            for op in Op::ALL {
                match &direct {
                    None => {
                        let mut stats = run(plexus.clone(), op, clients, duration).await?;
                        line(&name, op, clients, &mut stats);
                        if op == Op::Put {
                            put_ops.push((clients, stats.ops_per_sec()));
                        }
                        headline.push((
                            format!("{name}_{}_c{clients}_ops", op.name()),
                            format!("{:.0}", stats.ops_per_sec()),
                        ));
                    }
                    Some(direct) => {
                        // Interleave short rounds of the two in ABBA order, so drift in the
                        // server (disk, compaction) and in the machine's load hits both alike;
                        // the ratio is the median of the rounds' ratios, robust to a burst of
                        // load during one round.
                        let (mut p, mut d) = (Stats::default(), Stats::default());
                        let round = duration / 4;
                        let mut round_ratios = Vec::new();
                        for r in 0..ROUNDS {
                            let plexus_first = matches!(r % 4, 0 | 3);
                            let (mut rp, mut rd) = (None, None);
                            for first in [plexus_first, !plexus_first] {
                                if first {
                                    rp = Some(run(plexus.clone(), op, clients, round).await?);
                                } else {
                                    rd = Some(run(direct.clone(), op, clients, round).await?);
                                }
                            }
                            if let (Some(rp), Some(rd)) = (rp, rd) {
                                round_ratios.push(rp.ops_per_sec() / rd.ops_per_sec());
                                p.merge(rp);
                                d.merge(rd);
                            }
                        }
                        round_ratios.sort_by(f64::total_cmp);
                        let ratio = round_ratios[round_ratios.len() / 2];
                        line(&name, op, clients, &mut p);
                        line("etcd-client direct", op, clients, &mut d);
                        let (p50p, p50d) = (p.percentile(0.5), d.percentile(0.5));
                        println!(
                            "{:<20} {:<11} clients={clients:<3} plexus/direct throughput = {ratio:.3} (median of {ROUNDS} rounds; layer cost {:+.1} %), p50 latency {:+.1} %",
                            "",
                            op.name(),
                            (1.0 - ratio) * 100.0,
                            (p50p.as_secs_f64() / p50d.as_secs_f64().max(1e-12) - 1.0) * 100.0
                        );
                        // The layer's own cost, free of the machine's load: the extra client CPU
                        // per operation, against the time one operation takes through the
                        // direct client (1 / its throughput).
                        let extra = p.cpu_per_op().as_secs_f64() - d.cpu_per_op().as_secs_f64();
                        let share = extra * d.ops_per_sec() * 100.0;
                        println!(
                            "{:<20} {:<11} clients={clients:<3} client CPU per op: plexus {:.1} us, direct {:.1} us: the layer adds {:+.1} us = {share:+.1} % of the time per op",
                            "",
                            op.name(),
                            p.cpu_per_op().as_secs_f64() * 1e6,
                            d.cpu_per_op().as_secs_f64() * 1e6,
                            extra * 1e6
                        );
                        cpu_shares.push(share);
                        ratios.push(ratio);
                        headline.push((
                            format!("{name}_{}_c{clients}_ops", op.name()),
                            format!("{:.0}", p.ops_per_sec()),
                        ));
                        headline.push((
                            format!("{name}_{}_c{clients}_p99_ms", op.name()),
                            format!("{:.2}", p.percentile(0.99).as_secs_f64() * 1e3),
                        ));
                    }
                }
            }
        }
        if name == "redb" {
            // Every redb put is a durable commit; with many clients they are grouped.
            let figures: Vec<String> = put_ops
                .iter()
                .map(|(c, ops)| format!("{c} client(s): {ops:.0}/s"))
                .collect();
            println!("redb durable commits: {}", figures.join(", "));
        }
        if !ratios.is_empty() {
            let min = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
            let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
            println!(
                "{name}: plexus/etcd-client throughput ratio: mean {mean:.3}, worst {min:.3} (the layer must cost < 10 %: {})",
                if min >= 0.9 { "yes" } else { "NO" }
            );
            headline.push((format!("{name}_vs_client_mean"), format!("{mean:.3}")));
            headline.push((format!("{name}_vs_client_worst"), format!("{min:.3}")));
            let worst_share = cpu_shares.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            println!(
                "{name}: the layer's client CPU is at most {worst_share:.1} % of the time per op through etcd-client (< 10 %: {})",
                if worst_share < 10.0 { "yes" } else { "NO" }
            );
            headline.push((
                format!("{name}_layer_cpu_pct_max"),
                format!("{worst_share:.1}"),
            ));
        }
        store.close().await?;
    }
    println!("\nload average at the end: {}", load_average());
    headline.push(("load_avg".into(), load_average()));
    let last: Vec<String> = headline.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("\n{}", last.join(" "));
    Ok(())
}
