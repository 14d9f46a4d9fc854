//! The resolver's counters on `/metrics`. The resolver is another process: its counters are
//! read over its control socket by the supervisor (every second) and carried into the
//! daemon's registry as increments, so a restarted resolver (counting from zero) never makes
//! a counter go back.

use std::sync::Mutex;

use anyhow::{Context, Result};
use plexus_dns::control::Stats;
use plexus_metrics::{Counter, Family, Gauge, Registry};

type Label = [(&'static str, &'static str); 1];

/// The DNS families.
pub struct DnsMetrics {
    queries: Family<Label, Counter>,
    answers: Family<Label, Counter>,
    upstream: Family<Label, Counter>,
    dropped: Counter,
    refused: Counter,
    sandboxes: Gauge,
    up: Gauge,
    last: Mutex<Option<Stats>>,
}

impl DnsMetrics {
    /// Registers the DNS families.
    pub fn register(registry: &Registry) -> Result<Self> {
        let m = DnsMetrics {
            queries: Family::default(),
            answers: Family::default(),
            upstream: Family::default(),
            dropped: Counter::default(),
            refused: Counter::default(),
            sandboxes: Gauge::default(),
            up: Gauge::default(),
            last: Mutex::new(None),
        };
        fn reg(
            registry: &Registry,
            name: &str,
            help: &str,
            metric: impl plexus_metrics::Metric,
        ) -> Result<()> {
            registry
                .register(name, help, metric)
                .with_context(|| format!("registering plexus_{name}"))
        }
        reg(
            registry,
            "dns_queries",
            "Queries the embedded DNS received, by transport (udp, tcp)",
            m.queries.clone(),
        )?;
        reg(
            registry,
            "dns_answers",
            "Answers of the embedded DNS by kind: local (records), nodata, error (given locally), cache (forwarded names from the cache), forwarded (sent upstream)",
            m.answers.clone(),
        )?;
        reg(
            registry,
            "dns_upstream_failures",
            "Upstream trouble by event: timeout (an attempt), failure (SERVFAIL/REFUSED), gave_up (no upstream answered in time)",
            m.upstream.clone(),
        )?;
        reg(
            registry,
            "dns_dropped",
            "Messages the embedded DNS dropped unanswered (no header, responses, unknown sandbox)",
            m.dropped.clone(),
        )?;
        reg(
            registry,
            "dns_refused_overload",
            "Queries refused because too many were in flight",
            m.refused.clone(),
        )?;
        reg(
            registry,
            "dns_sandboxes",
            "Sandboxes the embedded DNS listens for",
            m.sandboxes.clone(),
        )?;
        reg(
            registry,
            "dns_resolver_up",
            "1 when the resolver process answers on its control socket",
            m.up.clone(),
        )?;
        Ok(m)
    }

    /// Records a reading of the resolver's counters (`None`: it did not answer).
    pub fn observe(&self, now: Option<&Stats>) {
        let Some(now) = now else {
            self.up.set(0);
            return;
        };
        self.up.set(1);
        self.sandboxes.set(now.sandboxes as i64);
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        // Another process (restarted) counts from zero: take its counts whole.
        let base = match last.as_ref() {
            Some(l) if l.pid == now.pid => l.clone(),
            _ => Stats::default(),
        };
        let d = |new: u64, old: u64| new.saturating_sub(old);
        let inc = |f: &Family<Label, Counter>, label: &'static str, v: u64| {
            if v > 0 {
                f.get_or_create(&[("kind", label)]).inc_by(v);
            }
        };
        let q = |label: &'static str, v: u64| {
            if v > 0 {
                self.queries
                    .get_or_create(&[("transport", label)])
                    .inc_by(v);
            }
        };
        q("udp", d(now.queries_udp, base.queries_udp));
        q("tcp", d(now.queries_tcp, base.queries_tcp));
        inc(
            &self.answers,
            "local",
            d(now.answers_local, base.answers_local),
        );
        inc(
            &self.answers,
            "nodata",
            d(now.answers_nodata, base.answers_nodata),
        );
        inc(
            &self.answers,
            "error",
            d(now.answers_error, base.answers_error),
        );
        inc(&self.answers, "cache", d(now.cache_hits, base.cache_hits));
        inc(&self.answers, "forwarded", d(now.forwarded, base.forwarded));
        let u = |label: &'static str, v: u64| {
            if v > 0 {
                self.upstream.get_or_create(&[("event", label)]).inc_by(v);
            }
        };
        u("timeout", d(now.upstream_timeouts, base.upstream_timeouts));
        u("failure", d(now.upstream_failures, base.upstream_failures));
        u("gave_up", d(now.upstream_gave_up, base.upstream_gave_up));
        self.dropped.inc_by(d(now.dropped, base.dropped));
        self.refused
            .inc_by(d(now.refused_overload, base.refused_overload));
        *last = Some(now.clone());
    }
}
