//! Published ports: choosing host ports and withdrawing them.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use plexus_cnm::{DriverError, EndpointInfo, PortBinding};

use super::{BridgeDriver, NetState, State, EPHEMERAL_PORTS};
use crate::firewall::{Firewall, PortMapping, Proto};
use crate::sys_ctx;

pub(super) fn proto_of(binding: &PortBinding) -> Result<Proto, DriverError> {
    match binding.proto.to_ascii_lowercase().as_str() {
        "tcp" | "" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        "sctp" => Ok(Proto::Sctp),
        other => Err(DriverError::Invalid(format!(
            "port {}/{other}: protocol must be tcp, udp or sctp",
            binding.container_port
        ))),
    }
}

/// The first port of `range` that no published or already chosen mapping of `proto` has
/// (Docker's `-p 8000-8010:80`).
pub(super) fn first_free(
    proto: Proto,
    range: std::ops::RangeInclusive<u16>,
    fw: &Firewall,
    chosen: &[PortMapping],
) -> Result<u16, DriverError> {
    let (lo, hi) = (*range.start(), *range.end());
    range
        .into_iter()
        .find(|port| !port_taken(proto, *port, fw, chosen))
        .ok_or_else(|| {
            DriverError::Conflict(format!(
                "no free {} host port left in {lo}-{hi}",
                proto.name()
            ))
        })
}

/// Whether host port `port` of `proto` is published already, or chosen earlier in this call.
pub(super) fn port_taken(proto: Proto, port: u16, fw: &Firewall, chosen: &[PortMapping]) -> bool {
    fw.port_in_use(proto, port)
        || chosen
            .iter()
            .any(|p| p.proto == proto && p.host_port == port)
}

impl BridgeDriver {
    /// Picks host ports for the bindings and builds the mappings.
    pub(super) fn mappings(
        &self,
        net: &NetState,
        ep: &EndpointInfo,
    ) -> Result<(Vec<PortMapping>, Vec<PortBinding>), DriverError> {
        let mut out: Vec<PortMapping> = Vec::new();
        let mut bindings = Vec::new();
        for b in &ep.ports {
            let proto = proto_of(b)?;
            if b.container_port == 0 {
                return Err(DriverError::Invalid(format!(
                    "port 0/{}: the container port must not be 0",
                    proto.name()
                )));
            }
            let mut targets: Vec<(IpAddr, Option<IpAddr>)> = Vec::new();
            if let Some(v4) = ep.ipv4 {
                match b.host_ip {
                    None => targets.push((v4.addr(), net.opts.host_binding_ipv4.map(IpAddr::V4))),
                    Some(ip @ IpAddr::V4(_)) => {
                        targets.push((v4.addr(), (!ip.is_unspecified()).then_some(ip)))
                    }
                    Some(IpAddr::V6(_)) => {}
                }
            }
            if let Some(v6) = ep.ipv6 {
                match b.host_ip {
                    None => targets.push((v6.addr(), None)),
                    Some(ip @ IpAddr::V6(_)) => {
                        targets.push((v6.addr(), (!ip.is_unspecified()).then_some(ip)))
                    }
                    Some(IpAddr::V4(_)) => {}
                }
            }
            if targets.is_empty() {
                return Err(DriverError::Invalid(format!(
                    "port {}/{}: the endpoint has no address of the host ip's family",
                    b.container_port,
                    proto.name()
                )));
            }
            let host_port = if b.host_port == 0 {
                self.ephemeral(proto, &out)?
            } else if b.host_port_end > b.host_port {
                first_free(proto, b.host_port..=b.host_port_end, &self.fw, &out)?
            } else if b.host_port_end != 0 && b.host_port_end < b.host_port {
                return Err(DriverError::Invalid(format!(
                    "host port range {}-{}: ends before it starts",
                    b.host_port, b.host_port_end
                )));
            } else {
                b.host_port
            };
            for (addr, host_ip) in &targets {
                out.push(PortMapping {
                    proto,
                    host_ip: *host_ip,
                    host_port,
                    addr: *addr,
                    port: b.container_port,
                    owner: ep.endpoint_id.clone(),
                });
            }
            let mut filled = b.clone();
            filled.host_port = host_port;
            filled.host_port_end = 0;
            if filled.host_ip.is_none() && ep.ipv4.is_some() && ep.ipv6.is_none() {
                filled.host_ip = net.opts.host_binding_ipv4.map(IpAddr::V4);
            }
            bindings.push(filled);
        }
        Ok((out, bindings))
    }

    /// A host port in [`EPHEMERAL_PORTS`] that nobody has for `proto`.
    pub(super) fn ephemeral(
        &self,
        proto: Proto,
        chosen: &[PortMapping],
    ) -> Result<u16, DriverError> {
        let (lo, hi) = (*EPHEMERAL_PORTS.start(), *EPHEMERAL_PORTS.end());
        let span = u32::from(hi - lo) + 1;
        let start = self.next_port.load(Ordering::Relaxed).clamp(lo, hi);
        for i in 0..span {
            let port = lo + ((u32::from(start - lo) + i) % span) as u16;
            if !port_taken(proto, port, &self.fw, chosen) {
                let next = if port == hi { lo } else { port + 1 };
                self.next_port.store(next, Ordering::Relaxed);
                return Ok(port);
            }
        }
        Err(DriverError::Conflict(format!(
            "no free {} host port left in {lo}-{hi}",
            proto.name()
        )))
    }

    /// The ports the firewall has published for `endpoint_id` (it read them from the kernel
    /// when it was opened: a restarted daemon finds them).
    pub(super) fn published_by(&self, endpoint_id: &str) -> Vec<PortMapping> {
        self.fw
            .published()
            .into_iter()
            .filter(|p| p.owner == endpoint_id)
            .collect()
    }

    /// Withdraws an endpoint's published ports: from memory, or by owner from the firewall
    /// (which read them from the kernel when it was opened: a restarted daemon finds them).
    pub(super) fn unpublish_locked(
        &self,
        st: &mut State,
        endpoint_id: &str,
    ) -> Result<(), DriverError> {
        let ports: Vec<PortMapping> = match st.endpoints.get_mut(endpoint_id) {
            Some(ep) if ep.published => {
                ep.published = false;
                ep.ports.clone()
            }
            Some(_) => Vec::new(),
            None => self.published_by(endpoint_id),
        };
        if !ports.is_empty() {
            self.fw.unpublish(&ports).map_err(sys_ctx("unpublish"))?;
        }
        Ok(())
    }
}
