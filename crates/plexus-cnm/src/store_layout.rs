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
//! ```
//!
//! An event is written in the transaction of the change it reports, with the head and the
//! deletion of the event that falls out of the history.

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
