//! The one error type of the crate.

use plexus_kv::KvError;

/// Errors of IP address management. Every variant names the field or object involved, so the
/// message alone tells a user what was wrong.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IpamError {
    /// A CIDR field does not parse.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidCidr {
        /// The field (`subnet`, `ip-range`, `base`, ...).
        field: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An address field does not parse.
    #[error("invalid {field} {value:?}: not an IP address")]
    InvalidAddress {
        /// The field (`gateway`, `aux-address`, `ip`, ...).
        field: String,
        /// The value as given.
        value: String,
    },
    /// An address or range lies outside the subnet it must belong to.
    #[error("{field} {value} is outside the subnet {subnet}")]
    OutsideSubnet {
        /// The field (`gateway`, `ip-range`, `aux-address host1`, `ip`, ...).
        field: String,
        /// The address or range.
        value: String,
        /// The subnet.
        subnet: String,
    },
    /// The ip-range is larger than the subnet.
    #[error("ip-range {range} is larger than the subnet {subnet}")]
    RangeLargerThanSubnet {
        /// The ip-range.
        range: String,
        /// The subnet.
        subnet: String,
    },
    /// A field mixes IPv4 and IPv6.
    #[error("{field} {value} is not an {expected} address/prefix (the pool is {expected})")]
    FamilyMismatch {
        /// The field.
        field: String,
        /// The value.
        value: String,
        /// `IPv4` or `IPv6`.
        expected: &'static str,
    },
    /// A requested address is already allocated.
    #[error("{field} {address} is already in use in {subnet}{}", by.as_ref().map(|b| format!(" (by {b})")).unwrap_or_default())]
    AddressInUse {
        /// The field (`ip`, `ip6`, `gateway`, `aux-address host1`).
        field: String,
        /// The address.
        address: String,
        /// The pool's subnet.
        subnet: String,
        /// What holds it, when known (`gateway`, `aux-address host1`).
        by: Option<String>,
    },
    /// A requested address is reserved (network, broadcast, subnet-router anycast).
    #[error("{field} {address} is reserved in {subnet}: it is the {what} address")]
    AddressReserved {
        /// The field.
        field: String,
        /// The address.
        address: String,
        /// The pool's subnet.
        subnet: String,
        /// `network`, `broadcast` or `subnet-router anycast`.
        what: &'static str,
    },
    /// Every address of the pool (or of its ip-range) is allocated.
    #[error("no free address in {range}")]
    PoolExhausted {
        /// The subnet, or the ip-range when one is set.
        range: String,
    },
    /// No default pool has a free, non-overlapping subnet left.
    #[error(
        "could not find an available, non-overlapping {family} address pool among the defaults \
         to assign to the network (address space {space:?}, default pools: {pools}; {in_use} \
         pools in use, {blocked} candidates skipped for host routes or nameservers); add more \
         with the daemon option --default-address-pool base=<CIDR>,size=<prefix length>, e.g. \
         --default-address-pool {example}, or give the network a --subnet"
    )]
    DefaultPoolsExhausted {
        /// `IPv4` or `IPv6`.
        family: &'static str,
        /// The address space.
        space: String,
        /// The default pools, as `base=…,size=…` entries.
        pools: String,
        /// How many pools of this family the space holds.
        in_use: usize,
        /// How many candidate subnets were skipped because of host routes or nameservers.
        blocked: usize,
        /// A suggested extra pool.
        example: String,
    },
    /// A subnet overlaps another pool of the same address space.
    #[error("{field} {subnet} overlaps {existing}, the pool of network {owner:?}, in address space {space:?}")]
    Overlap {
        /// The field (`subnet`).
        field: &'static str,
        /// The requested subnet.
        subnet: String,
        /// The existing pool it overlaps.
        existing: String,
        /// The network that owns the existing pool.
        owner: String,
        /// The address space.
        space: String,
    },
    /// A release names something that was never allocated.
    #[error("cannot release {what} {value}: it was never allocated{}", pool.as_ref().map(|p| format!(" in {p}")).unwrap_or_default())]
    NotAllocated {
        /// `address` or `pool`.
        what: &'static str,
        /// The address or pool id.
        value: String,
        /// The pool, for an address.
        pool: Option<String>,
    },
    /// A pool id names no pool.
    #[error("pool {pool_id:?} not found")]
    PoolNotFound {
        /// The pool id.
        pool_id: String,
    },
    /// A pool id is malformed.
    #[error("invalid pool id {pool_id:?}: {reason}")]
    InvalidPoolId {
        /// The pool id.
        pool_id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An address space other than `local` and `global`.
    #[error("unknown address space {space:?}: the built-in IPAM has \"local\" and \"global\"")]
    UnknownAddressSpace {
        /// The space as given.
        space: String,
    },
    /// A `default-address-pools` entry is malformed.
    #[error("invalid default address pool {value:?}: {reason} (expected base=<CIDR>,size=<prefix length>)")]
    InvalidDefaultPool {
        /// The entry as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An option has an invalid value.
    #[error("invalid option {key}={value:?}: {reason}")]
    InvalidOption {
        /// The option key.
        key: String,
        /// The value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The state store failed.
    #[error("IPAM state store: {0}")]
    Store(#[from] KvError),
    /// A stored record could not be decoded.
    #[error("corrupt IPAM record {key:?}: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Other writers kept changing the state under this operation.
    #[error("{op}: gave up after {attempts} attempts, the store kept changing under us")]
    Contention {
        /// The operation.
        op: &'static str,
        /// How many attempts were made.
        attempts: usize,
    },
    /// A remote IPAM plugin failed or answered an error.
    #[error("IPAM plugin {plugin:?}: {op}: {message}")]
    Plugin {
        /// The plugin's name.
        plugin: String,
        /// The call (`/IpamDriver.RequestPool`, ...).
        op: String,
        /// The plugin's error or the transport failure.
        message: String,
    },
    /// A built-in IPAM driver other than the default one failed (the `dhcp` driver: no
    /// server answered on the parent, the server refused, ...).
    #[error("IPAM driver {driver:?}: {message}")]
    Driver {
        /// The driver's name.
        driver: String,
        /// What went wrong, naming the interface, field or address.
        message: String,
    },
    /// No plugin of that name was found.
    #[error("IPAM plugin {name:?} not found: looked for {name}.sock, {name}.spec and {name}.json in {dirs}")]
    PluginNotFound {
        /// The plugin name.
        name: String,
        /// The directories searched.
        dirs: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = IpamError> = std::result::Result<T, E>;
