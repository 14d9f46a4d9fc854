//! The bridge driver through the controller, against the real kernel, with real TCP, in
//! namespaces the tests make: what a user of `docker network` sees.

mod common;

use std::net::Ipv4Addr;

use common::*;

fn gw(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, n, 0, 1)
}

#[tokio::test]
async fn two_sandboxes_on_one_network_talk_and_disconnect_leaves_nothing() {
    need_root!();
    let mut w = World::new().await;
    let net = w.network("n1", "10.91.0.0/24", &[]).await;
    let bridge = w.bridge.bridge_name(&net.id).await.unwrap_or_default();
    assert_eq!(bridge, format!("plx-{}", &net.id[..11]));
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let e1 = w.connect("s1", "n1").await;
    let e2 = w.connect("s2", "n1").await;
    assert_eq!(e1.interface.as_deref(), Some("eth0"));
    assert_eq!(ip4(&e1), Ipv4Addr::new(10, 91, 0, 2));
    assert_eq!(e1.mac.as_deref(), Some("02:42:0a:5b:00:02"));
    let eth0 = links_of(w.sb("s1"))
        .await
        .into_iter()
        .find(|l| l.name == "eth0")
        .unwrap_or_else(|| panic!("no eth0 in s1"));
    assert!(eth0.up);
    assert_eq!(eth0.mac, Some(vec![0x02, 0x42, 10, 91, 0, 2]));

    let _srv = Server::start(w.sb("s2"), sa(ip4(&e2), 7000));
    assert_eq!(
        reaches(w.sb("s1"), sa(ip4(&e2), 7000)),
        ip4(&e1).to_string()
    );
    // The gateway (the bridge's address) answers too.
    let _gw = Server::start(&w.host.ns, sa(gw(91), 7001));
    assert_eq!(reaches(w.sb("s1"), sa(gw(91), 7001)), ip4(&e1).to_string());

    ok("disconnect", w.controller.disconnect("s1", "n1").await);
    ok("disconnect", w.controller.disconnect("s2", "n1").await);
    let names: Vec<String> = links_of(w.sb("s1"))
        .await
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["lo"]);
    // Disconnecting twice is a clean 404, not a kernel error.
    let again = w.controller.disconnect("s1", "n1").await;
    assert_eq!(again.err().map(|e| e.http_status()), Some(404));
    ok("rm", w.controller.delete_network("n1").await);
    assert!(
        w.marked_links().await.is_empty(),
        "{:?}",
        w.marked_links().await
    );
    let st = ok("state", w.bridge.firewall().state());
    assert!(
        st.bridges.is_empty() && st.subnets.is_empty() && st.ports.is_empty(),
        "{st:?}"
    );
}
