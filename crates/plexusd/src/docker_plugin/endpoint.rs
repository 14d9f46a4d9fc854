//! `NetworkDriver.CreateEndpoint`, `Join`, `Leave`, `DeleteEndpoint` and the calls around
//! them. `CreateEndpoint` records what dockerd chose (address, MAC, published ports); `Join`
//! connects the container's namespace through the controller (a Plexus sandbox per
//! namespace, see the module docs of [`super`]); `Leave` disconnects it and removes the
//! sandbox with its last network; `DeleteEndpoint` forgets the record.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use plexus_cnm::{CnmError, EndpointSpec, PortBinding, SandboxSpec};
use plexus_drivers::remote::wire::{
    CreateEndpointReply, EndpointInterface, InterfaceNameWire, JoinReply, OperInfoReply,
    OPT_PORTMAP,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::network::{check_id, record as network_record};
use super::state::{endpoint_key, EndpointRecord, NetworkRecord};
use super::{answer, request, Answer, Ctx, Refusal};

/// `/NetworkDriver.CreateEndpoint`'s request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateEndpointRequest {
    #[serde(rename = "NetworkID", default)]
    network_id: String,
    #[serde(rename = "EndpointID", default)]
    endpoint_id: String,
    #[serde(default)]
    interface: Option<EndpointInterface>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
}

/// `{"NetworkID", "EndpointID"}`, with `Join`'s `SandboxKey`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointIdsRequest {
    #[serde(rename = "NetworkID", default)]
    network_id: String,
    #[serde(rename = "EndpointID", default)]
    endpoint_id: String,
    #[serde(default)]
    sandbox_key: String,
}

/// The endpoint record of dockerd's `id` on network `network`, or the refusal naming
/// `EndpointID`.
async fn endpoint_record(ctx: &Ctx, network: &str, id: &str) -> Result<EndpointRecord, Refusal> {
    check_id("EndpointID", id)?;
    let rec = ctx
        .state
        .get::<EndpointRecord>(&endpoint_key(id))
        .await?
        .ok_or_else(|| {
            Refusal::field(
                "EndpointID",
                format!("unknown endpoint {id:?}: the plugin made no such endpoint"),
            )
        })?;
    if rec.network != network {
        return Err(Refusal::field(
            "NetworkID",
            format!(
                "endpoint {id:?} is on network {:?}, not {network:?}",
                rec.network
            ),
        ));
    }
    Ok(rec)
}

/// libnetwork's `types.PortBinding` as `com.docker.network.portmap` carries it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PortBindingWire {
    #[serde(default)]
    proto: u8,
    #[serde(default)]
    port: u16,
    #[serde(rename = "HostIP", default)]
    host_ip: Option<String>,
    #[serde(default)]
    host_port: u16,
    #[serde(default)]
    host_port_end: u16,
}

/// The published ports of `CreateEndpoint`'s options.
fn ports(options: &Map<String, Value>) -> Result<Vec<PortBinding>, Refusal> {
    let field = format!("Options.{OPT_PORTMAP}");
    let wire: Vec<PortBindingWire> = match options.get(OPT_PORTMAP) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| Refusal::field(&field, format!("not a list of port bindings: {e}")))?,
    };
    wire.into_iter()
        .enumerate()
        .map(|(i, p)| {
            let proto = match p.proto {
                6 => "tcp",
                17 => "udp",
                132 => "sctp",
                n => {
                    return Err(Refusal::field(
                        &format!("{field}[{i}].Proto"),
                        format!("{n} is not tcp (6), udp (17) or sctp (132)"),
                    ))
                }
            };
            if p.port == 0 {
                return Err(Refusal::field(&format!("{field}[{i}].Port"), "missing"));
            }
            let host_ip = match p.host_ip.as_deref() {
                None | Some("") => None,
                Some(s) => Some(s.parse().map_err(|_| {
                    Refusal::field(
                        &format!("{field}[{i}].HostIP"),
                        format!("{s:?} is not an IP address"),
                    )
                })?),
            };
            Ok(PortBinding {
                proto: proto.into(),
                container_port: p.port,
                host_ip,
                host_port: p.host_port,
                host_port_end: p.host_port_end,
            })
        })
        .collect()
}

/// An address of the request's `Interface`, in one of `subnets`.
fn interface_addr(field: &str, value: &str, subnets: &[IpNet]) -> Result<Option<IpNet>, Refusal> {
    if value.is_empty() {
        return Ok(None);
    }
    let addr: IpNet = value.parse().map_err(|_| {
        Refusal::field(
            field,
            format!("{value:?} is not an address with its prefix"),
        )
    })?;
    if !subnets.iter().any(|s| s.contains(&addr.addr())) {
        return Err(Refusal::field(
            field,
            format!(
                "{} is outside the network's pool{} {}",
                addr.addr(),
                if subnets.len() == 1 { "" } else { "s" },
                subnets
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    Ok(Some(addr))
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
fn check_mac(value: &str) -> Result<String, Refusal> {
    let parts: Vec<&str> = value.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if !ok {
        return Err(Refusal::field(
            "Interface.MacAddress",
            format!("{value:?} is not a MAC address"),
        ));
    }
    Ok(value.to_ascii_lowercase())
}

/// A MAC for an endpoint dockerd gave none: from its IPv4 address as Docker's bridge does
/// (`02:42:` and the address), else from its id.
fn derive_mac(ipv4: Option<&IpNet>, id: &str) -> String {
    match ipv4.map(|n| n.addr()) {
        Some(std::net::IpAddr::V4(a)) => {
            let o = a.octets();
            format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
        }
        _ => {
            let hex: String = id
                .chars()
                .filter(|c| c.is_ascii_hexdigit())
                .chain(std::iter::repeat('0'))
                .take(10)
                .collect::<String>()
                .to_ascii_lowercase();
            format!(
                "02:{}:{}:{}:{}:{}",
                &hex[0..2],
                &hex[2..4],
                &hex[4..6],
                &hex[6..8],
                &hex[8..10]
            )
        }
    }
}

/// `CreateEndpoint`: checks dockerd's choices against the network and records them.
pub async fn create(ctx: &Ctx, body: &[u8]) -> Answer {
    let r: CreateEndpointRequest = request("CreateEndpoint", body)?;
    let net = network_record(ctx, &r.network_id).await?;
    check_id("EndpointID", &r.endpoint_id)?;
    let network = ctx.controller.network(&net.plexus_id).await?;
    let iface = r.interface.unwrap_or_default();
    let v4: Vec<IpNet> = network.ipv4.iter().map(|p| p.subnet).collect();
    let v6: Vec<IpNet> = network.ipv6.iter().map(|p| p.subnet).collect();
    let ipv4 = interface_addr("Interface.Address", &iface.address, &v4)?;
    if ipv4.is_none() && !v4.is_empty() {
        return Err(Refusal::field(
            "Interface.Address",
            "missing: the network's endpoints get their address from IPAM",
        ));
    }
    let ipv6 = interface_addr("Interface.AddressIPv6", &iface.address_ipv6, &v6)?;
    let ports = ports(&r.options.unwrap_or_default())?;
    let (mac, chosen) = if iface.mac_address.is_empty() {
        (derive_mac(ipv4.as_ref(), &r.endpoint_id), true)
    } else {
        (check_mac(&iface.mac_address)?, false)
    };
    let rec = EndpointRecord {
        docker_id: r.endpoint_id.clone(),
        network: r.network_id.clone(),
        ipv4,
        ipv6,
        mac: mac.clone(),
        ports,
        sandbox: None,
        key: None,
        attached: false,
    };
    ctx.state.put(&endpoint_key(&r.endpoint_id), &rec).await?;
    answer(CreateEndpointReply {
        interface: chosen.then(|| EndpointInterface {
            mac_address: mac,
            ..EndpointInterface::default()
        }),
    })
}

/// The Plexus sandbox of a container's namespace.
fn sandbox_name(key: &str) -> Result<String, Refusal> {
    let path = Path::new(key);
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let clean: String = file
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if !path.is_absolute() || clean.is_empty() {
        return Err(Refusal::field(
            "SandboxKey",
            format!("{key:?} is not the path of a network namespace"),
        ));
    }
    Ok(format!("docker-{clean}"))
}

/// Whether dockerd has mounted a namespace at `key`: a mount point's device differs from
/// its directory's.
fn mounted(key: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let path = Path::new(key);
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(file), Some(Ok(dir))) => file.dev() != dir.dev(),
        _ => false,
    }
}

/// The prefix of the interface's name in the container: libnetwork numbers it (`eth0`).
const DST_PREFIX: &str = "eth";

/// `Join`: the endpoint's interface made through the controller in plexusd's own namespace
/// (a Plexus sandbox per container namespace whose joins hand interfaces over), and
/// answered as libnetwork's remote drivers answer: `InterfaceName.SrcName` for dockerd to
/// move into the container's namespace when it sets it up, with the gateway it routes
/// through. The interface is in place before the container's process starts, and a
/// running container (`docker network connect`) gets it at once.
pub async fn join(ctx: &Ctx, body: &[u8]) -> Answer {
    let r: EndpointIdsRequest = request("Join", body)?;
    let net = network_record(ctx, &r.network_id).await?;
    let mut rec = endpoint_record(ctx, &r.network_id, &r.endpoint_id).await?;
    let name = sandbox_name(&r.sandbox_key)?;
    if let Some(other) = &rec.sandbox {
        return Err(Refusal::field(
            "EndpointID",
            format!("{:?} has joined {other} already", rec.docker_id),
        ));
    }
    rec.sandbox = Some(name);
    rec.key = Some(r.sandbox_key.clone());
    rec.attached = false;
    let (interface, network) = attach(ctx, &mut rec, &net).await?;
    let gateway = |pools: &[plexus_cnm::IpamPool], has: bool| {
        pools
            .first()
            .and_then(|p| p.gateway)
            .filter(|_| has && !network.spec.internal)
            .map(|g| g.addr().to_string())
            .unwrap_or_default()
    };
    answer(JoinReply {
        interface_name: Some(InterfaceNameWire {
            src_name: interface,
            dst_prefix: DST_PREFIX.into(),
        }),
        gateway: gateway(&network.ipv4, rec.ipv4.is_some()),
        gateway_ipv6: gateway(&network.ipv6, rec.ipv6.is_some()),
        static_routes: None,
        disable_gateway_service: true,
    })
}

/// Connects a joined endpoint through the controller, its interface handed over for dockerd
/// to move in, and records it attached; undoes the connect if the record cannot be written.
/// Returns the interface's name in plexusd's namespace and the Plexus network.
async fn attach(
    ctx: &Ctx,
    rec: &mut EndpointRecord,
    net: &NetworkRecord,
) -> Result<(String, plexus_cnm::Network), Refusal> {
    let (Some(name), Some(key)) = (rec.sandbox.clone(), rec.key.clone()) else {
        return Err(Refusal::field("EndpointID", "not joined"));
    };
    let spec = EndpointSpec {
        ipv4: rec.ipv4.map(|a| a.addr().to_string()),
        ipv6: rec.ipv6.map(|a| a.addr().to_string()),
        mac: Some(rec.mac.clone()),
        ports: rec.ports.clone(),
        ..EndpointSpec::default()
    };
    let (endpoint, made) = match ctx.controller.sandbox(&name).await {
        Ok(s) if s.key != key => {
            return Err(Refusal::field(
                "SandboxKey",
                format!(
                    "{key:?}: the sandbox {name} is on another namespace, {:?}",
                    s.key
                ),
            ))
        }
        Ok(_) => (
            ctx.controller.connect(&name, &net.plexus_id, spec).await?,
            false,
        ),
        Err(CnmError::NotFound { .. }) => {
            let sandbox = ctx
                .controller
                .create_sandbox(SandboxSpec {
                    name: name.clone(),
                    netns: Some(key.clone()),
                    networks: vec![(net.plexus_id.clone(), spec)],
                    external_key: true,
                    ..SandboxSpec::default()
                })
                .await?;
            let endpoint = ctx
                .controller
                .sandbox_endpoints(&sandbox)
                .await
                .ok()
                .and_then(|eps| eps.into_iter().next().map(|(ep, _)| ep));
            match endpoint {
                Some(ep) => (ep, true),
                None => {
                    undo_attach(ctx, &name, &net.plexus_id, true).await;
                    return Err(Refusal(format!(
                        "the sandbox {name} was made without its endpoint"
                    )));
                }
            }
        }
        Err(e) => return Err(e.into()),
    };
    let network = match ctx.controller.network(&net.plexus_id).await {
        Ok(n) => n,
        Err(e) => {
            undo_attach(ctx, &name, &net.plexus_id, made).await;
            return Err(e.into());
        }
    };
    let Some(interface) = endpoint.interface.filter(|i| !i.is_empty()) else {
        undo_attach(ctx, &name, &net.plexus_id, made).await;
        return Err(Refusal(format!(
            "the {} driver made no interface for dockerd to move in",
            network.driver
        )));
    };
    rec.attached = true;
    if let Err(e) = ctx.state.put(&endpoint_key(&rec.docker_id), &*rec).await {
        undo_attach(ctx, &name, &net.plexus_id, made).await;
        rec.attached = false;
        return Err(e);
    }
    tracing::info!(endpoint = %rec.docker_id, sandbox = %name, network = %net.plexus_name, %interface, "dockerd's endpoint joined");
    Ok((interface, network))
}

/// Undoes [`attach`]'s connect: the sandbox when it made it, else the endpoint.
async fn undo_attach(ctx: &Ctx, sandbox: &str, network: &str, made: bool) {
    let undone = if made {
        ctx.controller.remove_sandbox(sandbox).await.map(|_| ())
    } else {
        ctx.controller.disconnect(sandbox, network).await
    };
    if let Err(u) = undone {
        tracing::warn!(%sandbox, error = %u, "cannot undo the join");
    }
}

/// At start, once ready: takes out of Plexus the containers that went while it was stopped
/// (dockerd's `Leave` could not reach it; their namespace is no longer mounted). Their
/// records stay for dockerd's `DeleteEndpoint`, as do their addresses, which are dockerd's
/// to release.
pub async fn resume_joins(ctx: Arc<Ctx>) {
    let waiting = match ctx
        .state
        .list::<EndpointRecord>(&format!("{}/endpoint", super::state::ROOT))
        .await
    {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the Docker plugin's endpoints");
            return;
        }
    };
    for mut rec in waiting {
        if rec.sandbox.is_none() {
            continue;
        }
        if rec.key.as_deref().is_some_and(mounted) {
            continue;
        }
        let _one = ctx.lock.lock().await;
        let gone = async {
            let net = super::network::record(&ctx, &rec.network).await?;
            leave_sandbox(&ctx, &mut rec, &net.plexus_id).await
        }
        .await;
        match gone {
            Ok(()) => {
                tracing::info!(endpoint = %rec.docker_id, "a container gone while plexusd was stopped left")
            }
            Err(e) => {
                tracing::warn!(endpoint = %rec.docker_id, error = %e, "cannot take a container gone while plexusd was stopped out of Plexus")
            }
        }
    }
}

/// Disconnects a joined endpoint, and removes its sandbox when it was its last network.
async fn leave_sandbox(
    ctx: &Ctx,
    rec: &mut EndpointRecord,
    plexus_network: &str,
) -> Result<(), Refusal> {
    let Some(name) = rec.sandbox.clone() else {
        return Ok(());
    };
    // Whether or not the record says attached: a plexusd may have stopped between the
    // controller's connect and the record.
    match ctx.controller.disconnect(&name, plexus_network).await {
        Ok(()) | Err(CnmError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    match ctx.controller.sandbox(&name).await {
        Ok(sandbox) => {
            let left = ctx.controller.sandbox_endpoints(&sandbox).await?;
            if left.iter().all(|(ep, _)| ep.egress) {
                match ctx.controller.remove_sandbox(&name).await {
                    Ok(_) | Err(CnmError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(CnmError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    rec.sandbox = None;
    rec.key = None;
    rec.attached = false;
    ctx.state.put(&endpoint_key(&rec.docker_id), &*rec).await?;
    tracing::info!(endpoint = %rec.docker_id, sandbox = %name, "dockerd's endpoint left");
    Ok(())
}

/// `Leave`.
pub async fn leave(ctx: &Ctx, body: &[u8]) -> Answer {
    let r: EndpointIdsRequest = request("Leave", body)?;
    let net = network_record(ctx, &r.network_id).await?;
    let mut rec = endpoint_record(ctx, &r.network_id, &r.endpoint_id).await?;
    leave_sandbox(ctx, &mut rec, &net.plexus_id).await?;
    Ok(json!({}))
}

/// `DeleteEndpoint`: leaves first if dockerd did not.
pub async fn delete(ctx: &Ctx, body: &[u8]) -> Answer {
    let r: EndpointIdsRequest = request("DeleteEndpoint", body)?;
    let net = network_record(ctx, &r.network_id).await?;
    let mut rec = endpoint_record(ctx, &r.network_id, &r.endpoint_id).await?;
    leave_sandbox(ctx, &mut rec, &net.plexus_id).await?;
    ctx.state.delete(&endpoint_key(&rec.docker_id)).await?;
    Ok(json!({}))
}

/// `EndpointOperInfo`: what the data plane holds, once joined.
pub async fn oper_info(ctx: &Ctx, body: &[u8]) -> Answer {
    let r: EndpointIdsRequest = request("EndpointOperInfo", body)?;
    let net = network_record(ctx, &r.network_id).await?;
    let rec = endpoint_record(ctx, &r.network_id, &r.endpoint_id).await?;
    let value = match &rec.sandbox {
        Some(name) => ctx
            .controller
            .endpoint_oper_info(name, &net.plexus_id)
            .await
            .unwrap_or_default(),
        None => BTreeMap::new(),
    };
    answer(OperInfoReply { value: Some(value) })
}

/// `ProgramExternalConnectivity` and `RevokeExternalConnectivity`: the join published the
/// ports already (from `CreateEndpoint`'s port map), and the leave takes them down.
pub async fn external(ctx: &Ctx, op: &str, body: &[u8]) -> Answer {
    let r: EndpointIdsRequest = request(op, body)?;
    network_record(ctx, &r.network_id).await?;
    endpoint_record(ctx, &r.network_id, &r.endpoint_id).await?;
    Ok(json!({}))
}
