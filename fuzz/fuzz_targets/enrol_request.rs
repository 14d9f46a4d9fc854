//! `enrol_request`: a frame as a manager's join port receives it from anyone (no client
//! certificate yet): `plexus_tls::EnrolRequest::parse`, its CSR to
//! `ClusterCa::issue_for_csr` with a fixed CA, and the same bytes as text to
//! `JoinToken`'s parser.
//!
//! No panic, and:
//! - a refusal says what was wrong;
//! - a token that parses prints back to text that parses to the same token;
//! - a certificate issued for a fuzzed CSR is DER of a certificate (a SEQUENCE).

#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use plexus_tls::{ClusterCa, EnrolRequest, JoinToken, NodeId, Role};

fn ca() -> &'static ClusterCa {
    static CA: OnceLock<ClusterCa> = OnceLock::new();
    CA.get_or_init(|| ClusterCa::create().expect("a CA"))
}

fn round_trip(token: &JoinToken) {
    let again: JoinToken = token
        .to_string()
        .parse()
        .expect("a printed token parses");
    assert_eq!(&again, token);
}

fn issue(csr: &[u8]) {
    let node: NodeId = "fuzz-node".parse().expect("a node id");
    if let Ok(cert) = ca().issue_for_csr(csr, &node, Role::Worker, Duration::from_secs(3600)) {
        assert_eq!(cert.first(), Some(&0x30), "not DER");
    }
}

fuzz_target!(|data: &[u8]| {
    match EnrolRequest::parse(data) {
        Ok(EnrolRequest::Join { token, csr }) => {
            round_trip(&token);
            issue(&csr);
        }
        Ok(EnrolRequest::Renew { csr }) => issue(&csr),
        Err(e) => assert!(!e.is_empty()),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(token) = text.trim().parse::<JoinToken>() {
            round_trip(&token);
        }
    }
});
