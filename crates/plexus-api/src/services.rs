//! `/plexus/services…`: services and their tasks. Parse the body, call the
//! [`Controller`](plexus_cnm::Controller), shape the answer in Docker's service shapes.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use plexus_cnm::{
    AffinityMode, EndpointMode, PublishMode, PublishedPort, Service, ServiceSpec, Task,
};

use crate::error::ApiError;
use crate::handlers::{decode, AppState};
use crate::parse::{parse_filters, Filters};
use crate::types::service as t;

fn port_number(field: &str, value: u32) -> Result<u16, ApiError> {
    match u16::try_from(value) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ApiError::bad_request(format!(
            "invalid {field}: {value} is not 1 to 65535"
        ))),
    }
}

/// A published port of a request; `field` names it (`EndpointSpec.Ports[0]`).
pub fn published_port(field: &str, p: &t::PortConfig) -> Result<PublishedPort, ApiError> {
    let protocol = match p.protocol.to_ascii_lowercase().as_str() {
        "" => "tcp".to_string(),
        other => other.to_string(),
    };
    let mode = PublishMode::parse(&format!("{field}.PublishMode"), &p.publish_mode)?;
    Ok(PublishedPort {
        protocol,
        target: port_number(&format!("{field}.TargetPort"), p.target_port)?,
        published: port_number(&format!("{field}.PublishedPort"), p.published_port)?,
        mode,
    })
}

fn affinity(a: &t::SessionAffinity) -> Result<plexus_cnm::SessionAffinity, ApiError> {
    let mode = AffinityMode::parse(&a.mode)?;
    let timeout = (a.timeout_seconds != 0).then_some(a.timeout_seconds);
    Ok(plexus_cnm::SessionAffinity::new(mode, timeout)?)
}

/// Turns a create request into the model's spec.
pub fn service_spec(req: t::ServiceCreate) -> Result<ServiceSpec, ApiError> {
    let endpoint = req.endpoint_spec.unwrap_or_default();
    let mut ports = Vec::new();
    for (i, p) in endpoint.ports.iter().enumerate() {
        ports.push(published_port(&format!("EndpointSpec.Ports[{i}]"), p)?);
    }
    let mut networks = Vec::new();
    for (i, n) in req.networks.into_iter().enumerate() {
        if n.target.is_empty() {
            return Err(ApiError::bad_request(format!(
                "invalid Networks[{i}].Target: must not be empty"
            )));
        }
        networks.push(n.target);
    }
    Ok(ServiceSpec {
        name: req.name,
        networks,
        endpoint_mode: EndpointMode::parse(&endpoint.mode)?,
        ports,
        affinity: match &req.session_affinity {
            Some(a) => affinity(a)?,
            None => Default::default(),
        },
        labels: req.labels.unwrap_or_default(),
    })
}

/// Turns an update request into the model's change.
pub fn service_update(req: t::ServiceUpdate) -> Result<plexus_cnm::ServiceUpdate, ApiError> {
    let mut ports_add = Vec::new();
    for (i, p) in req.ports_add.iter().enumerate() {
        ports_add.push(published_port(&format!("PortsAdd[{i}]"), p)?);
    }
    let mut ports_rm = Vec::new();
    for (i, p) in req.ports_remove.iter().enumerate() {
        let port = port_number(&format!("PortsRemove[{i}].PublishedPort"), p.published_port)?;
        let proto = match p.protocol.to_ascii_lowercase().as_str() {
            "" => "tcp".to_string(),
            other => other.to_string(),
        };
        ports_rm.push((port, proto));
    }
    Ok(plexus_cnm::ServiceUpdate {
        endpoint_mode: match req.mode.as_str() {
            "" => None,
            m => Some(EndpointMode::parse(m)?),
        },
        ports_add,
        ports_rm,
        affinity: req.session_affinity.as_ref().map(affinity).transpose()?,
        labels_add: req.labels_add,
        labels_rm: req.labels_remove,
    })
}

fn port_view(p: &PublishedPort) -> t::PortConfig {
    t::PortConfig {
        protocol: p.protocol.clone(),
        target_port: p.target.into(),
        published_port: p.published.into(),
        publish_mode: p.mode.as_str().to_string(),
    }
}

/// Shapes a service with its tasks; `names` maps network ids to names.
pub fn service_view(
    s: &Service,
    tasks: &[Task],
    names: &HashMap<String, String>,
) -> t::ServiceResource {
    let ports: Vec<t::PortConfig> = s.ports.iter().map(port_view).collect();
    t::ServiceResource {
        id: s.id.clone(),
        name: s.name.clone(),
        scope: match s.scope {
            plexus_cnm::Scope::Local => "local",
            plexus_cnm::Scope::Global => "swarm",
        }
        .to_string(),
        created_at: s.created.clone(),
        updated_at: s.updated.clone(),
        version: s.version,
        networks: s
            .networks
            .iter()
            .map(|id| t::ServiceNetworkView {
                target: id.clone(),
                name: names.get(id).cloned().unwrap_or_default(),
            })
            .collect(),
        endpoint: t::ServiceEndpoint {
            spec: t::ServiceEndpointSpec {
                mode: s.endpoint_mode.as_str().to_string(),
                ports: ports.clone(),
            },
            ports,
            virtual_ips: s
                .vips
                .iter()
                .map(|v| t::VirtualIp {
                    network_id: v.network_id.clone(),
                    addr: v.addr.to_string(),
                })
                .collect(),
        },
        session_affinity: t::SessionAffinity {
            mode: s.affinity.mode.as_str().to_string(),
            timeout_seconds: s.affinity.timeout_seconds,
        },
        labels: s.labels.clone(),
        tasks: tasks
            .iter()
            .map(|task| t::TaskView {
                sandbox_id: task.sandbox_id.clone(),
                name: task.name.clone(),
                host: task.host.clone(),
                addresses: task
                    .backends
                    .iter()
                    .flat_map(|b| {
                        b.ipv4.iter().chain(b.ipv6.iter()).map(|a| t::TaskAddress {
                            network_id: b.network_id.clone(),
                            endpoint_id: b.endpoint_id.clone(),
                            addr: a.to_string(),
                        })
                    })
                    .collect(),
            })
            .collect(),
    }
}

async fn network_names(state: &AppState) -> Result<HashMap<String, String>, ApiError> {
    Ok(state
        .controller
        .networks()
        .await?
        .into_iter()
        .map(|n| (n.id, n.name))
        .collect())
}

async fn view(state: &AppState, s: &Service) -> Result<t::ServiceResource, ApiError> {
    let tasks = state.controller.service_tasks(s).await?;
    Ok(service_view(s, &tasks, &network_names(state).await?))
}

fn matches(s: &Service, filters: &Filters) -> Result<bool, ApiError> {
    for (key, values) in filters {
        if values.is_empty() {
            continue;
        }
        let hit = match key.as_str() {
            "name" => values.iter().any(|v| s.name.contains(v.as_str())),
            "id" => values.iter().any(|v| s.id.starts_with(v.as_str())),
            "label" => values.iter().any(|v| match v.split_once('=') {
                Some((k, val)) => s.labels.get(k).map(String::as_str) == Some(val),
                None => s.labels.contains_key(v.as_str()),
            }),
            "mode" => values.iter().any(|v| v == s.endpoint_mode.as_str()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter '{other}': services take name, id, label, mode"
                )))
            }
        };
        if !hit {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `POST /plexus/services/create` → 201 `{"ID"}`.
pub async fn create_service(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<t::ServiceCreated>), ApiError> {
    let req: t::ServiceCreate = decode(&body)?;
    let spec = service_spec(req)?;
    let s = state.controller.create_service(spec).await?;
    Ok((StatusCode::CREATED, Json(t::ServiceCreated { id: s.id })))
}

/// `GET /plexus/services?filters=...`.
pub async fn list_services(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<t::ServiceResource>>, ApiError> {
    let filters = parse_filters(query.get("filters").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let names = network_names(&state).await?;
    let mut out = Vec::new();
    for s in state.controller.services().await? {
        if matches(&s, &filters)? {
            let tasks = state.controller.service_tasks(&s).await?;
            out.push(service_view(&s, &tasks, &names));
        }
    }
    Ok(Json(out))
}

/// `GET /plexus/services/{id or name}`.
pub async fn inspect_service(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<t::ServiceResource>, ApiError> {
    let s = state.controller.service(&id).await?;
    Ok(Json(view(&state, &s).await?))
}

/// `POST /plexus/services/{id}/update` → 200 with the service.
pub async fn update_service(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<t::ServiceResource>, ApiError> {
    let req: t::ServiceUpdate = decode(&body)?;
    let update = service_update(req)?;
    let s = state.controller.update_service(&id, update).await?;
    Ok(Json(view(&state, &s).await?))
}

/// `DELETE /plexus/services/{id}?force=1` → 204. With tasks, refused (409, naming them)
/// unless `force`, which detaches them (their sandboxes stay).
pub async fn delete_service(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    let force = match query.get("force").map(String::as_str) {
        None | Some("" | "0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid force {other:?}: 1, true, 0 or false"
            )))
        }
    };
    state.controller.remove_service(&id, force).await?;
    Ok(StatusCode::NO_CONTENT)
}
