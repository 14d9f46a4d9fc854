//! The reachability prober of bench/overlay/run.sh (std only; `rustc -O`).
//!
//! `reach-probe IP PORT EVERY_US TIMEOUT_MS`: from the namespace it runs in, sends one UDP
//! datagram to IP:PORT every EVERY_US microseconds on a connected socket and waits for an
//! answer between sends. The target is reached when an answer comes back: the datagram
//! echoed, or (nothing listening there, which is how the bench uses it) the ICMP port
//! unreachable the target's kernel sends, which a connected UDP socket reports as
//! ECONNREFUSED. Either proves the path there and back. "Host unreachable" (a neighbour the
//! sandbox could not resolve) and silence mean not yet.
//!
//! Prints `<unix time of the answer, seconds with microseconds> <datagrams sent>` and exits
//! 0; after TIMEOUT_MS without an answer prints `timeout <datagrams sent>` and exits 1. The
//! time comes from the realtime clock, the one bash's $EPOCHREALTIME reads, so the caller
//! subtracts its own timestamps from it.

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 {
        eprintln!("usage: reach-probe IP PORT EVERY_US TIMEOUT_MS");
        std::process::exit(2);
    }
    let target = format!("{}:{}", a[1], a[2]);
    let every = Duration::from_micros(a[3].parse().expect("EVERY_US"));
    let timeout = Duration::from_millis(a[4].parse().expect("TIMEOUT_MS"));
    let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
    sock.connect(&target).expect("connect");
    sock.set_read_timeout(Some(every)).expect("timeout");
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut buf = [0u8; 64];
    loop {
        // A send can report an earlier datagram's fate: ECONNREFUSED is an answer.
        match sock.send(&sent.to_be_bytes()) {
            Ok(_) => sent += 1,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return reached(sent),
            Err(_) => {}
        }
        let next = Instant::now() + every;
        loop {
            match sock.recv(&mut buf) {
                Ok(_) => return reached(sent),
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return reached(sent),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                // Host unreachable and the like: not yet; do not spin, wait out the period.
                Err(_) => {
                    let left = next.saturating_duration_since(Instant::now());
                    std::thread::sleep(left);
                    break;
                }
            }
        }
        if start.elapsed() >= timeout {
            println!("timeout {sent}");
            std::process::exit(1);
        }
    }
}

fn reached(sent: u64) {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock");
    println!("{}.{:06} {sent}", t.as_secs(), t.subsec_micros());
}
