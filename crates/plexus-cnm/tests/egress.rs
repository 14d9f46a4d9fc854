//! The way out of sandboxes whose networks give no default gateway (Docker's
//! `docker_gwbridge`), through the controller with fake drivers: a `vx` driver whose joins give
//! no gateway (as the overlay's), a `bridge` driver that gives one. What users see: the
//! `gateway_…` endpoint comes and goes with the networks that need it, failures undo the whole
//! connect or creation, no address leaks, reconciliation settles what a crash left.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use plexus_cnm::*;
use plexus_ipam::{BuiltinIpam, IpamConfig};
use plexus_kv::Store;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A local driver: `gives_gateway` says what its joins give (`bridge`: one; `vx`: none).
struct Fake {
    name: &'static str,
    gives_gateway: bool,
    /// Network names whose joins fail.
    fail_join: Mutex<BTreeSet<String>>,
    networks: Mutex<BTreeMap<String, String>>,
    endpoints: Mutex<BTreeSet<String>>,
    joined: Mutex<BTreeSet<String>>,
}

impl Fake {
    fn new(name: &'static str, gives_gateway: bool) -> Arc<Self> {
        Arc::new(Fake {
            name,
            gives_gateway,
            fail_join: Mutex::default(),
            networks: Mutex::default(),
            endpoints: Mutex::default(),
            joined: Mutex::default(),
        })
    }
}

#[async_trait]
impl Driver for Fake {
    fn name(&self) -> &str {
        self.name
    }
    fn capability(&self) -> Capability {
        Capability {
            scope: Scope::Local,
            connectivity: Scope::Local,
            needs_ipam: true,
            multiple_networks: true,
        }
    }
    fn validate_options(&self, _: &BTreeMap<String, String>) -> Result<(), DriverError> {
        Ok(())
    }
    async fn create_network(&self, n: &NetworkInfo) -> Result<(), DriverError> {
        lock(&self.networks).insert(n.id.clone(), n.name.clone());
        Ok(())
    }
    async fn delete_network(&self, id: &str) -> Result<(), DriverError> {
        lock(&self.networks).remove(id);
        Ok(())
    }
    async fn create_endpoint(&self, ep: &EndpointInfo) -> Result<EndpointCreated, DriverError> {
        lock(&self.endpoints).insert(ep.endpoint_id.clone());
        Ok(EndpointCreated::default())
    }
    async fn delete_endpoint(&self, _: &str, id: &str) -> Result<(), DriverError> {
        lock(&self.endpoints).remove(id);
        Ok(())
    }
    async fn join(
        &self,
        network_id: &str,
        id: &str,
        _: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        let name = lock(&self.networks)
            .get(network_id)
            .cloned()
            .unwrap_or_default();
        if lock(&self.fail_join).contains(&name) {
            return Err(DriverError::Failed(format!(
                "injected join failure on {name}"
            )));
        }
        lock(&self.joined).insert(id.to_string());
        Ok(Joined {
            interface: Some(interface.guess()),
            disable_gateway: !self.gives_gateway,
            ..Joined::default()
        })
    }
    async fn leave(&self, _: &str, id: &str) -> Result<(), DriverError> {
        lock(&self.joined).remove(id);
        Ok(())
    }
}

/// Namespaces as paths that exist while made.
#[derive(Default)]
struct Paths(Mutex<BTreeSet<String>>);

#[async_trait]
impl Namespaces for Paths {
    async fn create(&self, name: &str) -> Result<String> {
        let path = format!("/run/netns/{name}");
        lock(&self.0).insert(path.clone());
        Ok(path)
    }
    async fn check(&self, _: &str) -> Result<()> {
        Ok(())
    }
    async fn delete(&self, path: &str) -> Result<()> {
        lock(&self.0).remove(path);
        Ok(())
    }
}

struct World {
    store: Arc<dyn Store>,
    bridge: Arc<Fake>,
    vx: Arc<Fake>,
    paths: Arc<Paths>,
    c: Controller,
}

fn gateway_spec() -> NetworkSpec {
    NetworkSpec {
        name: "docker_gwbridge".into(),
        driver: "bridge".into(),
        options: BTreeMap::from([(
            "com.docker.network.bridge.enable_icc".to_string(),
            "false".to_string(),
        )]),
        ..Default::default()
    }
}

async fn controller(
    store: &Arc<dyn Store>,
    bridge: &Arc<Fake>,
    vx: &Arc<Fake>,
    paths: &Arc<Paths>,
    gateway: bool,
) -> Controller {
    let ipam = BuiltinIpam::open(store.clone(), IpamConfig::new("host-1"))
        .await
        .unwrap_or_else(|e| panic!("ipam: {e}"));
    let mut drivers = DriverRegistry::new();
    drivers.register(bridge.clone());
    drivers.register(vx.clone());
    let config = ControllerConfig {
        gateway_network: gateway.then(gateway_spec),
        ..Default::default()
    };
    Controller::new(store.clone(), Arc::new(ipam), drivers, config).with_namespaces(paths.clone())
}

async fn world() -> World {
    let store = plexus_kv::open("memory://", Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (bridge, vx, paths) = (
        Fake::new("bridge", true),
        Fake::new("vx", false),
        Arc::default(),
    );
    let c = controller(&store, &bridge, &vx, &paths, true).await;
    World {
        store,
        bridge,
        vx,
        paths,
        c,
    }
}

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn net(name: &str, driver: &str, subnet: &str, internal: bool) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        driver: driver.into(),
        internal,
        ipv4: vec![IpamPoolSpec {
            subnet: Some(subnet.into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The sandbox's endpoints as (network name, endpoint name, interface, IPv4).
async fn eps_of(c: &Controller, sandbox: &str) -> Vec<(String, String, String, String)> {
    let s = ok("sandbox", c.sandbox(sandbox).await);
    ok("endpoints", c.sandbox_endpoints(&s).await)
        .into_iter()
        .map(|(ep, n)| {
            (
                n.name,
                ep.name,
                ep.interface.unwrap_or_default(),
                ep.ipv4.map(|a| a.addr().to_string()).unwrap_or_default(),
            )
        })
        .collect()
}

fn gateway_name(sandbox: &Sandbox) -> String {
    format!("gateway_{}", &sandbox.id[..12])
}

#[tokio::test]
async fn a_network_without_a_gateway_brings_the_gateway_endpoint_and_takes_it_away() {
    let w = world().await;
    ok(
        "o1",
        w.c.create_network(net("o1", "vx", "10.1.0.0/24", false))
            .await,
    );
    ok(
        "b1",
        w.c.create_network(net("b1", "bridge", "10.2.0.0/24", false))
            .await,
    );
    let s = ok("s", w.c.add_sandbox("s", "/x/s", false).await);
    ok(
        "connect o1",
        w.c.connect("s", "o1", EndpointSpec::default()).await,
    );
    // The gateway network was made on first need, and the sandbox is on it.
    let eps = eps_of(&w.c, "s").await;
    assert_eq!(eps.len(), 2, "{eps:?}");
    assert_eq!(eps[0].0, "o1");
    assert_eq!(
        (eps[1].0.as_str(), eps[1].1.clone(), eps[1].2.as_str()),
        ("docker_gwbridge", gateway_name(&s), "eth1")
    );
    let gw_addr = eps[1].3.clone();
    let gw = ok("gwbridge", w.c.network("docker_gwbridge").await);
    assert_eq!(
        gw.spec.options["com.docker.network.bridge.enable_icc"],
        "false"
    );
    let on_gw = ok("endpoints", w.c.endpoints(&gw.id).await);
    assert!(on_gw.len() == 1 && on_gw[0].egress, "{on_gw:?}");

    // Removing the gateway network, or disconnecting from it by hand, is refused, naming it.
    let err =
        w.c.delete_network("docker_gwbridge")
            .await
            .map(|_| ())
            .unwrap_err();
    assert_eq!(err.http_status(), 409);
    let msg = err.to_string();
    assert!(
        msg.contains(&gateway_name(&s)) && msg.contains("way out"),
        "{msg}"
    );
    let err =
        w.c.disconnect("s", "docker_gwbridge")
            .await
            .map(|_| ())
            .unwrap_err();
    assert!(err.to_string().contains("way out"), "{err}");

    // A network with a gateway makes it unneeded: removed; leaving that network brings it back,
    // with the same address (the first one was given back).
    ok(
        "connect b1",
        w.c.connect("s", "b1", EndpointSpec::default()).await,
    );
    let eps = eps_of(&w.c, "s").await;
    assert_eq!(
        eps.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["o1", "b1"]
    );
    ok("disconnect b1", w.c.disconnect("s", "b1").await);
    let eps = eps_of(&w.c, "s").await;
    assert_eq!(
        eps.iter()
            .map(|e| (e.0.as_str(), e.3.as_str()))
            .collect::<Vec<_>>(),
        [("o1", "10.1.0.2"), ("docker_gwbridge", gw_addr.as_str())]
    );

    // Leaving the last network without a gateway takes it away; the gateway network stays
    // (as Docker's) and can be removed once unused.
    ok("disconnect o1", w.c.disconnect("s", "o1").await);
    assert!(eps_of(&w.c, "s").await.is_empty());
    assert!(lock(&w.bridge.endpoints).is_empty() && lock(&w.bridge.joined).is_empty());
    ok(
        "connect o1 again",
        w.c.connect("s", "o1", EndpointSpec::default()).await,
    );
    assert_eq!(
        eps_of(&w.c, "s").await[1].3,
        gw_addr,
        "address not given back"
    );
    // Removing the sandbox takes it with the others.
    ok("rm", w.c.delete_sandbox("s").await);
    assert!(ok("endpoints", w.c.endpoints(&gw.id).await).is_empty());
    ok("rm gwbridge", w.c.delete_network("docker_gwbridge").await);
    assert!(lock(&w.vx.endpoints).is_empty() && lock(&w.bridge.endpoints).is_empty());
}

#[tokio::test]
async fn internal_networks_and_networks_with_a_gateway_get_no_gateway_endpoint() {
    let w = world().await;
    ok(
        "i1",
        w.c.create_network(net("i1", "vx", "10.1.0.0/24", true))
            .await,
    );
    ok(
        "b1",
        w.c.create_network(net("b1", "bridge", "10.2.0.0/24", false))
            .await,
    );
    ok(
        "o1",
        w.c.create_network(net("o1", "vx", "10.3.0.0/24", false))
            .await,
    );
    ok("s", w.c.add_sandbox("s", "/x/s", false).await);
    ok(
        "connect i1",
        w.c.connect("s", "i1", EndpointSpec::default()).await,
    );
    ok(
        "connect b1",
        w.c.connect("s", "b1", EndpointSpec::default()).await,
    );
    ok(
        "connect o1",
        w.c.connect("s", "o1", EndpointSpec::default()).await,
    );
    let eps = eps_of(&w.c, "s").await;
    assert_eq!(
        eps.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["i1", "b1", "o1"]
    );
    // Nothing made the gateway network.
    assert!(w.c.network("docker_gwbridge").await.is_err());
}

#[tokio::test]
async fn a_failed_gateway_join_undoes_the_whole_connect() {
    let w = world().await;
    ok(
        "o1",
        w.c.create_network(net("o1", "vx", "10.1.0.0/24", false))
            .await,
    );
    ok("s", w.c.add_sandbox("s", "/x/s", false).await);
    lock(&w.bridge.fail_join).insert("docker_gwbridge".into());
    let err =
        w.c.connect("s", "o1", EndpointSpec::default())
            .await
            .map(|_| ())
            .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("docker_gwbridge") && msg.contains("injected join failure"),
        "{msg}"
    );
    // Nothing is left: no endpoint, no record, no gateway network (made by this connect).
    assert!(eps_of(&w.c, "s").await.is_empty());
    assert!(lock(&w.vx.endpoints).is_empty() && lock(&w.bridge.endpoints).is_empty());
    assert!(w.c.network("docker_gwbridge").await.is_err());
    // The addresses were given back: the next connect gets the first one again.
    lock(&w.bridge.fail_join).clear();
    let ep = ok(
        "connect",
        w.c.connect("s", "o1", EndpointSpec::default()).await,
    );
    assert_eq!(
        ep.ipv4.map(|a| a.addr().to_string()).as_deref(),
        Some("10.1.0.2")
    );
}

#[tokio::test]
async fn sandbox_creation_attaches_the_gateway_in_its_one_transaction_or_undoes_it_all() {
    let w = world().await;
    ok(
        "o1",
        w.c.create_network(net("o1", "vx", "10.1.0.0/24", false))
            .await,
    );
    // A gateway network a user made first is used as it is (its own subnet).
    let mut mine = net("docker_gwbridge", "bridge", "10.200.0.0/24", false);
    mine.options
        .insert("com.docker.network.bridge.enable_icc".into(), "true".into());
    ok("docker_gwbridge", w.c.create_network(mine).await);
    let spec = |name: &str| SandboxSpec {
        name: name.into(),
        networks: vec![("o1".into(), EndpointSpec::default())],
        ..Default::default()
    };
    let s = ok("create", w.c.create_sandbox(spec("s")).await);
    assert_eq!(s.endpoints.len(), 2);
    let eps = eps_of(&w.c, "s").await;
    assert_eq!(
        (eps[1].0.as_str(), eps[1].1.clone(), eps[1].3.as_str()),
        ("docker_gwbridge", gateway_name(&s), "10.200.0.2")
    );
    let gw = ok("gwbridge", w.c.network("docker_gwbridge").await);
    assert_eq!(
        gw.spec.options["com.docker.network.bridge.enable_icc"],
        "true"
    );

    // A failed gateway join undoes the creation: no sandbox, endpoint, namespace or address;
    // the user's gateway network stays.
    lock(&w.bridge.fail_join).insert("docker_gwbridge".into());
    let err = w.c.create_sandbox(spec("t")).await.map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("docker_gwbridge"), "{err}");
    assert!(w.c.sandbox("t").await.is_err());
    assert_eq!(
        *lock(&w.paths.0),
        BTreeSet::from(["/run/netns/s".to_string()])
    );
    assert_eq!(lock(&w.vx.endpoints).len(), 1);
    assert_eq!(lock(&w.bridge.endpoints).len(), 1);
    assert!(w.c.network("docker_gwbridge").await.is_ok());
    lock(&w.bridge.fail_join).clear();
    ok("create t", w.c.create_sandbox(spec("t")).await);
    let eps = eps_of(&w.c, "t").await;
    assert_eq!(
        (eps[0].3.as_str(), eps[1].3.as_str()),
        ("10.1.0.3", "10.200.0.3")
    );
    let _ = &w.store;
}

#[tokio::test]
async fn reconciliation_settles_what_a_crash_left() {
    let w = world().await;
    // A controller without the gateway network stands for a daemon that crashed between a
    // connect and its gateway step: the sandbox is on o1 with no way out. (One controller at
    // a time on the store: each keeps the event log's head.)
    let old = controller(&w.store, &w.bridge, &w.vx, &w.paths, false).await;
    ok(
        "o1",
        old.create_network(net("o1", "vx", "10.1.0.0/24", false))
            .await,
    );
    let s = ok("s", old.add_sandbox("s", "/x/s", false).await);
    ok(
        "connect",
        old.connect("s", "o1", EndpointSpec::default()).await,
    );
    assert_eq!(eps_of(&old, "s").await.len(), 1);
    drop(old);
    let new = controller(&w.store, &w.bridge, &w.vx, &w.paths, true).await;
    let report = ok("reconcile", new.reconcile(ReconcileMode::Startup).await);
    assert_eq!(report.gateways, vec![s.id.clone()]);
    let eps = eps_of(&new, "s").await;
    assert_eq!(eps.len(), 2, "{eps:?}");
    assert_eq!(eps[1].1, gateway_name(&s));
    // Settled: the next pass does nothing.
    let report = ok("reconcile", new.reconcile(ReconcileMode::Periodic).await);
    assert!(report.gateways.is_empty(), "{report:?}");
    drop(new);
    // The other way: o1 left without the gateway step; the pass removes the gateway endpoint.
    let old = controller(&w.store, &w.bridge, &w.vx, &w.paths, false).await;
    ok("disconnect", old.disconnect("s", "o1").await);
    assert_eq!(eps_of(&old, "s").await.len(), 1);
    drop(old);
    let new = controller(&w.store, &w.bridge, &w.vx, &w.paths, true).await;
    let report = ok("reconcile", new.reconcile(ReconcileMode::Periodic).await);
    assert_eq!(report.gateways, vec![s.id.clone()]);
    assert!(eps_of(&new, "s").await.is_empty());
    assert!(lock(&w.bridge.endpoints).is_empty());
    let _ = &w.c;
}
