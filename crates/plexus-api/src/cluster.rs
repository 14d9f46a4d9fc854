//! `/plexus/cluster`: the gossip cluster as this host sees it (`plexus cluster ls`,
//! `inspect`) and the rotation of its key (`plexus cluster key rotate`). The daemon runs the
//! gossip and gives the API a [`ClusterService`]; without one (no `--cluster-store` and
//! `--cluster-advertise`) these routes answer 503, saying so.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use plexus_api_types::{ClusterHost, ClusterInspect, KeyringInfo};

use crate::error::ApiError;
use crate::handlers::AppState;

/// What the daemon's gossip answers.
#[async_trait]
pub trait ClusterService: Send + Sync {
    /// Every member this host knows.
    async fn hosts(&self) -> Result<Vec<ClusterHost>, ApiError>;
    /// One host (by id, name or address; this host for `None`) with this host's keyring
    /// and counters.
    async fn inspect(&self, host: Option<&str>) -> Result<ClusterInspect, ApiError>;
    /// Rotates the cluster's key (new key added everywhere, used, old removed); returns this
    /// host's keyring after it.
    async fn rotate_key(&self) -> Result<KeyringInfo, ApiError>;
}

fn service(state: &AppState) -> Result<Arc<dyn ClusterService>, ApiError> {
    state.cluster.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this daemon is not in a gossip cluster: start it with --cluster-store and --cluster-advertise",
        )
    })
}

/// `GET /plexus/cluster/hosts`.
pub async fn hosts(State(state): State<AppState>) -> Result<Json<Vec<ClusterHost>>, ApiError> {
    Ok(Json(service(&state)?.hosts().await?))
}

/// `GET /plexus/cluster`: this host.
pub async fn inspect_self(State(state): State<AppState>) -> Result<Json<ClusterInspect>, ApiError> {
    Ok(Json(service(&state)?.inspect(None).await?))
}

/// `GET /plexus/cluster/hosts/{host}`.
pub async fn inspect_host(
    State(state): State<AppState>,
    Path(host): Path<String>,
) -> Result<Json<ClusterInspect>, ApiError> {
    Ok(Json(service(&state)?.inspect(Some(&host)).await?))
}

/// `POST /plexus/cluster/key/rotate`.
pub async fn rotate_key(State(state): State<AppState>) -> Result<Json<KeyringInfo>, ApiError> {
    Ok(Json(service(&state)?.rotate_key().await?))
}
