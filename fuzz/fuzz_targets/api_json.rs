//! `api_json`: the API's decoders of request bodies and request values, fed one body per run.
//!
//! - the body as each JSON request the handlers decode with `handlers::decode`:
//!   `NetworkCreate` (then `handlers::network_spec`), `NetworkConnect`, `NetworkDisconnect`,
//!   `SandboxCreate` (then `handlers::sandbox_spec`, which parses its `-p` specs),
//!   `ServiceCreate` (then `services::service_spec`) and `ServiceUpdate` (then
//!   `services::service_update`); a decoded request serialises and decodes back to itself;
//! - the body as text through the query-value parsers of `plexus_api::parse` (Docker
//!   `filters`, a `-p` port spec, an `/events` timestamp), a service's `--publish` spec
//!   (`plexus_api_types::parse_publish`) and `strip_version` (the path);
//! - the bytes as a remote IPAM plugin's HTTP answer: `plexus_ipam::remote::read_answer`
//!   (status line, sized or chunked body, the `Err` field, the JSON), and the text through
//!   `plexus_ipam::api::parse_cidr`/`parse_ip`, which read the pools and addresses it names.
//!
//! No panic, and every refusal is an `ApiError` with a 4xx status and a message (an
//! `IpamError::Plugin` naming the plugin and the operation, for the plugin's answers).

#![no_main]

use libfuzzer_sys::fuzz_target;
use plexus_api::handlers::{decode, network_spec, sandbox_spec};
use plexus_api::parse::{parse_filters, parse_port_spec, parse_timestamp};
use plexus_api::services::{service_spec, service_update};
use plexus_api::types::{
    parse_publish, NetworkConnect, NetworkCreate, NetworkDisconnect, SandboxCreate,
    ServiceCreate, ServiceUpdate,
};
use plexus_api::ApiError;
use plexus_ipam::api::{parse_cidr, parse_ip};
use plexus_ipam::remote::read_answer;
use plexus_ipam::IpamError;
use serde::de::DeserializeOwned;
use serde::Serialize;

fuzz_target!(|data: &[u8]| {
    if let Some(req) = request::<NetworkCreate>(data) {
        if let Err(e) = network_spec(req) {
            refused(&e);
        }
    }
    request::<NetworkConnect>(data);
    request::<NetworkDisconnect>(data);
    if let Some(req) = request::<SandboxCreate>(data) {
        let ports = req.ports.len();
        match sandbox_spec(req) {
            Ok(spec) => assert!(spec.ports.len() >= ports, "a port spec gave no binding"),
            Err(e) => refused(&e),
        }
    }
    if let Some(req) = request::<ServiceCreate>(data) {
        if let Err(e) = service_spec(req) {
            refused(&e);
        }
    }
    if let Some(req) = request::<ServiceUpdate>(data) {
        if let Err(e) = service_update(req) {
            refused(&e);
        }
    }
    plugin_answer(data);
    if let Ok(text) = std::str::from_utf8(data) {
        values(text);
    }
});

/// The bytes as a plugin's answer to `/IpamDriver.RequestPool`.
fn plugin_answer(data: &[u8]) {
    let op = "/IpamDriver.RequestPool";
    match read_answer::<serde_json::Value>("fuzz", op, data) {
        Ok(v) => {
            if let Some(pool) = v.get("Pool").and_then(|p| p.as_str()) {
                let _ = parse_cidr("subnet", pool);
            }
        }
        Err(IpamError::Plugin {
            plugin,
            op: o,
            message,
        }) => {
            assert_eq!((plugin.as_str(), o.as_str()), ("fuzz", op));
            assert!(!message.is_empty());
        }
        Err(e) => panic!("a plugin's answer refused as {e:?}"),
    }
}

/// Decodes `data` as a `T` the way the handlers do; a decoded request round-trips.
fn request<T>(data: &[u8]) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    match decode::<T>(data) {
        Ok(req) => {
            let json = serde_json::to_vec(&req).expect("a request serialises");
            match decode::<T>(&json) {
                Ok(again) => assert_eq!(again, req, "request does not round-trip"),
                Err(e) => panic!("re-encoded request refused: {e}"),
            }
            Some(req)
        }
        Err(e) => {
            refused(&e);
            assert!(e.message.starts_with("invalid JSON"), "{}", e.message);
            None
        }
    }
}

fn refused(e: &ApiError) {
    assert!(e.status.is_client_error(), "{}: {}", e.status, e.message);
    assert!(!e.message.is_empty());
}

/// The text as a query value or path.
fn values(text: &str) {
    if let Err(e) = parse_filters(text) {
        assert!(e.contains("filter"), "{e}");
    }
    match parse_port_spec(text) {
        Ok(bindings) => {
            assert!(!bindings.is_empty());
            for b in &bindings {
                assert_ne!(b.container_port, 0);
                assert!(matches!(b.proto.as_str(), "tcp" | "udp" | "sctp"));
                assert!(b.host_port_end == 0 || b.host_port_end >= b.host_port);
            }
        }
        Err(e) => assert!(e.contains("invalid port spec"), "{e}"),
    }
    match parse_publish(text) {
        Ok(ports) => {
            assert!(!ports.is_empty() && ports.len() <= 1000);
            for p in &ports {
                assert!((1..=65535).contains(&p.published_port));
                assert!((1..=65535).contains(&p.target_port));
                assert!(matches!(p.protocol.as_str(), "tcp" | "udp"));
            }
        }
        Err(e) => assert!(e.contains("invalid publish"), "{e}"),
    }
    for field in ["since", "until"] {
        if let Err(e) = parse_timestamp(field, text) {
            assert!(e.contains(field), "{e}");
        }
    }
    if let Ok(net) = parse_cidr("subnet", text) {
        assert!(net.prefix_len() <= net.max_prefix_len());
    }
    let _ = parse_ip("gateway", text);
    let stripped = plexus_api::strip_version(text);
    assert!(
        text.ends_with(stripped) || stripped == "/",
        "{stripped:?} of {text:?}"
    );
}
