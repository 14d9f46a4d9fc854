//! What every driver that hands a sandbox an interface does inside the sandbox: the
//! netlink connection into it, the addresses of a fresh interface, its default routes, and
//! the wait for a new IPv6 address to become usable. The bridge, macvlan/ipvlan and remote
//! drivers share these steps; each keeps what differs (marks, MACs, static routes).

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use plexus_cnm::DriverError;
use plexus_sys::netns::Netns;
use plexus_sys::rtnl::{Route, Rtnl};
use plexus_sys::{sysctl, SysError};

use crate::sys_ctx;

/// Gives the fresh interface `name` (index `index`) of the sandbox behind `rs` its
/// addresses; with IPv6, duplicate address detection is turned off first so the address is
/// usable at once, as Docker does with IFA_F_NODAD.
pub(crate) async fn add_addresses(
    rs: &Rtnl,
    index: u32,
    name: &str,
    ipv4: Option<IpNet>,
    ipv6: Option<IpNet>,
) -> Result<(), DriverError> {
    if ipv6.is_some() {
        if let Err(e) = sysctl::write(rs.netns(), &format!("net.ipv6.conf.{name}.accept_dad"), "0")
        {
            tracing::debug!(error = %e, "accept_dad not set");
        }
    }
    for addr in ipv4.iter().chain(ipv6.iter()) {
        rs.add_address(index, addr.addr(), addr.prefix_len())
            .await
            .map_err(sys_ctx(format!("sandbox interface {name}")))?;
    }
    Ok(())
}

/// Adds the sandbox's default `routes`, each with the gateway (or on-link address) it
/// gives; one the sandbox already has from another network is left to that network.
/// Returns what this interface routes through.
pub(crate) async fn add_default_routes(
    rs: &Rtnl,
    routes: impl IntoIterator<Item = (Route, IpAddr)>,
) -> Result<Vec<IpAddr>, DriverError> {
    let mut gateways = Vec::new();
    for (route, given) in routes {
        match rs.add_route(&route).await {
            Ok(()) => gateways.push(given),
            // Another network already gives the sandbox its default route.
            Err(SysError::Exists { .. }) => {}
            Err(e) => return Err(sys_ctx(format!("default route via {given}"))(e)),
        }
    }
    Ok(gateways)
}

/// Waits (at most two seconds) until `addr` on link `index` is no longer tentative, so it can
/// be bound (a tentative IPv6 address cannot). A new IPv6 address stays tentative until the
/// kernel's link watch sees the link operational, up to a second after it went up; a sandbox
/// should be able to use its address as soon as join returns.
pub(crate) async fn wait_usable(rs: &Rtnl, index: u32, addr: std::net::Ipv6Addr) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        // Through the join's own connection: no thread enters the sandbox to find out.
        let usable = rs
            .tentative(index)
            .await
            .map(|t| !t.contains(&IpAddr::V6(addr)))
            .unwrap_or(true);
        if usable {
            return;
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(%addr, "IPv6 address still tentative after 2 s");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A netlink connection into the sandbox whose namespace is at `key`.
pub(crate) async fn sandbox_rtnl(key: &str) -> Result<Rtnl, SysError> {
    Rtnl::connect(&Netns::open(Path::new(key))?).await
}

/// Refuses a join that would hand the interface over to the sandbox's runtime
/// ([`plexus_cnm::InterfaceName::handoff`]), for a driver that only puts interfaces into
/// sandboxes itself.
pub(crate) fn refuse_handoff(
    driver: &str,
    interface: &plexus_cnm::InterfaceName<'_>,
) -> Result<(), plexus_cnm::DriverError> {
    if interface.handoff {
        return Err(plexus_cnm::DriverError::Unsupported(format!(
            "the {driver} driver cannot hand an interface over to the container's runtime; \
             only bridge networks can be used this way"
        )));
    }
    Ok(())
}
