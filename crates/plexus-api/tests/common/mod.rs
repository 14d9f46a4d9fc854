//! The harness the API tests share: an axum router over a memory store, the built-in IPAM,
//! fake drivers (`bridge` needing IPAM, `null` without) and fake namespaces (plain files in a
//! temp dir).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use plexus_api::{AppState, Namespaces};
use plexus_cnm::*;
use serde_json::Value;
use tower::ServiceExt;

pub struct FakeDriver {
    name: &'static str,
    ipam: bool,
}

#[async_trait]
impl Driver for FakeDriver {
    fn name(&self) -> &str {
        self.name
    }
    fn capability(&self) -> Capability {
        Capability {
            scope: Scope::Local,
            connectivity: Scope::Local,
            needs_ipam: self.ipam,
            multiple_networks: self.ipam,
        }
    }
    fn validate_options(&self, options: &BTreeMap<String, String>) -> Result<(), DriverError> {
        for key in options.keys() {
            if !key.starts_with("com.docker.network.") {
                return Err(DriverError::Invalid(format!("unknown option {key:?}")));
            }
        }
        Ok(())
    }
    async fn create_network(&self, _: &NetworkInfo) -> Result<(), DriverError> {
        Ok(())
    }
    async fn delete_network(&self, _: &str) -> Result<(), DriverError> {
        Ok(())
    }
    async fn create_endpoint(&self, ep: &EndpointInfo) -> Result<EndpointCreated, DriverError> {
        let ports = ep
            .ports
            .iter()
            .cloned()
            .map(|mut p| {
                if p.host_port == 0 {
                    p.host_port = 49153;
                }
                p
            })
            .collect();
        Ok(EndpointCreated {
            mac: Some("02:42:ac:11:00:02".into()),
            ports,
        })
    }
    async fn delete_endpoint(&self, _: &str, _: &str) -> Result<(), DriverError> {
        Ok(())
    }
    async fn join(
        &self,
        _: &str,
        _: &str,
        _: &str,
        interface: InterfaceName<'_>,
    ) -> Result<Joined, DriverError> {
        Ok(Joined {
            interface: Some(interface.guess()),
            ..Joined::default()
        })
    }
    async fn leave(&self, _: &str, _: &str) -> Result<(), DriverError> {
        Ok(())
    }
}

/// Namespaces as plain files, so the tests need no kernel.
struct FakeNamespaces {
    dir: PathBuf,
}

#[async_trait]
impl Namespaces for FakeNamespaces {
    async fn create(&self, name: &str) -> Result<String, CnmError> {
        let path = self.dir.join(name);
        std::fs::write(&path, b"").map_err(|e| CnmError::Netns {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(path.display().to_string())
    }
    async fn check(&self, path: &str) -> Result<(), CnmError> {
        if std::path::Path::new(path).exists() {
            Ok(())
        } else {
            Err(CnmError::invalid("netns", format!("{path} does not exist")))
        }
    }
    async fn delete(&self, path: &str) -> Result<(), CnmError> {
        let _ = std::fs::remove_file(path);
        Ok(())
    }
}

pub struct Api {
    pub app: Router,
    pub state: AppState,
    pub dir: tempfile::TempDir,
}

pub async fn api() -> anyhow::Result<Api> {
    let dir = tempfile::tempdir()?;
    let store = plexus_kv::open("memory://", Default::default()).await?;
    let ipam = plexus_ipam::BuiltinIpam::open(
        store.clone(),
        plexus_ipam::IpamConfig::new("test")
            .with_default_address_pools(&["base=10.123.0.0/16,size=24"])?,
    )
    .await?;
    let mut drivers = DriverRegistry::new();
    drivers.register(Arc::new(FakeDriver {
        name: "bridge",
        ipam: true,
    }));
    drivers.register(Arc::new(FakeDriver {
        name: "null",
        ipam: false,
    }));
    let controller = Controller::new(store, Arc::new(ipam), drivers, ControllerConfig::default())
        .with_namespaces(Arc::new(FakeNamespaces {
            dir: dir.path().to_path_buf(),
        }));
    let state = AppState::new(Arc::new(controller), &plexus_metrics::Registry::new())?;
    Ok(Api {
        app: plexus_api::router(state.clone()),
        state,
        dir,
    })
}

impl Api {
    pub async fn call(&self, method: Method, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map(|b| Body::from(b.to_string())).unwrap_or_default())
            .unwrap_or_else(|e| panic!("request {uri}: {e}"));
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| panic!("call {uri}: {e}"));
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }
    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, None).await
    }
    pub async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, uri, Some(&body.to_string())).await
    }
    pub async fn delete(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, uri, None).await
    }
}

pub fn message(v: &Value) -> String {
    v["message"].as_str().unwrap_or("").to_string()
}

impl Api {
    /// A GET whose body is read whole, as text (a stream that ends).
    pub async fn text(&self, uri: &str) -> (StatusCode, String) {
        let req = Request::get(uri)
            .body(Body::empty())
            .unwrap_or_else(|e| panic!("request {uri}: {e}"));
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| panic!("call {uri}: {e}"));
        let status = resp.status();
        let bytes = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            resp.into_body().collect(),
        )
        .await
        .unwrap_or_else(|_| panic!("{uri}: the stream did not end"))
        .map(|b| b.to_bytes())
        .unwrap_or_default();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// Percent-encodes a query value.
pub fn client_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
