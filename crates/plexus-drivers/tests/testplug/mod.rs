//! `testplug`: a Docker plugin written for the tests, serving both `NetworkDriver` and
//! `IpamDriver` on a unix socket, as a real plugin process would.
//!
//! Networks are Linux bridges `tpb<network id>` with the pool's gateway; an endpoint is a
//! veth pair made at `CreateEndpoint`: `tph<endpoint id>` on the bridge and `tpc<endpoint id>`,
//! which `Join` names for the daemon to move into the sandbox (prefix `eth`, the network's
//! gateway, a static route to `10.99.0.0/16` through it). It makes links with `ip` in the
//! namespace it runs in. Addresses are leases, one file per address in `<dir>/leases`, so
//! the plugin's state outlives the process (a killed and restarted plugin goes on) and a
//! test can see what is allocated. Every call is appended to `<dir>/calls`. As libnetwork
//! promises a plugin, the sandbox end must be back in the plugin's namespace under its
//! `SrcName` by `DeleteEndpoint`; one that is not is written to `<dir>/strays`.
//!
//! A test makes it misbehave by writing `<call>:<how>` lines to `<dir>/mode`
//! (`Join:garbage`, `CreateEndpoint:error`, `Join:hang`): `garbage` answers JSON of the
//! wrong shape, `error` answers `{"Err": …}`, `hang` never answers.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// The static route the plugin's joins give.
pub const STATIC_ROUTE: &str = "10.99.0.0/16";

/// The bridge of a network.
pub fn bridge_name(network_id: &str) -> String {
    format!("tpb{}", short(network_id))
}

/// The host end of an endpoint's veth pair.
pub fn host_end(endpoint_id: &str) -> String {
    format!("tph{}", short(endpoint_id))
}

/// The end that goes into the sandbox (the Join's `SrcName`).
pub fn sandbox_end(endpoint_id: &str) -> String {
    format!("tpc{}", short(endpoint_id))
}

fn short(id: &str) -> String {
    id.chars().take(10).collect()
}

/// The addresses leased, as the lease files say.
pub fn leases(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir.join("leases"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The sandbox ends that were not back under their `SrcName` at `DeleteEndpoint`.
pub fn strays(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("strays"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The calls the plugin was asked, in order.
pub fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Makes `call` misbehave (`garbage`, `error`, `hang`); `None`: every call behaves.
pub fn set_mode(dir: &Path, mode: Option<&str>) {
    let _ = std::fs::write(dir.join("mode"), mode.unwrap_or(""));
}

/// Serves plugin requests on `socket` (removed first if stale) with state in `dir`, until
/// the process is killed.
pub async fn serve(socket: &Path, dir: PathBuf) -> std::io::Result<()> {
    let _ = std::fs::remove_file(socket);
    std::fs::create_dir_all(dir.join("leases"))?;
    let listener = UnixListener::bind(socket)?;
    loop {
        let (s, _) = listener.accept().await?;
        let dir = dir.clone();
        tokio::spawn(async move {
            let _ = handle(s, &dir).await;
        });
    }
}

async fn handle(mut s: UnixStream, dir: &Path) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, len) = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= p + 4 + len {
                break (p + 4, len);
            }
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    let body: Value = serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or(Value::Null);
    let call = path.rsplit('.').next().unwrap_or("").to_string();
    append(&dir.join("calls"), &path);
    let mode = std::fs::read_to_string(dir.join("mode")).unwrap_or_default();
    let how = mode.lines().find_map(|l| {
        let (c, how) = l.split_once(':')?;
        (c == call).then(|| how.trim().to_string())
    });
    let reply = match how.as_deref() {
        Some("hang") => {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            return Ok(());
        }
        Some("error") => json!({ "Err": format!("testplug refuses {call}") }),
        Some("garbage") => json!({
            "InterfaceName": "not an object",
            "Interface": 7,
            "PoolID": [],
            "Address": {},
            "Scope": 1,
        }),
        _ => answer(&path, &body, dir),
    };
    let text = reply.to_string();
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\n\r\n{text}",
        text.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}

fn append(file: &Path, line: &str) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Runs `ip` with `args`; the error is its stderr.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn err(e: String) -> Value {
    json!({ "Err": e })
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn answer(path: &str, body: &Value, dir: &Path) -> Value {
    let leases = dir.join("leases");
    match path {
        "/Plugin.Activate" => json!({ "Implements": ["NetworkDriver", "IpamDriver"] }),
        "/NetworkDriver.GetCapabilities" => {
            json!({ "Scope": "local", "ConnectivityScope": "local" })
        }
        "/NetworkDriver.CreateNetwork" => {
            let br = bridge_name(s(body, "NetworkID"));
            let gw = s(&body["IPv4Data"][0], "Gateway").to_string();
            let made = ip(&["link", "add", &br, "type", "bridge"])
                .and_then(|_| {
                    if gw.is_empty() {
                        Ok(())
                    } else {
                        ip(&["addr", "add", &gw, "dev", &br])
                    }
                })
                .and_then(|_| ip(&["link", "set", &br, "up"]));
            match made {
                Ok(()) => {
                    let gw = gw.split('/').next().unwrap_or("").to_string();
                    let _ = std::fs::write(dir.join(format!("gw-{br}")), gw);
                    json!({})
                }
                Err(e) => {
                    let _ = ip(&["link", "del", &br]);
                    err(e)
                }
            }
        }
        "/NetworkDriver.DeleteNetwork" => {
            let br = bridge_name(s(body, "NetworkID"));
            let _ = ip(&["link", "del", &br]);
            let _ = std::fs::remove_file(dir.join(format!("gw-{br}")));
            json!({})
        }
        "/NetworkDriver.CreateEndpoint" => {
            let (nid, eid) = (s(body, "NetworkID"), s(body, "EndpointID"));
            let (h, c) = (host_end(eid), sandbox_end(eid));
            let made = ip(&["link", "add", &h, "type", "veth", "peer", "name", &c])
                .and_then(|_| ip(&["link", "set", &h, "master", &bridge_name(nid)]))
                .and_then(|_| ip(&["link", "set", &h, "up"]));
            if let Err(e) = made {
                let _ = ip(&["link", "del", &h]);
                return err(e);
            }
            if s(&body["Interface"], "MacAddress").is_empty() {
                // A MAC of the plugin's own, which the daemon must honor.
                let b = eid.as_bytes();
                let hex = |i: usize| {
                    u8::from_str_radix(std::str::from_utf8(&b[i..i + 2]).unwrap_or("00"), 16)
                        .unwrap_or(0)
                };
                let mac = format!(
                    "02:54:{:02x}:{:02x}:{:02x}:{:02x}",
                    hex(0),
                    hex(2),
                    hex(4),
                    hex(6)
                );
                json!({ "Interface": { "MacAddress": mac } })
            } else {
                json!({})
            }
        }
        "/NetworkDriver.DeleteEndpoint" => {
            let eid = s(body, "EndpointID");
            if ip(&["link", "show", &sandbox_end(eid)]).is_err() {
                use std::io::Write;
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("strays"))
                {
                    let _ = writeln!(f, "{}", sandbox_end(eid));
                }
            }
            let _ = ip(&["link", "del", &host_end(eid)]);
            json!({})
        }
        "/NetworkDriver.Join" => {
            let (nid, eid) = (s(body, "NetworkID"), s(body, "EndpointID"));
            let gw = std::fs::read_to_string(dir.join(format!("gw-{}", bridge_name(nid))))
                .unwrap_or_default();
            let mut reply = json!({
                "InterfaceName": { "SrcName": sandbox_end(eid), "DstPrefix": "eth" },
                "Gateway": gw,
            });
            if !gw.is_empty() {
                reply["StaticRoutes"] =
                    json!([{ "Destination": STATIC_ROUTE, "RouteType": 0, "NextHop": gw }]);
            }
            reply
        }
        "/NetworkDriver.EndpointOperInfo" => json!({ "Value": { "testplug": true } }),
        "/NetworkDriver.Leave"
        | "/NetworkDriver.ProgramExternalConnectivity"
        | "/NetworkDriver.RevokeExternalConnectivity"
        | "/NetworkDriver.DiscoverNew"
        | "/NetworkDriver.DiscoverDelete" => json!({}),
        "/IpamDriver.GetCapabilities" => json!({ "RequiresMACAddress": false }),
        "/IpamDriver.GetDefaultAddressSpaces" => json!({
            "LocalDefaultAddressSpace": "tplocal",
            "GlobalDefaultAddressSpace": "tpglobal",
        }),
        "/IpamDriver.RequestPool" => {
            let pool = match s(body, "Pool") {
                "" => "10.123.0.0/24",
                p => p,
            };
            if s(body, "AddressSpace") != "tplocal" {
                return err(format!(
                    "unknown address space {:?}",
                    s(body, "AddressSpace")
                ));
            }
            json!({ "PoolID": format!("tp:{pool}"), "Pool": pool, "Data": {} })
        }
        "/IpamDriver.ReleasePool" => {
            // Every lease of the pool goes with it (the gateway's too).
            let pool = s(body, "PoolID").trim_start_matches("tp:");
            if let Some((base, prefix)) = pool.split_once('/') {
                if let (Ok(base), Ok(prefix)) = (base.parse::<Ipv4Addr>(), prefix.parse::<u32>()) {
                    let mask = u32::MAX.checked_shl(32 - prefix.min(32)).unwrap_or(0);
                    for a in self::leases(dir) {
                        if let Ok(ip) = a.parse::<Ipv4Addr>() {
                            if u32::from(ip) & mask == u32::from(base) & mask {
                                let _ = std::fs::remove_file(leases.join(&a));
                            }
                        }
                    }
                }
            }
            json!({})
        }
        "/IpamDriver.RequestAddress" => {
            let pool = s(body, "PoolID").trim_start_matches("tp:");
            let Some((base, prefix)) = pool.split_once('/') else {
                return err(format!("unknown pool {pool:?}"));
            };
            let Ok(base) = base.parse::<Ipv4Addr>() else {
                return err(format!("unknown pool {pool:?}"));
            };
            let want = s(body, "Address");
            let gateway = body["Options"]["RequestAddressType"] == "com.docker.network.gateway";
            let pick = if !want.is_empty() {
                want.to_string()
            } else {
                let first = if gateway { 1 } else { 2 };
                let b = u32::from(base);
                match (first..254)
                    .map(|i| Ipv4Addr::from(b + i).to_string())
                    .find(|a| !leases.join(a).exists())
                {
                    Some(a) => a,
                    None => return err("pool exhausted".into()),
                }
            };
            if leases.join(&pick).exists() {
                return err(format!("{pick} is leased"));
            }
            let _ = std::fs::write(leases.join(&pick), "");
            json!({ "Address": format!("{pick}/{prefix}"), "Data": {} })
        }
        "/IpamDriver.ReleaseAddress" => {
            let a = s(body, "Address");
            match std::fs::remove_file(leases.join(a)) {
                Ok(()) => json!({}),
                Err(_) => err(format!("{a} is not leased")),
            }
        }
        _ => err(format!("unknown call {path}")),
    }
}
