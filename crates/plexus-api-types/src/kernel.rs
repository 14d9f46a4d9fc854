//! What Plexus needs of the kernel: the policy over `plexus_sys::probe`, which only finds
//! what works. `plexusd` refuses to start without a [`Need::Required`] feature or below
//! [`MIN_KERNEL`]; `plexus doctor` reports every feature with what it is for. Both read this
//! one table; it sits here, with no I/O, because these two binaries share this crate and
//! nothing heavier (the probe's crate is mechanism and knows no driver).
//!
//! Features are named by `plexus_sys::probe::Feature::id` (`veth`, `nft-nat`); a test in
//! `plexusd` checks that every probed feature has exactly one row.

/// The oldest kernel Plexus supports (`MAJOR`, `MINOR`): Linux 5.10 (Debian 11; Ubuntu 22.04
/// has 5.15, RHEL 9 5.14, Debian 12 6.1).
pub const MIN_KERNEL: (u32, u32) = (5, 10);

/// The first kernel with `NFT_MSG_DESTROY` (Linux 6.3); before it Plexus deletes nf_tables
/// objects in the older form.
pub const DESTROY_KERNEL: (u32, u32) = (6, 3);

/// How much Plexus needs a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `plexusd` does not start without it.
    Required,
    /// Something Plexus has or plans (a driver, an option) needs it; the rest runs without.
    Optional,
    /// Nothing in Plexus needs it (probed because users ask about it).
    Unneeded,
}

/// One feature and what Plexus does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelRequirement {
    /// The feature (`plexus_sys::probe::Feature::id`).
    pub feature: &'static str,
    /// How much Plexus needs it.
    pub need: Need,
    /// What needs it, to follow "Plexus needs it for …" (`every sandbox interface`).
    pub needed_for: &'static str,
    /// What happens without it.
    pub without: &'static str,
}

const fn row(
    feature: &'static str,
    need: Need,
    needed_for: &'static str,
    without: &'static str,
) -> KernelRequirement {
    KernelRequirement {
        feature,
        need,
        needed_for,
        without,
    }
}

/// Every probed feature, required ones first.
pub const KERNEL_REQUIREMENTS: &[KernelRequirement] = &[
    row(
        "netns",
        Need::Required,
        "every sandbox (each is a network namespace)",
        "plexusd does not start",
    ),
    row(
        "veth",
        Need::Required,
        "every sandbox interface on a bridge network",
        "plexusd does not start",
    ),
    row(
        "bridge",
        Need::Required,
        "the bridge driver and the default `bridge` network",
        "plexusd does not start",
    ),
    row(
        "nftables",
        Need::Required,
        "isolation between networks and the forward filter (table inet plexus)",
        "plexusd does not start",
    ),
    row(
        "nft-nat",
        Need::Required,
        "published ports and masqueraded egress (tables ip and ip6 plexus-nat)",
        "plexusd does not start",
    ),
    row(
        "conntrack",
        Need::Required,
        "replies to egress and to published ports (ct state, ct status)",
        "plexusd does not start",
    ),
    row(
        "nft-fib",
        Need::Required,
        "published ports on the host's own addresses (fib daddr type local)",
        "plexusd does not start",
    ),
    row(
        "nft-destroy",
        Need::Optional,
        "deleting nf_tables objects in one message",
        "Plexus deletes what a dump shows present, in the same atomic batch (the form kernels before 6.3 take): nothing is lost",
    ),
    row(
        "nft-bridge",
        Need::Optional,
        "leaving frames switched between sandboxes untracked (table bridge plexus)",
        "with br_netfilter on, frames between sandboxes of one network are tracked: slower, still correct",
    ),
    row(
        "nft-lb",
        Need::Optional,
        "service load balancing in kube-proxy's nftables manner (not built yet)",
        "no service load balancing once it is built",
    ),
    row(
        "vxlan",
        Need::Optional,
        "the overlay driver (not built yet)",
        "no overlay networks",
    ),
    row(
        "macvlan",
        Need::Optional,
        "the macvlan driver",
        "no macvlan networks (`network create -d macvlan` is refused naming the module)",
    ),
    row(
        "ipvlan",
        Need::Optional,
        "the ipvlan driver",
        "no ipvlan networks (`network create -d ipvlan` is refused naming the module)",
    ),
    row(
        "vlan",
        Need::Optional,
        "`-o parent=IF.VLAN` of the macvlan and ipvlan drivers (the sub-interface made by Plexus)",
        "no 802.1q sub-interfaces made as parents (one that exists already still serves)",
    ),
    row(
        "dummy",
        Need::Optional,
        "macvlan and ipvlan networks without `-o parent` (a dummy parent, as dockerd makes)",
        "such networks need a parent interface (`--internal` ones get a veth pair of Plexus's own instead)",
    ),
    row(
        "esp",
        Need::Optional,
        "Docker-format encrypted overlays (IPsec ESP, dockerd's `-o encrypted`; not built yet)",
        "no Docker-format encrypted overlays",
    ),
    row(
        "wireguard",
        Need::Optional,
        "kernel WireGuard for `-o encrypted` overlays (not built yet)",
        "encryption runs WireGuard in userspace over TUN instead",
    ),
    row(
        "tun",
        Need::Optional,
        "userspace WireGuard for `-o encrypted` overlays where the kernel has none (not built yet)",
        "no encryption without kernel WireGuard",
    ),
    row(
        "ipvs",
        Need::Unneeded,
        "nothing: Plexus load-balances in nftables, not IPVS (Docker's swarm routing mesh uses IPVS)",
        "nothing is lost",
    ),
];

/// The row of `feature`, by id.
pub fn kernel_requirement(feature: &str) -> Option<&'static KernelRequirement> {
    KERNEL_REQUIREMENTS.iter().find(|r| r.feature == feature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_unique_and_required_ones_come_first() {
        let mut ids: Vec<_> = KERNEL_REQUIREMENTS.iter().map(|r| r.feature).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), KERNEL_REQUIREMENTS.len());
        let first_other = KERNEL_REQUIREMENTS
            .iter()
            .position(|r| r.need != Need::Required)
            .unwrap_or(KERNEL_REQUIREMENTS.len());
        assert!(KERNEL_REQUIREMENTS[first_other..]
            .iter()
            .all(|r| r.need != Need::Required));
        assert_eq!(
            kernel_requirement("veth").map(|r| r.need),
            Some(Need::Required)
        );
        assert!(kernel_requirement("warp").is_none());
        assert!(MIN_KERNEL < DESTROY_KERNEL);
    }
}
