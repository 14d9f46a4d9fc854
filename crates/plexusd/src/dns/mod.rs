//! The embedded DNS, from plexusd's side: it starts the resolver process (plexusd itself,
//! run with `--internal-resolver`, in a session of its own so it outlives plexusd), feeds it
//! each change inside the operation that makes it (a [`CommitObserver`]), keeps it fed
//! across restarts of either side, and writes each sandbox's `resolv.conf` and `hosts`.
//! Services' names follow their `service` events: a service's record goes to the resolver
//! as it is created, updated or removed, and a task's endpoints on the service's networks
//! carry the service (its `connect` and `disconnect` events re-read its sandbox), so
//! `tasks.SERVICE` changes with the task's endpoints.
//! With a control plane, names also cross hosts (`remote.rs`): this host's endpoints on
//! global networks are published, the other hosts' fed to the resolver.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use plexus_cnm::{
    CommitObserver, ControlPlane, Controller, Endpoint, EndpointMode, Event, EventAction,
    EventType, Network, Sandbox, Scope, Service, DEFAULT_BRIDGE_OPTION, DNS_TTL_OPTION,
};
use plexus_dns::control::{Client, Request, PROTOCOL};
use plexus_dns::resolvconf::{self, ResolvConf};
use plexus_dns::zone::{
    EndpointInfo, NetworkInfo, SandboxInfo, ServiceInfo, ServiceMode, ServiceNetwork, ServiceRef,
    Snapshot, DEFAULT_TTL,
};

mod metrics;
mod remote;
pub use metrics::DnsMetrics;

/// How often the supervisor checks that the resolver answers.
const SUPERVISE_EVERY: Duration = Duration::from_secs(1);
/// How long a fresh resolver may take to answer on its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the resolver's files are, under the run dir.
#[derive(Debug, Clone)]
pub struct DnsPaths {
    /// The resolver's control socket.
    pub control: PathBuf,
    /// The resolver's log.
    pub log: PathBuf,
    /// Each sandbox's `resolv.conf` and `hosts`, by id.
    pub sandbox_files: PathBuf,
}

impl DnsPaths {
    /// The paths of `layout` (the one place their names are spelled, shared with `plexus
    /// system reset`).
    pub fn new(layout: &plexus_drivers::reset::Layout) -> Self {
        DnsPaths {
            control: layout.dns_control(),
            log: layout.resolver_log(),
            sandbox_files: layout.sandbox_files(),
        }
    }
}

/// Whether an endpoint's names are served: on a network that serves names, and not a
/// sandbox's gateway endpoint (its way out, which Docker makes without name resolution).
fn named(ep: &Endpoint, n: &Network) -> bool {
    serves_names(n) && !ep.egress
}

/// Whether a network's sandboxes get the embedded DNS: every network but the default
/// `bridge` (as in Docker), the host and null ones (nothing to resolve to), and those made
/// for dockerd by the Docker plugin (dockerd's own resolver answers its containers' names,
/// which it never tells a driver).
pub fn serves_names(n: &Network) -> bool {
    !matches!(n.driver.as_str(), "host" | "null")
        && !n
            .spec
            .labels
            .contains_key(crate::docker_plugin::LABEL_DOCKER_NETWORK)
        && n.spec
            .options
            .get(DEFAULT_BRIDGE_OPTION)
            .map(String::as_str)
            != Some("true")
}

fn network_info(n: &Network) -> NetworkInfo {
    let ttl = n
        .spec
        .options
        .get(DNS_TTL_OPTION)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_TTL);
    NetworkInfo {
        id: n.id.clone(),
        name: n.name.clone(),
        ttl,
        internal: n.spec.internal,
    }
}

fn addrs(ep: &Endpoint) -> Vec<IpAddr> {
    ep.ipv4.iter().chain(&ep.ipv6).map(|n| n.addr()).collect()
}

/// The names a sandbox answers to on a network: its name, its aliases, its hostname.
fn names(sb: &Sandbox, ep: &Endpoint) -> Vec<String> {
    let mut names = vec![sb.name.clone()];
    for name in ep.aliases.iter().chain(&sb.hostname) {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// What the resolver knows of a service: its name, mode and virtual IPs per network.
fn service_info(s: &Service) -> ServiceInfo {
    ServiceInfo {
        id: s.id.clone(),
        name: s.name.clone(),
        mode: match s.endpoint_mode {
            EndpointMode::Vip => ServiceMode::Vip,
            EndpointMode::Dnsrr => ServiceMode::Dnsrr,
        },
        networks: s
            .networks
            .iter()
            .map(|n| ServiceNetwork {
                network_id: n.clone(),
                vips: s.vips_on(n).map(|v| v.addr.addr()).collect(),
            })
            .collect(),
    }
}

/// The service endpoint `ep` of a task is a backend of: `service` (the task's), if the
/// endpoint is on one of its networks.
fn task_of(ep: &Endpoint, service: Option<&Service>) -> Option<ServiceRef> {
    let s = service?;
    s.networks.contains(&ep.network_id).then(|| ServiceRef {
        id: s.id.clone(),
        name: s.name.clone(),
    })
}

/// The service sandbox `sb` is a task of, if any (and still there).
async fn service_of(controller: &Controller, sb: &Sandbox) -> Option<Service> {
    let id = sb.service.as_deref()?;
    match controller.service(id).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(sandbox = %sb.name, service = %id, error = %e, "DNS: a task's service is gone");
            None
        }
    }
}

/// The nameservers of a sandbox: its own (`--dns`), else those that came with its endpoints'
/// addresses (DHCP leases), in endpoint order; empty for the host's.
fn nameservers(sb: &Sandbox, eps: &[(Endpoint, Network)]) -> Vec<IpAddr> {
    if !sb.dns.is_empty() {
        return sb.dns.clone();
    }
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in eps.iter().flat_map(|(ep, _)| ep.dns.iter()) {
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

fn sandbox_info(sb: &Sandbox, eps: &[(Endpoint, Network)]) -> SandboxInfo {
    SandboxInfo {
        id: sb.id.clone(),
        name: sb.name.clone(),
        netns: PathBuf::from(&sb.key),
        upstreams: nameservers(sb, eps)
            .iter()
            .map(|ip| SocketAddr::new(*ip, 53))
            .collect(),
        ndots_set: resolvconf::sets_ndots(&sb.dns_options),
    }
}

/// The resolver's ops for one sandbox as it now is: its DNS networks, itself and its
/// endpoints on them (a task's tagged with `service`, its service); or its removal when it
/// has none.
fn sandbox_ops(
    sb: &Sandbox,
    eps: &[(Endpoint, Network)],
    service: Option<&Service>,
) -> Vec<Request> {
    let served: Vec<&(Endpoint, Network)> = eps.iter().filter(|(ep, n)| named(ep, n)).collect();
    if served.is_empty() {
        return vec![Request::RemoveSandbox { id: sb.id.clone() }];
    }
    let mut ops = Vec::new();
    for (_, n) in &served {
        ops.push(Request::UpsertNetwork {
            network: network_info(n),
        });
    }
    ops.push(Request::UpsertSandbox {
        sandbox: sandbox_info(sb, eps),
    });
    for (order, (ep, n)) in served.iter().enumerate() {
        ops.push(Request::UpsertEndpoint {
            endpoint: EndpointInfo {
                id: ep.id.clone(),
                network_id: n.id.clone(),
                sandbox_id: sb.id.clone(),
                names: names(sb, ep),
                addrs: addrs(ep),
                order: order as u32,
                host: None,
                service: task_of(ep, service),
            },
        });
    }
    ops
}

/// plexusd's side of the embedded DNS.
pub struct Dns {
    client: Client,
    paths: DnsPaths,
    resolver_args: Vec<String>,
    host_resolv_conf: ResolvConf,
    /// A change could not be sent: the supervisor sends everything again.
    stale: AtomicBool,
    /// The cluster's control plane, if this host is in one: where names cross hosts.
    plane: Option<Arc<dyn ControlPlane>>,
    /// What the resolver holds of other hosts' endpoints.
    remote: tokio::sync::Mutex<remote::Known>,
}

impl Dns {
    /// Connects to the resolver, starting it if none answers, and takes over the other
    /// hosts' endpoints it still holds. `resolver_args` are the flags it is started with
    /// besides `--internal-resolver` and the run dir; with `plane`, names cross hosts.
    pub async fn start(
        paths: DnsPaths,
        resolv_conf: &Path,
        resolver_args: Vec<String>,
        plane: Option<Arc<dyn ControlPlane>>,
    ) -> Result<Arc<Self>> {
        let host_resolv_conf = std::fs::read_to_string(resolv_conf)
            .map(|t| resolvconf::parse(&t))
            .unwrap_or_default();
        let dns = Arc::new(Dns {
            client: Client::new(&paths.control),
            paths,
            resolver_args,
            host_resolv_conf,
            stale: AtomicBool::new(true),
            plane,
            remote: tokio::sync::Mutex::new(remote::Known::default()),
        });
        dns.ensure_resolver().await?;
        // A resolver that outlived a previous plexusd still answers the other hosts' names.
        match dns.client.call(&Request::Dump).await {
            Ok(resp) => {
                let held = resp.snapshot.map(|s| s.endpoints).unwrap_or_default();
                dns.remote
                    .lock()
                    .await
                    .inherit(held, std::time::Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "DNS: reading the resolver's state"),
        }
        Ok(dns)
    }

    /// What routes the control plane's endpoint table here, by table name: to give to the
    /// gossip router.
    pub fn sinks(self: &Arc<Self>) -> crate::gossip::plane::Sinks {
        let sink: Arc<dyn crate::gossip::plane::TableSink> = self.clone();
        [(plexus_dns::record::ENDPOINT_TABLE.to_string(), sink)].into()
    }

    /// The directory of each sandbox's `resolv.conf` and `hosts`.
    pub fn sandbox_files(&self) -> &Path {
        &self.paths.sandbox_files
    }

    async fn ensure_resolver(&self) -> Result<()> {
        if let Ok(stats) = self.client.call(&Request::Stats).await {
            match stats.stats {
                Some(s) if s.protocol != PROTOCOL => self.replace_resolver(&s).await?,
                _ => return Ok(()),
            }
        }
        self.spawn_resolver()?;
        let started = std::time::Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if self.client.is_running().await {
                tracing::info!(control = %self.paths.control.display(), "resolver started");
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!(
            "the DNS resolver did not start within {START_TIMEOUT:?}; see {}",
            self.paths.log.display()
        )
    }

    /// Stops a running resolver that speaks another control protocol (one left by the
    /// plexusd before an upgrade), so that a new one is started: an old one would refuse or
    /// misread what this plexusd sends. Its sandboxes miss answers until the new one has
    /// opened their listeners again.
    async fn replace_resolver(&self, old: &plexus_dns::control::Stats) -> Result<()> {
        tracing::warn!(
            pid = old.pid,
            speaks = old.protocol,
            wanted = PROTOCOL,
            "the running DNS resolver speaks another control protocol: replacing it"
        );
        let pid = nix::unistd::Pid::from_raw(i32::try_from(old.pid).unwrap_or(0));
        if pid.as_raw() > 0 {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        let started = std::time::Instant::now();
        while started.elapsed() < START_TIMEOUT {
            if !self.client.is_running().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!(
            "the DNS resolver (pid {}) speaking control protocol {} did not stop within {START_TIMEOUT:?}",
            old.pid,
            old.protocol
        )
    }

    fn spawn_resolver(&self) -> Result<()> {
        use std::os::unix::process::CommandExt;
        // This process's own image, even if its file was replaced by an upgrade since.
        let exe = PathBuf::from("/proc/self/exe");
        if let Some(dir) = self.paths.log.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.paths.log)
            .with_context(|| format!("opening {}", self.paths.log.display()))?;
        let log2 = log.try_clone().context("duplicating the resolver's log")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg0("plexusd")
            .arg("--internal-resolver")
            .arg("--dns-control")
            .arg(&self.paths.control)
            .args(&self.resolver_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            // A session of its own: a signal to plexusd's group does not reach it.
            .process_group(0);
        let child = cmd.spawn().context("starting the DNS resolver")?;
        tracing::info!(pid = child.id(), "resolver process spawned");
        // Not waited for: it outlives this process (init reaps it).
        drop(child);
        Ok(())
    }

    /// Sends the whole state (after either side restarted: the other hosts' endpoints
    /// included), rewrites every sandbox's files and publishes this host's endpoints again.
    pub async fn sync(&self, controller: &Controller) -> Result<()> {
        let mut snap = Snapshot::default();
        let sandboxes = controller.sandboxes().await.context("listing sandboxes")?;
        // A service record that does not read costs its names, not everyone's.
        let services = controller.services().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "DNS: listing services; their names are not served");
            Vec::new()
        });
        let mut networks = std::collections::BTreeMap::new();
        for sb in &sandboxes {
            let eps = controller
                .sandbox_endpoints(sb)
                .await
                .with_context(|| format!("reading sandbox {}'s endpoints", sb.name))?;
            let service = sb
                .service
                .as_deref()
                .and_then(|id| services.iter().find(|s| s.id == id));
            self.write_files(sb, &eps);
            self.publish(sb, &eps, service);
            for op in sandbox_ops(sb, &eps, service) {
                match op {
                    Request::UpsertNetwork { network } => {
                        networks.insert(network.id.clone(), network);
                    }
                    Request::UpsertSandbox { sandbox } => snap.sandboxes.push(sandbox),
                    Request::UpsertEndpoint { endpoint } => snap.endpoints.push(endpoint),
                    _ => {}
                }
            }
        }
        snap.networks = networks.into_values().collect();
        snap.services = services.iter().map(service_info).collect();
        // Held until the resolver has it, so no change of the other hosts' falls between.
        let known = self.remote.lock().await;
        snap.endpoints.extend(known.endpoints().cloned());
        self.client
            .call(&Request::Sync { snapshot: snap })
            .await
            .context("sending the DNS state to the resolver")?;
        drop(known);
        self.stale.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Keeps the resolver running and fed: restarts it if it died, and sends everything
    /// again when a change could not be sent. Its counters go to `metrics` on the way.
    pub fn supervise(
        self: &Arc<Self>,
        controller: Arc<Controller>,
        metrics: DnsMetrics,
    ) -> tokio::task::JoinHandle<()> {
        let dns = self.clone();
        tokio::spawn(async move {
            loop {
                let stats = dns
                    .client
                    .call(&Request::Stats)
                    .await
                    .ok()
                    .and_then(|r| r.stats);
                metrics.observe(stats.as_ref());
                if stats.is_none() {
                    tracing::warn!("the DNS resolver stopped; starting it again");
                    dns.stale.store(true, Ordering::SeqCst);
                    if let Err(e) = dns.ensure_resolver().await {
                        tracing::error!("{e:#}");
                    }
                }
                if dns.stale.load(Ordering::SeqCst) {
                    if let Err(e) = dns.sync(&controller).await {
                        tracing::warn!("DNS resync: {e:#}");
                    }
                }
                dns.expire_inherited().await;
                tokio::time::sleep(SUPERVISE_EVERY).await;
            }
        })
    }

    fn write_files(&self, sb: &Sandbox, eps: &[(Endpoint, Network)]) {
        if let Err(e) = self.try_write_files(sb, eps) {
            tracing::warn!(sandbox = %sb.name, "writing resolv.conf and hosts: {e:#}");
        }
    }

    fn try_write_files(&self, sb: &Sandbox, eps: &[(Endpoint, Network)]) -> Result<()> {
        let dir = self.paths.sandbox_files.join(&sb.id);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let resolv = if eps.iter().any(|(ep, n)| named(ep, n)) {
            resolvconf::for_resolver(&self.host_resolv_conf, &sb.dns_search, &sb.dns_options)
        } else {
            resolvconf::without_resolver(
                &self.host_resolv_conf,
                &nameservers(sb, eps),
                &sb.dns_search,
                &sb.dns_options,
            )
        };
        let name = sb.hostname.clone().unwrap_or_else(|| sb.name.clone());
        // The gateway endpoint's address is no name's: it is only the way out.
        let all: Vec<IpAddr> = eps
            .iter()
            .filter(|(ep, _)| !ep.egress)
            .flat_map(|(ep, _)| addrs(ep))
            .collect();
        let hosts = resolvconf::hosts(&[name], &all);
        for (file, text) in [("resolv.conf", resolv), ("hosts", hosts)] {
            let path = dir.join(file);
            write_in_place(&path, text.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    fn remove_files(&self, sandbox_id: &str) {
        let dir = self.paths.sandbox_files.join(sandbox_id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "removing sandbox files");
            }
        }
    }
}

#[async_trait]
impl CommitObserver for Dns {
    async fn committed(&self, controller: &Controller, events: &[Arc<Event>]) {
        let mut ops = Vec::new();
        let mut touched: Vec<String> = Vec::new();
        for e in events {
            match (e.kind, e.action) {
                (EventType::Endpoint, EventAction::Disconnect) => {
                    ops.push(Request::RemoveEndpoint {
                        id: e.actor.clone(),
                    });
                    if e.scope == Scope::Global {
                        if let Some(network) = e.attributes.get("network") {
                            self.withdraw(network, &e.actor);
                        }
                    }
                    if let Some(sb) = e.attributes.get("container") {
                        touched.push(sb.clone());
                    }
                }
                (EventType::Endpoint, _) => {
                    if let Some(sb) = e.attributes.get("container") {
                        touched.push(sb.clone());
                    }
                }
                (EventType::Sandbox, EventAction::Destroy) => {
                    ops.push(Request::RemoveSandbox {
                        id: e.actor.clone(),
                    });
                    self.remove_files(&e.actor);
                    touched.retain(|t| t != &e.actor);
                }
                (EventType::Sandbox, _) => touched.push(e.actor.clone()),
                (EventType::Network, EventAction::Destroy) => ops.push(Request::RemoveNetwork {
                    id: e.actor.clone(),
                }),
                (EventType::Service, EventAction::Create | EventAction::Update) => {
                    match controller.service(&e.actor).await {
                        Ok(s) => ops.push(Request::UpsertService {
                            service: service_info(&s),
                        }),
                        // Removed in the same commit (its destroy follows), or unreadable.
                        Err(err) => {
                            tracing::debug!(service = %e.actor, error = %err, "DNS: reading a service");
                        }
                    }
                }
                (EventType::Service, EventAction::Destroy) => {
                    ops.push(Request::RemoveService {
                        id: e.actor.clone(),
                    });
                }
                // A task's backend joined or left: its sandbox's endpoints say which service
                // they serve.
                (EventType::Service, _) => {
                    if let Some(sb) = e.attributes.get("container") {
                        touched.push(sb.clone());
                    }
                }
                _ => {}
            }
        }
        touched.sort();
        touched.dedup();
        for id in touched {
            // Gone meanwhile (destroyed in the same commit): nothing to serve.
            let Ok(sb) = controller.sandbox(&id).await else {
                continue;
            };
            match controller.sandbox_endpoints(&sb).await {
                Ok(eps) => {
                    let service = service_of(controller, &sb).await;
                    self.write_files(&sb, &eps);
                    self.publish(&sb, &eps, service.as_ref());
                    ops.extend(sandbox_ops(&sb, &eps, service.as_ref()));
                }
                Err(e) => {
                    tracing::warn!(sandbox = %sb.name, error = %e, "DNS: reading endpoints");
                    self.stale.store(true, Ordering::SeqCst);
                }
            }
        }
        if ops.is_empty() {
            return;
        }
        // If it fails, the supervisor sends everything again within a second.
        self.send(ops).await;
    }
}

/// Runs the resolver process (`plexusd --internal-resolver`) until it is killed.
pub fn run_resolver(
    control: PathBuf,
    host_addr: Option<SocketAddr>,
    host_domain: String,
    host_resolv_conf: Option<PathBuf>,
) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("plexusd resolver: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut config = plexus_dns::server::ResolverConfig::new(&control);
    config.host_listen = host_addr;
    config.host_domain = host_domain;
    if let Some(p) = host_resolv_conf {
        config.host_resolv_conf = p;
    }
    match runtime.block_on(plexus_dns::server::run(config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plexusd resolver: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes `text` into the file at `path` in place, as Docker updates a container's `hosts`
/// and `resolv.conf`: a runtime bind-mounts these files into its containers, and a mount
/// keeps the inode it was given, so a file replaced by a rename would never show a change
/// to a container started before it. An unchanged file is not written at all. Shrinking
/// within the file's first block frees no block, so the filesystem has nothing to discard.
fn write_in_place(path: &Path, text: &[u8]) -> std::io::Result<()> {
    use std::io::{Read, Seek, Write};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let mut old = Vec::with_capacity(text.len());
    file.read_to_end(&mut old)?;
    if old == text {
        return Ok(());
    }
    file.rewind()?;
    file.write_all(text)?;
    file.set_len(text.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_files_change_in_place() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        write_in_place(&path, b"127.0.0.1 localhost\n10.0.0.2 a\n").unwrap();
        let inode = std::fs::metadata(&path).unwrap().ino();
        write_in_place(&path, b"127.0.0.1 localhost\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"127.0.0.1 localhost\n");
        assert_eq!(
            std::fs::metadata(&path).unwrap().ino(),
            inode,
            "a bind mount keeps seeing it"
        );
        write_in_place(&path, b"127.0.0.1 localhost\n10.0.0.3 longer-name\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "127.0.0.1 localhost\n10.0.0.3 longer-name\n"
        );
    }

    fn network(name: &str) -> Network {
        Network {
            id: format!("{name}-id"),
            name: name.into(),
            driver: "bridge".into(),
            scope: plexus_cnm::Scope::Local,
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            spec: plexus_cnm::NetworkSpec::default(),
            created: String::new(),
            driver_data: Default::default(),
        }
    }

    fn endpoint(id: &str, network: &Network, ip: &str, egress: bool) -> Endpoint {
        Endpoint {
            id: id.into(),
            name: id.into(),
            network_id: network.id.clone(),
            sandbox_id: "sb".into(),
            ipv4: ip.parse().ok(),
            ipv6: None,
            pool_ids: Vec::new(),
            mac: None,
            interface: None,
            aliases: Vec::new(),
            ports: Vec::new(),
            scope: plexus_cnm::Scope::Local,
            host: String::new(),
            options: Default::default(),
            routes: Vec::new(),
            disable_gateway: false,
            dns: Vec::new(),
            egress,
        }
    }

    #[test]
    fn a_gateway_endpoint_gets_no_name() {
        let sb = Sandbox {
            id: "sb".into(),
            name: "web".into(),
            key: "/x".into(),
            owned_netns: false,
            endpoints: vec!["e1".into(), "g1".into()],
            hostname: None,
            dns: Vec::new(),
            dns_search: Vec::new(),
            dns_options: Vec::new(),
            service: None,
            labels: Default::default(),
            external_key: false,
        };
        let (app, gw) = (network("app"), network("docker_gwbridge"));
        let eps = vec![
            (endpoint("e1", &app, "10.1.0.2/24", false), app.clone()),
            (endpoint("g1", &gw, "172.18.0.2/16", true), gw.clone()),
        ];
        let named = |eps: &[(Endpoint, Network)]| -> Vec<(String, Vec<IpAddr>)> {
            sandbox_ops(&sb, eps, None)
                .into_iter()
                .filter_map(|op| match op {
                    Request::UpsertEndpoint { endpoint } => Some((endpoint.id, endpoint.addrs)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            named(&eps),
            vec![("e1".to_string(), vec![[10, 1, 0, 2].into()])]
        );
        // Without the mark, the same endpoint is named.
        let mut eps = eps;
        eps[1].0.egress = false;
        assert_eq!(named(&eps).len(), 2);
    }

    #[test]
    fn a_leases_dns_servers_serve_a_sandbox_without_its_own() {
        let lan = network("lan");
        let mut ep = endpoint("e1", &lan, "192.168.1.50/24", false);
        ep.dns = vec![[192, 168, 1, 53].into(), [192, 168, 1, 54].into()];
        let mut other = endpoint("e2", &lan, "192.168.1.51/24", false);
        other.dns = vec![[192, 168, 1, 54].into()];
        let eps = vec![(ep, lan.clone()), (other, lan)];
        let mut sb: Sandbox = serde_json::from_value(serde_json::json!({
            "id": "sb", "name": "web", "key": "/x", "owned_netns": true, "endpoints": [],
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let upstreams = |sb: &Sandbox| -> Vec<String> {
            sandbox_info(sb, &eps)
                .upstreams
                .iter()
                .map(|u| u.to_string())
                .collect()
        };
        assert_eq!(upstreams(&sb), ["192.168.1.53:53", "192.168.1.54:53"]);
        // --dns wins.
        sb.dns = vec![[9, 9, 9, 9].into()];
        assert_eq!(upstreams(&sb), ["9.9.9.9:53"]);
    }
}
