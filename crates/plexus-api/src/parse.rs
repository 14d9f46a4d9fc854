//! Pure parsers for request values: Docker's `filters` query parameter and `-p` port specs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use plexus_cnm::PortBinding;

/// Docker's `filters` query parameter: key → accepted values. Both encodings dockerd takes
/// are read: `{"name":{"a":true}}` and the older `{"name":["a"]}`.
pub type Filters = BTreeMap<String, Vec<String>>;

/// Parses a `filters` value; the error says what is wrong with it.
pub fn parse_filters(text: &str) -> Result<Filters, String> {
    if text.trim().is_empty() {
        return Ok(Filters::new());
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid filters JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or_else(|| "invalid filters: expected a JSON object".to_string())?;
    let mut out = Filters::new();
    for (key, values) in object {
        let list: Vec<String> = match values {
            serde_json::Value::Object(m) => m
                .iter()
                .filter(|(_, on)| on.as_bool().unwrap_or(false))
                .map(|(k, _)| k.clone())
                .collect(),
            serde_json::Value::Array(a) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| format!("invalid filter {key:?}: values must be strings"))
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(format!(
                    "invalid filter {key:?}: expected an object or a list"
                ))
            }
        };
        out.insert(key.clone(), list);
    }
    Ok(out)
}

fn parse_range(text: &str, what: &str, spec: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("invalid port spec {spec:?}: {what} {p:?} is not a port number"))
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (port(a)?, port(b)?);
            if b < a {
                return Err(format!(
                    "invalid port spec {spec:?}: {what} range {text:?} ends before it starts"
                ));
            }
            Ok((a, b))
        }
        None => {
            let p = port(text)?;
            Ok((p, p))
        }
    }
}

/// Parses a `-p` spec, `[hostIP:][hostPort[-end]:]port[-end][/tcp|udp|sctp]`, into one
/// binding per container port. An absent or zero host port asks for an ephemeral one.
pub fn parse_port_spec(spec: &str) -> Result<Vec<PortBinding>, String> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "invalid port spec {spec:?}: protocol {proto:?} is not tcp, udp or sctp"
        ));
    }
    let (host_ip, rest) = if let Some(after) = rest.strip_prefix('[') {
        let (ip, tail) = after
            .split_once(']')
            .ok_or_else(|| format!("invalid port spec {spec:?}: missing ']'"))?;
        let tail = tail
            .strip_prefix(':')
            .ok_or_else(|| format!("invalid port spec {spec:?}: expected ':' after ']'"))?;
        (Some(ip.to_string()), tail)
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            1 | 2 => (None, rest),
            3 => {
                let cut = parts[0].len() + 1;
                (Some(parts[0].to_string()), &rest[cut..])
            }
            _ => {
                return Err(format!(
                    "invalid port spec {spec:?}: too many ':' (write IPv6 host addresses in [brackets])"
                ))
            }
        }
    };
    let host_ip: Option<IpAddr> = match host_ip.as_deref() {
        None | Some("") => None,
        Some(ip) => Some(ip.parse().map_err(|_| {
            format!("invalid port spec {spec:?}: host IP {ip:?} is not an IP address")
        })?),
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let (c_start, c_end) = parse_range(container, "container port", spec)?;
    if c_start == 0 {
        return Err(format!(
            "invalid port spec {spec:?}: container port must not be 0"
        ));
    }
    let host_range = if host.is_empty() {
        None
    } else {
        Some(parse_range(host, "host port", spec)?)
    };
    let count = c_end - c_start;
    let mut out = Vec::new();
    for i in 0..=count {
        let (host_port, host_port_end) = match host_range {
            None => (0, 0),
            Some((h_start, h_end)) if h_end - h_start == count => (h_start + i, 0),
            // Docker: one container port, a host range: the first free port of the range.
            Some((h_start, h_end)) if count == 0 => (h_start, h_end),
            Some(_) => {
                return Err(format!(
                    "invalid port spec {spec:?}: the host and container port ranges must have the same length"
                ))
            }
        };
        out.push(PortBinding {
            proto: proto.clone(),
            container_port: c_start + i,
            host_ip,
            host_port,
            host_port_end,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_both_encodings() {
        let f = parse_filters(r#"{"name":{"a":true,"b":false},"driver":["bridge"]}"#);
        let f = f.unwrap_or_default();
        assert_eq!(f["name"], vec!["a".to_string()]);
        assert_eq!(f["driver"], vec!["bridge".to_string()]);
        assert!(parse_filters("[1]").is_err());
        assert!(parse_filters("").map(|f| f.is_empty()).unwrap_or(false));
    }

    #[test]
    fn port_specs() {
        let one = parse_port_spec("8080:80").unwrap_or_default();
        assert_eq!(one.len(), 1);
        assert_eq!((one[0].host_port, one[0].container_port), (8080, 80));
        assert_eq!(one[0].proto, "tcp");
        let eph = parse_port_spec("53/udp").unwrap_or_default();
        assert_eq!((eph[0].host_port, eph[0].proto.as_str()), (0, "udp"));
        let ip = parse_port_spec("127.0.0.1:8080:80").unwrap_or_default();
        assert_eq!(ip[0].host_ip, "127.0.0.1".parse().ok());
        let v6 = parse_port_spec("[::1]:8080:80/tcp").unwrap_or_default();
        assert_eq!(v6[0].host_ip, "::1".parse().ok());
        let range = parse_port_spec("9000-9002:80-82").unwrap_or_default();
        assert_eq!(range.len(), 3);
        assert_eq!((range[2].host_port, range[2].container_port), (9002, 82));
        assert_eq!(range[2].host_port_end, 0);
        // One container port, a host range: the driver picks the first free one.
        let pick = parse_port_spec("127.0.0.1:9000-9009:80").unwrap_or_default();
        assert_eq!(pick.len(), 1);
        assert_eq!((pick[0].host_port, pick[0].host_port_end), (9000, 9009));
        for bad in [
            "x:80",
            "80/icmp",
            "9000-9001:80-82",
            "9009-9000:80",
            "1.2.3:80:80",
            "0",
            "a:b:c:d",
        ] {
            assert!(parse_port_spec(bad).is_err(), "{bad} should fail");
        }
    }
}
