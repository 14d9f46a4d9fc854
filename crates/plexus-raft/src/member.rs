//! The work of a member: writes through the leader, read indexes, serving the other
//! members' requests, and the leader's and the member's background tasks.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState};
use plexus_kv::KvError;

use crate::rpc::{Admin, CallError, Pool, Redirect, Request, Response};
use crate::sm::Shared;
use crate::transport::{read_frame, write_frame, BoxConn, RaftListener};
use crate::types::{Applied, Command, Peer, TypeConfig};

/// How long a membership change may take (a learner catching up on a large state).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(300);

/// What a node's tasks and stores share.
pub(crate) struct Inner {
    pub id: u64,
    pub raft: Raft<TypeConfig>,
    pub shared: Arc<Shared>,
    pub pool: Pool,
    pub addr: String,
    pub url: String,
    pub max_value_bytes: usize,
    pub op_timeout: Duration,
    pub next_client: AtomicU64,
    /// Set by shutdown: every store of the node then answers `Closed`.
    pub stopped: std::sync::atomic::AtomicBool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Inner {
    /// Proposes a command on this node, if it leads; stamps TTL deadlines with its clock.
    pub(crate) async fn propose(&self, mut cmd: Command) -> Result<Applied, Redirect> {
        cmd.stamp(now_ms());
        // A leader cut off from its quorum never commits: answer, rather than wait forever.
        let write = tokio::time::timeout(self.op_timeout, self.raft.client_write(cmd));
        let Ok(result) = write.await else {
            return Err(Redirect::Failed(format!(
                "not committed within {:?} (no quorum?); it may still be applied",
                self.op_timeout
            )));
        };
        match result {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(Redirect::NotLeader {
                    id: f.leader_id,
                    addr: f.leader_node.map(|n| n.addr),
                })
            }
            Err(e) => Err(Redirect::Failed(e.to_string())),
        }
    }

    fn unavailable(&self, reason: impl Into<String>) -> KvError {
        KvError::Unavailable {
            url: self.url.clone(),
            reason: reason.into(),
        }
    }

    /// Writes through the leader: here if this node leads, else forwarded. Retried only
    /// while nothing can have been proposed (no leader, a member that does not lead, a
    /// leader that cannot be reached), so a command is never applied twice.
    pub(crate) async fn write(&self, cmd: Command) -> Result<Applied, KvError> {
        let deadline = tokio::time::Instant::now() + self.op_timeout;
        let mut last = String::from("no leader");
        while tokio::time::Instant::now() < deadline {
            match self.propose(cmd.clone()).await {
                Ok(a) => return Ok(a),
                Err(Redirect::Failed(e)) => return Err(self.unavailable(e)),
                Err(Redirect::NotLeader {
                    id: Some(leader),
                    addr: Some(addr),
                }) if leader != self.id => {
                    let req = Request::Write(cmd.clone());
                    let call = self.pool.call(&addr, &req);
                    let answer = match tokio::time::timeout(self.op_timeout, call).await {
                        Ok(a) => a,
                        Err(_) => Err(CallError::Lost(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("no answer within {:?}", self.op_timeout),
                        ))),
                    };
                    match answer {
                        Ok(Response::Write(Ok(a))) => return Ok(a),
                        Ok(Response::Write(Err(Redirect::Failed(e)))) => {
                            return Err(self.unavailable(format!("leader {leader}: {e}")))
                        }
                        Ok(Response::Write(Err(Redirect::NotLeader { .. }))) => {
                            last = format!("node {leader} no longer leads");
                        }
                        Ok(_) => {
                            return Err(self.unavailable(format!(
                                "leader {leader} at {addr} answered another request"
                            )))
                        }
                        Err(CallError::Connect(e)) => {
                            last = format!("leader {leader} at {addr}: {e}");
                        }
                        Err(CallError::Lost(e)) => {
                            return Err(self.unavailable(format!(
                                "leader {leader} at {addr} went away during the write \
                                 (it may have been applied): {e}"
                            )))
                        }
                    }
                }
                Err(Redirect::NotLeader { .. }) => {}
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(self.unavailable(format!(
            "no write accepted within {:?}: {last}",
            self.op_timeout
        )))
    }

    /// Waits until this node has applied everything committed before the call: the leader
    /// confirms it still leads (a heartbeat round) and gives its commit index.
    pub(crate) async fn read_barrier(&self) -> Result<(), KvError> {
        let deadline = tokio::time::Instant::now() + self.op_timeout;
        let mut last = String::from("no leader");
        while tokio::time::Instant::now() < deadline {
            let check = tokio::time::timeout(self.op_timeout, self.raft.get_read_log_id());
            let Ok(check) = check.await else {
                last = "leadership not confirmed by a quorum".into();
                continue;
            };
            let index = match check {
                Ok((read, _)) => Some(read.map(|l| l.index)),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    match (f.leader_id, f.leader_node) {
                        (Some(leader), Some(node)) if leader != self.id => {
                            let call = self.pool.call(&node.addr, &Request::ReadIndex);
                            let answer = tokio::time::timeout(self.op_timeout, call)
                                .await
                                .unwrap_or_else(|_| {
                                    Err(CallError::Lost(std::io::Error::new(
                                        std::io::ErrorKind::TimedOut,
                                        "no answer",
                                    )))
                                });
                            match answer {
                                Ok(Response::ReadIndex(Ok(i))) => Some(Some(i)),
                                Ok(_) => {
                                    last = format!("node {leader} no longer leads");
                                    None
                                }
                                Err(e) => {
                                    last = format!("leader {leader} at {}: {e:?}", node.addr);
                                    None
                                }
                            }
                        }
                        _ => None,
                    }
                }
                Err(e) => {
                    last = e.to_string();
                    None
                }
            };
            if let Some(index) = index {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                return self
                    .raft
                    .wait(Some(left))
                    .applied_index_at_least(index, "read barrier")
                    .await
                    .map(|_| ())
                    .map_err(|e| self.unavailable(format!("catching up to the leader: {e}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(self.unavailable(format!(
            "no read index within {:?}: {last}",
            self.op_timeout
        )))
    }

    async fn handle(&self, req: Request) -> Response {
        match req {
            Request::Append(r) => Response::Append(self.raft.append_entries(r).await),
            Request::Vote(r) => Response::Vote(self.raft.vote(r).await),
            Request::Snapshot(r) => Response::Snapshot(self.raft.install_snapshot(r).await),
            Request::Write(cmd) => Response::Write(self.propose(cmd).await),
            Request::ReadIndex => Response::ReadIndex(self.read_index().await),
            Request::Announce { id, addr } => Response::Announced(self.record_addr(id, addr).await),
            Request::Admin(op) => Response::Admin(self.admin_local(op).await),
        }
    }

    /// Runs a membership change on the leader: here, or forwarded (first to `via`, when
    /// this node is not a member yet).
    pub(crate) async fn admin(&self, op: Admin, via: Option<String>) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        let mut target = via;
        let mut last = String::from("no leader");
        while tokio::time::Instant::now() < deadline {
            let answer = match &target {
                None => self.admin_local(op.clone()).await,
                Some(addr) => match self.pool.call(addr, &Request::Admin(op.clone())).await {
                    Ok(Response::Admin(r)) => r,
                    Ok(_) => Err(Redirect::Failed(format!("{addr} answered another request"))),
                    // A refused certificate will be refused again: no use waiting.
                    Err(CallError::Connect(e))
                        if e.kind() == std::io::ErrorKind::PermissionDenied =>
                    {
                        return Err(format!("{addr}: {e}"));
                    }
                    Err(CallError::Connect(e)) => {
                        last = format!("{addr}: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(CallError::Lost(e)) => Err(Redirect::Failed(format!("{addr}: {e}"))),
                },
            };
            match answer {
                Ok(()) => return Ok(()),
                Err(Redirect::Failed(e)) => return Err(e),
                Err(Redirect::NotLeader {
                    id: Some(leader),
                    addr: Some(addr),
                }) if leader != self.id => target = Some(addr),
                Err(Redirect::NotLeader { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        Err(format!(
            "no leader took the change within {ADMIN_TIMEOUT:?}: {last}"
        ))
    }

    /// A membership change on this node's Raft, if it leads.
    async fn admin_local(&self, op: Admin) -> Result<(), Redirect> {
        let result = match op {
            Admin::AddLearner { id, addr } => self.raft.add_learner(id, Peer { addr }, true).await,
            Admin::ChangeMembership { voters, retain } => {
                // Checked against the membership the leader holds, which is the one that
                // counts (a member's own view may lag).
                let m = self.raft.metrics().borrow().clone();
                if m.state == ServerState::Leader {
                    let membership = m.membership_config.membership();
                    if let Some(v) = voters.iter().find(|v| membership.get_node(v).is_none()) {
                        return Err(Redirect::Failed(format!(
                            "node {v} is not a member; add it as a learner first"
                        )));
                    }
                }
                self.raft
                    .change_membership(ChangeMembers::ReplaceAllVoters(voters), retain)
                    .await
            }
            Admin::RemoveNodes { ids } => {
                self.raft
                    .change_membership(ChangeMembers::RemoveNodes(ids), false)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(Redirect::NotLeader {
                    id: f.leader_id,
                    addr: f.leader_node.map(|n| n.addr),
                })
            }
            Err(e) => Err(Redirect::Failed(e.to_string())),
        }
    }

    /// On the leader: confirms leadership with a quorum and gives the commit index.
    async fn read_index(&self) -> Result<u64, Redirect> {
        let check = tokio::time::timeout(self.op_timeout, self.raft.get_read_log_id());
        let Ok(check) = check.await else {
            return Err(Redirect::Failed(format!(
                "leadership not confirmed by a quorum within {:?}",
                self.op_timeout
            )));
        };
        match check {
            Ok((read, _)) => Ok(read.map(|l| l.index).unwrap_or(0)),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(Redirect::NotLeader {
                    id: f.leader_id,
                    addr: f.leader_node.map(|n| n.addr),
                })
            }
            Err(e) => Err(Redirect::Failed(e.to_string())),
        }
    }

    /// On the leader: records a member's new address in the membership.
    async fn record_addr(&self, id: u64, addr: String) -> Result<(), Redirect> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            return Err(Redirect::NotLeader {
                id: m.current_leader,
                addr: m
                    .current_leader
                    .and_then(|l| m.membership_config.membership().get_node(&l).cloned())
                    .map(|n| n.addr),
            });
        }
        let known = m.membership_config.membership().get_node(&id).cloned();
        match known {
            Some(p) if p.addr == addr => Ok(()),
            Some(_) => self
                .raft
                .change_membership(
                    ChangeMembers::SetNodes(BTreeMap::from([(id, Peer { addr })])),
                    true,
                )
                .await
                .map(|_| ())
                .map_err(|e| Redirect::Failed(e.to_string())),
            None => Err(Redirect::Failed(format!("node {id} is not a member"))),
        }
    }
}

/// Accepts connections and serves each one's requests in order.
pub(crate) async fn serve(listener: Box<dyn RaftListener>, inner: Arc<Inner>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        match listener.accept().await {
            Ok(conn) => {
                conns.spawn(serve_conn(conn, inner.clone()));
            }
            Err(e) => {
                tracing::warn!(id = inner.id, error = %e, "raft accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        while conns.try_join_next().is_some() {}
    }
}

async fn serve_conn(mut conn: BoxConn, inner: Arc<Inner>) {
    loop {
        let req: Request = match read_frame(&mut conn).await {
            Ok(r) => r,
            Err(e) => {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    tracing::debug!(id = inner.id, error = %e, "raft connection closed");
                }
                return;
            }
        };
        let resp = inner.handle(req).await;
        let body = match crate::transport::encode_frame(&resp) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(id = inner.id, error = %e, "raft answer not sent");
                return;
            }
        };
        if write_frame(&mut conn, &body).await.is_err() {
            return;
        }
    }
}

/// On the leader only: proposes the expiry of keys past their deadline. The deadline was
/// stamped by a leader's clock; apply compares nothing with a clock.
pub(crate) async fn expire_keys(inner: Arc<Inner>, tick: Duration) {
    loop {
        tokio::time::sleep(tick).await;
        if inner.raft.metrics().borrow().state != ServerState::Leader {
            continue;
        }
        let due = match inner.shared.due(now_ms(), 256) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(id = inner.id, error = %e, "reading deadlines failed");
                continue;
            }
        };
        for (key, index) in due {
            if let Err(e) = inner.propose(Command::Expire { key, index }).await {
                tracing::debug!(id = inner.id, error = ?e, "expiry not proposed");
                break;
            }
        }
    }
}

/// A restarted member listening on a new address tells the leader, through any member it
/// knows, until the membership has its address.
pub(crate) async fn announce(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let m = inner.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership().clone();
        let recorded = match membership.get_node(&inner.id) {
            Some(p) => p.addr.clone(),
            // Not a member (yet): nothing to announce.
            None => continue,
        };
        if recorded == inner.addr {
            continue;
        }
        let req = Request::Announce {
            id: inner.id,
            addr: inner.addr.clone(),
        };
        if inner.raft.metrics().borrow().state == ServerState::Leader {
            let _ = inner.record_addr(inner.id, inner.addr.clone()).await;
            continue;
        }
        for (id, peer) in membership.nodes() {
            if *id == inner.id {
                continue;
            }
            match inner.pool.call(&peer.addr, &req).await {
                Ok(Response::Announced(Ok(()))) => break,
                Ok(Response::Announced(Err(Redirect::NotLeader {
                    addr: Some(addr), ..
                }))) => {
                    if let Ok(Response::Announced(Ok(()))) = inner.pool.call(&addr, &req).await {
                        break;
                    }
                }
                _ => {}
            }
        }
    }
}
