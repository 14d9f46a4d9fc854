//! `plexus cluster ls|inspect|key rotate`: the gossip cluster through `/plexus/cluster`.

use anyhow::Result;
use clap::Subcommand;
use plexus_api_types::{ClusterHost, ClusterInspect, KeyringInfo};
use serde_json::{json, Value};

use crate::client::{encode, Client};
use crate::{print_inspect, print_rows, short};

#[derive(Debug, Subcommand)]
pub(crate) enum ClusterCmd {
    /// List the cluster's hosts as this host sees them: id, name, address, state
    /// (alive, suspect, dead, left), networks joined.
    #[command(alias = "list")]
    Ls {
        /// Format output: `json` (one object per line), `table TEMPLATE` or a Go template
        /// (`{{.Name}} {{.State}}`).
        #[arg(long)]
        format: Option<String>,
    },
    /// Display one host (by id, name or address; this host without one), the members, this
    /// host's keyring ids (never the keys) and its gossip counters.
    Inspect {
        /// The host (not `host`: that id is the global -H flag's).
        #[arg(value_name = "HOST")]
        target: Option<String>,
        /// Format output: `json`, or a Go template (`{{.Keyring.Primary}}`).
        #[arg(short, long)]
        format: Option<String>,
    },
    /// Manage the cluster's gossip key.
    #[command(subcommand)]
    Key(KeyCmd),
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCmd {
    /// Make a new key the cluster's primary one, with no message lost: it is added on every
    /// host, then used, then the old one is removed.
    Rotate,
}

fn host_row(h: &ClusterHost) -> Value {
    let networks: Vec<String> = h.networks.iter().map(|n| short(n)).collect();
    json!({
        // Marked as `docker node ls` marks the node it asked.
        "ID": if h.self_host { format!("{} *", short(&h.id)) } else { short(&h.id) },
        "Name": h.name,
        "Address": h.address,
        "State": h.state,
        "Networks": if networks.is_empty() { "-".to_string() } else { networks.join(",") },
    })
}

pub(crate) fn run(client: &Client, cmd: ClusterCmd) -> Result<()> {
    match cmd {
        ClusterCmd::Ls { format } => {
            let hosts: Vec<ClusterHost> = client.get("/plexus/cluster/hosts")?;
            if format.as_deref() == Some("json") {
                for h in &hosts {
                    println!("{}", serde_json::to_string(h)?);
                }
                return Ok(());
            }
            let rows: Vec<Value> = hosts.iter().map(host_row).collect();
            let headers = json!({
                "ID": "HOST ID", "Name": "NAME", "Address": "ADDRESS", "State": "STATE",
                "Networks": "NETWORKS",
            });
            print_rows(
                &rows,
                format.as_deref(),
                &headers,
                &["ID", "Name", "Address", "State", "Networks"],
            )
        }
        ClusterCmd::Inspect { target, format } => {
            let path = match &target {
                Some(h) => format!("/plexus/cluster/hosts/{}", encode(h)),
                None => "/plexus/cluster".to_string(),
            };
            let info: ClusterInspect = client.get(&path)?;
            let format = format.filter(|f| f != "json");
            print_inspect(&[info], format.as_deref())
        }
        ClusterCmd::Key(KeyCmd::Rotate) => {
            let ring: KeyringInfo = client.post("/plexus/cluster/key/rotate", json!({}))?;
            println!("{}", ring.primary);
            Ok(())
        }
    }
}
