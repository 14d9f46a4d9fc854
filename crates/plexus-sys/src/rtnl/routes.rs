//! Routes, of the main table or of a table given by id.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::TryStreamExt;
use rtnetlink::packet_route::route::{RouteMessage, RouteProtocol, RouteScope, RouteType};
use rtnetlink::RouteMessageBuilder;

use super::Rtnl;
use crate::error::{Result, SysError};

/// A route to add or delete. The methods taking no table work on the main table;
/// [`Rtnl::add_route_in_table`] and its kin on another (policy routing).
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
    /// The message of `route` in `table` (`None`: main).
    fn route_message(route: &Route, table: Option<u32>) -> Result<RouteMessage> {
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
            if let Some(t) = table {
                b = b.table_id(t);
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
            if let Some(t) = table {
                b = b.table_id(t);
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
        Ok(self
            .routes_in_table_v4(MAIN_TABLE)
            .await?
            .into_iter()
            .filter(|r| r.destination.is_some())
            .collect())
    }

    /// The IPv4 routes of route table `table` (the default route included: its
    /// destination is `None`), with their gateway and output interface.
    pub async fn routes_in_table_v4(&self, table: u32) -> Result<Vec<Route>> {
        Ok(self
            .routes_by_table_v4()
            .await?
            .remove(&table)
            .unwrap_or_default())
    }

    /// Every IPv4 route of every table (`ip route show table all`), by table id: what a
    /// caller owning a range of table ids reads to find the tables it left behind.
    pub async fn routes_by_table_v4(&self) -> Result<BTreeMap<u32, Vec<Route>>> {
        let messages: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<std::net::Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| SysError::netlink("list routes", "IPv4", e))?;
        let mut tables: BTreeMap<u32, Vec<Route>> = BTreeMap::new();
        for m in &messages {
            let (table, route) = route_of(m);
            tables.entry(table).or_default().push(route);
        }
        Ok(tables)
    }

    /// Adds a route to the main table.
    pub async fn add_route(&self, route: &Route) -> Result<()> {
        self.change_route(route, None, true).await
    }

    /// Deletes a route from the main table.
    pub async fn delete_route(&self, route: &Route) -> Result<()> {
        self.change_route(route, None, false).await
    }

    /// Adds a route to route table `table` (1 to 2³² - 1; a table comes into being with its
    /// first route). A route already there is [`SysError::Exists`].
    pub async fn add_route_in_table(&self, route: &Route, table: u32) -> Result<()> {
        self.change_route(route, Some(table), true).await
    }

    /// Deletes a route from route table `table`, whoever added it (as `ip route del`: any
    /// protocol); a missing one is [`SysError::NotFound`].
    pub async fn delete_route_in_table(&self, route: &Route, table: u32) -> Result<()> {
        self.change_route(route, Some(table), false).await
    }

    async fn change_route(&self, route: &Route, table: Option<u32>, add: bool) -> Result<()> {
        if table == Some(0) {
            return Err(SysError::Invalid {
                field: "route table",
                value: "0".into(),
                reason: "table 0 is no table (RT_TABLE_UNSPEC)",
            });
        }
        let mut message = Self::route_message(route, table)?;
        if !add && table.is_some() {
            // As `ip route del`: any protocol, scope and type, so a route someone else added
            // to the table goes too.
            message.header.protocol = RouteProtocol::Unspec;
            message.header.scope = RouteScope::NoWhere;
            message.header.kind = RouteType::Unspec;
        }
        let what = match table {
            None => format!("{route:?}"),
            Some(t) => format!("{route:?} in table {t}"),
        };
        let result = if add {
            self.handle.route().add(message).execute().await
        } else {
            self.handle.route().del(message).execute().await
        };
        let op = if add { "add route" } else { "delete route" };
        result.map_err(|e| SysError::netlink(format!("{op} {what}"), "route", e))
    }
}

/// `RT_TABLE_MAIN`.
const MAIN_TABLE: u32 = 254;

/// The table of an IPv4 route message and the route it holds.
fn route_of(m: &RouteMessage) -> (u32, Route) {
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
    let v4 = |a: &RouteAddress| match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        _ => None,
    };
    let mut table = u32::from(m.header.table);
    let mut route = Route {
        destination: None,
        gateway: None,
        oif: None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => {
                route.destination = v4(d).map(|ip| (ip, m.header.destination_prefix_length));
            }
            RouteAttribute::Gateway(g) => route.gateway = v4(g),
            RouteAttribute::Oif(i) => route.oif = Some(*i),
            _ => {}
        }
    }
    (table, route)
}
