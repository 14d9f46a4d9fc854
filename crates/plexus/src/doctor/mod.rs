//! `plexus doctor`: whether Plexus can run on this host, and what to do where it cannot or
//! runs with less. One line per check, `OK`, `WARN` or `FAIL` and what to do; `--format
//! json` prints one object. Exit status 0 when no check fails.
//!
//! Checks, in the namespace the CLI runs in (the daemon's, run on the host; another with
//! `nsenter --net=…`):
//! - `kernel.rs`: the release (5.10 or later) and every feature Plexus uses or could use,
//!   probed for real in a scratch namespace (`plexus_sys::probe`), with what needs it
//!   (`plexus_api_types::kernel`);
//! - `host.rs`: IPv4 and IPv6 forwarding, `br_netfilter`, and bridges or routes that overlap
//!   Plexus's default address pools (links, addresses and routes read over netlink);
//! - `daemon.rs`: the daemon's socket (`/_ping`), its store and cluster store (`/info`).
//!
//! Nothing is changed on the host, and no `ip` or `nft` process is run. The kernel probe
//! needs root (as plexusd does). The test-only variables of `plexusd` that pretend another
//! kernel (`PLEXUS_KERNEL_RELEASE`, `PLEXUS_PROBE_MISSING`) are honoured here too.

mod daemon;
mod host;
mod kernel;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::client::Client;
use crate::Reported;

/// `plexus doctor`'s flags.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// `json`: print one JSON object (`can_run` and the checks).
    #[arg(long)]
    format: Option<String>,
    /// A pool plexusd is started with, `base=CIDR,size=N` (repeatable): overlaps are checked
    /// against these instead of Docker's default pools.
    #[arg(long = "default-address-pool")]
    default_address_pools: Vec<String>,
}

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Status {
    /// Fine.
    Ok,
    /// Plexus runs, with less or with a caveat.
    Warn,
    /// Plexus cannot run.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    /// What was checked (`kernel`, `feature:ipvlan`, `overlap:docker0`).
    pub check: String,
    /// How it came out.
    pub status: Status,
    /// What was found, in plain words.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub(crate) fn new(
        check: impl Into<String>,
        status: Status,
        message: impl Into<String>,
    ) -> Self {
        Self {
            check: check.into(),
            status,
            message: message.into(),
            fix: None,
        }
    }

    pub(crate) fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

#[derive(Debug, Serialize)]
struct Report {
    can_run: bool,
    checks: Vec<Check>,
}

/// Runs every check, prints the report and fails (exit status 1, already printed) if a
/// check failed.
pub fn run(client: &Client, host: &str, args: &DoctorArgs) -> Result<()> {
    let json = match args.format.as_deref() {
        None | Some("") | Some("table") => false,
        Some("json") => true,
        Some(other) => bail!("invalid --format {other:?}: expected json"),
    };
    let pools = host::pools(&args.default_address_pools)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut checks = runtime.block_on(kernel::checks());
    checks.extend(host::forwarding());
    checks.push(host::br_netfilter());
    checks.extend(runtime.block_on(host::overlaps(&pools)));
    checks.extend(daemon::checks(client, host));
    let can_run = checks.iter().all(|c| c.status != Status::Fail);
    let report = Report { can_run, checks };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    if can_run {
        Ok(())
    } else {
        Err(Reported.into())
    }
}

fn render(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.checks {
        out.push_str(&format!("{:<4}  {}", c.status.label(), c.message));
        if let Some(fix) = &c.fix {
            out.push_str(&format!(" -> {fix}"));
        }
        out.push('\n');
    }
    let count = |s| report.checks.iter().filter(|c| c.status == s).count();
    let (warns, fails) = (count(Status::Warn), count(Status::Fail));
    if report.can_run {
        out.push_str(&format!(
            "Plexus can run on this host ({warns} warning{}).\n",
            if warns == 1 { "" } else { "s" }
        ));
    } else {
        out.push_str(&format!(
            "Plexus cannot run on this host: {fails} check{} failed.\n",
            if fails == 1 { "" } else { "s" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_status_message_and_fix_and_a_verdict() {
        let report = Report {
            can_run: true,
            checks: vec![
                Check::new("kernel", Status::Ok, "Linux 6.1.0"),
                Check::new("feature:ipvlan", Status::Warn, "ipvlan links missing")
                    .fix("modprobe ipvlan"),
            ],
        };
        assert_eq!(
            render(&report),
            "OK    Linux 6.1.0\nWARN  ipvlan links missing -> modprobe ipvlan\nPlexus can run on this host (1 warning).\n"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["checks"][1]["status"], "warn");
        assert_eq!(json["checks"][1]["fix"], "modprobe ipvlan");
        assert!(json["checks"][0].get("fix").is_none());
        let failed = Report {
            can_run: false,
            checks: vec![Check::new(
                "feature:veth",
                Status::Fail,
                "veth links missing",
            )],
        };
        assert!(render(&failed).ends_with("Plexus cannot run on this host: 1 check failed.\n"));
    }
}
