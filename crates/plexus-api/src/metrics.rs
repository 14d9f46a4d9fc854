//! `GET /metrics`, and the counting of every request.
//!
//! [`track`] counts each request by operation and status class and times it (until the
//! answer's head: a `/events` stream counts once, when it starts). The operation is a fixed
//! name for the route and method ([`operation`]), never a path with an id in it, so the
//! series stay few. The networks, endpoints and sandboxes gauges are read from the
//! controller at each scrape, so they cannot drift from the store. The answer is the
//! daemon's whole [`Registry`]: what the daemon and other crates registered too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use plexus_cnm::{CnmError, Controller};
use plexus_metrics::{
    latency_family, Counter, Family, Format, Gauge, HistogramFamily, MetricsError, Registry, Unit,
};

use crate::error::ApiError;
use crate::handlers::{scope_name, AppState};

/// Labels by driver and scope.
type DriverScope = [(&'static str, String); 2];

/// The API's metrics, and the registry `/metrics` answers with.
#[derive(Debug)]
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<[(&'static str, &'static str); 2], Counter>,
    duration: HistogramFamily<[(&'static str, &'static str); 1]>,
    networks: Family<DriverScope, Gauge>,
    endpoints: Family<DriverScope, Gauge>,
    sandboxes: Family<[(&'static str, &'static str); 0], Gauge>,
    /// Scrapes one at a time: each refreshes the gauges, then encodes them.
    scrape: tokio::sync::Mutex<()>,
}

impl ApiMetrics {
    /// Registers the API's metrics in `registry`, which `/metrics` then answers with.
    pub fn register(registry: &Registry) -> Result<Self, MetricsError> {
        let m = Self {
            registry: registry.clone(),
            requests: Family::default(),
            duration: latency_family(),
            networks: Family::default(),
            endpoints: Family::default(),
            sandboxes: Family::default(),
            scrape: tokio::sync::Mutex::new(()),
        };
        registry.register(
            "api_requests",
            "API requests answered, by operation and status class (2xx, 4xx, 5xx)",
            m.requests.clone(),
        )?;
        registry.register_with_unit(
            "api_request_duration",
            "Time from an API request to its answer's head, by operation",
            Unit::Seconds,
            m.duration.clone(),
        )?;
        registry.register(
            "networks",
            "Networks this host knows, by driver and scope",
            m.networks.clone(),
        )?;
        registry.register(
            "endpoints",
            "Endpoints of this host, by their network's driver and scope",
            m.endpoints.clone(),
        )?;
        registry.register("sandboxes", "Sandboxes of this host", m.sandboxes.clone())?;
        Ok(m)
    }

    /// The registry `/metrics` answers with.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one answered request.
    pub fn record(
        &self,
        operation: &'static str,
        status: StatusCode,
        elapsed: std::time::Duration,
    ) {
        self.requests
            .get_or_create(&[("operation", operation), ("status", status_class(status))])
            .inc();
        self.duration
            .get_or_create(&[("operation", operation)])
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the gauges from the controller's records.
    async fn refresh(&self, controller: &Controller) -> Result<(), CnmError> {
        let host = controller.host_id();
        let mut networks: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
        let mut endpoints: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
        for n in controller.networks().await? {
            let key = (n.driver.clone(), scope_name(n.scope));
            *networks.entry(key.clone()).or_default() += 1;
            let mine = controller
                .endpoints(&n.id)
                .await?
                .iter()
                .filter(|e| e.host.is_empty() || e.host == host)
                .count();
            *endpoints.entry(key).or_default() += i64::try_from(mine).unwrap_or(i64::MAX);
        }
        let sandboxes = controller.sandboxes().await?.len();
        self.clear();
        for (family, counts) in [(&self.networks, networks), (&self.endpoints, endpoints)] {
            for ((driver, scope), n) in counts {
                family
                    .get_or_create(&[("driver", driver), ("scope", scope.to_string())])
                    .set(n);
            }
        }
        self.sandboxes
            .get_or_create(&[])
            .set(i64::try_from(sandboxes).unwrap_or(i64::MAX));
        Ok(())
    }

    /// Drops the gauges' series: a scrape whose counts could not be read shows none.
    fn clear(&self) {
        self.networks.clear();
        self.endpoints.clear();
        self.sandboxes.clear();
    }
}

/// The status class of an answer: `2xx`, `4xx`, `5xx` (`1xx`, `3xx`).
pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// The operation a request is counted under, from its method and matched route (the
/// pattern, `/networks/{id}`); `other` for anything no route answers (a 404 or 405).
pub fn operation(method: &Method, route: Option<&str>) -> &'static str {
    let read = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    let delete = *method == Method::DELETE;
    match route.unwrap_or_default() {
        "/_ping" if read => "ping",
        "/version" if read => "version",
        "/info" if read => "info",
        "/events" if read => "events",
        "/metrics" if read => "metrics",
        "/networks" if read => "network_list",
        "/networks/create" if post => "network_create",
        "/networks/prune" if post => "network_prune",
        "/networks/{id}" if read => "network_inspect",
        "/networks/{id}" if delete => "network_delete",
        "/networks/{id}/connect" if post => "network_connect",
        "/networks/{id}/disconnect" if post => "network_disconnect",
        "/plexus/sandboxes" if read => "sandbox_list",
        "/plexus/sandboxes" if post => "sandbox_create",
        "/plexus/sandboxes/{name}" if read => "sandbox_inspect",
        "/plexus/sandboxes/{name}" if delete => "sandbox_delete",
        "/plexus/services" if read => "service_list",
        "/plexus/services/create" if post => "service_create",
        "/plexus/services/{id}" if read => "service_inspect",
        "/plexus/services/{id}" if delete => "service_delete",
        "/plexus/services/{id}/update" if post => "service_update",
        "/plexus/cluster" if read => "cluster_inspect",
        "/plexus/cluster/hosts" if read => "cluster_hosts",
        "/plexus/cluster/hosts/{host}" if read => "cluster_inspect",
        "/plexus/cluster/key/rotate" if post => "cluster_key_rotate",
        _ => "other",
    }
}

/// Middleware: counts and times every request (see [`ApiMetrics::record`]).
pub async fn track(State(metrics): State<Arc<ApiMetrics>>, req: Request, next: Next) -> Response {
    let op = operation(
        req.method(),
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let began = Instant::now();
    let response = next.run(req).await;
    metrics.record(op, response.status(), began.elapsed());
    response
}

/// `GET /metrics`: every registered metric, in the Prometheus text format (0.0.4), or in
/// OpenMetrics 1.0.0 when the `Accept` header prefers it. Counts that cannot be read from
/// the store are left out of the answer (and logged); the rest is still served.
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let format = Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let metrics = &state.metrics;
    let _one_at_a_time = metrics.scrape.lock().await;
    if let Err(e) = metrics.refresh(&state.controller).await {
        tracing::warn!(error = %e, "metrics: cannot count networks, endpoints and sandboxes; left out of this scrape");
        metrics.clear();
    }
    let text = metrics
        .registry
        .encode(format)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        text,
    )
        .into_response())
}
