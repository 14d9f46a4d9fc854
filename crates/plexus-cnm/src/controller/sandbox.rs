//! Sandboxes: records of network namespaces, and the lookups through their endpoint lists.

use plexus_kv::{KvError, Txn};

use super::events::{Event, EventAction};
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

    /// Records a sandbox whose namespace the caller made or found at `key`, with no
    /// networks; `owned` says whether Plexus made the namespace (and will delete it). Most
    /// callers want [`create_sandbox`](Self::create_sandbox), which does the namespace and
    /// the networks too.
    pub async fn add_sandbox(&self, name: &str, key: &str, owned: bool) -> Result<Sandbox> {
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
            hostname: None,
            dns: Vec::new(),
            dns_search: Vec::new(),
            dns_options: Vec::new(),
            service: None,
            labels: Default::default(),
            external_key: false,
        };
        let txn = Txn::new()
            .compare_absent(keys::sandbox_name(name))
            .put(keys::sandbox(&sandbox.id), encode(&sandbox))
            .put(keys::sandbox_name(name), encode(&sandbox.id));
        let event = Event::sandbox(EventAction::Create, &sandbox);
        match self.commit(txn, vec![event]).await {
            Ok(_) => Ok(sandbox),
            Err(CnmError::Store(KvError::TxnConflict { .. })) => Err(CnmError::Exists {
                kind: "sandbox",
                name: name.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    /// Disconnects a sandbox from every network and forgets it, in one store transaction;
    /// returns it so the caller can delete the namespace if it was Plexus's
    /// ([`remove_sandbox`](Self::remove_sandbox) does that too).
    pub async fn delete_sandbox(&self, name_or_id: &str) -> Result<Sandbox> {
        let _op = self.ops.lock().await;
        let (sandbox, _) = self.sandbox_indexed(name_or_id).await?;
        self.delete_sandbox_locked(&sandbox).await?;
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
