//! The names of the table's objects. Names carry the service id, so the kernel alone says
//! which service an object belongs to.

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
/// The dynamic map `client . VIP → backend` of client-ip affinity, shared by the services
/// that have it (each element with its service's timeout).
pub const AFFINITY_MAP: &str = "affinity";
/// The set of `VIP . backend` pairs live in services with affinity: a pin to a pair not in
/// it is stale.
pub const LIVE_SET: &str = "live";

/// `svc-<id>`: the service's chain.
pub fn service_chain(id: &str) -> String {
    format!("svc-{id}")
}

/// `bes-<id>`: the service's interval map from a random number to a backend.
pub fn slots_map(id: &str) -> String {
    format!("bes-{id}")
}

/// The service id of a `svc-<id>` chain.
pub fn parse_service_chain(name: &str) -> Option<&str> {
    name.strip_prefix("svc-")
}

/// The service id of a `bes-<id>` map.
pub fn parse_slots_map(name: &str) -> Option<&str> {
    name.strip_prefix("bes-")
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
        assert_eq!(
            parse_service_chain(&service_chain("abcdef012345")),
            Some("abcdef012345")
        );
        assert_eq!(
            parse_slots_map(&slots_map("abcdef012345")),
            Some("abcdef012345")
        );
        assert_eq!(parse_slots_map("svc-abcdef012345"), None);
        let t = Some(Duration::from_millis(1500));
        let c = service_comment("web", t);
        assert_eq!(parse_service_comment(&c), Some(("web".into(), t)));
        let c = service_comment("web.1", None);
        assert_eq!(parse_service_comment(&c), Some(("web.1".into(), None)));
        assert_eq!(parse_service_comment("name=a b"), None);
        assert_eq!(parse_service_comment("nom=a"), None);
    }
}
