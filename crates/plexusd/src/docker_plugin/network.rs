//! `NetworkDriver.CreateNetwork` and `DeleteNetwork`: a dockerd network is a Plexus bridge
//! network named `docker-<12 digits of dockerd's id>`, labelled with the whole id, with
//! dockerd's `-o` options as its driver options (the bridge driver refuses unknown ones,
//! naming them), dockerd's subnet, gateway and aux addresses, adopted when they are the
//! plugin's own allocations ([`super::adopt`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use plexus_cnm::{CnmError, IpamPoolSpec, NetworkSpec};
use plexus_drivers::remote::wire::{IpamData, OPT_ENABLE_IPV6, OPT_GENERIC, OPT_INTERNAL};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::adopt::{ADOPT_DRIVER, OPT_POOL_V4, OPT_POOL_V6};
use super::state::{endpoint_key, network_key, EndpointRecord, NetworkRecord, ROOT};
use super::{request, Answer, Ctx, Refusal};

/// The label a Plexus network made for dockerd carries: dockerd's network id.
pub const LABEL_DOCKER_NETWORK: &str = "plexus.docker.network";

/// `/NetworkDriver.CreateNetwork`'s request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateNetworkRequest {
    #[serde(rename = "NetworkID", default)]
    network_id: String,
    #[serde(default)]
    options: Option<Map<String, Value>>,
    #[serde(rename = "IPv4Data", default)]
    ipv4_data: Option<Vec<IpamData>>,
    #[serde(rename = "IPv6Data", default)]
    ipv6_data: Option<Vec<IpamData>>,
}

/// `{"NetworkID"}`.
#[derive(Debug, Deserialize)]
struct NetworkIdRequest {
    #[serde(rename = "NetworkID", default)]
    network_id: String,
}

/// dockerd's ids: hex digits (64 of them from dockerd, any number accepted).
pub fn check_id(field: &str, id: &str) -> Result<(), Refusal> {
    if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Refusal::field(
            field,
            format!("{id:?} is not an id (letters and digits)"),
        ));
    }
    Ok(())
}

/// The Plexus network's name of dockerd's network `id`.
pub fn plexus_name(id: &str) -> String {
    format!("docker-{}", &id[..id.len().min(12)])
}

/// The network record of dockerd's `id`, or the refusal naming `NetworkID`.
pub async fn record(ctx: &Ctx, id: &str) -> Result<NetworkRecord, Refusal> {
    check_id("NetworkID", id)?;
    ctx.state
        .get::<NetworkRecord>(&network_key(id))
        .await?
        .ok_or_else(|| {
            Refusal::field(
                "NetworkID",
                format!("unknown network {id:?}: the plugin made no such network"),
            )
        })
}

/// The `-o` options, `--ipv6` and `--internal` from the request's `Options`.
fn options(
    options: &Map<String, Value>,
) -> Result<(BTreeMap<String, String>, bool, bool), Refusal> {
    let mut generic = BTreeMap::new();
    match options.get(OPT_GENERIC) {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (k, v) in map {
                let Value::String(s) = v else {
                    return Err(Refusal::field(
                        &format!("Options.{OPT_GENERIC}.{k}"),
                        format!("{v} is not a string"),
                    ));
                };
                generic.insert(k.clone(), s.clone());
            }
        }
        Some(other) => {
            return Err(Refusal::field(
                &format!("Options.{OPT_GENERIC}"),
                format!("{other} is not a map of strings"),
            ))
        }
    }
    let flag = |key: &str| -> Result<bool, Refusal> {
        match options.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
            Some(other) => Err(Refusal::field(
                &format!("Options.{key}"),
                format!("{other} is not a boolean"),
            )),
        }
    };
    Ok((generic, flag(OPT_ENABLE_IPV6)?, flag(OPT_INTERNAL)?))
}

/// An address of `IPAMData` (`10.1.0.1/24`, or bare).
fn data_addr(field: &str, value: &str) -> Result<IpAddr, Refusal> {
    value
        .parse::<IpNet>()
        .map(|n| n.addr())
        .or_else(|_| value.parse::<IpAddr>())
        .map_err(|_| Refusal::field(field, format!("{value:?} is not an IP address")))
}

/// One pool of the request as a Plexus pool spec, with the pool id dockerd holds of the
/// plugin's IPAM when it is one.
async fn pool_spec(
    ctx: &Ctx,
    field: &str,
    data: &IpamData,
    v6: bool,
) -> Result<(IpamPoolSpec, Option<String>), Refusal> {
    let subnet: IpNet = data.pool.parse().map_err(|_| {
        Refusal::field(
            &format!("{field}.Pool"),
            format!("{:?} is not a CIDR", data.pool),
        )
    })?;
    if subnet.addr().is_ipv6() != v6 {
        return Err(Refusal::field(
            &format!("{field}.Pool"),
            format!("{subnet} is of the wrong family"),
        ));
    }
    let gateway = if data.gateway.is_empty() {
        None
    } else {
        let g = data_addr(&format!("{field}.Gateway"), &data.gateway)?;
        if !subnet.contains(&g) {
            return Err(Refusal::field(
                &format!("{field}.Gateway"),
                format!("{g} is outside the pool {subnet}"),
            ));
        }
        Some(g.to_string())
    };
    let mut aux = BTreeMap::new();
    for (name, value) in &data.aux_addresses {
        let a = data_addr(&format!("{field}.AuxAddresses.{name}"), value)?;
        aux.insert(name.clone(), a.to_string());
    }
    let held = ctx
        .state
        .pool_of(&subnet)
        .await?
        .filter(|p| p.v6 == v6)
        .map(|p| p.pool_id);
    Ok((
        IpamPoolSpec {
            subnet: Some(subnet.to_string()),
            ip_range: None,
            gateway,
            aux_addresses: aux,
        },
        held,
    ))
}

/// `CreateNetwork`: the Plexus network, then its record (the network is deleted again if
/// the record cannot be written).
pub async fn create(ctx: &Ctx, body: &[u8]) -> Answer {
    let r: CreateNetworkRequest = request("CreateNetwork", body)?;
    check_id("NetworkID", &r.network_id)?;
    if let Some(existing) = ctx
        .state
        .get::<NetworkRecord>(&network_key(&r.network_id))
        .await?
    {
        if ctx.controller.network(&existing.plexus_id).await.is_ok() {
            return Ok(json!({}));
        }
    }
    let (generic, enable_ipv6, internal) = options(&r.options.unwrap_or_default())?;
    let mut spec = NetworkSpec {
        name: plexus_name(&r.network_id),
        driver: "bridge".into(),
        enable_ipv6,
        internal,
        options: generic,
        labels: BTreeMap::from([(LABEL_DOCKER_NETWORK.to_string(), r.network_id.clone())]),
        ..NetworkSpec::default()
    };
    let v4 = r.ipv4_data.unwrap_or_default();
    let v6 = r.ipv6_data.unwrap_or_default();
    if v4.len() > 1 || v6.len() > 1 {
        return Err(Refusal::field(
            if v4.len() > 1 { "IPv4Data" } else { "IPv6Data" },
            "at most one pool per family",
        ));
    }
    let mut held = Vec::new();
    for (i, d) in v4.iter().enumerate() {
        let (p, h) = pool_spec(ctx, &format!("IPv4Data[{i}]"), d, false).await?;
        spec.ipv4.push(p);
        held.push((OPT_POOL_V4, h));
    }
    if enable_ipv6 {
        for (i, d) in v6.iter().enumerate() {
            let (p, h) = pool_spec(ctx, &format!("IPv6Data[{i}]"), d, true).await?;
            spec.ipv6.push(p);
            held.push((OPT_POOL_V6, h));
        }
    }
    let adopted = held.iter().filter(|(_, h)| h.is_some()).count();
    if adopted > 0 {
        if adopted != held.len() {
            return Err(Refusal::field(
                "IPv6Data",
                "one pool is the plugin's and the other is not: use one IPAM driver for both",
            ));
        }
        spec.ipam_driver = ADOPT_DRIVER.into();
        for (key, h) in held {
            if let Some(id) = h {
                spec.ipam_options.insert(key.to_string(), id);
            }
        }
    }
    let network = ctx.controller.create_network(spec).await?;
    let rec = NetworkRecord {
        docker_id: r.network_id.clone(),
        plexus_id: network.id.clone(),
        plexus_name: network.name.clone(),
    };
    if let Err(e) = ctx.state.put(&network_key(&r.network_id), &rec).await {
        if let Err(u) = ctx.controller.delete_network(&network.id).await {
            tracing::warn!(network = %network.name, error = %u, "cannot delete the network while undoing");
        }
        return Err(e);
    }
    tracing::info!(docker = %r.network_id, network = %network.name, adopted = adopted > 0, "network made for dockerd");
    Ok(json!({}))
}

/// `DeleteNetwork`: the Plexus network, then the records.
pub async fn delete(ctx: &Ctx, body: &[u8]) -> Answer {
    let r: NetworkIdRequest = request("DeleteNetwork", body)?;
    let rec = record(ctx, &r.network_id).await?;
    match ctx.controller.delete_network(&rec.plexus_id).await {
        Ok(()) | Err(CnmError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    for ep in ctx
        .state
        .list::<EndpointRecord>(&format!("{ROOT}/endpoint"))
        .await?
        .into_iter()
        .filter(|e| e.network == r.network_id)
    {
        ctx.state.delete(&endpoint_key(&ep.docker_id)).await?;
    }
    ctx.state.delete(&network_key(&r.network_id)).await?;
    tracing::info!(docker = %r.network_id, network = %rec.plexus_name, "network deleted for dockerd");
    Ok(json!({}))
}
