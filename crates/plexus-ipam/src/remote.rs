//! A client of Docker's remote IPAM plugin protocol: JSON over HTTP/1.1 on a unix socket (or
//! plain TCP), found by Docker's plugin discovery.
//!
//! Discovery looks, in order, for `NAME.sock` or `NAME/NAME.sock` in the socket directories
//! (`/run/docker/plugins`), then for `NAME.spec` (a URL: `unix:///path` or `tcp://host:port`)
//! and `NAME.json` (`{"Name": …, "Addr": …}`) in the spec directories (`/etc/docker/plugins`,
//! `/usr/lib/docker/plugins`). `/Plugin.Activate` must list `IpamDriver`.
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> plexus_ipam::Result<()> {
//! use plexus_ipam::remote::{PluginDirs, RemoteIpam};
//! use plexus_ipam::{Ipam, PoolRequest};
//! let ipam = RemoteIpam::connect("dhcp", &PluginDirs::default()).await?;
//! let pool = ipam.request_pool(PoolRequest::new("", "net1").subnet("192.168.1.0/24")).await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use crate::api::{
    parse_cidr, parse_ip, AddressRequest, AddressResponse, AddressSpaces, Capabilities,
    GatewayRequest, Ipam, PoolRequest, PoolResponse, DATA_GATEWAY, OPT_MAC_ADDRESS,
    OPT_REQUEST_ADDRESS_TYPE, REQUEST_TYPE_GATEWAY,
};
use crate::error::{IpamError, Result};

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
}

/// Where a plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginAddr {
    /// A unix socket.
    Unix(PathBuf),
    /// A TCP `host:port` (plain; TLS is not supported).
    Tcp(String),
}

fn plugin_err(plugin: &str, op: &str, message: impl Into<String>) -> IpamError {
    IpamError::Plugin {
        plugin: plugin.to_string(),
        op: op.to_string(),
        message: message.into(),
    }
}

fn parse_url(name: &str, url: &str) -> Result<PluginAddr> {
    let url = url.trim();
    if let Some(path) = url.strip_prefix("unix://") {
        Ok(PluginAddr::Unix(PathBuf::from(path)))
    } else if let Some(hp) = url
        .strip_prefix("tcp://")
        .or_else(|| url.strip_prefix("http://"))
    {
        Ok(PluginAddr::Tcp(hp.trim_end_matches('/').to_string()))
    } else {
        Err(plugin_err(
            name,
            "discovery",
            format!("unsupported plugin address {url:?}: use unix:// or tcp://"),
        ))
    }
}

/// Finds plugin `name` in `dirs`.
pub fn discover(name: &str, dirs: &PluginDirs) -> Result<PluginAddr> {
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return Err(plugin_err(name, "discovery", "invalid plugin name"));
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
            let spec: Spec = serde_json::from_str(&text)
                .map_err(|e| plugin_err(name, "discovery", format!("{}: {e}", json.display())))?;
            return parse_url(name, &spec.addr);
        }
    }
    let all: Vec<String> = dirs
        .socket_dirs
        .iter()
        .chain(&dirs.spec_dirs)
        .map(|d| d.display().to_string())
        .collect();
    Err(IpamError::PluginNotFound {
        name: name.to_string(),
        dirs: all.join(", "),
    })
}

/// The largest response accepted from a plugin.
const MAX_RESPONSE: usize = 16 << 20;

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
fn parse_response(buf: &[u8]) -> std::result::Result<(u16, Vec<u8>), String> {
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

/// Reads a plugin's raw HTTP answer to `op` (everything it sent, headers included): the
/// status, the body (sized or chunked), the protocol's `Err` field, then the body as `R`.
/// No I/O: the plugin's bytes are untrusted, and the fuzz target `api_json` feeds this.
pub fn read_answer<R: DeserializeOwned>(plugin: &str, op: &str, raw: &[u8]) -> Result<R> {
    let (status, body) = parse_response(raw).map_err(|e| plugin_err(plugin, op, e))?;
    let err: ErrOnly = serde_json::from_slice(&body).unwrap_or_default();
    if !err.err.is_empty() {
        return Err(plugin_err(plugin, op, err.err));
    }
    if status != 200 {
        return Err(plugin_err(
            plugin,
            op,
            format!("HTTP {status}: {}", String::from_utf8_lossy(&body).trim()),
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| plugin_err(plugin, op, format!("malformed answer: {e}")))
}

#[derive(Deserialize, Default)]
struct ErrOnly {
    #[serde(rename = "Err", default)]
    err: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RequestPoolWire<'a> {
    address_space: &'a str,
    pool: &'a str,
    sub_pool: &'a str,
    options: &'a BTreeMap<String, String>,
    #[serde(rename = "V6")]
    v6: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestPoolReply {
    #[serde(rename = "PoolID")]
    pool_id: String,
    pool: String,
    #[serde(default)]
    data: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RequestAddressWire<'a> {
    #[serde(rename = "PoolID")]
    pool_id: &'a str,
    address: &'a str,
    options: &'a BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestAddressReply {
    address: String,
    #[serde(default)]
    data: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReleaseAddressWire<'a> {
    #[serde(rename = "PoolID")]
    pool_id: &'a str,
    address: String,
}

#[derive(Serialize)]
struct ReleasePoolWire<'a> {
    #[serde(rename = "PoolID")]
    pool_id: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CapabilitiesReply {
    #[serde(rename = "RequiresMACAddress", default)]
    requires_mac_address: bool,
    #[serde(default)]
    requires_request_replay: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SpacesReply {
    local_default_address_space: String,
    global_default_address_space: String,
}

/// A remote IPAM driver.
#[derive(Debug, Clone)]
pub struct RemoteIpam {
    name: String,
    addr: PluginAddr,
    timeout: Duration,
    capabilities: Capabilities,
}

impl RemoteIpam {
    /// Discovers plugin `name`, activates it and reads its capabilities.
    pub async fn connect(name: &str, dirs: &PluginDirs) -> Result<Self> {
        let addr = discover(name, dirs)?;
        Self::with_addr(name, addr, Duration::from_secs(30)).await
    }

    /// Activates the plugin at `addr` and reads its capabilities; every call is bounded by
    /// `timeout`.
    pub async fn with_addr(name: &str, addr: PluginAddr, timeout: Duration) -> Result<Self> {
        let mut this = Self {
            name: name.to_string(),
            addr,
            timeout,
            capabilities: Capabilities::default(),
        };
        #[derive(Deserialize)]
        struct Activate {
            #[serde(rename = "Implements", default)]
            implements: Vec<String>,
        }
        let a: Activate = this
            .call("/Plugin.Activate", &serde_json::json!({}))
            .await?;
        if !a.implements.iter().any(|i| i == "IpamDriver") {
            return Err(plugin_err(
                name,
                "/Plugin.Activate",
                format!("the plugin implements {:?}, not IpamDriver", a.implements),
            ));
        }
        let c: CapabilitiesReply = this
            .call("/IpamDriver.GetCapabilities", &serde_json::json!({}))
            .await?;
        this.capabilities = Capabilities {
            requires_mac_address: c.requires_mac_address,
            requires_request_replay: c.requires_request_replay,
        };
        debug!(plugin = name, ?this.capabilities, "IPAM plugin activated");
        Ok(this)
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn call<Q: Serialize, R: DeserializeOwned>(&self, op: &str, body: &Q) -> Result<R> {
        let body =
            serde_json::to_vec(body).map_err(|e| plugin_err(&self.name, op, e.to_string()))?;
        let host = match &self.addr {
            PluginAddr::Unix(_) => "plugin".to_string(),
            PluginAddr::Tcp(hp) => hp.clone(),
        };
        let mut req = format!(
            "POST {op} HTTP/1.1\r\nHost: {host}\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\
             Content-Type: application/vnd.docker.plugins.v1.2+json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let io = async {
            match &self.addr {
                PluginAddr::Unix(p) => {
                    roundtrip(tokio::net::UnixStream::connect(p).await?, &req).await
                }
                PluginAddr::Tcp(hp) => {
                    roundtrip(tokio::net::TcpStream::connect(hp).await?, &req).await
                }
            }
        };
        let raw = tokio::time::timeout(self.timeout, io)
            .await
            .map_err(|_| {
                plugin_err(
                    &self.name,
                    op,
                    format!("no answer within {:?}", self.timeout),
                )
            })?
            .map_err(|e| plugin_err(&self.name, op, e.to_string()))?;
        read_answer(&self.name, op, &raw)
    }

    async fn request_address_raw(
        &self,
        pool_id: &str,
        address: &str,
        options: &BTreeMap<String, String>,
    ) -> Result<(IpNet, BTreeMap<String, String>)> {
        let op = "/IpamDriver.RequestAddress";
        let r: RequestAddressReply = self
            .call(
                op,
                &RequestAddressWire {
                    pool_id,
                    address,
                    options,
                },
            )
            .await?;
        let net = r
            .address
            .parse::<IpNet>()
            .map_err(|e| plugin_err(&self.name, op, format!("bad address {:?}: {e}", r.address)))?;
        Ok((net, r.data.unwrap_or_default()))
    }

    /// Undoes a partly made pool (best effort; the error that caused it is what the caller sees).
    async fn undo(&self, pool_id: &str, addresses: &[IpAddr]) {
        for ip in addresses {
            if let Err(e) = self.release_address(pool_id, *ip).await {
                warn!(plugin = %self.name, %ip, error = %e, "could not undo an address");
            }
        }
        if let Err(e) = self.release_pool(pool_id).await {
            warn!(plugin = %self.name, pool_id, error = %e, "could not undo a pool");
        }
    }
}

#[async_trait]
impl Ipam for RemoteIpam {
    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(self.capabilities)
    }

    async fn default_address_spaces(&self) -> Result<AddressSpaces> {
        let r: SpacesReply = self
            .call(
                "/IpamDriver.GetDefaultAddressSpaces",
                &serde_json::json!({}),
            )
            .await?;
        Ok(AddressSpaces {
            local: r.local_default_address_space,
            global: r.global_default_address_space,
        })
    }

    async fn request_pool(&self, request: PoolRequest) -> Result<PoolResponse> {
        // Check what can be checked before asking the plugin.
        let pool = request.pool.clone().unwrap_or_default();
        if !pool.is_empty() {
            parse_cidr("subnet", &pool)?;
        }
        let sub_pool = request.sub_pool.clone().unwrap_or_default();
        if !sub_pool.is_empty() {
            parse_cidr("ip-range", &sub_pool)?;
        }
        let gateway = match &request.gateway {
            GatewayRequest::Given(g) => Some(Some(parse_ip("gateway", g)?)),
            GatewayRequest::Auto => Some(None),
            GatewayRequest::None => None,
        };
        let mut aux = BTreeMap::new();
        for (name, ip) in &request.aux_addresses {
            aux.insert(name.clone(), parse_ip(&format!("aux-address {name}"), ip)?);
        }
        let op = "/IpamDriver.RequestPool";
        let r: RequestPoolReply = self
            .call(
                op,
                &RequestPoolWire {
                    address_space: &request.address_space,
                    pool: &pool,
                    sub_pool: &sub_pool,
                    options: &request.options,
                    v6: request.v6,
                },
            )
            .await?;
        let subnet = match r.pool.parse::<IpNet>() {
            Ok(s) => s,
            Err(e) => {
                self.undo(&r.pool_id, &[]).await;
                return Err(plugin_err(
                    &self.name,
                    op,
                    format!("bad pool {:?}: {e}", r.pool),
                ));
            }
        };
        let data = r.data.unwrap_or_default();
        let mut taken = Vec::new();
        let result: Result<(Option<IpNet>, BTreeMap<String, IpAddr>)> = async {
            let mut gw = None;
            if let Some(g) = data.get(DATA_GATEWAY) {
                gw =
                    Some(g.parse::<IpNet>().map_err(|e| {
                        plugin_err(&self.name, op, format!("bad gateway {g:?}: {e}"))
                    })?);
            } else if let Some(want) = gateway {
                if let Some(ip) = want {
                    if !subnet.contains(&ip) {
                        return Err(IpamError::OutsideSubnet {
                            field: "gateway".into(),
                            value: ip.to_string(),
                            subnet: subnet.to_string(),
                        });
                    }
                }
                let mut opts = BTreeMap::new();
                opts.insert(
                    OPT_REQUEST_ADDRESS_TYPE.to_string(),
                    REQUEST_TYPE_GATEWAY.to_string(),
                );
                let addr = want.map(|ip| ip.to_string()).unwrap_or_default();
                let (net, _) = self.request_address_raw(&r.pool_id, &addr, &opts).await?;
                taken.push(net.addr());
                gw = Some(net);
            }
            let mut out = BTreeMap::new();
            for (name, ip) in &aux {
                if !subnet.contains(ip) {
                    return Err(IpamError::OutsideSubnet {
                        field: format!("aux-address {name}"),
                        value: ip.to_string(),
                        subnet: subnet.to_string(),
                    });
                }
                let (net, _) = self
                    .request_address_raw(&r.pool_id, &ip.to_string(), &BTreeMap::new())
                    .await?;
                taken.push(net.addr());
                out.insert(name.clone(), net.addr());
            }
            Ok((gw, out))
        }
        .await;
        match result {
            Ok((gateway, aux_addresses)) => Ok(PoolResponse {
                pool_id: r.pool_id,
                pool: subnet,
                gateway,
                aux_addresses,
                data,
            }),
            Err(e) => {
                self.undo(&r.pool_id, &taken).await;
                Err(e)
            }
        }
    }

    async fn release_pool(&self, pool_id: &str) -> Result<()> {
        let _: serde_json::Value = self
            .call("/IpamDriver.ReleasePool", &ReleasePoolWire { pool_id })
            .await?;
        Ok(())
    }

    async fn request_address(&self, request: AddressRequest) -> Result<AddressResponse> {
        let mut options = request.options.clone();
        if self.capabilities.requires_mac_address {
            let mac = request
                .mac_address
                .as_deref()
                .ok_or_else(|| IpamError::InvalidOption {
                    key: OPT_MAC_ADDRESS.into(),
                    value: String::new(),
                    reason: format!(
                        "IPAM plugin {:?} requires the endpoint's MAC address",
                        self.name
                    ),
                })?;
            options.insert(OPT_MAC_ADDRESS.to_string(), mac.to_string());
        }
        let address = match request.address.as_deref().filter(|a| !a.trim().is_empty()) {
            Some(a) => parse_ip("ip", a)?.to_string(),
            None => String::new(),
        };
        let (address, data) = self
            .request_address_raw(&request.pool_id, &address, &options)
            .await?;
        Ok(AddressResponse { address, data })
    }

    async fn release_address(&self, pool_id: &str, address: IpAddr) -> Result<()> {
        let _: serde_json::Value = self
            .call(
                "/IpamDriver.ReleaseAddress",
                &ReleaseAddressWire {
                    pool_id,
                    address: address.to_string(),
                },
            )
            .await?;
        Ok(())
    }
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
        let bad = b"HTTP/1.1 200 OK\r\n\r\n{";
        let e = read_answer::<serde_json::Value>("p", "/Op", bad).unwrap_err();
        assert!(e.to_string().contains("malformed answer"), "{e}");
    }
}
