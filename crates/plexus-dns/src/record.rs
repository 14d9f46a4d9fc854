//! What a host tells the other hosts of a network about one of its endpoints so that their
//! resolvers answer its names (libnetwork's `EndpointRecord` in `endpoint_table`): the
//! sandbox's name, the other names it answers to on the network, its addresses, and the
//! service it is a task of (libnetwork's `service_id` and `service_name`). plexusd
//! publishes one per endpoint in the network's [`ENDPOINT_TABLE`], keyed by the endpoint's
//! id, and turns the other hosts' into [`EndpointInfo`](crate::zone::EndpointInfo)s.
//!
//! The bytes come from the network, so reading them is strict and bounded. Version 1: the
//! byte `1`, then fields, each a tag (1 byte), a length (2 bytes, big-endian) and that many
//! bytes:
//!
//! | tag | field | |
//! |---|---|---|
//! | 1 | the sandbox's name | UTF-8, exactly once |
//! | 2 | another name it answers to (an alias, its hostname) | UTF-8, repeatable |
//! | 3 | an address | 4 or 16 bytes, repeatable |
//! | 4 | the id of the service it is a task of | UTF-8, at most once, with 5 |
//! | 5 | that service's name | UTF-8, at most once, with 4 |
//!
//! A reader skips tags it does not know, so a writer may add fields without a new version;
//! a change old readers would misread takes a new version, which they refuse. Names are 1
//! to [`MAX_NAME_LEN`] bytes of printable ASCII without spaces; at most [`MAX_NAMES`] names
//! and [`MAX_ADDRS`] addresses.

use std::net::IpAddr;

use crate::zone::ServiceRef;

/// The table endpoint records are published in, per network (libnetwork's name).
pub const ENDPOINT_TABLE: &str = "endpoint_table";

/// The longest name, in bytes (a DNS name's text form).
pub const MAX_NAME_LEN: usize = 253;
/// The most names (the sandbox's included) one record may carry.
pub const MAX_NAMES: usize = 64;
/// The most addresses one record may carry.
pub const MAX_ADDRS: usize = 16;

const VERSION: u8 = 1;
const TAG_SANDBOX: u8 = 1;
const TAG_NAME: u8 = 2;
const TAG_ADDR: u8 = 3;
const TAG_SERVICE_ID: u8 = 4;
const TAG_SERVICE_NAME: u8 = 5;

/// One endpoint of another host, as its resolver entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRecord {
    /// The sandbox's name: answered, and what PTR answers for the addresses.
    pub sandbox: String,
    /// The other names it answers to on the network (aliases, hostname), without the
    /// sandbox's name.
    pub aliases: Vec<String>,
    /// Its addresses on the network.
    pub addrs: Vec<IpAddr>,
    /// The service it is a task of: its addresses answer `tasks.SERVICE` there.
    pub service: Option<ServiceRef>,
}

/// A record that is not one this version writes or reads, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("endpoint record: {field}: {problem}")]
pub struct RecordError {
    /// The field (`version`, `sandbox`, `name`, `address`, `service id`, `service name`,
    /// `field`).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

fn err(field: &'static str, problem: &'static str) -> RecordError {
    RecordError { field, problem }
}

/// Whether `name` may be carried: 1 to [`MAX_NAME_LEN`] bytes of printable ASCII, no spaces.
fn check_name(field: &'static str, name: &str) -> Result<(), RecordError> {
    if name.is_empty() {
        return Err(err(field, "empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(err(field, "longer than 253 bytes"));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(err(field, "not printable ASCII"));
    }
    Ok(())
}

impl EndpointRecord {
    /// Every name it answers to: the sandbox's first, then the others, each once.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![self.sandbox.clone()];
        for a in &self.aliases {
            if !names.contains(a) {
                names.push(a.clone());
            }
        }
        names
    }

    /// The record's bytes; refused (naming the field) if a reader would refuse them.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        check_name("sandbox", &self.sandbox)?;
        if self.aliases.len() + 1 > MAX_NAMES {
            return Err(err("name", "too many"));
        }
        if self.addrs.len() > MAX_ADDRS {
            return Err(err("address", "too many"));
        }
        let mut out = Vec::with_capacity(64);
        out.push(VERSION);
        field(&mut out, TAG_SANDBOX, self.sandbox.as_bytes());
        for a in &self.aliases {
            check_name("name", a)?;
            field(&mut out, TAG_NAME, a.as_bytes());
        }
        for a in &self.addrs {
            match a {
                IpAddr::V4(v4) => field(&mut out, TAG_ADDR, &v4.octets()),
                IpAddr::V6(v6) => field(&mut out, TAG_ADDR, &v6.octets()),
            }
        }
        if let Some(svc) = &self.service {
            check_name("service id", &svc.id)?;
            check_name("service name", &svc.name)?;
            field(&mut out, TAG_SERVICE_ID, svc.id.as_bytes());
            field(&mut out, TAG_SERVICE_NAME, svc.name.as_bytes());
        }
        Ok(out)
    }

    /// Reads a record (bytes off the network: anything malformed is an error, never a panic).
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let (&version, mut rest) = bytes
            .split_first()
            .ok_or_else(|| err("version", "missing"))?;
        if version != VERSION {
            return Err(err("version", "unknown"));
        }
        let mut sandbox: Option<String> = None;
        let mut aliases = Vec::new();
        let mut addrs = Vec::new();
        let mut service_id: Option<String> = None;
        let mut service_name: Option<String> = None;
        while !rest.is_empty() {
            let (tag, value, tail) = split_field(rest)?;
            rest = tail;
            match tag {
                TAG_SANDBOX => {
                    if sandbox.is_some() {
                        return Err(err("sandbox", "given twice"));
                    }
                    sandbox = Some(text("sandbox", value)?);
                }
                TAG_NAME => {
                    if aliases.len() + 1 >= MAX_NAMES {
                        return Err(err("name", "too many"));
                    }
                    aliases.push(text("name", value)?);
                }
                TAG_ADDR => {
                    if addrs.len() >= MAX_ADDRS {
                        return Err(err("address", "too many"));
                    }
                    let addr = match value.len() {
                        4 => <[u8; 4]>::try_from(value).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(value).ok().map(IpAddr::from),
                        _ => None,
                    };
                    addrs.push(addr.ok_or_else(|| err("address", "neither 4 nor 16 bytes"))?);
                }
                TAG_SERVICE_ID => {
                    if service_id.is_some() {
                        return Err(err("service id", "given twice"));
                    }
                    service_id = Some(text("service id", value)?);
                }
                TAG_SERVICE_NAME => {
                    if service_name.is_some() {
                        return Err(err("service name", "given twice"));
                    }
                    service_name = Some(text("service name", value)?);
                }
                // A field of a later writer: skipped.
                _ => {}
            }
        }
        let service = match (service_id, service_name) {
            (Some(id), Some(name)) => Some(ServiceRef { id, name }),
            (None, None) => None,
            (Some(_), None) => return Err(err("service name", "missing (an id is given)")),
            (None, Some(_)) => return Err(err("service id", "missing (a name is given)")),
        };
        Ok(EndpointRecord {
            sandbox: sandbox.ok_or_else(|| err("sandbox", "missing"))?,
            aliases,
            addrs,
            service,
        })
    }
}

fn field(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    // Values are names (at most 253 bytes) and addresses: the length always fits.
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
}

/// One field: its tag, its value and what follows.
fn split_field(bytes: &[u8]) -> Result<(u8, &[u8], &[u8]), RecordError> {
    let [tag, hi, lo, rest @ ..] = bytes else {
        return Err(err("field", "truncated header"));
    };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    if rest.len() < len {
        return Err(err("field", "truncated value"));
    }
    let (value, tail) = rest.split_at(len);
    Ok((*tag, value, tail))
}

fn text(field: &'static str, value: &[u8]) -> Result<String, RecordError> {
    let s = std::str::from_utf8(value).map_err(|_| err(field, "not UTF-8"))?;
    check_name(field, s)?;
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> EndpointRecord {
        EndpointRecord {
            sandbox: "web1".into(),
            aliases: vec!["www".into(), "front.example".into()],
            addrs: vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
            service: None,
        }
    }

    #[test]
    fn round_trips_and_lists_names_sandbox_first() {
        let r = web();
        let bytes = r.encode().unwrap();
        assert_eq!(bytes[0], 1, "version 1");
        assert_eq!(EndpointRecord::decode(&bytes), Ok(r.clone()));
        assert_eq!(r.names(), ["web1", "www", "front.example"]);
        let dup = EndpointRecord {
            aliases: vec!["web1".into(), "www".into(), "www".into()],
            ..r
        };
        assert_eq!(dup.names(), ["web1", "www"]);
        let bare = EndpointRecord {
            sandbox: "x".into(),
            aliases: vec![],
            addrs: vec![],
            service: None,
        };
        assert_eq!(EndpointRecord::decode(&bare.encode().unwrap()), Ok(bare));
    }

    #[test]
    fn unknown_fields_are_skipped_unknown_versions_refused() {
        let mut bytes = web().encode().unwrap();
        // A later writer's field (tag 9, three bytes) in the middle and at the end.
        let extra = [9u8, 0, 3, b'a', b'b', b'c'];
        bytes.splice(1..1, extra);
        bytes.extend_from_slice(&extra);
        assert_eq!(EndpointRecord::decode(&bytes), Ok(web()));
        let mut v2 = web().encode().unwrap();
        v2[0] = 2;
        assert_eq!(
            EndpointRecord::decode(&v2).unwrap_err().to_string(),
            "endpoint record: version: unknown"
        );
    }

    #[test]
    fn malformed_bytes_are_refused_naming_the_field() {
        let bytes = web().encode().unwrap();
        // A cut inside a field is refused; a cut between fields reads fewer names or
        // addresses (the gossip entry is whole or absent, never cut); none panics.
        for n in 0..bytes.len() {
            let _ = EndpointRecord::decode(&bytes[..n]);
        }
        assert_eq!(EndpointRecord::decode(&[]).unwrap_err().field, "version");
        assert_eq!(EndpointRecord::decode(&[1]).unwrap_err().field, "sandbox");
        assert_eq!(
            EndpointRecord::decode(&bytes[..bytes.len() - 1])
                .unwrap_err()
                .problem,
            "truncated value"
        );
        let cases: [(&[u8], &str, &str); 6] = [
            (&[1, 1, 0], "field", "truncated header"),
            (&[1, 1, 0, 0], "sandbox", "empty"),
            (&[1, 1, 0, 2, 0xff, 0xfe], "sandbox", "not UTF-8"),
            (&[1, 1, 0, 2, b'a', b' '], "sandbox", "not printable ASCII"),
            (&[1, 1, 0, 1, b'a', 1, 0, 1, b'b'], "sandbox", "given twice"),
            (
                &[1, 1, 0, 1, b'a', 3, 0, 3, 10, 0, 0],
                "address",
                "neither 4 nor 16 bytes",
            ),
        ];
        for (bytes, field, problem) in cases {
            let e = EndpointRecord::decode(bytes).unwrap_err();
            assert_eq!((e.field, e.problem), (field, problem), "{bytes:?}");
        }
        let mut long = vec![1, 1, 0, 254];
        long.extend(std::iter::repeat_n(b'a', 254));
        assert_eq!(
            EndpointRecord::decode(&long).unwrap_err().problem,
            "longer than 253 bytes"
        );
    }

    #[test]
    fn bounds_hold_on_both_sides() {
        let mut many = web();
        many.aliases = (0..MAX_NAMES).map(|i| format!("n{i}")).collect();
        assert_eq!(many.encode().unwrap_err().field, "name");
        many.aliases.truncate(MAX_NAMES - 1);
        let bytes = many.encode().unwrap();
        assert_eq!(
            EndpointRecord::decode(&bytes).unwrap().names().len(),
            MAX_NAMES
        );
        // One name more than a writer may send, forged: refused.
        let mut forged = bytes.clone();
        forged.extend_from_slice(&[TAG_NAME, 0, 1, b'z']);
        assert_eq!(EndpointRecord::decode(&forged).unwrap_err().field, "name");
        let mut addrs = web();
        addrs.addrs = vec!["10.0.0.1".parse().unwrap(); MAX_ADDRS + 1];
        assert_eq!(addrs.encode().unwrap_err().field, "address");
        let spaced = EndpointRecord {
            aliases: vec!["a b".into()],
            ..web()
        };
        assert_eq!(
            spaced.encode().unwrap_err().to_string(),
            "endpoint record: name: not printable ASCII"
        );
    }

    fn task() -> EndpointRecord {
        EndpointRecord {
            service: Some(ServiceRef {
                id: "5e".repeat(32),
                name: "websvc".into(),
            }),
            ..web()
        }
    }

    #[test]
    fn a_task_carries_its_service_and_old_readers_skip_it() {
        let r = task();
        let bytes = r.encode().unwrap();
        assert_eq!(EndpointRecord::decode(&bytes), Ok(r));
        // What a reader without tags 4 and 5 sees: the endpoint without its service.
        let mut old = vec![VERSION];
        let mut rest = &bytes[1..];
        while !rest.is_empty() {
            let (tag, value, tail) = split_field(rest).unwrap();
            if tag <= TAG_ADDR {
                field(&mut old, tag, value);
            }
            rest = tail;
        }
        assert_eq!(EndpointRecord::decode(&old), Ok(web()));
        assert_eq!(
            web().encode().unwrap(),
            old,
            "no service: the bytes of before"
        );
    }

    #[test]
    fn a_service_is_whole_or_refused() {
        let base = web().encode().unwrap();
        let with = |extra: &[(u8, &[u8])]| {
            let mut b = base.clone();
            for (tag, value) in extra {
                field(&mut b, *tag, value);
            }
            EndpointRecord::decode(&b).map_err(|e| (e.field, e.problem))
        };
        assert_eq!(
            with(&[(TAG_SERVICE_ID, b"s1")]),
            Err(("service name", "missing (an id is given)"))
        );
        assert_eq!(
            with(&[(TAG_SERVICE_NAME, b"websvc")]),
            Err(("service id", "missing (a name is given)"))
        );
        assert_eq!(
            with(&[
                (TAG_SERVICE_ID, b"s1"),
                (TAG_SERVICE_NAME, b"a"),
                (TAG_SERVICE_NAME, b"b")
            ]),
            Err(("service name", "given twice"))
        );
        assert_eq!(
            with(&[(TAG_SERVICE_ID, b"s1"), (TAG_SERVICE_NAME, b"a b")]),
            Err(("service name", "not printable ASCII"))
        );
        let bad = EndpointRecord {
            service: Some(ServiceRef {
                id: String::new(),
                name: "websvc".into(),
            }),
            ..web()
        };
        assert_eq!(bad.encode().unwrap_err().field, "service id");
        // Cut anywhere: never a panic.
        let bytes = task().encode().unwrap();
        for n in 0..bytes.len() {
            let _ = EndpointRecord::decode(&bytes[..n]);
        }
    }
}
