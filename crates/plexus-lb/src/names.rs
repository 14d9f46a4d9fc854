//! The names of the table's objects. Names carry the service id and the backend's address, so
//! the kernel alone says which service and backend an object belongs to.

use std::net::Ipv4Addr;
use std::time::Duration;

/// The table, in the `ip` family.
pub const TABLE: &str = "plexus-lb";
/// The nat base chain on output with the one dispatch rule (`ip daddr vmap @services`).
pub const DISPATCH_CHAIN: &str = "dispatch";
/// The filter base chain on output refusing what is still addressed to a VIP.
pub const REFUSE_CHAIN: &str = "refuse";
/// The verdict map VIP → `goto svc-<id>`; each element's comment keeps the service's name
/// and affinity.
pub const SERVICES_MAP: &str = "services";
/// The set of every VIP.
pub const VIPS_SET: &str = "vips";

/// `svc-<id>`: the service's chain.
pub fn service_chain(id: &str) -> String {
    format!("svc-{id}")
}

/// `bes-<id>`: the service's verdict map from a random slot to a backend chain.
pub fn slots_map(id: &str) -> String {
    format!("bes-{id}")
}

/// `be-<id>-<address in hex>`: one backend's chain.
pub fn backend_chain(id: &str, addr: Ipv4Addr) -> String {
    format!("be-{id}-{:08x}", u32::from(addr))
}

/// `aff-<id>-<address in hex>`: the clients lately sent to one backend.
pub fn affinity_set(id: &str, addr: Ipv4Addr) -> String {
    format!("aff-{id}-{:08x}", u32::from(addr))
}

/// The service id of a `svc-<id>` chain.
pub fn parse_service_chain(name: &str) -> Option<&str> {
    name.strip_prefix("svc-")
}

/// The service id and backend of a `be-<id>-<hex>` chain.
pub fn parse_backend_chain(name: &str) -> Option<(&str, Ipv4Addr)> {
    let rest = name.strip_prefix("be-")?;
    let (id, hex) = rest.rsplit_once('-')?;
    if hex.len() != 8 {
        return None;
    }
    let n = u32::from_str_radix(hex, 16).ok()?;
    Some((id, Ipv4Addr::from(n)))
}

/// The comment of a service's element in [`SERVICES_MAP`]: `name=<name>` and, with
/// affinity, ` affinity-ms=<ms>`.
pub fn service_comment(name: &str, affinity: Option<Duration>) -> String {
    match affinity {
        None => format!("name={name}"),
        Some(t) => format!("name={name} affinity-ms={}", t.as_millis()),
    }
}

/// The name and affinity in a [`service_comment`].
pub fn parse_service_comment(c: &str) -> Option<(String, Option<Duration>)> {
    let mut parts = c.split(' ');
    let name = parts.next()?.strip_prefix("name=")?;
    let affinity = match parts.next() {
        None => None,
        Some(a) => {
            let ms = a.strip_prefix("affinity-ms=")?.parse().ok()?;
            Some(Duration::from_millis(ms))
        }
    };
    if parts.next().is_some() || name.is_empty() {
        return None;
    }
    Some((name.to_string(), affinity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        let a = Ipv4Addr::new(10, 231, 0, 12);
        let be = backend_chain("abcdef012345", a);
        assert_eq!(be, "be-abcdef012345-0ae7000c");
        assert_eq!(parse_backend_chain(&be), Some(("abcdef012345", a)));
        assert_eq!(parse_backend_chain("be-x-123"), None);
        assert_eq!(
            parse_service_chain(&service_chain("abcdef012345")),
            Some("abcdef012345")
        );
        let t = Some(Duration::from_millis(1500));
        let c = service_comment("web", t);
        assert_eq!(parse_service_comment(&c), Some(("web".into(), t)));
        let c = service_comment("web.1", None);
        assert_eq!(parse_service_comment(&c), Some(("web.1".into(), None)));
        assert_eq!(parse_service_comment("name=a b"), None);
        assert_eq!(parse_service_comment("nom=a"), None);
    }
}
