//! A standalone gossip node driven by line commands on stdin (used by the multi-process
//! tests and for manual experiments).
//!
//! ```text
//! gossip-node --bind 127.0.0.2:7946 [--join 127.0.0.1:7946,...] --key <64 hex>
//!             [--network NAME] [--gossip-ms N] [--probe-ms N] [--probe-timeout-ms N]
//!             [--sync-ms N] [--suspicion-mult N]
//! ```
//! Commands: `put NET TABLE KEY VALUE`, `del NET TABLE KEY`, `get NET TABLE KEY`,
//! `entries NET TABLE`, `members`, `stats`, `leave`. Each prints one line.

use std::net::SocketAddr;
use std::time::Duration;

use plexus_gossip::runtime::GossipHandle;
use plexus_gossip::{Config, Keyring, MemberState};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn ms(args: &[String], name: &str, default: Duration) -> Duration {
    arg(args, name)
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(default)
}

fn state(s: MemberState) -> &'static str {
    match s {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "dead",
        MemberState::Left => "left",
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let bind: SocketAddr = arg(&args, "--bind")
        .unwrap_or_else(|| "127.0.0.1:7946".into())
        .parse()?;
    let key = Keyring::parse_key(
        &arg(&args, "--key").ok_or_else(|| anyhow::anyhow!("--key is required"))?,
    )?;
    let d = Config::default();
    let cfg = Config {
        gossip_interval: ms(&args, "--gossip-ms", d.gossip_interval),
        probe_interval: ms(&args, "--probe-ms", d.probe_interval),
        probe_timeout: ms(&args, "--probe-timeout-ms", d.probe_timeout),
        sync_interval: ms(&args, "--sync-ms", d.sync_interval),
        join_retry: ms(&args, "--join-retry-ms", d.join_retry),
        suspicion_mult: arg(&args, "--suspicion-mult")
            .and_then(|v| v.parse().ok())
            .unwrap_or(d.suspicion_mult),
        ..d
    };
    let node = GossipHandle::start(bind, cfg, Keyring::new(key)).await?;
    if let Some(net) = arg(&args, "--network") {
        node.join_network(&net)?;
    }
    if let Some(j) = arg(&args, "--join") {
        let seeds: Vec<SocketAddr> = j.split(',').filter_map(|s| s.parse().ok()).collect();
        node.join(&seeds);
    }
    let mut out = tokio::io::stdout();
    out.write_all(format!("ready {}\n", node.addr()).as_bytes())
        .await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let w: Vec<&str> = line.split_whitespace().collect();
        let reply = match w.as_slice() {
            ["put", net, table, key, value] => match node.put(net, table, key, value.as_bytes()) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("err {e}"),
            },
            ["del", net, table, key] => match node.delete(net, table, key) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("err {e}"),
            },
            ["get", net, table, key] => match node.get(net, table, key) {
                Some(v) => format!("value {}", String::from_utf8_lossy(&v)),
                None => "none".to_string(),
            },
            ["entries", net, table] => {
                let mut v: Vec<String> = node
                    .entries(net, table)
                    .into_iter()
                    .map(|(k, v, _)| format!("{k}={}", String::from_utf8_lossy(&v)))
                    .collect();
                v.sort();
                format!("entries {}", v.join(" "))
            }
            ["members"] => {
                let v: Vec<String> = node
                    .members()
                    .into_iter()
                    .map(|m| format!("{}={}", m.addr, state(m.state)))
                    .collect();
                format!("members {}", v.join(" "))
            }
            ["stats"] => {
                let s = node.stats();
                format!(
                    "stats rx_datagrams={} dropped_unauthenticated={} dropped_replay={} dropped_malformed={} dropped_oversize={} local_health={}",
                    s.rx_datagrams,
                    s.dropped_unauthenticated,
                    s.dropped_replay,
                    s.dropped_malformed,
                    s.dropped_oversize,
                    node.local_health()
                )
            }
            ["leave"] => {
                node.leave(Duration::from_millis(500)).await;
                out.write_all(b"bye\n").await?;
                out.flush().await?;
                return Ok(());
            }
            _ => "err unknown command".to_string(),
        };
        out.write_all(reply.as_bytes()).await?;
        out.write_all(b"\n").await?;
        out.flush().await?;
    }
    node.shutdown().await;
    Ok(())
}
