//! Two gossip runtimes on loopback, a `Controller` with a recording driver on the second:
//! what one host publishes through its `GossipControlPlane` reaches the other's driver, in
//! order (or a table's sink, never the driver), and a host's death reaches it as
//! `discover_delete`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use plexus_cnm::{
    Capability, ControllerConfig, Driver, DriverError, DriverRegistry, EndpointCreated,
    EndpointInfo, InterfaceName, Joined, NetworkInfo, NetworkSpec, Scope,
};
use plexus_gossip::{Config, Keyring};
use plexus_ipam::{BuiltinIpam, IpamConfig};

use super::*;

#[derive(Default)]
struct Recorder {
    heard: Mutex<Vec<String>>,
}

impl Recorder {
    fn heard(&self) -> Vec<String> {
        self.heard.lock().unwrap().clone()
    }
    fn push(&self, s: String) {
        self.heard.lock().unwrap().push(s);
    }
}

#[async_trait]
impl Driver for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn capability(&self) -> Capability {
        Capability {
            scope: Scope::Local,
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
        self.push(format!("new {} self={}", node.address, node.self_node));
        Ok(())
    }
    async fn discover_delete(&self, node: &NodeDiscovery) -> Result<(), DriverError> {
        self.push(format!("delete {} self={}", node.address, node.self_node));
        Ok(())
    }
    async fn event_notify(&self, e: &TableEvent) -> Result<(), DriverError> {
        let value = String::from_utf8_lossy(&e.value);
        self.push(format!("{:?} {}/{} {value}", e.kind, e.table, e.key));
        Ok(())
    }
}

/// A sink that writes down what it is given.
#[derive(Default)]
struct SinkRecorder(Recorder);

#[async_trait]
impl TableSink for SinkRecorder {
    async fn table_event(&self, e: TableEvent, owner: IpAddr) {
        let value = String::from_utf8_lossy(&e.value);
        self.0.push(format!(
            "{:?} {}/{} {value} from {owner}",
            e.kind, e.table, e.key
        ));
    }
}

fn fast() -> Config {
    Config {
        gossip_interval: Duration::from_millis(50),
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(80),
        sync_interval: Duration::from_millis(1000),
        join_retry: Duration::from_millis(200),
        suspicion_mult: 2,
        suspicion_max_timeout_mult: 2,
        ..Config::default()
    }
}

fn addr(i: u8) -> SocketAddr {
    let pid = std::process::id();
    SocketAddr::from((
        [127, 1 + (pid % 99) as u8, 251, i],
        20_000 + (pid % 10_000) as u16,
    ))
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_and_deaths_reach_the_driver_in_order() {
    let key = Keyring::new([7u8; 32]);
    let a = GossipHandle::start(addr(1), fast(), key.clone())
        .await
        .unwrap();
    let b = GossipHandle::start(addr(2), fast(), key).await.unwrap();
    b.join(&[addr(1)]);

    let store: Arc<dyn plexus_kv::Store> = Arc::new(plexus_kv::LocalStore::memory());
    let ipam = BuiltinIpam::open(store.clone(), IpamConfig::new("b"))
        .await
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    let mut drivers = DriverRegistry::new();
    drivers.register(recorder.clone());
    let controller = Arc::new(Controller::new(
        store,
        Arc::new(ipam),
        drivers,
        ControllerConfig {
            host_id: "b".into(),
            ..ControllerConfig::default()
        },
    ));
    let network = controller
        .create_network(NetworkSpec {
            name: "n".into(),
            driver: "recorder".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let sink = Arc::new(SinkRecorder::default());
    let sinks: Sinks = [("names".to_string(), sink.clone() as Arc<dyn TableSink>)].into();
    let router = tokio::spawn(route(b.clone(), controller.clone(), sinks));

    let plane_a = GossipControlPlane::new(a.clone());
    let plane_b = GossipControlPlane::new(b.clone());
    assert_eq!(plane_a.advertise_addr(), addr(1).ip());
    plane_a.join_network(&network.id).unwrap();
    plane_a.join_network(&network.id).unwrap();
    plane_b.join_network(&network.id).unwrap();
    let me = format!("new {} self=true", addr(2).ip());
    let peer = format!("new {} self=false", addr(1).ip());
    wait_for("both hosts discovered", Duration::from_secs(10), || {
        let h = recorder.heard();
        h.contains(&me) && h.contains(&peer)
    })
    .await;

    // Twenty writes of one key: the driver sees them in order (gossip may skip some).
    for i in 0..20 {
        plane_a
            .put(&network.id, "peers", "ep1", format!("v{i:02}").into_bytes())
            .unwrap();
    }
    wait_for("the last value", Duration::from_secs(10), || {
        recorder
            .heard()
            .iter()
            .any(|h| h.ends_with("peers/ep1 v19"))
    })
    .await;
    let seen: Vec<String> = recorder
        .heard()
        .into_iter()
        .filter(|h| h.contains("peers/ep1"))
        .collect();
    assert!(seen[0].starts_with("Create"), "{seen:?}");
    let mut sorted = seen.clone();
    sorted.sort_by_key(|h| h.rsplit(' ').next().map(str::to_string));
    assert_eq!(seen, sorted, "out of order");
    assert_eq!(
        plane_b.entries(&network.id, "peers"),
        vec![("ep1".to_string(), b"v19".to_vec(), addr(1).ip())]
    );

    // A table with a sink: the sink hears it, with its owner; the driver does not.
    plane_a
        .put(&network.id, "names", "ep1", b"web1".to_vec())
        .unwrap();
    let heard = format!("Create names/ep1 web1 from {}", addr(1).ip());
    wait_for("the sink's entry", Duration::from_secs(10), || {
        sink.0.heard().contains(&heard)
    })
    .await;
    plane_a.delete(&network.id, "names", "ep1").unwrap();
    wait_for("the sink's delete", Duration::from_secs(10), || {
        sink.0
            .heard()
            .iter()
            .any(|h| h.starts_with("Delete names/ep1"))
    })
    .await;
    assert!(
        !recorder.heard().iter().any(|h| h.contains("names/")),
        "the driver heard a sink's table: {:?}",
        recorder.heard()
    );

    plane_a.delete(&network.id, "peers", "ep1").unwrap();
    plane_a.delete(&network.id, "peers", "never").unwrap();
    plane_a.delete("not-joined", "peers", "ep1").unwrap();
    wait_for("the delete", Duration::from_secs(10), || {
        recorder
            .heard()
            .iter()
            .any(|h| h.starts_with("Delete peers/ep1"))
    })
    .await;

    // A's death: B's driver forgets it, and its entries go.
    plane_a
        .put(&network.id, "peers", "ep2", b"x".to_vec())
        .unwrap();
    wait_for("ep2", Duration::from_secs(10), || {
        recorder.heard().iter().any(|h| h == "Create peers/ep2 x")
    })
    .await;
    a.shutdown().await;
    let gone = format!("delete {} self=false", addr(1).ip());
    wait_for("A declared dead", Duration::from_secs(20), || {
        let h = recorder.heard();
        h.contains(&gone) && h.iter().any(|h| h == "Delete peers/ep2 x")
    })
    .await;

    // Routing is in-process: an event for a network the controller does not know is
    // logged, not fatal.
    plane_b.join_network("unknown").unwrap();
    plane_b.put("unknown", "t", "k", b"v".to_vec()).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!router.is_finished());
    b.shutdown().await;
}
