//! The bare kernel's cost of adding one port to a Linux bridge, which
//! `bench/single-host/run.sh` measures beside Plexus at every N of its published-port phase:
//! how much of Plexus's growth with N is the kernel's own.
//!
//! Usage, inside the namespace of the bridge: `port-floor BRIDGE REPS PAUSE_MS`
//! (`cargo build --release -p plexus-sys --example port-floor`).
//!
//! Each rep waits `PAUSE_MS`, then times the requests Plexus's join makes for the link itself
//! (without addresses, routes or marks): the veth pair made with one request (the near end on
//! `BRIDGE`, carrying the bridge's MAC as Plexus's ports do; the far end straight in a scratch
//! namespace), the far end looked up and brought up, the near end brought up by name. It
//! prints the milliseconds, one line per rep, and deletes the pair (not timed).

use std::time::{Duration, Instant};

use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{PortFlags, Rtnl, VethPair};

/// The near end's name (the far end is `eth0` in its own namespace).
const NEAR: &str = "plxbfloor0";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: port-floor BRIDGE REPS PAUSE_MS";
    let mut args = std::env::args().skip(1);
    let bridge = args.next().ok_or(usage)?;
    let reps: usize = args.next().ok_or(usage)?.parse()?;
    let pause = Duration::from_millis(args.next().ok_or(usage)?.parse()?);

    let host = Netns::host()?;
    let rtnl = Rtnl::connect(&host).await?;
    let br = rtnl.require_link(&bridge).await?;
    let mac = br.mac.as_deref().and_then(|m| <[u8; 6]>::try_from(m).ok());
    let scratch = Netns::anonymous()?;
    let inside = Rtnl::connect(&scratch).await?;
    for _ in 0..reps {
        tokio::time::sleep(pause).await;
        let t0 = Instant::now();
        rtnl.add_veth_pair(&VethPair {
            name: NEAR,
            master: Some(br.index),
            mac,
            mtu: None,
            peer_name: "eth0",
            peer_ns: &scratch,
            peer_mac: None,
            gso_ipv4_max_size: None,
        })
        .await?;
        let far = inside.require_link("eth0").await?;
        inside.set_up(far.index).await?;
        rtnl.activate_port(NEAR, PortFlags::default(), "plxb-floor")
            .await?;
        println!("{:.3}", t0.elapsed().as_secs_f64() * 1e3);
        rtnl.delete_link(rtnl.require_link(NEAR).await?.index)
            .await?;
    }
    Ok(())
}
