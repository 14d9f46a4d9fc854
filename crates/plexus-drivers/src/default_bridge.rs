//! Docker's default network (`bridge`, on a kernel bridge named by dockerd's `--bridge`): the
//! policy of what it is made from (`--bip`, `--fixed-cidr`, `--ipv6`, `--fixed-cidr-v6`, the
//! host's routes) and when it is remade, on top of the controller's public API.

use ipnet::IpNet;
use plexus_cnm::{
    CnmError, Controller, IpamPoolSpec, Network, NetworkSpec, Result, DEFAULT_BRIDGE_NETWORK,
    DEFAULT_BRIDGE_OPTION,
};
use plexus_ipam::{PoolRequest, LOCAL_SPACE};

/// The bridge driver's option naming the kernel bridge (Docker's).
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

/// What plexusd asks of Docker's default network at start: see
/// [`create_default_bridge`].
#[derive(Debug, Clone, Default)]
pub struct DefaultBridge {
    /// The kernel name of its bridge (`--bridge`; `plexus0` by default).
    pub bridge_name: String,
    /// `--bip`: the gateway address with its subnet's prefix (`172.17.0.1/16`); `None` picks
    /// a subnet.
    pub bip: Option<IpNet>,
    /// Subnets a picked subnet must not overlap: the host's routes.
    pub avoid: Vec<IpNet>,
    /// `--fixed-cidr`: the part of the IPv4 subnet sandboxes get addresses from.
    pub fixed_cidr: Option<IpNet>,
    /// `--ipv6`: sandboxes get an IPv6 address too.
    pub ipv6: bool,
    /// `--fixed-cidr-v6`: the IPv6 subnet (with `ipv6`); `None` takes one from the IPv6
    /// default pools (a ULA /64).
    pub fixed_cidr_v6: Option<IpNet>,
}

impl DefaultBridge {
    /// What an existing default bridge network has that these flags would not give it, one
    /// `--flag: has …, wants …` each: `--bridge`, `--bip` (when given), `--fixed-cidr`,
    /// `--ipv6` and `--fixed-cidr-v6` (when given). Empty when it matches.
    pub fn differences(&self, existing: &Network) -> Vec<String> {
        let mut out = Vec::new();
        let mut differ = |flag: &str, has: String, wants: String| {
            if has != wants {
                out.push(format!("--{flag}: has {has}, wants {wants}"));
            }
        };
        let shown = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        let v4 = existing.ipv4.first();
        differ(
            "bridge",
            shown(existing.spec.options.get(BRIDGE_NAME_OPTION).cloned()),
            self.bridge_name.clone(),
        );
        if let Some(bip) = self.bip {
            differ(
                "bip",
                shown(v4.and_then(|p| p.gateway).map(|g| g.to_string())),
                bip.to_string(),
            );
        }
        differ(
            "fixed-cidr",
            shown(v4.and_then(|p| p.ip_range.clone())),
            shown(self.fixed_cidr.map(|r| r.to_string())),
        );
        differ(
            "ipv6",
            existing.spec.enable_ipv6.to_string(),
            self.ipv6.to_string(),
        );
        if let Some(v6) = self.fixed_cidr_v6 {
            differ(
                "fixed-cidr-v6",
                shown(existing.ipv6.first().map(|p| p.subnet.to_string())),
                v6.trunc().to_string(),
            );
        }
        out
    }

    /// Checks what can be checked before any subnet is picked: `bip` an IPv4 host address
    /// with its subnet's prefix, `fixed_cidr` IPv4, `fixed_cidr_v6` IPv6 and only with
    /// `ipv6`. The error names the field (the flag without its dashes); its reason does not
    /// repeat the value, which the caller has. plexusd checks its flags with this before it
    /// starts anything; [`create_default_bridge`] checks again.
    pub fn check(&self) -> Result<()> {
        if let Some(bip) = self.bip {
            if !matches!(bip, IpNet::V4(_))
                || bip.addr() == bip.network()
                || bip.prefix_len() >= bip.max_prefix_len() - 1
            {
                return Err(CnmError::invalid(
                    "bip",
                    "not an IPv4 host address with its subnet's prefix (such as 172.17.0.1/16)",
                ));
            }
        }
        if self.fixed_cidr.is_some_and(|r| !matches!(r, IpNet::V4(_))) {
            return Err(CnmError::invalid("fixed-cidr", "not an IPv4 range"));
        }
        match self.fixed_cidr_v6 {
            Some(IpNet::V4(_)) => Err(CnmError::invalid("fixed-cidr-v6", "not an IPv6 subnet")),
            Some(_) if !self.ipv6 => Err(CnmError::invalid("fixed-cidr-v6", "needs --ipv6")),
            _ => Ok(()),
        }
    }
}

/// Makes Docker's default network, [`DEFAULT_BRIDGE_NETWORK`] (`bridge`, driver `bridge`),
/// unless it exists; returns it when it was made now.
///
/// Its subnet is `default.bip`'s when given (`--bip`: the gateway address with the
/// subnet's prefix), else the first subnet of the default address pools that overlaps
/// none of `default.avoid` (the host's routes, as dockerd checks for `docker0`). An
/// existing `bridge` network that [differs](DefaultBridge::differences) from `default`
/// is remade from it when no sandbox is on it, as dockerd remakes its default network at
/// every start (keeping its subnet unless `--bip` gives one); with sandboxes it is kept
/// as it is, and a warning names what differs.
pub async fn create_default_bridge(
    controller: &Controller,
    default: &DefaultBridge,
) -> Result<Option<Network>> {
    default.check()?;
    let existing = match controller.network(DEFAULT_BRIDGE_NETWORK).await {
        Ok(n) => Some(n),
        Err(CnmError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    // Without --bip, a remade network keeps the subnet and gateway it had (dockerd
    // takes docker0's address likewise): `--bip`, if given, comes first below.
    let mut keep_bip = None;
    let mut remake = None;
    if let Some(existing) = existing {
        if !existing.is_predefined() {
            tracing::warn!(id = %existing.id, "default bridge network not made: a network the user made has the name bridge");
            return Ok(None);
        }
        let changed = default.differences(&existing);
        if changed.is_empty() {
            return Ok(None);
        }
        let changed = changed.join("; ");
        let sandboxes = controller.endpoints(&existing.id).await?.len();
        if sandboxes > 0 {
            tracing::warn!(%changed, sandboxes, "the default bridge network differs from the flags but has sandboxes: kept as it is (remove them and restart to apply the flags)");
            return Ok(None);
        }
        keep_bip = existing.ipv4.first().and_then(|p| p.gateway);
        tracing::info!(%changed, "remaking the default bridge network from the flags");
        remake = Some(existing);
    }
    if !controller.has_driver("bridge") {
        tracing::warn!("bridge driver not registered: no default bridge network");
        return Ok(None);
    }
    let (subnet, gateway) = match default.bip.or(keep_bip) {
        Some(bip) => (bip.trunc(), Some(bip.addr())),
        None => match free_default_subnet(controller, &default.avoid).await? {
            Some(subnet) => (subnet, None),
            None => {
                tracing::warn!(avoid = ?default.avoid, "no default address pool subnet is free of the host's routes: no default bridge network (give one with --bip)");
                return Ok(None);
            }
        },
    };
    if let Some(range) = default.fixed_cidr.filter(|r| !subnet.contains(r)) {
        return Err(CnmError::invalid(
            "fixed-cidr",
            format!("{range}: must be inside the default bridge's subnet {subnet}"),
        ));
    }
    let pool = IpamPoolSpec {
        subnet: Some(subnet.to_string()),
        gateway: gateway.map(|g| g.to_string()),
        ip_range: default.fixed_cidr.map(|r| r.to_string()),
        ..Default::default()
    };
    let ipv6: Vec<IpamPoolSpec> = default
        .fixed_cidr_v6
        .map(|v6| IpamPoolSpec {
            subnet: Some(v6.trunc().to_string()),
            ..Default::default()
        })
        .into_iter()
        .collect();
    let options = [
        (DEFAULT_BRIDGE_OPTION, "true"),
        (BRIDGE_NAME_OPTION, default.bridge_name.as_str()),
        ("com.docker.network.bridge.enable_icc", "true"),
        ("com.docker.network.bridge.enable_ip_masquerade", "true"),
        ("com.docker.network.bridge.host_binding_ipv4", "0.0.0.0"),
    ];
    let spec = NetworkSpec {
        name: DEFAULT_BRIDGE_NETWORK.to_string(),
        driver: "bridge".to_string(),
        ipv4: vec![pool],
        ipv6,
        enable_ipv6: default.ipv6,
        options: options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    if let Some(old) = remake {
        // Only now, once the flags are known to fit it.
        controller.remove_predefined_network(&old).await?;
    }
    let network = controller.create_network(spec).await.map_err(|e| match e {
        // Name the daemon's flags, which is what the user gave.
        // The IPAM's message names the subnet it refused.
        CnmError::Ipam(e)
            if default
                .fixed_cidr_v6
                .is_some_and(|v6| e.to_string().contains(&v6.trunc().to_string())) =>
        {
            CnmError::invalid("fixed-cidr-v6", e.to_string())
        }
        CnmError::Ipam(e) if default.bip.is_some() => CnmError::invalid("bip", e.to_string()),
        CnmError::Conflict { message, .. } => CnmError::invalid("bridge", message),
        e => e,
    })?;
    Ok(Some(network))
}

/// The first subnet the IPAM would hand a network without `--subnet` that overlaps none
/// of `avoid`. Asks the IPAM for pools until one fits, holding the misfits meanwhile so
/// it moves on, then gives them all back.
async fn free_default_subnet(controller: &Controller, avoid: &[IpNet]) -> Result<Option<IpNet>> {
    /// How many default-pool subnets to try before giving up.
    const TRIES: usize = 256;
    let overlaps = |a: &IpNet, b: &IpNet| a.contains(&b.network()) || b.contains(&a.network());
    let mut held = Vec::new();
    let mut found = None;
    for _ in 0..TRIES {
        let request = PoolRequest::new(LOCAL_SPACE, DEFAULT_BRIDGE_NETWORK);
        let pool = match controller.ipam().request_pool(request).await {
            Ok(pool) => pool,
            // The default pools are used up.
            Err(plexus_ipam::IpamError::DefaultPoolsExhausted { .. }) => break,
            Err(e) => {
                release_pools(controller, &held).await;
                return Err(e.into());
            }
        };
        held.push(pool.pool_id.clone());
        if !avoid.iter().any(|r| overlaps(r, &pool.pool)) {
            found = Some(pool.pool);
            break;
        }
    }
    release_pools(controller, &held).await;
    Ok(found)
}

async fn release_pools(controller: &Controller, pool_ids: &[String]) {
    for id in pool_ids.iter().rev() {
        if let Err(e) = controller.ipam().release_pool(id).await {
            tracing::warn!(pool = %id, error = %e, "cannot release a pool tried for the default bridge");
        }
    }
}
