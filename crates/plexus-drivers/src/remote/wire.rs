//! Docker's `NetworkDriver.*` JSON shapes (moby's `libnetwork/drivers/remote/api`), and the
//! checks that turn a plugin's answer into values Plexus can use: every field a plugin sends
//! is untrusted, and a bad one is an error naming the call and the field.
//!
//! The shapes are public and go both ways (`Serialize` and `Deserialize`): plexusd's Docker
//! plugin server (`plexusd/src/docker_plugin/`) reads dockerd's requests and writes its
//! answers with them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use plexus_cnm::{IpamPool, NetworkInfo, PortBinding, StaticRoute};
use plexus_ipam::plugin::PluginError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `/NetworkDriver.GetCapabilities`'s answer.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct CapabilitiesReply {
    /// `local` or `global`.
    #[serde(default)]
    pub scope: String,
    /// `local` or `global`; empty for the data scope.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub connectivity_scope: String,
}

/// libnetwork's `driverapi.IPAMData` as JSON: CIDR strings, the gateway with its prefix.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct IpamData {
    /// The address space the pool came from (empty from Plexus's own IPAM).
    #[serde(default)]
    pub address_space: String,
    /// The pool, a CIDR.
    #[serde(default)]
    pub pool: String,
    /// The gateway with the pool's prefix (`10.1.0.1/24`); empty for none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// Reserved addresses by name, each with the pool's prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, String>,
}

fn ipam_data(pools: &[IpamPool]) -> Vec<IpamData> {
    pools
        .iter()
        .map(|p| IpamData {
            address_space: String::new(),
            pool: p.subnet.to_string(),
            gateway: p.gateway.map(|g| g.to_string()).unwrap_or_default(),
            aux_addresses: p
                .aux_addresses
                .iter()
                .map(|(k, ip)| {
                    let with_prefix = IpNet::new(*ip, p.subnet.prefix_len())
                        .map(|n| n.to_string())
                        .unwrap_or_else(|_| ip.to_string());
                    (k.clone(), with_prefix)
                })
                .collect(),
        })
        .collect()
}

/// libnetwork's option key of a network's driver options (`-o`), a string map.
pub const OPT_GENERIC: &str = "com.docker.network.generic";
/// libnetwork's option key of `--ipv6`.
pub const OPT_ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// libnetwork's option key of `--internal`.
pub const OPT_INTERNAL: &str = "com.docker.network.internal";
/// libnetwork's option key of an endpoint's published ports (`-p`).
pub const OPT_PORTMAP: &str = "com.docker.network.portmap";
/// libnetwork's option key of an endpoint's exposed ports.
pub const OPT_EXPOSED: &str = "com.docker.network.endpoint.exposedports";

/// `/NetworkDriver.CreateNetwork`'s request: the driver options under
/// `com.docker.network.generic`, as dockerd sends them.
pub(super) fn create_network(info: &NetworkInfo) -> Value {
    json!({
        "NetworkID": info.id,
        "Options": {
            OPT_GENERIC: info.options,
            OPT_ENABLE_IPV6: info.enable_ipv6,
            OPT_INTERNAL: info.internal,
        },
        "IPv4Data": ipam_data(&info.ipv4),
        "IPv6Data": ipam_data(&info.ipv6),
    })
}

/// `/NetworkDriver.AllocateNetwork`'s request (options as strings).
pub(super) fn allocate_network(info: &NetworkInfo) -> Value {
    json!({
        "NetworkID": info.id,
        "Options": info.options,
        "IPv4Data": ipam_data(&info.ipv4),
        "IPv6Data": ipam_data(&info.ipv6),
    })
}

/// `{"NetworkID", "EndpointID"}`: Leave, DeleteEndpoint, EndpointOperInfo, Revoke….
pub(super) fn ids(network_id: &str, endpoint_id: &str) -> Value {
    json!({ "NetworkID": network_id, "EndpointID": endpoint_id })
}

/// Docker's `Interface{Address, AddressIPv6, MacAddress}` (empty strings for none).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInterface {
    /// The IPv4 address with its prefix.
    #[serde(default)]
    pub address: String,
    /// The IPv6 address with its prefix.
    #[serde(default, rename = "AddressIPv6")]
    pub address_ipv6: String,
    /// The MAC address.
    #[serde(default)]
    pub mac_address: String,
}

/// `/NetworkDriver.CreateEndpoint`'s answer.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointReply {
    /// What the driver chose of the interface; `None` keeps what dockerd sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

/// `/NetworkDriver.AllocateNetwork`'s answer.
#[derive(Debug, Deserialize)]
pub(super) struct AllocateNetworkReply {
    #[serde(rename = "Options", default)]
    pub options: Option<BTreeMap<String, String>>,
}

/// `/NetworkDriver.EndpointOperInfo`'s answer.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct OperInfoReply {
    /// What the data plane holds for the endpoint.
    #[serde(rename = "Value", default)]
    pub value: Option<BTreeMap<String, Value>>,
}

/// Docker's port mapping, as `com.docker.network.portmap` carries it.
fn port_map(ports: &[PortBinding]) -> Vec<Value> {
    ports
        .iter()
        .map(|p| {
            json!({
                "Proto": proto_number(&p.proto),
                "Port": p.container_port,
                "HostIP": p.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
                "HostPort": p.host_port,
            })
        })
        .collect()
}

/// Docker's `types.Protocol`: the IP protocol number.
fn proto_number(proto: &str) -> u8 {
    match proto {
        "udp" => 17,
        "sctp" => 132,
        _ => 6,
    }
}

/// The options of CreateEndpoint and ProgramExternalConnectivity: the endpoint's own and
/// its ports, under Docker's keys.
pub(super) fn endpoint_options(
    options: &BTreeMap<String, String>,
    ports: &[PortBinding],
    exposed: &[(String, u16)],
) -> Value {
    let mut out: serde_json::Map<String, Value> = options
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    if !ports.is_empty() {
        out.insert(OPT_PORTMAP.into(), Value::Array(port_map(ports)));
    }
    let mut exposed_ports: Vec<Value> = exposed
        .iter()
        .map(|(proto, port)| json!({ "Proto": proto_number(proto), "Port": port }))
        .collect();
    for p in ports {
        let e = json!({ "Proto": proto_number(&p.proto), "Port": p.container_port });
        if !exposed_ports.contains(&e) {
            exposed_ports.push(e);
        }
    }
    if !exposed_ports.is_empty() {
        out.insert(OPT_EXPOSED.into(), Value::Array(exposed_ports));
    }
    Value::Object(out)
}

/// `InterfaceName` of a Join's answer.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceNameWire {
    /// The link the driver made in the host namespace.
    #[serde(default)]
    pub src_name: String,
    /// The prefix of its name in the sandbox.
    #[serde(default)]
    pub dst_prefix: String,
}

/// A static route of a Join's answer: `RouteType` 0 through `NextHop`, 1 directly connected.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StaticRouteWire {
    /// The destination, a CIDR.
    #[serde(default)]
    pub destination: String,
    /// 0: through `NextHop`; 1: directly connected.
    #[serde(default)]
    pub route_type: i64,
    /// The next hop, for route type 0.
    #[serde(default)]
    pub next_hop: String,
}

/// `/NetworkDriver.Join`'s answer.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinReply {
    /// The interface libnetwork moves into the sandbox; `None`: none (the driver did the
    /// join itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<InterfaceNameWire>,
    /// The IPv4 default gateway libnetwork sets; empty for none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// The IPv6 default gateway; empty for none.
    #[serde(
        default,
        rename = "GatewayIPv6",
        skip_serializing_if = "String::is_empty"
    )]
    pub gateway_ipv6: String,
    /// Routes libnetwork adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_routes: Option<Vec<StaticRouteWire>>,
    /// libnetwork gives the sandbox no way out through `docker_gwbridge` for this endpoint.
    #[serde(default)]
    pub disable_gateway_service: bool,
}

/// A Join's answer, checked (the driver's join,
/// [`read_driver_answer`](super::read_driver_answer)): what Plexus does to put the plugin's
/// interface in the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPlan {
    /// The link the plugin made in the host namespace (`InterfaceName.SrcName`): an
    /// interface name, 1 to 15 bytes.
    pub src_name: String,
    /// The prefix of its name in the sandbox (`InterfaceName.DstPrefix`): 1 to 12 bytes of
    /// an interface name, so that it takes a number up to 999.
    pub dst_prefix: String,
    /// The IPv4 default gateway (`Gateway`), if any.
    pub gateway: Option<IpAddr>,
    /// The IPv6 default gateway (`GatewayIPv6`), if any.
    pub gateway_v6: Option<IpAddr>,
    /// The static routes (`StaticRoutes`): destinations truncated to their prefix, a next
    /// hop of the destination's family or none (directly connected).
    pub routes: Vec<StaticRoute>,
    /// `DisableGatewayService`: no default routes through the gateways.
    pub disable_gateway: bool,
}

/// `/NetworkDriver.DiscoverNew` and `DiscoverDelete`: `NodeDiscovery` is type 1.
pub(super) fn node_discovery(address: IpAddr, self_node: bool) -> Value {
    json!({
        "DiscoveryType": 1,
        "DiscoveryData": { "Address": address.to_string(), "BindAddress": "", "Self": self_node },
    })
}

/// Checks a Join's answer before anything is done with it.
pub(super) fn join_plan(plugin: &str, reply: JoinReply) -> Result<JoinPlan, PluginError> {
    let op = super::OP_JOIN;
    let bad = |field: &str, message: String| PluginError::malformed(plugin, op, field, message);
    let name = reply.interface_name.ok_or_else(|| {
        bad(
            "InterfaceName",
            "missing: no interface to put in the sandbox".into(),
        )
    })?;
    if plexus_sys::rtnl::check_ifname("SrcName", &name.src_name).is_err() {
        return Err(bad(
            "InterfaceName.SrcName",
            format!(
                "{:?} is not an interface name (1 to 15 bytes, no '/', ':' or spaces)",
                name.src_name
            ),
        ));
    }
    let prefix_ok = !name.dst_prefix.is_empty()
        && name.dst_prefix.len() <= plexus_sys::rtnl::MAX_IFNAME - 3
        && plexus_sys::rtnl::check_ifname("DstPrefix", &name.dst_prefix).is_ok();
    if !prefix_ok {
        return Err(bad(
            "InterfaceName.DstPrefix",
            format!(
                "{:?}: must be 1 to 12 bytes of an interface name",
                name.dst_prefix
            ),
        ));
    }
    let ip = |field: &str, s: &str, v6: bool| -> Result<Option<IpAddr>, PluginError> {
        if s.is_empty() {
            return Ok(None);
        }
        // dockerd takes the address alone; a CIDR is read as its address.
        let addr = s
            .parse::<IpAddr>()
            .or_else(|_| s.parse::<IpNet>().map(|n| n.addr()))
            .map_err(|_| bad(field, format!("{s:?} is not an IP address")))?;
        if addr.is_ipv6() != v6 {
            return Err(bad(
                field,
                format!(
                    "{s:?} is not an {} address",
                    if v6 { "IPv6" } else { "IPv4" }
                ),
            ));
        }
        Ok(Some(addr))
    };
    let gateway = ip("Gateway", &reply.gateway, false)?;
    let gateway_v6 = ip("GatewayIPv6", &reply.gateway_ipv6, true)?;
    let mut routes = Vec::new();
    for (i, r) in reply.static_routes.unwrap_or_default().iter().enumerate() {
        let field = |f: &str| format!("StaticRoutes[{i}].{f}");
        let destination = r.destination.parse::<IpNet>().map_err(|_| {
            bad(
                &field("Destination"),
                format!("{:?} is not a CIDR", r.destination),
            )
        })?;
        let next_hop = match r.route_type {
            1 => None,
            0 => {
                let hop = r.next_hop.parse::<IpAddr>().map_err(|_| {
                    bad(
                        &field("NextHop"),
                        format!("{:?} is not an IP address", r.next_hop),
                    )
                })?;
                if hop.is_ipv6() != destination.addr().is_ipv6() {
                    return Err(bad(
                        &field("NextHop"),
                        format!("{hop} is not of the family of {destination}"),
                    ));
                }
                Some(hop)
            }
            t => {
                return Err(bad(
                    &field("RouteType"),
                    format!("{t}: 0 (through NextHop) or 1 (connected)"),
                ))
            }
        };
        routes.push(StaticRoute {
            destination: destination.trunc(),
            next_hop,
        });
    }
    Ok(JoinPlan {
        src_name: name.src_name,
        dst_prefix: name.dst_prefix,
        gateway,
        gateway_v6,
        routes,
        disable_gateway: reply.disable_gateway_service,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(v: Value) -> JoinReply {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_join_answer_is_checked_field_by_field() {
        let ok = join_plan(
            "p",
            reply(json!({
                "InterfaceName": {"SrcName": "tpc1", "DstPrefix": "eth"},
                "Gateway": "10.9.0.1",
                "StaticRoutes": [
                    {"Destination": "10.77.0.0/16", "RouteType": 0, "NextHop": "10.9.0.254"},
                    {"Destination": "10.78.0.1/16", "RouteType": 1}
                ]
            })),
        )
        .unwrap();
        assert_eq!(ok.src_name, "tpc1");
        assert_eq!(ok.gateway, Some("10.9.0.1".parse().unwrap()));
        assert_eq!(ok.routes[1].destination.to_string(), "10.78.0.0/16");
        assert_eq!(ok.routes[1].next_hop, None);
        let cases = [
            (json!({}), "field InterfaceName: missing"),
            (
                json!({"InterfaceName": {"SrcName": "", "DstPrefix": "eth"}}),
                "field InterfaceName.SrcName",
            ),
            (
                json!({"InterfaceName": {"SrcName": "a-very-long-interface", "DstPrefix": "eth"}}),
                "field InterfaceName.SrcName",
            ),
            // Names the kernel refuses (its isspace: vertical tab, 0xa0 as in UTF-8 "à").
            (
                json!({"InterfaceName": {"SrcName": "a\u{b}b", "DstPrefix": "eth"}}),
                "field InterfaceName.SrcName",
            ),
            (
                json!({"InterfaceName": {"SrcName": "v\u{e0}", "DstPrefix": "eth"}}),
                "field InterfaceName.SrcName",
            ),
            (
                json!({"InterfaceName": {"SrcName": "x", "DstPrefix": "e\u{a0}"}}),
                "field InterfaceName.DstPrefix",
            ),
            (
                json!({"InterfaceName": {"SrcName": "x", "DstPrefix": ""}}),
                "field InterfaceName.DstPrefix",
            ),
            (
                json!({"InterfaceName": {"SrcName": "x", "DstPrefix": "eth"}, "Gateway": "banana"}),
                "field Gateway: \"banana\" is not an IP address",
            ),
            (
                json!({"InterfaceName": {"SrcName": "x", "DstPrefix": "eth"}, "GatewayIPv6": "10.0.0.1"}),
                "field GatewayIPv6",
            ),
            (
                json!({"InterfaceName": {"SrcName": "x", "DstPrefix": "eth"},
                       "StaticRoutes": [{"Destination": "10.0.0.0/33", "RouteType": 1}]}),
                "field StaticRoutes[0].Destination",
            ),
            (
                json!({"InterfaceName": {"SrcName": "x", "DstPrefix": "eth"},
                       "StaticRoutes": [{"Destination": "10.0.0.0/8", "RouteType": 0, "NextHop": ""}]}),
                "field StaticRoutes[0].NextHop",
            ),
            (
                json!({"InterfaceName": {"SrcName": "x", "DstPrefix": "eth"},
                       "StaticRoutes": [{"Destination": "10.0.0.0/8", "RouteType": 7}]}),
                "field StaticRoutes[0].RouteType",
            ),
        ];
        for (v, want) in cases {
            let e = join_plan("p", reply(v.clone())).unwrap_err().to_string();
            assert!(
                e.starts_with("plugin \"p\": /NetworkDriver.Join: malformed answer: ")
                    && e.contains(want),
                "{v}: {e}"
            );
        }
    }

    #[test]
    fn requests_have_dockers_shape() {
        let info = NetworkInfo {
            id: "n1".into(),
            name: "net".into(),
            options: [("k".to_string(), "v".to_string())].into(),
            ipv4: vec![IpamPool {
                pool_id: "p".into(),
                subnet: "10.9.0.0/24".parse().unwrap(),
                ip_range: None,
                gateway: Some("10.9.0.1/24".parse().unwrap()),
                aux_addresses: [("r".to_string(), "10.9.0.9".parse().unwrap())].into(),
            }],
            ipv6: Vec::new(),
            internal: false,
            enable_ipv6: false,
        };
        let v = create_network(&info);
        assert_eq!(v["NetworkID"], "n1");
        assert_eq!(v["Options"][OPT_GENERIC]["k"], "v");
        assert_eq!(v["IPv4Data"][0]["Pool"], "10.9.0.0/24");
        assert_eq!(v["IPv4Data"][0]["Gateway"], "10.9.0.1/24");
        assert_eq!(v["IPv4Data"][0]["AuxAddresses"]["r"], "10.9.0.9/24");
        assert_eq!(v["IPv6Data"], json!([]));
        let ports = [PortBinding {
            proto: "udp".into(),
            container_port: 53,
            host_ip: None,
            host_port: 5353,
            host_port_end: 0,
        }];
        let o = endpoint_options(&BTreeMap::new(), &ports, &[]);
        assert_eq!(o[OPT_PORTMAP][0]["Proto"], 17);
        assert_eq!(o[OPT_PORTMAP][0]["HostPort"], 5353);
        assert_eq!(o[OPT_EXPOSED][0]["Port"], 53);
    }
}
