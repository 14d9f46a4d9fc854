//! `IpamDriver.*`: dockerd's pools and addresses, each a real allocation of the controller's
//! IPAM (so a pool overlapping a Plexus network's is refused, and the other way round),
//! recorded as dockerd's ([`super::state`]) until dockerd releases it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use plexus_ipam::api::{OPT_REQUEST_ADDRESS_TYPE, REQUEST_TYPE_GATEWAY};
use plexus_ipam::remote::{RequestAddressReply, RequestPoolReply};
use plexus_ipam::{AddressRequest, GatewayRequest, PoolRequest, GLOBAL_SPACE, LOCAL_SPACE};
use serde::Deserialize;
use serde_json::json;

use super::state::{address_key, addresses_dir, pool_key, AddressRecord, PoolRecord};
use super::{answer, request, Answer, Ctx, Refusal};

/// The owner IPAM records for dockerd's pools.
const OWNER: &str = "dockerd";

/// `/IpamDriver.RequestPool`'s request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RequestPoolRequest {
    #[serde(default)]
    address_space: String,
    #[serde(default)]
    pool: String,
    #[serde(default)]
    sub_pool: String,
    #[serde(default)]
    options: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "V6")]
    v6: bool,
}

/// `/IpamDriver.ReleasePool`'s request.
#[derive(Debug, Deserialize)]
struct PoolIdRequest {
    #[serde(rename = "PoolID", default)]
    pool_id: String,
}

/// `/IpamDriver.RequestAddress`'s and `ReleaseAddress`'s request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddressRequestWire {
    #[serde(rename = "PoolID", default)]
    pool_id: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    options: Option<BTreeMap<String, String>>,
}

/// The pool record of `pool_id`, or the refusal naming `PoolID`.
async fn pool(ctx: &Ctx, pool_id: &str) -> Result<PoolRecord, Refusal> {
    ctx.state
        .get::<PoolRecord>(&pool_key(pool_id))
        .await?
        .ok_or_else(|| {
            Refusal::field(
                "PoolID",
                format!("{pool_id:?} is no pool of the plugin {:?}", ctx.name),
            )
        })
}

/// An address as dockerd writes it (`10.1.0.5`, or with a prefix), in `pool`; the refusal
/// names `Address`.
fn address_in(value: &str, pool: &PoolRecord) -> Result<IpAddr, Refusal> {
    let addr = value
        .parse::<IpAddr>()
        .or_else(|_| value.parse::<IpNet>().map(|n| n.addr()))
        .map_err(|_| Refusal::field("Address", format!("{value:?} is not an IP address")))?;
    if !pool.subnet.contains(&addr) {
        return Err(Refusal::field(
            "Address",
            format!("{addr} is outside the pool {}", pool.subnet),
        ));
    }
    Ok(addr)
}

/// `RequestPool`: a pool of the local space, the given subnet or one from the default pools.
pub async fn request_pool(ctx: &Ctx, body: &[u8]) -> Answer {
    let r: RequestPoolRequest = request("RequestPool", body)?;
    match r.address_space.as_str() {
        "" | LOCAL_SPACE | "LocalDefault" => {}
        GLOBAL_SPACE | "GlobalDefault" => {
            return Err(Refusal::field(
                "AddressSpace",
                format!(
                    "the plugin {:?} serves local-scope networks only, not {:?}",
                    ctx.name, r.address_space
                ),
            ))
        }
        other => {
            return Err(Refusal::field(
                "AddressSpace",
                format!("unknown address space {other:?}; {LOCAL_SPACE:?} is served"),
            ))
        }
    }
    let mut req = PoolRequest::new(LOCAL_SPACE, OWNER);
    if !r.pool.is_empty() {
        let subnet: IpNet = r
            .pool
            .parse()
            .map_err(|e| Refusal::field("Pool", format!("{:?} is not a CIDR: {e}", r.pool)))?;
        if subnet.addr().is_ipv6() != r.v6 {
            return Err(Refusal::field(
                "Pool",
                format!("{subnet} is not of the family V6={} asks", r.v6),
            ));
        }
        req = req.subnet(&r.pool);
    }
    if !r.sub_pool.is_empty() {
        if r.pool.is_empty() {
            return Err(Refusal::field("SubPool", "needs a Pool"));
        }
        req = req.ip_range(&r.sub_pool);
    }
    // dockerd asks for the gateway itself (RequestAddress with RequestAddressType).
    req.gateway = GatewayRequest::None;
    req.options = r.options.unwrap_or_default();
    if r.v6 {
        req = req.v6();
    }
    let granted = ctx.controller.ipam().request_pool(req).await?;
    let record = PoolRecord {
        pool_id: granted.pool_id.clone(),
        subnet: granted.pool,
        v6: r.v6,
    };
    if let Err(e) = ctx.state.put(&pool_key(&record.pool_id), &record).await {
        if let Err(u) = ctx.controller.ipam().release_pool(&record.pool_id).await {
            tracing::warn!(pool = %record.pool_id, error = %u, "cannot release a pool while undoing");
        }
        return Err(e);
    }
    tracing::info!(pool = %record.pool_id, subnet = %record.subnet, "pool given to dockerd");
    answer(RequestPoolReply {
        pool_id: record.pool_id,
        pool: record.subnet.to_string(),
        data: None,
    })
}

/// `ReleasePool`: the records first, then the allocation (reconciliation releases what a
/// crash in between leaves).
pub async fn release_pool(ctx: &Ctx, body: &[u8]) -> Answer {
    let r: PoolIdRequest = request("ReleasePool", body)?;
    let p = pool(ctx, &r.pool_id).await?;
    for a in ctx
        .state
        .list::<AddressRecord>(&addresses_dir(&p.pool_id))
        .await?
    {
        ctx.state
            .delete(&address_key(&p.pool_id, a.address.addr()))
            .await?;
    }
    ctx.state.delete(&pool_key(&p.pool_id)).await?;
    ctx.controller.ipam().release_pool(&p.pool_id).await?;
    tracing::info!(pool = %p.pool_id, "pool released by dockerd");
    Ok(json!({}))
}

/// `RequestAddress`: the given address or the next free one; the gateway when the options
/// say so.
pub async fn request_address(ctx: &Ctx, body: &[u8]) -> Answer {
    let r: AddressRequestWire = request("RequestAddress", body)?;
    let p = pool(ctx, &r.pool_id).await?;
    let mut req = AddressRequest::next(&p.pool_id);
    if !r.address.is_empty() {
        req.address = Some(address_in(&r.address, &p)?.to_string());
    }
    req.options = r.options.unwrap_or_default();
    let gateway = req
        .options
        .get(OPT_REQUEST_ADDRESS_TYPE)
        .is_some_and(|t| t == REQUEST_TYPE_GATEWAY);
    let granted = ctx.controller.ipam().request_address(req).await?;
    let record = AddressRecord {
        pool_id: p.pool_id.clone(),
        address: granted.address,
        gateway,
    };
    let key = address_key(&p.pool_id, granted.address.addr());
    if let Err(e) = ctx.state.put(&key, &record).await {
        if let Err(u) = ctx
            .controller
            .ipam()
            .release_address(&p.pool_id, granted.address.addr())
            .await
        {
            tracing::warn!(address = %granted.address, error = %u, "cannot release an address while undoing");
        }
        return Err(e);
    }
    answer(RequestAddressReply {
        address: granted.address.to_string(),
        data: None,
    })
}

/// `ReleaseAddress`: only an address dockerd holds.
pub async fn release_address(ctx: &Ctx, body: &[u8]) -> Answer {
    let r: AddressRequestWire = request("ReleaseAddress", body)?;
    let p = pool(ctx, &r.pool_id).await?;
    let addr = address_in(&r.address, &p)?;
    let key = address_key(&p.pool_id, addr);
    if ctx.state.get::<AddressRecord>(&key).await?.is_none() {
        return Err(Refusal::field(
            "Address",
            format!("{addr} is not held in the pool {}", p.subnet),
        ));
    }
    ctx.state.delete(&key).await?;
    ctx.controller
        .ipam()
        .release_address(&p.pool_id, addr)
        .await?;
    Ok(json!({}))
}
