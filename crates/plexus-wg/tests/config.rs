//! Bad input: clear errors naming the field, and nothing left behind.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use plexus_sys::rtnl::Rtnl;
use plexus_wg::{Device, DeviceConfig, PeerConfig, PrivateKey, PublicKey, WgError};

fn links(under: &Underlay, ns: &plexus_sys::netns::Netns) -> Vec<String> {
    under.rt.block_on(async {
        let r = ok("rtnl", Rtnl::connect(ns).await);
        let mut names: Vec<String> = ok("links", r.links().await)
            .into_iter()
            .map(|l| l.name)
            .collect();
        names.sort();
        names
    })
}

fn create(under: &Underlay, config: DeviceConfig) -> Result<Device, WgError> {
    under.rt.block_on(Device::create(config))
}

#[test]
fn bad_keys_name_their_field() {
    let e = PublicKey::from_base64("hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTm").unwrap_err();
    assert!(e.to_string().starts_with("invalid public key: "), "{e}");
    let e = PrivateKey::from_base64("!!!!").unwrap_err();
    assert!(
        e.to_string().starts_with("invalid private key: not base64"),
        "{e}"
    );
    let e = "QUJD".parse::<plexus_wg::PresharedKey>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid preshared key: decodes to 3 bytes, a key has 32"
    );
}

#[test]
fn bad_device_configurations_change_nothing() {
    need_root!();
    let under = Underlay::new("badcfg");
    let ns = under.a.ns.clone();
    let before = links(&under, &ns);

    let mut c = DeviceConfig::new("wg0", PrivateKey::generate(), ns.clone());
    c.mtu = 100;
    let e = create(&under, c).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid mtu \"100\": must be between 576 and 65455"
    );

    let mut c = DeviceConfig::new("wg0", PrivateKey::generate(), ns.clone());
    c.queues = 0;
    let e = create(&under, c).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid queues \"0\": must be between 1 and 64"
    );

    let c = DeviceConfig::new("a-name-far-too-long", PrivateKey::generate(), ns.clone());
    let e = create(&under, c).unwrap_err().to_string();
    assert!(
        e.contains("invalid tun name \"a-name-far-too-long\""),
        "{e}"
    );

    let mut c = DeviceConfig::new("wg0", PrivateKey::generate(), ns.clone());
    c.addresses = vec![(TUNNEL_A.into(), 33)];
    let e = create(&under, c).unwrap_err().to_string();
    assert_eq!(
        e,
        "invalid address \"10.99.0.1/33\": prefix length is longer than the address"
    );

    // The kernel refuses: the name is the underlay's veth.
    let c = DeviceConfig::new("ul0", PrivateKey::generate(), ns.clone());
    let e = create(&under, c).unwrap_err();
    assert!(
        matches!(&e, WgError::Sys { device, source: plexus_sys::SysError::Exists { .. } } if device == "ul0"),
        "{e}"
    );

    // Fails after the interface was made and configured: the port is taken.
    let taken = ok(
        "bind",
        in_ns(&ns, || UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0)))),
    );
    let mut c = DeviceConfig::new("wg0", PrivateKey::generate(), ns.clone());
    c.listen = ok("addr", taken.local_addr());
    c.addresses = vec![(TUNNEL_A.into(), 24)];
    let e = create(&under, c).unwrap_err();
    assert!(matches!(e, WgError::Socket { .. }), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("UDP socket on {}", ok("addr", taken.local_addr()))),
        "{e}"
    );

    assert!(
        eventually(Duration::from_secs(2), || links(&under, &ns) == before),
        "left behind: {:?} (was {before:?})",
        links(&under, &ns)
    );
}

#[test]
fn bad_peers_are_refused_and_change_nothing() {
    need_root!();
    let under = Underlay::new("badpeer");
    let key = PrivateKey::generate();
    let mut c = DeviceConfig::new("wg0", key.clone(), under.a.ns.clone());
    c.addresses = vec![(TUNNEL_A.into(), 24)];
    let dev = ok("device", create(&under, c));

    let e = dev.add_peer(PeerConfig::new(key.public_key())).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid peer public key: is this device's own public key"
    );

    let p1 = PrivateKey::generate().public_key();
    let mut first = PeerConfig::new(p1);
    first.allowed_ips = vec![ok("prefix", "10.99.0.0/25".parse())];
    ok("first", dev.add_peer(first.clone()));
    let e = dev.add_peer(first).unwrap_err();
    assert_eq!(e.to_string(), format!("peer {p1} already exists"));

    let p2 = PrivateKey::generate().public_key();
    let mut second = PeerConfig::new(p2);
    second.allowed_ips = vec![
        ok("prefix", "10.99.1.0/24".parse()),
        ok("prefix", "10.99.0.0/25".parse()),
    ];
    let e = dev.add_peer(second.clone()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("allowed ip 10.99.0.0/25 of peer {p2} is already routed to peer {p1}")
    );
    assert_eq!(dev.peers(), vec![p1]);
    let e = dev.update_peer(second).unwrap_err();
    assert_eq!(e.to_string(), format!("peer {p2} not found"));
    let e = dev.set_preshared_key(&p2, None).unwrap_err();
    assert_eq!(e.to_string(), format!("peer {p2} not found"));
}
