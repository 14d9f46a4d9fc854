//! Distributed locks: the shape shared by every backend.

use async_trait::async_trait;
use tokio::sync::watch;

use crate::error::Result;

/// A lock on one key, made by [`Store::new_lock`](crate::Store::new_lock).
#[async_trait]
pub trait Locker: Send + Sync {
    /// Waits until the lock is acquired. Cancel by dropping the future (e.g. with
    /// `tokio::time::timeout`): nothing stays held.
    async fn lock(&self) -> Result<LockHandle>;
}

/// The backend side of a held lock.
#[async_trait]
pub trait LockRelease: Send + Sync {
    /// Releases the lock and stops renewing it.
    async fn release(self: Box<Self>) -> Result<()>;
    /// Called when the handle is dropped without `unlock`: release in the background.
    fn release_in_background(self: Box<Self>);
}

/// A held lock. It is renewed automatically until [`unlock`](Self::unlock) or drop; if the
/// backend session behind it is lost, [`lost`](Self::lost) resolves and
/// [`is_lost`](Self::is_lost) turns true — stop acting as the holder then.
pub struct LockHandle {
    key: String,
    lost: watch::Receiver<Option<String>>,
    release: Option<Box<dyn LockRelease>>,
}

impl std::fmt::Debug for LockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockHandle")
            .field("key", &self.key)
            .field("lost", &*self.lost.borrow())
            .finish()
    }
}

impl LockHandle {
    /// Builds a handle; backends send `Some(reason)` on `lost` when the lock is lost.
    pub fn new(
        key: String,
        lost: watch::Receiver<Option<String>>,
        release: Box<dyn LockRelease>,
    ) -> Self {
        Self {
            key,
            lost,
            release: Some(release),
        }
    }

    /// The lock's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether the lock has been lost.
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// Resolves when the lock is lost, with the reason. Never resolves while it is held.
    pub async fn lost(&mut self) -> String {
        loop {
            if let Some(reason) = self.lost.borrow_and_update().clone() {
                return reason;
            }
            if self.lost.changed().await.is_err() {
                // The backend dropped its side without reporting: the renewal is gone.
                return "lock renewal stopped".to_string();
            }
        }
    }

    /// Releases the lock.
    pub async fn unlock(mut self) -> Result<()> {
        match self.release.take() {
            Some(release) => release.release().await,
            None => Ok(()),
        }
    }
}

impl Drop for LockHandle {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release.release_in_background();
        }
    }
}
