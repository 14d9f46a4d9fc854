//! Observers: parts of the daemon that must follow the model's changes *before* the
//! operation that made them returns — the embedded DNS, so that a name answers by the time
//! `connect` returns and is gone when `disconnect` returns. Live event subscribers cannot
//! promise that; an observer is awaited inside the operation, after its commit.

use std::sync::Arc;

use async_trait::async_trait;

use crate::controller::events::Event;
use crate::Controller;

/// Told of every committed change, in commit order, inside the operation that made it.
///
/// It runs while the controller's operation lock is held: it may read through the
/// controller (reads take no lock) but must not call a mutating operation. A failure is
/// its own to log and repair (the change is committed); it must not panic.
#[async_trait]
pub trait CommitObserver: Send + Sync {
    /// `events` were committed together.
    async fn committed(&self, controller: &Controller, events: &[Arc<Event>]);
}
