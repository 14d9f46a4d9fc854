//! An exact interface name (CNI's `CNI_IFNAME`) through the controller and the bridge driver,
//! in namespaces the test makes: the sandbox gets that name, and a name the sandbox already
//! has is a conflict that leaves nothing behind.

mod common;

use common::*;
use plexus_cnm::{CnmError, EndpointSpec};

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
