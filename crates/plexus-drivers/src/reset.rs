//! Removing everything Plexus made on a host, and nothing else: `plexus system reset`.
//!
//! plexusd changes a host in these ways, and [`reset`] undoes each (the daemon stopped, in the
//! daemon's network namespace):
//!
//! | what plexusd made | how it is found | reset |
//! |---|---|---|
//! | nftables tables `inet plexus`, `ip plexus-nat`, `ip6 plexus-nat`, `bridge plexus`, `ip plexus-mesh` (services' published ports) | family and exact name ([`is_plexus_table`]) | deleted |
//! | bridges (`plexus0`, `plx-…`, named ones) and the host ends of veth pairs (`plxv…`) | the link alias `<marker>:<kind>:…` ([`parse_alias`]), or no alias and a name derived from an id (a crash between making and marking) | deleted (a veth takes its sandbox end along; addresses, routes and per-link sysctls go with the link) |
//! | parents the macvlan and ipvlan drivers made: 802.1q sub-interfaces (`eth0.10`), dummy links (`dm-…`), veth pairs standing in for them (`plxm…`/`plxn…`) | the link alias `<marker>:vlan:…`, `<marker>:dummy:…`, `<marker>:lanparent:…` | deleted (a parent takes its macvlan and ipvlan devices along, wherever they are); a parent of the host's own (`-o parent=eth0`, or a sub-interface that existed before) carries no mark and stays |
//! | sandbox namespaces | bind mounts under `<run-dir>/netns` | unmounted and removed (with the macvlan and ipvlan devices inside) |
//! | overlay networks' namespaces (bridge, VXLAN device, veth near ends inside) | bind mounts under `<run-dir>/overlay` | unmounted and removed (the kernel deletes their links, which takes the sandbox ends of the pairs along) |
//! | the API socket | `<run-dir>/plexus.sock`, or the `-H` path | removed (it no longer answers) |
//! | the embedded DNS's resolver process (it outlives plexusd by design) | `<run-dir>/dns/resolver.pid`, checked to be `plexusd --internal-resolver` | stopped; its socket, pid file and log removed (its redirect tables lived in the sandbox namespaces and go with them) |
//! | each sandbox's `resolv.conf` and `hosts` | `<run-dir>/sandboxes/<id>/` | removed |
//! | the embedded store and host id | `<state-dir>/state.db`, `<state-dir>/host-id` | removed |
//! | its directories | `<run-dir>/netns`, `<run-dir>/overlay`, `<run-dir>/dns`, `<run-dir>/sandboxes`, `<run-dir>`, `<state-dir>` | removed when empty |
//! | `net.ipv4.ip_forward=1` (and `net.ipv6.conf.all.forwarding=1` with IPv6 networks) | — | **left on**: other software (Docker, libvirt, a router's own configuration) may rely on forwarding, and no record says what it was before; Docker does not turn it off either |
//!
//! Everything else is left alone: other nftables tables (also `ip plexus` or `inet plexus-x`,
//! which are not Plexus's names), links without Plexus's mark (or with another marker's),
//! namespaces outside `<run-dir>/netns` (a namespace handed over with `--netns` loses only
//! the interface Plexus put into it: a veth goes with its host end, a macvlan or ipvlan device
//! with a parent Plexus made; a device on a parent of the host's own stays in such a
//! namespace, which reset cannot see into). A store given by `--store` elsewhere (a redb path of its
//! own, etcd, ZooKeeper) is not touched.
//!
//! A failure on one object is reported and the rest goes on; running it again when nothing is
//! left finds nothing. [`ResetOptions::dry_run`] lists what would go.
//!
//! [`is_plexus_table`]: crate::firewall::is_plexus_table
//! [`parse_alias`]: crate::parse_alias

use std::collections::BTreeSet;
use std::fmt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use plexus_sys::netns::Netns;
use plexus_sys::nft::{Family, Nft};
use plexus_sys::rtnl::Rtnl;
use plexus_sys::SysError;

use crate::firewall::is_plexus_table;
use crate::names;

/// plexusd's `--state-dir` by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/plexus";
/// plexusd's `--run-dir` by default.
pub const DEFAULT_RUN_DIR: &str = "/run/plexus";
/// The link alias prefix plexusd marks its links with by default (`--marker`).
pub const DEFAULT_MARKER: &str = "plexus";

/// Where plexusd keeps its files: the one place their names are spelled, for the daemon that
/// makes them and for [`reset`], which removes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Persistent state (`--state-dir`).
    pub state_dir: PathBuf,
    /// Run-time files (`--run-dir`).
    pub run_dir: PathBuf,
}

impl Layout {
    /// The layout under these directories.
    pub fn new(state_dir: impl Into<PathBuf>, run_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            run_dir: run_dir.into(),
        }
    }

    /// The API socket unless `-H` says otherwise: `<run-dir>/plexus.sock`.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("plexus.sock")
    }

    /// Where sandbox namespaces are pinned: `<run-dir>/netns`.
    pub fn netns_dir(&self) -> PathBuf {
        self.run_dir.join("netns")
    }

    /// Where the overlay driver pins its networks' namespaces: `<run-dir>/overlay`.
    pub fn overlay_dir(&self) -> PathBuf {
        self.run_dir.join("overlay")
    }

    /// The embedded store unless `--store` says otherwise: `<state-dir>/state.db`.
    pub fn store(&self) -> PathBuf {
        self.state_dir.join("state.db")
    }

    /// The host id: `<state-dir>/host-id`.
    pub fn host_id(&self) -> PathBuf {
        self.state_dir.join("host-id")
    }

    /// The host id while it is first written: `<state-dir>/host-id.tmp`.
    pub fn host_id_tmp(&self) -> PathBuf {
        self.state_dir.join("host-id.tmp")
    }

    /// The embedded DNS's files: `<run-dir>/dns`.
    pub fn dns_dir(&self) -> PathBuf {
        self.run_dir.join("dns")
    }

    /// The resolver's control socket: `<run-dir>/dns/control.sock`.
    pub fn dns_control(&self) -> PathBuf {
        self.dns_dir().join("control.sock")
    }

    /// The resolver's process id: `<run-dir>/dns/resolver.pid`.
    pub fn resolver_pid(&self) -> PathBuf {
        self.dns_dir().join("resolver.pid")
    }

    /// The resolver's log: `<run-dir>/dns/resolver.log`.
    pub fn resolver_log(&self) -> PathBuf {
        self.dns_dir().join("resolver.log")
    }

    /// Each sandbox's `resolv.conf` and `hosts`: `<run-dir>/sandboxes/<id>/`.
    pub fn sandbox_files(&self) -> PathBuf {
        self.run_dir.join("sandboxes")
    }
}

impl Default for Layout {
    fn default() -> Self {
        Self::new(DEFAULT_STATE_DIR, DEFAULT_RUN_DIR)
    }
}

/// What [`reset`] is to do.
#[derive(Debug, Clone)]
pub struct ResetOptions {
    /// The daemon's directories.
    pub layout: Layout,
    /// Sockets the daemon may serve on besides `<run-dir>/plexus.sock` (its `-H`): each must
    /// not answer, and a stale one is removed.
    pub sockets: Vec<PathBuf>,
    /// The daemon's network namespace (where its links and tables are).
    pub host: Netns,
    /// The daemon's link marker (`--marker`, [`DEFAULT_MARKER`]).
    pub marker: String,
    /// List what would be removed, and remove nothing.
    pub dry_run: bool,
}

impl ResetOptions {
    /// Options for `layout` in this process's network namespace, with the default marker.
    pub fn new(layout: Layout) -> Result<Self, ResetError> {
        Ok(Self {
            layout,
            sockets: Vec::new(),
            host: Netns::host().map_err(ResetError::Namespace)?,
            marker: DEFAULT_MARKER.into(),
            dry_run: false,
        })
    }
}

/// Why [`reset`] did not start.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    /// A daemon answers on one of the sockets.
    #[error("plexusd is running (answering on {}); stop it first", socket.display())]
    Running {
        /// The socket it answers on.
        socket: PathBuf,
    },
    /// Whether a daemon answers could not be told.
    #[error("cannot tell whether plexusd is running on {}: {source}", socket.display())]
    Socket {
        /// The socket.
        socket: PathBuf,
        /// Why connecting failed.
        #[source]
        source: std::io::Error,
    },
    /// The marker is malformed.
    #[error("invalid --marker {0:?}: must be non-empty and without ':'")]
    Marker(String),
    /// The process's network namespace could not be opened.
    #[error("opening this process's network namespace: {0}")]
    Namespace(#[source] SysError),
}

/// One thing Plexus made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// An nftables table.
    Table {
        /// Its family.
        family: Family,
        /// Its name.
        name: String,
    },
    /// A network interface.
    Link {
        /// Its name.
        name: String,
        /// Its kind (`bridge`, `veth`).
        kind: Option<String>,
    },
    /// A pinned sandbox namespace.
    Namespace(PathBuf),
    /// The API socket.
    Socket(PathBuf),
    /// A state file.
    File(PathBuf),
    /// One of the daemon's directories.
    Directory(PathBuf),
    /// A process Plexus started (the DNS resolver).
    Process(u32),
}

impl Object {
    /// What it is, in the plural, for counts (`nft tables`, `links`, ...).
    pub fn class(&self) -> &'static str {
        match self {
            Object::Table { .. } => "nft tables",
            Object::Link { .. } => "links",
            Object::Namespace(_) => "namespaces",
            Object::Socket(_) | Object::File(_) => "files",
            Object::Directory(_) => "directories",
            Object::Process(_) => "processes",
        }
    }

    fn path(&self) -> Option<&Path> {
        match self {
            Object::Namespace(p) | Object::Socket(p) | Object::File(p) | Object::Directory(p) => {
                Some(p)
            }
            _ => None,
        }
    }
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Table { family, name } => write!(f, "nft table {} {name}", family.name()),
            Object::Link {
                name,
                kind: Some(kind),
            } => write!(f, "link {name} ({kind})"),
            Object::Link { name, kind: None } => write!(f, "link {name}"),
            Object::Namespace(p) => write!(f, "namespace {}", p.display()),
            Object::Socket(p) => write!(f, "socket {}", p.display()),
            Object::File(p) => write!(f, "file {}", p.display()),
            Object::Directory(p) => write!(f, "directory {}", p.display()),
            Object::Process(pid) => write!(f, "resolver process {pid}"),
        }
    }
}

/// What [`reset`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Removed (or to be removed), in order.
    pub removed: Vec<Object>,
    /// Found where Plexus's would be but left, with why (a directory not empty, a file that
    /// is not a socket at the socket's path).
    pub kept: Vec<(Object, String)>,
    /// What could not be done (`list links`, `remove link plexus0 (bridge)`), with the
    /// error.
    pub failed: Vec<(String, String)>,
}

impl Report {
    /// How many of each class were removed, in a fixed order (`[("links", 3), ...]`), classes
    /// with none left out.
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        ["nft tables", "links", "namespaces", "files", "directories"]
            .into_iter()
            .map(|c| (c, self.removed.iter().filter(|o| o.class() == c).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Records that `what` (`list links`, `remove link plexus0 (bridge)`) failed.
    fn fail(&mut self, what: impl fmt::Display, error: impl fmt::Display) {
        tracing::debug!(%what, %error, "reset: failed");
        self.failed.push((what.to_string(), error.to_string()));
    }

    fn fail_remove(&mut self, object: Object, error: impl fmt::Display) {
        self.fail(format_args!("remove {object}"), error);
    }
}

/// Whether a link is one Plexus made under `marker`: its alias carries a well-formed mark of
/// any kind, or it has no alias and a name the bridge driver derives from an id for a link of
/// its kind (`plx-`, `plxd`, `plxv`, `plxc` and 11 hex digits).
pub fn is_plexus_link(marker: &str, name: &str, kind: Option<&str>, alias: Option<&str>) -> bool {
    // The kernel reports a cleared alias as none; an empty one is the same.
    match alias.filter(|a| !a.is_empty()) {
        Some(alias) => names::parse_alias(marker, alias).is_some(),
        None => names::is_derived_name(name, kind),
    }
}

/// Refuses while a daemon answers on any of `sockets`.
pub fn check_stopped(sockets: &[PathBuf]) -> Result<(), ResetError> {
    for socket in sockets {
        match std::os::unix::net::UnixStream::connect(socket) {
            Ok(_) => {
                return Err(ResetError::Running {
                    socket: socket.clone(),
                })
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => {
                return Err(ResetError::Socket {
                    socket: socket.clone(),
                    source: e,
                })
            }
        }
    }
    Ok(())
}

/// Removes every kernel object, namespace mount and file Plexus made (see the [module
/// docs](self)), after checking no daemon answers. Per-object failures are in the report;
/// the error is only for not starting at all.
pub async fn reset(opts: &ResetOptions) -> Result<Report, ResetError> {
    if opts.marker.is_empty() || opts.marker.contains(':') {
        return Err(ResetError::Marker(opts.marker.clone()));
    }
    let layout = &opts.layout;
    let mut sockets = vec![layout.socket()];
    for s in &opts.sockets {
        if !sockets.contains(s) {
            sockets.push(s.clone());
        }
    }
    check_stopped(&sockets)?;
    let mut report = Report::default();
    links(opts, &mut report).await;
    tables(opts, &mut report);
    namespaces(&layout.netns_dir(), opts.dry_run, &mut report);
    namespaces(&layout.overlay_dir(), opts.dry_run, &mut report);
    for socket in &sockets {
        remove_file(Object::Socket(socket.clone()), opts.dry_run, &mut report);
    }
    stop_resolver(layout, opts.dry_run, &mut report);
    remove_file(
        Object::Socket(layout.dns_control()),
        opts.dry_run,
        &mut report,
    );
    for file in [
        layout.resolver_pid(),
        layout.resolver_log(),
        layout.store(),
        layout.host_id(),
        layout.host_id_tmp(),
    ] {
        remove_file(Object::File(file), opts.dry_run, &mut report);
    }
    sandbox_files(&layout.sandbox_files(), opts.dry_run, &mut report);
    for dir in [
        layout.netns_dir(),
        layout.overlay_dir(),
        layout.dns_dir(),
        layout.sandbox_files(),
        layout.run_dir.clone(),
        layout.state_dir.clone(),
    ] {
        remove_dir(&dir, opts.dry_run, &mut report);
    }
    Ok(report)
}

/// The marked links, veth ends first (each takes its peer along), then bridges and the rest.
async fn links(opts: &ResetOptions, report: &mut Report) {
    let rtnl = match Rtnl::connect(&opts.host).await {
        Ok(r) => r,
        Err(e) => return report.fail("list links", e),
    };
    let mut found = match rtnl.links().await {
        Ok(l) => l,
        Err(e) => return report.fail("list links", e),
    };
    found.retain(|l| is_plexus_link(&opts.marker, &l.name, l.kind.as_deref(), l.alias.as_deref()));
    found.sort_by_key(|l| (l.kind.as_deref() != Some("veth"), l.name.clone()));
    for link in found {
        let object = Object::Link {
            name: link.name.clone(),
            kind: link.kind.clone(),
        };
        if opts.dry_run {
            report.removed.push(object);
            continue;
        }
        match rtnl.delete_link(link.index).await {
            // Gone with its veth peer, deleted just before.
            Ok(()) | Err(SysError::NotFound { .. }) => report.removed.push(object),
            Err(e) => report.fail_remove(object, e),
        }
    }
}

/// Plexus's four tables, by family and exact name.
fn tables(opts: &ResetOptions, report: &mut Report) {
    let nft = match Nft::open(&opts.host) {
        Ok(n) => n,
        Err(e) => return report.fail("list nft tables", e),
    };
    let found = match nft.tables() {
        Ok(t) => t,
        Err(e) => return report.fail("list nft tables", e),
    };
    for (family, name) in found {
        if !is_plexus_table(family, &name) {
            continue;
        }
        let object = Object::Table { family, name };
        if opts.dry_run {
            report.removed.push(object);
            continue;
        }
        let Object::Table { family, name } = &object else {
            continue;
        };
        // One batch each: a table that cannot go does not keep the others.
        let mut batch = nft.batch();
        batch.destroy_table(*family, name);
        match nft.apply(batch) {
            Ok(()) => report.removed.push(object),
            Err(e) => report.fail_remove(object, e),
        }
    }
}

/// Stops the embedded DNS's resolver if its pid file names a live `plexusd
/// --internal-resolver` (a pid reused by another program is left alone).
fn stop_resolver(layout: &Layout, dry_run: bool, report: &mut Report) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let Ok(text) = std::fs::read_to_string(layout.resolver_pid()) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == b"--internal-resolver");
    if !ours {
        return;
    }
    let object = Object::Process(pid);
    if dry_run {
        report.removed.push(object);
        return;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    let target = Pid::from_raw(raw);
    if let Err(e) = kill(target, Signal::SIGTERM) {
        return report.fail_remove(object, std::io::Error::from(e));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = kill(target, Signal::SIGKILL);
    report.removed.push(object);
}

/// Each sandbox's `resolv.conf` and `hosts` (the directory holds nothing else of anyone's).
fn sandbox_files(dir: &Path, dry_run: bool, report: &mut Report) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let sandbox = entry.path();
        if !sandbox.is_dir() {
            continue;
        }
        for name in ["resolv.conf", "hosts"] {
            remove_file(Object::File(sandbox.join(name)), dry_run, report);
        }
        remove_dir(&sandbox, dry_run, report);
    }
}

/// Every namespace pinned under one of the daemon's namespace directories (`netns`,
/// `overlay`: all of each is Plexus's).
fn namespaces(dir: &Path, dry_run: bool, report: &mut Report) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return report.fail(format!("list {}", dir.display()), e),
    };
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => names.push(e.file_name().to_string_lossy().into_owned()),
            Err(e) => report.fail(format!("list {}", dir.display()), e),
        }
    }
    names.sort();
    for name in names {
        let object = Object::Namespace(dir.join(&name));
        if dry_run {
            report.removed.push(object);
            continue;
        }
        match Netns::delete(dir, &name) {
            Ok(()) => report.removed.push(object),
            Err(e) => report.fail_remove(object, e),
        }
    }
}

/// A socket (a daemon no longer answers on it) or a state file, if present and of its type.
fn remove_file(object: Object, dry_run: bool, report: &mut Report) {
    let Some(path) = object.path() else { return };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return report.fail_remove(object, e),
    };
    let right_type = match object {
        Object::Socket(_) => meta.file_type().is_socket(),
        _ => meta.file_type().is_file(),
    };
    if !right_type {
        let why = match object {
            Object::Socket(_) => "not a socket",
            _ => "not a regular file",
        };
        report.kept.push((object, why.into()));
        return;
    }
    if dry_run {
        report.removed.push(object);
        return;
    }
    match std::fs::remove_file(path) {
        Ok(()) => report.removed.push(object),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.fail_remove(object, e),
    }
}

/// One of the daemon's directories, if it is (or, in a dry run, would be) empty.
fn remove_dir(dir: &Path, dry_run: bool, report: &mut Report) {
    let object = Object::Directory(dir.to_path_buf());
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => return report.fail_remove(object, e),
    };
    let going: BTreeSet<&Path> = report.removed.iter().filter_map(Object::path).collect();
    let left: Vec<String> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| !(dry_run && going.contains(p.as_path())))
        .map(|p| p.display().to_string())
        .collect();
    if !left.is_empty() {
        let why = format!("not empty ({})", left.join(", "));
        report.kept.push((object, why));
        return;
    }
    if dry_run {
        report.removed.push(object);
        return;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => report.removed.push(object),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => report.fail_remove(object, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_plexus_by_mark_or_derived_name_only() {
        let m = "plexus";
        assert!(is_plexus_link(
            m,
            "plexus0",
            Some("bridge"),
            Some("plexus:bridge:n1")
        ));
        assert!(is_plexus_link(
            m,
            "plxvabc",
            Some("veth"),
            Some("plexus:veth:n1:e1:eth0")
        ));
        assert!(is_plexus_link(
            m,
            "x",
            Some("macvlan"),
            Some("plexus:macvlan:n1:e1")
        ));
        // Parents the macvlan and ipvlan drivers made.
        for (name, kind, alias) in [
            ("eth0.10", "vlan", "plexus:vlan:macvlan:n1"),
            ("dm-0123456789ab", "dummy", "plexus:dummy:ipvlan:n1"),
            ("plxm0123456789a", "veth", "plexus:lanparent:macvlan:n1"),
        ] {
            assert!(is_plexus_link(m, name, Some(kind), Some(alias)), "{name}");
        }
        assert!(!is_plexus_link(m, "eth0.10", Some("vlan"), None));
        // A crash between making and marking.
        assert!(is_plexus_link(m, "plxv0123456789a", Some("veth"), None));
        assert!(is_plexus_link(m, "plx-0123456789a", Some("bridge"), None));
        assert!(is_plexus_link(m, "plxc0123456789a", Some("veth"), Some("")));
        // Another marker's, a foreign alias, a malformed mark, a foreign name.
        assert!(!is_plexus_link(
            m,
            "br0",
            Some("bridge"),
            Some("plexus2:bridge:n1")
        ));
        assert!(!is_plexus_link(m, "br0", Some("bridge"), Some("plexusy")));
        assert!(!is_plexus_link(
            m,
            "br0",
            Some("bridge"),
            Some("plexus:bridge:")
        ));
        assert!(!is_plexus_link(m, "docker0", Some("bridge"), None));
        assert!(!is_plexus_link(m, "plx-mine", Some("bridge"), None));
        // A derived name with another kind, or an alias that is not Plexus's.
        assert!(!is_plexus_link(m, "plxv0123456789a", Some("dummy"), None));
        assert!(!is_plexus_link(
            m,
            "plxv0123456789a",
            Some("veth"),
            Some("mine")
        ));
    }

    #[test]
    fn the_layout_is_plexusds() {
        let l = Layout::default();
        assert_eq!(l.socket(), Path::new("/run/plexus/plexus.sock"));
        assert_eq!(l.netns_dir(), Path::new("/run/plexus/netns"));
        assert_eq!(l.overlay_dir(), Path::new("/run/plexus/overlay"));
        assert_eq!(l.store(), Path::new("/var/lib/plexus/state.db"));
        assert_eq!(l.host_id(), Path::new("/var/lib/plexus/host-id"));
    }

    #[test]
    fn objects_read_and_count() {
        let mut r = Report::default();
        r.removed.push(Object::Table {
            family: Family::Inet,
            name: "plexus".into(),
        });
        r.removed.push(Object::Link {
            name: "plexus0".into(),
            kind: Some("bridge".into()),
        });
        r.removed
            .push(Object::Socket("/run/plexus/plexus.sock".into()));
        r.removed
            .push(Object::File("/var/lib/plexus/host-id".into()));
        assert_eq!(r.removed[0].to_string(), "nft table inet plexus");
        assert_eq!(r.removed[1].to_string(), "link plexus0 (bridge)");
        assert_eq!(r.counts(), [("nft tables", 1), ("links", 1), ("files", 2)]);
    }

    #[test]
    fn files_and_directories_go_only_when_theirs() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let layout = Layout::new(tmp.path().join("state"), tmp.path().join("run"));
        std::fs::create_dir_all(layout.netns_dir()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(&layout.state_dir).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(layout.host_id(), "id").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(layout.store(), "db").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(layout.state_dir.join("mine"), "").unwrap_or_else(|e| panic!("{e}"));
        // A regular file where the socket would be is not Plexus's.
        std::fs::write(layout.socket(), "").unwrap_or_else(|e| panic!("{e}"));

        for dry_run in [true, false] {
            let mut r = Report::default();
            for f in [layout.store(), layout.host_id(), layout.host_id_tmp()] {
                remove_file(Object::File(f), dry_run, &mut r);
            }
            remove_file(Object::Socket(layout.socket()), dry_run, &mut r);
            for d in [
                layout.netns_dir(),
                layout.run_dir.clone(),
                layout.state_dir.clone(),
            ] {
                remove_dir(&d, dry_run, &mut r);
            }
            let removed: Vec<String> = r.removed.iter().map(|o| o.to_string()).collect();
            assert_eq!(
                removed,
                [
                    format!("file {}", layout.store().display()),
                    format!("file {}", layout.host_id().display()),
                    format!("directory {}", layout.netns_dir().display()),
                ],
                "dry run: {dry_run}"
            );
            let kept: Vec<String> = r.kept.iter().map(|(o, _)| o.to_string()).collect();
            assert_eq!(
                kept,
                [
                    format!("socket {}", layout.socket().display()),
                    format!("directory {}", layout.run_dir.display()),
                    format!("directory {}", layout.state_dir.display()),
                ]
            );
            assert!(r.failed.is_empty(), "{:?}", r.failed);
            assert_eq!(layout.store().exists(), dry_run);
        }
        assert!(layout.state_dir.join("mine").exists());
    }

    #[test]
    fn a_listening_socket_refuses_and_a_stale_one_does_not() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = tmp.path().join("plexus.sock");
        let listener =
            std::os::unix::net::UnixListener::bind(&path).unwrap_or_else(|e| panic!("bind: {e}"));
        let err = check_stopped(std::slice::from_ref(&path)).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some(format!(
                "plexusd is running (answering on {}); stop it first",
                path.display()
            ))
        );
        drop(listener);
        assert!(check_stopped(&[path, tmp.path().join("absent.sock")]).is_ok());
    }
}
