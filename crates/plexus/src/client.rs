//! A small HTTP/1 client over the daemon's unix socket: one connection per request.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// The daemon, by socket path.
pub struct Client {
    host: String,
    socket: PathBuf,
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
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes)> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .with_context(|| {
                format!(
                    "Cannot connect to the Plexus daemon at {}. Is plexusd running?",
                    self.host
                )
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the daemon")?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let bytes = match &body {
            Some(v) => Bytes::from(serde_json::to_vec(v)?),
            None => Bytes::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(format!("/v{}{path}", plexus_api_types::API_VERSION))
            .header("host", "plexus")
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .context("building the request")?;
        let response = sender
            .send_request(request)
            .await
            .context("sending the request to the daemon")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("reading the daemon's answer")?
            .to_bytes();
        driver.abort();
        if status.is_client_error() || status.is_server_error() {
            let message = serde_json::from_slice::<plexus_api_types::ErrorResponse>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
            return Err(DaemonError(message).into());
        }
        Ok((status, body))
    }

    /// A GET decoded as JSON.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        let (_, body) = self.call(Method::GET, path, None).await?;
        serde_json::from_slice(&body).with_context(|| format!("decoding the answer to GET {path}"))
    }

    /// A POST of `body`, answer decoded as JSON (or `null` when empty).
    pub async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T> {
        let (_, bytes) = self.call(Method::POST, path, Some(body)).await?;
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes)
            .with_context(|| format!("decoding the answer to POST {path}"))
    }

    /// A DELETE.
    pub async fn delete(&self, path: &str) -> Result<()> {
        let (status, _) = self.call(Method::DELETE, path, None).await?;
        if !status.is_success() {
            bail!("unexpected status {status} from DELETE {path}");
        }
        Ok(())
    }
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
