//! The handlers: parse the request, call the [`Controller`], shape the answer. No policy lives
//! here; the controller validates and names the field at fault.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use plexus_cnm::{
    Controller, Endpoint, EndpointSpec, IpamPool, IpamPoolSpec, Network, NetworkSpec, Sandbox,
    SandboxSpec, Scope,
};
use plexus_metrics::{MetricsError, Registry};
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::metrics::ApiMetrics;
use crate::parse::{parse_filters, parse_port_spec, Filters};
use crate::types::*;
use crate::API_VERSION;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The model (which also makes sandbox namespaces, through its
    /// [`Namespaces`](plexus_cnm::Namespaces)).
    pub controller: Arc<Controller>,
    /// Where each sandbox's `resolv.conf` and `hosts` are written (`<dir>/<id>/`), if the
    /// daemon writes them.
    pub sandbox_files: Option<std::path::PathBuf>,
    /// The request counters and the registry `/metrics` answers with.
    pub metrics: Arc<ApiMetrics>,
    /// The gossip cluster (`/plexus/cluster`), when the daemon runs one.
    pub cluster: Option<Arc<dyn crate::cluster::ClusterService>>,
}

impl AppState {
    /// The state of an API over `controller` whose metrics go into `registry`.
    pub fn new(controller: Arc<Controller>, registry: &Registry) -> Result<Self, MetricsError> {
        Ok(Self {
            controller,
            metrics: Arc::new(ApiMetrics::register(registry)?),
            sandbox_files: None,
            cluster: None,
        })
    }

    /// Serves `/plexus/cluster` from `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<dyn crate::cluster::ClusterService>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Shows each sandbox's `resolv.conf` and `hosts` under `dir/<id>/` in its inspect.
    pub fn with_sandbox_files(mut self, dir: &std::path::Path) -> Self {
        self.sandbox_files = Some(dir.to_path_buf());
        self
    }
}

/// Decodes a JSON body; the error names the field at fault (`Name`, `IPAM.Config[0].Subnet`).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid JSON: the request body is empty",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("invalid JSON: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON: field {path}: {inner}"))
        }
    })
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

// ---- system ----

/// `GET|HEAD /_ping`.
pub async fn ping() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("API-Version", HeaderValue::from_static(API_VERSION));
    headers.insert("OSType", HeaderValue::from_static("linux"));
    headers.insert("Docker-Experimental", HeaderValue::from_static("false"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    (StatusCode::OK, headers, "OK").into_response()
}

/// `/proc/sys/kernel/<name>` (`osrelease`, `hostname`), trimmed; empty if unreadable.
pub(crate) fn kernel_value(name: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `GET /version`.
pub async fn version() -> Json<Version> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let kernel = kernel_value("osrelease");
    Json(Version {
        version: env!("CARGO_PKG_VERSION").to_string(),
        api_version: API_VERSION.to_string(),
        min_api_version: "1.24".to_string(),
        os: "linux".to_string(),
        arch: arch.to_string(),
        git_commit: String::new(),
        go_version: "plexus (rust)".to_string(),
        kernel_version: kernel,
        build_time: String::new(),
    })
}

// ---- networks ----

fn pool_view(pool: &IpamPool) -> IpamConfigEntry {
    IpamConfigEntry {
        subnet: pool.subnet.to_string(),
        ip_range: pool.ip_range.clone().unwrap_or_default(),
        gateway: pool
            .gateway
            .map(|g| g.addr().to_string())
            .unwrap_or_default(),
        aux_addresses: (!pool.aux_addresses.is_empty()).then(|| {
            pool.aux_addresses
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect()
        }),
    }
}

pub(crate) fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Local => "local",
        Scope::Global => "global",
    }
}

/// Shapes a network as dockerd does; `containers` are its endpoints with their sandboxes.
pub fn network_view(
    n: &Network,
    containers: BTreeMap<String, NetworkContainer>,
) -> NetworkResource {
    NetworkResource {
        name: n.name.clone(),
        id: n.id.clone(),
        created: n.created.clone(),
        scope: scope_name(n.scope).to_string(),
        driver: n.driver.clone(),
        enable_ipv6: n.spec.enable_ipv6,
        ipam: Ipam {
            driver: match n.spec.ipam_driver.as_str() {
                "" => "default".to_string(),
                d => d.to_string(),
            },
            options: Some(n.spec.ipam_options.clone()),
            config: Some(n.ipv4.iter().chain(&n.ipv6).map(pool_view).collect()),
        },
        internal: n.spec.internal,
        attachable: n.spec.attachable,
        ingress: false,
        config_from: ConfigReference::default(),
        config_only: false,
        containers,
        options: n.spec.options.clone(),
        labels: n.spec.labels.clone(),
    }
}

async fn containers_of(
    controller: &Controller,
    network: &Network,
) -> Result<BTreeMap<String, NetworkContainer>, ApiError> {
    let mut out = BTreeMap::new();
    for ep in controller.endpoints(&network.id).await? {
        out.insert(
            ep.sandbox_id.clone(),
            NetworkContainer {
                name: ep.name.clone(),
                endpoint_id: ep.id.clone(),
                mac_address: ep.mac.clone().unwrap_or_default(),
                ipv4_address: ep.ipv4.map(|a| a.to_string()).unwrap_or_default(),
                ipv6_address: ep.ipv6.map(|a| a.to_string()).unwrap_or_default(),
            },
        );
    }
    Ok(out)
}

fn matches(n: &Network, filters: &Filters) -> Result<bool, ApiError> {
    for (key, values) in filters {
        if values.is_empty() {
            continue;
        }
        let hit = match key.as_str() {
            "name" => values.iter().any(|v| n.name.contains(v.as_str())),
            "id" => values.iter().any(|v| n.id.contains(v.as_str())),
            "driver" => values.iter().any(|v| &n.driver == v),
            "scope" => values.iter().any(|v| v == scope_name(n.scope)),
            "type" => {
                for v in values {
                    if v != "custom" && v != "builtin" {
                        return Err(ApiError::bad_request(format!(
                            "invalid filter 'type'={v}: use custom or builtin"
                        )));
                    }
                }
                values.iter().any(|v| v == "custom")
            }
            "label" => values.iter().any(|v| match v.split_once('=') {
                Some((k, val)) => n.spec.labels.get(k).map(String::as_str) == Some(val),
                None => n.spec.labels.contains_key(v.as_str()),
            }),
            other => {
                return Err(ApiError::bad_request(format!("invalid filter '{other}'")));
            }
        };
        if !hit {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `GET /networks?filters=...`.
pub async fn list_networks(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Vec<NetworkResource>>, ApiError> {
    let filters = parse_filters(query.get("filters").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let mut out = Vec::new();
    for n in state.controller.networks().await? {
        if matches(&n, &filters)? {
            out.push(network_view(&n, BTreeMap::new()));
        }
    }
    Ok(Json(out))
}

/// `GET /networks/{id}`.
pub async fn inspect_network(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<NetworkResource>, ApiError> {
    let n = state.controller.network(&id).await?;
    let containers = containers_of(&state.controller, &n).await?;
    Ok(Json(network_view(&n, containers)))
}

fn pool_spec(entry: &IpamConfigEntry) -> IpamPoolSpec {
    IpamPoolSpec {
        subnet: non_empty(&entry.subnet),
        ip_range: non_empty(&entry.ip_range),
        gateway: non_empty(&entry.gateway),
        aux_addresses: entry.aux_addresses.clone().unwrap_or_default(),
    }
}

/// Turns a create request into the model's spec; IPAM configs go to IPv4 or IPv6 by the
/// family of their subnet (or range, or gateway).
pub fn network_spec(req: NetworkCreate) -> Result<NetworkSpec, ApiError> {
    if req.ingress {
        return Err(ApiError::bad_request(
            "invalid Ingress: ingress networks are not supported",
        ));
    }
    let ipam = req.ipam.unwrap_or_default();
    // Another IPAM driver than "default" is the controller's to find (a plugin, when the
    // daemon looks for them).
    let ipam_driver = match ipam.driver.as_str() {
        "default" => String::new(),
        d => d.to_string(),
    };
    let (mut ipv4, mut ipv6) = (Vec::new(), Vec::new());
    for (i, entry) in ipam.config.unwrap_or_default().iter().enumerate() {
        let probe = [&entry.subnet, &entry.ip_range, &entry.gateway]
            .into_iter()
            .find(|s| !s.is_empty());
        match probe {
            Some(s) if s.contains(':') => ipv6.push(pool_spec(entry)),
            Some(_) => ipv4.push(pool_spec(entry)),
            None if entry.aux_addresses.as_ref().is_some_and(|a| !a.is_empty()) => {
                return Err(ApiError::bad_request(format!(
                    "invalid IPAM.Config[{i}]: auxiliary addresses need a subnet"
                )))
            }
            None => {}
        }
    }
    let scope = match req.scope.as_str() {
        "" => None,
        s => Some(Scope::parse(s)?),
    };
    Ok(NetworkSpec {
        scope,
        name: req.name,
        driver: req.driver,
        ipv4,
        ipv6,
        ipam_options: ipam.options.unwrap_or_default(),
        ipam_driver,
        enable_ipv6: req.enable_ipv6,
        internal: req.internal,
        attachable: req.attachable,
        options: req.options.unwrap_or_default(),
        labels: req.labels.unwrap_or_default(),
    })
}

/// `POST /networks/create` → 201 `{"Id", "Warning"}`.
pub async fn create_network(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<NetworkCreated>), ApiError> {
    let req: NetworkCreate = decode(&body)?;
    let spec = network_spec(req)?;
    let n = state.controller.create_network(spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(NetworkCreated {
            id: n.id,
            warning: String::new(),
        }),
    ))
}

/// `DELETE /networks/{id}` → 204.
pub async fn delete_network(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.controller.delete_network(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /networks/{id}/connect`.
pub async fn connect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let req: NetworkConnect = decode(&body)?;
    if req.container.is_empty() {
        return Err(ApiError::bad_request(
            "invalid Container: must not be empty",
        ));
    }
    let settings = req.endpoint_config.unwrap_or_default();
    let addrs = settings.ipam_config.unwrap_or_default();
    let spec = EndpointSpec {
        ipv4: non_empty(&addrs.ipv4_address),
        ipv6: non_empty(&addrs.ipv6_address),
        aliases: settings.aliases.unwrap_or_default(),
        ports: Vec::new(),
        mac: non_empty(&settings.mac_address),
        options: settings.driver_opts.unwrap_or_default(),
        interface: non_empty(&settings.interface),
    };
    state.controller.connect(&req.container, &id, spec).await?;
    Ok(StatusCode::OK)
}

/// `POST /networks/{id}/disconnect`.
pub async fn disconnect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let req: NetworkDisconnect = decode(&body)?;
    if req.container.is_empty() {
        return Err(ApiError::bad_request(
            "invalid Container: must not be empty",
        ));
    }
    state.controller.disconnect(&req.container, &id).await?;
    Ok(StatusCode::OK)
}

/// `POST /networks/prune`.
pub async fn prune(State(state): State<AppState>) -> Result<Json<NetworksPruned>, ApiError> {
    let deleted = state.controller.prune_networks().await?;
    Ok(Json(NetworksPruned {
        networks_deleted: deleted,
    }))
}

// ---- sandboxes ----

fn endpoint_view(ep: &Endpoint, network: &Network) -> SandboxEndpoint {
    SandboxEndpoint {
        network: network.name.clone(),
        network_id: network.id.clone(),
        endpoint_id: ep.id.clone(),
        interface: ep.interface.clone().unwrap_or_default(),
        mac_address: ep.mac.clone().unwrap_or_default(),
        ipv4_address: ep.ipv4.map(|a| a.to_string()).unwrap_or_default(),
        ipv6_address: ep.ipv6.map(|a| a.to_string()).unwrap_or_default(),
        aliases: ep.aliases.clone(),
        ports: ep
            .ports
            .iter()
            .map(|p| PortView {
                proto: p.proto.clone(),
                container_port: p.container_port,
                host_ip: p.host_ip.map(|i| i.to_string()).unwrap_or_default(),
                host_port: p.host_port,
            })
            .collect(),
        gateway: gateway_of(ep, ep.ipv4, &network.ipv4),
        ipv6_gateway: gateway_of(ep, ep.ipv6, &network.ipv6),
    }
}

/// The default gateway an endpoint's join gave its sandbox in one family: its network's
/// gateway in the pool its address came from, unless the join gave none.
fn gateway_of(ep: &Endpoint, addr: Option<ipnet::IpNet>, pools: &[IpamPool]) -> String {
    let Some(addr) = addr else {
        return String::new();
    };
    if ep.disable_gateway {
        return String::new();
    }
    pools
        .iter()
        .find(|p| p.subnet.contains(&addr.addr()))
        .and_then(|p| p.gateway)
        .map(|g| g.addr().to_string())
        .unwrap_or_default()
}

/// Every endpoint with its network, by endpoint id.
async fn all_endpoints(
    controller: &Controller,
) -> Result<HashMap<String, (Endpoint, Network)>, ApiError> {
    let mut out = HashMap::new();
    for n in controller.networks().await? {
        for ep in controller.endpoints(&n.id).await? {
            out.insert(ep.id.clone(), (ep, n.clone()));
        }
    }
    Ok(out)
}

/// The endpoints of one sandbox with their networks, by endpoint id (reads only those).
async fn endpoints_of(
    controller: &Controller,
    sandbox: &Sandbox,
) -> Result<HashMap<String, (Endpoint, Network)>, ApiError> {
    Ok(controller
        .sandbox_endpoints(sandbox)
        .await?
        .into_iter()
        .map(|(ep, n)| (ep.id.clone(), (ep, n)))
        .collect())
}

fn sandbox_view(
    state: &AppState,
    s: &Sandbox,
    endpoints: &HashMap<String, (Endpoint, Network)>,
) -> SandboxResource {
    let file = |name: &str| {
        state
            .sandbox_files
            .as_ref()
            .map(|d| d.join(&s.id).join(name).display().to_string())
            .unwrap_or_default()
    };
    SandboxResource {
        resolv_conf_path: file("resolv.conf"),
        hosts_path: file("hosts"),
        id: s.id.clone(),
        name: s.name.clone(),
        netns: s.key.clone(),
        owned_netns: s.owned_netns,
        hostname: s.hostname.clone().unwrap_or_default(),
        dns: s.dns.iter().map(ToString::to_string).collect(),
        dns_search: s.dns_search.clone(),
        dns_options: s.dns_options.clone(),
        endpoints: s
            .endpoints
            .iter()
            .filter_map(|id| endpoints.get(id))
            .map(|(ep, n)| endpoint_view(ep, n))
            .collect(),
        service: s.service.clone().unwrap_or_default(),
        labels: s.labels.clone(),
    }
}

/// Turns a sandbox create request into the model's spec (ports parsed, empty strings as
/// absent).
pub fn sandbox_spec(req: SandboxCreate) -> Result<SandboxSpec, ApiError> {
    let mut ports = Vec::new();
    for spec in &req.ports {
        ports.extend(
            parse_port_spec(spec)
                .map_err(|e| ApiError::bad_request(format!("invalid Ports: {e}")))?,
        );
    }
    let mut networks = Vec::new();
    for (i, n) in req.networks.into_iter().enumerate() {
        if n.name.is_empty() {
            return Err(ApiError::bad_request(format!(
                "invalid Networks[{i}].Name: must not be empty"
            )));
        }
        let spec = EndpointSpec {
            ipv4: non_empty(&n.ipv4_address),
            ipv6: non_empty(&n.ipv6_address),
            aliases: n.aliases,
            ports: Vec::new(),
            mac: None,
            options: n.driver_opts,
            interface: non_empty(&n.interface),
        };
        networks.push((n.name, spec));
    }
    Ok(SandboxSpec {
        name: req.name,
        netns: non_empty(&req.netns),
        hostname: non_empty(&req.hostname),
        dns: req.dns,
        dns_search: req.dns_search,
        dns_options: req.dns_options,
        networks,
        ports,
        service: non_empty(&req.service),
        labels: req.labels,
        external_key: false,
    })
}

/// `POST /plexus/sandboxes` → 201 with the sandbox.
pub async fn create_sandbox(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<SandboxResource>), ApiError> {
    let req: SandboxCreate = decode(&body)?;
    let spec = sandbox_spec(req)?;
    let controller = &state.controller;
    let sandbox = controller.create_sandbox(spec).await?;
    let endpoints = endpoints_of(controller, &sandbox).await?;
    Ok((
        StatusCode::CREATED,
        Json(sandbox_view(&state, &sandbox, &endpoints)),
    ))
}

/// `GET /plexus/sandboxes`.
pub async fn list_sandboxes(
    State(state): State<AppState>,
) -> Result<Json<Vec<SandboxResource>>, ApiError> {
    let endpoints = all_endpoints(&state.controller).await?;
    Ok(Json(
        state
            .controller
            .sandboxes()
            .await?
            .iter()
            .map(|s| sandbox_view(&state, s, &endpoints))
            .collect(),
    ))
}

/// `GET /plexus/sandboxes/{name}`.
pub async fn inspect_sandbox(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<SandboxResource>, ApiError> {
    let s = state.controller.sandbox(&name).await?;
    let endpoints = endpoints_of(&state.controller, &s).await?;
    Ok(Json(sandbox_view(&state, &s, &endpoints)))
}

/// `DELETE /plexus/sandboxes/{name}` → 204; removes the namespace if Plexus made it.
pub async fn delete_sandbox(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.controller.remove_sandbox(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
