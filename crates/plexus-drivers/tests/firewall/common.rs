//! Helpers shared by the kernel tests: the root requirement, pinned namespaces removed on drop.

#![allow(dead_code)]

use plexus_sys::netns::Netns;
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

/// A namespace pinned in a temporary directory, removed on drop even if the test fails.
pub struct PinnedNs {
    dir: tempfile::TempDir,
    name: String,
    /// The namespace.
    pub ns: Netns,
}

impl PinnedNs {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ns = ok("create netns", Netns::create(dir.path(), name));
        Self {
            dir,
            name: name.into(),
            ns,
        }
    }
}

impl Drop for PinnedNs {
    fn drop(&mut self) {
        let _ = Netns::delete(self.dir.path(), &self.name);
    }
}

pub async fn lo_up(rtnl: &Rtnl) {
    let lo = ok("lo", rtnl.require_link("lo").await);
    ok("lo up", rtnl.set_up(lo.index).await);
}
