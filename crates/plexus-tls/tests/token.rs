//! Join token format, parsing errors that name the part at fault, and the manager's checks.

use std::time::{Duration, SystemTime};

use plexus_tls::*;
use proptest::prelude::*;

const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const SECRET: &str = "00112233445566778899aabbccddeeff";

#[test]
fn a_token_prints_as_plxtkn_and_parses_back() {
    let ca = ClusterCa::create().unwrap();
    let token = JoinToken::generate(ca.digest()).unwrap();
    let text = token.to_string();
    let parts: Vec<&str> = text.split('-').collect();
    assert_eq!(parts[..2], ["PLXTKN", "1"]);
    assert_eq!(parts[2], plexus_tls::token::ca_digest_hex(ca.cert_der()));
    assert_eq!(parts[3].len(), 32);
    assert_eq!(text.parse::<JoinToken>().unwrap(), token);
    assert!(token.trusts(ca.cert_der()));
    // The secret stays out of debug output.
    assert!(!format!("{token:?}").contains(parts[3]));
}

#[test]
fn parse_errors_name_the_part_at_fault() {
    let cases = [
        (
            "",
            "malformed: expected PLXTKN-1-<ca digest>-<secret>, got 1 part(s)",
        ),
        (
            "PLXTKN-1-abc",
            "malformed: expected PLXTKN-1-<ca digest>-<secret>, got 3 part(s)",
        ),
        (
            &format!("SWMTKN-1-{DIGEST}-{SECRET}"),
            "prefix is \"SWMTKN\"",
        ),
        (&format!("PLXTKN-2-{DIGEST}-{SECRET}"), "version is \"2\""),
        (
            &format!("PLXTKN-1-{}-{SECRET}", &DIGEST[1..]),
            "CA digest has 63 characters, not 64",
        ),
        (
            &format!("PLXTKN-1-{}g-{SECRET}", &DIGEST[1..]),
            "CA digest is not hexadecimal",
        ),
        (
            &format!("PLXTKN-1-{DIGEST}-{SECRET}0"),
            "secret has 33 characters, not 32",
        ),
        (
            &format!("PLXTKN-1-{DIGEST}-{}z", &SECRET[1..]),
            "secret is not hexadecimal",
        ),
    ];
    for (input, expected) in cases {
        let err = input.parse::<JoinToken>().unwrap_err().to_string();
        assert!(err.contains(expected), "{input:?}: {err}");
    }
    // Surrounding whitespace, as pasted from a terminal, is fine.
    assert!(format!(" PLXTKN-1-{DIGEST}-{SECRET}\n")
        .parse::<JoinToken>()
        .is_ok());
}

#[test]
fn the_manager_admits_each_role_by_its_secret_only() {
    let ca = ClusterCa::create().unwrap();
    let mut tokens = JoinTokens::generate(ca.digest()).unwrap();
    let now = SystemTime::now();
    let manager = tokens.token(Role::Manager);
    let worker = tokens.token(Role::Worker);
    assert_ne!(manager, worker);
    assert_eq!(tokens.check(&manager, now), Ok(Role::Manager));
    assert_eq!(tokens.check(&worker, now), Ok(Role::Worker));

    let other = ClusterCa::create().unwrap();
    let foreign: JoinToken = worker
        .to_string()
        .replace(
            &plexus_tls::token::ca_digest_hex(ca.cert_der()),
            &plexus_tls::token::ca_digest_hex(other.cert_der()),
        )
        .parse()
        .unwrap();
    assert_eq!(tokens.check(&foreign, now), Err(TokenError::WrongCa));

    let rotated = tokens
        .rotate(Role::Worker, Some(now + Duration::from_secs(60)))
        .unwrap();
    assert_eq!(tokens.check(&worker, now), Err(TokenError::InvalidSecret));
    assert_eq!(tokens.check(&rotated, now), Ok(Role::Worker));
    assert_eq!(
        tokens.check(&rotated, now + Duration::from_secs(60)),
        Err(TokenError::Expired { role: Role::Worker })
    );
    // Rotating workers' token leaves the managers' alone.
    assert_eq!(tokens.check(&manager, now), Ok(Role::Manager));
}

#[test]
fn tokens_survive_serialization_for_the_store() {
    let ca = ClusterCa::create().unwrap();
    let mut tokens = JoinTokens::generate(ca.digest()).unwrap();
    let expiry = SystemTime::now() + Duration::from_secs(3600);
    tokens.set_expiry(Role::Manager, Some(expiry));
    let json = serde_json::to_string(&tokens).unwrap();
    let back: JoinTokens = serde_json::from_str(&json).unwrap();
    assert_eq!(back.token(Role::Manager), tokens.token(Role::Manager));
    assert_eq!(back.token(Role::Worker), tokens.token(Role::Worker));
    assert_eq!(back.expires(Role::Manager), Some(expiry));
    assert_eq!(back.expires(Role::Worker), None);
}

proptest! {
    #[test]
    fn format_and_parse_round_trip(digest in any::<[u8; 32]>()) {
        let token = JoinToken::generate(digest).unwrap();
        let parsed: JoinToken = token.to_string().parse().unwrap();
        prop_assert_eq!(parsed.ca_digest(), digest);
        prop_assert!(parsed.secret_matches(&token));
        prop_assert_eq!(parsed, token);
    }

    #[test]
    fn parsing_never_panics_and_only_accepts_the_format(text in ".{0,120}") {
        if let Ok(token) = text.parse::<JoinToken>() {
            prop_assert_eq!(token.to_string(), text.trim().to_ascii_lowercase());
        }
    }

    #[test]
    fn node_ids_are_dns_labels(text in "[a-z0-9-]{0,70}") {
        let ok = !text.is_empty() && text.len() <= 63
            && !text.starts_with('-') && !text.ends_with('-');
        prop_assert_eq!(text.parse::<NodeId>().is_ok(), ok);
    }
}
