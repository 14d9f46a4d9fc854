//! A network's segment on this host: its namespace, pinned under the driver's run directory,
//! with a bridge and the VXLAN device on it; made at the first join, removed with the last
//! leave.

use plexus_cnm::DriverError;
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{BridgeSpec, Rtnl, VxlanSpec, LOOPBACK_IFINDEX, VXLAN_OVERHEAD};
use plexus_sys::{sysctl, SysError};

use super::{
    bridge_alias, netns_name, vxlan_alias, NetState, OverlayDriver, Segment, BRIDGE, VXLAN,
};
use crate::sys_ctx;

/// The MTU when the underlay interface cannot be found: Ethernet's less VXLAN's overhead.
const FALLBACK_MTU: u32 = 1500 - VXLAN_OVERHEAD;

impl OverlayDriver {
    /// The MTU of a network's interfaces: its option, or the underlay interface's less 50.
    async fn mtu(&self, net: &NetState) -> u32 {
        if let Some(mtu) = net.mtu {
            return mtu;
        }
        let advertise = self.advertise();
        let underlay = async {
            let index = self.rtnl.address_owner(advertise).await?;
            let links = self.rtnl.links().await?;
            Ok::<_, SysError>(
                index.and_then(|i| links.into_iter().find(|l| l.index == i).and_then(|l| l.mtu)),
            )
        }
        .await;
        match underlay {
            Ok(Some(mtu)) if mtu > VXLAN_OVERHEAD + 68 => mtu - VXLAN_OVERHEAD,
            other => {
                tracing::warn!(%advertise, ?other, "no underlay interface found for the advertised address; MTU {FALLBACK_MTU}");
                FALLBACK_MTU
            }
        }
    }

    /// Makes the network's segment: its namespace (one an earlier run left is removed
    /// first), `lo` up, the bridge, the VXLAN device born inside from the underlay's
    /// connection, on the bridge, both up. A failure removes what was made.
    pub(super) async fn make_segment(&self, net: &NetState) -> Result<Segment, DriverError> {
        let id = &net.info.id;
        self.remove_namespace(id).await?;
        let name = netns_name(id);
        let ns = Netns::create(&self.run_dir, &name).map_err(sys_ctx(format!(
            "namespace of overlay network {}",
            net.info.name
        )))?;
        // Docker's neighbour table limits for an overlay namespace: its entries are the whole
        // network's endpoints.
        for family in ["ipv4", "ipv6"] {
            for (knob, value) in [
                ("gc_thresh1", "8192"),
                ("gc_thresh2", "49152"),
                ("gc_thresh3", "65536"),
            ] {
                let key = format!("net.{family}.neigh.default.{knob}");
                if let Err(e) = sysctl::write(&ns, &key, value) {
                    tracing::debug!(%key, error = %e, "neighbour limit not raised");
                }
            }
        }
        let mtu = self.mtu(net).await;
        let made = async {
            let rtnl = Rtnl::connect(&ns).await?;
            rtnl.set_up(LOOPBACK_IFINDEX).await?;
            let bridge = rtnl
                .add_bridge(
                    &BridgeSpec {
                        name: BRIDGE,
                        mtu: Some(mtu),
                        mac: None,
                        mcast_snooping: false,
                    },
                    &bridge_alias(&self.marker, id),
                )
                .await?;
            let spec = VxlanSpec {
                mtu: Some(mtu),
                ..VxlanSpec::overlay(VXLAN, net.vni, Some(self.advertise()))
            };
            let vxlan = self
                .rtnl
                .add_vxlan_spec(&spec, Some(&rtnl), &vxlan_alias(&self.marker, id))
                .await?;
            rtnl.set_master(vxlan.index, bridge.index).await?;
            rtnl.set_up(vxlan.index).await?;
            rtnl.set_up(bridge.index).await?;
            Ok::<_, SysError>(Segment {
                rtnl,
                bridge: bridge.index,
                vxlan: vxlan.index,
                mtu,
            })
        }
        .await;
        match made {
            Ok(segment) => {
                tracing::info!(network = %net.info.name, vni = net.vni, mtu, "overlay segment made");
                Ok(segment)
            }
            Err(e) => {
                if let Err(u) = self.remove_namespace(id).await {
                    tracing::warn!(network = %net.info.name, error = %u, "undo: segment not removed; reconciliation removes it");
                }
                Err(sys_ctx(format!(
                    "segment of overlay network {} (VXLAN id {})",
                    net.info.name, net.vni
                ))(e))
            }
        }
    }

    /// Takes the network's segment down: stops receiving its tables, then removes the
    /// namespace (the VXLAN device first, so its id is free on the underlay at once).
    pub(super) async fn close_segment(&self, network_id: &str, segment: Segment) {
        self.plane.leave_network(network_id);
        if let Err(e) = segment.rtnl.delete_link(segment.vxlan).await {
            tracing::debug!(network = %network_id, error = %e, "vxlan device not deleted");
        }
        drop(segment);
        if let Err(e) = self.remove_namespace(network_id).await {
            tracing::warn!(network = %network_id, error = %e, "segment not removed; reconciliation removes it");
        }
    }

    /// Removes a network's namespace if it is pinned. Idempotent.
    pub(super) async fn remove_namespace(&self, network_id: &str) -> Result<(), DriverError> {
        self.remove_pinned(&netns_name(network_id)).await
    }

    /// Removes the namespace pinned as `name` in the run directory, if any: its links first,
    /// the VXLAN device before the rest (the kernel deletes a namespace's links only once it
    /// has let go of the namespace, and until then the VXLAN id stays taken on the underlay
    /// and the sandbox ends of its veth pairs keep their names), then the pin.
    pub(super) async fn remove_pinned(&self, name: &str) -> Result<(), DriverError> {
        let path = self.run_dir.join(name);
        if !path.exists() {
            return Ok(());
        }
        if let Ok(ns) = Netns::open(&path) {
            if let Ok(rtnl) = Rtnl::connect(&ns).await {
                let mut links = rtnl.links().await.unwrap_or_default();
                links.retain(|l| l.index != LOOPBACK_IFINDEX);
                links.sort_by_key(|l| l.name != VXLAN);
                for link in links {
                    if let Err(e) = rtnl.delete_link(link.index).await {
                        tracing::debug!(namespace = %name, link = %link.name, error = %e, "link not deleted");
                    }
                }
            }
        }
        Netns::delete(&self.run_dir, name)
            .map_err(sys_ctx(format!("overlay namespace {}", path.display())))
    }

    /// The segment pinned for `net` by an earlier run, if its bridge and VXLAN device carry
    /// their marks and the device is on the bridge.
    pub(super) async fn adopt_segment(&self, net: &NetState) -> Option<Segment> {
        let path = self.run_dir.join(netns_name(&net.info.id));
        if !path.exists() {
            return None;
        }
        let rtnl = Rtnl::connect(&Netns::open(&path).ok()?).await.ok()?;
        let links = rtnl.links().await.ok()?;
        let bridge_mark = bridge_alias(&self.marker, &net.info.id);
        let vxlan_mark = vxlan_alias(&self.marker, &net.info.id);
        let bridge = links
            .iter()
            .find(|l| l.name == BRIDGE && l.alias.as_deref() == Some(bridge_mark.as_str()))?;
        let vxlan = links.iter().find(|l| {
            l.name == VXLAN
                && l.alias.as_deref() == Some(vxlan_mark.as_str())
                && l.master == Some(bridge.index)
        })?;
        Some(Segment {
            bridge: bridge.index,
            vxlan: vxlan.index,
            mtu: bridge.mtu.unwrap_or(FALLBACK_MTU),
            rtnl,
        })
    }

    /// Whether a segment in memory still has its bridge and VXLAN device.
    pub(super) async fn segment_intact(&self, segment: &Segment) -> bool {
        match segment.rtnl.links().await {
            Ok(links) => [segment.bridge, segment.vxlan]
                .iter()
                .all(|i| links.iter().any(|l| l.index == *i && l.up)),
            Err(_) => false,
        }
    }
}
