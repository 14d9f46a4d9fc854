//! Services and their tasks with a driver that has no data plane, the built-in IPAM and
//! memory stores: virtual IPs taken and given back, validation naming the field with
//! nothing half-made, tasks following their sandboxes' endpoints, events, restart and
//! start-up repair, and the two scopes.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use plexus_cnm::*;
use plexus_ipam::{BuiltinIpam, Ipam, IpamConfig, ScopedIpam};
use plexus_kv::{LocalStore, Store, Txn};

/// A driver with no data plane, of either scope; `needs_ipam: false` for `nopool`.
struct Plain {
    name: &'static str,
    scope: Scope,
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
            needs_ipam: self.name != "nopool",
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
    async fn create_endpoint(&self, e: &EndpointInfo) -> Result<EndpointCreated, DriverError> {
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

struct Host {
    c: Controller,
    local: Arc<dyn Store>,
    ipam: Arc<BuiltinIpam>,
    cluster: Option<Arc<dyn Store>>,
    netns: tempfile::NamedTempFile,
}

fn memory() -> Arc<dyn Store> {
    Arc::new(LocalStore::memory())
}

fn controller(
    id: &str,
    local: Arc<dyn Store>,
    ipam: Arc<BuiltinIpam>,
    global: Option<(Arc<dyn Store>, Arc<BuiltinIpam>)>,
) -> Controller {
    let mut drivers = DriverRegistry::new();
    for (name, scope) in [
        ("bridge", Scope::Local),
        ("nopool", Scope::Local),
        ("overlay", Scope::Global),
    ] {
        drivers.register(Arc::new(Plain { name, scope }));
    }
    let global_ipam = global.as_ref().map(|(_, i)| i.clone() as Arc<dyn Ipam>);
    let mut c = Controller::new(
        local,
        Arc::new(ScopedIpam::new(ipam, global_ipam)),
        drivers,
        ControllerConfig {
            host_id: id.into(),
            // As plexusd when it runs the overlay: global services may publish in ingress
            // mode (a host without a cluster store never gets so far).
            ingress_network: global.is_some().then(|| NetworkSpec {
                name: "ingress".into(),
                driver: "overlay".into(),
                scope: Some(Scope::Global),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    if let Some((store, _)) = global {
        c = c.with_cluster_store(store);
    }
    c
}

async fn host(id: &str, cluster: Option<Arc<dyn Store>>) -> Host {
    let local = memory();
    let ipam = Arc::new(ok(
        "ipam",
        BuiltinIpam::open(local.clone(), IpamConfig::new(id)).await,
    ));
    let global = match &cluster {
        Some(c) => Some((
            c.clone(),
            Arc::new(ok(
                "global ipam",
                BuiltinIpam::open(c.clone(), IpamConfig::new(id)).await,
            )),
        )),
        None => None,
    };
    Host {
        c: controller(id, local.clone(), ipam.clone(), global),
        local,
        ipam,
        cluster,
        netns: ok("netns file", tempfile::NamedTempFile::new()),
    }
}

impl Host {
    async fn net(&self, name: &str, subnet: &str) -> Network {
        let spec = NetworkSpec {
            name: name.into(),
            ipv4: vec![IpamPoolSpec {
                subnet: Some(subnet.into()),
                ..Default::default()
            }],
            ..Default::default()
        };
        ok("network", self.c.create_network(spec).await)
    }

    /// Every allocated address of the network's pool.
    fn allocated(&self, n: &Network) -> Vec<std::net::IpAddr> {
        ok("allocated", self.ipam.allocated(&n.ipv4[0].pool_id))
    }

    fn sandbox_spec(&self, name: &str, networks: &[&str], service: Option<&str>) -> SandboxSpec {
        SandboxSpec {
            name: name.into(),
            netns: Some(self.netns.path().display().to_string()),
            networks: networks
                .iter()
                .map(|n| (n.to_string(), EndpointSpec::default()))
                .collect(),
            service: service.map(str::to_string),
            ..Default::default()
        }
    }
}

fn port(published: u16, target: u16) -> PublishedPort {
    PublishedPort {
        protocol: "tcp".into(),
        target,
        published,
        mode: PublishMode::Ingress,
    }
}

fn svc(name: &str, networks: &[&str]) -> ServiceSpec {
    ServiceSpec {
        name: name.into(),
        networks: networks.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

async fn events_since(c: &Controller, rev: u64) -> Vec<Event> {
    let head = ok("head", c.event_revision().await);
    let mut sub = ok("subscribe", c.subscribe(Some(rev)).await);
    let mut out = Vec::new();
    while sub.last_revision() < head {
        match ok("next", sub.next().await) {
            Some(e) => out.push(e),
            None => break,
        }
    }
    out
}

fn kinds(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{} {}", e.kind.as_str(), e.action.as_str()))
        .collect()
}

#[tokio::test]
async fn a_vip_service_takes_an_address_and_gives_it_back() {
    let h = host("h1", None).await;
    let n = h.net("front", "10.9.0.0/24").await;
    let before = h.allocated(&n);
    let rev = ok("rev", h.c.event_revision().await);
    let mut spec = svc("web", &["front"]);
    spec.ports = vec![port(8080, 80)];
    spec.labels.insert("tier".into(), "front".into());
    let s = ok("create", h.c.create_service(spec).await);
    assert_eq!(s.id.len(), 64);
    assert_eq!(s.scope, Scope::Local);
    assert_eq!(s.endpoint_mode, EndpointMode::Vip);
    assert_eq!(s.vips.len(), 1);
    assert_eq!(s.vips[0].network_id, n.id);
    assert_eq!(s.vips[0].addr.to_string(), "10.9.0.2/24");
    assert_eq!(h.allocated(&n).len(), before.len() + 1);
    // By name, id and id prefix; listed.
    assert_eq!(ok("by name", h.c.service("web").await), s);
    assert_eq!(ok("by id", h.c.service(&s.id).await), s);
    assert_eq!(ok("by prefix", h.c.service(&s.id[..12]).await).id, s.id);
    assert_eq!(ok("list", h.c.services().await), vec![s.clone()]);
    let backends = ok("backends", h.c.service_backends("web").await);
    assert_eq!(backends.len(), 1);
    assert_eq!(backends[0].vips, vec![s.vips[0].addr]);
    assert!(backends[0].backends.is_empty());
    // A second service gets the next address; a sandbox endpoint does not reuse either.
    let s2 = ok("second", h.c.create_service(svc("api", &["front"])).await);
    assert_eq!(s2.vips[0].addr.to_string(), "10.9.0.3/24");
    let sb = ok(
        "sandbox",
        h.c.create_sandbox(h.sandbox_spec("a", &["front"], None))
            .await,
    );
    let eps = ok("eps", h.c.sandbox_endpoints(&sb).await);
    assert_eq!(
        eps[0].0.ipv4.map(|a| a.to_string()).as_deref(),
        Some("10.9.0.4/24")
    );
    // A network with a service on it is not removed, nor pruned.
    let e = h.c.delete_network("front").await.unwrap_err();
    assert_eq!(e.http_status(), 409, "{e}");
    assert!(e.to_string().contains("service"), "{e}");
    ok("rm sandbox", h.c.remove_sandbox("a").await);
    assert!(!ok("prune", h.c.prune_networks().await).contains(&"front".to_string()));
    // Removed: the addresses are back, the events were recorded.
    ok("rm", h.c.remove_service("web", false).await);
    ok("rm api", h.c.remove_service(&s2.id, false).await);
    assert_eq!(h.allocated(&n), before);
    assert!(matches!(
        h.c.service("web").await,
        Err(CnmError::NotFound {
            kind: "service",
            ..
        })
    ));
    let events = events_since(&h.c, rev).await;
    let svc_events: Vec<String> = kinds(&events)
        .into_iter()
        .filter(|k| k.starts_with("service"))
        .collect();
    assert_eq!(
        svc_events,
        [
            "service create",
            "service create",
            "service destroy",
            "service destroy"
        ]
    );
    assert_eq!(
        events[0].attributes.get("name").map(String::as_str),
        Some("web")
    );
    assert_eq!(
        events[0].attributes.get("mode").map(String::as_str),
        Some("vip")
    );
    assert_eq!(events[0].actor, s.id);
    // A removed service's name is free again.
    ok("again", h.c.create_service(svc("web", &["front"])).await);
}

#[tokio::test]
async fn bad_requests_name_the_field_and_leave_nothing() {
    let h = host("h1", None).await;
    let n = h.net("front", "10.9.0.0/24").await;
    let none = ok(
        "nopool",
        h.c.create_network(NetworkSpec {
            name: "nopool".into(),
            driver: "nopool".into(),
            ..Default::default()
        })
        .await,
    );
    assert!(none.ipv4.is_empty());
    let mut taken = svc("taken", &["front"]);
    taken.ports = vec![port(9000, 80)];
    ok("taken", h.c.create_service(taken).await);
    // A sandbox publishing 9100 with -p.
    let mut sb = h.sandbox_spec("pub", &["front"], None);
    sb.ports = vec![PortBinding {
        proto: "tcp".into(),
        container_port: 80,
        host_ip: None,
        host_port: 9100,
        host_port_end: 0,
    }];
    ok("pub sandbox", h.c.create_sandbox(sb).await);
    let before = h.allocated(&n);
    let rev = ok("rev", h.c.event_revision().await);
    let with = |f: &dyn Fn(&mut ServiceSpec)| {
        let mut s = svc("web", &["front"]);
        f(&mut s);
        s
    };
    let cases: Vec<(ServiceSpec, &str, u16)> = vec![
        (with(&|s| s.name = "-bad".into()), "service name", 400),
        (with(&|s| s.networks.clear()), "networks", 400),
        (
            with(&|s| s.networks = vec!["nope".into()]),
            "network nope not found",
            404,
        ),
        (
            with(&|s| s.networks = vec!["front".into(), "front".into()]),
            "networks[1]",
            400,
        ),
        (
            with(&|s| s.networks = vec!["front".into(), "nopool".into()]),
            "endpoint mode",
            400,
        ),
        (
            with(&|s| s.ports = vec![port(0, 80)]),
            "ports[0] published port",
            400,
        ),
        (
            with(&|s| s.ports = vec![port(80, 0)]),
            "ports[0] target port",
            400,
        ),
        (
            with(&|s| {
                s.ports = vec![PublishedPort {
                    protocol: "sctp".into(),
                    ..port(80, 80)
                }]
            }),
            "ports[0] protocol",
            400,
        ),
        (
            with(&|s| s.ports = vec![port(80, 80), port(80, 81)]),
            "ports[1]",
            400,
        ),
        (
            with(&|s| s.ports = (1..=1001).map(|p| port(p, 80)).collect()),
            "ports",
            400,
        ),
        (
            with(&|s| {
                s.affinity = SessionAffinity {
                    mode: AffinityMode::ClientIp,
                    timeout_seconds: 90_000,
                }
            }),
            "affinity timeout",
            400,
        ),
        (
            with(&|s| {
                s.affinity = SessionAffinity {
                    mode: AffinityMode::None,
                    timeout_seconds: 5,
                }
            }),
            "affinity timeout",
            400,
        ),
        (
            with(&|s| s.name = "taken".into()),
            "service with name taken already exists",
            409,
        ),
        (
            with(&|s| s.ports = vec![port(81, 80), port(9000, 80)]),
            "ports[1] published port 9000/tcp is in use by service taken",
            409,
        ),
        (
            with(&|s| s.ports = vec![port(9100, 80)]),
            "ports[0] published port 9100/tcp is in use by sandbox pub",
            409,
        ),
    ];
    for (spec, field, status) in cases {
        let e = h.c.create_service(spec).await.unwrap_err();
        assert!(e.to_string().contains(field), "{field}: {e}");
        assert_eq!(e.http_status(), status, "{e}");
        assert_eq!(h.allocated(&n), before, "after {field}");
    }
    // host and none cannot carry a service.
    assert_eq!(ok("services", h.c.services().await).len(), 1);
    assert!(events_since(&h.c, rev).await.is_empty());
    let keys = ok("keys", h.local.list("plexus/v1/service-vips").await);
    assert!(keys.is_empty(), "intents left: {keys:?}");
}

#[tokio::test]
async fn tasks_follow_their_sandboxes_endpoints() {
    let h = host("h1", None).await;
    let (n1, n2) = (
        h.net("n1", "10.1.0.0/24").await,
        h.net("n2", "10.2.0.0/24").await,
    );
    h.net("other", "10.3.0.0/24").await;
    let s = ok("svc", h.c.create_service(svc("web", &["n1", "n2"])).await);
    assert_eq!(s.vips.len(), 2);
    // Bad joins: unknown service, no network of the service's.
    let e =
        h.c.create_sandbox(h.sandbox_spec("x", &["n1"], Some("nope")))
            .await
            .unwrap_err();
    assert_eq!(
        (e.http_status(), e.to_string()),
        (404, "service nope not found".into())
    );
    let before = h.allocated(&n1);
    let e =
        h.c.create_sandbox(h.sandbox_spec("x", &["other"], Some("web")))
            .await
            .unwrap_err();
    assert!(
        e.to_string().contains("invalid service") && e.to_string().contains("n1, n2"),
        "{e}"
    );
    assert_eq!(h.allocated(&n1), before);
    let rev = ok("rev", h.c.event_revision().await);
    let a = ok(
        "a",
        h.c.create_sandbox(h.sandbox_spec("a", &["n1", "other"], Some("web")))
            .await,
    );
    assert_eq!(a.service.as_deref(), Some(s.id.as_str()));
    let b = ok(
        "b",
        h.c.create_sandbox(h.sandbox_spec("b", &["n1", "n2"], Some(&s.id)))
            .await,
    );
    let tasks = ok("tasks", h.c.service_tasks(&s).await);
    assert_eq!(
        tasks.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(tasks[0].backends.len(), 1);
    assert_eq!(tasks[1].backends.len(), 2);
    let per_net = ok("backends", h.c.service_backends("web").await);
    assert_eq!(per_net[0].network_id, n1.id);
    assert_eq!(per_net[0].backends.len(), 2);
    assert_eq!(per_net[1].network_id, n2.id);
    assert_eq!(per_net[1].backends.len(), 1);
    assert_eq!(per_net[1].backends[0].0, b.id);
    // Events: one backend connect per task address, in the sandbox's transaction.
    let events = events_since(&h.c, rev).await;
    let connects: Vec<&Event> = events
        .iter()
        .filter(|e| e.kind == EventType::Service && e.action == EventAction::Connect)
        .collect();
    assert_eq!(connects.len(), 3);
    assert_eq!(connects[0].actor, s.id);
    assert_eq!(connects[0].attributes.get("network"), Some(&n1.id));
    assert_eq!(connects[0].attributes.get("container"), Some(&a.id));
    assert_eq!(
        connects[0].attributes.get("ipv4").map(String::as_str),
        Some("10.1.0.3")
    );
    // Connect a to n2: a backend there; disconnect it from n1: gone from n1.
    let rev = ok("rev", h.c.event_revision().await);
    ok(
        "connect",
        h.c.connect("a", "n2", EndpointSpec::default()).await,
    );
    ok("disconnect", h.c.disconnect("a", "n1").await);
    let per_net = ok("backends", h.c.service_backends("web").await);
    let on = |i: usize| {
        per_net[i]
            .backends
            .iter()
            .map(|(s, _)| s.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(on(0), vec![b.id.clone()]);
    assert_eq!(on(1).len(), 2);
    let k = kinds(&events_since(&h.c, rev).await);
    assert_eq!(
        k,
        [
            "endpoint connect",
            "service connect",
            "endpoint disconnect",
            "service disconnect"
        ]
    );
    // Not removed while it has tasks: the error names them.
    let e = h.c.remove_service("web", false).await.unwrap_err();
    assert_eq!(e.http_status(), 409);
    assert!(e.to_string().contains("tasks a, b"), "{e}");
    // Removing a sandbox takes its task away.
    let rev = ok("rev", h.c.event_revision().await);
    ok("rm b", h.c.remove_sandbox("b").await);
    let k = kinds(&events_since(&h.c, rev).await);
    assert_eq!(
        k.iter().filter(|k| *k == "service disconnect").count(),
        2,
        "{k:?}"
    );
    assert_eq!(ok("tasks", h.c.service_tasks(&s).await).len(), 1);
    // --force detaches the rest: the sandbox stays, a task of nothing; addresses back.
    let with_vips = h.allocated(&n1);
    ok("force", h.c.remove_service("web", true).await);
    assert_eq!(h.allocated(&n1).len(), with_vips.len() - 1);
    let a = ok("a", h.c.sandbox("a").await);
    assert_eq!(a.service, None);
    assert_eq!(ok("eps", h.c.sandbox_endpoints(&a).await).len(), 2);
    assert!(ok("task keys", h.local.list("plexus/v1/service-task").await).is_empty());
    // Its endpoints come and go as any sandbox's.
    ok("disconnect", h.c.disconnect("a", "n2").await);
    let _ = n2;
}

#[tokio::test]
async fn updates_change_ports_affinity_labels_and_virtual_ips() {
    let h = host("h1", None).await;
    let n = h.net("n1", "10.1.0.0/24").await;
    let mut spec = svc("web", &["n1"]);
    spec.ports = vec![port(8080, 80)];
    spec.labels.insert("a".into(), "1".into());
    let s = ok("create", h.c.create_service(spec).await);
    ok(
        "other",
        h.c.create_service(ServiceSpec {
            ports: vec![port(7000, 70)],
            ..svc("other", &["n1"])
        })
        .await,
    );
    let base = h.allocated(&n);
    let rev = ok("rev", h.c.event_revision().await);
    let u = ok(
        "update",
        h.c.update_service(
            "web",
            ServiceUpdate {
                ports_add: vec![port(8443, 443)],
                ports_rm: vec![(8080, "tcp".into())],
                affinity: Some(SessionAffinity {
                    mode: AffinityMode::ClientIp,
                    timeout_seconds: 0,
                }),
                labels_add: BTreeMap::from([("b".to_string(), "2".to_string())]),
                labels_rm: vec!["a".into()],
                ..Default::default()
            },
        )
        .await,
    );
    assert_eq!(u.ports, vec![port(8443, 443)]);
    assert_eq!(u.affinity.mode, AffinityMode::ClientIp);
    assert_eq!(u.affinity.timeout_seconds, 10_800);
    assert_eq!(
        u.labels,
        BTreeMap::from([("b".to_string(), "2".to_string())])
    );
    assert_eq!(u.version, 2);
    assert_eq!(u.vips, s.vips);
    // To dnsrr: the virtual IP goes back; to vip: a new one is taken.
    let d = ok(
        "dnsrr",
        h.c.update_service(
            "web",
            ServiceUpdate {
                endpoint_mode: Some(EndpointMode::Dnsrr),
                ..Default::default()
            },
        )
        .await,
    );
    assert!(d.vips.is_empty());
    assert_eq!(h.allocated(&n).len(), base.len() - 1);
    let v = ok(
        "vip",
        h.c.update_service(
            "web",
            ServiceUpdate {
                endpoint_mode: Some(EndpointMode::Vip),
                ..Default::default()
            },
        )
        .await,
    );
    assert_eq!(v.vips.len(), 1);
    assert_eq!(h.allocated(&n).len(), base.len());
    let k = kinds(&events_since(&h.c, rev).await);
    assert_eq!(k, ["service update"; 3]);
    // Refused updates change nothing.
    let bad = [
        (
            ServiceUpdate {
                ports_add: vec![port(7000, 1)],
                ..Default::default()
            },
            "in use by service other",
        ),
        (
            ServiceUpdate {
                ports_rm: vec![(1, "tcp".into())],
                ..Default::default()
            },
            "publish-rm[0]",
        ),
        (
            ServiceUpdate {
                ports_add: vec![port(0, 1)],
                ..Default::default()
            },
            "publish-add[0] published port",
        ),
        (
            ServiceUpdate {
                affinity: Some(SessionAffinity {
                    mode: AffinityMode::ClientIp,
                    timeout_seconds: 100_000,
                }),
                ..Default::default()
            },
            "affinity timeout",
        ),
    ];
    for (update, field) in bad {
        let e = h.c.update_service("web", update).await.unwrap_err();
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    assert_eq!(ok("same", h.c.service("web").await), v);
}

#[tokio::test]
async fn state_survives_a_restart_and_startup_repairs_what_a_crash_left() {
    let h = host("h1", None).await;
    let n = h.net("n1", "10.1.0.0/24").await;
    let s = ok("svc", h.c.create_service(svc("web", &["n1"])).await);
    ok(
        "a",
        h.c.create_sandbox(h.sandbox_spec("a", &["n1"], Some("web")))
            .await,
    );
    ok(
        "b",
        h.c.create_sandbox(h.sandbox_spec("b", &["n1"], Some("web")))
            .await,
    );
    let tasks = ok("tasks", h.c.service_tasks(&s).await);
    // A crash mid-create: an address taken, its intent written, no record.
    let leaked = ok(
        "leak",
        h.ipam
            .request_address(plexus_ipam::AddressRequest::next(&n.ipv4[0].pool_id))
            .await,
    );
    let intent = serde_json::json!({"scope": "local", "addrs": [[n.ipv4[0].pool_id, leaked.address.addr()]]});
    let fake = "f".repeat(64);
    ok(
        "intent",
        h.local
            .txn(Txn::new().put(
                format!("plexus/v1/service-vips/{fake}"),
                serde_json::to_vec(&intent).unwrap_or_default(),
            ))
            .await,
    );
    // And a crash that lost one task's record, and left a task of a sandbox now gone.
    let key_a = format!("plexus/v1/service-task/{}/{}", s.id, tasks[0].sandbox_id);
    ok("lose task", h.local.txn(Txn::new().delete(key_a)).await);
    let ghost = Task {
        sandbox_id: "0".repeat(64),
        name: "ghost".into(),
        ..tasks[1].clone()
    };
    ok(
        "ghost",
        h.local
            .txn(Txn::new().put(
                format!("plexus/v1/service-task/{}/{}", s.id, ghost.sandbox_id),
                serde_json::to_vec(&ghost).unwrap_or_default(),
            ))
            .await,
    );
    // A new controller on the same store: the service, its tasks, and the repairs.
    let c2 = controller("h1", h.local.clone(), h.ipam.clone(), None);
    assert_eq!(ok("svc", c2.service("web").await), s);
    let report = ok("reconcile", c2.reconcile(ReconcileMode::Startup).await);
    assert_eq!(report.vips_released, 1);
    assert_eq!(report.tasks_mended, 2);
    assert!(!h.allocated(&n).contains(&leaked.address.addr()));
    assert!(h.allocated(&n).contains(&s.vips[0].addr.addr()));
    assert_eq!(ok("tasks", c2.service_tasks(&s).await), tasks);
    let again = ok("again", c2.reconcile(ReconcileMode::Startup).await);
    assert_eq!((again.vips_released, again.tasks_mended), (0, 0));
}

#[tokio::test]
async fn global_services_live_in_the_cluster_store() {
    let cluster = memory();
    let a = host("host-a", Some(cluster.clone())).await;
    let b = host("host-b", Some(cluster.clone())).await;
    let g = ok(
        "g",
        a.c.create_network(NetworkSpec {
            name: "g".into(),
            driver: "overlay".into(),
            attachable: true,
            ..Default::default()
        })
        .await,
    );
    a.net("la", "10.5.0.0/24").await;
    let e =
        a.c.create_service(svc("mixed", &["la", "g"]))
            .await
            .unwrap_err();
    assert!(
        e.to_string().contains("networks[1]") && e.to_string().contains("one scope"),
        "{e}"
    );
    let s = ok("svc", a.c.create_service(svc("gsvc", &["g"])).await);
    assert_eq!(s.scope, Scope::Global);
    assert_eq!(ok("on b", b.c.service("gsvc").await), s);
    let keys = ok("cluster", cluster.list("plexus/v1/global/service").await);
    assert_eq!(keys.len(), 1);
    // A task on b: its record is in the cluster store, seen from a; its sandbox stays home.
    ok(
        "task",
        b.c.create_sandbox(b.sandbox_spec("t", &["g"], Some("gsvc")))
            .await,
    );
    let tasks = ok("tasks from a", a.c.service_tasks(&s).await);
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].host, "host-b");
    let e = a.c.remove_service("gsvc", false).await.unwrap_err();
    assert!(e.to_string().contains("t (host host-b)"), "{e}");
    // Removed from a with --force: b's sandbox learns it at its next start.
    ok("force", a.c.remove_service("gsvc", true).await);
    ok("b start", b.c.reconcile(ReconcileMode::Startup).await);
    assert_eq!(ok("t", b.c.sandbox("t").await).service, None);
    assert!(b.cluster.is_some() && a.cluster.is_some());
    assert!(ok("gone", cluster.list("plexus/v1/global/service-task").await).is_empty());
    let _ = g;
}

#[tokio::test]
async fn ingress_ports_put_a_global_service_and_its_tasks_on_the_ingress_network() {
    let cluster = memory();
    let a = host("host-a", Some(cluster.clone())).await;
    let b = host("host-b", Some(cluster.clone())).await;
    ok(
        "g",
        a.c.create_network(NetworkSpec {
            name: "g".into(),
            driver: "overlay".into(),
            attachable: true,
            ..Default::default()
        })
        .await,
    );
    assert_eq!(ok("no ingress yet", a.c.ingress_network_id().await), None);
    let mut spec = svc("web", &["g"]);
    spec.ports = vec![port(8080, 80)];
    let s = ok("web", a.c.create_service(spec).await);
    let ingress = ok("ingress network", b.c.network("ingress").await);
    assert_eq!(ingress.scope, Scope::Global);
    assert_eq!(
        ok("id", b.c.ingress_network_id().await),
        Some(ingress.id.clone())
    );
    assert_eq!(s.networks.len(), 2, "{s:?}");
    assert_eq!(s.networks[1], ingress.id);
    assert_eq!(s.vips.len(), 2, "a virtual IP on the ingress network too");

    // A task made on b is on the ingress network without asking.
    ok(
        "task",
        b.c.create_sandbox(b.sandbox_spec("t", &["g"], Some("web")))
            .await,
    );
    let t = ok("t", b.c.sandbox("t").await);
    let eps = ok("endpoints", b.c.sandbox_endpoints(&t).await);
    assert!(
        eps.iter().any(|(ep, _)| ep.network_id == ingress.id),
        "{eps:?}"
    );
    let backends = ok("backends", a.c.service_backends("web").await);
    assert!(backends
        .iter()
        .any(|nb| nb.network_id == ingress.id && nb.backends.len() == 1));

    // A second service reuses the network; one without ingress ports is not on it, and
    // cannot get them later (its tasks were made without it), but may publish in host mode.
    let mut spec = svc("api", &["g"]);
    spec.ports = vec![port(9090, 90)];
    let api = ok("api", b.c.create_service(spec).await);
    assert_eq!(api.networks[1], ingress.id);
    let plain = ok("plain", a.c.create_service(svc("plain", &["g"])).await);
    assert_eq!(plain.networks.len(), 1);
    let e =
        a.c.update_service(
            "plain",
            ServiceUpdate {
                ports_add: vec![port(7070, 70)],
                ..Default::default()
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("publish-add") && e.contains("ingress network"),
        "{e}"
    );
    let mut host_mode = port(7070, 70);
    host_mode.mode = PublishMode::Host;
    ok(
        "host mode",
        a.c.update_service(
            "plain",
            ServiceUpdate {
                ports_add: vec![host_mode],
                ..Default::default()
            },
        )
        .await,
    );

    // A local service publishes without the ingress network.
    a.net("la", "10.6.0.0/24").await;
    let mut spec = svc("local", &["la"]);
    spec.ports = vec![port(6060, 60)];
    let l = ok("local", a.c.create_service(spec).await);
    assert_eq!(l.networks.len(), 1);
}
