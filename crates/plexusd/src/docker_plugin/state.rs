//! The plugin's records in the local store: what dockerd holds of Plexus's IPAM, and which
//! Plexus network, addresses, ports and sandbox each dockerd network and endpoint is.
//!
//! ```text
//! plexus/v1/docker-plugin/pool/<pool id, escaped>             PoolRecord
//! plexus/v1/docker-plugin/address/<pool id, escaped>/<addr>   AddressRecord
//! plexus/v1/docker-plugin/network/<dockerd's network id>      NetworkRecord
//! plexus/v1/docker-plugin/endpoint/<dockerd's endpoint id>    EndpointRecord
//! ```
//!
//! A pool or address record is written after the IPAM allocation and deleted before the
//! release: start-up reconciliation keeps the allocations the records hold
//! ([`held_allocations`]) and releases the rest, so a crash in between leaks nothing and never
//! takes back what dockerd was given.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use plexus_cnm::PortBinding;
use plexus_kv::{KvError, PutOptions, Store};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Refusal;

/// The root of the plugin's records.
pub const ROOT: &str = "plexus/v1/docker-plugin";

/// A pool dockerd asked for (`RequestPool`), a Plexus IPAM pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    /// The IPAM pool id (what dockerd was answered).
    pub pool_id: String,
    /// The subnet.
    pub subnet: IpNet,
    /// IPv6.
    pub v6: bool,
}

/// An address dockerd holds (`RequestAddress`): a gateway, an aux address or an endpoint's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRecord {
    /// The pool.
    pub pool_id: String,
    /// The address with the pool's prefix.
    pub address: IpNet,
    /// Asked as the network's gateway.
    pub gateway: bool,
}

/// A dockerd network and its Plexus network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// dockerd's network id.
    pub docker_id: String,
    /// The Plexus network's id.
    pub plexus_id: String,
    /// The Plexus network's name.
    pub plexus_name: String,
}

/// A dockerd endpoint: its settings until the join, then its Plexus sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// dockerd's endpoint id.
    pub docker_id: String,
    /// dockerd's network id.
    pub network: String,
    /// The IPv4 address dockerd gave it.
    pub ipv4: Option<IpNet>,
    /// The IPv6 address dockerd gave it.
    pub ipv6: Option<IpNet>,
    /// Its MAC address.
    pub mac: String,
    /// Its published ports (`-p`), from `CreateEndpoint`'s options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortBinding>,
    /// The Plexus sandbox it joined, from `Join` to `Leave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// The container's namespace (`Join`'s `SandboxKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The controller connected it (the namespace existed); until then the join waits for
    /// dockerd to mount the namespace.
    #[serde(default)]
    pub attached: bool,
}

/// A pool id as one key segment.
fn esc(pool_id: &str) -> String {
    pool_id.replace('%', "%25").replace('/', "%2F")
}

/// The key of a pool record.
pub fn pool_key(pool_id: &str) -> String {
    format!("{ROOT}/pool/{}", esc(pool_id))
}

/// The directory of a pool's address records.
pub fn addresses_dir(pool_id: &str) -> String {
    format!("{ROOT}/address/{}", esc(pool_id))
}

/// The key of an address record.
pub fn address_key(pool_id: &str, addr: IpAddr) -> String {
    format!("{}/{addr}", addresses_dir(pool_id))
}

/// The key of a network record.
pub fn network_key(docker_id: &str) -> String {
    format!("{ROOT}/network/{docker_id}")
}

/// The key of an endpoint record.
pub fn endpoint_key(docker_id: &str) -> String {
    format!("{ROOT}/endpoint/{docker_id}")
}

/// The records, over the local store.
#[derive(Clone)]
pub struct PluginState {
    store: Arc<dyn Store>,
}

impl PluginState {
    /// Records in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The record at `key`, if any.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Refusal> {
        match self.store.get(key).await {
            Ok(pair) => serde_json::from_slice(&pair.value)
                .map(Some)
                .map_err(|e| Refusal(format!("the store: corrupt record {key}: {e}"))),
            Err(KvError::KeyNotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every record under `dir`.
    pub async fn list<T: DeserializeOwned>(&self, dir: &str) -> Result<Vec<T>, Refusal> {
        self.store
            .list(dir)
            .await?
            .into_iter()
            .map(|pair| {
                serde_json::from_slice(&pair.value)
                    .map_err(|e| Refusal(format!("the store: corrupt record {}: {e}", pair.key)))
            })
            .collect()
    }

    /// Writes a record, durably.
    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), Refusal> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Refusal(format!("the store: encoding {key}: {e}")))?;
        self.store.put(key, &bytes, PutOptions::default()).await?;
        Ok(())
    }

    /// Deletes a record (none is fine).
    pub async fn delete(&self, key: &str) -> Result<(), Refusal> {
        match self.store.delete(key).await {
            Ok(()) | Err(KvError::KeyNotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The pool record of `subnet`, if dockerd holds such a pool.
    pub async fn pool_of(&self, subnet: &IpNet) -> Result<Option<PoolRecord>, Refusal> {
        Ok(self
            .list::<PoolRecord>(&format!("{ROOT}/pool"))
            .await?
            .into_iter()
            .find(|p| p.subnet == *subnet))
    }
}

/// What dockerd holds of Plexus's IPAM, by pool id: every pool it asked for, with every
/// address it holds there. Start-up reconciliation keeps these.
pub async fn held_allocations(
    store: &Arc<dyn Store>,
) -> Result<BTreeMap<String, Vec<IpAddr>>, Refusal> {
    let state = PluginState::new(store.clone());
    let mut held: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for p in state.list::<PoolRecord>(&format!("{ROOT}/pool")).await? {
        held.entry(p.pool_id).or_default();
    }
    for a in state
        .list::<AddressRecord>(&format!("{ROOT}/address"))
        .await?
    {
        held.entry(a.pool_id).or_default().push(a.address.addr());
    }
    Ok(held)
}
