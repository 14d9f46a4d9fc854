//! Network namespaces pinned in a temporary directory of their own, removed on drop.

use plexus_sys::netns::Netns;

/// A network namespace pinned in a temporary directory, removed on drop even when the test
/// fails (a panic unwinds through the drop).
pub struct PinnedNs {
    /// The directory holding the pin (removed with it).
    pub dir: tempfile::TempDir,
    /// The pin's file name in `dir`.
    pub name: String,
    /// The namespace.
    pub ns: Netns,
}

impl PinnedNs {
    /// Makes namespace `name`; fails the test if it cannot.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let ns =
            Netns::create(dir.path(), name).unwrap_or_else(|e| panic!("create netns {name}: {e}"));
        Self {
            dir,
            name: name.into(),
            ns,
        }
    }

    /// The pin's path, as a runtime would hand it over.
    pub fn path(&self) -> String {
        self.dir.path().join(&self.name).display().to_string()
    }
}

impl Drop for PinnedNs {
    fn drop(&mut self) {
        let _ = Netns::delete(self.dir.path(), &self.name);
    }
}
