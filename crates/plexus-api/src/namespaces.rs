//! Where sandboxes' network namespaces come from: made by the daemon under its run dir, or
//! handed over by path. A trait, so API tests can run without touching the kernel.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use axum::http::StatusCode;
use plexus_sys::SysError;

use crate::error::ApiError;

/// Makes, checks and removes sandbox namespaces.
#[async_trait]
pub trait Namespaces: Send + Sync {
    /// Makes a new namespace for sandbox `name`; returns its path.
    async fn create(&self, name: &str) -> Result<String, ApiError>;
    /// Checks that `path` is an existing network namespace (the error names the path).
    async fn check(&self, path: &str) -> Result<(), ApiError>;
    /// Removes a namespace made by [`create`](Self::create); a missing one is not an error.
    async fn delete(&self, path: &str) -> Result<(), ApiError>;
}

/// Real namespaces, pinned under a directory (`<run-dir>/netns`).
#[derive(Debug, Clone)]
pub struct SysNamespaces {
    dir: PathBuf,
}

impl SysNamespaces {
    /// Namespaces pinned under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

fn sys_err(field: &str, e: SysError) -> ApiError {
    let status = match &e {
        SysError::Exists { .. } => StatusCode::CONFLICT,
        SysError::Invalid { .. } => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, format!("{field}: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("namespace task failed: {e}")))?
}

#[async_trait]
impl Namespaces for SysNamespaces {
    async fn create(&self, name: &str) -> Result<String, ApiError> {
        let (dir, name) = (self.dir.clone(), name.to_string());
        blocking(move || {
            plexus_sys::netns::Netns::create(&dir, &name)
                .map(|ns| ns.path().display().to_string())
                .map_err(|e| sys_err("netns", e))
        })
        .await
    }

    async fn check(&self, path: &str) -> Result<(), ApiError> {
        // An open and an ioctl: quicker inline than a hop to the blocking pool.
        let path = Path::new(path);
        if !path.exists() {
            return Err(ApiError::bad_request(format!(
                "invalid netns: {} does not exist",
                path.display()
            )));
        }
        plexus_sys::netns::Netns::open(path)
            .map(|_| ())
            .map_err(|e| sys_err("invalid netns", e))
    }

    async fn delete(&self, path: &str) -> Result<(), ApiError> {
        let path = PathBuf::from(path);
        blocking(move || {
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(ApiError::internal(format!(
                    "netns {} is not a file path",
                    path.display()
                )));
            };
            plexus_sys::netns::Netns::delete(Path::new(dir), &name.to_string_lossy())
                .map_err(|e| sys_err("netns", e))
        })
        .await
    }
}
