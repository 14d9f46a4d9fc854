//! The `Ipam` trait, in the shape of Docker's IPAM driver API, and its request types.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{IpamError, Result};

/// Docker's option selecting serial (round-robin) allocation for a pool.
pub const OPT_SERIAL: &str = "com.docker.network.ipam.serial";
/// Docker's address-request option naming what the address is for.
pub const OPT_REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
/// The value of [`OPT_REQUEST_ADDRESS_TYPE`] for a gateway.
pub const REQUEST_TYPE_GATEWAY: &str = "com.docker.network.gateway";
/// Docker's address-request option carrying the endpoint's MAC address.
pub const OPT_MAC_ADDRESS: &str = "com.docker.network.endpoint.macaddress";
/// The pool-response data key carrying a gateway chosen by the IPAM driver (`addr/len`).
pub const DATA_GATEWAY: &str = "com.docker.network.gateway";
/// The address-response data key carrying DNS servers that come with the address (a DHCP
/// lease's), comma-separated: the sandbox's nameservers when it was given none (`--dns`).
pub const DATA_DNS_SERVERS: &str = "plexus.ipam.dns_servers";

/// What an IPAM driver needs from its caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Address requests must carry the endpoint's MAC address (DHCP-backed drivers).
    pub requires_mac_address: bool,
    /// The driver keeps no state: every pool and address must be requested again after a
    /// restart.
    pub requires_request_replay: bool,
}

/// The driver's default address spaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressSpaces {
    /// For networks of local scope.
    pub local: String,
    /// For networks of global (swarm) scope.
    pub global: String,
}

/// How the gateway of a new pool is chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GatewayRequest {
    /// The first free address (of the ip-range when there is one).
    #[default]
    Auto,
    /// This address (`--gateway`).
    Given(String),
    /// No gateway.
    None,
}

/// A pool request (`docker network create --subnet --ip-range --gateway --aux-address`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolRequest {
    /// The address space; empty for the local default.
    pub address_space: String,
    /// The network that will own the pool, named in overlap errors.
    pub owner: String,
    /// `--subnet`; `None` for a subnet from the default pools; an all-zero prefix such as
    /// `0.0.0.0/24` asks for a default-pool subnet of that size.
    pub pool: Option<String>,
    /// `--ip-range`: dynamic addresses come only from it.
    pub sub_pool: Option<String>,
    /// `--gateway`.
    pub gateway: GatewayRequest,
    /// `--aux-address name=ip`: reserved, never handed out.
    pub aux_addresses: BTreeMap<String, String>,
    /// Driver options (`com.docker.network.ipam.serial=true`, ...).
    pub options: BTreeMap<String, String>,
    /// The network's own options (`-o`), for drivers that serve the LAN behind one of its
    /// interfaces (the `dhcp` driver reads `parent`); not sent to remote plugins, as Docker
    /// sends them none.
    pub network_options: BTreeMap<String, String>,
    /// An IPv6 pool.
    pub v6: bool,
}

impl PoolRequest {
    /// A request for a pool from the defaults of `space`, owned by `owner`.
    pub fn new(space: &str, owner: &str) -> Self {
        Self {
            address_space: space.to_string(),
            owner: owner.to_string(),
            ..Self::default()
        }
    }

    /// Sets `--subnet`.
    pub fn subnet(mut self, subnet: &str) -> Self {
        self.pool = Some(subnet.to_string());
        self
    }

    /// Sets `--ip-range`.
    pub fn ip_range(mut self, range: &str) -> Self {
        self.sub_pool = Some(range.to_string());
        self
    }

    /// Sets `--gateway`.
    pub fn gateway(mut self, gateway: &str) -> Self {
        self.gateway = GatewayRequest::Given(gateway.to_string());
        self
    }

    /// Adds `--aux-address name=ip`.
    pub fn aux(mut self, name: &str, ip: &str) -> Self {
        self.aux_addresses.insert(name.to_string(), ip.to_string());
        self
    }

    /// Adds a driver option.
    pub fn option(mut self, key: &str, value: &str) -> Self {
        self.options.insert(key.to_string(), value.to_string());
        self
    }

    /// Asks for IPv6.
    pub fn v6(mut self) -> Self {
        self.v6 = true;
        self
    }
}

/// A granted pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolResponse {
    /// The id to pass to the other calls.
    pub pool_id: String,
    /// The subnet.
    pub pool: IpNet,
    /// The gateway with the subnet's prefix length, if any.
    pub gateway: Option<IpNet>,
    /// The aux addresses, by name.
    pub aux_addresses: BTreeMap<String, IpAddr>,
    /// Driver data.
    pub data: BTreeMap<String, String>,
}

/// An address request (`docker network connect --ip --ip6`, or a dynamic address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressRequest {
    /// The pool.
    pub pool_id: String,
    /// The preferred address (`--ip`, `--ip6`); `None` for the next free one.
    pub address: Option<String>,
    /// The endpoint's MAC address, passed to drivers that require it.
    pub mac_address: Option<String>,
    /// Options ([`OPT_REQUEST_ADDRESS_TYPE`], ...).
    pub options: BTreeMap<String, String>,
}

impl AddressRequest {
    /// A request for the next free address of `pool_id`.
    pub fn next(pool_id: &str) -> Self {
        Self {
            pool_id: pool_id.to_string(),
            ..Self::default()
        }
    }

    /// A request for a given address.
    pub fn preferred(pool_id: &str, address: &str) -> Self {
        Self {
            pool_id: pool_id.to_string(),
            address: Some(address.to_string()),
            ..Self::default()
        }
    }
}

/// A granted address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressResponse {
    /// The address with the pool's prefix length.
    pub address: IpNet,
    /// Driver data.
    pub data: BTreeMap<String, String>,
}

/// An IPAM driver, as Docker's IPAM API defines it.
#[async_trait]
pub trait Ipam: Send + Sync {
    /// What the driver needs from its caller.
    async fn capabilities(&self) -> Result<Capabilities>;

    /// The default local and global address spaces.
    async fn default_address_spaces(&self) -> Result<AddressSpaces>;

    /// Allocates a pool, with its gateway and aux addresses, all or nothing.
    async fn request_pool(&self, request: PoolRequest) -> Result<PoolResponse>;

    /// Releases a pool and every address in it.
    async fn release_pool(&self, pool_id: &str) -> Result<()>;

    /// Allocates an address from a pool.
    async fn request_address(&self, request: AddressRequest) -> Result<AddressResponse>;

    /// Releases an address.
    async fn release_address(&self, pool_id: &str, address: IpAddr) -> Result<()>;
}

/// Parses a CIDR field.
pub fn parse_cidr(field: &'static str, value: &str) -> Result<IpNet> {
    value
        .trim()
        .parse::<IpNet>()
        .map_err(|e| IpamError::InvalidCidr {
            field,
            value: value.to_string(),
            reason: e.to_string(),
        })
}

/// Parses an address field.
pub fn parse_ip(field: &str, value: &str) -> Result<IpAddr> {
    let v = value.trim();
    // Accept `addr/len` as Docker does for preferred addresses.
    let v = v.split_once('/').map(|(a, _)| a).unwrap_or(v);
    v.parse::<IpAddr>().map_err(|_| IpamError::InvalidAddress {
        field: field.to_string(),
        value: value.to_string(),
    })
}

/// Parses a boolean option the way Docker does (`true`, `1`, `false`, `0`, ...).
pub fn parse_bool_option(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" => Ok(true),
        "0" | "f" | "false" | "no" | "" => Ok(false),
        _ => Err(IpamError::InvalidOption {
            key: key.to_string(),
            value: value.to_string(),
            reason: "expected true or false".into(),
        }),
    }
}
