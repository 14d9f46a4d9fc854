//! The daemon's datastores: its own (local) store, and the cluster store it shares with other
//! hosts (`--cluster-store`), as dockerd's classic flags set them up.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use plexus_cnm::{store_layout, Node};
use plexus_kv::{PutOptions, Store, StoreUrl};

/// The gossip port a host advertises when `--cluster-advertise` names none (libnetwork's).
pub const DEFAULT_ADVERTISE_PORT: u16 = 7946;

/// Backends that several hosts can share; an embedded store cannot.
fn is_shared(url: &StoreUrl) -> bool {
    matches!(url.scheme.as_str(), "etcd" | "zk" | "zookeeper")
}

/// Opens the daemon's own store. A shared backend (`--store etcd://…` given to several
/// hosts) is seen through this host's directory (`plexus/hosts/<host id>`), so no daemon
/// ever reads another's local records as its own, and reconciles or frees them.
pub async fn open_local(url: &str, host_id: &str) -> Result<Arc<dyn Store>> {
    let store = plexus_kv::open(url, plexus_kv::OpenOptions::default())
        .await
        .with_context(|| format!("opening store {url}"))?;
    if is_shared(&StoreUrl::parse(url)?) {
        return plexus_kv::prefixed(store, &format!("plexus/hosts/{host_id}"))
            .with_context(|| format!("opening store {url}"));
    }
    Ok(store)
}

/// `--cluster-store-opt KEY=VALUE`, with dockerd's keys: `discovery.heartbeat` and
/// `discovery.ttl` (seconds: how often this host refreshes its record in the cluster store,
/// and how long the record outlives a host that stopped refreshing it), `kv.cacertfile`,
/// `kv.certfile` and `kv.keyfile` (TLS to the cluster store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOpts {
    /// How often the host record is written again.
    pub heartbeat: Duration,
    /// The host record's time to live.
    pub ttl: Duration,
    /// TLS settings, when any `kv.*` file is given.
    pub tls: Option<plexus_kv::TlsOptions>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        // dockerd's defaults.
        Self {
            heartbeat: Duration::from_secs(20),
            ttl: Duration::from_secs(60),
            tls: None,
        }
    }
}

impl ClusterOpts {
    /// Parses the flag's values; errors name the flag and the key.
    pub fn parse(values: &[String]) -> Result<Self> {
        let mut opts = ClusterOpts::default();
        let seconds = |key: &str, v: &str| -> Result<Duration> {
            match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(Duration::from_secs(n)),
                _ => bail!(
                    "invalid --cluster-store-opt {key}={v:?}: a whole number of seconds above 0"
                ),
            }
        };
        for value in values {
            let (key, v) = value.split_once('=').ok_or_else(|| {
                anyhow!("invalid --cluster-store-opt {value:?}: expected KEY=VALUE")
            })?;
            match key {
                "discovery.heartbeat" => opts.heartbeat = seconds(key, v)?,
                "discovery.ttl" => opts.ttl = seconds(key, v)?,
                "kv.cacertfile" | "kv.certfile" | "kv.keyfile" => {
                    let path = PathBuf::from(v);
                    if !path.is_file() {
                        bail!("invalid --cluster-store-opt {key}: {v} is not a readable file");
                    }
                    let tls = opts.tls.get_or_insert_with(Default::default);
                    match key {
                        "kv.cacertfile" => tls.ca_file = Some(path),
                        "kv.certfile" => tls.cert_file = Some(path),
                        _ => tls.key_file = Some(path),
                    }
                }
                other => bail!(
                    "invalid --cluster-store-opt {other:?}: known keys are discovery.heartbeat, discovery.ttl, kv.cacertfile, kv.certfile, kv.keyfile"
                ),
            }
        }
        if opts.ttl <= opts.heartbeat {
            bail!(
                "invalid --cluster-store-opt: discovery.ttl ({} s) must be longer than discovery.heartbeat ({} s)",
                opts.ttl.as_secs(),
                opts.heartbeat.as_secs()
            );
        }
        Ok(opts)
    }
}

/// Opens the cluster store and checks that it answers; the error names the URL and the flag.
pub async fn open_cluster(url: &str, opts: &ClusterOpts) -> Result<Arc<dyn Store>> {
    let parsed =
        StoreUrl::parse(url).with_context(|| format!("invalid --cluster-store {url:?}"))?;
    if !is_shared(&parsed) {
        bail!(
            "invalid --cluster-store {url:?}: a {} store cannot be shared by hosts; use etcd:// or zk://",
            parsed.scheme
        );
    }
    let options = plexus_kv::OpenOptions {
        tls: opts.tls.clone(),
        ..Default::default()
    };
    let store = plexus_kv::open(url, options)
        .await
        .with_context(|| format!("--cluster-store {url}: cannot reach it"))?;
    store
        .exists(store_layout::GLOBAL_ROOT)
        .await
        .with_context(|| format!("--cluster-store {url}: it does not answer"))?;
    Ok(store)
}

/// Parses `--cluster-advertise ADDR[:PORT]` (an IP address, IPv6 in brackets with a port).
pub fn parse_advertise(value: &str) -> Result<SocketAddr> {
    let bad = |why: &str| anyhow!("invalid --cluster-advertise {value:?}: {why}");
    if let Ok(addr) = value.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(bad("the port must not be 0"));
        }
        return Ok(addr);
    }
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_ADVERTISE_PORT));
    }
    if let Some((host, port)) = value.rsplit_once(':') {
        if host.parse::<IpAddr>().is_ok() {
            return Err(bad(&format!(
                "the port {port:?} is not a number from 1 to 65535"
            )));
        }
    }
    Err(bad(
        "expected an IP address with an optional port, such as 192.0.2.10 or 192.0.2.10:7946",
    ))
}

/// Writes this host's record in the cluster store, to live `ttl` unless written again.
pub async fn announce(cluster: &Arc<dyn Store>, node: &Node, ttl: Duration) -> Result<()> {
    let value = serde_json::to_vec(node).context("encoding this host's record")?;
    cluster
        .put(
            &store_layout::node(&node.id),
            &value,
            PutOptions::with_ttl(ttl),
        )
        .await
        .with_context(|| format!("writing this host's record to {}", cluster.url()))?;
    Ok(())
}

/// Writes this host's record again every `opts.heartbeat`, for as long as the daemon runs;
/// a failed write is logged and tried again at the next beat (the record outlives a few).
pub fn heartbeat(
    cluster: Arc<dyn Store>,
    node: Node,
    opts: ClusterOpts,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(opts.heartbeat);
        tick.tick().await;
        let mut failing = false;
        loop {
            tick.tick().await;
            match announce(&cluster, &node, opts.ttl).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("cluster store answers again: host record refreshed");
                }
                Ok(()) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %format!("{e:#}"), "cannot refresh this host's record in the cluster store; retrying every heartbeat");
                    }
                    failing = true;
                }
            }
        }
    })
}

/// The host's name (`/proc/sys/kernel/hostname`), or its id when that cannot be read.
pub fn hostname(host_id: &str) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| host_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_opts() {
        let o = ClusterOpts::parse(&["discovery.heartbeat=5".into(), "discovery.ttl=15".into()])
            .unwrap();
        assert_eq!((o.heartbeat.as_secs(), o.ttl.as_secs()), (5, 15));
        assert_eq!(ClusterOpts::parse(&[]).unwrap(), ClusterOpts::default());
        for bad in [
            "discovery.heartbeat=0",
            "discovery.ttl=x",
            "nonsense=1",
            "novalue",
            "kv.cacertfile=/nonexistent/ca.pem",
            "discovery.ttl=10",
        ] {
            let e = ClusterOpts::parse(&[bad.to_string()])
                .unwrap_err()
                .to_string();
            assert!(e.contains("--cluster-store-opt"), "{bad}: {e}");
        }
    }

    #[test]
    fn advertise_forms() {
        assert_eq!(
            parse_advertise("192.0.2.1").unwrap(),
            "192.0.2.1:7946".parse().unwrap()
        );
        assert_eq!(
            parse_advertise("192.0.2.1:2376").unwrap(),
            "192.0.2.1:2376".parse().unwrap()
        );
        assert_eq!(
            parse_advertise("[2001:db8::1]:2376").unwrap(),
            "[2001:db8::1]:2376".parse().unwrap()
        );
        for bad in ["", "eth0", "192.0.2.1:x", "192.0.2.1:0", "300.1.1.1"] {
            let e = parse_advertise(bad).unwrap_err().to_string();
            assert!(e.contains("--cluster-advertise"), "{bad}: {e}");
        }
    }
}
