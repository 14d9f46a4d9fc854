//! SWIM merge rules, refutation and Lifeguard behaviour of one node, fed hand-made frames.

use plexus_gossip::codec::{
    encode_frame, AttachUpdate, Body, EntryUpdate, Frame, Header, Item, MemberUpdate,
};
use plexus_gossip::rng::Rng;
use plexus_gossip::seal::{Channel, Keyring, Sealer};
use plexus_gossip::{Config, Event, MemberState, Node};

const KEY: [u8; 32] = [5; 32];

struct Feeder {
    sealer: Sealer,
    seq: u64,
}

impl Feeder {
    fn new() -> Self {
        Feeder {
            sealer: Sealer::new(Keyring::new(KEY), &mut Rng::new(9)),
            seq: 0,
        }
    }
    fn send(
        &mut self,
        n: &mut Node<u32>,
        from: u32,
        body: Body<u32>,
        items: Vec<Item<u32>>,
        now: u64,
    ) {
        self.seq += 1;
        let f = Frame {
            header: Header {
                from,
                epoch: 1,
                seq: self.seq,
            },
            body,
            items,
        };
        let stream = matches!(body_kind(&f.body), Kind::Stream);
        let ch = if stream {
            Channel::Stream
        } else {
            Channel::Datagram
        };
        let data = self.sealer.seal(ch, &encode_frame(&f));
        if stream {
            n.handle_stream(&data, now);
        } else {
            n.handle_datagram(&data, now);
        }
        while n.poll_transmit().is_some() {}
    }
    fn member(&mut self, n: &mut Node<u32>, node: u32, inc: u32, state: MemberState, now: u64) {
        let it = Item::Member(MemberUpdate {
            node,
            incarnation: inc,
            state,
            from: 99,
        });
        self.send(n, 99, Body::Gossip, vec![it], now);
    }
}

enum Kind {
    Datagram,
    Stream,
}

fn body_kind(b: &Body<u32>) -> Kind {
    match b {
        Body::PushPull { .. } | Body::SyncEntries { .. } | Body::MemberDigest { .. } => {
            Kind::Stream
        }
        _ => Kind::Datagram,
    }
}

fn node() -> Node<u32> {
    Node::new(1, Config::default(), Keyring::new(KEY), 1, 1, 0)
}

#[test]
fn incarnation_and_state_precedence() {
    let mut n = node();
    let mut f = Feeder::new();
    use MemberState::*;
    f.member(&mut n, 2, 0, Suspect, 1);
    assert_eq!(
        n.member_state(&2),
        None,
        "suspicion of an unknown node is ignored"
    );
    f.member(&mut n, 2, 0, Alive, 2);
    assert_eq!(n.member_state(&2), Some(Alive));
    f.member(&mut n, 2, 0, Suspect, 3);
    assert_eq!(n.member_state(&2), Some(Suspect));
    f.member(&mut n, 2, 0, Alive, 4);
    assert_eq!(
        n.member_state(&2),
        Some(Suspect),
        "same incarnation does not refute"
    );
    f.member(&mut n, 2, 1, Alive, 5);
    assert_eq!(
        n.member_state(&2),
        Some(Alive),
        "higher incarnation refutes"
    );
    f.member(&mut n, 2, 0, Dead, 6);
    assert_eq!(n.member_state(&2), Some(Alive), "stale death ignored");
    f.member(&mut n, 2, 1, Dead, 7);
    assert_eq!(n.member_state(&2), Some(Dead));
    f.member(&mut n, 2, 1, Alive, 8);
    assert_eq!(
        n.member_state(&2),
        Some(Dead),
        "dead is final for its incarnation"
    );
    f.member(&mut n, 2, 2, Alive, 9);
    assert_eq!(
        n.member_state(&2),
        Some(Alive),
        "rejoin with a new incarnation"
    );
    f.member(&mut n, 2, 2, Left, 10);
    assert_eq!(n.member_state(&2), Some(Left));
    f.member(&mut n, 2, 2, Dead, 11);
    assert_eq!(n.member_state(&2), Some(Left));
    let evs: Vec<MemberState> = std::iter::from_fn(|| n.poll_event())
        .filter_map(|e| match e {
            Event::Member { node: 2, state } => Some(state),
            _ => None,
        })
        .collect();
    assert_eq!(evs, vec![Alive, Suspect, Alive, Dead, Alive, Left]);
}

#[test]
fn a_node_refutes_suspicion_about_itself_and_its_local_health_drops() {
    let mut n = node();
    let mut f = Feeder::new();
    f.member(&mut n, 2, 0, MemberState::Alive, 1);
    assert_eq!(n.incarnation(), 0);
    f.member(&mut n, 1, 0, MemberState::Suspect, 2);
    assert_eq!(n.incarnation(), 1);
    assert!(
        n.local_health() > 0,
        "Lifeguard: being suspected lowers local health"
    );
    f.member(&mut n, 1, 5, MemberState::Dead, 3);
    assert_eq!(n.incarnation(), 6);
    f.member(&mut n, 1, 2, MemberState::Dead, 4);
    assert_eq!(n.incarnation(), 6, "stale claims need no refutation");
}

#[test]
fn push_pull_deaths_are_only_suspicions_and_suspicion_expires() {
    let mut n = node();
    let mut f = Feeder::new();
    for i in 2..12 {
        f.member(&mut n, i, 0, MemberState::Alive, 1);
    }
    let dead = Item::Member(MemberUpdate {
        node: 5,
        incarnation: 0,
        state: MemberState::Dead,
        from: 3,
    });
    f.send(&mut n, 3, Body::PushPull { reply: true }, vec![dead], 10);
    assert_eq!(n.member_state(&5), Some(MemberState::Suspect));
    // min = 4 * log10(11) * 1 s ≈ 4.2 s; max = 6 × min; no confirmations yet: max applies.
    n.handle_timeout(10 + 5_000);
    assert_eq!(n.member_state(&5), Some(MemberState::Suspect));
    // Two independent confirmations bring the timeout down to the minimum.
    for accuser in [6, 7] {
        let s = Item::Member(MemberUpdate {
            node: 5,
            incarnation: 0,
            state: MemberState::Suspect,
            from: accuser,
        });
        f.send(&mut n, accuser, Body::Gossip, vec![s], 5_100);
    }
    n.handle_timeout(5_200);
    assert_eq!(n.member_state(&5), Some(MemberState::Dead));
}

#[test]
fn entries_respect_attachments_and_lamport_order() {
    let mut n = node();
    n.join_network("net", 0).unwrap();
    let mut f = Feeder::new();
    f.member(&mut n, 2, 0, MemberState::Alive, 1);
    let entry = |ltime: u64, v: &[u8]| {
        Item::Entry(EntryUpdate {
            table: "t".into(),
            key: "k".into(),
            owner: 2,
            ltime,
            deleted: false,
            reap_in_ms: 0,
            value: v.to_vec(),
        })
    };
    let gossip = || Body::TableGossip {
        network: "net".into(),
    };
    // Entry before the owner's attachment is known: stored, hidden.
    f.send(&mut n, 2, gossip(), vec![entry(10, b"a")], 2);
    assert_eq!(n.get("net", "t", "k"), None);
    let attach = |ltime: u64, joined: bool| {
        Item::Attach(AttachUpdate {
            node: 2,
            network: "net".into(),
            ltime,
            joined,
        })
    };
    f.send(&mut n, 2, Body::Gossip, vec![attach(5, true)], 3);
    assert_eq!(
        n.get("net", "t", "k"),
        Some(b"a".to_vec()),
        "visible once attached"
    );
    f.send(&mut n, 2, gossip(), vec![entry(8, b"old")], 4);
    assert_eq!(
        n.get("net", "t", "k"),
        Some(b"a".to_vec()),
        "older write loses"
    );
    f.send(&mut n, 2, gossip(), vec![entry(12, b"b")], 5);
    assert_eq!(n.get("net", "t", "k"), Some(b"b".to_vec()));
    // Owner leaves the network: its entries go.
    f.send(&mut n, 2, Body::Gossip, vec![attach(13, false)], 6);
    assert_eq!(n.get("net", "t", "k"), None);
    assert!(n.table_dump("net").is_empty());
    // A stale copy from before the leave cannot come back.
    f.send(&mut n, 2, gossip(), vec![entry(12, b"b")], 7);
    assert!(n.table_dump("net").is_empty());
    // Own writes take a Lamport time above everything seen.
    n.put("net", "t", "mine", b"x", 8).unwrap();
    let mine = n
        .table_dump("net")
        .into_iter()
        .find(|e| e.key == "mine")
        .unwrap();
    assert!(mine.ltime > 13);
}
