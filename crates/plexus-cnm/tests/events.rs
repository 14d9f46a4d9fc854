//! The event log, sandbox orchestration and the rest of the driver API, with a scripted
//! driver, fake namespaces (files), the built-in IPAM and a memory store: what a subscriber
//! and a user see, and that a refused request leaves nothing behind.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use plexus_cnm::*;
use plexus_ipam::{BuiltinIpam, IpamConfig};
use plexus_kv::Store;

/// A driver that records calls, fails where told and answers joins with what it is given.
#[derive(Default)]
struct Scripted {
    scope_global: bool,
    calls: Mutex<Vec<String>>,
    fail: Mutex<Option<String>>,
    endpoints: Mutex<BTreeMap<String, EndpointInfo>>,
    networks: Mutex<BTreeMap<String, NetworkInfo>>,
    routes: Vec<StaticRoute>,
    interfaces: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Scripted {
    fn step(&self, step: &str, detail: &str) -> Result<(), DriverError> {
        lock(&self.calls).push(format!("{step} {detail}"));
        if lock(&self.fail).as_deref() == Some(step) {
            return Err(DriverError::Failed(format!("injected failure at {step}")));
        }
        Ok(())
    }
    fn calls(&self, step: &str) -> Vec<String> {
        lock(&self.calls)
            .iter()
            .filter(|c| c.starts_with(&format!("{step} ")))
            .cloned()
            .collect()
    }
}

#[async_trait]
impl Driver for Scripted {
    fn name(&self) -> &str {
        "bridge"
    }
    fn capability(&self) -> Capability {
        Capability {
            scope: if self.scope_global {
                Scope::Global
            } else {
                Scope::Local
            },
            connectivity: if self.scope_global {
                Scope::Global
            } else {
                Scope::Local
            },
            needs_ipam: true,
            multiple_networks: true,
        }
    }
    fn validate_options(&self, _: &BTreeMap<String, String>) -> Result<(), DriverError> {
        Ok(())
    }
    async fn create_network(&self, network: &NetworkInfo) -> Result<(), DriverError> {
        self.step("create_network", &network.name)?;
        lock(&self.networks).insert(network.id.clone(), network.clone());
        Ok(())
    }
    async fn delete_network(&self, network_id: &str) -> Result<(), DriverError> {
        lock(&self.networks).remove(network_id);
        self.step("delete_network", network_id)
    }
    async fn create_endpoint(&self, ep: &EndpointInfo) -> Result<EndpointCreated, DriverError> {
        self.step("create_endpoint", &ep.endpoint_id)?;
        lock(&self.endpoints).insert(ep.endpoint_id.clone(), ep.clone());
        let ports = ep
            .ports
            .iter()
            .map(|p| PortBinding {
                host_port: if p.host_port == 0 { 49153 } else { p.host_port },
                host_port_end: 0,
                ..p.clone()
            })
            .collect();
        Ok(EndpointCreated {
            mac: Some("02:42:ac:11:00:02".into()),
            ports,
        })
    }
    async fn delete_endpoint(&self, _: &str, endpoint_id: &str) -> Result<(), DriverError> {
        lock(&self.endpoints).remove(endpoint_id);
        self.step("delete_endpoint", endpoint_id)
    }
    async fn join(
        &self,
        _: &str,
        endpoint_id: &str,
        _: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        self.step("join", endpoint_id)?;
        lock(&self.interfaces).push(interface.guess());
        Ok(Joined {
            interface: Some(interface.guess()),
            static_routes: self.routes.clone(),
            disable_gateway: !self.routes.is_empty(),
            ..Joined::default()
        })
    }
    async fn leave(&self, _: &str, endpoint_id: &str) -> Result<(), DriverError> {
        self.step("leave", endpoint_id)
    }
    async fn program_external_connectivity_with(
        &self,
        _: &str,
        endpoint_id: &str,
        options: &ExternalConnectivity,
    ) -> Result<(), DriverError> {
        self.step(
            "program",
            &format!("{endpoint_id} ports={}", options.port_bindings.len()),
        )
    }
    async fn revoke_external_connectivity(&self, _: &str, ep: &str) -> Result<(), DriverError> {
        self.step("revoke", ep)
    }
    async fn allocate_network(
        &self,
        network: &NetworkInfo,
    ) -> Result<BTreeMap<String, String>, DriverError> {
        self.step("allocate_network", &network.name)?;
        Ok(BTreeMap::from([(
            "vxlan.id".to_string(),
            "4097".to_string(),
        )]))
    }
    async fn free_network(
        &self,
        network_id: &str,
        data: &BTreeMap<String, String>,
    ) -> Result<(), DriverError> {
        self.step("free_network", &format!("{network_id} {data:?}"))
    }
    async fn discover_new(&self, node: &NodeDiscovery) -> Result<(), DriverError> {
        self.step("discover_new", &node.address.to_string())
    }
    async fn discover_delete(&self, node: &NodeDiscovery) -> Result<(), DriverError> {
        self.step("discover_delete", &node.address.to_string())
    }
    async fn event_notify(&self, event: &TableEvent) -> Result<(), DriverError> {
        self.step("event_notify", &format!("{:?} {}", event.kind, event.key))
    }

    /// Records each network it is told about, with its options.
    async fn reconcile(
        &self,
        desired: &Desired,
        _mode: ReconcileMode,
    ) -> Result<Reconciled, DriverError> {
        for n in &desired.networks {
            let opts: Vec<String> = n.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
            self.step("reconcile", &format!("{} {}", n.name, opts.join(",")))?;
        }
        Ok(Reconciled::default())
    }
}

/// Namespaces as files in a directory.
struct FileNamespaces {
    dir: PathBuf,
}

#[async_trait]
impl Namespaces for FileNamespaces {
    async fn create(&self, name: &str) -> Result<String> {
        let path = self.dir.join(name);
        std::fs::write(&path, b"").map_err(|e| CnmError::Netns {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(path.display().to_string())
    }
    async fn check(&self, path: &str) -> Result<()> {
        NoNamespaces.check(path).await
    }
    async fn delete(&self, path: &str) -> Result<()> {
        let _ = std::fs::remove_file(path);
        Ok(())
    }
}

struct World {
    store: Arc<dyn Store>,
    driver: Arc<Scripted>,
    controller: Controller,
    dir: tempfile::TempDir,
}

async fn controller_on(
    store: Arc<dyn Store>,
    driver: Arc<Scripted>,
    dir: &std::path::Path,
) -> Controller {
    let ipam = BuiltinIpam::open(store.clone(), IpamConfig::new("host-1"))
        .await
        .unwrap_or_else(|e| panic!("ipam: {e}"));
    // A cluster store too, for the tests of global networks.
    let cluster: Arc<dyn Store> = Arc::new(plexus_kv::LocalStore::memory());
    let global = BuiltinIpam::open(cluster.clone(), IpamConfig::new("host-1"))
        .await
        .unwrap_or_else(|e| panic!("global ipam: {e}"));
    let ipam = plexus_ipam::ScopedIpam::new(Arc::new(ipam), Some(Arc::new(global)));
    let mut drivers = DriverRegistry::new();
    drivers.register(driver);
    Controller::new(store, Arc::new(ipam), drivers, ControllerConfig::default())
        .with_cluster_store(cluster)
        .with_namespaces(Arc::new(FileNamespaces {
            dir: dir.to_path_buf(),
        }))
}

async fn world_with(driver: Scripted) -> World {
    let store = plexus_kv::open("memory://", Default::default())
        .await
        .unwrap_or_else(|e| panic!("store: {e}"));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let driver = Arc::new(driver);
    let controller = controller_on(store.clone(), driver.clone(), dir.path()).await;
    World {
        store,
        driver,
        controller,
        dir,
    }
}

fn ok<T, E: std::fmt::Display>(what: &str, r: std::result::Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn net(name: &str, subnet: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        ipv4: vec![IpamPoolSpec {
            subnet: Some(subnet.into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `type action name` of each event, with its revision checked to follow the last.
async fn drain(sub: &mut Subscription, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let e = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
            .await
            .unwrap_or_else(|_| panic!("no event after {out:?}"));
        let e = ok("next", e).unwrap_or_else(|| panic!("closed after {out:?}"));
        out.push(format!(
            "{} {} {}",
            e.kind.as_str(),
            e.action.as_str(),
            e.attributes.get("name").cloned().unwrap_or_default()
        ));
    }
    out
}

fn tcp(container: u16, host: u16) -> PortBinding {
    PortBinding {
        proto: "tcp".into(),
        container_port: container,
        host_ip: None,
        host_port: host,
        host_port_end: 0,
    }
}

#[tokio::test]
async fn every_change_is_an_event_in_commit_order_and_replays_after_restart() {
    let w = world_with(Scripted::default()).await;
    let mut live = ok("subscribe", w.controller.subscribe(None).await);
    ok(
        "n1",
        w.controller.create_network(net("n1", "10.9.0.0/24")).await,
    );
    let spec = SandboxSpec {
        name: "s1".into(),
        networks: vec![("n1".into(), EndpointSpec::default())],
        ports: vec![tcp(80, 0)],
        ..Default::default()
    };
    ok("s1", w.controller.create_sandbox(spec).await);
    ok("s2", w.controller.add_sandbox("s2", "/x", false).await);
    ok(
        "connect",
        w.controller
            .connect("s2", "n1", EndpointSpec::default())
            .await,
    );
    ok("disconnect", w.controller.disconnect("s2", "n1").await);
    ok("rm s1", w.controller.remove_sandbox("s1").await);
    ok("rm s2", w.controller.remove_sandbox("s2").await);
    ok("rm n1", w.controller.delete_network("n1").await);
    let expected = [
        "network create n1",
        "sandbox create s1",
        "endpoint connect n1",
        "sandbox create s2",
        "endpoint connect n1",
        "endpoint disconnect n1",
        "endpoint disconnect n1",
        "sandbox destroy s1",
        "sandbox destroy s2",
        "network destroy n1",
    ];
    assert_eq!(drain(&mut live, expected.len()).await, expected);
    assert_eq!(live.last_revision(), expected.len() as u64);

    // A controller restarted on the same store replays the log and continues its revisions.
    let again = controller_on(w.store.clone(), w.driver.clone(), w.dir.path()).await;
    assert_eq!(
        ok("revision", again.event_revision().await),
        expected.len() as u64
    );
    let mut all = ok("subscribe 0", again.subscribe(Some(0)).await);
    assert_eq!(drain(&mut all, expected.len()).await, expected);
    let mut from4 = ok("subscribe 4", again.subscribe(Some(4)).await);
    ok("n2", again.create_network(net("n2", "10.9.1.0/24")).await);
    let tail = drain(&mut from4, expected.len() - 4 + 1).await;
    assert_eq!(tail[..expected.len() - 4], expected[4..]);
    assert_eq!(tail.last().map(String::as_str), Some("network create n2"));
    assert_eq!(from4.last_revision(), expected.len() as u64 + 1);
    // The event's details, as the API shows them.
    let mut one = ok("subscribe", again.subscribe(Some(2)).await);
    let Some(e) = ok("next", one.next().await) else {
        panic!("no event 3");
    };
    assert_eq!(
        (e.revision, e.kind, e.action),
        (3, EventType::Endpoint, EventAction::Connect)
    );
    assert_eq!(e.attributes.get("type").map(String::as_str), Some("bridge"));
    assert_eq!(e.attributes.get("sandbox").map(String::as_str), Some("s1"));
    assert_eq!(e.attributes.get("container").map(|c| c.len()), Some(64));
    assert!(e.time_nano > 1_600_000_000_000_000_000, "{}", e.time_nano);

    // A revision after the last is refused, naming the field.
    let err = again
        .subscribe(Some(1000))
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("invalid since")),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_replay_and_live_seam_has_no_gap_and_no_duplicate() {
    let w = Arc::new(world_with(Scripted::default()).await);
    let writer = {
        let w = w.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                ok(
                    "add",
                    w.controller
                        .add_sandbox(&format!("s{i}"), "/x", false)
                        .await,
                );
            }
        })
    };
    // Subscribers from wherever the writer is when they start; each must see 1..=200 in order.
    let mut subs = Vec::new();
    for _ in 0..10 {
        tokio::task::yield_now().await;
        let since = ok("revision", w.controller.event_revision().await) / 2;
        subs.push((
            since,
            ok("subscribe", w.controller.subscribe(Some(since)).await),
        ));
    }
    ok("writer", writer.await);
    for (since, mut sub) in subs {
        for want in since + 1..=200 {
            let e = ok("next", sub.next().await).unwrap_or_else(|| panic!("closed"));
            assert_eq!(e.revision, want, "subscriber from {since}");
        }
    }
}

#[tokio::test]
async fn a_slow_subscriber_never_blocks_commits_and_catches_up_from_the_store() {
    let w = world_with(Scripted::default()).await;
    let mut slow = ok("subscribe", w.controller.subscribe(None).await);
    // More than the live channel holds, none read meanwhile.
    for i in 0..2600 {
        let s = ok(
            "add",
            w.controller
                .add_sandbox(&format!("s{i}"), "/x", false)
                .await,
        );
        ok("delete", w.controller.delete_sandbox(&s.id).await);
    }
    for want in 1..=5200 {
        let e = ok("next", slow.next().await).unwrap_or_else(|| panic!("closed"));
        assert_eq!(e.revision, want);
    }
    // Past the stored history, the loss is reported, not hidden.
    let extra = EVENT_HISTORY as usize - 5200 + 2;
    for i in 0..extra.div_ceil(2) {
        let s = ok(
            "add",
            w.controller
                .add_sandbox(&format!("t{i}"), "/x", false)
                .await,
        );
        ok("delete", w.controller.delete_sandbox(&s.id).await);
    }
    let err = w.controller.subscribe(Some(0)).await.err();
    assert!(
        matches!(err, Some(CnmError::EventsLost { after: 0, .. })),
        "{err:?}"
    );
    let kept = ok("list", w.store.list(store_layout::EVENTS).await).len() as u64;
    assert_eq!(kept, EVENT_HISTORY, "history bounded");
    // Closing ends subscriptions.
    w.controller.close_events();
    let mut sub = ok("subscribe", w.controller.subscribe(None).await);
    assert!(ok("next", sub.next().await).is_none());
}

#[tokio::test]
async fn a_sandbox_is_created_whole_or_not_at_all() {
    let w = world_with(Scripted::default()).await;
    ok(
        "n1",
        w.controller.create_network(net("n1", "10.9.0.0/24")).await,
    );
    ok(
        "n2",
        w.controller.create_network(net("n2", "10.9.1.0/24")).await,
    );
    let spec = |name: &str| SandboxSpec {
        name: name.into(),
        hostname: Some("web.local".into()),
        dns: vec!["10.0.0.53".into(), "2001:db8::53".into()],
        dns_search: vec!["example.org".into()],
        dns_options: vec!["ndots:2".into()],
        networks: vec![
            (
                "n1".into(),
                EndpointSpec {
                    ipv4: Some("10.9.0.10".into()),
                    aliases: vec!["web".into()],
                    ..Default::default()
                },
            ),
            (
                "n2".into(),
                EndpointSpec {
                    options: BTreeMap::from([("com.example.opt".into(), "1".into())]),
                    interface: Some("net1".into()),
                    ..Default::default()
                },
            ),
        ],
        ports: vec![tcp(80, 8080)],
        ..Default::default()
    };
    let revision = ok("revision", w.controller.event_revision().await);

    // The second join fails: everything made before is undone, in reverse.
    *lock(&w.driver.fail) = Some("join".into());
    lock(&w.driver.calls).clear();
    let err = w.controller.create_sandbox(spec("bad")).await.err();
    assert!(
        err.as_ref()
            .is_some_and(|e| e.to_string().contains("injected failure at join")),
        "{err:?}"
    );
    assert!(
        lock(&w.driver.endpoints).is_empty(),
        "no driver endpoint left"
    );
    assert!(!w.dir.path().join("bad").exists(), "namespace removed");
    assert!(ok("sandboxes", w.controller.sandboxes().await).is_empty());
    assert_eq!(
        ok("revision", w.controller.event_revision().await),
        revision
    );
    // The address asked for is free again.
    *lock(&w.driver.fail) = Some("program".into());
    let err = w.controller.create_sandbox(spec("bad")).await.err();
    assert!(err.is_some_and(|e| e.to_string().contains("injected failure at program")));
    assert_eq!(w.driver.calls("leave").len(), 1, "the joined endpoint left");
    assert!(lock(&w.driver.endpoints).is_empty());
    *lock(&w.driver.fail) = None;

    let s = ok("create", w.controller.create_sandbox(spec("web")).await);
    assert_eq!(s.hostname.as_deref(), Some("web.local"));
    assert_eq!(s.dns.len(), 2);
    assert_eq!((s.dns_search.len(), s.dns_options.len()), (1, 1));
    assert!(s.owned_netns && s.key.ends_with("/web"));
    let eps = ok("endpoints", w.controller.sandbox_endpoints(&s).await);
    assert_eq!(eps.len(), 2);
    assert_eq!(
        eps[0].0.ipv4.map(|a| a.to_string()).as_deref(),
        Some("10.9.0.10/24")
    );
    assert_eq!(eps[0].0.ports, vec![tcp(80, 8080)]);
    assert_eq!(eps[0].0.interface.as_deref(), Some("eth0"));
    // The exact name and the endpoint's own options reach the driver.
    assert_eq!(eps[1].0.interface.as_deref(), Some("net1"));
    let infos = lock(&w.driver.endpoints).clone();
    let opts = infos.get(&eps[1].0.id).map(|i| i.options.clone());
    assert_eq!(
        opts.and_then(|o| o.get("com.example.opt").cloned())
            .as_deref(),
        Some("1")
    );
    assert!(w
        .driver
        .calls("program")
        .iter()
        .any(|c| c.ends_with("ports=1")));
    // One transaction: the sandbox and both connects are three consecutive events.
    let mut sub = ok("subscribe", w.controller.subscribe(Some(revision)).await);
    assert_eq!(
        drain(&mut sub, 3).await,
        [
            "sandbox create web",
            "endpoint connect n1",
            "endpoint connect n2"
        ]
    );

    // Bad input names the field, makes nothing.
    for (bad, field) in [
        (
            SandboxSpec {
                hostname: Some("-x".into()),
                ..spec("b1")
            },
            "hostname",
        ),
        (
            SandboxSpec {
                dns: vec!["ns1".into()],
                ..spec("b2")
            },
            "dns",
        ),
        (
            SandboxSpec {
                dns_options: vec!["ndots: 2".into()],
                ..spec("b3")
            },
            "dns-option",
        ),
        (
            SandboxSpec {
                networks: vec![],
                ..spec("b4")
            },
            "ports",
        ),
        (
            SandboxSpec {
                networks: vec![
                    ("n1".into(), EndpointSpec::default()),
                    ("n1".into(), EndpointSpec::default()),
                ],
                ports: vec![],
                ..spec("b5")
            },
            "networks[1]",
        ),
        (
            SandboxSpec {
                netns: Some("/nonexistent/netns".into()),
                ..spec("b6")
            },
            "netns",
        ),
        (
            SandboxSpec {
                networks: vec![(
                    "n1".into(),
                    EndpointSpec {
                        interface: Some("a/b".into()),
                        ..Default::default()
                    },
                )],
                ..spec("b7")
            },
            "interface name",
        ),
        (
            SandboxSpec {
                networks: vec![
                    (
                        "n1".into(),
                        EndpointSpec {
                            interface: Some("x0".into()),
                            ..Default::default()
                        },
                    ),
                    (
                        "n2".into(),
                        EndpointSpec {
                            interface: Some("x0".into()),
                            ..Default::default()
                        },
                    ),
                ],
                ..spec("b8")
            },
            "networks[1] interface name",
        ),
    ] {
        let err = w.controller.create_sandbox(bad).await.err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.to_string().contains(&format!("invalid {field}"))),
            "{field}: {err:?}"
        );
    }
    let exists = w.controller.create_sandbox(spec("web")).await.err();
    assert!(
        matches!(exists, Some(CnmError::Exists { .. })),
        "{exists:?}"
    );
    assert_eq!(ok("sandboxes", w.controller.sandboxes().await).len(), 1);

    // Removal: one transaction, the namespace goes, the addresses are free again.
    ok("rm", w.controller.remove_sandbox("web").await);
    assert!(!w.dir.path().join("web").exists());
    assert!(lock(&w.driver.endpoints).is_empty());
    assert_eq!(
        drain(&mut sub, 3).await,
        [
            "endpoint disconnect n2",
            "endpoint disconnect n1",
            "sandbox destroy web"
        ]
    );
    ok("again", w.controller.create_sandbox(spec("web2")).await);
}

#[tokio::test]
async fn the_rest_of_the_driver_api() {
    let route = StaticRoute {
        destination: ok("net", "192.0.2.0/24".parse()),
        next_hop: Some(ok("ip", "10.9.0.254".parse())),
    };
    let w = world_with(Scripted {
        scope_global: true,
        routes: vec![route.clone()],
        ..Default::default()
    })
    .await;
    // A global network: the driver allocates once, the data is kept and handed back.
    let n = ok(
        "g1",
        w.controller
            .create_network(NetworkSpec {
                attachable: true,
                ..net("g1", "10.9.0.0/24")
            })
            .await,
    );
    assert_eq!(n.scope, Scope::Global);
    assert_eq!(
        n.driver_data.get("vxlan.id").map(String::as_str),
        Some("4097")
    );
    let given = lock(&w.driver.networks).get(&n.id).cloned();
    assert_eq!(
        given
            .and_then(|i| i.options.get("vxlan.id").cloned())
            .as_deref(),
        Some("4097")
    );
    let stored = ok("lookup", w.controller.network("g1").await);
    assert_eq!(stored.driver_data, n.driver_data);
    // Reconciliation tells the driver the same options as creation did, allocation included.
    ok(
        "reconcile",
        w.controller.reconcile(ReconcileMode::Periodic).await,
    );
    assert_eq!(w.driver.calls("reconcile"), ["reconcile g1 vxlan.id=4097"]);

    // Static routes and "no default gateway" from the join land in the endpoint's record.
    ok("s", w.controller.add_sandbox("s", "/x", false).await);
    let spec = EndpointSpec {
        options: BTreeMap::from([("com.example.vni".into(), "7".into())]),
        ..Default::default()
    };
    let ep = ok("connect", w.controller.connect("s", "g1", spec).await);
    // The endpoint's own options reach the driver and stay in its record.
    let given = lock(&w.driver.endpoints)
        .get(&ep.id)
        .map(|i| i.options.clone());
    assert_eq!(
        given
            .and_then(|o| o.get("com.example.vni").cloned())
            .as_deref(),
        Some("7")
    );
    assert_eq!(
        ep.options.get("com.example.vni").map(String::as_str),
        Some("7")
    );
    assert_eq!(ep.routes, vec![route]);
    assert!(ep.disable_gateway);
    let s = ok("s", w.controller.sandbox("s").await);
    let eps = ok("eps", w.controller.sandbox_endpoints(&s).await);
    assert_eq!(eps[0].0.routes, ep.routes);
    ok("rm", w.controller.delete_sandbox("s").await);

    // Discovery and table events reach the drivers.
    let node = NodeDiscovery {
        address: ok("ip", "192.0.2.7".parse()),
        self_node: false,
    };
    ok("joined", w.controller.node_joined(&node).await);
    ok("left", w.controller.node_left(&node).await);
    let event = TableEvent {
        kind: TableEventKind::Create,
        network_id: n.id.clone(),
        table: "endpoint_table".into(),
        key: "ep1".into(),
        value: b"10.9.0.2".to_vec(),
    };
    ok("table", w.controller.table_event(&event).await);
    assert_eq!(w.driver.calls("discover_new"), ["discover_new 192.0.2.7"]);
    assert_eq!(
        w.driver.calls("discover_delete"),
        ["discover_delete 192.0.2.7"]
    );
    assert_eq!(w.driver.calls("event_notify"), ["event_notify Create ep1"]);

    // Removal gives the allocation back.
    ok("rm g1", w.controller.delete_network("g1").await);
    let freed = w.driver.calls("free_network");
    assert!(
        freed.len() == 1 && freed[0].contains("vxlan.id"),
        "{freed:?}"
    );
}
