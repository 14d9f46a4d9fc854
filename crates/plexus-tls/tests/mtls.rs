//! Mutual TLS between nodes of one CA: RPC round trips, refusals of other CAs and of
//! clients without a certificate, frame limits, reconnection.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use plexus_tls::rpc::{RpcClient, RpcError, RpcServer};
use plexus_tls::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn rpc_round_trips_between_two_nodes_with_peer_identity() {
    let ca = ClusterCa::create().unwrap();
    let (server_id, server_creds) = node(&ca, Role::Manager);
    let (client_id, client_creds) = node(&ca, Role::Worker);
    let server = whoami_server(&server_creds, TransportOptions::default()).await;
    let connector = TlsConnector::new(&client_creds, TransportOptions::default()).unwrap();
    let client = RpcClient::new(connector, server.local_addr().to_string(), Some(server_id));

    let answer = client.call(b"ping").await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(
        answer.starts_with(&format!("{client_id} worker ")) && answer.ends_with(":ping"),
        "{answer}"
    );
}

#[tokio::test]
async fn many_requests_in_flight_on_one_connection_get_their_own_answers() {
    let ca = ClusterCa::create().unwrap();
    let (_, server_creds) = node(&ca, Role::Manager);
    let (_, client_creds) = node(&ca, Role::Manager);
    let listener = TlsListener::bind("127.0.0.1:0", &server_creds, TransportOptions::default())
        .await
        .unwrap();
    // Later requests are answered sooner, so answers come back out of order.
    let server = RpcServer::spawn(listener, |_peer, request: Vec<u8>| async move {
        let n = u64::from(request[0]);
        tokio::time::sleep(Duration::from_millis(200 - 3 * n)).await;
        Ok(request)
    })
    .unwrap();
    let connector = TlsConnector::new(&client_creds, TransportOptions::default()).unwrap();
    let client = Arc::new(RpcClient::new(
        connector,
        server.local_addr().to_string(),
        None,
    ));
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0u8..50)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move { (n, client.call(&[n, 7, n]).await) })
        })
        .collect();
    for call in calls {
        let (n, answer) = call.await.unwrap();
        assert_eq!(answer.unwrap(), vec![n, 7, n]);
    }
    // Sequential calls would take over 5 s; in flight together they take about 200 ms.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn handler_errors_reach_the_caller() {
    let ca = ClusterCa::create().unwrap();
    let (_, creds) = node(&ca, Role::Manager);
    let listener = TlsListener::bind("127.0.0.1:0", &creds, TransportOptions::default())
        .await
        .unwrap();
    let server = RpcServer::spawn(listener, |_peer, _req| async move {
        Err::<Vec<u8>, _>("no such key".to_owned())
    })
    .unwrap();
    let client = RpcClient::new(
        TlsConnector::new(&creds, TransportOptions::default()).unwrap(),
        server.local_addr().to_string(),
        None,
    );
    let err = client.call(b"get").await.unwrap_err();
    assert!(
        matches!(&err, RpcError::Remote { message, .. } if message == "no such key"),
        "{err}"
    );
}

#[tokio::test]
async fn server_refuses_a_client_certificate_from_another_ca() {
    let ca = ClusterCa::create().unwrap();
    let other = ClusterCa::create().unwrap();
    let (_, server_creds) = node(&ca, Role::Manager);
    let listener = TlsListener::bind("127.0.0.1:0", &server_creds, TransportOptions::default())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // The intruder trusts the cluster's CA (so it would accept the server) but holds a
    // certificate from another CA.
    let id = NodeId::random().unwrap();
    let foreign = other.issue(&id, Role::Manager, HOUR).unwrap();
    let forged = NodeIdentity::from_parts(
        foreign.cert().clone(),
        ca.cert_der().clone(),
        pkcs8_of(&foreign),
    )
    .unwrap();
    let intruder = TlsConnector::new(
        &Credentials::new(forged).unwrap(),
        TransportOptions::default(),
    )
    .unwrap();

    let server_side =
        tokio::spawn(async move { listener.accept().await.unwrap().handshake().await });
    let client_side = async {
        let mut conn = intruder.connect(&addr, None).await?;
        conn.send(b"hello").await?;
        conn.recv().await
    };
    let client_result = client_side.await;
    let server_result = server_side.await.unwrap();
    let err = server_result.unwrap_err();
    assert!(matches!(err, TransportError::Handshake { .. }), "{err}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    assert!(client_result.is_err(), "the intruder got {client_result:?}");
}

#[tokio::test]
async fn client_refuses_a_server_certificate_from_another_ca() {
    let ca = ClusterCa::create().unwrap();
    let other = ClusterCa::create().unwrap();
    let (_, impostor_creds) = node(&other, Role::Manager);
    let (_, client_creds) = node(&ca, Role::Manager);
    let impostor = whoami_server(&impostor_creds, TransportOptions::default()).await;
    let connector = TlsConnector::new(&client_creds, TransportOptions::default()).unwrap();
    let err = connector
        .connect(&impostor.local_addr().to_string(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Handshake { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("not from this cluster's CA (UnknownIssuer)"),
        "{err}"
    );
}

#[tokio::test]
async fn client_refuses_a_server_that_is_not_the_expected_node() {
    let ca = ClusterCa::create().unwrap();
    let (server_id, server_creds) = node(&ca, Role::Worker);
    let (_, client_creds) = node(&ca, Role::Manager);
    let server = whoami_server(&server_creds, TransportOptions::default()).await;
    let connector = TlsConnector::new(&client_creds, TransportOptions::default()).unwrap();
    let wanted = NodeId::random().unwrap();
    let err = connector
        .connect(&server.local_addr().to_string(), Some(&wanted))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("peer is node {server_id}, expected node {wanted}")),
        "{text}"
    );
    let err = connector
        .connect_expecting(&server.local_addr().to_string(), None, Some(Role::Manager))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is a worker, expected a manager"),
        "{err}"
    );
}

#[tokio::test]
async fn server_refuses_a_client_without_a_certificate() {
    let ca = ClusterCa::create().unwrap();
    let (server_id, server_creds) = node(&ca, Role::Manager);
    let listener = TlsListener::bind("127.0.0.1:0", &server_creds, TransportOptions::default())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server_side =
        tokio::spawn(async move { listener.accept().await.unwrap().handshake().await });

    // A stock rustls client trusting the cluster CA, checking the server by its node id
    // (its certificate's DNS name), presenting no certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(server_id.to_string()).unwrap();
    let client = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    let client_result = match client {
        Ok(mut stream) => {
            let _ = stream.write_all(b"\0\0\0\x01x").await;
            let mut buf = [0u8; 16];
            tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await
        }
        Err(e) => Err(e),
    };
    let err = server_side.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("no certificates"), "{err}");
    let client_err = client_result.unwrap_err();
    assert!(
        client_err.to_string().contains("CertificateRequired"),
        "{client_err}"
    );
}

#[tokio::test]
async fn over_size_frame_closes_the_connection_and_the_client_reconnects() {
    let ca = ClusterCa::create().unwrap();
    let (_, server_creds) = node(&ca, Role::Manager);
    let (_, client_creds) = node(&ca, Role::Manager);
    let small = TransportOptions {
        max_frame: 1024,
        ..TransportOptions::default()
    };
    let server = whoami_server(&server_creds, small).await;
    let addr = server.local_addr().to_string();
    let connector = TlsConnector::new(&client_creds, TransportOptions::default()).unwrap();

    // A raw header announcing 3 GiB: the server closes without reading (or allocating) it.
    let mut conn = connector.connect(&addr, None).await.unwrap();
    conn.stream_mut()
        .write_all(&(3u32 << 30).to_be_bytes())
        .await
        .unwrap();
    conn.stream_mut().flush().await.unwrap();
    assert!(matches!(conn.recv().await, Ok(None) | Err(_)));

    // Through the RPC client: the over-size request breaks its connection, and the next
    // call connects again and succeeds.
    let client = RpcClient::new(connector, addr, None);
    assert!(client.call(b"small").await.is_ok());
    let err = client.call(&vec![0u8; 2000]).await.unwrap_err();
    assert!(matches!(err, RpcError::ConnectionLost { .. }), "{err}");
    let answer = client.call(b"again").await.unwrap();
    assert!(answer.ends_with(b":again"));
}

#[tokio::test]
async fn client_refuses_to_send_a_request_over_its_limit() {
    let ca = ClusterCa::create().unwrap();
    let (_, creds) = node(&ca, Role::Manager);
    let server = whoami_server(&creds, TransportOptions::default()).await;
    let connector = TlsConnector::new(
        &creds,
        TransportOptions {
            max_frame: 100,
            ..TransportOptions::default()
        },
    )
    .unwrap();
    let client = RpcClient::new(connector, server.local_addr().to_string(), None);
    let err = client.call(&[1u8; 200]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "request of 200 bytes is over the 91-byte frame limit"
    );
    assert!(client.call(&[1u8; 10]).await.is_ok());
}

#[tokio::test]
async fn client_reconnects_after_the_server_restarts() {
    let ca = ClusterCa::create().unwrap();
    let (_, creds) = node(&ca, Role::Manager);
    let server = whoami_server(&creds, TransportOptions::default()).await;
    let addr = server.local_addr();
    let client = RpcClient::new(
        TlsConnector::new(&creds, TransportOptions::default()).unwrap(),
        addr.to_string(),
        None,
    )
    .with_timeout(Duration::from_secs(5));
    assert!(client.call(b"one").await.is_ok());
    drop(server);
    // The server's connection tasks end when their task is aborted; give the listener
    // socket a moment to be released, then bind the same port again.
    let listener = loop {
        match TlsListener::bind(addr, &creds, TransportOptions::default()).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let _server = RpcServer::spawn(listener, |_p, r: Vec<u8>| async move { Ok(r) }).unwrap();
    // The first call may still go down the old connection; one of the next two succeeds.
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(client.call(b"two").await);
    }
    assert!(
        answers.iter().any(|a| matches!(a, Ok(b) if b == b"two")),
        "{answers:?}"
    );
}

/// The PKCS#8 key of an identity, through its saved form.
fn pkcs8_of(identity: &NodeIdentity) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    identity.save(dir.path()).unwrap();
    let pem = std::fs::read_to_string(dir.path().join("node-key.pem")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    pem.contents
}

#[tokio::test]
async fn into_stream_carries_raw_bytes_after_the_checked_handshake() {
    use tokio::io::AsyncReadExt;
    let ca = ClusterCa::create().unwrap();
    let (server_id, server_creds) = node(&ca, Role::Manager);
    let (client_id, client_creds) = node(&ca, Role::Manager);
    let listener = TlsListener::bind("127.0.0.1:0", &server_creds, TransportOptions::default())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = tokio::spawn(async move {
        let conn = listener.accept().await.unwrap().handshake().await.unwrap();
        let peer = conn.peer().map(|p| p.node_id.clone());
        let mut stream = conn.into_stream();
        let mut buf = [0u8; 3];
        stream.read_exact(&mut buf).await.unwrap();
        stream.write_all(&buf).await.unwrap();
        stream.flush().await.unwrap();
        peer
    });
    let connector = TlsConnector::new(&client_creds, TransportOptions::default()).unwrap();
    let conn = connector.connect(&addr, Some(&server_id)).await.unwrap();
    let mut stream = conn.into_stream();
    stream.write_all(b"raw").await.unwrap();
    stream.flush().await.unwrap();
    let mut buf = [0u8; 3];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"raw");
    assert_eq!(server.await.unwrap(), Some(client_id));
}
