//! An exact interface name (CNI's `CNI_IFNAME`) through the controller and the bridge driver,
//! in namespaces the test makes: the sandbox gets that name, and a name the sandbox already
//! has is a conflict that leaves nothing behind, also when it cuts a sandbox creation short
//! after its first endpoint joined.

mod common;

use common::*;
use plexus_cnm::{CnmError, EndpointSpec, SandboxSpec};

#[tokio::test]
async fn the_bridge_driver_honours_an_exact_interface_name() {
    need_root!();
    let mut w = World::new().await;
    w.network("n1", "10.231.0.0/24", &[]).await;
    w.network("n2", "10.231.1.0/24", &[]).await;
    w.sandbox("s").await;
    let exact = |name: &str| EndpointSpec {
        interface: Some(name.into()),
        ..Default::default()
    };
    let ep = w.connect_with("s", "n1", exact("net7")).await;
    assert_eq!(ep.interface.as_deref(), Some("net7"));
    let names: Vec<String> = links_of(w.sb("s"))
        .await
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert!(names.contains(&"net7".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("eth")), "{names:?}");

    // Taken in the sandbox: a conflict naming it; no endpoint, no link, no address kept.
    let before = w.host_links().await.len();
    let err = w.controller.connect("s", "n2", exact("net7")).await;
    match &err {
        Err(CnmError::Conflict { message, .. }) => {
            assert!(
                message.contains("\"net7\" is taken in the sandbox"),
                "{message}"
            )
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let s = ok("sandbox", w.controller.sandbox("s").await);
    assert_eq!(s.endpoints.len(), 1, "no endpoint recorded");
    assert_eq!(
        w.host_links().await.len(),
        before,
        "no link left in the host namespace"
    );
    // The numbered name still works beside it, and gets the lowest address (none leaked).
    let ep2 = w.connect("s", "n2").await;
    assert_eq!(ep2.interface.as_deref(), Some("eth0"));
    assert_eq!(ip4(&ep2).to_string(), "10.231.1.2");
}

#[tokio::test]
async fn a_sandbox_whose_second_join_fails_is_undone_in_the_kernel() {
    need_root!();
    let mut w = World::new().await;
    w.network("n1", "10.232.0.0/24", &[]).await;
    w.network("n2", "10.232.1.0/24", &[]).await;
    w.sandbox("attached").await;
    let path = w.sandboxes["attached"].path();
    let host_before = w.host_links().await.len();
    let spec = |second: &str| SandboxSpec {
        name: "whole".into(),
        netns: Some(path.clone()),
        networks: vec![
            ("n1".into(), EndpointSpec::default()),
            (
                "n2".into(),
                EndpointSpec {
                    interface: Some(second.into()),
                    ..Default::default()
                },
            ),
        ],
        ports: vec![tcp(80, 18099)],
        ..Default::default()
    };
    // `lo` is taken in every namespace: the second join fails after the first is done.
    let err = w.controller.create_sandbox(spec("lo")).await;
    assert!(
        matches!(&err, Err(CnmError::Conflict { message, .. }) if message.contains("\"lo\"")),
        "{err:?}"
    );
    assert!(ok("sandboxes", w.controller.sandboxes().await)
        .iter()
        .all(|s| s.name != "whole"));
    // At once the first endpoint's interface is out of service (renamed, down); the kernel
    // deletes the pair in the background.
    let inside = |links: Vec<plexus_sys::rtnl::Link>| -> Vec<String> {
        links
            .into_iter()
            .map(|l| l.name)
            .filter(|n| n != "lo")
            .collect()
    };
    let now = inside(links_of(w.sb("attached")).await);
    assert!(
        now.iter().all(|n| n.starts_with("plxc")),
        "the first join was undone: {now:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !inside(links_of(w.sb("attached")).await).is_empty()
        || w.host_links().await.len() != host_before
    {
        assert!(
            std::time::Instant::now() < deadline,
            "links left behind: {:?}",
            inside(links_of(w.sb("attached")).await)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Nothing leaked: the same request with a free name gets the first addresses and port.
    let s = ok("create", w.controller.create_sandbox(spec("net1")).await);
    let eps = ok("endpoints", w.controller.sandbox_endpoints(&s).await);
    assert_eq!(ip4(&eps[0].0).to_string(), "10.232.0.2");
    assert_eq!(ip4(&eps[1].0).to_string(), "10.232.1.2");
    assert_eq!(eps[0].0.ports[0].host_port, 18099);
    assert_eq!(eps[1].0.interface.as_deref(), Some("net1"));
    assert!(!s.owned_netns, "an attached namespace is not Plexus's");
}
