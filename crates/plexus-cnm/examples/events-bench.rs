//! Event delivery through the real controller on the embedded redb store: sandboxes are
//! recorded and removed at a fixed rate (each one durable transaction with one event), and a
//! subscriber measures from the moment each commit returned to the moment it holds the event.
//! The last line holds the figures as `key=value` pairs. `bench/events/run.sh` runs it.
//!
//! `--rate N` events per second (1000), `--seconds S` (10), `--db PATH` (a temp file).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use plexus_cnm::{Controller, ControllerConfig, DriverRegistry};
use plexus_ipam::{BuiltinIpam, IpamConfig};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut rate = 1000u64;
    let mut seconds = 10u64;
    let mut db = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--rate" => rate = value("--rate")?.parse().context("--rate")?,
            "--seconds" => seconds = value("--seconds")?.parse().context("--seconds")?,
            "--db" => db = Some(value("--db")?),
            other => bail!("unknown argument {other:?}: --rate N, --seconds S, --db PATH"),
        }
    }
    let dir = tempfile::tempdir()?;
    let db = db.unwrap_or_else(|| dir.path().join("state.db").display().to_string());
    let store = plexus_kv::open(&format!("redb://{db}"), Default::default()).await?;
    let ipam = BuiltinIpam::open(store.clone(), IpamConfig::new("bench")).await?;
    let controller = Arc::new(Controller::new(
        store.clone(),
        Arc::new(ipam),
        DriverRegistry::new(),
        ControllerConfig::default(),
    ));
    let total = (rate * seconds) as usize & !1;
    let mut sub = controller.subscribe(None).await?;
    let subscriber = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total);
        let mut last = 0;
        while latencies.len() < total {
            let Some(e) = sub.next().await? else {
                bail!("the event stream closed");
            };
            let at = Instant::now();
            if e.revision != last + 1 && last != 0 {
                bail!("revision {} after {last}", e.revision);
            }
            last = e.revision;
            if let Some(committed) = e.committed_at {
                latencies.push(at.duration_since(committed));
            }
        }
        Ok::<_, anyhow::Error>(latencies)
    });
    // One operation per tick; the controller runs them one at a time, so a commit slower
    // than the tick shows as a lower achieved rate.
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut commits = Vec::with_capacity(total);
    let start = Instant::now();
    for i in 0..total / 2 {
        tick.tick().await;
        let t = Instant::now();
        let s = controller
            .add_sandbox(&format!("s{i}"), "/bench", false)
            .await?;
        commits.push(t.elapsed());
        tick.tick().await;
        let t = Instant::now();
        controller.delete_sandbox(&s.id).await?;
        commits.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    let mut latencies = tokio::time::timeout(Duration::from_secs(30), subscriber)
        .await
        .context("the subscriber did not get every event")???;
    latencies.sort();
    commits.sort();
    println!(
        "{total} events in {elapsed:.2?}; commit-to-subscriber over {} events",
        latencies.len()
    );
    println!(
        "events_per_s={:.0} p50_us={:.1} p99_us={:.1} max_us={:.1} commit_p50_us={:.0} commit_p99_us={:.0}",
        total as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        percentile(&commits, 0.50),
        percentile(&commits, 0.99),
    );
    store.close().await?;
    Ok(())
}
