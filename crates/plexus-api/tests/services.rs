//! `/plexus/services…` in-process: shapes, tasks through sandbox create, filters, updates,
//! bad input (400s naming the field, 404, 409) and removal with and without `force`.

mod common;

use axum::http::StatusCode;
use common::{api, message};
use serde_json::json;

#[tokio::test]
async fn services_create_inspect_list_update_delete() -> anyhow::Result<()> {
    let api = api().await?;
    api.post(
        "/networks/create",
        json!({"Name": "front", "IPAM": {"Config": [{"Subnet": "10.60.0.0/24"}]}}),
    )
    .await;
    let (got, created) = api
        .post(
            "/plexus/services/create",
            json!({"Name": "web", "Networks": [{"Target": "front"}],
                   "EndpointSpec": {"Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080}]},
                   "SessionAffinity": {"Mode": "client-ip", "TimeoutSeconds": 60},
                   "Labels": {"tier": "front"}}),
        )
        .await;
    assert_eq!(got, StatusCode::CREATED, "{created}");
    let id = created["ID"].as_str().unwrap_or_default().to_string();
    assert_eq!(id.len(), 64);
    let (got, s) = api.get("/plexus/services/web").await;
    assert_eq!(got, StatusCode::OK, "{s}");
    assert_eq!(s["ID"], id.as_str());
    assert_eq!(s["Scope"], "local");
    assert_eq!(s["Endpoint"]["Spec"]["Mode"], "vip");
    assert_eq!(
        s["Endpoint"]["Ports"],
        json!([{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}])
    );
    assert_eq!(s["Endpoint"]["VirtualIPs"][0]["Addr"], "10.60.0.2/24");
    assert_eq!(s["Networks"][0]["Name"], "front");
    assert_eq!(
        s["SessionAffinity"],
        json!({"Mode": "client-ip", "TimeoutSeconds": 60})
    );
    assert_eq!(s["Labels"]["tier"], "front");
    assert_eq!(s["Tasks"], json!([]));

    // A task through sandbox create.
    let (got, sb) = api
        .post(
            "/plexus/sandboxes",
            json!({"Name": "t1", "Networks": [{"Name": "front"}], "Service": "web"}),
        )
        .await;
    assert_eq!(got, StatusCode::CREATED, "{sb}");
    assert_eq!(sb["Service"], id.as_str());
    let (_, s) = api.get(&format!("/plexus/services/{}", &id[..12])).await;
    assert_eq!(s["Tasks"][0]["Name"], "t1");
    assert_eq!(s["Tasks"][0]["Addresses"][0]["Addr"], "10.60.0.3/24");

    // Filters.
    api.post(
        "/plexus/services/create",
        json!({"Name": "db", "Networks": [{"Target": "front"}], "EndpointSpec": {"Mode": "dnsrr"}}),
    )
    .await;
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s["Name"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (_, all) = api.get("/plexus/services").await;
    assert_eq!(names(&all), ["db", "web"]);
    let f = common::client_encode(r#"{"label":{"tier=front":true}}"#);
    let (_, some) = api.get(&format!("/plexus/services?filters={f}")).await;
    assert_eq!(names(&some), ["web"]);
    let f = common::client_encode(r#"{"mode":["dnsrr"]}"#);
    let (_, some) = api.get(&format!("/plexus/services?filters={f}")).await;
    assert_eq!(names(&some), ["db"]);
    let f = common::client_encode(r#"{"colour":["red"]}"#);
    let (got, e) = api.get(&format!("/plexus/services?filters={f}")).await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{e}");

    // Update.
    let (got, u) = api
        .post(
            "/plexus/services/web/update",
            json!({"PortsAdd": [{"TargetPort": 53, "PublishedPort": 5353, "Protocol": "udp"}],
                   "PortsRemove": [{"PublishedPort": 8080}],
                   "SessionAffinity": {"Mode": "none"},
                   "LabelsAdd": {"x": "y"}, "LabelsRemove": ["tier"]}),
        )
        .await;
    assert_eq!(got, StatusCode::OK, "{u}");
    assert_eq!(u["Version"], 2);
    assert_eq!(u["Endpoint"]["Ports"][0]["PublishedPort"], 5353);
    assert_eq!(u["SessionAffinity"]["Mode"], "none");
    assert_eq!(u["Labels"], json!({"x": "y"}));

    // Removal: refused with tasks, naming them; forced, the sandbox stays.
    let (got, e) = api.delete("/plexus/services/web").await;
    assert_eq!(got, StatusCode::CONFLICT, "{e}");
    assert!(message(&e).contains("tasks t1"), "{e}");
    let (got, e) = api.delete("/plexus/services/web?force=maybe").await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{e}");
    let (got, _) = api.delete("/plexus/services/web?force=1").await;
    assert_eq!(got, StatusCode::NO_CONTENT);
    let (got, sb) = api.get("/plexus/sandboxes/t1").await;
    assert_eq!(got, StatusCode::OK);
    assert!(sb.get("Service").is_none(), "{sb}");
    let (got, _) = api.get("/plexus/services/web").await;
    assert_eq!(got, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn service_bad_inputs_name_the_field() -> anyhow::Result<()> {
    let api = api().await?;
    api.post("/networks/create", json!({"Name": "n"})).await;
    api.post(
        "/plexus/services/create",
        json!({"Name": "taken", "Networks": [{"Target": "n"}],
               "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 80}]}}),
    )
    .await;
    let cases = [
        (json!({"Name": 5}), StatusCode::BAD_REQUEST, "Name"),
        (json!({"Name": "x"}), StatusCode::BAD_REQUEST, "networks"),
        (
            json!({"Name": "x", "Networks": [{}]}),
            StatusCode::BAD_REQUEST,
            "Networks[0].Target",
        ),
        (
            json!({"Name": "x", "Networks": [{"Target": "nope"}]}),
            StatusCode::NOT_FOUND,
            "network nope",
        ),
        (
            json!({"Name": "x", "Networks": [{"Target": "n"}], "EndpointSpec": {"Mode": "rr"}}),
            StatusCode::BAD_REQUEST,
            "endpoint mode",
        ),
        (
            json!({"Name": "x", "Networks": [{"Target": "n"}], "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 70000}]}}),
            StatusCode::BAD_REQUEST,
            "EndpointSpec.Ports[0].PublishedPort",
        ),
        (
            json!({"Name": "x", "Networks": [{"Target": "n"}], "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 0}]}}),
            StatusCode::BAD_REQUEST,
            "EndpointSpec.Ports[0].PublishedPort",
        ),
        (
            json!({"Name": "x", "Networks": [{"Target": "n"}], "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 81, "Protocol": "icmp"}]}}),
            StatusCode::BAD_REQUEST,
            "ports[0] protocol",
        ),
        (
            json!({"Name": "x", "Networks": [{"Target": "n"}], "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 81, "PublishMode": "everywhere"}]}}),
            StatusCode::BAD_REQUEST,
            "EndpointSpec.Ports[0].PublishMode",
        ),
        (
            json!({"Name": "x", "Networks": [{"Target": "n"}], "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 80}]}}),
            StatusCode::CONFLICT,
            "in use by service taken",
        ),
        (
            json!({"Name": "x", "Networks": [{"Target": "n"}], "SessionAffinity": {"Mode": "sticky"}}),
            StatusCode::BAD_REQUEST,
            "affinity",
        ),
        (
            json!({"Name": "x", "Networks": [{"Target": "n"}], "SessionAffinity": {"Mode": "client-ip", "TimeoutSeconds": 86401}}),
            StatusCode::BAD_REQUEST,
            "affinity timeout",
        ),
        (
            json!({"Name": "taken", "Networks": [{"Target": "n"}]}),
            StatusCode::CONFLICT,
            "already exists",
        ),
    ];
    for (body, status, field) in cases {
        let (got, e) = api.post("/plexus/services/create", body.clone()).await;
        assert_eq!(got, status, "{body}: {e}");
        assert!(message(&e).contains(field), "{body}: {e}");
    }
    let (got, e) = api
        .post(
            "/plexus/services/taken/update",
            json!({"PortsAdd": [{"TargetPort": 1}]}),
        )
        .await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{e}");
    assert!(message(&e).contains("PortsAdd[0].PublishedPort"), "{e}");
    let (got, e) = api
        .post(
            "/plexus/sandboxes",
            json!({"Name": "s", "Networks": [{"Name": "n"}], "Service": "nope"}),
        )
        .await;
    assert_eq!(got, StatusCode::NOT_FOUND, "{e}");
    assert!(message(&e).contains("service nope"), "{e}");
    let (got, e) = api
        .post(
            "/plexus/sandboxes",
            json!({"Name": "s", "Service": "taken"}),
        )
        .await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{e}");
    assert!(message(&e).contains("invalid service"), "{e}");
    let (got, _) = api.delete("/plexus/services/nope").await;
    assert_eq!(got, StatusCode::NOT_FOUND);
    let (_, all) = api.get("/plexus/services").await;
    assert_eq!(all.as_array().map(Vec::len), Some(1));
    Ok(())
}
