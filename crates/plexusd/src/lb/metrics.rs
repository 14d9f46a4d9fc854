//! The load balancer's families on `/metrics`.

use std::time::Duration;

use anyhow::{Context, Result};
use plexus_metrics::{latency_histogram, Counter, Family, Gauge, Histogram, Registry, Unit};

type Label = [(&'static str, &'static str); 1];

/// `plexus_lb_services`, `plexus_lb_updates_total{result}`, `plexus_lb_update_seconds`.
#[derive(Clone, Default)]
pub struct LbMetrics {
    services: Gauge,
    updates: Family<Label, Counter>,
    seconds: Option<Histogram>,
}

impl LbMetrics {
    /// Registers the families.
    pub fn register(registry: &Registry) -> Result<Self> {
        let m = LbMetrics {
            services: Gauge::default(),
            updates: Family::default(),
            seconds: Some(latency_histogram()),
        };
        registry
            .register(
                "lb_services",
                "Services with a virtual IP load-balanced in this host's sandboxes",
                m.services.clone(),
            )
            .context("registering plexus_lb_services")?;
        registry
            .register(
                "lb_updates",
                "Changes to sandboxes' load-balancing tables by result: ok (one service's atomic batch), repaired (the table differed from the store and was reconciled), error",
                m.updates.clone(),
            )
            .context("registering plexus_lb_updates")?;
        if let Some(h) = &m.seconds {
            registry
                .register_with_unit(
                    "lb_update",
                    "Time to apply one change to one sandbox's load-balancing table",
                    Unit::Seconds,
                    h.clone(),
                )
                .context("registering plexus_lb_update_seconds")?;
        }
        Ok(m)
    }

    /// Counts one change with its `result`, and its duration when it reached the kernel.
    pub fn update(&self, result: &'static str, took: Option<Duration>) {
        self.updates.get_or_create(&[("result", result)]).inc();
        if let (Some(h), Some(t)) = (&self.seconds, took) {
            h.observe(t.as_secs_f64());
        }
    }

    /// Sets the number of services load-balanced here.
    pub fn services(&self, n: usize) {
        self.services.set(n as i64);
    }
}
