//! Names as the zone keys them, and reverse names (`in-addr.arpa`, `ip6.arpa`) as addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

/// The zone's key for a name: lower case, no trailing dot.
pub fn key(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// `name` without `.domain` at its end, if it ends so (and is longer).
pub fn strip_domain<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    let domain = domain.trim_matches('.');
    let inner = name.strip_suffix(domain)?.strip_suffix('.')?;
    (!inner.is_empty()).then_some(inner)
}

/// The address a reverse name stands for: `4.3.2.1.in-addr.arpa.` is 1.2.3.4, and
/// `ip6.arpa` names carry 32 nibbles.
pub fn reverse_addr(name: &Name) -> Option<IpAddr> {
    let key = key(name);
    if let Some(rest) = key.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        for (i, p) in parts.iter().rev().enumerate() {
            if p.is_empty() || p.len() > 3 || (p.len() > 1 && p.starts_with('0')) {
                return None;
            }
            octets[i] = p.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if let Some(rest) = key.strip_suffix(".ip6.arpa") {
        let nibbles: Vec<&str> = rest.split('.').collect();
        if nibbles.len() != 32 {
            return None;
        }
        let mut value: u128 = 0;
        for n in nibbles.iter().rev() {
            if n.len() != 1 {
                return None;
            }
            value = (value << 4) | u128::from(u8::from_str_radix(n, 16).ok()?);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(value)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn keys_are_lower_case_without_dot() {
        assert_eq!(key(&n("Web.Net1.")), "web.net1");
        assert_eq!(key(&n("db")), "db");
        assert_eq!(strip_domain("db.n1.plexus", "plexus"), Some("db.n1"));
        assert_eq!(strip_domain("plexus", "plexus"), None);
        assert_eq!(strip_domain("db.n1.plexusx", "plexus"), None);
        assert_eq!(strip_domain("xplexus", "plexus"), None);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_addr(&n("3.0.18.172.in-addr.arpa.")),
            Some("172.18.0.3".parse().unwrap())
        );
        let v6: IpAddr = "fd00::1:2".parse().unwrap();
        let IpAddr::V6(a) = v6 else { unreachable!() };
        let mut labels: Vec<String> = a
            .octets()
            .iter()
            .flat_map(|b| [b >> 4, b & 0xf])
            .map(|x| format!("{x:x}"))
            .collect();
        labels.reverse();
        let name = format!("{}.ip6.arpa.", labels.join("."));
        assert_eq!(reverse_addr(&n(&name)), Some(v6));
        for bad in [
            "1.2.3.in-addr.arpa.",
            "256.1.1.1.in-addr.arpa.",
            "01.1.1.1.in-addr.arpa.",
            "a.1.1.1.in-addr.arpa.",
            "1.ip6.arpa.",
            "example.com.",
        ] {
            assert_eq!(reverse_addr(&n(bad)), None, "{bad}");
        }
    }
}
