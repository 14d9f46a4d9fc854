//! Services: a name with a virtual IP per network, load-balanced over its tasks (Docker
//! swarm's services, with Plexus's sandboxes as tasks). The records and the rules that need
//! no store; the controller's operations are in `controller/service.rs` and
//! `controller/task.rs`.
//!
//! A service is on one or more networks of one scope, and its records live in that scope's
//! store (the local store, or the cluster store for global networks). In `vip` mode it has a
//! virtual IP on each of its networks, taken from the network's IPAM like an endpoint's
//! address; in `dnsrr` mode none (its name answers with the backends' addresses). A sandbox
//! joins a service as a *task* when it is created (`--service`); the task's addresses on
//! the service's networks are the service's backends there.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{CnmError, Result};
use crate::model::Scope;

/// Networks one service may be on: a task's creation records a backend event per service
/// network in one transaction, which must stay within the store's limit.
pub const MAX_SERVICE_NETWORKS: usize = 8;

/// The name of each host's ingress sandbox (Docker's `ingress-sbox`): the routing mesh's
/// load balancer on the ingress network, the one sandbox besides tasks that joins it.
pub const INGRESS_SANDBOX: &str = "ingress-sbox";

/// Published ports one service may have (each a rule of the data plane's).
pub const MAX_SERVICE_PORTS: usize = 1000;

/// The longest client-IP affinity (a day), and the default (three hours, kube-proxy's).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86_400;
/// The affinity timeout when `client-ip` is asked for without one (kube-proxy's 10800 s).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// How the service's name resolves and where its traffic goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// A virtual IP per network, load-balanced over the backends (the default).
    #[default]
    Vip,
    /// No virtual IP: the name answers with the backends' addresses, shuffled.
    Dnsrr,
}

impl EndpointMode {
    /// Its name (`vip`, `dnsrr`).
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }

    /// Parses `vip` or `dnsrr` (empty: `vip`); the error names the field.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "" | "vip" => Ok(EndpointMode::Vip),
            "dnsrr" => Ok(EndpointMode::Dnsrr),
            other => Err(CnmError::invalid(
                "endpoint mode",
                format!("{other:?} is not vip or dnsrr"),
            )),
        }
    }
}

/// Where a published port answers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// On every host's addresses, load-balanced over every backend (the routing mesh; the
    /// default).
    #[default]
    Ingress,
    /// On the host of each backend only, to that backend.
    Host,
}

impl PublishMode {
    /// Its name (`ingress`, `host`).
    pub fn as_str(self) -> &'static str {
        match self {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        }
    }

    /// Parses `ingress` or `host` (empty: `ingress`); the error names `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        match value {
            "" | "ingress" => Ok(PublishMode::Ingress),
            "host" => Ok(PublishMode::Host),
            other => Err(CnmError::invalid(
                field,
                format!("{other:?} is not ingress or host"),
            )),
        }
    }
}

/// One published port of a service: `PUBLISHED:TARGET/PROTOCOL`, in a mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
pub struct PublishedPort {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The port on the backends.
    pub target: u16,
    /// The port the hosts answer on.
    pub published: u16,
    /// Where it answers.
    #[serde(default)]
    pub mode: PublishMode,
}

impl PublishedPort {
    /// Checks it (`field` names it in errors: `ports[0]`): a protocol of `tcp` or `udp`,
    /// ports from 1 to 65535.
    pub fn check(&self, field: &str) -> Result<()> {
        if !matches!(self.protocol.as_str(), "tcp" | "udp") {
            return Err(CnmError::invalid(
                format!("{field} protocol"),
                format!("{:?} is not tcp or udp", self.protocol),
            ));
        }
        if self.published == 0 {
            return Err(CnmError::invalid(
                format!("{field} published port"),
                "must be 1 to 65535 (a service's published port is not chosen for it)",
            ));
        }
        if self.target == 0 {
            return Err(CnmError::invalid(
                format!("{field} target port"),
                "must be 1 to 65535",
            ));
        }
        Ok(())
    }

    /// `8080:80/tcp` (and ` (host)` in host mode), as `service ls` prints it.
    pub fn display(&self) -> String {
        let mode = match self.mode {
            PublishMode::Ingress => "",
            PublishMode::Host => " (host)",
        };
        format!("{}:{}/{}{mode}", self.published, self.target, self.protocol)
    }
}

/// Session affinity: whether a client keeps reaching the same backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum AffinityMode {
    /// Every new connection may go to any backend (the default).
    #[default]
    None,
    /// A client address keeps its backend until it has been idle for the timeout.
    ClientIp,
}

impl AffinityMode {
    /// Its name (`none`, `client-ip`).
    pub fn as_str(self) -> &'static str {
        match self {
            AffinityMode::None => "none",
            AffinityMode::ClientIp => "client-ip",
        }
    }

    /// Parses `none` or `client-ip` (empty: `none`); the error names the field.
    pub fn parse(value: &str) -> Result<Self> {
        match value {
            "" | "none" => Ok(AffinityMode::None),
            "client-ip" | "clientip" | "ClientIP" => Ok(AffinityMode::ClientIp),
            other => Err(CnmError::invalid(
                "affinity",
                format!("{other:?} is not none or client-ip"),
            )),
        }
    }
}

/// A service's session affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, Hash)]
pub struct SessionAffinity {
    /// None or by client address.
    pub mode: AffinityMode,
    /// With `client-ip`: seconds a client's backend is kept while it is idle (1 to
    /// [`MAX_AFFINITY_TIMEOUT`]); 0 with `none`.
    pub timeout_seconds: u32,
}

impl SessionAffinity {
    /// `client-ip` with `timeout` seconds (`None`: the default, 10800), or `none` (which
    /// takes no timeout), checked.
    pub fn new(mode: AffinityMode, timeout: Option<u32>) -> Result<Self> {
        match (mode, timeout) {
            (AffinityMode::None, None | Some(0)) => Ok(SessionAffinity::default()),
            (AffinityMode::None, Some(_)) => Err(CnmError::invalid(
                "affinity timeout",
                "only client-ip affinity takes a timeout",
            )),
            (AffinityMode::ClientIp, t) => {
                let t = t.unwrap_or(DEFAULT_AFFINITY_TIMEOUT);
                if t == 0 || t > MAX_AFFINITY_TIMEOUT {
                    return Err(CnmError::invalid(
                        "affinity timeout",
                        format!("{t} s: must be 1 to {MAX_AFFINITY_TIMEOUT} seconds (a day)"),
                    ));
                }
                Ok(SessionAffinity {
                    mode,
                    timeout_seconds: t,
                })
            }
        }
    }
}

/// What a user asks for when creating a service (`plexus service create`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceSpec {
    /// Its name, unique (the rules of network names).
    pub name: String,
    /// Its networks (names or ids), one or more, all of one scope.
    pub networks: Vec<String>,
    /// `vip` (default) or `dnsrr`.
    pub endpoint_mode: EndpointMode,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
    /// Session affinity.
    pub affinity: SessionAffinity,
    /// `--label key=value`.
    pub labels: BTreeMap<String, String>,
}

/// A change to a service (`plexus service update`); what is left `None` or empty stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceUpdate {
    /// `--endpoint-mode`: switching to `vip` takes a virtual IP on each network, to
    /// `dnsrr` gives them back.
    pub endpoint_mode: Option<EndpointMode>,
    /// `--publish-add`: ports added (one with the same published port and protocol is
    /// replaced).
    pub ports_add: Vec<PublishedPort>,
    /// `--publish-rm`: published ports removed, by published port and protocol.
    pub ports_rm: Vec<(u16, String)>,
    /// `--affinity`/`--affinity-timeout`.
    pub affinity: Option<SessionAffinity>,
    /// `--label-add`.
    pub labels_add: BTreeMap<String, String>,
    /// `--label-rm`: label keys removed.
    pub labels_rm: Vec<String>,
}

/// A service's virtual IP on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualIp {
    /// The network's id.
    pub network_id: String,
    /// The IPAM pool the address came from, for release.
    pub pool_id: String,
    /// The address, with the subnet's prefix length.
    pub addr: IpNet,
}

/// A service as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// 64 hex digits.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its networks' scope: which store holds it and its tasks.
    pub scope: Scope,
    /// Its networks' ids, in the order given.
    pub networks: Vec<String>,
    /// `vip` or `dnsrr`.
    pub endpoint_mode: EndpointMode,
    /// In `vip` mode, its virtual IPs: one per network and address family the network
    /// has a pool of (IPv4, and IPv6 on IPv6 networks). Empty in `dnsrr` mode.
    #[serde(default)]
    pub vips: Vec<VirtualIp>,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<PublishedPort>,
    /// Session affinity.
    #[serde(default)]
    pub affinity: SessionAffinity,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Creation time, RFC 3339.
    pub created: String,
    /// Last change, RFC 3339.
    pub updated: String,
    /// 1 at creation, one more at each update.
    pub version: u64,
}

impl Service {
    /// Its virtual IPs on `network_id` (none in `dnsrr` mode).
    pub fn vips_on<'a>(&'a self, network_id: &'a str) -> impl Iterator<Item = &'a VirtualIp> {
        self.vips.iter().filter(move |v| v.network_id == network_id)
    }
}

/// A task's addresses on one of its service's networks: one backend of the service there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// The network's id.
    pub network_id: String,
    /// The sandbox's endpoint on it.
    pub endpoint_id: String,
    /// Its IPv4 address, with the prefix.
    pub ipv4: Option<IpNet>,
    /// Its IPv6 address.
    pub ipv6: Option<IpNet>,
}

impl Backend {
    /// Its addresses, IPv4 first.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.ipv4.iter().chain(self.ipv6.iter()).map(IpNet::addr)
    }
}

/// A sandbox that is a task of a service, with its backends: its addresses on those of the
/// service's networks it is on. A sandbox is a task of at most one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The service's id.
    pub service_id: String,
    /// The sandbox's id.
    pub sandbox_id: String,
    /// The sandbox's name.
    pub name: String,
    /// The host whose sandbox it is (empty on a local service: this host's).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Its backends, one per service network it is on, in the service's network order.
    pub backends: Vec<Backend>,
}

/// One network of a service with its virtual IPs and its backends there: what the data
/// plane programs and the DNS answers (`Controller::service_backends`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkBackends {
    /// The network's id.
    pub network_id: String,
    /// The service's virtual IPs on it (empty in `dnsrr` mode).
    pub vips: Vec<IpNet>,
    /// The backends, by task: (sandbox id, backend), in sandbox-id order.
    pub backends: Vec<(String, Backend)>,
}

/// The ports of a spec or update, checked: each one, at most [`MAX_SERVICE_PORTS`], and no
/// published port and protocol twice.
pub(crate) fn check_ports(ports: &[PublishedPort]) -> Result<()> {
    if ports.len() > MAX_SERVICE_PORTS {
        return Err(CnmError::invalid(
            "ports",
            format!(
                "{} published ports; a service has at most {MAX_SERVICE_PORTS}",
                ports.len()
            ),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        p.check(&format!("ports[{i}]"))?;
        if !seen.insert((p.published, p.protocol.as_str())) {
            return Err(CnmError::invalid(
                format!("ports[{i}] published port"),
                format!("{}/{} is given twice", p.published, p.protocol),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(published: u16, target: u16, protocol: &str) -> PublishedPort {
        PublishedPort {
            protocol: protocol.into(),
            target,
            published,
            mode: PublishMode::Ingress,
        }
    }

    #[test]
    fn ports_are_checked_naming_the_field() {
        assert!(check_ports(&[port(8080, 80, "tcp"), port(8080, 80, "udp")]).is_ok());
        let e = check_ports(&[port(0, 80, "tcp")]).unwrap_err().to_string();
        assert!(e.contains("ports[0] published port"), "{e}");
        let e = check_ports(&[port(1, 0, "tcp")]).unwrap_err().to_string();
        assert!(e.contains("ports[0] target port"), "{e}");
        let e = check_ports(&[port(1, 1, "sctp")]).unwrap_err().to_string();
        assert!(e.contains("ports[0] protocol"), "{e}");
        let e = check_ports(&[port(1, 1, "tcp"), port(1, 2, "tcp")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ports[1]") && e.contains("twice"), "{e}");
        let many: Vec<_> = (1..=1001).map(|p| port(p, 80, "tcp")).collect();
        assert!(check_ports(&many)
            .unwrap_err()
            .to_string()
            .contains("at most"));
    }

    #[test]
    fn affinity_rules() {
        let a = SessionAffinity::new(AffinityMode::ClientIp, None).unwrap();
        assert_eq!(a.timeout_seconds, DEFAULT_AFFINITY_TIMEOUT);
        assert!(SessionAffinity::new(AffinityMode::ClientIp, Some(86_401)).is_err());
        assert!(SessionAffinity::new(AffinityMode::ClientIp, Some(0)).is_err());
        assert!(SessionAffinity::new(AffinityMode::None, Some(5)).is_err());
        assert_eq!(
            SessionAffinity::new(AffinityMode::None, None).unwrap(),
            SessionAffinity::default()
        );
        assert!(AffinityMode::parse("sticky")
            .unwrap_err()
            .to_string()
            .contains("affinity"));
        assert!(EndpointMode::parse("rr")
            .unwrap_err()
            .to_string()
            .contains("endpoint mode"));
    }
}
