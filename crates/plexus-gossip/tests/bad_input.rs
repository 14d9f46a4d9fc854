//! Hostile input: random, truncated, oversized, replayed, wrong-key and well-sealed
//! garbage frames are dropped and counted, without panics or unbounded work.

use plexus_gossip::codec::{
    decode_frame, encode_frame, Body, EntryUpdate, Frame, Header, Item, MemberState, MemberUpdate,
};
use plexus_gossip::rng::Rng;
use plexus_gossip::seal::{Channel, Keyring, Sealer};
use plexus_gossip::{Config, Node, Transmit};
use proptest::prelude::*;

const KEY: [u8; 32] = [3; 32];

fn node() -> Node<u32> {
    let mut n = Node::new(1, Config::default(), Keyring::new(KEY), 1, 1, 0);
    n.join_network("n", 0).unwrap();
    n
}

fn sealer(key: [u8; 32]) -> Sealer {
    Sealer::new(Keyring::new(key), &mut Rng::new(42))
}

fn ping(seq: u64) -> Vec<u8> {
    encode_frame(&Frame {
        header: Header {
            from: 2u32,
            epoch: 1,
            seq,
        },
        body: Body::Ping { seq: 1, target: 1 },
        items: vec![Item::Member(MemberUpdate {
            node: 2,
            incarnation: 0,
            state: MemberState::Alive,
            from: 2,
        })],
    })
}

fn drain(n: &mut Node<u32>) -> usize {
    let mut c = 0;
    while n.poll_transmit().is_some() {
        c += 1;
    }
    c
}

/// Found by the fuzz target gossip_frame: a keyholder's table entry at Lamport time
/// u64::MAX was witnessed, and the node's next write overflowed its clock (a panic in a
/// debug build; in a release one, writes at time 0 that lose to everything).
#[test]
fn a_lamport_time_at_the_end_of_time_is_malformed() {
    let mut n = node();
    let mut s = sealer(KEY);
    let frame = encode_frame(&Frame {
        header: Header {
            from: 2u32,
            epoch: 1,
            seq: 1,
        },
        body: Body::TableGossip {
            network: "n".into(),
        },
        items: vec![Item::Entry(EntryUpdate {
            table: "t".into(),
            key: "k".into(),
            owner: 2,
            ltime: u64::MAX,
            deleted: false,
            reap_in_ms: 0,
            value: b"v".to_vec(),
        })],
    });
    n.handle_stream(&s.seal(Channel::Stream, &frame), 10);
    assert_eq!(n.stats().dropped_malformed, 1);
    n.put("n", "t", "mine", b"x", 20).unwrap();
    assert_eq!(n.get("n", "t", "mine"), Some(b"x".to_vec()));
}

#[test]
fn each_kind_of_bad_datagram_is_counted() {
    let mut n = node();
    let mut s = sealer(KEY);
    // A good ping is answered.
    let good = s.seal(Channel::Datagram, &ping(1));
    n.handle_datagram(&good, 10);
    assert!(matches!(
        n.poll_transmit(),
        Some(Transmit::Datagram { to: 2, .. })
    ));
    drain(&mut n);
    // Replayed.
    n.handle_datagram(&good, 11);
    assert_eq!(n.stats().dropped_replay, 1);
    assert_eq!(drain(&mut n), 0);
    // Truncated.
    n.handle_datagram(&good[..good.len() - 1], 12);
    n.handle_datagram(&good[..5], 12);
    assert_eq!(n.stats().dropped_unauthenticated, 2);
    // Wrong key.
    let bad = sealer([4; 32]).seal(Channel::Datagram, &ping(2));
    n.handle_datagram(&bad, 13);
    assert_eq!(n.stats().dropped_unauthenticated, 3);
    // Sealed for the stream channel, replayed onto UDP.
    let st = s.seal(Channel::Stream, &ping(3));
    n.handle_datagram(&st, 14);
    assert_eq!(n.stats().dropped_unauthenticated, 4);
    // Oversized.
    n.handle_datagram(&vec![0u8; 1401], 15);
    assert_eq!(n.stats().dropped_oversize, 1);
    // Correctly sealed garbage.
    let g = s.seal(Channel::Datagram, b"\x01garbage that is not a frame");
    n.handle_datagram(&g, 16);
    assert_eq!(n.stats().dropped_malformed, 1);
    assert_eq!(drain(&mut n), 0);
    // Stale epoch after a newer one.
    let newer = encode_frame(&Frame {
        header: Header {
            from: 2u32,
            epoch: 5,
            seq: 1,
        },
        body: Body::Gossip,
        items: vec![],
    });
    n.handle_datagram(&s.seal(Channel::Datagram, &newer), 17);
    n.handle_datagram(&s.seal(Channel::Datagram, &ping(100)), 18);
    assert_eq!(n.stats().dropped_replay, 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut n = node();
        n.handle_datagram(&data, 1);
        n.handle_stream(&data, 1);
        let st = n.stats().clone();
        prop_assert_eq!(
            st.dropped_unauthenticated + st.dropped_oversize + st.dropped_malformed + st.dropped_replay,
            2
        );
        prop_assert_eq!(drain(&mut n), 0);
    }

    #[test]
    fn sealed_random_plaintext_never_panics(data in proptest::collection::vec(any::<u8>(), 0..1300)) {
        let mut n = node();
        let mut s = sealer(KEY);
        n.handle_datagram(&s.seal(Channel::Datagram, &data), 1);
        n.handle_stream(&s.seal(Channel::Stream, &data), 1);
        // Anything may happen to a valid frame, but nothing panics and the decoder agrees.
        let _ = decode_frame::<u32>(&data);
        let _ = decode_frame::<std::net::SocketAddr>(&data);
    }

    #[test]
    fn mutated_valid_frames_never_panic(flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..8)) {
        let mut n = node();
        let mut s = sealer(KEY);
        let mut f = ping(1);
        for (i, b) in flips {
            let len = f.len();
            f[i % len] ^= b;
        }
        n.handle_datagram(&s.seal(Channel::Datagram, &f), 1);
        let _ = decode_frame::<u32>(&f);
    }
}
