//! nf_tables objects of `plexus_sys::nft` against the real kernel — tables, chains, rules,
//! sets and elements made, deleted by name or handle, destroyed and flushed, batches applied
//! all or nothing, and deletions on kernels without `NFT_MSG_DESTROY*` (forced here) — with
//! real TCP through the lab of `common/lab.rs`. Needs root; namespaces are removed by drop
//! guards even when a test fails.

use plexus_sys::nft::{ChainType, Element, Expr, Family, Hook, Nft, SetDef, Verdict};
use plexus_sys::SysError;

#[macro_use]
mod common;
use common::lab::*;
use common::ok;

/// Table `t` with a forward chain `fwd` (policy accept), a set `blocked` of source
/// addresses, and the rule `ip saddr @blocked tcp dport 80 drop`.
fn gate(nft: &Nft) {
    let mut b = nft.batch();
    b.add_table(Family::Ip, "t");
    b.add_chain(
        Family::Ip,
        "t",
        "fwd",
        base(ChainType::Filter, Hook::Forward, 0),
    );
    b.add_set(
        Family::Ip,
        "t",
        &SetDef {
            name: "blocked".into(),
            key_len: 4,
            ..SetDef::default()
        },
    );
    let mut rule = vec![
        ip4(false, r(1)),
        Expr::Lookup {
            set: "blocked".into(),
            sreg: r(1),
            dreg: None,
            invert: false,
        },
    ];
    rule.extend(tcp_dport(80));
    rule.push(Expr::Verdict(Verdict::Drop));
    b.add_rule_commented(Family::Ip, "t", "fwd", &rule, "gate");
    b.add_elements(
        Family::Ip,
        "t",
        "blocked",
        &[Element::key(CLIENT.octets())],
        false,
    );
    ok("gate", nft.apply(b));
}

fn drop_port(port: u16) -> Vec<Expr> {
    then(tcp_dport(port), [Expr::Verdict(Verdict::Drop)])
}

fn handle_of(nft: &Nft, comment: &str) -> u64 {
    let rules = ok("rules", nft.rules(Family::Ip, "t", "fwd"));
    rules
        .iter()
        .find(|r| r.comment.as_deref() == Some(comment))
        .map(|r| r.handle)
        .unwrap_or_else(|| panic!("no rule {comment:?} in {rules:?}"))
}

#[tokio::test]
async fn rules_are_deleted_by_the_handle_a_dump_returns() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 81), sa(SERVER_A, 82)]);
    let nft = &lab.nft;
    let mut b = nft.batch();
    b.add_table(Family::Ip, "t");
    b.add_chain(
        Family::Ip,
        "t",
        "fwd",
        base(ChainType::Filter, Hook::Forward, 0),
    );
    b.add_rule_commented(Family::Ip, "t", "fwd", &drop_port(81), "block-81");
    b.add_rule_commented(Family::Ip, "t", "fwd", &drop_port(82), "block-82");
    ok("apply", nft.apply(b));
    let c = &lab.client.ns;
    assert!(blocked(c, sa(SERVER_A, 81)) && blocked(c, sa(SERVER_A, 82)));

    let h81 = handle_of(nft, "block-81");
    let mut b = nft.batch();
    b.delete_rule(Family::Ip, "t", "fwd", h81);
    ok("delete rule", nft.apply(b));
    reaches(c, sa(SERVER_A, 81));
    assert!(blocked(c, sa(SERVER_A, 82)), "only that rule went");
    // Gone: delete names it as missing, destroy does not mind.
    let mut b = nft.batch();
    b.delete_rule(Family::Ip, "t", "fwd", h81);
    match nft.apply(b) {
        Err(SysError::NotFound { what }) => assert!(what.contains(&h81.to_string()), "{what}"),
        other => panic!("deleting a deleted rule gave {other:?}"),
    }
    let mut b = nft.batch();
    b.destroy_rule(Family::Ip, "t", "fwd", h81);
    ok("destroy missing rule", nft.apply(b));

    // A rule put first decides before the others.
    let mut b = nft.batch();
    b.insert_rule(
        Family::Ip,
        "t",
        "fwd",
        &then(tcp_dport(82), [Expr::Verdict(Verdict::Accept)]),
    );
    ok("insert", nft.apply(b));
    reaches(c, sa(SERVER_A, 82));
    let rules = ok("rules", nft.rules(Family::Ip, "t", "fwd"));
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(rules[1].comment.as_deref(), Some("block-82"));
    assert!(rules[0].exprs.iter().any(|e| e == "immediate"), "{rules:?}");
}

#[tokio::test]
async fn chains_sets_and_tables_are_flushed_and_deleted() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 80)]);
    let (nft, c, web) = (&lab.nft, &lab.client.ns, sa(SERVER_A, 80));
    gate(nft);
    assert!(blocked(c, web));
    // Flushing the set empties it: the rule no longer matches.
    let mut b = nft.batch();
    b.flush_set(Family::Ip, "t", "blocked");
    ok("flush set", nft.apply(b));
    reaches(c, web);
    assert!(ok("elements", nft.elements(Family::Ip, "t", "blocked")).is_empty());
    // A set a rule uses cannot go; once the chain is flushed it can.
    let mut b = nft.batch();
    b.delete_set(Family::Ip, "t", "blocked");
    assert!(nft.apply(b).is_err(), "a set in use was deleted");
    let mut b = nft.batch();
    b.flush_chain(Family::Ip, "t", "fwd");
    b.delete_set(Family::Ip, "t", "blocked");
    ok("flush chain, delete set", nft.apply(b));
    assert_eq!(ok("sets", nft.sets(Family::Ip, "t")), Vec::<String>::new());
    // A base chain is deleted with its rules.
    gate(nft);
    assert!(blocked(c, web));
    let mut b = nft.batch();
    b.delete_chain(Family::Ip, "t", "fwd");
    ok("delete chain", nft.apply(b));
    reaches(c, web);
    assert!(!ok("chains", nft.chains(Family::Ip, "t")).contains(&"fwd".to_string()));
    // A table goes with everything in it.
    gate(nft);
    assert!(blocked(c, web));
    let mut b = nft.batch();
    b.delete_table(Family::Ip, "t");
    ok("delete table", nft.apply(b));
    reaches(c, web);
    let mut b = nft.batch();
    b.delete_table(Family::Ip, "t");
    assert!(matches!(nft.apply(b), Err(SysError::NotFound { .. })));
    let mut b = nft.batch();
    b.destroy_table(Family::Ip, "t");
    ok("destroy missing table", nft.apply(b));
}

#[tokio::test]
async fn a_failing_batch_applies_nothing() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 81)]);
    let nft = &lab.nft;
    let mut b = nft.batch();
    b.add_table(Family::Ip, "t");
    b.add_chain(
        Family::Ip,
        "t",
        "fwd",
        base(ChainType::Filter, Hook::Forward, 0),
    );
    b.add_rule(Family::Ip, "t", "fwd", &drop_port(81));
    b.add_elements(
        Family::Ip,
        "t",
        "missing-set",
        &[Element::key([1, 2, 3, 4])],
        false,
    );
    let err = nft
        .apply(b)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("missing-set"), "{err}");
    reaches(&lab.client.ns, sa(SERVER_A, 81));
    assert!(ok("tables", nft.tables()).is_empty());
}

#[tokio::test]
async fn without_destroy_deletions_of_every_kind_still_work() {
    need_root!();
    let lab = Lab::new().await;
    let _srv = Servers::start(&lab.server.ns, &[sa(SERVER_A, 80), sa(SERVER_A, 81)]);
    let (nft, c, web) = (&lab.nft, &lab.client.ns, sa(SERVER_A, 80));
    assert!(
        ok("probe", nft.has_destroy()),
        "Linux 6.3+ has NFT_MSG_DESTROY"
    );
    nft.force_delete_fallback();
    assert!(!ok("forced", nft.has_destroy()));
    gate(nft);
    assert!(blocked(c, web));

    // Elements: one present, one not, and one listed twice, in one batch with the
    // destruction of objects that do not exist at all.
    let other = Element::key([10, 0, 0, 99]);
    let mut b = nft.batch();
    b.destroy_elements(
        Family::Ip,
        "t",
        "blocked",
        &[Element::key(CLIENT.octets()), other.clone()],
    );
    b.destroy_elements(Family::Ip, "t", "blocked", &[Element::key(CLIENT.octets())]);
    b.destroy_elements(Family::Ip, "t", "no-such-set", &[other]);
    b.destroy_rule(Family::Ip, "t", "fwd", 999_999);
    b.destroy_chain(Family::Ip, "t", "no-such-chain");
    b.destroy_set(Family::Ip, "t", "no-such-set");
    b.destroy_table(Family::Ip, "no-such-table");
    b.add_rule(Family::Ip, "t", "fwd", &drop_port(81));
    ok("destroys of present and missing objects", nft.apply(b));
    reaches(c, web);
    assert!(
        blocked(c, sa(SERVER_A, 81)),
        "the batch's other messages were applied"
    );

    // A rule by handle, then the set it used and its chain, then the table.
    ok("block again", {
        let mut b = nft.batch();
        b.add_elements(
            Family::Ip,
            "t",
            "blocked",
            &[Element::key(CLIENT.octets())],
            false,
        );
        nft.apply(b)
    });
    assert!(blocked(c, web));
    let gate_rule = handle_of(nft, "gate");
    let mut b = nft.batch();
    b.destroy_rule(Family::Ip, "t", "fwd", gate_rule);
    b.destroy_set(Family::Ip, "t", "blocked");
    ok("destroy rule and set", nft.apply(b));
    reaches(c, web);
    assert!(ok("sets", nft.sets(Family::Ip, "t")).is_empty());
    let mut b = nft.batch();
    b.destroy_chain(Family::Ip, "t", "fwd");
    ok("destroy chain", nft.apply(b));
    reaches(c, sa(SERVER_A, 81));
    let mut b = nft.batch();
    b.destroy_table(Family::Ip, "t");
    b.destroy_table(Family::Ip, "t");
    ok("destroy table twice", nft.apply(b));
    assert!(ok("tables", nft.tables()).is_empty());
}
