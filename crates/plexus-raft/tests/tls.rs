//! Members over mutual TLS with certificates from one cluster CA: what a user of the
//! store sees, what a peer from another CA or without TLS sees, and renewal.

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use plexus_kv::PutOptions;
use plexus_raft::{RaftConfig, RaftNode, RaftTransport, TlsRaftTransport};
use plexus_tls::{ClusterCa, Credentials, NodeId, NodeIdentity, Role, TlsConnector};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOUR: Duration = Duration::from_secs(3600);

fn must<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A fresh node identity from `ca`, valid for `validity`.
fn identity(ca: &ClusterCa, validity: Duration) -> NodeIdentity {
    let id = must("node id", NodeId::random());
    must("issue", ca.issue(&id, Role::Manager, validity))
}

struct Member {
    node: RaftNode,
    credentials: Credentials,
    _dir: tempfile::TempDir,
}

impl Member {
    async fn start(raft_id: u64, identity: NodeIdentity) -> Member {
        let dir = must("tempdir", tempfile::tempdir());
        let credentials = must("credentials", Credentials::new(identity));
        let mut config = RaftConfig::new(raft_id, dir.path(), "127.0.0.1:0");
        config.op_timeout = Duration::from_secs(10);
        config.transport = Arc::new(must("transport", TlsRaftTransport::new(&credentials)));
        let node = must(
            &format!("start node {raft_id}"),
            RaftNode::start(config).await,
        );
        Member {
            node,
            credentials,
            _dir: dir,
        }
    }

    fn addr(&self) -> &str {
        self.node.addr()
    }
}

/// Three voters over mutual TLS, each with a certificate from `ca` valid for `validity`.
async fn cluster(ca: &ClusterCa, validity: Duration) -> Vec<Member> {
    let mut members = Vec::new();
    for raft_id in 1..=3 {
        members.push(Member::start(raft_id, identity(ca, validity)).await);
    }
    must("initialize", members[0].node.initialize().await);
    wait_leader(&members).await;
    for m in &members[1..] {
        must(
            "add_learner",
            members[0].node.add_learner(m.node.id(), m.addr()).await,
        );
    }
    must(
        "change_membership",
        members[0]
            .node
            .change_membership(BTreeSet::from([1, 2, 3]), false)
            .await,
    );
    wait_leader(&members).await;
    members
}

/// Position of the leader every member agrees on.
async fn wait_leader(members: &[Member]) -> usize {
    let start = Instant::now();
    loop {
        let leaders: BTreeSet<_> = members
            .iter()
            .filter(|m| m.node.metrics().voters.contains_key(&m.node.id()))
            .map(|m| m.node.metrics().leader)
            .collect();
        if let Some(i) = members.iter().position(|m| m.node.metrics().is_leader) {
            if leaders.len() == 1 {
                return i;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no leader agreed on: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn shutdown(members: &[Member]) {
    for m in members {
        let _ = m.node.shutdown().await;
    }
}

/// Writes through the leader and through a follower; both are read back, linearizably,
/// from the other followers.
async fn write_and_read_everywhere(members: &[Member], key: &str) {
    let leader = wait_leader(members).await;
    let followers: Vec<_> = (0..members.len()).filter(|&i| i != leader).collect();
    let at_leader = format!("{key}/leader");
    must(
        "put at leader",
        members[leader]
            .node
            .store()
            .put(&at_leader, b"L", PutOptions::default())
            .await,
    );
    let at_follower = format!("{key}/follower");
    must(
        "put at follower",
        members[followers[0]]
            .node
            .store()
            .put(&at_follower, b"F", PutOptions::default())
            .await,
    );
    for &f in &followers {
        let s = members[f].node.store();
        assert_eq!(must("get", s.get(&at_leader).await).value, b"L");
        assert_eq!(must("get", s.get(&at_follower).await).value, b"F");
    }
}

fn voters_and_learners(members: &[Member]) -> Vec<(Vec<u64>, Vec<u64>)> {
    members
        .iter()
        .map(|m| {
            let metrics = m.node.metrics();
            (
                metrics.voters.keys().copied().collect(),
                metrics.learners.keys().copied().collect(),
            )
        })
        .collect()
}

/// Connects to `addr` with plain TCP, sends a Raft-shaped frame and reads until the
/// server closes the connection; returns what it sent back.
async fn plain_tcp_exchange(addr: &str) -> Vec<u8> {
    let mut tcp = must("tcp connect", tokio::net::TcpStream::connect(addr).await);
    let _ = tcp.write_all(&[0, 0, 0, 3, 1, 2, 3]).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "{addr} kept a plain TCP client open");
    answer
}

/// Whether the member at the end of `conn` refuses to talk over it: TLS 1.3 clients learn
/// the server's refusal of their certificate on their first read.
async fn refused(conn: io::Result<plexus_raft::BoxConn>) -> bool {
    let Ok(mut conn) = conn else {
        return true;
    };
    let _ = conn.write_all(&[0, 0, 0, 1, 0]).await;
    let _ = conn.flush().await;
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_over_mtls_elect_replicate_and_read_from_followers() {
    let ca = must("ca", ClusterCa::create());
    let members = cluster(&ca, HOUR).await;

    write_and_read_everywhere(&members, "mtls").await;
    for (voters, learners) in voters_and_learners(&members) {
        assert_eq!(voters, vec![1, 2, 3]);
        assert!(learners.is_empty());
    }
    shutdown(&members).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_ca_cannot_join_and_plain_tcp_is_refused_without_disturbing_the_cluster() {
    let ca = must("ca", ClusterCa::create());
    let members = cluster(&ca, HOUR).await;
    let before = voters_and_learners(&members);

    let other_ca = must("other ca", ClusterCa::create());
    let stranger = Member::start(4, identity(&other_ca, HOUR)).await;
    let via = members[1].addr().to_string();
    let err = match stranger.node.join(&via).await {
        Ok(()) => panic!("a node of another CA joined through {via}"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&via) && err.contains("not from this cluster's CA"),
        "join error names neither the member nor the certificate: {err}"
    );

    // Plain TCP, a Raft frame and no TLS: closed, answered at most by a TLS alert.
    for m in &members {
        let answer = plain_tcp_exchange(m.addr()).await;
        assert!(
            answer.is_empty() || answer[0] == 0x15,
            "{} answered plain TCP with {answer:?}",
            m.addr()
        );
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(voters_and_learners(&members), before);
    write_and_read_everywhere(&members, "after-strangers").await;
    shutdown(&members).await;
    let _ = stranger.node.shutdown().await;
}

/// Handshakes that fail, and one that never ends, leave the listener serving; a server
/// that is not the node expected is refused, with the address and the node in the error.
#[tokio::test]
async fn listener_outlives_refused_peers_and_connect_checks_the_node() {
    let ca = must("ca", ClusterCa::create());
    let server_id = identity(&ca, HOUR);
    let server_node = server_id.node_id().clone();
    let server = must(
        "transport",
        TlsRaftTransport::new(&must("creds", Credentials::new(server_id))),
    );
    let listener = must("bind", server.bind("127.0.0.1:0").await);
    let addr = must("local_addr", listener.local_addr());
    let echo = tokio::spawn(async move {
        loop {
            let Ok(mut conn) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 5];
                if conn.read_exact(&mut buf).await.is_ok() {
                    let _ = conn.write_all(&buf).await;
                    let _ = conn.flush().await;
                }
            });
        }
    });

    // Connected and silent: its handshake is pending for the whole test.
    let _silent = must("silent", tokio::net::TcpStream::connect(&addr).await);
    let answer = plain_tcp_exchange(&addr).await;
    assert!(answer.is_empty() || answer[0] == 0x15, "{answer:?}");
    let other_ca = must("other ca", ClusterCa::create());
    let stranger = must(
        "stranger",
        TlsRaftTransport::new(&must("creds", Credentials::new(identity(&other_ca, HOUR)))),
    );
    let err = match stranger.connect(&addr).await {
        Ok(_) => panic!("a server of another CA was trusted"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&addr) && msg.contains("not from this cluster's CA"),
        "{msg}"
    );

    let client = must(
        "client",
        TlsRaftTransport::new(&must("creds", Credentials::new(identity(&ca, HOUR)))),
    );
    let mut conn = must(
        "connect",
        client.connect_to(&addr, Some(&server_node)).await,
    );
    must("write", conn.write_all(b"hello").await);
    must("flush", conn.flush().await);
    let mut buf = [0u8; 5];
    must("read", conn.read_exact(&mut buf).await);
    assert_eq!(&buf, b"hello");

    let impostor_expected = must("node id", NodeId::random());
    client.expect_node(addr.clone(), impostor_expected.clone());
    let err = match client.connect(&addr).await {
        Ok(_) => panic!("{addr} accepted as node {impostor_expected}"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&addr) && msg.contains(&format!("expected node {impostor_expected}")),
        "{msg}"
    );
    client.forget_node(&addr);
    assert!(!refused(client.connect(&addr).await).await);
    echo.abort();
}

/// Members start with certificates that expire in seconds, get renewed ones swapped in,
/// and outlive the old ones: new connections (a fourth member joining) use the renewed
/// certificates, and the expired one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewed_certificates_keep_working_for_new_connections() {
    let ca = must("ca", ClusterCa::create());
    let short = Duration::from_secs(8);
    let issued = SystemTime::now();
    let members = cluster(&ca, short).await;
    let expired_old = members[0].credentials.current();

    let mut renewed = Vec::new();
    for m in &members {
        let old = m.credentials.current();
        let new = must("renew", ca.issue(old.node_id(), old.role(), HOUR));
        must("replace", m.credentials.replace(new.clone()));
        renewed.push(new);
    }
    let left = (issued + short + Duration::from_secs(2))
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(left).await;

    // The listener presents the renewed certificate.
    let probe = must("probe creds", Credentials::new(identity(&ca, HOUR)));
    let connector = must("connector", TlsConnector::new(&probe, Default::default()));
    for (m, new) in members.iter().zip(&renewed) {
        let conn = must(
            "probe connect",
            connector.connect(m.addr(), Some(new.node_id())).await,
        );
        let presented = conn.peer().map(|p| p.not_after);
        assert_eq!(presented, Some(new.not_after()), "{}", m.addr());
    }

    // The expired certificate no longer gets in.
    let expired = must(
        "expired transport",
        TlsRaftTransport::new(&must("creds", Credentials::new(expired_old))),
    );
    assert!(refused(expired.connect(members[1].addr()).await).await);

    // A new member: connections both ways, all with renewed certificates.
    let newcomer = Member::start(4, identity(&ca, HOUR)).await;
    must("join", newcomer.node.join(members[2].addr()).await);
    let leader = wait_leader(&members).await;
    must(
        "put",
        members[leader]
            .node
            .store()
            .put("renewed", b"yes", PutOptions::default())
            .await,
    );
    let got = must(
        "get at newcomer",
        newcomer.node.store().get("renewed").await,
    );
    assert_eq!(got.value, b"yes");
    write_and_read_everywhere(&members, "renewed").await;
    shutdown(&members).await;
    let _ = newcomer.node.shutdown().await;
}
