//! The join handshake: the right token gets a certificate that works for mutual TLS; wrong,
//! foreign, expired and rotated tokens are refused and nothing is issued. Renewal over the
//! node's current identity, and the renewed certificate hot-swapped.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use plexus_tls::enrol::{self, EnrolError};
use plexus_tls::rpc::RpcClient;
use plexus_tls::*;
use tokio::sync::mpsc;

/// A manager: CA, its own identity, an enrolment listener accepting joiners, and the
/// results of every request it served.
struct Manager {
    ca: Arc<ClusterCa>,
    creds: Credentials,
    enroller: Arc<Enroller>,
    addr: String,
    results: mpsc::UnboundedReceiver<Result<Enrolled, String>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Manager {
    async fn start(validity: Duration) -> Self {
        let ca = Arc::new(ClusterCa::create().unwrap());
        let (_, creds) = node(&ca, Role::Manager);
        let tokens = JoinTokens::generate(ca.digest()).unwrap();
        let enroller = Arc::new(Enroller::new(ca.clone(), tokens, validity));
        let options = TransportOptions {
            allow_anonymous: true,
            ..TransportOptions::default()
        };
        let listener = TlsListener::bind("127.0.0.1:0", &creds, options)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, results) = mpsc::unbounded_channel();
        let served = enroller.clone();
        let task = tokio::spawn(async move {
            loop {
                let incoming = listener.accept().await.unwrap();
                let result = match incoming.handshake().await {
                    Ok(mut conn) => served.serve(&mut conn).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send(result);
            }
        });
        Self {
            ca,
            creds,
            enroller,
            addr,
            results,
            _task: task,
        }
    }

    async fn next_result(&mut self) -> Result<Enrolled, String> {
        tokio::time::timeout(Duration::from_secs(10), self.results.recv())
            .await
            .unwrap()
            .unwrap()
    }
}

#[tokio::test]
async fn join_with_the_worker_token_gets_a_certificate_that_works_for_mtls() {
    let mut manager = Manager::start(HOUR).await;
    let token = manager.enroller.tokens().token(Role::Worker);
    // What an operator copies: the printed token.
    let token: JoinToken = token.to_string().parse().unwrap();

    let identity = enrol::join(&manager.addr, &token, &TransportOptions::default())
        .await
        .unwrap();
    assert_eq!(identity.role(), Role::Worker);
    assert_eq!(identity.ca(), manager.ca.cert_der());
    let served = manager.next_result().await.unwrap();
    assert_eq!(
        served,
        Enrolled {
            node_id: identity.node_id().clone(),
            role: Role::Worker,
            renewal: false
        }
    );

    // The new certificate is accepted by the manager's mutual-TLS RPC server, which sees
    // the new node's id and role.
    let server = whoami_server(&manager.creds, TransportOptions::default()).await;
    let creds = Credentials::new(identity.clone()).unwrap();
    let client = RpcClient::new(
        TlsConnector::new(&creds, TransportOptions::default()).unwrap(),
        server.local_addr().to_string(),
        None,
    );
    let answer = String::from_utf8(client.call(b"hi").await.unwrap()).unwrap();
    assert!(
        answer.starts_with(&format!("{} worker ", identity.node_id())),
        "{answer}"
    );
}

#[tokio::test]
async fn the_manager_token_makes_a_manager_with_a_fresh_id() {
    let mut manager = Manager::start(HOUR).await;
    let token = manager.enroller.tokens().token(Role::Manager);
    let a = enrol::join(&manager.addr, &token, &TransportOptions::default())
        .await
        .unwrap();
    let b = enrol::join(&manager.addr, &token, &TransportOptions::default())
        .await
        .unwrap();
    assert_eq!((a.role(), b.role()), (Role::Manager, Role::Manager));
    assert_ne!(a.node_id(), b.node_id());
    assert!(manager.next_result().await.is_ok());
    assert!(manager.next_result().await.is_ok());
}

/// Joins with `token` and checks it is refused with `reason` on both sides.
async fn assert_refused(manager: &mut Manager, token: &JoinToken, reason: &str) {
    let err = enrol::join(&manager.addr, token, &TransportOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EnrolError::Refused { reason: r, .. } if r.contains(reason)),
        "{err}"
    );
    let served = manager.next_result().await.unwrap_err();
    assert!(served.contains(reason), "{served}");
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_nothing_is_issued() {
    let mut manager = Manager::start(HOUR).await;
    let forged = JoinToken::generate(manager.ca.digest()).unwrap();
    assert_refused(&mut manager, &forged, "secret is not valid").await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let mut manager = Manager::start(HOUR).await;
    let mut tokens = manager.enroller.tokens();
    tokens.set_expiry(
        Role::Worker,
        Some(SystemTime::now() - Duration::from_secs(1)),
    );
    manager.enroller.set_tokens(tokens);
    let token = manager.enroller.tokens().token(Role::Worker);
    assert_refused(&mut manager, &token, "join token for workers expired").await;
    // The manager token, without expiry, still works.
    let manager_token = manager.enroller.tokens().token(Role::Manager);
    enrol::join(&manager.addr, &manager_token, &TransportOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_rotated_token_is_refused_and_the_new_one_works() {
    let mut manager = Manager::start(HOUR).await;
    let old = manager.enroller.tokens().token(Role::Worker);
    let new = manager.enroller.rotate(Role::Worker, None).unwrap();
    assert_ne!(old, new);
    assert_refused(&mut manager, &old, "secret is not valid").await;
    let identity = enrol::join(&manager.addr, &new, &TransportOptions::default())
        .await
        .unwrap();
    assert_eq!(identity.role(), Role::Worker);
}

#[tokio::test]
async fn a_token_for_another_ca_fails_the_handshake_and_nothing_is_issued() {
    let mut manager = Manager::start(HOUR).await;
    let other = ClusterCa::create().unwrap();
    let tokens = JoinTokens::generate(other.digest()).unwrap();
    let err = enrol::join(
        &manager.addr,
        &tokens.token(Role::Worker),
        &TransportOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("peer's CA is not the one the join token names"),
        "{err}"
    );
    let served = manager.next_result().await.unwrap_err();
    assert!(served.contains("TLS handshake"), "{served}");
}

#[tokio::test]
async fn a_joiner_refuses_a_worker_posing_as_a_manager() {
    // A worker of the right CA serving enrolment: the joiner wants a manager.
    let ca = Arc::new(ClusterCa::create().unwrap());
    let (_, worker) = node(&ca, Role::Worker);
    let tokens = JoinTokens::generate(ca.digest()).unwrap();
    let token = tokens.token(Role::Worker);
    let enroller = Arc::new(Enroller::new(ca.clone(), tokens, HOUR));
    let options = TransportOptions {
        allow_anonymous: true,
        ..TransportOptions::default()
    };
    let listener = TlsListener::bind("127.0.0.1:0", &worker, options)
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let _task = enroller.spawn(listener);
    let err = enrol::join(&addr, &token, &TransportOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("expected a manager"), "{err}");
}

#[tokio::test]
async fn renewal_keeps_the_node_and_the_next_connection_uses_the_new_certificate() {
    // The manager issues 2-hour certificates; the node starts with a 1-hour one.
    let mut manager = Manager::start(2 * HOUR).await;
    let id = NodeId::random().unwrap();
    let first = manager.ca.issue(&id, Role::Worker, HOUR).unwrap();
    let creds = Credentials::new(first.clone()).unwrap();
    let connector = TlsConnector::new(&creds, TransportOptions::default()).unwrap();
    let server = whoami_server(&manager.creds, TransportOptions::default()).await;
    let seen_expiry = |answer: Vec<u8>| -> u64 {
        let text = String::from_utf8(answer).unwrap();
        let (head, _) = text.split_once(':').unwrap();
        head.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let before = RpcClient::new(connector.clone(), server.local_addr().to_string(), None);
    assert_eq!(
        seen_expiry(before.call(b"x").await.unwrap()),
        expiry_secs(&first)
    );

    // Not due yet: nothing happens.
    let managers = vec![manager.addr.clone()];
    assert!(
        !enrol::renew_if_due(&connector, &managers, SystemTime::now())
            .await
            .unwrap()
    );
    // Past two thirds of the validity: renewed through the manager, over mutual TLS.
    let later = first.renew_at() + Duration::from_secs(1);
    assert!(enrol::renew_if_due(&connector, &managers, later)
        .await
        .unwrap());
    let served = manager.next_result().await.unwrap();
    assert_eq!(
        served,
        Enrolled {
            node_id: id.clone(),
            role: Role::Worker,
            renewal: true
        }
    );
    let renewed = creds.current();
    assert_eq!(renewed.node_id(), &id);
    assert!(expiry_secs(&renewed) > expiry_secs(&first) + 3000);

    // A new connection presents the renewed certificate.
    let after = RpcClient::new(connector, server.local_addr().to_string(), None);
    assert_eq!(
        seen_expiry(after.call(b"y").await.unwrap()),
        expiry_secs(&renewed)
    );
}

#[tokio::test]
async fn a_listener_presents_its_replaced_certificate_to_the_next_client() {
    let ca = ClusterCa::create().unwrap();
    let (server_id, server_creds) = node(&ca, Role::Manager);
    let (_, client_creds) = node(&ca, Role::Manager);
    let server = whoami_server(&server_creds, TransportOptions::default()).await;
    let connector = TlsConnector::new(&client_creds, TransportOptions::default()).unwrap();
    let addr = server.local_addr().to_string();
    let old = connector.connect(&addr, Some(&server_id)).await.unwrap();
    let old_expiry = old.peer().unwrap().not_after;

    let renewed = ca.issue(&server_id, Role::Manager, 3 * HOUR).unwrap();
    server_creds.replace(renewed.clone()).unwrap();
    let new = connector.connect(&addr, Some(&server_id)).await.unwrap();
    assert_eq!(new.peer().unwrap().not_after, renewed.not_after());
    assert!(new.peer().unwrap().not_after > old_expiry);

    // Another node's certificate, or one from another CA, is not taken.
    let (_, stranger) = node(&ca, Role::Manager);
    let err = server_creds.replace(stranger.current()).unwrap_err();
    assert!(matches!(err, CredentialsError::Mismatch { .. }), "{err}");
    let other = ClusterCa::create().unwrap();
    let foreign = other.issue(&server_id, Role::Manager, HOUR).unwrap();
    assert!(server_creds.replace(foreign).is_err());
    assert_eq!(server_creds.current().not_after(), renewed.not_after());
}

#[tokio::test]
async fn a_renewal_without_a_node_certificate_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut manager = Manager::start(HOUR).await;
    // A client that trusts the CA but presents no certificate asks for a renewal.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(manager.ca.cert_der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let manager_id = manager.creds.current().node_id().to_string();
    let tcp = tokio::net::TcpStream::connect(&manager.addr).await.unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from(manager_id).unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let request = br#"{"renew":{"csr":"00"}}"#;
    stream
        .write_all(&(request.len() as u32).to_be_bytes())
        .await
        .unwrap();
    stream.write_all(request).await.unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.unwrap();
    let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.contains("no node certificate presented"), "{answer}");
    let served = manager.next_result().await.unwrap_err();
    assert!(served.contains("renewal from"), "{served}");
}

/// What anyone may send to the join port is read, and refused by name, before any token or
/// key is checked.
#[test]
fn enrol_requests_are_read_and_refused_by_name() {
    use plexus_tls::EnrolRequest;
    let token = format!("PLXTKN-1-{}-{}", "ab".repeat(32), "cd".repeat(16));
    let ok =
        EnrolRequest::parse(format!(r#"{{"join":{{"token":"{token}","csr":"3082"}}}}"#).as_bytes());
    match ok {
        Ok(EnrolRequest::Join { token: t, csr }) => {
            assert_eq!(t.to_string(), token);
            assert_eq!(csr, [0x30, 0x82]);
        }
        other => panic!("{other:?}"),
    }
    for (frame, says) in [
        ("not json", "bad request"),
        (r#"{"leave":{}}"#, "bad request"),
        (
            r#"{"join":{"token":"PLXTKN-2-aa-bb","csr":"00"}}"#,
            "join token",
        ),
        (r#"{"renew":{"csr":"0g"}}"#, "CSR is not hexadecimal"),
        (r#"{"renew":{"csr":"000"}}"#, "CSR is not hexadecimal"),
    ] {
        let e = EnrolRequest::parse(frame.as_bytes())
            .err()
            .unwrap_or_default();
        assert!(e.contains(says), "{frame}: {e}");
    }
}
