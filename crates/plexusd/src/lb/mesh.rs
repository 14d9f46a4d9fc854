//! The routing mesh: services' published ports, from the store's records to three kinds of
//! table (plexus-lb's `mesh` and `return_path`). Pure, no I/O; `mesh_kernel.rs` applies.
//!
//! A published port answers on this host's addresses (all, or those of `--ingress-address`)
//! through the host's `ip plexus-mesh` table ([`host_view`]):
//!
//! - a **local** service's port (a bridge network on this host) DNATs straight to its tasks'
//!   addresses, whatever the mode: this host is all its hosts;
//! - a **global** service's `mode=host` port DNATs to this host's tasks only, at their
//!   address on the gateway network (`docker_gwbridge`), the one the host reaches;
//! - a **global** service's `mode=ingress` port (the default) DNATs to this host's ingress
//!   sandbox ([`INGRESS_SANDBOX`]), at its gateway-network address, the port kept. The
//!   ingress sandbox's own table ([`gateway_view`]) DNATs to one of the service's tasks on
//!   any host, at its address on the ingress network and the target port.
//!
//! No step SNATs: the task sees the client's own address. Its reply must go back through the
//! ingress sandbox that DNATed it (only its conntrack can undo the DNAT), not out of the
//! task's default route: each task on the ingress network has a return path
//! ([`return_view`]) that marks a connection by the MAC address of the ingress sandbox it
//! came from and routes the replies to that sandbox's address. Every host's ingress sandbox
//! is known to every task: this host's from the store, the others' from their
//! [`INGRESS_TABLE`](super::record::INGRESS_TABLE) entries on the ingress network, which go
//! with their host.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use plexus_cnm::{PublishMode, PublishedPort, Scope, Service, Task};
use plexus_drivers::INGRESS_SANDBOX;
use plexus_lb::mesh::{MeshScope, MeshView, PortKey, PortView, Protocol};
use plexus_lb::return_path::ReturnView;

use super::model::{is_local, Member, Model};

/// A service with published ports, as the mesh needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ported {
    /// Its name.
    pub name: String,
    /// Its scope.
    pub scope: Scope,
    /// Its published ports.
    pub ports: Vec<PublishedPort>,
    /// This host's tasks: sandbox id and IPv4 backends (network id, address).
    pub tasks: Vec<(String, Vec<(String, Ipv4Addr)>)>,
}

/// Another host's ingress sandbox, from gossip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// The publishing host's gossip address.
    pub owner: IpAddr,
    /// Its address on the ingress network.
    pub addr: Ipv4Addr,
    /// Its MAC address there.
    pub mac: [u8; 6],
}

/// The mesh's part of the [`Model`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshModel {
    /// Services with published ports, by id.
    pub services: BTreeMap<String, Ported>,
    /// The ingress network's id, when it exists.
    pub ingress: Option<String>,
    /// Other hosts' ingress sandboxes, by their entry's key.
    pub gateways: BTreeMap<String, Gateway>,
}

/// The mesh's record of `service` (`None`: it publishes nothing).
pub fn ported(service: &Service, tasks: &[Task], host_id: &str) -> Option<Ported> {
    if service.ports.is_empty() {
        return None;
    }
    let tasks = tasks
        .iter()
        .filter(|t| is_local(t, host_id))
        .map(|t| {
            let backends = t
                .backends
                .iter()
                .filter_map(|b| match b.ipv4.map(|a| a.addr()) {
                    Some(IpAddr::V4(a)) => Some((b.network_id.clone(), a)),
                    _ => None,
                })
                .collect();
            (t.sandbox_id.clone(), backends)
        })
        .collect();
    Some(Ported {
        name: service.name.clone(),
        scope: service.scope,
        ports: service.ports.clone(),
        tasks,
    })
}

fn protocol(p: &PublishedPort) -> Option<Protocol> {
    match p.protocol.as_str() {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        _ => None,
    }
}

/// This host's ingress sandbox, with its id.
pub fn ingress_sandbox(model: &Model) -> Option<(&String, &Member)> {
    model
        .members
        .iter()
        .find(|(_, m)| m.name == INGRESS_SANDBOX)
}

/// Whether some global service publishes a port in ingress mode: the mesh needs this host's
/// ingress sandbox.
pub fn needs_ingress(model: &Model) -> bool {
    model
        .mesh
        .services
        .values()
        .any(|s| s.scope == Scope::Global && s.ports.iter().any(|p| p.mode == PublishMode::Ingress))
}

/// Adds `port` to `view` unless another service has its key (the first by service id
/// keeps it, logged).
fn insert(
    view: &mut MeshView,
    service: &str,
    p: &PublishedPort,
    target: u16,
    backends: Vec<Ipv4Addr>,
) {
    let Some(protocol) = protocol(p) else { return };
    let key = PortKey {
        protocol,
        port: p.published,
    };
    if let Some(held) = view.ports.get(&key) {
        tracing::warn!(port = p.published, protocol = %p.protocol, service, held = %held.service, "two services publish one port; one is not answered");
        return;
    }
    let backends: BTreeSet<Ipv4Addr> = backends.into_iter().collect();
    view.ports.insert(
        key,
        PortView {
            service: service.to_string(),
            target,
            backends: backends.into_iter().collect(),
        },
    );
}

/// What the host's table should hold (see the module's doc), answering on `addresses`
/// (`None`: every local address).
pub fn host_view(model: &Model, addresses: Option<&BTreeSet<Ipv4Addr>>) -> MeshView {
    let mut view = MeshView {
        scope: MeshScope::Host {
            addresses: addresses.cloned(),
        },
        ..MeshView::default()
    };
    let ingress_at = ingress_sandbox(model)
        .and_then(|(_, m)| m.egress())
        .and_then(|e| e.ipv4);
    for s in model.mesh.services.values() {
        for p in &s.ports {
            let (target, backends) = match (s.scope, p.mode) {
                (Scope::Local, _) => (
                    p.target,
                    s.tasks
                        .iter()
                        .filter_map(|(_, bs)| bs.first().map(|(_, a)| *a))
                        .collect(),
                ),
                (Scope::Global, PublishMode::Host) => (
                    p.target,
                    s.tasks
                        .iter()
                        .filter_map(|(sb, _)| model.members.get(sb))
                        .filter_map(|m| m.egress().and_then(|e| e.ipv4))
                        .collect(),
                ),
                (Scope::Global, PublishMode::Ingress) => {
                    (p.published, ingress_at.into_iter().collect())
                }
            };
            insert(&mut view, &s.name, p, target, backends);
        }
    }
    view
}

/// What this host's ingress sandbox's table should hold: each global service's ingress
/// ports, over its tasks on every host at their ingress-network address.
pub fn gateway_view(model: &Model) -> MeshView {
    let mut view = MeshView {
        scope: MeshScope::Gateway,
        ..MeshView::default()
    };
    let Some(ingress) = &model.mesh.ingress else {
        return view;
    };
    for (id, s) in &model.mesh.services {
        if s.scope != Scope::Global {
            continue;
        }
        let mut backends: Vec<Ipv4Addr> = s
            .tasks
            .iter()
            .flat_map(|(_, bs)| bs.iter())
            .filter(|(n, _)| n == ingress)
            .map(|(_, a)| *a)
            .collect();
        backends.extend(
            model
                .remote
                .get(ingress)
                .into_iter()
                .flat_map(|ts| ts.values())
                .filter(|t| &t.service_id == id)
                .map(|t| t.addr),
        );
        for p in s.ports.iter().filter(|p| p.mode == PublishMode::Ingress) {
            insert(&mut view, &s.name, p, p.target, backends.clone());
        }
    }
    view
}

/// This host's ingress sandbox as a gateway: its address and MAC on the ingress network.
pub fn local_gateway(model: &Model) -> Option<(Ipv4Addr, [u8; 6])> {
    let ingress = model.mesh.ingress.as_ref()?;
    let (_, m) = ingress_sandbox(model)?;
    let e = m.endpoint_on(ingress)?;
    Some((e.ipv4?, e.mac?))
}

/// The return path of the sandbox `id` (`None`: it is not on the ingress network, or is the
/// ingress sandbox): every known ingress sandbox, on its ingress interface.
pub fn return_view(model: &Model, id: &str) -> Option<ReturnView> {
    let ingress = model.mesh.ingress.as_ref()?;
    let m = model.members.get(id)?;
    if m.name == INGRESS_SANDBOX {
        return None;
    }
    let interface = m.endpoint_on(ingress)?.interface.clone()?;
    let mut gateways: BTreeMap<[u8; 6], Ipv4Addr> = model
        .mesh
        .gateways
        .values()
        .map(|g| (g.mac, g.addr))
        .collect();
    if let Some((addr, mac)) = local_gateway(model) {
        gateways.insert(mac, addr);
    }
    Some(ReturnView {
        interface,
        gateways,
    })
}
