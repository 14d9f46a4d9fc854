//! `plexus sandbox create|ls|inspect|rm|exec`: sandboxes (a container's network namespace)
//! through `/plexus/sandboxes`.

use anyhow::{bail, Context, Result};
use clap::{ArgMatches, Subcommand};
use plexus_api_types::SandboxResource;
use serde_json::{json, Value};

use crate::client::{encode, Client};
use crate::{each, print_inspect, print_rows, render_error, short, Reported};

// Parsed once per process: boxing the big variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub(crate) enum SandboxCmd {
    /// Create a sandbox: `--ip`/`--ip6`/`--alias` apply to the `--network` before them.
    Create {
        /// The sandbox's name.
        name: String,
        /// Connect to a network (repeatable).
        #[arg(long)]
        network: Vec<String>,
        /// IPv4 address on the preceding --network.
        #[arg(long)]
        ip: Vec<String>,
        /// IPv6 address on the preceding --network.
        #[arg(long)]
        ip6: Vec<String>,
        /// Alias on the preceding --network.
        #[arg(long)]
        alias: Vec<String>,
        /// Publish a port: `[hostIP:][hostPort:]port[/proto]` (on the first network).
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
        /// Use this existing network namespace instead of making one.
        #[arg(long)]
        netns: Option<String>,
        /// The sandbox's hostname.
        #[arg(long)]
        hostname: Option<String>,
        /// A nameserver (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// A DNS search domain (repeatable).
        #[arg(long = "dns-search")]
        dns_search: Vec<String>,
        /// A resolver option, `ndots:2` (repeatable).
        #[arg(long = "dns-option")]
        dns_option: Vec<String>,
        /// Join this service as a task (on those of its networks the sandbox is on).
        #[arg(long)]
        service: Option<String>,
    },
    /// List sandboxes.
    #[command(alias = "list")]
    Ls {
        /// Only display sandbox names.
        #[arg(short, long)]
        quiet: bool,
        /// Format output: `json` or a Go template (`{{.Name}}`).
        #[arg(long)]
        format: Option<String>,
    },
    /// Display detailed information on one or more sandboxes.
    Inspect {
        /// Sandboxes (name or id).
        #[arg(required = true)]
        sandboxes: Vec<String>,
        /// Format output with a Go template.
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Remove one or more sandboxes (their namespaces too, if Plexus made them).
    #[command(alias = "remove")]
    Rm {
        /// Sandboxes (name or id).
        #[arg(required = true)]
        sandboxes: Vec<String>,
    },
    /// Run a command inside a sandbox's network namespace.
    Exec {
        /// The sandbox.
        name: String,
        /// The command and its arguments.
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
}

/// `--network`, `--ip`, `--ip6`, `--alias` in command-line order: each address or alias goes
/// to the network named before it.
fn sandbox_networks(m: &ArgMatches) -> Result<Vec<Value>> {
    let mut flags: Vec<(usize, &str, String)> = Vec::new();
    for id in ["network", "ip", "ip6", "alias"] {
        if let (Some(idx), Some(vals)) = (m.indices_of(id), m.get_many::<String>(id)) {
            for (i, v) in idx.zip(vals) {
                flags.push((i, id, v.clone()));
            }
        }
    }
    flags.sort_by_key(|(i, _, _)| *i);
    let mut networks: Vec<Value> = Vec::new();
    for (_, id, value) in flags {
        if id == "network" {
            networks
                .push(json!({"Name": value, "IPv4Address": "", "IPv6Address": "", "Aliases": []}));
            continue;
        }
        let Some(current) = networks.last_mut() else {
            bail!("--{id} {value}: give --network NET before it");
        };
        match id {
            "ip" => current["IPv4Address"] = json!(value),
            "ip6" => current["IPv6Address"] = json!(value),
            _ => {
                if let Some(a) = current["Aliases"].as_array_mut() {
                    a.push(json!(value));
                }
            }
        }
    }
    Ok(networks)
}

fn sandbox_row(s: &SandboxResource) -> Value {
    let networks: Vec<&str> = s.endpoints.iter().map(|e| e.network.as_str()).collect();
    let addrs: Vec<&str> = s
        .endpoints
        .iter()
        .flat_map(|e| [e.ipv4_address.as_str(), e.ipv6_address.as_str()])
        .filter(|a| !a.is_empty())
        .collect();
    json!({
        "ID": short(&s.id),
        "Name": s.name,
        "Networks": networks.join(","),
        "Addresses": addrs.join(","),
        "NetNs": s.netns,
    })
}

pub(crate) fn sandbox(
    client: &Client,
    cmd: SandboxCmd,
    matches: Option<&ArgMatches>,
) -> Result<Option<Exec>> {
    match cmd {
        SandboxCmd::Create {
            name,
            publish,
            netns,
            hostname,
            dns,
            dns_search,
            dns_option,
            service,
            ..
        } => {
            let networks = match matches {
                Some(m) => sandbox_networks(m)?,
                None => Vec::new(),
            };
            let body = json!({
                "Name": name,
                "NetNs": netns.unwrap_or_default(),
                "Networks": networks,
                "Ports": publish,
                "Hostname": hostname.unwrap_or_default(),
                "Dns": dns,
                "DnsSearch": dns_search,
                "DnsOptions": dns_option,
                "Service": service.unwrap_or_default(),
            });
            let created: SandboxResource = client.post("/plexus/sandboxes", body)?;
            println!("{}", created.id);
        }
        SandboxCmd::Ls { quiet, format } => {
            let all: Vec<SandboxResource> = client.get("/plexus/sandboxes")?;
            if quiet {
                for s in &all {
                    println!("{}", s.name);
                }
                return Ok(None);
            }
            let rows: Vec<Value> = all.iter().map(sandbox_row).collect();
            let headers = json!({"ID": "SANDBOX ID", "Name": "NAME", "Networks": "NETWORKS",
                "Addresses": "ADDRESSES", "NetNs": "NETNS"});
            print_rows(
                &rows,
                format.as_deref(),
                &headers,
                &["ID", "Name", "Networks", "Addresses", "NetNs"],
            )?;
        }
        SandboxCmd::Inspect { sandboxes, format } => {
            let mut found = Vec::new();
            let mut failed = false;
            for s in &sandboxes {
                match client.get::<SandboxResource>(&format!("/plexus/sandboxes/{}", encode(s))) {
                    Ok(v) => found.push(v),
                    Err(e) => {
                        failed = true;
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
        SandboxCmd::Rm { sandboxes } => {
            each(&sandboxes, |s| {
                client.delete(&format!("/plexus/sandboxes/{}", encode(s)))?;
                println!("{s}");
                Ok(())
            })?;
        }
        SandboxCmd::Exec { name, command } => {
            let s: SandboxResource = client.get(&format!("/plexus/sandboxes/{}", encode(&name)))?;
            return Ok(Some(Exec {
                netns: s.netns,
                files: [
                    (s.resolv_conf_path, "/etc/resolv.conf"),
                    (s.hosts_path, "/etc/hosts"),
                ]
                .into_iter()
                .filter(|(from, _)| !from.is_empty())
                .collect(),
                command,
            }));
        }
    }
    Ok(None)
}

/// What `sandbox exec` runs once the daemon has named the sandbox's namespace: `main` does it
/// after every request is over, on the process's only thread (`setns` moves just that thread).
pub(crate) struct Exec {
    netns: String,
    /// Files the daemon wrote for the sandbox and where the command sees them.
    files: Vec<(String, &'static str)>,
    command: Vec<String>,
}

/// Shows the sandbox's `resolv.conf` and `hosts` to the command at `/etc`, in a mount
/// namespace of its own (as `ip netns exec` does with `/etc/netns/NAME/`): the host's
/// files are untouched.
fn mount_files(files: &[(String, &'static str)]) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    if files.is_empty() {
        return Ok(());
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("making a private mount namespace")?;
    // Mounts made here must not propagate back to the host's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("making / a slave mount")?;
    for (from, to) in files {
        if !std::path::Path::new(from).exists() {
            continue;
        }
        mount(
            Some(from.as_str()),
            *to,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting {from} on {to}"))?;
    }
    Ok(())
}

/// Enters the namespace on this (the only) thread and replaces the process with the command.
pub(crate) fn exec_in(exec: Exec) -> Result<std::convert::Infallible> {
    use std::ffi::CString;
    let file = std::fs::File::open(&exec.netns)
        .with_context(|| format!("opening the sandbox's namespace {}", exec.netns))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering the sandbox's namespace {}", exec.netns))?;
    mount_files(&exec.files)?;
    let args: Vec<CString> = exec
        .command
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<_, _>>()
        .context("a command argument contains a NUL byte")?;
    let Some(program) = args.first() else {
        bail!("no command given");
    };
    let err = nix::unistd::execvp(program, &args).err();
    bail!(
        "exec {}: {}",
        exec.command.first().map(String::as_str).unwrap_or(""),
        err.map(|e| e.desc()).unwrap_or("failed")
    )
}
