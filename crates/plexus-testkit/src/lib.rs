//! Test harness shared by Plexus's crates.
//!
//! - [`process`]: child processes that die with the test (no leaked servers);
//! - [`net`]: free loopback ports and a TCP proxy whose connections can be cut, to simulate a
//!   dropped connection or a partition between a client and a server;
//! - [`etcd`] / [`zookeeper`]: real servers from Debian's packages, on a free port with a
//!   temporary data dir, stopped (and their data removed) on drop;
//! - [`kv`]: the plexus-kv conformance suite, written once and run against every backend;
//! - [`netns`]: network namespaces pinned in a temporary directory, removed on drop;
//! - [`skip`]: tests that cannot lie: a kernel test without root fails
//!   ([`require_root`]), one that needs a kernel feature this machine lacks says by name that
//!   it is skipped and why ([`skip()`]).

#![warn(missing_docs)]

pub mod etcd;
pub mod kv;
pub mod net;
pub mod netns;
pub mod process;
pub mod skip;
pub mod zookeeper;

pub use skip::{is_root, require_root, skip};

/// A name unique to this process and call, for key prefixes, namespaces and files.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
