//! `plexusd` — the Plexus daemon.
//!
//! Checks the kernel first (Linux 5.10 or later with the features Plexus needs, `kernel.rs`;
//! otherwise it refuses to start and changes nothing), then opens the store (embedded redb
//! in the state dir unless `--store` says otherwise), the built-in IPAM (with
//! `--default-address-pool`s), registers the built-in drivers on the daemon's own namespace,
//! makes the kernel match the store (start-up reconciliation), then serves the API on a unix
//! socket until SIGTERM or SIGINT, reconciling again every `--reconcile-interval` (what was
//! deleted behind its back is made again). Shutting down stops only the management plane:
//! namespaces, links and firewall rules stay, and traffic keeps flowing.
//!
//! Prometheus metrics (`metrics.rs`: the stores and the reconciler; plexus-api: requests,
//! networks, endpoints, sandboxes) are served at `GET /metrics` on the socket, and on
//! `--metrics-addr` when given (bound before anything else starts, so a taken address stops
//! the daemon at once).

use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Parser;
use ipnet::IpNet;
use plexus_cnm::{Controller, ControllerConfig, DriverRegistry};
use plexus_drivers::reset::Layout;
use plexus_drivers::DefaultBridge;
use plexus_ipam::{BuiltinIpam, Ipam, IpamConfig};
use tokio::signal::unix::{signal, SignalKind};

mod cluster;
mod dhcp;
mod dns;
mod docker_plugin;
mod gossip;
mod kernel;
mod lb;
mod metrics;
mod plugins;
mod reconcile;

/// The Plexus daemon: container networks on this host, served over the Docker Engine API.
#[derive(Debug, Parser)]
#[command(name = "plexusd", version)]
struct Args {
    /// Where persistent state lives (the embedded store, the host id).
    #[arg(long, default_value = plexus_drivers::reset::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Where run-time files live (the socket, sandbox namespaces under netns/).
    #[arg(long, default_value = plexus_drivers::reset::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// The socket to serve on, `unix:///path` [default: unix://<run-dir>/plexus.sock].
    #[arg(short = 'H', long = "host")]
    host: Option<String>,
    /// The store URL (redb://, etcd://, zk://, memory://) [default: redb://<state-dir>/state.db].
    /// A shared backend (etcd, ZooKeeper) keeps this host's records under its host id.
    #[arg(long)]
    store: Option<String>,
    /// The cluster store shared by the hosts of a cluster (etcd:// or zk://), as dockerd's
    /// `--cluster-store`: global-scope networks, their endpoints and the global address space.
    #[arg(long = "cluster-store")]
    cluster_store: Option<String>,
    /// The address this host gives the other hosts of the cluster, `IP[:PORT]` (port 7946 by
    /// default), as dockerd's `--cluster-advertise`.
    #[arg(long = "cluster-advertise")]
    cluster_advertise: Option<String>,
    /// A cluster store option, `KEY=VALUE` (repeatable), as dockerd's: `discovery.heartbeat`,
    /// `discovery.ttl` (seconds; 20 and 60 by default), `kv.cacertfile`, `kv.certfile`,
    /// `kv.keyfile`.
    #[arg(long = "cluster-store-opt")]
    cluster_store_opts: Vec<String>,
    /// Gossip seeds, `PEER[,PEER…]` (each `IP[:PORT]`, port 7946 by default; repeatable):
    /// hosts of the cluster to join through, besides those the cluster store lists. Gossip
    /// runs with --cluster-store and --cluster-advertise.
    #[arg(long = "cluster-join")]
    cluster_join: Vec<String>,
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
    /// How often the kernel is reconciled with the store while running (`5s`, `500ms`, `1m`):
    /// what was deleted behind Plexus's back is made again; `0` turns it off.
    #[arg(long, default_value = "5s")]
    reconcile_interval: String,
    /// Also serve `GET /metrics` (Prometheus) on this TCP address, `ADDR:PORT` (such as
    /// `127.0.0.1:9323`); only `/metrics` is served there. The API socket always serves it.
    #[arg(long = "metrics-addr")]
    metrics_addr: Option<String>,
    /// Services' published ports answer only on this local address (repeat the flag for
    /// more); by default on every address of the host. Docker's routing mesh has no such
    /// limit.
    #[arg(long = "ingress-address", value_name = "ADDR")]
    ingress_addresses: Vec<std::net::Ipv4Addr>,
    /// The marker that kernel objects made by this daemon carry (link alias prefix).
    #[arg(long, default_value = plexus_drivers::reset::DEFAULT_MARKER, hide = true)]
    marker: String,
    /// Also answer sandbox names to the host on this address (`127.0.0.1:5353`): names as
    /// `NAME.NETWORK.<--dns-host-domain>`.
    #[arg(long = "dns-host-addr")]
    dns_host_addr: Option<std::net::SocketAddr>,
    /// The domain of names the host's listener answers.
    #[arg(long = "dns-host-domain", default_value = "plexus")]
    dns_host_domain: String,
    /// The `resolv.conf` whose servers the embedded DNS forwards to for sandboxes without
    /// `--dns`.
    #[arg(long = "dns-resolv-conf", default_value = "/etc/resolv.conf")]
    dns_resolv_conf: PathBuf,
    /// Look for plugins (`NAME.sock`, `NAME/NAME.sock`, `NAME.spec`, `NAME.json`) here
    /// instead of Docker's directories (repeat for more; tests).
    #[arg(long = "plugin-dir", value_name = "DIR", hide = true)]
    plugin_dirs: Vec<PathBuf>,
    /// How long, in seconds, a plugin that does not accept connections is tried again, and
    /// how long its answer may take (dockerd: 30).
    #[arg(
        long = "plugin-timeout",
        value_name = "SECS",
        default_value_t = 30,
        hide = true
    )]
    plugin_timeout: u64,
    /// Serve Docker's network and IPAM plugin protocol on this socket, for dockerd: the
    /// plugin's name is the file's name without `.sock` (`docker network create -d plexus
    /// --ipam-driver plexus`); `none` serves nothing.
    #[arg(
        long = "docker-plugin-socket",
        env = "PLEXUS_DOCKER_PLUGIN_SOCKET",
        value_name = "PATH",
        default_value = docker_plugin::DEFAULT_SOCKET
    )]
    docker_plugin_socket: String,
    /// Run as the embedded DNS resolver that plexusd starts (internal).
    #[arg(long = "internal-resolver", hide = true)]
    internal_resolver: bool,
    /// The resolver's control socket (internal, with --internal-resolver).
    #[arg(long = "dns-control", hide = true)]
    dns_control: Option<PathBuf>,
}

/// Where the daemon's files are (`plexus system reset` removes them by the same names).
fn layout(args: &Args) -> Layout {
    Layout::new(&args.state_dir, &args.run_dir)
}

fn socket_path(args: &Args) -> Result<PathBuf> {
    match &args.host {
        None => Ok(layout(args).socket()),
        Some(h) => match h.strip_prefix("unix://") {
            Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
            _ => bail!("invalid -H {h:?}: only unix:///path sockets are served"),
        },
    }
}

/// A stable id for this host, kept in the state dir (IPAM derives the IPv6 ULA prefix from it).
fn host_id(layout: &Layout) -> Result<String> {
    let path = layout.host_id();
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
    let tmp = layout.host_id_tmp();
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
    let reconcile_interval = reconcile::parse_interval(&args.reconcile_interval)?;
    // dockerd's plugin activation is answered from now on; its other calls wait for `ready`.
    let docker_plugin = docker_plugin::bind(&args.docker_plugin_socket).await?;
    // Then the kernel, in a scratch namespace: one Plexus cannot run on changes nothing.
    kernel::check().await?;
    // Bound now, so an address that is taken stops the start before anything changes.
    let metrics_listener = match &args.metrics_addr {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let registry = plexus_metrics::Registry::new();
    metrics::register_build_info(&registry)?;
    let store_metrics = metrics::StoreMetrics::register(&registry)?;
    let reconcile_metrics = metrics::ReconcileMetrics::register(&registry)?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating state dir {}", args.state_dir.display()))?;
    let netns_dir = layout(&args).netns_dir();
    std::fs::create_dir_all(&netns_dir)
        .with_context(|| format!("creating run dir {}", netns_dir.display()))?;
    let socket = socket_path(&args)?;

    let advertise = args
        .cluster_advertise
        .as_deref()
        .map(cluster::parse_advertise)
        .transpose()?;
    if advertise.is_some() && args.cluster_store.is_none() {
        bail!("--cluster-advertise needs --cluster-store");
    }
    if !args.cluster_store_opts.is_empty() && args.cluster_store.is_none() {
        bail!("--cluster-store-opt needs --cluster-store");
    }
    let cluster_opts = cluster::ClusterOpts::parse(&args.cluster_store_opts)?;
    let seeds = gossip::parse_join(&args.cluster_join)?;
    if !seeds.is_empty() && advertise.is_none() {
        bail!("--cluster-join needs --cluster-advertise (and --cluster-store)");
    }
    if let Some(a) = advertise {
        gossip::check_local(a)?;
    }
    let host_id = host_id(&layout(&args))?;
    let url = args
        .store
        .clone()
        .unwrap_or_else(|| format!("redb://{}", layout(&args).store().display()));
    let store = store_metrics.wrap(cluster::open_local(&url, &host_id).await?, "local");
    let cluster_store = match &args.cluster_store {
        Some(url) => {
            Some(store_metrics.wrap(cluster::open_cluster(url, &cluster_opts).await?, "cluster"))
        }
        None => None,
    };

    let pools: Vec<&str> = args
        .default_address_pools
        .iter()
        .map(String::as_str)
        .collect();
    let mut ipam_config = IpamConfig::new(&host_id);
    if !pools.is_empty() {
        ipam_config = ipam_config
            .with_default_address_pools(&pools)
            .context("invalid --default-address-pool")?;
    }
    // The controller records every network and endpoint durably right after IPAM hands out
    // its pools and addresses (and start-up reconciliation below releases what no record
    // holds), so IPAM's writes need no disk flush of their own.
    ipam_config.relaxed_writes = true;
    let global_ipam: Option<Arc<dyn Ipam>> = match &cluster_store {
        // Global addresses are shared by hosts: no relaxed writes there.
        Some(c) => {
            let mut config = ipam_config.clone();
            config.relaxed_writes = false;
            Some(Arc::new(
                BuiltinIpam::open(c.clone(), config)
                    .await
                    .context("opening the global address space in the cluster store")?,
            ))
        }
        None => None,
    };
    let ipam = Arc::new(
        BuiltinIpam::open(store.clone(), ipam_config)
            .await
            .context("opening IPAM")?,
    );

    // Gossip before the drivers: global drivers get its control plane.
    let gossip = match (&cluster_store, advertise) {
        (Some(c), Some(a)) => Some(
            gossip::Gossip::start(
                c.clone(),
                &host_id,
                a,
                &seeds,
                plexus_gossip::Config::default(),
            )
            .await?,
        ),
        _ => None,
    };

    let host = plexus_sys::netns::Netns::host().context("opening the daemon's namespace")?;
    let mut drivers = DriverRegistry::new();
    let mut driver_config = plexus_drivers::DriverConfig::new(host.clone(), args.marker.clone());
    let plane: Option<Arc<dyn plexus_cnm::ControlPlane>> = gossip.as_ref().map(|g| {
        Arc::new(gossip::plane::GossipControlPlane::new(g.handle.clone()))
            as Arc<dyn plexus_cnm::ControlPlane>
    });
    if let Some(p) = &plane {
        driver_config = driver_config.with_control_plane(p.clone());
    }
    driver_config.cluster_store = cluster_store.clone();
    let bridge = plexus_drivers::register_builtin(&mut drivers, driver_config.clone())
        .await
        .map_err(|e| anyhow::anyhow!("starting the drivers: {e}"))?;
    // The overlay driver, on a daemon that is part of a cluster (a cluster store for its
    // VXLAN ids, gossip for its peers).
    if let (Some(plane), Some(_)) = (plane.clone(), &cluster_store) {
        let overlay = plexus_drivers::OverlayDriver::new(
            driver_config,
            plexus_drivers::OverlayConfig {
                run_dir: layout(&args).overlay_dir(),
                control_plane: plane,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("starting the overlay driver: {e}"))?;
        drivers.register(Arc::new(overlay));
    }
    tracing::info!(drivers = ?drivers.names(), "drivers registered");

    let overlay_on = drivers.names().iter().any(|d| d == "overlay");
    let scoped_ipam = plexus_ipam::ScopedIpam::new(ipam.clone(), global_ipam);
    // Docker's plugins, found when a network first names one (-d NAME, --ipam-driver NAME).
    let plugin_dirs = if args.plugin_dirs.is_empty() {
        plexus_ipam::plugin::PluginDirs::default()
    } else {
        plexus_ipam::plugin::PluginDirs {
            socket_dirs: args.plugin_dirs.clone(),
            spec_dirs: args.plugin_dirs.clone(),
        }
    };
    let plugins = Arc::new(plugins::Plugins::new(
        plugin_dirs,
        plexus_ipam::plugin::Timeouts::both(std::time::Duration::from_secs(args.plugin_timeout)),
        host.clone(),
    ));
    let routed_ipam = plugins::RoutedIpam::new(Arc::new(scoped_ipam), plugins.clone());
    // --ipam-driver dhcp: its lease table is read and every renewal started again now.
    let dhcp_config = plexus_dhcp::DhcpConfig {
        netns: Some(host.clone()),
        ..plexus_dhcp::DhcpConfig::default()
    };
    let dhcp_ipam = Arc::new(
        plexus_dhcp::DhcpIpam::open(store.clone(), dhcp_config)
            .await
            .context("opening the dhcp IPAM driver's lease table")?,
    );
    // The pools dockerd holds (docker_plugin) in front of dhcp's, the dhcp driver by its
    // name, any other name a plugin.
    let (controller_ipam, ipam_resolver) = docker_plugin::wire_ipam(
        store.clone(),
        Arc::new(dhcp::WithDhcp::new(
            dhcp_ipam.clone(),
            Arc::new(routed_ipam),
        )),
        Arc::new(dhcp::DhcpResolver::new(
            dhcp_ipam.clone(),
            Some(plugins.clone()),
        )),
    );
    let mut controller = Controller::new(
        store.clone(),
        controller_ipam,
        drivers,
        ControllerConfig {
            host_id: host_id.clone(),
            cluster_advertise: advertise,
            // Docker's docker_gwbridge: the way out of sandboxes on overlay networks.
            gateway_network: Some(plexus_drivers::gateway_bridge_spec()),
            // Docker swarm's ingress network, for the routing mesh: over the overlay.
            ingress_network: overlay_on.then(plexus_drivers::ingress_network_spec),
            ..ControllerConfig::default()
        },
    )
    .with_namespaces(Arc::new(plexus_api::SysNamespaces::new(netns_dir.clone())))
    .with_driver_resolver(plugins)
    .with_ipam_resolver(ipam_resolver);
    let mut resolver_args = vec![
        "--dns-resolv-conf".to_string(),
        args.dns_resolv_conf.display().to_string(),
    ];
    if let Some(addr) = args.dns_host_addr {
        resolver_args.extend([
            "--dns-host-addr".to_string(),
            addr.to_string(),
            "--dns-host-domain".to_string(),
            args.dns_host_domain.clone(),
        ]);
    }
    let dns = dns::Dns::start(
        dns::DnsPaths::new(&layout(&args)),
        &args.dns_resolv_conf,
        resolver_args,
        // Names cross hosts through the same control plane as the overlay's peers.
        plane.clone(),
    )
    .await
    .context("starting the embedded DNS")?;
    controller = controller.with_observer(dns.clone());
    // Services' virtual IPs in each sandbox's namespace, following every commit.
    // Other hosts' service tasks come through the same control plane.
    let lb = lb::Lb::new(
        lb::LbMetrics::register(&registry)?,
        plane,
        lb::MeshConfig {
            host: host.clone(),
            addresses: (!args.ingress_addresses.is_empty())
                .then(|| args.ingress_addresses.iter().copied().collect()),
            host_id: host_id.clone(),
        },
    );
    controller = controller.with_observer(lb.clone());
    let mut heartbeat = None;
    if let Some(c) = &cluster_store {
        let node = plexus_cnm::Node {
            id: host_id.clone(),
            name: cluster::hostname(&host_id),
            advertise,
        };
        cluster::announce(c, &node, cluster_opts.ttl).await?;
        heartbeat = Some(cluster::heartbeat(c.clone(), node, cluster_opts.clone()));
        controller = controller.with_cluster_store(c.clone());
        tracing::info!(cluster_store = %c.url(), ?advertise, host = %host_id, "joined the cluster store");
    }
    let controller = Arc::new(controller);
    // Discovery has one source: with gossip, SWIM membership (a death is known in seconds);
    // without, libnetwork's kv discovery (host records come and go with their TTL).
    let mut cluster_tasks = Vec::new();
    match &gossip {
        Some(g) => {
            let metrics = Arc::new(gossip::metrics::GossipMetrics::register(&registry)?);
            let mut sinks = dns.sinks();
            sinks.extend(lb.sinks());
            cluster_tasks.push(tokio::spawn(gossip::plane::route(
                g.handle.clone(),
                controller.clone(),
                sinks,
            )));
            cluster_tasks.push(tokio::spawn(g.clone().follow_keyring()));
            cluster_tasks.push(tokio::spawn(g.clone().monitor(metrics)));
        }
        None if cluster_store.is_some() => {
            let c = controller.clone();
            cluster_tasks.push(tokio::spawn(async move { c.follow_nodes().await }));
        }
        None => {}
    }
    reconcile::startup(&controller, &ipam, &netns_dir, &reconcile_metrics).await?;
    let (leases, dhcp_pools) = dhcp::reconcile(&controller, &dhcp_ipam).await?;
    reconcile_metrics.repaired(plexus_cnm::ReconcileMode::Startup, "dhcp_lease", leases);
    reconcile_metrics.repaired(plexus_cnm::ReconcileMode::Startup, "dhcp_pool", dhcp_pools);
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

    if let Err(e) = dns.sync(&controller).await {
        tracing::warn!("embedded DNS: {e:#}");
    }
    // Every sandbox's load-balancing table made to match the store before serving.
    match lb.sync(&controller).await {
        Ok(r) => {
            tracing::info!(
                sandboxes = r.sandboxes,
                repaired = r.repaired,
                failed = r.failed,
                "load-balancing tables reconciled with the store"
            )
        }
        Err(e) => tracing::warn!("load balancing: {e:#}; the periodic pass tries again"),
    }
    let lb_periodic = reconcile_interval.map(|every| lb.spawn_periodic(controller.clone(), every));
    cluster_tasks.extend(lb.spawn_mesh(controller.clone(), cluster_store.clone()));
    let dns_metrics = dns::DnsMetrics::register(&registry)?;
    let dns_supervisor = dns.supervise(controller.clone(), dns_metrics);
    let periodic = reconcile_interval.map(|every| {
        tracing::info!(interval = ?every, "periodic reconciliation on");
        reconcile::spawn_periodic(controller.clone(), every, reconcile_metrics.clone())
    });
    let mut state = plexus_api::AppState::new(controller.clone(), &registry)
        .context("registering the API's metrics")?
        .with_sandbox_files(dns.sandbox_files());
    if let Some(g) = &gossip {
        state = state.with_cluster(Arc::new(gossip::service::GossipService::new(g.clone())));
    }
    let metrics_server = metrics_listener.map(|listener| {
        let app = plexus_api::metrics_router(state.clone());
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving /metrics over TCP (--metrics-addr)");
        }
        tokio::spawn(async move {
            if let Err(e) = plexus_api::serve(listener, app, std::future::pending()).await {
                tracing::error!(error = %e, "serving --metrics-addr stopped");
            }
        })
    });
    let app = plexus_api::router(state);
    if let Some(p) = &docker_plugin {
        p.ready(controller.clone());
    }
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

    // The load-balancing tables stay: traffic to the VIPs outlives plexusd.
    for task in periodic
        .into_iter()
        .chain(metrics_server)
        .chain(lb_periodic)
    {
        task.abort();
    }
    dns_supervisor.abort();
    for task in heartbeat.into_iter().chain(cluster_tasks) {
        task.abort();
    }
    // No graceful gossip leave: the data plane outlives plexusd, so the other hosts keep
    // this host's entries (and their traffic to it) until their failure detector declares
    // it dead; a restart within that time is seamless.
    drop(gossip);
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
    if let Some(c) = &cluster_store {
        if let Err(e) = c.close().await {
            tracing::warn!(error = %e, "closing the cluster store");
        }
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
    if args.internal_resolver {
        let control = args
            .dns_control
            .clone()
            .unwrap_or_else(|| layout(&args).dns_control());
        return dns::run_resolver(
            control,
            args.dns_host_addr,
            args.dns_host_domain.clone(),
            Some(args.dns_resolv_conf.clone()),
        );
    }
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
