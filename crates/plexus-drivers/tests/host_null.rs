//! The `host` and `null` drivers through the controller, in namespaces the test makes.

mod common;

use common::*;
use plexus_cnm::{CnmError, NetworkSpec};

#[tokio::test]
async fn null_gives_loopback_only_and_host_shares_the_host_namespace() {
    need_root!();
    let mut w = World::new().await;
    let none = ok(
        "none",
        w.controller
            .create_network(NetworkSpec {
                name: "none".into(),
                driver: "null".into(),
                ..Default::default()
            })
            .await,
    );
    assert!(none.ipv4.is_empty(), "no IPAM for null: {none:?}");
    // Only one null network.
    let again = w
        .controller
        .create_network(NetworkSpec {
            name: "none2".into(),
            driver: "null".into(),
            ..Default::default()
        })
        .await;
    assert!(matches!(again, Err(CnmError::Invalid { .. })), "{again:?}");
    // No options.
    let opt = w
        .controller
        .create_network(NetworkSpec {
            name: "h".into(),
            driver: "host".into(),
            options: [(
                "com.docker.network.driver.mtu".to_string(),
                "1400".to_string(),
            )]
            .into(),
            ..Default::default()
        })
        .await;
    match opt {
        Err(e) => {
            assert_eq!(e.http_status(), 400);
            assert!(
                e.to_string().contains("com.docker.network.driver.mtu"),
                "{e}"
            );
        }
        Ok(n) => panic!("host with options gave {n:?}"),
    }

    w.sandbox("lonely").await;
    let ep = w.connect("lonely", "none").await;
    assert_eq!(ep.interface, None);
    assert_eq!(ep.ipv4, None);
    let links = links_of(w.sb("lonely")).await;
    assert_eq!(links.len(), 1, "{links:?}");
    assert!(links[0].name == "lo" && links[0].up, "{links:?}");

    // host: the sandbox must be the host's own namespace.
    ok(
        "host network",
        w.controller
            .create_network(NetworkSpec {
                name: "host".into(),
                driver: "host".into(),
                ..Default::default()
            })
            .await,
    );
    let before = w.host_links().await.len();
    ok(
        "host sandbox",
        w.controller
            .create_sandbox("hosted", &w.host.path(), false)
            .await,
    );
    let ep = w.connect("hosted", "host").await;
    assert_eq!((ep.interface, ep.ipv4), (None, None));
    assert_eq!(w.host_links().await.len(), before);
    let other = w
        .controller
        .connect("lonely", "host", Default::default())
        .await;
    match other {
        Err(e) => assert_eq!(e.http_status(), 400, "{e}"),
        Ok(ep) => panic!("own namespace on host network gave {ep:?}"),
    }
    ok(
        "disconnect",
        w.controller.disconnect("hosted", "host").await,
    );
    ok(
        "disconnect",
        w.controller.disconnect("lonely", "none").await,
    );
    ok("rm", w.controller.delete_network("host").await);
    ok("rm", w.controller.delete_network("none").await);
}
