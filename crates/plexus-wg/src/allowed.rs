//! Allowed IPs: the prefixes a peer may send from and that route outgoing packets to it
//! (cryptokey routing), and the small longest-prefix table over all peers.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::{Result, WgError};

/// An IP prefix (`10.99.0.0/24`, `fd00::/64`). Host bits are cleared, as `wg` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AllowedIp {
    addr: IpAddr,
    prefix: u8,
}

impl AllowedIp {
    /// The prefix `addr/prefix`; errors name the field `allowed ip`.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(WgError::Invalid {
                field: "allowed ip",
                value: format!("{addr}/{prefix}"),
                reason: "prefix length is longer than the address",
            });
        }
        Ok(Self {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for AllowedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for AllowedIp {
    type Err = WgError;
    /// `ADDR/LEN`, or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason| WgError::Invalid {
            field: "allowed ip",
            value: s.into(),
            reason,
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| bad("prefix length is not a number"))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Self::new(addr, prefix)
    }
}

/// Longest-prefix match from prefixes to values. Entries are kept longest prefix first, so
/// the first match wins; peers have few prefixes, and a scan of a short vector beats a trie.
#[derive(Debug, Clone)]
pub(crate) struct PrefixTable<T> {
    entries: Vec<(AllowedIp, T)>,
}

impl<T> Default for PrefixTable<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<T: Clone> PrefixTable<T> {
    /// The value of the longest prefix holding `ip`.
    pub(crate) fn lookup(&self, ip: IpAddr) -> Option<&T> {
        self.entries
            .iter()
            .find(|(p, _)| p.contains(ip))
            .map(|(_, v)| v)
    }

    /// The value of exactly this prefix.
    pub(crate) fn get(&self, prefix: &AllowedIp) -> Option<&T> {
        self.entries
            .iter()
            .find(|(p, _)| p == prefix)
            .map(|(_, v)| v)
    }

    /// Adds or replaces `prefix`.
    pub(crate) fn insert(&mut self, prefix: AllowedIp, value: T) {
        self.entries.retain(|(p, _)| *p != prefix);
        let at = self
            .entries
            .iter()
            .position(|(p, _)| p.prefix < prefix.prefix)
            .unwrap_or(self.entries.len());
        self.entries.insert(at, (prefix, value));
    }

    /// Keeps only the entries whose value `keep` accepts.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.entries.retain(|(_, v)| keep(v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_masks_prefixes() {
        let p: AllowedIp = "10.99.0.7/24".parse().unwrap();
        assert_eq!(p.to_string(), "10.99.0.0/24");
        assert!(p.contains(ip("10.99.0.200")));
        assert!(!p.contains(ip("10.99.1.1")));
        assert!(!p.contains(ip("::1")));
        let host: AllowedIp = "fd00::1".parse().unwrap();
        assert_eq!(host.to_string(), "fd00::1/128");
        let all: AllowedIp = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("192.0.2.1")));
    }

    #[test]
    fn bad_prefixes_name_the_field() {
        for (text, reason) in [
            ("10.0.0.0/33", "prefix length is longer than the address"),
            ("10.0.0/8", "not an IP address"),
            ("10.0.0.0/x", "prefix length is not a number"),
        ] {
            let e = text.parse::<AllowedIp>().unwrap_err().to_string();
            assert_eq!(e, format!("invalid allowed ip {text:?}: {reason}"));
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = PrefixTable::default();
        t.insert("10.0.0.0/8".parse().unwrap(), 1);
        t.insert("10.1.0.0/16".parse().unwrap(), 2);
        t.insert("0.0.0.0/0".parse().unwrap(), 3);
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&2));
        assert_eq!(t.lookup(ip("10.2.2.3")), Some(&1));
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(&3));
        assert_eq!(t.lookup(ip("::1")), None);
        t.retain(|v| *v != 2);
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(&1));
    }
}
