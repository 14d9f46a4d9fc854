//! A small blocking HTTP/1.1 client over the daemon's unix socket: one connection per request.
//!
//! The CLI makes one request (a few for `rm`/`inspect` of several names) and exits, so what
//! counts is the cost of starting: an async runtime, a connection task and a general HTTP stack
//! cost more than the daemon takes to answer. A plain `UnixStream`, one write and a buffered
//! read keep a request to a handful of syscalls. The daemon is asked to close the connection
//! after its answer, so there is no connection reuse to manage.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

/// Most bytes a response's status line and headers may take (and, separately, a chunked
/// body's trailers): a confused peer must not make the CLI buffer without end.
const MAX_HEAD: usize = 64 * 1024;

/// Most bytes one chunk-size line (size and extensions) may take.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Read buffer size: the daemon's usual answer (headers and JSON) fits in one read.
const READ_BUFFER: usize = 16 * 1024;

/// The daemon, by socket path.
pub struct Client {
    host: String,
    socket: PathBuf,
}

/// The HTTP methods the CLI uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`: read a resource.
    Get,
    /// `POST`: create or act.
    Post,
    /// `DELETE`: remove a resource.
    Delete,
}

impl Method {
    /// The method's name as it goes on the request line.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// A daemon answer that is an error: printed as docker prints it.
#[derive(Debug)]
pub struct DaemonError(pub String);

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Error response from daemon: {}", self.0)
    }
}

impl std::error::Error for DaemonError {}

/// A final (non-1xx) response.
#[derive(Debug)]
struct Response {
    status: u16,
    /// The status line's reason phrase, kept for messages about unexpected statuses.
    reason: String,
    body: Vec<u8>,
}

impl Client {
    /// A client for `host` (`unix:///path`).
    pub fn new(host: &str) -> Result<Self> {
        let path = host
            .strip_prefix("unix://")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| anyhow!("invalid host {host:?}: expected unix:///path/to/socket"))?;
        Ok(Self {
            host: host.to_string(),
            socket: PathBuf::from(path),
        })
    }

    /// Sends a request; returns the status and body, or a [`DaemonError`] for 4xx/5xx.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, Vec<u8>)> {
        let response = self.request(method, path, body)?;
        Ok((response.status, response.body))
    }

    /// [`Client::call`], keeping the reason phrase too.
    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<Response> {
        let body = match &body {
            Some(v) => serde_json::to_vec(v)?,
            None => Vec::new(),
        };
        let request = encode_request(method, path, &body)?;
        let mut stream = UnixStream::connect(&self.socket).with_context(|| {
            format!(
                "Cannot connect to the Plexus daemon at {}. Is plexusd running?",
                self.host
            )
        })?;
        // One buffer, one write: the daemon gets the whole request in one segment.
        // (std's UnixStream sends with MSG_NOSIGNAL, so a daemon that hangs up early is an
        // EPIPE error here, not a SIGPIPE that main's SIG_DFL would make fatal.)
        stream
            .write_all(&request)
            .context("sending the request to the daemon")?;
        let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
        let response = read_response(&mut reader, method.as_str())?;
        if (400..600).contains(&response.status) {
            let message = serde_json::from_slice::<plexus_api_types::ErrorResponse>(&response.body)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&response.body).trim().to_string());
            return Err(DaemonError(message).into());
        }
        Ok(response)
    }

    /// A GET whose body is handed to `each` piece by piece as it arrives (a chunked stream,
    /// `GET /events`), until the daemon ends it; errors as [`Client::call`]'s.
    pub fn stream(&self, path: &str, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let request = encode_request(Method::Get, path, &[])?;
        let mut stream = UnixStream::connect(&self.socket).with_context(|| {
            format!(
                "Cannot connect to the Plexus daemon at {}. Is plexusd running?",
                self.host
            )
        })?;
        stream
            .write_all(&request)
            .context("sending the request to the daemon")?;
        let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
        let head = loop {
            let head = read_head(&mut reader)?;
            if !(100..200).contains(&head.status) || head.status == 101 {
                break head;
            }
        };
        if !(200..300).contains(&head.status) {
            let mut body = Vec::new();
            match head.framing {
                Framing::Chunked => read_chunked_each(&mut reader, |b| {
                    body.extend_from_slice(b);
                    Ok(())
                })?,
                Framing::Length(n) => body = read_exact_body(&mut reader, n)?,
                Framing::Eof => {
                    reader.read_to_end(&mut body).map_err(read_error)?;
                }
            }
            let message = serde_json::from_slice::<plexus_api_types::ErrorResponse>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
            return Err(DaemonError(message).into());
        }
        match head.framing {
            Framing::Chunked => read_chunked_each(&mut reader, each),
            Framing::Length(n) => each(&read_exact_body(&mut reader, n)?),
            Framing::Eof => loop {
                let buf = reader.fill_buf().map_err(read_error)?;
                if buf.is_empty() {
                    return Ok(());
                }
                let n = buf.len();
                each(buf)?;
                reader.consume(n);
            },
        }
    }

    /// A GET decoded as JSON.
    pub fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let (_, body) = self.call(Method::Get, path, None)?;
        serde_json::from_slice(&body).with_context(|| format!("decoding the answer to GET {path}"))
    }

    /// A POST of `body`, answer decoded as JSON (or `null` when empty).
    pub fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T> {
        let (_, bytes) = self.call(Method::Post, path, Some(body))?;
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).with_context(|| format!("decoding the answer to POST {path}"))
    }

    /// A DELETE.
    pub fn delete(&self, path: &str) -> Result<()> {
        let response = self.request(Method::Delete, path, None)?;
        if !(200..300).contains(&response.status) {
            bail!(
                "unexpected status {} from DELETE {path}",
                format!("{} {}", response.status, response.reason).trim_end()
            );
        }
        Ok(())
    }
}

/// `--filter name=value` flags as Docker's `filters` query value (JSON, URL-encoded).
pub fn filters_query(filter: &[String]) -> Result<String> {
    let mut filters: std::collections::BTreeMap<String, std::collections::BTreeMap<String, bool>> =
        std::collections::BTreeMap::new();
    for f in filter {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("bad format of filter (expected name=value): {f}"))?;
        filters
            .entry(k.to_string())
            .or_default()
            .insert(v.to_string(), true);
    }
    Ok(encode(&serde_json::to_string(&filters)?))
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The request's bytes: request line, headers and body in one buffer.
///
/// `Content-Length` is always sent (0 without a body) so the daemon never has to guess where
/// the request ends; `Connection: close` because the CLI makes no second request on it.
fn encode_request(method: Method, path: &str, body: &[u8]) -> Result<Vec<u8>> {
    // Paths are made of constants and `encode`d input; refuse anything that would let a byte
    // break out of the request line rather than send a request the daemon would misread.
    if let Some(b) = path.bytes().find(|b| b.is_ascii_control() || *b == b' ') {
        bail!("invalid request path {path:?}: byte {b:#04x} is not allowed");
    }
    let head = format!(
        "{} /v{}{path} HTTP/1.1\r\nHost: plexus\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        method.as_str(),
        plexus_api_types::API_VERSION,
        body.len()
    );
    let mut request = Vec::with_capacity(head.len() + body.len());
    request.extend_from_slice(head.as_bytes());
    request.extend_from_slice(body);
    Ok(request)
}

/// An answer that breaks HTTP/1.1's grammar.
fn invalid(what: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("the daemon's answer is not valid HTTP: {what}")
}

/// An I/O error while reading the answer.
fn read_error(e: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(e).context("reading the daemon's answer")
}

/// How a response's body ends (RFC 9112 §6.3, for a response to a request that has a body).
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length: n`.
    Length(u64),
    /// Neither: the body is everything until the daemon closes the connection.
    Eof,
}

/// A response's status line and what its headers say about the body.
#[derive(Debug)]
struct Head {
    status: u16,
    reason: String,
    framing: Framing,
}

/// Reads one response to a `method` request: interim 1xx answers are skipped, and the body is
/// read as the headers frame it (none for HEAD, 204 and 304).
fn read_response<R: BufRead>(r: &mut R, method: &str) -> Result<Response> {
    loop {
        let head = read_head(r)?;
        if head.status == 101 {
            return Err(invalid(
                "101 Switching Protocols to a request that asked for none",
            ));
        }
        if (100..200).contains(&head.status) {
            // 100 Continue, 103 Early Hints…: informational, the real answer follows.
            continue;
        }
        let body = if method == "HEAD" || head.status == 204 || head.status == 304 {
            Vec::new()
        } else {
            match head.framing {
                Framing::Chunked => read_chunked(r)?,
                Framing::Length(n) => read_exact_body(r, n)?,
                Framing::Eof => {
                    let mut body = Vec::new();
                    r.read_to_end(&mut body).map_err(read_error)?;
                    body
                }
            }
        };
        return Ok(Response {
            status: head.status,
            reason: head.reason,
            body,
        });
    }
}

/// Reads a line ending in LF (CRLF or, leniently, a bare LF), returned without it, taking its
/// length off `budget`. `None` when the connection ends before the line's first byte.
fn read_line<R: BufRead>(
    r: &mut R,
    budget: &mut usize,
    limit: usize,
    what: &str,
) -> Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(*budget as u64)
        .read_until(b'\n', &mut line)
        .map_err(read_error)?;
    if n == 0 && *budget > 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if n == *budget {
            invalid(format_args!("{what} longer than {limit} bytes"))
        } else {
            invalid(format_args!(
                "the connection closed in the middle of {what}"
            ))
        });
    }
    *budget -= n;
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// Reads a status line and headers, within [`MAX_HEAD`] bytes.
fn read_head<R: BufRead>(r: &mut R) -> Result<Head> {
    let mut budget = MAX_HEAD;
    let what = "the status line and headers";
    let Some(line) = read_line(r, &mut budget, MAX_HEAD, what)? else {
        return Err(invalid("the connection closed before any answer"));
    };
    let (status, reason) = parse_status_line(&line)?;
    let mut content_length: Option<u64> = None;
    let mut codings: Vec<String> = Vec::new();
    loop {
        let Some(line) = read_line(r, &mut budget, MAX_HEAD, what)? else {
            return Err(invalid(format_args!(
                "the connection closed in the middle of {what}"
            )));
        };
        if line.is_empty() {
            break;
        }
        let (name, value) = parse_header(&line)?;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(value)?;
            if content_length.is_some_and(|m| m != n) {
                return Err(invalid("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings.extend(
                value
                    .split(',')
                    .map(|c| c.trim_matches([' ', '\t']).to_ascii_lowercase())
                    .filter(|c| !c.is_empty()),
            );
        }
    }
    // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3). The request sent no TE
    // header, so chunked is the only coding the daemon may apply.
    let framing = if !codings.is_empty() {
        if codings != ["chunked"] {
            return Err(invalid(format_args!(
                "unsupported Transfer-Encoding {:?}",
                codings.join(", ")
            )));
        }
        Framing::Chunked
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        Framing::Eof
    };
    Ok(Head {
        status,
        reason,
        framing,
    })
}

/// `HTTP/1.x SSS reason` → status and reason.
fn parse_status_line(line: &[u8]) -> Result<(u16, String)> {
    // The reason phrase may hold obs-text; it is only ever displayed.
    let text = String::from_utf8_lossy(line);
    let bad = || invalid(format_args!("bad status line {text:?}"));
    let (version, rest) = text.split_once(' ').ok_or_else(bad)?;
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(bad());
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    if status < 100 {
        return Err(bad());
    }
    Ok((status, reason.to_string()))
}

/// `Name: value` → name and value without surrounding whitespace.
fn parse_header(line: &[u8]) -> Result<(&str, &str)> {
    if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
        // Obsolete line folding: RFC 9112 §5.2 lets a client reject it.
        return Err(invalid("folded header line"));
    }
    let bad = || {
        invalid(format_args!(
            "bad header line {:?}",
            String::from_utf8_lossy(line)
        ))
    };
    let colon = line.iter().position(|b| *b == b':').ok_or_else(bad)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|b| is_token_byte(*b)) {
        return Err(bad());
    }
    let name = std::str::from_utf8(name).map_err(|_| bad())?;
    // Values of the headers read here are ASCII; others may hold obs-text and are skipped.
    let value = std::str::from_utf8(value).unwrap_or("");
    Ok((name, value.trim_matches([' ', '\t'])))
}

/// A `tchar` of RFC 9110 §5.6.2: what header names are made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A Content-Length value: digits, or a list of equal ones (`5, 5`, from merged headers).
fn parse_content_length(value: &str) -> Result<u64> {
    let mut length = None;
    for item in value.split(',') {
        let item = item.trim_matches([' ', '\t']);
        if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(format_args!("bad Content-Length {value:?}")));
        }
        let n: u64 = item
            .parse()
            .map_err(|_| invalid(format_args!("Content-Length {value:?} too large")))?;
        if length.is_some_and(|m| m != n) {
            return Err(invalid("conflicting Content-Length values"));
        }
        length = Some(n);
    }
    length.ok_or_else(|| invalid("empty Content-Length"))
}

/// Reads exactly `n` body bytes.
fn read_exact_body<R: BufRead>(r: &mut R, n: u64) -> Result<Vec<u8>> {
    // The length is the peer's word: grow as bytes arrive rather than trust it for memory.
    let mut body = Vec::with_capacity(usize::try_from(n.min(1 << 20)).unwrap_or(0));
    let got = r
        .by_ref()
        .take(n)
        .read_to_end(&mut body)
        .map_err(read_error)?;
    if (got as u64) < n {
        return Err(invalid(format_args!(
            "the connection closed after {got} of the body's {n} bytes"
        )));
    }
    Ok(body)
}

/// Decodes a chunked body (RFC 9112 §7.1): chunk extensions and trailer fields are ignored.
fn read_chunked<R: BufRead>(r: &mut R) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    read_chunked_each(r, |chunk| {
        body.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(body)
}

/// [`read_chunked`], handing each chunk to `each` as soon as it is read.
fn read_chunked_each<R: BufRead>(
    r: &mut R,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut body = Vec::new();
    loop {
        let mut budget = MAX_CHUNK_LINE;
        let Some(line) = read_line(r, &mut budget, MAX_CHUNK_LINE, "a chunk size line")? else {
            return Err(invalid(
                "the connection closed before the chunked body's end",
            ));
        };
        let size = parse_chunk_size(&line)?;
        if size == 0 {
            let mut budget = MAX_HEAD;
            loop {
                let what = "the chunked body's trailers";
                let Some(trailer) = read_line(r, &mut budget, MAX_HEAD, what)? else {
                    return Err(invalid(format_args!(
                        "the connection closed in the middle of {what}"
                    )));
                };
                if trailer.is_empty() {
                    return Ok(());
                }
            }
        }
        let got = r
            .by_ref()
            .take(size)
            .read_to_end(&mut body)
            .map_err(read_error)?;
        if (got as u64) < size {
            return Err(invalid("the connection closed in the middle of a chunk"));
        }
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                invalid("the connection closed in the middle of a chunk")
            } else {
                read_error(e)
            }
        })?;
        if crlf != *b"\r\n" {
            return Err(invalid("chunk data not followed by CRLF"));
        }
        each(&body)?;
        body.clear();
    }
}

/// `1a;ext=v` → 26: hex digits, then optional whitespace and extensions.
fn parse_chunk_size(line: &[u8]) -> Result<u64> {
    let text = String::from_utf8_lossy(line);
    let size = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim_end_matches([' ', '\t']);
    let bad = || invalid(format_args!("bad chunk size line {text:?}"));
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    u64::from_str_radix(size, 16).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `raw` as the answer to a `method` request.
    fn parse(raw: &[u8], method: &str) -> Result<Response> {
        read_response(&mut &raw[..], method)
    }

    /// A reader that hands out at most `step` bytes per read, to cross every boundary.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn parse_trickled(raw: &[u8], method: &str) -> Result<Response> {
        let mut r = BufReader::with_capacity(3, Trickle { data: raw, step: 1 });
        read_response(&mut r, method)
    }

    fn ok(raw: &[u8], method: &str) -> Response {
        let a = parse(raw, method).unwrap_or_else(|e| panic!("{e:#}"));
        let b = parse_trickled(raw, method).unwrap_or_else(|e| panic!("trickled: {e:#}"));
        assert_eq!(
            (a.status, &a.reason, &a.body),
            (b.status, &b.reason, &b.body)
        );
        a
    }

    fn err(raw: &[u8]) -> String {
        match parse(raw, "GET") {
            Ok(r) => panic!("parsed: {r:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn content_length() {
        let r = ok(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}trailing garbage",
            "GET",
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        assert_eq!(r.body, b"{\"a\":1}");
    }

    #[test]
    fn header_names_are_case_insensitive() {
        for name in [
            "Content-Length",
            "CONTENT-LENGTH",
            "content-length",
            "CoNtEnT-lEnGtH",
        ] {
            let raw = format!("HTTP/1.1 201 Created\r\n{name}:   2 \t\r\n\r\nhiXX");
            let r = ok(raw.as_bytes(), "POST");
            assert_eq!((r.status, r.body.as_slice()), (201, &b"hi"[..]), "{name}");
        }
        let r = ok(
            b"HTTP/1.1 200 OK\r\nTRANSFER-ENCODING: Chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            "GET",
        );
        assert_eq!(r.body, b"hi");
    }

    #[test]
    fn chunked_several_chunks_extensions_and_trailers() {
        let r = ok(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n\
              5;name=value\r\nhello\r\n1 ; ext\r\n,\r\nB\r\n 0123456789\r\n0\r\nX-Trailer: t\r\n\r\nNEXT",
            "GET",
        );
        assert_eq!(r.body, b"hello, 0123456789");
    }

    #[test]
    fn eof_delimited() {
        let r = ok(
            b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end\r\n",
            "GET",
        );
        assert_eq!(r.body, b"until the end\r\n");
        let r = ok(
            b"HTTP/1.1 500 Internal Server Error\n\nbare LF lines",
            "GET",
        );
        assert_eq!((r.status, r.body.as_slice()), (500, &b"bare LF lines"[..]));
    }

    #[test]
    fn no_body_for_204_304_and_head() {
        let r = ok(b"HTTP/1.1 204 No Content\r\n\r\n", "DELETE");
        assert_eq!((r.status, r.body.len()), (204, 0));
        let r = ok(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            "GET",
        );
        assert_eq!((r.status, r.body.len()), (304, 0));
        let r = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", "HEAD");
        assert_eq!((r.status, r.body.len()), (200, 0));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let r = ok(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            "POST",
        );
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
    }

    #[test]
    fn status_line_without_reason() {
        let r = ok(b"HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", "GET");
        assert_eq!((r.status, r.reason.as_str()), (404, ""));
    }

    #[test]
    fn malformed() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "closed before any answer"),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "bad status line"),
            (b"HTTP/2 200 OK\r\n\r\n", "bad status line"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "bad status line"),
            (b"HTTP/1.1 099 x\r\n\r\n", "bad status line"),
            (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "bad header line"),
            (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "bad header line"),
            (b"HTTP/1.1 200 OK\r\nA: b\r\n  folded\r\n\r\n", "folded"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 5", "in the middle of"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
                "bad Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
                "conflicting",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                "conflicting",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                "too large",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc",
                "after 3 of the body's 5",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "unsupported",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "chunk size",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
                "middle of a chunk",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd",
                "not followed by CRLF",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
                "chunked body's end",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
                "trailers",
            ),
            (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "101"),
        ];
        for (raw, want) in cases {
            let e = err(raw);
            assert!(
                e.starts_with("the daemon's answer is not valid HTTP: "),
                "{:?}: {e}",
                String::from_utf8_lossy(raw)
            );
            assert!(e.contains(want), "{:?}: {e}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn head_section_is_bounded() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        while raw.len() <= MAX_HEAD {
            raw.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        assert!(
            err(&raw).contains("longer than 65536 bytes"),
            "{}",
            err(&raw)
        );
        let mut raw = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
        raw.resize(MAX_HEAD * 2, b'a');
        assert!(err(&raw).contains("longer than 65536 bytes"));
    }

    #[test]
    fn request_bytes() {
        let r = encode_request(Method::Post, "/networks/create", b"{}")
            .unwrap_or_else(|e| panic!("{e:#}"));
        let want = format!(
            "POST /v{}/networks/create HTTP/1.1\r\nHost: plexus\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}",
            plexus_api_types::API_VERSION
        );
        assert_eq!(String::from_utf8_lossy(&r), want);
        let r =
            encode_request(Method::Get, "/networks/a%20b", b"").unwrap_or_else(|e| panic!("{e:#}"));
        assert!(String::from_utf8_lossy(&r).contains("GET /v"));
        assert!(String::from_utf8_lossy(&r).contains("\r\nContent-Length: 0\r\n"));
        assert!(encode_request(Method::Get, "/x\r\nEvil: 1", b"").is_err());
        assert!(encode_request(Method::Get, "/x y", b"").is_err());
    }

    #[test]
    fn encode_escapes_everything_but_unreserved() {
        assert_eq!(encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(encode("a b/c?{\"x\"}é"), "a%20b%2Fc%3F%7B%22x%22%7D%C3%A9");
    }
}
