//! Sets and maps: their definition, and elements as the kernel sends and takes them.

use std::time::Duration;

use super::types::{Verdict, DATA_VERDICT};
use super::{attr_be32, attr_be64, attrs, millis, nest, nfta, put, put_be32, put_be64, put_data};

/// Set flags (`NFT_SET_*`).
pub(crate) mod flags {
    pub const INTERVAL: u32 = 0x4;
    pub const MAP: u32 = 0x8;
    pub const TIMEOUT: u32 = 0x10;
    pub const EVAL: u32 = 0x20;
}
/// Element flag: the end of an interval.
const ELEM_INTERVAL_END: u32 = 0x1;

/// A set or map definition.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetDef {
    /// Its name.
    pub name: String,
    /// nft's data type number of the key (for `nft list`; the kernel only stores it). A
    /// concatenation's type is its parts' numbers, each shifted left 6 bits past the next.
    pub key_type: u32,
    /// Key length in bytes: a concatenation's parts each take whole 4-byte registers (a
    /// protocol byte takes 4, a port 4, an IPv4 address 4), so `ip daddr . meta l4proto . th
    /// dport` is 12.
    pub key_len: u32,
    /// An interval set (prefixes as ranges). Single-field keys only: ranges over
    /// concatenations need the fields' description (`NFTA_SET_DESC`), which is not sent.
    pub interval: bool,
    /// For maps: the value's nft type number and length (register-padded like keys). A
    /// verdict map has `Some((DATA_VERDICT, 0))`.
    pub data: Option<(u32, u32)>,
    /// Elements may expire (`flags timeout`); a non-zero value is the default timeout of
    /// elements added without one.
    pub timeout: Option<Duration>,
    /// The packet path may add and update elements ([`Expr::Dynset`](super::expr::Expr),
    /// `flags dynamic`).
    pub dynamic: bool,
    /// Opaque bytes stored with the set (nft keeps display hints there); empty for none.
    pub userdata: Vec<u8>,
}

impl SetDef {
    pub(crate) fn flags(&self) -> u32 {
        let mut f = 0;
        if self.interval {
            f |= flags::INTERVAL;
        }
        if self.data.is_some() {
            f |= flags::MAP;
        }
        if self.timeout.is_some() {
            f |= flags::TIMEOUT;
        }
        if self.dynamic {
            f |= flags::EVAL;
        }
        f
    }

    /// Appends the attributes of a `NEWSET` after the table and name.
    pub(crate) fn encode(&self, b: &mut Vec<u8>, id: u32) {
        put_be32(b, nfta::SET_FLAGS, self.flags());
        put_be32(b, nfta::SET_KEY_TYPE, self.key_type);
        put_be32(b, nfta::SET_KEY_LEN, self.key_len);
        if let Some((ty, len)) = self.data {
            put_be32(b, nfta::SET_DATA_TYPE, ty);
            if ty != DATA_VERDICT {
                put_be32(b, nfta::SET_DATA_LEN, len);
            }
        }
        put_be32(b, nfta::SET_ID, id); // required, unique within the batch
        if let Some(t) = self.timeout.filter(|t| !t.is_zero()) {
            put_be64(b, nfta::SET_TIMEOUT, millis(t));
        }
        if !self.userdata.is_empty() {
            put(b, nfta::SET_USERDATA, &self.userdata);
        }
    }
}

/// One set element.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element {
    /// The key bytes.
    pub key: Vec<u8>,
    /// For maps: the value bytes.
    pub data: Option<Vec<u8>>,
    /// For verdict maps: the verdict.
    pub verdict: Option<Verdict>,
    /// In interval sets: this element closes an interval.
    pub interval_end: bool,
    /// In sets with timeouts: this element's timeout (`None`: the set's default, or never).
    pub timeout: Option<Duration>,
    /// Read back only: the time left before the element expires.
    pub expires: Option<Duration>,
    /// Opaque bytes stored with the element (nft shows a TLV comment).
    pub userdata: Option<Vec<u8>>,
}

impl Element {
    /// An element with only a key.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            ..Self::default()
        }
    }

    /// Attaches a comment, stored in the element's userdata as nft stores one (shown by `nft
    /// list`, read back by [`comment`](Self::comment)). At most 200 bytes are kept.
    pub fn with_comment(mut self, comment: &str) -> Self {
        self.userdata = Some(super::batch::comment_udata(comment));
        self
    }

    /// The comment in the element's userdata, if it holds one.
    pub fn comment(&self) -> Option<String> {
        self.userdata.as_deref().and_then(super::batch::comment_of)
    }

    /// The same element for a deletion or a comparison: the key and interval flag only.
    pub(crate) fn identity(&self) -> (Vec<u8>, bool) {
        (self.key.clone(), self.interval_end)
    }

    fn encode(&self, l: &mut Vec<u8>, with_values: bool) {
        nest(l, nfta::LIST_ELEM, |el| {
            put_data(el, nfta::SET_ELEM_KEY, &self.key);
            if self.interval_end {
                put_be32(el, nfta::SET_ELEM_FLAGS, ELEM_INTERVAL_END);
            }
            if !with_values {
                return;
            }
            if let Some(d) = &self.data {
                put_data(el, nfta::SET_ELEM_DATA, d);
            }
            if let Some(v) = &self.verdict {
                nest(el, nfta::SET_ELEM_DATA, |d| v.encode_data(d));
            }
            if let Some(t) = self.timeout {
                put_be64(el, nfta::SET_ELEM_TIMEOUT, millis(t));
            }
            if let Some(u) = &self.userdata {
                put(el, nfta::SET_ELEM_USERDATA, u);
            }
        });
    }
}

/// Appends `NFTA_SET_ELEM_LIST_ELEMENTS`; deletions (`with_values` false) send keys only.
pub(crate) fn encode_elements(b: &mut Vec<u8>, elems: &[Element], with_values: bool) {
    nest(b, nfta::SET_ELEM_LIST_ELEMENTS, |l| {
        for e in elems {
            e.encode(l, with_values);
        }
    });
}

/// Parses the elements of one `NEWSETELEM` dump message payload (after the nfgenmsg).
pub(crate) fn parse_elements(payload: &[u8]) -> Vec<Element> {
    let mut out = Vec::new();
    let Some(list) = super::attr(payload, nfta::SET_ELEM_LIST_ELEMENTS) else {
        return out;
    };
    for (_, el) in attrs(list) {
        let value = |ty| {
            super::attr(el, ty)
                .and_then(|d| super::attr(d, nfta::DATA_VALUE))
                .map(<[u8]>::to_vec)
        };
        let flags = attr_be32(el, nfta::SET_ELEM_FLAGS).unwrap_or(0);
        out.push(Element {
            key: value(nfta::SET_ELEM_KEY).unwrap_or_default(),
            data: value(nfta::SET_ELEM_DATA),
            verdict: super::attr(el, nfta::SET_ELEM_DATA).and_then(Verdict::decode_data),
            interval_end: flags & ELEM_INTERVAL_END != 0,
            timeout: attr_be64(el, nfta::SET_ELEM_TIMEOUT).map(Duration::from_millis),
            expires: attr_be64(el, nfta::SET_ELEM_EXPIRATION).map(Duration::from_millis),
            userdata: super::attr(el, nfta::SET_ELEM_USERDATA).map(<[u8]>::to_vec),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::attr_be32;
    use super::*;

    #[test]
    fn set_flags_follow_the_definition() {
        let vmap = SetDef {
            name: "m".into(),
            key_len: 12,
            data: Some((DATA_VERDICT, 0)),
            timeout: Some(Duration::from_secs(5)),
            dynamic: true,
            ..SetDef::default()
        };
        let mut b = Vec::new();
        vmap.encode(&mut b, 1);
        let want = flags::MAP | flags::TIMEOUT | flags::EVAL;
        assert_eq!(attr_be32(&b, nfta::SET_FLAGS), Some(want));
        assert_eq!(attr_be32(&b, nfta::SET_DATA_TYPE), Some(DATA_VERDICT));
        assert_eq!(
            attr_be32(&b, nfta::SET_DATA_LEN),
            None,
            "a verdict has no length"
        );
        assert_eq!(attr_be64(&b, nfta::SET_TIMEOUT), Some(5000));
        let mut b = Vec::new();
        SetDef {
            timeout: Some(Duration::ZERO),
            ..SetDef::default()
        }
        .encode(&mut b, 2);
        assert_eq!(attr_be32(&b, nfta::SET_FLAGS), Some(flags::TIMEOUT));
        assert_eq!(attr_be64(&b, nfta::SET_TIMEOUT), None, "no default timeout");
    }

    #[test]
    fn elements_round_trip() {
        let els = vec![
            Element {
                key: vec![1, 2, 3, 4],
                interval_end: true,
                userdata: Some(b"ab".to_vec()),
                ..Element::default()
            },
            Element {
                key: vec![5, 0, 0, 0],
                verdict: Some(Verdict::Jump("svc".into())),
                timeout: Some(Duration::from_secs(3)),
                ..Element::default()
            },
            Element {
                key: vec![6, 0, 0, 0],
                data: Some(vec![10, 0, 0, 1]),
                ..Element::default()
            },
        ];
        let mut b = Vec::new();
        encode_elements(&mut b, &els, true);
        assert_eq!(parse_elements(&b), els);
        let mut keys = Vec::new();
        encode_elements(&mut keys, &els, false);
        let commented = Element::key(vec![7, 0, 0, 0]).with_comment("web 30000");
        assert_eq!(commented.comment().as_deref(), Some("web 30000"));
        assert_eq!(Element::key(vec![1]).comment(), None);
        let back = parse_elements(&keys);
        assert_eq!(back[1], Element::key(vec![5, 0, 0, 0]));
        assert!(back[0].interval_end, "a deletion keeps the interval flag");
    }
}
