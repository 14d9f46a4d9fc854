//! Pure parsers for request values: Docker's `filters` query parameter, `-p` port specs and
//! the `since`/`until` timestamps of `/events`.

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

/// Days from 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Nanoseconds of a fraction's digits (`"5"` → 500 000 000); at most nine digits.
fn fraction_nanos(digits: &str) -> Option<i128> {
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let padded = format!("{digits:0<9}");
    padded.parse::<i128>().ok()
}

/// Parses a timestamp as dockerd takes them for `since` and `until`: Unix seconds with an
/// optional fraction (`1700000000`, `1700000000.5`, what the docker CLI sends) or RFC 3339
/// (`2023-11-14T22:13:20Z`, `2023-11-14T23:13:20.5+01:00`). Returns nanoseconds since the
/// Unix epoch; the error names `field` and says what is wrong.
pub fn parse_timestamp(field: &str, text: &str) -> Result<i128, String> {
    let bad = || {
        format!(
            "invalid {field} {text:?}: expected Unix seconds (1700000000.5) or RFC 3339 (2023-11-14T22:13:20Z)"
        )
    };
    if !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        let (secs, frac) = match text.split_once('.') {
            Some((s, f)) => (s, Some(f)),
            None => (text, None),
        };
        let negative = secs.starts_with('-');
        let secs: i128 = secs.parse().map_err(|_| bad())?;
        let nanos = match frac {
            Some(f) => fraction_nanos(f).ok_or_else(bad)?,
            None => 0,
        };
        // Any number of digits parses: the nanoseconds can overflow even an i128.
        return secs
            .checked_mul(1_000_000_000)
            .and_then(|n| n.checked_add(if negative { -nanos } else { nanos }))
            .ok_or_else(|| format!("invalid {field} {text:?}: out of range"));
    }
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let s = text.get(r).ok_or_else(bad)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &text[19..];
    let mut nanos = 0i128;
    if let Some(after) = rest.strip_prefix('.') {
        let end = after
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(after.len());
        nanos = fraction_nanos(&after[..end]).ok_or_else(bad)?;
        rest = &after[end..];
    }
    let offset_secs: i64 = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && (rest.starts_with('+') || rest.starts_with('-')) => {
            let oh = num(text.len() - 5..text.len() - 3)?;
            let om = num(text.len() - 2..text.len())?;
            if &rest[3..4] != ":" || oh > 23 || om > 59 {
                return Err(bad());
            }
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return Err(bad()),
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    Ok(i128::from(secs) * 1_000_000_000 + nanos)
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
    fn timestamps() {
        let ns = |t: &str| parse_timestamp("since", t);
        assert_eq!(ns("1700000000"), Ok(1_700_000_000_000_000_000));
        assert_eq!(ns("1700000000.5"), Ok(1_700_000_000_500_000_000));
        assert_eq!(ns("1700000000.000000001"), Ok(1_700_000_000_000_000_001));
        assert_eq!(ns("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000_000_000));
        assert_eq!(
            ns("2023-11-14T23:13:20.25+01:00"),
            Ok(1_700_000_000_250_000_000)
        );
        assert_eq!(ns("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(ns("-0.5"), Ok(-500_000_000));
        // Found by the fuzz target api_json: 35 digits overflowed the multiplication.
        let huge = ns("-34444444444444444444444444444444424");
        assert!(huge.err().unwrap_or_default().contains("out of range"));
        assert!(ns(&"9".repeat(40)).is_err());
        for bad in [
            "",
            "yesterday",
            "1.2.3",
            "1700000000.1234567891",
            "2023-13-01T00:00:00Z",
            "2023-11-14T22:13:20",
        ] {
            let e = ns(bad).err().unwrap_or_default();
            assert!(e.contains("invalid since"), "{bad}: {e}");
        }
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
