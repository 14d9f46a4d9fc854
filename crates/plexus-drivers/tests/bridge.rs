//! The bridge driver through the controller, against the real kernel, with real TCP, in
//! namespaces the tests make: what a user of `docker network` sees. What it leaves behind
//! after bad input, kernel failures and restarts is in `bridge_cleanup.rs`.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use plexus_cnm::{EndpointSpec, IpamPoolSpec, NetworkSpec, PortBinding};
use plexus_sys::rtnl::Rtnl;

fn gw(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, n, 0, 1)
}

#[tokio::test]
async fn two_sandboxes_on_one_network_talk_and_disconnect_leaves_nothing() {
    need_root!();
    let mut w = World::new().await;
    let net = w.network("n1", "10.91.0.0/24", &[]).await;
    let bridge = w.bridge.bridge_name(&net.id).await.unwrap_or_default();
    assert_eq!(bridge, format!("plx-{}", &net.id[..11]));
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let e1 = w.connect("s1", "n1").await;
    let e2 = w.connect("s2", "n1").await;
    assert_eq!(e1.interface.as_deref(), Some("eth0"));
    assert_eq!(ip4(&e1), Ipv4Addr::new(10, 91, 0, 2));
    assert_eq!(e1.mac.as_deref(), Some("02:42:0a:5b:00:02"));
    let eth0 = links_of(w.sb("s1"))
        .await
        .into_iter()
        .find(|l| l.name == "eth0")
        .unwrap_or_else(|| panic!("no eth0 in s1"));
    assert!(eth0.up);
    assert_eq!(eth0.mac, Some(vec![0x02, 0x42, 10, 91, 0, 2]));
    // A network without IPv6: no IPv6 link-local address on the interface (no chatter).
    let rs = ok("rtnl", Rtnl::connect(w.sb("s1")).await);
    let addrs = ok("addresses", rs.addresses(eth0.index).await);
    assert_eq!(
        addrs,
        [(IpAddr::V4(Ipv4Addr::new(10, 91, 0, 2)), 24)],
        "eth0 has only its IPv4 address"
    );

    // The host side: a bridge without multicast snooping, ports with one queue and no IPv6
    // (what keeps attach cost flat in the number of sandboxes).
    let host_links = w.host_links().await;
    let br = host_links.iter().find(|l| l.name == bridge);
    assert_eq!(br.and_then(|l| l.mcast_snooping), Some(false), "{br:?}");
    // The gateway's MAC is the bridge's own, fixed at creation: not the lowest port's (which
    // would change under the sandboxes as ports come and go).
    let br_mac = br.and_then(|l| l.mac.clone());
    assert_eq!(
        br_mac.as_ref().map(|m| m[..2].to_vec()),
        Some(vec![0x02, 0x42])
    );
    let port_macs: Vec<Option<Vec<u8>>> = host_links
        .iter()
        .filter(|l| l.master == br.map(|b| b.index))
        .map(|l| l.mac.clone())
        .collect();
    // The host ends carry the bridge's own MAC, so the bridge keeps one local forwarding
    // entry for all of them (no per-port entry to walk when a port comes or goes).
    assert_eq!(port_macs, [br_mac.clone(), br_mac.clone()]);
    let port = host_links
        .iter()
        .find(|l| l.name == format!("plxv{}", &e1.id[..11]));
    assert_eq!(port.and_then(|l| l.tx_queues), Some(1), "{port:?}");
    assert_eq!(port.map(|l| l.up), Some(true), "{port:?}");
    let key = format!("net.ipv6.conf.plxv{}.disable_ipv6", &e1.id[..11]);
    assert_eq!(
        plexus_sys::sysctl::read(&w.host.ns, &key).ok().as_deref(),
        Some("1")
    );

    let _srv = Server::start(w.sb("s2"), sa(ip4(&e2), 7000));
    assert_eq!(
        reaches(w.sb("s1"), sa(ip4(&e2), 7000)),
        ip4(&e1).to_string()
    );
    // The gateway (the bridge's address) answers too.
    let _gw = Server::start(&w.host.ns, sa(gw(91), 7001));
    assert_eq!(reaches(w.sb("s1"), sa(gw(91), 7001)), ip4(&e1).to_string());

    ok("disconnect", w.controller.disconnect("s1", "n1").await);
    // At once (the kernel's deletion of the pair goes on in the background): no eth0, no
    // interface up but loopback, no way to s2.
    let left: Vec<(String, bool)> = links_of(w.sb("s1"))
        .await
        .into_iter()
        .filter(|l| l.name != "lo")
        .map(|l| (l.name, l.up))
        .collect();
    assert!(
        left.iter().all(|(name, up)| name != "eth0" && !up),
        "{left:?}"
    );
    assert!(blocked(w.sb("s1"), sa(ip4(&e2), 7000)));
    // Connected again straight away: eth0 again, and it works.
    let e1 = w.connect("s1", "n1").await;
    assert_eq!(e1.interface.as_deref(), Some("eth0"));
    assert_eq!(
        reaches(w.sb("s1"), sa(ip4(&e2), 7000)),
        ip4(&e1).to_string()
    );
    ok("disconnect", w.controller.disconnect("s1", "n1").await);
    ok("disconnect", w.controller.disconnect("s2", "n1").await);
    w.bridge.settle().await;
    let names: Vec<String> = links_of(w.sb("s1"))
        .await
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert_eq!(names, ["lo"]);
    // Disconnecting twice is a clean 404, not a kernel error.
    let again = w.controller.disconnect("s1", "n1").await;
    assert_eq!(again.err().map(|e| e.http_status()), Some(404));
    ok("rm", w.controller.delete_network("n1").await);
    assert!(
        w.marked_links().await.is_empty(),
        "{:?}",
        w.marked_links().await
    );
    let st = ok("state", w.bridge.firewall().state());
    assert!(
        st.bridges.is_empty() && st.subnets.is_empty() && st.ports.is_empty(),
        "{st:?}"
    );
}

/// The controller guesses `eth0` for a sandbox's first endpoint; a sandbox whose runtime
/// already put its own `eth0` there gets `eth1`, in the kernel and in the record.
#[tokio::test]
async fn an_interface_name_the_sandbox_already_has_is_skipped_and_recorded() {
    need_root!();
    let mut w = World::new().await;
    w.network("n1", "10.97.0.0/24", &[]).await;
    w.sandbox("s1").await;
    let rs = ok("rtnl", Rtnl::connect(w.sb("s1")).await);
    ok(
        "foreign eth0",
        rs.add_veth("eth0", "other0", None, "someone-else").await,
    );
    let e = w.connect("s1", "n1").await;
    assert_eq!(e.interface.as_deref(), Some("eth1"));
    let sandbox = ok("sandbox", w.controller.sandbox("s1").await);
    let recorded = ok("records", w.controller.sandbox_endpoints(&sandbox).await);
    assert_eq!(
        recorded
            .iter()
            .map(|(ep, _)| ep.interface.as_deref())
            .collect::<Vec<_>>(),
        [Some("eth1")]
    );
    let eth1 = links_of(w.sb("s1"))
        .await
        .into_iter()
        .find(|l| l.name == "eth1");
    let addrs = ok(
        "addresses",
        rs.addresses(eth1.map(|l| l.index).unwrap_or(0)).await,
    );
    assert!(
        addrs.contains(&(IpAddr::V4(ip4(&e)), 24)),
        "eth1 carries the endpoint's address: {addrs:?}"
    );
    // The runtime's own interface is untouched.
    let names: Vec<String> = links_of(w.sb("s1"))
        .await
        .into_iter()
        .map(|l| l.name)
        .collect();
    assert!(names.contains(&"eth0".to_string()), "{names:?}");
}

#[tokio::test]
async fn networks_are_isolated_and_a_sandbox_on_both_reaches_both() {
    need_root!();
    let mut w = World::new().await;
    w.network("n1", "10.92.0.0/24", &[]).await;
    w.network("n2", "10.93.0.0/24", &[]).await;
    for s in ["a", "b", "c"] {
        w.sandbox(s).await;
    }
    let ea = w.connect("a", "n1").await;
    let eb = w.connect("b", "n2").await;
    let c1 = w.connect("c", "n1").await;
    let c2 = w.connect("c", "n2").await;
    assert_eq!(c1.interface.as_deref(), Some("eth0"));
    assert_eq!(c2.interface.as_deref(), Some("eth1"));
    let _sa = Server::start(w.sb("a"), sa(ip4(&ea), 7000));
    let _sb = Server::start(w.sb("b"), sa(ip4(&eb), 7000));
    assert!(blocked(w.sb("a"), sa(ip4(&eb), 7000)), "n1 reached n2");
    assert_eq!(reaches(w.sb("c"), sa(ip4(&ea), 7000)), ip4(&c1).to_string());
    assert_eq!(reaches(w.sb("c"), sa(ip4(&eb), 7000)), ip4(&c2).to_string());
    // Leaving the network that gave c its default route hands the route to the other one:
    // egress goes on, masqueraded to the host's outside address.
    let _out = Server::start(&w.outside.ns, sa(OUTSIDE, 9000));
    assert_eq!(reaches(w.sb("c"), sa(OUTSIDE, 9000)), HOST_EXT.to_string());
    ok("disconnect", w.controller.disconnect("c", "n1").await);
    assert_eq!(reaches(w.sb("c"), sa(OUTSIDE, 9000)), HOST_EXT.to_string());
}

#[tokio::test]
async fn published_ports_answer_from_outside_other_sandboxes_and_the_host() {
    need_root!();
    published_ports(World::new().await).await;
}

#[tokio::test]
async fn published_ports_answer_everywhere_with_br_netfilter_on_too() {
    need_root!();
    published_ports(World::with_br_netfilter().await).await;
}

async fn published_ports(mut w: World) {
    w.network("n1", "10.94.0.0/24", &[]).await;
    w.network("n2", "10.95.0.0/24", &[]).await;
    for s in ["web", "peer", "other", "clash"] {
        w.sandbox(s).await;
    }
    let bind = tcp;
    let web = w
        .connect_with(
            "web",
            "n1",
            EndpointSpec {
                ports: vec![bind(80, 8080), bind(81, 0)],
                ..Default::default()
            },
        )
        .await;
    assert_eq!(web.ports[0].host_port, 8080);
    let eph = web.ports[1].host_port;
    assert!((49153..=60999).contains(&eph), "ephemeral port {eph}");
    w.connect("peer", "n1").await;
    w.connect("other", "n2").await;
    let _s80 = Server::start(w.sb("web"), sa(ip4(&web), 80));
    let _s81 = Server::start(w.sb("web"), sa(ip4(&web), 81));

    // From outside, keeping the client's address.
    assert_eq!(
        reaches(&w.outside.ns, sa(HOST_EXT, 8080)),
        OUTSIDE.to_string()
    );
    assert_eq!(
        reaches(&w.outside.ns, sa(HOST_EXT, eph)),
        OUTSIDE.to_string()
    );
    // The driver reports them as libnetwork's bridge does (EndpointOperInfo).
    let info = ok(
        "oper info",
        w.controller.endpoint_oper_info("web", "n1").await,
    );
    assert_eq!(
        info["com.docker.network.endpoint.macaddress"],
        web.mac.clone().unwrap_or_default()
    );
    let portmap = info["com.docker.network.portmap"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut mapped: Vec<(u64, u64, u64)> = portmap
        .iter()
        .map(|m| {
            let n = |k: &str| m[k].as_u64().unwrap_or(0);
            (n("Proto"), n("Port"), n("HostPort"))
        })
        .collect();
    mapped.sort();
    assert_eq!(mapped, [(6, 80, 8080), (6, 81, u64::from(eph))]);
    assert!(
        portmap
            .iter()
            .all(|m| m["IP"] == ip4(&web).to_string() && m["HostIP"] == "0.0.0.0"),
        "{portmap:?}"
    );
    // From another sandbox, on the same network and on another one, via the host address.
    reaches(w.sb("peer"), sa(HOST_EXT, 8080));
    reaches(w.sb("other"), sa(HOST_EXT, 8080));
    // Even from the publishing sandbox itself.
    reaches(w.sb("web"), sa(HOST_EXT, 8080));
    // From the host itself, and through localhost.
    reaches(&w.host.ns, sa(HOST_EXT, 8080));
    reaches(&w.host.ns, sa(Ipv4Addr::LOCALHOST, 8080));

    // The same host port again: refused, naming the owner, leaving nothing behind.
    let links = w.host_links().await.len();
    let published = w.bridge.firewall().published();
    let clash = w
        .controller
        .connect(
            "clash",
            "n1",
            EndpointSpec {
                ports: vec![bind(80, 8080)],
                ..Default::default()
            },
        )
        .await;
    match clash {
        Err(e) => assert!(
            e.to_string().contains(&web.id) && e.to_string().contains("8080"),
            "{e}"
        ),
        Ok(ep) => panic!("second publish of 8080 gave {ep:?}"),
    }
    assert_eq!(w.host_links().await.len(), links);
    assert_eq!(w.bridge.firewall().published(), published);
    assert_eq!(links_of(w.sb("clash")).await.len(), 1);

    // A host range for one container port (`-p 8080-8082:80`): the first free one, 8081.
    let ranged = |end: u16| EndpointSpec {
        ports: vec![PortBinding {
            host_port_end: end,
            ..bind(80, 8080)
        }],
        ..Default::default()
    };
    let picked = w.connect_with("clash", "n1", ranged(8081)).await;
    assert_eq!(picked.ports[0].host_port, 8081);
    assert_eq!(picked.ports[0].host_port_end, 0);
    let _picked80 = Server::start(w.sb("clash"), sa(ip4(&picked), 80));
    assert_eq!(
        reaches(&w.outside.ns, sa(HOST_EXT, 8081)),
        OUTSIDE.to_string()
    );
    // The range is full now: refused, naming it.
    match w.controller.connect("peer", "n2", ranged(8081)).await {
        Err(e) => assert!(
            e.http_status() == 409 && e.to_string().contains("8080-8081"),
            "{e}"
        ),
        Ok(ep) => panic!("a full range gave {ep:?}"),
    }
    ok("disconnect", w.controller.disconnect("clash", "n1").await);

    // Disconnected: the ports are withdrawn (refused at once, nothing listens on the host).
    ok("disconnect", w.controller.disconnect("web", "n1").await);
    assert!(blocked(&w.outside.ns, sa(HOST_EXT, 8080)));
    assert!(w.bridge.firewall().published().is_empty());
}

#[tokio::test]
async fn icc_false_internal_and_masquerade_shape_egress() {
    need_root!();
    let mut w = World::new().await;
    w.network(
        "icc",
        "10.96.0.0/24",
        &[("com.docker.network.bridge.enable_icc", "false")],
    )
    .await;
    ok(
        "internal",
        w.controller
            .create_network(NetworkSpec {
                internal: true,
                ..net_spec("int", "10.97.0.0/24", &[])
            })
            .await,
    );
    w.network(
        "nomasq",
        "10.98.0.0/24",
        &[("com.docker.network.bridge.enable_ip_masquerade", "false")],
    )
    .await;
    for s in ["s1", "s2", "s3", "s4", "s5"] {
        w.sandbox(s).await;
    }
    let e1 = w.connect("s1", "icc").await;
    let e2 = w.connect("s2", "icc").await;
    w.connect("s3", "int").await;
    let e4 = w.connect("s4", "int").await;
    w.connect("s5", "nomasq").await;
    let _out = Server::start(&w.outside.ns, sa(OUTSIDE, 9000));
    let _s2 = Server::start(w.sb("s2"), sa(ip4(&e2), 7000));
    let _s4 = Server::start(w.sb("s4"), sa(ip4(&e4), 7000));

    // icc=false: no sandbox-to-sandbox, but egress (masqueraded to the host's outside
    // address) and the gateway work.
    assert!(
        blocked(w.sb("s1"), sa(ip4(&e2), 7000)),
        "icc=false let s1 reach s2"
    );
    assert_eq!(reaches(w.sb("s1"), sa(OUTSIDE, 9000)), HOST_EXT.to_string());
    let _gw = Server::start(&w.host.ns, sa(gw(96), 7001));
    assert_eq!(reaches(w.sb("s1"), sa(gw(96), 7001)), ip4(&e1).to_string());
    // Internal: sandboxes talk, nothing goes out (no default route, and the firewall drops).
    reaches(w.sb("s3"), sa(ip4(&e4), 7000));
    assert!(
        blocked(w.sb("s3"), sa(OUTSIDE, 9000)),
        "internal network reached out"
    );
    // No masquerade: the outside has no route back.
    assert!(
        blocked(w.sb("s5"), sa(OUTSIDE, 9000)),
        "unmasqueraded egress answered"
    );
}

#[tokio::test]
async fn mtu_prefix_mac_and_ipv6_apply_inside_the_sandbox() {
    need_root!();
    let mut w = World::new().await;
    let spec = NetworkSpec {
        enable_ipv6: true,
        ipv6: vec![IpamPoolSpec {
            subnet: Some("fd00:99::/64".into()),
            ..Default::default()
        }],
        ..net_spec(
            "v6",
            "10.99.0.0/24",
            &[
                ("com.docker.network.driver.mtu", "1400"),
                ("com.docker.network.container_iface_prefix", "net"),
            ],
        )
    };
    ok("create", w.controller.create_network(spec).await);
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let e1 = w
        .connect_with(
            "s1",
            "v6",
            EndpointSpec {
                mac: Some("02:aa:bb:cc:dd:ee".into()),
                ports: vec![tcp(80, 8086)],
                ..Default::default()
            },
        )
        .await;
    let e2 = w.connect("s2", "v6").await;
    assert_eq!(e1.interface.as_deref(), Some("net0"));
    let link = links_of(w.sb("s1"))
        .await
        .into_iter()
        .find(|l| l.name == "net0")
        .unwrap_or_else(|| panic!("no net0 in s1"));
    assert_eq!(link.mtu, Some(1400));
    assert_eq!(link.mac, Some(vec![0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]));
    let _srv = Server::start(w.sb("s2"), sa(ip6(&e2), 7000));
    assert_eq!(
        reaches(w.sb("s1"), sa(ip6(&e2), 7000)),
        ip6(&e1).to_string()
    );
    let _srv4 = Server::start(w.sb("s2"), sa(ip4(&e2), 7000));
    assert_eq!(
        reaches(w.sb("s1"), sa(ip4(&e2), 7000)),
        ip4(&e1).to_string()
    );

    // IPv6 egress is masqueraded, and the published port answers over IPv6 and IPv4.
    let (host6, out6) = w.outside_v6().await;
    let _out = Server::start(&w.outside.ns, sa(out6, 9000));
    assert_eq!(reaches(w.sb("s1"), sa(out6, 9000)), host6.to_string());
    let _web6 = Server::start(w.sb("s1"), sa(ip6(&e1), 80));
    let _web4 = Server::start(w.sb("s1"), sa(ip4(&e1), 80));
    assert_eq!(reaches(&w.outside.ns, sa(host6, 8086)), out6.to_string());
    assert_eq!(
        reaches(&w.outside.ns, sa(HOST_EXT, 8086)),
        OUTSIDE.to_string()
    );
}

/// Big IPv4 packets (BIG TCP) on a network's veth pairs: `auto` stays at 64 KiB while the host
/// has an uplink that takes no more and goes to the largest size once it has none; an
/// explicit size applies to both ends; and bulk TCP arrives whole between sandboxes, out
/// through masquerade (cut into segments in software at the 64 KiB uplink) and in through a
/// published port; with `br_netfilter` off (Plexus's own namespace) and on (a host shared
/// with Docker), whose IPv4 header checks must take BIG TCP's zero total length.
#[tokio::test]
async fn big_tcp_sizes_apply_and_bulk_tcp_arrives_whole_everywhere() {
    need_root!();
    big_tcp(World::new().await).await;
}

#[tokio::test]
async fn big_tcp_arrives_whole_with_br_netfilter_on_too() {
    need_root!();
    big_tcp(World::with_br_netfilter().await).await;
}

async fn big_tcp(mut w: World) {
    let lo = ok("lo", w.rh.require_link("lo").await);
    if lo.gso_ipv4_max_size.is_none() {
        return plexus_testkit::skip("this kernel has no IPv4 BIG TCP (before 6.3)");
    }
    let gso_of = |links: Vec<plexus_sys::rtnl::Link>, name: &str| {
        links
            .into_iter()
            .find(|l| l.name == name)
            .map(|l| (l.gso_max_size, l.gso_ipv4_max_size))
    };
    const BIG: u32 = plexus_sys::rtnl::GSO_MAX_SIZE;
    let legacy = Some((Some(65_536), Some(65_536)));
    // IPv6 stays at 64 KiB (see plexus-drivers' gso module).
    let big = Some((Some(65_536), Some(BIG)));

    // auto, with the 64 KiB ext0 uplink: the kernel's default.
    w.network("auto", "10.97.0.0/24", &[]).await;
    w.sandbox("a1").await;
    w.connect("a1", "auto").await;
    assert_eq!(gso_of(links_of(w.sb("a1")).await, "eth0"), legacy);

    // An explicit size: both ends.
    let size = BIG.to_string();
    let spec = NetworkSpec {
        enable_ipv6: true,
        ipv6: vec![IpamPoolSpec {
            subnet: Some("fd00:98::/64".into()),
            ..Default::default()
        }],
        ..net_spec(
            "big",
            "10.98.0.0/24",
            &[("plexus.bridge.gso_ipv4_max_size", &size)],
        )
    };
    ok("create big", w.controller.create_network(spec).await);
    w.sandbox("s1").await;
    w.sandbox("s2").await;
    let spec = EndpointSpec {
        ports: vec![tcp(80, 8097)],
        ..Default::default()
    };
    let e1 = w.connect_with("s1", "big", spec).await;
    w.connect("s2", "big").await;
    assert_eq!(gso_of(links_of(w.sb("s1")).await, "eth0"), big);
    let host_end = format!("plxv{}", &e1.id[..11]);
    assert_eq!(gso_of(w.host_links().await, &host_end), big);

    const BULK: usize = 64 << 20;
    let _sink1 = Sink::start(w.sb("s1"), sa(ip4(&e1), 80));
    let got = send_bulk(w.sb("s2"), sa(ip4(&e1), 80), BULK);
    assert_eq!(ok("sandbox to sandbox", got), BULK as u64);
    let _out = Sink::start(&w.outside.ns, sa(OUTSIDE, 9001));
    let got = send_bulk(w.sb("s1"), sa(OUTSIDE, 9001), BULK);
    assert_eq!(ok("egress through masquerade", got), BULK as u64);
    let got = send_bulk(&w.outside.ns, sa(HOST_EXT, 8097), BULK);
    assert_eq!(ok("in through the published port", got), BULK as u64);
    // IPv6, which keeps 64 KiB packets (IPv6 BIG TCP crawls through masquerade): between
    // sandboxes, and out through IPv6 masquerade, at full speed (BULK in well under 10 s,
    // send_bulk's timeout).
    let _sink6 = Sink::start(w.sb("s1"), sa(ip6(&e1), 81));
    let got = send_bulk(w.sb("s2"), sa(ip6(&e1), 81), BULK);
    assert_eq!(ok("sandbox to sandbox over IPv6", got), BULK as u64);
    let (_, out6) = w.outside_v6().await;
    let _out6 = Sink::start(&w.outside.ns, sa(out6, 9002));
    let got = send_bulk(w.sb("s1"), sa(out6, 9002), BULK);
    assert_eq!(ok("egress through IPv6 masquerade", got), BULK as u64);

    // Without the uplink, auto goes as high as the veth goes (a host whose every interface
    // takes big packets; here: one with no interface of its own at all).
    let ext0 = ok("ext0", w.rh.require_link("ext0").await);
    ok("delete ext0", w.rh.delete_link(ext0.index).await);
    w.network("auto2", "10.96.0.0/24", &[]).await;
    w.sandbox("b1").await;
    w.connect("b1", "auto2").await;
    assert_eq!(gso_of(links_of(w.sb("b1")).await, "eth0"), big);
}
