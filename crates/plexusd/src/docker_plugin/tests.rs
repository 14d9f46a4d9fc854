//! Protocol tests of the handlers, without dockerd or a kernel: the calls dockerd makes, in
//! its order, against a controller with a fake `bridge` driver and the real built-in IPAM
//! over a memory store. What dockerd sees: the answers, the errors naming their field, and
//! that Plexus's records and IPAM end empty.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use async_trait::async_trait;
use plexus_cnm::{
    Capability, ControllerConfig, Driver, DriverError, DriverRegistry, EndpointCreated,
    EndpointInfo, InterfaceName, Joined, Namespaces, NetworkInfo, Scope,
};
use plexus_ipam::plugin::{PluginAddr, PluginClient, Timeouts};
use plexus_ipam::{BuiltinIpam, IpamConfig, IpamError};
use serde_json::{json, Value};

use super::*;

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn lock<T>(m: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `bridge` driver that keeps what it was asked, and refuses `plexus.*` options it does not
/// know (as the real one does).
#[derive(Default)]
struct FakeBridge {
    joined: StdMutex<BTreeSet<String>>,
}

#[async_trait]
impl Driver for FakeBridge {
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
        match options.keys().find(|k| k.starts_with("plexus.")) {
            Some(k) => Err(DriverError::Invalid(format!("unknown option {k}"))),
            None => Ok(()),
        }
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
        id: &str,
        _: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        assert!(interface.handoff, "dockerd's joins hand the interface over");
        lock(&self.joined).insert(id.to_string());
        Ok(Joined {
            interface: Some(format!("plxc{}", &id[..8])),
            ..Joined::default()
        })
    }
    async fn leave(&self, _: &str, id: &str) -> Result<(), DriverError> {
        lock(&self.joined).remove(id);
        Ok(())
    }
}

/// Namespaces handed over only: nothing to make or delete.
struct Given;

#[async_trait]
impl Namespaces for Given {
    async fn create(&self, name: &str) -> plexus_cnm::Result<String> {
        Err(plexus_cnm::CnmError::invalid(
            "netns",
            format!("{name}: none made here"),
        ))
    }
    async fn check(&self, _: &str) -> plexus_cnm::Result<()> {
        Ok(())
    }
    async fn delete(&self, _: &str) -> plexus_cnm::Result<()> {
        Ok(())
    }
}

/// No IPAM driver besides the ones the plugin adds.
struct NoDrivers;

#[async_trait]
impl IpamResolver for NoDrivers {
    async fn resolve(&self, name: &str) -> Result<Arc<dyn Ipam>, IpamError> {
        Err(IpamError::Driver {
            driver: name.into(),
            message: "unknown".into(),
        })
    }
}

struct World {
    ctx: Arc<Ctx>,
    store: Arc<dyn Store>,
    bridge: Arc<FakeBridge>,
}

async fn world() -> World {
    let store: Arc<dyn Store> = Arc::new(plexus_kv::LocalStore::memory());
    let builtin = ok(
        "ipam",
        BuiltinIpam::open(store.clone(), IpamConfig::new("h")).await,
    );
    let (ipam, resolver) = wire_ipam(store.clone(), Arc::new(builtin), Arc::new(NoDrivers));
    let bridge = Arc::new(FakeBridge::default());
    let mut drivers = DriverRegistry::new();
    drivers.register(bridge.clone());
    let controller = Controller::new(store.clone(), ipam, drivers, ControllerConfig::default())
        .with_ipam_resolver(resolver)
        .with_namespaces(Arc::new(Given));
    World {
        ctx: Arc::new(Ctx::new(Arc::new(controller), "plexus-test")),
        store,
        bridge,
    }
}

async fn call(ctx: &Arc<Ctx>, op: &str, body: Value) -> Answer {
    dispatch(ctx, &format!("/{op}"), body.to_string().as_bytes())
        .await
        .unwrap_or_else(|| panic!("{op} is not served"))
}

async fn must(ctx: &Arc<Ctx>, op: &str, body: Value) -> Value {
    call(ctx, op, body)
        .await
        .unwrap_or_else(|e| panic!("{op}: {e}"))
}

async fn refused(ctx: &Arc<Ctx>, op: &str, body: Value) -> String {
    match call(ctx, op, body).await {
        Ok(v) => panic!("{op} should be refused, answered {v}"),
        Err(e) => e.0,
    }
}

const NID: &str = "4f1b5c1e0a7d2b9c8e6f4a3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";
const EID: &str = "9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b";

/// dockerd's `--ipam-driver plexus-test`: pools and addresses are the built-in IPAM's,
/// overlapping pools are refused, addresses outside the pool or never given are refused
/// naming the field, and every release leaves nothing held.
#[tokio::test]
async fn pools_and_addresses_are_plexus_allocations() {
    let w = world().await;
    let c = &w.ctx;
    let pool = must(
        c,
        "IpamDriver.RequestPool",
        json!({"AddressSpace": "local", "Pool": "10.50.0.0/24", "V6": false}),
    )
    .await;
    let id = pool["PoolID"].as_str().unwrap_or_default().to_string();
    assert_eq!(pool["Pool"], "10.50.0.0/24");
    let e = refused(
        c,
        "IpamDriver.RequestPool",
        json!({"AddressSpace": "local", "Pool": "10.50.0.0/25"}),
    )
    .await;
    assert!(e.contains("overlaps 10.50.0.0/24"), "{e}");
    let e = refused(
        c,
        "IpamDriver.RequestPool",
        json!({"AddressSpace": "global"}),
    )
    .await;
    assert!(e.starts_with("AddressSpace:"), "{e}");
    let gw = must(c, "IpamDriver.RequestAddress", json!({"PoolID": id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}})).await;
    assert_eq!(gw["Address"], "10.50.0.1/24");
    let a = must(
        c,
        "IpamDriver.RequestAddress",
        json!({"PoolID": id, "Address": "10.50.0.7"}),
    )
    .await;
    assert_eq!(a["Address"], "10.50.0.7/24");
    let e = refused(
        c,
        "IpamDriver.RequestAddress",
        json!({"PoolID": id, "Address": "10.51.0.7"}),
    )
    .await;
    assert_eq!(e, "Address: 10.51.0.7 is outside the pool 10.50.0.0/24");
    let e = refused(
        c,
        "IpamDriver.RequestAddress",
        json!({"PoolID": "local/nosuch"}),
    )
    .await;
    assert!(e.starts_with("PoolID:"), "{e}");
    let e = refused(
        c,
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": id, "Address": "10.50.0.9"}),
    )
    .await;
    assert!(e.starts_with("Address: 10.50.0.9 is not held"), "{e}");
    let held = ok("held", held_allocations(&w.store).await);
    assert_eq!(held.len(), 1);
    assert_eq!(held[&id].len(), 2, "{held:?}");
    must(
        c,
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": id, "Address": "10.50.0.7"}),
    )
    .await;
    must(
        c,
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": id, "Address": "10.50.0.1"}),
    )
    .await;
    must(c, "IpamDriver.ReleasePool", json!({"PoolID": id})).await;
    assert!(ok("held", held_allocations(&w.store).await).is_empty());
    // The pool is free again, for Plexus's own networks too.
    let again = ok(
        "pool again",
        c.controller
            .ipam()
            .request_pool(plexus_ipam::PoolRequest::new("local", "n").subnet("10.50.0.0/24"))
            .await,
    );
    assert_eq!(again.pool.to_string(), "10.50.0.0/24");
}

/// dockerd's whole sequence for a network and a container on it, with the plugin's IPAM:
/// the Plexus network adopts dockerd's pool and gateway, the join connects the namespace
/// with dockerd's address and answers nothing for libnetwork to do, the leave removes the
/// sandbox without releasing what dockerd releases itself, and at the end nothing is left.
#[tokio::test]
async fn a_network_and_a_container_through_dockerds_calls() {
    let w = world().await;
    let c = &w.ctx;
    let pool = must(
        c,
        "IpamDriver.RequestPool",
        json!({"AddressSpace": "local", "Pool": "10.60.0.0/24"}),
    )
    .await;
    let id = pool["PoolID"].as_str().unwrap_or_default().to_string();
    must(
        c,
        "IpamDriver.RequestAddress",
        json!({"PoolID": id, "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    )
    .await;
    must(c, "NetworkDriver.CreateNetwork", json!({
        "NetworkID": NID,
        "Options": {"com.docker.network.generic": {"com.docker.network.bridge.enable_icc": "true"}, "com.docker.network.enable_ipv6": false},
        "IPv4Data": [{"AddressSpace": "local", "Pool": "10.60.0.0/24", "Gateway": "10.60.0.1/24"}],
        "IPv6Data": [],
    })).await;
    let n = ok(
        "network",
        c.controller
            .network(&format!("docker-{}", &NID[..12]))
            .await,
    );
    assert_eq!(n.spec.ipam_driver, adopt::ADOPT_DRIVER);
    assert_eq!(n.ipv4[0].pool_id, format!("docker/{id}"));
    assert_eq!(
        n.ipv4[0].gateway.map(|g| g.to_string()).as_deref(),
        Some("10.60.0.1/24")
    );
    assert_eq!(
        n.spec
            .labels
            .get(network::LABEL_DOCKER_NETWORK)
            .map(String::as_str),
        Some(NID)
    );
    // Again (dockerd replaying): nothing new.
    must(
        c,
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": NID, "IPv4Data": [{"Pool": "10.60.0.0/24"}]}),
    )
    .await;

    let addr = must(c, "IpamDriver.RequestAddress", json!({"PoolID": id})).await;
    let addr = addr["Address"].as_str().unwrap_or_default().to_string();
    assert_eq!(addr, "10.60.0.2/24");
    let e = refused(
        c,
        "NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.61.0.2/24"}}),
    )
    .await;
    assert_eq!(
        e,
        "Interface.Address: 10.61.0.2 is outside the network's pool 10.60.0.0/24"
    );
    let created = must(c, "NetworkDriver.CreateEndpoint", json!({
        "NetworkID": NID, "EndpointID": EID, "Interface": {"Address": addr},
        "Options": {"com.docker.network.portmap": [{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}]},
    })).await;
    assert_eq!(
        created,
        json!({"Interface": {"Address": "", "AddressIPv6": "", "MacAddress": "02:42:0a:3c:00:02"}})
    );
    // A namespace that exists (this process's): the join is done before the answer.
    let joined = must(c, "NetworkDriver.Join", json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/proc/self/ns/net", "Options": {}})).await;
    let sandbox = ok("sandbox", c.controller.sandbox("docker-net").await);
    let eps = ok("endpoints", c.controller.sandbox_endpoints(&sandbox).await);
    assert_eq!(eps.len(), 1);
    assert_eq!(
        joined,
        json!({
            "InterfaceName": {"SrcName": eps[0].0.interface, "DstPrefix": "eth"},
            "Gateway": "10.60.0.1",
            "DisableGatewayService": true,
        })
    );
    assert_eq!(
        eps[0].0.ipv4.map(|a| a.to_string()).as_deref(),
        Some("10.60.0.2/24")
    );
    let rec: Option<state::EndpointRecord> =
        ok("record", c.state.get(&state::endpoint_key(EID)).await);
    let rec = rec.unwrap_or_else(|| panic!("no endpoint record"));
    assert!(rec.attached);
    assert_eq!(rec.ports.len(), 1, "{:?}", rec.ports);
    assert_eq!(
        (rec.ports[0].container_port, rec.ports[0].host_port),
        (80, 8080)
    );
    assert_eq!(lock(&w.bridge.joined).len(), 1);
    let e = refused(
        c,
        "NetworkDriver.Join",
        json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/proc/self/ns/net"}),
    )
    .await;
    assert!(e.starts_with("EndpointID:"), "{e}");
    must(
        c,
        "NetworkDriver.ProgramExternalConnectivity",
        json!({"NetworkID": NID, "EndpointID": EID, "Options": {}}),
    )
    .await;

    must(
        c,
        "NetworkDriver.Leave",
        json!({"NetworkID": NID, "EndpointID": EID}),
    )
    .await;
    assert!(
        c.controller.sandbox("docker-net").await.is_err(),
        "sandbox removed with its last network"
    );
    assert!(lock(&w.bridge.joined).is_empty());
    // Plexus released nothing: dockerd still holds its gateway and address.
    assert_eq!(ok("held", held_allocations(&w.store).await)[&id].len(), 2);
    must(
        c,
        "NetworkDriver.DeleteEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID}),
    )
    .await;
    must(
        c,
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": id, "Address": "10.60.0.2"}),
    )
    .await;
    must(c, "NetworkDriver.DeleteNetwork", json!({"NetworkID": NID})).await;
    assert!(c
        .controller
        .network(&format!("docker-{}", &NID[..12]))
        .await
        .is_err());
    must(
        c,
        "IpamDriver.ReleaseAddress",
        json!({"PoolID": id, "Address": "10.60.0.1"}),
    )
    .await;
    must(c, "IpamDriver.ReleasePool", json!({"PoolID": id})).await;
    assert!(ok("held", held_allocations(&w.store).await).is_empty());
    assert!(ok("records", w.store.list(state::ROOT).await).is_empty());
}

/// dockerd's own IPAM: the Plexus network takes dockerd's subnet, gateway and the
/// endpoint's address from Plexus's IPAM as given ones, and gives them back itself.
#[tokio::test]
async fn dockerds_own_ipam_is_taken_as_given_addresses() {
    let w = world().await;
    let c = &w.ctx;
    must(c, "NetworkDriver.CreateNetwork", json!({"NetworkID": NID, "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "172.30.0.0/16", "Gateway": "172.30.0.1/16"}]})).await;
    let n = ok(
        "network",
        c.controller
            .network(&format!("docker-{}", &NID[..12]))
            .await,
    );
    assert_eq!(n.spec.ipam_driver, "");
    must(c, "NetworkDriver.CreateEndpoint", json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "172.30.0.5/16", "MacAddress": "02:42:ac:1e:00:05"}})).await;
    must(
        c,
        "NetworkDriver.Join",
        json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/proc/self/ns/net"}),
    )
    .await;
    // The address is Plexus's now: dockerd's IPAM cannot be told, Plexus's refuses it twice.
    let taken = c
        .controller
        .ipam()
        .request_address(plexus_ipam::AddressRequest::preferred(
            &n.ipv4[0].pool_id,
            "172.30.0.5",
        ))
        .await;
    assert!(taken.is_err(), "{taken:?}");
    must(
        c,
        "NetworkDriver.Leave",
        json!({"NetworkID": NID, "EndpointID": EID}),
    )
    .await;
    must(
        c,
        "NetworkDriver.DeleteEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID}),
    )
    .await;
    must(c, "NetworkDriver.DeleteNetwork", json!({"NetworkID": NID})).await;
    let again = c
        .controller
        .ipam()
        .request_pool(plexus_ipam::PoolRequest::new("local", "n").subnet("172.30.0.0/16"))
        .await;
    assert!(again.is_ok(), "{again:?}");
}

/// What dockerd may send wrong, each refused with the field named and nothing made.
#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let w = world().await;
    let c = &w.ctx;
    let e = refused(
        c,
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": NID, "Options": {"com.docker.network.generic": {"mtu": 1500}}}),
    )
    .await;
    assert_eq!(
        e,
        "Options.com.docker.network.generic.mtu: 1500 is not a string"
    );
    let e = refused(
        c,
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": NID, "Options": {"com.docker.network.generic": {"plexus.bogus": "1"}}}),
    )
    .await;
    assert!(e.contains("plexus.bogus"), "{e}");
    let e = refused(
        c,
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": NID, "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.2.0.1/24"}]}),
    )
    .await;
    assert_eq!(
        e,
        "IPv4Data[0].Gateway: 10.2.0.1 is outside the pool 10.1.0.0/24"
    );
    let e = refused(
        c,
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": "../x"}),
    )
    .await;
    assert!(e.starts_with("NetworkID:"), "{e}");
    let e = refused(c, "NetworkDriver.CreateNetwork", json!("not an object")).await;
    assert!(e.starts_with("CreateNetwork: malformed request"), "{e}");
    assert!(
        ok("networks", c.controller.networks().await).is_empty(),
        "nothing made"
    );
    for op in [
        "DeleteNetwork",
        "CreateEndpoint",
        "Join",
        "Leave",
        "DeleteEndpoint",
    ] {
        let e = refused(
            c,
            &format!("NetworkDriver.{op}"),
            json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/proc/self/ns/net"}),
        )
        .await;
        assert!(
            e.starts_with(&format!("NetworkID: unknown network \"{NID}\"")),
            "{op}: {e}"
        );
    }
    must(
        c,
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": NID, "IPv4Data": [{"Pool": "10.1.0.0/24", "Gateway": "10.1.0.1/24"}]}),
    )
    .await;
    for op in ["Join", "Leave", "DeleteEndpoint", "EndpointOperInfo"] {
        let e = refused(
            c,
            &format!("NetworkDriver.{op}"),
            json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/proc/self/ns/net"}),
        )
        .await;
        assert!(
            e.starts_with(&format!("EndpointID: unknown endpoint \"{EID}\"")),
            "{op}: {e}"
        );
    }
    let e = refused(c, "NetworkDriver.CreateEndpoint", json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.1.0.2/24"}, "Options": {"com.docker.network.portmap": [{"Proto": 99, "Port": 80}]}})).await;
    assert!(
        e.starts_with("Options.com.docker.network.portmap[0].Proto: 99"),
        "{e}"
    );
    let e = refused(c, "NetworkDriver.CreateEndpoint", json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.1.0.2/24", "MacAddress": "nope"}})).await;
    assert!(e.starts_with("Interface.MacAddress:"), "{e}");
    let e = refused(
        c,
        "NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID, "Interface": {}}),
    )
    .await;
    assert!(e.starts_with("Interface.Address: missing"), "{e}");
    must(
        c,
        "NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.1.0.2/24"}}),
    )
    .await;
    let e = refused(
        c,
        "NetworkDriver.Join",
        json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": "relative/ns"}),
    )
    .await;
    assert!(e.starts_with("SandboxKey:"), "{e}");
    let e = refused(
        c,
        "NetworkDriver.AllocateNetwork",
        json!({"NetworkID": NID}),
    )
    .await;
    assert!(e.contains("local-scope networks only"), "{e}");
    assert!(dispatch(c, "/NetworkDriver.Nonsense", b"{}")
        .await
        .is_none());
    assert!(
        ok("sandboxes", c.controller.sandboxes().await).is_empty(),
        "nothing joined"
    );
}

/// `Plugin.Activate` answers while plexusd is still starting; the other calls wait for
/// `ready` and then run.
#[tokio::test]
async fn activation_answers_before_the_daemon_is_ready() {
    let dir = ok("tempdir", tempfile::tempdir());
    let socket = dir.path().join("plexus-unit.sock");
    let plugin = ok("bind", bind(&socket.display().to_string()).await);
    let Some(plugin) = plugin else {
        panic!("bound nothing")
    };
    let client = Arc::new(PluginClient::with_addr(
        "plexus-unit",
        PluginAddr::Unix(socket.clone()),
        Timeouts::both(Duration::from_secs(10)),
    ));
    let implements = ok("activate", client.activate_as("IpamDriver").await);
    assert_eq!(implements, vec!["NetworkDriver", "IpamDriver"]);
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call::<_, Value>("/NetworkDriver.GetCapabilities", &json!({}))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "answered before the daemon was ready"
    );
    plugin.ready(world().await.ctx.controller.clone());
    let caps = ok("capabilities", ok("join", waiting.await));
    assert_eq!(
        caps,
        json!({"Scope": "local", "ConnectivityScope": "local"})
    );
    let e = client
        .call::<_, Value>("/IpamDriver.RequestPool", &json!({"AddressSpace": "nope"}))
        .await;
    let e = e.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(e.contains("AddressSpace: unknown address space"), "{e}");
    drop(plugin);
    assert!(!socket.exists(), "socket removed when plexusd stops");
    assert!(ok("none", bind("none").await).is_none());
    let bad = bind(&dir.path().join("bad name.sock").display().to_string()).await;
    assert!(bad
        .err()
        .is_some_and(|e| e.to_string().contains("--docker-plugin-socket")));
}

/// A container being started: its namespace is not mounted yet when dockerd joins, and the
/// join is made and answered at once, with the interface for dockerd to move in. A
/// container gone while plexusd was stopped (its namespace no longer mounted) is taken out
/// of Plexus at start, its record kept for dockerd's `DeleteEndpoint`.
#[tokio::test]
async fn joins_hand_the_interface_over_and_gone_containers_leave_at_start() {
    let w = world().await;
    let c = &w.ctx;
    let dir = ok("tempdir", tempfile::tempdir());
    let key = dir.path().join("netns-file");
    ok("file", std::fs::write(&key, b""));
    let key = key.display().to_string();
    must(c, "NetworkDriver.CreateNetwork", json!({"NetworkID": NID, "IPv4Data": [{"Pool": "10.70.0.0/24", "Gateway": "10.70.0.1/24"}]})).await;
    must(
        c,
        "NetworkDriver.CreateEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID, "Interface": {"Address": "10.70.0.2/24"}}),
    )
    .await;
    let joined = must(
        c,
        "NetworkDriver.Join",
        json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": key}),
    )
    .await;
    let rec: Option<state::EndpointRecord> =
        ok("record", c.state.get(&state::endpoint_key(EID)).await);
    let rec = rec.unwrap_or_else(|| panic!("no endpoint record"));
    assert!(rec.sandbox.is_some() && rec.attached, "{rec:?}");
    let sandboxes = ok("sandboxes", c.controller.sandboxes().await);
    assert_eq!(sandboxes.len(), 1);
    assert!(sandboxes[0].external_key && sandboxes[0].key == key);
    let eps = ok(
        "endpoints",
        c.controller.sandbox_endpoints(&sandboxes[0]).await,
    );
    let src = eps[0].0.interface.clone().unwrap_or_default();
    assert!(src.starts_with("plxc"), "{src}");
    assert_eq!(
        joined,
        json!({
            "InterfaceName": {"SrcName": src, "DstPrefix": "eth"},
            "Gateway": "10.70.0.1",
            "DisableGatewayService": true,
        })
    );
    assert_eq!(lock(&w.bridge.joined).len(), 1);
    must(
        c,
        "NetworkDriver.Leave",
        json!({"NetworkID": NID, "EndpointID": EID}),
    )
    .await;
    let rec: Option<state::EndpointRecord> =
        ok("record", c.state.get(&state::endpoint_key(EID)).await);
    assert!(rec.is_some_and(|r| r.sandbox.is_none()), "left");
    assert!(lock(&w.bridge.joined).is_empty());
    assert!(ok("sandboxes", c.controller.sandboxes().await).is_empty());

    // Joined for real, then the container goes while plexusd is away.
    must(
        c,
        "NetworkDriver.Join",
        json!({"NetworkID": NID, "EndpointID": EID, "SandboxKey": "/proc/self/ns/net"}),
    )
    .await;
    assert_eq!(ok("sandboxes", c.controller.sandboxes().await).len(), 1);
    let mut rec: state::EndpointRecord = ok("record", c.state.get(&state::endpoint_key(EID)).await)
        .unwrap_or_else(|| panic!("no endpoint record"));
    rec.key = Some(key);
    ok(
        "rewrite",
        c.state.put(&state::endpoint_key(EID), &rec).await,
    );
    endpoint::resume_joins(c.clone()).await;
    assert!(
        ok("sandboxes", c.controller.sandboxes().await).is_empty(),
        "gone container left"
    );
    assert!(lock(&w.bridge.joined).is_empty());
    must(
        c,
        "NetworkDriver.DeleteEndpoint",
        json!({"NetworkID": NID, "EndpointID": EID}),
    )
    .await;
    must(c, "NetworkDriver.DeleteNetwork", json!({"NetworkID": NID})).await;
    assert!(ok("records", w.store.list(state::ROOT).await).is_empty());
}
