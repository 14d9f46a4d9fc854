//! Where the model's records live, as libnetwork splits them: a *local* datastore (this host's
//! own: local-scope networks, their endpoints, sandboxes) and a *global* one shared by the
//! hosts of a cluster (global-scope networks and their endpoints), chosen by key
//! ([`store_layout::GLOBAL_ROOT`](crate::store_layout::GLOBAL_ROOT)).
//!
//! Local records never reach the cluster store. While the cluster store is away, local
//! operations go on: every cluster call is bounded by a timeout, and listings skip the
//! cluster's records with a warning instead of failing.

use std::sync::Arc;
use std::time::Duration;

use plexus_kv::{KvError, KvPair, Store, Txn};

use crate::store_layout::GLOBAL_ROOT;

/// How long a cluster store call may take before it counts as unavailable.
pub const DEFAULT_CLUSTER_TIMEOUT: Duration = Duration::from_secs(3);

/// The local store and, on a host that is part of a cluster, the cluster store.
#[derive(Clone)]
pub struct Datastore {
    local: Arc<dyn Store>,
    cluster: Option<Arc<dyn Store>>,
    cluster_timeout: Duration,
}

/// Whether `key` (a key or a directory) names a global-scope record.
pub fn is_global(key: &str) -> bool {
    let key = key.strip_prefix('/').unwrap_or(key);
    key == GLOBAL_ROOT
        || key
            .strip_prefix(GLOBAL_ROOT)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl Datastore {
    /// A host with only its local store.
    pub fn local(local: Arc<dyn Store>) -> Self {
        Self {
            local,
            cluster: None,
            cluster_timeout: DEFAULT_CLUSTER_TIMEOUT,
        }
    }

    /// Adds the cluster store.
    pub fn with_cluster(mut self, cluster: Arc<dyn Store>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Bounds every cluster store call by `timeout`.
    pub fn with_cluster_timeout(mut self, timeout: Duration) -> Self {
        self.cluster_timeout = timeout;
        self
    }

    /// Makes the relaxed writes committed so far durable ([`Store::sync`]). Only the local
    /// store takes relaxed writes: the part of a transaction for the cluster store is
    /// always committed durably.
    pub async fn sync(&self) -> Result<(), KvError> {
        self.local.sync().await
    }

    /// The local store.
    pub fn local_store(&self) -> &Arc<dyn Store> {
        &self.local
    }

    /// The cluster store, if this host has one.
    pub fn cluster_store(&self) -> Option<&Arc<dyn Store>> {
        self.cluster.as_ref()
    }

    fn cluster_or_err(&self, key: &str) -> Result<&Arc<dyn Store>, KvError> {
        self.cluster.as_ref().ok_or_else(|| KvError::Unavailable {
            url: "cluster store".into(),
            reason: format!(
                "{key:?} is a global-scope record and this host has no cluster store (--cluster-store)"
            ),
        })
    }

    async fn bounded<T>(
        &self,
        store: &Arc<dyn Store>,
        op: &'static str,
        f: impl std::future::Future<Output = Result<T, KvError>>,
    ) -> Result<T, KvError> {
        match tokio::time::timeout(self.cluster_timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(KvError::Timeout {
                url: store.url().to_string(),
                op,
                after: self.cluster_timeout,
            }),
        }
    }

    /// Reads a key from the store that holds it.
    pub async fn get(&self, key: &str) -> Result<KvPair, KvError> {
        if is_global(key) {
            let store = self.cluster_or_err(key)?;
            self.bounded(store, "get", store.get(key)).await
        } else {
            self.local.get(key).await
        }
    }

    /// Lists a directory of the store that holds it.
    pub async fn list(&self, dir: &str) -> Result<Vec<KvPair>, KvError> {
        if is_global(dir) {
            let store = self.cluster_or_err(dir)?;
            self.bounded(store, "list", store.list(dir)).await
        } else {
            self.local.list(dir).await
        }
    }

    /// Lists a global directory, or nothing when this host has no cluster store; when the
    /// cluster store does not answer, logs it and returns nothing, so local operations go on.
    pub async fn list_global_lenient(&self, dir: &str) -> Vec<KvPair> {
        let Some(store) = &self.cluster else {
            return Vec::new();
        };
        match self.bounded(store, "list", store.list(dir)).await {
            Ok(pairs) => pairs,
            Err(e) => {
                tracing::warn!(dir, error = %e, "cluster store unavailable: global records left out");
                Vec::new()
            }
        }
    }

    /// Whether the local store answers: the outcome of one read, bounded by the cluster
    /// timeout (a shared local backend, etcd or ZooKeeper, can be away too).
    pub async fn local_health(&self) -> Result<(), KvError> {
        self.bounded(&self.local, "exists", self.local.exists(GLOBAL_ROOT))
            .await
            .map(|_| ())
    }

    /// Whether the cluster store answers: `None` without one, else the outcome of one read.
    pub async fn cluster_health(&self) -> Option<Result<(), KvError>> {
        let store = self.cluster.as_ref()?;
        Some(
            self.bounded(store, "exists", store.exists(GLOBAL_ROOT))
                .await
                .map(|_| ()),
        )
    }

    /// Applies a transaction. One whose keys are all local or all global is one transaction
    /// of that store. One that spans both (an endpoint of a global network recorded in its
    /// local sandbox) is two: the cluster part first, then the local part; if the local part
    /// fails, the cluster part stays, and start-up reconciliation rolls back this host's
    /// endpoints that no sandbox lists (`Controller::reconcile`).
    pub async fn txn(&self, txn: Txn) -> Result<Vec<KvPair>, KvError> {
        let global = |k: &str| is_global(k);
        let any_global =
            txn.compares.iter().any(|c| global(c.key())) || txn.ops.iter().any(|o| global(o.key()));
        if !any_global {
            return self.local.txn(txn).await;
        }
        let all_global =
            txn.compares.iter().all(|c| global(c.key())) && txn.ops.iter().all(|o| global(o.key()));
        let store = self.cluster_or_err(
            txn.ops
                .iter()
                .map(|o| o.key())
                .find(|k| global(k))
                .unwrap_or(GLOBAL_ROOT),
        )?;
        if all_global {
            return self.bounded(store, "txn", store.txn(txn)).await;
        }
        let (mut cluster_part, mut local_part) = (Txn::new(), Txn::new());
        local_part.relaxed = txn.relaxed;
        for c in txn.compares {
            if global(c.key()) {
                cluster_part.compares.push(c);
            } else {
                local_part.compares.push(c);
            }
        }
        for o in txn.ops {
            if global(o.key()) {
                cluster_part.ops.push(o);
            } else {
                local_part.ops.push(o);
            }
        }
        let mut written = self.bounded(store, "txn", store.txn(cluster_part)).await?;
        written.extend(self.local.txn(local_part).await?);
        Ok(written)
    }

    /// Closes both stores.
    pub async fn close(&self) -> Result<(), KvError> {
        if let Some(c) = &self.cluster {
            c.close().await?;
        }
        self.local.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_root() {
        assert!(is_global("plexus/v1/global"));
        assert!(is_global("plexus/v1/global/network/x"));
        assert!(is_global("/plexus/v1/global/network"));
        assert!(!is_global("plexus/v1/globalx/network"));
        assert!(!is_global("plexus/v1/network/x"));
    }

    #[tokio::test]
    async fn spanning_txn_writes_each_part_to_its_store() {
        let local: Arc<dyn Store> = Arc::new(plexus_kv::LocalStore::memory());
        let cluster: Arc<dyn Store> = Arc::new(plexus_kv::LocalStore::memory());
        let ds = Datastore::local(local.clone()).with_cluster(cluster.clone());
        ds.txn(
            Txn::new()
                .put("plexus/v1/global/endpoint/n/e", b"g".to_vec())
                .put("plexus/v1/sandbox/s", b"l".to_vec()),
        )
        .await
        .unwrap();
        assert_eq!(
            cluster
                .get("plexus/v1/global/endpoint/n/e")
                .await
                .unwrap()
                .value,
            b"g"
        );
        assert!(!cluster.exists("plexus/v1/sandbox/s").await.unwrap());
        assert_eq!(local.get("plexus/v1/sandbox/s").await.unwrap().value, b"l");
        assert!(!local.exists("plexus/v1/global/endpoint/n/e").await.unwrap());
    }

    #[tokio::test]
    async fn global_keys_without_a_cluster_store_are_refused() {
        let ds = Datastore::local(Arc::new(plexus_kv::LocalStore::memory()));
        let err = ds
            .txn(Txn::new().put("plexus/v1/global/network/x", b"{}".to_vec()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("--cluster-store"), "{err}");
        assert!(ds
            .list_global_lenient("plexus/v1/global/network")
            .await
            .is_empty());
    }
}
