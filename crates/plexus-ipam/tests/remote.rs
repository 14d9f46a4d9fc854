//! The remote IPAM client against a small plugin server speaking Docker's protocol on a unix
//! socket.

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use plexus_ipam::remote::{discover, PluginAddr, PluginDirs, RemoteIpam};
use plexus_ipam::{AddressRequest, Ipam, IpamError, PoolRequest};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

type Log = Arc<Mutex<Vec<(String, Value)>>>;

/// A DHCP-like plugin: one pool per request, addresses handed out in order, MAC required.
fn serve(path: &Path, implements: &'static str) -> Log {
    let listener = UnixListener::bind(path).unwrap();
    let log: Log = Arc::default();
    let state = Arc::new(Mutex::new((2u8, Vec::<String>::new())));
    let log2 = log.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let log = log2.clone();
            let state = state.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, len) = loop {
                    let n = s.read(&mut chunk).await.unwrap();
                    assert!(n > 0, "client closed early");
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..p]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse::<usize>().unwrap())
                            .unwrap_or(0);
                        if buf.len() >= p + 4 + len {
                            break (p + 4, len);
                        }
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let path = head.split_whitespace().nth(1).unwrap().to_string();
                let body: Value =
                    serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
                log.lock().unwrap().push((path.clone(), body.clone()));
                let reply = match path.as_str() {
                    "/Plugin.Activate" => json!({ "Implements": [implements] }),
                    "/IpamDriver.GetCapabilities" => {
                        json!({ "RequiresMACAddress": true, "RequiresRequestReplay": false })
                    }
                    "/IpamDriver.GetDefaultAddressSpaces" => json!({
                        "LocalDefaultAddressSpace": "dhcp-local",
                        "GlobalDefaultAddressSpace": "dhcp-global"
                    }),
                    "/IpamDriver.RequestPool" => {
                        let pool = body["Pool"].as_str().unwrap_or("");
                        let pool = if pool.is_empty() {
                            "10.30.0.0/24"
                        } else {
                            pool
                        };
                        json!({ "PoolID": format!("dhcp/{pool}"), "Pool": pool, "Data": {} })
                    }
                    "/IpamDriver.RequestAddress" => {
                        let mut st = state.lock().unwrap();
                        let want = body["Address"].as_str().unwrap_or("").to_string();
                        if want == "10.30.0.99" {
                            json!({ "Err": "10.30.0.99 is taken by a DHCP lease" })
                        } else if want.is_empty() {
                            let a = format!("10.30.0.{}", st.0);
                            st.0 += 1;
                            st.1.push(a.clone());
                            json!({ "Address": format!("{a}/24"), "Data": {} })
                        } else {
                            st.1.push(want.clone());
                            json!({ "Address": format!("{want}/24") })
                        }
                    }
                    "/IpamDriver.ReleaseAddress" => {
                        let mut st = state.lock().unwrap();
                        let a = body["Address"].as_str().unwrap_or("").to_string();
                        match st.1.iter().position(|x| *x == a) {
                            Some(i) => {
                                st.1.remove(i);
                                json!({})
                            }
                            None => json!({ "Err": format!("{a} is not leased") }),
                        }
                    }
                    "/IpamDriver.ReleasePool" => json!({}),
                    _ => json!({ "Err": "unknown call" }),
                };
                let body = reply.to_string();
                let resp = if path == "/IpamDriver.GetDefaultAddressSpaces" {
                    // Chunked, as Go's net/http sends larger or flushed answers.
                    let (a, b) = body.split_at(body.len() / 2);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                        a.len(),
                        b.len()
                    )
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                };
                s.write_all(resp.as_bytes()).await.unwrap();
                s.shutdown().await.ok();
            });
        }
    });
    log
}

fn calls(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|(p, _)| p.clone()).collect()
}

#[tokio::test]
async fn remote_ipam_speaks_dockers_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let log = serve(&dir.path().join("dhcp.sock"), "IpamDriver");
    let dirs = PluginDirs::single(dir.path());
    let ipam = RemoteIpam::connect("dhcp", &dirs).await.unwrap();
    assert_eq!(
        calls(&log),
        ["/Plugin.Activate", "/IpamDriver.GetCapabilities"]
    );
    assert!(ipam.capabilities().await.unwrap().requires_mac_address);
    let spaces = ipam.default_address_spaces().await.unwrap();
    assert_eq!(spaces.local, "dhcp-local");
    assert_eq!(spaces.global, "dhcp-global");

    let pool = ipam
        .request_pool(
            PoolRequest::new("dhcp-local", "net1")
                .aux("router2", "10.30.0.50")
                .option("foo", "bar"),
        )
        .await
        .unwrap();
    assert_eq!(pool.pool_id, "dhcp/10.30.0.0/24");
    assert_eq!(pool.gateway.unwrap().to_string(), "10.30.0.2/24");
    assert_eq!(
        pool.aux_addresses["router2"],
        "10.30.0.50".parse::<IpAddr>().unwrap()
    );
    let entries = log.lock().unwrap().clone();
    let (_, req) = entries
        .iter()
        .find(|(p, _)| p == "/IpamDriver.RequestPool")
        .unwrap();
    assert_eq!(req["AddressSpace"], "dhcp-local");
    assert_eq!(req["Options"]["foo"], "bar");
    assert_eq!(req["V6"], false);
    let gw = entries
        .iter()
        .find(|(p, _)| p == "/IpamDriver.RequestAddress")
        .unwrap();
    assert_eq!(
        gw.1["Options"]["RequestAddressType"],
        "com.docker.network.gateway"
    );

    // RequiresMACAddress: the MAC goes with every address request, and is required.
    let mut req = AddressRequest::next(&pool.pool_id);
    let err = ipam.request_address(req.clone()).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("requires the endpoint's MAC address"),
        "{err}"
    );
    req.mac_address = Some("02:42:ac:11:00:02".into());
    let a = ipam.request_address(req.clone()).await.unwrap();
    assert_eq!(a.address.to_string(), "10.30.0.3/24");
    let last = log.lock().unwrap().last().unwrap().1.clone();
    assert_eq!(
        last["Options"]["com.docker.network.endpoint.macaddress"],
        "02:42:ac:11:00:02"
    );

    // The plugin's own errors come back named.
    req.address = Some("10.30.0.99".into());
    let err = ipam.request_address(req).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "IPAM plugin \"dhcp\": /IpamDriver.RequestAddress: 10.30.0.99 is taken by a DHCP lease"
    );
    ipam.release_address(&pool.pool_id, a.address.addr())
        .await
        .unwrap();
    let err = ipam
        .release_address(&pool.pool_id, a.address.addr())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not leased"), "{err}");
    ipam.release_pool(&pool.pool_id).await.unwrap();
}

#[tokio::test]
async fn a_failed_pool_request_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let log = serve(&dir.path().join("dhcp.sock"), "IpamDriver");
    let ipam = RemoteIpam::connect("dhcp", &PluginDirs::single(dir.path()))
        .await
        .unwrap();
    let err = ipam
        .request_pool(PoolRequest::new("", "n").aux("bad", "10.30.0.99"))
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::Plugin { .. }), "{err}");
    let c = calls(&log);
    // The gateway it got is released, then the pool.
    assert_eq!(
        &c[c.len() - 2..],
        ["/IpamDriver.ReleaseAddress", "/IpamDriver.ReleasePool"]
    );
    let err = ipam
        .request_pool(
            PoolRequest::new("", "n")
                .subnet("10.30.0.0/24")
                .gateway("10.31.0.1"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "gateway 10.31.0.1 is outside the subnet 10.30.0.0/24"
    );
    let err = ipam
        .request_pool(PoolRequest::new("", "n").subnet("10.30.0/24"))
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("invalid subnet"), "{err}");
}

#[tokio::test]
async fn discovery_by_spec_and_json_files() {
    let dir = tempfile::tempdir().unwrap();
    let sockets = dir.path().join("run");
    let specs = dir.path().join("etc");
    std::fs::create_dir_all(&sockets).unwrap();
    std::fs::create_dir_all(&specs).unwrap();
    let sock = sockets.join("elsewhere.sock");
    let _log = serve(&sock, "IpamDriver");
    std::fs::write(
        specs.join("viaspec.spec"),
        format!("unix://{}\n", sock.display()),
    )
    .unwrap();
    std::fs::write(
        specs.join("viajson.json"),
        json!({ "Name": "viajson", "Addr": format!("unix://{}", sock.display()) }).to_string(),
    )
    .unwrap();
    let dirs = PluginDirs {
        socket_dirs: vec![sockets.clone()],
        spec_dirs: vec![specs.clone()],
    };
    assert_eq!(
        discover("viaspec", &dirs).unwrap(),
        PluginAddr::Unix(sock.clone())
    );
    assert_eq!(
        discover("viajson", &dirs).unwrap(),
        PluginAddr::Unix(sock.clone())
    );
    RemoteIpam::connect("viajson", &dirs).await.unwrap();
    let err = discover("nothere", &dirs).unwrap_err();
    assert!(err.to_string().contains("nothere.sock"), "{err}");

    // A plugin that is not an IPAM driver is refused at activation.
    let other = sockets.join("netdrv.sock");
    let _log = serve(&other, "NetworkDriver");
    let err = RemoteIpam::connect("netdrv", &dirs).await.unwrap_err();
    assert!(err.to_string().contains("not IpamDriver"), "{err}");
}
