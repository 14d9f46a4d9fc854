//! The `host` and `null` drivers through the controller, in namespaces the test makes.

mod common;

use common::*;
use plexus_cnm::{CnmError, NetworkSpec};

#[tokio::test]
async fn null_gives_loopback_only_and_host_shares_the_host_namespace() {
    need_root!();
    let mut w = World::new().await;
    let none = ok(
        "nothing",
        w.controller
            .create_network(NetworkSpec {
                name: "nothing".into(),
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
    let ep = w.connect("lonely", "nothing").await;
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
                name: "hostnet".into(),
                driver: "host".into(),
                ..Default::default()
            })
            .await,
    );
    let before = w.host_links().await.len();
    ok(
        "host sandbox",
        w.controller
            .add_sandbox("hosted", &w.host.path(), false)
            .await,
    );
    let ep = w.connect("hosted", "hostnet").await;
    assert_eq!((ep.interface, ep.ipv4), (None, None));
    assert_eq!(w.host_links().await.len(), before);
    let other = w
        .controller
        .connect("lonely", "hostnet", Default::default())
        .await;
    match other {
        Err(e) => assert_eq!(e.http_status(), 400, "{e}"),
        Ok(ep) => panic!("own namespace on host network gave {ep:?}"),
    }
    ok(
        "disconnect",
        w.controller.disconnect("hosted", "hostnet").await,
    );
    ok(
        "disconnect",
        w.controller.disconnect("lonely", "nothing").await,
    );
    // Networks of these drivers under other names are the user's: they can be removed.
    ok("rm", w.controller.delete_network("hostnet").await);
    ok("rm", w.controller.delete_network("nothing").await);
}

/// `host` and `none` exist as on Docker once the daemon made them: made once (a second call
/// makes nothing), cannot be removed (403 naming them), survive prune, and their names and
/// drivers are taken. A `none` made by the user beforehand counts as the pre-defined one.
#[tokio::test]
async fn predefined_networks_are_made_once_and_cannot_be_removed() {
    need_root!();
    let w = World::new().await;
    let made = ok(
        "predefined",
        w.controller.create_predefined_networks().await,
    );
    assert_eq!(made, ["host", "none"]);
    let again = ok("again", w.controller.create_predefined_networks().await);
    assert!(again.is_empty(), "{again:?}");
    let listed: Vec<(String, String)> = ok("list", w.controller.networks().await)
        .into_iter()
        .map(|n| (n.name, n.driver))
        .collect();
    assert_eq!(
        listed,
        [
            ("host".into(), "host".into()),
            ("none".into(), "null".into())
        ]
    );
    for name in ["host", "none"] {
        match w.controller.delete_network(name).await {
            Err(e) => {
                assert_eq!(e.http_status(), 403, "{e}");
                assert_eq!(
                    e.to_string(),
                    format!("{name} is a pre-defined network and cannot be removed")
                );
            }
            Ok(()) => panic!("{name} was removed"),
        }
    }
    w.network("plain", "10.95.0.0/24", &[]).await;
    assert_eq!(ok("prune", w.controller.prune_networks().await), ["plain"]);
    assert_eq!(ok("list", w.controller.networks().await).len(), 2);
    let taken = w
        .controller
        .create_network(net_spec("host", "10.94.0.0/24", &[]))
        .await;
    assert_eq!(taken.map_err(|e| e.http_status()).err(), Some(409));

    // A user's own `none` (from before the daemon made pre-defined networks) is kept as is.
    let w = World::new().await;
    let mine = ok(
        "my none",
        w.controller
            .create_network(NetworkSpec {
                name: "none".into(),
                driver: "null".into(),
                ..Default::default()
            })
            .await,
    );
    let made = ok(
        "predefined",
        w.controller.create_predefined_networks().await,
    );
    assert_eq!(made, ["host"]);
    assert_eq!(ok("none", w.controller.network("none").await).id, mine.id);
}
