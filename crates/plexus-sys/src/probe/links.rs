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

/// Whether `file` (`modules.dep`, `modules.builtin`) of the running kernel's modules lists
/// `module`.
fn listed(release: &str, file: &str, module: &str) -> bool {
    let path = std::path::Path::new("/lib/modules")
        .join(release)
        .join(file);
    std::fs::read_to_string(path).is_ok_and(|text| lists(&text, module))
}

/// Whether a module list (`path/name.ko[.xz|.zst][: deps]` per line) has `module`.
fn lists(text: &str, module: &str) -> bool {
    let want = format!("/{module}.ko");
    text.lines().any(|l| {
        let name = l.split(':').next().unwrap_or_default();
        name.ends_with(&want) || name.contains(&format!("{want}."))
    })
}

/// Why making a dummy link is not tried, if it is not: loading the `dummy` module makes a
/// `dummy0` link in the machine's own namespace (its `numdummies` is 1), so the probe tries
/// only when the module is loaded or built in, or when nothing says it is a module that
/// could be loaded (the kernel then loads nothing).
fn dummy_untried(release: &str) -> Option<String> {
    let loaded = std::path::Path::new("/sys/module/dummy").exists();
    if loaded || listed(release, "modules.builtin", "dummy") {
        return None;
    }
    listed(release, "modules.dep", "dummy").then(|| {
        "not loaded, and not tried: loading module dummy adds a dummy0 link to the host (`modprobe dummy` first)".to_string()
    })
}

/// Probes every link kind of [`Feature`] in the namespace `rtnl` talks to, on the kernel
/// `release` (for its module lists).
pub(super) async fn probe(rtnl: &Rtnl, release: &str) -> Vec<(Feature, Outcome)> {
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
    let dummy = match dummy_untried(release) {
        Some(why) => Outcome::Missing(why),
        None => try_add(rtnl, "dummy", LinkDummy::new("probedu").build()).await,
    };
    out.push((Feature::Dummy, dummy));
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

/// The link kinds [`probe_one`] tries.
pub(super) const KINDS: [Feature; 8] = [
    Feature::Veth,
    Feature::Bridge,
    Feature::Vxlan,
    Feature::Macvlan,
    Feature::Ipvlan,
    Feature::Vlan,
    Feature::Dummy,
    Feature::Wireguard,
];

/// Probes the one link kind `feature` in the namespace `rtnl` talks to (a veth made first
/// where the kind needs a parent); `None` if `feature` is not a link kind.
pub(super) async fn probe_one(rtnl: &Rtnl, release: &str, feature: Feature) -> Option<Outcome> {
    let parent = || async {
        rtnl.add_veth("probe0", "probe1", None, ALIAS)
            .await
            .map(|(a, _)| a.index)
    };
    let on_parent = |what: &'static str| async move {
        match parent().await {
            Ok(p) => Ok(p),
            Err(e) => Err(Outcome::Missing(format!(
                "no veth parent to probe {what} with: {e}"
            ))),
        }
    };
    let outcome = match feature {
        Feature::Veth => outcome(parent().await),
        Feature::Bridge => outcome(
            rtnl.add_bridge(
                &BridgeSpec {
                    name: "probebr",
                    ..Default::default()
                },
                ALIAS,
            )
            .await,
        ),
        Feature::Vxlan => outcome(rtnl.add_vxlan("probevx", 42, 4789, ALIAS).await),
        Feature::Dummy => match dummy_untried(release) {
            Some(why) => Outcome::Missing(why),
            None => try_add(rtnl, "dummy", LinkDummy::new("probedu").build()).await,
        },
        Feature::Wireguard => {
            try_add(rtnl, "wireguard", LinkWireguard::new("probewg").build()).await
        }
        Feature::Macvlan => match on_parent("macvlan").await {
            Ok(p) => outcome(rtnl.add_macvlan("probemv", p, ALIAS).await),
            Err(o) => o,
        },
        Feature::Ipvlan => match on_parent("ipvlan").await {
            Ok(p) => {
                let m = LinkIpVlan::new("probeiv", p, IpVlanMode::L2).build();
                try_add(rtnl, "ipvlan", m).await
            }
            Err(o) => o,
        },
        Feature::Vlan => match on_parent("vlan").await {
            Ok(p) => try_add(rtnl, "vlan", LinkVlan::new("probevl", p, 10).build()).await,
            Err(o) => o,
        },
        _ => return None,
    };
    Some(outcome)
}

#[cfg(test)]
mod tests {
    #[test]
    fn module_lists_are_read_by_name() {
        let dep = "kernel/drivers/net/dummy.ko.zst:\nkernel/drivers/net/macvlan.ko: kernel/net/core/x.ko\n";
        assert!(super::lists(dep, "dummy"));
        assert!(super::lists(dep, "macvlan"));
        assert!(!super::lists(dep, "vlan"));
        assert!(super::lists("kernel/drivers/net/dummy.ko\n", "dummy"));
        assert!(!super::lists("kernel/drivers/net/nodummy.ko\n", "dummy"));
    }
}
