//! The return path's nftables table: its encoding, and the kernel's objects back to a view.
//! Pure: the batch is data until [`ReturnPath`](super::ReturnPath) sends it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use plexus_sys::nft::{
    ct_state, BaseChain, Batch, ChainType, CmpOp, CtKey, Element, Expr, Family, Hook, MetaKey,
    PayloadBase, RuleInfo, SetDef, Verdict, REG32_00,
};

use super::{mark_of, ReturnView, GATEWAYS_MAP, MARK_BASE, MARK_IN_CHAIN, MARK_MASK};
use super::{ROUTE_OUT_CHAIN, TABLE};
use crate::mesh::expr_names;

const FAMILY: Family = Family::Ip;
/// nft's data type numbers, for `nft list`.
const TYPE_ETHER_ADDR: u32 = 9;
const TYPE_MARK: u32 = 19;
/// The mangle priority, where iptables' mangle table runs: after conntrack (-200), so `ct
/// state` and `ct mark` are known, and before NAT.
const MANGLE: i32 = -150;
/// The length of an interface name in `meta iifname` (IFNAMSIZ, zero padded).
const IFNAMSIZ: usize = 16;

fn r(n: u32) -> u32 {
    REG32_00 + n
}

/// The comment of the `mark-in` rule, which keeps the interface for
/// [`read`](super::ReturnPath::read).
fn interface_comment(interface: &str) -> String {
    format!("interface={interface}")
}

/// The comment of a gateway's element: its address, which the mark keeps only part of.
fn gateway_comment(ip: Ipv4Addr) -> String {
    format!("gateway={ip}")
}

/// `iifname <interface> ct state new ct mark set ether saddr map @gateways`. Registers: r0
/// the name (four registers), then the state, then the source MAC (two); r2 the mark.
fn mark_in(interface: &str) -> Vec<Expr> {
    let mut name = interface.as_bytes().to_vec();
    name.resize(IFNAMSIZ, 0);
    vec![
        Expr::Meta {
            key: MetaKey::IifName,
            dreg: r(0),
        },
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Eq,
            data: name,
        },
        Expr::Ct {
            key: CtKey::State,
            dreg: r(0),
        },
        Expr::Bitwise {
            sreg: r(0),
            dreg: r(0),
            mask: ct_state::NEW.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Neq,
            data: vec![0; 4],
        },
        // ether saddr: the link-layer header's bytes 6 to 11.
        Expr::Payload {
            base: PayloadBase::Link,
            offset: 6,
            len: 6,
            dreg: r(0),
        },
        Expr::Lookup {
            set: GATEWAYS_MAP.into(),
            sreg: r(0),
            dreg: Some(r(2)),
            invert: false,
        },
        Expr::CtSet {
            key: CtKey::Mark,
            sreg: r(2),
        },
    ]
}

/// `ct mark and MARK_MASK == MARK_BASE meta mark set ct mark`: only marks of this range are
/// copied, so a conntrack mark someone else set steers nothing here.
fn route_out() -> Vec<Expr> {
    vec![
        Expr::Ct {
            key: CtKey::Mark,
            dreg: r(0),
        },
        Expr::Bitwise {
            sreg: r(0),
            dreg: r(1),
            mask: MARK_MASK.to_ne_bytes().to_vec(),
            xor: vec![0; 4],
        },
        Expr::Cmp {
            sreg: r(1),
            op: CmpOp::Eq,
            data: MARK_BASE.to_ne_bytes().to_vec(),
        },
        Expr::MetaSet {
            key: MetaKey::Mark,
            sreg: r(0),
        },
    ]
}

/// A gateway's element: its MAC address to its mark (host order, as `ct mark` takes it).
fn gateway_element(mac: &[u8; 6], ip: Ipv4Addr) -> Element {
    Element {
        key: mac.to_vec(),
        data: Some(mark_of(ip).to_ne_bytes().to_vec()),
        ..Element::default()
    }
    .with_comment(&gateway_comment(ip))
}

/// The gateways' elements.
pub(crate) fn gateway_elements(gateways: &BTreeMap<[u8; 6], Ipv4Addr>) -> Vec<Element> {
    gateways
        .iter()
        .map(|(mac, ip)| gateway_element(mac, *ip))
        .collect()
}

/// nft's set userdata saying the map's values are in host order (`NFTNL_UDATA_SET_
/// DATABYTEORDER`, `BYTEORDER_HOST_ENDIAN`): without it `nft list` shows the marks
/// byte-swapped. The kernel only stores it.
fn host_order_data() -> Vec<u8> {
    let mut u = vec![1, 4];
    u.extend_from_slice(&1u32.to_ne_bytes());
    u
}

fn base_chain(kind: ChainType, hook: Hook) -> Option<BaseChain> {
    Some(BaseChain {
        kind,
        hook,
        priority: MANGLE,
        policy: Verdict::Accept,
    })
}

/// The whole table for `view`, replacing whatever the table held, in one batch.
pub(crate) fn encode(view: &ReturnView, b: &mut Batch) {
    b.destroy_table(FAMILY, TABLE);
    b.add_table(FAMILY, TABLE);
    let map = SetDef {
        name: GATEWAYS_MAP.into(),
        key_type: TYPE_ETHER_ADDR,
        key_len: 6,
        data: Some((TYPE_MARK, 4)),
        userdata: host_order_data(),
        ..SetDef::default()
    };
    b.add_set(FAMILY, TABLE, &map);
    b.add_elements(
        FAMILY,
        TABLE,
        GATEWAYS_MAP,
        &gateway_elements(&view.gateways),
        true,
    );
    let filter = base_chain(ChainType::Filter, Hook::Prerouting);
    b.add_chain(FAMILY, TABLE, MARK_IN_CHAIN, filter);
    let comment = interface_comment(&view.interface);
    b.add_rule_commented(
        FAMILY,
        TABLE,
        MARK_IN_CHAIN,
        &mark_in(&view.interface),
        &comment,
    );
    let route = base_chain(ChainType::Route, Hook::Output);
    b.add_chain(FAMILY, TABLE, ROUTE_OUT_CHAIN, route);
    b.add_rule(FAMILY, TABLE, ROUTE_OUT_CHAIN, &route_out());
}

/// Gateways changed, the interface kept: element changes of the map only.
pub(crate) fn encode_gateways(
    have: &BTreeMap<[u8; 6], Ipv4Addr>,
    want: &BTreeMap<[u8; 6], Ipv4Addr>,
    b: &mut Batch,
) {
    let gone: BTreeMap<_, _> = have
        .iter()
        .filter(|(mac, ip)| want.get(*mac) != Some(*ip))
        .map(|(m, i)| (*m, *i))
        .collect();
    let new: BTreeMap<_, _> = want
        .iter()
        .filter(|(mac, ip)| have.get(*mac) != Some(*ip))
        .map(|(m, i)| (*m, *i))
        .collect();
    b.delete_elements(FAMILY, TABLE, GATEWAYS_MAP, &gateway_elements(&gone));
    b.add_elements(FAMILY, TABLE, GATEWAYS_MAP, &gateway_elements(&new), true);
}

/// Deletes the whole table (a missing one is no error).
pub(crate) fn encode_remove(b: &mut Batch) {
    b.destroy_table(FAMILY, TABLE);
}

/// What [`ReturnPath::read`](super::ReturnPath::read) dumps of the table.
#[derive(Debug, Default)]
pub(crate) struct Dump {
    /// The names of the table's chains.
    pub chains: Vec<String>,
    /// The names of the table's sets and maps.
    pub sets: Vec<String>,
    /// The `gateways` map's elements (empty when it is missing).
    pub gateways: Vec<Element>,
    /// The rules of `mark-in`.
    pub mark_in: Vec<RuleInfo>,
    /// The rules of `route-out`.
    pub route_out: Vec<RuleInfo>,
}

/// The view the dumped table holds; an error naming what this crate would not have written.
pub(crate) fn decode(d: &Dump) -> Result<ReturnView, String> {
    let mut chains = d.chains.clone();
    chains.sort();
    if chains != [MARK_IN_CHAIN, ROUTE_OUT_CHAIN] || d.sets != [GATEWAYS_MAP] {
        return Err(format!("objects {:?} and {:?}", d.chains, d.sets));
    }
    let interface = match d.mark_in.as_slice() {
        [rule] => rule
            .comment
            .as_deref()
            .and_then(|c| c.strip_prefix("interface="))
            .filter(|i| rule.exprs == expr_names(&mark_in(i)))
            .ok_or_else(|| format!("rule of {MARK_IN_CHAIN}: {rule:?}"))?
            .to_string(),
        other => return Err(format!("{} rules in {MARK_IN_CHAIN}", other.len())),
    };
    match d.route_out.as_slice() {
        [rule] if rule.exprs == expr_names(&route_out()) => {}
        other => return Err(format!("rules of {ROUTE_OUT_CHAIN}: {other:?}")),
    }
    let mut gateways = BTreeMap::new();
    for e in &d.gateways {
        let mac: [u8; 6] = e
            .key
            .as_slice()
            .try_into()
            .map_err(|_| format!("element of {GATEWAYS_MAP} with key {:?}", e.key))?;
        let comment = e.comment().unwrap_or_default();
        let ip: Ipv4Addr = comment
            .strip_prefix("gateway=")
            .and_then(|ip| ip.parse().ok())
            .ok_or_else(|| format!("element of {GATEWAYS_MAP}: comment {comment:?}"))?;
        if e.data.as_deref() != Some(&mark_of(ip).to_ne_bytes()[..]) {
            return Err(format!(
                "element of {GATEWAYS_MAP} for {ip}: mark {:?}",
                e.data
            ));
        }
        gateways.insert(mac, ip);
    }
    Ok(ReturnView {
        interface,
        gateways,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(exprs: &[Expr], comment: Option<String>) -> RuleInfo {
        RuleInfo {
            exprs: expr_names(exprs),
            comment,
            ..RuleInfo::default()
        }
    }

    #[test]
    fn a_table_decodes_back_and_what_it_should_not_hold_is_named() {
        let view = ReturnView {
            interface: "eth1".into(),
            gateways: [([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 2))].into(),
        };
        let mut d = Dump {
            chains: vec![ROUTE_OUT_CHAIN.into(), MARK_IN_CHAIN.into()],
            sets: vec![GATEWAYS_MAP.into()],
            gateways: gateway_elements(&view.gateways),
            mark_in: vec![rule(&mark_in("eth1"), Some(interface_comment("eth1")))],
            route_out: vec![rule(&route_out(), None)],
        };
        assert_eq!(decode(&d), Ok(view));
        d.gateways[0].data = Some(vec![1, 0, 0, 0]);
        assert!(decode(&d).is_err(), "a mark not of the gateway's address");
        d.gateways.clear();
        d.mark_in[0].comment = None;
        assert!(decode(&d).is_err(), "a rule without its interface");
        d.mark_in[0].comment = Some(interface_comment("eth1"));
        d.route_out.clear();
        assert!(decode(&d).is_err(), "a flushed chain");
        d.route_out = vec![rule(&route_out(), None)];
        d.chains.push("x".into());
        assert!(decode(&d).is_err(), "a stray chain");
    }

    #[test]
    fn a_gateway_change_is_element_changes_only() {
        let a = Ipv4Addr::new(10, 0, 0, 2);
        let have = [([2, 0, 0, 0, 0, 1], a), ([2, 0, 0, 0, 0, 2], a)].into();
        let want = [([2, 0, 0, 0, 0, 1], a), ([2, 0, 0, 0, 0, 3], a)].into();
        let mut b = Batch::new();
        encode_gateways(&have, &want, &mut b);
        assert_eq!(b.len(), 2);
        let mut b = Batch::new();
        encode_gateways(&have, &have, &mut b);
        assert!(b.is_empty());
    }
}
