//! # plexus-cnm — the Container Network Model
//!
//! The model of the seeds: a **Sandbox** (one container's network stack, a namespace), an
//! **Endpoint** (one sandbox's attachment to one network) and a **Network** (endpoints that can
//! talk to each other), made by pluggable [`Driver`]s with addresses from an
//! [`Ipam`](plexus_ipam::Ipam), all recorded in a [`Store`](plexus_kv::Store).
//!
//! The [`Controller`] is the only writer of the records. Each operation validates its input
//! first (errors name the field), then allocates, then asks the driver, then records the result
//! in one store transaction — undoing the earlier steps if a later one fails, so nothing is left
//! half-made and no address leaks.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use plexus_cnm::{Controller, ControllerConfig, DriverRegistry, NetworkSpec};
//! let store = plexus_kv::open("memory://", Default::default()).await?;
//! let ipam = plexus_ipam::BuiltinIpam::open(store.clone(), plexus_ipam::IpamConfig::new("host-1")).await?;
//! let controller = Controller::new(store, Arc::new(ipam), DriverRegistry::new(), ControllerConfig::default());
//! // No driver registered: the error names the field.
//! let err = controller.create_network(NetworkSpec { name: "n1".into(), ..Default::default() }).await;
//! assert!(err.unwrap_err().to_string().contains("driver"));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod control_plane;
mod controller;
pub mod datastore;
pub mod driver;
mod error;
pub mod model;
pub mod namespaces;
pub mod observer;
pub mod reconcile;
pub mod service;
pub mod store_layout;

pub use control_plane::{ControlPlane, ControlPlaneError};
pub use controller::events::{Event, EventAction, EventType, Subscription, EVENT_HISTORY};
pub use controller::orchestrate::MAX_SANDBOX_NETWORKS;
pub use controller::{check_name, Controller, ControllerConfig};
pub use datastore::Datastore;
pub use driver::{
    Capability, Driver, DriverError, DriverRegistry, DriverResolver, EndpointCreated, EndpointInfo,
    ExternalConnectivity, InterfaceName, IpamResolver, Joined, NetworkInfo, NodeDiscovery,
    StaticRoute, TableEvent, TableEventKind,
};
pub use error::{CnmError, Result};
pub use model::{
    Endpoint, EndpointSpec, IpamPool, IpamPoolSpec, Network, NetworkSpec, Node, PortBinding,
    Sandbox, SandboxSpec, Scope, DEFAULT_BRIDGE_NETWORK, DEFAULT_BRIDGE_OPTION, DNS_TTL_OPTION,
    PREDEFINED_NETWORKS,
};
pub use namespaces::{Namespaces, NoNamespaces};
pub use observer::CommitObserver;
pub use reconcile::{
    Desired, DesiredEndpoint, LiveEndpoint, ReconcileMode, ReconcileReport, Reconciled,
};
pub use service::{
    AffinityMode, Backend, EndpointMode, NetworkBackends, PublishMode, PublishedPort, Service,
    ServiceSpec, ServiceUpdate, SessionAffinity, Task, VirtualIp, INGRESS_SANDBOX,
    MAX_SERVICE_NETWORKS,
};
