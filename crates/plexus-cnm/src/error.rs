//! Errors of the model: each says which field or object is wrong, in words a user of
//! `docker network` would recognise, and maps onto an HTTP status for the API.

/// An error from the [`Controller`](crate::Controller).
#[derive(Debug, thiserror::Error)]
pub enum CnmError {
    /// A request field is malformed or not allowed.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field (`name`, `driver`, `option com.docker.network.driver.mtu`, ...).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The named object does not exist.
    #[error("{kind} {name} not found")]
    NotFound {
        /// `network`, `sandbox`, `endpoint`, `driver`.
        kind: &'static str,
        /// The name or id asked for.
        name: String,
    },
    /// The object already exists.
    #[error("{kind} with name {name} already exists")]
    Exists {
        /// `network`, `sandbox`, `endpoint`.
        kind: &'static str,
        /// The clashing name.
        name: String,
    },
    /// The object is in use and cannot be removed.
    #[error("{what} has active endpoints ({by})")]
    InUse {
        /// The object (`network n1`).
        what: String,
        /// Who uses it (`sandbox s1 (endpoint e1)`, ...).
        by: String,
    },
    /// Something asked for is taken by another object (a published port another service
    /// publishes), or an object is still used (a service with tasks).
    #[error("{what} is in use by {by}")]
    InUseBy {
        /// What is taken, naming the field (`ports[0] published port 8080/tcp`, `service web`).
        what: String,
        /// Who has it (`service api`, `tasks a, b`).
        by: String,
    },
    /// A pre-defined network (`host`, `none`) cannot be removed.
    #[error("{name} is a pre-defined network and cannot be removed")]
    Predefined {
        /// The network's name.
        name: String,
    },
    /// A driver refused because of something that exists (a host port already published, a
    /// bridge name in use); the message names who has it.
    #[error("{driver} driver: {message}")]
    Conflict {
        /// The driver's name.
        driver: String,
        /// Its message.
        message: String,
    },
    /// A driver refused or failed.
    #[error("{driver} driver: {message}")]
    Driver {
        /// The driver's name.
        driver: String,
        /// Its message.
        message: String,
    },
    /// The IPAM refused or failed.
    #[error(transparent)]
    Ipam(#[from] plexus_ipam::IpamError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] plexus_kv::KvError),
    /// A subscriber asked for, or fell behind to, events the bounded history no longer
    /// holds.
    #[error("events after revision {after} are no longer stored (the oldest kept is {oldest}): subscribe again")]
    EventsLost {
        /// The last revision the subscriber had.
        after: u64,
        /// The oldest revision still stored.
        oldest: u64,
    },
    /// A sandbox's network namespace could not be made, opened or removed.
    #[error("netns {path}: {message}")]
    Netns {
        /// The namespace's path (or the sandbox name it was to be made for).
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A sandbox whose networks give it no default gateway could not be given its way out
    /// through the gateway network (`docker_gwbridge`); what asked for it was undone.
    #[error("sandbox {sandbox}: no way out through network {network} (its other networks give no default gateway): {cause}")]
    Egress {
        /// The sandbox's name.
        sandbox: String,
        /// The gateway network's name.
        network: String,
        /// Why.
        cause: Box<CnmError>,
    },
    /// Stored state could not be read (a bug or a foreign writer).
    #[error("corrupt record at {key}: {reason}")]
    Corrupt {
        /// The store key.
        key: String,
        /// The decoding error.
        reason: String,
    },
}

impl CnmError {
    /// The HTTP status an API server should answer with.
    pub fn http_status(&self) -> u16 {
        match self {
            CnmError::Invalid { .. } => 400,
            CnmError::NotFound { .. } => 404,
            CnmError::Predefined { .. } => 403,
            CnmError::EventsLost { .. } => 410,
            CnmError::Exists { .. }
            | CnmError::InUse { .. }
            | CnmError::InUseBy { .. }
            | CnmError::Conflict { .. } => 409,
            CnmError::Ipam(e) => ipam_status(e),
            CnmError::Store(plexus_kv::KvError::TxnConflict { .. }) => 409,
            CnmError::Egress { cause, .. } => cause.http_status(),
            _ => 500,
        }
    }

    /// A bad input: `field` names what was wrong, `reason` says why.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CnmError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = CnmError> = std::result::Result<T, E>;

fn ipam_status(e: &plexus_ipam::IpamError) -> u16 {
    use plexus_ipam::IpamError as E;
    match e {
        E::Store(_) | E::Corrupt { .. } | E::Contention { .. } | E::Plugin { .. } => 500,
        E::PoolNotFound { .. } | E::PluginNotFound { .. } => 404,
        E::AddressInUse { .. } | E::Overlap { .. } => 409,
        E::PoolExhausted { .. } | E::DefaultPoolsExhausted { .. } => 409,
        _ => 400,
    }
}
