//! Docker's plugin protocol, served: plexusd is a `NetworkDriver` and `IpamDriver` plugin that
//! a real dockerd uses (`docker network create -d plexus --ipam-driver plexus`, `docker run
//! --network N`), on `/run/docker/plugins/plexus.sock` (`--docker-plugin-socket`; the plugin's
//! name is the file's name without `.sock`, `none` serves nothing).
//!
//! **Readiness.** The socket is bound first thing in `main` ([`bind`]), and
//! `/Plugin.Activate` is answered at once, before the kernel check, the store or the
//! controller: a dockerd starting beside plexusd finds the plugin instead of retrying for 30
//! seconds. Every other call waits until [`DockerPlugin::ready`] hands over the controller
//! (after start-up reconciliation), then runs.
//!
//! **How a container joins.** dockerd asks `Join` with the container's namespace
//! (`SandboxKey`), which for a container being started does not exist yet: runc makes it,
//! and libnetwork's `SetKey` mounts it from the container's prestart hook, then moves in the
//! interfaces its drivers named and configures them, before the container's process
//! starts. Plexus answers as libnetwork's remote drivers do: the join goes through its
//! controller, on a Plexus sandbox per container namespace (`docker-<namespace file name>`,
//! made at the container's first join, removed at its last leave) whose joins hand the
//! interface over ([`plexus_cnm::InterfaceName::handoff`]): the bridge driver makes the veth
//! pair in plexusd's namespace, the host end on the network's bridge with isolation and
//! published ports, the other end down and bare under `InterfaceName.SrcName`; dockerd
//! moves it in as `eth<n>` (`DstPrefix`) with the address and MAC it already has, and
//! routes through the answer's `Gateway`. So the interface is there when the process
//! starts, `docker network connect` works on a running container, and `docker inspect`
//! shows the gateway. `DisableGatewayService` keeps `docker_gwbridge` out. Published ports
//! come from `CreateEndpoint`'s `com.docker.network.portmap` (dockerd sends the container's
//! `-p` there, to its first network) and are published by the join.
//!
//! **Addresses.** With `--ipam-driver <plugin>`, pools and addresses are Plexus IPAM
//! allocations ([`ipam`]), recorded as dockerd's ([`state`]); the Plexus network made by
//! `CreateNetwork` adopts them ([`adopt`]): the same pool, gateway and endpoint addresses,
//! never allocated twice and never released by Plexus (dockerd calls `ReleaseAddress` and
//! `ReleasePool`). With dockerd's own IPAM, the Plexus network takes dockerd's subnet,
//! gateway and addresses from Plexus's IPAM as given ones (so a subnet one of Plexus's
//! networks has is refused).
//!
//! **Network names.** dockerd sends a driver no network name (nor its labels): the Plexus
//! network is `docker-<the first 12 digits of dockerd's network id>`, the id `docker network
//! ls` shows, with the label `plexus.docker.network=<the whole id>`.
//!
//! **Container names.** dockerd answers its containers' names itself (its embedded resolver
//! at 127.0.0.11, in the container's namespace), and tells a driver none of them: Plexus's
//! embedded DNS stays out of these networks' sandboxes (`dns::serves_names`).
//!
//! **State.** Which Plexus network a dockerd network is, and each dockerd endpoint's address,
//! ports and sandbox, are records in the local store ([`state`]), so a restarted plexusd
//! answers `Leave` and `DeleteEndpoint` for containers joined before.
//!
//! Errors are the protocol's `{"Err": "…"}` (HTTP 500), naming the field.

mod adopt;
mod endpoint;
mod ipam;
mod network;
mod state;
#[cfg(test)]
mod tests;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use plexus_cnm::{Controller, IpamResolver};
use plexus_ipam::Ipam;
use plexus_kv::Store;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Mutex};

pub use adopt::{AdoptResolver, WithDockerPools};
pub use network::LABEL_DOCKER_NETWORK;
pub use state::held_allocations;

/// Where dockerd looks for the plugin by default: `plexus`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/plexus.sock";

/// What a refused call answers: the protocol's `Err`, a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl Refusal {
    /// A refusal of `field`'s value.
    pub fn field(field: &str, message: impl std::fmt::Display) -> Self {
        Refusal(format!("{field}: {message}"))
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<plexus_cnm::CnmError> for Refusal {
    fn from(e: plexus_cnm::CnmError) -> Self {
        Refusal(e.to_string())
    }
}

impl From<plexus_ipam::IpamError> for Refusal {
    fn from(e: plexus_ipam::IpamError) -> Self {
        Refusal(e.to_string())
    }
}

impl From<plexus_kv::KvError> for Refusal {
    fn from(e: plexus_kv::KvError) -> Self {
        Refusal(format!("the store: {e}"))
    }
}

/// A call's outcome: the answer's JSON or a refusal.
pub type Answer = std::result::Result<Value, Refusal>;

/// Serializes an answer type.
fn answer<T: Serialize>(value: T) -> Answer {
    serde_json::to_value(value).map_err(|e| Refusal(format!("encoding the answer: {e}")))
}

/// Reads a request body as `T`; the error names the call.
fn request<T: serde::de::DeserializeOwned>(op: &str, body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal(format!("{op}: malformed request: {e}")))
}

/// What the calls work with once the daemon is ready.
pub struct Ctx {
    /// The controller: every change goes through it.
    pub controller: Arc<Controller>,
    /// The local store, where the plugin's records are.
    pub state: state::PluginState,
    /// The plugin's name (the socket file's without `.sock`).
    pub name: String,
    /// One call at a time: a call reads and writes several records.
    pub lock: Mutex<()>,
}

impl Ctx {
    /// The context of a plugin named `name` over `controller`.
    pub fn new(controller: Arc<Controller>, name: &str) -> Self {
        let store = controller.datastore().local_store().clone();
        Ctx {
            controller,
            state: state::PluginState::new(store),
            name: name.to_string(),
            lock: Mutex::new(()),
        }
    }
}

/// Runs one call on a ready daemon (`path` is the URL path, `/NetworkDriver.Join`).
pub async fn dispatch(ctx: &Arc<Ctx>, path: &str, body: &[u8]) -> Option<Answer> {
    let _one = ctx.lock.lock().await;
    let op = path.trim_start_matches('/');
    tracing::trace!(call = op, body = %String::from_utf8_lossy(body), "docker plugin call");
    let answer = match op {
        "NetworkDriver.GetCapabilities" => {
            answer(plexus_drivers::remote::wire::CapabilitiesReply {
                scope: "local".into(),
                connectivity_scope: "local".into(),
            })
        }
        "NetworkDriver.CreateNetwork" => network::create(ctx, body).await,
        "NetworkDriver.DeleteNetwork" => network::delete(ctx, body).await,
        "NetworkDriver.AllocateNetwork" | "NetworkDriver.FreeNetwork" => Err(Refusal(format!(
            "{op}: the plugin {:?} serves local-scope networks only",
            ctx.name
        ))),
        "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Ok(json!({})),
        "NetworkDriver.CreateEndpoint" => endpoint::create(ctx, body).await,
        "NetworkDriver.DeleteEndpoint" => endpoint::delete(ctx, body).await,
        "NetworkDriver.EndpointOperInfo" => endpoint::oper_info(ctx, body).await,
        "NetworkDriver.Join" => endpoint::join(ctx, body).await,
        "NetworkDriver.Leave" => endpoint::leave(ctx, body).await,
        "NetworkDriver.ProgramExternalConnectivity"
        | "NetworkDriver.RevokeExternalConnectivity" => endpoint::external(ctx, op, body).await,
        "IpamDriver.GetCapabilities" => answer(plexus_ipam::remote::CapabilitiesReply::default()),
        "IpamDriver.GetDefaultAddressSpaces" => answer(plexus_ipam::remote::SpacesReply {
            local_default_address_space: plexus_ipam::LOCAL_SPACE.into(),
            global_default_address_space: plexus_ipam::GLOBAL_SPACE.into(),
        }),
        "IpamDriver.RequestPool" => ipam::request_pool(ctx, body).await,
        "IpamDriver.ReleasePool" => ipam::release_pool(ctx, body).await,
        "IpamDriver.RequestAddress" => ipam::request_address(ctx, body).await,
        "IpamDriver.ReleaseAddress" => ipam::release_address(ctx, body).await,
        _ => return None,
    };
    match &answer {
        Ok(_) => tracing::debug!(call = op, "docker plugin call answered"),
        Err(e) => tracing::warn!(call = op, error = %e, "docker plugin call refused"),
    }
    Some(answer)
}

/// The served socket: answers `Plugin.Activate` now, the rest once [`ready`](Self::ready).
pub struct DockerPlugin {
    socket: PathBuf,
    name: String,
    ready: watch::Sender<Option<Arc<Ctx>>>,
    task: tokio::task::JoinHandle<()>,
}

/// The plugin's name of a socket path: its file name without `.sock`.
pub fn plugin_name(socket: &Path) -> Result<String> {
    let file = socket
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let name = file.strip_suffix(".sock").unwrap_or(file);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        anyhow::bail!(
            "invalid --docker-plugin-socket {}: the file name must be NAME.sock, NAME of letters, digits, '-', '_' or '.'",
            socket.display()
        );
    }
    Ok(name.to_string())
}

/// Binds `--docker-plugin-socket` (`none`: nothing) and starts answering `Plugin.Activate`.
/// A socket another daemon serves is refused, but for the default one, which is then left to
/// it (`None`).
pub async fn bind(flag: &str) -> Result<Option<DockerPlugin>> {
    if flag == "none" {
        return Ok(None);
    }
    let socket = PathBuf::from(flag);
    let name = plugin_name(&socket)?;
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "--docker-plugin-socket: creating the directory {}",
                dir.display()
            )
        })?;
    }
    if flag == DEFAULT_SOCKET && tokio::net::UnixStream::connect(&socket).await.is_ok() {
        // Another daemon on this host serves dockerd's `plexus`; this one serves none rather
        // than refusing to start (a path given with the flag is refused instead).
        tracing::warn!(socket = %socket.display(), "another daemon serves the Docker plugin socket; serving none (--docker-plugin-socket to choose another)");
        return Ok(None);
    }
    crate::clear_stale_socket(&socket)
        .await
        .context("--docker-plugin-socket")?;
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("--docker-plugin-socket: listening on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting mode 0660 on {}", socket.display()))?;
    let (ready, watch) = watch::channel(None);
    let app = Router::new().fallback(serve_call).with_state(watch);
    let task = tokio::spawn(async move {
        if let Err(e) = plexus_api::serve(listener, app, std::future::pending()).await {
            tracing::error!(error = %e, "serving the Docker plugin socket stopped");
        }
    });
    tracing::info!(socket = %socket.display(), plugin = %name, "Docker plugin socket bound; activation answered, other calls wait for start-up");
    Ok(Some(DockerPlugin {
        socket,
        name,
        ready,
        task,
    }))
}

impl DockerPlugin {
    /// From now on every call runs against `controller`.
    pub fn ready(&self, controller: Arc<Controller>) {
        let ctx = Arc::new(Ctx::new(controller, &self.name));
        tokio::spawn(endpoint::resume_joins(ctx.clone()));
        self.ready.send_replace(Some(ctx));
        tracing::info!(socket = %self.socket.display(), plugin = %self.name, "serving Docker's NetworkDriver and IpamDriver");
    }
}

/// Stops serving and removes the socket (when plexusd stops, or fails to start).
impl Drop for DockerPlugin {
    fn drop(&mut self) {
        self.task.abort();
        if let Err(e) = std::fs::remove_file(&self.socket) {
            tracing::warn!(socket = %self.socket.display(), error = %e, "cannot remove the Docker plugin socket");
        }
    }
}

/// The controller's IPAM with the pools dockerd's networks adopted routed to the plugin's
/// records, and the resolver that gives the controller the adopting IPAM
/// ([`adopt`]).
pub fn wire_ipam(
    store: Arc<dyn Store>,
    ipam: Arc<dyn Ipam>,
    resolver: Arc<dyn IpamResolver>,
) -> (Arc<dyn Ipam>, Arc<dyn IpamResolver>) {
    let state = state::PluginState::new(store);
    (
        Arc::new(WithDockerPools::new(state.clone(), ipam)),
        Arc::new(AdoptResolver::new(state, resolver)),
    )
}

/// One HTTP call: activation at once, the rest once ready.
async fn serve_call(
    State(ready): State<watch::Receiver<Option<Arc<Ctx>>>>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if path == "/Plugin.Activate" {
        return reply(Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })));
    }
    let mut ready = ready;
    let ctx = match ready.wait_for(|c| c.is_some()).await {
        Ok(c) => c.clone(),
        Err(_) => None,
    };
    let Some(ctx) = ctx else {
        return reply(Err(Refusal("plexusd is stopping".into())));
    };
    match dispatch(&ctx, path, &body).await {
        Some(a) => reply(a),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, plexus_ipam::plugin::MEDIA_TYPE)],
            json!({ "Err": format!("{path}: not implemented by plexusd") }).to_string(),
        )
            .into_response(),
    }
}

/// The protocol's answer: the JSON, or `{"Err": …}` with status 500.
fn reply(answer: Answer) -> Response {
    let (status, body) = match answer {
        Ok(v) => (StatusCode::OK, v),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, json!({ "Err": e.0 })),
    };
    (
        status,
        [(header::CONTENT_TYPE, plexus_ipam::plugin::MEDIA_TYPE)],
        body.to_string(),
    )
        .into_response()
}
