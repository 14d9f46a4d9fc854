//! The resolver process: the listeners of every sandbox, the forwarding task, the cache,
//! and the control socket the daemon feeds it through.
//!
//! It runs apart from plexusd (plexusd starts it and feeds it), so that names keep being
//! answered while plexusd is stopped or restarting, as packets keep being forwarded. When
//! plexusd comes back it sends a full snapshot; sandboxes that did not change keep their
//! listeners, so not one query is lost across the restart.

mod listener;
pub mod redirect;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Mutex};

use crate::cache::{Cache, CacheConfig};
use crate::control::{Request, Response, Stats, MAX_LINE};
use crate::error::DnsError;
use crate::forward::{ForwardStats, ForwarderConfig};
use crate::resolvconf;
use crate::zone::{Records, SandboxInfo, Zone};
use listener::{Listener, Responder};

/// How often the host's `resolv.conf` is read again.
const HOST_RESOLV_REFRESH: Duration = Duration::from_secs(5);
/// A resolver with no sandbox to serve and no daemon connected for this long exits (a
/// daemon that failed to start, or was uninstalled, leaves nothing running).
const IDLE_EXIT: Duration = Duration::from_secs(10);

/// How the resolver runs.
#[derive(Debug, Clone)]
pub struct ResolverConfig {
    /// The control socket's path.
    pub control: PathBuf,
    /// The host's `resolv.conf` (upstreams of sandboxes without `--dns`).
    pub host_resolv_conf: PathBuf,
    /// systemd-resolved's upstream list (replaces its stub 127.0.0.53).
    pub resolved_conf: PathBuf,
    /// The host's own listener, if any (`--dns-host-addr`).
    pub host_listen: Option<SocketAddr>,
    /// The domain the host's listener answers (`NAME.NETWORK.DOMAIN`).
    pub host_domain: String,
    /// Forwarding limits and timings.
    pub forwarder: ForwarderConfig,
    /// Cache limits.
    pub cache: CacheConfig,
}

impl ResolverConfig {
    /// Defaults with the control socket at `control`.
    pub fn new(control: &Path) -> Self {
        ResolverConfig {
            control: control.to_path_buf(),
            host_resolv_conf: resolvconf::HOST_RESOLV_CONF.into(),
            resolved_conf: resolvconf::RESOLVED_UPSTREAMS.into(),
            host_listen: None,
            host_domain: "plexus".into(),
            forwarder: ForwarderConfig::default(),
            cache: CacheConfig::default(),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    queries_udp: AtomicU64,
    queries_tcp: AtomicU64,
    answers_local: AtomicU64,
    answers_nodata: AtomicU64,
    answers_error: AtomicU64,
    forwarded: AtomicU64,
    cache_hits: AtomicU64,
    dropped: AtomicU64,
    refused_overload: AtomicU64,
}

/// A list of upstreams, as swapped in whole.
#[derive(Debug)]
struct Upstreams(Arc<[SocketAddr]>);

/// What the listeners and the forwarding task share.
#[derive(Debug)]
struct Shared {
    zone: ArcSwap<Zone>,
    host_upstreams: ArcSwap<Upstreams>,
    cache: StdMutex<Cache>,
    jobs: mpsc::Sender<upstream::Job>,
    stats: Counters,
    forward_stats: StdMutex<ForwardStats>,
}

impl Shared {
    fn set_forward_stats(&self, s: ForwardStats) {
        if let Ok(mut f) = self.forward_stats.lock() {
            *f = s;
        }
    }

    fn stats(&self, sandboxes: usize) -> Stats {
        let f = self.forward_stats.lock().map(|f| *f).unwrap_or_default();
        let c = &self.stats;
        Stats {
            queries_udp: c.queries_udp.load(Relaxed),
            queries_tcp: c.queries_tcp.load(Relaxed),
            answers_local: c.answers_local.load(Relaxed),
            answers_nodata: c.answers_nodata.load(Relaxed),
            answers_error: c.answers_error.load(Relaxed),
            forwarded: c.forwarded.load(Relaxed),
            cache_hits: c.cache_hits.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            upstream_timeouts: f.timeouts,
            upstream_failures: f.server_failures,
            upstream_gave_up: f.gave_up,
            refused_overload: c.refused_overload.load(Relaxed) + f.refused,
            sandboxes: sandboxes as u64,
            pid: std::process::id(),
            protocol: crate::control::PROTOCOL,
        }
    }
}

/// A sandbox's listener and where it was opened.
#[derive(Debug)]
struct Served {
    netns: PathBuf,
    listener: Listener,
}

struct State {
    records: Records,
    served: HashMap<String, Served>,
    next_client: u64,
}

/// Runs the resolver until the process is told to stop. Binds the control socket first
/// (refusing if another resolver answers on it).
pub async fn run(config: ResolverConfig) -> Result<(), DnsError> {
    let control = bind_control(&config.control).await?;
    let pid_file = pid_file(&config.control);
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .map_err(|e| DnsError::io(format!("writing {}", pid_file.display()), e))?;
    let (jobs_tx, jobs_rx) = mpsc::channel(upstream::QUEUE);
    let shared = Arc::new(Shared {
        zone: ArcSwap::from_pointee(Zone::default()),
        host_upstreams: ArcSwap::from_pointee(Upstreams(
            resolvconf::host_upstreams(&config.host_resolv_conf, &config.resolved_conf).into(),
        )),
        cache: StdMutex::new(Cache::new(config.cache)),
        jobs: jobs_tx,
        stats: Counters::default(),
        forward_stats: StdMutex::new(ForwardStats::default()),
    });
    tokio::spawn(upstream::run(shared.clone(), jobs_rx, config.forwarder));
    tokio::spawn(refresh_host_upstreams(shared.clone(), config.clone()));
    let _host = match config.host_listen {
        Some(addr) => {
            let who = Responder::Host {
                domain: config.host_domain.clone().into(),
            };
            Some(listener::start(shared.clone(), None, addr, who).await?)
        }
        None => None,
    };
    tracing::info!(control = %config.control.display(), "resolver ready");
    let state = Arc::new(Mutex::new(State {
        records: Records::default(),
        served: HashMap::new(),
        next_client: 1,
    }));
    let connections = Arc::new(AtomicU64::new(0));
    let idle = idle_watch(
        state.clone(),
        connections.clone(),
        config.host_listen.is_some(),
    );
    tokio::pin!(idle);
    loop {
        let accepted = tokio::select! {
            a = control.accept() => a,
            () = &mut idle => {
                tracing::info!("no sandbox and no daemon for {IDLE_EXIT:?}: exiting");
                let _ = std::fs::remove_file(&config.control);
                let _ = std::fs::remove_file(&pid_file);
                return Ok(());
            }
        };
        let (stream, _) =
            accepted.map_err(|e| DnsError::io("accepting on the control socket", e))?;
        let shared = shared.clone();
        let state = state.clone();
        let connections = connections.clone();
        connections.fetch_add(1, Relaxed);
        tokio::spawn(async move {
            if let Err(e) = serve_control(stream, shared, state).await {
                tracing::debug!(error = %e, "control connection ended");
            }
            connections.fetch_sub(1, Relaxed);
        });
    }
}

/// Completes once the resolver has had nothing to do for [`IDLE_EXIT`]: no sandbox whose
/// namespace still exists, no daemon connected, no host listener.
async fn idle_watch(state: Arc<Mutex<State>>, connections: Arc<AtomicU64>, host: bool) {
    let mut idle_since: Option<std::time::Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A sandbox whose namespace is gone (deleted without plexusd, say by a test's
        // clean-up) needs no serving.
        let busy = host
            || connections.load(Relaxed) > 0
            || state.lock().await.served.values().any(|s| s.netns.exists());
        match (busy, idle_since) {
            (true, _) => idle_since = None,
            (false, None) => idle_since = Some(std::time::Instant::now()),
            (false, Some(t)) if t.elapsed() >= IDLE_EXIT => return,
            (false, Some(_)) => {}
        }
    }
}

/// The file beside the control socket that holds the resolver's process id.
pub fn pid_file(control: &Path) -> PathBuf {
    control.with_file_name("resolver.pid")
}

async fn bind_control(path: &Path) -> Result<UnixListener, DnsError> {
    if UnixStream::connect(path).await.is_ok() {
        return Err(DnsError::Refused(format!(
            "another resolver answers on {}",
            path.display()
        )));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| DnsError::io(format!("creating {}", dir.display()), e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DnsError::io(format!("removing {}", path.display()), e)),
    }
    let l = UnixListener::bind(path)
        .map_err(|e| DnsError::io(format!("binding {}", path.display()), e))?;
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    Ok(l)
}

async fn refresh_host_upstreams(shared: Arc<Shared>, config: ResolverConfig) {
    let mut last: Vec<SocketAddr> = shared.host_upstreams.load().0.to_vec();
    loop {
        tokio::time::sleep(HOST_RESOLV_REFRESH).await;
        let now = resolvconf::host_upstreams(&config.host_resolv_conf, &config.resolved_conf);
        if now != last {
            tracing::info!(upstreams = ?now, "host resolv.conf changed");
            shared
                .host_upstreams
                .store(Arc::new(Upstreams(now.clone().into())));
            last = now;
        }
    }
}

async fn serve_control(
    stream: UnixStream,
    shared: Arc<Shared>,
    state: Arc<Mutex<State>>,
) -> Result<(), DnsError> {
    let mut conn = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut conn)
            .take(MAX_LINE as u64)
            .read_line(&mut line)
            .await
            .map_err(|e| DnsError::io("reading a control request", e))?;
        if n == 0 {
            return Ok(());
        }
        let resp = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                let mut st = state.lock().await;
                handle(&shared, &mut st, req).await
            }
            Err(e) => Response {
                error: Some(format!("bad request: {e}")),
                ..Response::default()
            },
        };
        let mut out = serde_json::to_vec(&resp).unwrap_or_else(|_| b"{}".to_vec());
        out.push(b'\n');
        conn.get_mut()
            .write_all(&out)
            .await
            .map_err(|e| DnsError::io("writing a control response", e))?;
    }
}

async fn handle(shared: &Arc<Shared>, st: &mut State, req: Request) -> Response {
    match req {
        Request::Stats => Response {
            stats: Some(shared.stats(st.served.len())),
            ..Response::default()
        },
        Request::Dump => Response {
            snapshot: Some(st.records.snapshot()),
            ..Response::default()
        },
        other => {
            apply(&mut st.records, other);
            shared.zone.store(Arc::new(st.records.zone().clone()));
            let errors = reconcile_listeners(shared, st).await;
            Response {
                error: (!errors.is_empty()).then(|| errors.join("; ")),
                ..Response::default()
            }
        }
    }
}

fn apply(records: &mut Records, req: Request) {
    match req {
        Request::Sync { snapshot } => records.replace(snapshot),
        Request::Batch { ops } => {
            for op in ops {
                apply(records, op);
            }
        }
        Request::UpsertNetwork { network } => records.upsert_network(network),
        Request::RemoveNetwork { id } => records.remove_network(&id),
        Request::UpsertSandbox { sandbox } => records.upsert_sandbox(sandbox),
        Request::RemoveSandbox { id } => records.remove_sandbox(&id),
        Request::UpsertEndpoint { endpoint } => records.upsert_endpoint(endpoint),
        Request::RemoveEndpoint { id } => records.remove_endpoint(&id),
        Request::UpsertService { service } => records.upsert_service(service),
        Request::RemoveService { id } => records.remove_service(&id),
        Request::Stats | Request::Dump => {}
    }
}

/// Opens listeners for sandboxes that have none (or moved namespace) and closes those of
/// sandboxes that are gone. Returns what failed, naming the sandbox.
async fn reconcile_listeners(shared: &Arc<Shared>, st: &mut State) -> Vec<String> {
    let wanted: Vec<SandboxInfo> = st.records.sandboxes().cloned().collect();
    let gone: Vec<String> = st
        .served
        .keys()
        .filter(|id| st.records.sandbox(id).is_none())
        .cloned()
        .collect();
    for id in gone {
        if let Some(s) = st.served.remove(&id) {
            drop(s.listener);
            // The namespace may be gone already, and its table with it.
            if let Ok(ns) = plexus_sys::netns::Netns::open(&s.netns) {
                let _ = tokio::task::spawn_blocking(move || redirect::remove(&ns)).await;
            }
        }
    }
    let mut errors = Vec::new();
    for sb in wanted {
        if st.served.get(&sb.id).is_some_and(|s| s.netns == sb.netns) {
            continue;
        }
        let no = st.next_client;
        st.next_client += 1;
        match serve_sandbox(shared, &sb, no).await {
            Ok(served) => {
                st.served.insert(sb.id.clone(), served);
            }
            Err(e) => {
                tracing::warn!(sandbox = %sb.name, error = %e, "no DNS listener");
                errors.push(format!("sandbox {}: {e}", sb.name));
            }
        }
    }
    errors
}

async fn serve_sandbox(
    shared: &Arc<Shared>,
    sb: &SandboxInfo,
    no: u64,
) -> Result<Served, DnsError> {
    let who = Responder::Sandbox {
        id: sb.id.clone().into(),
        no,
    };
    let addr = SocketAddr::from((redirect::RESOLVER_ADDR, 0));
    let listener = listener::start(shared.clone(), Some(&sb.netns), addr, who).await?;
    let ns = plexus_sys::netns::Netns::open(&sb.netns)?;
    let (udp, tcp) = (listener.udp_port, listener.tcp_port);
    tokio::task::spawn_blocking(move || redirect::install(&ns, udp, tcp))
        .await
        .map_err(|e| DnsError::Refused(format!("redirect task: {e}")))??;
    tracing::debug!(sandbox = %sb.name, udp, tcp, "DNS listener");
    Ok(Served {
        netns: sb.netns.clone(),
        listener,
    })
}
