//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use plexus_tls::rpc::RpcServer;
use plexus_tls::*;

pub const HOUR: Duration = Duration::from_secs(3600);

/// A fresh node of `role` with a certificate from `ca`.
pub fn node(ca: &ClusterCa, role: Role) -> (NodeId, Credentials) {
    let id = NodeId::random().unwrap();
    let identity = ca.issue(&id, role, HOUR).unwrap();
    (id, Credentials::new(identity).unwrap())
}

/// An RPC server on a free loopback port answering `<peer id> <role> <not_after secs>:<request>`.
pub async fn whoami_server(credentials: &Credentials, options: TransportOptions) -> RpcServer {
    let listener = TlsListener::bind("127.0.0.1:0", credentials, options)
        .await
        .unwrap();
    RpcServer::spawn(
        listener,
        |peer: PeerIdentity, request: Vec<u8>| async move {
            let secs = peer
                .not_after
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let mut answer = format!("{} {} {secs}:", peer.node_id, peer.role).into_bytes();
            answer.extend_from_slice(&request);
            Ok(answer)
        },
    )
    .unwrap()
}

/// The certificate's expiry as Unix seconds.
pub fn expiry_secs(identity: &NodeIdentity) -> u64 {
    identity
        .not_after()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
