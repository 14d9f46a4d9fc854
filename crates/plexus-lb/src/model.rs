//! A model of nf_tables for the table's objects, to check plans without a kernel: operations
//! fail as the kernel fails them (a missing object, an element already present, a chain or
//! set still referred to or not empty), and the state a view should leave is declared
//! independently of the planner.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use proptest::prelude::*;

use crate::encode::decode;
use crate::names::{self, DISPATCH_CHAIN, REFUSE_CHAIN, SERVICES_MAP, VIPS_SET};
use crate::plan::{plan, Elem, Op, Rule, SetKind};
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
        Elem::Slot { index, .. } => index.to_string(),
    }
}

fn rule_refs(r: &MRule) -> (Vec<&str>, Vec<&str>) {
    match r {
        MRule::Dispatch => (vec![SERVICES_MAP], vec![]),
        MRule::Refuse => (vec![VIPS_SET], vec![]),
        MRule::R(Rule::Sticky { set, chain }) => (vec![set], vec![chain]),
        MRule::R(Rule::Pick { map, .. }) => (vec![map], vec![]),
        MRule::R(Rule::Backend { affinity, .. }) => {
            (affinity.iter().map(|(s, _)| s.as_str()).collect(), vec![])
        }
    }
}

fn elem_chain(e: &Elem) -> Option<&str> {
    match e {
        Elem::Service { chain, .. } | Elem::Slot { chain, .. } => Some(chain),
        Elem::Vip(_) => None,
    }
}

impl Kernel {
    fn rules(&self) -> impl Iterator<Item = &MRule> {
        self.chains.values().flatten()
    }

    fn chain_referred(&self, c: &str) -> bool {
        self.rules().any(|r| rule_refs(r).1.contains(&c))
            || self
                .sets
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
                for s in [SERVICES_MAP, VIPS_SET] {
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
                let (sets, chains) = rule_refs(&r);
                if let Some(s) = sets.iter().find(|s| !self.sets.contains_key(**s)) {
                    return Err(format!("rule in {chain}: no set {s}"));
                }
                if let Some(c) = chains.iter().find(|c| !self.chains.contains_key(**c)) {
                    return Err(format!("rule in {chain}: no chain {c}"));
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
                if self.rules().any(|r| rule_refs(r).0.contains(&s.as_str())) {
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
            k.sets.get_mut(SERVICES_MAP).unwrap().1.insert(key(&el), el);
            let el = Elem::Vip(vip);
            k.sets.get_mut(VIPS_SET).unwrap().1.insert(key(&el), el);
            let mut rules = Vec::new();
            let mut slots = BTreeMap::new();
            for (i, b) in s.backends.iter().map(|b| v4(*b)).enumerate() {
                let chain = names::backend_chain(&id, b);
                let aff = s.affinity.map(|t| (names::affinity_set(&id, b), t));
                if let Some((set, _)) = &aff {
                    k.sets
                        .insert(set.clone(), (Some(SetKind::Affinity), BTreeMap::new()));
                    rules.push(MRule::R(Rule::Sticky {
                        set: set.clone(),
                        chain: chain.clone(),
                    }));
                }
                let rule = MRule::R(Rule::Backend {
                    addr: b,
                    affinity: aff,
                });
                k.chains.insert(chain.clone(), vec![rule]);
                let el = Elem::Slot {
                    index: i as u32,
                    chain,
                };
                slots.insert(key(&el), el);
            }
            let map = names::slots_map(&id);
            if !s.backends.is_empty() {
                rules.push(MRule::R(Rule::Pick {
                    modulus: s.backends.len() as u32,
                    map: map.clone(),
                }));
            }
            k.chains.insert(svc, rules);
            k.sets.insert(map, (Some(SetKind::Slots), slots));
        }
        k
    }

    /// What `read` would find: the services map's elements and the chains' names.
    fn read(&self) -> View {
        let els: Vec<_> = self
            .sets
            .get(SERVICES_MAP)
            .map(|s| s.1.values().map(crate::encode::element).collect())
            .unwrap_or_default();
        let chains: Vec<String> = self.chains.keys().cloned().collect();
        decode(&els, &chains).unwrap().0
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
    fn one_backend_more_or_less_is_a_few_operations(a in arb_view(), pick in any::<prop::sample::Index>()) {
        prop_assume!(!a.services.is_empty());
        let mut a = a;
        let ids: Vec<String> = a.services.keys().cloned().collect();
        let id = pick.get(&ids);
        if let Some(s) = a.services.get_mut(id) {
            s.affinity = None;
        }
        let mut b = a.clone();
        if let Some(s) = b.services.get_mut(id) {
            s.backends.push(Ipv4Addr::new(10, 3, 0, 1).into());
        }
        let add = plan(&a, &b).unwrap();
        prop_assert!(add.len() <= 6, "{add:#?}");
        let del = plan(&b, &a).unwrap();
        prop_assert!(del.len() <= 6, "{del:#?}");
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
    assert_eq!(ops.len(), 6, "{ops:#?}");
    let mut batch = plexus_sys::nft::Batch::new();
    crate::encode(&ops, &mut batch);
    assert_eq!(batch.len(), 6);
}
