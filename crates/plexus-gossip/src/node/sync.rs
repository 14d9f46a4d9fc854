//! Dissemination and repair: periodic gossip of queued broadcasts (cluster-wide and per
//! network), anti-entropy by membership and table digests, the push-pull state, and reaping of
//! tombstones and long-dead members.

use super::{attach_hash, entry_update, member_hash, ms, unpack, Node};
use crate::codec::{Address, AttachUpdate, Body, Item, MemberState, MemberUpdate};
use crate::seal::SEAL_OVERHEAD;

impl<A: Address> Node<A> {
    pub(super) fn gossip(&mut self, _now: u64) {
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

    pub(super) fn sync_with(&mut self, network: &str, peer: A) {
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

    pub(super) fn bootstrap_sync(&mut self, network: &str) {
        let peers = self.random_network_peers(network, 1, |r| r.active());
        if let Some(p) = peers.first() {
            self.sync_with(network, *p);
        } else {
            self.synced_alone(network);
        }
    }

    /// No other live node is attached to `network`: once this node has joined the cluster
    /// (it knows the others' attachments), there is nothing to wait for.
    pub(super) fn synced_alone(&mut self, network: &str) {
        if self.join.is_some() {
            return;
        }
        if let Some(l) = self.local.get_mut(network) {
            l.synced = true;
        }
    }

    /// A peer's answer showed what it holds of `network`.
    pub(super) fn mark_synced(&mut self, network: &str) {
        if let Some(l) = self.local.get_mut(network) {
            l.synced = true;
        }
    }

    pub(super) fn anti_entropy(&mut self, _now: u64) {
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
                // Equal digests get no answer: a round that changed nothing still counts.
                if self
                    .random_network_peers(&net, 1, |r| r.active())
                    .is_empty()
                {
                    self.synced_alone(&net);
                } else if self.local.get(&net).is_some_and(|l| !l.bootstrap) {
                    self.mark_synced(&net);
                }
                self.sync_with(&net, *p);
            } else {
                self.synced_alone(&net);
            }
        }
    }

    pub(super) fn reap(&mut self, now: u64) {
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

    pub(super) fn entry_items(&self, network: &str, buckets: &[u16], now: u64) -> Vec<Item<A>> {
        let Some(l) = self.local.get(network) else {
            return Vec::new();
        };
        l.table
            .entries_in(buckets)
            .into_iter()
            .map(|((t, k), e)| Item::Entry(entry_update(&t, &k, &e, now)))
            .collect()
    }

    pub(super) fn full_state(&self) -> Vec<Item<A>> {
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
}
