//! The `null` driver (Docker's `none` network): the sandbox keeps only its loopback, which
//! the driver brings up.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use plexus_cnm::NetworkInfo;
use plexus_cnm::{
    Capability, Desired, Driver, DriverError, EndpointCreated, EndpointInfo, InterfaceName, Joined,
    LiveEndpoint, ReconcileMode, Reconciled,
};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;

use crate::host::{no_options, singleton};
use crate::sys_ctx;

/// The `null` driver.
#[derive(Debug, Clone, Default)]
pub struct NullDriver;

impl NullDriver {
    /// The null driver.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Driver for NullDriver {
    fn name(&self) -> &str {
        "null"
    }

    fn capability(&self) -> Capability {
        singleton()
    }

    fn validate_options(&self, options: &BTreeMap<String, String>) -> Result<(), DriverError> {
        no_options("null", options)
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
                "ports: a sandbox on the none network has no interface to publish from".into(),
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
        crate::sandbox::refuse_handoff("null", &interface)?;
        let ns = Netns::open(Path::new(sandbox_key)).map_err(sys_ctx("sandbox"))?;
        let rtnl = Rtnl::connect(&ns).await.map_err(sys_ctx("sandbox"))?;
        let lo = rtnl.require_link("lo").await.map_err(sys_ctx("sandbox"))?;
        rtnl.set_up(lo.index)
            .await
            .map_err(sys_ctx("loopback up"))?;
        Ok(Joined::default())
    }

    async fn leave(&self, _network_id: &str, _endpoint_id: &str) -> Result<(), DriverError> {
        Ok(())
    }

    /// `None`: the null driver makes nothing per endpoint (a join only brings loopback up),
    /// so every recorded endpoint is live.
    async fn live_endpoints(&self) -> Result<Option<BTreeMap<String, LiveEndpoint>>, DriverError> {
        Ok(None)
    }

    /// Nothing to reconcile: the null driver owns no kernel object (a sandbox's loopback is
    /// the sandbox's own, and there is nothing of it to delete).
    async fn reconcile(
        &self,
        _desired: &Desired,
        _mode: ReconcileMode,
    ) -> Result<Reconciled, DriverError> {
        Ok(Reconciled::default())
    }
}
