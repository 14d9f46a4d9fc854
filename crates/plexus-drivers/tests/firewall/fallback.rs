//! The firewall on kernels without `NFT_MSG_DESTROY*` (before Linux 6.3), forced on this one:
//! every deletion is narrowed to what is present and sent as `NFT_MSG_DEL*`.

use std::net::Ipv4Addr;

use crate::common::ok;
use crate::topo::*;

#[tokio::test]
async fn without_destroy_ports_and_networks_are_still_removed() {
    need_root!();
    let mut t = Topo::new().await;
    let br = t.bridge("plx-f", 85).await;
    let (s1, _) = t.sandbox(br, 85, 2).await;
    let _web = Server::start(t.sb(s1), sa(Ipv4Addr::new(10, 85, 0, 2), 80));
    let _out = Server::start(&t.outside.ns, sa(OUTSIDE, 9000));
    let fw = t.firewall();
    assert!(
        ok("probe", fw.raw().has_destroy()),
        "this kernel has NFT_MSG_DESTROY"
    );
    fw.raw().force_delete_fallback();
    assert!(!ok("forced", fw.raw().has_destroy()));
    ok("setup network", fw.setup_network(&net("plx-f", 85)));
    assert_eq!(reaches(t.sb(s1), sa(OUTSIDE, 9000)), HOST_EXT.to_string());

    // Publish, then unpublish: the port is refused again.
    let published = sa(HOST_EXT, 8080);
    let web = port(8080, 85, 2, "endpoint-f");
    ok("publish", fw.publish(std::slice::from_ref(&web)));
    assert_eq!(reaches(&t.outside.ns, published), OUTSIDE.to_string());
    ok("unpublish", fw.unpublish(std::slice::from_ref(&web)));
    assert!(blocked(&t.outside.ns, published));
    // Missing ports are no error, alone or beside a present one (whose removal still counts).
    ok("unpublish again", fw.unpublish(std::slice::from_ref(&web)));
    ok("republish", fw.publish(std::slice::from_ref(&web)));
    reaches(&t.outside.ns, published);
    let never = port(8081, 85, 2, "endpoint-never");
    ok(
        "unpublish present and missing",
        fw.unpublish(&[web.clone(), never]),
    );
    assert!(blocked(&t.outside.ns, published));
    assert!(ok("state", fw.state()).ports.is_empty());

    // Tearing the network down removes its elements and its ports: egress is no longer
    // masqueraded, the port is gone; a second teardown finds nothing and is no error.
    ok(
        "publish for teardown",
        fw.publish(std::slice::from_ref(&web)),
    );
    reaches(&t.outside.ns, published);
    ok("teardown", fw.teardown_network(&net("plx-f", 85)));
    assert!(blocked(t.sb(s1), sa(OUTSIDE, 9000)));
    assert!(blocked(&t.outside.ns, published));
    let st = ok("state", fw.state());
    assert!(
        st.bridges.is_empty() && st.subnets.is_empty() && st.ports.is_empty(),
        "{st:?}"
    );
    ok("teardown again", fw.teardown_network(&net("plx-f", 85)));

    // Reconcile removes what the store does not have, with deletions of several kinds in one
    // batch (a bridge in four sets, a subnet, a port).
    ok("setup again", fw.setup_network(&net("plx-f", 85)));
    ok("publish again", fw.publish(std::slice::from_ref(&web)));
    reaches(&t.outside.ns, published);
    let removed = ok("reconcile", fw.reconcile(&[], &[]));
    assert_eq!(removed.bridges, vec!["plx-f".to_string()]);
    assert_eq!(removed.ports.len(), 1, "{removed:?}");
    assert!(blocked(&t.outside.ns, published));
    assert!(blocked(t.sb(s1), sa(OUTSIDE, 9000)));

    // cleanup_all deletes the four tables, and finds nothing the second time.
    ok("cleanup", fw.cleanup_all());
    ok("cleanup again", fw.cleanup_all());
    let tables = ok("tables", fw.raw().tables());
    assert!(tables.is_empty(), "{tables:?}");
}
