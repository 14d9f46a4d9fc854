//! Real traffic through two devices in two namespaces over a veth underlay.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use plexus_wg::{PresharedKey, PrivateKey};

#[test]
fn udp_and_tcp_cross_the_tunnel() {
    need_root!();
    udp_and_tcp_across(Lab::new("xfer"));
}

#[test]
fn a_multi_queue_device_carries_udp_and_tcp() {
    need_root!();
    let lab = Lab::with(
        "mq",
        LabOptions {
            queues: 3,
            ..Default::default()
        },
    );
    let link = lab.under.rt.block_on(async {
        let r = ok(
            "rtnl",
            plexus_sys::rtnl::Rtnl::connect(&lab.under.a.ns).await,
        );
        ok("wg0", r.require_link("wg0").await)
    });
    // A multi-queue TUN device is made with the kernel's most queues (256), of which the
    // opened ones are attached; a single-queue one has one.
    assert!(link.tx_queues > Some(1), "not multi-queue: {link:?}");
    assert_eq!(link.mtu, Some(plexus_wg::DEFAULT_MTU));
    udp_and_tcp_across(lab);
}

fn udp_and_tcp_across(lab: Lab) {
    let a = udp(&lab.under.a.ns, TUNNEL_A);
    let b = udp(&lab.under.b.ns, TUNNEL_B);
    assert!(
        udp_echo_once(&a, &b, b"ping over wireguard", Duration::from_secs(10)),
        "no UDP echo across the tunnel"
    );

    let listener = tcp_listener(&lab.under.b.ns, TUNNEL_B);
    let to = ok("addr", listener.local_addr());
    let data = pattern(1 << 20, 7);
    let mut want = Fnv::new();
    want.update(&data);
    let server = std::thread::spawn(move || {
        let (s, _) = ok("accept", listener.accept());
        drain(s, |_| {})
    });
    send_all(tcp_connect(&lab.under.a.ns, to), &data);
    let (n, hash) = ok("server", server.join().map_err(|_| "server panicked"));
    assert_eq!(n, data.len() as u64);
    assert_eq!(hash, want.0, "TCP content changed on the way");

    let ca = lab.dev_a.counters();
    let cb = lab.dev_b.counters();
    assert!(ca.handshakes + cb.handshakes >= 2, "{ca:?} {cb:?}");
    assert!(ca.tx_bytes > data.len() as u64, "{ca:?}");
    assert!(cb.rx_bytes > data.len() as u64, "{cb:?}");
    assert_eq!(
        ca.decrypt_failures() + cb.decrypt_failures(),
        0,
        "{ca:?} {cb:?}"
    );
    let peer = ca
        .peer(&lab.key_b.public_key())
        .expect("peer b in a's counters");
    assert!(peer.last_handshake.is_some());
    assert_eq!(
        peer.endpoint,
        Some(SocketAddr::new(
            UNDERLAY_B.into(),
            lab.dev_b.listen_addr().port()
        ))
    );
}

#[test]
fn the_underlay_carries_no_plaintext() {
    need_root!();
    let lab = Lab::new("clear");
    let a = udp(&lab.under.a.ns, TUNNEL_A);
    let b = udp(&lab.under.b.ns, TUNNEL_B);
    assert!(udp_echo_once(&a, &b, b"warm-up", Duration::from_secs(10)));
    let capture = Capture::new(&lab.under.b.ns, "ul0");
    let sent_before = lab.dev_a.counters();
    let secret = b"PLEXUS-KNOWN-PAYLOAD-0123456789-PLEXUS-KNOWN-PAYLOAD";
    let dest = ok("addr", b.local_addr());
    let mut buf = [0u8; 2048];
    let mut delivered = 0;
    for _ in 0..20 {
        ok("send", a.send_to(secret, dest));
        if let Ok(n) = b.recv(&mut buf) {
            if &buf[..n] == secret {
                delivered += 1;
            }
        }
    }
    assert!(delivered >= 18, "the tunnel carried {delivered} of 20");
    // Each datagram is one IPv4 packet: 20 + 8 bytes of headers and the payload.
    let sent = lab.dev_a.counters();
    assert_eq!(sent.tx_packets - sent_before.tx_packets, 20);
    assert_eq!(
        sent.tx_bytes - sent_before.tx_bytes,
        20 * (28 + secret.len() as u64)
    );
    let frames = capture.frames();
    let port = lab.dev_b.listen_addr().port();
    let wg = frames
        .iter()
        .filter(|f| udp_payload_to(f, port).is_some())
        .count();
    // The capture must have seen the tunnel's datagrams, or its silence proves nothing.
    assert!(
        wg >= 18,
        "captured {} frames, {wg} to the WireGuard port",
        frames.len()
    );
    assert!(
        !frames.iter().any(|f| contains(f, secret)),
        "plaintext seen on the underlay"
    );
}

#[test]
fn forged_and_replayed_packets_are_dropped_and_counted() {
    need_root!();
    let lab = Lab::new("forge");
    let a = udp(&lab.under.a.ns, TUNNEL_A);
    let b = udp(&lab.under.b.ns, TUNNEL_B);
    assert!(udp_echo_once(&a, &b, b"warm-up", Duration::from_secs(10)));
    let capture = Capture::new(&lab.under.b.ns, "ul0");
    let dest = ok("addr", b.local_addr());
    ok("send", a.send_to(b"captured once", dest));
    assert!(recv_matching(&b, b"captured once").is_some());
    // Late copies of the warm-up would pass for a delivered replay.
    drain_udp(&b);
    let mut buf = [0u8; 2048];
    let port = lab.dev_b.listen_addr().port();
    let frames = capture.frames();
    let data = frames
        .iter()
        .filter_map(|f| udp_payload_to(f, port))
        .find(|p| p.first() == Some(&4) && p.len() > 32)
        .expect("a data message on the underlay")
        .to_vec();

    let attacker = udp(&lab.under.a.ns, UNDERLAY_A);
    let wg_b = SocketAddr::new(UNDERLAY_B.into(), port);
    let before = lab.dev_b.counters();
    // The captured message again.
    ok("replay", attacker.send_to(&data, wg_b));
    // A data message for the live session with a fresh counter and made-up ciphertext.
    let mut forged = data.clone();
    forged[8..16].copy_from_slice(&u64::MAX.to_le_bytes()[..]);
    forged[16..].copy_from_slice(&pattern(data.len() - 16, 3));
    ok("forge", attacker.send_to(&forged, wg_b));
    // Random bytes.
    ok("noise", attacker.send_to(&pattern(200, 9), wg_b));

    assert!(
        eventually(Duration::from_secs(3), || {
            let c = lab.dev_b.counters();
            c.replays > before.replays
                && c.bad_mac > before.bad_mac
                && c.malformed > before.malformed
        }),
        "not counted: {:?}",
        lab.dev_b.counters()
    );
    let after = lab.dev_b.counters();
    assert_eq!(after.replays, before.replays + 1);
    assert_eq!(after.bad_mac, before.bad_mac + 1);
    assert_eq!(after.malformed, before.malformed + 1);
    assert_eq!(
        after.rx_packets, before.rx_packets,
        "something reached the TUN"
    );
    assert!(b.recv(&mut buf).is_err(), "the replay was delivered");
}

#[test]
fn a_peer_with_the_wrong_key_cannot_handshake() {
    need_root!();
    let opts = LabOptions {
        b_thinks_a_is: Some(PrivateKey::generate().public_key()),
        ..Default::default()
    };
    let lab = Lab::with("wrongkey", opts);
    let a = udp(&lab.under.a.ns, TUNNEL_A);
    let b = udp(&lab.under.b.ns, TUNNEL_B);
    assert!(!udp_echo_once(&a, &b, b"let me in", Duration::from_secs(2)));
    let ca = lab.dev_a.counters();
    let cb = lab.dev_b.counters();
    assert_eq!(ca.handshakes, 0, "{ca:?}");
    assert_eq!(cb.handshakes, 0, "{cb:?}");
    assert!(cb.unknown_peer >= 1, "b never saw a's initiation: {cb:?}");
    assert_eq!(cb.rx_packets, 0);
}

#[test]
fn removing_a_peer_stops_its_traffic() {
    need_root!();
    let lab = Lab::new("remove");
    let a = udp(&lab.under.a.ns, TUNNEL_A);
    let b = udp(&lab.under.b.ns, TUNNEL_B);
    assert!(udp_echo_once(&a, &b, b"before", Duration::from_secs(10)));
    ok("remove", lab.dev_b.remove_peer(&lab.key_a.public_key()));
    assert!(lab.dev_b.peers().is_empty());
    let before = lab.dev_b.counters();
    assert!(!udp_echo_once(&a, &b, b"after", Duration::from_secs(1)));
    let after = lab.dev_b.counters();
    assert_eq!(after.rx_packets, before.rx_packets);
    assert!(after.unknown_peer > before.unknown_peer, "{after:?}");
    // Nothing routes back either.
    ok(
        "send",
        b.send_to(b"to nobody", SocketAddr::new(TUNNEL_A.into(), 9)),
    );
    assert!(eventually(Duration::from_secs(2), || lab
        .dev_b
        .counters()
        .no_route
        > before.no_route));
    let e = lab.dev_b.remove_peer(&lab.key_a.public_key()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("peer {} not found", lab.key_a.public_key())
    );
}

#[test]
fn psk_rotation_during_a_tcp_stream_loses_nothing() {
    need_root!();
    let opts = LabOptions {
        psk: Some(PresharedKey::generate()),
        ..Default::default()
    };
    let lab = Lab::with("rotate", opts);
    let listener = tcp_listener(&lab.under.b.ns, TUNNEL_B);
    let to = ok("addr", listener.local_addr());
    let data = pattern(8 << 20, 11);
    let mut want = Fnv::new();
    want.update(&data);
    let (progress_tx, progress_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let (s, _) = ok("accept", listener.accept());
        let mut told = false;
        drain(s, |n| {
            if !told && n >= 2 << 20 {
                told = true;
                let _ = progress_tx.send(());
            }
        })
    });
    let stream = tcp_connect(&lab.under.a.ns, to);
    let client = std::thread::spawn(move || send_all(stream, &data));
    ok(
        "progress",
        progress_rx.recv_timeout(Duration::from_secs(30)),
    );
    let handshakes_before = lab.dev_a.counters().handshakes + lab.dev_b.counters().handshakes;
    let next = PresharedKey::generate();
    ok(
        "rotate a",
        lab.dev_a
            .set_preshared_key(&lab.key_b.public_key(), Some(next.clone())),
    );
    ok(
        "rotate b",
        lab.dev_b
            .set_preshared_key(&lab.key_a.public_key(), Some(next)),
    );
    ok("client", client.join().map_err(|_| "client panicked"));
    let (n, hash) = ok("server", server.join().map_err(|_| "server panicked"));
    assert_eq!(n, 8 << 20, "bytes lost");
    assert_eq!(hash, want.0, "content changed");
    assert!(
        eventually(Duration::from_secs(10), || {
            lab.dev_a.counters().handshakes + lab.dev_b.counters().handshakes
                >= handshakes_before + 2
        }),
        "no handshake with the new key: {:?} {:?}",
        lab.dev_a.counters(),
        lab.dev_b.counters()
    );
    let (ka, kb) = (lab.key_a.public_key(), lab.key_b.public_key());
    assert!(
        eventually(Duration::from_secs(5), || {
            let pending = |c: plexus_wg::Counters, k| c.peer(&k).map(|p| p.rotation_pending);
            pending(lab.dev_a.counters(), kb) == Some(false)
                && pending(lab.dev_b.counters(), ka) == Some(false)
        }),
        "the new sessions never took over: {:?} {:?}",
        lab.dev_a.counters(),
        lab.dev_b.counters()
    );
    let ca = lab.dev_a.counters();
    let cb = lab.dev_b.counters();
    assert_eq!(ca.decrypt_failures(), 0, "{ca:?}");
    assert_eq!(cb.decrypt_failures(), 0, "{cb:?}");
    // The new sessions carry traffic.
    let a = udp(&lab.under.a.ns, TUNNEL_A);
    let b = udp(&lab.under.b.ns, TUNNEL_B);
    assert!(udp_echo_once(
        &a,
        &b,
        b"after rotation",
        Duration::from_secs(5)
    ));
}

#[test]
fn a_one_sided_rotation_keeps_the_old_session_until_the_peer_follows() {
    need_root!();
    let lab = Lab::with(
        "oneside",
        LabOptions {
            psk: Some(PresharedKey::generate()),
            ..Default::default()
        },
    );
    let a = udp(&lab.under.a.ns, TUNNEL_A);
    let b = udp(&lab.under.b.ns, TUNNEL_B);
    assert!(udp_echo_once(&a, &b, b"before", Duration::from_secs(10)));
    let (ka, kb) = (lab.key_a.public_key(), lab.key_b.public_key());
    let next = PresharedKey::generate();
    ok(
        "rotate a",
        lab.dev_a.set_preshared_key(&kb, Some(next.clone())),
    );
    // b answers a's new handshake with the old key: a cannot confirm it.
    assert!(eventually(Duration::from_secs(3), || {
        lab.dev_a.counters().handshake_failures > 0
    }));
    let peer = |c: plexus_wg::Counters, k| c.peer(&k).cloned().expect("peer");
    assert!(peer(lab.dev_a.counters(), kb).rotation_pending);
    for i in 0..20u8 {
        assert!(
            udp_echo_once(&a, &b, &[i; 100], Duration::from_secs(1)),
            "the old session stopped carrying traffic"
        );
    }
    ok("rotate b", lab.dev_b.set_preshared_key(&ka, Some(next)));
    assert!(
        eventually(Duration::from_secs(5), || {
            !peer(lab.dev_a.counters(), kb).rotation_pending
                && !peer(lab.dev_b.counters(), ka).rotation_pending
        }),
        "{:?} {:?}",
        lab.dev_a.counters(),
        lab.dev_b.counters()
    );
    assert!(udp_echo_once(&a, &b, b"after", Duration::from_secs(5)));
    assert_eq!(lab.dev_a.counters().decrypt_failures(), 0);
    assert_eq!(lab.dev_b.counters().decrypt_failures(), 0);
}

#[test]
fn packets_from_outside_a_peers_allowed_ips_are_dropped() {
    need_root!();
    let lab = Lab::new("cryptort");
    // a gets a second tunnel address that b does not allow from it.
    lab.under.rt.block_on(async {
        let r = ok(
            "rtnl",
            plexus_sys::rtnl::Rtnl::connect(&lab.under.a.ns).await,
        );
        let wg = ok("wg0", r.require_link("wg0").await);
        let spoof = std::net::Ipv4Addr::new(10, 99, 0, 3);
        ok("address", r.add_address(wg.index, spoof.into(), 24).await);
    });
    let a = udp(&lab.under.a.ns, TUNNEL_A);
    let b = udp(&lab.under.b.ns, TUNNEL_B);
    assert!(udp_echo_once(&a, &b, b"allowed", Duration::from_secs(10)));
    let spoofer = udp(&lab.under.a.ns, std::net::Ipv4Addr::new(10, 99, 0, 3));
    drain_udp(&b);
    let before = lab.dev_b.counters();
    ok(
        "send",
        spoofer.send_to(b"spoofed", ok("addr", b.local_addr())),
    );
    assert!(eventually(Duration::from_secs(2), || {
        lab.dev_b.counters().source_not_allowed > before.source_not_allowed
    }));
    let mut buf = [0u8; 64];
    assert!(
        b.recv(&mut buf).is_err(),
        "a packet from outside the allowed IPs arrived"
    );
    assert_eq!(lab.dev_b.counters().rx_packets, before.rx_packets);
}

#[test]
fn repeated_rotations_keep_traffic_flowing() {
    need_root!();
    let lab = Lab::new("rerotate");
    let a = udp(&lab.under.a.ns, TUNNEL_A);
    let b = udp(&lab.under.b.ns, TUNNEL_B);
    assert!(udp_echo_once(&a, &b, b"before", Duration::from_secs(10)));
    let (ka, kb) = (lab.key_a.public_key(), lab.key_b.public_key());
    let pending = |c: plexus_wg::Counters, k| c.peer(&k).map(|p| p.rotation_pending);
    // More rotations than a peer has tunnel generations: indices are reused safely.
    for round in 0..6u8 {
        let psk = PresharedKey::generate();
        ok(
            "rotate a",
            lab.dev_a.set_preshared_key(&kb, Some(psk.clone())),
        );
        ok("rotate b", lab.dev_b.set_preshared_key(&ka, Some(psk)));
        assert!(
            eventually(Duration::from_secs(5), || {
                pending(lab.dev_a.counters(), kb) == Some(false)
                    && pending(lab.dev_b.counters(), ka) == Some(false)
            }),
            "round {round}: {:?} {:?}",
            lab.dev_a.counters(),
            lab.dev_b.counters()
        );
        assert!(
            udp_echo_once(&a, &b, &[round; 64], Duration::from_secs(5)),
            "round {round}: no traffic"
        );
    }
    assert_eq!(lab.dev_a.counters().decrypt_failures(), 0);
    assert_eq!(lab.dev_b.counters().decrypt_failures(), 0);
}

#[test]
fn ipv6_crosses_the_tunnel() {
    need_root!();
    let lab = Lab::with(
        "six",
        LabOptions {
            ipv6: true,
            ..Default::default()
        },
    );
    let a = udp(&lab.under.a.ns, TUNNEL6_A);
    let b = udp(&lab.under.b.ns, TUNNEL6_B);
    assert!(
        udp_echo_once(&a, &b, b"ping over IPv6", Duration::from_secs(10)),
        "no IPv6 echo across the tunnel: {:?}",
        lab.dev_a.counters()
    );
    assert_eq!(lab.dev_b.counters().source_not_allowed, 0);
}

#[test]
fn a_peer_without_an_endpoint_is_answered_where_it_spoke_from() {
    need_root!();
    let lab = Lab::with(
        "roam",
        LabOptions {
            b_without_endpoint: true,
            ..Default::default()
        },
    );
    let a = udp(&lab.under.a.ns, TUNNEL_A);
    let b = udp(&lab.under.b.ns, TUNNEL_B);
    let ka = lab.key_a.public_key();
    // b cannot start: it does not know where a is.
    ok("send", b.send_to(b"hello?", ok("addr", a.local_addr())));
    assert!(eventually(Duration::from_secs(2), || lab
        .dev_b
        .counters()
        .dropped
        > 0));
    assert_eq!(
        lab.dev_b.counters().peer(&ka).and_then(|p| p.endpoint),
        None
    );
    // Once a spoke, b answers it where it came from.
    assert!(udp_echo_once(&a, &b, b"here I am", Duration::from_secs(10)));
    assert_eq!(
        lab.dev_b.counters().peer(&ka).and_then(|p| p.endpoint),
        Some(SocketAddr::new(
            UNDERLAY_A.into(),
            lab.dev_a.listen_addr().port()
        ))
    );
}

#[test]
fn peers_change_at_run_time() {
    need_root!();
    let lab = Lab::new("update");
    let a = udp(&lab.under.a.ns, TUNNEL_A);
    let b = udp(&lab.under.b.ns, TUNNEL_B);
    assert!(udp_echo_once(&a, &b, b"before", Duration::from_secs(10)));
    let (ka, kb) = (lab.key_a.public_key(), lab.key_b.public_key());
    let b_sees_a = |allowed: &str| {
        let mut p = plexus_wg::PeerConfig::new(ka);
        p.allowed_ips = vec![ok("prefix", allowed.parse())];
        p
    };

    // b no longer accepts 10.99.0.1 from a.
    ok("narrow", lab.dev_b.update_peer(b_sees_a("10.99.0.128/25")));
    let before = lab.dev_b.counters();
    assert!(!udp_echo_once(&a, &b, b"refused", Duration::from_secs(1)));
    assert!(lab.dev_b.counters().source_not_allowed > before.source_not_allowed);

    // And accepts it again; the endpoint learnt is kept (the update names none).
    ok("widen", lab.dev_b.update_peer(b_sees_a("10.99.0.0/24")));
    assert!(udp_echo_once(&a, &b, b"accepted", Duration::from_secs(5)));
    assert_eq!(
        lab.dev_b.counters().peer(&ka).and_then(|p| p.endpoint),
        Some(SocketAddr::new(
            UNDERLAY_A.into(),
            lab.dev_a.listen_addr().port()
        ))
    );

    // A removed peer added back handshakes afresh.
    let handshakes = lab.dev_a.counters().handshakes;
    ok("remove", lab.dev_a.remove_peer(&kb));
    let mut again = plexus_wg::PeerConfig::new(kb);
    again.endpoint = Some(SocketAddr::new(
        UNDERLAY_B.into(),
        lab.dev_b.listen_addr().port(),
    ));
    again.allowed_ips = vec![ok("prefix", format!("{TUNNEL_B}/32").parse())];
    ok("add again", lab.dev_a.add_peer(again));
    assert!(udp_echo_once(&a, &b, b"again", Duration::from_secs(10)));
    assert!(lab.dev_a.counters().handshakes > handshakes);
}
