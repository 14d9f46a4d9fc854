//! `plexus` — the Plexus CLI.
//!
//! `plexus network create|ls|inspect|rm|connect|disconnect|prune` take `docker network`'s flags
//! and print what it prints; `plexus sandbox create|ls|inspect|rm|exec` manage sandboxes (a
//! container's network namespace); `plexus events` prints what `docker events` prints;
//! `plexus info` shows the host id and the cluster store; `plexus system reset` removes what
//! plexusd made on the host. `-H` or `PLEXUS_HOST` selects the daemon's socket. Daemon
//! errors print as docker's do — `Error response from daemon: <message>` — with exit code 1.

mod client;
mod cluster;
mod doctor;
mod events;
mod format;
mod sandbox;
mod service;
mod system;

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use anyhow::{anyhow, bail, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use plexus_api_types::{NetworkCreated, NetworkResource, NetworksPruned, SystemInfo};
use serde_json::{json, Value};

use client::{encode, Client, DaemonError};
use sandbox::{exec_in, sandbox, Exec, SandboxCmd};

/// The Plexus CLI.
#[derive(Debug, Parser)]
#[command(name = "plexus", version)]
struct Cli {
    /// The daemon's socket.
    #[arg(
        short = 'H',
        long = "host",
        env = "PLEXUS_HOST",
        global = true,
        default_value = "unix:///run/plexus/plexus.sock"
    )]
    host: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage sandboxes (containers' network namespaces).
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Manage services: a virtual IP load-balanced over tasks (sandboxes).
    #[command(subcommand)]
    Service(service::ServiceCmd),
    /// Display the daemon's host id, kernel and cluster store (as `docker info`).
    Info,
    /// The gossip cluster: hosts, their state, this host's keyring; rotate the key.
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Manage Plexus on this host (`reset`: a clean uninstall).
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Check whether Plexus can run on this host: kernel, features, forwarding,
    /// br_netfilter, overlapping bridges and routes, the daemon and its stores.
    Doctor(doctor::DoctorArgs),
    /// Get real-time events from the daemon, as `docker events`.
    Events {
        /// Show events created since this time: RFC 3339, Unix seconds, or a duration
        /// before now (`10m`).
        #[arg(long)]
        since: Option<String>,
        /// Stream events until this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// Filter: `type=network`, `event=connect`, `network=NAME`, `sandbox=NAME`,
        /// `scope=local` (repeatable).
        #[arg(short, long)]
        filter: Vec<String>,
        /// `json`: one JSON object per line.
        #[arg(long)]
        format: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum NetworkCmd {
    /// Create a network.
    Create {
        /// The network's name.
        name: String,
        /// Driver to manage the network.
        #[arg(short = 'd', long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR format (one IPv4 and one IPv6 at most).
        #[arg(long)]
        subnet: Vec<String>,
        /// Allocate container addresses from a sub-range.
        #[arg(long = "ip-range")]
        ip_range: Vec<String>,
        /// Gateway for the subnet.
        #[arg(long)]
        gateway: Vec<String>,
        /// Auxiliary addresses used by the network driver (name=ip).
        #[arg(long = "aux-address")]
        aux_address: Vec<String>,
        /// Enable IPv6 networking.
        #[arg(long)]
        ipv6: bool,
        /// Restrict external access to the network.
        #[arg(long)]
        internal: bool,
        /// Enable manual container attachment.
        #[arg(long)]
        attachable: bool,
        /// Control the network's scope (local, global or swarm; the driver's by default).
        #[arg(long)]
        scope: Option<String>,
        /// Driver specific options (key=value).
        #[arg(short = 'o', long = "opt")]
        opt: Vec<String>,
        /// Set metadata on a network (key=value).
        #[arg(long)]
        label: Vec<String>,
        /// IP Address Management driver.
        #[arg(long = "ipam-driver", default_value = "default")]
        ipam_driver: String,
        /// IPAM driver specific options (key=value).
        #[arg(long = "ipam-opt")]
        ipam_opt: Vec<String>,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        /// Only display network IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Filter output (name=, id=, driver=, label=, scope=, type=).
        #[arg(short, long = "filter")]
        filter: Vec<String>,
        /// Format output: `json`, `table` or a Go template (`{{.Name}}`).
        #[arg(long)]
        format: Option<String>,
        /// Do not truncate the output.
        #[arg(long = "no-trunc")]
        no_trunc: bool,
    },
    /// Display detailed information on one or more networks.
    Inspect {
        /// Networks (name or id).
        #[arg(required = true)]
        networks: Vec<String>,
        /// Format output with a Go template (`{{.Name}}`, `{{json .IPAM}}`).
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Remove one or more networks.
    #[command(alias = "remove")]
    Rm {
        /// Networks (name or id).
        #[arg(required = true)]
        networks: Vec<String>,
        /// Do not error if a network does not exist.
        #[arg(short, long)]
        force: bool,
    },
    /// Connect a sandbox to a network.
    Connect {
        /// The network.
        network: String,
        /// The sandbox.
        sandbox: String,
        /// IPv4 address.
        #[arg(long)]
        ip: Option<String>,
        /// IPv6 address.
        #[arg(long)]
        ip6: Option<String>,
        /// Network-scoped alias.
        #[arg(long)]
        alias: Vec<String>,
        /// Driver option of the endpoint, `key=value` (repeatable).
        #[arg(long = "driver-opt")]
        driver_opt: Vec<String>,
    },
    /// Disconnect a sandbox from a network.
    Disconnect {
        /// The network.
        network: String,
        /// The sandbox.
        sandbox: String,
        /// Force the sandbox to disconnect.
        #[arg(short, long)]
        force: bool,
    },
    /// Remove all unused networks.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

fn key_values(flag: &str, items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items {
        let (k, v) = item.split_once('=').ok_or_else(|| {
            anyhow!("invalid argument {item:?} for \"{flag}\" flag: expected key=value")
        })?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

pub(crate) fn labels(items: &[String]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// Docker's rule: subnets, ranges, gateways and aux addresses are matched by containment.
fn ipam_configs(
    subnets: &[String],
    ranges: &[String],
    gateways: &[String],
    aux: &BTreeMap<String, String>,
) -> Result<Vec<Value>> {
    let parse = |s: &str| -> Result<(std::net::IpAddr, u8)> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| anyhow!("invalid CIDR address: {s}"))?;
        Ok((
            ip.parse()
                .map_err(|_| anyhow!("invalid CIDR address: {s}"))?,
            len.parse()
                .map_err(|_| anyhow!("invalid CIDR address: {s}"))?,
        ))
    };
    let contains = |subnet: &str, ip: &str| -> bool {
        let Ok((net, len)) = parse(subnet) else {
            return false;
        };
        let ip = ip.split('/').next().unwrap_or(ip);
        let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
            return false;
        };
        match (net, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
                let mask = if len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(len.min(32)))
                };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(len.min(128)))
                };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    };
    if subnets.is_empty() && (!ranges.is_empty() || !gateways.is_empty() || !aux.is_empty()) {
        bail!("--ip-range, --gateway and --aux-address need a --subnet");
    }
    let mut out = Vec::new();
    for subnet in subnets {
        let mut entry = json!({"Subnet": subnet});
        let range: Vec<&String> = ranges.iter().filter(|r| contains(subnet, r)).collect();
        if range.len() > 1 {
            bail!(
                "cannot configure multiple ranges ({}) on the same subnet ({subnet})",
                range.len()
            );
        }
        if let Some(r) = range.first() {
            entry["IPRange"] = json!(r);
        }
        let gw: Vec<&String> = gateways.iter().filter(|g| contains(subnet, g)).collect();
        if gw.len() > 1 {
            bail!("cannot configure multiple gateways for the same subnet ({subnet})");
        }
        if let Some(g) = gw.first() {
            entry["Gateway"] = json!(g);
        }
        let mine: BTreeMap<&String, &String> =
            aux.iter().filter(|(_, ip)| contains(subnet, ip)).collect();
        if !mine.is_empty() {
            entry["AuxiliaryAddresses"] = json!(mine);
        }
        out.push(entry);
    }
    for r in ranges {
        if !subnets.iter().any(|s| contains(s, r)) {
            bail!("no matching subnet for range {r}");
        }
    }
    for g in gateways {
        if !subnets.iter().any(|s| contains(s, g)) {
            bail!("no matching subnet for gateway {g}");
        }
    }
    for (name, ip) in aux {
        if !subnets.iter().any(|s| contains(s, ip)) {
            bail!("no matching subnet for aux-address {name}={ip}");
        }
    }
    Ok(out)
}

pub(crate) fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

fn network_row(n: &NetworkResource, trunc: bool) -> Value {
    let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    json!({
        "ID": if trunc { short(&n.id) } else { n.id.clone() },
        "Name": n.name,
        "Driver": n.driver,
        "Scope": n.scope,
        "IPv6": n.enable_ipv6.to_string(),
        "Internal": n.internal.to_string(),
        "Labels": labels.join(","),
        "CreatedAt": n.created,
    })
}

/// Prints rows with `--format`: `json` (one object per line), `table [TEMPLATE]` or a template.
pub(crate) fn print_rows(
    rows: &[Value],
    format: Option<&str>,
    headers: &Value,
    default: &[&str],
) -> Result<()> {
    let fmt = format.unwrap_or("table");
    let mut out = String::new();
    if fmt == "json" {
        for r in rows {
            out.push_str(&serde_json::to_string(r)?);
            out.push('\n');
        }
    } else if let Some(tpl) = fmt.strip_prefix("table") {
        let tpl = if tpl.trim().is_empty() {
            default
                .iter()
                .map(|f| format!("{{{{.{f}}}}}"))
                .collect::<Vec<_>>()
                .join("\t")
        } else {
            tpl.trim().to_string()
        };
        let header = format::template(&tpl, headers)?;
        let header: Vec<&str> = header.split('\t').collect();
        let mut cells = Vec::new();
        for r in rows {
            cells.push(
                format::template(&tpl, r)?
                    .split('\t')
                    .map(str::to_string)
                    .collect(),
            );
        }
        out = format::table(&header, &cells);
    } else {
        for r in rows {
            out.push_str(&format::template(fmt, r)?);
            out.push('\n');
        }
    }
    print!("{out}");
    Ok(())
}

/// Prints each value with the template, or all as a JSON array.
pub(crate) fn print_inspect<T: serde::Serialize>(items: &[T], format: Option<&str>) -> Result<()> {
    match format {
        None => println!("{}", format::pretty(&items)?),
        Some(tpl) => {
            for item in items {
                println!("{}", format::template(tpl, &serde_json::to_value(item)?)?);
            }
        }
    }
    Ok(())
}

/// Runs `f` on each name; prints daemon errors as docker does and fails at the end if any did.
pub(crate) fn each<F>(names: &[String], mut f: F) -> Result<()>
where
    F: FnMut(&str) -> Result<()>,
{
    let mut failed = 0;
    for name in names {
        if let Err(e) = f(name) {
            eprintln!("{}", render_error(&e));
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(Reported.into());
    }
    Ok(())
}

/// An error already printed.
#[derive(Debug)]
pub(crate) struct Reported;

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("")
    }
}

impl std::error::Error for Reported {}

pub(crate) fn render_error(e: &anyhow::Error) -> String {
    if let Some(d) = e.downcast_ref::<DaemonError>() {
        d.to_string()
    } else {
        format!("{e:#}")
    }
}

fn network(client: &Client, cmd: NetworkCmd) -> Result<()> {
    match cmd {
        NetworkCmd::Create {
            name,
            driver,
            subnet,
            ip_range,
            gateway,
            aux_address,
            ipv6,
            internal,
            attachable,
            scope,
            opt,
            label,
            ipam_driver,
            ipam_opt,
        } => {
            let aux = key_values("--aux-address", &aux_address)?;
            let config = ipam_configs(&subnet, &ip_range, &gateway, &aux)?;
            let body = json!({
                "Name": name,
                "CheckDuplicate": true,
                "Driver": driver,
                "EnableIPv6": ipv6,
                "Internal": internal,
                "Attachable": attachable,
                "Scope": scope.unwrap_or_default(),
                "IPAM": {
                    "Driver": ipam_driver,
                    "Config": config,
                    "Options": key_values("--ipam-opt", &ipam_opt)?,
                },
                "Options": key_values("--opt", &opt)?,
                "Labels": labels(&label),
            });
            let created: NetworkCreated = client.post("/networks/create", body)?;
            println!("{}", created.id);
        }
        NetworkCmd::Ls {
            quiet,
            filter,
            format,
            no_trunc,
        } => {
            let filters = client::filters_query(&filter)?;
            let mut networks: Vec<NetworkResource> =
                client.get(&format!("/networks?filters={filters}"))?;
            networks.sort_by(|a, b| a.name.cmp(&b.name));
            if quiet {
                for n in &networks {
                    println!("{}", if no_trunc { n.id.clone() } else { short(&n.id) });
                }
                return Ok(());
            }
            let rows: Vec<Value> = networks.iter().map(|n| network_row(n, !no_trunc)).collect();
            let headers = json!({"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER",
                "Scope": "SCOPE", "IPv6": "IPV6", "Internal": "INTERNAL", "Labels": "LABELS",
                "CreatedAt": "CREATED AT"});
            print_rows(
                &rows,
                format.as_deref(),
                &headers,
                &["ID", "Name", "Driver", "Scope"],
            )?;
        }
        NetworkCmd::Inspect { networks, format } => {
            let mut found = Vec::new();
            let mut failed = false;
            for n in &networks {
                match client.get::<NetworkResource>(&format!("/networks/{}", encode(n))) {
                    Ok(v) => found.push(v),
                    Err(e) => {
                        failed = true;
                        if format.is_none() && found.is_empty() && networks.len() == 1 {
                            println!("[]");
                        }
                        eprintln!("{}", render_error(&e));
                    }
                }
            }
            if !found.is_empty() || !failed {
                print_inspect(&found, format.as_deref())?;
            }
            if failed {
                return Err(Reported.into());
            }
        }
        NetworkCmd::Rm { networks, force } => {
            each(&networks, |n| {
                match client.delete(&format!("/networks/{}", encode(n))) {
                    Ok(()) => {
                        println!("{n}");
                        Ok(())
                    }
                    Err(e)
                        if force
                            && e.downcast_ref::<DaemonError>()
                                .is_some_and(|d| d.0.ends_with("not found")) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            })?;
        }
        NetworkCmd::Connect {
            network,
            sandbox,
            ip,
            ip6,
            alias,
            driver_opt,
        } => {
            let body = json!({
                "Container": sandbox,
                "EndpointConfig": {
                    "IPAMConfig": {"IPv4Address": ip.unwrap_or_default(), "IPv6Address": ip6.unwrap_or_default()},
                    "Aliases": alias,
                    "DriverOpts": key_values("--driver-opt", &driver_opt)?,
                }
            });
            let _: Value = client.post(&format!("/networks/{}/connect", encode(&network)), body)?;
        }
        NetworkCmd::Disconnect {
            network,
            sandbox,
            force,
        } => {
            let _: Value = client.post(
                &format!("/networks/{}/disconnect", encode(&network)),
                json!({"Container": sandbox, "Force": force}),
            )?;
        }
        NetworkCmd::Prune { force } => {
            if !force {
                print!("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] ");
                std::io::stdout().flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
                    return Ok(());
                }
            }
            let pruned: NetworksPruned = client.post("/networks/prune", json!({}))?;
            if !pruned.networks_deleted.is_empty() {
                println!("Deleted Networks:");
                for n in &pruned.networks_deleted {
                    println!("{n}");
                }
            }
        }
    }
    Ok(())
}

/// `plexus info`: a few lines in `docker info`'s manner.
fn info(client: &Client) -> Result<()> {
    let info: SystemInfo = client.get("/info")?;
    println!("ID: {}", info.id);
    println!("Name: {}", info.name);
    println!("Kernel Version: {}", info.kernel_version);
    match &info.plexus_cluster_store {
        Some(c) => println!("Cluster Store: {} ({})", c.url, c.status),
        None => println!("Cluster Store: none"),
    }
    if !info.cluster_advertise.is_empty() {
        println!("Cluster Advertise: {}", info.cluster_advertise);
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    // Like any Unix filter, die quietly when the reader of our output goes away (`| head`).
    // SAFETY: setting a signal disposition to SIG_DFL before any thread exists.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let create_matches = matches
        .subcommand_matches("sandbox")
        .and_then(|m| m.subcommand_matches("create"));
    // Given with -H or PLEXUS_HOST, rather than the default.
    let host_given = (matches.value_source("host")
        != Some(clap::parser::ValueSource::DefaultValue))
    .then(|| cli.host.clone());
    let result = (|| -> Result<Option<Exec>> {
        let client = Client::new(&cli.host)?;
        match cli.command {
            Command::Network(cmd) => network(&client, cmd).map(|()| None),
            Command::Sandbox(cmd) => sandbox(&client, cmd, create_matches),
            Command::Service(cmd) => service::run(&client, cmd).map(|()| None),
            Command::Info => info(&client).map(|()| None),
            Command::Cluster(cmd) => cluster::run(&client, cmd).map(|()| None),
            Command::System(cmd) => system::run(cmd, host_given.as_deref()).map(|()| None),
            Command::Doctor(args) => doctor::run(&client, &cli.host, &args).map(|()| None),
            Command::Events {
                since,
                until,
                filter,
                format,
            } => events::run(
                &client,
                since.as_deref(),
                until.as_deref(),
                &filter,
                format.as_deref(),
            )
            .map(|()| None),
        }
    })();
    match result {
        Ok(None) => std::process::ExitCode::SUCCESS,
        Ok(Some(exec)) => match exec_in(exec) {
            Ok(never) => match never {},
            Err(e) => {
                eprintln!("{}", render_error(&e));
                std::process::ExitCode::from(127)
            }
        },
        Err(e) => {
            if e.downcast_ref::<Reported>().is_none() {
                eprintln!("{}", render_error(&e));
            }
            std::process::ExitCode::FAILURE
        }
    }
}
