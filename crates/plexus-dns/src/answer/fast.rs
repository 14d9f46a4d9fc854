//! The common case without decoding: an `A` or `AAAA` query for a name the zone knows, with
//! at most an EDNS `OPT` record, answered by copying the query's header and question and
//! appending the records. Anything else — another type, a miss, an unusual byte in the name,
//! an answer that would not fit — returns `None` and takes the general path, which gives the
//! same answer for what both handle (the tests compare them).

use std::net::IpAddr;

use super::{Transport, EDNS_PAYLOAD};
use crate::wire::{self, HEADER_LEN, MAX_NAME_LEN};
use crate::zone::{SandboxView, Zone};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The question's name in lower case without the trailing dot, if it is plain (letters,
/// digits, `-`, `_`, no compression), and the offset just past it.
fn plain_name(b: &[u8]) -> Option<(String, usize)> {
    let mut at = HEADER_LEN;
    let mut name = String::with_capacity(32);
    loop {
        let len = *b.get(at)? as usize;
        if len == 0 {
            return Some((name, at + 1));
        }
        if len > 63 || at + 1 + len - HEADER_LEN > MAX_NAME_LEN {
            return None;
        }
        let label = b.get(at + 1..at + 1 + len)?;
        if !label
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|c| c.to_ascii_lowercase() as char));
        at += 1 + len;
    }
}

/// The client's EDNS payload size if the rest of the message is exactly one plain `OPT`
/// record of version 0 (options, such as a cookie, are allowed and ignored).
fn opt_payload(b: &[u8], at: usize) -> Option<u16> {
    // Root name, type, class (= payload size), TTL (ext. rcode, version, flags), rdlength.
    if *b.get(at)? != 0 || u16_at(b, at + 1)? != TYPE_OPT {
        return None;
    }
    let payload = u16_at(b, at + 3)?;
    let version = *b.get(at + 6)?;
    let rdlen = u16_at(b, at + 9)? as usize;
    (version == 0 && at + 11 + rdlen == b.len()).then_some(payload)
}

/// The answer, or `None` for the general path.
pub(super) fn answer(
    b: &[u8],
    transport: Transport,
    zone: &Zone,
    view: &SandboxView,
    shuffle: &mut impl FnMut(usize) -> usize,
) -> Option<Vec<u8>> {
    // A query (QR 0), opcode QUERY, one question, no answers or authority, one additional
    // record at most.
    if b.len() < HEADER_LEN || b[2] & 0xf8 != 0 {
        return None;
    }
    let (qd, an, ns, ar) = (u16_at(b, 4)?, u16_at(b, 6)?, u16_at(b, 8)?, u16_at(b, 10)?);
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let (name, at) = plain_name(b)?;
    let qtype = u16_at(b, at)?;
    if u16_at(b, at + 2)? != CLASS_IN || !(qtype == TYPE_A || qtype == TYPE_AAAA) {
        return None;
    }
    let question_end = at + 4;
    let client_payload = match ar {
        0 if question_end == b.len() => None,
        1 => Some(opt_payload(b, question_end)?),
        _ => return None,
    };
    let (addrs, ttl) = zone.lookup(view, &name)?;
    let mut picked: Vec<IpAddr> = addrs
        .iter()
        .filter(|a| a.is_ipv4() == (qtype == TYPE_A))
        .copied()
        .collect();
    for i in (1..picked.len()).rev() {
        let j = shuffle(i + 1);
        picked.swap(i, j);
    }
    let max = match (transport, client_payload) {
        (Transport::Tcp, _) => u16::MAX as usize,
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(p)) => p.clamp(512, EDNS_PAYLOAD) as usize,
    };
    let rdlen = if qtype == TYPE_A { 4 } else { 16 };
    let size = question_end + picked.len() * (12 + rdlen) + client_payload.map_or(0, |_| 11);
    if size > max {
        return None;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&b[..question_end]);
    // QR, AA, RD as asked; RA; CD as asked; rcode NOERROR.
    out[2] = 0x80 | 0x04 | (b[2] & 0x01);
    out[3] = 0x80 | (b[3] & 0x10);
    let count = u16::try_from(picked.len()).ok()?;
    out[6..8].copy_from_slice(&count.to_be_bytes());
    out[8..10].copy_from_slice(&[0, 0]);
    out[10..12].copy_from_slice(&[0, u8::from(client_payload.is_some())]);
    for a in picked {
        out.extend_from_slice(&[0xc0, HEADER_LEN as u8]);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        match a {
            IpAddr::V4(v4) => {
                out.extend_from_slice(&4u16.to_be_bytes());
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.extend_from_slice(&16u16.to_be_bytes());
                out.extend_from_slice(&v6.octets());
            }
        }
    }
    if client_payload.is_some() {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    debug_assert_eq!(wire::question(&out), wire::question(b));
    Some(out)
}
