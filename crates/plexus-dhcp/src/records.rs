//! What the driver keeps in the store (its pools and its lease table), the options it reads,
//! and the wall-clock arithmetic of leases (pure: no I/O).
//!
//! Keys: `dhcp/pool/<pool id>` and `dhcp/lease/<pool id>/<address>`, JSON. A lease record
//! holds everything needed to renew and release the lease after a restart: the interface,
//! the endpoint's MAC and client id, the server and its MAC, and when it was granted.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::client::{Identity, Lease};
use crate::error::{DhcpError, Result};

/// The store directory of the driver's records.
pub const ROOT: &str = "dhcp";

/// The IPAM option (`--ipam-opt`) naming the interface the client talks on; without it, the
/// network's `parent` (macvlan, ipvlan) or its bridge's name
/// ([`BRIDGE_NAME_OPTION`]).
pub const OPT_PARENT: &str = "parent";
/// The network option naming a bridge network's bridge (Docker's).
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// The IPAM option bounding each DHCP exchange (net-dhcp's `lease_timeout`: `10s`, `1500ms`,
/// `1m`, or seconds).
pub const OPT_LEASE_TIMEOUT: &str = "lease_timeout";

/// The key of a pool's record.
pub fn pool_key(pool_id: &str) -> String {
    format!("{ROOT}/pool/{pool_id}")
}

/// The directory of a pool's leases.
pub fn leases_dir(pool_id: &str) -> String {
    format!("{ROOT}/lease/{pool_id}")
}

/// The key of a lease's record.
pub fn lease_key(pool_id: &str, address: Ipv4Addr) -> String {
    format!("{}/{address}", leases_dir(pool_id))
}

/// A pool: the LAN behind one interface, as its DHCP server described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    /// Its id.
    pub pool_id: String,
    /// The network that owns it.
    pub owner: String,
    /// The interface the client talks on.
    pub interface: String,
    /// The subnet (`--subnet`, or the probe's offer).
    pub subnet: Ipv4Net,
    /// The gateway (`--gateway`, or the offer's first router).
    pub gateway: Option<Ipv4Addr>,
    /// How long one exchange may take, in milliseconds.
    pub timeout_ms: u64,
}

impl PoolRecord {
    /// The exchange timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// A granted lease, as kept in the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The pool.
    pub pool_id: String,
    /// The interface the client talks on.
    pub interface: String,
    /// The endpoint's MAC, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The client identifier, hex.
    pub client_id: String,
    /// The address.
    pub address: Ipv4Addr,
    /// The prefix length the server gave.
    pub prefix_len: u8,
    /// The routers.
    pub routers: Vec<Ipv4Addr>,
    /// The DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// The server.
    pub server: Ipv4Addr,
    /// The MAC of the frame that carried the server's answer (where the release goes).
    pub server_mac: String,
    /// Seconds from the grant to expiry (`u32::MAX`: never).
    pub lease_secs: u32,
    /// Seconds from the grant to renewal.
    pub t1_secs: u32,
    /// Seconds from the grant to rebinding (0 in records that predate it: 7/8 of the lease).
    #[serde(default)]
    pub t2_secs: u32,
    /// When it was granted (or last renewed), UNIX seconds.
    pub granted: u64,
}

impl LeaseRecord {
    /// The record of `lease`, granted at `granted` (UNIX seconds) to `identity`.
    pub fn new(
        pool_id: &str,
        interface: &str,
        identity: &Identity,
        lease: &Lease,
        server_mac: [u8; 6],
        granted: u64,
    ) -> Self {
        Self {
            pool_id: pool_id.to_string(),
            interface: interface.to_string(),
            mac: format_mac(&identity.mac),
            client_id: hex(&identity.client_id),
            address: lease.address,
            prefix_len: lease.prefix_len,
            routers: lease.routers.clone(),
            dns: lease.dns.clone(),
            server: lease.server,
            server_mac: format_mac(&server_mac),
            lease_secs: lease.lease_secs,
            t1_secs: lease.t1_secs,
            t2_secs: lease.t2_secs,
            granted,
        }
    }

    /// The identity it was granted to; the error names the field of a corrupt record.
    pub fn identity(&self) -> Result<Identity> {
        let mac = parse_mac(&self.mac)
            .ok_or_else(|| DhcpError::invalid("lease mac", &self.mac, "not aa:bb:cc:dd:ee:ff"))?;
        let client_id = unhex(&self.client_id)
            .ok_or_else(|| DhcpError::invalid("lease client_id", &self.client_id, "not hex"))?;
        Ok(Identity {
            mac,
            client_id,
            hostname: None,
        })
    }

    /// The server's MAC (broadcast when unreadable).
    pub fn server_mac(&self) -> [u8; 6] {
        parse_mac(&self.server_mac).unwrap_or(crate::frame::BROADCAST_MAC)
    }

    /// When it expires, UNIX seconds (`u64::MAX`: never).
    pub fn expires(&self) -> u64 {
        if self.lease_secs == u32::MAX {
            return u64::MAX;
        }
        self.granted.saturating_add(u64::from(self.lease_secs))
    }

    /// When to renew it, UNIX seconds (`u64::MAX`: never).
    pub fn renew_at(&self) -> u64 {
        if self.lease_secs == u32::MAX {
            return u64::MAX;
        }
        self.granted.saturating_add(u64::from(self.t1_secs))
    }

    /// When renewing from the server that granted it has failed long enough that any
    /// server may be asked (T2), UNIX seconds (`u64::MAX`: never).
    pub fn rebind_at(&self) -> u64 {
        if self.lease_secs == u32::MAX {
            return u64::MAX;
        }
        let t2 = match self.t2_secs {
            0 => (u64::from(self.lease_secs) * 7 / 8).max(u64::from(self.t1_secs)),
            t => u64::from(t),
        };
        self.granted.saturating_add(t2)
    }

    /// After a failed renewal at `now`: when to try again, half the time left to expiry,
    /// between 1 s and 60 s (a minute when already expired).
    pub fn retry_at(&self, now: u64) -> u64 {
        let left = self.expires().saturating_sub(now);
        let wait = if left == 0 {
            60
        } else {
            (left / 2).clamp(1, 60)
        };
        now.saturating_add(wait)
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (or with `-`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok()))
        .collect()
}

/// Parses a duration the way Go's `time.ParseDuration` spells the common ones (`10s`,
/// `1500ms`, `2m`, `1h`), or plain seconds; the error names `field`.
pub fn parse_duration(field: &str, value: &str) -> Result<Duration> {
    let v = value.trim();
    let bad = |reason: &str| DhcpError::invalid(field, value, reason);
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| bad("expected a duration such as 10s, 1500ms or 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad("unknown unit: use ms, s, m or h")),
    };
    if !(0.1..=3600.0).contains(&secs) {
        return Err(bad("must be between 100ms and 1h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The interface of a pool: `--ipam-opt parent`, else the network's `-o parent`, else its
/// bridge's name; the error names the options looked at.
pub fn interface_of(
    ipam_options: &BTreeMap<String, String>,
    network_options: &BTreeMap<String, String>,
) -> Result<String> {
    let name = ipam_options
        .get(OPT_PARENT)
        .or_else(|| network_options.get(OPT_PARENT))
        .or_else(|| network_options.get(BRIDGE_NAME_OPTION))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if name.is_empty() {
        return Err(DhcpError::invalid(
            "parent",
            "",
            "the dhcp IPAM driver talks to the DHCP server of a host interface's LAN: give the \
             network -o parent=IF (macvlan, ipvlan), -o com.docker.network.bridge.name=BR \
             (an existing bridge), or --ipam-opt parent=IF",
        ));
    }
    if name.len() > 15 || name.contains(['/', ' ', '\0']) {
        return Err(DhcpError::invalid(
            "parent",
            &name,
            "not an interface name (1 to 15 bytes, no '/' or spaces)",
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> LeaseRecord {
        let lease = Lease {
            address: Ipv4Addr::new(10, 0, 0, 5),
            prefix_len: 24,
            routers: vec![],
            dns: vec![],
            domain: None,
            server: Ipv4Addr::new(10, 0, 0, 1),
            lease_secs: 120,
            t1_secs: 60,
            t2_secs: 105,
        };
        let id = Identity::for_mac([2, 0, 0, 0, 0, 9]);
        LeaseRecord::new("p", "eth0", &id, &lease, [2, 0, 0, 0, 0, 1], 1000)
    }

    #[test]
    fn a_record_gives_back_its_identity_and_times() {
        let r = record();
        assert_eq!(r.client_id, "01020000000009");
        assert_eq!(r.identity().unwrap(), Identity::for_mac([2, 0, 0, 0, 0, 9]));
        assert_eq!(r.server_mac(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(
            (r.renew_at(), r.rebind_at(), r.expires()),
            (1060, 1105, 1120)
        );
        let old = LeaseRecord {
            t2_secs: 0,
            ..r.clone()
        };
        assert_eq!(old.rebind_at(), 1105, "7/8 of the lease");
        assert_eq!(r.retry_at(1060), 1090);
        assert_eq!(r.retry_at(1119), 1120);
        assert_eq!(r.retry_at(1200), 1260);
        let forever = LeaseRecord {
            lease_secs: u32::MAX,
            ..r
        };
        assert_eq!(forever.renew_at(), u64::MAX);
    }

    #[test]
    fn durations_parse_like_go() {
        for (v, ms) in [
            ("10s", 10_000),
            ("1500ms", 1500),
            ("2m", 120_000),
            ("3", 3000),
        ] {
            assert_eq!(
                parse_duration("lease_timeout", v).unwrap(),
                Duration::from_millis(ms)
            );
        }
        let e = parse_duration("lease_timeout", "ten").unwrap_err();
        assert!(
            e.to_string().starts_with("invalid lease_timeout \"ten\""),
            "{e}"
        );
        assert!(parse_duration("lease_timeout", "2d").is_err());
        assert!(parse_duration("lease_timeout", "0s").is_err());
    }

    #[test]
    fn the_interface_comes_from_ipam_then_network_options() {
        let none = BTreeMap::new();
        let net: BTreeMap<String, String> = [("parent".to_string(), "eth1".to_string())].into();
        let ipam: BTreeMap<String, String> = [("parent".to_string(), "eth2".to_string())].into();
        let br: BTreeMap<String, String> =
            [(BRIDGE_NAME_OPTION.to_string(), "br-lan".to_string())].into();
        assert_eq!(interface_of(&ipam, &net).unwrap(), "eth2");
        assert_eq!(interface_of(&none, &net).unwrap(), "eth1");
        assert_eq!(interface_of(&none, &br).unwrap(), "br-lan");
        let e = interface_of(&none, &none).unwrap_err();
        assert!(e.to_string().starts_with("invalid parent"), "{e}");
    }
}
