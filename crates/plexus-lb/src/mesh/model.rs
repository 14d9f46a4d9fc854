//! A model of nf_tables for the mesh table's objects, to check plans without a kernel:
//! operations fail as the kernel fails them (a missing object, an element already present,
//! a chain or set still referred to or not empty), and the state a view should leave is
//! declared independently of the planner.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::encode::{base_rule, decode, elements, expr_names, Dump};
use super::names::{self, ADDRESSES_SET, OUTPUT_CHAIN, PORTS_MAP, PREROUTING_CHAIN};
use super::plan::{plan, slot_elems, MeshElem, MeshOp};
use super::view::{MeshScope, MeshView, PortKey, PortView, Protocol};

#[derive(Debug, Clone, PartialEq, Eq)]
enum MRule {
    /// A base chain's rule: with the `addresses` lookup or not.
    Base {
        restricted: bool,
    },
    Port {
        map: String,
        target: u16,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Kernel {
    table: bool,
    chains: BTreeMap<String, Vec<MRule>>,
    sets: BTreeMap<String, BTreeMap<String, MeshElem>>,
}

fn key(e: &MeshElem) -> String {
    match e {
        MeshElem::Port { key, .. } => key.to_string(),
        MeshElem::Address(a) => a.to_string(),
        MeshElem::Slot { start, .. } => start.to_string(),
    }
}

fn rule_refs(r: &MRule) -> Vec<&str> {
    match r {
        MRule::Base { restricted: true } => vec![PORTS_MAP, ADDRESSES_SET],
        MRule::Base { restricted: false } => vec![PORTS_MAP],
        MRule::Port { map, .. } => vec![map.as_str()],
    }
}

fn restricted(scope: &MeshScope) -> Option<&BTreeSet<Ipv4Addr>> {
    match scope {
        MeshScope::Host { addresses: Some(a) } => Some(a),
        _ => None,
    }
}

impl Kernel {
    fn referred(&self, set: &str) -> bool {
        self.chains
            .values()
            .flatten()
            .any(|r| rule_refs(r).contains(&set))
    }

    fn base(&mut self, scope: &MeshScope) -> Result<(), String> {
        self.table = true;
        self.sets.entry(PORTS_MAP.into()).or_default();
        let only = restricted(scope);
        if let Some(a) = only {
            let els = a
                .iter()
                .map(|&a| (a.to_string(), MeshElem::Address(a)))
                .collect();
            self.sets.insert(ADDRESSES_SET.into(), els);
        }
        let rule = MRule::Base {
            restricted: only.is_some(),
        };
        self.chains
            .insert(PREROUTING_CHAIN.into(), vec![rule.clone()]);
        match scope {
            MeshScope::Host { .. } => {
                self.chains.insert(OUTPUT_CHAIN.into(), vec![rule]);
            }
            MeshScope::Gateway => {
                self.chains.remove(OUTPUT_CHAIN);
            }
        }
        if only.is_none() {
            if self.referred(ADDRESSES_SET) {
                return Err("destroy set addresses: referred to".into());
            }
            self.sets.remove(ADDRESSES_SET);
        }
        Ok(())
    }

    fn apply(&mut self, op: &MeshOp) -> Result<(), String> {
        if !self.table && !matches!(op, MeshOp::Base(_) | MeshOp::RemoveTable) {
            return Err(format!("{op:?}: no table"));
        }
        match op {
            MeshOp::Base(scope) => self.base(scope)?,
            MeshOp::RemoveTable => *self = Kernel::default(),
            MeshOp::AddChain(c) => {
                self.chains.entry(c.clone()).or_default();
            }
            MeshOp::DeleteChain(c) => {
                match self.chains.get(c) {
                    None => return Err(format!("delete chain {c}: missing")),
                    Some(r) if !r.is_empty() => return Err(format!("delete chain {c}: rules")),
                    Some(_) => {}
                }
                let used = self
                    .sets
                    .values()
                    .flat_map(|els| els.values())
                    .any(|e| matches!(e, MeshElem::Port { chain, .. } if chain == c));
                if used {
                    return Err(format!("delete chain {c}: referred to"));
                }
                self.chains.remove(c);
            }
            MeshOp::FlushChain(c) => self
                .chains
                .get_mut(c)
                .ok_or(format!("flush chain {c}: missing"))?
                .clear(),
            MeshOp::AddRule { chain, map, target } => {
                if !self.sets.contains_key(map) {
                    return Err(format!("rule in {chain}: no set {map}"));
                }
                self.chains
                    .get_mut(chain)
                    .ok_or(format!("add rule: no chain {chain}"))?
                    .push(MRule::Port {
                        map: map.clone(),
                        target: *target,
                    });
            }
            MeshOp::AddSlots(s) => {
                self.sets.entry(s.clone()).or_default();
            }
            MeshOp::DeleteSet(s) => {
                if !self.sets.contains_key(s) {
                    return Err(format!("delete set {s}: missing"));
                }
                if self.referred(s) {
                    return Err(format!("delete set {s}: referred to"));
                }
                self.sets.remove(s);
            }
            MeshOp::FlushSet(s) => self
                .sets
                .get_mut(s)
                .ok_or(format!("flush set {s}: missing"))?
                .clear(),
            MeshOp::AddElements { set, elements } => {
                for e in elements {
                    if let MeshElem::Port { chain, .. } = e {
                        if !self.chains.contains_key(chain) {
                            return Err(format!("element of {set}: no chain {chain}"));
                        }
                    }
                    let s = self.sets.get_mut(set).ok_or(format!("no set {set}"))?;
                    if s.insert(key(e), e.clone()).is_some() {
                        return Err(format!("element {} of {set}: exists", key(e)));
                    }
                }
            }
            MeshOp::DeleteElements { set, elements } => {
                for e in elements {
                    let s = self.sets.get_mut(set).ok_or(format!("no set {set}"))?;
                    if s.remove(&key(e)).is_none() {
                        return Err(format!("element {} of {set}: missing", key(e)));
                    }
                }
            }
        }
        Ok(())
    }

    /// What the table should hold for `view` (declared, not planned).
    fn expected(view: &MeshView) -> Self {
        let view = view.normalized();
        let mut k = Kernel::default();
        if view.ports.is_empty() {
            return k;
        }
        k.base(&view.scope).unwrap();
        for (pk, p) in &view.ports {
            let chain = names::port_chain(pk);
            let map = names::slots_map(pk);
            let comment = names::port_comment(&p.service, p.target);
            let el = MeshElem::Port {
                key: *pk,
                chain: chain.clone(),
                comment,
            };
            k.sets
                .entry(PORTS_MAP.into())
                .or_default()
                .insert(key(&el), el);
            let rule = MRule::Port {
                map: map.clone(),
                target: p.target,
            };
            k.chains.insert(chain, vec![rule]);
            let backends: BTreeSet<Ipv4Addr> = p.backends.iter().copied().collect();
            let slots = slot_elems(&backends)
                .into_iter()
                .map(|e| (key(&e), e))
                .collect();
            k.sets.insert(map, slots);
        }
        k
    }

    fn elements_of(&self, set: &str) -> Vec<plexus_sys::nft::Element> {
        self.sets
            .get(set)
            .map(|s| s.values().flat_map(elements).collect())
            .unwrap_or_default()
    }

    /// What `read` would find.
    fn read(&self) -> MeshView {
        if !self.table {
            return MeshView::default();
        }
        let ports = self.elements_of(PORTS_MAP);
        let keys = super::encode::decode_ports(&ports).unwrap();
        let base_rules = self
            .chains
            .iter()
            .filter(|(c, _)| *c == PREROUTING_CHAIN || *c == OUTPUT_CHAIN)
            .map(|(c, rules)| {
                let names = rules
                    .iter()
                    .map(|r| {
                        let only = matches!(r, MRule::Base { restricted: true });
                        let scope = MeshScope::Host {
                            addresses: only.then(BTreeSet::new),
                        };
                        expr_names(&base_rule(&scope, c == OUTPUT_CHAIN))
                    })
                    .collect();
                (c.clone(), names)
            })
            .collect();
        let d = Dump {
            ports,
            slots: keys
                .keys()
                .map(|k| (*k, self.elements_of(&names::slots_map(k))))
                .collect(),
            chains: self.chains.keys().cloned().collect(),
            sets: self.sets.keys().cloned().collect(),
            addresses: self
                .sets
                .contains_key(ADDRESSES_SET)
                .then(|| self.elements_of(ADDRESSES_SET)),
            base_rules,
        };
        let (view, strays) = decode(&d).unwrap();
        assert!(strays.is_empty(), "{strays:?}");
        view
    }
}

fn arb_scope() -> impl Strategy<Value = MeshScope> {
    let a = Ipv4Addr::new(192, 0, 2, 1);
    let b = Ipv4Addr::new(192, 0, 2, 2);
    prop_oneof![
        Just(MeshScope::Gateway),
        Just(MeshScope::Host { addresses: None }),
        Just(MeshScope::Host {
            addresses: Some([a].into())
        }),
        Just(MeshScope::Host {
            addresses: Some([a, b].into())
        }),
        Just(MeshScope::Host {
            addresses: Some([b].into())
        }),
    ]
}

const KEYS: [(Protocol, u16); 4] = [
    (Protocol::Tcp, 80),
    (Protocol::Tcp, 8080),
    (Protocol::Udp, 53),
    (Protocol::Udp, 8080),
];

fn arb_port() -> impl Strategy<Value = PortView> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(any::<bool>(), 6),
    )
        .prop_map(|(name, target, bits)| PortView {
            service: if name { "web".into() } else { "api".into() },
            target: if target { 80 } else { 81 },
            backends: bits
                .iter()
                .enumerate()
                .filter(|(_, b)| **b)
                .map(|(k, _)| Ipv4Addr::new(10, 2, 0, 1 + k as u8))
                .collect(),
        })
}

fn arb_view() -> impl Strategy<Value = MeshView> {
    (
        arb_scope(),
        prop::collection::vec(prop::option::of(arb_port()), KEYS.len()),
    )
        .prop_map(|(scope, ports)| MeshView {
            scope,
            ports: KEYS
                .iter()
                .zip(ports)
                .filter_map(|(&(protocol, port), p)| Some((PortKey { protocol, port }, p?)))
                .collect(),
        })
}

proptest! {
    #[test]
    fn a_plan_takes_the_table_from_one_view_to_the_other(a in arb_view(), b in arb_view()) {
        let mut k = Kernel::expected(&a);
        let ops = plan(&a, &b).unwrap();
        for op in &ops {
            if let Err(e) = k.apply(op) {
                prop_assert!(false, "{e}\nplan: {ops:#?}");
            }
        }
        prop_assert_eq!(&k, &Kernel::expected(&b));
        prop_assert_eq!(k.read(), b.normalized());
        prop_assert!(plan(&b, &b).unwrap().is_empty());
    }

    #[test]
    fn one_backend_more_or_less_is_two_operations_on_one_map(a in arb_view(), pick in any::<prop::sample::Index>()) {
        prop_assume!(!a.ports.is_empty());
        let keys: Vec<PortKey> = a.ports.keys().copied().collect();
        let key = *pick.get(&keys);
        let mut b = a.clone();
        if let Some(p) = b.ports.get_mut(&key) {
            p.backends.push(Ipv4Addr::new(10, 3, 0, 1));
        }
        for ops in [plan(&a, &b).unwrap(), plan(&b, &a).unwrap()] {
            prop_assert!(ops.len() <= 2, "{ops:#?}");
            let map = names::slots_map(&key);
            let on_map = |op: &MeshOp| match op {
                MeshOp::FlushSet(s) | MeshOp::AddElements { set: s, .. } => *s == map,
                _ => false,
            };
            prop_assert!(ops.iter().all(on_map), "{ops:#?}");
        }
    }
}

#[test]
fn a_backend_change_does_not_grow_with_the_ports() {
    let mut a = MeshView {
        scope: MeshScope::Gateway,
        ports: BTreeMap::new(),
    };
    for port in 1..=5_000u16 {
        let p = PortView {
            service: format!("svc{port}"),
            target: 80,
            backends: (1..5).map(|k| Ipv4Addr::new(10, 9, 0, k)).collect(),
        };
        a.ports.insert(
            PortKey {
                protocol: Protocol::Tcp,
                port,
            },
            p,
        );
    }
    let mut b = a.clone();
    if let Some(p) = b.ports.values_mut().nth(42) {
        p.backends.pop();
    }
    let ops = plan(&a, &b).unwrap();
    assert_eq!(ops.len(), 2, "{ops:#?}");
    let mut batch = plexus_sys::nft::Batch::new();
    super::encode::encode(&ops, &mut batch);
    assert_eq!(batch.len(), 2);
}

#[test]
fn a_scope_change_keeps_the_ports_and_the_last_port_removes_the_table() {
    let key = PortKey {
        protocol: Protocol::Tcp,
        port: 8080,
    };
    let port = PortView {
        service: "web".into(),
        target: 80,
        backends: vec![Ipv4Addr::new(10, 2, 0, 1)],
    };
    let host = MeshView {
        scope: MeshScope::Host { addresses: None },
        ports: [(key, port)].into(),
    };
    let gateway = MeshView {
        scope: MeshScope::Gateway,
        ..host.clone()
    };
    assert_eq!(
        plan(&host, &gateway).unwrap(),
        vec![MeshOp::Base(MeshScope::Gateway)]
    );
    let none = MeshView {
        scope: MeshScope::Gateway,
        ports: BTreeMap::new(),
    };
    assert_eq!(plan(&gateway, &none).unwrap(), vec![MeshOp::RemoveTable]);
    assert!(plan(&none, &MeshView::default()).unwrap().is_empty());
}
