//! An overlay endpoint's entry in its network's control-plane table ([`PEER_TABLE`]): its
//! addresses, its MAC and the underlay address of its host (libnetwork's `PeerRecord`), in a
//! compact encoding of Plexus's own.
//!
//! Version 1, in bytes: `1`, the MAC (6), the host's address (a length, 4 or 16, then the
//! address), the IPv4 address (a length, 0 or 4, then it), the IPv6 address (0 or 16, then
//! it). A later version may append fields; a reader refuses versions it does not know.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The table overlay endpoints are published in (libnetwork's `overlay_peer_table`).
pub const PEER_TABLE: &str = "overlay_peer";

const VERSION: u8 = 1;

/// Where an overlay endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerRecord {
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its host's underlay address (the VXLAN tunnel endpoint).
    pub vtep: IpAddr,
    /// Its IPv4 address, if any.
    pub ipv4: Option<Ipv4Addr>,
    /// Its IPv6 address, if any.
    pub ipv6: Option<Ipv6Addr>,
}

/// A table value that is not a peer record this version reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("overlay peer record: {0}")]
pub struct DecodeError(&'static str);

impl PeerRecord {
    /// The record's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        out.push(VERSION);
        out.extend_from_slice(&self.mac);
        match self.vtep {
            IpAddr::V4(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.push(16);
                out.extend_from_slice(&a.octets());
            }
        }
        match self.ipv4 {
            Some(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            None => out.push(0),
        }
        match self.ipv6 {
            Some(a) => {
                out.push(16);
                out.extend_from_slice(&a.octets());
            }
            None => out.push(0),
        }
        out
    }

    /// Reads a record; bytes after the last field this version knows are ignored.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        match r.take(1)? {
            [VERSION] => {}
            _ => return Err(DecodeError("unknown version")),
        }
        let mac: [u8; 6] = r
            .take(6)?
            .try_into()
            .map_err(|_| DecodeError("short MAC"))?;
        let vtep = match r.address()? {
            Some(a) => a,
            None => return Err(DecodeError("no host address")),
        };
        let ipv4 = match r.address()? {
            None => None,
            Some(IpAddr::V4(a)) => Some(a),
            Some(IpAddr::V6(_)) => return Err(DecodeError("IPv6 where IPv4 belongs")),
        };
        let ipv6 = match r.address()? {
            None => None,
            Some(IpAddr::V6(a)) => Some(a),
            Some(IpAddr::V4(_)) => return Err(DecodeError("IPv4 where IPv6 belongs")),
        };
        Ok(Self {
            mac,
            vtep,
            ipv4,
            ipv6,
        })
    }

    /// Its IP addresses.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> {
        self.ipv4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.ipv6.map(IpAddr::V6))
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// A length-prefixed address: 0 for none, 4 or 16.
    fn address(&mut self) -> Result<Option<IpAddr>, DecodeError> {
        let len = self.take(1)?[0];
        let raw = self.take(usize::from(len))?;
        Ok(match len {
            0 => None,
            4 => <[u8; 4]>::try_from(raw).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(raw).ok().map(IpAddr::from),
            _ => return Err(DecodeError("bad address length")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_bytes_are_refused() {
        let r = PeerRecord {
            mac: [2, 0x42, 10, 0, 0, 2],
            vtep: Ipv4Addr::new(192, 0, 2, 1).into(),
            ipv4: Some(Ipv4Addr::new(10, 0, 0, 2)),
            ipv6: Some("fd00::2".parse().unwrap_or(Ipv6Addr::LOCALHOST)),
        };
        let bytes = r.encode();
        assert_eq!(bytes.len(), 1 + 6 + 5 + 5 + 17);
        assert_eq!(PeerRecord::decode(&bytes), Ok(r));
        let mut longer = bytes.clone();
        longer.push(9);
        assert_eq!(PeerRecord::decode(&longer), Ok(r));
        let v6_host = PeerRecord {
            vtep: "2001:db8::1"
                .parse()
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ipv6: None,
            ..r
        };
        assert_eq!(PeerRecord::decode(&v6_host.encode()), Ok(v6_host));
        for n in 0..bytes.len() {
            assert!(PeerRecord::decode(&bytes[..n]).is_err(), "{n} bytes read");
        }
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(PeerRecord::decode(&v2).is_err());
    }
}
