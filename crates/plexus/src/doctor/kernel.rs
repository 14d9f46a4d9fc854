//! The kernel: its release and every feature Plexus uses or could use.

use plexus_api_types::kernel::{Need, DESTROY_KERNEL, KERNEL_REQUIREMENTS, MIN_KERNEL};
use plexus_sys::probe::{Feature, KernelFeatures, Overrides, Release};

use super::{Check, Status};

/// What to do to get `feature`.
fn how_to_get(feature: Feature) -> String {
    let source = feature.source();
    if source.contains("module") {
        format!(
            "the kernel needs {source}: load the module (modprobe) or use a kernel built with it"
        )
    } else {
        format!("needs {source}")
    }
}

/// The release, then one check per feature (required ones first).
pub(super) async fn checks() -> Vec<Check> {
    let overrides = match Overrides::from_env() {
        Ok(o) => o,
        Err(e) => return vec![Check::new("kernel", Status::Fail, e.to_string())],
    };
    let running = match &overrides.release {
        Some(r) => Ok(r.clone()),
        None => Release::current(),
    };
    let mut out = vec![match &running {
        Ok(r) => release(r, !overrides.is_empty()),
        Err(e) => Check::new(
            "kernel",
            Status::Fail,
            format!("kernel release unknown: {e}"),
        ),
    }];
    match KernelFeatures::probe_with(&overrides).await {
        Ok(kernel) => out.extend(features(&kernel)),
        Err(e) => out.push(
            Check::new(
                "features",
                Status::Fail,
                format!("kernel features not probed: {e}"),
            )
            .fix("run plexus doctor as root, as plexusd runs"),
        ),
    }
    out
}

fn release(release: &Release, pretended: bool) -> Check {
    let (major, minor) = MIN_KERNEL;
    let pretend = if pretended {
        format!(
            " (pretended: {} / {}, for tests)",
            Overrides::RELEASE_VAR,
            Overrides::MISSING_VAR
        )
    } else {
        String::new()
    };
    if !release.at_least(major, minor) {
        return Check::new(
            "kernel",
            Status::Fail,
            format!("kernel: Linux {release} is older than {major}.{minor}, the oldest Plexus supports{pretend}"),
        )
        .fix(format!("upgrade to Linux {major}.{minor} or later (Debian 11, Ubuntu 22.04, RHEL 9 or newer)"));
    }
    let (dmajor, dminor) = DESTROY_KERNEL;
    let note = if release.at_least(dmajor, dminor) {
        String::new()
    } else {
        format!("; before {dmajor}.{dminor}, nf_tables objects are deleted in the older form")
    };
    Check::new(
        "kernel",
        Status::Ok,
        format!("kernel: Linux {release}: supported (Plexus supports {major}.{minor} and later{note}){pretend}"),
    )
}

fn features(kernel: &KernelFeatures) -> Vec<Check> {
    let mut out = Vec::new();
    for req in KERNEL_REQUIREMENTS {
        let Some(feature) = Feature::from_id(req.feature) else {
            continue;
        };
        let id = format!("feature:{}", feature.id());
        let name = feature.name();
        let check = match (kernel.missing_reason(feature), req.need) {
            (None, Need::Unneeded) => Check::new(
                id,
                Status::Ok,
                format!("{name}: present; Plexus needs it for {}", req.needed_for),
            ),
            (None, _) => Check::new(
                id,
                Status::Ok,
                format!("{name}: present, for {}", req.needed_for),
            ),
            (Some(why), Need::Required) => Check::new(
                id,
                Status::Fail,
                format!(
                    "{name}: missing ({why}): Plexus needs it for {}; plexusd will not start",
                    req.needed_for
                ),
            )
            .fix(how_to_get(feature)),
            (Some(why), Need::Optional) => Check::new(
                id,
                Status::Warn,
                format!(
                    "{name}: missing ({why}): blocks {}; without it, {}",
                    req.needed_for, req.without
                ),
            )
            .fix(how_to_get(feature)),
            (Some(_), Need::Unneeded) => Check::new(
                id,
                Status::Ok,
                format!("{name}: missing: blocks {}", req.needed_for),
            ),
        };
        out.push(check);
    }
    out
}
