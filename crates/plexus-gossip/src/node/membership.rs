//! Cluster membership: joining through seeds, leaving, the bulk preload of the simulator, and
//! the merge rules of member updates, including suspicion (with Lifeguard's independent
//! confirmations) and refutation by incarnation.

use super::{
    attach_hash, member_hash, member_key, ms, pack, Event, Local, MemberInfo, Node, Preload,
    Suspicion,
};
use crate::codec::{Address, Body, Item, MemberState, MemberUpdate};
use crate::members::{suspicion_min, suspicion_timeout};
use crate::queue::BroadcastQueue;
use crate::table::{Attach, Table};

impl<A: Address> Node<A> {
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

    pub(super) fn join_attempt(&mut self, now: u64) {
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
                    synced: true,
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

    pub(super) fn apply_member(
        &mut self,
        mut u: MemberUpdate<A>,
        pushpull_from: Option<A>,
        now: u64,
    ) {
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

    pub(super) fn set_member(&mut self, node: A, inc: u32, state: MemberState, from: A, now: u64) {
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

    pub(super) fn confirm_suspicion(&mut self, u: &MemberUpdate<A>, now: u64) {
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
}
