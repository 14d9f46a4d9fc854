//! `plugin_answer`: a Docker network plugin's answers (a remote network driver's), untrusted
//! input, fed to `plexus_drivers::remote::read_driver_answer`, which checks them as the
//! driver does before using them.
//!
//! The first byte picks the call (`remote::CALLS`, the low 7 bits) and the endpoint asked
//! for (the high bit: an IPv4 /24 and an IPv6 /64 address, or an IPv4 address and a MAC
//! address); the rest is the plugin's answer, read three ways: as the raw HTTP response, and
//! as the JSON body of a `200 OK` response, sized and chunked (so the fuzzer reaches the
//! JSON quickly).
//!
//! No panic, and:
//! - a refusal is a `DriverError::Failed` whose message names the plugin and the call;
//! - a body whose JSON carries an `Err` (neither null nor `""`) is refused, as dockerd does;
//! - the sized and the chunked body are read alike;
//! - an accepted answer is the call's: GetCapabilities' capability needs IPAM; a
//!   CreateEndpoint answer never changes the endpoint's addresses, and its MAC address is
//!   unicast, the one asked for if one was, and reads back to the text the plugin sent; a
//!   Join plan's `SrcName` is a name the kernel takes (1 to 15 bytes, `dev_valid_name`),
//!   its `DstPrefix` one that stays so with a number up to 999, its gateways and routes of
//!   the right families, the routes' destinations truncated; a 404 is an empty answer only
//!   for the calls libnetwork lets a plugin leave out.

#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_cnm::{DriverError, EndpointInfo};
use plexus_drivers::remote::{read_driver_answer, DriverAnswer, EndpointAnswer, JoinPlan, CALLS};
use serde_json::Value;

const PLUGIN: &str = "fuzz";

/// The calls a plugin may leave out (a 404 is no answer), as libnetwork's remote driver.
const OPTIONAL: [&str; 5] = [
    "/NetworkDriver.FreeNetwork",
    "/NetworkDriver.ProgramExternalConnectivity",
    "/NetworkDriver.RevokeExternalConnectivity",
    "/NetworkDriver.DiscoverNew",
    "/NetworkDriver.DiscoverDelete",
];

/// The MAC address the second endpoint asks for.
const ASKED_MAC: [u8; 6] = [0x02, 0x42, 0x0a, 0x09, 0x00, 0x07];

fn endpoint(with_mac: bool) -> EndpointInfo {
    EndpointInfo {
        network_id: "n1".into(),
        endpoint_id: "e1".into(),
        ipv4: "10.9.0.5/24".parse().ok(),
        ipv6: if with_mac {
            None
        } else {
            "fd00:9::5/64".parse().ok()
        },
        mac: with_mac.then(|| "02:42:0a:09:00:07".to_string()),
        ports: Vec::new(),
        options: Default::default(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let op = CALLS[usize::from(pick & 0x7f) % CALLS.len()];
    let ep = endpoint(pick & 0x80 != 0);

    check(op, &ep, read(op, &ep, body));

    let mut sized =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    sized.extend_from_slice(body);
    let answer = read(op, &ep, &sized);
    check(op, &ep, answer.clone());
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        json_answer(&v, &answer);
    }

    // The same body in two chunks.
    let half = body.len() / 2;
    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in [&body[..half], &body[half..]] {
        if !part.is_empty() {
            chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            chunked.extend_from_slice(part);
            chunked.extend_from_slice(b"\r\n");
        }
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        read(op, &ep, &chunked),
        answer,
        "a chunked body read otherwise than a sized one"
    );
});

fn read(op: &str, ep: &EndpointInfo, raw: &[u8]) -> Result<DriverAnswer, DriverError> {
    read_driver_answer(PLUGIN, op, raw, ep)
}

/// What holds of any answer read.
fn check(op: &str, ep: &EndpointInfo, answer: Result<DriverAnswer, DriverError>) {
    let answer = match answer {
        Ok(a) => a,
        Err(DriverError::Failed(m)) => {
            let named = format!("plugin {PLUGIN:?}: {op}: ");
            assert!(
                m.starts_with(&named) && m.len() > named.len(),
                "{op}: a refusal that does not name the plugin and the call: {m}"
            );
            return;
        }
        Err(e) => panic!("{op}: refused as {e:?}"),
    };
    let call = op.trim_start_matches("/NetworkDriver.");
    match answer {
        DriverAnswer::Capabilities(c) => {
            assert_eq!(call, "GetCapabilities");
            assert!(c.needs_ipam && c.multiple_networks);
        }
        DriverAnswer::Endpoint(a) => {
            assert_eq!(call, "CreateEndpoint");
            endpoint_answer(ep, &a);
        }
        DriverAnswer::Join(plan) => {
            assert_eq!(call, "Join");
            join_plan(&plan);
        }
        DriverAnswer::OperInfo(_) => assert_eq!(call, "EndpointOperInfo"),
        DriverAnswer::Allocated(_) => assert_eq!(call, "AllocateNetwork"),
        DriverAnswer::Other(v) => {
            assert!(
                !matches!(
                    call,
                    "GetCapabilities"
                        | "CreateEndpoint"
                        | "Join"
                        | "EndpointOperInfo"
                        | "AllocateNetwork"
                ),
                "{op} answered as any call"
            );
            assert!(
                v.is_some() || OPTIONAL.contains(&op),
                "{op}: a 404 taken for an answer"
            );
        }
    }
}

fn endpoint_answer(ep: &EndpointInfo, a: &EndpointAnswer) {
    assert!(
        a.ipv4.is_none() || a.ipv4 == ep.ipv4,
        "IPv4 address changed: {a:?}"
    );
    assert!(
        a.ipv6.is_none() || a.ipv6 == ep.ipv6,
        "IPv6 address changed: {a:?}"
    );
    if let Some(mac) = a.mac {
        assert!(
            mac[0] & 1 == 0 && mac != [0; 6],
            "not a unicast MAC: {mac:02x?}"
        );
    }
    if ep.mac.is_some() {
        assert_eq!(
            a.mac,
            Some(ASKED_MAC),
            "the MAC asked for is not the endpoint's"
        );
    }
}

/// Whether the kernel takes `name` for an interface (`dev_valid_name`: 1 to 15 bytes, not
/// `.` or `..`, no `/`, `:` or `isspace` byte, which in the kernel's ctype is 9 to 13, 32
/// and 160).
fn kernel_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| matches!(b, 0 | b'/' | b':' | 9..=13 | b' ' | 0xa0))
}

fn join_plan(plan: &JoinPlan) {
    assert!(kernel_ifname(&plan.src_name), "SrcName {:?}", plan.src_name);
    let prefix = &plan.dst_prefix;
    assert!(
        (1..=12).contains(&prefix.len()) && kernel_ifname(&format!("{prefix}999")),
        "DstPrefix {prefix:?}"
    );
    assert!(plan.gateway.is_none_or(|g| g.is_ipv4()), "{plan:?}");
    assert!(plan.gateway_v6.is_none_or(|g| g.is_ipv6()), "{plan:?}");
    for r in &plan.routes {
        assert_eq!(r.destination, r.destination.trunc(), "{plan:?}");
        if let Some(hop) = r.next_hop {
            assert_eq!(hop.is_ipv6(), r.destination.addr().is_ipv6(), "{plan:?}");
        }
    }
}

/// What holds of an answer whose body is the JSON `v` (status 200).
fn json_answer(v: &Value, answer: &Result<DriverAnswer, DriverError>) {
    let err = v
        .get("Err")
        .filter(|e| !e.is_null() && e.as_str() != Some(""));
    assert!(
        err.is_none() || answer.is_err(),
        "an answer with Err {err:?} taken: {answer:?}"
    );
    // A MAC address the plugin gave reads back to its text.
    if let Ok(DriverAnswer::Endpoint(EndpointAnswer { mac: Some(mac), .. })) = answer {
        if let Some(text) = v
            .pointer("/Interface/MacAddress")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let written = mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            assert_eq!(
                text.to_ascii_lowercase().replace('-', ":"),
                written,
                "MAC address {text:?} read as {written}"
            );
        }
    }
}
