//! A network's own IPAM driver (`--ipam-driver`) as a DHCP-backed one behaves: it gets the
//! network's options with the pool request, the endpoint's MAC before the address (a random
//! one when the user gave none, then kept by the endpoint and handed to the driver), and the
//! DNS servers of its answer end up in the endpoint's record.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use plexus_cnm::*;
use plexus_ipam::api::DATA_DNS_SERVERS;
use plexus_ipam::{
    AddressRequest, AddressResponse, AddressSpaces, BuiltinIpam, Capabilities, Ipam, IpamConfig,
    IpamError, PoolRequest, PoolResponse,
};

/// A driver that keeps the endpoints it was asked to make.
#[derive(Default)]
struct Lan {
    endpoints: Mutex<Vec<EndpointInfo>>,
}

#[async_trait]
impl Driver for Lan {
    fn name(&self) -> &str {
        "macvlan"
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
    async fn create_endpoint(&self, ep: &EndpointInfo) -> Result<EndpointCreated, DriverError> {
        self.endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(ep.clone());
        Ok(EndpointCreated {
            mac: ep.mac.clone(),
            ports: Vec::new(),
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

/// The built-in IPAM dressed as a DHCP-backed driver: it requires the MAC, records what it
/// was given, and answers with DNS servers.
struct Leasing {
    inner: BuiltinIpam,
    pools: Mutex<Vec<PoolRequest>>,
    macs: Mutex<Vec<Option<String>>>,
}

#[async_trait]
impl Ipam for Leasing {
    async fn capabilities(&self) -> plexus_ipam::Result<Capabilities> {
        Ok(Capabilities {
            requires_mac_address: true,
            requires_request_replay: false,
        })
    }
    async fn default_address_spaces(&self) -> plexus_ipam::Result<AddressSpaces> {
        self.inner.default_address_spaces().await
    }
    async fn request_pool(&self, r: PoolRequest) -> plexus_ipam::Result<PoolResponse> {
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r.clone());
        self.inner.request_pool(r.subnet("10.60.0.0/24")).await
    }
    async fn release_pool(&self, id: &str) -> plexus_ipam::Result<()> {
        self.inner.release_pool(id).await
    }
    async fn request_address(&self, r: AddressRequest) -> plexus_ipam::Result<AddressResponse> {
        self.macs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r.mac_address.clone());
        let mut a = self.inner.request_address(r).await?;
        a.data
            .insert(DATA_DNS_SERVERS.into(), "10.60.0.53, 10.60.0.54".into());
        Ok(a)
    }
    async fn release_address(&self, id: &str, a: IpAddr) -> plexus_ipam::Result<()> {
        self.inner.release_address(id, a).await
    }
}

struct Resolver(Arc<Leasing>);

#[async_trait]
impl IpamResolver for Resolver {
    async fn resolve(&self, name: &str) -> Result<Arc<dyn Ipam>, IpamError> {
        match name {
            "dhcp" => Ok(self.0.clone()),
            other => Err(IpamError::PluginNotFound {
                name: other.into(),
                dirs: String::new(),
            }),
        }
    }
}

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[tokio::test]
async fn a_mac_first_ipam_gets_the_endpoints_mac_and_gives_its_dns_servers() {
    let store = ok(
        "store",
        plexus_kv::open("memory://", Default::default()).await,
    );
    let leasing = Arc::new(Leasing {
        inner: ok(
            "ipam",
            BuiltinIpam::open(store.clone(), IpamConfig::new("h")).await,
        ),
        pools: Mutex::default(),
        macs: Mutex::default(),
    });
    let driver = Arc::new(Lan::default());
    let mut drivers = DriverRegistry::new();
    drivers.register(driver.clone());
    // Addresses go through the controller's own IPAM by pool id: here the same one.
    let c = Controller::new(store, leasing.clone(), drivers, ControllerConfig::default())
        .with_ipam_resolver(Arc::new(Resolver(leasing.clone())));
    let spec = NetworkSpec {
        name: "lan".into(),
        driver: "macvlan".into(),
        ipam_driver: "dhcp".into(),
        options: [("parent".to_string(), "eth9".to_string())].into(),
        ..Default::default()
    };
    ok("network", c.create_network(spec).await);
    let asked = leasing.pools.lock().unwrap_or_else(|e| e.into_inner())[0].clone();
    assert_eq!(
        asked.network_options.get("parent").map(String::as_str),
        Some("eth9"),
        "the pool request carries the network's options"
    );

    ok("s1", c.add_sandbox("s1", "/run/netns/s1", true).await);
    ok("s2", c.add_sandbox("s2", "/run/netns/s2", true).await);
    let e1 = ok(
        "connect",
        c.connect("s1", "lan", EndpointSpec::default()).await,
    );
    let given = EndpointSpec {
        mac: Some("02:11:22:33:44:55".into()),
        ..Default::default()
    };
    let e2 = ok("connect", c.connect("s2", "lan", given).await);

    let macs = leasing
        .macs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let made = macs[0]
        .clone()
        .unwrap_or_else(|| panic!("no MAC: {macs:?}"));
    let first = u8::from_str_radix(&made[..2], 16).unwrap_or(0);
    assert_eq!(first & 0x03, 0x02, "locally administered unicast: {made}");
    assert_eq!(macs[1].as_deref(), Some("02:11:22:33:44:55"));
    let eps = driver
        .endpoints
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(
        eps[0].mac.as_deref(),
        Some(made.as_str()),
        "the driver gets it"
    );
    assert_eq!(
        e1.mac.as_deref(),
        Some(made.as_str()),
        "the record keeps it"
    );
    assert_eq!(e2.mac.as_deref(), Some("02:11:22:33:44:55"));
    let dns: Vec<String> = e1.dns.iter().map(|d| d.to_string()).collect();
    assert_eq!(dns, ["10.60.0.53", "10.60.0.54"]);

    // A network of the default IPAM makes up no MAC and carries no DNS servers.
    let plain = NetworkSpec {
        name: "plain".into(),
        driver: "macvlan".into(),
        ipv4: vec![IpamPoolSpec {
            subnet: Some("10.61.0.0/24".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let c2 = Controller::new(
        ok(
            "store",
            plexus_kv::open("memory://", Default::default()).await,
        ),
        Arc::new(ok(
            "ipam",
            BuiltinIpam::open(
                ok(
                    "store",
                    plexus_kv::open("memory://", Default::default()).await,
                ),
                IpamConfig::new("h"),
            )
            .await,
        )),
        {
            let mut d = DriverRegistry::new();
            d.register(Arc::new(Lan::default()));
            d
        },
        ControllerConfig::default(),
    );
    ok("plain", c2.create_network(plain).await);
    ok("s3", c2.add_sandbox("s3", "/run/netns/s3", true).await);
    let e3 = ok(
        "connect",
        c2.connect("s3", "plain", EndpointSpec::default()).await,
    );
    assert_eq!(e3.mac, None);
    assert!(e3.dns.is_empty());

    // An IPAM driver nobody knows is refused, naming it.
    let e = c
        .create_network(NetworkSpec {
            name: "other".into(),
            driver: "macvlan".into(),
            ipam_driver: "nosuch".into(),
            ..Default::default()
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("nosuch"), "{e}");
}
