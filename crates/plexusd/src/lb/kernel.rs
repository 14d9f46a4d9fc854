//! The namespaces' side: blocking nf_tables work (run on tokio's blocking pool, never on a
//! worker), one sandbox at a time, each change one atomic batch.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use plexus_lb::{Dispatcher, LbError, View};
use plexus_sys::netns::Netns;

use super::metrics::LbMetrics;
use super::model::Change;

/// What became of one sandbox's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It holds the view asked for.
    Done,
    /// Its namespace is gone (the sandbox is being removed, or its process died): nothing
    /// to hold.
    Gone,
    /// It could not be made to hold the view (logged): the periodic pass tries again.
    Failed,
}

/// Opens the namespace's nf_tables; `Ok(None)` when the namespace is gone.
fn open(netns: &Path) -> Result<Option<Dispatcher>, LbError> {
    let ns = match Netns::open(netns) {
        Ok(ns) => ns,
        Err(e) => {
            tracing::debug!(netns = %netns.display(), error = %e, "load balancing: namespace gone");
            return Ok(None);
        }
    };
    Dispatcher::open(&ns).map(Some)
}

/// Applies `changes` to the sandbox's table (each service its own atomic batch, touching no
/// other service); if one fails (the table is not what the daemon believed: drift, or a
/// restart), reads the table and reconciles it to `want` at once.
pub fn apply(
    sandbox: &str,
    netns: &Path,
    changes: &[Change],
    want: &View,
    metrics: &LbMetrics,
) -> Outcome {
    let d = match open(netns) {
        Ok(Some(d)) => d,
        Ok(None) => return Outcome::Gone,
        Err(e) => {
            tracing::warn!(%sandbox, error = %e, "load balancing: opening the namespace's nf_tables");
            metrics.update("error", None);
            return Outcome::Failed;
        }
    };
    for (key, old, new) in changes {
        let began = Instant::now();
        match d.apply_service(key, old.as_ref(), new.as_ref()) {
            Ok(()) => metrics.update("ok", Some(began.elapsed())),
            Err(e) => {
                tracing::info!(%sandbox, service = %key, error = %e, "load-balancing change failed; reconciling the sandbox's table");
                return match d.reconcile(want) {
                    Ok(()) => {
                        metrics.update("repaired", Some(began.elapsed()));
                        Outcome::Done
                    }
                    Err(e) => {
                        metrics.update("error", Some(began.elapsed()));
                        tracing::warn!(%sandbox, error = %e, "load balancing: cannot reconcile the table; the periodic pass tries again");
                        Outcome::Failed
                    }
                };
            }
        }
    }
    Outcome::Done
}

/// `want` with, for each service of `inherit` that the table holds with the same VIP, the
/// backends the table holds too: other hosts' tasks a restarted daemon has not heard of
/// again yet.
pub fn inherited(want: &View, have: &View, inherit: &BTreeSet<String>) -> View {
    let mut out = want.clone();
    for key in inherit {
        if let (Some(h), Some(w)) = (have.services.get(key), out.services.get_mut(key)) {
            if h.vip == w.vip {
                w.backends.extend(h.backends.iter().copied());
                *w = w.normalized();
            }
        }
    }
    out
}

/// Reads the sandbox's table and, if it differs from `want` (with the backends of the
/// services of `inherit` it holds kept, see [`inherited`]), repairs it (one batch).
/// Returns the outcome, whether it was repaired, and the view the table now holds.
pub fn reconcile(
    sandbox: &str,
    netns: &Path,
    want: &View,
    inherit: &BTreeSet<String>,
    metrics: &LbMetrics,
) -> (Outcome, bool, View) {
    let d = match open(netns) {
        Ok(Some(d)) => d,
        Ok(None) => return (Outcome::Gone, false, want.clone()),
        Err(e) => {
            tracing::warn!(%sandbox, error = %e, "load balancing: opening the namespace's nf_tables");
            return (Outcome::Failed, false, want.clone());
        }
    };
    let have = d.read().ok();
    let want = match &have {
        Some(have) if !inherit.is_empty() => inherited(want, have, inherit),
        _ => want.clone(),
    };
    let want = &want;
    if have.as_ref() == Some(&want.normalized()) {
        return (Outcome::Done, false, want.clone());
    }
    let began = Instant::now();
    match d.reconcile(want) {
        Ok(()) => {
            metrics.update("repaired", Some(began.elapsed()));
            tracing::info!(%sandbox, services = want.services.len(), "load-balancing table repaired to the store's view");
            (Outcome::Done, true, want.clone())
        }
        Err(e) => {
            metrics.update("error", Some(began.elapsed()));
            tracing::warn!(%sandbox, error = %e, "load balancing: cannot reconcile the table");
            (Outcome::Failed, false, want.clone())
        }
    }
}

/// Deletes the table of a sandbox that is gone from the store but whose namespace was
/// handed over (and so lives on); a namespace that is gone is no error.
pub fn remove(sandbox: &str, netns: &Path) {
    match open(netns) {
        Ok(Some(d)) => {
            if let Err(e) = d.remove() {
                tracing::warn!(%sandbox, error = %e, "load balancing: removing the table");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(%sandbox, error = %e, "load balancing: namespace not reachable"),
    }
}
