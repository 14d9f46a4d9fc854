//! `GET /metrics` in-process: every route is counted under its own operation, statuses by
//! class, gauges follow the records, and the answer is in the format asked for.

mod common;

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

use common::api;

/// The samples of a scrape: `name{labels}` → value, labels as the encoder wrote them.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(api: &common::Api, accept: Option<&str>) -> (String, String) {
    let mut req = Request::get("/metrics");
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = api
        .app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap_or_else(|e| panic!("{e}")))
        .await
        .unwrap_or_else(|e| panic!("scrape: {e}"));
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (content_type, String::from_utf8_lossy(&body).into_owned())
}

fn requests(s: &BTreeMap<String, f64>, op: &str, status: &str) -> f64 {
    s.get(&format!(
        "plexus_api_requests_total{{operation=\"{op}\",status=\"{status}\"}}"
    ))
    .copied()
    .unwrap_or(0.0)
}

#[tokio::test]
async fn every_route_is_counted_under_its_operation() -> anyhow::Result<()> {
    let api = api().await?;
    let (_, net) = api
        .post(
            "/networks/create",
            json!({"Name": "m1", "Driver": "bridge"}),
        )
        .await;
    let id = net["Id"].as_str().unwrap_or_default().to_string();
    let calls: &[(Method, String, Option<serde_json::Value>, &str)] = &[
        (Method::GET, "/_ping".into(), None, "ping"),
        (Method::HEAD, "/_ping".into(), None, "ping"),
        (Method::GET, "/v1.41/version".into(), None, "version"),
        (Method::GET, "/info".into(), None, "info"),
        (Method::GET, "/networks".into(), None, "network_list"),
        (
            Method::GET,
            format!("/networks/{id}"),
            None,
            "network_inspect",
        ),
        (
            Method::POST,
            "/plexus/sandboxes".into(),
            Some(json!({"Name": "s1", "Networks": [{"Name": "m1"}]})),
            "sandbox_create",
        ),
        (
            Method::GET,
            "/plexus/sandboxes".into(),
            None,
            "sandbox_list",
        ),
        (
            Method::GET,
            "/plexus/sandboxes/s1".into(),
            None,
            "sandbox_inspect",
        ),
        (
            Method::POST,
            format!("/networks/{id}/disconnect"),
            Some(json!({"Container": "s1"})),
            "network_disconnect",
        ),
        (
            Method::POST,
            format!("/networks/{id}/connect"),
            Some(json!({"Container": "s1"})),
            "network_connect",
        ),
        (
            Method::DELETE,
            "/plexus/sandboxes/s1".into(),
            None,
            "sandbox_delete",
        ),
        (
            Method::DELETE,
            format!("/networks/{id}"),
            None,
            "network_delete",
        ),
        (
            Method::POST,
            "/networks/prune".into(),
            None,
            "network_prune",
        ),
        (Method::GET, "/nope".into(), None, "other"),
        (Method::PUT, "/networks".into(), None, "other"),
    ];
    let mut want: BTreeMap<&str, f64> = BTreeMap::new();
    want.insert("network_create", 1.0);
    for (method, uri, body, op) in calls {
        let body = body.as_ref().map(|b| b.to_string());
        let (status, v) = api.call(method.clone(), uri, body.as_deref()).await;
        assert!(
            *op == "other" || status.is_success(),
            "{method} {uri}: {status} {v}"
        );
        *want.entry(op).or_default() += 1.0;
    }
    let (_, text) = scrape(&api, None).await;
    let s = samples(&text);
    for (op, n) in want {
        let status = if op == "other" { "4xx" } else { "2xx" };
        assert_eq!(requests(&s, op, status), n, "{op}:\n{text}");
        let count = s
            .get(&format!(
                "plexus_api_request_duration_seconds_count{{operation=\"{op}\"}}"
            ))
            .copied();
        assert_eq!(count, Some(n), "{op}:\n{text}");
    }
    // The scrape itself is counted once it is answered: the next one sees it.
    let (_, text) = scrape(&api, None).await;
    assert_eq!(requests(&samples(&text), "metrics", "2xx"), 1.0, "{text}");
    Ok(())
}

#[tokio::test]
async fn refusals_are_counted_by_status_class() -> anyhow::Result<()> {
    let api = api().await?;
    let (status, _) = api.call(Method::POST, "/networks/create", Some("{")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api.get("/networks/nosuch").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, text) = scrape(&api, None).await;
    let s = samples(&text);
    assert_eq!(requests(&s, "network_create", "4xx"), 1.0, "{text}");
    assert_eq!(requests(&s, "network_create", "2xx"), 0.0, "{text}");
    assert_eq!(requests(&s, "network_inspect", "4xx"), 1.0, "{text}");
    Ok(())
}

/// Without gossip, `/plexus/cluster…` answers 503 naming the flags, counted by operation.
#[tokio::test]
async fn cluster_routes_without_gossip_say_which_flags() -> anyhow::Result<()> {
    let api = api().await?;
    for (method, uri) in [
        (Method::GET, "/plexus/cluster"),
        (Method::GET, "/plexus/cluster/hosts"),
        (Method::GET, "/v1.41/plexus/cluster/hosts/h1"),
        (Method::POST, "/plexus/cluster/key/rotate"),
    ] {
        let (status, v) = api.call(method, uri, None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {v}");
        assert!(v.to_string().contains("--cluster-advertise"), "{uri}: {v}");
    }
    let (_, text) = scrape(&api, None).await;
    let s = samples(&text);
    assert_eq!(requests(&s, "cluster_inspect", "5xx"), 2.0, "{text}");
    assert_eq!(requests(&s, "cluster_hosts", "5xx"), 1.0, "{text}");
    assert_eq!(requests(&s, "cluster_key_rotate", "5xx"), 1.0, "{text}");
    Ok(())
}

#[tokio::test]
async fn gauges_follow_the_records() -> anyhow::Result<()> {
    let api = api().await?;
    // A family shows once it has a series: on a fresh daemon, only the sandboxes.
    let (_, text) = scrape(&api, None).await;
    assert!(text.lines().any(|l| l == "plexus_sandboxes 0"), "{text}");
    assert!(!text.contains("plexus_networks"), "{text}");
    let bridge = "{driver=\"bridge\",scope=\"local\"}";
    let null = "{driver=\"null\",scope=\"local\"}";
    for name in ["a", "b"] {
        let (status, v) = api
            .post(
                "/networks/create",
                json!({"Name": name, "Driver": "bridge"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
    }
    let (status, v) = api
        .post("/networks/create", json!({"Name": "c", "Driver": "null"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (status, v) = api
        .post(
            "/plexus/sandboxes",
            json!({"Name": "s1", "Networks": [{"Name": "a"}, {"Name": "b"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    let (_, text) = scrape(&api, None).await;
    for line in [
        "# TYPE plexus_networks gauge",
        "# TYPE plexus_endpoints gauge",
        "# TYPE plexus_sandboxes gauge",
        "# TYPE plexus_api_requests_total counter",
        "# TYPE plexus_api_request_duration_seconds histogram",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?}:\n{text}");
    }
    let s = samples(&text);
    assert_eq!(
        s.get(&format!("plexus_networks{bridge}")),
        Some(&2.0),
        "{s:?}"
    );
    assert_eq!(
        s.get(&format!("plexus_networks{null}")),
        Some(&1.0),
        "{s:?}"
    );
    assert_eq!(
        s.get(&format!("plexus_endpoints{bridge}")),
        Some(&2.0),
        "{s:?}"
    );
    assert_eq!(
        s.get(&format!("plexus_endpoints{null}")),
        Some(&0.0),
        "{s:?}"
    );
    assert_eq!(s.get("plexus_sandboxes"), Some(&1.0), "{s:?}");

    let (status, v) = api.delete("/plexus/sandboxes/s1").await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    for name in ["a", "c"] {
        let (status, v) = api.delete(&format!("/networks/{name}")).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    }
    let s = samples(&scrape(&api, None).await.1);
    assert_eq!(
        s.get(&format!("plexus_networks{bridge}")),
        Some(&1.0),
        "{s:?}"
    );
    // A driver with no network left has no series.
    assert_eq!(s.get(&format!("plexus_networks{null}")), None, "{s:?}");
    assert_eq!(
        s.get(&format!("plexus_endpoints{bridge}")),
        Some(&0.0),
        "{s:?}"
    );
    assert_eq!(s.get("plexus_sandboxes"), Some(&0.0), "{s:?}");
    Ok(())
}

#[tokio::test]
async fn the_format_follows_the_accept_header() -> anyhow::Result<()> {
    let api = api().await?;
    let (content_type, text) = scrape(&api, None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!text.contains("# EOF"), "{text}");
    let (content_type, text) = scrape(
        &api,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.lines()
            .any(|l| l == "# TYPE plexus_api_requests counter"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn the_metrics_router_serves_only_metrics() -> anyhow::Result<()> {
    let api = api().await?;
    // The same state behind the API and the TCP router: one set of counters.
    let state = api.state.clone();
    let app = plexus_api::metrics_router(state);
    for (uri, want) in [
        ("/metrics", StatusCode::OK),
        ("/_ping", StatusCode::NOT_FOUND),
        ("/networks", StatusCode::NOT_FOUND),
    ] {
        let resp = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty())?)
            .await?;
        assert_eq!(resp.status(), want, "{uri}");
    }
    let (_, text) = scrape(&api, None).await;
    let s = samples(&text);
    assert_eq!(requests(&s, "metrics", "2xx"), 1.0, "{text}");
    assert_eq!(requests(&s, "other", "4xx"), 2.0, "{text}");
    Ok(())
}
