//! The tokio driver: one UDP socket and one TCP listener on the same address, feeding a
//! [`Node`] and sending what it produces. All protocol decisions are in [`Node`]; this
//! module only moves bytes and time.
//!
//! Streams carry one frame per connection: a big-endian `u32` length, then the sealed
//! frame. Reads are bounded in size, time and concurrency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::GossipError;
use crate::node::{EntryEvent, EntryInfo, Event, MemberInfo, NetworkInfo, Node, Stats, Transmit};
use crate::rng::Rng;
use crate::seal::{Key, Keyring};

/// Most concurrent inbound and outbound stream connections each (with the stream size
/// limit, this bounds what unauthenticated peers can make us buffer).
const MAX_CONNS: usize = 16;
/// Time allowed to read or write one stream frame.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);

struct Shared {
    node: Mutex<Node<SocketAddr>>,
    wake: Notify,
    stop: Notify,
    stopped: AtomicBool,
    events: broadcast::Sender<Event<SocketAddr>>,
    start: Instant,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Node<SocketAddr>> {
        self.node.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// A running gossip node. Cheap to clone; [`shutdown`](Self::shutdown) stops it.
#[derive(Clone)]
pub struct GossipHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for GossipHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl GossipHandle {
    /// Binds UDP and TCP on `bind` (default port 7946) and starts the node.
    pub async fn start(
        bind: SocketAddr,
        cfg: Config,
        keyring: Keyring,
    ) -> Result<Self, GossipError> {
        cfg.validate()?;
        let udp = Arc::new(UdpSocket::bind(bind).await?);
        let listener = TcpListener::bind(bind).await?;
        let addr = udp.local_addr()?;
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        let seed = Rng::from_os().next_u64();
        let max_stream = cfg.max_stream_size;
        let node = Node::new(addr, cfg, keyring, epoch, seed, 0);
        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            node: Mutex::new(node),
            wake: Notify::new(),
            stop: Notify::new(),
            stopped: AtomicBool::new(false),
            events,
            start: Instant::now(),
        });
        let (tx, rx) = mpsc::channel::<Vec<u8>>(1024);
        let accept = tokio::spawn(accept_loop(listener, tx, max_stream, shared.clone()));
        let driver = tokio::spawn(drive(shared.clone(), udp, rx));
        tracing::info!(%addr, "gossip node started");
        Ok(Self {
            shared,
            addr,
            tasks: Arc::new(Mutex::new(vec![accept, driver])),
        })
    }

    /// The bound address (the node's identity).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn with<R>(&self, f: impl FnOnce(&mut Node<SocketAddr>, u64) -> R) -> R {
        let now = self.shared.now();
        let r = f(&mut self.shared.lock(), now);
        self.shared.wake.notify_one();
        r
    }

    /// Joins the cluster through any of `seeds`.
    pub fn join(&self, seeds: &[SocketAddr]) {
        self.with(|n, now| n.join(seeds, now));
    }

    /// Attaches to a network.
    pub fn join_network(&self, network: &str) -> Result<(), GossipError> {
        self.with(|n, now| n.join_network(network, now))
    }

    /// Detaches from a network.
    pub fn leave_network(&self, network: &str) {
        self.with(|n, now| n.leave_network(network, now));
    }

    /// Creates or updates an entry.
    pub fn put(
        &self,
        network: &str,
        table: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), GossipError> {
        self.with(|n, now| n.put(network, table, key, value, now))
    }

    /// Deletes an entry.
    pub fn delete(&self, network: &str, table: &str, key: &str) -> Result<(), GossipError> {
        self.with(|n, now| n.delete(network, table, key, now))
    }

    /// The visible value of an entry.
    pub fn get(&self, network: &str, table: &str, key: &str) -> Option<Vec<u8>> {
        self.shared.lock().get(network, table, key)
    }

    /// Visible entries of a table.
    pub fn entries(&self, network: &str, table: &str) -> Vec<(String, Vec<u8>, SocketAddr)> {
        self.shared.lock().entries(network, table)
    }

    /// Whether this node's table of `network` has been compared with another attached
    /// node's since it joined (see [`Node::network_synced`](crate::node::Node::network_synced)).
    pub fn network_synced(&self, network: &str) -> bool {
        self.shared.lock().network_synced(network)
    }

    /// Diagnostics: every stored entry of a network.
    pub fn table_dump(&self, network: &str) -> Vec<EntryInfo<SocketAddr>> {
        self.shared.lock().table_dump(network)
    }

    /// Diagnostics: members and their state.
    pub fn members(&self) -> Vec<MemberInfo<SocketAddr>> {
        self.shared.lock().members()
    }

    /// Diagnostics: networks and their members.
    pub fn networks(&self) -> Vec<NetworkInfo<SocketAddr>> {
        self.shared.lock().networks()
    }

    /// Diagnostics: counters.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats().clone()
    }

    /// Lifeguard local health score.
    pub fn local_health(&self) -> u32 {
        self.shared.lock().local_health()
    }

    /// Adds a receiving key.
    pub fn add_key(&self, key: Key) -> Result<(), GossipError> {
        self.with(|n, _| n.keyring_mut().add(key))
    }

    /// Switches the sending key.
    pub fn use_key(&self, key: &Key) -> Result<(), GossipError> {
        self.with(|n, _| n.keyring_mut().use_key(key))
    }

    /// Removes a key (not the primary).
    pub fn remove_key(&self, key: &Key) -> Result<(), GossipError> {
        self.with(|n, _| n.keyring_mut().remove(key))
    }

    /// Watches membership and table events.
    pub fn watch(&self) -> broadcast::Receiver<Event<SocketAddr>> {
        self.shared.events.subscribe()
    }

    /// Watches the entries of one table (create / update / delete).
    pub fn watch_table(&self, network: &str, table: &str) -> TableWatch {
        TableWatch {
            rx: self.shared.events.subscribe(),
            network: network.to_string(),
            table: table.to_string(),
        }
    }

    /// Leaves gracefully, lets the news go out for `linger`, then stops.
    pub async fn leave(&self, linger: Duration) {
        self.with(|n, now| n.leave(now));
        tokio::time::sleep(linger).await;
        self.shutdown().await;
    }

    /// Stops the node (no goodbye).
    pub async fn shutdown(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.stop.notify_one();
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// Entry events of one table (see [`GossipHandle::watch_table`]).
#[derive(Debug)]
pub struct TableWatch {
    rx: broadcast::Receiver<Event<SocketAddr>>,
    network: String,
    table: String,
}

impl TableWatch {
    /// The next event of the table; `Err(n)` if `n` events were missed because the watcher
    /// fell behind (re-read the table then); `None` once the node has stopped.
    pub async fn next(&mut self) -> Option<Result<EntryEvent<SocketAddr>, u64>> {
        loop {
            match self.rx.recv().await {
                Ok(Event::Entry(e)) if e.network == self.network && e.table == self.table => {
                    return Some(Ok(e))
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => return Some(Err(n)),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tx: mpsc::Sender<Vec<u8>>,
    max: usize,
    shared: Arc<Shared>,
) {
    let sem = Arc::new(Semaphore::new(MAX_CONNS));
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = sem.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "too many inbound streams: dropped");
            continue;
        };
        let tx = tx.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(STREAM_TIMEOUT, read_frame(&mut stream, max)).await {
                Ok(Ok(Some(frame))) => {
                    if tx.try_send(frame).is_err() {
                        tracing::debug!(%peer, "stream queue full: dropped");
                    }
                }
                Ok(Ok(None)) => shared.lock().note_oversize(),
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "stream read failed"),
                Err(_) => tracing::debug!(%peer, "stream read timed out"),
            }
        });
    }
}

/// Reads one length-prefixed frame; `None` if it announces more than `max` bytes.
async fn read_frame(s: &mut TcpStream, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let n = u32::from_be_bytes(len) as usize;
    if n > max {
        return Ok(None);
    }
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

async fn write_frame(to: SocketAddr, data: Vec<u8>) -> std::io::Result<()> {
    let mut s = TcpStream::connect(to).await?;
    s.write_all(&(data.len() as u32).to_be_bytes()).await?;
    s.write_all(&data).await?;
    s.shutdown().await
}

async fn drive(shared: Arc<Shared>, udp: Arc<UdpSocket>, mut frames: mpsc::Receiver<Vec<u8>>) {
    let mut buf = vec![0u8; 65_536];
    let out_sem = Arc::new(Semaphore::new(MAX_CONNS));
    loop {
        if shared.stopped.load(Ordering::SeqCst) {
            break;
        }
        let deadline = {
            let t = shared.lock().poll_timeout();
            shared.start + Duration::from_millis(t)
        };
        tokio::select! {
            r = udp.recv_from(&mut buf) => match r {
                Ok((n, _)) => {
                    let now = shared.now();
                    shared.lock().handle_datagram(&buf[..n], now);
                }
                Err(e) => tracing::debug!(error = %e, "udp receive failed"),
            },
            Some(frame) = frames.recv() => {
                let now = shared.now();
                shared.lock().handle_stream(&frame, now);
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = shared.now();
                shared.lock().handle_timeout(now);
            }
            _ = shared.wake.notified() => {}
            _ = shared.stop.notified() => break,
        }
        let (out, events) = {
            let mut n = shared.lock();
            let mut out = Vec::new();
            while let Some(t) = n.poll_transmit() {
                out.push(t);
            }
            let mut ev = Vec::new();
            while let Some(e) = n.poll_event() {
                ev.push(e);
            }
            (out, ev)
        };
        for e in events {
            let _ = shared.events.send(e);
        }
        for t in out {
            match t {
                Transmit::Datagram { to, data } => {
                    if let Err(e) = udp.send_to(&data, to).await {
                        tracing::debug!(%to, error = %e, "udp send failed");
                    }
                }
                Transmit::Stream { to, data } => {
                    let Ok(permit) = out_sem.clone().try_acquire_owned() else {
                        tracing::debug!(%to, "too many outbound streams: dropped");
                        continue;
                    };
                    tokio::spawn(async move {
                        let _permit = permit;
                        match tokio::time::timeout(STREAM_TIMEOUT, write_frame(to, data)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!(%to, error = %e, "stream send failed"),
                            Err(_) => tracing::debug!(%to, "stream send timed out"),
                        }
                    });
                }
            }
        }
    }
}
