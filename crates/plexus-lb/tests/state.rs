//! The table's state against the real kernel: 10,000 services with one dispatch rule and
//! one-batch updates, bad input refused with the kernel unchanged, a stale `from` failing
//! whole and reconcile repairing, remove. Needs root.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use plexus_lb::{plan, Dispatcher, LbError, ServiceView, View};
use plexus_sys::nft::{Family, Nft};

#[macro_use]
mod common;
use common::*;

/// `n` services with 4 backends each, on addresses of their own (10.64.0.0/10), plus the
/// world's service.
fn many(n: u32) -> View {
    let mut v = one(ID, VIP, &BACKENDS, None);
    for i in 0..n {
        let base = 0x0a40_0000 + i * 8;
        v.services.insert(
            format!("m{i:011}"),
            ServiceView {
                name: format!("svc{i}"),
                vip: IpAddr::V4(Ipv4Addr::from(base)),
                backends: (1..5)
                    .map(|k| IpAddr::V4(Ipv4Addr::from(base + k)))
                    .collect(),
                affinity: None,
            },
        );
    }
    v
}

#[test]
fn ten_thousand_services_one_dispatch_rule_and_one_batch_per_change() {
    need_root!();
    let world = World::new();
    let _srv = Servers::start(&world, &[80], &[]);
    let lb = ok("open", Dispatcher::open(&world.client.ns));
    let view = many(10_000);
    ok("apply 10,000 services", lb.apply(&View::default(), &view));
    let mut next = view.clone();
    if let Some(s) = next.services.get_mut(ID) {
        s.backends.pop();
    }
    let ops = ok("plan", plan(&view, &next));
    assert_eq!(ops.len(), 2, "{ops:#?}");
    ok("remove one backend", lb.apply(&view, &next));
    let table = world.client.sh("nft list table ip plexus-lb");
    let dispatch = table
        .split("chain dispatch {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_default();
    let rules: Vec<&str> = dispatch
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("type "))
        .collect();
    assert_eq!(rules, ["ip daddr vmap @services"], "{dispatch}");
    assert_eq!(ok("read", lb.read()), next.normalized());
    let counts = spread(&tcp_many(&world, SocketAddr::from((VIP, 80)), 300));
    assert_eq!(counts.len(), 3, "{counts:?}");
}

fn field_of(r: Result<(), LbError>) -> String {
    match r {
        Err(LbError::Invalid { field, .. }) => field,
        other => panic!("want an invalid field, got {other:?}"),
    }
}

#[test]
fn bad_input_names_the_field_and_leaves_the_kernel_unchanged() {
    need_root!();
    let world = World::new();
    let lb = ok("open", Dispatcher::open(&world.client.ns));
    let good = one(ID, VIP, &BACKENDS, None);
    ok("apply", lb.apply(&View::default(), &good));
    let before = ok("read", lb.read());
    let f = |s: &str| format!("services[{ID}].{s}");
    let mut bad = Vec::new();
    bad.push(("service id", one("BAD", VIP, &BACKENDS, None)));
    for v in ["0.0.0.1", "127.0.0.1", "239.1.1.1"] {
        let vip: Ipv4Addr = ok("vip", v.parse());
        bad.push(("vip", one(ID, vip, &BACKENDS, None)));
    }
    bad.push(("backends[1]", one(ID, VIP, &[BACKENDS[0], VIP], None)));
    bad.push(("affinity", one(ID, VIP, &BACKENDS, Some(Duration::ZERO))));
    let day = Duration::from_secs(86_401);
    bad.push(("affinity", one(ID, VIP, &BACKENDS, Some(day))));
    let mut v6 = good.clone();
    if let Some(s) = v6.services.get_mut(ID) {
        s.vip = ok("v6", "fd00::1".parse());
    }
    bad.push(("vip", v6));
    let mut huge = good.clone();
    if let Some(s) = huge.services.get_mut(ID) {
        s.backends = (0..4097u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a50_0000 + i)))
            .collect();
    }
    bad.push(("backends", huge));
    for (want, view) in bad {
        let field = field_of(lb.apply(&good, &view));
        let want = if want == "service id" {
            want.to_string()
        } else {
            f(want)
        };
        assert_eq!(field, want);
        assert_eq!(ok("read", lb.read()), before, "{field}: the kernel changed");
    }
}

#[test]
fn a_stale_from_fails_whole_and_reconcile_repairs() {
    need_root!();
    let world = World::new();
    let _srv = Servers::start(&world, &[80], &[]);
    let lb = ok("open", Dispatcher::open(&world.client.ns));
    let v1 = one(ID, VIP, &BACKENDS[..2], None);
    ok("apply", lb.apply(&View::default(), &v1));
    // The caller believes the kernel is empty (a lost update): the batch fails whole.
    let v2 = many(3);
    match lb.apply(&View::default(), &v2) {
        Err(LbError::Diverged { .. }) => {}
        other => panic!("want Diverged, got {other:?}"),
    }
    assert_eq!(ok("read", lb.read()), v1.normalized(), "the kernel changed");
    ok("reconcile", lb.reconcile(&v2));
    assert_eq!(ok("read", lb.read()), v2.normalized());
    let counts = spread(&tcp_many(&world, SocketAddr::from((VIP, 80)), 200));
    assert_eq!(counts.len(), 4, "{counts:?}");
    // A reconcile with nothing to do sends nothing; one into an empty view keeps the
    // table but no service.
    ok("reconcile again", lb.reconcile(&v2));
    ok("reconcile to empty", lb.reconcile(&View::default()));
    assert_eq!(ok("read", lb.read()), View::default());
}

#[test]
fn reconcile_rebuilds_a_table_with_stray_objects() {
    need_root!();
    let world = World::new();
    let lb = ok("open", Dispatcher::open(&world.client.ns));
    let v = many(2);
    ok("apply", lb.apply(&View::default(), &v));
    // A chain of no service (another writer, or an older version).
    let nft = ok("nft", Nft::open(&world.client.ns));
    let mut b = nft.batch();
    b.add_chain(Family::Ip, "plexus-lb", "be-zzzzzzzzzzzz-0a000001", None);
    ok("stray", nft.apply(b));
    ok("reconcile", lb.reconcile(&v));
    assert_eq!(ok("read", lb.read()), v.normalized());
    let chains = ok("chains", nft.chains(Family::Ip, "plexus-lb"));
    assert!(!chains.iter().any(|c| c.contains("zzzz")), "{chains:?}");
}

#[test]
fn remove_leaves_no_table_and_a_missing_table_is_no_error() {
    need_root!();
    let world = World::new();
    let lb = ok("open", Dispatcher::open(&world.client.ns));
    ok(
        "apply",
        lb.apply(
            &View::default(),
            &one(ID, VIP, &BACKENDS, Some(Duration::from_secs(5))),
        ),
    );
    ok("remove", lb.remove());
    let nft = ok("nft", Nft::open(&world.client.ns));
    assert!(ok("tables", nft.tables()).is_empty());
    ok("remove again", lb.remove());
    assert_eq!(ok("read", lb.read()), View::default());
    ok("free fn", plexus_lb::remove(&world.client.ns));
}
