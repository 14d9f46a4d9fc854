//! `GET /events` in-process (see `common`): Docker's JSON lines, filters, the time window
//! and bad input.

mod common;

use axum::http::StatusCode;
use serde_json::{json, Value};

use common::{api, client_encode, message};

#[tokio::test]
async fn events_as_docker_streams_them() -> anyhow::Result<()> {
    let api = api().await?;
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let (got, v) = api
        .post(
            "/networks/create",
            json!({"Name": "n1", "Driver": "bridge"}),
        )
        .await;
    assert_eq!(got, StatusCode::CREATED, "{v}");
    let net_id = v["Id"].as_str().unwrap_or_default().to_string();
    let (got, sb) = api
        .post(
            "/plexus/sandboxes",
            json!({"Name": "s1", "Networks": [{"Name": "n1"}], "Hostname": "web",
                   "Dns": ["10.0.0.53"], "DnsSearch": ["example.org"], "DnsOptions": ["ndots:2"]}),
        )
        .await;
    assert_eq!(got, StatusCode::CREATED, "{sb}");
    assert_eq!(sb["Hostname"], "web");
    assert_eq!(sb["Dns"], json!(["10.0.0.53"]));
    assert_eq!(sb["DnsSearch"], json!(["example.org"]));
    assert_eq!(sb["DnsOptions"], json!(["ndots:2"]));
    let sandbox_id = sb["Id"].as_str().unwrap_or_default().to_string();
    let (got, _) = api.delete("/plexus/sandboxes/s1").await;
    assert_eq!(got, StatusCode::NO_CONTENT);
    let (got, _) = api.delete("/networks/n1").await;
    assert_eq!(got, StatusCode::NO_CONTENT);
    let end = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?
        + std::time::Duration::from_micros(1);

    let window = format!(
        "since={}.{:09}&until={}.{:09}",
        start.as_secs(),
        start.subsec_nanos(),
        end.as_secs(),
        end.subsec_nanos()
    );
    let (got, text) = api.text(&format!("/v1.41/events?{window}")).await;
    assert_eq!(got, StatusCode::OK, "{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let seen: Vec<String> = lines
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["Type"].as_str().unwrap_or(""),
                l["Action"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            "network create",
            "sandbox create",
            "network connect",
            "network disconnect",
            "sandbox destroy",
            "network destroy"
        ]
    );
    let connect = &lines[2];
    assert_eq!(connect["Actor"]["ID"], net_id.as_str());
    assert_eq!(
        connect["Actor"]["Attributes"],
        json!({"container": sandbox_id, "name": "n1", "type": "bridge"})
    );
    assert_eq!(connect["scope"], "local");
    let nano = connect["timeNano"].as_i64().unwrap_or(0);
    assert_eq!(connect["time"].as_i64(), Some(nano / 1_000_000_000));

    // Filters: Docker's JSON, both encodings; network by name.
    let filtered = format!(
        "/events?{window}&filters={}",
        client_encode(r#"{"type":["network"],"event":{"connect":true},"network":["n1"]}"#)
    );
    let (got, text) = api.text(&filtered).await;
    assert_eq!(got, StatusCode::OK, "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(r#""Action":"connect""#), "{text}");
    let (_, text) = api
        .text(&format!(
            "/events?{window}&filters={}",
            client_encode(r#"{"sandbox":["s1"],"event":["destroy"]}"#)
        ))
        .await;
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(r#""Type":"sandbox""#), "{text}");

    // Bad input: 400s naming what is wrong.
    let future = end.as_secs() + 3600;
    for (query, needle) in [
        (format!("since={future}"), "invalid since"),
        ("since=yesterday".to_string(), "invalid since \"yesterday\""),
        ("until=2023-13-01T00:00:00Z".to_string(), "invalid until"),
        (format!("since={}&until=1", end.as_secs()), "after until"),
        (
            format!("filters={}", client_encode(r#"{"image":["x"]}"#)),
            "invalid filter \"image\"",
        ),
        (
            format!("filters={}", client_encode(r#"{"type":["nope"]}"#)),
            "'type=nope'",
        ),
        (
            format!("filters={}", client_encode("{bad")),
            "invalid filters JSON",
        ),
    ] {
        let (got, v) = api.get(&format!("/events?{query}")).await;
        assert_eq!(got, StatusCode::BAD_REQUEST, "{query}: {v}");
        assert!(message(&v).contains(needle), "{query}: {v}");
    }
    // Sandbox settings are checked by the model, naming the field.
    let (got, v) = api
        .post("/plexus/sandboxes", json!({"Name": "s2", "Dns": ["ns1"]}))
        .await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{v}");
    assert!(message(&v).contains("invalid dns"), "{v}");
    Ok(())
}
