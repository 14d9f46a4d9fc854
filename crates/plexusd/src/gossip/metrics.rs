//! Gossip on `/metrics`: members by state, messages sent and received, frames refused for
//! want of a key (decryption failures), and table entries. The runtime's counters are read
//! every second ([`Gossip::monitor`](super::Gossip::monitor)) and carried as increments.

use std::sync::Mutex;

use anyhow::{Context, Result};
use plexus_gossip::runtime::GossipHandle;
use plexus_gossip::{MemberState, Stats};
use plexus_metrics::{Counter, Family, Gauge, Registry};

type Label = [(&'static str, &'static str); 1];

/// The gossip families.
pub struct GossipMetrics {
    members: Family<Label, Gauge>,
    sent: Family<Label, Counter>,
    received: Family<Label, Counter>,
    decryption_failures: Counter,
    dropped: Family<Label, Counter>,
    entries: Gauge,
    last: Mutex<Stats>,
}

/// The label (and `plexus cluster ls` word) of a member state.
pub fn state_label(s: MemberState) -> &'static str {
    match s {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "dead",
        MemberState::Left => "left",
    }
}

impl GossipMetrics {
    /// Registers the gossip families.
    pub fn register(registry: &Registry) -> Result<Self> {
        let m = GossipMetrics {
            members: Family::default(),
            sent: Family::default(),
            received: Family::default(),
            decryption_failures: Counter::default(),
            dropped: Family::default(),
            entries: Gauge::default(),
            last: Mutex::new(Stats::default()),
        };
        fn reg(
            registry: &Registry,
            name: &str,
            help: &str,
            metric: impl plexus_metrics::Metric,
        ) -> Result<()> {
            registry
                .register(name, help, metric)
                .with_context(|| format!("registering plexus_{name}"))
        }
        reg(
            registry,
            "gossip_members",
            "Cluster members this host knows, by state (alive, suspect, dead, left), itself included",
            m.members.clone(),
        )?;
        reg(
            registry,
            "gossip_messages_sent",
            "Gossip messages sent, by transport (udp, tcp)",
            m.sent.clone(),
        )?;
        reg(
            registry,
            "gossip_messages_received",
            "Gossip messages received, by transport (udp, tcp), refused ones included",
            m.received.clone(),
        )?;
        reg(
            registry,
            "gossip_decryption_failures",
            "Gossip frames no key of this host's keyring opens (another cluster key, tampering), refused unread",
            m.decryption_failures.clone(),
        )?;
        reg(
            registry,
            "gossip_dropped",
            "Other gossip frames dropped, by reason (replay, oversize, malformed)",
            m.dropped.clone(),
        )?;
        reg(
            registry,
            "gossip_table_entries",
            "Visible entries in the tables of the networks this host joined",
            m.entries.clone(),
        )?;
        Ok(m)
    }

    /// Records a reading of the runtime.
    pub fn observe(&self, handle: &GossipHandle, now: &Stats) {
        let mut counts: std::collections::BTreeMap<&'static str, i64> =
            ["alive", "suspect", "dead", "left"].map(|s| (s, 0)).into();
        let mut me_listed = false;
        for m in handle.members() {
            me_listed |= m.addr == handle.addr();
            *counts.entry(state_label(m.state)).or_default() += 1;
        }
        if !me_listed {
            *counts.entry("alive").or_default() += 1;
        }
        for (state, n) in counts {
            self.members.get_or_create(&[("state", state)]).set(n);
        }
        let entries: usize = handle
            .networks()
            .iter()
            .filter(|n| n.local)
            .map(|n| {
                handle
                    .table_dump(&n.name)
                    .iter()
                    .filter(|e| e.visible && !e.deleted)
                    .count()
            })
            .sum();
        self.entries.set(entries as i64);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let d = |new: u64, old: u64| new.saturating_sub(old);
        let inc = |f: &Family<Label, Counter>, k: &'static str, v: &'static str, n: u64| {
            if n > 0 {
                f.get_or_create(&[(k, v)]).inc_by(n);
            }
        };
        inc(
            &self.sent,
            "transport",
            "udp",
            d(now.tx_datagrams, last.tx_datagrams),
        );
        inc(
            &self.sent,
            "transport",
            "tcp",
            d(now.tx_streams, last.tx_streams),
        );
        inc(
            &self.received,
            "transport",
            "udp",
            d(now.rx_datagrams, last.rx_datagrams),
        );
        inc(
            &self.received,
            "transport",
            "tcp",
            d(now.rx_streams, last.rx_streams),
        );
        inc(
            &self.dropped,
            "reason",
            "replay",
            d(now.dropped_replay, last.dropped_replay),
        );
        inc(
            &self.dropped,
            "reason",
            "oversize",
            d(now.dropped_oversize, last.dropped_oversize),
        );
        inc(
            &self.dropped,
            "reason",
            "malformed",
            d(now.dropped_malformed, last.dropped_malformed),
        );
        let failures = d(now.dropped_unauthenticated, last.dropped_unauthenticated);
        if failures > 0 {
            self.decryption_failures.inc_by(failures);
        }
        *last = now.clone();
    }
}
