//! The conformance suite on the in-process backends, plus what only they can show.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use plexus_kv::{LocalStore, Store};
use plexus_testkit::kv::KvBackend;
use plexus_testkit::kv_conformance;

/// Every client is the same in-process store: the process is the session.
struct Local {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

#[async_trait]
impl KvBackend for Local {
    async fn client(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
    fn ttl_slack(&self) -> Duration {
        Duration::from_millis(500)
    }
}

async fn memory() -> Local {
    Local {
        store: Arc::new(LocalStore::memory()),
        _dir: None,
    }
}

async fn redb() -> Local {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let url = format!("redb://{}", dir.path().join("state.db").display());
    let store = plexus_kv::open(&url, Default::default())
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
    Local {
        store,
        _dir: Some(dir),
    }
}

/// A view under a host's directory of a store that also holds other keys: the same suite,
/// through [`plexus_kv::prefixed`].
async fn prefixed_memory() -> Local {
    let backend: Arc<dyn Store> = Arc::new(LocalStore::memory());
    backend
        .put("hosts/other/plexus/x", b"theirs", Default::default())
        .await
        .unwrap_or_else(|e| panic!("seed: {e}"));
    Local {
        store: plexus_kv::prefixed(backend, "hosts/mine")
            .unwrap_or_else(|e| panic!("prefixed: {e}")),
        _dir: None,
    }
}

/// A store seen through [`plexus_kv::observed`], as plexusd meters its stores: the same
/// suite, and every operation reaches the observer.
async fn observed_memory() -> Local {
    struct Counting;
    impl plexus_kv::StoreObserver for Counting {
        fn observe(
            &self,
            _op: plexus_kv::StoreOp,
            _elapsed: Duration,
            _error: Option<&plexus_kv::KvError>,
        ) {
        }
    }
    Local {
        store: plexus_kv::observed(Arc::new(LocalStore::memory()), Arc::new(Counting)),
        _dir: None,
    }
}

kv_conformance!(memory, memory());
kv_conformance!(observed, observed_memory());
kv_conformance!(prefixed, prefixed_memory());
kv_conformance!(redb, redb());
