//! Links on top of another (macvlan, ipvlan, 802.1q, dummy) against the real kernel, in
//! namespaces the tests make (needs root). A kind this kernel lacks must be refused with an
//! error naming its module, and its test says so with `plexus_testkit::skip`.

use plexus_sys::probe::{probe_link_kind, Feature, Outcome};
use plexus_sys::rtnl::{IpvlanFlag, IpvlanMode, MacvlanMode, Rtnl, SubLink, SubLinkKind};
use plexus_sys::SysError;

#[macro_use]
mod common;
use common::{ok, PinnedNs};

const MARK: &str = "plexus-test";

/// The kernel's answer for one link kind, probed alone.
async fn has(feature: Feature) -> Option<String> {
    match ok("probe", probe_link_kind(feature).await) {
        Outcome::Present => None,
        Outcome::Missing(why) => Some(why),
    }
}

#[tokio::test]
async fn a_macvlan_is_born_in_another_namespace_on_a_parent_that_stays() {
    need_root!();
    let host = PinnedNs::new("host");
    let sandbox = PinnedNs::new("sandbox");
    let rh = ok("connect host", Rtnl::connect(&host.ns).await);
    let rs = ok("connect sandbox", Rtnl::connect(&sandbox.ns).await);
    let (parent, _) = ok("veth", rh.add_veth("up0", "up1", Some(1400), MARK).await);
    let mac = [0x02, 0x42, 10, 0, 0, 9];
    let spec = SubLink {
        name: "eth0",
        parent: parent.index,
        kind: SubLinkKind::Macvlan(MacvlanMode::Private),
        mac: Some(mac),
        mtu: None,
        born_in: Some(&sandbox.ns),
    };
    ok("macvlan", rh.add_sublink(&spec).await);
    let made = ok("in sandbox", rs.require_link("eth0").await);
    assert_eq!(made.kind.as_deref(), Some("macvlan"));
    assert_eq!(made.mac.as_deref(), Some(&mac[..]));
    // The parent's MTU, and not up until the caller says so.
    assert_eq!(made.mtu, Some(1400));
    assert!(!made.up);
    assert!(ok("host", rh.link("eth0").await).is_none());
    assert!(ok("parent", rh.link("up0").await).is_some());
    // The name is taken there now.
    match rh.add_sublink(&spec).await {
        Err(SysError::Exists { .. }) => {}
        other => panic!("a second eth0: {other:?}"),
    }
    // One passthru device per parent, and only alone on it.
    let pt = SubLink {
        name: "pt0",
        kind: SubLinkKind::Macvlan(MacvlanMode::Passthru),
        mac: None,
        ..spec
    };
    assert!(
        rh.add_sublink(&pt).await.is_err(),
        "passthru beside another macvlan"
    );
    // Deleting the parent takes its devices along, wherever they are.
    ok("delete parent", rh.delete_link(parent.index).await);
    assert!(ok("gone", rs.link("eth0").await).is_none());
}

#[tokio::test]
async fn ipvlan_devices_are_made_or_refused_naming_the_module() {
    need_root!();
    let host = PinnedNs::new("host");
    let sandbox = PinnedNs::new("sandbox");
    let rh = ok("connect host", Rtnl::connect(&host.ns).await);
    let (parent, _) = ok("veth", rh.add_veth("up0", "up1", None, MARK).await);
    let spec = SubLink {
        name: "eth0",
        parent: parent.index,
        kind: SubLinkKind::Ipvlan(IpvlanMode::L2, IpvlanFlag::Bridge),
        mac: None,
        mtu: None,
        born_in: Some(&sandbox.ns),
    };
    // A MAC of its own is refused before the kernel is asked.
    let own_mac = SubLink {
        mac: Some([2, 0, 0, 0, 0, 1]),
        ..spec
    };
    match rh.add_sublink(&own_mac).await {
        Err(SysError::Invalid { field, .. }) => assert_eq!(field, "mac address"),
        other => panic!("ipvlan with a MAC: {other:?}"),
    }
    match has(Feature::Ipvlan).await {
        Some(why) => {
            let e = rh.add_sublink(&spec).await.err().map(|e| e.to_string());
            let e = e.unwrap_or_else(|| panic!("ipvlan made although the probe said: {why}"));
            assert!(e.contains("module ipvlan"), "{e}");
            plexus_testkit::skip(&format!("this kernel has no ipvlan links ({why})"));
        }
        None => {
            ok("ipvlan", rh.add_sublink(&spec).await);
            let rs = ok("connect sandbox", Rtnl::connect(&sandbox.ns).await);
            let made = ok("in sandbox", rs.require_link("eth0").await);
            assert_eq!(made.kind.as_deref(), Some("ipvlan"));
            assert_eq!(made.mac, parent.mac);
        }
    }
}

#[tokio::test]
async fn vlan_sub_interfaces_check_their_id_and_need_8021q() {
    need_root!();
    let host = PinnedNs::new("host");
    let rh = ok("connect host", Rtnl::connect(&host.ns).await);
    let (parent, _) = ok("veth", rh.add_veth("up0", "up1", None, MARK).await);
    for bad in [0, 4095] {
        match rh.add_vlan("up0.x", parent.index, bad, MARK).await {
            Err(SysError::Invalid { field, .. }) => assert_eq!(field, "vlan id"),
            other => panic!("vlan id {bad}: {other:?}"),
        }
    }
    match has(Feature::Vlan).await {
        Some(why) => {
            let e = rh.add_vlan("up0.10", parent.index, 10, MARK).await;
            match e {
                Err(SysError::Unsupported { hint, .. }) => {
                    assert!(hint.contains("module 8021q"), "{hint}")
                }
                other => panic!("vlan made although the probe said {why}: {other:?}"),
            }
            assert!(ok("nothing made", rh.link("up0.10").await).is_none());
            plexus_testkit::skip(&format!("this kernel has no 802.1q links ({why})"));
        }
        None => {
            let vlan = ok("vlan", rh.add_vlan("up0.10", parent.index, 10, MARK).await);
            assert_eq!(vlan.kind.as_deref(), Some("vlan"));
            assert_eq!(vlan.alias.as_deref(), Some(MARK));
            assert!(vlan.up);
        }
    }
}

#[tokio::test]
async fn probing_one_link_kind_agrees_with_making_it() {
    need_root!();
    assert!(
        has(Feature::Macvlan).await.is_none(),
        "macvlan is probed missing"
    );
    assert!(has(Feature::Veth).await.is_none(), "veth is probed missing");
    match probe_link_kind(Feature::Nftables).await {
        Err(SysError::Invalid { field, .. }) => assert_eq!(field, "feature"),
        other => panic!("nftables is no link kind: {other:?}"),
    }
    // Dummy links are only tried where trying loads nothing into the machine's namespace;
    // either way the answer names the module.
    if let Some(why) = has(Feature::Dummy).await {
        assert!(
            why.contains("dummy") || why.contains("device type"),
            "{why}"
        );
    }
}
