//! The nf_tables netlink wire format: plain bytes in, bytes out, following
//! `include/uapi/linux/netfilter/nf_tables.h`.
//!
//! - this file: netlink framing, message types and the attribute encoder and parser;
//! - [`types`]: families, hooks, verdicts and the keys expressions take;
//! - [`expr`]: the expressions;
//! - [`set`]: set and map definitions, elements (encode and decode);
//! - [`batch`]: the messages of an atomic batch.
//!
//! Attributes carrying numbers are big-endian; register contents (compared data, set keys)
//! are raw bytes as the kernel sees them in its registers.

pub(crate) mod batch;
pub(crate) mod expr;
pub(crate) mod set;
pub(crate) mod types;

/// netlink message flags and types.
pub(crate) mod nlm {
    pub const REQUEST: u16 = 0x1;
    pub const ACK: u16 = 0x4;
    pub const EXCL: u16 = 0x200;
    pub const CREATE: u16 = 0x400;
    pub const APPEND: u16 = 0x800;
    pub const DUMP: u16 = 0x300;
    pub const NOOP: u16 = 1;
    pub const ERROR: u16 = 2;
    pub const DONE: u16 = 3;
}

/// nfnetlink subsystem and batch markers.
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub(crate) const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
pub(crate) const NFNL_MSG_BATCH_END: u16 = 0x11;

/// nf_tables message types (`NFT_MSG_*`).
pub(crate) mod msg {
    pub const NEWTABLE: u8 = 0;
    pub const GETTABLE: u8 = 1;
    pub const DELTABLE: u8 = 2;
    pub const NEWCHAIN: u8 = 3;
    pub const GETCHAIN: u8 = 4;
    pub const DELCHAIN: u8 = 5;
    pub const NEWRULE: u8 = 6;
    pub const GETRULE: u8 = 7;
    pub const DELRULE: u8 = 8;
    pub const NEWSET: u8 = 9;
    pub const GETSET: u8 = 10;
    pub const DELSET: u8 = 11;
    pub const NEWSETELEM: u8 = 12;
    pub const GETSETELEM: u8 = 13;
    pub const DELSETELEM: u8 = 14;
    /// The `DESTROY*` messages (Linux 6.3): like `DEL*`, but a missing object is no error.
    pub const DESTROYTABLE: u8 = 26;
    pub const DESTROYCHAIN: u8 = 27;
    pub const DESTROYRULE: u8 = 28;
    pub const DESTROYSET: u8 = 29;
    pub const DESTROYSETELEM: u8 = 30;
}

/// Attribute numbers (`NFTA_*`) of tables, chains, rules and sets.
pub(crate) mod nfta {
    pub const TABLE_NAME: u16 = 1;
    pub const CHAIN_TABLE: u16 = 1;
    pub const CHAIN_NAME: u16 = 3;
    pub const CHAIN_HOOK: u16 = 4;
    pub const CHAIN_POLICY: u16 = 5;
    pub const CHAIN_TYPE: u16 = 7;
    pub const HOOK_HOOKNUM: u16 = 1;
    pub const HOOK_PRIORITY: u16 = 2;
    pub const RULE_TABLE: u16 = 1;
    pub const RULE_CHAIN: u16 = 2;
    pub const RULE_HANDLE: u16 = 3;
    pub const RULE_EXPRESSIONS: u16 = 4;
    pub const RULE_USERDATA: u16 = 7;
    pub const LIST_ELEM: u16 = 1;
    pub const EXPR_NAME: u16 = 1;
    pub const EXPR_DATA: u16 = 2;
    pub const SET_TABLE: u16 = 1;
    pub const SET_NAME: u16 = 2;
    pub const SET_FLAGS: u16 = 3;
    pub const SET_KEY_TYPE: u16 = 4;
    pub const SET_KEY_LEN: u16 = 5;
    pub const SET_DATA_TYPE: u16 = 6;
    pub const SET_DATA_LEN: u16 = 7;
    pub const SET_ID: u16 = 10;
    pub const SET_TIMEOUT: u16 = 11;
    pub const SET_USERDATA: u16 = 13;
    pub const SET_ELEM_LIST_TABLE: u16 = 1;
    pub const SET_ELEM_LIST_SET: u16 = 2;
    pub const SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const SET_ELEM_KEY: u16 = 1;
    pub const SET_ELEM_DATA: u16 = 2;
    pub const SET_ELEM_FLAGS: u16 = 3;
    pub const SET_ELEM_TIMEOUT: u16 = 4;
    pub const SET_ELEM_EXPIRATION: u16 = 5;
    pub const SET_ELEM_USERDATA: u16 = 6;
    pub const DATA_VALUE: u16 = 1;
    pub const DATA_VERDICT: u16 = 2;
    pub const VERDICT_CODE: u16 = 1;
    pub const VERDICT_CHAIN: u16 = 2;
}

const NLA_F_NESTED: u16 = 0x8000;

/// Appends one attribute (4-byte aligned).
pub(crate) fn put(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    pad(buf);
}

fn pad(buf: &mut Vec<u8>) {
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}

pub(crate) fn put_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    put(buf, ty, &v);
}

pub(crate) fn put_be32(buf: &mut Vec<u8>, ty: u16, v: u32) {
    put(buf, ty, &v.to_be_bytes());
}

pub(crate) fn put_be64(buf: &mut Vec<u8>, ty: u16, v: u64) {
    put(buf, ty, &v.to_be_bytes());
}

/// Writes a nested attribute whose content `f` appends.
pub(crate) fn nest(buf: &mut Vec<u8>, ty: u16, f: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0, 0]);
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    f(buf);
    let len = (buf.len() - start) as u16;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    pad(buf);
}

/// A value inside `NFTA_DATA_VALUE`.
pub(crate) fn put_data(buf: &mut Vec<u8>, ty: u16, value: &[u8]) {
    nest(buf, ty, |b| put(b, nfta::DATA_VALUE, value));
}

/// Milliseconds, as nf_tables carries timeouts (saturating).
pub(crate) fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Builds a single request: a dump (`GET*` with `NLM_F_DUMP`) or, with `flags`, another.
pub(crate) fn request(
    m: u8,
    flags: u16,
    family: u8,
    seq: u32,
    f: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | m as u16).to_ne_bytes());
    buf.extend_from_slice(&(nlm::REQUEST | flags).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.push(family);
    buf.push(0);
    buf.extend_from_slice(&0u16.to_be_bytes());
    f(&mut buf);
    let len = buf.len() as u32;
    buf[0..4].copy_from_slice(&len.to_ne_bytes());
    buf
}

/// One netlink message out of a receive buffer.
pub(crate) struct NlMsg<'a> {
    pub ty: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Splits a receive buffer into netlink messages (stops at the first malformed one).
pub(crate) fn messages(mut buf: &[u8]) -> Vec<NlMsg<'_>> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        out.push(NlMsg {
            ty: u16::from_ne_bytes([buf[4], buf[5]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            payload: &buf[16..len],
        });
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
    }
    out
}

/// Iterates over the attributes in `buf`: (type without flags, value).
pub(crate) fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
    }
    out
}

/// The first attribute of type `ty`.
pub(crate) fn attr(buf: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(buf)
        .into_iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, v)| v)
}

/// A NUL-terminated string attribute.
pub(crate) fn attr_str(buf: &[u8], ty: u16) -> Option<String> {
    attr(buf, ty).map(|v| {
        let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
        String::from_utf8_lossy(&v[..end]).into_owned()
    })
}

/// A big-endian 32-bit attribute.
pub(crate) fn attr_be32(buf: &[u8], ty: u16) -> Option<u32> {
    let v = attr(buf, ty)?.get(..4)?;
    Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
}

/// A big-endian 64-bit attribute.
pub(crate) fn attr_be64(buf: &[u8], ty: u16) -> Option<u64> {
    let v: [u8; 8] = attr(buf, ty)?.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(v))
}
