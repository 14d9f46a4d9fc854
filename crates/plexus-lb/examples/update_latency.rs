//! Times adding and removing one backend of one service, with 1 and with 10,000 services (4
//! backends each) in the table, in a scratch namespace. Needs root; run in release:
//!
//! ```text
//! cargo run --release -p plexus-lb --example update_latency [-- UPDATES]
//! ```
//!
//! Prints one line per case and, last, the 10,000-service figures as
//! `update_ms_p50=… update_ms_p99=…` (milliseconds, median and 99th percentile over UPDATES
//! updates, 200 by default, alternately removing and adding a backend).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use plexus_lb::{Dispatcher, ServiceView, View};
use plexus_sys::netns::Netns;

fn services(n: u32) -> View {
    let mut v = View::default();
    for i in 0..n {
        let base = 0x0a40_0000 + i * 8;
        v.services.insert(
            format!("s{i:011}"),
            ServiceView {
                name: format!("svc{i}"),
                vip: IpAddr::V4(Ipv4Addr::from(base)),
                backends: (1..5)
                    .map(|k| IpAddr::V4(Ipv4Addr::from(base + k)))
                    .collect(),
                affinity: None,
            },
        );
    }
    v
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// Median and p99 in milliseconds of `updates` one-backend changes with `n` services.
fn measure(ns: &Netns, n: u32, updates: usize) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let lb = Dispatcher::open(ns)?;
    lb.remove()?;
    let full = services(n);
    lb.apply(&View::default(), &full)?;
    let mut less = full.clone();
    let target = format!("s{:011}", n / 2);
    if let Some(s) = less.services.get_mut(&target) {
        s.backends.pop();
    }
    // The planner's share (validation of both views, comparison), apart from the kernel's.
    let start = Instant::now();
    for _ in 0..10 {
        plexus_lb::plan(&full, &less)?;
    }
    let plan_ms = start.elapsed().as_secs_f64() * 1e3 / 10.0;
    println!("services={n} plan_ms={plan_ms:.3}");
    let mut times = Vec::with_capacity(updates);
    for k in 0..updates {
        let (from, to) = if k % 2 == 0 {
            (&full, &less)
        } else {
            (&less, &full)
        };
        let start = Instant::now();
        lb.apply(from, to)?;
        times.push(start.elapsed());
    }
    lb.remove()?;
    times.sort();
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let updates: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 200,
    };
    let dir = tempfile::tempdir()?;
    let ns = Netns::create(dir.path(), "lb-bench")?;
    let result = (|| -> Result<(f64, f64), Box<dyn std::error::Error>> {
        let mut last = (f64::NAN, f64::NAN);
        for n in [1, 10_000] {
            let (p50, p99) = measure(&ns, n, updates)?;
            println!(
                "services={n} updates={updates} update_ms_p50={p50:.3} update_ms_p99={p99:.3}"
            );
            last = (p50, p99);
        }
        Ok(last)
    })();
    let _ = Netns::delete(dir.path(), "lb-bench");
    let (p50, p99) = result?;
    println!("update_ms_p50={p50:.3} update_ms_p99={p99:.3}");
    Ok(())
}
