//! The messages between members and openraft's network (the sending side of Raft).

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::transport::{encode_frame, read_frame, write_frame, BoxConn, RaftTransport};
use crate::types::{Applied, Command, Peer, TypeConfig};

/// The bytes of entries one append request carries, unless one entry alone is larger.
const MAX_APPEND_BYTES: usize = 1 << 20;

/// A request from one member to another.
#[derive(Serialize, Deserialize)]
pub(crate) enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<u64>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// A client write forwarded to the leader.
    Write(Command),
    /// A follower asks the leader for a read index (the leader confirms it still leads).
    ReadIndex,
    /// A member tells the leader where it listens now.
    Announce {
        id: u64,
        addr: String,
    },
    /// A membership change asked of any member, done by the leader.
    Admin(Admin),
}

/// A membership change, forwarded to the leader like a write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Admin {
    AddLearner {
        id: u64,
        addr: String,
    },
    ChangeMembership {
        voters: std::collections::BTreeSet<u64>,
        retain: bool,
    },
    RemoveNodes {
        ids: std::collections::BTreeSet<u64>,
    },
}

/// The answer to a [`Request`], variant for variant.
#[derive(Serialize, Deserialize)]
pub(crate) enum Response {
    Append(Result<AppendEntriesResponse<u64>, RaftError<u64>>),
    Vote(Result<VoteResponse<u64>, RaftError<u64>>),
    Snapshot(Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>),
    Write(Result<Applied, Redirect>),
    ReadIndex(Result<u64, Redirect>),
    Announced(Result<(), Redirect>),
    Admin(Result<(), Redirect>),
}

/// Why a member did not serve a client request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Redirect {
    /// It is not the leader; here is the one it knows, if any. Nothing was proposed.
    NotLeader {
        id: Option<u64>,
        addr: Option<String>,
    },
    /// Proposed or attempted, and failed: the outcome is unknown to the caller.
    Failed(String),
}

/// One request over a connection: write the frame, read the answer.
async fn exchange(conn: &mut BoxConn, body: &[u8]) -> io::Result<Response> {
    write_frame(conn, body).await?;
    read_frame(conn).await
}

/// How a forwarded call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// No connection: the request was never sent.
    Connect(io::Error),
    /// Sent, then the connection failed: it may have been served.
    Lost(io::Error),
}

/// Connections to members for forwarded client requests, reused between calls.
#[derive(Clone)]
pub(crate) struct Pool {
    transport: Arc<dyn RaftTransport>,
    idle: Arc<Mutex<HashMap<String, Vec<BoxConn>>>>,
}

impl Pool {
    pub(crate) fn new(transport: Arc<dyn RaftTransport>) -> Self {
        Self {
            transport,
            idle: Arc::default(),
        }
    }

    pub(crate) async fn call(&self, addr: &str, req: &Request) -> Result<Response, CallError> {
        let body = encode_frame(req).map_err(CallError::Connect)?;
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(addr)
            .and_then(Vec::pop);
        let mut conn = match idle {
            Some(mut c) => {
                // An idle connection may have been closed by the peer: a failure on it is
                // retried once on a fresh one only if nothing was answered.
                match exchange(&mut c, &body).await {
                    Ok(r) => {
                        self.put_back(addr, c);
                        return Ok(r);
                    }
                    Err(e) if is_stale(&e) && !matches!(req, Request::Write(_)) => {}
                    Err(e) => return Err(CallError::Lost(e)),
                }
                self.transport
                    .connect(addr)
                    .await
                    .map_err(CallError::Connect)?
            }
            None => self
                .transport
                .connect(addr)
                .await
                .map_err(CallError::Connect)?,
        };
        let r = exchange(&mut conn, &body).await.map_err(CallError::Lost)?;
        self.put_back(addr, conn);
        Ok(r)
    }

    fn put_back(&self, addr: &str, conn: BoxConn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(addr.to_string()).or_default();
        if list.len() < 8 {
            list.push(conn);
        }
    }
}

fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

/// Makes openraft's per-peer clients.
pub(crate) struct Network {
    pub transport: Arc<dyn RaftTransport>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &Peer) -> PeerClient {
        PeerClient {
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
            conn: None,
        }
    }
}

/// openraft's client of one peer: one connection, one request at a time.
pub(crate) struct PeerClient {
    transport: Arc<dyn RaftTransport>,
    target: u64,
    addr: String,
    conn: Option<BoxConn>,
}

type RpcErr<E = openraft::error::Infallible> = RPCError<u64, Peer, RaftError<u64, E>>;

impl PeerClient {
    async fn call<E: std::error::Error>(
        &mut self,
        body: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Response, RpcErr<E>> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let connect = self.transport.connect(&self.addr);
                match tokio::time::timeout(option.hard_ttl(), connect).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => return Err(RPCError::Unreachable(Unreachable::new(&e))),
                    Err(_) => {
                        let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                        return Err(RPCError::Unreachable(Unreachable::new(&e)));
                    }
                }
            }
        };
        let mut conn = conn;
        match tokio::time::timeout(option.hard_ttl(), exchange(&mut conn, &body)).await {
            Ok(Ok(r)) => {
                self.conn = Some(conn);
                Ok(r)
            }
            Ok(Err(e)) => Err(RPCError::Network(NetworkError::new(&e))),
            Err(_) => {
                let e = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("peer {} at {} did not answer", self.target, self.addr),
                );
                Err(RPCError::Network(NetworkError::new(&e)))
            }
        }
    }

    fn unexpected<E: std::error::Error>(&self) -> RpcErr<E> {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "peer {} at {} answered another request",
                self.target, self.addr
            ),
        );
        RPCError::Network(NetworkError::new(&e))
    }

    fn remote<E: std::error::Error>(&self, e: RaftError<u64, E>) -> RpcErr<E> {
        RPCError::RemoteError(RemoteError::new(self.target, e))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RpcErr> {
        let n = rpc.entries.len();
        let body = match encode_frame(&Request::Append(rpc)) {
            // openraft gives an append one heartbeat interval: a batch is kept small
            // enough to be sent, written and fsynced by the follower in that time.
            Ok(b) if b.len() > MAX_APPEND_BYTES && n > 1 => {
                let hint = u64::try_from(n / 2).unwrap_or(1);
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(hint),
                ));
            }
            Ok(b) => b,
            // Too big for one frame: openraft retries with fewer entries.
            Err(e) if n > 1 && e.kind() == io::ErrorKind::InvalidInput => {
                let hint = u64::try_from(n / 2).unwrap_or(1);
                return Err(RPCError::PayloadTooLarge(
                    PayloadTooLarge::new_entries_hint(hint),
                ));
            }
            Err(e) => return Err(RPCError::Network(NetworkError::new(&e))),
        };
        match self.call(body, &option).await? {
            Response::Append(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RpcErr<InstallSnapshotError>> {
        let body = encode_frame(&Request::Snapshot(rpc))
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        match self.call(body, &option).await? {
            Response::Snapshot(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RpcErr> {
        let body = encode_frame(&Request::Vote(rpc))
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        match self.call(body, &option).await? {
            Response::Vote(r) => r.map_err(|e| self.remote(e)),
            _ => Err(self.unexpected()),
        }
    }
}
