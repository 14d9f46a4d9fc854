//! The cluster's control plane as a global driver sees it: tables scoped to a network, shared
//! by every host with an endpoint on it (libnetwork's networkdb, reached through its agent).
//!
//! A driver publishes what other hosts need to know of its endpoints (an overlay endpoint's
//! addresses and its host's underlay address) with [`ControlPlane::put`], and learns what
//! the others published through [`Driver::event_notify`](crate::Driver::event_notify), which
//! the daemon calls (through [`Controller::table_event`](crate::Controller::table_event))
//! for every entry of the tables of networks this host joined. The daemon implements this
//! trait over plexus-gossip; tests over an in-memory fake. Values are the driver's own
//! encoding: the control plane moves bytes.

use std::net::IpAddr;

/// An error of the control plane, in words (which network, which table, why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("control plane: {0}")]
pub struct ControlPlaneError(pub String);

/// Network-scoped tables shared by the hosts of a cluster.
pub trait ControlPlane: Send + Sync {
    /// This host's address on the underlay (`--cluster-advertise`): where other hosts send
    /// its overlay traffic.
    fn advertise_addr(&self) -> IpAddr;

    /// Starts receiving `network_id`'s tables (this host has, or is about to have, an
    /// endpoint on it). Idempotent.
    fn join_network(&self, network_id: &str) -> Result<(), ControlPlaneError>;

    /// Stops receiving them (no endpoint left here); this host's entries are withdrawn.
    fn leave_network(&self, network_id: &str);

    /// Publishes (or replaces) an entry owned by this host.
    fn put(
        &self,
        network_id: &str,
        table: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), ControlPlaneError>;

    /// Withdraws an entry this host published; a missing one is not an error.
    fn delete(&self, network_id: &str, table: &str, key: &str) -> Result<(), ControlPlaneError>;

    /// Every live entry of a table now, with the address of the host that owns it (to
    /// program the data plane from scratch, after a restart).
    fn entries(&self, network_id: &str, table: &str) -> Vec<(String, Vec<u8>, IpAddr)>;

    /// Whether [`entries`](Self::entries) of `network_id` is complete: this host has
    /// compared its tables with another host's since it joined the network (or no other
    /// host is on it). Until then an entry missing here may only not have arrived yet, so
    /// what it accounts for in the kernel must not be removed as stale.
    fn synced(&self, network_id: &str) -> bool {
        let _ = network_id;
        true
    }
}
