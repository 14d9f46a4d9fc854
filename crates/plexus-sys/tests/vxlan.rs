//! VXLAN for overlays against the real kernel (needs root): two "hosts" on an underlay veth,
//! each with an overlay namespace whose VXLAN device was born there from the host's
//! connection; static FDB and neighbour entries are all the tunnel needs (no learning, no
//! flooding). `ip` and `bridge` only check what the kernel holds.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{Link, Rtnl, VxlanSpec, VXLAN_OVERHEAD};
use plexus_sys::SysError;

const MARK: &str = "plexus-test";

#[macro_use]
mod common;
use common::{lo_up, ok, PinnedNs};

/// Runs `cmd` inside `ns` and returns its standard output.
fn run_in(ns: &Netns, cmd: &[&str]) -> String {
    let args: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
    let out = ok(
        "run",
        ns.run(move || {
            std::process::Command::new(&args[0])
                .args(&args[1..])
                .output()
        }),
    );
    let out = ok(&cmd.join(" "), out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mac_of(link: &Link) -> [u8; 6] {
    link.mac
        .as_deref()
        .and_then(|m| m.try_into().ok())
        .unwrap_or_else(|| panic!("{} has no MAC", link.name))
}

/// Echoes one connection at `addr` inside `ns`, from a thread.
fn echo(ns: &Netns, addr: SocketAddr) -> std::thread::JoinHandle<()> {
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

fn call(ns: &Netns, addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    ok(
        "run",
        ns.run(move || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, timeout)?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"over vxlan")?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        }),
    )
}

struct Side {
    host: PinnedNs,
    overlay: PinnedNs,
    rh: Rtnl,
    ro: Rtnl,
    underlay: Ipv4Addr,
    inner: Ipv4Addr,
    vx: Link,
}

/// Host `n` (1 or 2): underlay `192.0.2.n` on `ul0`, an overlay namespace with `vx0` (VNI
/// 4242) born in it, `10.80.0.n/24` on it.
async fn side(n: u8, hosts: &mut Vec<(PinnedNs, Rtnl)>) -> Side {
    let (host, rh) = hosts.remove(0);
    let overlay = PinnedNs::new(&format!("ov{n}"));
    let ro = ok("connect overlay", Rtnl::connect(&overlay.ns).await);
    lo_up(&ro).await;
    let underlay = Ipv4Addr::new(192, 0, 2, n);
    let ul = ok("ul0", rh.require_link("ul0").await);
    ok(
        "ul addr",
        rh.add_address(ul.index, underlay.into(), 24).await,
    );
    ok("ul up", rh.set_up(ul.index).await);
    let spec = VxlanSpec::overlay("vx0", 4242, Some(underlay.into()));
    let vx = ok(
        "vxlan born in the overlay namespace",
        rh.add_vxlan_spec(&spec, Some(&ro), MARK).await,
    );
    assert_eq!(vx.alias.as_deref(), Some(MARK));
    assert!(ok("not in host", rh.link("vx0").await).is_none());
    let inner = Ipv4Addr::new(10, 80, 0, n);
    ok(
        "inner addr",
        ro.add_address(vx.index, inner.into(), 24).await,
    );
    ok("vx up", ro.set_up(vx.index).await);
    let vx = ok("vx0", ro.require_link("vx0").await);
    Side {
        host,
        overlay,
        rh,
        ro,
        underlay,
        inner,
        vx,
    }
}

#[tokio::test]
async fn a_vxlan_born_in_its_namespace_carries_tcp_with_static_entries_only() {
    need_root!();
    let a = PinnedNs::new("ha");
    let b = PinnedNs::new("hb");
    let ra = ok("connect a", Rtnl::connect(&a.ns).await);
    let rb = ok("connect b", Rtnl::connect(&b.ns).await);
    let (_, peer) = ok("underlay veth", ra.add_veth("ul0", "ulb", None, MARK).await);
    ok("move", ra.move_to(peer.index, &b.ns, Some("ul0")).await);
    let mut hosts = vec![(a, ra), (b, rb)];
    let x = side(1, &mut hosts).await;
    let y = side(2, &mut hosts).await;

    // The device is what an overlay needs, and its socket is in the host namespace.
    let details = run_in(&x.overlay.ns, &["ip", "-d", "link", "show", "vx0"]);
    for want in [
        "vxlan id 4242",
        "local 192.0.2.1",
        "dstport 4789",
        "nolearning",
        "proxy",
    ] {
        assert!(details.contains(want), "{want:?} missing: {details}");
    }
    assert!(!details.contains("noudpcsum"), "{details}");
    let sockets = run_in(&x.host.ns, &["ss", "-uln"]);
    assert!(sockets.contains(":4789"), "{sockets}");
    let in_overlay = run_in(&x.overlay.ns, &["ss", "-uln"]);
    assert!(!in_overlay.contains(":4789"), "{in_overlay}");

    // The underlay interface is found by address, and its MTU less VXLAN's overhead fits.
    let owner = ok("owner", x.rh.address_owner(x.underlay.into()).await);
    let ul = ok("ul0", x.rh.require_link("ul0").await);
    assert_eq!(owner, Some(ul.index));
    assert_eq!(
        ok(
            "nobody",
            x.rh.address_owner(Ipv4Addr::new(192, 0, 2, 99).into())
                .await
        ),
        None
    );
    let mtu = ul.mtu.unwrap_or(1500) - VXLAN_OVERHEAD;
    for s in [&x, &y] {
        ok("mtu", s.ro.set_mtu(s.vx.index, mtu).await);
        let vx = ok("vx0", s.ro.require_link("vx0").await);
        assert_eq!(vx.mtu, Some(mtu));
    }

    // Nothing programmed: no learning, no flooding, no way across.
    let server = SocketAddr::from((y.inner, 7100));
    let _e = echo(&y.overlay.ns, server);
    assert!(call(&x.overlay.ns, server, Duration::from_millis(600)).is_err());

    // Each side learns where the other's MAC is and what its address's MAC is.
    for (from, to) in [(&x, &y), (&y, &x)] {
        let mac = mac_of(&to.vx);
        ok(
            "fdb",
            from.ro
                .set_vxlan_fdb(from.vx.index, mac, to.underlay.into())
                .await,
        );
        ok(
            "fdb again",
            from.ro
                .set_vxlan_fdb(from.vx.index, mac, to.underlay.into())
                .await,
        );
        ok(
            "neighbour",
            from.ro
                .set_neighbour(from.vx.index, to.inner.into(), mac)
                .await,
        );
    }
    let fdb = run_in(&x.overlay.ns, &["bridge", "fdb", "show", "dev", "vx0"]);
    let y_mac = plexus_sys::rtnl::format_mac(&mac_of(&y.vx));
    // (`link-netnsid` shows the socket is in another namespace than the device.)
    assert!(
        fdb.lines()
            .any(|l| l.starts_with(&format!("{y_mac} dst 192.0.2.2 "))
                && l.ends_with("self permanent")),
        "{fdb}"
    );
    let neigh = run_in(&x.overlay.ns, &["ip", "neigh", "show", "dev", "vx0"]);
    assert!(
        neigh.contains(&format!("10.80.0.2 lladdr {y_mac} PERMANENT")),
        "{neigh}"
    );
    assert_eq!(
        call(&x.overlay.ns, server, Duration::from_secs(3))
            .ok()
            .as_deref(),
        Some("over vxlan")
    );

    // Set again elsewhere: the MAC moves, it is not copied to two remotes.
    let elsewhere: IpAddr = Ipv4Addr::new(192, 0, 2, 7).into();
    let y_mac_raw = mac_of(&y.vx);
    ok(
        "move",
        x.ro.set_vxlan_fdb(x.vx.index, y_mac_raw, elsewhere).await,
    );
    let entries = ok("fdb", x.ro.fdb(x.vx.index).await);
    let remotes: Vec<_> = entries
        .iter()
        .filter(|n| n.mac == Some(y_mac_raw))
        .map(|n| n.ip)
        .collect();
    assert_eq!(remotes, [Some(elsewhere)], "{entries:?}");
    let _e = echo(&y.overlay.ns, server);
    assert!(call(&x.overlay.ns, server, Duration::from_millis(600)).is_err());

    // Removal, and removing again says what is missing.
    ok(
        "delete fdb",
        x.ro.delete_fdb(x.vx.index, y_mac_raw, Some(elsewhere))
            .await,
    );
    ok(
        "delete neighbour",
        x.ro.delete_neighbour(x.vx.index, y.inner.into()).await,
    );
    let entries = ok("fdb", x.ro.fdb(x.vx.index).await);
    assert!(
        entries.iter().all(|n| n.mac != Some(y_mac_raw)),
        "{entries:?}"
    );
    assert!(matches!(
        x.ro.delete_fdb(x.vx.index, y_mac_raw, Some(elsewhere))
            .await,
        Err(SysError::NotFound { .. })
    ));
    let neigh = run_in(&x.overlay.ns, &["ip", "neigh", "show", "dev", "vx0"]);
    assert!(!neigh.contains("10.80.0.2"), "{neigh}");
}

#[tokio::test]
async fn a_vxlan_id_taken_twice_or_out_of_range_is_refused_by_name() {
    need_root!();
    let h = PinnedNs::new("vxh");
    let r = ok("connect", Rtnl::connect(&h.ns).await);
    let o1 = PinnedNs::new("vxo1");
    let o2 = PinnedNs::new("vxo2");
    let r1 = ok("connect", Rtnl::connect(&o1.ns).await);
    let r2 = ok("connect", Rtnl::connect(&o2.ns).await);
    let spec = VxlanSpec::overlay("vx0", 77, None);
    ok("first", r.add_vxlan_spec(&spec, Some(&r1), MARK).await);
    // Same VNI and port on the same underlay, in another namespace: the kernel refuses.
    let again = r.add_vxlan_spec(&spec, Some(&r2), MARK).await;
    assert!(again.is_err(), "a VNI taken twice on one underlay was made");
    assert!(ok("nothing left", r2.link("vx0").await).is_none());
    for vni in [0, 1 << 24] {
        match r
            .add_vxlan_spec(&VxlanSpec::overlay("vx1", vni, None), None, MARK)
            .await
        {
            Err(SysError::Invalid { field, .. }) => assert_eq!(field, "vxlan id"),
            other => panic!("vni {vni}: {other:?}"),
        }
    }
}

/// Over an IPv6 underlay: the device takes a local IPv6 address, FDB entries an IPv6 tunnel
/// endpoint, and IPv4 inside crosses.
#[tokio::test]
async fn a_vxlan_over_an_ipv6_underlay_carries_tcp() {
    need_root!();
    let a = PinnedNs::new("h6a");
    let b = PinnedNs::new("h6b");
    let ra = ok("connect a", Rtnl::connect(&a.ns).await);
    let rb = ok("connect b", Rtnl::connect(&b.ns).await);
    for ns in [&a.ns, &b.ns] {
        ok(
            "accept_dad",
            plexus_sys::sysctl::write(ns, "net.ipv6.conf.default.accept_dad", "0"),
        );
    }
    let (_, peer) = ok("underlay veth", ra.add_veth("ul0", "ulb", None, MARK).await);
    ok("move", ra.move_to(peer.index, &b.ns, Some("ul0")).await);
    let mut sides = Vec::new();
    for (n, rh) in [(1u16, &ra), (2, &rb)] {
        let underlay: IpAddr = std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, n).into();
        let ul = ok("ul0", rh.require_link("ul0").await);
        ok("ul addr", rh.add_address(ul.index, underlay, 64).await);
        ok("ul up", rh.set_up(ul.index).await);
        let overlay = PinnedNs::new(&format!("ov6{n}"));
        let ro = ok("connect overlay", Rtnl::connect(&overlay.ns).await);
        lo_up(&ro).await;
        let spec = VxlanSpec::overlay("vx0", 4243, Some(underlay));
        let vx = ok("vxlan", rh.add_vxlan_spec(&spec, Some(&ro), MARK).await);
        let inner = Ipv4Addr::new(10, 81, 0, n as u8);
        ok("inner", ro.add_address(vx.index, inner.into(), 24).await);
        ok("up", ro.set_up(vx.index).await);
        let vx = ok("vx0", ro.require_link("vx0").await);
        sides.push((overlay, ro, vx, underlay, inner));
    }
    let details = run_in(&sides[0].0.ns, &["ip", "-d", "link", "show", "vx0"]);
    assert!(details.contains("local 2001:db8::1"), "{details}");
    for (from, to) in [(0, 1), (1, 0)] {
        let (_, ro, vx, _, _) = &sides[from];
        let (_, _, tvx, tul, tin) = &sides[to];
        let mac = mac_of(tvx);
        ok("fdb", ro.set_vxlan_fdb(vx.index, mac, *tul).await);
        ok(
            "neighbour",
            ro.set_neighbour(vx.index, (*tin).into(), mac).await,
        );
    }
    let server = SocketAddr::from((sides[1].4, 7200));
    let _e = echo(&sides[1].0.ns, server);
    assert_eq!(
        call(&sides[0].0.ns, server, Duration::from_secs(3))
            .ok()
            .as_deref(),
        Some("over vxlan")
    );
}
