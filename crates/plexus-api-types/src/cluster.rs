//! `/plexus/cluster`: the hosts of the gossip cluster, as one host sees them, its keyring's
//! ids (never key material) and its gossip counters.

use serde::{Deserialize, Serialize};

/// A host of the cluster (`GET /plexus/cluster/hosts`, `plexus cluster ls`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterHost {
    /// Its host id (from its record in the cluster store; empty if it has none).
    #[serde(rename = "ID")]
    pub id: String,
    /// Its name (hostname), or its address when unknown.
    pub name: String,
    /// Its gossip address, `IP:PORT` (the IP is its `--cluster-advertise` address).
    pub address: String,
    /// `alive`, `suspect`, `dead` or `left`, as this host's SWIM says.
    pub state: String,
    /// Ids of the networks it joined (network-scoped gossip).
    pub networks: Vec<String>,
    /// Whether it is the host that answered.
    #[serde(rename = "Self")]
    pub self_host: bool,
}

/// A keyring as one host runs it: ids only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyringInfo {
    /// The version of the cluster store's keyring record this host applied.
    pub version: u64,
    /// The id of the key frames are sealed with.
    pub primary: String,
    /// Every key id frames are opened with, primary first.
    pub keys: Vec<String>,
}

/// A host's gossip counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GossipStats {
    /// Datagrams and stream frames sent.
    pub messages_sent: u64,
    /// Datagrams and stream frames received.
    pub messages_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Frames no key opened (another cluster key, tampering): refused unread.
    pub decryption_failures: u64,
    /// Frames replayed or from a stale epoch.
    pub dropped_replay: u64,
    /// Frames over the size limits, or opened but malformed.
    pub dropped_other: u64,
    /// Visible entries in the tables of the networks this host joined.
    pub table_entries: u64,
}

/// `GET /plexus/cluster` (this host) or `/plexus/cluster/hosts/{host}` (`plexus cluster
/// inspect [HOST]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterInspect {
    /// The host inspected.
    pub host: ClusterHost,
    /// Every member, as the answering host sees them.
    pub members: Vec<ClusterHost>,
    /// The answering host's keyring.
    pub keyring: KeyringInfo,
    /// The answering host's counters.
    pub stats: GossipStats,
    /// The configured failure-detection time (worst case), in milliseconds.
    pub failure_detection_ms: u64,
}
