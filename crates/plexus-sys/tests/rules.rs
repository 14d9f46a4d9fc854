//! Policy routing against the real kernel, in a fresh namespace (needs root): `fwmark`
//! rules added, listed and deleted (twice each: repeats are no error), routes in tables
//! other than main (ids above and below 255), and the `route` chain type they serve.

use std::net::{IpAddr, Ipv4Addr};

use plexus_sys::nft::{BaseChain, ChainType, Family, Hook, Nft, Verdict};
use plexus_sys::rtnl::{BridgeSpec, FibRule, Route, Rtnl};
use plexus_sys::sysctl::SysctlDir;

#[macro_use]
mod common;
use common::{lo_up, ok, PinnedNs};

/// A namespace with a bridge `br0` holding 10.79.0.1/24, up.
async fn world() -> (PinnedNs, Rtnl, u32) {
    let p = PinnedNs::new("rules");
    let rtnl = ok("connect", Rtnl::connect(&p.ns).await);
    lo_up(&rtnl).await;
    let spec = BridgeSpec {
        name: "br0",
        ..Default::default()
    };
    let br = ok("bridge", rtnl.add_bridge(&spec, "plexus-test").await);
    let addr = IpAddr::V4(Ipv4Addr::new(10, 79, 0, 1));
    ok("address", rtnl.add_address(br.index, addr, 24).await);
    ok("up", rtnl.set_up(br.index).await);
    (p, rtnl, br.index)
}

#[tokio::test]
async fn fwmark_rules_are_added_listed_and_deleted() {
    need_root!();
    let (_p, rtnl, _) = world().await;
    // A fresh namespace has only the local, main and default rules: none with a mark.
    assert_eq!(ok("rules", rtnl.rules_v4().await), vec![]);
    let high = FibRule {
        priority: 1000,
        fwmark: 0x7000_0002,
        fwmask: u32::MAX,
        table: 0x7000_0002,
    };
    let low = FibRule {
        priority: 1001,
        fwmark: 0x10,
        fwmask: 0xf0,
        table: 100,
    };
    for r in [&high, &low, &high] {
        ok("add", rtnl.add_rule(r).await);
    }
    assert_eq!(ok("rules", rtnl.rules_v4().await), vec![high, low]);
    ok("delete", rtnl.delete_rule(&high).await);
    ok("delete again", rtnl.delete_rule(&high).await);
    assert_eq!(ok("rules", rtnl.rules_v4().await), vec![low]);
    // Bad rules are refused before the kernel.
    let bad = FibRule { table: 0, ..low };
    assert!(rtnl.add_rule(&bad).await.is_err());
    ok("delete low", rtnl.delete_rule(&low).await);
    assert_eq!(ok("rules", rtnl.rules_v4().await), vec![]);
}

#[tokio::test]
async fn routes_live_in_tables_of_their_own() {
    need_root!();
    let (_p, rtnl, br) = world().await;
    let via = |last: u8| Route {
        destination: None,
        gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 79, 0, last))),
        oif: Some(br),
    };
    let big = 0x7000_0002;
    ok("add big", rtnl.add_route_in_table(&via(2), big).await);
    ok("add small", rtnl.add_route_in_table(&via(3), 100).await);
    assert!(
        rtnl.add_route_in_table(&via(2), big).await.is_err(),
        "a route already there"
    );
    assert_eq!(ok("big", rtnl.routes_in_table_v4(big).await), vec![via(2)]);
    assert_eq!(
        ok("small", rtnl.routes_in_table_v4(100).await),
        vec![via(3)]
    );
    // The main table knows nothing of them.
    let main = ok("main", rtnl.main_routes_v4().await);
    assert!(main.iter().all(|r| r.gateway.is_none()), "{main:?}");
    let all = ok("all", rtnl.routes_by_table_v4().await);
    assert!(all.contains_key(&big) && all.contains_key(&100), "{all:?}");
    ok("delete", rtnl.delete_route_in_table(&via(2), big).await);
    assert_eq!(ok("big", rtnl.routes_in_table_v4(big).await), vec![]);
    assert!(rtnl.delete_route_in_table(&via(2), big).await.is_err());
    assert!(rtnl.add_route_in_table(&via(2), 0).await.is_err());
}

#[tokio::test]
async fn route_chains_and_interface_sysctls_are_read_back() {
    need_root!();
    let (p, _rtnl, _) = world().await;
    let nft = ok("nft", Nft::open(&p.ns));
    let mut b = nft.batch();
    b.add_table(Family::Ip, "t");
    let route = BaseChain {
        kind: ChainType::Route,
        hook: Hook::Output,
        priority: -150,
        policy: Verdict::Accept,
    };
    b.add_chain(Family::Ip, "t", "out", Some(route));
    ok("route chain", nft.apply(b));
    assert_eq!(ok("chains", nft.chains(Family::Ip, "t")), vec!["out"]);
    let conf = ok("conf", SysctlDir::open(&p.ns, "net.ipv4.conf"));
    ok("write", conf.write(&["br0", "rp_filter"], "2"));
    assert_eq!(ok("read", conf.read(&["br0", "rp_filter"])), "2");
    assert!(conf.read(&["nope0", "rp_filter"]).is_err());
}
