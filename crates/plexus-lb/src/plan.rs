//! The sans-I/O core: from the view the kernel holds and the view wanted, the nf_tables
//! operations that take one to the other, touching only what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::error::LbError;
use crate::names::{self, LIVE_SET, SERVICES_MAP, VIPS_SET};
use crate::view::{validate, validate_service, Service, ServiceView, View};

pub use crate::slots::SLOTS;

/// One nf_tables operation on the `ip plexus-lb` table. A plan is a list of them, sent as one
/// atomic batch in order ([`encode`](crate::encode)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The table, its two base chains with their one rule each (flushed and added again, so
    /// it may be repeated) and the shared sets (`services`, `vips`, `affinity`, `live`).
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

/// The sets a service has besides the table's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// `bes-<id>`: interval map from a random number in `[0, SLOTS)` to a backend address.
    Slots,
}

/// The rules of a service chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `dnat ip to numgen random mod SLOTS map @map`, with affinity also recording the
    /// choice: `update @affinity { ip saddr . ip daddr timeout T : <backend> }`.
    Pick {
        /// The service's slot map.
        map: String,
        /// With affinity: the pin's timeout.
        affinity: Option<Duration>,
    },
    /// With affinity: a client pinned to a backend that is no longer live in the service
    /// loses its pin (`ip saddr . ip daddr map @affinity` as `b`, `ip daddr . b` not in
    /// `@live`: `delete @affinity { ip saddr . ip daddr : b }`).
    Unpin,
    /// With affinity: a pinned client goes to its backend and its pin is refreshed
    /// (`dnat ip to ip saddr . ip daddr map @affinity`, `update … timeout T`).
    Pinned {
        /// The pin's timeout.
        timeout: Duration,
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
        /// `name=<name>`, and ` affinity-ms=<ms>` with affinity.
        comment: String,
    },
    /// In `vips`.
    Vip(Ipv4Addr),
    /// In `bes-<id>`: the random numbers `start..end` go to `backend`.
    Slot {
        /// The range's first number.
        start: u32,
        /// The number after the range's last.
        end: u32,
        /// The backend's address.
        backend: Ipv4Addr,
    },
    /// In `live`: `vip . backend` of a service with affinity.
    Live {
        /// The service's VIP.
        vip: Ipv4Addr,
        /// One of its backends.
        backend: Ipv4Addr,
    },
}

/// The slot ranges of `backends` (in order): `[0, SLOTS)` cut into as many nearly equal
/// ranges, one per backend.
pub(crate) fn slot_ranges(backends: &BTreeSet<Ipv4Addr>) -> Vec<Elem> {
    crate::slots::ranges(backends)
        .into_iter()
        .map(|(start, end, backend)| Elem::Slot {
            start,
            end,
            backend,
        })
        .collect()
}

fn from_field(e: LbError) -> LbError {
    match e {
        LbError::Invalid { field, reason } => LbError::Invalid {
            field: format!("from.{field}"),
            reason,
        },
        other => other,
    }
}

/// The operations that take the table from holding `from` to holding `to`, in batch order.
/// Both views are validated first (errors name the field; those of `from` start with
/// `from.`). Only what differs is touched: a service that did not change has no operation,
/// and a backend added to or removed from a service is two element operations on its slot
/// map (three with affinity: the `live` pair too), whatever the number of services.
pub fn plan(from: &View, to: &View) -> Result<Vec<Op>, LbError> {
    let old = validate(from).map_err(from_field)?;
    let new = validate(to)?;
    Ok(plan_services(&old, &new))
}

/// The operations that take one service from `old` to `new` (`None`: absent) and touch
/// nothing else: the planner of [`Dispatcher::apply_service`](crate::Dispatcher), whose cost
/// does not grow with the other services. Only this service is validated: that its VIP is
/// no other service's, and no backend another service's VIP, is the caller's to keep (a VIP
/// already in the table makes the kernel refuse the batch whole). A service added (`old`
/// `None`) starts with [`Op::Base`], so the table need not exist; one the table already
/// holds fails whole. A backend change replaces the slot map's elements whole, so the
/// service ends with `new`'s backends even when `old`'s were stale.
pub fn plan_service(
    id: &str,
    old: Option<&ServiceView>,
    new: Option<&ServiceView>,
) -> Result<Vec<Op>, LbError> {
    let one = |s: Option<&ServiceView>| -> Result<BTreeMap<String, Service>, LbError> {
        s.map(|s| validate_service(id, s).map(|v| (id.to_string(), v)))
            .into_iter()
            .collect()
    };
    let o = one(old).map_err(from_field)?;
    let n = one(new)?;
    let mut ops = Vec::new();
    if o.is_empty() && !n.is_empty() {
        ops.push(Op::Base);
    }
    diff(&mut ops, &o, &n);
    Ok(ops)
}

/// Element changes of the table's own sets, gathered so each set gets one message.
#[derive(Default)]
struct Shared {
    del_services: Vec<Elem>,
    del_vips: Vec<Elem>,
    del_live: Vec<Elem>,
    add_services: Vec<Elem>,
    add_vips: Vec<Elem>,
    add_live: Vec<Elem>,
}

fn service_elem(id: &str, s: &Service) -> Elem {
    Elem::Service {
        vip: s.vip,
        chain: names::service_chain(id),
        comment: names::service_comment(&s.name, s.affinity),
    }
}

/// The `live` pairs of a service: its backends when it has affinity.
fn live(s: &Service) -> BTreeSet<(Ipv4Addr, Ipv4Addr)> {
    match s.affinity {
        Some(_) => s.backends.iter().map(|&b| (s.vip, b)).collect(),
        None => BTreeSet::new(),
    }
}

fn live_elems<'a>(pairs: impl Iterator<Item = &'a (Ipv4Addr, Ipv4Addr)>) -> Vec<Elem> {
    pairs
        .map(|&(vip, backend)| Elem::Live { vip, backend })
        .collect()
}

pub(crate) fn plan_services(
    old: &BTreeMap<String, Service>,
    new: &BTreeMap<String, Service>,
) -> Vec<Op> {
    let mut ops = Vec::new();
    if old.is_empty() && !new.is_empty() {
        ops.push(Op::Base);
    }
    diff(&mut ops, old, new);
    ops
}

fn diff(ops: &mut Vec<Op>, old: &BTreeMap<String, Service>, new: &BTreeMap<String, Service>) {
    let mut shared = Shared::default();
    // Services first go out of the dispatch map and the VIP set (the deletions come first
    // in the batch), then their chains go; new ones come in last, once their chains exist.
    let mut body = Vec::new();
    for (id, s) in old {
        if !new.contains_key(id) {
            shared.del_services.push(service_elem(id, s));
            shared.del_vips.push(Elem::Vip(s.vip));
            shared.del_live.extend(live_elems(live(s).iter()));
            remove_service(&mut body, id);
        }
    }
    for (id, s) in new {
        match old.get(id) {
            None => {
                shared.add_services.push(service_elem(id, s));
                shared.add_vips.push(Elem::Vip(s.vip));
                shared.add_live.extend(live_elems(live(s).iter()));
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
    elems(ops, SERVICES_MAP, shared.del_services, false);
    elems(ops, VIPS_SET, shared.del_vips, false);
    elems(ops, LIVE_SET, shared.del_live, false);
    ops.extend(body);
    elems(ops, LIVE_SET, shared.add_live, true);
    elems(ops, VIPS_SET, shared.add_vips, true);
    elems(ops, SERVICES_MAP, shared.add_services, true);
}

fn remove_service(ops: &mut Vec<Op>, id: &str) {
    let svc = names::service_chain(id);
    ops.push(Op::FlushChain(svc.clone()));
    ops.push(Op::DeleteSet(names::slots_map(id)));
    ops.push(Op::DeleteChain(svc));
}

fn add_service(ops: &mut Vec<Op>, id: &str, s: &Service) {
    let map = names::slots_map(id);
    ops.push(Op::AddChain(names::service_chain(id)));
    ops.push(Op::AddSet {
        name: map.clone(),
        kind: SetKind::Slots,
    });
    slots(ops, map, s);
    rules(ops, id, s.affinity);
}

/// The slot map's elements, into an empty map.
fn slots(ops: &mut Vec<Op>, map: String, s: &Service) {
    if !s.backends.is_empty() {
        ops.push(Op::AddElements {
            set: map,
            elements: slot_ranges(&s.backends),
        });
    }
}

/// The service chain's rules, into an empty chain. They depend on the affinity only: with
/// no backend the slot map is empty, the lookup fails, and the packet leaves addressed to
/// the VIP, to be refused.
fn rules(ops: &mut Vec<Op>, id: &str, affinity: Option<Duration>) {
    let chain = names::service_chain(id);
    let mut add = |rule| {
        ops.push(Op::AddRule {
            chain: chain.clone(),
            rule,
        })
    };
    if let Some(timeout) = affinity {
        add(Rule::Unpin);
        add(Rule::Pinned { timeout });
    }
    add(Rule::Pick {
        map: names::slots_map(id),
        affinity,
    });
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
    let (lo, ls) = (live(o), live(s));
    shared.del_live.extend(live_elems(lo.difference(&ls)));
    shared.add_live.extend(live_elems(ls.difference(&lo)));
    if o.affinity != s.affinity {
        ops.push(Op::FlushChain(names::service_chain(id)));
        rules(ops, id, s.affinity);
    }
    if o.backends != s.backends {
        let map = names::slots_map(id);
        ops.push(Op::FlushSet(map.clone()));
        slots(ops, map, s);
    }
}
