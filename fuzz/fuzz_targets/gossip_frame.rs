//! `gossip_frame`: plexus-gossip's frame decoding, fed one frame's bytes per run.
//!
//! - as a sealed frame off the network: `seal::open_with` on both channels, and a `Node`'s
//!   `handle_datagram`/`handle_stream` (it must count it as unauthenticated: nothing of a
//!   frame no key opens is parsed);
//! - as a plaintext frame (what a peer holding the key could send): `codec::decode_frame`
//!   for both address types, `decode_header` + `decode_rest`, and `Item::decode` item by
//!   item; a decoded frame must re-encode to the same length and decode to the same value;
//! - sealed with the cluster's key and handed to a `Node` that has members and a network,
//!   which then runs its timers: no panic whatever a keyholder sends.

#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use plexus_gossip::codec::{self, Address, Item, Reader};
use plexus_gossip::seal::{self, Channel, Keyring, Sealer};
use plexus_gossip::{Config, Node};

/// The cluster key of the fixture.
const KEY: [u8; 32] = [0x5a; 32];

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, n], 7946))
}

fuzz_target!(|data: &[u8]| {
    let ring = Keyring::new(KEY);
    for ch in [Channel::Datagram, Channel::Stream] {
        assert!(
            seal::open_with(&ring, ch, data).is_err(),
            "an unsealed input opened"
        );
    }
    roundtrip::<SocketAddr>(data);
    roundtrip::<u32>(data);
    items::<SocketAddr>(data);
    node(data);
});

/// A frame that decodes re-encodes to as many bytes, which decode to the same frame.
fn roundtrip<A: Address>(data: &[u8]) {
    let decoded = codec::decode_frame::<A>(data);
    let split = codec::decode_header::<A>(data)
        .and_then(|(h, mut r)| codec::decode_rest::<A>(&mut r).map(|(b, i)| (h, b, i)));
    match (&decoded, &split) {
        (Ok(f), Ok((h, b, i))) => {
            assert_eq!((&f.header, &f.body, &f.items), (h, b, i));
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("decode_frame and decode_header+decode_rest disagree"),
    }
    let Ok(frame) = decoded else {
        return;
    };
    let bytes = codec::encode_frame(&frame);
    assert_eq!(bytes.len(), data.len(), "re-encoded frame changed length");
    match codec::decode_frame::<A>(&bytes) {
        Ok(again) => assert_eq!(again, frame, "re-encoded frame decodes differently"),
        Err(e) => panic!("re-encoded frame does not decode: {e}"),
    }
}

/// Items read one by one from the start: each re-encodes to what it was read from (up to
/// how booleans are spelled) and decodes back to itself.
fn items<A: Address>(data: &[u8]) {
    let mut r = Reader::new(data);
    while r.remaining() > 0 {
        let before = r.remaining();
        let Ok(item) = Item::<A>::decode(&mut r) else {
            return;
        };
        let used = before - r.remaining();
        let bytes = item.to_bytes();
        assert_eq!(bytes.len(), used, "item re-encoded to another length");
        let mut again = Reader::new(&bytes);
        assert_eq!(Item::<A>::decode(&mut again).ok(), Some(item));
        assert_eq!(again.remaining(), 0);
    }
}

/// The input sealed with the cluster key, handed to a node with peers and a network.
fn node(data: &[u8]) {
    let cfg = Config::default();
    let mut node = Node::new(addr(1), cfg.clone(), Keyring::new(KEY), 1, 1, 0);
    node.join(&[addr(2)], 0);
    let _ = node.join_network("n1", 0);
    let _ = node.put("n1", "t", "k", b"v", 0);
    // The peer's sealer: its nonces are its own.
    let mut peer = Sealer::new(Keyring::new(KEY), &mut plexus_gossip::rng::Rng::new(2));
    let mut now = 1;

    // Not sealed: dropped before parsing, whatever it holds.
    let before = node.stats().dropped_unauthenticated;
    node.handle_datagram(data, now);
    node.handle_stream(data, now);
    let oversize = u64::from(data.len() > cfg.packet_size);
    assert_eq!(
        node.stats().dropped_unauthenticated + oversize,
        before + 2,
        "an unsealed frame was not dropped as unauthenticated"
    );

    if data.len() + seal::SEAL_OVERHEAD <= cfg.packet_size {
        node.handle_datagram(&peer.seal(Channel::Datagram, data), now);
    }
    node.handle_stream(&peer.seal(Channel::Stream, data), now);
    assert_eq!(node.stats().dropped_unauthenticated, before + 2 - oversize);
    for step in [100, 600, 1_100, 5_000, 40_000] {
        now = step;
        node.handle_timeout(now);
        drain(&mut node);
    }
    let _ = (node.members(), node.networks(), node.table_dump("n1"));
}

fn drain(node: &mut Node<SocketAddr>) {
    while node.poll_transmit().is_some() {}
    while node.poll_event().is_some() {}
}
