//! The IPAM on a real etcd (Debian's etcd-server, started by the test harness): two daemons,
//! each with its own connection, race for addresses and subnets of one global pool.

use plexus_kv::Store;
use plexus_testkit::etcd::EtcdBackend;
use plexus_testkit::kv::KvBackend;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_two_daemons_race_1000_allocations_without_duplicates() {
    let backend = EtcdBackend::new().await;
    let a: std::sync::Arc<dyn Store> = backend.client().await;
    let b = backend.client().await;
    if let Err(e) = plexus_ipam::testing::race_allocations_between(a, b, 1000).await {
        panic!("{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_roundtrip() {
    let backend = EtcdBackend::new().await;
    if let Err(e) = plexus_ipam::testing::restart_roundtrip(backend.client().await).await {
        panic!("{e}");
    }
}
