//! Byte-level helpers on DNS messages, for the paths that must not decode a whole message:
//! reading and rewriting the id, finding where each record's TTL sits (to age a cached
//! answer in place), and the question's extent.
//!
//! Everything here reads untrusted bytes: every offset is bounds-checked and a malformed
//! message gives `None`, never a panic.

/// The fixed header's length.
pub const HEADER_LEN: usize = 12;
/// The most a name may hold on the wire (RFC 1035 §3.1).
pub const MAX_NAME_LEN: usize = 255;
/// The fewest bytes a question takes: a one-byte (root) name, type and class.
const MIN_QUESTION_LEN: usize = 5;
/// The fewest bytes a resource record takes: a one-byte (root) name, type, class, TTL and
/// the data's length.
const MIN_RECORD_LEN: usize = 11;
/// The `OPT` pseudo-record's type: its TTL field holds EDNS flags, not a time.
const TYPE_OPT: u16 = 41;

/// The message's id, if it has a header.
pub fn id(msg: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*msg.first()?, *msg.get(1)?]))
}

/// Rewrites the message's id in place (nothing if it has no header).
pub fn set_id(msg: &mut [u8], id: u16) {
    if msg.len() >= 2 {
        msg[..2].copy_from_slice(&id.to_be_bytes());
    }
}

/// The `QR` bit: whether the message is a response.
pub fn is_response(msg: &[u8]) -> bool {
    msg.get(2).is_some_and(|b| b & 0x80 != 0)
}

/// The `TC` bit: whether the message was truncated.
pub fn is_truncated(msg: &[u8]) -> bool {
    msg.get(2).is_some_and(|b| b & 0x02 != 0)
}

/// The response code's low four bits (the header's part).
pub fn rcode(msg: &[u8]) -> Option<u8> {
    Some(msg.get(3)? & 0x0f)
}

fn count(msg: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]) as usize)
}

/// Whether the header's section counts could be true of a message this long (a question
/// takes at least 5 bytes, a record 11). A message that claims more cannot decode; checking
/// first matters because a full decode reserves room for as many entries as the header
/// claims, megabytes for a 12-byte datagram.
pub fn counts_fit(msg: &[u8]) -> bool {
    let (Some(qd), Some(an), Some(ns), Some(ar)) =
        (count(msg, 4), count(msg, 6), count(msg, 8), count(msg, 10))
    else {
        return false;
    };
    let need = qd * MIN_QUESTION_LEN + (an + ns + ar) * MIN_RECORD_LEN;
    need <= msg.len() - HEADER_LEN
}

/// The offset just past the name starting at `at`. Compression pointers end a name, so
/// this never follows one (and so cannot loop).
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    let start = at;
    loop {
        let len = *msg.get(at)? as usize;
        match len & 0xc0 {
            0x00 if len == 0 => return Some(at + 1),
            0x00 => {
                at += 1 + len;
                if at - start > MAX_NAME_LEN {
                    return None;
                }
            }
            0xc0 => {
                msg.get(at + 1)?;
                return Some(at + 2);
            }
            _ => return None,
        }
    }
}

/// The byte range of the question section's single question (name, type, class), if the
/// message has exactly one.
pub fn question(msg: &[u8]) -> Option<std::ops::Range<usize>> {
    if count(msg, 4)? != 1 {
        return None;
    }
    let end = skip_name(msg, HEADER_LEN)? + 4;
    (end <= msg.len()).then_some(HEADER_LEN..end)
}

/// The offsets of the TTL field of every record in the answer, authority and additional
/// sections, except `OPT`'s; `None` if the message does not parse that far.
pub fn ttl_offsets(msg: &[u8]) -> Option<Vec<usize>> {
    let qd = count(msg, 4)?;
    let records = count(msg, 6)? + count(msg, 8)? + count(msg, 10)?;
    let mut at = HEADER_LEN;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
    }
    // The counts are the sender's word: a record takes at least 11 bytes (a root name and
    // the fixed fields), so room for more than the message can hold is never reserved.
    let mut offsets = Vec::with_capacity(records.min(msg.len() / MIN_RECORD_LEN));
    for _ in 0..records {
        at = skip_name(msg, at)?;
        let rtype = count(msg, at)? as u16;
        let ttl_at = at + 4;
        let rdlen = count(msg, at + 8)?;
        if rtype != TYPE_OPT {
            offsets.push(ttl_at);
        }
        at += 10 + rdlen;
        if at > msg.len() {
            return None;
        }
    }
    Some(offsets)
}

/// Reads the TTL at `at`.
pub fn ttl_at(msg: &[u8], at: usize) -> Option<u32> {
    let b = msg.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Lowers every TTL at `offsets` by `elapsed` seconds (not below zero).
pub fn age(msg: &mut [u8], offsets: &[usize], elapsed: u32) {
    for &at in offsets {
        if let Some(ttl) = ttl_at(msg, at) {
            msg[at..at + 4].copy_from_slice(&ttl.saturating_sub(elapsed).to_be_bytes());
        }
    }
}

/// The message's header and its single question, with the other sections' counts zeroed:
/// the start of every answer made from bytes (an error, a truncated answer).
pub fn header_and_question(msg: &[u8]) -> Option<Vec<u8>> {
    let q = question(msg)?;
    let mut out = msg[..q.end].to_vec();
    out[6..12].fill(0);
    Some(out)
}

/// A minimal answer to a query whose question could not be decoded: the query's id, `QR`
/// set, its opcode and `RD` kept, the given rcode, no sections. `None` if there is no header.
pub fn bare_error(query: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let h = query.get(..HEADER_LEN)?;
    let mut out = vec![0u8; HEADER_LEN];
    out[..2].copy_from_slice(&h[..2]);
    out[2] = 0x80 | (h[2] & 0x79);
    out[3] = 0x80 | (rcode & 0x0f);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `example.com. A` with one answer (compressed name) and an OPT record.
    fn sample() -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 1];
        m.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
        m.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
        m
    }

    #[test]
    fn finds_ttls_but_not_opt() {
        let m = sample();
        let offs = ttl_offsets(&m).unwrap();
        assert_eq!(offs.len(), 1);
        assert_eq!(ttl_at(&m, offs[0]), Some(60));
        let mut aged = m.clone();
        age(&mut aged, &offs, 25);
        assert_eq!(ttl_at(&aged, offs[0]), Some(35));
        age(&mut aged, &offs, 100);
        assert_eq!(ttl_at(&aged, offs[0]), Some(0));
    }

    #[test]
    fn question_range_and_id() {
        let mut m = sample();
        assert_eq!(question(&m), Some(12..29));
        assert_eq!(id(&m), Some(0x1234));
        set_id(&mut m, 7);
        assert_eq!(id(&m), Some(7));
        assert!(is_response(&m));
        assert!(!is_truncated(&m));
    }

    #[test]
    fn malformed_never_panics() {
        let m = sample();
        for cut in 0..m.len() {
            let _ = ttl_offsets(&m[..cut]);
            let _ = question(&m[..cut]);
        }
        // A label length pointing past the end; a reserved label type.
        assert!(ttl_offsets(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 60, b'a']).is_none());
        assert!(question(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x80, 0, 0, 1, 0, 1]).is_none());
        // A name longer than 255 bytes.
        let mut long = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(question(&long).is_none());
    }

    #[test]
    fn counts_must_fit_the_message() {
        let m = sample();
        assert!(counts_fit(&m));
        assert!(!counts_fit(&m[..11]), "no header");
        // A bare header claiming 65,535 entries in every section.
        let mut lying = vec![0u8; HEADER_LEN];
        lying[4..].fill(0xff);
        assert!(!counts_fit(&lying));
        // One record more than the bytes can hold.
        let mut more = m.clone();
        more[7] = 3;
        assert!(!counts_fit(&more));
        // Exactly what the smallest entries take.
        let mut tight = vec![0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0];
        tight.extend_from_slice(&[0; 5 + 11]);
        assert!(counts_fit(&tight));
    }

    #[test]
    fn bare_error_keeps_id_and_rd() {
        let q = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xff];
        let r = bare_error(&q, 1).unwrap();
        assert_eq!(r, vec![0xab, 0xcd, 0x81, 0x81, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(bare_error(&q[..5], 1).is_none());
    }
}
