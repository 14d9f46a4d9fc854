//! Operations to an nf_tables batch, and the kernel's objects back to a view. Pure: the
//! batch is data until [`Dispatcher`](crate::Dispatcher) sends it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use plexus_sys::nft::{
    icmp_unreach, BaseChain, Batch, ChainType, DynsetOp, Element, Expr, Family, Hook, NatKind,
    NumgenKind, PayloadBase, RejectKind, SetDef, Verdict, DATA_VERDICT, REG32_00,
};

use crate::names::{self, DISPATCH_CHAIN, REFUSE_CHAIN, SERVICES_MAP, TABLE, VIPS_SET};
use crate::plan::{Elem, Op, Rule, SetKind};
use crate::view::{ServiceView, View};

const FAMILY: Family = Family::Ip;
/// nft's data type numbers, for `nft list`.
const TYPE_INTEGER: u32 = 4;
const TYPE_IPV4: u32 = 7;
/// Priorities of the base chains: NAT at dstnat, the refusal at filter.
const DSTNAT: i32 = -100;
const FILTER: i32 = 0;

fn r(n: u32) -> u32 {
    REG32_00 + n
}

/// `ip saddr` / `ip daddr` into register `n`.
fn addr(daddr: bool, n: u32) -> Expr {
    Expr::Payload {
        base: PayloadBase::Network,
        offset: if daddr { 16 } else { 12 },
        len: 4,
        dreg: r(n),
    }
}

fn in_set(set: &str, n: u32) -> Expr {
    Expr::Lookup {
        set: set.into(),
        sreg: r(n),
        dreg: None,
        invert: false,
    }
}

fn ipv4_set(name: &str) -> SetDef {
    SetDef {
        name: name.into(),
        key_type: TYPE_IPV4,
        key_len: 4,
        ..SetDef::default()
    }
}

fn base_chain(kind: ChainType, priority: i32) -> Option<BaseChain> {
    Some(BaseChain {
        kind,
        hook: Hook::Output,
        priority,
        policy: Verdict::Accept,
    })
}

/// The kernel's form of an element.
pub(crate) fn element(e: &Elem) -> Element {
    match e {
        Elem::Service {
            vip,
            chain,
            comment,
        } => Element {
            key: vip.octets().to_vec(),
            verdict: Some(Verdict::Goto(chain.clone())),
            ..Element::default()
        }
        .with_comment(comment),
        Elem::Vip(vip) => Element::key(vip.octets()),
        Elem::Slot { index, chain } => Element {
            // numgen writes its number in host order.
            key: index.to_ne_bytes().to_vec(),
            verdict: Some(Verdict::Goto(chain.clone())),
            ..Element::default()
        },
    }
}

fn rule_exprs(rule: &Rule) -> Vec<Expr> {
    match rule {
        Rule::Sticky { set, chain } => vec![
            addr(false, 0),
            in_set(set, 0),
            Expr::Verdict(Verdict::Goto(chain.clone())),
        ],
        Rule::Pick { modulus, map } => vec![
            Expr::Numgen {
                kind: NumgenKind::Random,
                modulus: *modulus,
                offset: 0,
                dreg: r(0),
            },
            Expr::vmap(map, r(0)),
        ],
        Rule::Backend { addr: to, affinity } => {
            let mut v = Vec::new();
            if let Some((set, timeout)) = affinity {
                v.push(addr(false, 1));
                v.push(Expr::Dynset {
                    set: set.clone(),
                    op: DynsetOp::Update,
                    sreg_key: r(1),
                    sreg_data: None,
                    timeout: Some(*timeout),
                });
            }
            v.push(Expr::Immediate {
                dreg: r(0),
                data: to.octets().to_vec(),
            });
            // No port register: the destination port is kept.
            v.push(Expr::Nat {
                kind: NatKind::Dnat,
                family: FAMILY,
                addr: Some(r(0)),
                addr_max: None,
                port: None,
                port_max: None,
            });
            v
        }
    }
}

fn base(b: &mut Batch) {
    b.add_table(FAMILY, TABLE);
    b.add_set(
        FAMILY,
        TABLE,
        &SetDef {
            data: Some((DATA_VERDICT, 0)),
            ..ipv4_set(SERVICES_MAP)
        },
    );
    b.add_set(FAMILY, TABLE, &ipv4_set(VIPS_SET));
    // ip daddr vmap @services
    b.add_chain(
        FAMILY,
        TABLE,
        DISPATCH_CHAIN,
        base_chain(ChainType::Nat, DSTNAT),
    );
    b.flush_chain(FAMILY, TABLE, DISPATCH_CHAIN);
    let dispatch = [addr(true, 0), Expr::vmap(SERVICES_MAP, r(0))];
    b.add_rule(FAMILY, TABLE, DISPATCH_CHAIN, &dispatch);
    // ip daddr @vips reject: no backend took it.
    b.add_chain(
        FAMILY,
        TABLE,
        REFUSE_CHAIN,
        base_chain(ChainType::Filter, FILTER),
    );
    b.flush_chain(FAMILY, TABLE, REFUSE_CHAIN);
    let refuse = [
        addr(true, 0),
        in_set(VIPS_SET, 0),
        Expr::Reject(RejectKind::Icmp(icmp_unreach::PORT)),
    ];
    b.add_rule(FAMILY, TABLE, REFUSE_CHAIN, &refuse);
}

/// Appends `ops` to a batch, in order.
pub fn encode(ops: &[Op], b: &mut Batch) {
    for op in ops {
        match op {
            Op::Base => base(b),
            Op::AddChain(c) => b.add_chain(FAMILY, TABLE, c, None),
            Op::DeleteChain(c) => b.delete_chain(FAMILY, TABLE, c),
            Op::FlushChain(c) => b.flush_chain(FAMILY, TABLE, c),
            Op::AddRule { chain, rule } => b.add_rule(FAMILY, TABLE, chain, &rule_exprs(rule)),
            Op::AddSet { name, kind } => {
                let def = match kind {
                    SetKind::Slots => SetDef {
                        name: name.clone(),
                        key_type: TYPE_INTEGER,
                        key_len: 4,
                        data: Some((DATA_VERDICT, 0)),
                        ..SetDef::default()
                    },
                    // Elements get their timeout from the backend chain's update.
                    SetKind::Affinity => SetDef {
                        timeout: Some(Duration::ZERO),
                        dynamic: true,
                        ..ipv4_set(name)
                    },
                };
                b.add_set(FAMILY, TABLE, &def);
            }
            Op::DeleteSet(s) => b.delete_set(FAMILY, TABLE, s),
            Op::FlushSet(s) => b.flush_set(FAMILY, TABLE, s),
            Op::AddElements { set, elements } => {
                let els: Vec<Element> = elements.iter().map(element).collect();
                b.add_elements(FAMILY, TABLE, set, &els, true);
            }
            Op::DeleteElements { set, elements } => {
                let els: Vec<Element> = elements.iter().map(element).collect();
                b.delete_elements(FAMILY, TABLE, set, &els);
            }
        }
    }
}

/// Deletes the whole table (a missing one is no error).
pub fn encode_remove(b: &mut Batch) {
    b.destroy_table(FAMILY, TABLE);
}

/// What [`decode`] found besides the view: objects of no service in the map.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Strays {
    pub chains: Vec<String>,
}

/// The view the table's objects make: the `services` map's elements and the chains' names.
/// An element this crate would not have written is an error naming it.
pub(crate) fn decode(services: &[Element], chains: &[String]) -> Result<(View, Strays), String> {
    let mut view = View::default();
    for e in services {
        let vip: [u8; 4] =
            e.key.as_slice().try_into().map_err(|_| {
                format!("element of {SERVICES_MAP} with a {}-byte key", e.key.len())
            })?;
        let vip = Ipv4Addr::from(vip);
        let id = match &e.verdict {
            Some(Verdict::Goto(c)) => names::parse_service_chain(c),
            _ => None,
        }
        .ok_or_else(|| format!("element {vip} of {SERVICES_MAP}: verdict {:?}", e.verdict))?;
        let comment = e.comment().unwrap_or_default();
        let (name, affinity) = names::parse_service_comment(&comment)
            .ok_or_else(|| format!("element {vip} of {SERVICES_MAP}: comment {comment:?}"))?;
        let s = ServiceView {
            name,
            vip: IpAddr::V4(vip),
            backends: Vec::new(),
            affinity,
        };
        if view.services.insert(id.to_string(), s).is_some() {
            return Err(format!("service {id} has two VIPs in {SERVICES_MAP}"));
        }
    }
    let mut backends: BTreeMap<&str, Vec<IpAddr>> = BTreeMap::new();
    let mut strays = Strays::default();
    for c in chains {
        let Some((id, b)) = names::parse_backend_chain(c) else {
            continue;
        };
        if view.services.contains_key(id) {
            backends.entry(id).or_default().push(IpAddr::V4(b));
        } else {
            strays.chains.push(c.clone());
        }
    }
    for (id, mut bs) in backends {
        bs.sort();
        if let Some(s) = view.services.get_mut(id) {
            s.backends = bs;
        }
    }
    for c in chains {
        if let Some(id) = names::parse_service_chain(c) {
            if !view.services.contains_key(id) {
                strays.chains.push(c.clone());
            }
        }
    }
    Ok((view, strays))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_encodes_one_message_per_operation_and_the_base_as_nine() {
        let mut b = Batch::new();
        encode(&[Op::Base], &mut b);
        assert_eq!(b.len(), 9);
        let mut b = Batch::new();
        let ops = [
            Op::AddChain("svc-x".into()),
            Op::AddElements {
                set: "vips".into(),
                elements: vec![Elem::Vip([10, 0, 0, 1].into())],
            },
            Op::DeleteElements {
                set: "vips".into(),
                elements: vec![],
            },
        ];
        encode(&ops, &mut b);
        assert_eq!(b.len(), 2, "an empty element list sends nothing");
    }

    #[test]
    fn service_elements_decode_back() {
        let e = element(&Elem::Service {
            vip: [10, 0, 0, 9].into(),
            chain: names::service_chain("abcdef012345"),
            comment: names::service_comment("web", Some(Duration::from_secs(3))),
        });
        let chains = vec![
            "dispatch".to_string(),
            "svc-abcdef012345".into(),
            names::backend_chain("abcdef012345", [10, 0, 0, 3].into()),
            names::backend_chain("abcdef012345", [10, 0, 0, 2].into()),
            names::backend_chain("zzzzzzzzzzzz", [10, 0, 0, 2].into()),
            "svc-zzzzzzzzzzzz".into(),
        ];
        let (view, strays) = decode(&[e], &chains).unwrap();
        let s = &view.services["abcdef012345"];
        assert_eq!(s.name, "web");
        assert_eq!(s.affinity, Some(Duration::from_secs(3)));
        let want: Vec<IpAddr> = vec![[10, 0, 0, 2].into(), [10, 0, 0, 3].into()];
        assert_eq!(s.backends, want);
        assert_eq!(strays.chains.len(), 2);
        let bad = Element::key(vec![1, 2]);
        assert!(decode(&[bad], &[]).is_err());
    }
}
