//! Services (`/plexus/services`): Docker swarm's service shapes where they exist
//! (`Name`, `ID`, `EndpointSpec{Mode, Ports}`, `Endpoint{VirtualIPs}`, `Labels`), Plexus's
//! own `SessionAffinity` and `Tasks`, and the parser of `-p`/`--publish` specs the CLI
//! and the API share.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The most ports one `--publish` range may give.
pub const MAX_PUBLISH_RANGE: usize = 1000;

/// One published port (Docker's `PortConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PortConfig {
    /// `tcp` or `udp` (empty: `tcp`).
    #[serde(rename = "Protocol", default)]
    pub protocol: String,
    /// The port on the backends.
    #[serde(rename = "TargetPort", default)]
    pub target_port: u32,
    /// The port the hosts answer on.
    #[serde(rename = "PublishedPort", default)]
    pub published_port: u32,
    /// `ingress` (default) or `host`.
    #[serde(rename = "PublishMode", default)]
    pub publish_mode: String,
}

/// How the service is reached (Docker's `EndpointSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceEndpointSpec {
    /// `vip` (default) or `dnsrr`.
    #[serde(rename = "Mode", default)]
    pub mode: String,
    /// Published ports.
    #[serde(rename = "Ports", default)]
    pub ports: Vec<PortConfig>,
}

/// Session affinity: `none` (default) or `client-ip`, with a timeout in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SessionAffinity {
    /// `none` or `client-ip`.
    #[serde(rename = "Mode", default)]
    pub mode: String,
    /// Seconds a client keeps its backend while idle (`client-ip`; 0: the default 10800).
    #[serde(rename = "TimeoutSeconds", default)]
    pub timeout_seconds: u32,
}

/// A network of a service create request (Docker's `NetworkAttachmentConfig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceNetwork {
    /// The network's name or id.
    #[serde(rename = "Target", default)]
    pub target: String,
}

/// `POST /plexus/services/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceCreate {
    /// The service's name.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// Its networks, one or more, of one scope.
    #[serde(rename = "Networks", default)]
    pub networks: Vec<ServiceNetwork>,
    /// Mode and published ports.
    #[serde(rename = "EndpointSpec", default)]
    pub endpoint_spec: Option<ServiceEndpointSpec>,
    /// Session affinity.
    #[serde(rename = "SessionAffinity", default)]
    pub session_affinity: Option<SessionAffinity>,
    /// Labels.
    #[serde(rename = "Labels", default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `POST /plexus/services/create` → 201.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceCreated {
    /// The new service's id.
    #[serde(rename = "ID")]
    pub id: String,
}

/// A published port to remove (`--publish-rm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PortRemove {
    /// The published port.
    #[serde(rename = "PublishedPort", default)]
    pub published_port: u32,
    /// `tcp` or `udp` (empty: `tcp`).
    #[serde(rename = "Protocol", default)]
    pub protocol: String,
}

/// `POST /plexus/services/{id}/update`: what changes (Plexus's own shape: the flags of
/// `docker service update`, not a whole new spec).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceUpdate {
    /// `--endpoint-mode` (empty: unchanged).
    #[serde(rename = "Mode", default)]
    pub mode: String,
    /// `--publish-add`.
    #[serde(rename = "PortsAdd", default)]
    pub ports_add: Vec<PortConfig>,
    /// `--publish-rm`.
    #[serde(rename = "PortsRemove", default)]
    pub ports_remove: Vec<PortRemove>,
    /// `--affinity`/`--affinity-timeout` (absent: unchanged).
    #[serde(rename = "SessionAffinity", default)]
    pub session_affinity: Option<SessionAffinity>,
    /// `--label-add`.
    #[serde(rename = "LabelsAdd", default)]
    pub labels_add: BTreeMap<String, String>,
    /// `--label-rm`.
    #[serde(rename = "LabelsRemove", default)]
    pub labels_remove: Vec<String>,
}

/// A virtual IP of a service (Docker's `EndpointVirtualIP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualIp {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The address with its prefix (`10.0.0.2/24`).
    #[serde(rename = "Addr")]
    pub addr: String,
}

/// What a service's endpoint has (Docker's `Endpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceEndpoint {
    /// Mode and published ports, as in effect.
    #[serde(rename = "Spec")]
    pub spec: ServiceEndpointSpec,
    /// Published ports.
    #[serde(rename = "Ports", default)]
    pub ports: Vec<PortConfig>,
    /// Its virtual IPs, one per network and address family (none in `dnsrr` mode).
    #[serde(rename = "VirtualIPs", default)]
    pub virtual_ips: Vec<VirtualIp>,
}

/// A network of a service as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceNetworkView {
    /// The network's id.
    #[serde(rename = "Target")]
    pub target: String,
    /// Its name (empty when it is gone).
    #[serde(rename = "Name", default)]
    pub name: String,
}

/// A task: a sandbox of the service, with its addresses on the service's networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// The sandbox's id.
    #[serde(rename = "SandboxID")]
    pub sandbox_id: String,
    /// The sandbox's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The host it is on (empty: this one, on a local service).
    #[serde(rename = "Host", default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// Its addresses, with prefix, on the service's networks it is on: the backends.
    #[serde(rename = "Addresses", default)]
    pub addresses: Vec<TaskAddress>,
}

/// One backend address of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskAddress {
    /// The network's id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The sandbox's endpoint there.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The address with its prefix.
    #[serde(rename = "Addr")]
    pub addr: String,
}

/// A service as `GET /plexus/services/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceResource {
    /// Its id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Its name.
    #[serde(rename = "Name")]
    pub name: String,
    /// `local` or `swarm` (global), as Docker names the scopes in events.
    #[serde(rename = "Scope")]
    pub scope: String,
    /// Creation time, RFC 3339.
    #[serde(rename = "CreatedAt")]
    pub created_at: String,
    /// Last change, RFC 3339.
    #[serde(rename = "UpdatedAt")]
    pub updated_at: String,
    /// 1 at creation, one more per update (Docker's `Version.Index`).
    #[serde(rename = "Version")]
    pub version: u64,
    /// Its networks.
    #[serde(rename = "Networks")]
    pub networks: Vec<ServiceNetworkView>,
    /// Mode, ports and virtual IPs.
    #[serde(rename = "Endpoint")]
    pub endpoint: ServiceEndpoint,
    /// Session affinity.
    #[serde(rename = "SessionAffinity")]
    pub session_affinity: SessionAffinity,
    /// Labels.
    #[serde(rename = "Labels")]
    pub labels: BTreeMap<String, String>,
    /// Its tasks.
    #[serde(rename = "Tasks")]
    pub tasks: Vec<TaskView>,
}

fn port_number(text: &str, what: &str, spec: &str) -> Result<u32, String> {
    let p: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid publish {spec:?}: {what} {text:?} is not a port number"))?;
    if p == 0 || p > 65535 {
        return Err(format!(
            "invalid publish {spec:?}: {what} {p} is not 1 to 65535"
        ));
    }
    Ok(p)
}

fn port_range(text: &str, what: &str, spec: &str) -> Result<(u32, u32), String> {
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port_number(a, what, spec)?, port_number(b, what, spec)?);
            if b < a {
                return Err(format!(
                    "invalid publish {spec:?}: {what} range {text:?} ends before it starts"
                ));
            }
            Ok((a, b))
        }
        None => {
            let p = port_number(text, what, spec)?;
            Ok((p, p))
        }
    }
}

/// Parses a `--publish` spec: the short form `PUBLISHED:TARGET[/tcp|udp]` (ranges of equal
/// length, `8000-8009:80-89`, at most [`MAX_PUBLISH_RANGE`] ports) or Docker's long form
/// `published=P,target=T[,protocol=tcp|udp][,mode=ingress|host]`. The error names what
/// is wrong.
pub fn parse_publish(spec: &str) -> Result<Vec<PortConfig>, String> {
    if spec.contains('=') {
        let mut port = PortConfig::default();
        let (mut published, mut target) = (None, None);
        for field in spec.split(',') {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| format!("invalid publish {spec:?}: {field:?} is not key=value"))?;
            match k.trim() {
                "published" => published = Some(port_number(v, "published port", spec)?),
                "target" => target = Some(port_number(v, "target port", spec)?),
                "protocol" => port.protocol = v.trim().to_ascii_lowercase(),
                "mode" => port.publish_mode = v.trim().to_string(),
                other => {
                    return Err(format!(
                        "invalid publish {spec:?}: unknown field {other:?} (published, target, protocol, mode)"
                    ))
                }
            }
        }
        port.target_port =
            target.ok_or_else(|| format!("invalid publish {spec:?}: target is missing"))?;
        port.published_port = published.ok_or_else(|| {
            format!("invalid publish {spec:?}: published is missing (it is not chosen for you)")
        })?;
        if port.protocol.is_empty() {
            port.protocol = "tcp".into();
        }
        if !matches!(port.protocol.as_str(), "tcp" | "udp") {
            return Err(format!(
                "invalid publish {spec:?}: protocol {:?} is not tcp or udp",
                port.protocol
            ));
        }
        if !matches!(port.publish_mode.as_str(), "" | "ingress" | "host") {
            return Err(format!(
                "invalid publish {spec:?}: mode {:?} is not ingress or host",
                port.publish_mode
            ));
        }
        if port.publish_mode.is_empty() {
            port.publish_mode = "ingress".into();
        }
        return Ok(vec![port]);
    }
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(protocol.as_str(), "tcp" | "udp") {
        return Err(format!(
            "invalid publish {spec:?}: protocol {protocol:?} is not tcp or udp"
        ));
    }
    let (published, target) = ports.split_once(':').ok_or_else(|| {
        format!("invalid publish {spec:?}: expected PUBLISHED:TARGET (the published port is not chosen for you)")
    })?;
    let (p0, p1) = port_range(published, "published port", spec)?;
    let (t0, t1) = port_range(target, "target port", spec)?;
    if p1 - p0 != t1 - t0 {
        return Err(format!(
            "invalid publish {spec:?}: the published and target ranges must have the same length"
        ));
    }
    let count = (p1 - p0 + 1) as usize;
    if count > MAX_PUBLISH_RANGE {
        return Err(format!(
            "invalid publish {spec:?}: {count} ports; a range gives at most {MAX_PUBLISH_RANGE}"
        ));
    }
    Ok((0..=(p1 - p0))
        .map(|i| PortConfig {
            protocol: protocol.clone(),
            target_port: t0 + i,
            published_port: p0 + i,
            publish_mode: "ingress".into(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_forms() {
        let p = parse_publish("8080:80").unwrap();
        assert_eq!(
            p,
            vec![PortConfig {
                protocol: "tcp".into(),
                target_port: 80,
                published_port: 8080,
                publish_mode: "ingress".into()
            }]
        );
        assert_eq!(parse_publish("53:53/udp").unwrap()[0].protocol, "udp");
        let r = parse_publish("8000-8009:80-89").unwrap();
        assert_eq!(r.len(), 10);
        assert_eq!((r[9].published_port, r[9].target_port), (8009, 89));
        let l = parse_publish("published=8080,target=80,protocol=udp,mode=host").unwrap();
        assert_eq!(
            (
                l[0].published_port,
                l[0].target_port,
                l[0].protocol.as_str()
            ),
            (8080, 80, "udp")
        );
        assert_eq!(l[0].publish_mode, "host");
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, why) in [
            ("80", "PUBLISHED:TARGET"),
            ("0:80", "not 1 to 65535"),
            ("70000:80", "not 1 to 65535"),
            ("8080:80/sctp", "protocol"),
            ("8000-8001:80", "same length"),
            ("1-2000:1-2000", "at most 1000"),
            ("9-8:9-8", "ends before"),
            ("published=1", "target is missing"),
            ("target=1", "published is missing"),
            ("published=1,target=1,mode=x", "mode"),
            ("published=1,target=1,colour=red", "unknown field"),
            ("x:80", "not a port number"),
        ] {
            let e = parse_publish(spec).unwrap_err();
            assert!(e.contains(why), "{spec}: {e}");
        }
    }
}
