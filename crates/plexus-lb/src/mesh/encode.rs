//! Mesh operations to an nf_tables batch, and the kernel's objects back to a view. Pure: the
//! batch is data until [`Mesh`](super::Mesh) sends it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use plexus_sys::nft::{
    rtn, BaseChain, Batch, ChainType, CmpOp, Element, Expr, Family, Hook, MetaKey, NatKind,
    PayloadBase, SetDef, Verdict, DATA_VERDICT, REG32_00,
};

use super::names::{self, ADDRESSES_SET, OUTPUT_CHAIN, PORTS_MAP, PREROUTING_CHAIN, TABLE};
use super::plan::{MeshElem, MeshOp};
use super::view::{MeshScope, MeshView, PortKey, PortView, Protocol};
use crate::slots;

const FAMILY: Family = Family::Ip;
/// nft's data type numbers, for `nft list`.
const TYPE_IPV4: u32 = 7;
const TYPE_INET_PROTO: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
/// `inet_proto . inet_service`: a concatenation's type is its parts', each shifted 6 bits.
const TYPE_PORT_KEY: u32 = TYPE_INET_PROTO << 6 | TYPE_INET_SERVICE;
/// The NAT base chains' priority: dstnat.
const DSTNAT: i32 = -100;

fn r(n: u32) -> u32 {
    REG32_00 + n
}

/// The key of a port in `ports`, `meta l4proto . th dport`: each part takes a whole 4-byte
/// register, zero padded (the protocol byte, then the port in network order).
pub(crate) fn port_key_bytes(k: &PortKey) -> Vec<u8> {
    let [hi, lo] = k.port.to_be_bytes();
    vec![k.protocol.number(), 0, 0, 0, hi, lo, 0, 0]
}

fn parse_port_key(b: &[u8]) -> Option<PortKey> {
    match *b {
        [proto, 0, 0, 0, hi, lo, 0, 0] => Some(PortKey {
            protocol: Protocol::from_number(proto)?,
            port: u16::from_be_bytes([hi, lo]),
        }),
        _ => None,
    }
}

/// The kernel's form of an element: a slot range is two.
pub(crate) fn elements(e: &MeshElem) -> Vec<Element> {
    match e {
        MeshElem::Port {
            key,
            chain,
            comment,
        } => vec![Element {
            key: port_key_bytes(key),
            verdict: Some(Verdict::Goto(chain.clone())),
            ..Element::default()
        }
        .with_comment(comment)],
        MeshElem::Address(a) => vec![Element::key(a.octets())],
        MeshElem::Slot {
            start,
            end,
            backend,
        } => slots::range_elements(*start, *end, *backend).to_vec(),
    }
}

fn all_elements(elems: &[MeshElem]) -> Vec<Element> {
    elems.iter().flat_map(elements).collect()
}

/// `ip daddr` into register `n`.
fn daddr(n: u32) -> Expr {
    Expr::Payload {
        base: PayloadBase::Network,
        offset: 16,
        len: 4,
        dreg: r(n),
    }
}

/// The one rule of a base chain: `[ip daddr != 127.0.0.0/8] fib daddr type local [ip daddr
/// @addresses] meta l4proto . th dport vmap @ports`. The loopback guard is the output
/// chain's (Docker's own OUTPUT rule has it): a connection to 127.0.0.1 NATed to another
/// host would keep its loopback source, which the kernel does not route out, and hang
/// instead of being refused.
pub(crate) fn base_rule(scope: &MeshScope, output: bool) -> Vec<Expr> {
    let mut v = Vec::new();
    if output {
        v.extend([
            daddr(0),
            Expr::Bitwise {
                sreg: r(0),
                dreg: r(0),
                mask: vec![255, 0, 0, 0],
                xor: vec![0; 4],
            },
            Expr::Cmp {
                sreg: r(0),
                op: CmpOp::Neq,
                data: vec![127, 0, 0, 0],
            },
        ]);
    }
    v.extend([
        Expr::fib_daddr_type(r(0)),
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Eq,
            data: rtn::LOCAL.to_ne_bytes().to_vec(),
        },
    ]);
    if let MeshScope::Host { addresses: Some(_) } = scope {
        v.extend([
            daddr(0),
            Expr::Lookup {
                set: ADDRESSES_SET.into(),
                sreg: r(0),
                dreg: None,
                invert: false,
            },
        ]);
    }
    v.extend([
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: r(0),
        },
        // th dport: the destination port, at the same offset in TCP and UDP.
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: r(1),
        },
        Expr::vmap(PORTS_MAP, r(0)),
    ]);
    v
}

/// The kernel's names of a rule's expressions, as [`Nft::rules`](plexus_sys::nft::Nft::rules)
/// reads them back: how [`Mesh::read`](super::Mesh::read) checks the base rules.
pub(crate) fn expr_names(exprs: &[Expr]) -> Vec<String> {
    exprs
        .iter()
        .map(|e| {
            match e {
                Expr::Payload { .. } => "payload",
                Expr::Bitwise { .. } => "bitwise",
                Expr::Cmp { .. } => "cmp",
                Expr::Fib { .. } => "fib",
                Expr::Lookup { .. } => "lookup",
                Expr::Meta { .. } | Expr::MetaSet { .. } => "meta",
                Expr::Ct { .. } | Expr::CtSet { .. } => "ct",
                Expr::Numgen { .. } => "numgen",
                Expr::Byteorder { .. } => "byteorder",
                Expr::Immediate { .. } => "immediate",
                Expr::Nat { .. } => "nat",
                _ => "other",
            }
            .to_string()
        })
        .collect()
}

/// A port chain's rule: `dnat ip to numgen random mod SLOTS map @map : target`. Registers:
/// r0 the random number, r1 the backend, r2 the target port.
fn port_rule(map: &str, target: u16) -> Vec<Expr> {
    let mut v = slots::pick(map, r(0), r(1)).to_vec();
    v.push(Expr::Immediate {
        dreg: r(2),
        data: target.to_be_bytes().to_vec(),
    });
    v.push(Expr::Nat {
        kind: NatKind::Dnat,
        family: FAMILY,
        addr: Some(r(1)),
        addr_max: None,
        port: Some(r(2)),
        port_max: None,
    });
    v
}

fn nat_chain(hook: Hook) -> Option<BaseChain> {
    Some(BaseChain {
        kind: ChainType::Nat,
        hook,
        priority: DSTNAT,
        policy: Verdict::Accept,
    })
}

fn base_chain(b: &mut Batch, scope: &MeshScope, chain: &str, hook: Hook) {
    b.add_chain(FAMILY, TABLE, chain, nat_chain(hook));
    b.flush_chain(FAMILY, TABLE, chain);
    b.add_rule(
        FAMILY,
        TABLE,
        chain,
        &base_rule(scope, hook == Hook::Output),
    );
}

fn base(b: &mut Batch, scope: &MeshScope) {
    b.add_table(FAMILY, TABLE);
    let ports = SetDef {
        name: PORTS_MAP.into(),
        key_type: TYPE_PORT_KEY,
        key_len: 8,
        data: Some((DATA_VERDICT, 0)),
        ..SetDef::default()
    };
    b.add_set(FAMILY, TABLE, &ports);
    let restricted = match scope {
        MeshScope::Host { addresses: Some(a) } => Some(a),
        _ => None,
    };
    if let Some(addresses) = restricted {
        let def = SetDef {
            name: ADDRESSES_SET.into(),
            key_type: TYPE_IPV4,
            key_len: 4,
            ..SetDef::default()
        };
        b.add_set(FAMILY, TABLE, &def);
        b.flush_set(FAMILY, TABLE, ADDRESSES_SET);
        let els: Vec<Element> = addresses.iter().map(|a| Element::key(a.octets())).collect();
        b.add_elements(FAMILY, TABLE, ADDRESSES_SET, &els, true);
    }
    base_chain(b, scope, PREROUTING_CHAIN, Hook::Prerouting);
    match scope {
        MeshScope::Host { .. } => base_chain(b, scope, OUTPUT_CHAIN, Hook::Output),
        // Deleting a chain deletes its rules with it.
        MeshScope::Gateway => b.destroy_chain(FAMILY, TABLE, OUTPUT_CHAIN),
    }
    // After the rules that looked it up were replaced, in the same transaction.
    if restricted.is_none() {
        b.destroy_set(FAMILY, TABLE, ADDRESSES_SET);
    }
}

/// Appends `ops` to a batch, in order.
pub(crate) fn encode(ops: &[MeshOp], b: &mut Batch) {
    for op in ops {
        match op {
            MeshOp::Base(scope) => base(b, scope),
            MeshOp::RemoveTable => encode_remove(b),
            MeshOp::AddChain(c) => b.add_chain(FAMILY, TABLE, c, None),
            MeshOp::DeleteChain(c) => b.delete_chain(FAMILY, TABLE, c),
            MeshOp::FlushChain(c) => b.flush_chain(FAMILY, TABLE, c),
            MeshOp::AddRule { chain, map, target } => {
                b.add_rule(FAMILY, TABLE, chain, &port_rule(map, *target));
            }
            MeshOp::AddSlots(s) => b.add_set(FAMILY, TABLE, &slots::map_def(s)),
            MeshOp::DeleteSet(s) => b.delete_set(FAMILY, TABLE, s),
            MeshOp::FlushSet(s) => b.flush_set(FAMILY, TABLE, s),
            MeshOp::AddElements { set, elements } => {
                b.add_elements(FAMILY, TABLE, set, &all_elements(elements), true);
            }
            MeshOp::DeleteElements { set, elements } => {
                b.delete_elements(FAMILY, TABLE, set, &all_elements(elements));
            }
        }
    }
}

/// Deletes the whole table (a missing one is no error).
pub(crate) fn encode_remove(b: &mut Batch) {
    b.destroy_table(FAMILY, TABLE);
}

/// What [`Mesh::read`](super::Mesh::read) dumps of the table.
#[derive(Debug, Default)]
pub(crate) struct Dump {
    /// The `ports` map's elements.
    pub ports: Vec<Element>,
    /// Each listed port's slot map elements.
    pub slots: BTreeMap<PortKey, Vec<Element>>,
    /// The names of the table's chains.
    pub chains: Vec<String>,
    /// The names of the table's sets and maps.
    pub sets: Vec<String>,
    /// The `addresses` set's elements, when it exists.
    pub addresses: Option<Vec<Element>>,
    /// The rules of the base chains present (their expressions' names).
    pub base_rules: BTreeMap<String, Vec<Vec<String>>>,
}

/// The ports of the `ports` map's elements (their comments), without backends. An element
/// this crate would not have written is an error naming it.
pub(crate) fn decode_ports(els: &[Element]) -> Result<BTreeMap<PortKey, PortView>, String> {
    let mut ports = BTreeMap::new();
    for e in els {
        let key = parse_port_key(&e.key)
            .filter(|k| k.port != 0)
            .ok_or_else(|| format!("element of {PORTS_MAP} with key {:?}", e.key))?;
        let chain_ok =
            matches!(&e.verdict, Some(Verdict::Goto(c)) if names::parse_port_chain(c) == Some(key));
        if !chain_ok {
            return Err(format!(
                "element {key} of {PORTS_MAP}: verdict {:?}",
                e.verdict
            ));
        }
        let comment = e.comment().unwrap_or_default();
        let (service, target) = names::parse_port_comment(&comment)
            .ok_or_else(|| format!("element {key} of {PORTS_MAP}: comment {comment:?}"))?;
        let p = PortView {
            service,
            target,
            backends: Vec::new(),
        };
        if ports.insert(key, p).is_some() {
            return Err(format!("port {key} twice in {PORTS_MAP}"));
        }
    }
    Ok(ports)
}

/// The view the dumped table holds, and what in it this crate would not have written for
/// that view (stray chains and sets, base rules of another shape, an `addresses` set in
/// Gateway scope, a table without ports). An element this crate would not have written is
/// an error naming it.
pub(crate) fn decode(d: &Dump) -> Result<(MeshView, Vec<String>), String> {
    let mut ports = decode_ports(&d.ports)?;
    for (key, p) in ports.iter_mut() {
        let els = d.slots.get(key).map(Vec::as_slice).unwrap_or_default();
        p.backends = slots::decode(&names::slots_map(key), els)?
            .into_iter()
            .collect();
    }
    let host = d.chains.iter().any(|c| c == OUTPUT_CHAIN);
    let addresses = match &d.addresses {
        None => None,
        Some(els) => {
            let mut set = BTreeSet::new();
            for e in els {
                let a: [u8; 4] = e.key.as_slice().try_into().map_err(|_| {
                    format!("element of {ADDRESSES_SET} with a {}-byte key", e.key.len())
                })?;
                set.insert(Ipv4Addr::from(a));
            }
            Some(set)
        }
    };
    let mut strays = Vec::new();
    let scope = if host {
        MeshScope::Host { addresses }
    } else {
        if addresses.is_some() {
            strays.push(format!("set {ADDRESSES_SET} without an output chain"));
        }
        MeshScope::Gateway
    };
    if ports.is_empty() {
        strays.push("a table without ports".to_string());
    }
    for (chain, output) in [(PREROUTING_CHAIN, false), (OUTPUT_CHAIN, true)] {
        if output && !host {
            continue;
        }
        let want = vec![expr_names(&base_rule(&scope, output))];
        if d.base_rules.get(chain) != Some(&want) {
            strays.push(format!("rules of chain {chain} other than the scope's"));
        }
    }
    let known = |k: Option<PortKey>| k.is_some_and(|k| ports.contains_key(&k));
    for c in &d.chains {
        let ours = c == PREROUTING_CHAIN || c == OUTPUT_CHAIN;
        if !ours && !known(names::parse_port_chain(c)) {
            strays.push(format!("chain {c}"));
        }
    }
    for s in &d.sets {
        let ours = s == PORTS_MAP || s == ADDRESSES_SET;
        if !ours && !known(names::parse_slots_map(s)) {
            strays.push(format!("set {s}"));
        }
    }
    Ok((MeshView { scope, ports }, strays))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::plan::slot_elems;

    #[test]
    fn the_base_encodes_per_scope() {
        let count = |scope: MeshScope| {
            let mut b = Batch::new();
            encode(&[MeshOp::Base(scope)], &mut b);
            b.len()
        };
        // table, ports, prerouting (chain, flush, rule), then output's three or its
        // deletion, and the addresses set's deletion or its three (add, flush, elements).
        assert_eq!(count(MeshScope::Gateway), 7);
        assert_eq!(count(MeshScope::Host { addresses: None }), 9);
        let one = Some([Ipv4Addr::new(10, 0, 0, 1)].into());
        assert_eq!(count(MeshScope::Host { addresses: one }), 11);
    }

    #[test]
    fn port_keys_round_trip() {
        for k in [
            PortKey {
                protocol: Protocol::Tcp,
                port: 8080,
            },
            PortKey {
                protocol: Protocol::Udp,
                port: 65535,
            },
        ] {
            assert_eq!(parse_port_key(&port_key_bytes(&k)), Some(k));
        }
        assert_eq!(parse_port_key(&[6, 0, 0, 0, 0, 80, 0]), None);
        assert_eq!(parse_port_key(&[1, 0, 0, 0, 0, 80, 0, 0]), None);
    }

    #[test]
    fn a_table_decodes_back_and_strays_are_named() {
        let key = PortKey {
            protocol: Protocol::Tcp,
            port: 8080,
        };
        let port = MeshElem::Port {
            key,
            chain: names::port_chain(&key),
            comment: names::port_comment("web", 80),
        };
        let backends: BTreeSet<Ipv4Addr> = [[10, 0, 0, 3].into(), [10, 0, 0, 2].into()].into();
        let scope = MeshScope::Host {
            addresses: Some([Ipv4Addr::new(192, 0, 2, 1)].into()),
        };
        let rules = |s: &MeshScope, output| vec![expr_names(&base_rule(s, output))];
        let mut d = Dump {
            ports: elements(&port),
            slots: [(key, all_elements(&slot_elems(&backends)))].into(),
            chains: vec![
                "prerouting".into(),
                "output".into(),
                names::port_chain(&key),
            ],
            sets: vec!["ports".into(), "addresses".into(), names::slots_map(&key)],
            addresses: Some(vec![Element::key([192, 0, 2, 1])]),
            base_rules: [
                ("prerouting".to_string(), rules(&scope, false)),
                ("output".to_string(), rules(&scope, true)),
            ]
            .into(),
        };
        let (view, strays) = decode(&d).unwrap();
        assert_eq!(view.scope, scope);
        let p = &view.ports[&key];
        assert_eq!((p.service.as_str(), p.target), ("web", 80));
        let want: Vec<Ipv4Addr> = backends.iter().copied().collect();
        assert_eq!(p.backends, want);
        assert!(strays.is_empty(), "{strays:?}");
        // Another rule in prerouting, a stray chain and map.
        d.base_rules
            .insert("prerouting".into(), rules(&MeshScope::Gateway, false));
        d.chains.push("port-udp-9".into());
        d.sets.push("pbe-udp-9".into());
        let (_, strays) = decode(&d).unwrap();
        assert_eq!(strays.len(), 3, "{strays:?}");
        // A range moved: not what this crate writes.
        if let Some(e) = d.slots.get_mut(&key).and_then(|els| els.get_mut(1)) {
            e.key = 7u32.to_be_bytes().to_vec();
        }
        assert!(decode(&d).is_err());
        let wrong_chain = Element {
            key: port_key_bytes(&key),
            verdict: Some(Verdict::Goto("port-tcp-9".into())),
            ..Element::default()
        };
        assert!(decode_ports(&[wrong_chain]).is_err());
    }
}
