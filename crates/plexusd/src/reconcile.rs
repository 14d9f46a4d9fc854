//! Reconciliation as the daemon runs it: at start-up (every driver through the controller,
//! then the sandbox namespace folder and IPAM, before the API serves), and periodically in a
//! background task that repairs drift and never gives up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use plexus_api_types::CNI_CONTAINER_LABEL;
use plexus_cnm::{Controller, Endpoint, Network, ReconcileMode, ReconcileReport, Sandbox};
use plexus_ipam::{BuiltinIpam, Ipam, LOCAL_SPACE};

use crate::metrics::ReconcileMetrics;

/// Parses `--reconcile-interval`: a number with a unit (`500ms`, `5s`, `2m`, `1h`), or `0`
/// (off: `None`).
pub fn parse_interval(value: &str) -> Result<Option<Duration>> {
    let bad = |why: &str| {
        anyhow::anyhow!(
            "invalid --reconcile-interval {value:?}: {why} (such as 5s, 500ms, 1m, or 0 for off)"
        )
    };
    let v = value.trim();
    if v == "0" {
        return Ok(None);
    }
    let split = v
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| bad("a unit is missing"))?;
    let (number, unit) = v.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad("not a number"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(bad("the unit must be ms, s, m or h")),
    };
    Ok((!d.is_zero()).then_some(d))
}

/// Logs what a pass changed, per driver.
fn log_report(mode: ReconcileMode, report: &ReconcileReport) {
    for (driver, done) in &report.drivers {
        if !(done.networks.is_empty()
            && done.endpoints.is_empty()
            && done.repaired.is_empty()
            && done.removed.is_empty())
        {
            tracing::info!(
                ?mode,
                driver = %driver,
                networks = ?done.networks,
                endpoints = ?done.endpoints,
                repaired = ?done.repaired,
                removed = ?done.removed,
                "reconciled with the store"
            );
        }
    }
    // Failed drivers are logged by the controller, which goes on with the others.
}

/// Makes the kernel and IPAM match the store's records before the API serves: every
/// driver's objects (rolling back endpoints a crash cut short), the sandbox namespaces under
/// `netns_dir`, and IPAM's pools and addresses. A driver that cannot be reconciled stops the
/// start. What it repairs is counted in `metrics`.
pub async fn startup(
    controller: &Controller,
    ipam: &BuiltinIpam,
    netns_dir: &Path,
    metrics: &ReconcileMetrics,
) -> Result<()> {
    let began = std::time::Instant::now();
    let report = controller.reconcile(ReconcileMode::Startup).await;
    metrics.pass(
        ReconcileMode::Startup,
        began.elapsed(),
        report.as_ref().ok(),
    );
    let report = report.context("start-up reconciliation")?;
    log_report(ReconcileMode::Startup, &report);
    if let Some((driver, error)) = report.failed.iter().next() {
        bail!("start-up reconciliation of the {driver} driver: {error}");
    }
    let mut sandboxes = controller.sandboxes().await?;
    let released = release_cni_orphans(controller, &mut sandboxes).await;
    metrics.repaired(ReconcileMode::Startup, "cni_attachment", released);
    for s in &sandboxes {
        if !Path::new(&s.key).exists() {
            tracing::warn!(sandbox = %s.name, netns = %s.key, "the sandbox's namespace is gone (reboot?); remove the sandbox and create it again");
        }
    }
    // Namespaces under our own netns dir that no sandbox owns were made by a daemon that
    // died before recording them: remove them.
    let owned: BTreeSet<PathBuf> = sandboxes
        .iter()
        .filter(|s| s.owned_netns)
        .map(|s| PathBuf::from(&s.key))
        .collect();
    let mut orphans = 0;
    if let Ok(entries) = std::fs::read_dir(netns_dir) {
        for entry in entries.flatten() {
            if !owned.contains(&entry.path()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                match plexus_sys::netns::Netns::delete(netns_dir, &name) {
                    Ok(()) => {
                        orphans += 1;
                        tracing::info!(netns = %entry.path().display(), "removed an orphan namespace")
                    }
                    Err(e) => {
                        tracing::warn!(netns = %entry.path().display(), error = %e, "cannot remove an orphan namespace")
                    }
                }
            }
        }
    }
    let networks = controller.networks().await?;
    let mut endpoints = Vec::new();
    for n in &networks {
        endpoints.extend(controller.endpoints(&n.id).await?);
    }
    tracing::info!(
        networks = networks.len(),
        endpoints = endpoints.len(),
        rolled_back = report.forgotten.len(),
        "kernel reconciled with the store"
    );
    metrics.repaired(ReconcileMode::Startup, "orphan_namespace", orphans);
    // Services' virtual IPs are held as endpoints' addresses are.
    let vips: Vec<(String, IpAddr)> = controller
        .services()
        .await?
        .iter()
        .flat_map(|s| s.vips.iter())
        .map(|v| (v.pool_id.clone(), v.addr.addr()))
        .collect();
    // What dockerd holds through the Docker plugin is held too, until dockerd releases it.
    let docker = crate::docker_plugin::held_allocations(controller.datastore().local_store())
        .await
        .map_err(|e| anyhow::anyhow!("reading the Docker plugin's records: {e}"))?;
    let (pools, addresses) = reconcile_ipam(ipam, &networks, &endpoints, &vips, &docker).await?;
    metrics.repaired(ReconcileMode::Startup, "ipam_pool", pools);
    metrics.repaired(ReconcileMode::Startup, "ipam_address", addresses);
    Ok(())
}

/// CNI's garbage collection as plexusd can run it alone: a sandbox the CNI plugin made
/// (labelled [`CNI_CONTAINER_LABEL`]) whose namespace is gone (the runtime removed it and its
/// DEL never came) is removed, endpoints, addresses and all; the namespace was the runtime's,
/// so there is nothing else. Those removed leave `sandboxes`; returns how many.
async fn release_cni_orphans(controller: &Controller, sandboxes: &mut Vec<Sandbox>) -> usize {
    let mut released = 0;
    let mut kept = Vec::with_capacity(sandboxes.len());
    for s in sandboxes.drain(..) {
        let cni = s.labels.contains_key(CNI_CONTAINER_LABEL);
        if !cni || s.owned_netns || namespace_alive(&s.key) {
            kept.push(s);
            continue;
        }
        match controller.remove_sandbox(&s.id).await {
            Ok(_) => {
                released += 1;
                tracing::info!(sandbox = %s.name, netns = %s.key, "released a CNI attachment whose namespace is gone");
            }
            Err(e) => {
                tracing::warn!(sandbox = %s.name, netns = %s.key, error = %e, "cannot release a CNI attachment whose namespace is gone");
                kept.push(s);
            }
        }
    }
    *sandboxes = kept;
    released
}

/// Whether `path` still names a network namespace (a file left where a namespace was
/// unmounted does not).
fn namespace_alive(path: &str) -> bool {
    match plexus_sys::netns::Netns::open(Path::new(path)) {
        Ok(_) => true,
        Err(plexus_sys::SysError::Invalid { .. }) => false,
        Err(plexus_sys::SysError::Netns { source, .. }) => {
            source.kind() != std::io::ErrorKind::NotFound
        }
        // Anything else: not sure it is gone, so keep it.
        Err(_) => true,
    }
}

/// Runs a periodic reconciliation every `interval` until the runtime stops: each pass repairs
/// what was deleted behind Plexus's back and logs it; a failed pass is logged and the next
/// interval tries again. An endpoint that cannot be repaired is logged once, not every pass.
/// Every pass is counted in `metrics`.
pub fn spawn_periodic(
    controller: Arc<Controller>,
    interval: Duration,
    metrics: ReconcileMetrics,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: start-up reconciliation just ran.
        ticks.tick().await;
        let mut unrepaired: BTreeMap<String, String> = BTreeMap::new();
        loop {
            ticks.tick().await;
            let began = std::time::Instant::now();
            let result = controller.reconcile(ReconcileMode::Periodic).await;
            metrics.pass(
                ReconcileMode::Periodic,
                began.elapsed(),
                result.as_ref().ok(),
            );
            match result {
                Ok(report) => {
                    tracing::debug!(
                        took_ms = began.elapsed().as_secs_f64() * 1e3,
                        "periodic reconciliation pass"
                    );
                    log_report(ReconcileMode::Periodic, &report);
                    let now: BTreeMap<String, String> = report
                        .drivers
                        .values()
                        .flat_map(|d| d.unrepaired.clone())
                        .collect();
                    for (endpoint, why) in &now {
                        if unrepaired.get(endpoint) != Some(why) {
                            tracing::warn!(%endpoint, %why, "cannot repair the endpoint's data plane; disconnect it or remove its sandbox");
                        }
                    }
                    unrepaired = now;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "periodic reconciliation failed; trying again next interval")
                }
            }
        }
    })
}

/// Makes IPAM match the records: releases local-space pools no network uses and addresses
/// of used pools that no endpoint, gateway, aux address, service's virtual IP or dockerd
/// (through the Docker plugin, `docker`: pools with their addresses) holds — what a crash between an
/// allocation and its record (or a record's removal and the release) leaves. Runs before the
/// API serves; it assumes no other daemon allocates in this store's local space meanwhile.
/// Returns how many pools and addresses it released.
async fn reconcile_ipam(
    ipam: &BuiltinIpam,
    networks: &[Network],
    endpoints: &[Endpoint],
    vips: &[(String, IpAddr)],
    docker: &BTreeMap<String, Vec<IpAddr>>,
) -> Result<(usize, usize)> {
    let mut held: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
    for (pool, addrs) in docker {
        held.entry(pool.as_str())
            .or_default()
            .extend(addrs.iter().copied());
    }
    for pool in networks.iter().flat_map(|n| n.ipv4.iter().chain(&n.ipv6)) {
        let fixed = held.entry(pool.pool_id.as_str()).or_default();
        fixed.extend(pool.gateway.map(|g| g.addr()));
        fixed.extend(pool.aux_addresses.values().copied());
    }
    for ep in endpoints {
        let addrs = ep.ipv4.iter().chain(ep.ipv6.iter());
        for (pool, addr) in ep.pool_ids.iter().zip(addrs) {
            held.entry(pool.as_str()).or_default().insert(addr.addr());
        }
    }
    for (pool, addr) in vips {
        held.entry(pool.as_str()).or_default().insert(*addr);
    }
    let (mut pools, mut addrs) = (0, 0);
    for (pool_id, _, owner) in ipam.pools(LOCAL_SPACE).context("listing IPAM pools")? {
        let Some(keep) = held.get(pool_id.as_str()) else {
            match ipam.release_pool(&pool_id).await {
                Ok(()) => pools += 1,
                Err(e) => {
                    tracing::warn!(pool = %pool_id, %owner, error = %e, "cannot release a pool no network uses")
                }
            }
            continue;
        };
        for addr in ipam.allocated(&pool_id).context("listing IPAM addresses")? {
            if keep.contains(&addr) {
                continue;
            }
            match ipam.release_address(&pool_id, addr).await {
                Ok(()) => addrs += 1,
                Err(e) => {
                    tracing::warn!(pool = %pool_id, %addr, error = %e, "cannot release an address no endpoint holds")
                }
            }
        }
    }
    if pools + addrs > 0 {
        tracing::info!(
            pools,
            addresses = addrs,
            "released IPAM allocations the store's records do not hold"
        );
    }
    Ok((pools, addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_and_bad_ones_name_the_flag() {
        assert_eq!(
            parse_interval("5s").ok(),
            Some(Some(Duration::from_secs(5)))
        );
        assert_eq!(
            parse_interval("500ms").ok(),
            Some(Some(Duration::from_millis(500)))
        );
        assert_eq!(
            parse_interval("2m").ok(),
            Some(Some(Duration::from_secs(120)))
        );
        assert_eq!(parse_interval("0").ok(), Some(None));
        assert_eq!(parse_interval("0s").ok(), Some(None));
        for bad in ["", "5", "s", "5x", "-1s", "1.5s"] {
            let e = parse_interval(bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|m| m.contains("--reconcile-interval")),
                "{bad:?}: {e:?}"
            );
        }
    }
}
