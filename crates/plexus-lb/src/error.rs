//! The errors of the crate.

use plexus_sys::SysError;

/// What went wrong loading a view into a namespace, or reading it back.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// A view asked for something the data plane refuses; `field` names it
    /// (`services[<id>].vip`, `services[<id>].backends[2]`, …). Nothing was sent to the kernel.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, as a path into the view.
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// The kernel's table did not match the `from` view the change was planned against (an
    /// object to delete was missing, or one to add was there already): nothing was applied.
    /// [`Dispatcher::reconcile`](crate::Dispatcher::reconcile) reads the kernel and repairs.
    #[error("the load-balancing table of {netns} differs from the view the change was planned from (reconcile it): {source}")]
    Diverged {
        /// The namespace.
        netns: String,
        /// The kernel's refusal.
        #[source]
        source: SysError,
    },
    /// The kernel refused or could not be reached.
    #[error("load balancing in {netns}: {source}")]
    Kernel {
        /// The namespace.
        netns: String,
        /// The error.
        #[source]
        source: SysError,
    },
    /// The table holds something this crate did not write (or a newer version wrote).
    #[error("load-balancing table of {netns}: unexpected {what}")]
    Unexpected {
        /// The namespace.
        netns: String,
        /// What was found.
        what: String,
    },
}

impl LbError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        LbError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
