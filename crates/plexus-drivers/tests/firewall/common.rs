//! Helpers shared by the kernel tests: the root requirement, pinned namespaces removed on drop.

#![allow(dead_code)]

use plexus_sys::rtnl::Rtnl;

/// Fails the test unless it runs as root (a kernel test that returned early would pass
/// without having run).
#[macro_export]
macro_rules! need_root {
    () => {
        plexus_testkit::require_root()
    };
}

pub fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

pub use plexus_testkit::netns::PinnedNs;

pub async fn lo_up(rtnl: &Rtnl) {
    let lo = ok("lo", rtnl.require_link("lo").await);
    ok("lo up", rtnl.set_up(lo.index).await);
}
