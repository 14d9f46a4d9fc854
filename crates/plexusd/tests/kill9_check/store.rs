//! The store, read directly after a clean stop: IPAM pools and addresses against the network,
//! endpoint and sandbox records.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::text;

pub fn store_leaks(url: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let store = plexus_kv::open(url, plexus_kv::OpenOptions::default())
            .await
            .unwrap_or_else(|e| panic!("opening {url}: {e}"));
        let list = |dir: &'static str| {
            let store = store.clone();
            async move {
                store
                    .list(dir)
                    .await
                    .unwrap_or_else(|e| panic!("listing {dir}: {e}"))
            }
        };
        let decode = |v: &[u8]| -> Value { serde_json::from_slice(v).unwrap_or(Value::Null) };
        let mut bad = Vec::new();
        // Records: networks, their endpoints, sandboxes.
        let mut nets: BTreeMap<String, Value> = BTreeMap::new();
        for p in list("plexus/v1/network").await {
            let n = decode(&p.value);
            nets.insert(text(&n["id"]), n);
        }
        let mut sandboxes: BTreeMap<String, Value> = BTreeMap::new();
        for p in list("plexus/v1/sandbox").await {
            let s = decode(&p.value);
            sandboxes.insert(text(&s["id"]), s);
        }
        // pool id → addresses endpoints hold.
        let mut held: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for p in list("plexus/v1/endpoint").await {
            let e = decode(&p.value);
            let (net, id) = (text(&e["network_id"]), text(&e["id"]));
            if !nets.contains_key(&net) {
                bad.push(format!("endpoint record {} of a missing network", p.key));
            }
            let listed = sandboxes
                .get(&text(&e["sandbox_id"]))
                .and_then(|s| s["endpoints"].as_array())
                .is_some_and(|l| l.iter().any(|x| text(x) == id));
            if !listed {
                bad.push(format!(
                    "endpoint record {} that its sandbox does not list",
                    p.key
                ));
            }
            let pools = e["pool_ids"].as_array().cloned().unwrap_or_default();
            for (pool, addr) in pools.iter().zip([&e["ipv4"], &e["ipv6"]].into_iter().filter(|a| !a.is_null())) {
                let ip = text(addr).split('/').next().unwrap_or_default().to_string();
                held.entry(text(pool)).or_default().insert(ip);
            }
        }
        // pool id → (subnet key part, gateway and aux addresses).
        let mut pools: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for n in nets.values() {
            for p in n["ipv4"]
                .as_array()
                .into_iter()
                .chain(n["ipv6"].as_array())
                .flatten()
            {
                let mut fixed: BTreeSet<String> = BTreeSet::new();
                if let Some(g) = p["gateway"].as_str() {
                    fixed.insert(g.split('/').next().unwrap_or_default().to_string());
                }
                if let Some(aux) = p["aux_addresses"].as_object() {
                    fixed.extend(aux.values().map(text));
                }
                pools.insert(text(&p["pool_id"]), fixed);
            }
        }
        // IPAM: ipam/<space>/pools/<subnet with _> and ipam/<space>/addrs/<subnet>/<gen>/<ip>.
        let mut generations: BTreeMap<String, String> = BTreeMap::new();
        for p in list("ipam").await {
            let rest = p.key.trim_start_matches("ipam/");
            let parts: Vec<&str> = rest.split('/').collect();
            if let [space, "pools", sub] = parts[..] {
                let id = format!("{space}/{}", sub.replace('_', "/"));
                if !pools.contains_key(&id) {
                    bad.push(format!(
                        "leaked IPAM pool {id} ({}): no network record uses it",
                        p.key
                    ));
                }
                generations.insert(id, decode(&p.value)["generation"].to_string());
            }
        }
        for p in list("ipam").await {
            let rest = p.key.trim_start_matches("ipam/");
            let parts: Vec<&str> = rest.split('/').collect();
            if let [space, "addrs", sub, generation, ip] = parts[..] {
                let id = format!("{space}/{}", sub.replace('_', "/"));
                if generations.get(&id).map(String::as_str) != Some(generation) {
                    bad.push(format!(
                        "leaked IPAM address key {} of a pool that no longer exists",
                        p.key
                    ));
                    continue;
                }
                let fixed = pools.get(&id).is_some_and(|f| f.contains(ip));
                let used = held.get(&id).is_some_and(|h| h.contains(ip));
                if !fixed && !used {
                    bad.push(format!(
                        "leaked address {ip} of pool {id} ({}, label {:?}): no endpoint, gateway or aux address holds it",
                        p.key,
                        String::from_utf8_lossy(&p.value)
                    ));
                }
            }
        }
        for (pool, ips) in &held {
            if !generations.contains_key(pool) {
                bad.push(format!(
                    "endpoints hold {ips:?} in pool {pool}, which IPAM does not have"
                ));
            }
        }
        if let Err(e) = store.close().await {
            panic!("closing {url}: {e}");
        }
        bad
    })
}
