//! Link kinds, probed by making one of each in the scratch namespace.

use rtnetlink::packet_route::link::{IpVlanMode, LinkMessage};
use rtnetlink::{LinkDummy, LinkIpVlan, LinkVlan, LinkWireguard};

use super::{Feature, Outcome};
use crate::rtnl::{BridgeSpec, Rtnl};

/// The alias of every probe link (they vanish with the scratch namespace anyway).
const ALIAS: &str = "plexus-probe";

fn outcome<T>(r: crate::Result<T>) -> Outcome {
    match r {
        Ok(_) => Outcome::Present,
        Err(e) => Outcome::Missing(e.to_string()),
    }
}

async fn try_add(rtnl: &Rtnl, what: &str, message: LinkMessage) -> Outcome {
    outcome(rtnl.add_message(what, message).await)
}

/// Probes every link kind of [`Feature`] in the namespace `rtnl` talks to.
pub(super) async fn probe(rtnl: &Rtnl) -> Vec<(Feature, Outcome)> {
    // A veth to serve as the parent of macvlan, ipvlan and vlan links.
    let parent = rtnl.add_veth("probe0", "probe1", None, ALIAS).await;
    let parent_index = parent.as_ref().map(|(a, _)| a.index).ok();
    let mut out = vec![(Feature::Veth, outcome(parent))];
    let bridge = rtnl
        .add_bridge(
            &BridgeSpec {
                name: "probebr",
                ..Default::default()
            },
            ALIAS,
        )
        .await;
    out.push((Feature::Bridge, outcome(bridge)));
    let vxlan = rtnl.add_vxlan("probevx", 42, 4789, ALIAS).await;
    out.push((Feature::Vxlan, outcome(vxlan)));
    out.push((
        Feature::Dummy,
        try_add(rtnl, "dummy", LinkDummy::new("probedu").build()).await,
    ));
    out.push((
        Feature::Wireguard,
        try_add(rtnl, "wireguard", LinkWireguard::new("probewg").build()).await,
    ));
    let no_parent = || Outcome::Missing("no veth parent to probe with".into());
    let (macvlan, ipvlan, vlan) = match parent_index {
        None => (no_parent(), no_parent(), no_parent()),
        Some(p) => (
            outcome(rtnl.add_macvlan("probemv", p, ALIAS).await),
            try_add(
                rtnl,
                "ipvlan",
                LinkIpVlan::new("probeiv", p, IpVlanMode::L2).build(),
            )
            .await,
            try_add(rtnl, "vlan", LinkVlan::new("probevl", p, 10).build()).await,
        ),
    };
    out.push((Feature::Macvlan, macvlan));
    out.push((Feature::Ipvlan, ipvlan));
    out.push((Feature::Vlan, vlan));
    out
}
