//! # plexus-metrics — Plexus's Prometheus metrics
//!
//! One [`Registry`] per daemon, shared by every crate that has something to count: the API
//! (requests and their latency), the daemon (store and reconciler), and later DNS, gossip and
//! encryption, each registering its own families without depending on the others. The
//! registry renders itself in the Prometheus text format (0.0.4) or in OpenMetrics 1.0.0
//! ([`Format`]), for `GET /metrics`.
//!
//! It wraps [`prometheus_client`] (re-exported, with its metric types) and adds what a shared
//! registry needs: the `plexus_` prefix on every name, names checked when registered (a
//! malformed or duplicate name is an error that names it, not a broken scrape), and one
//! histogram layout for latencies ([`LATENCY_BUCKETS`]).
//!
//! Conventions, as Prometheus's: names are `plexus_<subsystem>_<what>` in snake case; the
//! unit is given with [`Registry::register_with_unit`] and ends the name (`_seconds`);
//! counters are registered without `_total`, which the encoder adds. Labels take values from
//! small fixed sets (an operation, a status class, a driver): never a network's name or an
//! id, which would make a series per object.
//!
//! ```
//! use plexus_metrics::{Counter, Family, Format, Registry};
//!
//! # fn main() -> Result<(), plexus_metrics::MetricsError> {
//! let registry = Registry::new();
//! let requests = Family::<[(&'static str, &'static str); 1], Counter>::default();
//! registry.register("example_requests", "Requests handled", requests.clone())?;
//! requests.get_or_create(&[("operation", "ping")]).inc();
//! let text = registry.encode(Format::Prometheus)?;
//! assert!(text.contains("# TYPE plexus_example_requests_total counter"));
//! assert!(text.contains(r#"plexus_example_requests_total{operation="ping"} 1"#));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

use std::collections::BTreeSet;
use std::hash::Hash;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::metrics::MetricType;

pub use prometheus_client;
pub use prometheus_client::collector::Collector;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::metrics::info::Info;
pub use prometheus_client::registry::{Metric, Unit};

/// The prefix of every metric name (`plexus_api_requests_total`).
pub const PREFIX: &str = "plexus";

/// The bucket bounds, in seconds, of every latency histogram: 0.5 ms to 10 s. A store
/// operation on the embedded store takes well under a millisecond, a network or sandbox
/// operation tens of milliseconds, a reconciliation pass or a remote store's timeout seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with the [`LATENCY_BUCKETS`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A family of latency histograms, one per label set.
pub type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// An empty family of latency histograms with the [`LATENCY_BUCKETS`].
pub fn latency_family<L: Clone + Hash + Eq>() -> HistogramFamily<L> {
    Family::new_with_constructor(latency_histogram)
}

/// The exposition formats a scrape can get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4: what every scraper reads, and the answer
    /// unless the client asks for OpenMetrics.
    Prometheus,
    /// OpenMetrics 1.0.0 text, ending with `# EOF`.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format to answer a request with this `Accept` header in: OpenMetrics when the
    /// client lists `application/openmetrics-text` with a quality at least that of
    /// `text/plain`; the Prometheus text format otherwise (no header, `*/*`, anything else).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Prometheus;
        };
        let (mut openmetrics, mut text) = (0.0_f64, 0.0_f64);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let mut quality = 1.0;
            for param in parts {
                if let Some((key, value)) = param.split_once('=') {
                    if key.trim().eq_ignore_ascii_case("q") {
                        quality = value.trim().parse().unwrap_or(0.0);
                    }
                }
            }
            if media.eq_ignore_ascii_case("application/openmetrics-text") {
                openmetrics = openmetrics.max(quality);
            } else if media.eq_ignore_ascii_case("text/plain") {
                text = text.max(quality);
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// Errors of registration and encoding; each names the metric at fault.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The name breaks Prometheus's rules or this crate's conventions.
    #[error("invalid metric name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another metric already has this name.
    #[error("metric {name} is registered twice")]
    Duplicate {
        /// The full name (prefix and unit included).
        name: String,
    },
    /// A metric failed to encode itself.
    #[error("encoding the metrics: {0}")]
    Encode(#[from] std::fmt::Error),
}

struct Inner {
    registry: prometheus_client::registry::Registry,
    /// Full names (prefix and unit included) registered so far.
    names: BTreeSet<String>,
}

/// The shared registry: cheap to clone (every clone is the same registry), safe to register
/// into and encode from any thread. Names get the [`PREFIX`]; metrics stay registered for the
/// registry's life.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<RwLock<Inner>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.names())
            .finish()
    }
}

/// Checks a name given to [`Registry::register`]: snake case, without the prefix, the unit
/// or a counter's `_total` (all added by the encoder).
fn check_name(name: &str, unit: Option<&Unit>, kind: MetricType) -> Result<(), MetricsError> {
    let bad = |reason| {
        Err(MetricsError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    let mut chars = name.chars();
    match chars.next() {
        None => return bad("it is empty"),
        Some(c) if !(c.is_ascii_lowercase() || c == '_') => {
            return bad("it must start with a lowercase letter or `_`")
        }
        Some(_) => {}
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return bad("use lowercase letters, digits and `_` only");
    }
    if name.starts_with(&format!("{PREFIX}_")) {
        return bad("the registry adds the `plexus_` prefix itself");
    }
    if kind == MetricType::Counter && name.ends_with("_total") {
        return bad("the encoder adds a counter's `_total` itself");
    }
    if let Some(unit) = unit {
        if name.ends_with(&format!("_{}", unit.as_str())) {
            return bad("the registry adds the unit itself");
        }
    }
    Ok(())
}

impl Registry {
    /// An empty registry whose names all start with `plexus_`.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(RwLock::new(Inner {
                registry: prometheus_client::registry::Registry::with_prefix(PREFIX),
                names: BTreeSet::new(),
            })),
        }
    }

    /// Registers `metric` as `plexus_<name>`, with `help` as its description (a full stop is
    /// added). Keep a clone of the metric to update it: clones share their values.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl Metric,
    ) -> Result<(), MetricsError> {
        self.add(name, help, None, metric)
    }

    /// Registers `metric` as `plexus_<name>_<unit>` (`Unit::Seconds` → `_seconds`).
    pub fn register_with_unit(
        &self,
        name: &str,
        help: &str,
        unit: Unit,
        metric: impl Metric,
    ) -> Result<(), MetricsError> {
        self.add(name, help, Some(unit), metric)
    }

    fn add(
        &self,
        name: &str,
        help: &str,
        unit: Option<Unit>,
        metric: impl Metric,
    ) -> Result<(), MetricsError> {
        check_name(name, unit.as_ref(), metric.metric_type())?;
        let full = match &unit {
            Some(u) => format!("{PREFIX}_{name}_{}", u.as_str()),
            None => format!("{PREFIX}_{name}"),
        };
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if !inner.names.insert(full.clone()) {
            return Err(MetricsError::Duplicate { name: full });
        }
        match unit {
            Some(u) => inner.registry.register_with_unit(name, help, u, metric),
            None => inner.registry.register(name, help, metric),
        }
        Ok(())
    }

    /// Registers a collector: metrics made at each scrape (such as a count read from
    /// elsewhere). Its names get the prefix too, but are not checked: the collector encodes
    /// them itself.
    pub fn register_collector(&self, collector: impl Collector) {
        let mut inner = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        inner.registry.register_collector(Box::new(collector));
    }

    /// The full names registered (prefix and unit included, without the encoder's suffixes
    /// such as `_total`), sorted.
    pub fn names(&self) -> Vec<String> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        inner.names.iter().cloned().collect()
    }

    /// Every metric's current value, in `format`.
    pub fn encode(&self, format: Format) -> Result<String, MetricsError> {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &inner.registry)?
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &inner.registry)?
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
