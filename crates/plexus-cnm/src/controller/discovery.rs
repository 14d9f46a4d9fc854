//! What the cluster's control plane tells the drivers: nodes that joined or left
//! (libnetwork's `DiscoverNew`/`DiscoverDelete`) and changed entries of a network's tables
//! (`EventNotify`). The gossip layer calls these; the controller routes them.

use super::{driver_err, Controller};
use crate::driver::{NodeDiscovery, TableEvent};
use crate::error::Result;

impl Controller {
    /// A node joined the cluster: every driver hears of it. The first driver that fails
    /// stops the round with its error (the others that heard keep what they learnt; the
    /// gossip layer's next announcement repeats it).
    pub async fn node_joined(&self, node: &NodeDiscovery) -> Result<()> {
        for name in self.drivers.names() {
            let driver = self.driver(&name)?;
            driver
                .discover_new(node)
                .await
                .map_err(|e| driver_err(driver.as_ref(), e))?;
        }
        Ok(())
    }

    /// A node left the cluster: every driver hears of it.
    pub async fn node_left(&self, node: &NodeDiscovery) -> Result<()> {
        for name in self.drivers.names() {
            let driver = self.driver(&name)?;
            driver
                .discover_delete(node)
                .await
                .map_err(|e| driver_err(driver.as_ref(), e))?;
        }
        Ok(())
    }

    /// An entry of a network's control-plane table changed: the network's driver hears of
    /// it. An unknown network is an error naming it.
    pub async fn table_event(&self, event: &TableEvent) -> Result<()> {
        let network = self.network(&event.network_id).await?;
        let driver = self.driver(&network.driver)?;
        driver
            .event_notify(event)
            .await
            .map_err(|e| driver_err(driver.as_ref(), e))
    }
}
