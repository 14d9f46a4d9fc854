//! What hosts tell each other about services, through gossip (untrusted bytes): the
//! [`TaskRecord`] of each service task ([`SERVICE_TABLE`]) and the [`GatewayRecord`] of each
//! host's ingress sandbox ([`INGRESS_TABLE`], for the routing mesh).
//!
//! A task record is what a host tells the other hosts of a global network about one of its
//! service tasks there, so that their sandboxes' VIPs load-balance to it (libnetwork's `service_table`
//! entry, its `EndpointRecord` with a service): the service's id and name, its VIPs on the
//! network, the task's IPv4 address there, the task's sandbox name. plexusd publishes one per
//! task endpoint in the network's [`SERVICE_TABLE`], keyed by the endpoint's id.
//!
//! The bytes come from other hosts, so reading them is strict and bounded. Version 1: the
//! byte `1`, then fields, each a tag (1 byte), a length (2 bytes, big-endian) and that many
//! bytes:
//!
//! | tag | field | |
//! |---|---|---|
//! | 1 | the service's id | 1 to 64 lowercase hex digits, exactly once |
//! | 2 | the service's name | printable ASCII, exactly once |
//! | 3 | a VIP of the service on the network | 4 bytes, 0 to [`MAX_VIPS`] |
//! | 4 | the task's address on the network | 4 bytes, exactly once |
//! | 5 | the task's sandbox name | printable ASCII, exactly once |
//!
//! A reader skips tags it does not know, so a writer may add fields (IPv6, say) without a new
//! version; a change old readers would misread takes a new version, which they refuse. Names
//! are 1 to [`MAX_NAME_LEN`] bytes of printable ASCII without spaces; a whole record is at
//! most [`MAX_RECORD_LEN`] bytes. (libnetwork's record is protobuf; this follows the
//! `endpoint_table` record's encoding instead, one reader for both kinds of untrusted input.)

use std::net::Ipv4Addr;

/// The table service tasks are published in, per network (libnetwork's name).
pub const SERVICE_TABLE: &str = "service_table";

/// The longest name, in bytes.
pub const MAX_NAME_LEN: usize = 253;
/// The longest service id (64 hex digits).
pub const MAX_ID_LEN: usize = 64;
/// The most VIPs one record may carry.
pub const MAX_VIPS: usize = 8;
/// The longest record, in bytes.
pub const MAX_RECORD_LEN: usize = 2048;

const VERSION: u8 = 1;
const TAG_SERVICE_ID: u8 = 1;
const TAG_SERVICE_NAME: u8 = 2;
const TAG_VIP: u8 = 3;
const TAG_ADDR: u8 = 4;
const TAG_SANDBOX: u8 = 5;

/// One task of another host on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRecord {
    /// The service's id.
    pub service_id: String,
    /// The service's name (for logs).
    pub service_name: String,
    /// The service's VIPs on the network, as the publishing host knows them.
    pub vips: Vec<Ipv4Addr>,
    /// The task's address on the network: the backend.
    pub addr: Ipv4Addr,
    /// The task's sandbox name (for logs).
    pub sandbox: String,
}

/// A record that is not one this version writes or reads, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// The field (`version`, `service id`, `service name`, `vip`, `address`, `sandbox`,
    /// `field`, `record`).
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "service record: {}: {}", self.field, self.problem)
    }
}

impl std::error::Error for RecordError {}

fn err(field: &'static str, problem: &'static str) -> RecordError {
    RecordError { field, problem }
}

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

fn check_id(id: &str) -> Result<(), RecordError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(err("service id", "not 1 to 64 characters"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(err("service id", "not lowercase hex"));
    }
    Ok(())
}

impl TaskRecord {
    /// The record's bytes; refused (naming the field) if a reader would refuse them.
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        check_id(&self.service_id)?;
        check_name("service name", &self.service_name)?;
        check_name("sandbox", &self.sandbox)?;
        if self.vips.len() > MAX_VIPS {
            return Err(err("vip", "too many"));
        }
        let mut out = Vec::with_capacity(128);
        out.push(VERSION);
        field(&mut out, TAG_SERVICE_ID, self.service_id.as_bytes());
        field(&mut out, TAG_SERVICE_NAME, self.service_name.as_bytes());
        for v in &self.vips {
            field(&mut out, TAG_VIP, &v.octets());
        }
        field(&mut out, TAG_ADDR, &self.addr.octets());
        field(&mut out, TAG_SANDBOX, self.sandbox.as_bytes());
        Ok(out)
    }

    /// Reads a record (bytes off the network: anything malformed is an error, never a panic).
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(err("record", "longer than 2048 bytes"));
        }
        let (&version, mut rest) = bytes
            .split_first()
            .ok_or_else(|| err("version", "missing"))?;
        if version != VERSION {
            return Err(err("version", "unknown"));
        }
        let (mut id, mut name, mut addr, mut sandbox) = (None, None, None, None);
        let mut vips = Vec::new();
        fn once<T>(slot: &mut Option<T>, f: &'static str, v: T) -> Result<(), RecordError> {
            if slot.is_some() {
                return Err(err(f, "given twice"));
            }
            *slot = Some(v);
            Ok(())
        }
        while !rest.is_empty() {
            let (tag, value, tail) = split_field(rest)?;
            rest = tail;
            match tag {
                TAG_SERVICE_ID => {
                    let s = utf8("service id", value)?;
                    check_id(&s)?;
                    once(&mut id, "service id", s)?;
                }
                TAG_SERVICE_NAME => once(&mut name, "service name", text("service name", value)?)?,
                TAG_VIP => {
                    if vips.len() >= MAX_VIPS {
                        return Err(err("vip", "too many"));
                    }
                    vips.push(v4("vip", value)?);
                }
                TAG_ADDR => once(&mut addr, "address", v4("address", value)?)?,
                TAG_SANDBOX => once(&mut sandbox, "sandbox", text("sandbox", value)?)?,
                // A field of a later writer: skipped.
                _ => {}
            }
        }
        Ok(TaskRecord {
            service_id: id.ok_or_else(|| err("service id", "missing"))?,
            service_name: name.ok_or_else(|| err("service name", "missing"))?,
            vips,
            addr: addr.ok_or_else(|| err("address", "missing"))?,
            sandbox: sandbox.ok_or_else(|| err("sandbox", "missing"))?,
        })
    }
}

fn field(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    // Values are checked names and ids and addresses: the length always fits.
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

fn utf8(field: &'static str, value: &[u8]) -> Result<String, RecordError> {
    std::str::from_utf8(value)
        .map(str::to_string)
        .map_err(|_| err(field, "not UTF-8"))
}

fn text(field: &'static str, value: &[u8]) -> Result<String, RecordError> {
    let s = utf8(field, value)?;
    check_name(field, &s)?;
    Ok(s)
}

fn v4(field: &'static str, value: &[u8]) -> Result<Ipv4Addr, RecordError> {
    <[u8; 4]>::try_from(value)
        .map(Ipv4Addr::from)
        .map_err(|_| err(field, "not 4 bytes"))
}

/// The table each host's ingress sandbox is published in, on the ingress network, keyed
/// by the host's id: the gateway the routing mesh's replies go back to.
pub const INGRESS_TABLE: &str = "ingress_table";

/// A host's ingress sandbox on the ingress network: [`INGRESS_TABLE`]'s value. Version 1
/// is exactly 11 bytes: the byte `1`, the IPv4 address (4 bytes), the MAC address (6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayRecord {
    /// Its address on the ingress network.
    pub addr: Ipv4Addr,
    /// Its MAC address there.
    pub mac: [u8; 6],
}

impl GatewayRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(11);
        out.push(VERSION);
        out.extend_from_slice(&self.addr.octets());
        out.extend_from_slice(&self.mac);
        out
    }

    /// Reads a record from another host.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let Some((&version, rest)) = bytes.split_first() else {
            return Err(err("record", "empty"));
        };
        if version != VERSION {
            return Err(err("version", "not 1"));
        }
        if rest.len() != 10 {
            return Err(err("record", "an ingress gateway record is 11 bytes"));
        }
        let addr = v4("address", &rest[..4])?;
        let mac = <[u8; 6]>::try_from(&rest[4..]).map_err(|_| err("mac", "not 6 bytes"))?;
        if mac[0] & 1 == 1 || mac == [0; 6] {
            return Err(err("mac", "not a unicast address"));
        }
        if addr.is_unspecified() || addr.is_broadcast() || addr.is_multicast() {
            return Err(err("address", "not a unicast address"));
        }
        Ok(Self { addr, mac })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_records_round_trip_and_garbage_is_refused() {
        let g = GatewayRecord {
            addr: Ipv4Addr::new(10, 0, 0, 3),
            mac: [2, 0x42, 10, 0, 0, 3],
        };
        assert_eq!(GatewayRecord::decode(&g.encode()), Ok(g));
        let b = g.encode();
        for cut in 0..b.len() {
            assert!(GatewayRecord::decode(&b[..cut]).is_err());
        }
        let mut long = b.clone();
        long.push(0);
        assert!(GatewayRecord::decode(&long).is_err());
        let mut v2 = b.clone();
        v2[0] = 2;
        assert_eq!(GatewayRecord::decode(&v2).unwrap_err().field, "version");
        let mut multicast = b.clone();
        multicast[5] = 1;
        assert_eq!(GatewayRecord::decode(&multicast).unwrap_err().field, "mac");
        let mut zero = b;
        zero[1..5].copy_from_slice(&[0; 4]);
        assert_eq!(GatewayRecord::decode(&zero).unwrap_err().field, "address");
    }

    fn web() -> TaskRecord {
        TaskRecord {
            service_id: "0123456789abcdef".repeat(4),
            service_name: "web".into(),
            vips: vec![Ipv4Addr::new(10, 0, 0, 2)],
            addr: Ipv4Addr::new(10, 0, 0, 7),
            sandbox: "web-1".into(),
        }
    }

    #[test]
    fn round_trip() {
        let r = web();
        assert_eq!(TaskRecord::decode(&r.encode().unwrap()).unwrap(), r);
        let none = TaskRecord {
            vips: vec![],
            ..web()
        };
        assert_eq!(TaskRecord::decode(&none.encode().unwrap()).unwrap(), none);
    }

    #[test]
    fn every_cut_of_a_record_is_refused_or_read_without_panic() {
        let bytes = web().encode().unwrap();
        for n in 0..bytes.len() {
            assert!(TaskRecord::decode(&bytes[..n]).is_err(), "cut at {n}");
        }
        // Every single byte flipped: an error or a record, never a panic.
        for i in 0..bytes.len() {
            for b in [0u8, 1, 0x7f, 0xff] {
                let mut m = bytes.clone();
                m[i] = b;
                let _ = TaskRecord::decode(&m);
            }
        }
    }

    #[test]
    fn garbage_and_bad_fields_are_refused_naming_the_field() {
        let e = |b: &[u8]| TaskRecord::decode(b).unwrap_err().field;
        assert_eq!(e(&[]), "version");
        assert_eq!(e(&[2]), "version");
        assert_eq!(e(&[1, 1]), "field");
        assert_eq!(e(&[1, 1, 0, 5, b'a']), "field");
        assert_eq!(e(&[1]), "service id");
        assert_eq!(e(&[1, 1, 0, 1, b'G']), "service id");
        assert_eq!(e(&[1, 3, 0, 3, 1, 2, 3]), "vip");
        assert_eq!(
            e(&[1, 4, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            "address"
        );
        assert_eq!(e(&[1, 5, 0, 2, b'a', b' ']), "sandbox");
        assert_eq!(e(&[1, 5, 0, 2, 0xc3, 0x28]), "sandbox");
        assert_eq!(e(&vec![1; MAX_RECORD_LEN + 1]), "record");
        // A field twice.
        let mut twice = web().encode().unwrap();
        twice.extend_from_slice(&[TAG_ADDR, 0, 4, 1, 2, 3, 4]);
        assert_eq!(e(&twice), "address");
        // Too many VIPs.
        let mut many = web().encode().unwrap();
        for _ in 0..MAX_VIPS {
            many.extend_from_slice(&[TAG_VIP, 0, 4, 1, 2, 3, 4]);
        }
        assert_eq!(e(&many), "vip");
        // An unknown field is skipped.
        let mut later = web().encode().unwrap();
        later.extend_from_slice(&[99, 0, 2, 7, 7]);
        assert_eq!(TaskRecord::decode(&later).unwrap(), web());
        // What a reader would refuse is not written.
        let bad = TaskRecord {
            sandbox: String::new(),
            ..web()
        };
        assert_eq!(bad.encode().unwrap_err().field, "sandbox");
        let bad = TaskRecord {
            service_id: "X".into(),
            ..web()
        };
        assert_eq!(bad.encode().unwrap_err().field, "service id");
    }
}
