//! Listeners: a UDP socket and a TCP listener opened inside each sandbox's namespace on
//! `127.0.0.11` with ports of their own, and optionally the host's listener. Local answers
//! are made inline where the query is received, so forwarding (however slow the upstreams)
//! never delays them.
//!
//! Each UDP socket is served by a thread of its own blocked in `recvfrom`, not by a task
//! behind epoll: a query then costs two system calls (receive, send) and one wake-up, which
//! is what the kernel's own floor costs, where the event loop added an `epoll_wait` and its
//! bookkeeping to each (the figures are in `bench/dns/README.md`). A sleeping thread costs
//! nothing but its stack's few touched pages. TCP, rare and long-lived, stays on tasks.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use super::upstream::{Client, Job};
use super::Shared;
use crate::answer::{self, Outcome, Transport};
use crate::error::DnsError;
use crate::wire;

/// TCP connections at most per listener.
const TCP_CONNECTIONS: usize = 64;
/// How long an idle TCP connection is kept.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How long a TCP client waits for a forwarded answer at most.
const TCP_FORWARD_WAIT: Duration = Duration::from_secs(6);
/// A UDP thread checks whether it should stop at least this often (it is woken at once
/// when its listener goes; this is the backstop).
const UDP_STOP_CHECK: Duration = Duration::from_secs(2);
/// The stack of a UDP thread.
const UDP_THREAD_STACK: usize = 256 << 10;

/// Whose queries a listener answers.
#[derive(Debug, Clone)]
pub(super) enum Responder {
    /// A sandbox's (its id, and its number for the forwarder's per-client bound).
    Sandbox { id: Arc<str>, no: u64 },
    /// The host's: `NAME.NETWORK.DOMAIN` only.
    Host { domain: Arc<str> },
}

/// A running listener; dropping it stops its thread and tasks and closes its sockets.
#[derive(Debug)]
pub(super) struct Listener {
    /// The UDP port.
    pub udp_port: u16,
    /// The TCP port.
    pub tcp_port: u16,
    udp: Arc<std::net::UdpSocket>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        // Wakes the thread blocked in recvfrom (it returns 0 once reading is shut down).
        let _ = nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&*self.udp),
            nix::sys::socket::Shutdown::Read,
        );
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Opens the sockets for `addr` inside the namespace at `netns` (the current one if `None`).
async fn open(
    netns: Option<&Path>,
    addr: SocketAddr,
) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsError> {
    let bind = move || -> std::io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
        let udp = std::net::UdpSocket::bind(addr)?;
        let tcp = std::net::TcpListener::bind(addr)?;
        udp.set_read_timeout(Some(UDP_STOP_CHECK))?;
        tcp.set_nonblocking(true)?;
        Ok((udp, tcp))
    };
    let what = |e| DnsError::io(format!("binding {addr}"), e);
    match netns {
        None => bind().map_err(what),
        Some(path) => {
            let ns = plexus_sys::netns::Netns::open(path)?;
            ns.run_async(bind).await?.map_err(what)
        }
    }
}

/// Starts a listener on `addr` inside `netns` (port 0: ports of its own).
pub(super) async fn start(
    shared: Arc<Shared>,
    netns: Option<&Path>,
    addr: SocketAddr,
    who: Responder,
) -> Result<Listener, DnsError> {
    let (udp, tcp) = open(netns, addr).await?;
    let tcp =
        TcpListener::from_std(tcp).map_err(|e| DnsError::io("registering a TCP socket", e))?;
    let udp_port = udp
        .local_addr()
        .map_err(|e| DnsError::io("UDP port", e))?
        .port();
    let tcp_port = tcp
        .local_addr()
        .map_err(|e| DnsError::io("TCP port", e))?
        .port();
    let udp = Arc::new(udp);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (shared, udp, who, stop) = (shared.clone(), udp.clone(), who.clone(), stop.clone());
        std::thread::Builder::new()
            .name("dns-udp".into())
            .stack_size(UDP_THREAD_STACK)
            .spawn(move || serve_udp(shared, udp, who, stop))
            .map_err(|e| DnsError::io("starting a UDP listener thread", e))?;
    }
    let tasks = vec![tokio::spawn(serve_tcp(shared, tcp, who))];
    Ok(Listener {
        udp_port,
        tcp_port,
        udp,
        stop,
        tasks,
    })
}

/// A cheap random index below `n` (xorshift, per task).
struct Shuffle(u64);

impl Shuffle {
    fn new() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        Shuffle(t | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// What to do with one query.
fn respond(
    shared: &Shared,
    who: &Responder,
    query: &[u8],
    t: Transport,
    rng: &mut Shuffle,
) -> Outcome {
    let zone = shared.zone.load();
    let mut below = |n| rng.below(n);
    match who {
        Responder::Sandbox { id, .. } => match zone.sandboxes.get(&**id) {
            Some(view) => answer::answer(query, t, &zone, view, &mut below),
            None => Outcome::Drop(answer::DropReason::NoHeader),
        },
        Responder::Host { domain } => answer::answer_host(query, t, &zone, domain, &mut below),
    }
}

/// Counts a local reply by kind.
fn count_reply(shared: &Shared, bytes: &[u8]) {
    let s = &shared.stats;
    match (wire::rcode(bytes), bytes.get(6..8)) {
        (Some(0), Some([0, 0])) => s.answers_nodata.fetch_add(1, Relaxed),
        (Some(0), _) => s.answers_local.fetch_add(1, Relaxed),
        _ => s.answers_error.fetch_add(1, Relaxed),
    };
}

/// Forwards a query for a sandbox: from the cache, or through the forwarding task.
/// `None` when it went to the forwarder (the answer comes to `client` later).
fn forward(
    shared: &Shared,
    who: &Responder,
    query: &[u8],
    f: &answer::Forward,
    client: Client,
) -> Option<(Client, Vec<u8>)> {
    let Responder::Sandbox { id, no } = who else {
        return None;
    };
    let zone = shared.zone.load();
    let upstreams = match zone.sandboxes.get(&**id) {
        Some(v) if !v.upstreams.is_empty() => v.upstreams.clone(),
        _ => shared.host_upstreams.load().0.clone(),
    };
    let key = (upstream_set_id(&upstreams), f.key.clone());
    let hit = shared
        .cache
        .lock()
        .ok()
        .and_then(|mut c| c.get(&key, query, Instant::now()));
    if let Some(hit) = hit {
        shared.stats.cache_hits.fetch_add(1, Relaxed);
        return Some((client, hit));
    }
    shared.stats.forwarded.fetch_add(1, Relaxed);
    let job = Job {
        client,
        client_no: *no,
        query: query.to_vec(),
        upstreams,
        key,
        max: f.max_size,
    };
    match shared.jobs.try_send(job) {
        Ok(()) => None,
        Err(e) => {
            shared.stats.refused_overload.fetch_add(1, Relaxed);
            let job = e.into_inner();
            let refused = answer::error(&f.query, hickory_proto::op::ResponseCode::Refused);
            Some((job.client, refused))
        }
    }
}

/// A stable id of a list of upstreams (answers from different ones are cached apart).
fn upstream_set_id(ups: &[SocketAddr]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ups.hash(&mut h);
    h.finish()
}

fn serve_udp(
    shared: Arc<Shared>,
    sock: Arc<std::net::UdpSocket>,
    who: Responder,
    stop: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 4096];
    let mut rng = Shuffle::new();
    while !stop.load(Relaxed) {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::debug!(error = %e, "dns udp receive");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if n == 0 {
            // Shut down (or an empty datagram): nothing to answer.
            continue;
        }
        shared.stats.queries_udp.fetch_add(1, Relaxed);
        let query = &buf[..n];
        match respond(&shared, &who, query, Transport::Udp, &mut rng) {
            Outcome::Reply(bytes) => {
                count_reply(&shared, &bytes);
                let _ = sock.send_to(&bytes, peer);
            }
            Outcome::Forward(f) => {
                let client = Client::Udp {
                    sock: sock.clone(),
                    peer,
                };
                if let Some((client, bytes)) = forward(&shared, &who, query, &f, client) {
                    client.deliver(bytes, f.max_size);
                }
            }
            Outcome::Drop(_) => {
                shared.stats.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

async fn serve_tcp(shared: Arc<Shared>, listener: TcpListener, who: Responder) {
    let slots = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Full: the client retries or gives up; others keep their connections.
            drop(stream);
            continue;
        };
        let shared = shared.clone();
        let who = who.clone();
        tokio::spawn(async move {
            let _ = tcp_connection(&shared, stream, &who).await;
            drop(permit);
        });
    }
}

async fn tcp_connection(shared: &Shared, mut s: TcpStream, who: &Responder) -> std::io::Result<()> {
    let mut rng = Shuffle::new();
    loop {
        let mut len = [0u8; 2];
        match tokio::time::timeout(TCP_IDLE, s.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => return Ok(()),
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        tokio::time::timeout(TCP_IDLE, s.read_exact(&mut query))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        shared.stats.queries_tcp.fetch_add(1, Relaxed);
        let reply = match respond(shared, who, &query, Transport::Tcp, &mut rng) {
            Outcome::Reply(bytes) => {
                count_reply(shared, &bytes);
                bytes
            }
            Outcome::Forward(f) => {
                let (tx, rx) = oneshot::channel();
                match forward(shared, who, &query, &f, Client::Tcp(tx)) {
                    Some((_, bytes)) => bytes,
                    None => match tokio::time::timeout(TCP_FORWARD_WAIT, rx).await {
                        Ok(Ok(bytes)) => bytes,
                        _ => answer::error(&f.query, hickory_proto::op::ResponseCode::ServFail),
                    },
                }
            }
            Outcome::Drop(_) => {
                shared.stats.dropped.fetch_add(1, Relaxed);
                return Ok(());
            }
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&reply);
        s.write_all(&out).await?;
    }
}
