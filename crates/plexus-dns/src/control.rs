//! The resolver's control channel: newline-delimited JSON over a unix socket, one request
//! and one response at a time. The daemon sends a full [`Snapshot`] when it (re)connects,
//! then each change as it commits it; the resolver acknowledges only once the change is
//! served (a new sandbox's listener open and its redirect installed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::Mutex;

use crate::error::DnsError;
use crate::zone::{EndpointInfo, NetworkInfo, SandboxInfo, ServiceInfo, Snapshot};

/// The longest one request may take (opening listeners in namespaces included).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a request line may be (a snapshot of thousands of sandboxes fits).
pub const MAX_LINE: usize = 64 << 20;

/// The control protocol's version, which a resolver reports in its [`Stats`]. Raised
/// whenever a request or a field changes so that an older resolver would refuse or misread
/// it; plexusd replaces a running resolver that speaks another (services: 2).
pub const PROTOCOL: u32 = 2;

/// One change, or a question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Replace everything with this (after a restart of either side).
    Sync {
        /// The whole state.
        snapshot: Snapshot,
    },
    /// Several changes, applied in order and acknowledged together.
    Batch {
        /// The changes.
        ops: Vec<Request>,
    },
    /// Add or change a network.
    UpsertNetwork {
        /// The network.
        network: NetworkInfo,
    },
    /// Remove a network and its endpoints.
    RemoveNetwork {
        /// Its id.
        id: String,
    },
    /// Add or change a sandbox (its listener is opened if new).
    UpsertSandbox {
        /// The sandbox.
        sandbox: SandboxInfo,
    },
    /// Remove a sandbox, its endpoints and its listener.
    RemoveSandbox {
        /// Its id.
        id: String,
    },
    /// Add or change an endpoint.
    UpsertEndpoint {
        /// The endpoint.
        endpoint: EndpointInfo,
    },
    /// Remove an endpoint.
    RemoveEndpoint {
        /// Its id.
        id: String,
    },
    /// Add or change a service (its names on its networks).
    UpsertService {
        /// The service.
        service: ServiceInfo,
    },
    /// Remove a service's names.
    RemoveService {
        /// Its id.
        id: String,
    },
    /// The resolver's counters.
    Stats,
    /// The resolver's whole state, as a snapshot (for checks and tests).
    Dump,
}

/// Counters of the resolver, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Queries received over UDP.
    pub queries_udp: u64,
    /// Queries received over TCP.
    pub queries_tcp: u64,
    /// Local answers with records.
    pub answers_local: u64,
    /// Local answers without records (the name exists, not the type).
    pub answers_nodata: u64,
    /// Error answers given locally (FORMERR, REFUSED, NOTIMP, SERVFAIL, BADVERS).
    pub answers_error: u64,
    /// Queries forwarded (cache misses).
    pub forwarded: u64,
    /// Forwarded names answered from the cache.
    pub cache_hits: u64,
    /// Messages dropped unanswered (no header, responses, unknown sandbox).
    pub dropped: u64,
    /// Forwarding attempts that timed out.
    pub upstream_timeouts: u64,
    /// SERVFAIL/REFUSED answers from upstreams.
    pub upstream_failures: u64,
    /// Queries that no upstream answered in time.
    pub upstream_gave_up: u64,
    /// Queries refused because too many were in flight.
    pub refused_overload: u64,
    /// Sandboxes served.
    pub sandboxes: u64,
    /// The resolver process's id.
    pub pid: u32,
    /// The [`PROTOCOL`] the resolver speaks (0: a resolver from before it was reported).
    #[serde(default)]
    pub protocol: u32,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// What failed, if anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For [`Request::Stats`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    /// For [`Request::Dump`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
}

/// The daemon's end of the control channel. One request at a time; a broken connection is
/// dropped and the next call connects again (the caller then sends a [`Request::Sync`]).
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    conn: Mutex<Option<BufReader<UnixStream>>>,
}

impl Client {
    /// A client of the resolver listening on `path` (not connected yet).
    pub fn new(path: &Path) -> Self {
        Client {
            path: path.to_path_buf(),
            conn: Mutex::new(None),
        }
    }

    /// The control socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a resolver answers on the socket now.
    pub async fn is_running(&self) -> bool {
        self.call(&Request::Stats).await.is_ok()
    }

    /// Sends `req` and waits for its response; an error response is [`DnsError::Refused`].
    pub async fn call(&self, req: &Request) -> Result<Response, DnsError> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let stream = UnixStream::connect(&self.path)
                .await
                .map_err(|_| DnsError::NotRunning(self.path.clone()))?;
            *guard = Some(BufReader::new(stream));
        }
        let result = match guard.as_mut() {
            Some(conn) => tokio::time::timeout(CALL_TIMEOUT, exchange(conn, req))
                .await
                .unwrap_or_else(|_| {
                    Err(DnsError::io(
                        "resolver control",
                        std::io::Error::from(std::io::ErrorKind::TimedOut),
                    ))
                }),
            None => Err(DnsError::NotRunning(self.path.clone())),
        };
        match result {
            Ok(resp) => match resp.error {
                Some(e) => Err(DnsError::Refused(e)),
                None => Ok(resp),
            },
            Err(e) => {
                *guard = None;
                Err(e)
            }
        }
    }
}

async fn exchange(conn: &mut BufReader<UnixStream>, req: &Request) -> Result<Response, DnsError> {
    let mut line =
        serde_json::to_vec(req).map_err(|e| DnsError::Protocol(format!("encoding: {e}")))?;
    line.push(b'\n');
    conn.get_mut()
        .write_all(&line)
        .await
        .map_err(|e| DnsError::io("writing to the resolver", e))?;
    let mut buf = String::new();
    let n = conn
        .read_line(&mut buf)
        .await
        .map_err(|e| DnsError::io("reading from the resolver", e))?;
    if n == 0 {
        return Err(DnsError::io(
            "reading from the resolver",
            std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        ));
    }
    serde_json::from_str(&buf).map_err(|e| DnsError::Protocol(format!("response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json() {
        let r = Request::Batch {
            ops: vec![Request::RemoveSandbox { id: "a".into() }, Request::Stats],
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains("\"op\":\"batch\""), "{s}");
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert!(serde_json::from_str::<Request>("{\"op\":\"nope\"}").is_err());
    }

    #[test]
    fn service_requests_round_trip() {
        use crate::zone::{ServiceInfo, ServiceMode, ServiceNetwork, ServiceRef};
        let service = ServiceInfo {
            id: "s1".into(),
            name: "websvc".into(),
            mode: ServiceMode::Dnsrr,
            networks: vec![ServiceNetwork {
                network_id: "n1".into(),
                vips: vec!["10.0.0.100".parse().unwrap(), "fd00::64".parse().unwrap()],
            }],
        };
        let endpoint = EndpointInfo {
            id: "e1".into(),
            network_id: "n1".into(),
            sandbox_id: "t1".into(),
            names: vec!["t1".into()],
            addrs: vec!["10.0.0.3".parse().unwrap()],
            order: 0,
            host: None,
            service: Some(ServiceRef {
                id: "s1".into(),
                name: "websvc".into(),
            }),
        };
        let r = Request::Batch {
            ops: vec![
                Request::UpsertService {
                    service: service.clone(),
                },
                Request::UpsertEndpoint { endpoint },
                Request::RemoveService { id: "s1".into() },
                Request::Sync {
                    snapshot: Snapshot {
                        services: vec![service],
                        ..Snapshot::default()
                    },
                },
            ],
        };
        let s = serde_json::to_string(&r).unwrap();
        for part in [
            "\"op\":\"upsert_service\"",
            "\"op\":\"remove_service\"",
            "\"mode\":\"dnsrr\"",
        ] {
            assert!(s.contains(part), "{part} in {s}");
        }
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
    }
}
