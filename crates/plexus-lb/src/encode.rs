//! Operations to an nf_tables batch, and the kernel's objects back to a view. Pure: the
//! batch is data until [`Dispatcher`](crate::Dispatcher) sends it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use plexus_sys::nft::{
    icmp_unreach, BaseChain, Batch, ChainType, DynsetOp, Element, Expr, Family, Hook, NatKind,
    PayloadBase, RejectKind, SetDef, Verdict, DATA_VERDICT, REG32_00,
};

use crate::names::{
    self, AFFINITY_MAP, DISPATCH_CHAIN, LIVE_SET, REFUSE_CHAIN, SERVICES_MAP, TABLE, VIPS_SET,
};
use crate::plan::{Elem, Op, Rule, SetKind};
use crate::slots::{self, shape};
use crate::view::{ServiceView, View};

const FAMILY: Family = Family::Ip;
/// nft's data type numbers, for `nft list`.
const TYPE_IPV4: u32 = 7;
/// `ipv4_addr . ipv4_addr`: a concatenation's type is its parts', each shifted 6 bits.
const TYPE_IPV4_PAIR: u32 = TYPE_IPV4 << 6 | TYPE_IPV4;
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

fn reg_addr(dreg: u32) -> (Expr, Expr) {
    (addr(false, dreg), addr(true, dreg + 1))
}

/// The kernel's form of an element: a slot range is two (its start with the backend, and
/// its end).
pub(crate) fn elements(e: &Elem) -> Vec<Element> {
    match e {
        Elem::Service {
            vip,
            chain,
            comment,
        } => vec![Element {
            key: vip.octets().to_vec(),
            verdict: Some(Verdict::Goto(chain.clone())),
            ..Element::default()
        }
        .with_comment(comment)],
        Elem::Vip(vip) => vec![Element::key(vip.octets())],
        Elem::Slot {
            start,
            end,
            backend,
        } => slots::range_elements(*start, *end, *backend).to_vec(),
        Elem::Live { vip, backend } => {
            let mut key = vip.octets().to_vec();
            key.extend_from_slice(&backend.octets());
            vec![Element::key(key)]
        }
    }
}

fn all_elements(elems: &[Elem]) -> Vec<Element> {
    elems.iter().flat_map(elements).collect()
}

fn dnat(reg: u32) -> Expr {
    // No port register: the destination port is kept.
    Expr::Nat {
        kind: NatKind::Dnat,
        family: FAMILY,
        addr: Some(reg),
        addr_max: None,
        port: None,
        port_max: None,
    }
}

/// `update @affinity { ip saddr . ip daddr timeout T : <backend in r3> }` (key in r1, r2).
fn pin(op: DynsetOp, timeout: Option<Duration>) -> Expr {
    Expr::Dynset {
        set: AFFINITY_MAP.into(),
        op,
        sreg_key: r(1),
        sreg_data: Some(r(3)),
        timeout,
    }
}

/// Registers: r0 the random number, r1 . r2 the client and the VIP (`ip saddr . ip
/// daddr`, the affinity key), r3 the backend.
fn rule_exprs(rule: &Rule) -> Vec<Expr> {
    let (saddr, daddr) = reg_addr(1);
    let pinned = Expr::Lookup {
        set: AFFINITY_MAP.into(),
        sreg: r(1),
        dreg: Some(r(3)),
        invert: false,
    };
    match rule {
        Rule::Pick { map, affinity } => {
            let mut v = slots::pick(map, r(0), r(3)).to_vec();
            if let Some(t) = affinity {
                v.extend([saddr, daddr, pin(DynsetOp::Update, Some(*t))]);
            }
            v.push(dnat(r(3)));
            v
        }
        Rule::Unpin => vec![
            saddr,
            daddr,
            pinned,
            // ip daddr . <pinned backend> not in @live
            Expr::Lookup {
                set: LIVE_SET.into(),
                sreg: r(2),
                dreg: None,
                invert: true,
            },
            pin(DynsetOp::Delete, None),
        ],
        Rule::Pinned { timeout } => vec![
            saddr,
            daddr,
            pinned,
            pin(DynsetOp::Update, Some(*timeout)),
            dnat(r(3)),
        ],
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
    // Elements get their timeout from the service's rules.
    b.add_set(
        FAMILY,
        TABLE,
        &SetDef {
            name: AFFINITY_MAP.into(),
            key_type: TYPE_IPV4_PAIR,
            key_len: 8,
            data: Some((TYPE_IPV4, 4)),
            timeout: Some(Duration::ZERO),
            dynamic: true,
            ..SetDef::default()
        },
    );
    b.add_set(
        FAMILY,
        TABLE,
        &SetDef {
            name: LIVE_SET.into(),
            key_type: TYPE_IPV4_PAIR,
            key_len: 8,
            ..SetDef::default()
        },
    );
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
            Op::AddSet {
                name,
                kind: SetKind::Slots,
            } => b.add_set(FAMILY, TABLE, &slots::map_def(name)),
            Op::DeleteSet(s) => b.delete_set(FAMILY, TABLE, s),
            Op::FlushSet(s) => b.flush_set(FAMILY, TABLE, s),
            Op::AddElements { set, elements } => {
                b.add_elements(FAMILY, TABLE, set, &all_elements(elements), true);
            }
            Op::DeleteElements { set, elements } => {
                b.delete_elements(FAMILY, TABLE, set, &all_elements(elements));
            }
        }
    }
}

/// Deletes the whole table (a missing one is no error).
pub fn encode_remove(b: &mut Batch) {
    b.destroy_table(FAMILY, TABLE);
}

/// What [`Dispatcher::read`](crate::Dispatcher::read) dumps of the table.
#[derive(Debug, Default)]
pub(crate) struct Dump {
    /// The `services` map's elements.
    pub services: Vec<Element>,
    /// Each listed service's slot map elements, by service id.
    pub slots: BTreeMap<String, Vec<Element>>,
    /// The names of the table's chains.
    pub chains: Vec<String>,
    /// The names of the table's sets and maps.
    pub sets: Vec<String>,
    /// The `live` set's elements.
    pub live: Vec<Element>,
}

/// The services of the `services` map's elements (their comments and VIPs), without
/// backends. An element this crate would not have written is an error naming it.
pub(crate) fn decode_services(services: &[Element]) -> Result<View, String> {
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
    Ok(view)
}

/// The backends of a slot map's elements (the ranges' values), sorted; an error unless the
/// ranges are exactly those this crate writes for them.
pub(crate) fn decode_slots(id: &str, els: &[Element]) -> Result<Vec<IpAddr>, String> {
    let backends = slots::decode(&names::slots_map(id), els)?;
    Ok(backends.into_iter().map(IpAddr::V4).collect())
}

/// The view the dumped table holds, and what in it belongs to no service of the view (stray
/// chains and sets, `live` elements other than those of its services with affinity). An
/// element this crate would not have written is an error naming it.
pub(crate) fn decode(d: &Dump) -> Result<(View, Vec<String>), String> {
    let mut view = decode_services(&d.services)?;
    for (id, s) in view.services.iter_mut() {
        let els = d.slots.get(id).map(Vec::as_slice).unwrap_or_default();
        s.backends = decode_slots(id, els)?;
    }
    let mut strays = Vec::new();
    let known = |id: Option<&str>| id.is_some_and(|id| view.services.contains_key(id));
    for c in &d.chains {
        let ours = c == DISPATCH_CHAIN || c == REFUSE_CHAIN;
        if !ours && !known(names::parse_service_chain(c)) {
            strays.push(format!("chain {c}"));
        }
    }
    for set in &d.sets {
        let ours = [SERVICES_MAP, VIPS_SET, AFFINITY_MAP, LIVE_SET].contains(&set.as_str());
        if !ours && !known(names::parse_slots_map(set)) {
            strays.push(format!("set {set}"));
        }
    }
    let live: Vec<Elem> = view
        .services
        .values()
        .filter(|s| s.affinity.is_some())
        .flat_map(|s| {
            s.backends.iter().filter_map(move |b| match (s.vip, b) {
                (IpAddr::V4(vip), IpAddr::V4(backend)) => Some(Elem::Live {
                    vip,
                    backend: *backend,
                }),
                _ => None,
            })
        })
        .collect();
    if shape(&all_elements(&live)) != shape(&d.live) {
        strays.push(format!(
            "elements of {LIVE_SET} other than the live backends"
        ));
    }
    Ok((view, strays))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{slot_ranges, SLOTS};

    #[test]
    fn a_plan_encodes_one_message_per_operation_and_the_base_as_eleven() {
        let mut b = Batch::new();
        encode(&[Op::Base], &mut b);
        assert_eq!(b.len(), 11);
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
    fn a_table_decodes_back_and_strays_are_named() {
        let id = "abcdef012345";
        let svc = Elem::Service {
            vip: [10, 0, 0, 9].into(),
            chain: names::service_chain(id),
            comment: names::service_comment("web", Some(Duration::from_secs(3))),
        };
        let backends: std::collections::BTreeSet<Ipv4Addr> =
            [[10, 0, 0, 3].into(), [10, 0, 0, 2].into()].into();
        let live: Vec<Elem> = backends
            .iter()
            .map(|&backend| Elem::Live {
                vip: [10, 0, 0, 9].into(),
                backend,
            })
            .collect();
        let mut d = Dump {
            services: elements(&svc),
            slots: [(id.to_string(), all_elements(&slot_ranges(&backends)))].into(),
            chains: vec!["dispatch".into(), names::service_chain(id)],
            sets: vec!["services".into(), "live".into(), names::slots_map(id)],
            live: all_elements(&live),
        };
        let (view, strays) = decode(&d).unwrap();
        let s = &view.services[id];
        assert_eq!(s.name, "web");
        assert_eq!(s.affinity, Some(Duration::from_secs(3)));
        let want: Vec<IpAddr> = vec![[10, 0, 0, 2].into(), [10, 0, 0, 3].into()];
        assert_eq!(s.backends, want);
        assert!(strays.is_empty(), "{strays:?}");
        d.chains.push("svc-zzzzzzzzzzzz".into());
        d.sets.push("bes-zzzzzzzzzzzz".into());
        d.live.pop();
        let (_, strays) = decode(&d).unwrap();
        assert_eq!(strays.len(), 3, "{strays:?}");
        // Ranges this crate would not write (one backend's end moved).
        if let Some(e) = d.slots.get_mut(id).and_then(|els| els.get_mut(1)) {
            e.key = 7u32.to_be_bytes().to_vec();
        }
        assert!(decode(&d).is_err());
        let bad = Element::key(vec![1, 2]);
        assert!(decode_services(&[bad]).is_err());
    }

    #[test]
    fn slot_ranges_cover_all_numbers_evenly() {
        let backends: std::collections::BTreeSet<Ipv4Addr> =
            (1..=3u8).map(|k| Ipv4Addr::new(10, 0, 0, k)).collect();
        let ranges = slot_ranges(&backends);
        let mut next = 0u32;
        for e in &ranges {
            let Elem::Slot { start, end, .. } = e else {
                panic!("{e:?}")
            };
            assert_eq!(*start, next);
            assert!((end - start).abs_diff(SLOTS / 3) <= 1, "{ranges:?}");
            next = *end;
        }
        assert_eq!(next, SLOTS);
    }
}
