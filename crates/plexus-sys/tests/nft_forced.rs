//! `Nft::force_delete_fallback_everywhere`: every handle opened afterwards deletes as on
//! kernels before 6.3. A test binary of its own, since the switch is process-wide.

use plexus_sys::nft::{Family, Nft};

#[macro_use]
mod common;
use common::{ok, PinnedNs};

#[test]
fn handles_opened_after_the_switch_take_the_pre_6_3_path() {
    need_root!();
    let ns = PinnedNs::new("forced");
    let before = ok("nft", Nft::open(&ns.ns));
    Nft::force_delete_fallback_everywhere();
    let after = ok("nft", Nft::open(&ns.ns));
    assert!(!ok("has_destroy", after.has_destroy()), "forced handle");
    // A handle opened before keeps what the kernel says.
    let release = ok(
        "osrelease",
        std::fs::read_to_string("/proc/sys/kernel/osrelease"),
    );
    let kernel_has_it = plexus_sys::probe::Release::parse(&release)
        .map(|r| r.at_least(6, 3))
        .unwrap_or(false);
    assert_eq!(ok("has_destroy", before.has_destroy()), kernel_has_it);
    // Destroys of missing and present objects, mixed with additions, in one batch.
    let mut b = after.batch();
    b.add_table(Family::Inet, "kept");
    b.add_table(Family::Inet, "gone");
    ok("add", after.apply(b));
    let mut b = after.batch();
    b.destroy_table(Family::Inet, "gone");
    b.destroy_table(Family::Inet, "never-made");
    b.add_chain(Family::Inet, "kept", "c", None);
    ok("destroy on the fallback path", after.apply(b));
    let tables = ok("tables", after.tables());
    assert!(
        tables.contains(&(Family::Inet, "kept".to_string())),
        "{tables:?}"
    );
    assert!(
        !tables.contains(&(Family::Inet, "gone".to_string())),
        "{tables:?}"
    );
}
