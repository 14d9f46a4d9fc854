//! `plexus service create|ls|inspect|rm|update`: services (a virtual IP load-balanced over
//! tasks, which are sandboxes created with `--service`) through `/plexus/services`, with
//! `docker service`'s flag names.

use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use plexus_api_types::{parse_publish, PortConfig, ServiceCreated, ServiceResource};
use serde_json::{json, Value};

use crate::client::{encode, Client};
use crate::{each, labels, print_inspect, print_rows, render_error, short, Reported};

#[derive(Debug, Subcommand)]
pub(crate) enum ServiceCmd {
    /// Create a service on one or more networks (of one scope).
    Create {
        /// The service's name.
        name: String,
        /// A network to put it on (repeatable, at least one).
        #[arg(long, required = true)]
        network: Vec<String>,
        /// `vip` (a virtual IP per network, the default) or `dnsrr`.
        #[arg(long = "endpoint-mode", default_value = "vip")]
        endpoint_mode: String,
        /// Publish a port: `PUBLISHED:TARGET[/tcp|udp]` (ranges `8000-8009:80-89`) or
        /// `published=P,target=T[,protocol=udp][,mode=ingress|host]` (repeatable).
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
        /// Session affinity: `none` (default) or `client-ip`.
        #[arg(long)]
        affinity: Option<String>,
        /// How long a client keeps its backend while idle (`client-ip`): `30s`, `10m`,
        /// `3h` or seconds; default 3h, at most 24h.
        #[arg(long = "affinity-timeout")]
        affinity_timeout: Option<String>,
        /// Set metadata on the service (key=value).
        #[arg(long)]
        label: Vec<String>,
    },
    /// List services.
    #[command(alias = "list")]
    Ls {
        /// Only display service IDs.
        #[arg(short, long)]
        quiet: bool,
        /// Filter output (name=, id=, label=, mode=).
        #[arg(short, long = "filter")]
        filter: Vec<String>,
        /// Format output: `json`, `table` or a Go template (`{{.Name}}`).
        #[arg(long)]
        format: Option<String>,
    },
    /// Display detailed information on one or more services.
    Inspect {
        /// Services (name or id).
        #[arg(required = true)]
        services: Vec<String>,
        /// Format output with a Go template.
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Remove one or more services. One with tasks is refused (naming them) unless
    /// `--force`, which detaches the tasks: their sandboxes stay.
    #[command(alias = "remove")]
    Rm {
        /// Services (name or id).
        #[arg(required = true)]
        services: Vec<String>,
        /// Detach the services' tasks instead of refusing.
        #[arg(short, long)]
        force: bool,
    },
    /// Update a service.
    Update {
        /// The service (name or id).
        name: String,
        /// Add or replace a published port (repeatable).
        #[arg(long = "publish-add")]
        publish_add: Vec<String>,
        /// Remove a published port: `PUBLISHED[/tcp|udp]` or a `--publish` spec (repeatable).
        #[arg(long = "publish-rm")]
        publish_rm: Vec<String>,
        /// `vip` or `dnsrr`.
        #[arg(long = "endpoint-mode")]
        endpoint_mode: Option<String>,
        /// Session affinity: `none` or `client-ip`.
        #[arg(long)]
        affinity: Option<String>,
        /// The `client-ip` timeout (as for create).
        #[arg(long = "affinity-timeout")]
        affinity_timeout: Option<String>,
        /// Add or update a label (key=value).
        #[arg(long = "label-add")]
        label_add: Vec<String>,
        /// Remove a label by key.
        #[arg(long = "label-rm")]
        label_rm: Vec<String>,
    },
}

/// A duration as `--affinity-timeout` takes it: seconds, or a number with `s`, `m` or `h`.
fn timeout_secs(value: &str) -> Result<u32> {
    let bad = || anyhow!("invalid --affinity-timeout {value:?}: such as 30s, 10m, 3h or 600");
    let v = value.trim();
    let (number, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(bad()),
    };
    u32::try_from(secs).map_err(|_| bad())
}

fn affinity_body(mode: Option<&str>, timeout: Option<&str>) -> Result<Option<Value>> {
    let timeout = timeout.map(timeout_secs).transpose()?;
    Ok(match (mode, timeout) {
        (None, None) => None,
        (mode, t) => Some(json!({
            "Mode": mode.unwrap_or("client-ip"),
            "TimeoutSeconds": t.unwrap_or(0),
        })),
    })
}

fn ports(specs: &[String]) -> Result<Vec<PortConfig>> {
    let mut out = Vec::new();
    for s in specs {
        out.extend(parse_publish(s).map_err(|e| anyhow!("{e}"))?);
    }
    Ok(out)
}

/// `--publish-rm`: `8080`, `8080/udp`, or a whole `--publish` spec.
fn ports_rm(specs: &[String]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for s in specs {
        if s.contains(':') || s.contains('=') {
            for p in parse_publish(s).map_err(|e| anyhow!("{e}"))? {
                out.push(json!({"PublishedPort": p.published_port, "Protocol": p.protocol}));
            }
            continue;
        }
        let (port, proto) = s.split_once('/').unwrap_or((s.as_str(), "tcp"));
        let port: u32 = port
            .parse()
            .map_err(|_| anyhow!("invalid --publish-rm {s:?}: PUBLISHED[/tcp|udp]"))?;
        out.push(json!({"PublishedPort": port, "Protocol": proto}));
    }
    Ok(out)
}

fn port_text(p: &PortConfig) -> String {
    let host = if p.publish_mode == "host" {
        " (host)"
    } else {
        ""
    };
    format!(
        "*:{}->{}/{}{host}",
        p.published_port, p.target_port, p.protocol
    )
}

fn service_row(s: &ServiceResource) -> Value {
    let vips: Vec<&str> = s
        .endpoint
        .virtual_ips
        .iter()
        .map(|v| v.addr.as_str())
        .collect();
    let ports: Vec<String> = s.endpoint.ports.iter().map(port_text).collect();
    let networks: Vec<&str> = s.networks.iter().map(|n| n.name.as_str()).collect();
    json!({
        "ID": short(&s.id),
        "Name": s.name,
        "Mode": s.endpoint.spec.mode,
        "VIP": if vips.is_empty() { "-".to_string() } else { vips.join(",") },
        "Ports": ports.join(", "),
        "Tasks": s.tasks.len(),
        "Networks": networks.join(","),
        "Affinity": s.session_affinity.mode,
    })
}

/// Runs a `plexus service` command.
pub(crate) fn run(client: &Client, cmd: ServiceCmd) -> Result<()> {
    match cmd {
        ServiceCmd::Create {
            name,
            network,
            endpoint_mode,
            publish,
            affinity,
            affinity_timeout,
            label,
        } => {
            let mut body = json!({
                "Name": name,
                "Networks": network.iter().map(|n| json!({"Target": n})).collect::<Vec<_>>(),
                "EndpointSpec": {"Mode": endpoint_mode, "Ports": ports(&publish)?},
                "Labels": labels(&label),
            });
            if let Some(a) = affinity_body(affinity.as_deref(), affinity_timeout.as_deref())? {
                body["SessionAffinity"] = a;
            }
            let created: ServiceCreated = client.post("/plexus/services/create", body)?;
            println!("{}", created.id);
        }
        ServiceCmd::Ls {
            quiet,
            filter,
            format,
        } => {
            let filters = crate::client::filters_query(&filter)?;
            let all: Vec<ServiceResource> =
                client.get(&format!("/plexus/services?filters={filters}"))?;
            if quiet {
                for s in &all {
                    println!("{}", short(&s.id));
                }
                return Ok(());
            }
            let rows: Vec<Value> = all.iter().map(service_row).collect();
            let headers = json!({"ID": "ID", "Name": "NAME", "Mode": "MODE", "VIP": "VIP",
                "Ports": "PORTS", "Tasks": "TASKS", "Networks": "NETWORKS",
                "Affinity": "AFFINITY"});
            print_rows(
                &rows,
                format.as_deref(),
                &headers,
                &["ID", "Name", "Mode", "VIP", "Ports", "Tasks"],
            )?;
        }
        ServiceCmd::Inspect { services, format } => {
            let mut found = Vec::new();
            let mut failed = false;
            for s in &services {
                match client.get::<ServiceResource>(&format!("/plexus/services/{}", encode(s))) {
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
        ServiceCmd::Rm { services, force } => {
            let query = if force { "?force=1" } else { "" };
            each(&services, |s| {
                client.delete(&format!("/plexus/services/{}{query}", encode(s)))?;
                println!("{s}");
                Ok(())
            })?;
        }
        ServiceCmd::Update {
            name,
            publish_add,
            publish_rm,
            endpoint_mode,
            affinity,
            affinity_timeout,
            label_add,
            label_rm,
        } => {
            let mut body = json!({
                "Mode": endpoint_mode.unwrap_or_default(),
                "PortsAdd": ports(&publish_add)?,
                "PortsRemove": ports_rm(&publish_rm)?,
                "LabelsAdd": labels(&label_add),
                "LabelsRemove": label_rm,
            });
            if let Some(a) = affinity_body(affinity.as_deref(), affinity_timeout.as_deref())? {
                if affinity.as_deref() == Some("none") && affinity_timeout.is_some() {
                    bail!("--affinity-timeout: only client-ip affinity takes a timeout");
                }
                body["SessionAffinity"] = a;
            }
            let updated: ServiceResource =
                client.post(&format!("/plexus/services/{}/update", encode(&name)), body)?;
            println!("{}", updated.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_removals_parse() {
        assert_eq!(timeout_secs("30s").ok(), Some(30));
        assert_eq!(timeout_secs("10m").ok(), Some(600));
        assert_eq!(timeout_secs("3h").ok(), Some(10_800));
        assert_eq!(timeout_secs("90").ok(), Some(90));
        assert!(timeout_secs("1d").is_err());
        assert!(timeout_secs("").is_err());
        let rm = ports_rm(&["8080".into(), "53/udp".into(), "9000:90".into()]).unwrap();
        assert_eq!(rm[1], json!({"PublishedPort": 53, "Protocol": "udp"}));
        assert_eq!(rm[2]["PublishedPort"], 9000);
        assert!(ports_rm(&["x".into()]).is_err());
    }
}
