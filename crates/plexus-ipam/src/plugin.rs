//! Docker's plugin transport, shared by the remote IPAM driver ([`crate::remote`]) and the
//! remote network driver (`plexus_drivers::remote`): discovery, activation and the JSON POST
//! client, as dockerd's `pkg/plugins` does them.
//!
//! Discovery looks, in order, for `NAME.sock` or `NAME/NAME.sock` in the socket directories
//! (`/run/docker/plugins`), then for `NAME.spec` (a URL: `unix:///path` or `tcp://host:port`)
//! and `NAME.json` (`{"Name": …, "Addr": …}`) in the spec directories (`/etc/docker/plugins`,
//! `/usr/lib/docker/plugins`). [`PluginClient::activate`] posts `/Plugin.Activate` and checks
//! that the plugin's `Implements` lists the API wanted (`NetworkDriver`, `IpamDriver`).
//!
//! Every call is a fresh connection (`Connection: close`). A connection that cannot be made
//! (no socket, nobody listening: a plugin restarting) is tried again, with the plugin looked
//! up again each time, for [`Timeouts::retry`] (dockerd: 30 s); then the call fails with
//! [`PluginError::NotResponding`], naming the plugin, where it was and where it was looked
//! for. A request that was sent is never sent twice: its answer must come within
//! [`Timeouts::answer`]. A plugin that comes back is simply used again.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), plexus_ipam::plugin::PluginError> {
//! use plexus_ipam::plugin::{PluginClient, PluginDirs, Timeouts};
//! let (client, implements) =
//!     PluginClient::activate("weave", &PluginDirs::default(), "NetworkDriver", Timeouts::default())
//!         .await?;
//! let caps: serde_json::Value =
//!     client.call("/NetworkDriver.GetCapabilities", &serde_json::json!({})).await?;
//! # let _ = (implements, caps); Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

/// Where plugins are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDirs {
    /// Directories holding `NAME.sock` (Docker: `/run/docker/plugins`).
    pub socket_dirs: Vec<PathBuf>,
    /// Directories holding `NAME.spec` and `NAME.json` (Docker: `/etc/docker/plugins`,
    /// `/usr/lib/docker/plugins`).
    pub spec_dirs: Vec<PathBuf>,
}

impl Default for PluginDirs {
    fn default() -> Self {
        Self {
            socket_dirs: vec!["/run/docker/plugins".into()],
            spec_dirs: vec![
                "/etc/docker/plugins".into(),
                "/usr/lib/docker/plugins".into(),
            ],
        }
    }
}

impl PluginDirs {
    /// One directory used for both sockets and specs (tests).
    pub fn single(dir: &Path) -> Self {
        Self {
            socket_dirs: vec![dir.to_path_buf()],
            spec_dirs: vec![dir.to_path_buf()],
        }
    }

    /// What is searched for plugin `name`, for messages: `a/NAME.sock, a/NAME/NAME.sock,
    /// b/NAME.spec, b/NAME.json`.
    pub fn searched(&self, name: &str) -> String {
        let mut out = Vec::new();
        for d in &self.socket_dirs {
            out.push(d.join(format!("{name}.sock")).display().to_string());
            out.push(
                d.join(name)
                    .join(format!("{name}.sock"))
                    .display()
                    .to_string(),
            );
        }
        for d in &self.spec_dirs {
            out.push(d.join(format!("{name}.spec")).display().to_string());
            out.push(d.join(format!("{name}.json")).display().to_string());
        }
        out.join(", ")
    }
}

/// Where a plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginAddr {
    /// A unix socket.
    Unix(PathBuf),
    /// A TCP `host:port` (plain; TLS is not supported).
    Tcp(String),
}

impl std::fmt::Display for PluginAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            PluginAddr::Tcp(hp) => write!(f, "tcp://{hp}"),
        }
    }
}

/// A plugin's failure. Every variant names the plugin; a call's names the call too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// No socket, spec or json file of that name.
    #[error("plugin {name:?} not found: looked for {searched}")]
    NotFound {
        /// The plugin's name.
        name: String,
        /// Every path looked at.
        searched: String,
        /// The directories looked in.
        dirs: String,
    },
    /// The plugin was found but nothing could connect to it for the whole retry window.
    #[error(
        "plugin {name:?} is not responding: {op}: cannot connect to {addr} ({message}); \
         looked for it in {searched}"
    )]
    NotResponding {
        /// The plugin's name.
        name: String,
        /// The call.
        op: String,
        /// Where it was last found.
        addr: String,
        /// The last connection error, and how long connecting was tried.
        message: String,
        /// Where it was looked for.
        searched: String,
    },
    /// The call failed: the plugin's own `Err`, an HTTP error status, a broken or late
    /// answer.
    #[error("plugin {plugin:?}: {op}: {message}")]
    Call {
        /// The plugin's name.
        plugin: String,
        /// The call (`/NetworkDriver.Join`).
        op: String,
        /// What went wrong.
        message: String,
    },
    /// The plugin answered 404: it does not implement the call.
    #[error("plugin {plugin:?}: {op}: not implemented by the plugin (HTTP 404)")]
    NotImplemented {
        /// The plugin's name.
        plugin: String,
        /// The call.
        op: String,
    },
    /// The answer is JSON of the wrong shape, or a field's value is wrong.
    #[error("plugin {plugin:?}: {op}: malformed answer: field {field}: {message}")]
    Malformed {
        /// The plugin's name.
        plugin: String,
        /// The call.
        op: String,
        /// The field, as a path (`InterfaceName.SrcName`, `StaticRoutes[0].Destination`);
        /// `.` for the whole body.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl PluginError {
    /// A [`PluginError::Call`].
    pub fn call(plugin: &str, op: &str, message: impl Into<String>) -> Self {
        PluginError::Call {
            plugin: plugin.to_string(),
            op: op.to_string(),
            message: message.into(),
        }
    }

    /// A [`PluginError::Malformed`] for `field`.
    pub fn malformed(
        plugin: &str,
        op: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        PluginError::Malformed {
            plugin: plugin.to_string(),
            op: op.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}

fn parse_url(name: &str, url: &str) -> Result<PluginAddr, PluginError> {
    let url = url.trim();
    if let Some(path) = url.strip_prefix("unix://") {
        Ok(PluginAddr::Unix(PathBuf::from(path)))
    } else if let Some(hp) = url
        .strip_prefix("tcp://")
        .or_else(|| url.strip_prefix("http://"))
    {
        Ok(PluginAddr::Tcp(hp.trim_end_matches('/').to_string()))
    } else {
        Err(PluginError::call(
            name,
            "discovery",
            format!("unsupported plugin address {url:?}: use unix:// or tcp://"),
        ))
    }
}

/// Finds plugin `name` in `dirs`.
pub fn discover(name: &str, dirs: &PluginDirs) -> Result<PluginAddr, PluginError> {
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return Err(PluginError::call(name, "discovery", "invalid plugin name"));
    }
    for dir in &dirs.socket_dirs {
        for p in [
            dir.join(format!("{name}.sock")),
            dir.join(name).join(format!("{name}.sock")),
        ] {
            if p.exists() {
                return Ok(PluginAddr::Unix(p));
            }
        }
    }
    for dir in &dirs.spec_dirs {
        let spec = dir.join(format!("{name}.spec"));
        if let Ok(text) = std::fs::read_to_string(&spec) {
            return parse_url(name, &text);
        }
        let json = dir.join(format!("{name}.json"));
        if let Ok(text) = std::fs::read_to_string(&json) {
            #[derive(Deserialize)]
            struct Spec {
                #[serde(rename = "Addr")]
                addr: String,
            }
            let spec: Spec = serde_json::from_str(&text).map_err(|e| {
                PluginError::call(name, "discovery", format!("{}: {e}", json.display()))
            })?;
            return parse_url(name, &spec.addr);
        }
    }
    let all: Vec<String> = dirs
        .socket_dirs
        .iter()
        .chain(&dirs.spec_dirs)
        .map(|d| d.display().to_string())
        .collect();
    Err(PluginError::NotFound {
        name: name.to_string(),
        searched: dirs.searched(name),
        dirs: all.join(", "),
    })
}

/// How long a plugin is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// How long connecting is tried again (dockerd: 30 s).
    pub retry: Duration,
    /// How long a sent request's answer may take.
    pub answer: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            retry: Duration::from_secs(30),
            answer: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// Both timeouts `d` (tests: a second or two).
    pub fn both(d: Duration) -> Self {
        Self {
            retry: d,
            answer: d,
        }
    }
}

/// The largest response accepted from a plugin.
const MAX_RESPONSE: usize = 16 << 20;

/// The media type of Docker's plugin protocol: the content type of its requests and answers.
pub const MEDIA_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

async fn roundtrip<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    req: &[u8],
) -> std::io::Result<Vec<u8>> {
    s.write_all(req).await?;
    s.flush().await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_RESPONSE {
            return Err(std::io::Error::other("response too large"));
        }
        if response_complete(&buf) {
            break;
        }
    }
    Ok(buf)
}

fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Whether a response with a Content-Length has fully arrived (others are read to EOF).
fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = header_end(buf) else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    match header_value(&head, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(len) => buf.len() >= end + len,
        None => false,
    }
}

/// Splits a raw response into status and decoded body.
fn parse_response(buf: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = header_end(buf).ok_or("incomplete HTTP response")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("malformed status line in {:?}", head.lines().next()))?;
    let rest = &buf[end..];
    let body = if header_value(&head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            // Every offset comes from the plugin's sizes: checked, never indexed blindly.
            let tail = rest.get(pos..).ok_or("truncated chunk")?;
            let line_end = tail
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or("truncated chunk header")?;
            let size_text = String::from_utf8_lossy(&tail[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            pos += line_end + 2;
            if size == 0 {
                break;
            }
            let end = pos
                .checked_add(size)
                .ok_or_else(|| format!("bad chunk size {size_text:?}"))?;
            let chunk = rest.get(pos..end).ok_or("truncated chunk")?;
            out.extend_from_slice(chunk);
            pos = end.saturating_add(2);
        }
        out
    } else if let Some(len) =
        header_value(&head, "content-length").and_then(|v| v.parse::<usize>().ok())
    {
        rest.get(..len).ok_or("truncated body")?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

/// The protocol's `Err` in an answer's body, read as dockerd's decoder reads it (the last of
/// repeated keys counts): `Ok(Some(message))` for the plugin's failure, `Ok(None)` when it is
/// missing, null or empty (or the body is no JSON object), `Err(kind)` when it is a JSON
/// value of another kind than a string.
fn answer_err(body: &[u8]) -> Result<Option<String>, &'static str> {
    let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_slice(body) else {
        return Ok(None);
    };
    match fields.remove("Err") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s).filter(|s| !s.is_empty())),
        Some(serde_json::Value::Bool(_)) => Err("a boolean"),
        Some(serde_json::Value::Number(_)) => Err("a number"),
        Some(serde_json::Value::Array(_)) => Err("an array"),
        Some(serde_json::Value::Object(_)) => Err("an object"),
    }
}

/// Reads a plugin's raw HTTP answer to `op` (everything it sent, headers included): the
/// status, the body (sized or chunked), the protocol's `Err` field, then the body as `R`,
/// a type mismatch named by its field's path. No I/O: the plugin's bytes are untrusted, and
/// the fuzz target `api_json` feeds this.
pub fn read_answer<R: DeserializeOwned>(
    plugin: &str,
    op: &str,
    raw: &[u8],
) -> Result<R, PluginError> {
    let (status, body) = parse_response(raw).map_err(|e| PluginError::call(plugin, op, e))?;
    let err = answer_err(&body);
    if let Ok(Some(message)) = err {
        return Err(PluginError::call(plugin, op, message));
    }
    if status == 404 {
        return Err(PluginError::NotImplemented {
            plugin: plugin.to_string(),
            op: op.to_string(),
        });
    }
    if status != 200 {
        return Err(PluginError::call(
            plugin,
            op,
            format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()),
        ));
    }
    if let Err(kind) = err {
        // dockerd's answer types carry `Err` as a string: another value fails the call.
        return Err(PluginError::malformed(
            plugin,
            op,
            "Err",
            format!("{kind}, not a string"),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        PluginError::malformed(plugin, op, field, e.into_inner().to_string())
    })
}

/// A connection to one plugin: where it is, how it was found, how long it is waited for.
#[derive(Debug)]
pub struct PluginClient {
    name: String,
    /// Where it was found; looked up again when connecting fails.
    dirs: Option<PluginDirs>,
    addr: Mutex<PluginAddr>,
    timeouts: Timeouts,
}

impl PluginClient {
    /// A client of the plugin at `addr` (not looked up again when it stops answering).
    pub fn with_addr(name: &str, addr: PluginAddr, timeouts: Timeouts) -> Self {
        Self {
            name: name.to_string(),
            dirs: None,
            addr: Mutex::new(addr),
            timeouts,
        }
    }

    /// Finds plugin `name` in `dirs`, posts `/Plugin.Activate` (connecting as long as
    /// `timeouts.retry` allows) and checks that it implements `api`. Returns the client and
    /// everything the plugin implements.
    pub async fn activate(
        name: &str,
        dirs: &PluginDirs,
        api: &str,
        timeouts: Timeouts,
    ) -> Result<(Self, Vec<String>), PluginError> {
        let addr = discover(name, dirs)?;
        let mut client = Self::with_addr(name, addr, timeouts);
        client.dirs = Some(dirs.clone());
        let implements = client.activate_as(api).await?;
        Ok((client, implements))
    }

    /// Posts `/Plugin.Activate` and checks that the plugin implements `api`.
    pub async fn activate_as(&self, api: &str) -> Result<Vec<String>, PluginError> {
        #[derive(Deserialize)]
        struct Activate {
            #[serde(rename = "Implements", default)]
            implements: Vec<String>,
        }
        let op = "/Plugin.Activate";
        let a: Activate = self.call(op, &serde_json::json!({})).await?;
        if !a.implements.iter().any(|i| i == api) {
            return Err(PluginError::malformed(
                &self.name,
                op,
                "Implements",
                format!("the plugin implements {:?}, not {api}", a.implements),
            ));
        }
        debug!(plugin = %self.name, implements = ?a.implements, "plugin activated");
        Ok(a.implements)
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the plugin was last found.
    pub fn addr(&self) -> PluginAddr {
        match self.addr.lock() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// How long the plugin is waited for.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn set_addr(&self, addr: PluginAddr) {
        match self.addr.lock() {
            Ok(mut a) => *a = addr,
            Err(poisoned) => *poisoned.into_inner() = addr,
        }
    }

    /// Posts `body` as JSON to `op` and reads the answer as `R`.
    pub async fn call<Q: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        op: &str,
        body: &Q,
    ) -> Result<R, PluginError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| PluginError::call(&self.name, op, format!("encoding the request: {e}")))?;
        let raw = self.post(op, &body).await?;
        read_answer(&self.name, op, &raw)
    }

    /// Connects, trying again for `timeouts.retry`, then sends once and waits for the answer.
    async fn post(&self, op: &str, body: &[u8]) -> Result<Vec<u8>, PluginError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(50);
        loop {
            let addr = self.addr();
            let host = match &addr {
                PluginAddr::Unix(_) => "plugin".to_string(),
                PluginAddr::Tcp(hp) => hp.clone(),
            };
            let mut req = format!(
                "POST {op} HTTP/1.1\r\nHost: {host}\r\nAccept: {MEDIA_TYPE}\r\n\
                 Content-Type: {MEDIA_TYPE}\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            req.extend_from_slice(body);
            let connected = match &addr {
                PluginAddr::Unix(p) => tokio::net::UnixStream::connect(p).await.map(Stream::Unix),
                PluginAddr::Tcp(hp) => tokio::net::TcpStream::connect(hp).await.map(Stream::Tcp),
            };
            let conn_err = match connected {
                Ok(stream) => {
                    let io = async {
                        match stream {
                            Stream::Unix(s) => roundtrip(s, &req).await,
                            Stream::Tcp(s) => roundtrip(s, &req).await,
                        }
                    };
                    return tokio::time::timeout(self.timeouts.answer, io)
                        .await
                        .map_err(|_| {
                            PluginError::call(
                                &self.name,
                                op,
                                format!("no answer within {:?}", self.timeouts.answer),
                            )
                        })?
                        .map_err(|e| PluginError::call(&self.name, op, e.to_string()));
                }
                Err(e) => e,
            };
            let waited = start.elapsed();
            if waited >= self.timeouts.retry {
                warn!(plugin = %self.name, op, %addr, error = %conn_err, "plugin not responding");
                return Err(PluginError::NotResponding {
                    name: self.name.clone(),
                    op: op.to_string(),
                    addr: addr.to_string(),
                    message: format!("{conn_err}; tried for {} ms", waited.as_millis()),
                    searched: self
                        .dirs
                        .as_ref()
                        .map(|d| d.searched(&self.name))
                        .unwrap_or_else(|| addr.to_string()),
                });
            }
            debug!(plugin = %self.name, op, %addr, error = %conn_err, "cannot connect to the plugin; trying again");
            tokio::time::sleep(delay.min(self.timeouts.retry.saturating_sub(waited))).await;
            delay = (delay * 2).min(Duration::from_secs(1));
            // It may have come back elsewhere (a new spec file, a moved socket).
            if let Some(dirs) = &self.dirs {
                if let Ok(found) = discover(&self.name, dirs) {
                    self.set_addr(found);
                }
            }
        }
    }
}

enum Stream {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(r).unwrap(), (200, b"{}".to_vec()));
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(r).unwrap(), (200, b"{\"a\":1}".to_vec()));
        assert!(response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
        ));
        assert!(!response_complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}"
        ));
        assert!(parse_response(b"garbage").is_err());
    }

    /// Found by the fuzz target api_json: a chunk that ends the data without its CRLF put
    /// the next chunk header past the end, and slicing there panicked. A size near
    /// `usize::MAX` overflowed the chunk's end the same way.
    #[test]
    fn chunked_bodies_that_lie_are_errors() {
        let cut = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nf\r\n{\x1fJ\\uo\"19.0.0}}";
        assert_eq!(parse_response(cut), Err("truncated chunk".to_string()));
        let huge = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nab";
        assert!(parse_response(huge).is_err());
        let no_end = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab";
        assert_eq!(parse_response(no_end), Err("truncated chunk".to_string()));
    }

    #[test]
    fn answers_read_err_status_and_body() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"Address\":\"x\"}";
        let v: serde_json::Value = read_answer("p", "/Op", ok).unwrap();
        assert_eq!(v["Address"], "x");
        let refused = b"HTTP/1.1 200 OK\r\n\r\n{\"Err\":\"no pool\"}";
        let e = read_answer::<serde_json::Value>("p", "/Op", refused).unwrap_err();
        assert!(e.to_string().contains("no pool"), "{e}");
        let status = b"HTTP/1.1 500 Oops\r\n\r\nboom";
        let e = read_answer::<serde_json::Value>("p", "/Op", status).unwrap_err();
        assert!(e.to_string().contains("HTTP 500: boom"), "{e}");
        let missing = b"HTTP/1.1 404 Not Found\r\n\r\n404 page not found";
        let e = read_answer::<serde_json::Value>("p", "/Op", missing).unwrap_err();
        assert!(matches!(e, PluginError::NotImplemented { .. }), "{e}");
        let bad = b"HTTP/1.1 200 OK\r\n\r\n{";
        let e = read_answer::<serde_json::Value>("p", "/Op", bad).unwrap_err();
        assert!(e.to_string().contains("malformed answer"), "{e}");
    }

    #[test]
    fn an_err_that_is_no_string_or_repeated_still_fails_the_call() {
        // Read as dockerd does: the last of repeated keys counts, and an Err that is not a
        // string fails the call. Both used to pass as a success (fuzz: plugin_answer).
        let repeated = b"HTTP/1.1 200 OK\r\n\r\n{\"Err\":\"a\",\"Err\":\"b\"}";
        let e = read_answer::<serde_json::Value>("p", "/Op", repeated).unwrap_err();
        assert_eq!(e, PluginError::call("p", "/Op", "b"));
        let cleared = b"HTTP/1.1 200 OK\r\n\r\n{\"Err\":\"a\",\"Err\":\"\"}";
        assert!(read_answer::<serde_json::Value>("p", "/Op", cleared).is_ok());
        for (body, kind) in [
            (&b"{\"Err\":5}"[..], "a number"),
            (b"{\"Err\":true}", "a boolean"),
            (b"{\"Err\":[\"x\"]}", "an array"),
            (
                b"{\"Err\":{\"Message\":\"x\"},\"Pool\":\"10.0.0.0/8\"}",
                "an object",
            ),
        ] {
            let mut raw = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
            raw.extend_from_slice(body);
            let e = read_answer::<serde_json::Value>("p", "/Op", &raw).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("plugin \"p\": /Op: malformed answer: field Err: {kind}, not a string")
            );
        }
        let null = b"HTTP/1.1 200 OK\r\n\r\n{\"Err\":null,\"Pool\":\"x\"}";
        assert!(read_answer::<serde_json::Value>("p", "/Op", null).is_ok());
        // Another status says what it says, whatever the Err.
        let status = b"HTTP/1.1 404 Not Found\r\n\r\n{\"Err\":7}";
        let e = read_answer::<serde_json::Value>("p", "/Op", status).unwrap_err();
        assert!(matches!(e, PluginError::NotImplemented { .. }), "{e}");
    }

    #[test]
    fn a_wrong_type_is_named_by_its_path() {
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Name {
            #[serde(rename = "SrcName")]
            src_name: String,
        }
        #[derive(Deserialize, Debug)]
        #[allow(dead_code)]
        struct Reply {
            #[serde(rename = "InterfaceName")]
            interface_name: Name,
        }
        let raw = b"HTTP/1.1 200 OK\r\n\r\n{\"InterfaceName\":{\"SrcName\":7}}";
        let e = read_answer::<Reply>("p", "/NetworkDriver.Join", raw).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("plugin \"p\": /NetworkDriver.Join: malformed answer: field InterfaceName.SrcName: invalid type"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_plugin_that_is_not_there_is_waited_for_then_named() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = PluginDirs::single(dir.path());
        let e = PluginClient::activate("gone", &dirs, "IpamDriver", Timeouts::default())
            .await
            .unwrap_err();
        assert!(matches!(e, PluginError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("gone.sock"), "{e}");
        // A socket file nobody listens on: connecting is tried for the retry window.
        let sock = dir.path().join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        let start = Instant::now();
        let e = PluginClient::activate(
            "dead",
            &dirs,
            "IpamDriver",
            Timeouts::both(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(
            e.to_string()
                .starts_with("plugin \"dead\" is not responding: /Plugin.Activate"),
            "{e}"
        );
    }
}
