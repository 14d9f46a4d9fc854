//! The byte streams between members, behind a trait so that a TLS transport plugs in
//! without touching the core; and the length-prefixed frames carried over them.

use std::io;
use std::pin::Pin;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A connected byte stream between two members.
pub trait Conn: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Conn for T {}

/// A boxed [`Conn`].
pub type BoxConn = Pin<Box<dyn Conn>>;

/// How members reach each other: plain TCP ([`TcpTransport`]) or mutual TLS with the
/// peer's certificate checked ([`crate::TlsRaftTransport`]).
#[async_trait]
pub trait RaftTransport: Send + Sync + 'static {
    /// Listens on `addr` (`host:port`, port 0 for any).
    async fn bind(&self, addr: &str) -> io::Result<Box<dyn RaftListener>>;
    /// Connects to a member listening on `addr`.
    async fn connect(&self, addr: &str) -> io::Result<BoxConn>;
}

/// A listening endpoint of a [`RaftTransport`].
#[async_trait]
pub trait RaftListener: Send + Sync + 'static {
    /// The address bound (with the port chosen, when 0 was asked).
    fn local_addr(&self) -> io::Result<String>;
    /// The next incoming connection.
    async fn accept(&self) -> io::Result<BoxConn>;
}

/// Plain TCP, for loopback clusters and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpTransport;

struct TcpRaftListener(TcpListener);

#[async_trait]
impl RaftTransport for TcpTransport {
    async fn bind(&self, addr: &str) -> io::Result<Box<dyn RaftListener>> {
        Ok(Box::new(TcpRaftListener(TcpListener::bind(addr).await?)))
    }

    async fn connect(&self, addr: &str) -> io::Result<BoxConn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Box::pin(s))
    }
}

#[async_trait]
impl RaftListener for TcpRaftListener {
    fn local_addr(&self) -> io::Result<String> {
        Ok(self.0.local_addr()?.to_string())
    }

    async fn accept(&self) -> io::Result<BoxConn> {
        let (s, _) = self.0.accept().await?;
        s.set_nodelay(true)?;
        Ok(Box::pin(s))
    }
}

/// The largest frame either side sends or accepts. Append requests are kept under it by
/// answering openraft with `PayloadTooLarge`; snapshot chunks are far smaller.
pub const MAX_FRAME_BYTES: usize = 8 << 20;

/// Encodes a message, refusing one over [`MAX_FRAME_BYTES`].
pub(crate) fn encode_frame<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    let body = postcard::to_allocvec(msg).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "message of {} bytes is over the frame limit of {MAX_FRAME_BYTES}",
                body.len()
            ),
        ));
    }
    Ok(body)
}

/// Writes one encoded frame.
pub(crate) async fn write_frame(conn: &mut BoxConn, body: &[u8]) -> io::Result<()> {
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    conn.write_all(&len.to_be_bytes()).await?;
    conn.write_all(body).await?;
    conn.flush().await
}

/// Reads one frame and decodes it; a frame over the limit is refused before it is read.
pub(crate) async fn read_frame<T: DeserializeOwned>(conn: &mut BoxConn) -> io::Result<T> {
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer sent a frame of {len} bytes, over the limit of {MAX_FRAME_BYTES}"),
        ));
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await?;
    postcard::from_bytes(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
