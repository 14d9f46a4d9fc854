//! Forwarding to upstream servers, as a state machine with no I/O: the caller feeds it
//! queries, upstream answers and the time, and carries out the [`Action`]s it returns. A
//! deterministic simulator drives it in the tests.
//!
//! - Upstreams are tried in the sandbox's order, except that one that timed out recently is
//!   *down* and goes last for a while (doubling, up to a bound), so a dead first server
//!   costs one short timeout once, not one per lookup. When its time is up it is tried
//!   again alongside the next one (a hedged probe), so the probe costs no lookup anything.
//! - Each attempt has a short timeout derived from the server's smoothed round-trip time;
//!   when it passes, the next server is asked too and the first answer wins.
//! - `SERVFAIL` and `REFUSED` move on to the next server at once; if every server fails, the
//!   client gets the last failure, or `SERVFAIL` when none answered in time.
//! - A truncated UDP answer is asked again over TCP ([`Action::Tcp`]).
//! - Ids are random per upstream and answers must match the server, the id and the
//!   question, so a stray or spoofed datagram is ignored.
//! - In-flight queries are bounded in all and per client; beyond, the client gets
//!   `REFUSED` at once, and other clients are not held up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire;

/// Limits and timings of a [`Forwarder`].
#[derive(Debug, Clone, Copy)]
pub struct ForwarderConfig {
    /// The shortest wait for one server before asking the next.
    pub attempt_min: Duration,
    /// The longest wait for one server before asking the next.
    pub attempt_max: Duration,
    /// The longest a client waits for an answer in all.
    pub total: Duration,
    /// How long a server that timed out stays down at first (doubling while it stays dead).
    pub down_for: Duration,
    /// The longest it stays down.
    pub down_max: Duration,
    /// Queries in flight at most.
    pub max_inflight: usize,
    /// Queries in flight at most for one client.
    pub max_inflight_per_client: usize,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig {
            attempt_min: Duration::from_millis(150),
            attempt_max: Duration::from_millis(1000),
            total: Duration::from_secs(4),
            down_for: Duration::from_secs(2),
            down_max: Duration::from_secs(60),
            max_inflight: 16_384,
            max_inflight_per_client: 1024,
        }
    }
}

/// What the caller must do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<T> {
    /// Send `bytes` to the server `to` over UDP.
    Send {
        /// The server.
        to: SocketAddr,
        /// The query, with the forwarder's id.
        bytes: Vec<u8>,
    },
    /// Ask `to` over TCP (its UDP answer was truncated) and report with
    /// [`Forwarder::on_tcp_answer`].
    Tcp {
        /// Hand back to `on_tcp_answer`.
        ticket: u64,
        /// The server.
        to: SocketAddr,
        /// The query, with the forwarder's id.
        bytes: Vec<u8>,
    },
    /// Answer the client.
    Reply {
        /// Whose query it was.
        token: T,
        /// The answer, with the client's id.
        bytes: Vec<u8>,
        /// It is an upstream's good answer (it may be cached).
        cacheable: bool,
    },
}

/// Counters of a [`Forwarder`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardStats {
    /// Queries taken.
    pub queries: u64,
    /// Datagrams sent to servers.
    pub sent: u64,
    /// Answers relayed from servers.
    pub answered: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// `SERVFAIL`/`REFUSED` answers that moved on to the next server.
    pub server_failures: u64,
    /// Queries given `SERVFAIL` because no server answered in time.
    pub gave_up: u64,
    /// Queries refused because too many were in flight.
    pub refused: u64,
    /// Truncated answers asked again over TCP.
    pub tcp_retries: u64,
    /// Datagrams that matched no query.
    pub stray: u64,
}

#[derive(Debug, Clone, Copy)]
struct Health {
    srtt: Duration,
    down_until: Option<Instant>,
    backoff: Duration,
    /// Down once and not yet heard from since.
    suspect: bool,
}

#[derive(Debug)]
struct Pending<T> {
    token: T,
    client: u64,
    query: Vec<u8>,
    client_id: u16,
    order: Vec<SocketAddr>,
    next: usize,
    /// (server, id, sent at) of each attempt.
    sent: Vec<(SocketAddr, u16, Instant)>,
    attempt_deadline: Instant,
    deadline: Instant,
    last_failure: Option<Vec<u8>>,
    tcp: bool,
}

/// The forwarding state machine. `T` identifies the client (its socket and address).
#[derive(Debug)]
pub struct Forwarder<T> {
    config: ForwarderConfig,
    health: HashMap<SocketAddr, Health>,
    pending: HashMap<u64, Pending<T>>,
    by_id: HashMap<(SocketAddr, u16), u64>,
    per_client: HashMap<u64, usize>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    next_slot: u64,
    rng: u64,
    stats: ForwardStats,
}

impl<T> Forwarder<T> {
    /// A forwarder; `seed` makes its ids (use a random one outside tests).
    pub fn new(config: ForwarderConfig, seed: u64) -> Self {
        Forwarder {
            config,
            health: HashMap::new(),
            pending: HashMap::new(),
            by_id: HashMap::new(),
            per_client: HashMap::new(),
            timers: BinaryHeap::new(),
            next_slot: 1,
            rng: seed | 1,
            stats: ForwardStats::default(),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> ForwardStats {
        self.stats
    }

    /// Queries in flight.
    pub fn inflight(&self) -> usize {
        self.pending.len()
    }

    /// Whether `server` is down now.
    pub fn is_down(&self, server: SocketAddr, now: Instant) -> bool {
        self.health
            .get(&server)
            .and_then(|h| h.down_until)
            .is_some_and(|t| now < t)
    }

    /// When [`on_timer`](Self::on_timer) should next be called.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, slot))) = self.timers.peek().copied() {
            match self.pending.get(&slot) {
                Some(p) if p.attempt_deadline == at || p.deadline == at => return Some(at),
                _ => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    fn random_u16(&mut self) -> u16 {
        // SplitMix64.
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u16
    }

    fn health(&mut self, server: SocketAddr) -> &mut Health {
        let min = self.config.attempt_min;
        let down_for = self.config.down_for;
        self.health.entry(server).or_insert(Health {
            srtt: min / 3,
            down_until: None,
            backoff: down_for,
            suspect: false,
        })
    }

    fn attempt_timeout(&mut self, server: SocketAddr) -> Duration {
        let (min, max) = (self.config.attempt_min, self.config.attempt_max);
        let srtt = self.health(server).srtt;
        (srtt * 3).clamp(min, max)
    }

    /// Takes a client's query (its bytes as received) to forward to `upstreams`, in order.
    /// `client` groups queries for the per-client bound.
    pub fn on_query(
        &mut self,
        now: Instant,
        token: T,
        client: u64,
        query: &[u8],
        upstreams: &[SocketAddr],
    ) -> Vec<Action<T>> {
        self.stats.queries += 1;
        let client_id = wire::id(query).unwrap_or(0);
        let busy = self.per_client.get(&client).copied().unwrap_or(0);
        if upstreams.is_empty()
            || self.pending.len() >= self.config.max_inflight
            || busy >= self.config.max_inflight_per_client
        {
            let rcode = if upstreams.is_empty() { 2 } else { 5 };
            if !upstreams.is_empty() {
                self.stats.refused += 1;
            }
            return synthesized(token, query, rcode).into_iter().collect();
        }
        // Healthy servers first, in the given order; down ones after, soonest up first.
        let mut order: Vec<SocketAddr> = upstreams.to_vec();
        order.sort_by_key(|s| {
            let h = self.health.get(s);
            h.and_then(|h| h.down_until).filter(|t| now < *t)
        });
        let slot = self.next_slot;
        self.next_slot += 1;
        *self.per_client.entry(client).or_default() += 1;
        self.pending.insert(
            slot,
            Pending {
                token,
                client,
                query: query.to_vec(),
                client_id,
                order,
                next: 0,
                sent: Vec::new(),
                attempt_deadline: now,
                deadline: now + self.config.total,
                last_failure: None,
                tcp: false,
            },
        );
        self.timers.push(Reverse((now + self.config.total, slot)));
        let mut out = Vec::new();
        self.attempt(slot, now, &mut out);
        out
    }

    /// Sends the slot's query to its next server (and, if that one is a suspect, to the one
    /// after it too).
    fn attempt(&mut self, slot: u64, now: Instant, out: &mut Vec<Action<T>>) {
        let mut hedge = true;
        loop {
            let Some(p) = self.pending.get(&slot) else {
                return;
            };
            let Some(server) = p.order.get(p.next).copied() else {
                // Nothing left to try: wait for what is out, until the deadline.
                let deadline = p.deadline;
                if let Some(p) = self.pending.get_mut(&slot) {
                    p.attempt_deadline = deadline;
                }
                return;
            };
            let mut id = self.random_u16();
            while self.by_id.contains_key(&(server, id)) {
                id = self.random_u16();
            }
            let timeout = self.attempt_timeout(server);
            let suspect = {
                let h = self.health(server);
                h.suspect && h.down_until.is_none_or(|t| now >= t)
            };
            let Some(p) = self.pending.get_mut(&slot) else {
                return;
            };
            p.next += 1;
            p.sent.push((server, id, now));
            p.attempt_deadline = (now + timeout).min(p.deadline);
            let mut bytes = p.query.clone();
            wire::set_id(&mut bytes, id);
            let at = p.attempt_deadline;
            self.by_id.insert((server, id), slot);
            self.timers.push(Reverse((at, slot)));
            self.stats.sent += 1;
            out.push(Action::Send { to: server, bytes });
            if !(suspect && hedge) {
                return;
            }
            hedge = false;
        }
    }

    /// An answer arrived from `from` over UDP.
    pub fn on_answer(&mut self, now: Instant, from: SocketAddr, answer: &[u8]) -> Vec<Action<T>> {
        let mut out = Vec::new();
        let Some(id) = wire::id(answer) else {
            self.stats.stray += 1;
            return out;
        };
        let Some(&slot) = self.by_id.get(&(from, id)) else {
            self.stats.stray += 1;
            return out;
        };
        let Some(p) = self.pending.get(&slot) else {
            self.by_id.remove(&(from, id));
            self.stats.stray += 1;
            return out;
        };
        if !wire::is_response(answer) || !same_question(&p.query, answer) {
            self.stats.stray += 1;
            return out;
        }
        let sent_at = p
            .sent
            .iter()
            .find(|s| s.0 == from && s.1 == id)
            .map(|s| s.2);
        let more = p.next < p.order.len();
        let tcp = p.tcp;
        self.by_id.remove(&(from, id));
        if let Some(sent_at) = sent_at {
            self.heard_from(from, now.saturating_duration_since(sent_at));
        }
        match wire::rcode(answer) {
            Some(2) | Some(5) => {
                self.stats.server_failures += 1;
                if let Some(p) = self.pending.get_mut(&slot) {
                    p.last_failure = Some(answer.to_vec());
                }
                if more {
                    self.attempt(slot, now, &mut out);
                } else if self.outstanding(slot) == 0 {
                    self.finish(slot, answer.to_vec(), false, &mut out);
                }
            }
            _ if wire::is_truncated(answer) && !tcp => {
                self.stats.tcp_retries += 1;
                let Some(p) = self.pending.get_mut(&slot) else {
                    return out;
                };
                p.tcp = true;
                let mut bytes = p.query.clone();
                wire::set_id(&mut bytes, id);
                out.push(Action::Tcp {
                    ticket: slot,
                    to: from,
                    bytes,
                });
            }
            _ => {
                self.stats.answered += 1;
                self.finish(slot, answer.to_vec(), true, &mut out);
            }
        }
        out
    }

    /// The TCP exchange asked for by [`Action::Tcp`] ended: with the answer, or `None`.
    pub fn on_tcp_answer(
        &mut self,
        now: Instant,
        ticket: u64,
        answer: Option<Vec<u8>>,
    ) -> Vec<Action<T>> {
        let mut out = Vec::new();
        let Some(p) = self.pending.get_mut(&ticket) else {
            return out;
        };
        p.tcp = false;
        match answer {
            Some(a) if same_question(&p.query, &a) => {
                self.stats.answered += 1;
                self.finish(ticket, a, true, &mut out);
            }
            _ => self.attempt(ticket, now, &mut out),
        }
        out
    }

    fn outstanding(&self, slot: u64) -> usize {
        self.pending.get(&slot).map_or(0, |p| {
            p.sent
                .iter()
                .filter(|(s, id, _)| self.by_id.get(&(*s, *id)) == Some(&slot))
                .count()
        })
    }

    fn heard_from(&mut self, server: SocketAddr, rtt: Duration) {
        let down_for = self.config.down_for;
        let h = self.health(server);
        h.srtt = (h.srtt * 7 + rtt) / 8;
        h.down_until = None;
        h.suspect = false;
        h.backoff = down_for;
    }

    /// Time passed: attempts that timed out move on; queries past their deadline get
    /// `SERVFAIL`.
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action<T>> {
        let mut out = Vec::new();
        while let Some(Reverse((at, slot))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(p) = self.pending.get(&slot) else {
                continue;
            };
            if now >= p.deadline {
                self.stats.gave_up += 1;
                let fallback = p.last_failure.clone();
                let bytes = fallback
                    .or_else(|| synthesized_bytes(&p.query, 2))
                    .unwrap_or_default();
                self.mark_silent(slot, now);
                self.finish(slot, bytes, false, &mut out);
                continue;
            }
            if p.attempt_deadline != at || p.tcp {
                continue;
            }
            // The latest attempt timed out: its server is down for a while.
            if let Some(&(server, _, _)) = p.sent.last() {
                self.stats.timeouts += 1;
                self.mark_down(server, now);
            }
            self.attempt(slot, now, &mut out);
        }
        out
    }

    fn mark_silent(&mut self, slot: u64, now: Instant) {
        let servers: Vec<SocketAddr> = self
            .pending
            .get(&slot)
            .map(|p| {
                p.sent
                    .iter()
                    .filter(|(s, id, _)| self.by_id.get(&(*s, *id)) == Some(&slot))
                    .map(|s| s.0)
                    .collect()
            })
            .unwrap_or_default();
        for s in servers {
            if !self.is_down(s, now) {
                self.mark_down(s, now);
            }
        }
    }

    fn mark_down(&mut self, server: SocketAddr, now: Instant) {
        let max = self.config.down_max;
        let h = self.health(server);
        if h.down_until.is_some_and(|t| now < t) {
            return;
        }
        let for_ = if h.suspect {
            (h.backoff * 2).min(max)
        } else {
            h.backoff
        };
        h.backoff = for_;
        h.down_until = Some(now + for_);
        h.suspect = true;
        h.srtt = h.srtt.max(for_ / 10);
    }

    fn finish(&mut self, slot: u64, mut bytes: Vec<u8>, cacheable: bool, out: &mut Vec<Action<T>>) {
        let Some(p) = self.pending.remove(&slot) else {
            return;
        };
        for (s, id, _) in &p.sent {
            if self.by_id.get(&(*s, *id)) == Some(&slot) {
                self.by_id.remove(&(*s, *id));
            }
        }
        if let Some(n) = self.per_client.get_mut(&p.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_client.remove(&p.client);
            }
        }
        wire::set_id(&mut bytes, p.client_id);
        out.push(Action::Reply {
            token: p.token,
            bytes,
            cacheable,
        });
    }
}

/// Whether `answer` is about the same question as `query` (names compared without case).
fn same_question(query: &[u8], answer: &[u8]) -> bool {
    match (wire::question(query), wire::question(answer)) {
        (Some(q), Some(a)) => query[q].eq_ignore_ascii_case(&answer[a]),
        _ => false,
    }
}

/// A header-and-question answer with `rcode`, made from the query's bytes.
fn synthesized_bytes(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let mut out = wire::header_and_question(query)?;
    out[2] = 0x80 | (out[2] & 0x79);
    out[3] = 0x80 | (rcode & 0x0f);
    Some(out)
}

fn synthesized<T>(token: T, query: &[u8], rcode: u8) -> Option<Action<T>> {
    let bytes = synthesized_bytes(query, rcode).or_else(|| wire::bare_error(query, rcode))?;
    Some(Action::Reply {
        token,
        bytes,
        cacheable: false,
    })
}

#[cfg(test)]
mod tests;
