//! The cluster's gossip inside plexusd (with `--cluster-store` and `--cluster-advertise`):
//! plexus-gossip's runtime bound on the advertised address (libnetwork's port 7946 unless
//! the flag names another), seeded by `--cluster-join` and by the other hosts' records in the
//! cluster store, with libnetwork's timings ([`plexus_gossip::Config::default`]), sealed
//! with the cluster's keyring kept in the cluster store ([`keys`]).
//!
//! - [`plane::GossipControlPlane`]: the [`ControlPlane`](plexus_cnm::ControlPlane) global
//!   drivers publish through;
//! - [`plane::route`]: the one task that carries every table change of the networks this
//!   host joined to [`Controller::table_event`](plexus_cnm::Controller::table_event), in
//!   order, and every member that comes or dies to the drivers' `discover_new` /
//!   `discover_delete` (with gossip, membership comes from SWIM, not from the store's host
//!   records);
//! - [`service`]: `plexus cluster ls|inspect|key rotate` for the API;
//! - [`metrics`]: members, messages, decryption failures, table entries on `/metrics`.

pub mod keys;
pub mod metrics;
pub mod plane;
pub mod service;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use plexus_cnm::{store_layout, Node};
use plexus_gossip::runtime::GossipHandle;
use plexus_gossip::{Config, MemberState};
use plexus_kv::Store;

use keys::KeyringDoc;

/// How long to wait before watching the keyring again after the watch broke.
const REWATCH_AFTER: Duration = Duration::from_secs(1);
/// How often the monitor reads the runtime's counters (metrics, refused frames).
const MONITOR_EVERY: Duration = Duration::from_secs(1);
/// How often refused frames are logged at most (they are counted always).
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(30);
/// How long a host that was given seeds waits for any of them before saying so.
const JOIN_WARN_AFTER: Duration = Duration::from_secs(10);

/// Parses `--cluster-join PEER[,PEER…]` (each `IP[:PORT]`, port 7946 by default).
pub fn parse_join(values: &[String]) -> Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for value in values {
        for peer in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let addr = crate::cluster::parse_advertise(peer)
                .map_err(|_| anyhow!("invalid --cluster-join {peer:?}: expected IP[:PORT], such as 192.0.2.10 or 192.0.2.10:7946"))?;
            out.push(addr);
        }
    }
    Ok(out)
}

/// Refuses an advertised address that is not one of this host's (binding to it fails).
pub fn check_local(advertise: SocketAddr) -> Result<()> {
    match std::net::UdpSocket::bind(SocketAddr::new(advertise.ip(), 0)) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => bail!(
            "invalid --cluster-advertise {advertise}: {} is not an address of this host",
            advertise.ip()
        ),
        Err(e) => Err(e).with_context(|| format!("checking --cluster-advertise {advertise}")),
    }
}

/// The worst time from a host's death until every other host has declared it dead, with
/// `cfg`'s timings among `members` hosts: a probe round, its timeout, then the longest
/// Lifeguard suspicion (no confirmation shortens it).
pub fn failure_detection_bound(cfg: &Config, members: usize) -> Duration {
    let scale = (members.max(1) as f64).log10().max(1.0);
    let base = cfg.probe_interval.as_secs_f64() * f64::from(cfg.suspicion_mult) * scale;
    let longest = base * f64::from(cfg.suspicion_max_timeout_mult);
    cfg.probe_interval + cfg.probe_timeout + Duration::from_secs_f64(longest)
}

/// The running gossip of this host.
pub struct Gossip {
    /// The runtime.
    pub handle: GossipHandle,
    /// The cluster store (keyring, host records).
    pub store: Arc<dyn Store>,
    /// This host's id.
    pub host_id: String,
    /// The timings.
    pub config: Config,
    /// The keyring this host applied last.
    keyring: Mutex<KeyringDoc>,
    /// `--cluster-join`.
    seeds: Vec<SocketAddr>,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("addr", &self.handle.addr())
            .field("host_id", &self.host_id)
            .finish()
    }
}

impl Gossip {
    /// Reads (or makes) the cluster's keyring, binds on `advertise` and joins through
    /// `seeds` and the hosts the cluster store lists.
    pub async fn start(
        store: Arc<dyn Store>,
        host_id: &str,
        advertise: SocketAddr,
        seeds: &[SocketAddr],
        config: Config,
    ) -> Result<Arc<Self>> {
        check_local(advertise)?;
        let (doc, _) = keys::load_or_create(&store).await?;
        let handle = GossipHandle::start(advertise, config.clone(), doc.keyring()?)
            .await
            .with_context(|| format!("starting gossip on --cluster-advertise {advertise}"))?;
        let gossip = Arc::new(Self {
            handle,
            store,
            host_id: host_id.to_string(),
            config,
            keyring: Mutex::new(doc.clone()),
            seeds: seeds.to_vec(),
        });
        keys::ack(&gossip.store, host_id, advertise, doc.version).await?;
        let mut all: BTreeSet<SocketAddr> = seeds.iter().copied().collect();
        all.extend(gossip.store_seeds().await);
        all.remove(&advertise);
        let all: Vec<SocketAddr> = all.into_iter().collect();
        tracing::info!(%advertise, seeds = ?all, keys = ?doc.ids(), "gossip started");
        if !all.is_empty() {
            gossip.handle.join(&all);
        }
        Ok(gossip)
    }

    /// This host's gossip address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    /// The keyring this host runs now.
    pub fn keyring(&self) -> KeyringDoc {
        self.keyring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The other hosts' advertised addresses, from their records in the cluster store.
    async fn store_seeds(&self) -> Vec<SocketAddr> {
        match self.store.list(store_layout::NODES).await {
            Ok(pairs) => pairs
                .iter()
                .filter_map(|p| serde_json::from_slice::<Node>(&p.value).ok())
                .filter(|n| n.id != self.host_id)
                .filter_map(|n| n.advertise)
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the hosts' records for gossip seeds");
                Vec::new()
            }
        }
    }

    /// Members that are alive or suspect (this host included).
    pub fn live(&self) -> BTreeSet<SocketAddr> {
        let mut live: BTreeSet<SocketAddr> = self
            .handle
            .members()
            .into_iter()
            .filter(|m| keys::is_live(m.state))
            .map(|m| m.addr)
            .collect();
        live.insert(self.addr());
        live
    }

    /// Applies a keyring read from the store: adds new keys, switches the primary, then
    /// removes keys no longer listed (in that order, so nothing in flight is refused), and
    /// acknowledges the version.
    pub async fn apply_keyring(&self, doc: KeyringDoc) -> Result<()> {
        let (wanted, primary) = doc.parsed()?;
        let (old, _) = self.keyring().parsed()?;
        for (id, key) in &wanted {
            self.handle
                .add_key(*key)
                .map_err(|e| anyhow!("adding gossip key {id:?}: {e}"))?;
        }
        self.handle
            .use_key(&primary)
            .map_err(|e| anyhow!("using gossip key {:?}: {e}", doc.primary))?;
        for (id, key) in &old {
            if !wanted.iter().any(|(_, k)| k == key) {
                self.handle
                    .remove_key(key)
                    .map_err(|e| anyhow!("removing gossip key {id:?}: {e}"))?;
            }
        }
        let version = doc.version;
        tracing::info!(version, keys = ?doc.ids(), "gossip keyring applied");
        *self.keyring.lock().unwrap_or_else(|e| e.into_inner()) = doc;
        keys::ack(&self.store, &self.host_id, self.addr(), version).await
    }

    /// Follows the keyring in the cluster store for as long as the daemon runs.
    pub async fn follow_keyring(self: Arc<Self>) {
        loop {
            let mut watch = match self.store.watch(keys::KEYRING).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the gossip keyring; trying again");
                    tokio::time::sleep(REWATCH_AFTER).await;
                    continue;
                }
            };
            while let Some(item) = watch.next().await {
                match item {
                    Ok(Some(pair)) => {
                        let applied = self.keyring().version;
                        let result = match KeyringDoc::decode(&pair.value) {
                            Ok(doc) if doc.version == applied => Ok(()),
                            Ok(doc) => self.apply_keyring(doc).await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = result {
                            tracing::error!(error = %format!("{e:#}"), "cannot apply the gossip keyring; keeping the current one");
                        }
                    }
                    Ok(None) => tracing::error!(
                        key = keys::KEYRING,
                        "the gossip keyring was deleted from the cluster store; keeping the current one"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the gossip keyring broke; watching again");
                        break;
                    }
                }
            }
            tokio::time::sleep(REWATCH_AFTER).await;
        }
    }

    /// Every second: carries the runtime's counters to the metrics, and logs frames refused
    /// because no key of this host's keyring opens them (a host with another key), and a
    /// host still alone long after it was given seeds.
    pub async fn monitor(self: Arc<Self>, metrics: Arc<metrics::GossipMetrics>) {
        let mut tick = tokio::time::interval(MONITOR_EVERY);
        let started = tokio::time::Instant::now();
        let mut refused_seen = 0;
        let mut refused_logged: Option<tokio::time::Instant> = None;
        let mut warned_alone = false;
        loop {
            tick.tick().await;
            let stats = self.handle.stats();
            metrics.observe(&self.handle, &stats);
            let quiet = refused_logged.is_some_and(|t| t.elapsed() < REFUSED_LOG_EVERY);
            if stats.dropped_unauthenticated > refused_seen && !quiet {
                refused_logged = Some(tokio::time::Instant::now());
                tracing::warn!(
                    refused = stats.dropped_unauthenticated - refused_seen,
                    total = stats.dropped_unauthenticated,
                    "gossip frames refused: no key of this host's keyring opens them (a host with another cluster key, or tampering)"
                );
                refused_seen = stats.dropped_unauthenticated;
            }
            let alone = self
                .handle
                .members()
                .iter()
                .all(|m| m.addr == self.addr() || m.state != MemberState::Alive);
            if alone && !warned_alone && started.elapsed() > JOIN_WARN_AFTER {
                let mut seeds = self.seeds.clone();
                seeds.extend(self.store_seeds().await);
                if !seeds.is_empty() {
                    tracing::warn!(?seeds, "no other host answers gossip: check the underlay, port and that every host shares the cluster store's keyring");
                    warned_alone = true;
                }
            }
            if !alone {
                warned_alone = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_flag_forms() {
        let v =
            parse_join(&["192.0.2.1, 192.0.2.2:8000".into(), "[2001:db8::1]:7".into()]).unwrap();
        assert_eq!(
            v,
            vec![
                "192.0.2.1:7946".parse().unwrap(),
                "192.0.2.2:8000".parse().unwrap(),
                "[2001:db8::1]:7".parse().unwrap()
            ]
        );
        for bad in ["eth0", "192.0.2.1:x", "1.2.3.4:0"] {
            let e = parse_join(&[bad.into()]).unwrap_err().to_string();
            assert!(e.contains("--cluster-join"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_foreign_advertise_address_is_refused_naming_the_flag() {
        check_local("127.0.0.1:7946".parse().unwrap()).unwrap();
        let e = check_local("192.0.2.77:7946".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--cluster-advertise") && e.contains("192.0.2.77"),
            "{e}"
        );
    }

    #[test]
    fn detection_bound_follows_the_timings() {
        let cfg = Config::default();
        // 1 s probe + 0.5 s timeout + 6 × 4 × 1 s suspicion.
        assert_eq!(
            failure_detection_bound(&cfg, 3),
            Duration::from_millis(25_500)
        );
    }
}

#[cfg(test)]
#[path = "rotate_tests.rs"]
mod rotate_tests;
