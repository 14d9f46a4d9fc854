//! Length-prefixed frames: a big-endian `u32` length, then that many bytes.
//!
//! The length is checked against the maximum before anything is allocated, so a peer cannot
//! make a reader reserve memory by announcing a large frame.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The default maximum frame size: 4 MiB.
pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;

/// An error reading or writing a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A frame is larger than the maximum; the connection must be closed.
    #[error("frame of {len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// The frame's length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame of at most `max` bytes; `None` when the peer closed between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        let n = reader.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(header);
    let len_usize = usize::try_from(len).map_err(|_| FrameError::TooLarge {
        len: u64::from(len),
        max,
    })?;
    if len_usize > max {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max,
        });
    }
    let mut body = vec![0u8; len_usize];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            FrameError::Truncated
        } else {
            FrameError::Io(e)
        }
    })?;
    Ok(Some(body))
}

/// Writes one frame, refusing (before writing anything) one over `max` bytes.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    let too_large = || FrameError::TooLarge {
        len: payload.len() as u64,
        max,
    };
    if payload.len() > max {
        return Err(too_large());
    }
    let len = u32::try_from(payload.len()).map_err(|_| too_large())?;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(payload);
    writer.write_all(&buf).await?;
    writer.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_clean_end() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, b"hello", 16).await.unwrap();
        write_frame(&mut a, b"", 16).await.unwrap();
        drop(a);
        assert_eq!(read_frame(&mut b, 16).await.unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut b, 16).await.unwrap().unwrap(), b"");
        assert!(read_frame(&mut b, 16).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn over_size_is_refused_unread() {
        let (mut a, mut b) = tokio::io::duplex(64);
        // Announce 4 GiB - 1 and send nothing more: the reader must refuse at the header.
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let err = read_frame(&mut b, 1024).await.unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { len, max: 1024 } if len == u64::from(u32::MAX)),
            "{err}"
        );
        let err = write_frame(&mut a, &[0u8; 17], 16).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "frame of 17 bytes is over the 16-byte limit"
        );
    }

    #[tokio::test]
    async fn truncated_frame() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 10, 1, 2]).await.unwrap();
        drop(a);
        assert!(matches!(
            read_frame(&mut b, 1024).await,
            Err(FrameError::Truncated)
        ));
    }
}
