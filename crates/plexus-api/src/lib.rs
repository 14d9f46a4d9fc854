//! # plexus-api — the management plane's HTTP API
//!
//! The Docker Engine API for networks (v1.41 paths and JSON shapes, with or without a `/v1.xx`
//! prefix), so that `docker -H unix://… network …` and `docker -H unix://… events` work
//! against Plexus, plus Plexus's own sandbox resource (`/plexus/sandboxes`). Served by axum on a unix socket.
//!
//! - [`types`]: the JSON, apart from any I/O;
//! - [`parse`]: pure parsers (Docker `filters`, `-p` port specs);
//! - [`handlers`]: parse → [`Controller`](plexus_cnm::Controller) → shape the answer;
//! - [`events`]: `GET /events`, the controller's event log in Docker's shape;
//! - [`services`]: `/plexus/services…`, services and their tasks;
//! - [`cluster`]: `/plexus/cluster…`, the gossip cluster (hosts, keyring ids, key rotation);
//! - [`info`]: `GET /info`, with the local and cluster stores' health;
//! - [`metrics`]: `GET /metrics` (Prometheus) and the middleware that counts every request;
//! - [`namespaces`]: the kernel's sandbox namespaces, for the controller;
//! - [`router`], [`metrics_router`] and [`serve`]: the routes (all of them, or `/metrics` alone
//!   for a TCP listener) and the server loop.
//!
//! Errors are answered as dockerd does: `{"message": "..."}` with the status from
//! [`CnmError::http_status`](plexus_cnm::CnmError::http_status); malformed JSON is a 400 that
//! names the field.

#![warn(missing_docs)]

pub mod cluster;
pub mod error;
pub mod events;
pub mod handlers;
pub mod info;
pub mod metrics;
pub mod namespaces;
pub mod parse;
pub mod services;
/// The JSON of the API: [`plexus_api_types`], re-exported.
pub use plexus_api_types as types;

use std::future::Future;

use axum::extract::Request;
use axum::http::{StatusCode, Uri};
use axum::routing::{get, post};
use axum::Router;

pub use cluster::ClusterService;
pub use error::ApiError;
pub use handlers::AppState;
pub use metrics::ApiMetrics;
pub use namespaces::SysNamespaces;
pub use plexus_cnm::Namespaces;

pub use plexus_api_types::API_VERSION;

/// Strips a leading `/v1.xx` from the path, as dockerd accepts both forms.
pub fn strip_version(path: &str) -> &str {
    let Some(rest) = path.strip_prefix("/v") else {
        return path;
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let version = &rest[..end];
    let valid = !version.is_empty()
        && version.chars().all(|c| c.is_ascii_digit() || c == '.')
        && version.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        if end == rest.len() {
            "/"
        } else {
            &rest[end..]
        }
    } else {
        path
    }
}

async fn rewrite_version(mut req: Request) -> Request {
    let path = req.uri().path();
    let stripped = strip_version(path);
    if stripped.len() != path.len() {
        let pq = match req.uri().query() {
            Some(q) => format!("{stripped}?{q}"),
            None => stripped.to_string(),
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("page not found: {}", uri.path()),
    )
}

/// The API's routes over `state`.
pub fn router(state: AppState) -> Router {
    use handlers::*;
    let api = Router::new()
        .route("/_ping", get(ping))
        .route("/version", get(version))
        .route("/info", get(info::info))
        .route("/events", get(events::events))
        .route("/metrics", get(metrics::metrics))
        .route("/networks", get(list_networks))
        .route("/networks/create", post(create_network))
        .route("/networks/prune", post(prune))
        .route(
            "/networks/{id}",
            get(inspect_network).delete(handlers::delete_network),
        )
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
        .route(
            "/plexus/sandboxes",
            get(list_sandboxes).post(create_sandbox),
        )
        .route(
            "/plexus/sandboxes/{name}",
            get(inspect_sandbox).delete(handlers::delete_sandbox),
        )
        .route("/plexus/services", get(services::list_services))
        .route("/plexus/services/create", post(services::create_service))
        .route(
            "/plexus/services/{id}",
            get(services::inspect_service).delete(services::delete_service),
        )
        .route(
            "/plexus/services/{id}/update",
            post(services::update_service),
        )
        .route("/plexus/cluster", get(cluster::inspect_self))
        .route("/plexus/cluster/hosts", get(cluster::hosts))
        .route("/plexus/cluster/hosts/{host}", get(cluster::inspect_host))
        .route("/plexus/cluster/key/rotate", post(cluster::rotate_key))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .with_state(state);
    // The prefix must go before routing, so the rewrite wraps the whole router.
    Router::new()
        .fallback_service(api)
        .layer(axum::middleware::map_request(rewrite_version))
}

/// `GET /metrics` alone, for a listener that must serve nothing else (plexusd's
/// `--metrics-addr`): every other path is a 404. Requests are counted as on the API.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// Serves `app` on `listener` (the API's unix socket, or a TCP listener for
/// [`metrics_router`]) until `shutdown` completes; requests under way are finished.
pub async fn serve<L>(
    listener: L,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::strip_version;

    #[test]
    fn version_prefix() {
        assert_eq!(strip_version("/v1.41/networks"), "/networks");
        assert_eq!(strip_version("/v1.24/_ping"), "/_ping");
        assert_eq!(strip_version("/networks"), "/networks");
        assert_eq!(strip_version("/version"), "/version");
        assert_eq!(strip_version("/vx/networks"), "/vx/networks");
    }
}
