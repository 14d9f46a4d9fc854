//! What the running kernel can do, found by trying it in a scratch namespace.
//!
//! Features are probed by making the object for real (a link of each kind) in an anonymous
//! namespace that vanishes afterwards, so the answer is the kernel's own, modules included.

use std::collections::BTreeMap;

use rtnetlink::packet_route::link::{IpVlanMode, LinkMessage};
use rtnetlink::{LinkDummy, LinkIpVlan, LinkVlan};

use crate::error::{Result, SysError};
use crate::netns::Netns;
use crate::rtnl::{BridgeSpec, Rtnl};

/// A link kind Plexus's drivers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    /// Linux bridges (the bridge driver).
    Bridge,
    /// veth pairs (every sandbox interface).
    Veth,
    /// VXLAN devices (the overlay driver).
    Vxlan,
    /// macvlan devices (the macvlan driver).
    Macvlan,
    /// ipvlan devices (the ipvlan driver).
    Ipvlan,
    /// 802.1q VLAN sub-interfaces (`-o parent=eth0.10`).
    Vlan,
    /// dummy devices (a parent for macvlan/ipvlan without a NIC).
    Dummy,
}

impl Feature {
    /// Every feature probed.
    pub const ALL: [Feature; 7] = [
        Feature::Bridge,
        Feature::Veth,
        Feature::Vxlan,
        Feature::Macvlan,
        Feature::Ipvlan,
        Feature::Vlan,
        Feature::Dummy,
    ];

    /// A name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Bridge => "bridge links",
            Feature::Veth => "veth links",
            Feature::Vxlan => "vxlan links",
            Feature::Macvlan => "macvlan links",
            Feature::Ipvlan => "ipvlan links",
            Feature::Vlan => "802.1q vlan links",
            Feature::Dummy => "dummy links",
        }
    }

    fn module(self) -> &'static str {
        match self {
            Feature::Bridge => "bridge",
            Feature::Veth => "veth",
            Feature::Vxlan => "vxlan",
            Feature::Macvlan => "macvlan",
            Feature::Ipvlan => "ipvlan",
            Feature::Vlan => "8021q",
            Feature::Dummy => "dummy",
        }
    }
}

/// The result of probing the kernel.
#[derive(Debug, Clone, Default)]
pub struct KernelFeatures {
    results: BTreeMap<Feature, Option<String>>,
}

impl KernelFeatures {
    /// Probes every [`Feature`]. Needs `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`.
    pub async fn probe() -> Result<Self> {
        let ns = Netns::anonymous()?;
        let rtnl = Rtnl::connect(&ns).await?;
        // A veth to serve as the parent of macvlan, ipvlan and vlan links.
        let parent = rtnl
            .add_veth("probe0", "probe1", None, "plexus-probe")
            .await;
        let parent_index = parent.as_ref().map(|(a, _)| a.index).ok();
        let mut results = BTreeMap::new();
        for feature in Feature::ALL {
            let outcome = match feature {
                Feature::Veth => parent.as_ref().err().map(|e| e.to_string()),
                Feature::Bridge => rtnl
                    .add_bridge(
                        &BridgeSpec {
                            name: "probebr",
                            ..Default::default()
                        },
                        "plexus-probe",
                    )
                    .await
                    .err()
                    .map(|e| e.to_string()),
                Feature::Vxlan => rtnl
                    .add_vxlan("probevx", 42, 4789, "plexus-probe")
                    .await
                    .err()
                    .map(|e| e.to_string()),
                Feature::Dummy => try_add(&rtnl, "dummy", LinkDummy::new("probedu").build()).await,
                Feature::Macvlan | Feature::Ipvlan | Feature::Vlan => match parent_index {
                    None => Some("no veth parent to probe with".into()),
                    Some(p) => match feature {
                        Feature::Macvlan => rtnl
                            .add_macvlan("probemv", p, "plexus-probe")
                            .await
                            .err()
                            .map(|e| e.to_string()),
                        Feature::Ipvlan => {
                            try_add(
                                &rtnl,
                                "ipvlan",
                                LinkIpVlan::new("probeiv", p, IpVlanMode::L2).build(),
                            )
                            .await
                        }
                        _ => try_add(&rtnl, "vlan", LinkVlan::new("probevl", p, 10).build()).await,
                    },
                },
            };
            results.insert(feature, outcome);
        }
        Ok(Self { results })
    }

    /// Whether `feature` works.
    pub fn has(&self, feature: Feature) -> bool {
        matches!(self.results.get(&feature), Some(None))
    }

    /// `Ok` if `feature` works, else [`SysError::Unsupported`] saying what the kernel said
    /// and which module provides it.
    pub fn require(&self, feature: Feature) -> Result<()> {
        match self.results.get(&feature) {
            Some(None) => Ok(()),
            Some(Some(why)) => Err(SysError::Unsupported {
                feature: feature.name().into(),
                hint: format!(
                    "creating one failed ({why}); the kernel needs the '{}' module (CONFIG for it enabled, or `modprobe {}` on the host)",
                    feature.module(),
                    feature.module()
                ),
            }),
            None => Err(SysError::Unsupported {
                feature: feature.name().into(),
                hint: "not probed".into(),
            }),
        }
    }
}

async fn try_add(rtnl: &Rtnl, what: &str, message: LinkMessage) -> Option<String> {
    rtnl.add_message(what, message)
        .await
        .err()
        .map(|e| e.to_string())
}
