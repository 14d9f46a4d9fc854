//! The daemon: its socket, and through `GET /info` its store and cluster store.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use plexus_api_types::SystemInfo;

use super::{Check, Status};
use crate::client::{Client, Method};

/// The socket, then (when the daemon answers) its store and cluster store.
pub(super) fn checks(client: &Client, host: &str) -> Vec<Check> {
    let path = Path::new(host.strip_prefix("unix://").unwrap_or(host));
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Err(_) => {
            return vec![Check::new(
                "daemon",
                Status::Warn,
                format!("plexusd: not running (no socket at {shown}); its store is not checked"),
            )
            .fix("start plexusd (as root), or point -H / PLEXUS_HOST at its socket")]
        }
        Ok(m) if !m.file_type().is_socket() => {
            return vec![Check::new(
                "daemon",
                Status::Fail,
                format!("plexusd: {shown} is not a socket; plexusd will not start there"),
            )
            .fix(format!("remove {shown} or start plexusd with another -H"))]
        }
        Ok(_) => {}
    }
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        return vec![Check::new(
            "daemon",
            Status::Warn,
            format!("plexusd: not running (nothing answers at {shown}, a socket left by a daemon that stopped); its store is not checked"),
        )
        .fix("start plexusd: it replaces a stale socket")];
    }
    match client.call(Method::Get, "/_ping", None) {
        Ok((_, body)) if body == b"OK" => {}
        Ok((status, body)) => {
            return vec![Check::new(
                "daemon",
                Status::Fail,
                format!(
                    "plexusd at {shown}: /_ping answered {status} {:?}, not OK",
                    String::from_utf8_lossy(&body)
                ),
            )
            .fix("is it plexusd serving there? look at its log")]
        }
        Err(e) => {
            return vec![Check::new(
                "daemon",
                Status::Fail,
                format!("plexusd at {shown}: /_ping failed: {e:#}"),
            )
            .fix("look at plexusd's log; restart it")]
        }
    }
    let mut out = vec![Check::new(
        "daemon",
        Status::Ok,
        format!("plexusd: answers at {shown}"),
    )];
    match client.get::<SystemInfo>("/info") {
        Ok(info) => out.extend(stores(&info)),
        Err(e) => out.push(
            Check::new(
                "store",
                Status::Fail,
                format!("plexusd's store: /info failed: {e:#}"),
            )
            .fix("look at plexusd's log"),
        ),
    }
    out
}

/// The store and the cluster store as `/info` reports them.
fn stores(info: &SystemInfo) -> Vec<Check> {
    let mut out = Vec::new();
    out.push(match &info.plexus_store {
        Some(s) if s.status == "ok" => {
            Check::new("store", Status::Ok, format!("store {}: answers", s.url))
        }
        Some(s) => Check::new(
            "store",
            Status::Fail,
            format!(
                "store {}: {}; no operation can be recorded",
                s.url, s.status
            ),
        )
        .fix("look at plexusd's log and the store (--store); for etcd or ZooKeeper, their servers"),
        None => Check::new(
            "store",
            Status::Warn,
            "store: this plexusd does not report its store (an older version)",
        )
        .fix("upgrade plexusd"),
    });
    out.push(match &info.plexus_cluster_store {
        None => Check::new(
            "cluster_store",
            Status::Ok,
            "cluster store: none (--cluster-store not set): local networks only",
        ),
        Some(c) if c.status == "ok" => Check::new(
            "cluster_store",
            Status::Ok,
            format!("cluster store {}: answers", c.url),
        ),
        Some(c) => Check::new(
            "cluster_store",
            Status::Warn,
            format!(
                "cluster store {}: {}; local networks go on, global-scope networks and host discovery wait for it",
                c.url, c.status
            ),
        )
        .fix("check the cluster store's servers and plexusd's --cluster-store URL and --cluster-store-opt"),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use plexus_api_types::ClusterStoreInfo;

    fn info(store: Option<&str>, cluster: Option<&str>) -> SystemInfo {
        let s = |status: &str, url: &str| ClusterStoreInfo {
            url: url.into(),
            status: status.into(),
        };
        SystemInfo {
            id: "h".into(),
            name: "n".into(),
            kernel_version: "6.1.0".into(),
            operating_system: "linux".into(),
            os_type: "linux".into(),
            cluster_store: String::new(),
            cluster_advertise: String::new(),
            plexus_cluster_store: cluster.map(|st| s(st, "etcd://10.0.0.1:2379")),
            plexus_store: store.map(|st| s(st, "redb:///var/lib/plexus/state.db")),
        }
    }

    fn statuses(checks: &[Check]) -> Vec<Status> {
        checks.iter().map(|c| c.status).collect()
    }

    #[test]
    fn a_store_away_fails_and_a_cluster_store_away_warns() {
        assert_eq!(
            statuses(&stores(&info(Some("ok"), None))),
            [Status::Ok, Status::Ok]
        );
        let c = stores(&info(
            Some("unavailable: disk full"),
            Some("unavailable: timeout"),
        ));
        assert_eq!(statuses(&c), [Status::Fail, Status::Warn]);
        assert!(c[0].message.contains("redb:///var/lib/plexus/state.db"));
        assert!(c[1].message.contains("etcd://10.0.0.1:2379") && c[1].message.contains("timeout"));
        assert_eq!(statuses(&stores(&info(None, Some("ok"))))[1], Status::Ok);
    }

    #[test]
    fn no_daemon_is_a_warning_and_a_file_in_its_place_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("plexus.sock");
        let host = format!("unix://{}", sock.display());
        let client = Client::new(&host).unwrap();
        let c = checks(&client, &host);
        assert_eq!(statuses(&c), [Status::Warn]);
        assert!(c[0].message.contains("not running"), "{}", c[0].message);
        std::fs::write(&sock, "").unwrap();
        let c = checks(&client, &host);
        assert_eq!(statuses(&c), [Status::Fail]);
        assert!(c[0].message.contains("is not a socket"), "{}", c[0].message);
    }
}
