//! Store URLs: `memory://`, `redb:///path/state.db`, `etcd://h1:2379,h2:2379/prefix`,
//! `zk://h1:2181/chroot`.

use crate::error::{KvError, Result};

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// The scheme, lower-cased (`memory`, `redb`, `etcd`, `zk`, ...).
    pub scheme: String,
    /// `host:port` endpoints, in the order given.
    pub hosts: Vec<String>,
    /// The path after the hosts, without its leading `/` for etcd/zk (a key prefix or chroot);
    /// for redb, the file path as written.
    pub path: String,
    /// The URL as given.
    pub original: String,
}

impl StoreUrl {
    /// Parses `url`.
    ///
    /// ```
    /// let u = plexus_kv::StoreUrl::parse("etcd://h1:2379,h2:2379/plexus").unwrap();
    /// assert_eq!(u.hosts, ["h1:2379", "h2:2379"]);
    /// assert_eq!(u.path, "plexus");
    /// ```
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: &str| KvError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid("expected SCHEME://…, e.g. redb:///var/lib/plexus/state.db"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme == "redb" || scheme == "boltdb" {
            if rest.is_empty() {
                return Err(invalid(
                    "the redb URL needs a file path: redb:///path/state.db",
                ));
            }
            return Ok(Self {
                scheme: "redb".into(),
                hosts: Vec::new(),
                path: rest.to_string(),
                original: url.to_string(),
            });
        }
        let (hosts, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let hosts: Vec<String> = if hosts.is_empty() {
            Vec::new()
        } else {
            hosts.split(',').map(str::to_string).collect()
        };
        for h in &hosts {
            let ok = h
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(invalid(&format!("endpoint {h:?} is not HOST:PORT")));
            }
        }
        Ok(Self {
            scheme,
            hosts,
            path: path.trim_end_matches('/').to_string(),
            original: url.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        let r = StoreUrl::parse("redb:///var/lib/plexus/state.db").unwrap();
        assert_eq!(
            (r.scheme.as_str(), r.path.as_str()),
            ("redb", "/var/lib/plexus/state.db")
        );
        let z = StoreUrl::parse("zk://127.0.0.1:2181/plexus/").unwrap();
        assert_eq!(z.hosts, ["127.0.0.1:2181"]);
        assert_eq!(z.path, "plexus");
        assert_eq!(StoreUrl::parse("memory://").unwrap().scheme, "memory");
        assert!(StoreUrl::parse("etcd://h1/x")
            .unwrap_err()
            .to_string()
            .contains("h1"));
        assert!(StoreUrl::parse("nonsense").is_err());
    }
}
