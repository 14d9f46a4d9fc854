//! Where the model's records live in the store. One place, so the layout is a reviewed
//! contract (it is what a restarted daemon, or another daemon sharing the store, reads).
//!
//! ```text
//! plexus/v1/network/<id>                  Network (JSON)
//! plexus/v1/network-name/<name>           "<id>"   (makes names unique, in the same transaction)
//! plexus/v1/endpoint/<network id>/<id>    Endpoint
//! plexus/v1/sandbox/<id>                  Sandbox
//! plexus/v1/sandbox-name/<name>           "<id>"
//! plexus/v1/event/<revision, 20 digits>   Event (the last EVENT_HISTORY of them)
//! plexus/v1/event-head                    the last event revision (a number)
//! plexus/v1/service/<id>                  Service (a service on local networks)
//! plexus/v1/service-name/<name>           "<id>"
//! plexus/v1/service-task/<service id>/<sandbox id>   Task: a sandbox of the service, its backends
//! plexus/v1/service-vips/<service id>     VipIntent: virtual IPs being taken or given back
//! ```
//!
//! A service on global networks, its name and its tasks are in the cluster store under
//! [`GLOBAL_ROOT`] in the same shape (`plexus/v1/global/service/<id>`, ...). The intents
//! are always local: they are the host's own work in progress, read by its start-up
//! reconciliation, which gives back every address an intent lists that the service's record
//! does not hold (a crash between the allocation and the record, or between the record and
//! the release).
//!
//! An event is written in the transaction of the change it reports, with the head and the
//! deletion of the event that falls out of the history.
//!
//! Records of global-scope networks live in the cluster store, under [`GLOBAL_ROOT`], in the
//! same shape (`plexus/v1/global/network/<id>`, `.../network-name/<name>`,
//! `.../endpoint/<network id>/<id>`), and each host announces itself there
//! (`plexus/v1/global/node/<host id>`). Sandboxes are always local.
//!
//! Drivers may keep cluster-wide allocations of their own in the cluster store under
//! `plexus/v1/global/<driver>/`, written by the driver, never by the controller: the overlay
//! driver's VXLAN ids are `plexus/v1/global/overlay/vni/<id>` (`"<network id>"`, created with
//! compare-and-swap; plexus-drivers' `overlay::vni_key`).

use crate::model::Scope;

/// The root of every global-scope record: what the cluster store holds.
pub const GLOBAL_ROOT: &str = "plexus/v1/global";
/// Directory of global network records.
pub const GLOBAL_NETWORKS: &str = "plexus/v1/global/network";
/// Directory of the cluster's hosts.
pub const NODES: &str = "plexus/v1/global/node";

/// Directory of network records.
pub const NETWORKS: &str = "plexus/v1/network";
/// Directory of sandbox records.
pub const SANDBOXES: &str = "plexus/v1/sandbox";

/// A network's record.
pub fn network(id: &str) -> String {
    format!("{NETWORKS}/{id}")
}

/// A network name's claim.
pub fn network_name(name: &str) -> String {
    format!("plexus/v1/network-name/{name}")
}

/// The directory of a network's endpoints.
pub fn endpoints_of(network_id: &str) -> String {
    format!("plexus/v1/endpoint/{network_id}")
}

/// An endpoint's record.
pub fn endpoint(network_id: &str, id: &str) -> String {
    format!("plexus/v1/endpoint/{network_id}/{id}")
}

/// A sandbox's record.
pub fn sandbox(id: &str) -> String {
    format!("{SANDBOXES}/{id}")
}

/// A sandbox name's claim.
pub fn sandbox_name(name: &str) -> String {
    format!("plexus/v1/sandbox-name/{name}")
}

/// Directory of event records.
pub const EVENTS: &str = "plexus/v1/event";
/// The last event revision committed.
pub const EVENT_HEAD: &str = "plexus/v1/event-head";

/// An event's record; zero-padded so keys sort by revision.
pub fn event(revision: u64) -> String {
    format!("{EVENTS}/{revision:020}")
}

fn root(scope: Scope) -> &'static str {
    match scope {
        Scope::Local => "plexus/v1",
        Scope::Global => GLOBAL_ROOT,
    }
}

/// A network's record, in the store of its scope.
pub fn network_in(scope: Scope, id: &str) -> String {
    format!("{}/network/{id}", root(scope))
}

/// A network name's claim, in the store of its scope.
pub fn network_name_in(scope: Scope, name: &str) -> String {
    format!("{}/network-name/{name}", root(scope))
}

/// The directory of a network's endpoints, in the store of its scope.
pub fn endpoints_in(scope: Scope, network_id: &str) -> String {
    format!("{}/endpoint/{network_id}", root(scope))
}

/// An endpoint's record, in the store of its network's scope.
pub fn endpoint_in(scope: Scope, network_id: &str, id: &str) -> String {
    format!("{}/endpoint/{network_id}/{id}", root(scope))
}

/// The directory of services, in the store of their networks' scope.
pub fn services_in(scope: Scope) -> String {
    format!("{}/service", root(scope))
}

/// A service's record, in the store of its networks' scope.
pub fn service_in(scope: Scope, id: &str) -> String {
    format!("{}/service/{id}", root(scope))
}

/// A service name's claim, in the store of its networks' scope.
pub fn service_name_in(scope: Scope, name: &str) -> String {
    format!("{}/service-name/{name}", root(scope))
}

/// The directory of a service's tasks, in the store of its scope.
pub fn tasks_in(scope: Scope, service_id: &str) -> String {
    format!("{}/service-task/{service_id}", root(scope))
}

/// A task's record: the sandbox `sandbox_id` as a task of the service.
pub fn task_in(scope: Scope, service_id: &str, sandbox_id: &str) -> String {
    format!("{}/service-task/{service_id}/{sandbox_id}", root(scope))
}

/// Directory of this host's virtual-IP intents (always local).
pub const SERVICE_VIPS: &str = "plexus/v1/service-vips";

/// This host's intent for a service's virtual IPs (always local).
pub fn service_vips(service_id: &str) -> String {
    format!("{SERVICE_VIPS}/{service_id}")
}

/// A host's record in the cluster store.
pub fn node(host_id: &str) -> String {
    format!("{NODES}/{host_id}")
}
