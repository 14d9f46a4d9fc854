//! What reconciliation asks of the model: forgetting endpoints whose data plane is gone and
//! correcting interface names a crash left in records.

use plexus_kv::Txn;

use super::Controller;
use crate::error::{CnmError, Result};
use crate::model::Endpoint;
use crate::store_layout as keys;

impl Controller {
    /// Records `interface` as the name of `endpoint`'s interface in its sandbox: what
    /// start-up reconciliation does when the data plane marks another name than the record
    /// (a crash after a join that had to take another name than the guess written with the
    /// record, before the record was corrected).
    pub async fn set_interface(&self, endpoint: &Endpoint, interface: &str) -> Result<()> {
        let _op = self.ops.lock().await;
        let mut endpoint = endpoint.clone();
        endpoint.interface = Some(interface.to_string());
        self.rewrite_endpoint(&endpoint).await
    }

    /// Forgets endpoints whose data plane is gone without a disconnect: the driver found no
    /// finished join for them at start-up (a crash during connect or disconnect, or a sandbox
    /// namespace deleted behind Plexus's back). Only the records go (the driver deletes what
    /// is left of their data plane as unknown, IPAM reconciliation frees their addresses).
    pub async fn forget_endpoints(&self, endpoints: &[Endpoint]) -> Result<()> {
        let _op = self.ops.lock().await;
        for ep in endpoints {
            match self.unrecord_endpoint(&ep.sandbox_id, ep, false).await {
                Ok(()) => {}
                // Its sandbox is gone: only the endpoint's own record is left.
                Err(CnmError::NotFound { .. }) => {
                    self.store
                        .txn(Txn::new().delete(keys::endpoint_in(ep.scope, &ep.network_id, &ep.id)))
                        .await?;
                }
                Err(e) => return Err(e),
            }
            tracing::info!(endpoint = %ep.id, sandbox = %ep.name, network = %ep.network_id, "endpoint rolled back: its join never finished or its interface is gone");
        }
        Ok(())
    }
}
