//! The built-in driver through its store: Docker's defaults, errors, serial mode, restart,
//! and two allocators racing on one store.

use std::net::IpAddr;
use std::sync::Arc;

use plexus_ipam::{
    AddressRequest, BuiltinIpam, GatewayRequest, HostInfo, Ipam, IpamConfig, IpamError, PoolRequest,
};
use plexus_kv::{LocalStore, Store};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn memory() -> Arc<dyn Store> {
    Arc::new(LocalStore::memory())
}

async fn ipam(store: &Arc<dyn Store>) -> BuiltinIpam {
    BuiltinIpam::open(store.clone(), IpamConfig::new("host-1"))
        .await
        .unwrap()
}

async fn next(ipam: &BuiltinIpam, pool: &str) -> String {
    ipam.request_address(AddressRequest::next(pool))
        .await
        .unwrap()
        .address
        .addr()
        .to_string()
}

#[tokio::test]
async fn thirty_one_default_networks_then_a_clear_error() {
    let store = memory();
    let ipam = ipam(&store).await;
    let mut subnets = Vec::new();
    for i in 0..31 {
        let p = ipam
            .request_pool(PoolRequest::new("local", &format!("net{i}")))
            .await
            .unwrap();
        subnets.push(p.pool.to_string());
    }
    assert_eq!(subnets[0], "172.17.0.0/16");
    assert_eq!(subnets[15], "192.168.0.0/20");
    let err = ipam
        .request_pool(PoolRequest::new("local", "net31"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        IpamError::DefaultPoolsExhausted { in_use: 31, .. }
    ));
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "could not find an available, non-overlapping IPv4 address pool among the defaults"
        ),
        "{msg}"
    );
    assert!(msg.contains("base=192.168.0.0/16,size=20"), "{msg}");
    assert!(msg.contains("--default-address-pool base="), "{msg}");
    // Nothing was written for the failed request.
    assert_eq!(store.list("ipam/local/pools").await.unwrap().len(), 31);
    // Releasing one frees its subnet for the next request.
    ipam.release_pool("local/172.18.0.0/16").await.unwrap();
    let p = ipam
        .request_pool(PoolRequest::new("local", "again"))
        .await
        .unwrap();
    assert_eq!(p.pool.to_string(), "172.18.0.0/16");
}

#[tokio::test]
async fn default_address_pools_override_and_size_only_requests() {
    let store = memory();
    let cfg = IpamConfig::new("h")
        .with_default_address_pools(&["base=10.10.0.0/16,size=24", "base=fd99::/48,size=64"])
        .unwrap();
    let ipam = BuiltinIpam::open(store, cfg).await.unwrap();
    let a = ipam.request_pool(PoolRequest::new("", "a")).await.unwrap();
    assert_eq!(a.pool.to_string(), "10.10.0.0/24");
    let b = ipam
        .request_pool(PoolRequest::new("", "b").subnet("0.0.0.0/26"))
        .await
        .unwrap();
    assert_eq!(b.pool.to_string(), "10.10.1.0/26");
    let c = ipam
        .request_pool(PoolRequest::new("", "c").v6())
        .await
        .unwrap();
    assert_eq!(c.pool.to_string(), "fd99::/64");
    assert_eq!(c.gateway.unwrap().to_string(), "fd99::1/64");
    let bad = IpamConfig::new("h").with_default_address_pools(&["base=10.0.0.0/8"]);
    assert!(bad.unwrap_err().to_string().contains("size is missing"));
}

#[tokio::test]
async fn ipv6_defaults_are_a_ula_per_host() {
    let ipam = ipam(&memory()).await;
    let p = ipam
        .request_pool(PoolRequest::new("local", "v6net").v6())
        .await
        .unwrap();
    assert_eq!(p.pool.prefix_len(), 64);
    assert!(p.pool.to_string().starts_with("fd"), "{}", p.pool);
    let a = next(&ipam, &p.pool_id).await;
    assert!(a.ends_with("::2"), "{a}");
}

#[tokio::test]
async fn host_routes_and_nameservers_are_avoided() {
    let store = memory();
    let cfg = IpamConfig::new("h").with_host(HostInfo {
        routes: vec![
            "172.17.0.0/24".parse().unwrap(),
            "0.0.0.0/0".parse().unwrap(),
        ],
        nameservers: vec![ip("172.18.1.1")],
    });
    let ipam = BuiltinIpam::open(store, cfg).await.unwrap();
    let p = ipam
        .request_pool(PoolRequest::new("local", "a"))
        .await
        .unwrap();
    assert_eq!(p.pool.to_string(), "172.19.0.0/16");
    // A VPN route appears: the next network avoids it too.
    ipam.set_host_info(HostInfo {
        routes: vec!["172.20.0.0/15".parse().unwrap()],
        nameservers: vec![],
    });
    let p = ipam
        .request_pool(PoolRequest::new("local", "b"))
        .await
        .unwrap();
    assert_eq!(p.pool.to_string(), "172.17.0.0/16");
    let p = ipam
        .request_pool(PoolRequest::new("local", "c"))
        .await
        .unwrap();
    assert_eq!(p.pool.to_string(), "172.18.0.0/16");
    let p = ipam
        .request_pool(PoolRequest::new("local", "d"))
        .await
        .unwrap();
    assert_eq!(p.pool.to_string(), "172.22.0.0/16");
}

#[tokio::test]
async fn static_overlap_names_the_owner() {
    let ipam = ipam(&memory()).await;
    ipam.request_pool(PoolRequest::new("local", "frontend").subnet("10.1.0.0/16"))
        .await
        .unwrap();
    let err = ipam
        .request_pool(PoolRequest::new("local", "backend").subnet("10.1.2.0/24"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "subnet 10.1.2.0/24 overlaps 10.1.0.0/16, the pool of network \"frontend\", in address space \"local\""
    );
    // Another space is another world.
    ipam.request_pool(PoolRequest::new("global", "backend").subnet("10.1.2.0/24"))
        .await
        .unwrap();
    // The same network asking again gets its pool (request replay).
    let again = ipam
        .request_pool(PoolRequest::new("local", "frontend").subnet("10.1.0.0/16"))
        .await
        .unwrap();
    assert_eq!(again.gateway.unwrap().to_string(), "10.1.0.1/16");
}

#[tokio::test]
async fn bad_input_is_named_and_nothing_is_left_behind() {
    let store = memory();
    let ipam = ipam(&store).await;
    let cases: Vec<(PoolRequest, &str)> = vec![
        (
            PoolRequest::new("local", "n").subnet("10.1.0.0/33"),
            "invalid subnet \"10.1.0.0/33\"",
        ),
        (
            PoolRequest::new("local", "n")
                .subnet("10.1.0.0/24")
                .gateway("10.2.0.1"),
            "gateway 10.2.0.1 is outside the subnet 10.1.0.0/24",
        ),
        (
            PoolRequest::new("local", "n")
                .subnet("10.1.0.0/24")
                .ip_range("10.1.0.0/16"),
            "ip-range 10.1.0.0/16 is larger than the subnet 10.1.0.0/24",
        ),
        (
            PoolRequest::new("local", "n")
                .subnet("10.1.0.0/24")
                .ip_range("10.9.0.0/28"),
            "ip-range 10.9.0.0/28 is outside the subnet 10.1.0.0/24",
        ),
        (
            PoolRequest::new("local", "n")
                .subnet("10.1.0.0/24")
                .aux("db", "10.1.0.5")
                .aux("cache", "10.3.0.5"),
            "aux-address cache 10.3.0.5 is outside the subnet 10.1.0.0/24",
        ),
        (
            PoolRequest::new("local", "n")
                .subnet("10.1.0.0/24")
                .gateway("10.1.0.255"),
            "gateway 10.1.0.255 is reserved in 10.1.0.0/24: it is the broadcast address",
        ),
        (
            PoolRequest::new("local", "n")
                .subnet("10.1.0.0/24")
                .gateway("10.1.0.7")
                .aux("x", "10.1.0.7"),
            "aux-address x 10.1.0.7 is already in use in 10.1.0.0/24 (by gateway)",
        ),
        (
            PoolRequest::new("nowhere", "n"),
            "unknown address space \"nowhere\"",
        ),
        (
            PoolRequest::new("local", "n")
                .subnet("10.1.0.0/24")
                .option("com.docker.network.ipam.serial", "maybe"),
            "invalid option com.docker.network.ipam.serial=\"maybe\"",
        ),
        (
            PoolRequest::new("local", "n").ip_range("10.1.0.0/28"),
            "an ip-range needs a --subnet",
        ),
    ];
    for (req, want) in cases {
        let err = ipam.request_pool(req).await.unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} does not contain {want:?}");
    }
    assert!(store.list("ipam").await.unwrap().is_empty());
    let p = ipam
        .request_pool(
            PoolRequest::new("local", "n")
                .subnet("10.1.0.0/24")
                .ip_range("10.1.0.128/30")
                .aux("db", "10.1.0.5"),
        )
        .await
        .unwrap();
    assert_eq!(p.gateway.unwrap().to_string(), "10.1.0.128/24");
    let id = p.pool_id;
    let e = ipam
        .request_address(AddressRequest::preferred(&id, "10.1.0.255"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("broadcast"), "{e}");
    let e = ipam
        .request_address(AddressRequest::preferred(&id, "10.1.1.1"))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "ip 10.1.1.1 is outside the subnet 10.1.0.0/24"
    );
    let e = ipam
        .request_address(AddressRequest::preferred(&id, "banana"))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "invalid ip \"banana\": not an IP address");
    // --ip outside the ip-range but inside the subnet is fine.
    ipam.request_address(AddressRequest::preferred(&id, "10.1.0.20"))
        .await
        .unwrap();
    let e = ipam
        .request_address(AddressRequest::preferred(&id, "10.1.0.20"))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "ip 10.1.0.20 is already in use in 10.1.0.0/24"
    );
    for want in ["10.1.0.129", "10.1.0.130", "10.1.0.131"] {
        assert_eq!(next(&ipam, &id).await, want);
    }
    let e = ipam
        .request_address(AddressRequest::next(&id))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "no free address in 10.1.0.128/30");
    let e = ipam
        .release_address(&id, ip("10.1.0.99"))
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot release address 10.1.0.99: it was never allocated in 10.1.0.0/24"
    );
    let e = ipam.release_pool("local/10.9.0.0/16").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot release pool local/10.9.0.0/16: it was never allocated"
    );
    let e = ipam
        .request_address(AddressRequest::next("local/10.9.0.0/16"))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "pool \"local/10.9.0.0/16\" not found");
    // Releasing the pool removes every key it had.
    ipam.release_pool(&id).await.unwrap();
    assert!(store.list("ipam/local/addrs").await.unwrap().is_empty());
    assert!(store.list("ipam/local/pools").await.unwrap().is_empty());
}

#[tokio::test]
async fn gateway_none_and_given_and_docker_gateway_requests() {
    let ipam = ipam(&memory()).await;
    let mut req = PoolRequest::new("local", "n").subnet("10.5.0.0/30");
    req.gateway = GatewayRequest::None;
    let p = ipam.request_pool(req).await.unwrap();
    assert!(p.gateway.is_none());
    let mut gw = AddressRequest::next(&p.pool_id);
    gw.options.insert(
        plexus_ipam::api::OPT_REQUEST_ADDRESS_TYPE.into(),
        plexus_ipam::api::REQUEST_TYPE_GATEWAY.into(),
    );
    let g = ipam.request_address(gw).await.unwrap();
    assert_eq!(g.address.to_string(), "10.5.0.1/30");
    assert_eq!(next(&ipam, &p.pool_id).await, "10.5.0.2");
    // A /31 and a /32 use every address.
    let p = ipam
        .request_pool(PoolRequest::new("local", "p2p").subnet("10.6.0.0/31"))
        .await
        .unwrap();
    assert_eq!(p.gateway.unwrap().to_string(), "10.6.0.0/31");
    assert_eq!(next(&ipam, &p.pool_id).await, "10.6.0.1");
}

#[tokio::test]
async fn serial_mode_does_not_reuse_a_released_address_at_once() {
    let store = memory();
    let ipam = ipam(&store).await;
    let serial = ipam
        .request_pool(
            PoolRequest::new("local", "s")
                .subnet("10.7.0.0/29")
                .option("com.docker.network.ipam.serial", "true"),
        )
        .await
        .unwrap();
    let lowest = ipam
        .request_pool(PoolRequest::new("local", "l").subnet("10.8.0.0/29"))
        .await
        .unwrap();
    for p in [&serial, &lowest] {
        for _ in 0..3 {
            next(&ipam, &p.pool_id).await; // .2 .3 .4
        }
        let second = if p.pool_id == serial.pool_id {
            "10.7.0.3"
        } else {
            "10.8.0.3"
        };
        ipam.release_address(&p.pool_id, ip(second)).await.unwrap();
    }
    assert_eq!(next(&ipam, &serial.pool_id).await, "10.7.0.5");
    assert_eq!(next(&ipam, &lowest.pool_id).await, "10.8.0.3");
    assert_eq!(next(&ipam, &serial.pool_id).await, "10.7.0.6");
    // Wraps around to the released one.
    assert_eq!(next(&ipam, &serial.pool_id).await, "10.7.0.3");
    // After a restart the cursor resumes after the highest address handed out.
    ipam.release_address(&serial.pool_id, ip("10.7.0.4"))
        .await
        .unwrap();
    drop(ipam);
    let ipam = BuiltinIpam::open(store, IpamConfig::new("host-1"))
        .await
        .unwrap();
    assert_eq!(next(&ipam, &serial.pool_id).await, "10.7.0.4");
}

#[tokio::test]
async fn restart_restores_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redb://{}/ipam.db", dir.path().display());
    let store = plexus_kv::open(&url, Default::default()).await.unwrap();
    let ipam = ipam(&store).await;
    let a = ipam
        .request_pool(PoolRequest::new("local", "a").aux("r", "172.17.0.9"))
        .await;
    // aux without subnet is refused; then with one.
    assert!(a.is_err());
    let a = ipam
        .request_pool(
            PoolRequest::new("local", "a")
                .subnet("172.30.0.0/24")
                .aux("r", "172.30.0.9"),
        )
        .await
        .unwrap();
    let b = ipam
        .request_pool(PoolRequest::new("local", "b"))
        .await
        .unwrap();
    let v6 = ipam
        .request_pool(PoolRequest::new("global", "c").v6())
        .await
        .unwrap();
    let mut before = Vec::new();
    for p in [&a, &b, &v6] {
        for _ in 0..10 {
            next(&ipam, &p.pool_id).await;
        }
        ipam.release_address(&p.pool_id, p.pool.hosts_nth(4))
            .await
            .unwrap();
        before.push(ipam.allocated(&p.pool_id).unwrap());
    }
    let pools_before = (ipam.pools("local").unwrap(), ipam.pools("global").unwrap());
    drop(ipam);
    store.close().await.unwrap();
    drop(store);
    // plexus-kv's redb writer lets go of the file shortly after close: retry briefly.
    let mut tries = 0;
    let store = loop {
        match plexus_kv::open(&url, Default::default()).await {
            Ok(s) => break s,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(e) => panic!("reopen {url}: {e}"),
        }
    };
    let ipam = ipam_reopen(&store).await;
    assert_eq!(
        (ipam.pools("local").unwrap(), ipam.pools("global").unwrap()),
        pools_before
    );
    for (p, before) in [&a, &b, &v6].into_iter().zip(before) {
        assert_eq!(ipam.allocated(&p.pool_id).unwrap(), before);
        // The hole is handed out again, nothing twice.
        let got = ipam
            .request_address(AddressRequest::next(&p.pool_id))
            .await
            .unwrap();
        assert_eq!(got.address.addr(), p.pool.hosts_nth(4));
    }
    let e = ipam
        .request_address(AddressRequest::preferred(&a.pool_id, "172.30.0.9"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("(by aux-address r)"), "{e}");
    let e = ipam
        .request_pool(PoolRequest::new("local", "z").subnet("172.30.0.0/16"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("network \"a\""), "{e}");
}

trait Nth {
    fn hosts_nth(&self, n: usize) -> IpAddr;
}

impl Nth for ipnet::IpNet {
    fn hosts_nth(&self, n: usize) -> IpAddr {
        self.hosts().nth(n).unwrap()
    }
}

#[tokio::test]
async fn leftovers_of_a_crash_during_release_are_collected() {
    let store = memory();
    let first = ipam(&store).await;
    let p = first
        .request_pool(PoolRequest::new("local", "a").subnet("10.1.0.0/24"))
        .await
        .unwrap();
    next(&first, &p.pool_id).await;
    // Simulate a crash after the pool record went but before its addresses did.
    store.delete("ipam/local/pools/10.1.0.0_24").await.unwrap();
    drop(first);
    let ipam = ipam_reopen(&store).await;
    assert!(store.list("ipam/local/addrs").await.unwrap().is_empty());
    let p = ipam
        .request_pool(PoolRequest::new("local", "b").subnet("10.1.0.0/24"))
        .await
        .unwrap();
    assert_eq!(next(&ipam, &p.pool_id).await, "10.1.0.2");
}

async fn ipam_reopen(store: &Arc<dyn Store>) -> BuiltinIpam {
    ipam(store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_allocators_race_1000_allocations_on_one_memory_store() {
    let store: Arc<dyn Store> = plexus_kv::open("memory://", Default::default())
        .await
        .unwrap();
    plexus_ipam::testing::race_allocations(store, 1000)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_allocators_see_each_others_pools_and_addresses() {
    let store = memory();
    let a = ipam(&store).await;
    let b = ipam(&store).await;
    let p = a
        .request_pool(PoolRequest::new("global", "shared").subnet("10.50.0.0/29"))
        .await
        .unwrap();
    // b learns the pool lazily and never hands out a's addresses.
    assert_eq!(next(&a, &p.pool_id).await, "10.50.0.2");
    assert_eq!(next(&b, &p.pool_id).await, "10.50.0.3");
    assert_eq!(next(&a, &p.pool_id).await, "10.50.0.4");
    // b releases one a handed out; a's stale view is refreshed when it runs out.
    b.release_address(&p.pool_id, ip("10.50.0.2"))
        .await
        .unwrap();
    assert_eq!(next(&a, &p.pool_id).await, "10.50.0.5");
    assert_eq!(next(&a, &p.pool_id).await, "10.50.0.6");
    assert_eq!(next(&a, &p.pool_id).await, "10.50.0.2");
    // b's stale space still refuses an overlapping pool.
    let e = b
        .request_pool(PoolRequest::new("global", "other").subnet("10.50.0.0/24"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("network \"shared\""), "{e}");
    // a releases the pool; b's request on it fails cleanly.
    a.release_pool(&p.pool_id).await.unwrap();
    let e = b
        .request_address(AddressRequest::next(&p.pool_id))
        .await
        .unwrap_err();
    assert!(matches!(e, IpamError::PoolNotFound { .. }), "{e}");
    // b's view of the space follows: the subnet is free for another network.
    let q = b
        .request_pool(PoolRequest::new("global", "other").subnet("10.50.0.0/24"))
        .await
        .unwrap();
    assert_eq!(next(&a, &q.pool_id).await, "10.50.0.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_all_or_nothing_and_race_safely() {
    let store = memory();
    let a = Arc::new(ipam(&store).await);
    let b = Arc::new(ipam(&store).await);
    let p = a
        .request_pool(PoolRequest::new("local", "batch").subnet("10.60.0.0/22"))
        .await
        .unwrap();
    let (x, y) = tokio::join!(
        a.request_addresses(&p.pool_id, 400),
        b.request_addresses(&p.pool_id, 400)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut all: Vec<_> = x.iter().chain(&y).map(|r| r.address.addr()).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 800);
    assert_eq!(store.list("ipam/local/addrs").await.unwrap().len(), 801);
    // 1021 usable, 801 taken: a batch of 300 fails and leaves nothing behind.
    let e = a.request_addresses(&p.pool_id, 300).await.unwrap_err();
    assert_eq!(e.to_string(), "no free address in 10.60.0.0/22");
    assert_eq!(store.list("ipam/local/addrs").await.unwrap().len(), 801);
    assert_eq!(
        a.request_addresses(&p.pool_id, 221).await.unwrap().len(),
        221
    );
}

#[tokio::test]
async fn restart_roundtrip_on_memory_and_redb() {
    plexus_ipam::testing::restart_roundtrip(memory())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redb://{}/r.db", dir.path().display());
    let store = plexus_kv::open(&url, Default::default()).await.unwrap();
    plexus_ipam::testing::restart_roundtrip(store)
        .await
        .unwrap();
}
