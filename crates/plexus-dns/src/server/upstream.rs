//! The forwarding task: drives the [`Forwarder`] state machine with real sockets — one UDP
//! socket per address family for every upstream (no socket per query), TCP exchanges for
//! truncated answers, and the timer — and delivers answers to the clients, caching them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use super::Shared;
use crate::cache;
use crate::forward::{Action, Forwarder, ForwarderConfig};
use crate::wire;

/// How long one TCP exchange with an upstream may take.
const TCP_TIMEOUT: Duration = Duration::from_secs(2);
/// Queries waiting for the forwarding task at most; beyond, clients get `REFUSED`.
pub(super) const QUEUE: usize = 8192;

/// Where an answer goes.
#[derive(Debug)]
pub(super) enum Client {
    /// Back over the sandbox's UDP socket.
    Udp {
        sock: Arc<std::net::UdpSocket>,
        peer: SocketAddr,
    },
    /// To the TCP connection's task.
    Tcp(oneshot::Sender<Vec<u8>>),
}

impl Client {
    /// Sends `bytes`, cut to `max` bytes (with `TC`) if longer.
    pub(super) fn deliver(self, bytes: Vec<u8>, max: usize) {
        let bytes = fit(bytes, max);
        match self {
            Client::Udp { sock, peer } => {
                // Over loopback a send completes at once; a failure loses the answer as a
                // lost datagram would be (the client asks again).
                let _ = sock.send_to(&bytes, peer);
            }
            Client::Tcp(tx) => {
                let _ = tx.send(bytes);
            }
        }
    }
}

/// `bytes`, or if longer than `max` its header and question with `TC` set.
pub(super) fn fit(bytes: Vec<u8>, max: usize) -> Vec<u8> {
    if bytes.len() <= max {
        return bytes;
    }
    match wire::header_and_question(&bytes) {
        Some(mut out) => {
            out[2] |= 0x02;
            out
        }
        None => bytes[..wire::HEADER_LEN.min(bytes.len())].to_vec(),
    }
}

/// A query for the forwarding task.
#[derive(Debug)]
pub(super) struct Job {
    pub client: Client,
    /// Which sandbox asks (bounds its share of the queries in flight).
    pub client_no: u64,
    pub query: Vec<u8>,
    pub upstreams: Arc<[SocketAddr]>,
    pub key: cache::Key,
    pub max: usize,
}

struct Token {
    client: Client,
    key: cache::Key,
    max: usize,
}

async fn bind(addr: &str) -> Option<UdpSocket> {
    match UdpSocket::bind(addr).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(addr, error = %e, "no upstream socket for this family");
            None
        }
    }
}

async fn recv(sock: &Option<UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Runs the forwarding task until the job channel closes.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut jobs: mpsc::Receiver<Job>,
    config: ForwarderConfig,
) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ u64::from(std::process::id()).rotate_left(32);
    let mut fwd: Forwarder<Token> = Forwarder::new(config, seed);
    let v4 = bind("0.0.0.0:0").await;
    let v6 = bind("[::]:0").await;
    let (tcp_tx, mut tcp_rx) = mpsc::channel::<(u64, Option<Vec<u8>>)>(256);
    let mut buf4 = vec![0u8; 65_535];
    let mut buf6 = vec![0u8; 65_535];
    loop {
        let deadline = fwd.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let actions = tokio::select! {
            job = jobs.recv() => {
                let Some(job) = job else { return };
                let token = Token { client: job.client, key: job.key, max: job.max };
                fwd.on_query(Instant::now(), token, job.client_no, &job.query, &job.upstreams)
            }
            r = recv(&v4, &mut buf4) => match r {
                Ok((n, from)) => fwd.on_answer(Instant::now(), from, &buf4[..n]),
                Err(_) => Vec::new(),
            },
            r = recv(&v6, &mut buf6) => match r {
                Ok((n, from)) => fwd.on_answer(Instant::now(), from, &buf6[..n]),
                Err(_) => Vec::new(),
            },
            Some((ticket, answer)) = tcp_rx.recv() => fwd.on_tcp_answer(Instant::now(), ticket, answer),
            _ = sleep => fwd.on_timer(Instant::now()),
        };
        for action in actions {
            match action {
                Action::Send { to, bytes } => {
                    let sock = if to.is_ipv4() { &v4 } else { &v6 };
                    if let Some(s) = sock {
                        let _ = s.try_send_to(&bytes, to);
                    }
                }
                Action::Tcp { ticket, to, bytes } => {
                    let tx = tcp_tx.clone();
                    tokio::spawn(async move {
                        let answer = tokio::time::timeout(TCP_TIMEOUT, tcp_exchange(to, &bytes))
                            .await
                            .ok()
                            .and_then(|r| r.ok());
                        let _ = tx.send((ticket, answer)).await;
                    });
                }
                Action::Reply {
                    token,
                    bytes,
                    cacheable,
                } => {
                    if cacheable {
                        if let Ok(mut c) = shared.cache.lock() {
                            c.insert(token.key, &bytes, Instant::now());
                        }
                    }
                    token.client.deliver(bytes, token.max);
                }
            }
        }
        shared.set_forward_stats(fwd.stats());
    }
}

/// One query over TCP: two-byte length, message; the same back.
pub(super) async fn tcp_exchange(to: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(to).await?;
    let len = u16::try_from(query.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    s.write_all(&out).await?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut answer).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_to_header_and_question() {
        let mut m = vec![0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 1, 2, 3, 4]);
        let whole = fit(m.clone(), 512);
        assert_eq!(whole, m);
        let cut = fit(m, 20);
        assert_eq!(cut.len(), 19);
        assert!(wire::is_truncated(&cut));
        assert_eq!(&cut[6..8], &[0, 0]);
    }
}
