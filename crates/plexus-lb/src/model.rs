//! A model of nf_tables for the table's objects, to check plans without a kernel: operations
//! fail as the kernel fails them (a missing object, an element already present, a chain or
//! set still referred to or not empty), and the state a view should leave is declared
//! independently of the planner.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use proptest::prelude::*;

use crate::encode::{decode, elements, Dump};
use crate::names::{
    self, AFFINITY_MAP, DISPATCH_CHAIN, LIVE_SET, REFUSE_CHAIN, SERVICES_MAP, VIPS_SET,
};
use crate::plan::{plan, plan_service, slot_ranges, Elem, Op, Rule, SetKind};
use crate::view::{ServiceView, View};

#[derive(Debug, Clone, PartialEq, Eq)]
enum MRule {
    Dispatch,
    Refuse,
    R(Rule),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Kernel {
    table: bool,
    chains: BTreeMap<String, Vec<MRule>>,
    sets: BTreeMap<String, (Option<SetKind>, BTreeMap<String, Elem>)>,
}

fn key(e: &Elem) -> String {
    match e {
        Elem::Service { vip, .. } | Elem::Vip(vip) => vip.to_string(),
        Elem::Slot { start, .. } => start.to_string(),
        Elem::Live { vip, backend } => format!("{vip}.{backend}"),
    }
}

/// The sets a rule refers to.
fn rule_refs(r: &MRule) -> Vec<&str> {
    match r {
        MRule::Dispatch => vec![SERVICES_MAP],
        MRule::Refuse => vec![VIPS_SET],
        MRule::R(Rule::Pick { map, affinity }) => {
            let mut v = vec![map.as_str()];
            if affinity.is_some() {
                v.push(AFFINITY_MAP);
            }
            v
        }
        MRule::R(Rule::Unpin) => vec![AFFINITY_MAP, LIVE_SET],
        MRule::R(Rule::Pinned { .. }) => vec![AFFINITY_MAP],
    }
}

fn elem_chain(e: &Elem) -> Option<&str> {
    match e {
        Elem::Service { chain, .. } => Some(chain),
        _ => None,
    }
}

impl Kernel {
    fn rules(&self) -> impl Iterator<Item = &MRule> {
        self.chains.values().flatten()
    }

    fn chain_referred(&self, c: &str) -> bool {
        self.sets
            .values()
            .flat_map(|(_, els)| els.values())
            .any(|e| elem_chain(e) == Some(c))
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        if !self.table && op != &Op::Base {
            return Err(format!("{op:?}: no table"));
        }
        match op {
            Op::Base => {
                self.table = true;
                for s in [SERVICES_MAP, VIPS_SET, AFFINITY_MAP, LIVE_SET] {
                    self.sets.entry(s.into()).or_default();
                }
                self.chains
                    .insert(DISPATCH_CHAIN.into(), vec![MRule::Dispatch]);
                self.chains.insert(REFUSE_CHAIN.into(), vec![MRule::Refuse]);
            }
            Op::AddChain(c) => {
                self.chains.entry(c.clone()).or_default();
            }
            Op::DeleteChain(c) => {
                match self.chains.get(c) {
                    None => return Err(format!("delete chain {c}: missing")),
                    Some(r) if !r.is_empty() => return Err(format!("delete chain {c}: rules")),
                    Some(_) => {}
                }
                if self.chain_referred(c) {
                    return Err(format!("delete chain {c}: referred to"));
                }
                self.chains.remove(c);
            }
            Op::FlushChain(c) => self
                .chains
                .get_mut(c)
                .ok_or(format!("flush chain {c}: missing"))?
                .clear(),
            Op::AddRule { chain, rule } => {
                let r = MRule::R(rule.clone());
                if let Some(s) = rule_refs(&r).iter().find(|s| !self.sets.contains_key(**s)) {
                    return Err(format!("rule in {chain}: no set {s}"));
                }
                self.chains
                    .get_mut(chain)
                    .ok_or(format!("add rule: no chain {chain}"))?
                    .push(r);
            }
            Op::AddSet { name, kind } => {
                let s = self.sets.entry(name.clone()).or_default();
                if s.0.is_some() && s.0 != Some(*kind) {
                    return Err(format!("add set {name}: another kind"));
                }
                s.0 = Some(*kind);
            }
            Op::DeleteSet(s) => {
                if !self.sets.contains_key(s) {
                    return Err(format!("delete set {s}: missing"));
                }
                if self.rules().any(|r| rule_refs(r).contains(&s.as_str())) {
                    return Err(format!("delete set {s}: referred to"));
                }
                self.sets.remove(s);
            }
            Op::FlushSet(s) => self
                .sets
                .get_mut(s)
                .ok_or(format!("flush set {s}: missing"))?
                .1
                .clear(),
            Op::AddElements { set, elements } => {
                for e in elements {
                    if let Some(c) = elem_chain(e) {
                        if !self.chains.contains_key(c) {
                            return Err(format!("element of {set}: no chain {c}"));
                        }
                    }
                    let s = self.sets.get_mut(set).ok_or(format!("no set {set}"))?;
                    if s.1.insert(key(e), e.clone()).is_some() {
                        return Err(format!("element {} of {set}: exists", key(e)));
                    }
                }
            }
            Op::DeleteElements { set, elements } => {
                for e in elements {
                    let s = self.sets.get_mut(set).ok_or(format!("no set {set}"))?;
                    if s.1.remove(&key(e)).is_none() {
                        return Err(format!("element {} of {set}: missing", key(e)));
                    }
                }
            }
        }
        Ok(())
    }

    /// What the table should hold for `view` (declared, not planned).
    fn expected(view: &View, base: bool) -> Self {
        let mut k = Kernel::default();
        if !base {
            return k;
        }
        k.apply(&Op::Base).unwrap();
        for (id, s) in view.normalized().services {
            let vip = v4(s.vip);
            let svc = names::service_chain(id.as_str());
            let comment = names::service_comment(&s.name, s.affinity);
            let el = Elem::Service {
                vip,
                chain: svc.clone(),
                comment,
            };
            k.elem(SERVICES_MAP, el);
            k.elem(VIPS_SET, Elem::Vip(vip));
            let backends = s.backends.iter().map(|b| v4(*b)).collect();
            let map = names::slots_map(&id);
            let mut rules = Vec::new();
            if let Some(timeout) = s.affinity {
                rules.push(MRule::R(Rule::Unpin));
                rules.push(MRule::R(Rule::Pinned { timeout }));
                for &backend in &backends {
                    k.elem(LIVE_SET, Elem::Live { vip, backend });
                }
            }
            rules.push(MRule::R(Rule::Pick {
                map: map.clone(),
                affinity: s.affinity,
            }));
            k.chains.insert(svc, rules);
            let slots = slot_ranges(&backends)
                .into_iter()
                .map(|e| (key(&e), e))
                .collect();
            k.sets.insert(map, (Some(SetKind::Slots), slots));
        }
        k
    }

    fn elem(&mut self, set: &str, e: Elem) {
        if let Some(s) = self.sets.get_mut(set) {
            s.1.insert(key(&e), e);
        }
    }

    fn elements_of(&self, set: &str) -> Vec<plexus_sys::nft::Element> {
        self.sets
            .get(set)
            .map(|s| s.1.values().flat_map(elements).collect())
            .unwrap_or_default()
    }

    /// What `read` would find.
    fn read(&self) -> View {
        let services = self.elements_of(SERVICES_MAP);
        let ids = crate::encode::decode_services(&services).unwrap();
        let d = Dump {
            services,
            slots: ids
                .services
                .keys()
                .map(|id| (id.clone(), self.elements_of(&names::slots_map(id))))
                .collect(),
            chains: self.chains.keys().cloned().collect(),
            sets: self.sets.keys().cloned().collect(),
            live: self.elements_of(LIVE_SET),
        };
        let (view, strays) = decode(&d).unwrap();
        assert!(strays.is_empty(), "{strays:?}");
        view
    }
}

fn v4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => unreachable!("views of the model are IPv4"),
    }
}

fn arb_service(i: usize) -> impl Strategy<Value = ServiceView> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(any::<bool>(), 8),
        prop_oneof![Just(None), Just(Some(10u64)), Just(Some(20u64))],
    )
        .prop_map(move |(alt, name, bits, aff)| ServiceView {
            name: if name { "web".into() } else { "api".into() },
            vip: IpAddr::V4(Ipv4Addr::new(10, 1, i as u8, 1 + alt as u8)),
            backends: bits
                .iter()
                .enumerate()
                .filter(|(_, b)| **b)
                .map(|(k, _)| IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1 + k as u8)))
                .collect(),
            affinity: aff.map(Duration::from_secs),
        })
}

fn arb_view() -> impl Strategy<Value = View> {
    prop::collection::vec(prop::option::of(any::<u8>()), 5).prop_flat_map(|present| {
        let services: Vec<_> = present
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_some())
            .map(|(i, _)| arb_service(i).prop_map(move |s| (format!("s{i:011}"), s)))
            .collect();
        services.prop_map(|v| View {
            services: v.into_iter().collect(),
        })
    })
}

proptest! {
    #[test]
    fn a_plan_takes_the_table_from_one_view_to_the_other(a in arb_view(), b in arb_view()) {
        let mut k = Kernel::expected(&a, !a.services.is_empty());
        let ops = plan(&a, &b).unwrap();
        for op in &ops {
            if let Err(e) = k.apply(op) {
                prop_assert!(false, "{e}\nplan: {ops:#?}");
            }
        }
        let base = !a.services.is_empty() || !b.services.is_empty();
        prop_assert_eq!(&k, &Kernel::expected(&b, base));
        prop_assert_eq!(k.read(), b.normalized());
        prop_assert!(plan(&b, &b).unwrap().is_empty());
    }

    #[test]
    fn service_by_service_plans_take_the_table_there_too(a in arb_view(), b in arb_view()) {
        let mut k = Kernel::expected(&a, !a.services.is_empty());
        let ids: std::collections::BTreeSet<&String> =
            a.services.keys().chain(b.services.keys()).collect();
        for id in ids {
            let ops = plan_service(id, a.services.get(id), b.services.get(id)).unwrap();
            for op in &ops {
                if let Err(e) = k.apply(op) {
                    prop_assert!(false, "{e}\nplan of {id}: {ops:#?}");
                }
            }
        }
        let base = !a.services.is_empty() || !b.services.is_empty();
        prop_assert_eq!(&k, &Kernel::expected(&b, base));
    }

    #[test]
    fn one_backend_more_or_less_is_a_few_operations(a in arb_view(), pick in any::<prop::sample::Index>()) {
        prop_assume!(!a.services.is_empty());
        let ids: Vec<String> = a.services.keys().cloned().collect();
        let id = pick.get(&ids);
        let mut b = a.clone();
        if let Some(s) = b.services.get_mut(id) {
            s.backends.push(Ipv4Addr::new(10, 3, 0, 1).into());
        }
        // The slot map's elements replaced; with affinity the live pair too.
        let most = if a.services[id].affinity.is_some() { 3 } else { 2 };
        let add = plan(&a, &b).unwrap();
        prop_assert!(add.len() <= most, "{add:#?}");
        let del = plan(&b, &a).unwrap();
        prop_assert!(del.len() <= most, "{del:#?}");
        let one = plan_service(id, b.services.get(id), a.services.get(id)).unwrap();
        prop_assert_eq!(one, del);
    }
}

#[test]
fn a_one_backend_change_does_not_grow_with_the_services() {
    let mut a = View::default();
    for i in 0..10_000u32 {
        let base = 0x0a40_0000 + i * 8;
        a.services.insert(
            format!("s{i:011}"),
            ServiceView {
                name: format!("svc{i}"),
                vip: IpAddr::V4(Ipv4Addr::from(base)),
                backends: (1..5)
                    .map(|k| IpAddr::V4(Ipv4Addr::from(base + k)))
                    .collect(),
                affinity: None,
            },
        );
    }
    let mut b = a.clone();
    let s = b.services.get_mut("s00000000042").unwrap();
    s.backends.pop();
    let ops = plan(&a, &b).unwrap();
    assert_eq!(ops.len(), 2, "{ops:#?}");
    let mut batch = plexus_sys::nft::Batch::new();
    crate::encode(&ops, &mut batch);
    assert_eq!(batch.len(), 2);
}
