//! `plexus events`: the daemon's event stream printed as `docker events` prints it,
//! `<time> <type> <action> <id> (k=v, ...)`, or as JSON lines with `--format json`.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{anyhow, bail, Result};
use plexus_api_types::EventMessage;

use crate::client::{encode, Client};

/// `--since`/`--until` as the daemon takes them: RFC 3339 and Unix seconds go as they are;
/// a duration (`10m`, `1h30m`, `90s`) is that long before now, as docker's CLI makes it.
pub fn timestamp(flag: &str, value: &str) -> Result<String> {
    let is_duration = value
        .chars()
        .last()
        .is_some_and(|c| matches!(c, 'h' | 'm' | 's'))
        && value.starts_with(|c: char| c.is_ascii_digit());
    if !is_duration {
        return Ok(value.to_string());
    }
    let mut total = 0f64;
    let mut number = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => {
                chars.next();
                0.001
            }
            ('h', _) => 3600.0,
            ('m', _) => 60.0,
            ('s', _) => 1.0,
            _ => bail!("invalid value {value:?} for \"--{flag}\" flag: unknown unit {c:?}"),
        };
        let n: f64 = number
            .parse()
            .map_err(|_| anyhow!("invalid value {value:?} for \"--{flag}\" flag"))?;
        total += n * unit;
        number.clear();
    }
    if !number.is_empty() {
        bail!("invalid value {value:?} for \"--{flag}\" flag: a number without a unit");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| anyhow!("the clock is before 1970: {e}"))?;
    let at = now.saturating_sub(std::time::Duration::from_secs_f64(total));
    Ok(format!("{}.{:09}", at.as_secs(), at.subsec_nanos()))
}

/// `--filter k=v` (repeatable) as the daemon's `filters` JSON.
pub fn filters(items: &[String]) -> Result<String> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in items {
        let (k, v) = item.split_once('=').ok_or_else(|| {
            anyhow!("invalid argument {item:?} for \"--filter\" flag: expected key=value")
        })?;
        map.entry(k.to_string()).or_default().push(v.to_string());
    }
    Ok(serde_json::to_string(&map)?)
}

/// Unix nanoseconds as docker prints them: `2006-01-02T15:04:05.000000000Z` (UTC).
pub fn rfc3339_nano(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// One event as `docker events` prints it.
pub fn pretty(e: &EventMessage) -> String {
    let mut out = String::new();
    if e.time_nano != 0 {
        out.push_str(&rfc3339_nano(e.time_nano));
        out.push(' ');
    } else if e.time != 0 {
        out.push_str(&rfc3339_nano(e.time.saturating_mul(1_000_000_000)));
        out.push(' ');
    }
    out.push_str(&format!("{} {} {}", e.kind, e.action, e.actor.id));
    if !e.actor.attributes.is_empty() {
        let attrs: Vec<String> = e
            .actor
            .attributes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!(" ({})", attrs.join(", ")));
    }
    out
}

/// Streams events until the daemon ends the stream (`--until`) or the user interrupts.
pub fn run(
    client: &Client,
    since: Option<&str>,
    until: Option<&str>,
    filter: &[String],
    format: Option<&str>,
) -> Result<()> {
    let mut query = Vec::new();
    if let Some(s) = since {
        query.push(format!("since={}", encode(&timestamp("since", s)?)));
    }
    if let Some(u) = until {
        query.push(format!("until={}", encode(&timestamp("until", u)?)));
    }
    if !filter.is_empty() {
        query.push(format!("filters={}", encode(&filters(filter)?)));
    }
    let json = matches!(format, Some("json") | Some("{{json .}}"));
    if let Some(f) = format.filter(|_| !json) {
        bail!("invalid --format {f:?}: only json is supported for events");
    }
    let path = if query.is_empty() {
        "/events".to_string()
    } else {
        format!("/events?{}", query.join("&"))
    };
    let mut pending: Vec<u8> = Vec::new();
    let stdout = std::io::stdout();
    client.stream(&path, |bytes| {
        pending.extend_from_slice(bytes);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = &line[..line.len() - 1];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let mut out = stdout.lock();
            if json {
                out.write_all(line)?;
                out.write_all(b"\n")?;
            } else {
                let e: EventMessage = serde_json::from_slice(line)
                    .map_err(|e| anyhow!("decoding an event from the daemon: {e}"))?;
                writeln!(out, "{}", pretty(&e))?;
            }
            out.flush()?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_api_types::EventActor;

    #[test]
    fn prints_as_docker() {
        let e = EventMessage {
            kind: "network".into(),
            action: "connect".into(),
            actor: EventActor {
                id: "abc".into(),
                attributes: BTreeMap::from([
                    ("type".into(), "bridge".into()),
                    ("name".into(), "n1".into()),
                    ("container".into(), "def".into()),
                ]),
            },
            scope: "local".into(),
            time: 1_700_000_000,
            time_nano: 1_700_000_000_000_000_042,
        };
        assert_eq!(
            pretty(&e),
            "2023-11-14T22:13:20.000000042Z network connect abc (container=def, name=n1, type=bridge)"
        );
    }

    #[test]
    fn since_and_filters() {
        assert_eq!(
            timestamp("since", "1700000000").ok().as_deref(),
            Some("1700000000")
        );
        let t = timestamp("since", "10m").unwrap_or_default();
        let secs: u64 = t
            .split('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        assert!((now - 601..=now - 599).contains(&secs), "{t}");
        assert!(
            timestamp("since", "10x").is_ok(),
            "not a duration: sent as is"
        );
        assert!(timestamp("since", "10").is_ok());
        assert_eq!(
            filters(&[
                "type=network".into(),
                "event=connect".into(),
                "event=create".into()
            ])
            .ok()
            .as_deref(),
            Some(r#"{"event":["connect","create"],"type":["network"]}"#)
        );
        assert!(filters(&["bad".into()]).is_err());
    }
}
