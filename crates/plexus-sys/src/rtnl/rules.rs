//! Policy-routing rules (`ip rule`): IPv4 rules sending packets that carry a firewall mark
//! to a route table of their own.

use futures::TryStreamExt;
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::IpVersion;

use super::Rtnl;
use crate::error::{Result, SysError};

/// An IPv4 policy-routing rule: a packet whose mark, masked by `fwmask`, equals `fwmark`
/// looks its route up in `table` (`ip rule add priority P fwmark M/MASK lookup T`). Rules
/// are tried by ascending priority; a table without a matching route lets the next rule
/// try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FibRule {
    /// The rule's priority (`ip rule`'s `pref`): lower is tried first. 0 is the `local`
    /// table's rule, 32766 `main`'s.
    pub priority: u32,
    /// The mark to match (after the mask); not 0.
    pub fwmark: u32,
    /// The bits of the packet's mark compared (`0xffff_ffff`: all of them). Bits of
    /// `fwmark` outside it could never match and are refused.
    pub fwmask: u32,
    /// The route table to look up (1 to 2³² - 1; ids above 255 travel in `FRA_TABLE`, as
    /// the rule header has one byte).
    pub table: u32,
}

/// The header's table when the id is in `FRA_TABLE` only.
const RT_TABLE_COMPAT: u8 = 252;

impl FibRule {
    fn check(&self) -> Result<()> {
        let invalid = |reason| SysError::Invalid {
            field: "rule",
            value: format!("{self:?}"),
            reason,
        };
        if self.table == 0 {
            return Err(invalid("table 0 is no table (RT_TABLE_UNSPEC)"));
        }
        if self.fwmark == 0 {
            return Err(invalid("a fwmark of 0 is no mark to match"));
        }
        if self.fwmark & !self.fwmask != 0 {
            return Err(invalid("the fwmark has bits outside the fwmask"));
        }
        Ok(())
    }

    /// The message naming the rule (to add or delete it): every field given, so a deletion
    /// removes this rule and not another of the same priority.
    fn message(&self) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.action = RuleAction::ToTable;
        // An id above 255 does not fit the header's byte, which then says RT_TABLE_COMPAT
        // as the kernel's own dumps do; FRA_TABLE, which the kernel prefers whenever it is
        // there, has the id.
        m.header.table = u8::try_from(self.table).unwrap_or(RT_TABLE_COMPAT);
        m.attributes.push(RuleAttribute::Priority(self.priority));
        m.attributes.push(RuleAttribute::FwMark(self.fwmark));
        m.attributes.push(RuleAttribute::FwMask(self.fwmask));
        m.attributes.push(RuleAttribute::Table(self.table));
        m
    }

    /// The rule of a dump message, if it is a `fwmark … lookup …` rule and nothing more (a
    /// rule with other selectors — addresses, interfaces, ports, a type of service — is not
    /// one of these and would be misread without them).
    fn from_message(m: &RuleMessage) -> Option<Self> {
        if m.header.family != AddressFamily::Inet
            || m.header.action != RuleAction::ToTable
            || m.header.src_len != 0
            || m.header.dst_len != 0
            || m.header.tos != 0
        {
            return None;
        }
        let mut rule = FibRule {
            priority: 0,
            fwmark: 0,
            fwmask: u32::MAX,
            table: u32::from(m.header.table),
        };
        for a in &m.attributes {
            match a {
                RuleAttribute::Priority(p) => rule.priority = *p,
                RuleAttribute::FwMark(v) => rule.fwmark = *v,
                RuleAttribute::FwMask(v) => rule.fwmask = *v,
                RuleAttribute::Table(t) => rule.table = *t,
                // Attributes every rule dump carries, which change nothing at their
                // default (a suppressing prefix length of -1: none).
                RuleAttribute::Protocol(_) => {}
                RuleAttribute::SuppressPrefixLen(u32::MAX) => {}
                _ => return None,
            }
        }
        (rule.fwmark != 0).then_some(rule)
    }
}

impl Rtnl {
    /// Adds an IPv4 policy-routing rule; an identical rule already there is no error.
    pub async fn add_rule(&self, rule: &FibRule) -> Result<()> {
        rule.check()?;
        let mut req = self.handle.rule().add().v4();
        *req.message_mut() = rule.message();
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(e) => match SysError::netlink(format!("add rule {rule:?}"), "rule", e) {
                SysError::Exists { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Deletes an IPv4 policy-routing rule; a missing one is no error.
    pub async fn delete_rule(&self, rule: &FibRule) -> Result<()> {
        rule.check()?;
        match self.handle.rule().del(rule.message()).execute().await {
            Ok(()) => Ok(()),
            Err(e) => match SysError::netlink(format!("delete rule {rule:?}"), "rule", e) {
                SysError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// The IPv4 `fwmark … lookup …` rules, in the kernel's order (by priority). Rules
    /// without a fwmark (`local`, `main`, `default`, source rules) and rules with other
    /// selectors besides the mark are left out.
    pub async fn rules_v4(&self) -> Result<Vec<FibRule>> {
        let messages: Vec<RuleMessage> = self
            .handle
            .rule()
            .get(IpVersion::V4)
            .execute()
            .try_collect()
            .await
            .map_err(|e| SysError::netlink("list rules", "IPv4 rules", e))?;
        Ok(messages.iter().filter_map(FibRule::from_message).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_reads_back_from_its_own_message() {
        for table in [100, 255, 256, 0x7000_0002] {
            let rule = FibRule {
                priority: 1000,
                fwmark: 0x7000_0002,
                fwmask: u32::MAX,
                table,
            };
            let m = rule.message();
            assert_eq!(FibRule::from_message(&m), Some(rule));
            assert_eq!(m.header.table == 252, table > 255);
        }
    }

    #[test]
    fn rules_with_other_selectors_or_no_mark_are_not_read() {
        let rule = FibRule {
            priority: 5,
            fwmark: 1,
            fwmask: 1,
            table: 7,
        };
        let mut m = rule.message();
        m.header.src_len = 8;
        assert_eq!(FibRule::from_message(&m), None);
        let mut m = rule.message();
        m.attributes.push(RuleAttribute::Iifname("eth0".into()));
        assert_eq!(FibRule::from_message(&m), None);
        let mut m = rule.message();
        m.attributes
            .retain(|a| !matches!(a, RuleAttribute::FwMark(_)));
        assert_eq!(FibRule::from_message(&m), None);
    }

    #[test]
    fn bad_rules_are_refused_before_the_kernel() {
        let good = FibRule {
            priority: 1,
            fwmark: 0x10,
            fwmask: 0xf0,
            table: 9,
        };
        assert!(good.check().is_ok());
        for bad in [
            FibRule { table: 0, ..good },
            FibRule { fwmark: 0, ..good },
            FibRule {
                fwmark: 0x11,
                ..good
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
