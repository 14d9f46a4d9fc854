//! One blocking HTTP/1.1 request per call over plexusd's unix socket, as the `plexus` CLI
//! does (`crates/plexus/src/client.rs`): a plugin process makes a few requests and exits, so
//! no async runtime. The daemon is asked to close the connection; the answer is read to its
//! end (bounded) and framed by `Content-Length` or chunked encoding.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{code, CniError, Result};

/// Most bytes an answer may take: a confused peer must not make the plugin buffer without end.
const MAX_ANSWER: u64 = 64 << 20;

/// How long one request may take: a runtime waits on the plugin, and a wedged daemon must
/// not hold it forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// plexusd at a socket path.
#[derive(Debug, Clone)]
pub struct Client {
    socket: String,
}

/// An answer: its status and body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// Whether the status is 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The daemon's error message (`{"message"}`), or the body as text.
    pub fn message(&self) -> String {
        serde_json::from_slice::<plexus_api_types::ErrorResponse>(&self.body)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).trim().to_string())
    }
}

fn unreachable(socket: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::TRY_AGAIN_LATER,
        "plexusd is not answering",
        format!("plexusd socket {socket}: {e}"),
    )
}

fn garbled(what: impl std::fmt::Display) -> CniError {
    CniError::new(
        code::DAEMON_REFUSED,
        "plexusd's answer is not valid HTTP",
        what.to_string(),
    )
}

impl Client {
    /// A client of the daemon at `socket` (a path).
    pub fn new(socket: impl Into<String>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    /// The socket's path.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Sends `method path` with an optional JSON body; any status comes back as an
    /// [`Answer`], only transport failures as errors.
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer> {
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                "invalid request path",
                format!("{path:?} holds a control character or a space"),
            ));
        }
        let body = match body {
            Some(v) => serde_json::to_vec(v).map_err(garbled)?,
            None => Vec::new(),
        };
        let head = format!(
            "{method} /v{}{path} HTTP/1.1\r\nHost: plexus\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            plexus_api_types::API_VERSION,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(&body);
        let mut stream =
            UnixStream::connect(&self.socket).map_err(|e| unreachable(&self.socket, e))?;
        let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
        let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
        stream
            .write_all(&request)
            .map_err(|e| unreachable(&self.socket, e))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_ANSWER)
            .read_to_end(&mut raw)
            .map_err(|e| unreachable(&self.socket, e))?;
        parse_answer(&raw)
    }

    /// A GET decoded as `T`; an error status becomes `on_error(status, message)`.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        on_error: impl FnOnce(u16, String) -> CniError,
    ) -> Result<T> {
        let answer = self.request("GET", path, None)?;
        if !answer.ok() {
            return Err(on_error(answer.status, answer.message()));
        }
        serde_json::from_slice(&answer.body)
            .map_err(|e| garbled(format!("decoding the answer to GET {path}: {e}")))
    }
}

/// Percent-encodes a path segment.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Splits a whole answer into status and body (interim 1xx answers skipped).
pub fn parse_answer(mut raw: &[u8]) -> Result<Answer> {
    loop {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| garbled("the connection closed before the end of the headers"))?;
        let head =
            std::str::from_utf8(&raw[..end]).map_err(|_| garbled("headers are not UTF-8"))?;
        let rest = &raw[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|s| (100..600).contains(s))
            .ok_or_else(|| garbled(format!("bad status line {status_line:?}")))?;
        if !version.starts_with("HTTP/1.") {
            return Err(garbled(format!("bad status line {status_line:?}")));
        }
        let (mut length, mut chunked) = (None, false);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                return Err(garbled(format!("bad header line {line:?}")));
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| garbled(format!("bad Content-Length {value:?}")))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
                if !chunked {
                    return Err(garbled(format!("unsupported Transfer-Encoding {value:?}")));
                }
            }
        }
        if (100..200).contains(&status) {
            raw = rest;
            continue;
        }
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if chunked {
            dechunk(rest)?
        } else if let Some(n) = length {
            rest.get(..n)
                .ok_or_else(|| {
                    garbled(format!(
                        "the connection closed after {} of the body's {n} bytes",
                        rest.len()
                    ))
                })?
                .to_vec()
        } else {
            rest.to_vec()
        };
        return Ok(Answer { status, body });
    }
}

/// Decodes a chunked body (extensions and trailers ignored).
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| garbled("a chunk size line is cut short"))?;
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| garbled("bad chunk size"))?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let n = usize::from_str_radix(size, 16)
            .map_err(|_| garbled(format!("bad chunk size {size:?}")))?;
        rest = &rest[eol + 2..];
        if n == 0 {
            return Ok(body);
        }
        let chunk = rest
            .get(..n)
            .ok_or_else(|| garbled("the connection closed inside a chunk"))?;
        body.extend_from_slice(chunk);
        rest = rest
            .get(n..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or_else(|| garbled("a chunk does not end in CRLF"))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_chunks() {
        let a = parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((a.status, a.body.as_slice()), (200, &b"{}"[..]));
        let a = parse_answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((a.status, a.body.as_slice()), (404, &b"abcde"[..]));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
        assert!(parse_answer(b"garbage").is_err());
    }

    #[test]
    fn encodes_segments() {
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
