//! The overlay driver behind the controller (needs root): two hosts, each with its own
//! `Controller` (local store, the cluster store shared) and its `OverlayDriver`, one
//! in-memory control plane whose events go through `Controller::table_event`, as the daemon
//! will route gossip's. A network made on one host is connected on both; its VXLAN id lives
//! in the cluster store with the network and goes with it.

mod common;
mod overlay_harness;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use common::{blocked, ok, reaches, sa, Server};
use overlay_harness::Cluster;
use plexus_cnm::{
    Controller, ControllerConfig, DriverRegistry, EndpointSpec, IpamPoolSpec, NetworkSpec, Scope,
};
use plexus_drivers::overlay::options::VXLANID_LIST;
use plexus_drivers::overlay::vni_key;
use plexus_ipam::{BuiltinIpam, Ipam, IpamConfig, ScopedIpam};

/// Host `n`'s controller, with its overlay driver.
async fn controller(c: &Cluster, n: usize) -> Controller {
    let local = ok(
        "local store",
        plexus_kv::open("memory://", Default::default()).await,
    );
    let host_id = format!("host-{n}");
    let local_ipam: Arc<dyn Ipam> = Arc::new(ok(
        "local ipam",
        BuiltinIpam::open(local.clone(), IpamConfig::new(&host_id)).await,
    ));
    let global_ipam: Arc<dyn Ipam> = Arc::new(ok(
        "global ipam",
        BuiltinIpam::open(c.store.clone(), IpamConfig::new(&host_id)).await,
    ));
    let mut drivers = DriverRegistry::new();
    drivers.register(c.host(n).driver.clone());
    let config = ControllerConfig {
        host_id,
        default_driver: "overlay".into(),
        ..Default::default()
    };
    Controller::new(
        local,
        Arc::new(ScopedIpam::new(local_ipam, Some(global_ipam))),
        drivers,
        config,
    )
    .with_cluster_store(c.store.clone())
}

/// Routes the control plane's queued events through the hosts' controllers.
async fn route(c: &Cluster, controllers: &BTreeMap<IpAddr, Controller>) {
    for (to, event) in c.hub.take() {
        ok("table_event", controllers[&to].table_event(&event).await);
    }
}

#[tokio::test]
async fn an_overlay_network_through_two_controllers_carries_tcp_and_frees_its_id() {
    need_root!();
    let c = Cluster::new(2).await;
    let ctl: BTreeMap<IpAddr, Controller> = BTreeMap::from([
        (IpAddr::V4(c.host(1).addr), controller(&c, 1).await),
        (IpAddr::V4(c.host(2).addr), controller(&c, 2).await),
    ]);
    let (a, b) = (
        &ctl[&IpAddr::V4(c.host(1).addr)],
        &ctl[&IpAddr::V4(c.host(2).addr)],
    );
    let spec = NetworkSpec {
        name: "web".into(),
        driver: "overlay".into(),
        attachable: true,
        ipv4: vec![IpamPoolSpec {
            subnet: Some("10.90.0.0/24".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let net = ok("create on host 1", a.create_network(spec).await);
    assert_eq!(net.scope, Scope::Global);
    let vni: u32 = ok("vni", net.driver_data[VXLANID_LIST].parse());
    assert_eq!(
        ok("vni key", c.store.get(&vni_key(vni)).await).value,
        net.id.as_bytes()
    );
    // Host 2 sees it in the cluster store and connects to it: its driver learns of the network
    // from its controller, with the VXLAN id.
    let (sa_ns, sb_ns) = (common::PinnedNs::new("ca"), common::PinnedNs::new("cb"));
    ok("sandbox a", a.add_sandbox("ca", &sa_ns.path(), false).await);
    ok("sandbox b", b.add_sandbox("cb", &sb_ns.path(), false).await);
    let ea = ok(
        "connect a",
        a.connect("ca", "web", EndpointSpec::default()).await,
    );
    route(&c, &ctl).await;
    let eb = ok(
        "connect b",
        b.connect("cb", "web", EndpointSpec::default()).await,
    );
    route(&c, &ctl).await;
    assert_eq!(c.host(2).driver.vni(&net.id).await, Some(vni));
    assert_eq!(eb.interface.as_deref(), Some("eth0"));
    assert!(eb.disable_gateway);
    let (ip_a, ip_b) = match (ea.ipv4.map(|i| i.addr()), eb.ipv4.map(|i| i.addr())) {
        (Some(IpAddr::V4(x)), Some(IpAddr::V4(y))) => (x, y),
        other => panic!("addresses: {other:?}"),
    };
    assert_ne!(ip_a, ip_b);
    for ns in [&sa_ns, &sb_ns] {
        let r = ok("connect", plexus_sys::rtnl::Rtnl::connect(&ns.ns).await);
        ok("lo", r.set_up(plexus_sys::rtnl::LOOPBACK_IFINDEX).await);
    }
    let _srv = Server::start(&sb_ns.ns, sa(ip_b, 8000));
    assert_eq!(reaches(&sa_ns.ns, sa(ip_b, 8000)), ip_a.to_string());

    // Host 2 leaves: host 1 forgets its endpoint; the id goes with the network.
    ok("disconnect b", b.disconnect("cb", "web").await);
    route(&c, &ctl).await;
    assert!(c.host(1).driver.peers(&net.id).await.is_empty());
    assert!(blocked(&sa_ns.ns, sa(ip_b, 8000)));
    ok("disconnect a", a.disconnect("ca", "web").await);
    route(&c, &ctl).await;
    ok("delete", a.delete_network("web").await);
    assert!(c.store.get(&vni_key(vni)).await.is_err());
    for n in 1..=2 {
        assert!(!c.host(n).driver.netns_path(&net.id).exists());
    }
}
