//! `GET /info`: what this daemon is and where its state lives, in the shape of dockerd's
//! answer (the fields of it that a network stack has), plus the local and cluster stores'
//! health.

use axum::extract::State;
use axum::Json;
use plexus_api_types::{ClusterStoreInfo, SystemInfo};

use crate::handlers::{kernel_value, AppState};

/// `GET /info`. A daemon whose store or cluster store is away still answers, and says so.
pub async fn info(State(state): State<AppState>) -> Json<SystemInfo> {
    let controller = &state.controller;
    let datastore = controller.datastore();
    let local = ClusterStoreInfo {
        url: datastore.local_store().url().to_string(),
        status: match datastore.local_health().await {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("unavailable: {e}"),
        },
    };
    let cluster = match (datastore.cluster_store(), datastore.cluster_health().await) {
        (Some(store), Some(health)) => Some(ClusterStoreInfo {
            url: store.url().to_string(),
            status: match health {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("unavailable: {e}"),
            },
        }),
        _ => None,
    };
    let config = controller.config();
    Json(SystemInfo {
        id: config.host_id.clone(),
        name: kernel_value("hostname"),
        kernel_version: kernel_value("osrelease"),
        operating_system: "linux".into(),
        os_type: "linux".into(),
        cluster_store: cluster.as_ref().map(|c| c.url.clone()).unwrap_or_default(),
        cluster_advertise: config
            .cluster_advertise
            .map(|a| a.to_string())
            .unwrap_or_default(),
        plexus_cluster_store: cluster,
        plexus_store: Some(local),
    })
}
