//! What reconciliation passes between the controller and the drivers: the store's picture of
//! a driver's networks and endpoints, what a driver finds live in the kernel, and what a pass
//! repaired or removed.

use std::collections::BTreeMap;

use crate::driver::{EndpointInfo, NetworkInfo};

/// Which reconciliation is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileMode {
    /// At start, before the API serves: a crash may have cut connects and disconnects short,
    /// so an endpoint without a finished data plane is rolled back (its record forgotten).
    Startup,
    /// While running: nothing is cut short (the controller's operation lock is held), so what
    /// is missing was removed behind Plexus's back (drift) and is made again.
    Periodic,
}

/// What a driver finds in the kernel of an endpoint whose data plane is finished.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveEndpoint {
    /// The name of its interface in the sandbox, as the kernel marks it (`None` when the
    /// driver cannot tell): what the endpoint's record must say.
    pub interface: Option<String>,
    /// Whether its published ports (if it has any) are in the kernel: connect publishes them
    /// last and disconnect withdraws them first, so an endpoint with ports and none of them
    /// published was cut short.
    pub published: bool,
}

/// An endpoint as the store records it, with everything a driver needs to make its data plane
/// again: the [`EndpointInfo`] of its creation (with the MAC and host ports chosen then), its
/// sandbox and its interface name there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredEndpoint {
    /// Ids, addresses, MAC and published ports (host ports filled in).
    pub info: EndpointInfo,
    /// The sandbox's namespace path.
    pub sandbox_key: String,
    /// The interface's name in the sandbox (`eth0`); for a handed-off one, the name the
    /// driver gave it in the daemon's namespace.
    pub interface: Option<String>,
    /// Its interface was handed over to the runtime of the sandbox
    /// ([`InterfaceName::handoff`](crate::InterfaceName::handoff)), which configures it: a
    /// driver repairs its own side only.
    pub handed_off: bool,
}

/// The store's networks and endpoints of one driver: what the kernel must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// The driver's networks.
    pub networks: Vec<NetworkInfo>,
    /// Their endpoints on this host (only those the store keeps after start-up rollback).
    pub endpoints: Vec<DesiredEndpoint>,
}

/// What one driver's reconciliation changed. Entries are short descriptions naming the object
/// (`bridge plx-0123456789a`, `tcp/8080 of endpoint 01ab…`), for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Networks whose data plane was made again or adopted (their ids).
    pub networks: Vec<String>,
    /// Endpoints whose interface was made again (their ids).
    pub endpoints: Vec<String>,
    /// Other kernel objects made again (a bridge, a published port, a firewall element).
    pub repaired: Vec<String>,
    /// Objects carrying the driver's mark that the store does not know, deleted.
    pub removed: Vec<String>,
    /// Endpoints the driver could not repair, with why (their sandbox's namespace is gone).
    pub unrepaired: BTreeMap<String, String>,
}

impl Reconciled {
    /// Whether the pass changed nothing and found nothing it could not repair.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
            && self.endpoints.is_empty()
            && self.repaired.is_empty()
            && self.removed.is_empty()
            && self.unrepaired.is_empty()
    }
}

/// What [`Controller::reconcile`](crate::Controller::reconcile) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Endpoints rolled back at start-up (ids): their connect or disconnect was cut short.
    pub forgotten: Vec<String>,
    /// Endpoints whose recorded interface name was corrected: (id, name in the kernel).
    pub renamed: Vec<(String, String)>,
    /// Each driver's changes, by driver name (drivers that changed nothing are left out).
    pub drivers: BTreeMap<String, Reconciled>,
    /// Drivers whose pass failed, with the error (the others still ran).
    pub failed: BTreeMap<String, String>,
    /// Sandboxes (ids) whose way out was settled: a gateway endpoint attached or removed,
    /// which a crash between a connect or disconnect and that step had left undone.
    pub gateways: Vec<String>,
    /// Services' virtual IPs given back at start-up: a crash cut their service's create,
    /// update or remove short.
    pub vips_released: usize,
    /// Task records mended at start-up to match their sandboxes.
    pub tasks_mended: usize,
}

impl ReconcileReport {
    /// Whether the pass changed nothing and nothing failed.
    pub fn is_empty(&self) -> bool {
        self.forgotten.is_empty()
            && self.renamed.is_empty()
            && self.drivers.values().all(Reconciled::is_empty)
            && self.failed.is_empty()
            && self.gateways.is_empty()
            && self.vips_released == 0
            && self.tasks_mended == 0
    }
}
