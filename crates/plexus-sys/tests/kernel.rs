//! plexus-sys against the real kernel, inside namespaces the tests make (needs root).
//! Every test works in its own namespaces, so they run in parallel and leave the host alone.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use plexus_sys::netns::Netns;
use plexus_sys::probe::{Feature, KernelFeatures, Overrides};
use plexus_sys::rtnl::{BridgeSpec, Route, Rtnl};
use plexus_sys::{sysctl, SysError};

const MARK: &str = "plexus-test";

#[macro_use]
mod common;
use common::{lo_up, ok, PinnedNs};

/// Listens on `addr` inside `ns` and echoes one connection, from a thread.
fn echo_server(ns: &Netns, addr: SocketAddr) -> std::thread::JoinHandle<()> {
    let listener = ok("listen", ns.run(move || TcpListener::bind(addr)))
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = [0u8; 64];
            if let Ok(n) = conn.read(&mut buf) {
                let _ = conn.write_all(&buf[..n]);
            }
        }
    })
}

/// Connects from inside `ns` to `addr`, sends a line and returns the echo.
fn echo_client(ns: &Netns, addr: SocketAddr) -> std::io::Result<String> {
    ok(
        "run",
        ns.run(move || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"hello plexus")?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        }),
    )
}

#[tokio::test]
async fn veth_between_two_namespaces_carries_tcp() {
    need_root!();
    let a = PinnedNs::new("a");
    let b = PinnedNs::new("b");
    let ra = ok("connect a", Rtnl::connect(&a.ns).await);
    let rb = ok("connect b", Rtnl::connect(&b.ns).await);
    let (va, vb) = ok("veth", ra.add_veth("va", "vb", Some(1400), MARK).await);
    assert_eq!(va.alias.as_deref(), Some(MARK));
    ok("move", ra.move_to(vb.index, &b.ns, Some("eth0")).await);
    assert!(
        ok("gone from a", ra.link("vb").await).is_none(),
        "peer still in a"
    );
    let eth0 = ok("eth0 in b", rb.require_link("eth0").await);
    assert_eq!(eth0.mtu, Some(1400));
    ok(
        "addr a",
        ra.add_address(va.index, IpAddr::V4(Ipv4Addr::new(10, 77, 0, 1)), 24)
            .await,
    );
    ok(
        "addr b",
        rb.add_address(eth0.index, IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)), 24)
            .await,
    );
    ok("up a", ra.set_up(va.index).await);
    ok("up b", rb.set_up(eth0.index).await);
    lo_up(&rb).await;
    // The kernel may add an IPv6 link-local address of its own once the link is up.
    let addresses = ok("addresses", rb.addresses(eth0.index).await);
    let (v4, v6): (Vec<_>, Vec<_>) = addresses.into_iter().partition(|(a, _)| a.is_ipv4());
    assert_eq!(v4, vec![(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2)), 24)]);
    assert!(
        v6.iter()
            .all(|(a, p)| *p == 64 && a.to_string().starts_with("fe80:")),
        "unexpected addresses {v6:?}"
    );
    let server = SocketAddr::from(([10, 77, 0, 2], 7000));
    let echo = echo_server(&b.ns, server);
    assert_eq!(
        echo_client(&a.ns, server).ok().as_deref(),
        Some("hello plexus")
    );
    let _ = echo.join();
    // Nothing listens at .3: the connection fails (no route to a live host).
    assert!(echo_client(&a.ns, SocketAddr::from(([10, 77, 0, 3], 7000))).is_err());

    // Out of service while running: its address off, IPv6 off; b reaches nothing.
    let b_addr = IpAddr::V4(Ipv4Addr::new(10, 77, 0, 2));
    ok(
        "delete address",
        rb.delete_address(eth0.index, b_addr, 24).await,
    );
    assert!(matches!(
        rb.delete_address(eth0.index, b_addr, 24).await,
        Err(SysError::NotFound { .. })
    ));
    ok("ipv6 off", rb.disable_ipv6("eth0").await);
    assert_eq!(ok("addresses", rb.addresses(eth0.index).await), vec![]);
    assert!(ok("routes", rb.main_routes_v4().await).is_empty());
    assert!(echo_client(&a.ns, server).is_err());
}

#[tokio::test]
async fn bridge_joins_sandboxes_and_routes_through_gateway() {
    need_root!();
    let host = PinnedNs::new("host");
    let c1 = PinnedNs::new("c1");
    let c2 = PinnedNs::new("c2");
    let rh = ok("connect host", Rtnl::connect(&host.ns).await);
    let br = ok(
        "bridge",
        rh.add_bridge(
            &BridgeSpec {
                name: "plx-br0",
                ..Default::default()
            },
            MARK,
        )
        .await,
    );
    assert_eq!(br.kind.as_deref(), Some("bridge"));
    ok(
        "gw addr",
        rh.add_address(br.index, IpAddr::V4(Ipv4Addr::new(10, 78, 0, 1)), 24)
            .await,
    );
    ok("br up", rh.set_up(br.index).await);
    for (i, c) in [&c1, &c2].into_iter().enumerate() {
        let host_end = format!("veth{i}");
        let (h, peer) = ok(
            "veth",
            rh.add_veth(&host_end, &format!("peer{i}"), None, MARK)
                .await,
        );
        ok("attach", rh.set_master(h.index, br.index).await);
        assert_eq!(
            ok("link", rh.require_link(&host_end).await).master,
            Some(br.index)
        );
        ok("up", rh.set_up(h.index).await);
        ok("move", rh.move_to(peer.index, &c.ns, Some("eth0")).await);
        let rc = ok("connect c", Rtnl::connect(&c.ns).await);
        let eth0 = ok("eth0", rc.require_link("eth0").await);
        ok(
            "addr",
            rc.add_address(
                eth0.index,
                IpAddr::V4(Ipv4Addr::new(10, 78, 0, 2 + i as u8)),
                24,
            )
            .await,
        );
        ok("up", rc.set_up(eth0.index).await);
        ok(
            "default route",
            rc.add_route(&Route {
                destination: None,
                gateway: Some(IpAddr::V4(Ipv4Addr::new(10, 78, 0, 1))),
                oif: None,
            })
            .await,
        );
    }
    // Sandbox to sandbox across the bridge.
    let server = SocketAddr::from(([10, 78, 0, 3], 7001));
    let echo = echo_server(&c2.ns, server);
    assert_eq!(
        echo_client(&c1.ns, server).ok().as_deref(),
        Some("hello plexus")
    );
    let _ = echo.join();
    // Sandbox to the gateway address on the host side.
    let gw = SocketAddr::from(([10, 78, 0, 1], 7002));
    let echo = echo_server(&host.ns, gw);
    assert_eq!(
        echo_client(&c1.ns, gw).ok().as_deref(),
        Some("hello plexus")
    );
    let _ = echo.join();
    // Deleting the host end of a veth removes its peer in the sandbox.
    let v0 = ok("veth0", rh.require_link("veth0").await);
    ok("delete", rh.delete_link(v0.index).await);
    let rc1 = ok("connect c1", Rtnl::connect(&c1.ns).await);
    assert!(ok("eth0 gone", rc1.link("eth0").await).is_none());
}

#[tokio::test]
async fn bad_input_names_the_field_and_makes_nothing() {
    need_root!();
    let a = PinnedNs::new("bad");
    let r = ok("connect", Rtnl::connect(&a.ns).await);
    let before = ok("links", r.links().await).len();
    match r
        .add_bridge(
            &BridgeSpec {
                name: "a-name-far-too-long",
                ..Default::default()
            },
            MARK,
        )
        .await
    {
        Err(SysError::Invalid { field, value, .. }) => {
            assert_eq!(
                (field, value.as_str()),
                ("bridge name", "a-name-far-too-long")
            )
        }
        other => panic!("long name gave {other:?}"),
    }
    ok(
        "bridge",
        r.add_bridge(
            &BridgeSpec {
                name: "dup0",
                ..Default::default()
            },
            MARK,
        )
        .await,
    );
    match r
        .add_bridge(
            &BridgeSpec {
                name: "dup0",
                ..Default::default()
            },
            MARK,
        )
        .await
    {
        Err(e @ SysError::Exists { .. }) => assert!(e.to_string().contains("dup0"), "{e}"),
        other => panic!("duplicate gave {other:?}"),
    }
    assert!(matches!(
        r.delete_link(999_999).await,
        Err(SysError::NotFound { .. })
    ));
    assert!(matches!(
        r.require_link("nope0").await,
        Err(SysError::NotFound { .. })
    ));
    assert_eq!(ok("links", r.links().await).len(), before + 1);

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let plain = dir.path().join("plain-file");
    std::fs::write(&plain, b"x").unwrap_or_else(|e| panic!("{e}"));
    match Netns::open(&plain) {
        Err(SysError::Invalid {
            field: "netns path",
            reason,
            ..
        }) => assert_eq!(reason, "not a network namespace"),
        other => panic!("plain file gave {other:?}"),
    }
    let missing = dir.path().join("missing");
    let err = Netns::open(&missing)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("missing"), "{err}");
    assert!(matches!(
        Netns::create(dir.path(), "a/b"),
        Err(SysError::Invalid { .. })
    ));
    assert!(matches!(
        sysctl::write(&a.ns, "kernel.hostname", "x"),
        Err(SysError::Invalid {
            field: "sysctl",
            ..
        })
    ));
}

#[tokio::test]
async fn created_namespace_is_pinned_until_deleted() {
    need_root!();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let ns = ok("create", Netns::create(dir.path(), "pin"));
    assert!(matches!(
        Netns::create(dir.path(), "pin"),
        Err(SysError::Exists { .. })
    ));
    // A link made inside survives while the namespace is pinned, seen through a fresh open.
    ok(
        "bridge",
        ok("connect", Rtnl::connect(&ns).await)
            .add_bridge(
                &BridgeSpec {
                    name: "pinned0",
                    ..Default::default()
                },
                MARK,
            )
            .await,
    );
    drop(ns);
    let again = ok("reopen", Netns::open(&dir.path().join("pin")));
    assert!(ok(
        "link",
        ok("connect", Rtnl::connect(&again).await)
            .link("pinned0")
            .await
    )
    .is_some());
    ok("delete", Netns::delete(dir.path(), "pin"));
    assert!(!dir.path().join("pin").exists());
    ok("delete again", Netns::delete(dir.path(), "pin"));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mounts.contains(&dir.path().join("pin").display().to_string()),
        "mount left behind"
    );
}

#[tokio::test]
async fn sysctls_are_per_namespace() {
    need_root!();
    let a = PinnedNs::new("sa");
    let b = PinnedNs::new("sb");
    // New namespaces inherit IPv4 settings from the host's (net.core.devconf_inherit_init_net),
    // so write the opposite of what b starts with, and check b did not change.
    let before_b = ok("read b", sysctl::read(&b.ns, "net/ipv4/ip_forward"));
    let flipped = if before_b == "1" { "0" } else { "1" };
    ok(
        "write",
        sysctl::write(&a.ns, "net.ipv4.ip_forward", flipped),
    );
    assert_eq!(
        ok("read a", sysctl::read(&a.ns, "net.ipv4.ip_forward")),
        flipped
    );
    assert_eq!(
        ok("read b", sysctl::read(&b.ns, "net/ipv4/ip_forward")),
        before_b
    );
}

#[tokio::test]
async fn a_sysctl_dir_writes_inside_its_own_namespace_and_refuses_paths_out_of_it() {
    need_root!();
    let a = PinnedNs::new("sda");
    let b = PinnedNs::new("sdb");
    let key = "net.ipv6.conf.lo.disable_ipv6";
    let before_b = ok("read b", sysctl::read(&b.ns, key));
    let flipped = if before_b == "1" { "0" } else { "1" };
    // Opened in a, written from here (this test's thread is not in a).
    let conf = ok("open", sysctl::SysctlDir::open(&a.ns, "net.ipv6.conf"));
    ok("write", conf.write(&["lo", "disable_ipv6"], flipped));
    assert_eq!(ok("read a", sysctl::read(&a.ns, key)), flipped);
    assert_eq!(ok("read b", sysctl::read(&b.ns, key)), before_b);
    // A link a does not have: not found, as through the path.
    assert!(matches!(
        conf.write(&["plxnosuch0", "disable_ipv6"], "1"),
        Err(SysError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound
    ));
    for bad in [
        &["..", "ipv4", "ip_forward"][..],
        &["lo/disable_ipv6"],
        &[""],
        &[],
    ] {
        assert!(
            matches!(
                conf.write(bad, "1"),
                Err(SysError::Invalid {
                    field: "sysctl",
                    ..
                })
            ),
            "{bad:?} accepted"
        );
    }
    assert!(matches!(
        sysctl::SysctlDir::open(&a.ns, "kernel.hostname"),
        Err(SysError::Invalid { .. })
    ));
}

#[tokio::test]
async fn probe_agrees_with_the_kernel() {
    need_root!();
    let features = ok("probe", KernelFeatures::probe().await);
    eprintln!("Linux {}", features.release());
    for feature in [
        Feature::Netns,
        Feature::Bridge,
        Feature::Veth,
        Feature::Nftables,
        Feature::NftNat,
        Feature::Conntrack,
        Feature::NftFib,
    ] {
        assert!(
            features.has(feature),
            "{}: {:?}",
            feature.name(),
            features.missing_reason(feature)
        );
    }
    for feature in Feature::ALL {
        match features.require(feature) {
            Ok(()) => assert!(features.has(feature)),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(feature.name()), "{msg}");
                eprintln!("this kernel lacks {}: {msg}", feature.name());
            }
        }
    }
    // The release agrees with the kernel's own file, and the destroy probe with the kernel's
    // version.
    let release = ok(
        "osrelease",
        std::fs::read_to_string("/proc/sys/kernel/osrelease"),
    );
    assert_eq!(features.release().as_str(), release.trim());
    assert_eq!(
        features.has(Feature::NftDestroy),
        features.release().at_least(6, 3)
    );
    // Cross-check one answer by trying it by hand.
    let scratch = ok("scratch", Netns::anonymous());
    let r = ok("connect", Rtnl::connect(&scratch).await);
    let made = r.add_vxlan("vx0", 7, 4789, MARK).await.is_ok();
    assert_eq!(made, features.has(Feature::Vxlan));
    // Pretending: a release and features missing, over the kernel's answer.
    let pretend = ok(
        "overrides",
        Overrides::parse(Some("5.4.0-150-generic"), Some("veth,nft-destroy")),
    );
    let pretended = ok("probe", KernelFeatures::probe_with(&pretend).await);
    assert_eq!(pretended.release().as_str(), "5.4.0-150-generic");
    assert!(!pretended.has(Feature::Veth) && !pretended.has(Feature::NftDestroy));
    assert!(pretended.has(Feature::Bridge));
}

/// A permanent IP neighbour reaches a peer that answers no ARP; deleting it makes the peer
/// unreachable again. The listing shows what the kernel holds, and bad calls name what they
/// miss.
#[tokio::test]
async fn a_permanent_neighbour_reaches_a_peer_that_answers_no_arp() {
    need_root!();
    let a = PinnedNs::new("na");
    let b = PinnedNs::new("nb");
    let ra = ok("connect a", Rtnl::connect(&a.ns).await);
    let rb = ok("connect b", Rtnl::connect(&b.ns).await);
    let (va, vb) = ok("veth", ra.add_veth("va", "vb", None, MARK).await);
    ok("move", ra.move_to(vb.index, &b.ns, Some("eth0")).await);
    let eth0 = ok("eth0 in b", rb.require_link("eth0").await);
    let (ip_a, ip_b) = (Ipv4Addr::new(10, 78, 0, 1), Ipv4Addr::new(10, 78, 0, 2));
    ok("addr a", ra.add_address(va.index, ip_a.into(), 24).await);
    ok("addr b", rb.add_address(eth0.index, ip_b.into(), 24).await);
    // b never answers ARP.
    ok(
        "arp_ignore",
        sysctl::write(&b.ns, "net.ipv4.conf.eth0.arp_ignore", "8"),
    );
    ok("up a", ra.set_up(va.index).await);
    ok("up b", rb.set_up(eth0.index).await);
    lo_up(&rb).await;
    let server = SocketAddr::from((ip_b, 7000));
    let _echo = echo_server(&b.ns, server);
    assert!(
        echo_client(&a.ns, server).is_err(),
        "b answered although it answers no ARP"
    );

    let mac_b: [u8; 6] = eth0
        .mac
        .as_deref()
        .and_then(|m| m.try_into().ok())
        .unwrap_or_else(|| panic!("eth0 has no MAC: {eth0:?}"));
    ok(
        "set neighbour",
        ra.set_neighbour(va.index, ip_b.into(), mac_b).await,
    );
    let held = ok("neighbours", ra.neighbours(va.index).await);
    assert!(
        held.iter()
            .any(|n| n.ip == Some(ip_b.into()) && n.mac == Some(mac_b) && n.fixed),
        "{held:?}"
    );
    assert_eq!(
        echo_client(&a.ns, server).ok().as_deref(),
        Some("hello plexus")
    );

    ok(
        "delete neighbour",
        ra.delete_neighbour(va.index, ip_b.into()).await,
    );
    let held = ok("neighbours", ra.neighbours(va.index).await);
    assert!(
        held.iter().all(|n| n.ip != Some(ip_b.into()) || !n.fixed),
        "{held:?}"
    );
    let _echo = echo_server(&b.ns, server);
    assert!(
        echo_client(&a.ns, server).is_err(),
        "b still reached without its neighbour entry"
    );
    let never = Ipv4Addr::new(10, 78, 0, 9);
    match ra.delete_neighbour(va.index, never.into()).await {
        Err(SysError::NotFound { what }) => assert!(what.contains("10.78.0.9"), "{what}"),
        other => panic!("deleting a missing neighbour: {other:?}"),
    }
}

/// Static forwarding entries: on a bridge port (kept by the bridge, replaced when set again)
/// and on a vxlan device (one per remote tunnel endpoint, the all-zero MAC shared), listed as
/// `bridge fdb show` lists them, and deleted one by one; deleting an unknown MAC says so.
#[tokio::test]
async fn fdb_entries_on_a_bridge_port_and_a_vxlan_device() {
    need_root!();
    let h = PinnedNs::new("fdb");
    let r = ok("connect", Rtnl::connect(&h.ns).await);
    let br = ok(
        "bridge",
        r.add_bridge(
            &BridgeSpec {
                name: "br0",
                ..Default::default()
            },
            MARK,
        )
        .await,
    );
    let (port, _) = ok("veth", r.add_veth("p1", "p1x", None, MARK).await);
    ok("master", r.set_master(port.index, br.index).await);
    let mac = [0x02, 0x42, 0x0a, 0x4e, 0x00, 0x09];
    ok("fdb", r.add_fdb(port.index, mac, None).await);
    ok("fdb again", r.add_fdb(port.index, mac, None).await);
    let entries = ok("list", r.fdb(port.index).await);
    let ours: Vec<_> = entries.iter().filter(|n| n.mac == Some(mac)).collect();
    assert_eq!(ours.len(), 1, "{entries:?}");
    assert!(ours[0].fixed && ours[0].ip.is_none(), "{entries:?}");
    ok("delete", r.delete_fdb(port.index, mac, None).await);
    let entries = ok("list", r.fdb(port.index).await);
    assert!(entries.iter().all(|n| n.mac != Some(mac)), "{entries:?}");

    let vx = ok("vxlan", r.add_vxlan("vx0", 42, 4789, MARK).await);
    let flood = [0u8; 6];
    let remotes: [IpAddr; 2] = [
        Ipv4Addr::new(10, 79, 0, 2).into(),
        Ipv4Addr::new(10, 79, 0, 3).into(),
    ];
    for remote in remotes {
        ok("vxlan fdb", r.add_fdb(vx.index, flood, Some(remote)).await);
    }
    let listed = |entries: Vec<plexus_sys::rtnl::Neighbour>| -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = entries
            .into_iter()
            .filter(|n| n.mac == Some(flood))
            .filter_map(|n| n.ip)
            .collect();
        ips.sort();
        ips
    };
    let all = ok("list", r.fdb(vx.index).await);
    assert_eq!(listed(all.clone()), remotes, "{all:?}");
    ok(
        "delete one",
        r.delete_fdb(vx.index, flood, Some(remotes[0])).await,
    );
    assert_eq!(listed(ok("list", r.fdb(vx.index).await)), [remotes[1]]);
    // A MAC the device has no entry for (the kernel takes a remote it lacks under a MAC it
    // has as done).
    let unknown = [0x02, 0, 0, 0, 0, 0x01];
    match r.delete_fdb(vx.index, unknown, Some(remotes[0])).await {
        Err(SysError::NotFound { what }) => assert!(what.contains("02:00:00:00:00:01"), "{what}"),
        other => panic!("deleting a missing fdb entry: {other:?}"),
    }
}
