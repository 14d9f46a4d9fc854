//! Answering one query: plain functions from the bytes a client sent (and what the zone
//! holds) to what to do — reply with these bytes, forward, or drop — with no I/O.
//!
//! What is answered here, as Docker's embedded DNS does: `A`, `AAAA` and `PTR` for the
//! names of the networks the asking sandbox is on (sandbox names, aliases, services and
//! `tasks.SERVICE`, `NAME.NETWORK`),
//! case-insensitively, with several addresses shuffled. A name the zone knows but that has
//! no record of the asked type gets an empty answer, never a forward. A miss is forwarded
//! when the sandbox may forward (some network of its is not internal), otherwise it is a
//! `SERVFAIL`. Bad input gets the code RFC 1035 and 6891 give it: `FORMERR` for what does
//! not decode, `NOTIMP` for other opcodes, `BADVERS` for EDNS versions above 0, `REFUSED`
//! for classes other than `IN` and for zone transfers; a message without even a header,
//! or a response, is dropped.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::names;
use crate::wire;

mod fast;
use crate::zone::{SandboxView, Zone};

/// The transport a query came over: it bounds the answer's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: 512 bytes, or the client's EDNS size.
    Udp,
    /// TCP: up to 65,535 bytes.
    Tcp,
}

/// The EDNS payload size Plexus advertises and accepts at most over UDP.
pub const EDNS_PAYLOAD: u16 = 1232;

/// Why a message got no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than a header: no id to answer with.
    NoHeader,
    /// A response, not a query (answering it could loop).
    Response,
}

/// A query that is not the resolver's to answer.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The decoded query.
    pub query: Message,
    /// The cache key of its question.
    pub key: CacheKey,
    /// The most the client takes in one answer.
    pub max_size: usize,
}

/// What to do with a query.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Forward it upstream.
    Forward(Box<Forward>),
    /// Send nothing.
    Drop(DropReason),
}

/// What a forwarded answer is cached under: the question in lower case and the flags that
/// change an upstream's answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The name, lower case, with its trailing dot.
    pub name: String,
    /// The type.
    pub qtype: u16,
    /// The class.
    pub qclass: u16,
    /// DNSSEC OK and Checking Disabled.
    pub dnssec: (bool, bool),
}

/// The answer-size limit for a query over `transport`.
pub fn max_size(query: &Message, transport: Transport) -> usize {
    match transport {
        Transport::Tcp => u16::MAX as usize,
        Transport::Udp => match query.extensions() {
            Some(e) => e.max_payload().clamp(512, EDNS_PAYLOAD) as usize,
            None => 512,
        },
    }
}

/// Decodes a query and checks what every path needs: a header, a query, one question, a
/// known opcode and EDNS version. `Err` is what to do instead of answering.
pub fn decode(bytes: &[u8]) -> Result<Message, Outcome> {
    if bytes.len() < wire::HEADER_LEN {
        return Err(Outcome::Drop(DropReason::NoHeader));
    }
    if wire::is_response(bytes) {
        return Err(Outcome::Drop(DropReason::Response));
    }
    // Before decoding: hickory reserves room for as many entries as the header claims.
    if !wire::counts_fit(bytes) {
        return Err(bare(bytes, ResponseCode::FormErr));
    }
    let msg = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) => return Err(bare(bytes, ResponseCode::FormErr)),
    };
    if msg.op_code() != OpCode::Query {
        return Err(Outcome::Reply(error(&msg, ResponseCode::NotImp)));
    }
    if msg.queries().len() != 1 {
        return Err(Outcome::Reply(error(&msg, ResponseCode::FormErr)));
    }
    if msg.extensions().as_ref().is_some_and(|e| e.version() > 0) {
        return Err(Outcome::Reply(error(&msg, ResponseCode::BADVERS)));
    }
    Ok(msg)
}

fn bare(bytes: &[u8], rcode: ResponseCode) -> Outcome {
    match wire::bare_error(bytes, u16::from(rcode) as u8) {
        Some(b) => Outcome::Reply(b),
        None => Outcome::Drop(DropReason::NoHeader),
    }
}

/// A response to `query` with its id, question, `RD` and EDNS, and no records.
pub fn response(query: &Message, rcode: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_checking_disabled(query.checking_disabled())
        .set_response_code(rcode);
    m.add_queries(query.queries().iter().cloned());
    if query.extensions().is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        m.set_edns(e);
    }
    m
}

/// An error answer to `query`, encoded.
pub fn error(query: &Message, rcode: ResponseCode) -> Vec<u8> {
    encode(&response(query, rcode), 512)
}

/// Encodes `m` within `max` bytes: what does not fit is left out and `TC` set, so the
/// client asks again over TCP. Records go first, then (a query may hold many questions, and
/// an error echoes them all) the questions: the header alone always fits.
pub fn encode(m: &Message, max: usize) -> Vec<u8> {
    if let Ok(b) = m.to_vec() {
        if b.len() <= max {
            return b;
        }
    }
    if let Ok(b) = m.truncate().to_vec() {
        if b.len() <= max {
            return b;
        }
    }
    let mut header_only = Message::new();
    header_only.set_header(*m.header());
    header_only.set_truncated(true);
    header_only.to_vec().unwrap_or_default()
}

/// The cache key of a query's question.
pub fn cache_key(query: &Message, q: &Query) -> CacheKey {
    let dnssec_ok = query
        .extensions()
        .as_ref()
        .is_some_and(|e| e.flags().dnssec_ok);
    CacheKey {
        name: q.name().to_lowercase().to_ascii(),
        qtype: u16::from(q.query_type()),
        qclass: u16::from(q.query_class()),
        dnssec: (dnssec_ok, query.checking_disabled()),
    }
}

/// Answers a query from a sandbox: from the zone, or says to forward it.
pub fn answer(
    bytes: &[u8],
    transport: Transport,
    zone: &Zone,
    view: &SandboxView,
    shuffle: &mut impl FnMut(usize) -> usize,
) -> Outcome {
    match fast::answer(bytes, transport, zone, view, shuffle) {
        Some(reply) => Outcome::Reply(reply),
        None => general(bytes, transport, zone, view, shuffle),
    }
}

/// [`answer`] for every query, by decoding it.
fn general(
    bytes: &[u8],
    transport: Transport,
    zone: &Zone,
    view: &SandboxView,
    shuffle: &mut impl FnMut(usize) -> usize,
) -> Outcome {
    let query = match decode(bytes) {
        Ok(m) => m,
        Err(o) => return o,
    };
    let max = max_size(&query, transport);
    let Some(q) = query.queries().first() else {
        return Outcome::Reply(error(&query, ResponseCode::FormErr));
    };
    if q.query_class() != DNSClass::IN {
        return Outcome::Reply(error(&query, ResponseCode::Refused));
    }
    let qtype = q.query_type();
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        return Outcome::Reply(error(&query, ResponseCode::Refused));
    }
    if qtype == RecordType::OPT {
        return Outcome::Reply(error(&query, ResponseCode::FormErr));
    }
    let name = names::key(q.name());
    let local = if qtype == RecordType::PTR {
        names::reverse_addr(q.name()).and_then(|addr| {
            zone.reverse(view, addr).map(|(names, ttl)| {
                names
                    .iter()
                    .filter_map(|n| Name::from_ascii(format!("{n}.")).ok())
                    .map(|n| Record::from_rdata(q.name().clone(), ttl, RData::PTR(PTR(n))))
                    .collect::<Vec<_>>()
            })
        })
    } else {
        zone.lookup(view, &name)
            .map(|(addrs, ttl)| address_records(q.name(), &addrs, ttl, qtype, shuffle))
    };
    if let Some(records) = local {
        let mut m = response(&query, ResponseCode::NoError);
        m.set_authoritative(true);
        m.insert_answers(records);
        return Outcome::Reply(encode(&m, max));
    }
    let single_label = !name.contains('.');
    if single_label && view.ndots_set && matches!(qtype, RecordType::A | RecordType::AAAA) {
        return Outcome::Reply(encode(&response(&query, ResponseCode::NoError), max));
    }
    if !view.forward {
        return Outcome::Reply(error(&query, ResponseCode::ServFail));
    }
    let key = cache_key(&query, q);
    Outcome::Forward(Box::new(Forward {
        query,
        key,
        max_size: max,
    }))
}

/// `A`/`AAAA` records of `addrs` for the asked type (both for `ANY`), shuffled; other types
/// get none (an empty answer: the name exists).
fn address_records(
    name: &Name,
    addrs: &[IpAddr],
    ttl: u32,
    qtype: RecordType,
    shuffle: &mut impl FnMut(usize) -> usize,
) -> Vec<Record> {
    let mut out: Vec<Record> = addrs
        .iter()
        .filter_map(|a| match (a, qtype) {
            (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
            (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(*v6))),
            _ => None,
        })
        .map(|rd| Record::from_rdata(name.clone(), ttl, rd))
        .collect();
    // Fisher–Yates.
    for i in (1..out.len()).rev() {
        let j = shuffle(i + 1);
        out.swap(i, j);
    }
    out
}

/// Answers a query on the host's listener: `NAME.NETWORK.DOMAIN` for every network, with no
/// forwarding (`REFUSED` outside `domain`, `NXDOMAIN` for a miss inside it).
pub fn answer_host(
    bytes: &[u8],
    transport: Transport,
    zone: &Zone,
    domain: &str,
    shuffle: &mut impl FnMut(usize) -> usize,
) -> Outcome {
    let query = match decode(bytes) {
        Ok(m) => m,
        Err(o) => return o,
    };
    let max = max_size(&query, transport);
    let Some(q) = query.queries().first() else {
        return Outcome::Reply(error(&query, ResponseCode::FormErr));
    };
    let name = names::key(q.name());
    let Some(inner) = names::strip_domain(&name, domain) else {
        return Outcome::Reply(error(&query, ResponseCode::Refused));
    };
    if q.query_class() != DNSClass::IN {
        return Outcome::Reply(error(&query, ResponseCode::Refused));
    }
    match zone.lookup_any(inner) {
        Some((addrs, ttl)) => {
            let mut m = response(&query, ResponseCode::NoError);
            m.set_authoritative(true);
            m.insert_answers(address_records(
                q.name(),
                &addrs,
                ttl,
                q.query_type(),
                shuffle,
            ));
            Outcome::Reply(encode(&m, max))
        }
        None => {
            let mut m = response(&query, ResponseCode::NXDomain);
            m.set_authoritative(true);
            Outcome::Reply(encode(&m, max))
        }
    }
}

#[cfg(test)]
mod tests;
