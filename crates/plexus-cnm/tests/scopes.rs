//! Local and global scopes: two "hosts" (controllers with their own local stores and host
//! ids) sharing one cluster store, with a global-scope driver and a local one. What each host
//! sees, who owns what, and the errors a host without a cluster store gives.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use plexus_cnm::*;
use plexus_ipam::{BuiltinIpam, Ipam, IpamConfig, ScopedIpam};
use plexus_kv::{LocalStore, Store};

/// A driver with no data plane, of either scope. Like the overlay driver, it makes no
/// endpoint on a network it was not told of (with its allocation) on its own host.
struct Plain {
    name: &'static str,
    scope: Scope,
    known: std::sync::Mutex<BTreeMap<String, NetworkInfo>>,
}

impl Plain {
    fn new(name: &'static str, scope: Scope) -> Self {
        Self {
            name,
            scope,
            known: Default::default(),
        }
    }
}

#[async_trait]
impl Driver for Plain {
    fn name(&self) -> &str {
        self.name
    }
    fn capability(&self) -> Capability {
        Capability {
            scope: self.scope,
            connectivity: self.scope,
            needs_ipam: true,
            multiple_networks: true,
        }
    }
    fn validate_options(&self, _: &BTreeMap<String, String>) -> Result<(), DriverError> {
        Ok(())
    }
    async fn allocate_network(
        &self,
        _: &NetworkInfo,
    ) -> Result<BTreeMap<String, String>, DriverError> {
        Ok(BTreeMap::from([("vni".to_string(), "4096".to_string())]))
    }
    async fn create_network(&self, n: &NetworkInfo) -> Result<(), DriverError> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(n.id.clone(), n.clone());
        Ok(())
    }
    async fn delete_network(&self, _: &str) -> Result<(), DriverError> {
        Ok(())
    }
    async fn create_endpoint(&self, e: &EndpointInfo) -> Result<EndpointCreated, DriverError> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match known.get(&e.network_id) {
            Some(n) if self.scope == Scope::Local || n.options.contains_key("vni") => {}
            _ => {
                return Err(DriverError::Failed(format!(
                    "network {} not known here",
                    e.network_id
                )))
            }
        }
        Ok(EndpointCreated {
            mac: None,
            ports: e.ports.clone(),
        })
    }
    async fn delete_endpoint(&self, _: &str, _: &str) -> Result<(), DriverError> {
        Ok(())
    }
    async fn join(
        &self,
        _: &str,
        _: &str,
        _: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        Ok(Joined {
            interface: Some(interface.guess()),
            ..Joined::default()
        })
    }
    async fn leave(&self, _: &str, _: &str) -> Result<(), DriverError> {
        Ok(())
    }
}

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn memory() -> Arc<dyn Store> {
    Arc::new(LocalStore::memory())
}

/// A host: its own local store, the cluster store if any, drivers `bridge` (local) and
/// `overlay` (global).
async fn host(id: &str, cluster: Option<Arc<dyn Store>>) -> (Controller, Arc<dyn Store>) {
    let local = memory();
    let local_ipam: Arc<dyn Ipam> = Arc::new(ok(
        "local ipam",
        BuiltinIpam::open(local.clone(), IpamConfig::new(id)).await,
    ));
    let global_ipam: Option<Arc<dyn Ipam>> = match &cluster {
        Some(c) => Some(Arc::new(ok(
            "global ipam",
            BuiltinIpam::open(c.clone(), IpamConfig::new(id)).await,
        ))),
        None => None,
    };
    let mut drivers = DriverRegistry::new();
    drivers.register(Arc::new(Plain::new("bridge", Scope::Local)));
    drivers.register(Arc::new(Plain::new("overlay", Scope::Global)));
    let config = ControllerConfig {
        host_id: id.to_string(),
        ..Default::default()
    };
    let mut controller = Controller::new(
        local.clone(),
        Arc::new(ScopedIpam::new(local_ipam, global_ipam)),
        drivers,
        config,
    );
    if let Some(c) = cluster {
        controller = controller.with_cluster_store(c);
    }
    (controller, local)
}

fn spec(name: &str, driver: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        driver: driver.into(),
        attachable: true,
        ..Default::default()
    }
}

async fn sandbox(c: &Controller, name: &str) -> Sandbox {
    ok(
        "sandbox",
        c.add_sandbox(name, &format!("/run/test/{name}"), false)
            .await,
    )
}

#[tokio::test]
async fn global_networks_are_shared_and_local_ones_stay_home() {
    let cluster = memory();
    let (a, a_local) = host("host-a", Some(cluster.clone())).await;
    let (b, _) = host("host-b", Some(cluster.clone())).await;

    let g = ok("global", a.create_network(spec("g", "overlay")).await);
    assert_eq!(g.scope, Scope::Global);
    let la = ok("local on a", a.create_network(spec("la", "bridge")).await);
    assert_eq!(la.scope, Scope::Local);

    // B sees the global network, by name and id, and not A's local one.
    assert_eq!(ok("b by name", b.network("g").await).id, g.id);
    assert_eq!(ok("b by id", b.network(&g.id).await).name, "g");
    let names: Vec<String> = ok("b list", b.networks().await)
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, vec!["g".to_string()]);
    assert!(matches!(
        b.network("la").await,
        Err(CnmError::NotFound { .. })
    ));
    // B may have its own local network of the same name as A's: local names are per host.
    ok("local on b", b.create_network(spec("la", "bridge")).await);
    // Nothing of A's local network reached the cluster store.
    let in_cluster = ok("cluster keys", cluster.list("").await);
    assert!(
        in_cluster.iter().all(|p| !p.key.contains(&la.id)),
        "local network leaked into the cluster store: {:?}",
        in_cluster.iter().map(|p| &p.key).collect::<Vec<_>>()
    );
    // And the global network's record is not in A's local store.
    let in_local = ok("local keys", a_local.list("").await);
    assert!(in_local.iter().all(|p| !p.key.contains(&g.id)));

    // Both hosts attach a sandbox: addresses from one global pool, never the same; each
    // endpoint says which host owns it.
    let (sa, sb) = (sandbox(&a, "sa").await, sandbox(&b, "sb").await);
    let ea = ok(
        "a connect",
        a.connect(&sa.id, "g", EndpointSpec::default()).await,
    );
    let eb = ok(
        "b connect",
        b.connect(&sb.id, "g", EndpointSpec::default()).await,
    );
    assert_ne!(ea.ipv4, eb.ipv4);
    assert_eq!(ea.host, "host-a");
    assert_eq!(eb.host, "host-b");
    assert_eq!(ok("a sees both", a.endpoints(&g.id).await).len(), 2);

    // A cannot remove the network while B's sandbox is on it, and the error names B.
    match a.delete_network("g").await {
        Err(e @ CnmError::InUse { .. }) => {
            assert!(e.to_string().contains("on host host-b"), "{e}");
        }
        other => panic!("delete with a remote endpoint gave {other:?}"),
    }
    ok("a disconnect", a.disconnect("sa", "g").await);
    ok("b disconnect", b.disconnect("sb", "g").await);
    ok("delete", a.delete_network("g").await);
    assert!(matches!(
        b.network("g").await,
        Err(CnmError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_host_without_a_cluster_store_refuses_global_networks() {
    let (c, _) = host("solo", None).await;
    match c.create_network(spec("g", "overlay")).await {
        Err(e @ CnmError::Invalid { .. }) => {
            assert_eq!(e.http_status(), 400);
            let text = e.to_string();
            assert!(
                text.contains("driver") && text.contains("--cluster-store"),
                "{text}"
            );
        }
        other => panic!("global network without a cluster store gave {other:?}"),
    }
    assert!(ok("list", c.networks().await).is_empty());
}

#[tokio::test]
async fn a_scope_that_does_not_match_the_driver_is_refused() {
    let (c, _) = host("solo", Some(memory())).await;
    let mut s = spec("n", "bridge");
    s.scope = Some(Scope::Global);
    match c.create_network(s).await {
        Err(e @ CnmError::Invalid { .. }) => {
            assert!(e.to_string().contains("scope"), "{e}");
        }
        other => panic!("mismatched scope gave {other:?}"),
    }
    assert!(matches!(
        Scope::parse("planet"),
        Err(CnmError::Invalid { .. })
    ));
    assert_eq!(ok("swarm", Scope::parse("swarm")), Scope::Global);
    assert!(ok("list", c.networks().await).is_empty());
}

/// A driver that only listens to node discovery.
#[derive(Default)]
struct Listener {
    heard: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl Driver for Listener {
    fn name(&self) -> &str {
        "listener"
    }
    fn capability(&self) -> Capability {
        Capability {
            scope: Scope::Global,
            connectivity: Scope::Global,
            needs_ipam: false,
            multiple_networks: true,
        }
    }
    fn validate_options(&self, _: &BTreeMap<String, String>) -> Result<(), DriverError> {
        Ok(())
    }
    async fn create_network(&self, _: &NetworkInfo) -> Result<(), DriverError> {
        Ok(())
    }
    async fn delete_network(&self, _: &str) -> Result<(), DriverError> {
        Ok(())
    }
    async fn create_endpoint(&self, _: &EndpointInfo) -> Result<EndpointCreated, DriverError> {
        Ok(EndpointCreated::default())
    }
    async fn delete_endpoint(&self, _: &str, _: &str) -> Result<(), DriverError> {
        Ok(())
    }
    async fn join(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        Ok(Joined::default())
    }
    async fn leave(&self, _: &str, _: &str) -> Result<(), DriverError> {
        Ok(())
    }
    async fn discover_new(&self, node: &NodeDiscovery) -> Result<(), DriverError> {
        self.heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("new {} self={}", node.address, node.self_node));
        Ok(())
    }
    async fn discover_delete(&self, node: &NodeDiscovery) -> Result<(), DriverError> {
        self.heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("delete {} self={}", node.address, node.self_node));
        Ok(())
    }
}

/// libnetwork's kv discovery: every driver hears of a host when its record appears in the
/// cluster store, of itself as itself, and of a host's leaving when its record expires.
#[tokio::test]
async fn drivers_hear_of_hosts_as_their_records_come_and_go() {
    use plexus_kv::PutOptions;
    use std::time::Duration;
    let cluster = memory();
    let listener = Arc::new(Listener::default());
    let local = memory();
    let mut drivers = DriverRegistry::new();
    drivers.register(listener.clone());
    let ipam: Arc<dyn Ipam> = Arc::new(ok(
        "ipam",
        BuiltinIpam::open(local.clone(), IpamConfig::new("a")).await,
    ));
    let controller = Arc::new(
        Controller::new(
            local,
            ipam,
            drivers,
            ControllerConfig {
                host_id: "a".into(),
                ..Default::default()
            },
        )
        .with_cluster_store(cluster.clone()),
    );
    let record = |id: &str, addr: Option<&str>| {
        ok(
            "encode",
            serde_json::to_vec(&Node {
                id: id.into(),
                name: id.into(),
                advertise: addr.map(|a| ok("addr", a.parse())),
            }),
        )
    };
    let put = |id: &'static str, addr: Option<&'static str>, ttl: Option<u64>| {
        let cluster = cluster.clone();
        let value = record(id, addr);
        async move {
            let options = PutOptions {
                ttl: ttl.map(Duration::from_secs),
            };
            ok(
                "put",
                cluster
                    .put(&plexus_cnm::store_layout::node(id), &value, options)
                    .await,
            );
        }
    };
    put("a", Some("192.0.2.1:7946"), None).await;
    let follower = tokio::spawn({
        let c = controller.clone();
        async move { c.follow_nodes().await }
    });
    put("b", Some("192.0.2.2:7946"), Some(1)).await;
    // A host that advertises no address has nothing to tell a data plane.
    put("c", None, None).await;
    let heard = || {
        listener
            .heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let want = vec![
        "new 192.0.2.1 self=true".to_string(),
        "new 192.0.2.2 self=false".to_string(),
        "delete 192.0.2.2 self=false".to_string(),
    ];
    while heard() != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "drivers heard {:?}, expected {want:?}",
            heard()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ids: Vec<String> = ok("nodes", controller.nodes().await)
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(ids, vec!["a".to_string(), "c".to_string()]);
    follower.abort();
}

/// A global endpoint's record is written to the cluster store before its sandbox's local
/// record; when the local part is lost, start-up reconciliation rolls back this host's
/// endpoint that no sandbox lists and gives its address back, and leaves another host's
/// endpoints alone.
#[tokio::test]
async fn startup_rolls_back_this_hosts_unlisted_global_endpoints_only() {
    let cluster = memory();
    let (a, a_local) = host("host-a", Some(cluster.clone())).await;
    let (b, _) = host("host-b", Some(cluster.clone())).await;
    ok("global", a.create_network(spec("g", "overlay")).await);
    let (sa, sb) = (sandbox(&a, "sa").await, sandbox(&b, "sb").await);
    let ea = ok(
        "a connect",
        a.connect(&sa.id, "g", EndpointSpec::default()).await,
    );
    let eb = ok(
        "b connect",
        b.connect(&sb.id, "g", EndpointSpec::default()).await,
    );
    // A's sandbox record loses the endpoint (its local write failed after the cluster's).
    let key = plexus_cnm::store_layout::sandbox(&sa.id);
    let mut record: serde_json::Value = ok(
        "decode",
        serde_json::from_slice(&ok("get", a_local.get(&key).await).value),
    );
    record["endpoints"] = serde_json::json!([]);
    ok(
        "put",
        a_local
            .put(
                &key,
                &ok("encode", serde_json::to_vec(&record)),
                Default::default(),
            )
            .await,
    );
    // B's endpoint is unlisted from A's point of view too: A must not touch it.
    let report = ok("reconcile", a.reconcile(ReconcileMode::Startup).await);
    assert!(report.failed.is_empty(), "{report:?}");
    let left: Vec<String> = ok("endpoints", a.endpoints(&ea.network_id).await)
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(left, vec![eb.id.clone()], "only B's endpoint stays");
    // A's address was given back: the next endpoint on A gets it again.
    let again = ok(
        "a connect again",
        a.connect(&sa.id, "g", EndpointSpec::default()).await,
    );
    assert_eq!(again.ipv4, ea.ipv4);
}
