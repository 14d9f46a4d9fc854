//! Routes.

use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::RouteMessageBuilder;

use super::Rtnl;
use crate::error::{Result, SysError};

/// A route to add or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix; `None` for the default route.
    pub destination: Option<(IpAddr, u8)>,
    /// Next hop; `None` for an on-link route.
    pub gateway: Option<IpAddr>,
    /// Output interface.
    pub oif: Option<u32>,
}

impl Rtnl {
    fn route_message(route: &Route) -> Result<RouteMessage> {
        let family_v4 = route
            .destination
            .map(|(a, _)| a.is_ipv4())
            .or(route.gateway.map(|g| g.is_ipv4()))
            .unwrap_or(true);
        let invalid = |reason| SysError::Invalid {
            field: "route",
            value: format!("{route:?}"),
            reason,
        };
        let message = if family_v4 {
            let mut b = RouteMessageBuilder::<std::net::Ipv4Addr>::new();
            if let Some((IpAddr::V4(d), p)) = route.destination {
                b = b.destination_prefix(d, p);
            } else if route.destination.is_some() {
                return Err(invalid("mixes IPv4 and IPv6"));
            }
            match route.gateway {
                Some(IpAddr::V4(g)) => b = b.gateway(g),
                Some(IpAddr::V6(_)) => return Err(invalid("mixes IPv4 and IPv6")),
                None => {}
            }
            if let Some(oif) = route.oif {
                b = b.output_interface(oif);
            }
            b.build()
        } else {
            let mut b = RouteMessageBuilder::<std::net::Ipv6Addr>::new();
            if let Some((IpAddr::V6(d), p)) = route.destination {
                b = b.destination_prefix(d, p);
            } else if route.destination.is_some() {
                return Err(invalid("mixes IPv4 and IPv6"));
            }
            match route.gateway {
                Some(IpAddr::V6(g)) => b = b.gateway(g),
                Some(IpAddr::V4(_)) => return Err(invalid("mixes IPv4 and IPv6")),
                None => {}
            }
            if let Some(oif) = route.oif {
                b = b.output_interface(oif);
            }
            b.build()
        };
        Ok(message)
    }

    /// The destinations of the IPv4 routes in the main table, default route aside: what a
    /// new subnet must not overlap to stay reachable (dockerd checks the same for `docker0`).
    pub async fn route_destinations_v4(&self) -> Result<Vec<(std::net::Ipv4Addr, u8)>> {
        Ok(self
            .main_routes_v4()
            .await?
            .into_iter()
            .filter_map(|r| match r.destination {
                Some((IpAddr::V4(ip), len)) => Some((ip, len)),
                _ => None,
            })
            .collect())
    }

    /// The IPv4 routes of the main table with a destination prefix (the default route
    /// aside), with their gateway and output interface.
    pub async fn main_routes_v4(&self) -> Result<Vec<Route>> {
        use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
        /// `RT_TABLE_MAIN`.
        const MAIN_TABLE: u32 = 254;
        let messages: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<std::net::Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| SysError::netlink("list routes", "IPv4", e))?;
        let v4 = |a: &RouteAddress| match a {
            RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
            _ => None,
        };
        Ok(messages
            .iter()
            .filter(|m| {
                let table = m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                });
                table.unwrap_or(u32::from(m.header.table)) == MAIN_TABLE
                    && m.header.destination_prefix_length > 0
            })
            .filter_map(|m| {
                let mut route = Route {
                    destination: None,
                    gateway: None,
                    oif: None,
                };
                for a in &m.attributes {
                    match a {
                        RouteAttribute::Destination(d) => {
                            route.destination =
                                v4(d).map(|ip| (ip, m.header.destination_prefix_length));
                        }
                        RouteAttribute::Gateway(g) => route.gateway = v4(g),
                        RouteAttribute::Oif(i) => route.oif = Some(*i),
                        _ => {}
                    }
                }
                route.destination.is_some().then_some(route)
            })
            .collect())
    }

    /// Adds a route.
    pub async fn add_route(&self, route: &Route) -> Result<()> {
        let message = Self::route_message(route)?;
        self.handle
            .route()
            .add(message)
            .execute()
            .await
            .map_err(|e| SysError::netlink(format!("add route {route:?}"), "route", e))
    }

    /// Deletes a route.
    pub async fn delete_route(&self, route: &Route) -> Result<()> {
        let message = Self::route_message(route)?;
        self.handle
            .route()
            .del(message)
            .execute()
            .await
            .map_err(|e| SysError::netlink(format!("delete route {route:?}"), "route", e))
    }
}
