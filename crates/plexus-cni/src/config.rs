//! The network configuration on stdin (untrusted JSON): what plexus-cni reads of it, checked,
//! with errors that name the field (`plexus.socket`, `runtimeConfig.ips[1]`).
//!
//! ```json
//! { "cniVersion": "1.0.0", "name": "demo", "type": "plexus-cni",
//!   "network": "demo", "plexus": { "socket": "unix:///run/plexus/plexus.sock" } }
//! ```
//!
//! `network` is the Plexus network (name or id); without it, the configuration's `name`.
//! Fields plexus-cni does not know are left alone, as CNI configurations carry other
//! plugins' keys.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::error::{code, CniError, Result};

/// The spec versions plexus-cni speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest of them: the version of answers to a configuration that gives none.
pub const LATEST_VERSION: &str = "1.1.0";

/// plexusd's socket when neither the configuration nor `PLEXUS_HOST` names one (plexusd's
/// default `-H`).
pub const DEFAULT_SOCKET: &str = "/run/plexus/plexus.sock";

/// The key of CNI 1.1's GC list of attachments still in use.
pub const VALID_ATTACHMENTS: &str = "cni.dev/valid-attachments";

/// One published port asked for through the `portMappings` capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    /// `hostPort`.
    pub host_port: u16,
    /// `containerPort`.
    pub container_port: u16,
    /// `protocol` (`tcp` when absent).
    pub protocol: String,
    /// `hostIP`, if any.
    pub host_ip: Option<String>,
}

/// What plexus-cni reads of a network configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetConf {
    /// `cniVersion`, one of [`SUPPORTED_VERSIONS`].
    pub cni_version: String,
    /// `name`: the CNI network's name.
    pub name: String,
    /// The Plexus network: `network`, else `name`.
    pub network: String,
    /// `plexus.socket`: the daemon's socket path (a `unix://` URL is accepted), if given.
    pub socket: Option<String>,
    /// `runtimeConfig.ips` (capability `ips`): addresses asked for, CIDR or bare.
    pub ips: Vec<String>,
    /// `runtimeConfig.aliases` (podman's capability `aliases`): names for this network.
    pub aliases: Vec<String>,
    /// `runtimeConfig.portMappings` (capability `portMappings`).
    pub port_mappings: Vec<PortMapping>,
    /// `prevResult` (CHECK), as given.
    pub prev_result: Option<Value>,
    /// `cni.dev/valid-attachments` (GC): `(containerID, ifname)` pairs; `None` when absent.
    pub valid_attachments: Option<BTreeSet<(String, String)>>,
}

fn bad(field: &str, details: impl Into<String>) -> CniError {
    CniError::new(
        code::INVALID_NETWORK_CONFIG,
        format!("invalid network configuration field {field}"),
        details,
    )
}

fn decoding(field: &str, want: &str) -> CniError {
    CniError::new(
        code::DECODING_FAILURE,
        format!("cannot decode the network configuration field {field}"),
        format!("{field} must be {want}"),
    )
}

fn string_at<'a>(obj: &'a Map<String, Value>, key: &str, field: &str) -> Result<Option<&'a str>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(decoding(field, "a string")),
    }
}

/// Whether `version` is at least `min` (both `X.Y.Z`).
pub fn at_least(version: &str, min: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(version) >= parse(min)
}

impl NetConf {
    /// Parses stdin's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                "the network configuration is not JSON",
                format!("stdin: {e}"),
            )
        })?;
        let Value::Object(obj) = value else {
            return Err(decoding("(top level)", "a JSON object"));
        };
        let cni_version = string_at(&obj, "cniVersion", "cniVersion")?
            .ok_or_else(|| bad("cniVersion", "cniVersion is missing"))?
            .to_string();
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "cniVersion {cni_version:?} is not supported; plexus-cni supports {}",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        let name = string_at(&obj, "name", "name")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("name", "name is missing or empty"))?
            .to_string();
        let network = match string_at(&obj, "network", "network")? {
            Some("") => return Err(bad("network", "network is empty")),
            Some(n) => n.to_string(),
            None => name.clone(),
        };
        let mut conf = NetConf {
            cni_version,
            name,
            network,
            ..Default::default()
        };
        match obj.get("plexus") {
            None | Some(Value::Null) => {}
            Some(Value::Object(p)) => {
                if let Some(s) = string_at(p, "socket", "plexus.socket")? {
                    conf.socket = Some(socket_path(s, "plexus.socket")?);
                }
            }
            Some(_) => return Err(decoding("plexus", "an object")),
        }
        match obj.get("runtimeConfig") {
            None | Some(Value::Null) => {}
            Some(Value::Object(rc)) => conf.read_runtime_config(rc)?,
            Some(_) => return Err(decoding("runtimeConfig", "an object")),
        }
        conf.prev_result = obj.get("prevResult").filter(|v| !v.is_null()).cloned();
        match obj.get(VALID_ATTACHMENTS) {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                let mut set = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    let field = format!("{VALID_ATTACHMENTS}[{i}]");
                    let Value::Object(a) = item else {
                        return Err(decoding(&field, "an object"));
                    };
                    let id = string_at(a, "containerID", &format!("{field}.containerID"))?;
                    let ifname = string_at(a, "ifname", &format!("{field}.ifname"))?;
                    match (id, ifname) {
                        (Some(id), Some(ifname)) => {
                            set.insert((id.to_string(), ifname.to_string()));
                        }
                        (None, _) => {
                            return Err(bad(&field, format!("{field}.containerID is missing")))
                        }
                        (_, None) => return Err(bad(&field, format!("{field}.ifname is missing"))),
                    }
                }
                conf.valid_attachments = Some(set);
            }
            Some(_) => return Err(decoding(VALID_ATTACHMENTS, "an array")),
        }
        Ok(conf)
    }

    fn read_runtime_config(&mut self, rc: &Map<String, Value>) -> Result<()> {
        if rc.get("mac").is_some_and(|v| !v.is_null()) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "unsupported field runtimeConfig.mac",
                format!(
                    "runtimeConfig.mac={}: plexus-cni does not take the mac capability",
                    rc["mac"]
                ),
            ));
        }
        match rc.get("ips") {
            None | Some(Value::Null) => {}
            Some(Value::Array(ips)) => {
                for (i, ip) in ips.iter().enumerate() {
                    let field = format!("runtimeConfig.ips[{i}]");
                    let Value::String(s) = ip else {
                        return Err(decoding(&field, "a string"));
                    };
                    let addr = s.split_once('/').map_or(s.as_str(), |(a, _)| a);
                    if addr.parse::<std::net::IpAddr>().is_err() {
                        return Err(bad(&field, format!("{field}={s:?} is not an IP address")));
                    }
                    self.ips.push(addr.to_string());
                }
            }
            Some(_) => return Err(decoding("runtimeConfig.ips", "an array")),
        }
        match rc.get("aliases") {
            None | Some(Value::Null) => {}
            Some(Value::Object(by_network)) => {
                // podman's: network name → names; only this network's are this endpoint's.
                if let Some(v) = by_network.get(&self.name) {
                    let field = format!("runtimeConfig.aliases.{}", self.name);
                    let Value::Array(names) = v else {
                        return Err(decoding(&field, "an array"));
                    };
                    for (i, n) in names.iter().enumerate() {
                        let Value::String(n) = n else {
                            return Err(decoding(&format!("{field}[{i}]"), "a string"));
                        };
                        self.aliases.push(n.clone());
                    }
                }
            }
            Some(_) => return Err(decoding("runtimeConfig.aliases", "an object")),
        }
        match rc.get("portMappings") {
            None | Some(Value::Null) => {}
            Some(Value::Array(maps)) => {
                for (i, m) in maps.iter().enumerate() {
                    let field = format!("runtimeConfig.portMappings[{i}]");
                    self.port_mappings.push(port_mapping(m, &field)?);
                }
            }
            Some(_) => return Err(decoding("runtimeConfig.portMappings", "an array")),
        }
        Ok(())
    }
}

fn port_mapping(m: &Value, field: &str) -> Result<PortMapping> {
    let Value::Object(m) = m else {
        return Err(decoding(field, "an object"));
    };
    let port = |key: &str| -> Result<u16> {
        let f = format!("{field}.{key}");
        match m.get(key) {
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0)
                .ok_or_else(|| bad(&f, format!("{f}={n} is not a port (1-65535)"))),
            None => Err(bad(&f, format!("{f} is missing"))),
            Some(_) => Err(decoding(&f, "a number")),
        }
    };
    let protocol = string_at(m, "protocol", &format!("{field}.protocol"))?
        .filter(|p| !p.is_empty())
        .unwrap_or("tcp")
        .to_ascii_lowercase();
    if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad(
            &format!("{field}.protocol"),
            format!("{field}.protocol={protocol:?}: one of tcp, udp, sctp"),
        ));
    }
    Ok(PortMapping {
        host_port: port("hostPort")?,
        container_port: port("containerPort")?,
        protocol,
        host_ip: string_at(m, "hostIP", &format!("{field}.hostIP"))?
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    })
}

/// A socket given as a path or a `unix://` URL, as a path.
pub fn socket_path(value: &str, field: &str) -> Result<String> {
    let path = value.strip_prefix("unix://").unwrap_or(value);
    if path.is_empty() || !path.starts_with('/') {
        return Err(bad(
            field,
            format!("{field}={value:?} must be an absolute socket path or unix:///path"),
        ));
    }
    Ok(path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_defaults_to_the_name() {
        let c =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"demo","type":"plexus-cni"}"#).unwrap();
        assert_eq!((c.name.as_str(), c.network.as_str()), ("demo", "demo"));
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"demo","network":"app","plexus":{"socket":"unix:///x.sock"}}"#,
        )
        .unwrap();
        assert_eq!(c.network, "app");
        assert_eq!(c.socket.as_deref(), Some("/x.sock"));
    }

    #[test]
    fn errors_name_the_field() {
        for (json, code, field) in [
            (&b"not json"[..], code::DECODING_FAILURE, "stdin"),
            (br#"{"name":"x"}"#, code::INVALID_NETWORK_CONFIG, "cniVersion"),
            (br#"{"cniVersion":"9.9.9","name":"x"}"#, code::INCOMPATIBLE_VERSION, "cniVersion"),
            (br#"{"cniVersion":"1.0.0"}"#, code::INVALID_NETWORK_CONFIG, "name"),
            (br#"{"cniVersion":"1.0.0","name":"x","plexus":{"socket":"rel"}}"#, code::INVALID_NETWORK_CONFIG, "plexus.socket"),
            (br#"{"cniVersion":"1.0.0","name":"x","runtimeConfig":{"ips":["10.0.0.300"]}}"#, code::INVALID_NETWORK_CONFIG, "runtimeConfig.ips[0]"),
            (br#"{"cniVersion":"1.0.0","name":"x","runtimeConfig":{"mac":"aa"}}"#, code::UNSUPPORTED_FIELD, "runtimeConfig.mac"),
            (br#"{"cniVersion":"1.0.0","name":"x","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}}"#, code::INVALID_NETWORK_CONFIG, "portMappings[0].hostPort"),
            (br#"{"cniVersion":"1.1.0","name":"x","cni.dev/valid-attachments":[{"containerID":"a"}]}"#, code::INVALID_NETWORK_CONFIG, "ifname"),
        ] {
            let e = NetConf::parse(json).unwrap_err();
            assert_eq!(e.code, code, "{e}");
            assert!(
                e.msg.contains(field) || e.details.contains(field),
                "{field} not named: {e}"
            );
        }
    }

    #[test]
    fn gc_reads_the_valid_attachments() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"x","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        )
        .unwrap();
        let set = c.valid_attachments.unwrap();
        assert!(set.contains(&("a".to_string(), "eth0".to_string())));
    }

    #[test]
    fn versions_compare() {
        assert!(at_least("1.1.0", "1.1.0"));
        assert!(at_least("1.1.0", "1.0.0"));
        assert!(!at_least("0.4.0", "1.0.0"));
    }
}
