//! Forwarded answers, kept for as long as their TTLs say (capped), bounded in entries with
//! the least recently used going first.
//!
//! An entry is the upstream's answer as bytes, plus where its TTLs sit: a hit copies the
//! bytes, lowers the TTLs by the time spent in the cache and puts the client's id and
//! question in — no decoding on the hot path. Negative answers (`NXDOMAIN`, and `NOERROR`
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
        // The client's spelling of the name (0x20 case randomisation): same length, since
        // questions are never compressed.
        if let (Some(q), Some(a)) = (wire::question(query), wire::question(&out)) {
            if q == a {
                out[a].copy_from_slice(&query[q]);
            }
        }
        Some(out)
    }

    /// Keeps `answer` (an upstream's bytes) under `key` if it may be kept; returns whether
    /// it was.
    pub fn insert(&mut self, key: Key, answer: &[u8], now: Instant) -> bool {
        let Some(ttl) = self.keep_for(answer) else {
            return false;
        };
        let Some(ttl_offsets) = wire::ttl_offsets(answer) else {
            return false;
        };
        self.entries.put(
            key,
            Entry {
                bytes: answer.to_vec(),
                ttl_offsets,
                stored: now,
                expires: now + ttl,
            },
        );
        true
    }

    /// How long `answer` may be kept, or `None`.
    fn keep_for(&self, answer: &[u8]) -> Option<Duration> {
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
        (!secs.is_zero()).then_some(secs)
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
