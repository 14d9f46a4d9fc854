//! The protocol state machine of one node: SWIM + Lifeguard membership, network
//! attachments, networkdb tables, gossip and anti-entropy. Sans-I/O: the caller feeds it
//! bytes and the current time (ms) and drains [`Transmit`]s and [`Event`]s; the tokio
//! runtime and the simulator drive the very same code.
//!
//! One type, [`Node`], whose methods are spread by concern:
//!
//! - this file: the public types, the node's state, construction, events and timers
//!   ([`Node::poll_timeout`], [`Node::handle_timeout`]);
//! - `io`: frame I/O (seal and send, open and dispatch);
//! - `membership`: join, leave, member updates, suspicion and refutation;
//! - `probe`: SWIM probes and the Lifeguard local health multiplier;
//! - `networks`: attachments, table writes and reads, their merge and visibility rules;
//! - `sync`: gossip rounds, anti-entropy, push-pull state and reaping.

mod io;
mod membership;
mod networks;
mod probe;
mod sync;

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::codec::{Address, Body, EntryUpdate, MemberState};
use crate::config::Config;
use crate::members::Members;
use crate::queue::BroadcastQueue;
use crate::rng::{stable_hash, Rng};
use crate::seal::{Keyring, ReplayGuard, Sealer};
use crate::table::{Attach, Entry, Table};

/// Something to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit<A> {
    /// A sealed UDP datagram.
    Datagram {
        /// Destination.
        to: A,
        /// Sealed bytes.
        data: Vec<u8>,
    },
    /// A sealed frame for a TCP stream.
    Stream {
        /// Destination.
        to: A,
        /// Sealed bytes.
        data: Vec<u8>,
    },
}

/// What happened to a visible table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryEventKind {
    /// Became visible.
    Create,
    /// Visible value changed.
    Update,
    /// No longer visible (deleted, owner failed, owner left the network).
    Delete,
}

/// A watch event on a table entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryEvent<A> {
    /// Kind.
    pub kind: EntryEventKind,
    /// Network.
    pub network: String,
    /// Table.
    pub table: String,
    /// Key.
    pub key: String,
    /// Value (the last visible value for deletes).
    pub value: Vec<u8>,
    /// Owner.
    pub owner: A,
}

/// An event for watchers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<A> {
    /// A member changed state.
    Member {
        /// The member.
        node: A,
        /// New state.
        state: MemberState,
    },
    /// A table entry changed.
    Entry(EntryEvent<A>),
}

/// Counters: traffic, and everything dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams received.
    pub rx_datagrams: u64,
    /// Stream frames received.
    pub rx_streams: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Datagrams sent.
    pub tx_datagrams: u64,
    /// Stream frames sent.
    pub tx_streams: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Dropped: larger than the packet size / stream limit.
    pub dropped_oversize: u64,
    /// Dropped: no key opened it (wrong key, tampered, random, truncated seal).
    pub dropped_unauthenticated: u64,
    /// Dropped: replayed or from a stale epoch.
    pub dropped_replay: u64,
    /// Dropped: opened but malformed.
    pub dropped_malformed: u64,
}

/// A member as seen by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo<A> {
    /// Address.
    pub addr: A,
    /// Incarnation.
    pub incarnation: u32,
    /// State.
    pub state: MemberState,
}

/// A network as seen by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo<A> {
    /// Name.
    pub name: String,
    /// Active members attached to it (self included when attached).
    pub nodes: Vec<A>,
    /// Whether this node is attached (and so holds the network's table).
    pub local: bool,
}

/// A stored entry, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo<A> {
    /// Table.
    pub table: String,
    /// Key.
    pub key: String,
    /// Value.
    pub value: Vec<u8>,
    /// Owner.
    pub owner: A,
    /// Lamport time.
    pub ltime: u64,
    /// Tombstone?
    pub deleted: bool,
    /// Visible to readers?
    pub visible: bool,
}

#[derive(Debug)]
struct Probe<A> {
    target: A,
    seq: u32,
    direct_at: u64,
    deadline: u64,
    acked: bool,
    indirect: bool,
    expected_nacks: u32,
    nacks: u32,
}

#[derive(Debug)]
struct Forward<A> {
    origin: A,
    oseq: u32,
    nack_at: u64,
}

#[derive(Debug)]
struct Suspicion<A> {
    inc: u32,
    accusers: Vec<A>,
    start: u64,
    min: u64,
    max: u64,
    deadline: u64,
}

/// Per-network local state (only for attached networks).
#[derive(Debug)]
struct Local<A: Address> {
    table: Table<A>,
    queue: BroadcastQueue,
    bootstrap: bool,
    /// The table has been compared with another attached node's since this node joined
    /// the network (or no other node is attached): what it lacks is known to be gone.
    synced: bool,
}

/// Attachments of every node to one network, by member slot.
#[derive(Debug, Default)]
struct Attachments {
    by_slot: Vec<u64>,
    joined: Vec<u32>,
    dirty: bool,
}

fn pack(a: Attach) -> u64 {
    (a.ltime << 1) | a.joined as u64
}
fn unpack(v: u64) -> Option<Attach> {
    (v != 0).then_some(Attach {
        ltime: v >> 1,
        joined: v & 1 == 1,
    })
}

const MAX_FORWARDS: usize = 1024;

/// One node's protocol state.
#[derive(Debug)]
pub struct Node<A: Address> {
    addr: A,
    cfg: Config,
    epoch: u64,
    dgram_seq: u64,
    stream_seq: u64,
    rng: Rng,
    sealer: Sealer,
    replay: ReplayGuard<A>,
    incarnation: u32,
    leaving: bool,
    clock: u64,
    members: Members<A>,
    dead_since: HashMap<u32, u64>,
    digest: u64,
    net_ids: HashMap<String, usize>,
    net_names: Vec<String>,
    attach: Vec<Attachments>,
    my_attach: BTreeMap<String, Attach>,
    local: BTreeMap<String, Local<A>>,
    cluster_q: BroadcastQueue,
    probe: Option<Probe<A>>,
    probe_order: Vec<u32>,
    probe_pos: usize,
    probe_seq: u32,
    next_probe_at: u64,
    forwards: HashMap<u32, Forward<A>>,
    lhm: u32,
    suspicions: HashMap<u32, Suspicion<A>>,
    next_gossip_at: u64,
    /// When the last gossip round ran (for the spacing of early rounds).
    last_gossip_at: u64,
    next_sync_at: u64,
    next_reap_at: u64,
    join: Option<(Vec<A>, u64)>,
    outbox: VecDeque<Transmit<A>>,
    events: VecDeque<Event<A>>,
    emit_events: bool,
    stats: Stats,
}

fn ms(d: std::time::Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl<A: Address> Node<A> {
    /// A node at `addr` that has joined nothing yet. `epoch` must grow across restarts of
    /// the same address (the runtime uses the wall clock in ms); `seed` seeds its PRNG.
    pub fn new(addr: A, cfg: Config, keyring: Keyring, epoch: u64, seed: u64, now: u64) -> Self {
        let mut rng = Rng::new(seed);
        let sealer = Sealer::new(keyring, &mut rng);
        let gi = ms(cfg.gossip_interval).max(1);
        let si = ms(cfg.sync_interval).max(1);
        let pi = ms(cfg.probe_interval).max(1);
        let next_gossip_at = now + rng.below(gi as usize) as u64;
        let next_sync_at = now + 1 + rng.below(si as usize) as u64;
        let next_probe_at = now + rng.below(pi as usize) as u64;
        let reap_every = (ms(cfg.reap_interval) / 8).clamp(1000, 30_000);
        let mut n = Self {
            addr,
            epoch,
            dgram_seq: 0,
            stream_seq: 0,
            sealer,
            replay: ReplayGuard::new(),
            incarnation: 0,
            leaving: false,
            clock: 0,
            members: Members::new(),
            dead_since: HashMap::new(),
            digest: 0,
            net_ids: HashMap::new(),
            net_names: Vec::new(),
            attach: Vec::new(),
            my_attach: BTreeMap::new(),
            local: BTreeMap::new(),
            cluster_q: BroadcastQueue::new(),
            probe: None,
            probe_order: Vec::new(),
            probe_pos: 0,
            probe_seq: rng.next_u64() as u32,
            next_probe_at,
            forwards: HashMap::new(),
            lhm: 0,
            suspicions: HashMap::new(),
            next_gossip_at,
            last_gossip_at: 0,
            next_sync_at,
            next_reap_at: now + reap_every,
            join: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            emit_events: true,
            stats: Stats::default(),
            rng,
            cfg,
        };
        n.digest = n.self_hash();
        n
    }

    fn self_hash(&self) -> u64 {
        member_hash(&self.addr, self.incarnation, MemberState::Alive)
    }

    fn tick_clock(&mut self) -> u64 {
        // Witnessed times are bounded (`codec::MAX_LTIME`), so this never saturates in
        // practice; saturating keeps a clock that somehow got there from overflowing.
        self.clock = self.clock.saturating_add(1);
        self.clock
    }

    fn witness(&mut self, t: u64) {
        if t > self.clock {
            self.clock = t;
        }
    }

    fn is_active(&self, node: &A) -> bool {
        if *node == self.addr {
            return !self.leaving;
        }
        self.members.get(node).is_some_and(|(_, r)| r.active())
    }

    fn emit(&mut self, e: Event<A>) {
        if self.emit_events {
            self.events.push_back(e);
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event<A>> {
        self.events.pop_front()
    }

    /// Whether events are recorded (on by default; the simulator may switch it off).
    pub fn set_emit_events(&mut self, on: bool) {
        self.emit_events = on;
    }

    /// This node's address.
    pub fn addr(&self) -> A {
        self.addr
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called (ms).
    pub fn poll_timeout(&self) -> u64 {
        let mut t = self
            .next_probe_at
            .min(self.next_gossip_at)
            .min(self.next_sync_at)
            .min(self.next_reap_at);
        if let Some(p) = &self.probe {
            if !p.acked && !p.indirect {
                t = t.min(p.direct_at);
            }
            t = t.min(p.deadline);
        }
        if let Some((_, at)) = &self.join {
            t = t.min(*at);
        }
        for f in self.forwards.values() {
            t = t.min(f.nack_at);
        }
        for s in self.suspicions.values() {
            t = t.min(s.deadline);
        }
        t
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: u64) {
        if let Some((_, at)) = &self.join {
            if *at <= now {
                self.join_attempt(now);
            }
        }
        // Indirect-probe helpers whose target stayed silent send a nack.
        let due: Vec<u32> = self
            .forwards
            .iter()
            .filter(|(_, f)| f.nack_at <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            if let Some(f) = self.forwards.remove(&k) {
                self.send_datagram(f.origin, Body::Nack { seq: f.oseq }, None);
            }
        }
        // Suspicions that ran out.
        let expired: Vec<u32> = self
            .suspicions
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(k, _)| *k)
            .collect();
        for slot in expired {
            if let Some(s) = self.suspicions.remove(&slot) {
                let r = self.members.rec(slot);
                if r.state() == Some(MemberState::Suspect) && r.inc == s.inc {
                    let node = self.members.addr(slot);
                    tracing::debug!(?node, "suspicion expired: declaring dead");
                    self.set_member(node, s.inc, MemberState::Dead, self.addr, now);
                }
            }
        }
        // Probe: indirect stage, then end of period.
        let mut start_indirect = None;
        if let Some(p) = &self.probe {
            if !p.acked && !p.indirect && p.direct_at <= now {
                start_indirect = Some((p.target, p.seq));
            }
        }
        if let Some((target, seq)) = start_indirect {
            let helpers = self.random_members(self.cfg.indirect_probes, |r| r.active());
            let helpers: Vec<A> = helpers.into_iter().filter(|h| *h != target).collect();
            for h in &helpers {
                self.send_datagram(*h, Body::PingReq { seq, target }, None);
            }
            if let Some(p) = self.probe.as_mut() {
                p.indirect = true;
                p.expected_nacks = helpers.len() as u32;
            }
        }
        if self.probe.as_ref().is_some_and(|p| p.deadline <= now) {
            self.finish_probe(now);
        }
        if self.next_probe_at <= now {
            self.start_probe(now);
        }
        if self.next_gossip_at <= now {
            self.gossip(now);
            self.last_gossip_at = now;
            self.next_gossip_at = now + ms(self.cfg.gossip_interval).max(1);
        }
        if self.next_sync_at <= now {
            self.anti_entropy(now);
            self.next_sync_at = now + ms(self.cfg.sync_interval).max(1);
        }
        if self.next_reap_at <= now {
            self.reap(now);
            self.next_reap_at = now + (ms(self.cfg.reap_interval) / 8).clamp(1000, 30_000);
        }
    }
}

/// A bulk bootstrap shared by many simulated nodes (see [`Node::preload`]): the member
/// list, the networks, and the membership digest computed once.
#[derive(Debug, Clone)]
pub struct Preload<A> {
    all: Vec<A>,
    networks: Vec<String>,
    digest: u64,
}

impl<A: Address> Preload<A> {
    /// Every address of `all` alive (incarnation 0) and attached to every network.
    pub fn new(all: Vec<A>, networks: &[&str]) -> Self {
        let at = Attach {
            ltime: 1,
            joined: true,
        };
        let mut digest = 0;
        for a in &all {
            digest ^= member_hash(a, 0, MemberState::Alive);
            for n in networks {
                digest ^= attach_hash(a, n, at);
            }
        }
        Self {
            all,
            networks: networks.iter().map(|s| s.to_string()).collect(),
            digest,
        }
    }
}

fn member_key(slot: u32) -> u64 {
    (1u64 << 62) | slot as u64
}

fn attach_key<A: Address>(node: &A, net: &str) -> u64 {
    let mut b = Vec::new();
    node.encode(&mut b);
    stable_hash(&[b"attach", &b, net.as_bytes()]) & !(3u64 << 62)
}

fn member_hash<A: Address>(node: &A, inc: u32, state: MemberState) -> u64 {
    let mut b = Vec::with_capacity(24);
    node.encode(&mut b);
    let class: u8 = match state {
        MemberState::Alive | MemberState::Suspect => 0,
        MemberState::Dead => 1,
        MemberState::Left => 2,
    };
    stable_hash(&[b"member", &b, &inc.to_be_bytes(), &[class]])
}

fn attach_hash<A: Address>(node: &A, net: &str, a: Attach) -> u64 {
    let mut b = Vec::with_capacity(24);
    node.encode(&mut b);
    stable_hash(&[
        b"attach",
        &b,
        net.as_bytes(),
        &a.ltime.to_be_bytes(),
        &[a.joined as u8],
    ])
}

fn entry_update<A: Address>(table: &str, key: &str, e: &Entry<A>, now: u64) -> EntryUpdate<A> {
    EntryUpdate {
        table: table.to_string(),
        key: key.to_string(),
        owner: e.owner,
        ltime: e.ltime,
        deleted: e.deleted,
        reap_in_ms: e.reap_at.saturating_sub(now),
        value: e.value.clone(),
    }
}
