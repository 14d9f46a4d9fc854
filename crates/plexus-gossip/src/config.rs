//! Tunables, with libnetwork's defaults.

use std::time::Duration;

use crate::error::GossipError;

/// The default gossip port (UDP and TCP), as Docker's.
pub const DEFAULT_PORT: u16 = 7946;

/// Protocol tunables. [`Config::default`] gives libnetwork's / memberlist's LAN defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Largest datagram sent or accepted, seal included (default 1400).
    pub packet_size: usize,
    /// Largest stream frame accepted (default 8 MiB).
    pub max_stream_size: usize,
    /// How often queued gossip is pushed to `gossip_fanout` random peers (default 200 ms).
    pub gossip_interval: Duration,
    /// Peers per gossip round (default 3).
    pub gossip_fanout: usize,
    /// Anti-entropy period: per-network table sync and membership digest (default 30 s).
    pub sync_interval: Duration,
    /// SWIM probe period (default 1 s).
    pub probe_interval: Duration,
    /// Direct probe timeout before indirect probes (default 500 ms).
    pub probe_timeout: Duration,
    /// Helpers asked for an indirect probe (default 3).
    pub indirect_probes: usize,
    /// Retransmissions of each broadcast = mult × ceil(log10(n+1)) (default 4).
    pub retransmit_mult: u32,
    /// Suspicion timeout = mult × max(1, log10(n)) × probe interval (default 4).
    pub suspicion_mult: u32,
    /// Lifeguard: longest suspicion = this × the shortest (default 6).
    pub suspicion_max_timeout_mult: u32,
    /// Lifeguard local health: highest multiplier of probe interval/timeout (default 8).
    pub awareness_max_multiplier: u32,
    /// How long tombstones (and a failed node's hidden entries) are kept (default 30 min).
    pub reap_interval: Duration,
    /// How often a node that has not joined yet retries its seeds (default 1 s).
    pub join_retry: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            packet_size: 1400,
            max_stream_size: 8 << 20,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            sync_interval: Duration::from_secs(30),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            retransmit_mult: 4,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            awareness_max_multiplier: 8,
            reap_interval: Duration::from_secs(30 * 60),
            join_retry: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// Checks the values make sense.
    pub fn validate(&self) -> Result<(), GossipError> {
        if self.packet_size < 256 || self.packet_size > 65_000 {
            return Err(GossipError::Config("packet_size must be in 256..=65000"));
        }
        if self.gossip_interval.is_zero() || self.probe_interval.is_zero() {
            return Err(GossipError::Config("intervals must not be zero"));
        }
        if self.probe_timeout >= self.probe_interval {
            return Err(GossipError::Config(
                "probe_timeout must be below probe_interval",
            ));
        }
        if self.sync_interval.is_zero() || self.join_retry.is_zero() {
            return Err(GossipError::Config(
                "sync_interval and join_retry must not be zero",
            ));
        }
        if self.gossip_fanout == 0 {
            return Err(GossipError::Config("gossip_fanout must be at least 1"));
        }
        Ok(())
    }
}
