//! The `plexus-cni` executable: a runtime runs it with `CNI_*` variables and the network
//! configuration on stdin; it prints CNI's answer on stdout and exits 0, or 1 on an error.
//! Logs go to stderr, only when `PLEXUS_CNI_LOG` sets a filter (`debug`, `plexus_cni=info`).

use std::io::{Read, Write};

fn main() {
    if let Ok(filter) = std::env::var("PLEXUS_CNI_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().take(16 << 20).read_to_end(&mut stdin) {
        Ok(_) => plexus_cni::run(|k| std::env::var(k).ok(), &stdin),
        Err(e) => {
            let error = plexus_cni::error::CniError::new(
                plexus_cni::error::code::IO_FAILURE,
                "cannot read the network configuration",
                format!("stdin: {e}"),
            );
            plexus_cni::Outcome {
                stdout: error.to_json(plexus_cni::config::LATEST_VERSION),
                status: 1,
            }
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    std::process::exit(outcome.status);
}
