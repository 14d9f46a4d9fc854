//! VXLAN ids, unique in the cluster: each taken id is a key of the cluster store
//! (`plexus/v1/global/overlay/vni/<id>`, the network's id as value), created with
//! compare-and-swap, so two hosts (or two calls) never take the same one.

use std::collections::BTreeSet;
use std::sync::Arc;

use plexus_cnm::DriverError;
use plexus_kv::{KvError, PutOptions, Store};
use plexus_sys::rtnl::MAX_VNI;

use super::options::VXLANID_LIST;

/// Where taken VXLAN ids are kept in the cluster store.
pub const VNI_DIR: &str = "plexus/v1/global/overlay/vni";

/// The first id taken when none is asked for (swarm's range starts there; the ids below are
/// left to `vxlanid_list`).
pub const FIRST_AUTO_VNI: u32 = 4096;

/// The key of a taken id.
pub fn vni_key(vni: u32) -> String {
    format!("{VNI_DIR}/{vni}")
}

fn store_err(what: &str) -> impl FnOnce(KvError) -> DriverError + '_ {
    move |e| DriverError::Failed(format!("cluster store, {what}: {e}"))
}

/// Takes `requested` for `network_id`, or the lowest free id from [`FIRST_AUTO_VNI`] on. An id
/// the network holds already is given again (a retried allocation); an id another network
/// holds is a [`DriverError::Conflict`] naming the option.
pub(super) async fn allocate(
    store: &Arc<dyn Store>,
    network_id: &str,
    requested: Option<u32>,
) -> Result<u32, DriverError> {
    if let Some(vni) = requested {
        return match take(store, network_id, vni).await? {
            true => Ok(vni),
            false => Err(DriverError::Conflict(format!(
                "option {VXLANID_LIST}={vni:?}: VXLAN id {vni} is already used by another network"
            ))),
        };
    }
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    // Each round lists what is taken and tries the free ids in order; an id someone else
    // took meanwhile fails its compare-and-swap and the next one is tried.
    for _round in 0..8 {
        let listed = store
            .list(VNI_DIR)
            .await
            .or_else(|e| match e {
                KvError::KeyNotFound { .. } => Ok(Vec::new()),
                e => Err(e),
            })
            .map_err(store_err("list VXLAN ids"))?;
        for pair in &listed {
            if let Some(vni) = pair
                .key
                .rsplit('/')
                .next()
                .and_then(|s| s.parse::<u32>().ok())
            {
                if pair.value == network_id.as_bytes() {
                    return Ok(vni);
                }
                taken.insert(vni);
            }
        }
        let mut candidate = FIRST_AUTO_VNI;
        for _try in 0..64 {
            while taken.contains(&candidate) {
                candidate += 1;
            }
            if candidate > MAX_VNI {
                return Err(DriverError::Conflict(
                    "no VXLAN id is free in the cluster".to_string(),
                ));
            }
            if take(store, network_id, candidate).await? {
                return Ok(candidate);
            }
            taken.insert(candidate);
        }
    }
    Err(DriverError::Failed(
        "cluster store: could not take a VXLAN id (too many concurrent allocations)".to_string(),
    ))
}

/// Tries to take `vni` for `network_id`: `true` if it is the network's now.
async fn take(store: &Arc<dyn Store>, network_id: &str, vni: u32) -> Result<bool, DriverError> {
    let key = vni_key(vni);
    match store
        .atomic_put(&key, network_id.as_bytes(), None, PutOptions::default())
        .await
    {
        Ok(_) => {
            tracing::debug!(network = %network_id, vni, "VXLAN id taken");
            Ok(true)
        }
        Err(KvError::KeyExists { .. }) => {
            let holder = store.get(&key).await;
            Ok(matches!(holder, Ok(p) if p.value == network_id.as_bytes()))
        }
        Err(e) => Err(store_err("take a VXLAN id")(e)),
    }
}

/// Gives `vni` back if `network_id` holds it; anything else (gone, another network's) is left.
pub(super) async fn free(
    store: &Arc<dyn Store>,
    network_id: &str,
    vni: u32,
) -> Result<(), DriverError> {
    let key = vni_key(vni);
    match store.get(&key).await {
        Ok(pair) if pair.value == network_id.as_bytes() => {
            match store.atomic_delete(&key, &pair).await {
                Ok(()) | Err(KvError::KeyNotFound { .. }) => Ok(()),
                Err(e) => Err(store_err("free a VXLAN id")(e)),
            }
        }
        Ok(_) | Err(KvError::KeyNotFound { .. }) => Ok(()),
        Err(e) => Err(store_err("free a VXLAN id")(e)),
    }
}
