//! The daemon's own metrics (its stores and its reconciler), and `--metrics-addr`.
//!
//! The API's metrics (requests, networks, endpoints, sandboxes) are plexus-api's; everything
//! goes into one [`Registry`] that `/metrics` answers with, on the API socket and on
//! `--metrics-addr`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use plexus_cnm::{ReconcileMode, ReconcileReport};
use plexus_kv::{KvError, Store, StoreObserver, StoreOp};
use plexus_metrics::{
    latency_family, Counter, Family, Gauge, HistogramFamily, Info, Registry, Unit,
};

/// Parses `--metrics-addr` and binds it, so that an address that is malformed or cannot be
/// bound stops the daemon before it changes anything; the error names the flag and the
/// address.
pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener> {
    let parsed: SocketAddr = addr.parse().map_err(|e| {
        anyhow!("invalid --metrics-addr {addr:?}: {e} (such as 127.0.0.1:9323 or [::1]:9323)")
    })?;
    tokio::net::TcpListener::bind(parsed)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {parsed}"))
}

/// `plexus_build_info{version}`: 1, with the daemon's version as a label.
pub fn register_build_info(registry: &Registry) -> Result<()> {
    registry
        .register(
            "build",
            "The plexusd build; the value is always 1",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        )
        .context("registering plexus_build_info")
}

/// Store operations' latency and errors, by store (`local`, `cluster`) and operation.
#[derive(Clone)]
pub struct StoreMetrics {
    duration: HistogramFamily<[(&'static str, &'static str); 2]>,
    errors: Family<[(&'static str, &'static str); 3], Counter>,
}

impl StoreMetrics {
    /// Registers the store families.
    pub fn register(registry: &Registry) -> Result<Self> {
        let m = Self {
            duration: latency_family(),
            errors: Family::default(),
        };
        registry
            .register_with_unit(
                "store_operation_duration",
                "Time a store operation took, by store (local, cluster) and operation; a watch until its stream is open",
                Unit::Seconds,
                m.duration.clone(),
            )
            .context("registering the store's metrics")?;
        registry
            .register(
                "store_errors",
                "Store operations that failed, by store, operation and error kind (not_found, exists, modified and conflict are ordinary answers; unavailable, timeout, backend and closed are trouble)",
                m.errors.clone(),
            )
            .context("registering the store's metrics")?;
        Ok(m)
    }

    /// `store`, with its operations counted under the label `store=<name>`.
    pub fn wrap(&self, store: Arc<dyn Store>, name: &'static str) -> Arc<dyn Store> {
        plexus_kv::observed(
            store,
            Arc::new(Observer {
                store: name,
                metrics: self.clone(),
            }),
        )
    }

    fn error(&self, store: &'static str, op: StoreOp, error: &KvError) {
        self.errors
            .get_or_create(&[
                ("store", store),
                ("operation", op.as_str()),
                ("kind", error.kind()),
            ])
            .inc();
    }
}

struct Observer {
    store: &'static str,
    metrics: StoreMetrics,
}

impl StoreObserver for Observer {
    fn observe(&self, op: StoreOp, elapsed: Duration, error: Option<&KvError>) {
        self.metrics
            .duration
            .get_or_create(&[("store", self.store), ("operation", op.as_str())])
            .observe(elapsed.as_secs_f64());
        if let Some(e) = error {
            self.metrics.error(self.store, op, e);
        }
    }

    fn stream_error(&self, op: StoreOp, error: &KvError) {
        self.metrics.error(self.store, op, error);
    }
}

fn mode_name(mode: ReconcileMode) -> &'static str {
    match mode {
        ReconcileMode::Startup => "startup",
        ReconcileMode::Periodic => "periodic",
    }
}

/// The reconciler's passes, their duration, and what they repaired.
#[derive(Clone)]
pub struct ReconcileMetrics {
    passes: Family<[(&'static str, &'static str); 2], Counter>,
    duration: HistogramFamily<[(&'static str, &'static str); 1]>,
    repairs: Family<[(&'static str, &'static str); 2], Counter>,
    driver_failures: Family<[(&'static str, String); 2], Counter>,
    unrepaired: Gauge,
}

impl ReconcileMetrics {
    /// Registers the reconciler's families.
    pub fn register(registry: &Registry) -> Result<Self> {
        let m = Self {
            passes: Family::default(),
            duration: latency_family(),
            repairs: Family::default(),
            driver_failures: Family::default(),
            unrepaired: Gauge::default(),
        };
        let ctx = "registering the reconciler's metrics";
        registry
            .register(
                "reconcile_passes",
                "Reconciliation passes, by mode (startup, periodic) and result (ok, failed)",
                m.passes.clone(),
            )
            .context(ctx)?;
        registry
            .register_with_unit(
                "reconcile_duration",
                "Time a reconciliation pass took, by mode",
                Unit::Seconds,
                m.duration.clone(),
            )
            .context(ctx)?;
        registry
            .register(
                "reconcile_repairs",
                "What reconciliation changed in the kernel or the records, by mode and kind: network, endpoint (made again or adopted), kernel_object (a bridge, port, rule made again), orphan_removed (a marked object the store does not know), rolled_back (an endpoint a crash cut short), renamed, gateway (a sandbox's gateway endpoint attached or removed), orphan_namespace, ipam_pool, ipam_address, dhcp_lease, dhcp_pool (released)",
                m.repairs.clone(),
            )
            .context(ctx)?;
        registry
            .register(
                "reconcile_driver_failures",
                "Drivers whose part of a pass failed, by mode and driver",
                m.driver_failures.clone(),
            )
            .context(ctx)?;
        registry
            .register(
                "reconcile_unrepaired_endpoints",
                "Endpoints whose data plane the last pass could not repair (their sandbox's namespace is gone)",
                m.unrepaired.clone(),
            )
            .context(ctx)?;
        Ok(m)
    }

    /// Counts `n` repairs of `kind`.
    pub fn repaired(&self, mode: ReconcileMode, kind: &'static str, n: usize) {
        if n > 0 {
            self.repairs
                .get_or_create(&[("mode", mode_name(mode)), ("kind", kind)])
                .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
        }
    }

    /// Counts a pass that took `elapsed`, and what its report says (`None`: it failed).
    pub fn pass(&self, mode: ReconcileMode, elapsed: Duration, report: Option<&ReconcileReport>) {
        let name = mode_name(mode);
        let result = if report.is_some() { "ok" } else { "failed" };
        self.passes
            .get_or_create(&[("mode", name), ("result", result)])
            .inc();
        self.duration
            .get_or_create(&[("mode", name)])
            .observe(elapsed.as_secs_f64());
        let Some(report) = report else {
            return;
        };
        self.repaired(mode, "rolled_back", report.forgotten.len());
        self.repaired(mode, "renamed", report.renamed.len());
        self.repaired(mode, "gateway", report.gateways.len());
        let mut unrepaired = 0;
        for done in report.drivers.values() {
            self.repaired(mode, "network", done.networks.len());
            self.repaired(mode, "endpoint", done.endpoints.len());
            self.repaired(mode, "kernel_object", done.repaired.len());
            self.repaired(mode, "orphan_removed", done.removed.len());
            unrepaired += done.unrepaired.len();
        }
        for driver in report.failed.keys() {
            self.driver_failures
                .get_or_create(&[("mode", name.to_string()), ("driver", driver.clone())])
                .inc();
        }
        self.unrepaired
            .set(i64::try_from(unrepaired).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use plexus_cnm::Reconciled;
    use plexus_metrics::Format;

    use super::*;

    #[tokio::test]
    async fn bad_metrics_addrs_name_the_flag() {
        for bad in ["", "9323", "localhost:9323", "127.0.0.1", "127.0.0.1:99999"] {
            let e = bind(bad).await.err().map(|e| format!("{e:#}"));
            assert!(
                e.as_deref().is_some_and(|m| m.contains("--metrics-addr")),
                "{bad:?}: {e:?}"
            );
        }
        let taken =
            std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = taken
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let e = bind(&addr.to_string())
            .await
            .err()
            .map(|e| format!("{e:#}"));
        assert!(
            e.as_deref()
                .is_some_and(|m| m.contains("--metrics-addr") && m.contains(&addr.to_string())),
            "{e:?}"
        );
        assert!(bind("127.0.0.1:0").await.is_ok());
    }

    #[tokio::test]
    async fn store_operations_and_reconcile_passes_are_counted() {
        let registry = Registry::new();
        let store = StoreMetrics::register(&registry).unwrap_or_else(|e| panic!("{e}"));
        let reconcile = ReconcileMetrics::register(&registry).unwrap_or_else(|e| panic!("{e}"));
        register_build_info(&registry).unwrap_or_else(|e| panic!("{e}"));
        let kv = store.wrap(Arc::new(plexus_kv::LocalStore::memory()), "local");
        kv.put("a", b"1", Default::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(kv.get("b").await.is_err());

        let mut report = ReconcileReport::default();
        report.drivers.insert(
            "bridge".into(),
            Reconciled {
                endpoints: vec!["e1".into(), "e2".into()],
                repaired: vec!["bridge plx0 up".into()],
                unrepaired: [("e3".to_string(), "gone".to_string())].into(),
                ..Default::default()
            },
        );
        report.failed.insert("host".into(), "boom".into());
        reconcile.pass(
            ReconcileMode::Periodic,
            Duration::from_millis(3),
            Some(&report),
        );
        reconcile.pass(ReconcileMode::Periodic, Duration::from_millis(3), None);
        reconcile.repaired(ReconcileMode::Startup, "orphan_namespace", 0);

        let text = registry
            .encode(Format::Prometheus)
            .unwrap_or_else(|e| panic!("{e}"));
        for line in [
            "plexus_build_info{version=\"0.1.0\"} 1",
            "plexus_store_operation_duration_seconds_count{store=\"local\",operation=\"put\"} 1",
            "plexus_store_operation_duration_seconds_count{store=\"local\",operation=\"get\"} 1",
            "plexus_store_errors_total{store=\"local\",operation=\"get\",kind=\"not_found\"} 1",
            "plexus_reconcile_passes_total{mode=\"periodic\",result=\"ok\"} 1",
            "plexus_reconcile_passes_total{mode=\"periodic\",result=\"failed\"} 1",
            "plexus_reconcile_duration_seconds_count{mode=\"periodic\"} 2",
            "plexus_reconcile_repairs_total{mode=\"periodic\",kind=\"endpoint\"} 2",
            "plexus_reconcile_repairs_total{mode=\"periodic\",kind=\"kernel_object\"} 1",
            "plexus_reconcile_driver_failures_total{mode=\"periodic\",driver=\"host\"} 1",
            "plexus_reconcile_unrepaired_endpoints 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?}:\n{text}");
        }
        // Nothing repaired, no series.
        assert!(!text.contains("kind=\"orphan_namespace\""), "{text}");
        assert!(!text.contains("kind=\"network\""), "{text}");
    }
}
