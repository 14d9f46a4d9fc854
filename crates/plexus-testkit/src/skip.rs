//! Tests that cannot lie: a test that cannot run either fails or says by name that it was
//! skipped, and why.
//!
//! libtest has no run-time skip: a test that returns early passes, and a green run would prove
//! nothing. So:
//!
//! - a kernel test run without root **fails** ([`require_root`]): root is what the test
//!   command needs, not something a machine may lack;
//! - a test that needs a kernel feature this machine lacks (a module not built, a kernel too
//!   old) calls [`skip`] and returns: the test's name and the reason go to stderr (uncaptured,
//!   so `cargo test` shows them) and, when `PLEXUS_SKIP_LOG` names a file, to that file, one
//!   line each, which `./scripts/test` prints and counts after the run.
//!
//! A tool a test drives (the docker CLI, `ip`, `nft`, `dig`) is not a reason to skip:
//! `./scripts/test` installs it, and a test that cannot find it fails saying what to install.
//!
//! ```no_run
//! # fn lo_has_big_tcp() -> bool { true }
//! #[test]
//! fn big_packets_arrive_whole() {
//!     plexus_testkit::require_root();
//!     if !lo_has_big_tcp() {
//!         return plexus_testkit::skip("this kernel has no IPv4 BIG TCP (before 6.3)");
//!     }
//!     // ...
//! }
//! ```

use std::io::Write;

/// The environment variable naming the file skipped tests are appended to.
pub const SKIP_LOG_ENV: &str = "PLEXUS_SKIP_LOG";

/// Whether the test process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The running test's name: libtest names each test's thread after the test (module path
/// included, `firewall::ports_publish`). Outside a test thread (a spawned task or thread),
/// `"(unknown test)"`.
pub fn test_name() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" && !name.starts_with("tokio-runtime") => name.to_string(),
        _ => "(unknown test)".to_string(),
    }
}

/// Fails the running test unless it runs as root: kernel tests make network namespaces,
/// links and nftables tables (CAP_SYS_ADMIN, CAP_NET_ADMIN). A kernel test that passed
/// without doing anything would hide that it never ran.
#[track_caller]
pub fn require_root() {
    if !is_root() {
        panic!(
            "{}: needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN, to make network namespaces); \
             run the tests as root, as ./scripts/test does",
            test_name()
        );
    }
}

/// Records that the running test is skipped because of `reason` (a kernel feature this
/// machine lacks); the test then returns. Writes `SKIPPED <file> <test>: <reason>` to stderr
/// (past libtest's capture, so it shows in every run) and appends it to the file named by
/// `PLEXUS_SKIP_LOG`, if set. `<file>` is the caller's source file, so tests of the same name
/// in two binaries stay apart.
#[track_caller]
pub fn skip(reason: &str) {
    let file = std::panic::Location::caller().file();
    let line = skip_line(file, &test_name(), reason);
    // Straight to the file descriptor: libtest captures `eprintln!`, not this.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        if let Err(e) = append(std::path::Path::new(&path), &line) {
            panic!(
                "cannot record the skip in {} ({SKIP_LOG_ENV}): {e}",
                std::path::Path::new(&path).display()
            );
        }
    }
}

/// Appends `line` to the log at `path` in one write to a file opened for appending, so lines
/// of tests running at once (threads of one binary, or several binaries) do not interleave.
fn append(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
}

/// One line of the skip log: the reason on one line whatever it holds.
fn skip_line(file: &str, test: &str, reason: &str) -> String {
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("SKIPPED {file} {test}: {reason}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_is_one_line_naming_the_test() {
        assert_eq!(
            skip_line("crates/x/tests/a.rs", "m::t", "no ipvlan\n(module missing)"),
            "SKIPPED crates/x/tests/a.rs m::t: no ipvlan (module missing)\n"
        );
    }

    #[test]
    fn the_test_thread_is_named_after_the_test() {
        assert_eq!(
            test_name(),
            "skip::tests::the_test_thread_is_named_after_the_test"
        );
    }

    #[test]
    fn skips_are_appended_to_the_log() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let log = dir.path().join("skips");
        for reason in ["first", "second"] {
            let line = skip_line("f.rs", &test_name(), reason);
            append(&log, &line).unwrap_or_else(|e| panic!("append: {e}"));
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(
            text,
            "SKIPPED f.rs skip::tests::skips_are_appended_to_the_log: first\n\
             SKIPPED f.rs skip::tests::skips_are_appended_to_the_log: second\n"
        );
    }
}
