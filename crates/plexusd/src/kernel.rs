//! The kernel check at start, before anything on the host changes: the release must be
//! [`MIN_KERNEL`] or later and every [`Need::Required`] feature of
//! [`KERNEL_REQUIREMENTS`](plexus_api_types::kernel::KERNEL_REQUIREMENTS) must work, or `plexusd` refuses to start, naming the feature and
//! the release. Optional features missing are logged at info level.
//!
//! # Forcing, for tests only
//!
//! - `PLEXUS_KERNEL_RELEASE=5.4.0` pretends a release, `PLEXUS_PROBE_MISSING=veth,nftables`
//!   pretends features missing ([`Overrides`]): the refusal is tested on this kernel;
//! - `PLEXUS_FORCE_NFT_FALLBACK=1` makes every nf_tables handle of the daemon delete as on
//!   kernels before 6.3 ([`Nft::force_delete_fallback_everywhere`]): that path is tested end
//!   to end, with traffic, on a kernel that has `NFT_MSG_DESTROY`.
//!
//! A daemon started with any of them says so in a warning.

use anyhow::{bail, Context, Result};
use plexus_api_types::kernel::{kernel_requirement, Need, MIN_KERNEL};
use plexus_sys::nft::Nft;
use plexus_sys::probe::{Feature, KernelFeatures, Overrides, Release};

/// The variable that forces the pre-6.3 nf_tables deletions (tests only).
pub const FORCE_NFT_FALLBACK_VAR: &str = "PLEXUS_FORCE_NFT_FALLBACK";

/// Probes the kernel (in a scratch namespace) and refuses what Plexus cannot run on.
pub async fn check() -> Result<KernelFeatures> {
    let overrides = Overrides::from_env().map_err(anyhow::Error::new)?;
    if !overrides.is_empty() {
        tracing::warn!(
            release = ?overrides.release.as_ref().map(Release::as_str),
            missing = ?overrides.missing.iter().map(|f| f.id()).collect::<Vec<_>>(),
            "pretending another kernel ({}, {}): for tests only",
            Overrides::RELEASE_VAR,
            Overrides::MISSING_VAR
        );
    }
    let mut kernel = KernelFeatures::probe_with(&overrides)
        .await
        .context("probing the kernel")?;
    if force_nft_fallback()? {
        Nft::force_delete_fallback_everywhere();
        kernel.pretend_missing(
            Feature::NftDestroy,
            format!("the pre-6.3 path forced ({FORCE_NFT_FALLBACK_VAR}=1)"),
        );
        tracing::warn!(
            "{FORCE_NFT_FALLBACK_VAR}=1: nf_tables deletions take the pre-6.3 path: for tests only"
        );
    }
    if let Some(refusal) = refusal(kernel.release(), &kernel.missing()) {
        bail!(refusal);
    }
    tracing::info!(release = %kernel.release(), "kernel supported");
    for (feature, why) in kernel.missing() {
        if let Some(r) = kernel_requirement(feature.id()) {
            tracing::info!(
                feature = feature.name(),
                provided_by = feature.source(),
                needed_for = r.needed_for,
                without = r.without,
                kernel_said = why,
                "optional kernel feature missing"
            );
        }
    }
    Ok(kernel)
}

fn force_nft_fallback() -> Result<bool> {
    match std::env::var(FORCE_NFT_FALLBACK_VAR).as_deref() {
        Err(_) | Ok("") | Ok("0") => Ok(false),
        Ok("1") => Ok(true),
        Ok(other) => bail!("invalid {FORCE_NFT_FALLBACK_VAR} {other:?}: expected 1 or 0"),
    }
}

/// Why Plexus cannot run on this kernel, naming the release and each required feature
/// missing; `None` if it can.
pub fn refusal(release: &Release, missing: &[(Feature, &str)]) -> Option<String> {
    let mut reasons = Vec::new();
    let (major, minor) = MIN_KERNEL;
    if !release.at_least(major, minor) {
        reasons.push(format!(
            "Linux {release} is older than {major}.{minor}, the oldest Plexus supports (Debian 11, Ubuntu 22.04 and RHEL 9 ship newer)"
        ));
    }
    for (feature, why) in missing {
        let Some(r) = kernel_requirement(feature.id()) else {
            continue;
        };
        if r.need == Need::Required {
            reasons.push(format!(
                "the kernel (Linux {release}) lacks {} ({}): Plexus needs it for {} (the kernel said: {why})",
                feature.name(),
                feature.source(),
                r.needed_for
            ));
        }
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_api_types::kernel::KERNEL_REQUIREMENTS;

    fn release(s: &str) -> Release {
        Release::parse(s).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn every_probed_feature_has_one_requirement_and_every_row_a_feature() {
        for f in Feature::ALL {
            let rows = KERNEL_REQUIREMENTS
                .iter()
                .filter(|r| r.feature == f.id())
                .count();
            assert_eq!(rows, 1, "{}", f.id());
        }
        for r in KERNEL_REQUIREMENTS {
            assert!(Feature::from_id(r.feature).is_some(), "{}", r.feature);
        }
    }

    #[test]
    fn supported_releases_with_everything_pass() {
        for r in [
            "5.10.0-28-amd64",
            "5.14.0-362.el9.x86_64",
            "5.15.0-91-generic",
            "6.1.0-13-cloud-amd64",
            "6.18.44-fc-v1300",
        ] {
            assert_eq!(refusal(&release(r), &[]), None, "{r}");
        }
        // Optional features missing refuse nothing.
        let optional = [
            (Feature::NftDestroy, "before 6.3"),
            (Feature::Ipvlan, "EOPNOTSUPP"),
            (Feature::Ipvs, "no family"),
            (Feature::Wireguard, "EOPNOTSUPP"),
        ];
        assert_eq!(refusal(&release("6.1.0-13-cloud-amd64"), &optional), None);
    }

    #[test]
    fn an_old_release_is_refused_naming_it_and_the_floor() {
        let why = refusal(&release("5.4.0-150-generic"), &[]).unwrap_or_default();
        assert!(
            why.contains("Linux 5.4.0-150-generic is older than 5.10, the oldest Plexus supports"),
            "{why}"
        );
        assert!(refusal(&release("5.9.16"), &[]).is_some());
    }

    #[test]
    fn a_missing_required_feature_is_refused_naming_it_and_the_release() {
        let why = refusal(
            &release("6.1.0-13-cloud-amd64"),
            &[
                (Feature::Veth, "EOPNOTSUPP"),
                (Feature::Ipvlan, "EOPNOTSUPP"),
            ],
        )
        .unwrap_or_default();
        assert!(
            why.contains("the kernel (Linux 6.1.0-13-cloud-amd64) lacks veth links (CONFIG_VETH, module veth): Plexus needs it for every sandbox interface"),
            "{why}"
        );
        assert!(!why.contains("ipvlan"), "{why}");
    }
}
