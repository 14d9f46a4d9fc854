//! Sandboxes: records of network namespaces, and the lookups through their endpoint lists.

use plexus_kv::{KvError, Txn};

use super::{check_name, encode, new_id, Controller};
use crate::error::{CnmError, Result};
use crate::model::{Endpoint, Network, Sandbox};
use crate::store_layout as keys;

impl Controller {
    /// Every sandbox, sorted by name.
    pub async fn sandboxes(&self) -> Result<Vec<Sandbox>> {
        let mut all: Vec<Sandbox> = self.load_all(keys::SANDBOXES).await?;
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The sandbox with this id or name.
    pub async fn sandbox(&self, name_or_id: &str) -> Result<Sandbox> {
        Ok(self.sandbox_indexed(name_or_id).await?.0)
    }

    pub(super) async fn sandbox_indexed(&self, name_or_id: &str) -> Result<(Sandbox, u64)> {
        if name_or_id.len() == 64 {
            if let Some(found) = self.load::<Sandbox>(&keys::sandbox(name_or_id)).await? {
                return Ok(found);
            }
        }
        if check_name("sandbox", name_or_id).is_ok() {
            if let Some((id, _)) = self.load::<String>(&keys::sandbox_name(name_or_id)).await? {
                if let Some(found) = self.load::<Sandbox>(&keys::sandbox(&id)).await? {
                    return Ok(found);
                }
            }
        }
        Err(CnmError::NotFound {
            kind: "sandbox",
            name: name_or_id.to_string(),
        })
    }

    /// Records a sandbox whose namespace is at `key`. `owned` says whether Plexus made the
    /// namespace (and will delete it).
    pub async fn create_sandbox(&self, name: &str, key: &str, owned: bool) -> Result<Sandbox> {
        self.create_sandbox_then(name, key, owned, false).await
    }

    /// [`create_sandbox`](Self::create_sandbox) for a caller that connects the sandbox right
    /// after (`connects`): the record is then written relaxed ([`Txn::relaxed`]) and made
    /// durable by the connect's own record, one disk flush fewer. A crash in between loses
    /// the sandbox whole (start-up reconciliation removes a namespace Plexus made for it);
    /// a caller whose connect fails deletes the sandbox, as it would anyway.
    pub async fn create_sandbox_then(
        &self,
        name: &str,
        key: &str,
        owned: bool,
        connects: bool,
    ) -> Result<Sandbox> {
        let _op = self.ops.lock().await;
        check_name("sandbox", name)?;
        if key.is_empty() {
            return Err(CnmError::invalid(
                "netns",
                "the namespace path must not be empty",
            ));
        }
        let sandbox = Sandbox {
            id: new_id()?,
            name: name.to_string(),
            key: key.to_string(),
            owned_netns: owned,
            endpoints: Vec::new(),
        };
        let mut txn = Txn::new()
            .compare_absent(keys::sandbox_name(name))
            .put(keys::sandbox(&sandbox.id), encode(&sandbox))
            .put(keys::sandbox_name(name), encode(&sandbox.id));
        txn.relaxed = connects;
        match self.store.txn(txn).await {
            Ok(_) => Ok(sandbox),
            Err(KvError::TxnConflict { .. }) => Err(CnmError::Exists {
                kind: "sandbox",
                name: name.to_string(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Disconnects a sandbox from every network and forgets it; returns it so the caller can
    /// delete the namespace if it was Plexus's.
    pub async fn delete_sandbox(&self, name_or_id: &str) -> Result<Sandbox> {
        let _op = self.ops.lock().await;
        let (sandbox, _) = self.sandbox_indexed(name_or_id).await?;
        for ep_id in sandbox.endpoints.clone().iter().rev() {
            let endpoint = self.find_endpoint(ep_id).await?;
            if let Some(endpoint) = endpoint {
                // The sandbox's own removal below is durable and comes after.
                self.disconnect_locked(&sandbox.id, &endpoint, true).await?;
            }
        }
        let (_, index) = self.sandbox_indexed(&sandbox.id).await?;
        self.store
            .txn(
                Txn::new()
                    .compare_index(keys::sandbox(&sandbox.id), index)
                    .delete(keys::sandbox(&sandbox.id))
                    .delete(keys::sandbox_name(&sandbox.name)),
            )
            .await?;
        Ok(sandbox)
    }

    /// The sandbox's endpoint on a network, read through the sandbox's own endpoint list so
    /// the cost does not grow with the number of endpoints on the network.
    pub(super) async fn endpoint_of(
        &self,
        sandbox: &Sandbox,
        network: &Network,
    ) -> Result<Option<Endpoint>> {
        for id in &sandbox.endpoints {
            if let Some((ep, _)) = self
                .load::<Endpoint>(&keys::endpoint_in(network.scope, &network.id, id))
                .await?
            {
                return Ok(Some(ep));
            }
        }
        Ok(None)
    }

    pub(super) async fn find_endpoint(&self, endpoint_id: &str) -> Result<Option<Endpoint>> {
        for network in self.networks().await? {
            if let Some((ep, _)) = self
                .load::<Endpoint>(&keys::endpoint_in(network.scope, &network.id, endpoint_id))
                .await?
            {
                return Ok(Some(ep));
            }
        }
        Ok(None)
    }

    /// The endpoints of `sandbox`, each with its network, in the sandbox's order. Reads only
    /// those endpoints (not every endpoint of every network), so its cost does not grow with
    /// the number of other sandboxes.
    pub async fn sandbox_endpoints(&self, sandbox: &Sandbox) -> Result<Vec<(Endpoint, Network)>> {
        if sandbox.endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let networks = self.networks().await?;
        let mut out = Vec::with_capacity(sandbox.endpoints.len());
        for id in &sandbox.endpoints {
            for network in &networks {
                if let Some((ep, _)) = self
                    .load::<Endpoint>(&keys::endpoint_in(network.scope, &network.id, id))
                    .await?
                {
                    out.push((ep, network.clone()));
                    break;
                }
            }
        }
        Ok(out)
    }
}
