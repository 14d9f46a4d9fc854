//! The `host` driver: the sandbox is the host's own namespace, so there is nothing to make.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use async_trait::async_trait;
use plexus_cnm::{
    Capability, Desired, Driver, DriverError, EndpointCreated, EndpointInfo, InterfaceName, Joined,
    LiveEndpoint, ReconcileMode, Reconciled,
};
use plexus_cnm::{NetworkInfo, Scope};
use plexus_sys::netns::Netns;

/// The `host` driver.
#[derive(Debug, Clone)]
pub struct HostDriver {
    host: Netns,
}

impl HostDriver {
    /// A host driver for the namespace `host` (the one sandboxes must share).
    pub fn new(host: Netns) -> Self {
        Self { host }
    }
}

/// Rejects every option: the host and null drivers take none.
pub(crate) fn no_options(
    driver: &str,
    options: &BTreeMap<String, String>,
) -> Result<(), DriverError> {
    match options.keys().next() {
        Some(k) => Err(DriverError::Invalid(format!(
            "option {k:?}: the {driver} driver takes no options"
        ))),
        None => Ok(()),
    }
}

/// The capability of drivers without interfaces or addresses.
pub(crate) fn singleton() -> Capability {
    Capability {
        scope: Scope::Local,
        connectivity: Scope::Local,
        needs_ipam: false,
        multiple_networks: false,
    }
}

/// The (device, inode) of a namespace file: equal for two paths of one namespace.
fn identity(path: &Path) -> Result<(u64, u64), DriverError> {
    std::fs::metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| DriverError::Invalid(format!("netns path {}: {e}", path.display())))
}

#[async_trait]
impl Driver for HostDriver {
    fn name(&self) -> &str {
        "host"
    }

    fn capability(&self) -> Capability {
        singleton()
    }

    fn validate_options(&self, options: &BTreeMap<String, String>) -> Result<(), DriverError> {
        no_options("host", options)
    }

    async fn create_network(&self, _network: &NetworkInfo) -> Result<(), DriverError> {
        Ok(())
    }

    async fn delete_network(&self, _network_id: &str) -> Result<(), DriverError> {
        Ok(())
    }

    async fn create_endpoint(
        &self,
        endpoint: &EndpointInfo,
    ) -> Result<EndpointCreated, DriverError> {
        if !endpoint.ports.is_empty() {
            return Err(DriverError::Invalid(
                "ports: a sandbox on the host network uses the host's ports directly; publishing is not possible".into(),
            ));
        }
        Ok(EndpointCreated::default())
    }

    async fn delete_endpoint(
        &self,
        _network_id: &str,
        _endpoint_id: &str,
    ) -> Result<(), DriverError> {
        Ok(())
    }

    async fn join(
        &self,
        _network_id: &str,
        _endpoint_id: &str,
        sandbox_key: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        crate::sandbox::refuse_handoff("host", &interface)?;
        // The sandbox must be the host's namespace itself: the container runtime shares it.
        let host = identity(&Path::new("/proc/self/fd").join(self.host.fd_number()))?;
        let sandbox = identity(Path::new(sandbox_key))?;
        if host != sandbox {
            return Err(DriverError::Invalid(format!(
                "netns path {sandbox_key}: a sandbox on the host network must be the host's namespace ({})",
                self.host.path().display()
            )));
        }
        Ok(Joined::default())
    }

    async fn leave(&self, _network_id: &str, _endpoint_id: &str) -> Result<(), DriverError> {
        Ok(())
    }

    /// `None`: the host driver makes nothing per endpoint, so every recorded endpoint is live
    /// (there is no join a crash could cut short).
    async fn live_endpoints(&self) -> Result<Option<BTreeMap<String, LiveEndpoint>>, DriverError> {
        Ok(None)
    }

    /// Nothing to reconcile: the host driver owns no kernel object (the sandbox is the host's
    /// own namespace, which it never changes).
    async fn reconcile(
        &self,
        _desired: &Desired,
        _mode: ReconcileMode,
    ) -> Result<Reconciled, DriverError> {
        Ok(Reconciled::default())
    }
}

/// The raw descriptor number of an open namespace, for `/proc/self/fd/N`.
trait FdNumber {
    fn fd_number(&self) -> String;
}

impl FdNumber for Netns {
    fn fd_number(&self) -> String {
        use std::os::fd::AsRawFd;
        self.fd().as_raw_fd().to_string()
    }
}
