//! `plexus system reset`: a clean uninstall. Removes every kernel object, namespace mount and
//! file plexusd made, and nothing else, through [`plexus_drivers::reset`] (which knows the
//! names and marks); this module is the command line and the printing.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use plexus_drivers::reset::{self, Layout, Report, ResetOptions};

/// `plexus system …`.
#[derive(Debug, Subcommand)]
pub enum SystemCmd {
    /// Remove everything plexusd made on this host (links, nftables tables, sandbox
    /// namespaces, its socket and state files) and nothing else. Run it as root with the
    /// daemon stopped, in the daemon's network namespace. IP forwarding is left on.
    Reset {
        /// The daemon's --state-dir.
        #[arg(long, default_value = reset::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// The daemon's --run-dir.
        #[arg(long, default_value = reset::DEFAULT_RUN_DIR)]
        run_dir: PathBuf,
        /// List what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// The daemon's --marker (the link alias prefix of what it made).
        #[arg(long, default_value = reset::DEFAULT_MARKER, hide = true)]
        marker: String,
    },
}

/// Runs a `system` command. `host` is the socket given with `-H` or `PLEXUS_HOST`, if one
/// was: the daemon may serve there instead of `<run-dir>/plexus.sock`.
pub fn run(cmd: SystemCmd, host: Option<&str>) -> Result<()> {
    match cmd {
        SystemCmd::Reset {
            state_dir,
            run_dir,
            dry_run,
            marker,
        } => {
            let mut opts = ResetOptions::new(Layout::new(state_dir, run_dir))?;
            if let Some(h) = host {
                match h.strip_prefix("unix://") {
                    Some(p) if !p.is_empty() => opts.sockets.push(PathBuf::from(p)),
                    _ => bail!("invalid host {h:?}: expected unix:///path/to/socket"),
                }
            }
            opts.marker = marker;
            opts.dry_run = dry_run;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the runtime")?;
            let report = runtime.block_on(reset::reset(&opts))?;
            print_report(&report, dry_run)
        }
    }
}

/// What went, what stayed and why, and the counts; failures on stderr, then exit 1.
fn print_report(report: &Report, dry_run: bool) -> Result<()> {
    let verb = if dry_run { "would remove" } else { "removed" };
    for object in &report.removed {
        println!("{verb} {object}");
    }
    for (object, why) in &report.kept {
        println!("kept {object}: {why}");
    }
    let counts = report.counts();
    if counts.is_empty() && report.failed.is_empty() {
        println!("nothing to remove: no Plexus object or file found");
    } else if !counts.is_empty() {
        let list: Vec<String> = counts.iter().map(|(c, n)| format!("{n} {c}")).collect();
        println!("{verb} {}", list.join(", "));
        println!(
            "left as it is: IP forwarding (net.ipv4.ip_forward, net.ipv6.conf.all.forwarding); \
             other software may rely on it"
        );
    }
    for (what, error) in &report.failed {
        eprintln!("plexus system reset: cannot {what}: {error}");
    }
    if !report.failed.is_empty() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("plexus system reset: not running as root; removing links, nft tables and namespace mounts needs root");
        }
        eprintln!(
            "plexus system reset: {} failure(s); the rest was done",
            report.failed.len()
        );
        return Err(crate::Reported.into());
    }
    Ok(())
}
