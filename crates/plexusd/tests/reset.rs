//! `plexus system reset`: a real plexusd in a namespace the test makes, with networks
//! (published ports, internal, a named bridge, the default `bridge`) and sandboxes (one in a
//! namespace handed over with `--netns`), beside foreign objects planted in the same
//! namespace. Reset is refused while the daemon runs; after a crash it leaves no Plexus link,
//! nft table, namespace mount or file, keeps every foreign object, and a second run finds
//! nothing. Needs root.

use std::path::{Path, PathBuf};
use std::process::Output;

use plexus_drivers::firewall::is_plexus_table;
use plexus_drivers::reset::is_plexus_link;
use plexus_sys::netns::Netns;
use plexus_sys::nft::{Family, Nft};
use plexus_sys::rtnl::{BridgeSpec, Rtnl};

mod common;

use common::Daemon;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"))
}

/// `(name, alias)` of every link of `ns`, sorted.
fn links(
    rt: &tokio::runtime::Runtime,
    ns: &Netns,
) -> Vec<(String, Option<String>, Option<String>)> {
    rt.block_on(async {
        let rtnl = Rtnl::connect(ns)
            .await
            .unwrap_or_else(|e| panic!("rtnl: {e}"));
        let mut all: Vec<_> = rtnl
            .links()
            .await
            .unwrap_or_else(|e| panic!("links: {e}"))
            .into_iter()
            .map(|l| (l.name, l.kind, l.alias))
            .collect();
        all.sort();
        all
    })
}

fn plexus_links(rt: &tokio::runtime::Runtime, ns: &Netns) -> Vec<String> {
    links(rt, ns)
        .into_iter()
        .filter(|(name, kind, alias)| {
            is_plexus_link("plexus", name, kind.as_deref(), alias.as_deref())
        })
        .map(|(name, ..)| name)
        .collect()
}

fn tables(ns: &Netns) -> Vec<(Family, String)> {
    let mut t = Nft::open(ns)
        .and_then(|n| n.tables())
        .unwrap_or_else(|e| panic!("nft tables: {e}"));
    t.sort_by_key(|(f, n)| (f.name(), n.clone()));
    t
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
        }
    }
    out.sort();
    out
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A namespace pinned outside the daemon's run dir, removed on drop.
struct Foreign {
    dir: PathBuf,
}

impl Drop for Foreign {
    fn drop(&mut self) {
        let _ = Netns::delete(&self.dir, "foreign-ns");
    }
}

#[test]
fn reset_removes_what_plexus_made_and_nothing_else() {
    let mut d = Daemon::new(&[]);
    let rt = runtime();
    let state = d.dir.path().join("state");
    let run = d.dir.path().join("run");
    let reset_args = [
        "system",
        "reset",
        "--state-dir",
        &state.display().to_string(),
        "--run-dir",
        &run.display().to_string(),
    ]
    .map(String::from);
    let reset: Vec<&str> = reset_args.iter().map(String::as_str).collect();

    // What Plexus makes: networks of each kind, sandboxes in its own namespaces and in one
    // handed over.
    d.ok(&["network", "create", "--subnet", "10.231.0.0/24", "pub"]);
    d.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.231.1.0/24",
        "int",
    ]);
    d.ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.name=named0",
        "--subnet",
        "10.231.2.0/24",
        "named",
    ]);
    d.ok(&[
        "sandbox",
        "create",
        "a",
        "--network",
        "pub",
        "-p",
        "18080:80",
    ]);
    d.ok(&["sandbox", "create", "b", "--network", "int"]);
    d.ok(&["sandbox", "create", "c", "--network", "named"]);
    // A service's published port: the routing mesh's table in the daemon's namespace.
    d.ok(&[
        "service",
        "create",
        "web",
        "--network",
        "pub",
        "-p",
        "published=18090,target=80",
    ]);
    let foreign = Foreign {
        dir: d.dir.path().join("foreign"),
    };
    let foreign_ns = Netns::create(&foreign.dir, "foreign-ns")
        .unwrap_or_else(|e| panic!("foreign namespace: {e}"));
    let foreign_path = foreign.dir.join("foreign-ns").display().to_string();
    d.ok(&[
        "sandbox",
        "create",
        "f",
        "--network",
        "pub",
        "--netns",
        &foreign_path,
    ]);

    // Foreign objects in the daemon's namespace: bridges (one marked by another marker whose
    // name starts like Plexus's), tables whose names resemble Plexus's.
    rt.block_on(async {
        let rtnl = Rtnl::connect(&d.host_ns)
            .await
            .unwrap_or_else(|e| panic!("rtnl: {e}"));
        for (name, alias) in [("virbr9", "libvirt"), ("plexus2br", "plexus2:bridge:x")] {
            let spec = BridgeSpec {
                name,
                ..Default::default()
            };
            rtnl.add_bridge(&spec, alias)
                .await
                .unwrap_or_else(|e| panic!("foreign bridge {name}: {e}"));
        }
    });
    let nft = Nft::open(&d.host_ns).unwrap_or_else(|e| panic!("nft: {e}"));
    let mut batch = nft.batch();
    batch.add_table(Family::Inet, "foreign");
    batch.add_table(Family::Ip, "plexus"); // Plexus's filter name, in a family it does not use
    batch.add_table(Family::Inet, "plexus-nat"); // its NAT name, likewise
    batch.add_table(Family::Inet, "plexus2");
    nft.apply(batch)
        .unwrap_or_else(|e| panic!("foreign tables: {e}"));
    let made_links = plexus_links(&rt, &d.host_ns);
    for want in ["plexus0", "named0"] {
        assert!(made_links.iter().any(|l| l == want), "{made_links:?}");
    }
    assert!(
        made_links.iter().filter(|l| l.starts_with("plxv")).count() >= 4,
        "a host veth end per sandbox: {made_links:?}"
    );
    let made_tables: Vec<_> = tables(&d.host_ns)
        .into_iter()
        .filter(|(f, n)| is_plexus_table(*f, n))
        .collect();
    assert!(made_tables.len() >= 4, "{made_tables:?}");
    assert_eq!(
        mounts_under(&run).len(),
        3,
        "one per owned sandbox namespace"
    );
    let made_files = files_under(d.dir.path());

    // Refused while the daemon runs, naming it; nothing removed.
    let out = d.plexus_in_ns(&reset);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "plexusd is running (answering on {}); stop it first",
            d.socket().display()
        )),
        "{stderr}"
    );
    assert_eq!(plexus_links(&rt, &d.host_ns), made_links);
    assert_eq!(mounts_under(&run).len(), 3);
    assert_eq!(files_under(d.dir.path()), made_files);

    // A crash: the socket file stays. A dry run lists, and removes nothing.
    d.kill9();
    assert!(d.socket().exists());
    let mut dry = reset.clone();
    dry.push("--dry-run");
    let out = d.plexus_in_ns(&dry);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("would remove link plexus0 (bridge)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("would remove nft table inet plexus"),
        "{stdout}"
    );
    assert_eq!(plexus_links(&rt, &d.host_ns), made_links);
    assert_eq!(files_under(d.dir.path()), made_files);

    // Something in Plexus's namespace folder that cannot be removed as a namespace (a
    // directory): reported, exit 1, and the rest still goes.
    let resolver = d.resolver_pid();
    assert!(resolver.is_some(), "the DNS resolver ran");
    let stuck = run.join("netns").join("stuck");
    std::fs::create_dir(&stuck).unwrap_or_else(|e| panic!("{e}"));
    let out = d.plexus_in_ns(&reset);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("cannot remove namespace {}", stuck.display())),
        "{stderr}"
    );
    for line in [
        "removed link plexus0 (bridge)".to_string(),
        "removed link named0 (bridge)".to_string(),
        "removed nft table inet plexus".to_string(),
        "removed nft table ip plexus-nat".to_string(),
        "removed nft table ip plexus-mesh".to_string(),
        format!("removed namespace {}", run.join("netns/a").display()),
        format!("removed socket {}", d.socket().display()),
        format!("removed file {}", state.join("state.db").display()),
        format!("removed file {}", state.join("host-id").display()),
        format!("removed directory {}", state.display()),
        format!("removed resolver process {}", resolver.unwrap_or_default()),
        format!("removed socket {}", run.join("dns/control.sock").display()),
        format!("removed directory {}", run.join("dns").display()),
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("3 namespaces") && stdout.contains("IP forwarding"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("kept directory {}: not empty", run.display())),
        "{stdout}"
    );
    std::fs::remove_dir(&stuck).unwrap_or_else(|e| panic!("{e}"));
    let out = d.plexus_in_ns(&reset);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.lines().take(2).collect::<Vec<_>>(),
        [
            format!("removed directory {}", run.join("netns").display()),
            format!("removed directory {}", run.display()),
        ],
        "{stdout}"
    );

    // Nothing of Plexus's is left.
    assert_eq!(plexus_links(&rt, &d.host_ns), Vec::<String>::new());
    let left: Vec<_> = tables(&d.host_ns)
        .into_iter()
        .filter(|(f, n)| is_plexus_table(*f, n))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(mounts_under(&run), Vec::<String>::new());
    assert!(!run.exists() && !state.exists() && !d.socket().exists());
    let pid = resolver.unwrap_or_default();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the resolver {pid} was stopped"
    );

    // Every foreign object is.
    let all = links(&rt, &d.host_ns);
    for name in ["virbr9", "plexus2br"] {
        assert!(all.iter().any(|(n, ..)| n == name), "{all:?}");
    }
    let foreign_tables: Vec<_> = tables(&d.host_ns)
        .into_iter()
        .filter(|(f, n)| !is_plexus_table(*f, n))
        .collect();
    assert_eq!(foreign_tables.len(), 4, "{foreign_tables:?}");
    let inside: Vec<String> = links(&rt, &foreign_ns)
        .into_iter()
        .map(|(n, ..)| n)
        .collect();
    assert_eq!(
        inside,
        ["lo"],
        "the handed-over namespace loses only Plexus's interface"
    );
    assert!(Netns::open(&foreign.dir.join("foreign-ns")).is_ok());

    // Again: nothing to do.
    let out = d.plexus_in_ns(&reset);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        "nothing to remove: no Plexus object or file found"
    );
}
