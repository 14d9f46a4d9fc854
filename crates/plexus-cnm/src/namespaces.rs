//! Where sandboxes' network namespaces come from. The controller makes and removes them
//! through this trait while it creates and removes sandboxes, so every front (HTTP API, CLI,
//! CNI, Docker plugin) gets the same undo on failure; the kernel implementation lives with
//! the daemon's I/O (`plexus_api::SysNamespaces`), and tests use files.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{CnmError, Result};

/// Makes, checks and removes sandbox namespaces.
#[async_trait]
pub trait Namespaces: Send + Sync {
    /// Makes a new namespace for sandbox `name`; returns its path.
    async fn create(&self, name: &str) -> Result<String>;
    /// Checks that `path` is an existing network namespace (the error names the path).
    async fn check(&self, path: &str) -> Result<()>;
    /// Removes a namespace made by [`create`](Self::create); a missing one is not an error.
    async fn delete(&self, path: &str) -> Result<()>;
}

/// The provider of a controller given none: it cannot make namespaces, and accepts a path to
/// attach only if something exists there.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNamespaces;

#[async_trait]
impl Namespaces for NoNamespaces {
    async fn create(&self, name: &str) -> Result<String> {
        Err(CnmError::Netns {
            path: name.to_string(),
            message: "this controller has no namespace provider; give an existing namespace".into(),
        })
    }

    async fn check(&self, path: &str) -> Result<()> {
        if std::path::Path::new(path).exists() {
            Ok(())
        } else {
            Err(CnmError::invalid("netns", format!("{path} does not exist")))
        }
    }

    async fn delete(&self, _path: &str) -> Result<()> {
        Ok(())
    }
}

/// The default provider, shared.
pub(crate) fn none() -> Arc<dyn Namespaces> {
    Arc::new(NoNamespaces)
}
