//! The sans-I/O core of the mesh: from the view the table holds and the view wanted, the
//! nf_tables operations that take one to the other, touching only what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::names::{self, ADDRESSES_SET, PORTS_MAP};
use super::view::{validate, MeshScope, MeshView, Port, PortKey};
use crate::error::LbError;

/// One nf_tables operation on the `ip plexus-mesh` table. A plan is a list of them, sent
/// as one atomic batch in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshOp {
    /// The table, the `ports` map and the scope's base chains with their one rule each
    /// (flushed and added again); with a restriction, the `addresses` set holding exactly
    /// its addresses. What the scope does not have is deleted: the output chain (Gateway),
    /// the `addresses` set (no restriction). May be repeated: it also changes the scope.
    Base(MeshScope),
    /// Delete the table with everything in it (a missing table is no error).
    RemoveTable,
    /// Create a regular chain.
    AddChain(String),
    /// Delete an empty chain nothing refers to.
    DeleteChain(String),
    /// Delete every rule of a chain.
    FlushChain(String),
    /// Append a port chain's one rule: `dnat ip to numgen random mod SLOTS map @map :
    /// target`.
    AddRule {
        /// The port chain.
        chain: String,
        /// The port's slot map.
        map: String,
        /// The port the backends listen on.
        target: u16,
    },
    /// Create a port's slot map (`integer : ipv4_addr; flags interval`).
    AddSlots(String),
    /// Delete a set no rule refers to.
    DeleteSet(String),
    /// Delete every element of a set.
    FlushSet(String),
    /// Add elements, none of which may be present.
    AddElements {
        /// The set.
        set: String,
        /// The elements.
        elements: Vec<MeshElem>,
    },
    /// Delete elements (by key), all of which must be present.
    DeleteElements {
        /// The set.
        set: String,
        /// The elements.
        elements: Vec<MeshElem>,
    },
}

/// An element of one of the mesh table's sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshElem {
    /// In `ports`: `protocol . port : goto port-<protocol>-<port>`, with the service's name
    /// and the target port as comment.
    Port {
        /// The published port.
        key: PortKey,
        /// Its chain.
        chain: String,
        /// `service=<name> target=<port>`.
        comment: String,
    },
    /// In `addresses`.
    Address(Ipv4Addr),
    /// In `pbe-<protocol>-<port>`: the random numbers `start..end` go to `backend`.
    Slot {
        /// The range's first number.
        start: u32,
        /// The number after the range's last.
        end: u32,
        /// The backend's address.
        backend: Ipv4Addr,
    },
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
/// `from.`). Only what differs is touched: a backend added to or removed from a port is two
/// element operations on its slot map, whatever the number of ports; a target changed
/// replaces the port chain's rule (and its `ports` element, whose comment holds it). A view
/// without ports is no table: the last port removed deletes the table.
pub fn plan(from: &MeshView, to: &MeshView) -> Result<Vec<MeshOp>, LbError> {
    let old = validate(from).map_err(from_field)?;
    let new = validate(to)?;
    let mut ops = Vec::new();
    if new.ports.is_empty() {
        if !old.ports.is_empty() {
            ops.push(MeshOp::RemoveTable);
        }
        return Ok(ops);
    }
    if old.ports.is_empty() {
        ops.push(MeshOp::Base(new.scope.clone()));
    } else if old.scope != new.scope {
        scope(&mut ops, &old.scope, &new.scope);
    }
    ports(&mut ops, &old.ports, &new.ports);
    Ok(ops)
}

/// The operations that take the table's scope from `old` to `new` (different).
fn scope(ops: &mut Vec<MeshOp>, old: &MeshScope, new: &MeshScope) {
    let (MeshScope::Host { addresses: Some(a) }, MeshScope::Host { addresses: Some(b) }) =
        (old, new)
    else {
        // Hooks or rules change: rare, so the base is simply rewritten.
        ops.push(MeshOp::Base(new.clone()));
        return;
    };
    // The same rules, other addresses: element changes only.
    let del = a.difference(b).map(|&x| MeshElem::Address(x)).collect();
    let add = b.difference(a).map(|&x| MeshElem::Address(x)).collect();
    push_elements(ops, ADDRESSES_SET, del, false);
    push_elements(ops, ADDRESSES_SET, add, true);
}

fn push_elements(ops: &mut Vec<MeshOp>, set: &str, elements: Vec<MeshElem>, add: bool) {
    if elements.is_empty() {
        return;
    }
    let set = set.to_string();
    ops.push(if add {
        MeshOp::AddElements { set, elements }
    } else {
        MeshOp::DeleteElements { set, elements }
    });
}

fn port_elem(key: &PortKey, p: &Port) -> MeshElem {
    MeshElem::Port {
        key: *key,
        chain: names::port_chain(key),
        comment: names::port_comment(&p.service, p.target),
    }
}

/// A port's slot map elements.
pub(crate) fn slot_elems(backends: &BTreeSet<Ipv4Addr>) -> Vec<MeshElem> {
    crate::slots::ranges(backends)
        .into_iter()
        .map(|(start, end, backend)| MeshElem::Slot {
            start,
            end,
            backend,
        })
        .collect()
}

fn ports(ops: &mut Vec<MeshOp>, old: &BTreeMap<PortKey, Port>, new: &BTreeMap<PortKey, Port>) {
    // Ports first leave the `ports` map (its deletions come first in the batch), then their
    // objects go; new ones come in last, once their chains exist.
    let (mut del, mut add, mut body) = (Vec::new(), Vec::new(), Vec::new());
    for (key, p) in old {
        if !new.contains_key(key) {
            del.push(port_elem(key, p));
            let chain = names::port_chain(key);
            body.push(MeshOp::FlushChain(chain.clone()));
            body.push(MeshOp::DeleteSet(names::slots_map(key)));
            body.push(MeshOp::DeleteChain(chain));
        }
    }
    for (key, p) in new {
        let chain = names::port_chain(key);
        let map = names::slots_map(key);
        match old.get(key) {
            None => {
                add.push(port_elem(key, p));
                body.push(MeshOp::AddChain(chain.clone()));
                body.push(MeshOp::AddSlots(map.clone()));
                push_elements(&mut body, &map, slot_elems(&p.backends), true);
                body.push(MeshOp::AddRule {
                    chain,
                    map,
                    target: p.target,
                });
            }
            Some(o) if o != p => {
                if o.service != p.service || o.target != p.target {
                    del.push(port_elem(key, o));
                    add.push(port_elem(key, p));
                }
                if o.target != p.target {
                    body.push(MeshOp::FlushChain(chain.clone()));
                    body.push(MeshOp::AddRule {
                        chain,
                        map: map.clone(),
                        target: p.target,
                    });
                }
                // The map's elements replaced whole: the ranges of every backend move.
                if o.backends != p.backends {
                    body.push(MeshOp::FlushSet(map.clone()));
                    push_elements(&mut body, &map, slot_elems(&p.backends), true);
                }
            }
            Some(_) => {}
        }
    }
    push_elements(ops, PORTS_MAP, del, false);
    ops.extend(body);
    push_elements(ops, PORTS_MAP, add, true);
}
