//! Deterministic simulator: many real [`Node`]s in one process, virtual time, seeded
//! packet loss, delay and partitions.
//!
//! Nodes are addressed by `u32` index. Every datagram and stream frame is sealed and
//! opened for real, so byte counts include the seal. One binary heap orders all deliveries
//! and timer wake-ups; a node is only woken when its own next deadline comes, so idle
//! nodes cost nothing between timers.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::config::Config;
use crate::node::{Event, Node, Preload, Transmit};
use crate::rng::{stable_hash, Rng};
use crate::seal::{Key, Keyring};

/// Simulation parameters.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Seed of everything random.
    pub seed: u64,
    /// Datagram loss probability (0..1).
    pub loss: f64,
    /// Smallest one-way delay (ms).
    pub delay_min_ms: u64,
    /// Largest one-way delay (ms).
    pub delay_max_ms: u64,
    /// Protocol tunables of every node.
    pub node: Config,
    /// Shared cluster key.
    pub key: Key,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 10,
            seed: 1,
            loss: 0.0,
            delay_min_ms: 1,
            delay_max_ms: 10,
            node: Config::default(),
            key: [7; 32],
        }
    }
}

enum Kind {
    Datagram { to: u32, data: Vec<u8> },
    Stream { to: u32, data: Vec<u8> },
    Tick { node: u32 },
}

struct Ev {
    at: u64,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Ev {
    fn eq(&self, o: &Self) -> bool {
        self.at == o.at && self.seq == o.seq
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ev {
    fn cmp(&self, o: &Self) -> Ordering {
        // Min-heap on (time, insertion order).
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// The simulator.
pub struct Sim {
    /// Virtual time (ms).
    pub now: u64,
    cfg: SimConfig,
    nodes: Vec<Option<Node<u32>>>,
    epochs: Vec<u64>,
    sched: Vec<u64>,
    queue: BinaryHeap<Ev>,
    seq: u64,
    rng: Rng,
    group: Vec<u8>,
    partitioned: bool,
    /// Every event of every node: (time, node, event).
    pub events: Vec<(u64, u32, Event<u32>)>,
    /// Bytes handed to the network by all nodes.
    pub bytes_sent: u64,
    /// Datagrams dropped by the loss model or a partition.
    pub lost: u64,
}

impl Sim {
    /// Creates `cfg.nodes` nodes that know nobody yet.
    pub fn new(cfg: SimConfig) -> Self {
        let n = cfg.nodes;
        let mut s = Self {
            now: 0,
            nodes: Vec::with_capacity(n),
            epochs: vec![1; n],
            sched: vec![u64::MAX; n],
            queue: BinaryHeap::new(),
            seq: 0,
            rng: Rng::new(cfg.seed),
            group: vec![0; n],
            partitioned: false,
            events: Vec::new(),
            bytes_sent: 0,
            lost: 0,
            cfg,
        };
        for i in 0..n {
            let node = s.make_node(i as u32);
            s.nodes.push(Some(node));
            s.flush(i as u32);
        }
        s
    }

    fn make_node(&self, i: u32) -> Node<u32> {
        let seed = stable_hash(&[
            &self.cfg.seed.to_be_bytes(),
            &i.to_be_bytes(),
            &self.epochs[i as usize].to_be_bytes(),
        ]);
        Node::new(
            i,
            self.cfg.node.clone(),
            Keyring::new(self.cfg.key),
            self.epochs[i as usize],
            seed,
            self.now,
        )
    }

    /// Number of node slots.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A node, if running.
    pub fn node(&self, i: u32) -> Option<&Node<u32>> {
        self.nodes.get(i as usize).and_then(|n| n.as_ref())
    }

    /// Indices of running nodes.
    pub fn live(&self) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|i| self.nodes[*i as usize].is_some())
            .collect()
    }

    /// Runs `f` on a running node at the current time, then sends what it produced.
    pub fn with_node<R>(&mut self, i: u32, f: impl FnOnce(&mut Node<u32>, u64) -> R) -> Option<R> {
        let now = self.now;
        let r = f(self.nodes.get_mut(i as usize)?.as_mut()?, now);
        self.flush(i);
        Some(r)
    }

    /// Bootstraps every node as if all had joined: full member list, attached to `networks`.
    pub fn preload(&mut self, networks: &[&str]) {
        let p = Preload::new((0..self.nodes.len() as u32).collect(), networks);
        for i in 0..self.nodes.len() {
            if let Some(n) = self.nodes[i].as_mut() {
                n.preload(&p);
            }
        }
    }

    /// Stops a node abruptly (no leave).
    pub fn kill(&mut self, i: u32) {
        if let Some(slot) = self.nodes.get_mut(i as usize) {
            *slot = None;
            self.sched[i as usize] = u64::MAX;
        }
    }

    /// Restarts a node with empty state and a new epoch, joining through `seeds`.
    pub fn restart(&mut self, i: u32, seeds: &[u32]) {
        if i as usize >= self.nodes.len() {
            return;
        }
        self.epochs[i as usize] += 1;
        let mut node = self.make_node(i);
        node.join(seeds, self.now);
        self.nodes[i as usize] = Some(node);
        self.sched[i as usize] = u64::MAX;
        self.flush(i);
    }

    /// Cuts the network: traffic flows only between nodes of the same group.
    pub fn partition(&mut self, group_of: impl Fn(u32) -> u8) {
        for i in 0..self.group.len() {
            self.group[i] = group_of(i as u32);
        }
        self.partitioned = true;
    }

    /// Heals the partition.
    pub fn heal(&mut self) {
        self.partitioned = false;
    }

    fn push(&mut self, at: u64, kind: Kind) {
        self.seq += 1;
        self.queue.push(Ev {
            at,
            seq: self.seq,
            kind,
        });
    }

    fn cut(&self, a: u32, b: u32) -> bool {
        self.partitioned && self.group.get(a as usize) != self.group.get(b as usize)
    }

    fn flush(&mut self, i: u32) {
        let Some(node) = self.nodes.get_mut(i as usize).and_then(|n| n.as_mut()) else {
            return;
        };
        let mut out = Vec::new();
        while let Some(t) = node.poll_transmit() {
            out.push(t);
        }
        while let Some(e) = node.poll_event() {
            self.events.push((self.now, i, e));
        }
        let next = node.poll_timeout();
        for t in out {
            match t {
                Transmit::Datagram { to, data } => {
                    self.bytes_sent += data.len() as u64;
                    if self.cut(i, to) || self.rng.chance(self.cfg.loss) {
                        self.lost += 1;
                        continue;
                    }
                    let d = self.delay();
                    self.push(self.now + d, Kind::Datagram { to, data });
                }
                Transmit::Stream { to, data } => {
                    self.bytes_sent += data.len() as u64;
                    if self.cut(i, to) {
                        self.lost += 1;
                        continue;
                    }
                    // A TCP exchange: handshake plus transfer, loss hidden by retransmission.
                    let d = 2 * self.delay() + self.cfg.delay_max_ms;
                    self.push(self.now + d, Kind::Stream { to, data });
                }
            }
        }
        let next = next.max(self.now);
        if next < self.sched[i as usize] {
            self.sched[i as usize] = next;
            self.push(next, Kind::Tick { node: i });
        }
    }

    fn delay(&mut self) -> u64 {
        let span = self.cfg.delay_max_ms.saturating_sub(self.cfg.delay_min_ms);
        self.cfg.delay_min_ms + self.rng.below(span as usize + 1) as u64
    }

    /// Runs every event up to virtual time `t` (ms).
    pub fn run_until(&mut self, t: u64) {
        while let Some(top) = self.queue.peek() {
            if top.at > t {
                break;
            }
            let Some(ev) = self.queue.pop() else { break };
            self.now = ev.at;
            match ev.kind {
                Kind::Tick { node } => {
                    if self.sched[node as usize] != ev.at {
                        continue;
                    }
                    self.sched[node as usize] = u64::MAX;
                    let now = self.now;
                    if let Some(n) = self.nodes[node as usize].as_mut() {
                        n.handle_timeout(now);
                        self.flush(node);
                    }
                }
                Kind::Datagram { to, data } => {
                    let now = self.now;
                    if let Some(n) = self.nodes.get_mut(to as usize).and_then(|n| n.as_mut()) {
                        n.handle_datagram(&data, now);
                        self.flush(to);
                    }
                }
                Kind::Stream { to, data } => {
                    let now = self.now;
                    if let Some(n) = self.nodes.get_mut(to as usize).and_then(|n| n.as_mut()) {
                        n.handle_stream(&data, now);
                        self.flush(to);
                    }
                }
            }
        }
        self.now = self.now.max(t);
    }

    /// Runs for `ms` more milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let t = self.now + ms;
        self.run_until(t);
    }

    /// Takes the collected events.
    pub fn take_events(&mut self) -> Vec<(u64, u32, Event<u32>)> {
        std::mem::take(&mut self.events)
    }

    /// Total bytes sent by live nodes' counters.
    pub fn total_tx_bytes(&self) -> u64 {
        self.nodes
            .iter()
            .flatten()
            .map(|n| n.stats().tx_bytes)
            .sum()
    }
}
