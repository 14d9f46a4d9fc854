//! The messages of an atomic batch (`NFNL_MSG_BATCH_BEGIN` … `END`).
//!
//! A [`Batch`] keeps its messages as encoded bodies until it is sent, so a deletion can still
//! be re-encoded for the kernel it meets: `DESTROY*` where the kernel has it (Linux 6.3),
//! `DEL*` of only the objects present where it does not (see `compat.rs`).

use super::expr::Expr;
use super::set::{encode_elements, Element, SetDef};
use super::types::{BaseChain, Family};
use super::{
    msg, nest, nfta, nlm, put, put_be32, put_be64, put_str, NFNL_MSG_BATCH_BEGIN,
    NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES,
};

/// nft's comment TLV type in rule and element userdata.
pub(crate) const UDATA_COMMENT: u8 = 0;

/// What a `DESTROY*` message deletes, kept so it can be re-encoded as a `DEL*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Table,
    Chain { chain: String },
    Rule { chain: String, handle: u64 },
    Set { set: String },
    Elements { set: String, elems: Vec<Element> },
}

/// One message of a batch.
#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub msg: u8,
    pub flags: u16,
    pub family: Family,
    pub table: String,
    /// The operation and its object, for errors (`add rule to chain inet t c`).
    pub what: String,
    pub body: Vec<u8>,
    /// For `DESTROY*`: what it deletes.
    pub target: Option<Target>,
}

/// An nf_tables batch being built: every message in it is applied atomically or not at all
/// ([`Nft::apply`](crate::nft::Nft::apply)).
///
/// `add_*` create (an existing table, chain or identical set is left as it is), `delete_*`
/// fail on a missing object ([`SysError::NotFound`](crate::SysError)), `destroy_*` do not,
/// `flush_*` empty a chain or set.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub(crate) ops: Vec<Op>,
    set_id: u32,
}

fn table_body(table: &str) -> Vec<u8> {
    let mut b = Vec::new();
    put_str(&mut b, nfta::TABLE_NAME, table);
    b
}

fn chain_body(table: &str, chain: &str) -> Vec<u8> {
    let mut b = Vec::new();
    put_str(&mut b, nfta::CHAIN_TABLE, table);
    put_str(&mut b, nfta::CHAIN_NAME, chain);
    b
}

fn rule_body(table: &str, chain: &str, handle: Option<u64>) -> Vec<u8> {
    let mut b = Vec::new();
    put_str(&mut b, nfta::RULE_TABLE, table);
    put_str(&mut b, nfta::RULE_CHAIN, chain);
    if let Some(h) = handle {
        put_be64(&mut b, nfta::RULE_HANDLE, h);
    }
    b
}

fn set_body(table: &str, set: &str) -> Vec<u8> {
    let mut b = Vec::new();
    put_str(&mut b, nfta::SET_TABLE, table);
    put_str(&mut b, nfta::SET_NAME, set);
    b
}

pub(crate) fn elements_body(table: &str, set: &str, elems: Option<(&[Element], bool)>) -> Vec<u8> {
    let mut b = Vec::new();
    put_str(&mut b, nfta::SET_ELEM_LIST_TABLE, table);
    put_str(&mut b, nfta::SET_ELEM_LIST_SET, set);
    if let Some((elems, with_values)) = elems {
        encode_elements(&mut b, elems, with_values);
    }
    b
}

/// The most bytes of elements one message carries: the list is one netlink attribute, whose
/// length is 16 bits. Longer lists are split over several messages of the same batch.
const ELEMENTS_PER_MESSAGE: usize = 60 * 1024;

/// `elems` cut into runs whose encoding fits one attribute.
fn element_chunks(elems: &[Element], with_values: bool) -> Vec<&[Element]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    let mut one = Vec::new();
    for (i, e) in elems.iter().enumerate() {
        one.clear();
        encode_elements(&mut one, std::slice::from_ref(e), with_values);
        let n = one.len().saturating_sub(4); // the list's own header counts once
        if size + n > ELEMENTS_PER_MESSAGE && i > start {
            out.push(&elems[start..i]);
            (start, size) = (i, 0);
        }
        size += n;
    }
    if start < elems.len() {
        out.push(&elems[start..]);
    }
    out
}

/// nft's comment TLV (type, length, NUL-terminated text; at most 255 bytes in all).
pub(crate) fn comment_udata(comment: &str) -> Vec<u8> {
    let text: String = comment.chars().take(200).collect();
    let mut u = vec![UDATA_COMMENT, (text.len() + 1) as u8];
    u.extend_from_slice(text.as_bytes());
    u.push(0);
    u
}

/// The text of nft's comment TLV, if `udata` holds one.
pub(crate) fn comment_of(udata: &[u8]) -> Option<String> {
    match udata {
        [UDATA_COMMENT, len, rest @ ..] => {
            let v = rest.get(..usize::from(*len)).unwrap_or(rest);
            let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
            Some(String::from_utf8_lossy(&v[..end]).into_owned())
        }
        _ => None,
    }
}

impl Batch {
    /// A new, empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of messages between the batch markers.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no messages.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether the batch deletes with `DESTROY*`.
    pub(crate) fn has_destroys(&self) -> bool {
        self.ops.iter().any(|o| o.target.is_some())
    }

    fn push(
        &mut self,
        (m, flags): (u8, u16),
        family: Family,
        table: &str,
        what: String,
        body: Vec<u8>,
    ) {
        self.ops.push(Op {
            msg: m,
            flags,
            family,
            table: table.into(),
            what,
            body,
            target: None,
        });
    }

    fn destroy(
        &mut self,
        m: u8,
        family: Family,
        table: &str,
        what: String,
        body: Vec<u8>,
        target: Target,
    ) {
        self.ops.push(Op {
            msg: m,
            flags: 0,
            family,
            table: table.into(),
            what,
            body,
            target: Some(target),
        });
    }

    /// Creates a table, or leaves an existing one as it is.
    pub fn add_table(&mut self, family: Family, name: &str) {
        let what = format!("create table {} {name}", family.name());
        self.push(
            (msg::NEWTABLE, nlm::CREATE),
            family,
            name,
            what,
            table_body(name),
        );
    }

    /// Deletes a table with everything in it; a missing table fails the batch.
    pub fn delete_table(&mut self, family: Family, name: &str) {
        let what = format!("delete table {} {name}", family.name());
        self.push((msg::DELTABLE, 0), family, name, what, table_body(name));
    }

    /// Deletes a table with everything in it; a missing table is not an error.
    pub fn destroy_table(&mut self, family: Family, name: &str) {
        let what = format!("delete table {} {name}", family.name());
        self.destroy(
            msg::DESTROYTABLE,
            family,
            name,
            what,
            table_body(name),
            Target::Table,
        );
    }

    /// Creates a chain (a base chain when `base` is given), or updates an existing one.
    pub fn add_chain(&mut self, family: Family, table: &str, name: &str, base: Option<BaseChain>) {
        let mut b = chain_body(table, name);
        if let Some(base) = base {
            nest(&mut b, nfta::CHAIN_HOOK, |h| {
                put_be32(h, nfta::HOOK_HOOKNUM, base.hook as u32);
                put(h, nfta::HOOK_PRIORITY, &base.priority.to_be_bytes());
            });
            put(
                &mut b,
                nfta::CHAIN_POLICY,
                &base.policy.policy_code().to_be_bytes(),
            );
            put_str(&mut b, nfta::CHAIN_TYPE, base.kind.name());
        }
        let what = format!("create chain {} {table} {name}", family.name());
        self.push((msg::NEWCHAIN, nlm::CREATE), family, table, what, b);
    }

    /// Deletes an empty, unreferenced chain; a missing one fails the batch.
    pub fn delete_chain(&mut self, family: Family, table: &str, chain: &str) {
        let what = format!("delete chain {} {table} {chain}", family.name());
        self.push(
            (msg::DELCHAIN, 0),
            family,
            table,
            what,
            chain_body(table, chain),
        );
    }

    /// Deletes an empty, unreferenced chain; a missing one is not an error.
    pub fn destroy_chain(&mut self, family: Family, table: &str, chain: &str) {
        let what = format!("delete chain {} {table} {chain}", family.name());
        let target = Target::Chain {
            chain: chain.into(),
        };
        self.destroy(
            msg::DESTROYCHAIN,
            family,
            table,
            what,
            chain_body(table, chain),
            target,
        );
    }

    /// Deletes every rule of a chain.
    pub fn flush_chain(&mut self, family: Family, table: &str, chain: &str) {
        let what = format!("flush chain {} {table} {chain}", family.name());
        self.push(
            (msg::DELRULE, 0),
            family,
            table,
            what,
            rule_body(table, chain, None),
        );
    }

    fn rule(
        &mut self,
        flags: u16,
        family: Family,
        (table, chain): (&str, &str),
        exprs: &[Expr],
        comment: Option<&str>,
    ) {
        let mut b = rule_body(table, chain, None);
        nest(&mut b, nfta::RULE_EXPRESSIONS, |l| {
            for e in exprs {
                e.encode(l);
            }
        });
        if let Some(c) = comment {
            put(&mut b, nfta::RULE_USERDATA, &comment_udata(c));
        }
        let what = format!("add rule to chain {} {table} {chain}", family.name());
        self.push((msg::NEWRULE, flags), family, table, what, b);
    }

    /// Appends a rule to a chain.
    pub fn add_rule(&mut self, family: Family, table: &str, chain: &str, exprs: &[Expr]) {
        self.rule(
            nlm::CREATE | nlm::APPEND,
            family,
            (table, chain),
            exprs,
            None,
        );
    }

    /// Appends a rule carrying a comment (nft's userdata TLV), by which
    /// [`Nft::rules`](crate::nft::Nft::rules) finds it and its handle again.
    pub fn add_rule_commented(
        &mut self,
        family: Family,
        table: &str,
        chain: &str,
        exprs: &[Expr],
        comment: &str,
    ) {
        self.rule(
            nlm::CREATE | nlm::APPEND,
            family,
            (table, chain),
            exprs,
            Some(comment),
        );
    }

    /// Puts a rule first in a chain.
    pub fn insert_rule(&mut self, family: Family, table: &str, chain: &str, exprs: &[Expr]) {
        self.rule(nlm::CREATE, family, (table, chain), exprs, None);
    }

    /// Deletes the rule with `handle` ([`Nft::rules`](crate::nft::Nft::rules)); a missing one
    /// fails the batch.
    pub fn delete_rule(&mut self, family: Family, table: &str, chain: &str, handle: u64) {
        let what = format!(
            "delete rule {handle} of chain {} {table} {chain}",
            family.name()
        );
        self.push(
            (msg::DELRULE, 0),
            family,
            table,
            what,
            rule_body(table, chain, Some(handle)),
        );
    }

    /// Deletes the rule with `handle`; a missing one is not an error.
    pub fn destroy_rule(&mut self, family: Family, table: &str, chain: &str, handle: u64) {
        let what = format!(
            "delete rule {handle} of chain {} {table} {chain}",
            family.name()
        );
        let target = Target::Rule {
            chain: chain.into(),
            handle,
        };
        let body = rule_body(table, chain, Some(handle));
        self.destroy(msg::DESTROYRULE, family, table, what, body, target);
    }

    /// Creates a set or map, or leaves an identical existing one.
    pub fn add_set(&mut self, family: Family, table: &str, set: &SetDef) {
        self.set_id = self.set_id.wrapping_add(1);
        let mut b = set_body(table, &set.name);
        set.encode(&mut b, self.set_id);
        let what = format!("create set {} {table} {}", family.name(), set.name);
        self.push((msg::NEWSET, nlm::CREATE), family, table, what, b);
    }

    /// Deletes a set or map no rule refers to; a missing one fails the batch.
    pub fn delete_set(&mut self, family: Family, table: &str, set: &str) {
        let what = format!("delete set {} {table} {set}", family.name());
        self.push((msg::DELSET, 0), family, table, what, set_body(table, set));
    }

    /// Deletes a set or map no rule refers to; a missing one is not an error.
    pub fn destroy_set(&mut self, family: Family, table: &str, set: &str) {
        let what = format!("delete set {} {table} {set}", family.name());
        let target = Target::Set { set: set.into() };
        self.destroy(
            msg::DESTROYSET,
            family,
            table,
            what,
            set_body(table, set),
            target,
        );
    }

    /// Removes every element of a set or map.
    pub fn flush_set(&mut self, family: Family, table: &str, set: &str) {
        let what = format!("flush set {} {table} {set}", family.name());
        self.push(
            (msg::DELSETELEM, 0),
            family,
            table,
            what,
            elements_body(table, set, None),
        );
    }

    /// Inserts elements; with `exclusive`, an element already present fails the batch with
    /// `EEXIST`.
    pub fn add_elements(
        &mut self,
        family: Family,
        table: &str,
        set: &str,
        elems: &[Element],
        exclusive: bool,
    ) {
        if elems.is_empty() {
            return;
        }
        let flags = nlm::CREATE | if exclusive { nlm::EXCL } else { 0 };
        for chunk in element_chunks(elems, true) {
            let what = format!("add elements to set {} {table} {set}", family.name());
            let body = elements_body(table, set, Some((chunk, true)));
            self.push((msg::NEWSETELEM, flags), family, table, what, body);
        }
    }

    /// Removes elements (matched by key); a missing one fails the batch.
    pub fn delete_elements(&mut self, family: Family, table: &str, set: &str, elems: &[Element]) {
        if elems.is_empty() {
            return;
        }
        for chunk in element_chunks(elems, false) {
            let what = format!("delete elements from set {} {table} {set}", family.name());
            let body = elements_body(table, set, Some((chunk, false)));
            self.push((msg::DELSETELEM, 0), family, table, what, body);
        }
    }

    /// Removes elements (matched by key); missing ones are not an error.
    pub fn destroy_elements(&mut self, family: Family, table: &str, set: &str, elems: &[Element]) {
        if elems.is_empty() {
            return;
        }
        for chunk in element_chunks(elems, false) {
            let what = format!("delete elements from set {} {table} {set}", family.name());
            let body = elements_body(table, set, Some((chunk, false)));
            let target = Target::Elements {
                set: set.into(),
                elems: chunk.to_vec(),
            };
            self.destroy(msg::DESTROYSETELEM, family, table, what, body, target);
        }
    }
}

/// Frames `ops` between the batch markers, numbering messages from `seq`. Returns the bytes
/// and each message's sequence number with its description.
pub(crate) fn encode(ops: &[Op], seq: u32) -> (Vec<u8>, Vec<(u32, String)>) {
    let mut buf = Vec::with_capacity(4096);
    let mut seq = seq;
    let mut described = Vec::with_capacity(ops.len());
    frame(&mut buf, NFNL_MSG_BATCH_BEGIN, 0, 0, seq, &[]);
    seq = seq.wrapping_add(1);
    // Errors come for any message; an ack only for the last, which says the whole batch
    // went through (an ack per message costs the receive buffer a socket buffer each: a
    // batch of tens of thousands of messages would overflow it).
    let last = ops.len().saturating_sub(1);
    for (i, op) in ops.iter().enumerate() {
        let ty = (NFNL_SUBSYS_NFTABLES << 8) | op.msg as u16;
        let ack = if i == last { nlm::ACK } else { 0 };
        frame(
            &mut buf,
            ty,
            op.flags | ack,
            op.family.number(),
            seq,
            &op.body,
        );
        described.push((seq, op.what.clone()));
        seq = seq.wrapping_add(1);
    }
    frame(&mut buf, NFNL_MSG_BATCH_END, 0, 0, seq, &[]);
    (buf, described)
}

fn frame(buf: &mut Vec<u8>, ty: u16, flags: u16, family: u8, seq: u32, body: &[u8]) {
    let res_id: u16 = if ty == NFNL_MSG_BATCH_BEGIN || ty == NFNL_MSG_BATCH_END {
        NFNL_SUBSYS_NFTABLES
    } else {
        0
    };
    let len = (16 + 4 + body.len()) as u32;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&(flags | nlm::REQUEST).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    buf.push(family);
    buf.push(0); // NFNETLINK_V0
    buf.extend_from_slice(&res_id.to_be_bytes());
    buf.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::super::{attr_str, messages};
    use super::*;

    #[test]
    fn batch_is_framed_by_begin_and_end() {
        let mut batch = Batch::new();
        batch.add_table(Family::Inet, "t");
        batch.destroy_table(Family::Inet, "t");
        let (buf, ops) = encode(&batch.ops, 7);
        let msgs = messages(&buf);
        assert_eq!(msgs.len(), 4);
        assert_eq!(msgs[0].ty, NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msgs[1].ty, NFNL_SUBSYS_NFTABLES << 8);
        assert_eq!(
            msgs[2].ty,
            (NFNL_SUBSYS_NFTABLES << 8) | msg::DESTROYTABLE as u16
        );
        assert_eq!(msgs[3].ty, NFNL_MSG_BATCH_END);
        assert_eq!(ops[0], (8, "create table inet t".to_string()));
        assert_eq!(
            attr_str(&msgs[1].payload[4..], nfta::TABLE_NAME).as_deref(),
            Some("t")
        );
        assert!(batch.has_destroys());
    }

    #[test]
    fn comments_round_trip() {
        assert_eq!(
            comment_of(&comment_udata("svc a")).as_deref(),
            Some("svc a")
        );
        assert_eq!(comment_of(&[7, 1, 0]), None);
    }

    #[test]
    fn long_element_lists_are_split_into_messages_that_fit_an_attribute() {
        use super::super::set::parse_elements;
        let elems: Vec<Element> = (0..10_000u32)
            .map(|i| Element {
                key: i.to_be_bytes().to_vec(),
                verdict: Some(super::super::types::Verdict::Goto(format!("chain-{i}"))),
                ..Element::default()
            })
            .collect();
        let mut batch = Batch::new();
        batch.add_elements(Family::Ip, "t", "m", &elems, true);
        assert!(batch.len() > 1, "one message for {} elements", elems.len());
        let mut back = Vec::new();
        for op in &batch.ops {
            assert!(op.body.len() < 65_535, "{} bytes", op.body.len());
            back.extend(parse_elements(&op.body));
        }
        assert_eq!(back, elems);
        let mut batch = Batch::new();
        batch.destroy_elements(Family::Ip, "t", "m", &elems);
        assert_eq!(
            batch.ops.len(),
            batch.ops.iter().filter(|o| o.target.is_some()).count()
        );
        assert!(batch.len() > 1);
    }
}
