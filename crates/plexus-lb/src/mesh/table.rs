//! The kernel side of the mesh: plans sent as one atomic batch, the table read back,
//! reconciliation.

use std::collections::BTreeMap;

use plexus_sys::netns::Netns;
use plexus_sys::nft::{Element, Family, Nft};
use plexus_sys::SysError;

use super::encode::{decode, decode_ports, encode, encode_remove, Dump};
use super::names::{self, ADDRESSES_SET, OUTPUT_CHAIN, PORTS_MAP, PREROUTING_CHAIN, TABLE};
use super::plan::{plan, MeshOp};
use super::view::{validate, MeshView};
use crate::dispatcher::{netns_of, send};
use crate::error::LbError;

/// The published ports of one namespace (a host, or an ingress sandbox): an nf_tables
/// connection inside it.
#[derive(Debug)]
pub struct Mesh {
    nft: Nft,
}

impl Mesh {
    /// Opens the namespace's nf_tables.
    pub fn open(ns: &Netns) -> Result<Self, LbError> {
        let nft = Nft::open(ns).map_err(|source| LbError::Kernel {
            netns: ns.path().display().to_string(),
            source,
        })?;
        Ok(Self { nft })
    }

    fn kernel(&self, source: SysError) -> LbError {
        LbError::Kernel {
            netns: netns_of(&self.nft),
            source,
        }
    }

    fn unexpected(&self, what: String) -> LbError {
        LbError::Unexpected {
            netns: netns_of(&self.nft),
            what,
        }
    }

    /// Takes the table from `from` (what it holds) to `to`, in one atomic batch touching
    /// only what changed (see [`plan`](super::plan)). Bad input is refused before anything
    /// is sent. When the table does not hold `from` the batch usually fails whole
    /// ([`LbError::Diverged`]; the kernel is unchanged) and [`reconcile`](Self::reconcile)
    /// repairs.
    pub fn apply(&self, from: &MeshView, to: &MeshView) -> Result<(), LbError> {
        self.send_ops(&plan(from, to)?)
    }

    fn send_ops(&self, ops: &[MeshOp]) -> Result<(), LbError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut b = self.nft.batch();
        encode(ops, &mut b);
        tracing::debug!(netns = %netns_of(&self.nft), ops = ops.len(), messages = b.len(), "applying routing-mesh change");
        send(&self.nft, b)
    }

    /// The view the table holds (the default, empty view when there is no table): ports
    /// from the `ports` map's elements and their comments, backends from their slot maps,
    /// the scope from the base chains present and the `addresses` set.
    pub fn read(&self) -> Result<MeshView, LbError> {
        Ok(self.read_state()?.0)
    }

    /// The view, and whether the table holds exactly what this crate writes for it.
    fn read_state(&self) -> Result<(MeshView, bool), LbError> {
        let tables = self.nft.tables().map_err(|e| self.kernel(e))?;
        if !tables.iter().any(|(f, t)| *f == Family::Ip && t == TABLE) {
            return Ok((MeshView::default(), true));
        }
        let Some(dump) = self.dump()? else {
            // A table without one of its maps: rebuilt by reconcile.
            return Ok((MeshView::default(), false));
        };
        let (view, strays) = decode(&dump).map_err(|what| self.unexpected(what))?;
        if !strays.is_empty() {
            tracing::warn!(netns = %netns_of(&self.nft), ?strays, "routing-mesh objects this crate did not write");
        }
        Ok((view, strays.is_empty()))
    }

    fn elements(&self, set: &str) -> Result<Option<Vec<Element>>, LbError> {
        match self.nft.elements(Family::Ip, TABLE, set) {
            Ok(e) => Ok(Some(e)),
            Err(SysError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.kernel(e)),
        }
    }

    /// The table's objects; `None` when a map it must have is missing.
    fn dump(&self) -> Result<Option<Dump>, LbError> {
        let Some(ports) = self.elements(PORTS_MAP)? else {
            return Ok(None);
        };
        let keys = decode_ports(&ports).map_err(|what| self.unexpected(what))?;
        let mut slots = BTreeMap::new();
        for key in keys.into_keys() {
            let Some(els) = self.elements(&names::slots_map(&key))? else {
                return Ok(None);
            };
            slots.insert(key, els);
        }
        let chains = self
            .nft
            .chains(Family::Ip, TABLE)
            .map_err(|e| self.kernel(e))?;
        let sets = self
            .nft
            .sets(Family::Ip, TABLE)
            .map_err(|e| self.kernel(e))?;
        let addresses = if sets.iter().any(|s| s == ADDRESSES_SET) {
            self.elements(ADDRESSES_SET)?
        } else {
            None
        };
        let mut base_rules = BTreeMap::new();
        for chain in [PREROUTING_CHAIN, OUTPUT_CHAIN] {
            if chains.iter().any(|c| c == chain) {
                let rules = self
                    .nft
                    .rules(Family::Ip, TABLE, chain)
                    .map_err(|e| self.kernel(e))?;
                let exprs = rules.into_iter().map(|r| r.exprs).collect();
                base_rules.insert(chain.to_string(), exprs);
            }
        }
        Ok(Some(Dump {
            ports,
            slots,
            chains,
            sets,
            addresses,
            base_rules,
        }))
    }

    /// Makes the table hold `want`: reads it, then applies the difference. A table this
    /// crate cannot read (objects of no port, base rules of another shape, unexpected
    /// elements) is replaced whole, in the same atomic batch that deletes it.
    pub fn reconcile(&self, want: &MeshView) -> Result<(), LbError> {
        let new = validate(want)?;
        match self.read_state() {
            Ok((have, true)) => {
                if have == want.normalized() {
                    return Ok(());
                }
                tracing::info!(netns = %netns_of(&self.nft), "routing-mesh table differs from the store: repairing");
                self.apply(&have, want)
            }
            Ok((_, false)) | Err(LbError::Unexpected { .. }) => {
                tracing::warn!(netns = %netns_of(&self.nft), "routing-mesh table unreadable: rebuilding it");
                let mut b = self.nft.batch();
                encode_remove(&mut b);
                if !new.ports.is_empty() {
                    encode(&plan(&MeshView::default(), want)?, &mut b);
                }
                send(&self.nft, b)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the table and everything in it; a missing table is no error.
    pub fn remove(&self) -> Result<(), LbError> {
        let mut b = self.nft.batch();
        encode_remove(&mut b);
        send(&self.nft, b)
    }
}
