//! Deleting links in the background, in the host namespace or a sandbox's.
//!
//! Deleting a link makes the kernel wait for RCU grace periods (10–60 ms for a veth or a
//! bridge), far longer than everything else a disconnect or a network removal does. So the
//! drivers first take the link out of service at once (down, renamed off any name a later
//! call may want; a left macvlan device, whose down and rename would each wait for a grace
//! period too, only loses its addresses and keeps running, see `macvlan::endpoint`) and hand
//! its deletion to the [`Reaper`], which runs it on its own task.
//! A daemon that dies before the deletion ran leaves a marked link that the store no longer
//! knows, which start-up reconciliation deletes.
//!
//! Each deletion waits [`DEFER`] after it was handed over: the kernel work of deleting a
//! bridge port grows with the bridge's ports (1–3 ms of CPU at 1,000) and would otherwise
//! compete, on a small machine, with the rest of the very call that retired the link.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;
use plexus_sys::SysError;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Duration, Instant};

/// How long a deletion waits after it was handed over (see the [module docs](self)).
pub(crate) const DEFER: Duration = Duration::from_millis(20);

/// A link to delete: the namespace it is in (`None`: the reaper's own), its name, the
/// alias it must carry, when it was handed over. A namespace held here stays alive until
/// its deletion ran, even if its sandbox went meanwhile.
type Job = (Option<Netns>, String, String, Instant);

/// Deletes marked links on its own thread; see the [module docs](self).
///
/// The kernel answers a link deletion only after the grace periods, inside the `sendmsg` of
/// the request, so the deletions run on a thread (and netlink connection) of their own:
/// they never hold up a runtime worker or the connection the driver's other calls use.
pub(crate) struct Reaper {
    jobs: mpsc::UnboundedSender<Job>,
    /// Names of the links being deleted, with how many deletions of each are queued.
    pending: Arc<Mutex<BTreeMap<String, usize>>>,
    changed: Arc<Notify>,
}

impl Reaper {
    /// A reaper deleting links of `host` on a thread of its own.
    pub(crate) async fn new(host: &Netns) -> Result<Self, SysError> {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let pending: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let changed: Arc<Notify> = Arc::default();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let start_err = |source| SysError::Netns {
            path: host.path().to_path_buf(),
            op: "start the link reaper",
            source,
        };
        let (p, c, ns) = (pending.clone(), changed.clone(), host.clone());
        std::thread::Builder::new()
            .name("plexus-reaper".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(SysError::Netns {
                            path: ns.path().to_path_buf(),
                            op: "start the link reaper",
                            source: e,
                        }));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let rtnl = match Rtnl::connect(&ns).await {
                        Ok(r) => {
                            let _ = ready_tx.send(Ok(()));
                            r
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    while let Some((ns, name, alias, handed)) = rx.recv().await {
                        tokio::time::sleep_until(handed + DEFER).await;
                        match ns {
                            None => delete_marked(&rtnl, &name, &alias).await,
                            Some(ns) => match Rtnl::connect(&ns).await {
                                Ok(other) => delete_marked(&other, &name, &alias).await,
                                Err(e) => {
                                    tracing::debug!(link = %name, error = %e, "namespace gone before its link's deletion")
                                }
                            },
                        }
                        let mut pending = p.lock().unwrap_or_else(PoisonError::into_inner);
                        if let Some(n) = pending.get_mut(&name) {
                            *n -= 1;
                            if *n == 0 {
                                pending.remove(&name);
                            }
                        }
                        drop(pending);
                        c.notify_waiters();
                    }
                })
            })
            .map_err(start_err)?;
        ready
            .await
            .map_err(|_| start_err(std::io::Error::other("the reaper thread died")))??;
        Ok(Self {
            jobs,
            pending,
            changed,
        })
    }

    /// Deletes the link called `name` in the background, if it carries `alias` (so a link
    /// somebody else made under that name meanwhile is never touched); an empty `alias`: the
    /// link carries none (its owner cleared the mark, as `leave` does with a host end).
    pub(crate) fn delete(&self, name: String, alias: String) {
        self.hand_over(None, name, alias);
    }

    /// [`delete`](Self::delete) for a link in another namespace (a sandbox's).
    pub(crate) fn delete_in(&self, ns: Netns, name: String, alias: String) {
        self.hand_over(Some(ns), name, alias);
    }

    fn hand_over(&self, ns: Option<Netns>, name: String, alias: String) {
        *self
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.clone())
            .or_default() += 1;
        if self
            .jobs
            .send((ns, name.clone(), alias, Instant::now()))
            .is_err()
        {
            // The reaper thread is gone (it never stops before the driver): reconciliation
            // deletes the link at the next start.
            tracing::warn!(link = %name, "link reaper gone; the link stays until the next start");
            self.pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&name);
        }
    }

    /// Whether no deletion is pending.
    pub(crate) fn idle(&self) -> bool {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Waits until every deletion handed over so far is done.
    pub(crate) async fn settle(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a wake-up between the two is not lost.
            changed.as_mut().enable();
            if self.idle() {
                return;
            }
            changed.await;
        }
    }
}

async fn delete_marked(rtnl: &Rtnl, name: &str, alias: &str) {
    let failed = |e: SysError| tracing::warn!(link = %name, error = %e, "background delete failed; reconciliation will clean up");
    match rtnl.link(name).await {
        Ok(Some(link)) if link.alias.as_deref().unwrap_or("") == alias => {
            match rtnl.delete_link(link.index).await {
                Ok(()) | Err(SysError::NotFound { .. }) => {
                    tracing::debug!(link = %name, "deleted in the background")
                }
                Err(e) => failed(e),
            }
        }
        Ok(_) => {}
        Err(e) => failed(e),
    }
}
