//! Helpers shared by the kernel tests: root detection, pinned namespaces removed on drop.

#![allow(dead_code)]

use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;

pub fn root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[macro_export]
macro_rules! need_root {
    () => {
        if !$crate::common::root() {
            eprintln!("skipped: needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) to make namespaces");
            return;
        }
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
