//! Reading nf_tables back: tables, chains, sets, rules (with their handles and counters) and
//! set elements, decoded from dumps.

use super::raw::Nft;
use super::wire::batch::comment_of;
use super::wire::set::{parse_elements, Element};
use super::wire::types::Family;
use super::wire::{attr, attr_be64, attr_str, attrs, msg, nfta, put_str};
use crate::error::Result;

/// A counter's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// A rule as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleInfo {
    /// The handle that names it for [`Batch::delete_rule`](super::Batch::delete_rule).
    pub handle: u64,
    /// The comment it was added with ([`Batch::add_rule_commented`](super::Batch::add_rule_commented)).
    pub comment: Option<String>,
    /// Its expressions' kernel names, in order (`payload`, `cmp`, `counter`, …).
    pub exprs: Vec<String>,
    /// The values of its `counter` expressions, in order.
    pub counters: Vec<Counter>,
}

fn decode_rule(payload: &[u8]) -> Option<RuleInfo> {
    let handle = attr_be64(payload, nfta::RULE_HANDLE)?;
    let mut rule = RuleInfo {
        handle,
        comment: attr(payload, nfta::RULE_USERDATA).and_then(comment_of),
        ..RuleInfo::default()
    };
    for (_, e) in attrs(attr(payload, nfta::RULE_EXPRESSIONS).unwrap_or_default()) {
        let name = attr_str(e, nfta::EXPR_NAME).unwrap_or_default();
        if name == "counter" {
            let data = attr(e, nfta::EXPR_DATA).unwrap_or_default();
            rule.counters.push(Counter {
                bytes: attr_be64(data, 1).unwrap_or(0),   // NFTA_COUNTER_BYTES
                packets: attr_be64(data, 2).unwrap_or(0), // NFTA_COUNTER_PACKETS
            });
        }
        rule.exprs.push(name);
    }
    Some(rule)
}

impl Nft {
    /// Every nf_tables table of the namespace, of every family.
    pub fn tables(&self) -> Result<Vec<(Family, String)>> {
        let msgs = self.dump("list nf_tables tables", msg::GETTABLE, 0, |_| {})?;
        Ok(msgs
            .into_iter()
            .filter_map(|(fam, payload)| {
                Some((
                    Family::from_number(fam)?,
                    attr_str(&payload, nfta::TABLE_NAME)?,
                ))
            })
            .collect())
    }

    /// The names of a table's chains (none if the table is missing).
    pub fn chains(&self, family: Family, table: &str) -> Result<Vec<String>> {
        let op = format!("list chains of table {} {table}", family.name());
        let msgs = self.dump(&op, msg::GETCHAIN, family.number(), |_| {})?;
        Ok(msgs
            .iter()
            .filter(|(_, p)| attr_str(p, nfta::CHAIN_TABLE).as_deref() == Some(table))
            .filter_map(|(_, p)| attr_str(p, nfta::CHAIN_NAME))
            .collect())
    }

    /// The names of a table's sets and maps (none if the table is missing).
    pub fn sets(&self, family: Family, table: &str) -> Result<Vec<String>> {
        let op = format!("list sets of table {} {table}", family.name());
        let msgs = self.dump(&op, msg::GETSET, family.number(), |b| {
            put_str(b, nfta::SET_TABLE, table)
        })?;
        Ok(msgs
            .iter()
            .filter(|(_, p)| attr_str(p, nfta::SET_TABLE).as_deref() == Some(table))
            .filter_map(|(_, p)| attr_str(p, nfta::SET_NAME))
            .collect())
    }

    /// The rules of a chain, in order, with their handles and counters (none if the chain
    /// is missing).
    pub fn rules(&self, family: Family, table: &str, chain: &str) -> Result<Vec<RuleInfo>> {
        let op = format!("list rules of chain {} {table} {chain}", family.name());
        let msgs = self.dump(&op, msg::GETRULE, family.number(), |b| {
            put_str(b, nfta::RULE_TABLE, table);
            put_str(b, nfta::RULE_CHAIN, chain);
        })?;
        Ok(msgs
            .iter()
            .filter(|(_, p)| {
                attr_str(p, nfta::RULE_TABLE).as_deref() == Some(table)
                    && attr_str(p, nfta::RULE_CHAIN).as_deref() == Some(chain)
            })
            .filter_map(|(_, p)| decode_rule(p))
            .collect())
    }

    /// The elements of a set or map (with their values, verdicts and time left). A missing
    /// set or table is [`SysError::NotFound`](crate::SysError::NotFound).
    pub fn elements(&self, family: Family, table: &str, set: &str) -> Result<Vec<Element>> {
        let op = format!("list set {} {table} {set}", family.name());
        let msgs = self.dump(&op, msg::GETSETELEM, family.number(), |b| {
            put_str(b, nfta::SET_ELEM_LIST_TABLE, table);
            put_str(b, nfta::SET_ELEM_LIST_SET, set);
        })?;
        Ok(msgs.iter().flat_map(|(_, p)| parse_elements(p)).collect())
    }
}
