//! Loopback ports and a TCP proxy that can cut its connections.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}

/// Runs `bind` until it stops failing with "address not available" or `timeout` passes, and
/// returns its last result. A fresh IPv6 address stays tentative (cannot be bound) until the
/// kernel's link watch sees its link operational, up to a second after the link came up.
pub fn bind_retrying<T>(
    mut bind: impl FnMut() -> std::io::Result<T>,
    timeout: std::time::Duration,
) -> std::io::Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match bind() {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other,
        }
    }
}

/// Waits until something accepts TCP connections at `addr`, or `timeout` passes.
pub async fn wait_for_port(addr: SocketAddr, timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if TcpStream::connect(addr).await.is_ok() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    false
}

/// A TCP proxy on a free loopback port forwarding to a target. [`cut`](Self::cut) drops every
/// connection at once and refuses new ones (a dead link, seen from the client); [`restore`]
/// accepts again.
///
/// [`restore`]: Self::restore
pub struct TcpProxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        Self::start_on(std::net::TcpListener::bind("127.0.0.1:0")?, target)
    }

    /// Starts a proxy to `target` on a listener bound already: one bound inside another
    /// network namespace lets a daemon there reach a server on this namespace's loopback
    /// (the proxy's own connections to `target` are made from the caller's namespace).
    pub fn start_on(listener: std::net::TcpListener, target: SocketAddr) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let gen_tx = generation.clone();
        let cut_flag = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if cut_flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut gen_rx = gen_tx.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = gen_rx.changed() => {
                            // Dropping both ends closes them: the client sees its
                            // connection die and must reconnect.
                        }
                    }
                });
            }
        });
        Ok(Self {
            addr,
            cut,
            generation,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.generation.send_modify(|g| *g += 1);
    }
}
