//! A standalone member, for crash tests and experiments (the daemon embeds `RaftNode`
//! itself):
//!
//! ```text
//! plexus-raft-node --id N --dir DIR --listen HOST:PORT [--init | --join HOST:PORT]
//! ```
//!
//! Prints `listening HOST:PORT` once it serves, then `ready` once initialized or joined, and
//! runs until killed.

use std::process::ExitCode;

use plexus_raft::{RaftConfig, RaftNode};

struct Args {
    id: u64,
    dir: String,
    listen: String,
    init: bool,
    join: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut id = None;
    let mut dir = None;
    let mut listen = None;
    let mut init = false;
    let mut join = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--id" => {
                let v = value()?;
                id = Some(v.parse().map_err(|e| format!("--id {v:?}: {e}"))?);
            }
            "--dir" => dir = Some(value()?),
            "--listen" => listen = Some(value()?),
            "--join" => join = Some(value()?),
            "--init" => init = true,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    if init && join.is_some() {
        return Err("--init and --join exclude each other".into());
    }
    Ok(Args {
        id: id.ok_or("--id is required")?,
        dir: dir.ok_or("--dir is required")?,
        listen: listen.unwrap_or_else(|| "127.0.0.1:0".into()),
        init,
        join,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("plexus-raft-node: {e}");
            return ExitCode::from(2);
        }
    };
    let node = match RaftNode::start(RaftConfig::new(args.id, &args.dir, &args.listen)).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("plexus-raft-node: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening {}", node.addr());
    let joined = if args.init {
        node.initialize().await
    } else if let Some(via) = &args.join {
        node.join(via).await
    } else {
        Ok(())
    };
    if let Err(e) = joined {
        eprintln!("plexus-raft-node: {e}");
        return ExitCode::FAILURE;
    }
    println!("ready");
    std::future::pending::<()>().await;
    ExitCode::SUCCESS
}
