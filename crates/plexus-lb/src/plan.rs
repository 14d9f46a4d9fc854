//! The sans-I/O core: from the view the kernel holds and the view wanted, the nf_tables
//! operations that take one to the other, touching only what changed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::error::LbError;
use crate::names::{self, SERVICES_MAP, VIPS_SET};
use crate::view::{validate, Service, View};

/// One nf_tables operation on the `ip plexus-lb` table. A plan is a list of them, sent as one
/// atomic batch in order ([`encode`](crate::encode)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The table, its two base chains with their one rule each (flushed and added again, so
    /// it may be repeated) and the `services` and `vips` sets.
    Base,
    /// Create a regular chain.
    AddChain(String),
    /// Delete an empty chain nothing refers to.
    DeleteChain(String),
    /// Delete every rule of a chain.
    FlushChain(String),
    /// Append a rule to a chain.
    AddRule {
        /// The chain.
        chain: String,
        /// The rule.
        rule: Rule,
    },
    /// Create a set or map.
    AddSet {
        /// Its name.
        name: String,
        /// What it holds.
        kind: SetKind,
    },
    /// Delete a set no rule refers to.
    DeleteSet(String),
    /// Delete every element of a set.
    FlushSet(String),
    /// Add elements, none of which may be present.
    AddElements {
        /// The set.
        set: String,
        /// The elements.
        elements: Vec<Elem>,
    },
    /// Delete elements (by key), all of which must be present.
    DeleteElements {
        /// The set.
        set: String,
        /// The elements.
        elements: Vec<Elem>,
    },
}

/// The sets a service uses besides the table's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// `bes-<id>`: verdict map from a slot number (`numgen random mod N`) to a backend chain.
    Slots,
    /// `aff-<id>-<addr>`: client addresses lately sent to one backend, each with a timeout.
    Affinity,
}

/// The rules of service and backend chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `ip saddr @set goto chain`: a client seen lately keeps its backend.
    Sticky {
        /// The backend's affinity set.
        set: String,
        /// The backend's chain.
        chain: String,
    },
    /// `numgen random mod modulus vmap @map`: a backend at random.
    Pick {
        /// The number of backends.
        modulus: u32,
        /// The service's slot map.
        map: String,
    },
    /// `[update @set { ip saddr timeout T }] dnat ip to addr`: the port is kept.
    Backend {
        /// The backend's address.
        addr: Ipv4Addr,
        /// With affinity: the backend's affinity set and timeout.
        affinity: Option<(String, Duration)>,
    },
}

/// An element of one of the table's sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elem {
    /// In `services`: `vip : goto svc-<id>`, with the service's name and affinity as comment.
    Service {
        /// The VIP.
        vip: Ipv4Addr,
        /// The service chain.
        chain: String,
        /// [`names::service_comment`].
        comment: String,
    },
    /// In `vips`.
    Vip(Ipv4Addr),
    /// In `bes-<id>`: `index : goto be-<id>-<addr>`.
    Slot {
        /// The slot.
        index: u32,
        /// The backend chain.
        chain: String,
    },
}

/// The operations that take the table from holding `from` to holding `to`, in batch order.
/// Both views are validated first (errors name the field; those of `from` start with
/// `from.`). Only what differs is touched: a service that did not change has no operation,
/// and a backend added to or removed from a service without affinity is six operations
/// whatever the number of services and backends (its chain; the service's chain rule and
/// slot map are replaced).
pub fn plan(from: &View, to: &View) -> Result<Vec<Op>, LbError> {
    let old = validate(from).map_err(|e| match e {
        LbError::Invalid { field, reason } => LbError::Invalid {
            field: format!("from.{field}"),
            reason,
        },
        other => other,
    })?;
    let new = validate(to)?;
    Ok(plan_services(&old, &new))
}

/// Element changes of the table's own sets, gathered so each set gets one message.
#[derive(Default)]
struct Shared {
    del_services: Vec<Elem>,
    del_vips: Vec<Elem>,
    add_services: Vec<Elem>,
    add_vips: Vec<Elem>,
}

fn service_elem(id: &str, s: &Service) -> Elem {
    Elem::Service {
        vip: s.vip,
        chain: names::service_chain(id),
        comment: names::service_comment(&s.name, s.affinity),
    }
}

pub(crate) fn plan_services(
    old: &BTreeMap<String, Service>,
    new: &BTreeMap<String, Service>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    if old.is_empty() && !new.is_empty() {
        ops.push(Op::Base);
    }
    let mut shared = Shared::default();
    // Services first go out of the dispatch map and the VIP set (the deletions come first
    // in the batch), then their chains go; new ones come in last, once their chains exist.
    let mut body = Vec::new();
    for (id, s) in old {
        if !new.contains_key(id) {
            shared.del_services.push(service_elem(id, s));
            shared.del_vips.push(Elem::Vip(s.vip));
            remove_service(&mut body, id, s);
        }
    }
    for (id, s) in new {
        match old.get(id) {
            None => {
                shared.add_services.push(service_elem(id, s));
                shared.add_vips.push(Elem::Vip(s.vip));
                add_service(&mut body, id, s);
            }
            Some(o) if o != s => change_service(&mut body, &mut shared, id, o, s),
            Some(_) => {}
        }
    }
    let elems = |ops: &mut Vec<Op>, set: &str, elements: Vec<Elem>, add: bool| {
        if elements.is_empty() {
            return;
        }
        let set = set.to_string();
        ops.push(if add {
            Op::AddElements { set, elements }
        } else {
            Op::DeleteElements { set, elements }
        });
    };
    elems(&mut ops, SERVICES_MAP, shared.del_services, false);
    elems(&mut ops, VIPS_SET, shared.del_vips, false);
    ops.extend(body);
    elems(&mut ops, VIPS_SET, shared.add_vips, true);
    elems(&mut ops, SERVICES_MAP, shared.add_services, true);
    ops
}

fn remove_service(ops: &mut Vec<Op>, id: &str, s: &Service) {
    let svc = names::service_chain(id);
    let slots = names::slots_map(id);
    ops.push(Op::FlushChain(svc.clone()));
    ops.push(Op::FlushSet(slots.clone()));
    ops.push(Op::DeleteSet(slots));
    for &b in &s.backends {
        remove_backend(ops, id, b, s.affinity.is_some());
    }
    ops.push(Op::DeleteChain(svc));
}

fn add_service(ops: &mut Vec<Op>, id: &str, s: &Service) {
    ops.push(Op::AddChain(names::service_chain(id)));
    ops.push(Op::AddSet {
        name: names::slots_map(id),
        kind: SetKind::Slots,
    });
    for &b in &s.backends {
        add_backend(ops, id, b, s.affinity);
    }
    rotation(ops, id, s);
}

fn change_service(ops: &mut Vec<Op>, shared: &mut Shared, id: &str, o: &Service, s: &Service) {
    if o.vip != s.vip {
        shared.del_vips.push(Elem::Vip(o.vip));
        shared.add_vips.push(Elem::Vip(s.vip));
    }
    if o.vip != s.vip || o.name != s.name || o.affinity != s.affinity {
        shared.del_services.push(service_elem(id, o));
        shared.add_services.push(service_elem(id, s));
    }
    // The service chain's rules and the slot map depend on the backends and on whether
    // there is affinity (not on its timeout, which is in the backend chains).
    let rotate = o.backends != s.backends || o.affinity.is_some() != s.affinity.is_some();
    if rotate {
        ops.push(Op::FlushChain(names::service_chain(id)));
        ops.push(Op::FlushSet(names::slots_map(id)));
    }
    for &b in s.backends.difference(&o.backends) {
        add_backend(ops, id, b, s.affinity);
    }
    if o.affinity != s.affinity {
        for &b in s.backends.intersection(&o.backends) {
            if s.affinity.is_some() && o.affinity.is_none() {
                ops.push(Op::AddSet {
                    name: names::affinity_set(id, b),
                    kind: SetKind::Affinity,
                });
            }
            let chain = names::backend_chain(id, b);
            ops.push(Op::FlushChain(chain.clone()));
            ops.push(backend_rule(id, b, s.affinity));
            if o.affinity.is_some() && s.affinity.is_none() {
                ops.push(Op::DeleteSet(names::affinity_set(id, b)));
            }
        }
    }
    for &b in o.backends.difference(&s.backends) {
        remove_backend(ops, id, b, o.affinity.is_some());
    }
    if rotate {
        rotation(ops, id, s);
    }
}

fn backend_rule(id: &str, b: Ipv4Addr, affinity: Option<Duration>) -> Op {
    Op::AddRule {
        chain: names::backend_chain(id, b),
        rule: Rule::Backend {
            addr: b,
            affinity: affinity.map(|t| (names::affinity_set(id, b), t)),
        },
    }
}

fn add_backend(ops: &mut Vec<Op>, id: &str, b: Ipv4Addr, affinity: Option<Duration>) {
    if affinity.is_some() {
        ops.push(Op::AddSet {
            name: names::affinity_set(id, b),
            kind: SetKind::Affinity,
        });
    }
    ops.push(Op::AddChain(names::backend_chain(id, b)));
    ops.push(backend_rule(id, b, affinity));
}

/// Deletes a backend's chain (and affinity set); the service chain and slot map no longer
/// refer to it (flushed earlier in the batch).
fn remove_backend(ops: &mut Vec<Op>, id: &str, b: Ipv4Addr, affinity: bool) {
    let chain = names::backend_chain(id, b);
    ops.push(Op::FlushChain(chain.clone()));
    ops.push(Op::DeleteChain(chain));
    if affinity {
        ops.push(Op::DeleteSet(names::affinity_set(id, b)));
    }
}

/// The service chain's rules and the slot map's elements, into an empty chain and map.
fn rotation(ops: &mut Vec<Op>, id: &str, s: &Service) {
    if s.backends.is_empty() {
        // An empty chain: the packet leaves addressed to the VIP, and is refused.
        return;
    }
    let svc = names::service_chain(id);
    let map = names::slots_map(id);
    let slots = s
        .backends
        .iter()
        .enumerate()
        .map(|(i, &b)| Elem::Slot {
            index: i as u32,
            chain: names::backend_chain(id, b),
        })
        .collect();
    ops.push(Op::AddElements {
        set: map.clone(),
        elements: slots,
    });
    if s.affinity.is_some() {
        for &b in &s.backends {
            ops.push(Op::AddRule {
                chain: svc.clone(),
                rule: Rule::Sticky {
                    set: names::affinity_set(id, b),
                    chain: names::backend_chain(id, b),
                },
            });
        }
    }
    ops.push(Op::AddRule {
        chain: svc,
        rule: Rule::Pick {
            modulus: s.backends.len() as u32,
            map,
        },
    });
}
