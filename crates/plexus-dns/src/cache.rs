//! Forwarded answers, kept for as long as their TTLs say (capped), bounded in entries with
//! the least recently used going first.
//!
//! An entry is the upstream's answer as bytes, plus where its TTLs sit: a hit copies the
//! bytes, lowers the TTLs by the time spent in the cache and puts the client's id and
//! question in — no decoding on the hot path. The bytes kept are the answer as hickory
//! encodes it, not as received: an upstream's compression pointers may aim at the header or
//! at a TTL, bytes every hit rewrites, and such an answer would be served as something else,
//! or as nothing a client can decode. Negative answers (`NXDOMAIN`, and `NOERROR`
//! with no answer) are kept for the SOA's negative TTL (RFC 2308); failures (`SERVFAIL`,
//! `REFUSED`, …) and truncated answers are not kept.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;
use lru::LruCache;

use crate::answer::CacheKey;
use crate::wire;

/// Limits of a [`Cache`].
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Entries at most.
    pub capacity: usize,
    /// The longest a positive answer is kept, whatever its TTL.
    pub max_ttl: Duration,
    /// The longest a negative answer is kept.
    pub max_negative_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: 10_000,
            max_ttl: Duration::from_secs(3600),
            max_negative_ttl: Duration::from_secs(300),
        }
    }
}

#[derive(Debug)]
struct Entry {
    bytes: Vec<u8>,
    ttl_offsets: Vec<usize>,
    stored: Instant,
    expires: Instant,
}

/// What a cache lookup is keyed by: the set of upstreams (answers may differ between them)
/// and the question.
pub type Key = (u64, CacheKey);

/// The cache of forwarded answers.
#[derive(Debug)]
pub struct Cache {
    entries: LruCache<Key, Entry>,
    config: CacheConfig,
}

impl Cache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        let cap = NonZeroUsize::new(config.capacity).unwrap_or(NonZeroUsize::MIN);
        Cache {
            entries: LruCache::new(cap),
            config,
        }
    }

    /// How many entries it holds (expired ones included until looked up).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The answer to `query` (the client's bytes) from the cache: the stored answer with
    /// TTLs aged, the client's id and question; `None` on a miss or an expired entry.
    pub fn get(&mut self, key: &Key, query: &[u8], now: Instant) -> Option<Vec<u8>> {
        let entry = self.entries.get(key)?;
        if now >= entry.expires {
            self.entries.pop(key);
            return None;
        }
        let mut out = entry.bytes.clone();
        let elapsed = now.saturating_duration_since(entry.stored).as_secs();
        wire::age(
            &mut out,
            &entry.ttl_offsets,
            u32::try_from(elapsed).unwrap_or(u32::MAX),
        );
        if let Some(id) = wire::id(query) {
            wire::set_id(&mut out, id);
        }
        // The client's spelling of the name (0x20 case randomisation), when it is the same
        // name byte for byte but for case: the stored question, our encoding, holds no
        // pointer, so neither does the copy.
        if let (Some(q), Some(a)) = (wire::question(query), wire::question(&out)) {
            if q == a && query[q.clone()].eq_ignore_ascii_case(&out[a.clone()]) {
                out[a].copy_from_slice(&query[q]);
            }
        }
        Some(out)
    }

    /// Keeps `answer` (an upstream's bytes) under `key` if it may be kept; returns whether
    /// it was.
    pub fn insert(&mut self, key: Key, answer: &[u8], now: Instant) -> bool {
        let Some((msg, ttl)) = self.keep_for(answer) else {
            return false;
        };
        // Our own encoding (see the module's doc): its pointers aim only at names.
        let Ok(bytes) = msg.to_vec() else {
            return false;
        };
        let Some(ttl_offsets) = wire::ttl_offsets(&bytes) else {
            return false;
        };
        self.entries.put(
            key,
            Entry {
                bytes,
                ttl_offsets,
                stored: now,
                expires: now + ttl,
            },
        );
        true
    }

    /// `answer` decoded, and how long it may be kept; `None` if it may not be.
    fn keep_for(&self, answer: &[u8]) -> Option<(Message, Duration)> {
        // Counts checked before decoding: hickory reserves room for as many records as the
        // header claims.
        if wire::is_truncated(answer) || !wire::counts_fit(answer) {
            return None;
        }
        let msg = Message::from_vec(answer).ok()?;
        let negative = match msg.response_code() {
            ResponseCode::NXDomain => true,
            ResponseCode::NoError => msg.answers().is_empty(),
            _ => return None,
        };
        let secs = if negative {
            // RFC 2308 §5: the lesser of the SOA record's TTL and its MINIMUM field.
            let soa = msg.name_servers().iter().find_map(|r| match r.data() {
                RData::SOA(soa) => Some(r.ttl().min(soa.minimum())),
                _ => None,
            })?;
            Duration::from_secs(u64::from(soa)).min(self.config.max_negative_ttl)
        } else {
            let ttl = msg.answers().iter().map(|r| r.ttl()).min()?;
            Duration::from_secs(u64::from(ttl)).min(self.config.max_ttl)
        };
        (!secs.is_zero()).then_some((msg, secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{MessageType, Query};
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, Record, RecordType};

    fn key(name: &str) -> Key {
        (
            1,
            CacheKey {
                name: name.into(),
                qtype: 1,
                qclass: 1,
                dnssec: (false, false),
            },
        )
    }

    fn query(id: u16, name: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    fn answer(name: &str, rcode: ResponseCode, ttl: Option<u32>, soa: Option<u32>) -> Vec<u8> {
        let n = Name::from_ascii(name).unwrap();
        let mut m = Message::new();
        m.set_id(99).set_message_type(MessageType::Response);
        m.set_response_code(rcode);
        m.add_query(Query::query(n.clone(), RecordType::A));
        if let Some(ttl) = ttl {
            m.add_answer(Record::from_rdata(
                n.clone(),
                ttl,
                RData::A(A::new(10, 0, 0, 1)),
            ));
        }
        if let Some(min) = soa {
            let soa = SOA::new(n.clone(), n.clone(), 1, 60, 60, 60, min);
            m.add_name_server(Record::from_rdata(n, 600, RData::SOA(soa)));
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn hit_ages_ttl_and_takes_client_id_and_case() {
        let mut c = Cache::new(CacheConfig::default());
        let t0 = Instant::now();
        assert!(c.insert(
            key("example.com."),
            &answer("example.com.", ResponseCode::NoError, Some(60), None),
            t0
        ));
        let q = query(7, "ExAmple.COM.");
        let hit = c
            .get(&key("example.com."), &q, t0 + Duration::from_secs(20))
            .unwrap();
        let m = Message::from_vec(&hit).unwrap();
        assert_eq!(m.id(), 7);
        assert_eq!(m.answers()[0].ttl(), 40);
        assert_eq!(m.queries()[0].name().to_ascii(), "ExAmple.COM.");
        assert!(c
            .get(&key("example.com."), &q, t0 + Duration::from_secs(61))
            .is_none());
        assert!(c.is_empty(), "expired entries go on lookup");
    }

    #[test]
    fn negative_answers_follow_soa_and_failures_are_not_kept() {
        let mut c = Cache::new(CacheConfig::default());
        let t0 = Instant::now();
        let nx = answer("nx.example.", ResponseCode::NXDomain, None, Some(30));
        assert!(c.insert(key("nx.example."), &nx, t0));
        let q = query(1, "nx.example.");
        assert!(c
            .get(&key("nx.example."), &q, t0 + Duration::from_secs(29))
            .is_some());
        assert!(c
            .get(&key("nx.example."), &q, t0 + Duration::from_secs(30))
            .is_none());
        let no_soa = answer("nx.example.", ResponseCode::NXDomain, None, None);
        assert!(!c.insert(key("nx.example."), &no_soa, t0));
        let fail = answer("x.", ResponseCode::ServFail, None, None);
        assert!(!c.insert(key("x."), &fail, t0));
        let zero = answer("z.", ResponseCode::NoError, Some(0), None);
        assert!(!c.insert(key("z."), &zero, t0));
        let mut tc = answer("t.", ResponseCode::NoError, Some(60), None);
        tc[2] |= 0x02;
        assert!(!c.insert(key("t."), &tc, t0));
        assert!(!c.insert(key("g."), b"garbage", t0));
        let mut lying = answer("l.", ResponseCode::NoError, Some(60), None);
        lying[6..8].copy_from_slice(&[0xff, 0xff]);
        assert!(
            !c.insert(key("l."), &lying, t0),
            "answer counts beyond its size"
        );
    }

    /// Found by the fuzz target `dns_packet`: an answer whose OPT record's owner name is a
    /// pointer to offset 0, the id, which read as a root label (id 0x001e). Kept as
    /// received, the hit with the client's id (0xbeef) no longer decoded.
    #[test]
    fn pointers_into_the_header_do_not_survive_a_hit() {
        let mut answer = vec![0x00, 0x1e, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 1];
        answer.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        // example.com. A, TTL 0x003c0004, empty data.
        answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0x3c, 0, 4, 0, 0]);
        // Owner name: a pointer to offset 0; type 0x0204, class 0, TTL, no data.
        answer.extend_from_slice(&[0xc0, 0, 2, 4, 0, 0, 0x29, 4, 0xd0, 0, 0, 0]);
        assert!(Message::from_vec(&answer).is_ok());
        let mut c = Cache::new(CacheConfig::default());
        let t0 = Instant::now();
        assert!(c.insert(key("example.com."), &answer, t0));
        let hit = c
            .get(&key("example.com."), &query(0xbeef, "example.com."), t0)
            .unwrap();
        let m = Message::from_vec(&hit).unwrap();
        assert_eq!(m.id(), 0xbeef);
        assert_eq!(m.answers().len(), 1);
        assert_eq!(m.additionals().len(), 1);
        assert!(m.additionals()[0].name().is_root());
    }

    #[test]
    fn a_compressed_client_question_is_not_copied_in() {
        let mut c = Cache::new(CacheConfig::default());
        let t0 = Instant::now();
        let a = answer("abc.", ResponseCode::NoError, Some(60), None);
        assert!(c.insert(key("abc."), &a, t0));
        // As long as the stored "\x03abc\x00" but not that name: "\x02AB" then a pointer
        // to offset 4 (the question count's high byte, 0: the root). Copied in, the hit
        // would ask for "AB." pointing into its own header.
        let mut q = vec![0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&[2, b'A', b'B', 0xc0, 4, 0, 1, 0, 1]);
        let hit = c.get(&key("abc."), &q, t0).unwrap();
        let m = Message::from_vec(&hit).unwrap();
        assert_eq!(m.id(), 9);
        assert_eq!(m.queries()[0].name().to_ascii(), "abc.");
    }

    #[test]
    fn bounded_least_recently_used_first() {
        let mut c = Cache::new(CacheConfig {
            capacity: 2,
            ..CacheConfig::default()
        });
        let t0 = Instant::now();
        for n in ["a.", "b.", "c."] {
            c.insert(
                key(n),
                &answer(n, ResponseCode::NoError, Some(60), None),
                t0,
            );
        }
        assert_eq!(c.len(), 2);
        assert!(c.get(&key("a."), &query(1, "a."), t0).is_none());
        assert!(c.get(&key("c."), &query(1, "c."), t0).is_some());
    }
}
