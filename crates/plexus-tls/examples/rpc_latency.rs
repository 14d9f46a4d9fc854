//! Measures RPC over loopback mutual TLS: handshake time, and calls per second with 1 and
//! with 16 calls in flight on one connection (64-byte requests, echoed).
//!
//! `cargo run --release -p plexus-tls --example rpc_latency`

use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_tls::rpc::{RpcClient, RpcServer};
use plexus_tls::*;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let ca = ClusterCa::create()?;
    let hour = Duration::from_secs(3600);
    let server_creds = Credentials::new(ca.issue(&NodeId::random()?, Role::Manager, hour)?)?;
    let client_creds = Credentials::new(ca.issue(&NodeId::random()?, Role::Manager, hour)?)?;
    let listener =
        TlsListener::bind("127.0.0.1:0", &server_creds, TransportOptions::default()).await?;
    let server = RpcServer::spawn(listener, |_peer, request: Vec<u8>| async move {
        Ok::<_, String>(request)
    })?;
    let addr = server.local_addr().to_string();
    let connector = TlsConnector::new(&client_creds, TransportOptions::default())?;

    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        let mut conn = connector.connect(&addr, None).await?;
        conn.send(b"").await?;
    }
    let handshake_ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds);

    let client = Arc::new(RpcClient::new(connector, addr, None));
    client.call(&[0u8; 64]).await?;
    let mut line = format!("handshake_ms={handshake_ms:.3}");
    for in_flight in [1usize, 16] {
        let calls = 20_000 / in_flight;
        let started = Instant::now();
        let tasks: Vec<_> = (0..in_flight)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move {
                    let mut worst = Duration::ZERO;
                    for _ in 0..calls {
                        let t = Instant::now();
                        client.call(&[7u8; 64]).await?;
                        worst = worst.max(t.elapsed());
                    }
                    Ok::<_, rpc::RpcError>(worst)
                })
            })
            .collect();
        let mut worst = Duration::ZERO;
        for task in tasks {
            worst = worst.max(task.await??);
        }
        let rate = (calls * in_flight) as f64 / started.elapsed().as_secs_f64();
        line.push_str(&format!(
            " rpc_per_s_{in_flight}={rate:.0} max_ms_{in_flight}={:.2}",
            worst.as_secs_f64() * 1000.0
        ));
    }
    println!("{line}");
    Ok(())
}
