//! What the running kernel can do, found by trying it in a scratch namespace.
//!
//! Features are probed by making the object for real — a link of each kind, an nf_tables
//! table with each kind of rule the [`nft`](crate::nft) layer encodes, an ESP state, a TUN
//! device — in an anonymous namespace that vanishes afterwards, so the answer is the
//! kernel's own, modules included (the kernel loads a missing module on such a request where
//! it can), and the machine's own namespace is left as it was. (One exception is avoided:
//! loading the `dummy` module adds a `dummy0` link to the machine's namespace, so a dummy
//! link is tried only where that module is loaded or built in, or cannot be loaded.)
//!
//! [`probe_link_kind`] asks about one link kind alone, for a program about to need it (the
//! macvlan and ipvlan drivers, when a network needs ipvlan, 802.1q or dummy links).
//!
//! This is mechanism: what is there. Which features a program needs, and what it cannot do
//! without one, is the caller's business (Plexus keeps that table in
//! `plexus_api_types::kernel`).
//!
//! ```no_run
//! # async fn demo() -> plexus_sys::Result<()> {
//! use plexus_sys::probe::{Feature, KernelFeatures};
//! let kernel = KernelFeatures::probe().await?;
//! println!("Linux {}", kernel.release());
//! if let Some(why) = kernel.missing_reason(Feature::Ipvlan) {
//!     println!("no {}: {why}", Feature::Ipvlan.name());
//! }
//! # Ok(()) }
//! ```
//!
//! # Forcing, for tests
//!
//! [`Overrides`] pretends another kernel: a release (`PLEXUS_KERNEL_RELEASE=5.4.0`) and
//! features missing (`PLEXUS_PROBE_MISSING=veth,nftables`, by [`Feature::id`]). They exist
//! to test what a program does on a kernel the test machine is not; nothing else should set
//! them.

mod ask;
mod families;
mod links;
mod nftables;
mod release;

use std::collections::BTreeMap;

pub use release::Release;

use crate::error::{Result, SysError};
use crate::netns::Netns;
use crate::rtnl::Rtnl;

/// A kernel feature the probe knows how to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    /// Network namespaces.
    Netns,
    /// veth pairs.
    Veth,
    /// Linux bridges.
    Bridge,
    /// nf_tables: tables, chains, sets (concatenated, interval), elements and the filter
    /// expressions (meta, payload, bitwise, cmp, lookup, counter, verdicts).
    Nftables,
    /// nf_tables NAT: `nat` chains of `ip` and `ip6`, maps feeding `dnat`, `masquerade`.
    NftNat,
    /// Connection tracking as nf_tables reads it (`ct state`, `ct status`).
    Conntrack,
    /// nf_tables route lookups (`fib daddr type`), IPv4 and IPv6.
    NftFib,
    /// nf_tables for the `bridge` family, with `meta pkttype` and `notrack`.
    NftBridge,
    /// nf_tables verdict maps, `numgen` and `jhash` (load balancing).
    NftLoadBalancing,
    /// `NFT_MSG_DESTROY*` (Linux 6.3): deleting without failing on a missing object.
    NftDestroy,
    /// VXLAN devices.
    Vxlan,
    /// macvlan devices.
    Macvlan,
    /// ipvlan devices.
    Ipvlan,
    /// 802.1q VLAN sub-interfaces.
    Vlan,
    /// dummy devices.
    Dummy,
    /// WireGuard devices (link kind `wireguard`).
    Wireguard,
    /// IPVS (the `IPVS` generic netlink family).
    Ipvs,
    /// IPsec ESP states through xfrm netlink (`rfc4106(gcm(aes))`, transport mode).
    Esp,
    /// TUN devices (`/dev/net/tun`).
    Tun,
}

impl Feature {
    /// Every feature probed.
    pub const ALL: [Feature; 19] = [
        Feature::Netns,
        Feature::Veth,
        Feature::Bridge,
        Feature::Nftables,
        Feature::NftNat,
        Feature::Conntrack,
        Feature::NftFib,
        Feature::NftBridge,
        Feature::NftLoadBalancing,
        Feature::NftDestroy,
        Feature::Vxlan,
        Feature::Macvlan,
        Feature::Ipvlan,
        Feature::Vlan,
        Feature::Dummy,
        Feature::Wireguard,
        Feature::Ipvs,
        Feature::Esp,
        Feature::Tun,
    ];

    /// A short, stable identifier (`veth`, `nft-nat`), for tables, JSON and
    /// `PLEXUS_PROBE_MISSING`.
    pub fn id(self) -> &'static str {
        match self {
            Feature::Netns => "netns",
            Feature::Veth => "veth",
            Feature::Bridge => "bridge",
            Feature::Nftables => "nftables",
            Feature::NftNat => "nft-nat",
            Feature::Conntrack => "conntrack",
            Feature::NftFib => "nft-fib",
            Feature::NftBridge => "nft-bridge",
            Feature::NftLoadBalancing => "nft-lb",
            Feature::NftDestroy => "nft-destroy",
            Feature::Vxlan => "vxlan",
            Feature::Macvlan => "macvlan",
            Feature::Ipvlan => "ipvlan",
            Feature::Vlan => "vlan",
            Feature::Dummy => "dummy",
            Feature::Wireguard => "wireguard",
            Feature::Ipvs => "ipvs",
            Feature::Esp => "esp",
            Feature::Tun => "tun",
        }
    }

    /// The feature whose [`id`](Self::id) is `id`.
    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.id() == id)
    }

    /// A name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Netns => "network namespaces",
            Feature::Veth => "veth links",
            Feature::Bridge => "bridge links",
            Feature::Nftables => "nftables",
            Feature::NftNat => "nftables NAT",
            Feature::Conntrack => "connection tracking",
            Feature::NftFib => "nftables fib lookups",
            Feature::NftBridge => "nftables for bridges",
            Feature::NftLoadBalancing => "nftables load balancing (numgen, jhash, verdict maps)",
            Feature::NftDestroy => "NFT_MSG_DESTROY",
            Feature::Vxlan => "vxlan links",
            Feature::Macvlan => "macvlan links",
            Feature::Ipvlan => "ipvlan links",
            Feature::Vlan => "802.1q vlan links",
            Feature::Dummy => "dummy links",
            Feature::Wireguard => "WireGuard links",
            Feature::Ipvs => "IPVS",
            Feature::Esp => "IPsec ESP",
            Feature::Tun => "TUN devices",
        }
    }

    /// Where the feature comes from: the kernel options and modules that provide it
    /// (`CONFIG_VETH, module veth`), or the release that brought it.
    pub fn source(self) -> &'static str {
        match self {
            Feature::Netns => "CONFIG_NET_NS",
            Feature::Veth => "CONFIG_VETH, module veth",
            Feature::Bridge => "CONFIG_BRIDGE, module bridge",
            Feature::Nftables => "CONFIG_NF_TABLES and CONFIG_NF_TABLES_INET, module nf_tables",
            Feature::NftNat => {
                "CONFIG_NFT_NAT and CONFIG_NFT_MASQ, modules nft_chain_nat, nft_nat, nft_masq"
            }
            Feature::Conntrack => {
                "CONFIG_NF_CONNTRACK and CONFIG_NFT_CT, modules nf_conntrack, nft_ct"
            }
            Feature::NftFib => {
                "CONFIG_NFT_FIB_IPV4 and CONFIG_NFT_FIB_IPV6, modules nft_fib_ipv4, nft_fib_ipv6"
            }
            Feature::NftBridge => "CONFIG_NF_TABLES_BRIDGE and CONFIG_NFT_CT",
            Feature::NftLoadBalancing => {
                "CONFIG_NFT_NUMGEN and CONFIG_NFT_HASH, modules nft_numgen, nft_hash"
            }
            Feature::NftDestroy => "Linux 6.3 or later",
            Feature::Vxlan => "CONFIG_VXLAN, module vxlan",
            Feature::Macvlan => "CONFIG_MACVLAN, module macvlan",
            Feature::Ipvlan => "CONFIG_IPVLAN, module ipvlan",
            Feature::Vlan => "CONFIG_VLAN_8021Q, module 8021q",
            Feature::Dummy => "CONFIG_DUMMY, module dummy",
            Feature::Wireguard => "CONFIG_WIREGUARD (Linux 5.6 or later), module wireguard",
            Feature::Ipvs => "CONFIG_IP_VS, module ip_vs",
            Feature::Esp => {
                "CONFIG_XFRM_USER, CONFIG_INET_ESP and CONFIG_CRYPTO_GCM, modules xfrm_user, esp4"
            }
            Feature::Tun => "CONFIG_TUN, module tun",
        }
    }
}

/// What probing one feature found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It works.
    Present,
    /// It does not: what the kernel said.
    Missing(String),
}

/// A pretended kernel, for tests: see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// The release to report instead of `uname`'s.
    pub release: Option<Release>,
    /// Features to report missing whatever the kernel says.
    pub missing: Vec<Feature>,
}

impl Overrides {
    /// The variable that pretends a release (`5.4.0`).
    pub const RELEASE_VAR: &'static str = "PLEXUS_KERNEL_RELEASE";
    /// The variable that pretends features missing (`veth,nftables`, by [`Feature::id`]).
    pub const MISSING_VAR: &'static str = "PLEXUS_PROBE_MISSING";

    /// Reads [`RELEASE_VAR`](Self::RELEASE_VAR) and [`MISSING_VAR`](Self::MISSING_VAR);
    /// an unset or empty variable pretends nothing. A malformed value is an error naming
    /// the variable.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self::parse(
            var(Self::RELEASE_VAR).as_deref(),
            var(Self::MISSING_VAR).as_deref(),
        )
    }

    /// [`from_env`](Self::from_env) on given values.
    pub fn parse(release: Option<&str>, missing: Option<&str>) -> Result<Self> {
        let release = release
            .map(|r| {
                Release::parse(r).ok_or_else(|| SysError::Invalid {
                    field: Self::RELEASE_VAR,
                    value: r.into(),
                    reason: "expected a kernel release such as 5.10.0-28-amd64",
                })
            })
            .transpose()?;
        let missing = missing
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(|id| {
                Feature::from_id(id).ok_or_else(|| SysError::Invalid {
                    field: Self::MISSING_VAR,
                    value: id.into(),
                    reason: "not a feature id (netns, veth, bridge, nftables, nft-nat, conntrack, nft-fib, nft-bridge, nft-lb, nft-destroy, vxlan, macvlan, ipvlan, vlan, dummy, wireguard, ipvs, esp, tun)",
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { release, missing })
    }

    /// Whether it pretends anything.
    pub fn is_empty(&self) -> bool {
        self.release.is_none() && self.missing.is_empty()
    }
}

/// The result of probing the kernel: its release and, for every [`Feature`], whether it
/// works.
#[derive(Debug, Clone)]
pub struct KernelFeatures {
    release: Release,
    results: BTreeMap<Feature, Outcome>,
}

impl KernelFeatures {
    /// Probes every [`Feature`]. Needs `CAP_SYS_ADMIN` and `CAP_NET_ADMIN`: without them
    /// (making the scratch namespace is refused with `EPERM`) it fails rather than report
    /// features missing.
    pub async fn probe() -> Result<Self> {
        Self::probe_with(&Overrides::default()).await
    }

    /// [`probe`](Self::probe), then what `overrides` pretends.
    pub async fn probe_with(overrides: &Overrides) -> Result<Self> {
        let release = match &overrides.release {
            Some(r) => r.clone(),
            None => Release::current()?,
        };
        let mut results = BTreeMap::new();
        match Netns::anonymous() {
            Ok(ns) => {
                results.insert(Feature::Netns, Outcome::Present);
                // The module lists are the running kernel's, whatever release is pretended.
                let running = Release::current()?;
                results.extend(Self::probe_in(&ns, running.as_str()).await);
            }
            Err(SysError::Netns { source, .. })
                if source.raw_os_error() == Some(nix::libc::EPERM) =>
            {
                return Err(SysError::Netns {
                    path: "(scratch namespace for probing the kernel)".into(),
                    op: "unshare (needs root: CAP_SYS_ADMIN and CAP_NET_ADMIN)",
                    source,
                });
            }
            Err(e) => {
                results.insert(Feature::Netns, Outcome::Missing(e.to_string()));
                for f in Feature::ALL.into_iter().filter(|f| *f != Feature::Netns) {
                    results.insert(
                        f,
                        Outcome::Missing("no network namespace to probe in".into()),
                    );
                }
            }
        }
        let mut found = Self { release, results };
        for f in &overrides.missing {
            found.pretend_missing(
                *f,
                format!("pretended missing ({})", Overrides::MISSING_VAR),
            );
        }
        Ok(found)
    }

    async fn probe_in(ns: &Netns, release: &str) -> Vec<(Feature, Outcome)> {
        let mut out = match Rtnl::connect(ns).await {
            Ok(rtnl) => links::probe(&rtnl, release).await,
            Err(e) => {
                let why = format!("no rtnetlink socket: {e}");
                [
                    Feature::Veth,
                    Feature::Bridge,
                    Feature::Vxlan,
                    Feature::Macvlan,
                    Feature::Ipvlan,
                    Feature::Vlan,
                    Feature::Dummy,
                    Feature::Wireguard,
                ]
                .into_iter()
                .map(|f| (f, Outcome::Missing(why.clone())))
                .collect()
            }
        };
        let ns = ns.clone();
        let blocking = tokio::task::spawn_blocking(move || {
            let mut v = nftables::probe(&ns);
            v.push(families::ipvs(&ns));
            v.push(families::esp(&ns));
            v.push(families::tun(&ns));
            v
        })
        .await;
        match blocking {
            Ok(v) => out.extend(v),
            Err(e) => tracing::warn!(error = %e, "kernel probe task failed"),
        }
        out
    }

    /// The kernel's release (or the one pretended).
    pub fn release(&self) -> &Release {
        &self.release
    }

    /// Whether `feature` works.
    pub fn has(&self, feature: Feature) -> bool {
        matches!(self.results.get(&feature), Some(Outcome::Present))
    }

    /// Why `feature` does not work (what the kernel said), or `None` if it does.
    pub fn missing_reason(&self, feature: Feature) -> Option<&str> {
        match self.results.get(&feature) {
            Some(Outcome::Present) => None,
            Some(Outcome::Missing(why)) => Some(why),
            None => Some("not probed"),
        }
    }

    /// Every feature that does not work, with why, in [`Feature::ALL`]'s order.
    pub fn missing(&self) -> Vec<(Feature, &str)> {
        Feature::ALL
            .into_iter()
            .filter_map(|f| self.missing_reason(f).map(|why| (f, why)))
            .collect()
    }

    /// Records `feature` as missing, for `why` (tests pretending an older kernel; a caller
    /// that forces a fallback).
    pub fn pretend_missing(&mut self, feature: Feature, why: impl Into<String>) {
        self.results.insert(feature, Outcome::Missing(why.into()));
    }

    /// `Ok` if `feature` works, else [`SysError::Unsupported`] saying what the kernel said
    /// and what provides it.
    pub fn require(&self, feature: Feature) -> Result<()> {
        match self.missing_reason(feature) {
            None => Ok(()),
            Some(why) => Err(unsupported(feature, why)),
        }
    }
}

/// Probes one link kind alone (veth, bridge, vxlan, macvlan, ipvlan, vlan, dummy,
/// wireguard), in a scratch namespace of its own, then what [`Overrides::from_env`] pretends:
/// for a program about to need the kind (a driver asked for an ipvlan network), which wants
/// the kernel's answer now (a module may have been loaded since start) without probing every
/// feature. [`SysError::Invalid`] for a feature that is not a link kind, or a malformed
/// override; a namespace that cannot be made is an error, as for
/// [`KernelFeatures::probe`].
pub async fn probe_link_kind(feature: Feature) -> Result<Outcome> {
    if !links::KINDS.contains(&feature) {
        return Err(SysError::Invalid {
            field: "feature",
            value: feature.id().into(),
            reason: "not a link kind",
        });
    }
    let overrides = Overrides::from_env()?;
    if overrides.missing.contains(&feature) {
        return Ok(Outcome::Missing(format!(
            "pretended missing ({})",
            Overrides::MISSING_VAR
        )));
    }
    let ns = Netns::anonymous()?;
    let rtnl = Rtnl::connect(&ns).await?;
    let release = Release::current()?;
    Ok(links::probe_one(&rtnl, release.as_str(), feature)
        .await
        .unwrap_or_else(|| Outcome::Missing("not a link kind".into())))
}

/// [`KernelFeatures::require`] for one probed [`Outcome`]: `Ok` if present, else
/// [`SysError::Unsupported`] naming the feature, what the kernel said and the kernel option
/// and module that provide it.
pub fn require(feature: Feature, outcome: &Outcome) -> Result<()> {
    match outcome {
        Outcome::Present => Ok(()),
        Outcome::Missing(why) => Err(unsupported(feature, why)),
    }
}

fn unsupported(feature: Feature, why: &str) -> SysError {
    SysError::Unsupported {
        feature: feature.name().into(),
        hint: format!(
            "trying it failed ({why}); it needs {} (a kernel built with it, or `modprobe` of the module on the host)",
            feature.source()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_round_trip() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_id(f.id()), Some(f));
            assert!(!f.source().is_empty() && !f.name().is_empty());
        }
        let mut ids: Vec<_> = Feature::ALL.iter().map(|f| f.id()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), Feature::ALL.len());
    }

    #[test]
    fn overrides_parse_and_name_the_variable_when_wrong() {
        let o = Overrides::parse(Some("5.4.0"), Some("veth, nftables")).unwrap();
        assert_eq!(o.release.as_ref().map(|r| (r.major, r.minor)), Some((5, 4)));
        assert_eq!(o.missing, vec![Feature::Veth, Feature::Nftables]);
        assert!(Overrides::parse(None, None).unwrap().is_empty());
        let e = Overrides::parse(Some("five"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("PLEXUS_KERNEL_RELEASE") && e.contains("five"),
            "{e}"
        );
        let e = Overrides::parse(None, Some("veth,warp"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("PLEXUS_PROBE_MISSING") && e.contains("warp"),
            "{e}"
        );
    }

    #[test]
    fn pretended_features_are_missing_and_required_ones_say_where_they_come_from() {
        let mut k = KernelFeatures {
            release: Release::parse("6.1.0").unwrap(),
            results: Feature::ALL
                .into_iter()
                .map(|f| (f, Outcome::Present))
                .collect(),
        };
        assert!(k.missing().is_empty());
        k.pretend_missing(Feature::Veth, "pretended");
        assert!(!k.has(Feature::Veth));
        assert_eq!(k.missing(), vec![(Feature::Veth, "pretended")]);
        let e = k.require(Feature::Veth).unwrap_err().to_string();
        assert!(e.contains("veth links") && e.contains("module veth"), "{e}");
    }
}
