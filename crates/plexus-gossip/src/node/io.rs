//! Frame I/O: sealing and sending datagrams and stream frames (with the broadcast items they
//! carry), opening and checking received ones, and dispatching each frame's body.

use super::{member_key, ms, Forward, Node, Stats, Transmit, MAX_FORWARDS};
use crate::codec::{
    decode_header, decode_rest, encode_head, set_item_count, Address, Body, Header, Item,
};
use crate::seal::{Channel, Keyring, SEAL_OVERHEAD};
use crate::table::BUCKETS;

impl<A: Address> Node<A> {
    /// Packets each broadcast rides on: `mult × (ceil(log10(n+1)) + 2)`. memberlist uses
    /// `mult × ceil(log10(n+1))`; the extra `2 × mult` makes the chance that a pure push
    /// misses a node negligible (e^-c per node for c transmissions per node), so anti-entropy
    /// is a safety net rather than the tail of every convergence.
    fn retransmit_limit(&self, n: usize) -> u32 {
        let l = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
        self.cfg.retransmit_mult.max(1) * (l + 2)
    }

    /// Transmissions of a table event in `network` (same formula as the cluster's, over
    /// the network's size).
    pub(super) fn table_limit(&self, network: &str) -> u32 {
        let nl = self
            .net_ids
            .get(network)
            .map(|i| self.attach[*i].joined.len())
            .unwrap_or(1);
        self.retransmit_limit(nl)
    }

    pub(super) fn send_datagram(&mut self, to: A, body: Body<A>, prefer: Option<u64>) {
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

    pub(super) fn send_stream(&mut self, to: A, body: Body<A>, items: &[Item<A>]) {
        let raw: Vec<Vec<u8>> = items
            .iter()
            .take(u16::MAX as usize)
            .map(|it| it.to_bytes())
            .collect();
        self.send_stream_raw(to, body, &raw);
    }

    pub(super) fn send_stream_raw(&mut self, to: A, body: Body<A>, items: &[Vec<u8>]) {
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

    /// The next thing to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit<A>> {
        self.outbox.pop_front()
    }

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
                    if want.is_empty() {
                        self.mark_synced(&network);
                    } else {
                        let items = self.entry_items(&network, &want, now);
                        self.send_stream(from, Body::SyncEntries { network, want }, &items);
                    }
                }
            }
            Body::SyncEntries { network, want } if want.is_empty() => {
                // The last step of a sync this node started: the peer's entries came with
                // it (and were applied before this body).
                self.mark_synced(&network);
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

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counts a frame the transport refused for its size before reading it.
    pub fn note_oversize(&mut self) {
        self.stats.dropped_oversize += 1;
    }

    /// The keyring (add / use / remove keys for rotation).
    pub fn keyring_mut(&mut self) -> &mut Keyring {
        &mut self.sealer.keyring
    }
}
