//! The kernel's sandbox namespaces: [`SysNamespaces`] implements the controller's
//! [`Namespaces`] (made under the daemon's run dir, or handed over by path).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use plexus_cnm::{CnmError, Namespaces};
use plexus_sys::SysError;

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

fn sys_err(path: &str, e: SysError) -> CnmError {
    match e {
        SysError::Exists { .. } => CnmError::Exists {
            kind: "namespace",
            name: path.to_string(),
        },
        SysError::Invalid { .. } => CnmError::invalid("netns", format!("{path}: {e}")),
        other => CnmError::Netns {
            path: path.to_string(),
            message: other.to_string(),
        },
    }
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, CnmError> + Send + 'static,
) -> Result<T, CnmError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CnmError::Netns {
            path: what.to_string(),
            message: format!("namespace task failed: {e}"),
        })?
}

#[async_trait]
impl Namespaces for SysNamespaces {
    async fn create(&self, name: &str) -> Result<String, CnmError> {
        let (dir, name) = (self.dir.clone(), name.to_string());
        let what = self.dir.join(&name).display().to_string();
        blocking(&what.clone(), move || {
            plexus_sys::netns::Netns::create(&dir, &name)
                .map(|ns| ns.path().display().to_string())
                .map_err(|e| sys_err(&what, e))
        })
        .await
    }

    async fn check(&self, path: &str) -> Result<(), CnmError> {
        // An open and an ioctl: quicker inline than a hop to the blocking pool.
        if !Path::new(path).exists() {
            return Err(CnmError::invalid("netns", format!("{path} does not exist")));
        }
        plexus_sys::netns::Netns::open(Path::new(path))
            .map(|_| ())
            .map_err(|e| CnmError::invalid("netns", format!("{path}: {e}")))
    }

    async fn delete(&self, path: &str) -> Result<(), CnmError> {
        let path = PathBuf::from(path);
        let what = path.display().to_string();
        blocking(&what.clone(), move || {
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(CnmError::invalid(
                    "netns",
                    format!("{what} is not a file path"),
                ));
            };
            plexus_sys::netns::Netns::delete(Path::new(dir), &name.to_string_lossy())
                .map_err(|e| sys_err(&what, e))
        })
        .await
    }
}
