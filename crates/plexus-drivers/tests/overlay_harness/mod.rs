//! N simulated hosts for the overlay driver: each a namespace on an underlay bridge that lives
//! in a namespace of the test's own (`192.0.2.<n>/24` on each host's `ul0`), each with its own
//! [`OverlayDriver`] programming that namespace, all sharing one in-memory control plane
//! ([`hub::Hub`]) and one cluster store (plexus-kv's memory backend). The test plays the
//! controller: it allocates a network once, tells every host's driver about it, creates and
//! joins endpoints, and delivers the control plane's events.
//!
//! ```text
//!   sandbox ─veth─ [br0 vxlan0] 1-<net>     sandbox ─veth─ [br0 vxlan0] 1-<net>
//!                        │ (socket in host ns)                  │
//!                  host h1 ul0 192.0.2.1 ──┐          host h2 ul0 192.0.2.2 ──┐
//!                                          └──── [ul] underlay namespace ─────┘
//! ```
//!
//! Every namespace (hosts, sandboxes, the underlay, the drivers' network namespaces) is
//! removed by drop guards, even when a test fails.

#![allow(dead_code)]

pub mod hub;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;
use plexus_cnm::{Driver, EndpointInfo, InterfaceName, IpamPool, NetworkInfo};
use plexus_drivers::{DriverConfig, OverlayConfig, OverlayDriver};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{BridgeSpec, Neighbour, Rtnl};

use crate::common::{ok, PinnedNs, MARK};
use hub::Hub;

/// A simulated host.
pub struct Host {
    pub addr: Ipv4Addr,
    pub driver: Arc<OverlayDriver>,
    pub ns: PinnedNs,
    pub sandboxes: BTreeMap<String, (PinnedNs, u32)>,
    run: tempfile::TempDir,
}

impl Host {
    /// The sandbox called `name` on this host.
    pub fn sb(&self, name: &str) -> &Netns {
        &self.sandboxes[name].0.ns
    }

    /// A connection into a network's namespace on this host (it must exist).
    pub async fn segment(&self, network: &NetworkInfo) -> Rtnl {
        let ns = ok(
            "network namespace",
            Netns::open(&self.driver.netns_path(&network.id)),
        );
        ok("connect", Rtnl::connect(&ns).await)
    }

    /// The FDB entries and IP neighbours of `vxlan0` in a network's namespace.
    pub async fn tables(&self, network: &NetworkInfo) -> (Vec<Neighbour>, Vec<Neighbour>) {
        let r = self.segment(network).await;
        let vx = ok("vxlan0", r.require_link("vxlan0").await);
        let fdb = ok("fdb", r.fdb(vx.index).await)
            .into_iter()
            .filter(|n| n.ip.is_some() && n.fixed)
            .collect();
        let neigh = ok("neighbours", r.neighbours(vx.index).await)
            .into_iter()
            .filter(|n| n.fixed)
            .collect();
        (fdb, neigh)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // The drivers' network namespaces, pinned in the driver's run directory.
        let dir = self.driver.run_dir().to_path_buf();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let _ = Netns::delete(&dir, &entry.file_name().to_string_lossy());
            }
        }
    }
}

/// The hosts, their underlay and the shared control plane and store.
pub struct Cluster {
    pub hosts: Vec<Host>,
    pub hub: Arc<Hub>,
    pub store: Arc<dyn plexus_kv::Store>,
    underlay: PinnedNs,
    next_id: u64,
    /// How long each join took, in order.
    pub joins: Vec<std::time::Duration>,
}

/// A 64-hex-digit id whose first 11 digits (what names use) differ for every `n`.
pub fn id(kind: u8, n: u64) -> String {
    format!("{kind:02x}{n:09x}{}", "0".repeat(53))
}

/// A driver for the host namespace `ns` at `addr`, registered with the hub.
async fn new_driver(
    ns: &Netns,
    store: &Arc<dyn plexus_kv::Store>,
    hub: &Arc<Hub>,
    addr: Ipv4Addr,
    run_dir: PathBuf,
) -> Arc<OverlayDriver> {
    let config = DriverConfig {
        cluster_store: Some(store.clone()),
        ..DriverConfig::new(ns.clone(), MARK)
    };
    let overlay = OverlayConfig {
        run_dir,
        control_plane: hub.plane(addr.into()),
    };
    let driver = Arc::new(ok(
        "overlay driver",
        OverlayDriver::new(config, overlay).await,
    ));
    hub.register(addr.into(), &driver);
    driver
}

impl Cluster {
    /// Host `n`'s daemon restarts: a new driver with nothing in memory takes its place (the
    /// caller reconciles it).
    pub async fn restart(&mut self, n: usize) -> Arc<OverlayDriver> {
        let host = &self.hosts[n - 1];
        let run_dir = host.driver.run_dir().to_path_buf();
        let driver = new_driver(&host.ns.ns, &self.store, &self.hub, host.addr, run_dir).await;
        self.hosts[n - 1].driver = driver.clone();
        driver
    }

    /// `n` hosts on one underlay.
    pub async fn new(n: u8) -> Self {
        let underlay = PinnedNs::new("underlay");
        let ru = ok("connect underlay", Rtnl::connect(&underlay.ns).await);
        let br = ok(
            "underlay bridge",
            ru.add_bridge(
                &BridgeSpec {
                    name: "ul",
                    ..Default::default()
                },
                "test-underlay",
            )
            .await,
        );
        ok("ul up", ru.set_up(br.index).await);
        let store = ok(
            "store",
            plexus_kv::open("memory://", Default::default()).await,
        );
        let hub = Arc::new(Hub::default());
        let mut hosts = Vec::new();
        for i in 1..=n {
            let ns = PinnedNs::new(&format!("h{i}"));
            let port = format!("ul-h{i}");
            let (near, far) = ok(
                "underlay veth",
                ru.add_veth(&port, "ul0", None, "test-underlay").await,
            );
            ok("move", ru.move_to(far.index, &ns.ns, None).await);
            ok("master", ru.set_master(near.index, br.index).await);
            ok("up", ru.set_up(near.index).await);
            let rh = ok("connect host", Rtnl::connect(&ns.ns).await);
            let lo = ok("lo", rh.require_link("lo").await);
            ok("lo up", rh.set_up(lo.index).await);
            let ul0 = ok("ul0", rh.require_link("ul0").await);
            let addr = Ipv4Addr::new(192, 0, 2, i);
            ok("addr", rh.add_address(ul0.index, addr.into(), 24).await);
            ok("ul0 up", rh.set_up(ul0.index).await);
            let run = ok("run dir", tempfile::tempdir());
            let driver = new_driver(&ns.ns, &store, &hub, addr, run.path().join("overlay")).await;
            hosts.push(Host {
                addr,
                driver,
                ns,
                sandboxes: BTreeMap::new(),
                run,
            });
        }
        Self {
            hosts,
            hub,
            store,
            underlay,
            next_id: 1,
            joins: Vec::new(),
        }
    }

    /// Host `n` (from 1).
    pub fn host(&self, n: usize) -> &Host {
        &self.hosts[n - 1]
    }

    /// An overlay network on `subnet`, as the controller makes a global one: allocated once
    /// (on host 1), then created on every host.
    pub async fn network(
        &mut self,
        name: &str,
        subnet: &str,
        options: &[(&str, &str)],
    ) -> NetworkInfo {
        let subnet: IpNet = ok("subnet", subnet.parse());
        self.next_id += 1;
        let mut info = NetworkInfo {
            id: id(0x0e, self.next_id),
            name: name.into(),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ipv4: vec![IpamPool {
                pool_id: format!("pool-{name}"),
                subnet,
                ip_range: None,
                gateway: None,
                aux_addresses: BTreeMap::new(),
            }],
            ipv6: Vec::new(),
            internal: false,
            enable_ipv6: false,
        };
        let first = &self.hosts[0].driver;
        ok("validate", first.validate_options(&info.options));
        let data = ok("allocate", first.allocate_network(&info).await);
        info.options.extend(data);
        for h in &self.hosts {
            ok("create network", h.driver.create_network(&info).await);
        }
        info
    }

    /// Makes (if needed) the sandbox `sandbox` on host `n`, and an endpoint with `ip` on
    /// `network` joined to it; delivers the events. Returns the endpoint's id.
    pub async fn attach(
        &mut self,
        n: usize,
        network: &NetworkInfo,
        sandbox: &str,
        ip: &str,
    ) -> String {
        self.next_id += 1;
        let endpoint_id = id(0x0a, self.next_id);
        let host = &mut self.hosts[n - 1];
        let (ns, next) = host
            .sandboxes
            .entry(sandbox.to_string())
            .or_insert_with(|| {
                let ns = PinnedNs::new(sandbox);
                // No duplicate address detection: an IPv6 address is usable at once.
                ok(
                    "accept_dad",
                    plexus_sys::sysctl::write(&ns.ns, "net.ipv6.conf.default.accept_dad", "0"),
                );
                (ns, 0)
            });
        let key = ns.path();
        let first = *next;
        *next += 1;
        // `ip` is an IPv4 address, optionally followed by `,` and an IPv6 one (in a /64).
        let (v4, v6) = match ip.split_once(',') {
            Some((a, b)) => (a, Some(b)),
            None => (ip, None),
        };
        let ip: IpAddr = ok("ip", v4.parse());
        let prefix = network.ipv4[0].subnet.prefix_len();
        let ipv6 = v6.map(|a| ok("ipnet6", IpNet::new(ok("ip6", a.parse()), 64)));
        let info = EndpointInfo {
            network_id: network.id.clone(),
            endpoint_id: endpoint_id.clone(),
            ipv4: Some(ok("ipnet", IpNet::new(ip, prefix))),
            ipv6,
            mac: None,
            ports: Vec::new(),
            options: BTreeMap::new(),
        };
        ok("create endpoint", host.driver.create_endpoint(&info).await);
        let started = std::time::Instant::now();
        let joined = ok(
            "join",
            host.driver
                .join(
                    &network.id,
                    &endpoint_id,
                    &key,
                    InterfaceName::numbered("eth", first),
                )
                .await,
        );
        let took = started.elapsed();
        eprintln!("join of {sandbox} on host {n} ({}): {took:?}", network.name);
        self.joins.push(took);
        assert_eq!(joined.interface, Some(format!("eth{first}")));
        self.hub.deliver().await;
        endpoint_id
    }

    /// Leaves and deletes an endpoint on host `n`; delivers the events.
    pub async fn detach(&self, n: usize, network: &NetworkInfo, endpoint_id: &str) {
        let d = &self.hosts[n - 1].driver;
        ok("leave", d.leave(&network.id, endpoint_id).await);
        ok(
            "delete endpoint",
            d.delete_endpoint(&network.id, endpoint_id).await,
        );
        self.hub.deliver().await;
    }

    /// Where the host's network namespaces are pinned.
    pub fn run_dir(&self, n: usize) -> PathBuf {
        self.hosts[n - 1].driver.run_dir().to_path_buf()
    }
}
