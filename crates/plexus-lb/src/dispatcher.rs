//! The kernel side: plans sent as one atomic batch, the table read back, reconciliation.

use plexus_sys::netns::Netns;
use plexus_sys::nft::{Batch, Family, Nft};
use plexus_sys::SysError;

use crate::encode::{decode, encode, encode_remove, Dump};
use crate::error::LbError;
use crate::names::{self, LIVE_SET, SERVICES_MAP, TABLE};
use crate::plan::{plan, plan_service, plan_services, Op};
use crate::view::{validate, ServiceView, View};

/// The load balancer of one sandbox namespace: an nf_tables connection inside it.
#[derive(Debug)]
pub struct Dispatcher {
    nft: Nft,
}

pub(crate) fn netns_of(nft: &Nft) -> String {
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
        self.send_ops(&plan(from, to)?)
    }

    /// Takes one service from `old` (what the table holds of it; `None`: absent) to `new`
    /// (`None`: removed), in one atomic batch, touching no other service: the cost of a
    /// backend added or removed does not grow with the services in the table (see
    /// [`plan_service`](crate::plan_service), which also says what is not checked). A
    /// service added creates the table if needed. Errors as [`apply`](Self::apply).
    pub fn apply_service(
        &self,
        id: &str,
        old: Option<&ServiceView>,
        new: Option<&ServiceView>,
    ) -> Result<(), LbError> {
        self.send_ops(&plan_service(id, old, new)?)
    }

    fn send_ops(&self, ops: &[Op]) -> Result<(), LbError> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut b = self.nft.batch();
        encode(ops, &mut b);
        tracing::debug!(netns = %netns_of(&self.nft), ops = ops.len(), messages = b.len(), "applying load-balancing change");
        self.send(b)
    }

    fn send(&self, b: Batch) -> Result<(), LbError> {
        send(&self.nft, b)
    }

    /// The view the table holds (empty when there is no table): services from the dispatch
    /// map's elements and their comments, backends from their slot maps.
    pub fn read(&self) -> Result<View, LbError> {
        Ok(self.read_state()?.0)
    }

    /// The view, and whether the table holds exactly what this crate writes for it (no
    /// object of a service it does not list, nothing missing).
    fn read_state(&self) -> Result<(View, bool), LbError> {
        let tables = self.nft.tables().map_err(|e| self.kernel(e))?;
        if !tables.iter().any(|(f, t)| *f == Family::Ip && t == TABLE) {
            return Ok((View::default(), true));
        }
        let Some(dump) = self.dump()? else {
            // A table without one of its maps: rebuilt by reconcile.
            return Ok((View::default(), false));
        };
        let (view, strays) = decode(&dump).map_err(|what| LbError::Unexpected {
            netns: netns_of(&self.nft),
            what,
        })?;
        if !strays.is_empty() {
            tracing::warn!(netns = %netns_of(&self.nft), ?strays, "load-balancing objects of no service");
        }
        Ok((view, strays.is_empty()))
    }

    /// The table's objects; `None` when a map it must have is missing.
    fn dump(&self) -> Result<Option<Dump>, LbError> {
        let elements = |set: &str| match self.nft.elements(Family::Ip, TABLE, set) {
            Ok(e) => Ok(Some(e)),
            Err(SysError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.kernel(e)),
        };
        let (Some(services), Some(live)) = (elements(SERVICES_MAP)?, elements(LIVE_SET)?) else {
            return Ok(None);
        };
        let ids = crate::encode::decode_services(&services)
            .map_err(|what| LbError::Unexpected {
                netns: netns_of(&self.nft),
                what,
            })?
            .services
            .into_keys();
        let mut slots = std::collections::BTreeMap::new();
        for id in ids {
            let Some(els) = elements(&names::slots_map(&id))? else {
                return Ok(None);
            };
            slots.insert(id, els);
        }
        let chains = self
            .nft
            .chains(Family::Ip, TABLE)
            .map_err(|e| self.kernel(e))?;
        let sets = self
            .nft
            .sets(Family::Ip, TABLE)
            .map_err(|e| self.kernel(e))?;
        Ok(Some(Dump {
            services,
            slots,
            chains,
            sets,
            live,
        }))
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

/// Sends a batch; a refusal that says the table is not what the plan assumed (an object
/// missing or already there, one still referred to) is [`LbError::Diverged`].
pub(crate) fn send(nft: &Nft, b: Batch) -> Result<(), LbError> {
    nft.apply(b).map_err(|source| {
        let diverged = matches!(source, SysError::NotFound { .. } | SysError::Exists { .. })
            || source.errno() == Some(EBUSY);
        let netns = netns_of(nft);
        if diverged {
            LbError::Diverged { netns, source }
        } else {
            LbError::Kernel { netns, source }
        }
    })
}

/// [`Dispatcher::apply`] on a connection opened for the call.
pub fn apply(ns: &Netns, from: &View, to: &View) -> Result<(), LbError> {
    Dispatcher::open(ns)?.apply(from, to)
}

/// [`Dispatcher::apply_service`] on a connection opened for the call.
pub fn apply_service(
    ns: &Netns,
    id: &str,
    old: Option<&ServiceView>,
    new: Option<&ServiceView>,
) -> Result<(), LbError> {
    Dispatcher::open(ns)?.apply_service(id, old, new)
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
