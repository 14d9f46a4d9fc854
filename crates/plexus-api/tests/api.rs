//! The API in-process (see `common`): every route's JSON shape, every bad input's status
//! and message.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use common::{api, message};

#[tokio::test]
async fn ping_and_version_with_and_without_prefix() -> anyhow::Result<()> {
    let api = api().await?;
    for uri in ["/_ping", "/v1.41/_ping", "/v1.24/_ping"] {
        let req = Request::get(uri).body(Body::empty())?;
        let resp = api.app.clone().oneshot(req).await?;
        assert_eq!(resp.status(), StatusCode::OK, "{uri}");
        assert_eq!(resp.headers()["API-Version"], "1.41");
        assert_eq!(resp.headers()["OSType"], "linux");
        let body = resp.into_body().collect().await?.to_bytes();
        assert_eq!(&body[..], b"OK");
    }
    let req = Request::head("/_ping").body(Body::empty())?;
    assert_eq!(api.app.clone().oneshot(req).await?.status(), StatusCode::OK);
    let (status, v) = api.get("/v1.41/version").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["ApiVersion"], "1.41");
    assert_eq!(v["Os"], "linux");
    assert!(v["Version"].is_string());
    // /info says where the local store is and that it answers (no cluster store here).
    let (status, v) = api.get("/info").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["PlexusStore"]["Status"], "ok", "{v}");
    assert!(v["PlexusStore"]["URL"].is_string(), "{v}");
    assert!(v.get("PlexusClusterStore").is_none(), "{v}");
    let (status, v) = api.get("/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message(&v).contains("/nope"));
    Ok(())
}

#[tokio::test]
async fn network_create_inspect_list_delete_shapes() -> anyhow::Result<()> {
    let api = api().await?;
    let (status, created) = api
        .post(
            "/v1.41/networks/create",
            json!({
                "Name": "n1", "Driver": "bridge", "CheckDuplicate": true,
                "Internal": true, "Attachable": true,
                "IPAM": {"Driver": "default", "Config": [{
                    "Subnet": "172.28.0.0/16", "IPRange": "172.28.5.0/24",
                    "Gateway": "172.28.5.254", "AuxiliaryAddresses": {"host1": "172.28.1.5"}
                }], "Options": {"foo": "bar"}},
                "Options": {"com.docker.network.bridge.name": "br-n1"},
                "Labels": {"env": "test"}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["Id"].as_str().unwrap_or_default().to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(created["Warning"], "");

    let (status, n) = api.get(&format!("/networks/{}", &id[..12])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(n["Name"], "n1");
    assert_eq!(n["Id"], id.as_str());
    assert_eq!(n["Scope"], "local");
    assert_eq!(n["Driver"], "bridge");
    assert_eq!(n["EnableIPv6"], false);
    assert_eq!(n["Internal"], true);
    assert_eq!(n["Attachable"], true);
    assert_eq!(n["Ingress"], false);
    assert_eq!(n["ConfigOnly"], false);
    assert_eq!(n["ConfigFrom"], json!({"Network": ""}));
    assert_eq!(n["Containers"], json!({}));
    assert_eq!(
        n["Options"],
        json!({"com.docker.network.bridge.name": "br-n1"})
    );
    assert_eq!(n["Labels"], json!({"env": "test"}));
    assert_eq!(n["IPAM"]["Driver"], "default");
    assert_eq!(n["IPAM"]["Options"], json!({"foo": "bar"}));
    assert_eq!(
        n["IPAM"]["Config"],
        json!([{"Subnet": "172.28.0.0/16", "IPRange": "172.28.5.0/24",
                "Gateway": "172.28.5.254", "AuxiliaryAddresses": {"host1": "172.28.1.5"}}])
    );
    assert!(n["Created"].as_str().unwrap_or("").ends_with('Z'));

    // By name, without prefix.
    let (status, n2) = api.get("/networks/n1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(n2["Id"], id.as_str());

    // A second network from the default pool.
    let (status, _) = api
        .post(
            "/networks/create",
            json!({"Name": "n2", "Labels": {"env": "prod"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, n2) = api.get("/networks/n2").await;
    assert_eq!(n2["Driver"], "bridge", "empty driver means bridge");
    let subnet = n2["IPAM"]["Config"][0]["Subnet"].as_str().unwrap_or("");
    assert!(subnet.starts_with("10.123."), "{subnet}");
    assert_eq!(
        n2["IPAM"]["Config"][0]["Gateway"],
        subnet.replace(".0/24", ".1")
    );

    let (status, all) = api.get("/networks").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = all
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["Name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["n1", "n2"]);

    let filtered = |f: Value| {
        let q = format!("/networks?filters={}", urlencode(&f.to_string()));
        let api = &api;
        async move {
            let (status, v) = api.get(&q).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|n| n["Name"].as_str().map(str::to_string))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        }
    };
    assert_eq!(filtered(json!({"name": {"n1": true}})).await, vec!["n1"]);
    assert_eq!(filtered(json!({"name": ["n2"]})).await, vec!["n2"]);
    assert_eq!(filtered(json!({"id": [&id[..10]]})).await, vec!["n1"]);
    assert_eq!(filtered(json!({"driver": ["bridge"]})).await.len(), 2);
    assert_eq!(filtered(json!({"driver": ["null"]})).await.len(), 0);
    assert_eq!(filtered(json!({"label": ["env=prod"]})).await, vec!["n2"]);
    assert_eq!(filtered(json!({"label": ["env"]})).await.len(), 2);
    assert_eq!(
        filtered(json!({"label": ["env"], "name": ["n1"]})).await,
        vec!["n1"]
    );
    let (status, v) = api
        .get(&format!(
            "/networks?filters={}",
            urlencode(r#"{"bogus":["x"]}"#)
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&v).contains("bogus"));

    let (status, v) = api.delete(&format!("/v1.41/networks/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{v}");
    let (status, v) = api.get("/networks/n1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(message(&v), "network n1 not found");
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn network_bad_inputs() -> anyhow::Result<()> {
    let api = api().await?;
    let cases = [
        (
            json!({"Name": "x", "Driver": "warp"}),
            StatusCode::BAD_REQUEST,
            "unknown driver \"warp\"",
        ),
        (
            json!({"Name": "x", "IPAM": {"Config": [{"Subnet": "10.0.0.0/33"}]}}),
            StatusCode::BAD_REQUEST,
            "10.0.0.0/33",
        ),
        (
            json!({"Name": "x", "IPAM": {"Config": [{"Subnet": "banana"}]}}),
            StatusCode::BAD_REQUEST,
            "banana",
        ),
        (
            json!({"Name": "-bad"}),
            StatusCode::BAD_REQUEST,
            "network name",
        ),
        (json!({"Name": ""}), StatusCode::BAD_REQUEST, "network name"),
        (
            json!({"Name": "x", "Options": {"nope": "1"}}),
            StatusCode::BAD_REQUEST,
            "nope",
        ),
        (
            json!({"Name": "x", "IPAM": {"Driver": "dhcp"}}),
            StatusCode::BAD_REQUEST,
            "IPAM.Driver",
        ),
        (
            json!({"Name": "x", "Ingress": true}),
            StatusCode::BAD_REQUEST,
            "Ingress",
        ),
        (json!({"Name": 5}), StatusCode::BAD_REQUEST, "Name"),
        (
            json!({"Name": "x", "IPAM": {"Config": [{"Subnet": 7}]}}),
            StatusCode::BAD_REQUEST,
            "IPAM.Config[0].Subnet",
        ),
        (
            json!({"Name": "x", "Internal": "yes"}),
            StatusCode::BAD_REQUEST,
            "Internal",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, v) = api.post("/networks/create", body.clone()).await;
        assert_eq!(got, status, "{body} -> {v}");
        assert!(
            message(&v).contains(needle),
            "{body}: {:?} lacks {needle:?}",
            message(&v)
        );
    }
    let (got, v) = api
        .call(Method::POST, "/networks/create", Some("{\"Name\": "))
        .await;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    assert!(message(&v).starts_with("invalid JSON"), "{v}");
    let (got, v) = api.call(Method::POST, "/networks/create", None).await;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    assert!(message(&v).contains("empty"), "{v}");

    // Nothing half-made stayed: the failed requests left no network.
    let (_, all) = api.get("/networks").await;
    assert_eq!(all, json!([]));

    let (got, _) = api.post("/networks/create", json!({"Name": "dup"})).await;
    assert_eq!(got, StatusCode::CREATED);
    let (got, v) = api.post("/networks/create", json!({"Name": "dup"})).await;
    assert_eq!(got, StatusCode::CONFLICT);
    assert_eq!(message(&v), "network with name dup already exists");

    let (got, _) = api
        .post(
            "/networks/create",
            json!({"Name": "none", "Driver": "null"}),
        )
        .await;
    assert_eq!(got, StatusCode::CREATED);
    let (got, v) = api
        .post(
            "/networks/create",
            json!({"Name": "none2", "Driver": "null"}),
        )
        .await;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    assert!(message(&v).contains("only one instance"), "{v}");
    let (_, none) = api.get("/networks/none").await;
    assert_eq!(none["IPAM"]["Config"], json!([]));

    for (method, uri) in [
        (Method::GET, "/networks/ghost"),
        (Method::DELETE, "/networks/ghost"),
        (Method::GET, "/plexus/sandboxes/ghost"),
        (Method::DELETE, "/plexus/sandboxes/ghost"),
    ] {
        let (got, v) = api.call(method.clone(), uri, None).await;
        assert_eq!(got, StatusCode::NOT_FOUND, "{method} {uri}");
        assert!(message(&v).contains("ghost not found"), "{v}");
    }
    let (got, v) = api
        .post("/networks/ghost/connect", json!({"Container": "s"}))
        .await;
    assert_eq!(got, StatusCode::NOT_FOUND, "{v}");
    Ok(())
}

#[tokio::test]
async fn connect_disconnect_and_delete_in_use() -> anyhow::Result<()> {
    let api = api().await?;
    let (got, _) = api
        .post(
            "/networks/create",
            json!({"Name": "net", "IPAM": {"Config": [{"Subnet": "192.168.77.0/24"}]}}),
        )
        .await;
    assert_eq!(got, StatusCode::CREATED);
    let (got, sb) = api.post("/plexus/sandboxes", json!({"Name": "web"})).await;
    assert_eq!(got, StatusCode::CREATED, "{sb}");
    assert_eq!(sb["Endpoints"], json!([]));
    assert_eq!(sb["OwnedNetNs"], true);
    let sandbox_id = sb["Id"].as_str().unwrap_or("").to_string();

    let (got, v) = api
        .post(
            "/v1.41/networks/net/connect",
            json!({"Container": "web", "EndpointConfig": {
                "IPAMConfig": {"IPv4Address": "192.168.77.10"}, "Aliases": ["www"]}}),
        )
        .await;
    assert_eq!(got, StatusCode::OK, "{v}");
    let (_, n) = api.get("/networks/net").await;
    let c = &n["Containers"][&sandbox_id];
    assert_eq!(c["Name"], "web");
    assert_eq!(c["IPv4Address"], "192.168.77.10/24");
    assert_eq!(c["IPv6Address"], "");
    assert_eq!(c["MacAddress"], "02:42:ac:11:00:02");
    assert_eq!(c["EndpointID"].as_str().map(str::len), Some(64));

    let (got, v) = api
        .post("/networks/net/connect", json!({"Container": "web"}))
        .await;
    assert_eq!(got, StatusCode::CONFLICT, "{v}");
    let (got, v) = api
        .post("/networks/net/connect", json!({"Container": "nobody"}))
        .await;
    assert_eq!(got, StatusCode::NOT_FOUND);
    assert!(message(&v).contains("sandbox nobody"), "{v}");
    let (got, v) = api.post("/networks/net/connect", json!({})).await;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    assert!(message(&v).contains("Container"), "{v}");

    let (got, v) = api.delete("/networks/net").await;
    assert_eq!(got, StatusCode::CONFLICT);
    assert!(message(&v).contains("sandbox web"), "{v}");
    let (got, v) = api.post("/networks/prune", json!({})).await;
    assert_eq!(got, StatusCode::OK);
    assert_eq!(v, json!({"NetworksDeleted": []}));

    let (_, sb) = api.get("/plexus/sandboxes/web").await;
    let ep = &sb["Endpoints"][0];
    assert_eq!(ep["Network"], "net");
    assert_eq!(ep["Interface"], "eth0");
    assert_eq!(ep["Aliases"], json!(["www"]));

    let (got, v) = api
        .post(
            "/networks/net/disconnect",
            json!({"Container": "web", "Force": false}),
        )
        .await;
    assert_eq!(got, StatusCode::OK, "{v}");
    let (got, _) = api
        .post("/networks/net/disconnect", json!({"Container": "web"}))
        .await;
    assert_eq!(got, StatusCode::NOT_FOUND);
    let (_, n) = api.get("/networks/net").await;
    assert_eq!(n["Containers"], json!({}));

    let (got, v) = api.post("/networks/prune", json!({})).await;
    assert_eq!(got, StatusCode::OK);
    assert_eq!(v, json!({"NetworksDeleted": ["net"]}));
    Ok(())
}

#[tokio::test]
async fn sandboxes_create_list_inspect_delete() -> anyhow::Result<()> {
    let api = api().await?;
    api.post(
        "/networks/create",
        json!({"Name": "a", "IPAM": {"Config": [{"Subnet": "10.50.0.0/24"}]}}),
    )
    .await;
    api.post("/networks/create", json!({"Name": "b"})).await;
    let (got, sb) = api
        .post(
            "/plexus/sandboxes",
            json!({"Name": "s1",
                   "Networks": [{"Name": "a", "IPv4Address": "10.50.0.9", "Aliases": ["x"]}, {"Name": "b"}],
                   "Ports": ["8080:80", "53/udp"]}),
        )
        .await;
    assert_eq!(got, StatusCode::CREATED, "{sb}");
    assert_eq!(sb["Name"], "s1");
    let netns = sb["NetNs"].as_str().unwrap_or("").to_string();
    assert!(std::path::Path::new(&netns).exists());
    assert!(netns.starts_with(&api.dir.path().display().to_string()));
    assert_eq!(sb["Endpoints"][0]["IPv4Address"], "10.50.0.9/24");
    assert_eq!(
        sb["Endpoints"][0]["Ports"],
        json!([
            {"Proto": "tcp", "ContainerPort": 80, "HostIP": "", "HostPort": 8080},
            {"Proto": "udp", "ContainerPort": 53, "HostIP": "", "HostPort": 49153}
        ])
    );
    assert_eq!(sb["Endpoints"][1]["Network"], "b");
    assert_eq!(sb["Endpoints"][1]["Ports"], json!([]));

    // A handed-over namespace is not Plexus's to delete.
    let given = api.dir.path().join("given");
    std::fs::write(&given, b"")?;
    let (got, sb2) = api
        .post(
            "/plexus/sandboxes",
            json!({"Name": "s2", "NetNs": given.display().to_string()}),
        )
        .await;
    assert_eq!(got, StatusCode::CREATED, "{sb2}");
    assert_eq!(sb2["OwnedNetNs"], false);

    let (_, all) = api.get("/plexus/sandboxes").await;
    assert_eq!(all.as_array().map(Vec::len), Some(2));
    assert_eq!(all[0]["Name"], "s1");

    // Bad input: clash, missing netns, bad port, unknown network, bad name — nothing made.
    let cases = [
        (
            json!({"Name": "s1"}),
            StatusCode::CONFLICT,
            "sandbox with name s1 already exists",
        ),
        (
            json!({"Name": "s3", "NetNs": "/nonexistent/netns"}),
            StatusCode::BAD_REQUEST,
            "/nonexistent/netns",
        ),
        (
            json!({"Name": "s3", "Networks": [{"Name": "a"}], "Ports": ["x:80"]}),
            StatusCode::BAD_REQUEST,
            "Ports",
        ),
        (
            json!({"Name": "s3", "Ports": ["80"]}),
            StatusCode::BAD_REQUEST,
            "needs a network",
        ),
        (
            json!({"Name": "s3", "Networks": [{"Name": "zzz"}]}),
            StatusCode::NOT_FOUND,
            "network zzz",
        ),
        (
            json!({"Name": "s3", "Networks": [{"Name": "a", "IPv4Address": "10.50.0.9"}]}),
            StatusCode::CONFLICT,
            "10.50.0.9",
        ),
        (
            json!({"Name": "s 3"}),
            StatusCode::BAD_REQUEST,
            "sandbox name",
        ),
        (
            json!({"Name": "s3", "Networks": [{}]}),
            StatusCode::BAD_REQUEST,
            "Networks[0].Name",
        ),
        (
            json!({"Name": "s3", "Networks": "a"}),
            StatusCode::BAD_REQUEST,
            "Networks",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, v) = api.post("/plexus/sandboxes", body.clone()).await;
        assert_eq!(got, status, "{body} -> {v}");
        assert!(
            message(&v).contains(needle),
            "{body}: {:?} lacks {needle:?}",
            message(&v)
        );
    }
    assert!(
        !api.dir.path().join("s3").exists(),
        "undo removed the namespace"
    );
    let (_, all) = api.get("/plexus/sandboxes").await;
    assert_eq!(all.as_array().map(Vec::len), Some(2));

    let (got, _) = api.delete("/plexus/sandboxes/s1").await;
    assert_eq!(got, StatusCode::NO_CONTENT);
    assert!(
        !std::path::Path::new(&netns).exists(),
        "owned namespace removed"
    );
    let (got, _) = api.delete("/plexus/sandboxes/s2").await;
    assert_eq!(got, StatusCode::NO_CONTENT);
    assert!(given.exists(), "given namespace kept");
    // The address is free again.
    let (got, v) = api
        .post(
            "/plexus/sandboxes",
            json!({"Name": "s4", "Networks": [{"Name": "a", "IPv4Address": "10.50.0.9"}]}),
        )
        .await;
    assert_eq!(got, StatusCode::CREATED, "{v}");
    Ok(())
}
