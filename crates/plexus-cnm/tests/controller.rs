//! The controller with a recording driver, the built-in IPAM and a memory store: what users
//! see (names, addresses, errors) and that failures leave nothing behind.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use plexus_cnm::*;
use plexus_ipam::{BuiltinIpam, IpamConfig};
use plexus_kv::Store;

/// A driver that records what it was asked and fails where told.
#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<String>>,
    fail: Mutex<Option<&'static str>>,
    networks: Mutex<BTreeMap<String, NetworkInfo>>,
    endpoints: Mutex<BTreeMap<String, EndpointInfo>>,
}

impl Recorder {
    fn fail_at(&self, step: &'static str) {
        *self.fail.lock().unwrap_or_else(|e| e.into_inner()) = Some(step);
    }
    fn step(&self, step: &'static str, detail: &str) -> Result<(), DriverError> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(format!("{step} {detail}"));
        if *self.fail.lock().unwrap_or_else(|e| e.into_inner()) == Some(step) {
            return Err(DriverError::Failed(format!("injected failure at {step}")));
        }
        Ok(())
    }
    fn live_endpoints(&self) -> usize {
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
    fn live_networks(&self) -> usize {
        self.networks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[async_trait]
impl Driver for Recorder {
    fn name(&self) -> &str {
        "bridge"
    }
    fn capability(&self) -> Capability {
        Capability {
            scope: Scope::Local,
            connectivity: Scope::Local,
            needs_ipam: true,
            multiple_networks: true,
        }
    }
    fn validate_options(&self, options: &BTreeMap<String, String>) -> Result<(), DriverError> {
        for key in options.keys() {
            if !key.starts_with("com.docker.network.") {
                return Err(DriverError::Invalid(format!("unknown option {key:?}")));
            }
        }
        Ok(())
    }
    async fn create_network(&self, network: &NetworkInfo) -> Result<(), DriverError> {
        self.step("create_network", &network.name)?;
        self.networks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(network.id.clone(), network.clone());
        Ok(())
    }
    async fn delete_network(&self, network_id: &str) -> Result<(), DriverError> {
        self.networks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(network_id);
        self.step("delete_network", network_id)
    }
    async fn create_endpoint(
        &self,
        endpoint: &EndpointInfo,
    ) -> Result<EndpointCreated, DriverError> {
        self.step("create_endpoint", &endpoint.endpoint_id)?;
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(endpoint.endpoint_id.clone(), endpoint.clone());
        Ok(EndpointCreated {
            mac: Some("02:42:ac:11:00:02".into()),
            ports: endpoint.ports.clone(),
        })
    }
    async fn delete_endpoint(
        &self,
        _network_id: &str,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(endpoint_id);
        self.step("delete_endpoint", endpoint_id)
    }
    async fn join(
        &self,
        _n: &str,
        endpoint_id: &str,
        key: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        self.step("join", &format!("{endpoint_id} {key}"))?;
        Ok(Joined {
            interface: Some(interface.guess()),
            ..Joined::default()
        })
    }
    async fn leave(&self, _n: &str, endpoint_id: &str) -> Result<(), DriverError> {
        self.step("leave", endpoint_id)
    }
}

struct World {
    store: Arc<dyn Store>,
    driver: Arc<Recorder>,
    controller: Controller,
}

async fn controller_on(store: Arc<dyn Store>, driver: Arc<Recorder>) -> Controller {
    let ipam = BuiltinIpam::open(store.clone(), IpamConfig::new("host-1"))
        .await
        .unwrap_or_else(|e| panic!("ipam: {e}"));
    let mut drivers = DriverRegistry::new();
    drivers.register(driver);
    Controller::new(store, Arc::new(ipam), drivers, ControllerConfig::default())
}

async fn world() -> World {
    let store = plexus_kv::open("memory://", Default::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let driver = Arc::new(Recorder::default());
    let controller = controller_on(store.clone(), driver.clone()).await;
    World {
        store,
        driver,
        controller,
    }
}

fn spec(name: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        ..Default::default()
    }
}

fn with_subnet(name: &str, subnet: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        ipv4: vec![IpamPoolSpec {
            subnet: Some(subnet.into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[tokio::test]
async fn networks_get_docker_default_subnets_and_unique_names() {
    let w = world().await;
    let n1 = ok("create", w.controller.create_network(spec("n1")).await);
    assert_eq!(n1.driver, "bridge");
    assert_eq!(n1.id.len(), 64);
    assert_eq!(n1.ipv4[0].subnet.to_string(), "172.17.0.0/16");
    assert_eq!(
        n1.ipv4[0].gateway.map(|g| g.to_string()).as_deref(),
        Some("172.17.0.1/16")
    );
    let n2 = ok("create", w.controller.create_network(spec("n2")).await);
    assert_eq!(n2.ipv4[0].subnet.to_string(), "172.18.0.0/16");
    match w.controller.create_network(spec("n1")).await {
        Err(e @ CnmError::Exists { .. }) => {
            assert_eq!(e.to_string(), "network with name n1 already exists");
            assert_eq!(e.http_status(), 409);
        }
        other => panic!("duplicate gave {other:?}"),
    }
    // Lookup by name, id and id prefix.
    assert_eq!(ok("by name", w.controller.network("n2").await).id, n2.id);
    assert_eq!(ok("by id", w.controller.network(&n2.id).await).name, "n2");
    assert_eq!(
        ok("by prefix", w.controller.network(&n2.id[..12]).await).name,
        "n2"
    );
    let names: Vec<String> = ok("list", w.controller.networks().await)
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["n1", "n2"]);
}

#[tokio::test]
async fn bad_network_requests_name_the_field_and_allocate_nothing() {
    let w = world().await;
    for (bad, field) in [
        (spec(""), "network name"),
        (spec("-x"), "network name"),
        (spec("a b"), "network name"),
        (
            NetworkSpec {
                driver: "nosuch".into(),
                ..spec("n")
            },
            "driver",
        ),
    ] {
        match w.controller.create_network(bad).await {
            Err(CnmError::Invalid { field: f, .. }) => assert_eq!(f, field),
            other => panic!("gave {other:?}"),
        }
    }
    let unknown = w
        .controller
        .create_network(NetworkSpec {
            driver: "nosuch".into(),
            ..spec("n")
        })
        .await;
    assert!(unknown
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("known drivers: bridge"));
    let opt = NetworkSpec {
        options: [("bogus".to_string(), "1".to_string())].into(),
        ..spec("n")
    };
    match w.controller.create_network(opt).await {
        Err(e @ CnmError::Invalid { .. }) => assert!(e.to_string().contains("bogus"), "{e}"),
        other => panic!("gave {other:?}"),
    }
    match w
        .controller
        .create_network(with_subnet("n", "10.1.0.0/33"))
        .await
    {
        Err(e) => assert_eq!(e.http_status(), 400, "{e}"),
        Ok(n) => panic!("accepted {n:?}"),
    }
    // None of the refused requests used a pool: the first default is still free.
    assert_eq!(
        ok("create", w.controller.create_network(spec("ok")).await).ipv4[0]
            .subnet
            .to_string(),
        "172.17.0.0/16"
    );
}

#[tokio::test]
async fn driver_failure_releases_the_pool() {
    let w = world().await;
    w.driver.fail_at("create_network");
    assert!(matches!(
        w.controller.create_network(spec("n1")).await,
        Err(CnmError::Driver { .. })
    ));
    assert!(ok("list", w.controller.networks().await).is_empty());
    *w.driver.fail.lock().unwrap_or_else(|e| e.into_inner()) = None;
    assert_eq!(
        ok("create", w.controller.create_network(spec("n1")).await).ipv4[0]
            .subnet
            .to_string(),
        "172.17.0.0/16"
    );
}

#[tokio::test]
async fn connect_and_disconnect_give_and_return_addresses() {
    let w = world().await;
    let net = ok(
        "net",
        w.controller
            .create_network(with_subnet("n1", "10.9.0.0/24"))
            .await,
    );
    let s1 = ok(
        "s1",
        w.controller.add_sandbox("s1", "/run/netns/s1", true).await,
    );
    let s2 = ok(
        "s2",
        w.controller.add_sandbox("s2", "/run/netns/s2", true).await,
    );
    let e1 = ok(
        "connect",
        w.controller
            .connect("s1", "n1", EndpointSpec::default())
            .await,
    );
    assert_eq!(
        e1.ipv4.map(|a| a.to_string()).as_deref(),
        Some("10.9.0.2/24")
    );
    assert_eq!(e1.interface.as_deref(), Some("eth0"));
    let e2 = ok(
        "connect",
        w.controller
            .connect(
                &s2.id,
                &net.id,
                EndpointSpec {
                    ipv4: Some("10.9.0.77".into()),
                    ..Default::default()
                },
            )
            .await,
    );
    assert_eq!(
        e2.ipv4.map(|a| a.addr().to_string()).as_deref(),
        Some("10.9.0.77")
    );
    assert!(matches!(
        w.controller
            .connect("s1", "n1", EndpointSpec::default())
            .await,
        Err(CnmError::Exists { .. })
    ));
    match w
        .controller
        .connect("s2", "n1", EndpointSpec::default())
        .await
    {
        Err(e) => assert!(e.to_string().contains("already exists"), "{e}"),
        Ok(e) => panic!("connected twice: {e:?}"),
    }
    let taken = w
        .controller
        .connect(&s1.id, "n1", EndpointSpec::default())
        .await;
    assert!(taken.is_err());
    assert_eq!(
        ok("sandbox", w.controller.sandbox("s1").await).endpoints,
        vec![e1.id.clone()]
    );
    assert_eq!(
        ok("endpoints", w.controller.endpoints(&net.id).await).len(),
        2
    );
    // Deleting a network in use names who uses it.
    match w.controller.delete_network("n1").await {
        Err(e @ CnmError::InUse { .. }) => {
            let m = e.to_string();
            assert!(m.contains("s1") && m.contains("s2"), "{m}");
        }
        other => panic!("gave {other:?}"),
    }
    ok("disconnect", w.controller.disconnect("s1", "n1").await);
    assert!(ok("sandbox", w.controller.sandbox("s1").await)
        .endpoints
        .is_empty());
    // The released address is handed out again (lowest free).
    let s3 = ok(
        "s3",
        w.controller.add_sandbox("s3", "/run/netns/s3", true).await,
    );
    let e3 = ok(
        "connect",
        w.controller
            .connect(&s3.name, "n1", EndpointSpec::default())
            .await,
    );
    assert_eq!(
        e3.ipv4.map(|a| a.to_string()).as_deref(),
        Some("10.9.0.2/24")
    );
    // Deleting a sandbox disconnects it.
    let removed = ok("delete sandbox", w.controller.delete_sandbox("s3").await);
    assert!(removed.owned_netns);
    ok("delete sandbox", w.controller.delete_sandbox("s2").await);
    assert_eq!(w.driver.live_endpoints(), 0);
    ok("delete network", w.controller.delete_network("n1").await);
    assert_eq!(w.driver.live_networks(), 0);
    assert!(matches!(
        w.controller.network("n1").await,
        Err(CnmError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_failed_join_leaves_no_endpoint_and_no_address() {
    let w = world().await;
    ok(
        "net",
        w.controller
            .create_network(with_subnet("n1", "10.8.0.0/24"))
            .await,
    );
    ok(
        "s1",
        w.controller.add_sandbox("s1", "/run/netns/s1", false).await,
    );
    w.driver.fail_at("join");
    match w
        .controller
        .connect("s1", "n1", EndpointSpec::default())
        .await
    {
        Err(e @ CnmError::Driver { .. }) => {
            assert!(e.to_string().contains("injected failure at join"), "{e}")
        }
        other => panic!("gave {other:?}"),
    }
    assert_eq!(w.driver.live_endpoints(), 0, "driver endpoint left behind");
    assert!(ok(
        "endpoints",
        w.controller
            .endpoints(&ok("n", w.controller.network("n1").await).id)
            .await
    )
    .is_empty());
    assert!(ok("sandbox", w.controller.sandbox("s1").await)
        .endpoints
        .is_empty());
    *w.driver.fail.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let e = ok(
        "connect",
        w.controller
            .connect("s1", "n1", EndpointSpec::default())
            .await,
    );
    assert_eq!(
        e.ipv4.map(|a| a.to_string()).as_deref(),
        Some("10.8.0.2/24"),
        "address leaked"
    );
}

#[tokio::test]
async fn endpoint_requests_are_checked() {
    let w = world().await;
    ok("default", w.controller.create_network(spec("auto")).await);
    ok(
        "s1",
        w.controller.add_sandbox("s1", "/run/netns/s1", false).await,
    );
    match w
        .controller
        .connect(
            "s1",
            "auto",
            EndpointSpec {
                ipv4: Some("172.17.0.9".into()),
                ..Default::default()
            },
        )
        .await
    {
        Err(CnmError::Invalid { field, reason }) => {
            assert_eq!(field, "ip");
            assert!(reason.contains("user configured subnets"), "{reason}");
        }
        other => panic!("gave {other:?}"),
    }
    assert!(matches!(
        w.controller
            .connect("nobody", "auto", EndpointSpec::default())
            .await,
        Err(CnmError::NotFound {
            kind: "sandbox",
            ..
        })
    ));
    assert!(matches!(
        w.controller
            .connect("s1", "nonet", EndpointSpec::default())
            .await,
        Err(CnmError::NotFound {
            kind: "network",
            ..
        })
    ));
    assert!(matches!(
        w.controller.add_sandbox("s1", "/x", false).await,
        Err(CnmError::Exists {
            kind: "sandbox",
            ..
        })
    ));
    ok(
        "net",
        w.controller
            .create_network(with_subnet("fixed", "10.7.0.0/24"))
            .await,
    );
    match w
        .controller
        .connect(
            "s1",
            "fixed",
            EndpointSpec {
                ipv4: Some("10.6.0.9".into()),
                ..Default::default()
            },
        )
        .await
    {
        Err(e) => assert_eq!(e.http_status(), 400, "{e}"),
        Ok(e) => panic!("accepted {e:?}"),
    }
    assert!(ok("sandbox", w.controller.sandbox("s1").await)
        .endpoints
        .is_empty());
}

#[tokio::test]
async fn state_survives_a_new_controller_on_the_same_store() {
    let w = world().await;
    let net = ok(
        "net",
        w.controller
            .create_network(with_subnet("n1", "10.5.0.0/24"))
            .await,
    );
    ok(
        "s1",
        w.controller.add_sandbox("s1", "/run/netns/s1", true).await,
    );
    let e1 = ok(
        "connect",
        w.controller
            .connect("s1", "n1", EndpointSpec::default())
            .await,
    );
    drop(w.controller);
    let again = controller_on(w.store.clone(), w.driver.clone()).await;
    assert_eq!(ok("network", again.network("n1").await), net);
    assert_eq!(ok("endpoints", again.endpoints(&net.id).await), vec![e1]);
    ok("s2", again.add_sandbox("s2", "/run/netns/s2", true).await);
    let e2 = ok(
        "connect",
        again.connect("s2", "n1", EndpointSpec::default()).await,
    );
    assert_eq!(
        e2.ipv4.map(|a| a.to_string()).as_deref(),
        Some("10.5.0.3/24"),
        "address handed out twice"
    );
}

#[tokio::test]
async fn prune_removes_unused_networks_only() {
    let w = world().await;
    ok("a", w.controller.create_network(spec("a")).await);
    ok("b", w.controller.create_network(spec("b")).await);
    ok(
        "s",
        w.controller.add_sandbox("s", "/run/netns/s", false).await,
    );
    ok(
        "connect",
        w.controller
            .connect("s", "b", EndpointSpec::default())
            .await,
    );
    assert_eq!(ok("prune", w.controller.prune_networks().await), ["a"]);
    let left: Vec<String> = ok("list", w.controller.networks().await)
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(left, ["b"]);
}
