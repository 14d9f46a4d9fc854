//! `plexusd` — the Plexus daemon.
//!
//! Opens the store (embedded redb in the state dir unless `--store` says otherwise), the
//! built-in IPAM (with `--default-address-pool`s), registers the built-in drivers on the
//! daemon's own namespace, makes the kernel match the store (start-up reconciliation), then
//! serves the API on a unix socket until SIGTERM or SIGINT. Shutting down stops only the
//! management plane: namespaces, links and firewall rules stay, and traffic keeps flowing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ipnet::IpNet;
use plexus_cnm::{Controller, ControllerConfig, DriverRegistry, Endpoint, Network, NetworkInfo};
use plexus_drivers::DefaultBridge;
use plexus_ipam::{BuiltinIpam, Ipam, IpamConfig, LOCAL_SPACE};
use tokio::signal::unix::{signal, SignalKind};

/// The Plexus daemon: container networks on this host, served over the Docker Engine API.
#[derive(Debug, Parser)]
#[command(name = "plexusd", version)]
struct Args {
    /// Where persistent state lives (the embedded store, the host id).
    #[arg(long, default_value = "/var/lib/plexus")]
    state_dir: PathBuf,
    /// Where run-time files live (the socket, sandbox namespaces under netns/).
    #[arg(long, default_value = "/run/plexus")]
    run_dir: PathBuf,
    /// The socket to serve on, `unix:///path` [default: unix://<run-dir>/plexus.sock].
    #[arg(short = 'H', long = "host")]
    host: Option<String>,
    /// The store URL (redb://, etcd://, zk://, memory://) [default: redb://<state-dir>/state.db].
    #[arg(long)]
    store: Option<String>,
    /// A default address pool for networks without --subnet, `base=CIDR,size=N`; repeatable.
    #[arg(long = "default-address-pool")]
    default_address_pools: Vec<String>,
    /// The kernel name of the default `bridge` network's bridge, as dockerd's `docker0`; `none`
    /// makes no default network.
    #[arg(short = 'b', long = "bridge", default_value = "plexus0")]
    bridge: String,
    /// The default `bridge` network's gateway address with its subnet's prefix, as dockerd's
    /// `--bip` (`172.17.0.1/16`) [default: the first default-pool subnet that no host route
    /// overlaps].
    #[arg(long)]
    bip: Option<String>,
    /// The part of the default `bridge` network's subnet that sandboxes get addresses from,
    /// as dockerd's `--fixed-cidr` (`172.17.1.0/24`).
    #[arg(long)]
    fixed_cidr: Option<String>,
    /// Give sandboxes on the default `bridge` network an IPv6 address too, as dockerd's
    /// `--ipv6`.
    #[arg(long)]
    ipv6: bool,
    /// The default `bridge` network's IPv6 subnet (with --ipv6), as dockerd's
    /// `--fixed-cidr-v6` [default: a ULA /64 from the IPv6 default pools].
    #[arg(long)]
    fixed_cidr_v6: Option<String>,
    /// The marker that kernel objects made by this daemon carry (link alias prefix).
    #[arg(long, default_value = "plexus", hide = true)]
    marker: String,
}

fn socket_path(args: &Args) -> Result<PathBuf> {
    match &args.host {
        None => Ok(args.run_dir.join("plexus.sock")),
        Some(h) => match h.strip_prefix("unix://") {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => bail!("invalid -H {h:?}: only unix:///path sockets are served"),
        },
    }
}

/// A stable id for this host, kept in the state dir (IPAM derives the IPv6 ULA prefix from it).
fn host_id(state_dir: &Path) -> Result<String> {
    let path = state_dir.join("host-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let mut bytes = [0u8; 16];
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context("reading /dev/urandom")?;
    }
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &id).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(id)
}

/// Removes a socket file left by a daemon that is gone; refuses if one still answers.
async fn clear_stale_socket(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("checking {}", path.display())),
        Ok(meta) if !meta.file_type().is_socket() => {
            bail!(
                "{} exists and is not a socket; not removing it",
                path.display()
            )
        }
        Ok(_) => {
            if tokio::net::UnixStream::connect(path).await.is_ok() {
                bail!(
                    "another daemon is serving on {}; stop it first or use another -H",
                    path.display()
                );
            }
            tracing::info!(socket = %path.display(), "removing stale socket");
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
        }
    }
}

/// Makes IPAM match the records: releases local-space pools no network uses and addresses
/// of used pools that no endpoint, gateway or aux address holds — what a crash between an
/// allocation and its record (or a record's removal and the release) leaves. Runs before the
/// API serves; it assumes no other daemon allocates in this store's local space meanwhile.
async fn reconcile_ipam(
    ipam: &BuiltinIpam,
    networks: &[Network],
    endpoints: &[Endpoint],
) -> Result<()> {
    let mut held: BTreeMap<&str, BTreeSet<IpAddr>> = BTreeMap::new();
    for pool in networks.iter().flat_map(|n| n.ipv4.iter().chain(&n.ipv6)) {
        let fixed = held.entry(pool.pool_id.as_str()).or_default();
        fixed.extend(pool.gateway.map(|g| g.addr()));
        fixed.extend(pool.aux_addresses.values().copied());
    }
    for ep in endpoints {
        let addrs = ep.ipv4.iter().chain(ep.ipv6.iter());
        for (pool, addr) in ep.pool_ids.iter().zip(addrs) {
            held.entry(pool.as_str()).or_default().insert(addr.addr());
        }
    }
    let (mut pools, mut addrs) = (0, 0);
    for (pool_id, _, owner) in ipam.pools(LOCAL_SPACE).context("listing IPAM pools")? {
        let Some(keep) = held.get(pool_id.as_str()) else {
            match ipam.release_pool(&pool_id).await {
                Ok(()) => pools += 1,
                Err(e) => {
                    tracing::warn!(pool = %pool_id, %owner, error = %e, "cannot release a pool no network uses")
                }
            }
            continue;
        };
        for addr in ipam.allocated(&pool_id).context("listing IPAM addresses")? {
            if keep.contains(&addr) {
                continue;
            }
            match ipam.release_address(&pool_id, addr).await {
                Ok(()) => addrs += 1,
                Err(e) => {
                    tracing::warn!(pool = %pool_id, %addr, error = %e, "cannot release an address no endpoint holds")
                }
            }
        }
    }
    if pools + addrs > 0 {
        tracing::info!(
            pools,
            addresses = addrs,
            "released IPAM allocations the store's records do not hold"
        );
    }
    Ok(())
}

/// Makes the kernel and IPAM match the store's records: the bridge driver's links and rules,
/// the sandbox namespaces under `netns_dir`, and IPAM's pools and addresses.
async fn reconcile(
    controller: &Controller,
    ipam: &BuiltinIpam,
    bridge: &plexus_drivers::BridgeDriver,
    netns_dir: &Path,
) -> Result<()> {
    let mut infos = Vec::new();
    let networks = controller.networks().await?;
    let mut records = Vec::new();
    // Endpoints whose connect never finished (no live pair, or ports not published) or whose
    // pair is gone are rolled back first, so everything below sees only endpoints that have
    // their data plane.
    let live = bridge
        .live_endpoints()
        .await
        .map_err(|e| anyhow::anyhow!("start-up reconciliation: {e}"))?;
    let publishing = bridge.publishing_endpoints();
    let mut lost = Vec::new();
    for n in &networks {
        for ep in controller.endpoints(&n.id).await? {
            let unfinished = !live.contains_key(&ep.id)
                || (!ep.ports.is_empty() && !publishing.contains(&ep.id));
            if n.driver == "bridge" && unfinished {
                lost.push(ep);
            } else {
                records.push(ep);
            }
        }
        if n.driver == "bridge" {
            infos.push(NetworkInfo {
                id: n.id.clone(),
                name: n.name.clone(),
                options: n.spec.options.clone(),
                ipv4: n.ipv4.clone(),
                ipv6: n.ipv6.clone(),
                internal: n.spec.internal,
                enable_ipv6: n.spec.enable_ipv6,
            });
        }
    }
    if !lost.is_empty() {
        tracing::warn!(
            endpoints = lost.len(),
            "rolling back endpoints without a finished join (a crash during connect or disconnect, or a sandbox namespace deleted meanwhile)"
        );
        controller.forget_endpoints(&lost).await?;
    }
    for ep in &records {
        if let Some(Some(name)) = live.get(&ep.id) {
            if ep.interface.as_deref() != Some(name) {
                tracing::warn!(endpoint = %ep.id, recorded = ?ep.interface, actual = %name, "correcting the interface name a crash left in the record");
                controller.set_interface(ep, name).await?;
            }
        }
    }
    let endpoints: BTreeSet<String> = records.iter().map(|e| e.id.clone()).collect();
    let sandboxes = controller.sandboxes().await?;
    for s in &sandboxes {
        if !Path::new(&s.key).exists() {
            tracing::warn!(sandbox = %s.name, netns = %s.key, "the sandbox's namespace is gone (reboot?); remove the sandbox and create it again");
        }
    }
    // Namespaces under our own netns dir that no sandbox owns were made by a daemon that
    // died before recording them: remove them.
    let owned: BTreeSet<PathBuf> = sandboxes
        .iter()
        .filter(|s| s.owned_netns)
        .map(|s| PathBuf::from(&s.key))
        .collect();
    if let Ok(entries) = std::fs::read_dir(netns_dir) {
        for entry in entries.flatten() {
            if !owned.contains(&entry.path()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                match plexus_sys::netns::Netns::delete(netns_dir, &name) {
                    Ok(()) => {
                        tracing::info!(netns = %entry.path().display(), "removed an orphan namespace")
                    }
                    Err(e) => {
                        tracing::warn!(netns = %entry.path().display(), error = %e, "cannot remove an orphan namespace")
                    }
                }
            }
        }
    }
    let done = bridge
        .reconcile(&infos, &endpoints)
        .await
        .map_err(|e| anyhow::anyhow!("start-up reconciliation: {e}"))?;
    tracing::info!(
        networks = infos.len(),
        restored = done.restored.len(),
        stale_links = done.links.len(),
        stale_ports = done.ports.len(),
        "kernel reconciled with the store"
    );
    reconcile_ipam(ipam, &networks, &records).await
}

/// `--bridge`, `--bip`, `--fixed-cidr`, `--ipv6` and `--fixed-cidr-v6`, checked before
/// anything starts: what the default `bridge` network is to be (the host's routes still to
/// read); `None` for `--bridge none`.
fn default_bridge_flags(args: &Args) -> Result<Option<DefaultBridge>> {
    if args.bridge == "none" {
        return Ok(None);
    }
    plexus_sys::rtnl::check_ifname("--bridge", &args.bridge).map_err(anyhow::Error::new)?;
    let cidr = |flag: &str, value: &Option<String>, example: &str| -> Result<Option<IpNet>> {
        value
            .as_deref()
            .map(|v| {
                v.parse::<IpNet>()
                    .map_err(|e| anyhow::anyhow!("invalid {flag} {v:?}: {e} (such as {example})"))
            })
            .transpose()
    };
    let default = DefaultBridge {
        bridge_name: args.bridge.clone(),
        bip: cidr("--bip", &args.bip, "172.17.0.1/16")?,
        avoid: Vec::new(),
        fixed_cidr: cidr("--fixed-cidr", &args.fixed_cidr, "172.17.1.0/24")?,
        ipv6: args.ipv6,
        fixed_cidr_v6: cidr("--fixed-cidr-v6", &args.fixed_cidr_v6, "fd00:1::/64")?,
    };
    match default.check() {
        Ok(()) => Ok(Some(default)),
        Err(plexus_cnm::CnmError::Invalid { field, reason }) => {
            let value = match field.as_str() {
                "bip" => &args.bip,
                "fixed-cidr" => &args.fixed_cidr,
                _ => &args.fixed_cidr_v6,
            };
            bail!(
                "invalid --{field} {:?}: {reason}",
                value.as_deref().unwrap_or_default()
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// Without `--bip`, the default `bridge` network's subnet must not overlap the host's
/// routes: reads them into `default.avoid`.
async fn read_host_routes(
    mut default: DefaultBridge,
    host: &plexus_sys::netns::Netns,
) -> Result<DefaultBridge> {
    if default.bip.is_none() {
        let rtnl = plexus_sys::rtnl::Rtnl::connect(host)
            .await
            .context("reading the host's routes")?;
        let routes = rtnl
            .route_destinations_v4()
            .await
            .context("reading the host's routes")?;
        default.avoid = routes
            .into_iter()
            .filter_map(|(ip, len)| IpNet::new(IpAddr::V4(ip), len).ok())
            .collect();
    }
    Ok(default)
}

async fn shutdown_signal() {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot watch signals; stop with SIGKILL");
            std::future::pending::<()>().await;
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down; the data plane stays up");
}

async fn run(args: Args) -> Result<()> {
    // Flags first: a bad one changes nothing.
    let bridge_flags = default_bridge_flags(&args)?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating state dir {}", args.state_dir.display()))?;
    let netns_dir = args.run_dir.join("netns");
    std::fs::create_dir_all(&netns_dir)
        .with_context(|| format!("creating run dir {}", netns_dir.display()))?;
    let socket = socket_path(&args)?;

    let url = args
        .store
        .clone()
        .unwrap_or_else(|| format!("redb://{}", args.state_dir.join("state.db").display()));
    let store = plexus_kv::open(&url, plexus_kv::OpenOptions::default())
        .await
        .with_context(|| format!("opening store {url}"))?;

    let pools: Vec<&str> = args
        .default_address_pools
        .iter()
        .map(String::as_str)
        .collect();
    let mut ipam_config = IpamConfig::new(&host_id(&args.state_dir)?);
    if !pools.is_empty() {
        ipam_config = ipam_config
            .with_default_address_pools(&pools)
            .context("invalid --default-address-pool")?;
    }
    // The controller records every network and endpoint durably right after IPAM hands out
    // its pools and addresses (and start-up reconciliation below releases what no record
    // holds), so IPAM's writes need no disk flush of their own.
    ipam_config.relaxed_writes = true;
    let ipam = Arc::new(
        BuiltinIpam::open(store.clone(), ipam_config)
            .await
            .context("opening IPAM")?,
    );

    let host = plexus_sys::netns::Netns::host().context("opening the daemon's namespace")?;
    let mut drivers = DriverRegistry::new();
    let bridge = plexus_drivers::register_builtin(
        &mut drivers,
        plexus_drivers::DriverConfig::new(host.clone(), args.marker.clone()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting the drivers: {e}"))?;
    tracing::info!(drivers = ?drivers.names(), "drivers registered");

    let controller = Arc::new(
        Controller::new(
            store.clone(),
            ipam.clone(),
            drivers,
            ControllerConfig::default(),
        )
        .with_namespaces(Arc::new(plexus_api::SysNamespaces::new(netns_dir.clone()))),
    );
    reconcile(&controller, &ipam, &bridge, &netns_dir).await?;
    let made = controller
        .create_predefined_networks()
        .await
        .context("making the pre-defined networks")?;
    if !made.is_empty() {
        tracing::info!(networks = ?made, "pre-defined networks made");
    }
    if let Some(default) = bridge_flags {
        let default = read_host_routes(default, &host).await?;
        if let Some(network) = plexus_drivers::create_default_bridge(&controller, &default)
            .await
            .context("making the default bridge network")?
        {
            let subnet = network.ipv4.first().map(|p| p.subnet);
            tracing::info!(bridge = %default.bridge_name, ?subnet, "default bridge network made");
        }
    }

    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating socket dir {}", dir.display()))?;
    }
    clear_stale_socket(&socket).await?;
    let listener = tokio::net::UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting mode 0660 on {}", socket.display()))?;

    let app = plexus_api::router(plexus_api::AppState {
        controller: controller.clone(),
    });
    tracing::info!(socket = %socket.display(), store = %url, "plexusd serving");
    // Streams of `/events` end when the signal comes, or the graceful shutdown would wait
    // for them forever.
    let shutdown = async move {
        shutdown_signal().await;
        controller.close_events();
    };
    plexus_api::serve(listener, app, shutdown)
        .await
        .context("serving the API")?;

    if let Err(e) = std::fs::remove_file(&socket) {
        tracing::warn!(socket = %socket.display(), error = %e, "cannot remove the socket");
    }
    // Links already removed from the store may still be being deleted in the background:
    // let that finish (briefly; the next start's reconciliation deletes what is left).
    if tokio::time::timeout(std::time::Duration::from_secs(2), bridge.settle())
        .await
        .is_err()
    {
        tracing::warn!("background link deletions still running; the next start finishes them");
    }
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "closing the store");
    }
    tracing::info!("plexusd stopped");
    Ok(())
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("plexusd: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(args));
    // Background tasks (netlink readers, blocking helpers) need not finish: the data plane
    // lives in the kernel.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("plexusd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
