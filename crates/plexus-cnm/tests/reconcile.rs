//! `Controller::reconcile` with fake drivers, the built-in IPAM and a memory store: which
//! endpoints each mode rolls back, what each driver is handed, and that one driver's failure
//! neither stops the others nor goes unreported.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use plexus_cnm::*;
use plexus_ipam::{BuiltinIpam, IpamConfig};

/// A driver whose kernel state the test sets: which endpoints are live, and whether its
/// reconciliation fails. It remembers what reconciliation handed it.
struct Fake {
    name: &'static str,
    live: Mutex<Option<BTreeMap<String, LiveEndpoint>>>,
    fails: bool,
    /// Whether `leave` fails (a kernel error during a disconnect).
    leave_fails: std::sync::atomic::AtomicBool,
    seen: Mutex<Vec<(ReconcileMode, Desired)>>,
}

impl Fake {
    fn new(name: &'static str, fails: bool) -> Arc<Self> {
        Arc::new(Self {
            name,
            live: Mutex::new(None),
            fails,
            leave_fails: Default::default(),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn set_live(&self, live: &[(&str, Option<&str>, bool)]) {
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(
            live.iter()
                .map(|(id, interface, published)| {
                    (
                        id.to_string(),
                        LiveEndpoint {
                            interface: interface.map(String::from),
                            published: *published,
                        },
                    )
                })
                .collect(),
        );
    }

    fn last(&self) -> Option<(ReconcileMode, Desired)> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last()
            .cloned()
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
    async fn create_network(&self, _: &NetworkInfo) -> Result<(), DriverError> {
        Ok(())
    }
    async fn delete_network(&self, _: &str) -> Result<(), DriverError> {
        Ok(())
    }
    async fn create_endpoint(&self, e: &EndpointInfo) -> Result<EndpointCreated, DriverError> {
        Ok(EndpointCreated {
            mac: Some("02:42:0a:00:00:02".into()),
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
    async fn leave(&self, _: &str, endpoint: &str) -> Result<(), DriverError> {
        if self.leave_fails.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(DriverError::Failed(format!("veth of {endpoint}: busy")));
        }
        Ok(())
    }
    async fn live_endpoints(&self) -> Result<Option<BTreeMap<String, LiveEndpoint>>, DriverError> {
        Ok(self.live.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
    async fn reconcile(
        &self,
        desired: &Desired,
        mode: ReconcileMode,
    ) -> Result<Reconciled, DriverError> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((mode, desired.clone()));
        if self.fails {
            return Err(DriverError::Failed(format!(
                "{} kernel unreachable",
                self.name
            )));
        }
        Ok(Reconciled::default())
    }
}

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

async fn controller(drivers: &[Arc<Fake>]) -> Controller {
    let store = ok(
        "store",
        plexus_kv::open("memory://", Default::default()).await,
    );
    let ipam = ok(
        "ipam",
        BuiltinIpam::open(store.clone(), IpamConfig::new("host-1")).await,
    );
    let mut registry = DriverRegistry::new();
    for d in drivers {
        registry.register(d.clone());
    }
    Controller::new(store, Arc::new(ipam), registry, ControllerConfig::default())
}

fn network(name: &str, driver: &str) -> NetworkSpec {
    NetworkSpec {
        name: name.into(),
        driver: driver.into(),
        ..Default::default()
    }
}

fn published(port: u16) -> EndpointSpec {
    EndpointSpec {
        ports: vec![PortBinding {
            proto: "tcp".into(),
            container_port: 80,
            host_ip: None,
            host_port: port,
            host_port_end: 0,
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn startup_rolls_back_what_is_not_live_and_periodic_keeps_it() {
    let kernel = Fake::new("kern", false);
    let c = controller(std::slice::from_ref(&kernel)).await;
    ok("network", c.create_network(network("n", "kern")).await);
    let mut ids = BTreeMap::new();
    for (sandbox, spec) in [
        ("live", EndpointSpec::default()),
        ("renamed", EndpointSpec::default()),
        ("gone", EndpointSpec::default()),
        ("ports", published(8080)),
        ("unpublished", published(8081)),
    ] {
        ok(
            "sandbox",
            c.add_sandbox(sandbox, &format!("/run/test/{sandbox}"), false)
                .await,
        );
        let ep = ok("connect", c.connect(sandbox, "n", spec).await);
        ids.insert(sandbox, ep.id);
    }
    kernel.set_live(&[
        (&ids["live"], Some("eth0"), false),
        (&ids["renamed"], Some("eth7"), false),
        (&ids["ports"], Some("eth0"), true),
        (&ids["unpublished"], Some("eth0"), false),
    ]);

    // Periodic: nothing is rolled back, every endpoint is handed over for repair; a name
    // the kernel marks differently is corrected in the record (in either mode).
    let report = ok("periodic", c.reconcile(ReconcileMode::Periodic).await);
    assert!(report.forgotten.is_empty(), "{report:?}");
    assert_eq!(
        report.renamed,
        [(ids["renamed"].clone(), "eth7".to_string())]
    );
    let (mode, desired) = kernel.last().unwrap_or_else(|| panic!("not reconciled"));
    assert_eq!(mode, ReconcileMode::Periodic);
    assert_eq!(desired.networks.len(), 1);
    assert_eq!(desired.endpoints.len(), 5);
    let gone = desired
        .endpoints
        .iter()
        .find(|d| d.info.endpoint_id == ids["gone"]);
    // What is needed to make it again: its sandbox, name, addresses, MAC.
    assert_eq!(gone.map(|d| d.sandbox_key.as_str()), Some("/run/test/gone"));
    assert_eq!(gone.and_then(|d| d.interface.as_deref()), Some("eth0"));
    assert!(gone.is_some_and(|d| d.info.ipv4.is_some() && d.info.mac.is_some()));

    // Start-up: the endpoint that is not live and the one whose ports are not published go.
    let report = ok("startup", c.reconcile(ReconcileMode::Startup).await);
    let mut forgotten = report.forgotten.clone();
    forgotten.sort();
    let mut want = vec![ids["gone"].clone(), ids["unpublished"].clone()];
    want.sort();
    assert_eq!(forgotten, want, "{report:?}");
    assert!(report.renamed.is_empty(), "corrected once: {report:?}");
    let (_, desired) = kernel.last().unwrap_or_else(|| panic!("not reconciled"));
    assert_eq!(desired.endpoints.len(), 3);
    let sandbox = ok("inspect", c.sandbox("renamed").await);
    let recorded = ok("endpoints", c.sandbox_endpoints(&sandbox).await);
    assert_eq!(recorded[0].0.interface.as_deref(), Some("eth7"));
    assert!(ok("gone", c.sandbox("gone").await).endpoints.is_empty());
}

#[tokio::test]
async fn a_failing_driver_is_reported_and_the_others_still_run() {
    let broken = Fake::new("broken", true);
    let quiet = Fake::new("quiet", false);
    let c = controller(&[broken.clone(), quiet.clone()]).await;
    ok("network", c.create_network(network("b", "broken")).await);
    ok("network", c.create_network(network("q", "quiet")).await);
    ok("sandbox", c.add_sandbox("s", "/run/test/s", false).await);
    ok(
        "connect",
        c.connect("s", "q", EndpointSpec::default()).await,
    );
    let report = ok("periodic", c.reconcile(ReconcileMode::Periodic).await);
    assert_eq!(
        report.failed.get("broken").map(String::as_str),
        Some("broken kernel unreachable"),
        "{report:?}"
    );
    assert!(!report.is_empty());
    // quiet has no per-endpoint kernel state (live: None): nothing of it is rolled back,
    // even at start-up, and it still gets its networks and endpoints.
    let report = ok("startup", c.reconcile(ReconcileMode::Startup).await);
    assert!(report.forgotten.is_empty(), "{report:?}");
    let (_, desired) = quiet
        .last()
        .unwrap_or_else(|| panic!("quiet not reconciled"));
    assert_eq!(desired.networks.len(), 1);
    assert_eq!(desired.endpoints.len(), 1);
}

/// A disconnect whose leave fails in the kernel still removes the records (a retry would be a
/// 404); what the driver left is no longer in what the next pass hands it, which is how a
/// driver learns to delete it.
#[tokio::test]
async fn a_disconnect_whose_leave_fails_is_finished_by_the_next_pass() {
    let kernel = Fake::new("kern", false);
    let c = controller(std::slice::from_ref(&kernel)).await;
    let n = ok("network", c.create_network(network("n", "kern")).await);
    ok("sandbox", c.add_sandbox("s", "/run/test/s", false).await);
    let ep = ok(
        "connect",
        c.connect("s", "n", EndpointSpec::default()).await,
    );
    kernel.set_live(&[(&ep.id, Some("eth0"), false)]);
    kernel
        .leave_fails
        .store(true, std::sync::atomic::Ordering::Relaxed);
    ok("disconnect", c.disconnect("s", "n").await);
    assert!(ok("endpoints", c.endpoints(&n.id).await).is_empty());
    let again = c.disconnect("s", "n").await;
    assert_eq!(again.err().map(|e| e.http_status()), Some(404));
    let report = ok("periodic", c.reconcile(ReconcileMode::Periodic).await);
    assert!(report.forgotten.is_empty(), "{report:?}");
    let (_, desired) = kernel.last().unwrap_or_else(|| panic!("not reconciled"));
    assert_eq!(desired.networks.len(), 1);
    assert!(desired.endpoints.is_empty(), "{desired:?}");
}
