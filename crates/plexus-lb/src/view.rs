//! What one sandbox should see: its services, their VIPs and live backends; and the rules a
//! view must follow before anything reaches the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::error::LbError;

/// The length of a service id in object names (Docker's short id).
pub const SERVICE_ID_LEN: usize = 12;
/// The most backends one service may have.
pub const MAX_BACKENDS: usize = 4096;
/// The longest client-ip affinity.
pub const MAX_AFFINITY: Duration = Duration::from_secs(24 * 3600);
/// The longest service name kept with the service (it goes in an element comment).
pub const MAX_NAME_LEN: usize = 128;

/// The services one sandbox reaches by VIP, by service id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Service id (12 characters of `[0-9a-z]`) to what the sandbox should see of it.
    pub services: BTreeMap<String, ServiceView>,
}

/// One service as a sandbox sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceView {
    /// The service's name (kept with the service so [`read`](crate::Dispatcher::read) gives
    /// it back; 1 to 128 characters, no whitespace or control characters).
    pub name: String,
    /// The virtual IP: an IPv4 address assigned to no interface.
    pub vip: IpAddr,
    /// The live backends' addresses. Order and repeats do not matter; views read back have
    /// them sorted and without repeats ([`ServiceView::normalized`]).
    pub backends: Vec<IpAddr>,
    /// Client-ip affinity: a client keeps its backend while it sent to the VIP within this
    /// long (`None`: each connection picks anew).
    pub affinity: Option<Duration>,
}

impl ServiceView {
    /// The backends sorted, without repeats.
    pub fn normalized(&self) -> Self {
        let backends: BTreeSet<IpAddr> = self.backends.iter().copied().collect();
        Self {
            backends: backends.into_iter().collect(),
            ..self.clone()
        }
    }
}

impl View {
    /// Every service with its backends sorted, without repeats: the form
    /// [`read`](crate::Dispatcher::read) returns.
    pub fn normalized(&self) -> Self {
        Self {
            services: self
                .services
                .iter()
                .map(|(id, s)| (id.clone(), s.normalized()))
                .collect(),
        }
    }
}

/// A validated service: what the planner works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Service {
    pub name: String,
    pub vip: Ipv4Addr,
    pub backends: BTreeSet<Ipv4Addr>,
    pub affinity: Option<Duration>,
}

/// Checks a view and returns its services in the planner's terms. Errors name the field.
pub(crate) fn validate(view: &View) -> Result<BTreeMap<String, Service>, LbError> {
    let mut out = BTreeMap::new();
    let mut vips: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for (id, s) in &view.services {
        let svc = validate_service(id, s)?;
        if let Some(other) = vips.insert(svc.vip, id) {
            return Err(LbError::invalid(
                format!("services[{id}].vip"),
                format!("{} is already the VIP of service {other}", svc.vip),
            ));
        }
        out.insert(id.clone(), svc);
    }
    // A backend that is another service's VIP would be sent on to nothing: the VIP is no
    // interface's address, and NAT happens once per connection.
    for (id, s) in &out {
        for (i, b) in s.backends.iter().enumerate() {
            if let Some(other) = vips.get(b) {
                return Err(LbError::invalid(
                    format!("services[{id}].backends[{i}]"),
                    format!("{b} is the VIP of service {other}"),
                ));
            }
        }
    }
    Ok(out)
}

/// Checks one service on its own (not against the others: VIPs unique, no backend another's
/// VIP). Errors name the field as in a view, `services[<id>].…`.
pub(crate) fn validate_service(id: &str, s: &ServiceView) -> Result<Service, LbError> {
    check_id(id)?;
    let field = |f: &str| format!("services[{id}].{f}");
    check_name(&s.name).map_err(|r| LbError::invalid(field("name"), r))?;
    let vip = ipv4(s.vip).map_err(|r| LbError::invalid(field("vip"), r))?;
    check_vip(vip).map_err(|r| LbError::invalid(field("vip"), r))?;
    if s.backends.len() > MAX_BACKENDS {
        return Err(LbError::invalid(
            field("backends"),
            format!("{} backends, at most {MAX_BACKENDS}", s.backends.len()),
        ));
    }
    let mut backends = BTreeSet::new();
    for (i, b) in s.backends.iter().enumerate() {
        let f = || field(&format!("backends[{i}]"));
        let b4 = ipv4(*b).map_err(|r| LbError::invalid(f(), r))?;
        check_backend(b4, vip).map_err(|r| LbError::invalid(f(), r))?;
        backends.insert(b4);
    }
    if let Some(t) = s.affinity {
        check_affinity(t).map_err(|r| LbError::invalid(field("affinity"), r))?;
    }
    Ok(Service {
        name: s.name.clone(),
        vip,
        backends,
        affinity: s.affinity,
    })
}

fn check_id(id: &str) -> Result<(), LbError> {
    let ok = id.len() == SERVICE_ID_LEN
        && id
            .bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase());
    if ok {
        Ok(())
    } else {
        Err(LbError::invalid(
            "service id",
            format!("{id:?}: want {SERVICE_ID_LEN} characters of [0-9a-z]"),
        ))
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{name:?}: want 1 to {MAX_NAME_LEN} bytes, got {}",
            name.len()
        ));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{name:?}: whitespace and control characters are not allowed"
        ));
    }
    Ok(())
}

fn ipv4(a: IpAddr) -> Result<Ipv4Addr, String> {
    match a {
        IpAddr::V4(a) => Ok(a),
        IpAddr::V6(a) => Err(format!("{a}: IPv6 services are not supported yet")),
    }
}

/// An address a packet can be sent to and that names one host.
pub(crate) fn check_unicast(a: Ipv4Addr) -> Result<(), String> {
    if a.octets()[0] == 0 {
        return Err(format!("{a} is in 0.0.0.0/8 (this host)"));
    }
    if a.is_loopback() {
        return Err(format!("{a} is a loopback address (127.0.0.0/8)"));
    }
    if a.is_multicast() {
        return Err(format!("{a} is a multicast address (224.0.0.0/4)"));
    }
    if a.is_broadcast() || a.octets()[0] >= 240 {
        return Err(format!("{a} is reserved (240.0.0.0/4) or broadcast"));
    }
    Ok(())
}

fn check_vip(vip: Ipv4Addr) -> Result<(), String> {
    check_unicast(vip)
}

fn check_backend(b: Ipv4Addr, vip: Ipv4Addr) -> Result<(), String> {
    check_unicast(b)?;
    if b == vip {
        return Err(format!("{b} is the service's own VIP"));
    }
    Ok(())
}

fn check_affinity(t: Duration) -> Result<(), String> {
    if t.as_millis() == 0 {
        return Err("a timeout of 0: give at least 1 ms, or no affinity".into());
    }
    if t > MAX_AFFINITY {
        return Err(format!("{t:?} is above the maximum of 24 h"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, s: ServiceView) -> View {
        View {
            services: [(id.to_string(), s)].into_iter().collect(),
        }
    }

    fn svc(vip: &str, backends: &[&str]) -> ServiceView {
        ServiceView {
            name: "web".into(),
            vip: vip.parse().unwrap(),
            backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
            affinity: None,
        }
    }

    fn field_of(v: &View) -> String {
        match validate(v) {
            Err(LbError::Invalid { field, .. }) => field,
            other => panic!("want an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn bad_input_names_the_field() {
        let id = "abcdef012345";
        assert_eq!(field_of(&view("ABC", svc("10.0.0.9", &[]))), "service id");
        assert_eq!(field_of(&view("abc", svc("10.0.0.9", &[]))), "service id");
        for vip in [
            "0.1.2.3",
            "127.0.0.5",
            "224.0.0.1",
            "255.255.255.255",
            "fd00::1",
        ] {
            let f = field_of(&view(id, svc(vip, &[])));
            assert_eq!(f, format!("services[{id}].vip"), "{vip}");
        }
        let f = field_of(&view(id, svc("10.0.0.9", &["10.0.0.2", "10.0.0.9"])));
        assert_eq!(f, format!("services[{id}].backends[1]"));
        let f = field_of(&view(id, svc("10.0.0.9", &["fd00::2"])));
        assert_eq!(f, format!("services[{id}].backends[0]"));
        let many: Vec<String> = (0..=MAX_BACKENDS)
            .map(|i| Ipv4Addr::from(0x0a01_0000 + i as u32).to_string())
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let f = field_of(&view(id, svc("10.0.0.9", &many)));
        assert_eq!(f, format!("services[{id}].backends"));
        for t in [Duration::ZERO, Duration::from_secs(24 * 3600 + 1)] {
            let mut s = svc("10.0.0.9", &[]);
            s.affinity = Some(t);
            assert_eq!(
                field_of(&view(id, s)),
                format!("services[{id}].affinity"),
                "{t:?}"
            );
        }
        let mut s = svc("10.0.0.9", &[]);
        s.name = "a b".into();
        assert_eq!(field_of(&view(id, s)), format!("services[{id}].name"));
    }

    #[test]
    fn vips_are_unique_and_never_backends() {
        let mut v = view("aaaaaaaaaaaa", svc("10.0.0.9", &["10.0.0.2"]));
        v.services
            .insert("bbbbbbbbbbbb".into(), svc("10.0.0.9", &["10.0.0.3"]));
        assert_eq!(field_of(&v), "services[bbbbbbbbbbbb].vip");
        let mut v = view("aaaaaaaaaaaa", svc("10.0.0.9", &["10.0.0.8"]));
        v.services
            .insert("bbbbbbbbbbbb".into(), svc("10.0.0.8", &["10.0.0.3"]));
        assert_eq!(field_of(&v), "services[aaaaaaaaaaaa].backends[0]");
    }

    #[test]
    fn a_good_view_is_normalized() {
        let v = view(
            "abcdef012345",
            svc("10.0.0.9", &["10.0.0.3", "10.0.0.2", "10.0.0.3"]),
        );
        let s = &validate(&v).unwrap()["abcdef012345"];
        let want: Vec<Ipv4Addr> = vec![[10, 0, 0, 2].into(), [10, 0, 0, 3].into()];
        assert_eq!(s.backends.iter().copied().collect::<Vec<_>>(), want);
        assert_eq!(v.normalized().services["abcdef012345"].backends.len(), 2);
    }
}
