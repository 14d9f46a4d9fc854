//! The cluster CA: what its node certificates carry, saving and loading, bad files.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use common::*;
use plexus_tls::rpc::RpcClient;
use plexus_tls::*;
use x509_parser::extensions::GeneralName;

#[test]
fn a_node_certificate_names_the_node_and_role() {
    let ca = ClusterCa::create().unwrap();
    let id: NodeId = "node-7".parse().unwrap();
    let identity = ca.issue(&id, Role::Worker, HOUR).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(identity.cert()).unwrap();
    let cn = cert.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "node-7");
    let ou = cert.subject().iter_organizational_unit().next().unwrap();
    assert_eq!(ou.as_str().unwrap(), "worker");
    let sans = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    assert!(
        sans.contains(&GeneralName::URI("plexus://node/node-7")),
        "{sans:?}"
    );
    assert!(sans.contains(&GeneralName::DNSName("node-7")), "{sans:?}");
    assert!(!cert.is_ca());
    // Valid for the hour asked (give or take the backdating for clock skew).
    let left = identity
        .not_after()
        .duration_since(SystemTime::now())
        .unwrap();
    assert!(left > Duration::from_secs(3500) && left <= HOUR, "{left:?}");
    let peer = PeerIdentity::from_cert(identity.cert()).unwrap();
    assert_eq!((peer.node_id, peer.role), (id, Role::Worker));

    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    assert!(ca_cert.is_ca());
    let years = ca_cert
        .validity()
        .time_to_expiration()
        .unwrap()
        .whole_days()
        / 365;
    assert_eq!(
        years, 9,
        "a 10-year CA has 9 whole years and some days left"
    );
}

#[test]
fn renewal_is_due_when_less_than_a_third_is_left() {
    let ca = ClusterCa::create().unwrap();
    let id = NodeId::random().unwrap();
    let identity = ca
        .issue(&id, Role::Manager, Duration::from_secs(3 * 3600))
        .unwrap();
    let total = identity
        .not_after()
        .duration_since(identity.not_before())
        .unwrap();
    let due = identity.renew_at();
    assert_eq!(identity.not_after().duration_since(due).unwrap(), total / 3);
    assert!(!identity.needs_renewal(SystemTime::now()));
    assert!(!identity.needs_renewal(due - Duration::from_secs(1)));
    assert!(identity.needs_renewal(due));
}

#[tokio::test]
async fn a_saved_ca_loads_back_and_keeps_issuing_for_the_same_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create().unwrap();
    ca.save(dir.path()).unwrap();
    let mode = |name: &str| {
        std::fs::metadata(dir.path().join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("ca-key.pem"), 0o600);
    assert_eq!(mode("ca.pem"), 0o644);

    let loaded = ClusterCa::load(dir.path()).unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());
    assert_eq!(loaded.digest(), ca.digest());

    // A node issued before the save talks to one issued after the load.
    let (_, before) = node(&ca, Role::Manager);
    let (_, after) = node(&loaded, Role::Worker);
    let server = whoami_server(&before, TransportOptions::default()).await;
    let client = RpcClient::new(
        TlsConnector::new(&after, TransportOptions::default()).unwrap(),
        server.local_addr().to_string(),
        None,
    );
    assert!(client.call(b"x").await.is_ok());
}

#[test]
fn a_node_identity_saves_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create().unwrap();
    let id = NodeId::random().unwrap();
    let identity = ca.issue(&id, Role::Worker, HOUR).unwrap();
    identity.save(dir.path()).unwrap();
    let mode = std::fs::metadata(dir.path().join("node-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let loaded = NodeIdentity::load(dir.path()).unwrap();
    assert_eq!(loaded.node_id(), &id);
    assert_eq!(loaded.cert(), identity.cert());
    assert_eq!(loaded.ca(), ca.cert_der());
    assert!(Credentials::new(loaded).is_ok());
}

#[test]
fn bad_ca_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = ClusterCa::load(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("ca.pem") && err.contains("No such file"),
        "{err}"
    );

    // A key of another CA next to this CA's certificate.
    let ca = ClusterCa::create().unwrap();
    let other = ClusterCa::create().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    ca.save(dir.path()).unwrap();
    other.save(other_dir.path()).unwrap();
    std::fs::copy(
        other_dir.path().join("ca-key.pem"),
        dir.path().join("ca-key.pem"),
    )
    .unwrap();
    let err = ClusterCa::load(dir.path()).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("does not match certificate"),
        "{err}"
    );

    std::fs::write(dir.path().join("ca.pem"), "not pem").unwrap();
    let err = ClusterCa::load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("ca.pem") && err.contains("not PEM"), "{err}");
}

#[test]
fn a_csr_that_is_not_one_is_refused_naming_the_node() {
    let ca = ClusterCa::create().unwrap();
    let id: NodeId = "n1".parse().unwrap();
    let err = ca
        .issue_for_csr(b"garbage", &id, Role::Worker, HOUR)
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("certificate signing request for node n1:"),
        "{err}"
    );
}

#[test]
fn bad_node_ids_are_refused() {
    for bad in ["", "Upper", "-lead", "trail-", "has space", &"a".repeat(64)] {
        let err = bad.parse::<NodeId>().unwrap_err();
        assert!(
            err.to_string().contains("is not 1-63 characters"),
            "{bad:?}: {err}"
        );
    }
    assert!("a".repeat(63).parse::<NodeId>().is_ok());
}
