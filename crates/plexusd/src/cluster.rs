//! The daemon's datastores: its own (local) store, and the cluster store it shares with other
//! hosts (`--cluster-store`), as dockerd's classic flags set them up.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use plexus_cnm::store_layout;
use plexus_kv::{PutOptions, Store, StoreUrl};

/// The gossip port a host advertises when `--cluster-advertise` names none (libnetwork's).
pub const DEFAULT_ADVERTISE_PORT: u16 = 7946;

/// Backends that several hosts can share; an embedded store cannot.
fn is_shared(url: &str) -> Result<bool> {
    let parsed = StoreUrl::parse(url)?;
    Ok(matches!(
        parsed.scheme.as_str(),
        "etcd" | "zk" | "zookeeper"
    ))
}

/// Opens the daemon's own store. A shared backend (`--store etcd://…` given to several
/// hosts) is seen through this host's directory (`plexus/hosts/<host id>`), so no daemon
/// ever reads another's local records as its own, and reconciles or frees them.
pub async fn open_local(url: &str, host_id: &str) -> Result<Arc<dyn Store>> {
    let store = plexus_kv::open(url, plexus_kv::OpenOptions::default())
        .await
        .with_context(|| format!("opening store {url}"))?;
    if is_shared(url)? {
        return plexus_kv::prefixed(store, &format!("plexus/hosts/{host_id}"))
            .with_context(|| format!("opening store {url}"));
    }
    Ok(store)
}

/// Opens the cluster store and checks that it answers; the error names the URL and the flag.
pub async fn open_cluster(url: &str) -> Result<Arc<dyn Store>> {
    let parsed =
        StoreUrl::parse(url).with_context(|| format!("invalid --cluster-store {url:?}"))?;
    if !is_shared(url)? {
        bail!(
            "invalid --cluster-store {url:?}: a {} store cannot be shared by hosts; use etcd:// or zk://",
            parsed.scheme
        );
    }
    let store = plexus_kv::open(url, plexus_kv::OpenOptions::default())
        .await
        .with_context(|| format!("--cluster-store {url}: cannot reach it"))?;
    store
        .exists(store_layout::GLOBAL_ROOT)
        .await
        .with_context(|| format!("--cluster-store {url}: it does not answer"))?;
    Ok(store)
}

/// Parses `--cluster-advertise ADDR[:PORT]` (an IP address, IPv6 in brackets with a port).
pub fn parse_advertise(value: &str) -> Result<SocketAddr> {
    let bad = |why: &str| anyhow!("invalid --cluster-advertise {value:?}: {why}");
    if let Ok(addr) = value.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(bad("the port must not be 0"));
        }
        return Ok(addr);
    }
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, DEFAULT_ADVERTISE_PORT));
    }
    if let Some((host, port)) = value.rsplit_once(':') {
        if host.parse::<IpAddr>().is_ok() {
            return Err(bad(&format!(
                "the port {port:?} is not a number from 1 to 65535"
            )));
        }
    }
    Err(bad(
        "expected an IP address with an optional port, such as 192.0.2.10 or 192.0.2.10:7946",
    ))
}

/// This host's record in the cluster store (`plexus/v1/global/node/<host id>`), so other
/// hosts and `GET /info` know it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    /// The host's id.
    #[serde(rename = "ID")]
    pub id: String,
    /// The host's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// `--cluster-advertise`, if given.
    #[serde(rename = "Advertise")]
    pub advertise: Option<SocketAddr>,
}

/// Writes this host's record in the cluster store.
pub async fn announce(cluster: &Arc<dyn Store>, node: &NodeRecord) -> Result<()> {
    let value = serde_json::to_vec(node).context("encoding this host's record")?;
    cluster
        .put(&store_layout::node(&node.id), &value, PutOptions::default())
        .await
        .with_context(|| format!("writing this host's record to {}", cluster.url()))?;
    Ok(())
}

/// The host's name (`/proc/sys/kernel/hostname`), or its id when that cannot be read.
pub fn hostname(host_id: &str) -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| host_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_forms() {
        assert_eq!(
            parse_advertise("192.0.2.1").unwrap(),
            "192.0.2.1:7946".parse().unwrap()
        );
        assert_eq!(
            parse_advertise("192.0.2.1:2376").unwrap(),
            "192.0.2.1:2376".parse().unwrap()
        );
        assert_eq!(
            parse_advertise("[2001:db8::1]:2376").unwrap(),
            "[2001:db8::1]:2376".parse().unwrap()
        );
        for bad in ["", "eth0", "192.0.2.1:x", "192.0.2.1:0", "300.1.1.1"] {
            let e = parse_advertise(bad).unwrap_err().to_string();
            assert!(e.contains("--cluster-advertise"), "{bad}: {e}");
        }
    }
}
