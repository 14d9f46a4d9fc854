//! `NetworkDriver.CreateEndpoint`, `Join`, `Leave`, `DeleteEndpoint` and the calls around
//! them. `CreateEndpoint` records what dockerd chose (address, MAC, published ports); `Join`
//! connects the container's namespace through the controller (a Plexus sandbox per
//! namespace, see the module docs of [`super`]); `Leave` disconnects it and removes the
//! sandbox with its last network; `DeleteEndpoint` forgets the record.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use plexus_cnm::{CnmError, EndpointSpec, PortBinding, SandboxSpec};
use plexus_drivers::remote::wire::{
    CreateEndpointReply, EndpointInterface, JoinReply, OperInfoReply, OPT_PORTMAP,
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

/// How long a join with IPv6 waits for libnetwork to turn IPv6 off in the namespace it
/// mounted, before turning it on again for the join.
const SETUP_WAIT: Duration = Duration::from_secs(2);

/// An endpoint with an IPv6 address needs IPv6 on the interface its join moves into the
/// container's namespace, where libnetwork turns it off right after mounting it
/// (`GetSandboxForExternalKey` writes `all`, hence `default`, which new interfaces take)
/// and back on only for the interfaces it moves itself. So: wait for that (`all` reads 1),
/// then turn `default` on.
async fn allow_ipv6(key: &str) -> Result<(), Refusal> {
    let ns = plexus_sys::netns::Netns::open(Path::new(key))
        .map_err(|e| Refusal::field("SandboxKey", e))?;
    let failed = |e: &dyn std::fmt::Display| {
        Refusal(format!(
            "turning IPv6 on in the container's namespace {key}: {e}"
        ))
    };
    let deadline = Instant::now() + SETUP_WAIT;
    loop {
        let n = ns.clone();
        let all = tokio::task::spawn_blocking(move || {
            plexus_sys::sysctl::read(&n, "net.ipv6.conf.all.disable_ipv6")
        })
        .await
        .map_err(|e| failed(&e))?
        .map_err(|e| failed(&e))?;
        if all == "1" {
            break;
        }
        if Instant::now() > deadline {
            tracing::debug!(netns = %key, "IPv6 was not turned off in the container's namespace");
            break;
        }
        tokio::time::sleep(MOUNT_POLL).await;
    }
    tokio::task::spawn_blocking(move || {
        plexus_sys::sysctl::write(&ns, "net.ipv6.conf.default.disable_ipv6", "0")
    })
    .await
    .map_err(|e| failed(&e))?
    .map_err(|e| failed(&e))
}

/// How long a join waits for dockerd to mount the container's namespace.
const MOUNT_WAIT: Duration = Duration::from_secs(120);

/// How often the mount is looked for.
const MOUNT_POLL: Duration = Duration::from_millis(2);

/// `Join`: the container's namespace connected through the controller; the answer leaves
/// libnetwork nothing to do (no interface, no gateway, no gateway service).
///
/// For a container being started the namespace does not exist yet: dockerd mounts it at
/// `SandboxKey` only after the join, when runc has made it (libnetwork's `SetKey`, from the
/// container's prestart hook). The join is then recorded and finished by a task that waits
/// for the mount ([`spawn_attach`]); for a running container (`docker network connect`) it
/// is done before the answer.
pub async fn join(ctx: &Arc<Ctx>, body: &[u8]) -> Answer {
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
    rec.sandbox = Some(name.clone());
    rec.key = Some(r.sandbox_key.clone());
    rec.attached = false;
    if mounted(&r.sandbox_key) {
        attach(ctx, &mut rec, &net).await?;
    } else {
        ctx.state.put(&endpoint_key(&rec.docker_id), &rec).await?;
        spawn_attach(ctx.clone(), rec.docker_id.clone());
    }
    answer(JoinReply {
        disable_gateway_service: true,
        ..JoinReply::default()
    })
}

/// Connects a joined endpoint's namespace through the controller and records it attached;
/// undoes the connect if the record cannot be written.
async fn attach(ctx: &Ctx, rec: &mut EndpointRecord, net: &NetworkRecord) -> Result<(), Refusal> {
    let (Some(name), Some(key)) = (rec.sandbox.clone(), rec.key.clone()) else {
        return Err(Refusal::field("EndpointID", "not joined"));
    };
    if rec.ipv6.is_some() {
        allow_ipv6(&key).await?;
    }
    let spec = EndpointSpec {
        ipv4: rec.ipv4.map(|a| a.addr().to_string()),
        ipv6: rec.ipv6.map(|a| a.addr().to_string()),
        mac: Some(rec.mac.clone()),
        ports: rec.ports.clone(),
        ..EndpointSpec::default()
    };
    let made = match ctx.controller.sandbox(&name).await {
        Ok(s) if s.key != key => {
            return Err(Refusal::field(
                "SandboxKey",
                format!(
                    "{key:?}: the sandbox {name} is on another namespace, {:?}",
                    s.key
                ),
            ))
        }
        Ok(_) => match ctx.controller.connect(&name, &net.plexus_id, spec).await {
            Ok(_) => false,
            // Connected by a plexusd that stopped before recording it.
            Err(CnmError::Exists { .. }) => false,
            Err(e) => return Err(e.into()),
        },
        Err(CnmError::NotFound { .. }) => {
            ctx.controller
                .create_sandbox(SandboxSpec {
                    name: name.clone(),
                    netns: Some(key.clone()),
                    networks: vec![(net.plexus_id.clone(), spec)],
                    ..SandboxSpec::default()
                })
                .await?;
            true
        }
        Err(e) => return Err(e.into()),
    };
    rec.attached = true;
    if let Err(e) = ctx.state.put(&endpoint_key(&rec.docker_id), &*rec).await {
        let undone = if made {
            ctx.controller.remove_sandbox(&name).await.map(|_| ())
        } else {
            ctx.controller.disconnect(&name, &net.plexus_id).await
        };
        if let Err(u) = undone {
            tracing::warn!(sandbox = %name, error = %u, "cannot undo the join");
        }
        rec.attached = false;
        return Err(e);
    }
    tracing::info!(endpoint = %rec.docker_id, sandbox = %name, network = %net.plexus_name, "dockerd's endpoint joined");
    Ok(())
}

/// Finishes the join of endpoint `id` once dockerd has mounted its namespace (or gives up
/// after [`MOUNT_WAIT`], or when it leaves first).
pub fn spawn_attach(ctx: Arc<Ctx>, id: String) {
    tokio::spawn(async move {
        let deadline = Instant::now() + MOUNT_WAIT;
        let mut polls: u32 = 0;
        let mut key = None;
        loop {
            if key.is_none() || polls % 250 == 0 {
                match ctx.state.get::<EndpointRecord>(&endpoint_key(&id)).await {
                    Ok(Some(rec)) if rec.sandbox.is_some() && !rec.attached => key = rec.key,
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(endpoint = %id, error = %e, "cannot read the endpoint's record");
                    }
                }
            }
            if key.as_deref().is_some_and(mounted) {
                break;
            }
            if Instant::now() > deadline {
                tracing::warn!(endpoint = %id, netns = ?key, "dockerd never mounted the container's namespace; the endpoint stays unconnected until it leaves");
                return;
            }
            polls = polls.wrapping_add(1);
            tokio::time::sleep(MOUNT_POLL).await;
        }
        let _one = ctx.lock.lock().await;
        let result = async {
            let Some(mut rec) = ctx.state.get::<EndpointRecord>(&endpoint_key(&id)).await? else {
                return Ok(());
            };
            if rec.sandbox.is_none() || rec.attached {
                return Ok(());
            }
            let net = network_record(&ctx, &rec.network).await?;
            attach(&ctx, &mut rec, &net).await
        }
        .await;
        if let Err(e) = result {
            tracing::error!(endpoint = %id, error = %e, "cannot connect the container's namespace: it has no network on this endpoint");
        }
    });
}

/// At start, once ready: finishes the joins a stopped plexusd left waiting, and takes out of
/// Plexus the containers that went while it was stopped (dockerd's `Leave` could not reach
/// it; their namespace is no longer mounted). Their records stay for dockerd's
/// `DeleteEndpoint`, as do their addresses, which are dockerd's to release.
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
        if !rec.attached {
            spawn_attach(ctx.clone(), rec.docker_id);
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
/// ports already (libnetwork calls these only for an endpoint with a gateway, which the join
/// never answers).
pub async fn external(ctx: &Ctx, op: &str, body: &[u8]) -> Answer {
    let r: EndpointIdsRequest = request(op, body)?;
    network_record(ctx, &r.network_id).await?;
    endpoint_record(ctx, &r.network_id, &r.endpoint_id).await?;
    Ok(json!({}))
}
