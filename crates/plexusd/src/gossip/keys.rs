//! The cluster's gossip keyring, kept in the cluster store at [`KEYRING`]: the first host
//! makes it (compare-and-swap, so two first hosts agree on one), the others read it; every
//! host watches it and applies it to its runtime.
//!
//! A rotation is three writes of the record, each applied by every live host before the next
//! (each host acknowledges the version it applied under [`ACKS`]): the new key is added
//! (received by all, sent by none), then made primary (sent by all, the old one still
//! received), then the old one is removed. No frame is ever sealed with a key some live host
//! cannot open, so none is lost.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use plexus_gossip::{Key, Keyring, MemberState};
use plexus_kv::{KvError, KvPair, PutOptions, Store};
use serde::{Deserialize, Serialize};

/// The keyring's record in the cluster store.
pub const KEYRING: &str = "plexus/v1/global/gossip/keys";
/// Where each host acknowledges the keyring version it applied (`<dir>/<host id>`).
pub const ACKS: &str = "plexus/v1/global/gossip/acks";

/// How long the old key is still accepted after every live host sends with the new one:
/// frames sealed just before the switch may still be on their way (a stream frame's write
/// is bounded by the runtime's 10 s, but a datagram's flight is milliseconds).
pub const REMOVE_GRACE: Duration = Duration::from_secs(2);

/// How long a rotation waits for every live host to apply each step.
pub const ROTATE_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// One key of the keyring.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// A short public id (never derived from the key).
    pub id: String,
    /// The key, 64 hex digits.
    pub key: String,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself, wherever a record is printed.
        f.debug_struct("KeyRecord")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The keyring as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyringDoc {
    /// Bumped by every write.
    pub version: u64,
    /// The id of the key frames are sealed with.
    pub primary: String,
    /// Every key frames are opened with (the primary included).
    pub keys: Vec<KeyRecord>,
}

/// A host's acknowledgement: it applied `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The host's gossip address.
    pub addr: SocketAddr,
    /// The keyring version it runs.
    pub version: u64,
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    use std::io::Read;
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    Ok(b)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random key with a fresh id.
pub fn new_key() -> Result<KeyRecord> {
    Ok(KeyRecord {
        id: hex(&random_bytes::<4>()?),
        key: hex(&random_bytes::<32>()?),
    })
}

impl KeyringDoc {
    /// A keyring of one new key.
    pub fn generate() -> Result<Self> {
        let key = new_key()?;
        Ok(Self {
            version: 1,
            primary: key.id.clone(),
            keys: vec![key],
        })
    }

    /// Decodes and checks a stored record; errors name the key and the field.
    pub fn decode(value: &[u8]) -> Result<Self> {
        let doc: Self = serde_json::from_slice(value)
            .with_context(|| format!("the gossip keyring at {KEYRING} is not readable"))?;
        doc.parsed()?;
        Ok(doc)
    }

    /// The keys, parsed, and the primary one.
    pub fn parsed(&self) -> Result<(Vec<(String, Key)>, Key)> {
        let mut keys = Vec::new();
        for k in &self.keys {
            let key = Keyring::parse_key(&k.key)
                .map_err(|e| anyhow!("gossip keyring {KEYRING}: key {:?}: {e}", k.id))?;
            keys.push((k.id.clone(), key));
        }
        let primary = keys
            .iter()
            .find(|(id, _)| *id == self.primary)
            .map(|(_, k)| *k)
            .ok_or_else(|| {
                anyhow!(
                    "gossip keyring {KEYRING}: field primary {:?} names no key",
                    self.primary
                )
            })?;
        Ok((keys, primary))
    }

    /// A runtime keyring holding these keys, sending with the primary.
    pub fn keyring(&self) -> Result<Keyring> {
        let (keys, primary) = self.parsed()?;
        let mut ring = Keyring::new(primary);
        for (id, k) in keys {
            ring.add(k)
                .map_err(|e| anyhow!("gossip keyring {KEYRING}: key {id:?}: {e}"))?;
        }
        Ok(ring)
    }

    /// The key ids, primary first.
    pub fn ids(&self) -> Vec<String> {
        let mut ids = vec![self.primary.clone()];
        ids.extend(
            self.keys
                .iter()
                .filter(|k| k.id != self.primary)
                .map(|k| k.id.clone()),
        );
        ids
    }
}

/// Reads the cluster's keyring, or makes it if this is the first host (compare-and-swap: of
/// two first hosts, one writes and the other reads what it wrote).
pub async fn load_or_create(store: &Arc<dyn Store>) -> Result<(KeyringDoc, KvPair)> {
    loop {
        match store.get(KEYRING).await {
            Ok(pair) => return Ok((KeyringDoc::decode(&pair.value)?, pair)),
            Err(KvError::KeyNotFound { .. }) => {}
            Err(e) => return Err(e).with_context(|| format!("reading {KEYRING}")),
        }
        let doc = KeyringDoc::generate()?;
        let value = serde_json::to_vec(&doc).context("encoding the gossip keyring")?;
        match store
            .atomic_put(KEYRING, &value, None, PutOptions::default())
            .await
        {
            Ok(pair) => {
                tracing::info!(key = %doc.primary, "made the cluster's gossip keyring");
                return Ok((doc, pair));
            }
            Err(KvError::KeyExists { .. }) => continue,
            Err(e) => return Err(e).with_context(|| format!("writing {KEYRING}")),
        }
    }
}

/// Writes `f(current)` with compare-and-swap, again on a concurrent change.
async fn update(
    store: &Arc<dyn Store>,
    f: impl Fn(&KeyringDoc) -> Result<Option<KeyringDoc>>,
) -> Result<KeyringDoc> {
    loop {
        let pair = store
            .get(KEYRING)
            .await
            .with_context(|| format!("reading {KEYRING}"))?;
        let doc = KeyringDoc::decode(&pair.value)?;
        let Some(mut next) = f(&doc)? else {
            return Ok(doc);
        };
        next.version = doc.version + 1;
        let value = serde_json::to_vec(&next).context("encoding the gossip keyring")?;
        match store
            .atomic_put(KEYRING, &value, Some(&pair), PutOptions::default())
            .await
        {
            Ok(_) => return Ok(next),
            Err(KvError::KeyModified { .. }) => continue,
            Err(e) => return Err(e).with_context(|| format!("writing {KEYRING}")),
        }
    }
}

/// Records that the host at `addr` runs keyring `version`.
pub async fn ack(
    store: &Arc<dyn Store>,
    host_id: &str,
    addr: SocketAddr,
    version: u64,
) -> Result<()> {
    let value = serde_json::to_vec(&Ack { addr, version }).context("encoding an ack")?;
    store
        .put(&format!("{ACKS}/{host_id}"), &value, PutOptions::default())
        .await
        .with_context(|| format!("writing {ACKS}/{host_id}"))?;
    Ok(())
}

/// Waits until every live member (by its gossip address) acknowledged `version`.
async fn wait_acks(
    store: &Arc<dyn Store>,
    live: &(dyn Fn() -> BTreeSet<SocketAddr> + Send + Sync),
    version: u64,
    step: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let pairs = store
            .list(ACKS)
            .await
            .with_context(|| format!("reading {ACKS}"))?;
        let done: BTreeSet<SocketAddr> = pairs
            .iter()
            .filter_map(|p| serde_json::from_slice::<Ack>(&p.value).ok())
            .filter(|a| a.version >= version)
            .map(|a| a.addr)
            .collect();
        let missing: Vec<SocketAddr> = live().difference(&done).copied().collect();
        if missing.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "key rotation stopped at step {step:?}: hosts {missing:?} did not apply keyring version {version} within {} ms (the keyring stays valid; rotate again once they are back)",
                timeout.as_millis()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes key `id` the primary one, if it is still in the keyring (a concurrent rotation may
/// have removed it: then the rotation stops, the keyring left as that one made it).
async fn make_primary(store: &Arc<dyn Store>, id: &str) -> Result<KeyringDoc> {
    update(store, |doc| {
        if !doc.keys.iter().any(|k| k.id == id) {
            bail!(
                "key rotation stopped: key {id:?} left {KEYRING} (a concurrent rotation finished first); the keyring there is in use"
            );
        }
        let mut next = doc.clone();
        next.primary = id.to_string();
        Ok(Some(next))
    })
    .await
}

/// Rotates the cluster's key: adds a new one, makes it primary, removes the others, each
/// step applied by every live host (within `timeout`) before the next. Returns the final
/// keyring.
pub async fn rotate(
    store: &Arc<dyn Store>,
    live: &(dyn Fn() -> BTreeSet<SocketAddr> + Send + Sync),
    timeout: Duration,
) -> Result<KeyringDoc> {
    let fresh = new_key()?;
    let added = update(store, |doc| {
        let mut next = doc.clone();
        if next.keys.len() >= plexus_gossip::seal::MAX_KEYS {
            bail!(
                "gossip keyring {KEYRING} holds {} keys already; a rotation in progress must finish first",
                next.keys.len()
            );
        }
        next.keys.push(fresh.clone());
        Ok(Some(next))
    })
    .await?;
    tracing::info!(key = %fresh.id, version = added.version, "key rotation: new key added");
    wait_acks(store, live, added.version, "add", timeout).await?;
    let used = make_primary(store, &fresh.id).await?;
    tracing::info!(key = %fresh.id, version = used.version, "key rotation: new key in use");
    wait_acks(store, live, used.version, "use", timeout).await?;
    tokio::time::sleep(REMOVE_GRACE.min(timeout)).await;
    let done = update(store, |doc| {
        let mut next = doc.clone();
        next.keys.retain(|k| k.id == next.primary);
        Ok(Some(next))
    })
    .await?;
    tracing::info!(key = %fresh.id, version = done.version, "key rotation: old keys removed");
    Ok(done)
}

/// Whether a member counts as live for a rotation.
pub fn is_live(state: MemberState) -> bool {
    matches!(state, MemberState::Alive | MemberState::Suspect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip_and_name_their_faults() {
        let doc = KeyringDoc::generate().unwrap();
        assert!(
            !format!("{doc:?}").contains(&doc.keys[0].key),
            "key in Debug"
        );
        let back = KeyringDoc::decode(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(back, doc);
        assert_eq!(back.keyring().unwrap().len(), 1);
        let mut bad = doc.clone();
        bad.primary = "nope".into();
        let e = KeyringDoc::decode(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("primary"), "{e:#}");
        let mut bad = doc;
        bad.keys[0].key = "zz".into();
        let e = KeyringDoc::decode(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains(KEYRING), "{e:#}");
    }

    #[tokio::test]
    async fn first_host_creates_others_read_and_rotation_steps() {
        let store = plexus_kv::open("memory://", Default::default())
            .await
            .unwrap();
        let (a, _) = load_or_create(&store).await.unwrap();
        let (b, _) = load_or_create(&store).await.unwrap();
        assert_eq!(a, b);
        // No live host: every step passes at once.
        let t = Duration::from_millis(300);
        let done = rotate(&store, &BTreeSet::new, t).await.unwrap();
        assert_eq!(done.version, 4);
        assert_eq!(done.keys.len(), 1);
        assert_ne!(done.primary, a.primary);
        // A concurrent rotation that removed this one's key: stopped, keyring left valid.
        let e = make_primary(&store, "gone").await.unwrap_err().to_string();
        assert!(e.contains("concurrent") && e.contains("\"gone\""), "{e}");
        let (doc, _) = load_or_create(&store).await.unwrap();
        assert_eq!(doc, done);
        // A live host that never acknowledges stops the rotation, naming it.
        let addr: SocketAddr = "192.0.2.1:7946".parse().unwrap();
        let live = move || BTreeSet::from([addr]);
        let e = rotate(&store, &live, t).await.unwrap_err().to_string();
        assert!(e.contains("192.0.2.1:7946") && e.contains("add"), "{e}");
    }
}
