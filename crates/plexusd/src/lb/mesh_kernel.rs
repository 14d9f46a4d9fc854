//! The routing mesh's kernel calls: the host's and the ingress sandbox's `ip plexus-mesh`
//! tables (blocking nf_tables work, for the blocking pool) and the tasks' return paths.
//! Each returns whether the namespace now holds the view; failures are logged.

use std::path::Path;

use plexus_lb::mesh::{Mesh, MeshView};
use plexus_lb::return_path::{self, ReturnView};
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::Rtnl;

/// Makes the daemon's namespace publish `want` (no port: no table).
pub fn host(ns: &Netns, want: &MeshView) -> bool {
    let r = Mesh::open(ns).and_then(|m| m.reconcile(want));
    match r {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "routing mesh: the host's published ports; the next change or pass tries again");
            false
        }
    }
}

/// Makes the ingress sandbox at `netns` forward and hold `want`.
pub fn gateway(netns: &Path, want: &MeshView) -> bool {
    let r = Netns::open(netns)
        .map_err(|e| e.to_string())
        .and_then(|ns| {
            // It forwards what it DNATs, to the tasks over the ingress network.
            plexus_sys::sysctl::write(&ns, "net.ipv4.ip_forward", "1")
                .map_err(|e| e.to_string())?;
            Mesh::open(&ns)
                .and_then(|m| m.reconcile(want))
                .map_err(|e| e.to_string())
        });
    match r {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(netns = %netns.display(), error = %e, "routing mesh: the ingress sandbox's table; the next change or pass tries again");
            false
        }
    }
}

/// Makes the task at `netns` send its replies to mesh connections back to the ingress
/// sandbox they came from.
pub async fn return_path(netns: &Path, want: &ReturnView) -> bool {
    let ns = match Netns::open(netns) {
        Ok(ns) => ns,
        Err(e) => {
            tracing::debug!(netns = %netns.display(), error = %e, "routing mesh: task namespace gone");
            return false;
        }
    };
    let r = match Rtnl::connect(&ns).await {
        Ok(rtnl) => return_path::reconcile(&rtnl, want)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match r {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(netns = %netns.display(), error = %e, "routing mesh: a task's return path; the next change or pass tries again");
            false
        }
    }
}

/// Removes the return path of a task that left the ingress network.
pub async fn remove_return(netns: &Path) {
    let Ok(ns) = Netns::open(netns) else {
        return;
    };
    let r = match Rtnl::connect(&ns).await {
        Ok(rtnl) => return_path::remove(&rtnl).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = r {
        tracing::warn!(netns = %netns.display(), error = %e, "routing mesh: removing a task's return path");
    }
}
