//! The kernel side: plans sent as one atomic batch, the table read back, reconciliation.

use plexus_sys::netns::Netns;
use plexus_sys::nft::{Batch, Family, Nft};
use plexus_sys::SysError;

use crate::encode::{decode, encode, encode_remove};
use crate::error::LbError;
use crate::names::{SERVICES_MAP, TABLE};
use crate::plan::{plan, plan_services};
use crate::view::{validate, View};

/// The load balancer of one sandbox namespace: an nf_tables connection inside it.
#[derive(Debug)]
pub struct Dispatcher {
    nft: Nft,
}

fn netns_of(nft: &Nft) -> String {
    nft.netns().path().display().to_string()
}

impl Dispatcher {
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

    /// Takes the table from `from` (what it holds) to `to`, in one atomic batch touching only
    /// what changed. Bad input is refused before anything is sent. When the table does not
    /// hold `from` the batch usually fails whole ([`LbError::Diverged`]; the kernel is
    /// unchanged) and [`reconcile`](Self::reconcile) repairs.
    pub fn apply(&self, from: &View, to: &View) -> Result<(), LbError> {
        let ops = plan(from, to)?;
        if ops.is_empty() {
            return Ok(());
        }
        let mut b = self.nft.batch();
        encode(&ops, &mut b);
        tracing::debug!(netns = %netns_of(&self.nft), ops = ops.len(), messages = b.len(), "applying load-balancing change");
        self.send(b)
    }

    fn send(&self, b: Batch) -> Result<(), LbError> {
        self.nft.apply(b).map_err(|source| {
            let diverged = matches!(source, SysError::NotFound { .. } | SysError::Exists { .. })
                || source.errno() == Some(EBUSY);
            if diverged {
                LbError::Diverged {
                    netns: netns_of(&self.nft),
                    source,
                }
            } else {
                self.kernel(source)
            }
        })
    }

    /// The view the table holds (empty when there is no table): services from the dispatch
    /// map's elements and their comments, backends from their chains' names.
    pub fn read(&self) -> Result<View, LbError> {
        Ok(self.read_state()?.0)
    }

    /// The view, and whether the table holds objects of services it does not list.
    fn read_state(&self) -> Result<(View, bool), LbError> {
        let tables = self.nft.tables().map_err(|e| self.kernel(e))?;
        if !tables.iter().any(|(f, t)| *f == Family::Ip && t == TABLE) {
            return Ok((View::default(), true));
        }
        let elements = match self.nft.elements(Family::Ip, TABLE, SERVICES_MAP) {
            Ok(e) => e,
            // A table without its map: rebuilt by reconcile.
            Err(SysError::NotFound { .. }) => return Ok((View::default(), false)),
            Err(e) => return Err(self.kernel(e)),
        };
        let chains = self
            .nft
            .chains(Family::Ip, TABLE)
            .map_err(|e| self.kernel(e))?;
        let (view, strays) = decode(&elements, &chains).map_err(|what| LbError::Unexpected {
            netns: netns_of(&self.nft),
            what,
        })?;
        if !strays.chains.is_empty() {
            tracing::warn!(netns = %netns_of(&self.nft), chains = ?strays.chains, "load-balancing chains of no service");
        }
        Ok((view, strays.chains.is_empty()))
    }

    /// Makes the table hold `want`: reads it, then applies the difference. A table this
    /// crate cannot read (objects of no service, unexpected elements) is replaced whole, in
    /// the same atomic batch that deletes it.
    pub fn reconcile(&self, want: &View) -> Result<(), LbError> {
        let new = validate(want)?;
        match self.read_state() {
            Ok((have, true)) => {
                if have == want.normalized() {
                    return Ok(());
                }
                tracing::info!(netns = %netns_of(&self.nft), "load-balancing table differs from the store: repairing");
                self.apply(&have, want)
            }
            Ok((_, false)) | Err(LbError::Unexpected { .. }) => {
                tracing::warn!(netns = %netns_of(&self.nft), "load-balancing table unreadable: rebuilding it");
                let mut b = self.nft.batch();
                encode_remove(&mut b);
                encode(&plan_services(&Default::default(), &new), &mut b);
                self.send(b)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the table and everything in it; a missing table is no error.
    pub fn remove(&self) -> Result<(), LbError> {
        let mut b = self.nft.batch();
        encode_remove(&mut b);
        self.send(b)
    }
}

/// Linux's `EBUSY`: a chain or set to delete is still referred to.
const EBUSY: i32 = 16;

/// [`Dispatcher::apply`] on a connection opened for the call.
pub fn apply(ns: &Netns, from: &View, to: &View) -> Result<(), LbError> {
    Dispatcher::open(ns)?.apply(from, to)
}

/// [`Dispatcher::read`] on a connection opened for the call.
pub fn read(ns: &Netns) -> Result<View, LbError> {
    Dispatcher::open(ns)?.read()
}

/// [`Dispatcher::reconcile`] on a connection opened for the call.
pub fn reconcile(ns: &Netns, want: &View) -> Result<(), LbError> {
    Dispatcher::open(ns)?.reconcile(want)
}

/// [`Dispatcher::remove`] on a connection opened for the call.
pub fn remove(ns: &Netns) -> Result<(), LbError> {
    Dispatcher::open(ns)?.remove()
}
