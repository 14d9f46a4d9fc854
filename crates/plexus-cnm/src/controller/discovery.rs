//! What the cluster's control plane tells the drivers: nodes that joined or left
//! (libnetwork's `DiscoverNew`/`DiscoverDelete`) and changed entries of a network's tables
//! (`EventNotify`). The gossip layer calls these; the controller routes them. With a cluster
//! store, [`Controller::follow_nodes`] turns the hosts' records there into the same calls, as
//! libnetwork's kv discovery did.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use plexus_kv::KvPair;

use super::{driver_err, Controller};
use crate::driver::{NodeDiscovery, TableEvent};
use crate::error::{CnmError, Result};
use crate::model::Node;
use crate::store_layout as keys;

/// How long to wait before watching the cluster store again after the watch broke.
const REWATCH_AFTER: Duration = Duration::from_secs(1);

fn decode_nodes(pairs: &[KvPair]) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    for pair in pairs {
        match serde_json::from_slice::<Node>(&pair.value) {
            Ok(node) => {
                out.insert(node.id.clone(), node);
            }
            Err(e) => {
                tracing::warn!(key = %pair.key, error = %e, "a host record in the cluster store is not readable; ignored")
            }
        }
    }
    out
}

impl Controller {
    /// A node joined the cluster: every driver hears of it. The first driver that fails
    /// stops the round with its error (the others that heard keep what they learnt; the
    /// gossip layer's next announcement repeats it).
    pub async fn node_joined(&self, node: &NodeDiscovery) -> Result<()> {
        for driver in self.all_drivers() {
            driver
                .discover_new(node)
                .await
                .map_err(|e| driver_err(driver.as_ref(), e))?;
        }
        Ok(())
    }

    /// A node left the cluster: every driver hears of it.
    pub async fn node_left(&self, node: &NodeDiscovery) -> Result<()> {
        for driver in self.all_drivers() {
            driver
                .discover_delete(node)
                .await
                .map_err(|e| driver_err(driver.as_ref(), e))?;
        }
        Ok(())
    }

    /// The cluster's hosts, as their records in the cluster store say (empty without one).
    pub async fn nodes(&self) -> Result<Vec<Node>> {
        let Some(store) = self.store.cluster_store() else {
            return Ok(Vec::new());
        };
        let pairs = store.list(keys::NODES).await.map_err(CnmError::from)?;
        Ok(decode_nodes(&pairs).into_values().collect())
    }

    /// Follows the hosts' records in the cluster store and tells every driver of each host
    /// that appears ([`node_joined`](Self::node_joined)) or whose record goes
    /// ([`node_left`](Self::node_left): it expired, the host stopped refreshing it), or
    /// whose advertised address changes (left, then joined). Hosts without an advertised
    /// address have no data-plane address to give and are skipped. Runs until the process
    /// ends; when the cluster store is away it keeps what it knew (a host is forgotten only
    /// when its record is seen gone) and watches again. Returns at once without a cluster
    /// store.
    pub async fn follow_nodes(&self) {
        let Some(store) = self.store.cluster_store().cloned() else {
            return;
        };
        let mut known: BTreeMap<String, Node> = BTreeMap::new();
        loop {
            let mut watch = match store.watch_tree(keys::NODES).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the cluster's hosts; trying again");
                    tokio::time::sleep(REWATCH_AFTER).await;
                    continue;
                }
            };
            while let Some(item) = watch.next().await {
                match item {
                    Ok(pairs) => {
                        let now = decode_nodes(&pairs);
                        self.apply_nodes(&known, &now).await;
                        known = now;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "watching the cluster's hosts broke; watching again");
                        break;
                    }
                }
            }
            tokio::time::sleep(REWATCH_AFTER).await;
        }
    }

    /// Tells the drivers what changed from `before` to `after`.
    async fn apply_nodes(&self, before: &BTreeMap<String, Node>, after: &BTreeMap<String, Node>) {
        let discovery = |node: &Node| {
            node.advertise.map(|a| NodeDiscovery {
                address: a.ip(),
                self_node: node.id == self.config.host_id,
            })
        };
        for (id, old) in before {
            let gone = after
                .get(id)
                .is_none_or(|new| new.advertise != old.advertise);
            if let (true, Some(d)) = (gone, discovery(old)) {
                tracing::info!(host = %id, address = %d.address, "host left the cluster");
                if let Err(e) = self.node_left(&d).await {
                    tracing::warn!(host = %id, error = %e, "a driver could not forget a host");
                }
            }
        }
        for (id, new) in after {
            let came = before
                .get(id)
                .is_none_or(|old| old.advertise != new.advertise);
            if let (true, Some(d)) = (came, discovery(new)) {
                tracing::info!(host = %id, address = %d.address, "host joined the cluster");
                if let Err(e) = self.node_joined(&d).await {
                    tracing::warn!(host = %id, error = %e, "a driver could not learn of a host");
                }
            }
        }
    }

    /// An entry of a network's control-plane table changed: the network's driver hears of
    /// it. An unknown network is an error naming it.
    pub async fn table_event(&self, event: &TableEvent) -> Result<()> {
        let network = self.network(&event.network_id).await?;
        let driver = self.driver(&network.driver).await?;
        driver
            .event_notify(event)
            .await
            .map_err(|e| driver_err(driver.as_ref(), e))
    }
}
