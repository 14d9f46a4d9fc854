//! Times adding and removing one backend of one service
//! ([`Dispatcher::apply_service`]), with 1 and with 10,000 services (4 backends each) in
//! the table, without and with client-ip affinity; then adding and removing a whole service
//! among 10,000. In a scratch namespace; needs root; run in release:
//!
//! ```text
//! cargo run --release -p plexus-lb --example update_latency [-- UPDATES]
//! ```
//!
//! Prints one line per case (milliseconds, median and 99th percentile over UPDATES updates,
//! 200 by default, alternately removing and adding; `plan_us` is the planner's share, the
//! rest is encoding and the kernel) and, last, the 10,000-service backend figures without
//! affinity as `update_ms_p50=… update_ms_p99=…`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use plexus_lb::{plan_service, Dispatcher, ServiceView, View};
use plexus_sys::netns::Netns;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn service(i: u32, affinity: Option<Duration>) -> ServiceView {
    let base = 0x0a40_0000 + i * 8;
    ServiceView {
        name: format!("svc{i}"),
        vip: IpAddr::V4(Ipv4Addr::from(base)),
        backends: (1..5)
            .map(|k| IpAddr::V4(Ipv4Addr::from(base + k)))
            .collect(),
        affinity,
    }
}

fn id(i: u32) -> String {
    format!("s{i:011}")
}

fn services(n: u32, affinity: Option<Duration>) -> View {
    View {
        services: (0..n).map(|i| (id(i), service(i, affinity))).collect(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

/// Median and p99 (ms) of `updates` calls of `step(k)`.
fn time(updates: usize, mut step: impl FnMut(usize) -> Res<()>) -> Res<(f64, f64)> {
    let mut times = Vec::with_capacity(updates);
    for k in 0..updates {
        let start = Instant::now();
        step(k)?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

/// One line per case with `n` services; returns the backend change's median and p99.
fn measure(ns: &Netns, n: u32, affinity: Option<Duration>, updates: usize) -> Res<(f64, f64)> {
    let lb = Dispatcher::open(ns)?;
    lb.remove()?;
    let full = services(n, affinity);
    let start = Instant::now();
    lb.apply(&View::default(), &full)?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let target = id(n / 2);
    let more = service(n / 2, affinity);
    let mut less = more.clone();
    less.backends.pop();
    let start = Instant::now();
    for _ in 0..100 {
        plan_service(&target, Some(&more), Some(&less))?;
    }
    let plan_us = start.elapsed().as_secs_f64() * 1e6 / 100.0;
    let (p50, p99) = time(updates, |k| {
        let (from, to) = if k % 2 == 0 {
            (&more, &less)
        } else {
            (&less, &more)
        };
        Ok(lb.apply_service(&target, Some(from), Some(to))?)
    })?;
    let aff = affinity.is_some();
    println!(
        "case=backend services={n} affinity={aff} updates={updates} update_ms_p50={p50:.3} update_ms_p99={p99:.3} plan_us={plan_us:.1} load_ms={load_ms:.0}"
    );
    if n > 1 {
        // A whole service (its chain's nat rule makes the kernel validate the table).
        let (s50, s99) = time(updates.min(100), |k| {
            let (i, s) = (n + (k / 2) as u32, service(n + (k / 2) as u32, affinity));
            let (old, new) = if k % 2 == 0 {
                (None, Some(&s))
            } else {
                (Some(&s), None)
            };
            Ok(lb.apply_service(&id(i), old, new)?)
        })?;
        println!(
            "case=service services={n} affinity={aff} update_ms_p50={s50:.3} update_ms_p99={s99:.3}"
        );
    }
    lb.remove()?;
    Ok((p50, p99))
}

fn main() -> Res<()> {
    let updates: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 200,
    };
    let dir = tempfile::tempdir()?;
    let ns = Netns::create(dir.path(), "lb-bench")?;
    let result = (|| -> Res<(f64, f64)> {
        let mut last = (f64::NAN, f64::NAN);
        for affinity in [Some(Duration::from_secs(600)), None] {
            for n in [1, 10_000] {
                last = measure(&ns, n, affinity, updates)?;
            }
        }
        Ok(last)
    })();
    let _ = Netns::delete(dir.path(), "lb-bench");
    let (p50, p99) = result?;
    println!("update_ms_p50={p50:.3} update_ms_p99={p99:.3}");
    Ok(())
}
