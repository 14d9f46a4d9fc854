//! `plexus cluster ls|inspect|key rotate`: the API's [`ClusterService`] over this host's
//! gossip. Hosts are the runtime's members, named by their records in the cluster store.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use plexus_api::{ApiError, ClusterService};
use plexus_api_types::{ClusterHost, ClusterInspect, GossipStats, KeyringInfo};
use plexus_cnm::{store_layout, Node};

use super::metrics::state_label;
use super::{failure_detection_bound, keys, Gossip};

/// The API's view of the gossip.
#[derive(Debug, Clone)]
pub struct GossipService {
    gossip: Arc<Gossip>,
}

impl GossipService {
    /// The service of `gossip`.
    pub fn new(gossip: Arc<Gossip>) -> Self {
        Self { gossip }
    }

    async fn records(&self) -> BTreeMap<SocketAddr, Node> {
        match self.gossip.store.list(store_layout::NODES).await {
            Ok(pairs) => pairs
                .iter()
                .filter_map(|p| serde_json::from_slice::<Node>(&p.value).ok())
                .filter_map(|n| n.advertise.map(|a| (a, n)))
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "host records unavailable; hosts shown by address");
                BTreeMap::new()
            }
        }
    }

    fn keyring_info(&self) -> KeyringInfo {
        let doc = self.gossip.keyring();
        KeyringInfo {
            version: doc.version,
            primary: doc.primary.clone(),
            keys: doc.ids(),
        }
    }
}

#[async_trait]
impl ClusterService for GossipService {
    async fn hosts(&self) -> Result<Vec<ClusterHost>, ApiError> {
        let handle = &self.gossip.handle;
        let me = handle.addr();
        let records = self.records().await;
        let networks = handle.networks();
        let mut members = handle.members();
        if !members.iter().any(|m| m.addr == me) {
            members.push(plexus_gossip::MemberInfo {
                addr: me,
                incarnation: 0,
                state: plexus_gossip::MemberState::Alive,
            });
        }
        let mut out: Vec<ClusterHost> = members
            .into_iter()
            .map(|m| {
                let record = records.get(&m.addr);
                ClusterHost {
                    id: record.map(|r| r.id.clone()).unwrap_or_default(),
                    name: record
                        .map(|r| r.name.clone())
                        .unwrap_or_else(|| m.addr.to_string()),
                    address: m.addr.to_string(),
                    state: state_label(m.state).to_string(),
                    networks: networks
                        .iter()
                        .filter(|n| n.nodes.contains(&m.addr) || (m.addr == me && n.local))
                        .map(|n| n.name.clone())
                        .collect(),
                    self_host: m.addr == me,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.name, &a.address).cmp(&(&b.name, &b.address)));
        Ok(out)
    }

    async fn inspect(&self, host: Option<&str>) -> Result<ClusterInspect, ApiError> {
        let members = self.hosts().await?;
        let chosen = match host {
            None => members.iter().find(|h| h.self_host),
            Some(q) => members.iter().find(|h| {
                let ip = h
                    .address
                    .parse::<SocketAddr>()
                    .ok()
                    .map(|a| a.ip().to_string());
                h.id == q || h.name == q || h.address == q || ip.as_deref() == Some(q)
            }),
        };
        let Some(chosen) = chosen.cloned() else {
            return Err(ApiError::not_found(format!(
                "no host {:?} in the cluster (by id, name or address)",
                host.unwrap_or("self")
            )));
        };
        let handle = &self.gossip.handle;
        let s = handle.stats();
        let table_entries = handle
            .networks()
            .iter()
            .filter(|n| n.local)
            .map(|n| {
                handle
                    .table_dump(&n.name)
                    .iter()
                    .filter(|e| e.visible && !e.deleted)
                    .count() as u64
            })
            .sum();
        let stats = GossipStats {
            messages_sent: s.tx_datagrams + s.tx_streams,
            messages_received: s.rx_datagrams + s.rx_streams,
            bytes_sent: s.tx_bytes,
            bytes_received: s.rx_bytes,
            decryption_failures: s.dropped_unauthenticated,
            dropped_replay: s.dropped_replay,
            dropped_other: s.dropped_oversize + s.dropped_malformed,
            table_entries,
        };
        let bound = failure_detection_bound(&self.gossip.config, members.len());
        Ok(ClusterInspect {
            host: chosen,
            members,
            keyring: self.keyring_info(),
            stats,
            failure_detection_ms: bound.as_millis() as u64,
        })
    }

    async fn rotate_key(&self) -> Result<KeyringInfo, ApiError> {
        let gossip = self.gossip.clone();
        let live = move || gossip.live();
        let done = keys::rotate(&self.gossip.store, &live, keys::ROTATE_STEP_TIMEOUT)
            .await
            .map_err(|e| ApiError::internal(format!("{e:#}")))?;
        // This host applies the last step through its watch; wait for it briefly so the
        // answer shows the new ring.
        let deadline = tokio::time::Instant::now() + keys::ROTATE_STEP_TIMEOUT;
        loop {
            let info = self.keyring_info();
            if info.version >= done.version || tokio::time::Instant::now() >= deadline {
                return Ok(info);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
