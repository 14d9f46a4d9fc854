//! SWIM failure detection: round-robin probes over a shuffled member list, the Lifeguard
//! local health multiplier that stretches them, and the random member choice that indirect
//! probes and gossip share.

use super::{member_key, ms, Node, Probe};
use crate::codec::{Address, Body, MemberState, MemberUpdate};

impl<A: Address> Node<A> {
    /// Lifeguard local health multiplier score (0 = healthy).
    pub fn local_health(&self) -> u32 {
        self.lhm
    }

    fn scale(&self) -> u64 {
        self.lhm as u64 + 1
    }

    pub(super) fn start_probe(&mut self, now: u64) {
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

    pub(super) fn finish_probe(&mut self, now: u64) {
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

    /// Up to `k` distinct random members satisfying `pred` (self excluded).
    pub(super) fn random_members(
        &mut self,
        k: usize,
        pred: impl Fn(&crate::members::Rec) -> bool,
    ) -> Vec<A> {
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
}
