//! The protocol state machine of one node: SWIM + Lifeguard membership, network
//! attachments, networkdb tables, gossip and anti-entropy. Sans-I/O: the caller feeds it
//! bytes and the current time (ms) and drains [`Transmit`]s and [`Event`]s; the tokio
//! runtime and the simulator drive the very same code.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::codec::{
    decode_header, decode_rest, encode_head, set_item_count, Address, AttachUpdate, Body,
    EntryUpdate, Header, Item, MemberState, MemberUpdate, MAX_NAME, MAX_VALUE,
};
use crate::config::Config;
use crate::error::GossipError;
use crate::members::{suspicion_min, suspicion_timeout, Members};
use crate::queue::BroadcastQueue;
use crate::rng::{stable_hash, Rng};
use crate::seal::{Channel, Keyring, ReplayGuard, Sealer, SEAL_OVERHEAD};
use crate::table::{attach_newer, superseded, visible, Attach, Entry, Merge, Table, BUCKETS};

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

    // ----- small helpers -------------------------------------------------------------

    fn self_hash(&self) -> u64 {
        member_hash(&self.addr, self.incarnation, MemberState::Alive)
    }

    fn tick_clock(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn witness(&mut self, t: u64) {
        if t > self.clock {
            self.clock = t;
        }
    }

    fn scale(&self) -> u64 {
        self.lhm as u64 + 1
    }

    /// Packets each broadcast rides on: `mult × (ceil(log10(n+1)) + 2)`. memberlist uses
    /// `mult × ceil(log10(n+1))`; the extra `2 × mult` makes the chance that a pure push
    /// misses a node negligible (e^-c per node for c transmissions per node), so anti-entropy
    /// is a safety net rather than the tail of every convergence.
    fn retransmit_limit(&self, n: usize) -> u32 {
        let l = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
        self.cfg.retransmit_mult.max(1) * (l + 2)
    }

    fn net_id(&mut self, name: &str) -> usize {
        if let Some(i) = self.net_ids.get(name) {
            return *i;
        }
        let i = self.net_names.len();
        self.net_ids.insert(name.to_string(), i);
        self.net_names.push(name.to_string());
        self.attach.push(Attachments::default());
        i
    }

    fn attach_of(&self, node: &A, net: &str) -> Option<Attach> {
        if *node == self.addr {
            return self.my_attach.get(net).copied();
        }
        let slot = self.members.slot(node)?;
        let id = *self.net_ids.get(net)?;
        self.attach
            .get(id)?
            .by_slot
            .get(slot as usize)
            .and_then(|v| unpack(*v))
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

    fn emit_entry(
        &mut self,
        kind: EntryEventKind,
        net: &str,
        table: &str,
        key: &str,
        e: &Entry<A>,
    ) {
        self.emit(Event::Entry(EntryEvent {
            kind,
            network: net.to_string(),
            table: table.to_string(),
            key: key.to_string(),
            value: e.value.clone(),
            owner: e.owner,
        }));
    }

    // ----- sending --------------------------------------------------------------------

    fn send_datagram(&mut self, to: A, body: Body<A>, prefer: Option<u64>) {
        let header = Header {
            from: self.addr,
            epoch: self.epoch,
            seq: {
                self.dgram_seq += 1;
                self.dgram_seq
            },
        };
        let mut w = Vec::with_capacity(self.cfg.packet_size);
        let at = encode_head(&header, &body, &mut w);
        let budget = self.cfg.packet_size.saturating_sub(SEAL_OVERHEAD + w.len());
        let limit = self.retransmit_limit(self.members.active() + 1);
        let n = match &body {
            Body::TableGossip { network } => {
                let lim = self.table_limit(network);
                match self.local.get_mut(network) {
                    Some(l) => l.queue.fill(&mut w, budget, lim, None),
                    None => 0,
                }
            }
            _ => self.cluster_q.fill(&mut w, budget, limit, prefer),
        };
        set_item_count(&mut w, at, n);
        let data = self.sealer.seal(Channel::Datagram, &w);
        self.stats.tx_datagrams += 1;
        self.stats.tx_bytes += data.len() as u64;
        self.outbox.push_back(Transmit::Datagram { to, data });
    }

    fn send_stream(&mut self, to: A, body: Body<A>, items: &[Item<A>]) {
        let raw: Vec<Vec<u8>> = items
            .iter()
            .take(u16::MAX as usize)
            .map(|it| it.to_bytes())
            .collect();
        self.send_stream_raw(to, body, &raw);
    }

    fn send_stream_raw(&mut self, to: A, body: Body<A>, items: &[Vec<u8>]) {
        let header = Header {
            from: self.addr,
            epoch: self.epoch,
            seq: {
                self.stream_seq += 1;
                self.stream_seq
            },
        };
        let mut w = Vec::new();
        let at = encode_head(&header, &body, &mut w);
        let n = items.len().min(u16::MAX as usize);
        for it in &items[..n] {
            w.extend_from_slice(it);
        }
        set_item_count(&mut w, at, n);
        let data = self.sealer.seal(Channel::Stream, &w);
        self.stats.tx_streams += 1;
        self.stats.tx_bytes += data.len() as u64;
        self.outbox.push_back(Transmit::Stream { to, data });
    }

    /// Transmissions of a table event in `network` (same formula as the cluster's, over
    /// the network's size).
    fn table_limit(&self, network: &str) -> u32 {
        let nl = self
            .net_ids
            .get(network)
            .map(|i| self.attach[*i].joined.len())
            .unwrap_or(1);
        self.retransmit_limit(nl)
    }

    /// The next thing to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        self.outbox.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event<A>> {
        self.events.pop_front()
    }

    /// Whether events are recorded (on by default; the simulator may switch it off).
    pub fn set_emit_events(&mut self, on: bool) {
        self.emit_events = on;
    }

    // ----- public API -----------------------------------------------------------------

    /// This node's address.
    pub fn addr(&self) -> A {
        self.addr
    }

    /// Joins the cluster through any of `seeds` (retried every `join_retry` until a seed
    /// answers).
    pub fn join(&mut self, seeds: &[A], now: u64) {
        let seeds: Vec<A> = seeds.iter().copied().filter(|s| *s != self.addr).collect();
        if seeds.is_empty() {
            return;
        }
        self.join = Some((seeds, now));
        self.join_attempt(now);
    }

    fn join_attempt(&mut self, now: u64) {
        let Some((seeds, _)) = self.join.clone() else {
            return;
        };
        let items = self.full_state();
        for s in seeds {
            self.send_stream(s, Body::PushPull { reply: false }, &items);
        }
        self.join = self
            .join
            .take()
            .map(|(s, _)| (s, now + ms(self.cfg.join_retry)));
    }

    /// Leaves the cluster gracefully: leaves every network, broadcasts `Left`.
    pub fn leave(&mut self, now: u64) {
        let nets: Vec<String> = self.local.keys().cloned().collect();
        for n in nets {
            self.leave_network(&n, now);
        }
        self.leaving = true;
        self.join = None;
        let upd = Item::Member(MemberUpdate {
            node: self.addr,
            incarnation: self.incarnation,
            state: MemberState::Left,
            from: self.addr,
        });
        self.cluster_q.push(u64::MAX, upd.to_bytes());
        // Push it out now, to more peers than one round would.
        let targets = self.random_members(self.cfg.gossip_fanout * 3, |r| r.active());
        for t in targets {
            self.send_datagram(t, Body::Gossip, None);
        }
    }

    /// Attaches this node to a network.
    pub fn join_network(&mut self, network: &str, _now: u64) -> Result<(), GossipError> {
        if network.len() > MAX_NAME {
            return Err(GossipError::TooLong("network name"));
        }
        if self.local.contains_key(network) {
            return Ok(());
        }
        let t = self.tick_clock();
        self.set_my_attach(
            network,
            Attach {
                ltime: t,
                joined: true,
            },
        );
        self.local.insert(
            network.to_string(),
            Local {
                table: Table::new(),
                queue: BroadcastQueue::new(),
                bootstrap: true,
            },
        );
        self.bootstrap_sync(network);
        Ok(())
    }

    /// Detaches this node from a network: its entries there disappear everywhere.
    pub fn leave_network(&mut self, network: &str, _now: u64) {
        let Some(l) = self.local.remove(network) else {
            return;
        };
        let t = self.tick_clock();
        let att = self.my_attach.get(network).copied();
        for ((tb, k), e) in l.table.iter() {
            if visible(e, att, self.is_active(&e.owner)) {
                self.emit_entry(EntryEventKind::Delete, network, tb, k, e);
            }
        }
        self.set_my_attach(
            network,
            Attach {
                ltime: t,
                joined: false,
            },
        );
    }

    fn set_my_attach(&mut self, network: &str, a: Attach) {
        let old = self.my_attach.insert(network.to_string(), a);
        if let Some(o) = old {
            self.digest ^= attach_hash(&self.addr, network, o);
        }
        self.digest ^= attach_hash(&self.addr, network, a);
        let id = self.net_id(network);
        self.attach[id].dirty = true;
        let item = Item::Attach(AttachUpdate {
            node: self.addr,
            network: network.to_string(),
            ltime: a.ltime,
            joined: a.joined,
        });
        self.cluster_q
            .push(attach_key(&self.addr, network), item.to_bytes());
    }

    /// Creates or updates an entry owned by this node.
    pub fn put(
        &mut self,
        network: &str,
        table: &str,
        key: &str,
        value: &[u8],
        now: u64,
    ) -> Result<(), GossipError> {
        self.write(network, table, key, Some(value), now)
    }

    /// Deletes an entry (leaves a tombstone for the reap interval).
    pub fn delete(
        &mut self,
        network: &str,
        table: &str,
        key: &str,
        now: u64,
    ) -> Result<(), GossipError> {
        self.write(network, table, key, None, now)
    }

    fn write(
        &mut self,
        network: &str,
        table: &str,
        key: &str,
        value: Option<&[u8]>,
        now: u64,
    ) -> Result<(), GossipError> {
        if table.len() > MAX_NAME || key.len() > MAX_NAME {
            return Err(GossipError::TooLong("table or key"));
        }
        if value.is_some_and(|v| v.len() > MAX_VALUE) {
            return Err(GossipError::TooLong("value"));
        }
        if !self.local.contains_key(network) {
            return Err(GossipError::NotAttached(network.to_string()));
        }
        let t = self.tick_clock();
        let e = Entry {
            value: value.map(|v| v.to_vec()).unwrap_or_default(),
            owner: self.addr,
            ltime: t,
            deleted: value.is_none(),
            reap_at: if value.is_none() {
                now + ms(self.cfg.reap_interval)
            } else {
                0
            },
        };
        self.store_entry(network, table, key, e, now);
        Ok(())
    }

    /// Stores an entry that won the merge (or is ours), queues it for gossip, emits events.
    fn store_entry(
        &mut self,
        network: &str,
        table: &str,
        key: &str,
        e: Entry<A>,
        now: u64,
    ) -> bool {
        let att = self.attach_of(&e.owner, network);
        let active = self.is_active(&e.owner);
        let Some(l) = self.local.get_mut(network) else {
            return false;
        };
        let item = Item::Entry(entry_update(table, key, &e, now));
        match l.table.merge(table, key, e.clone()) {
            Merge::Ignored => false,
            Merge::Applied(prev) => {
                l.queue.push(
                    stable_hash(&[table.as_bytes(), key.as_bytes()]),
                    item.to_bytes(),
                );
                let before = prev.as_ref().is_some_and(|p| {
                    let pa = if p.owner == e.owner {
                        att
                    } else {
                        self.attach_of(&p.owner, network)
                    };
                    visible(p, pa, self.is_active(&p.owner))
                });
                let after = visible(&e, att, active);
                match (before, after) {
                    (false, true) => {
                        self.emit_entry(EntryEventKind::Create, network, table, key, &e)
                    }
                    (true, true) => {
                        self.emit_entry(EntryEventKind::Update, network, table, key, &e)
                    }
                    (true, false) => {
                        let p = prev.unwrap_or(e);
                        self.emit_entry(EntryEventKind::Delete, network, table, key, &p)
                    }
                    (false, false) => {}
                }
                true
            }
        }
    }

    /// The visible value of an entry.
    pub fn get(&self, network: &str, table: &str, key: &str) -> Option<Vec<u8>> {
        let e = self.local.get(network)?.table.get(table, key)?;
        visible(
            e,
            self.attach_of(&e.owner, network),
            self.is_active(&e.owner),
        )
        .then(|| e.value.clone())
    }

    /// Visible entries of one table: (key, value, owner).
    pub fn entries(&self, network: &str, table: &str) -> Vec<(String, Vec<u8>, A)> {
        self.table_dump(network)
            .into_iter()
            .filter(|e| e.visible && e.table == table)
            .map(|e| (e.key, e.value, e.owner))
            .collect()
    }

    /// Every stored entry of a network (tombstones and hidden ones too).
    pub fn table_dump(&self, network: &str) -> Vec<EntryInfo<A>> {
        let Some(l) = self.local.get(network) else {
            return Vec::new();
        };
        l.table
            .iter()
            .map(|((t, k), e)| EntryInfo {
                table: t.clone(),
                key: k.clone(),
                value: e.value.clone(),
                owner: e.owner,
                ltime: e.ltime,
                deleted: e.deleted,
                visible: visible(
                    e,
                    self.attach_of(&e.owner, network),
                    self.is_active(&e.owner),
                ),
            })
            .collect()
    }

    /// Every known member, this node first.
    pub fn members(&self) -> Vec<MemberInfo<A>> {
        let mut v = vec![MemberInfo {
            addr: self.addr,
            incarnation: self.incarnation,
            state: if self.leaving {
                MemberState::Left
            } else {
                MemberState::Alive
            },
        }];
        for (s, r) in self.members.iter() {
            if let Some(state) = r.state() {
                v.push(MemberInfo {
                    addr: self.members.addr(s),
                    incarnation: r.inc,
                    state,
                });
            }
        }
        v
    }

    /// The state of one member as seen here.
    pub fn member_state(&self, node: &A) -> Option<MemberState> {
        if *node == self.addr {
            return Some(MemberState::Alive);
        }
        self.members.get(node).and_then(|(_, r)| r.state())
    }

    /// Number of alive or suspect members (self excluded).
    pub fn active_members(&self) -> usize {
        self.members.active()
    }

    /// Every network known, with its active attached members.
    pub fn networks(&self) -> Vec<NetworkInfo<A>> {
        let mut out = Vec::new();
        for (i, name) in self.net_names.iter().enumerate() {
            let mut nodes: Vec<A> = self.attach[i]
                .by_slot
                .iter()
                .enumerate()
                .filter(|(s, v)| {
                    unpack(**v).is_some_and(|a| a.joined) && self.members.rec(*s as u32).active()
                })
                .map(|(s, _)| self.members.addr(s as u32))
                .collect();
            let local = self.local.contains_key(name);
            if local {
                nodes.push(self.addr);
            }
            nodes.sort();
            out.push(NetworkInfo {
                name: name.clone(),
                nodes,
                local,
            });
        }
        out
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counts a frame the transport refused for its size before reading it.
    pub fn note_oversize(&mut self) {
        self.stats.dropped_oversize += 1;
    }

    /// Lifeguard local health multiplier score (0 = healthy).
    pub fn local_health(&self) -> u32 {
        self.lhm
    }

    /// The keyring (add / use / remove keys for rotation).
    pub fn keyring_mut(&mut self) -> &mut Keyring {
        &mut self.sealer.keyring
    }

    /// The current incarnation.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// Bulk bootstrap used by the simulator: every address of `p` is an alive member
    /// attached to every network of `p` at Lamport time 1, as after a completed join.
    /// Emits no events and queues no gossip.
    pub fn preload(&mut self, p: &Preload<A>) {
        let fresh = self.incarnation == 0 && self.members.slots() == 0 && self.my_attach.is_empty();
        let all = &p.all;
        self.members.reserve_exact(all.len());
        let networks: Vec<&str> = p.networks.iter().map(|s| s.as_str()).collect();
        let ids: Vec<usize> = networks.iter().map(|n| self.net_id(n)).collect();
        for id in &ids {
            self.attach[*id].by_slot.reserve_exact(all.len());
        }
        let at = Attach {
            ltime: 1,
            joined: true,
        };
        for a in all {
            if *a == self.addr {
                continue;
            }
            let s = self.members.ensure(*a);
            self.members.set(s, 0, MemberState::Alive);
            if !fresh {
                self.digest ^= member_hash(a, 0, MemberState::Alive);
            }
            for (id, name) in ids.iter().zip(&networks) {
                let att = &mut self.attach[*id];
                if att.by_slot.len() <= s as usize {
                    att.by_slot.resize(s as usize + 1, 0);
                }
                att.by_slot[s as usize] = pack(at);
                att.dirty = true;
                if !fresh {
                    self.digest ^= attach_hash(a, name, at);
                }
            }
        }
        self.clock = self.clock.max(1);
        for n in &networks {
            if let Some(o) = self.my_attach.insert(n.to_string(), at) {
                self.digest ^= attach_hash(&self.addr, n, o);
            }
            if !fresh {
                self.digest ^= attach_hash(&self.addr, n, at);
            }
            self.local.insert(
                n.to_string(),
                Local {
                    table: Table::new(),
                    queue: BroadcastQueue::new(),
                    bootstrap: false,
                },
            );
        }
        if fresh && all.contains(&self.addr) {
            // Same full state on every node: the digest was computed once.
            self.digest = p.digest;
        } else if fresh {
            self.digest = p.digest ^ self.self_hash();
            for n in &networks {
                self.digest ^= attach_hash(&self.addr, n, at);
            }
        }
    }

    // ----- receiving ------------------------------------------------------------------

    /// Handles a received datagram (sealed). Anything that does not open, is replayed or
    /// malformed is dropped and counted.
    pub fn handle_datagram(&mut self, data: &[u8], now: u64) {
        self.stats.rx_datagrams += 1;
        self.stats.rx_bytes += data.len() as u64;
        if data.len() > self.cfg.packet_size {
            self.stats.dropped_oversize += 1;
            return;
        }
        self.handle_sealed(Channel::Datagram, data, now);
    }

    /// Handles a received stream frame (sealed, without its length prefix).
    pub fn handle_stream(&mut self, data: &[u8], now: u64) {
        self.stats.rx_streams += 1;
        self.stats.rx_bytes += data.len() as u64;
        if data.len() > self.cfg.max_stream_size {
            self.stats.dropped_oversize += 1;
            return;
        }
        self.handle_sealed(Channel::Stream, data, now);
    }

    fn handle_sealed(&mut self, ch: Channel, data: &[u8], now: u64) {
        let Ok(plain) = self.sealer.open(ch, data) else {
            self.stats.dropped_unauthenticated += 1;
            return;
        };
        let Ok((header, mut r)) = decode_header::<A>(&plain) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        if header.from == self.addr && header.epoch == self.epoch {
            self.stats.dropped_replay += 1;
            return;
        }
        if !self.replay.check(header.from, ch, header.epoch, header.seq) {
            self.stats.dropped_replay += 1;
            return;
        }
        let Ok((body, items)) = decode_rest::<A>(&mut r) else {
            self.stats.dropped_malformed += 1;
            return;
        };
        self.on_frame(header.from, body, items, now);
    }

    fn on_frame(&mut self, from: A, body: Body<A>, items: Vec<Item<A>>, now: u64) {
        let pushpull = matches!(body, Body::PushPull { .. });
        let entry_net = match &body {
            Body::TableGossip { network } | Body::SyncEntries { network, .. } => {
                Some(network.clone())
            }
            _ => None,
        };
        for it in items {
            match it {
                Item::Member(m) => self.apply_member(m, pushpull.then_some(from), now),
                Item::Attach(a) => self.apply_attach(a, now),
                Item::Entry(e) => {
                    if let Some(n) = &entry_net {
                        self.apply_entry(n, e, now);
                    }
                }
            }
        }
        match body {
            Body::Ping { seq, target } => {
                if target == self.addr {
                    self.send_datagram(from, Body::Ack { seq }, None);
                }
            }
            Body::PingReq { seq, target } => {
                if self.forwards.len() < MAX_FORWARDS && target != self.addr {
                    self.probe_seq = self.probe_seq.wrapping_add(1);
                    let my = self.probe_seq;
                    self.forwards.insert(
                        my,
                        Forward {
                            origin: from,
                            oseq: seq,
                            nack_at: now + ms(self.cfg.probe_timeout),
                        },
                    );
                    let key = self.members.slot(&target).map(member_key);
                    self.send_datagram(target, Body::Ping { seq: my, target }, key);
                }
            }
            Body::Ack { seq } => {
                if let Some(p) = self.probe.as_mut() {
                    if p.seq == seq && !p.acked {
                        p.acked = true;
                        self.lhm = self.lhm.saturating_sub(1);
                        return;
                    }
                }
                if let Some(f) = self.forwards.remove(&seq) {
                    self.send_datagram(f.origin, Body::Ack { seq: f.oseq }, None);
                }
            }
            Body::Nack { seq } => {
                if let Some(p) = self.probe.as_mut() {
                    if p.seq == seq {
                        p.nacks += 1;
                    }
                }
            }
            Body::Gossip | Body::TableGossip { .. } => {}
            Body::MemberDigest { hash, .. } => {
                if hash != self.digest {
                    let items = self.full_state();
                    self.send_stream(from, Body::PushPull { reply: false }, &items);
                }
            }
            Body::PushPull { reply } => {
                if !reply {
                    let items = self.full_state();
                    self.send_stream(from, Body::PushPull { reply: true }, &items);
                }
                if self.join.is_some() {
                    self.join = None;
                }
                let nets: Vec<String> = self
                    .local
                    .iter()
                    .filter(|(_, l)| l.bootstrap)
                    .map(|(n, _)| n.clone())
                    .collect();
                for n in nets {
                    self.bootstrap_sync(&n);
                }
            }
            Body::SyncDigest { network, hash } => {
                if let Some(l) = self.local.get(&network) {
                    if l.table.digest() != hash {
                        let buckets = l.table.buckets().to_vec();
                        self.send_stream(from, Body::SyncBuckets { network, buckets }, &[]);
                    }
                }
            }
            Body::SyncBuckets { network, buckets } => {
                if let Some(l) = self.local.get(&network) {
                    let want = l.table.differing(&buckets);
                    if !want.is_empty() {
                        let items = self.entry_items(&network, &want, now);
                        self.send_stream(from, Body::SyncEntries { network, want }, &items);
                    }
                }
            }
            Body::SyncEntries { network, want } => {
                if !want.is_empty() && self.local.contains_key(&network) {
                    let want: Vec<u16> = want
                        .into_iter()
                        .filter(|b| (*b as usize) < BUCKETS)
                        .collect();
                    let items = self.entry_items(&network, &want, now);
                    self.send_stream(
                        from,
                        Body::SyncEntries {
                            network,
                            want: Vec::new(),
                        },
                        &items,
                    );
                }
            }
        }
    }

    fn entry_items(&self, network: &str, buckets: &[u16], now: u64) -> Vec<Item<A>> {
        let Some(l) = self.local.get(network) else {
            return Vec::new();
        };
        l.table
            .entries_in(buckets)
            .into_iter()
            .map(|((t, k), e)| Item::Entry(entry_update(&t, &k, &e, now)))
            .collect()
    }

    fn full_state(&self) -> Vec<Item<A>> {
        let mut v = Vec::with_capacity(self.members.slots() * 2 + 1);
        v.push(Item::Member(MemberUpdate {
            node: self.addr,
            incarnation: self.incarnation,
            state: if self.leaving {
                MemberState::Left
            } else {
                MemberState::Alive
            },
            from: self.addr,
        }));
        for (s, r) in self.members.iter() {
            if let Some(state) = r.state() {
                let node = self.members.addr(s);
                v.push(Item::Member(MemberUpdate {
                    node,
                    incarnation: r.inc,
                    state,
                    from: self.addr,
                }));
            }
        }
        for (n, a) in &self.my_attach {
            v.push(Item::Attach(AttachUpdate {
                node: self.addr,
                network: n.clone(),
                ltime: a.ltime,
                joined: a.joined,
            }));
        }
        for (i, name) in self.net_names.iter().enumerate() {
            for (s, p) in self.attach[i].by_slot.iter().enumerate() {
                if let Some(a) = unpack(*p) {
                    if self.members.rec(s as u32).state().is_some() {
                        v.push(Item::Attach(AttachUpdate {
                            node: self.members.addr(s as u32),
                            network: name.clone(),
                            ltime: a.ltime,
                            joined: a.joined,
                        }));
                    }
                }
            }
        }
        v
    }

    // ----- merge rules ----------------------------------------------------------------

    fn refute(&mut self, inc: u32) {
        self.digest ^= self.self_hash();
        self.incarnation = inc.saturating_add(1).max(self.incarnation);
        self.digest ^= self.self_hash();
        let item = Item::Member(MemberUpdate {
            node: self.addr,
            incarnation: self.incarnation,
            state: MemberState::Alive,
            from: self.addr,
        });
        self.cluster_q.push(u64::MAX, item.to_bytes());
    }

    fn apply_member(&mut self, mut u: MemberUpdate<A>, pushpull_from: Option<A>, now: u64) {
        if u.node == self.addr {
            if self.leaving {
                return;
            }
            let claims_down = u.state != MemberState::Alive && u.incarnation >= self.incarnation;
            if claims_down || u.incarnation > self.incarnation {
                if claims_down {
                    self.lhm =
                        (self.lhm + 1).min(self.cfg.awareness_max_multiplier.saturating_sub(1));
                }
                self.refute(u.incarnation);
            }
            return;
        }
        if let (Some(sender), MemberState::Dead) = (pushpull_from, u.state) {
            // A remote view of a death is only a suspicion here (memberlist's rule): the
            // member gets a chance to refute, which is what heals partitions.
            u.state = MemberState::Suspect;
            u.from = sender;
        }
        let cur = self.members.get(&u.node);
        let (accept, confirm) = match (cur, u.state) {
            (None, MemberState::Alive) => (true, false),
            (None, _) => (false, false),
            (Some((_, c)), MemberState::Alive) => (u.incarnation > c.inc, false),
            (Some((_, c)), MemberState::Suspect) => match c.state() {
                Some(MemberState::Alive) => (u.incarnation >= c.inc, false),
                Some(MemberState::Suspect) => (u.incarnation > c.inc, u.incarnation == c.inc),
                _ => (false, false),
            },
            (Some((_, c)), MemberState::Dead) => (c.active() && u.incarnation >= c.inc, false),
            (Some((_, c)), MemberState::Left) => (
                c.state() != Some(MemberState::Left) && u.incarnation >= c.inc,
                false,
            ),
        };
        if confirm {
            self.confirm_suspicion(&u, now);
            return;
        }
        if !accept {
            return;
        }
        self.set_member(u.node, u.incarnation, u.state, u.from, now);
    }

    fn set_member(&mut self, node: A, inc: u32, state: MemberState, from: A, now: u64) {
        let slot = self.members.ensure(node);
        let prev = self.members.rec(slot);
        if let Some(ps) = prev.state() {
            self.digest ^= member_hash(&node, prev.inc, ps);
        }
        self.members.set(slot, inc, state);
        self.digest ^= member_hash(&node, inc, state);
        let item = Item::Member(MemberUpdate {
            node,
            incarnation: inc,
            state,
            from,
        });
        self.cluster_q.push(member_key(slot), item.to_bytes());
        if state == MemberState::Suspect {
            let n = self.members.active() + 1;
            let min = suspicion_min(self.cfg.suspicion_mult, n, ms(self.cfg.probe_interval));
            let max = min * self.cfg.suspicion_max_timeout_mult.max(1) as u64;
            let k = self.cfg.suspicion_mult.saturating_sub(2);
            let t = suspicion_timeout(min, max, k, 0);
            self.suspicions.insert(
                slot,
                Suspicion {
                    inc,
                    accusers: vec![from],
                    start: now,
                    min,
                    max,
                    deadline: now + t,
                },
            );
        } else {
            self.suspicions.remove(&slot);
        }
        if state.is_active() {
            self.dead_since.remove(&slot);
        } else {
            self.dead_since.entry(slot).or_insert(now);
        }
        if prev.state() != Some(state) {
            self.emit(Event::Member { node, state });
        }
        let was_active = prev.active();
        if was_active != state.is_active() {
            self.owner_flip(node, state.is_active());
        }
        if state.is_active() && !was_active {
            self.probe_order.push(slot);
        }
    }

    fn confirm_suspicion(&mut self, u: &MemberUpdate<A>, now: u64) {
        let Some(slot) = self.members.slot(&u.node) else {
            return;
        };
        let k = self.cfg.suspicion_mult.saturating_sub(2);
        let Some(s) = self.suspicions.get_mut(&slot) else {
            return;
        };
        if s.inc != u.incarnation || s.accusers.contains(&u.from) || s.accusers.len() as u32 > k {
            return;
        }
        s.accusers.push(u.from);
        let c = s.accusers.len() as u32 - 1;
        s.deadline = s.start + suspicion_timeout(s.min, s.max, k, c);
        let _ = now;
        let item = Item::Member(u.clone());
        self.cluster_q.push(member_key(slot), item.to_bytes());
    }

    /// The owner became (in)active: its visible entries appear or disappear.
    fn owner_flip(&mut self, owner: A, now_active: bool) {
        if !self.emit_events {
            return;
        }
        let mut evs = Vec::new();
        for (net, l) in &self.local {
            let att = self.attach_of(&owner, net);
            if !matches!(att, Some(a) if a.joined) {
                continue;
            }
            for ((t, k), e) in l.table.iter() {
                if e.owner == owner && visible(e, att, true) {
                    let kind = if now_active {
                        EntryEventKind::Create
                    } else {
                        EntryEventKind::Delete
                    };
                    evs.push(EntryEvent {
                        kind,
                        network: net.clone(),
                        table: t.clone(),
                        key: k.clone(),
                        value: e.value.clone(),
                        owner,
                    });
                }
            }
        }
        for e in evs {
            self.emit(Event::Entry(e));
        }
    }

    fn apply_attach(&mut self, u: AttachUpdate<A>, now: u64) {
        self.witness(u.ltime);
        let incoming = Attach {
            ltime: u.ltime,
            joined: u.joined,
        };
        if u.node == self.addr {
            // A record about us we do not hold (an earlier life): re-assert our truth.
            let mine = self.my_attach.get(&u.network).copied();
            if mine != Some(incoming) && mine.is_none_or(|m| m.ltime <= u.ltime) {
                let t = self.tick_clock();
                let joined = self.local.contains_key(&u.network);
                self.set_my_attach(&u.network, Attach { ltime: t, joined });
            }
            return;
        }
        if u.network.is_empty() {
            return;
        }
        let slot = self.members.ensure(u.node);
        let id = self.net_id(&u.network);
        let cur = self.attach[id]
            .by_slot
            .get(slot as usize)
            .and_then(|v| unpack(*v));
        if !attach_newer(cur, incoming) {
            return;
        }
        {
            let att = &mut self.attach[id];
            if att.by_slot.len() <= slot as usize {
                att.by_slot.resize(slot as usize + 1, 0);
            }
            att.by_slot[slot as usize] = pack(incoming);
            att.dirty = true;
        }
        if let Some(c) = cur {
            self.digest ^= attach_hash(&u.node, &u.network, c);
        }
        self.digest ^= attach_hash(&u.node, &u.network, incoming);
        let item = Item::Attach(u.clone());
        self.cluster_q
            .push(attach_key(&u.node, &u.network), item.to_bytes());
        let active = self.is_active(&u.node);
        let owner = u.node;
        let network = u.network;
        let mut evs = Vec::new();
        let mut bootstrap_with = None;
        if let Some(l) = self.local.get_mut(&network) {
            let removed = l
                .table
                .remove_where(|_, e| e.owner == owner && superseded(e, Some(incoming)));
            for ((t, k), e) in removed {
                if visible(&e, cur, active) {
                    evs.push((EntryEventKind::Delete, t, k, e));
                }
            }
            if incoming.joined {
                for ((t, k), e) in l.table.iter() {
                    if e.owner == owner
                        && visible(e, Some(incoming), active)
                        && !visible(e, cur, active)
                    {
                        evs.push((EntryEventKind::Create, t.clone(), k.clone(), e.clone()));
                    }
                }
                if l.bootstrap && active {
                    bootstrap_with = Some(owner);
                }
            }
        }
        for (kind, t, k, e) in evs {
            self.emit_entry(kind, &network, &t, &k, &e);
        }
        if let Some(peer) = bootstrap_with {
            self.sync_with(&network, peer);
        }
        let _ = now;
    }

    fn apply_entry(&mut self, network: &str, u: EntryUpdate<A>, now: u64) {
        if !self.local.contains_key(network) {
            return;
        }
        self.witness(u.ltime);
        if u.owner == self.addr {
            let mine = self
                .local
                .get(network)
                .and_then(|l| l.table.get(&u.table, &u.key))
                .cloned();
            if mine.as_ref().is_some_and(|m| m.ltime >= u.ltime) {
                return;
            }
            // An entry of ours from an earlier life, newer than what we hold: re-assert.
            let t = self.tick_clock();
            let e = match mine {
                Some(m) if !m.deleted => Entry { ltime: t, ..m },
                _ => Entry {
                    value: Vec::new(),
                    owner: self.addr,
                    ltime: t,
                    deleted: true,
                    reap_at: now + ms(self.cfg.reap_interval),
                },
            };
            self.store_entry(network, &u.table, &u.key, e, now);
            return;
        }
        let reap = ms(self.cfg.reap_interval);
        let e = Entry {
            value: u.value,
            owner: u.owner,
            ltime: u.ltime,
            deleted: u.deleted,
            reap_at: if u.deleted {
                now + u.reap_in_ms.min(reap)
            } else {
                0
            },
        };
        if superseded(&e, self.attach_of(&u.owner, network)) {
            return;
        }
        self.store_entry(network, &u.table, &u.key, e, now);
    }

    // ----- timers ---------------------------------------------------------------------

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

    fn finish_probe(&mut self, now: u64) {
        let Some(p) = self.probe.take() else {
            return;
        };
        if p.acked {
            return;
        }
        let delta = if p.expected_nacks > 0 {
            p.expected_nacks.saturating_sub(p.nacks)
        } else {
            1
        };
        self.lhm = (self.lhm + delta).min(self.cfg.awareness_max_multiplier.saturating_sub(1));
        if let Some((_, r)) = self.members.get(&p.target) {
            match r.state() {
                Some(MemberState::Alive) => {
                    tracing::debug!(target = ?p.target, "probe failed: suspect");
                    self.set_member(p.target, r.inc, MemberState::Suspect, self.addr, now);
                }
                Some(MemberState::Suspect) => {
                    // Our own failed probe is an independent confirmation (Lifeguard).
                    let u = MemberUpdate {
                        node: p.target,
                        incarnation: r.inc,
                        state: MemberState::Suspect,
                        from: self.addr,
                    };
                    self.confirm_suspicion(&u, now);
                }
                _ => {}
            }
        }
    }

    fn start_probe(&mut self, now: u64) {
        let scale = self.scale();
        self.next_probe_at = now + ms(self.cfg.probe_interval).max(1) * scale;
        if self.probe.is_some() {
            self.finish_probe(now);
        }
        if self.leaving {
            return;
        }
        // Round-robin over a shuffled list of members; reshuffle on wrap (SWIM's
        // time-bounded completeness).
        let mut tries = 0;
        let target = loop {
            if self.probe_pos >= self.probe_order.len() {
                let mut order: Vec<u32> = self
                    .members
                    .iter()
                    .filter(|(_, r)| r.active())
                    .map(|(s, _)| s)
                    .collect();
                self.rng.shuffle(&mut order);
                self.probe_order = order;
                self.probe_pos = 0;
                if self.probe_order.is_empty() {
                    return;
                }
            }
            let s = self.probe_order[self.probe_pos];
            self.probe_pos += 1;
            if self.members.rec(s).active() {
                break s;
            }
            tries += 1;
            if tries > self.probe_order.len() + 1 {
                return;
            }
        };
        let addr = self.members.addr(target);
        self.probe_seq = self.probe_seq.wrapping_add(1);
        let seq = self.probe_seq;
        // Buddy system: a suspect target hears about its suspicion in the ping itself.
        self.send_datagram(
            addr,
            Body::Ping { seq, target: addr },
            Some(member_key(target)),
        );
        self.probe = Some(Probe {
            target: addr,
            seq,
            direct_at: now + ms(self.cfg.probe_timeout) * scale,
            deadline: now + ms(self.cfg.probe_interval).max(1) * scale,
            acked: false,
            indirect: false,
            expected_nacks: 0,
            nacks: 0,
        });
    }

    /// Up to `k` distinct random members satisfying `pred` (self excluded).
    fn random_members(&mut self, k: usize, pred: impl Fn(&crate::members::Rec) -> bool) -> Vec<A> {
        let n = self.members.slots();
        let mut out: Vec<u32> = Vec::with_capacity(k);
        if n == 0 || k == 0 {
            return Vec::new();
        }
        for _ in 0..(k * 8) {
            let s = self.rng.below(n) as u32;
            if pred(&self.members.rec(s)) && !out.contains(&s) {
                out.push(s);
                if out.len() == k {
                    break;
                }
            }
        }
        if out.len() < k {
            let mut all: Vec<u32> = self
                .members
                .iter()
                .filter(|(s, r)| pred(r) && !out.contains(s))
                .map(|(s, _)| s)
                .collect();
            self.rng.shuffle(&mut all);
            out.extend(all.into_iter().take(k - out.len()));
        }
        out.into_iter().map(|s| self.members.addr(s)).collect()
    }

    /// Up to `k` random members attached to `network` satisfying `pred`.
    fn random_network_peers(
        &mut self,
        network: &str,
        k: usize,
        pred: impl Fn(&crate::members::Rec) -> bool,
    ) -> Vec<A> {
        let Some(id) = self.net_ids.get(network).copied() else {
            return Vec::new();
        };
        let att = &mut self.attach[id];
        if att.dirty {
            att.joined = att
                .by_slot
                .iter()
                .enumerate()
                .filter(|(_, v)| unpack(**v).is_some_and(|a| a.joined))
                .map(|(s, _)| s as u32)
                .collect();
            att.dirty = false;
        }
        let n = att.joined.len();
        let mut out: Vec<u32> = Vec::with_capacity(k);
        if n == 0 {
            return Vec::new();
        }
        for _ in 0..(k * 8) {
            let s = self.attach[id].joined[self.rng.below(n)];
            if pred(&self.members.rec(s)) && !out.contains(&s) {
                out.push(s);
                if out.len() == k {
                    break;
                }
            }
        }
        if out.len() < k && n <= 4096 {
            let mut all: Vec<u32> = self.attach[id]
                .joined
                .iter()
                .copied()
                .filter(|s| pred(&self.members.rec(*s)) && !out.contains(s))
                .collect();
            self.rng.shuffle(&mut all);
            out.extend(all.into_iter().take(k - out.len()));
        }
        out.into_iter().map(|s| self.members.addr(s)).collect()
    }

    fn gossip(&mut self, _now: u64) {
        if !self.cluster_q.is_empty() {
            // Dead members are included: that is how a healed partition hears refutations.
            let targets = self.random_members(self.cfg.gossip_fanout, |r| {
                r.state().is_some_and(|s| s != MemberState::Left)
            });
            for t in targets {
                if self.cluster_q.is_empty() {
                    break;
                }
                self.send_datagram(t, Body::Gossip, None);
            }
        }
        let nets: Vec<String> = self
            .local
            .iter()
            .filter(|(_, l)| !l.queue.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        for net in nets {
            let peers = self.random_network_peers(&net, self.cfg.gossip_fanout, |r| r.active());
            let lim = self.table_limit(&net);
            // Entries too big for a datagram travel over streams (same epidemic, same limit).
            let threshold = self
                .cfg
                .packet_size
                .saturating_sub(SEAL_OVERHEAD + 64 + net.len());
            for p in peers {
                let large = match self.local.get_mut(&net) {
                    Some(l) if !l.queue.is_empty() => l.queue.take_large(threshold, lim),
                    _ => break,
                };
                if !large.is_empty() {
                    let body = Body::TableGossip {
                        network: net.clone(),
                    };
                    self.send_stream_raw(p, body, &large);
                }
                if self
                    .local
                    .get(&net)
                    .is_some_and(|l| l.queue.has_small(threshold))
                {
                    self.send_datagram(
                        p,
                        Body::TableGossip {
                            network: net.clone(),
                        },
                        None,
                    );
                }
            }
        }
    }

    fn sync_with(&mut self, network: &str, peer: A) {
        if let Some(l) = self.local.get_mut(network) {
            l.bootstrap = false;
            let hash = l.table.digest();
            self.send_stream(
                peer,
                Body::SyncDigest {
                    network: network.to_string(),
                    hash,
                },
                &[],
            );
        }
    }

    fn bootstrap_sync(&mut self, network: &str) {
        let peers = self.random_network_peers(network, 1, |r| r.active());
        if let Some(p) = peers.first() {
            self.sync_with(network, *p);
        }
    }

    fn anti_entropy(&mut self, _now: u64) {
        if self.leaving {
            return;
        }
        let any_dead = !self.dead_since.is_empty()
            && self
                .dead_since
                .keys()
                .any(|s| self.members.rec(*s).state() == Some(MemberState::Dead));
        let peer = if any_dead && self.rng.chance(0.5) {
            self.random_members(1, |r| r.state() == Some(MemberState::Dead))
        } else {
            self.random_members(1, |r| r.active())
        };
        if let Some(p) = peer.first() {
            let count = self.members.iter().count() as u32;
            self.send_stream(
                *p,
                Body::MemberDigest {
                    hash: self.digest,
                    count,
                },
                &[],
            );
        }
        let nets: Vec<String> = self.local.keys().cloned().collect();
        for net in nets {
            let peers = self.random_network_peers(&net, 1, |r| {
                matches!(
                    r.state(),
                    Some(MemberState::Alive | MemberState::Suspect | MemberState::Dead)
                )
            });
            if let Some(p) = peers.first() {
                self.sync_with(&net, *p);
            }
        }
    }

    fn reap(&mut self, now: u64) {
        for l in self.local.values_mut() {
            l.table.reap(now);
        }
        let reap = ms(self.cfg.reap_interval);
        let gone: Vec<u32> = self
            .dead_since
            .iter()
            .filter(|(_, t)| now.saturating_sub(**t) >= reap)
            .map(|(s, _)| *s)
            .collect();
        for slot in gone {
            self.dead_since.remove(&slot);
            let r = self.members.rec(slot);
            let Some(state) = r.state() else { continue };
            if state.is_active() {
                continue;
            }
            let node = self.members.addr(slot);
            self.digest ^= member_hash(&node, r.inc, state);
            for (i, name) in self.net_names.iter().enumerate() {
                if let Some(v) = self.attach[i].by_slot.get_mut(slot as usize) {
                    if let Some(a) = unpack(*v) {
                        self.digest ^= attach_hash(&node, name, a);
                    }
                    *v = 0;
                    self.attach[i].dirty = true;
                }
            }
            for l in self.local.values_mut() {
                l.table.remove_where(|_, e| e.owner == node);
            }
            self.members.forget(slot);
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
