//! The event log read straight from the store of a killed daemon: revisions 1, 2, 3, ... with
//! no gap or duplicate, nothing committed before an earlier kill lost or rewritten, and the
//! log telling the store's state: every network, sandbox and endpoint the store holds has a
//! create/connect not followed by a destroy/disconnect, and nothing else has.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Every stored event, by revision, as JSON.
pub type Log = BTreeMap<u64, Value>;

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// Checks the log in the store at `url` (the daemon not running) against the log an earlier
/// check saw (`previous`, replaced by this one); returns what is wrong.
pub fn check(url: &str, previous: &mut Log) -> Vec<String> {
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
        let mut log = Log::new();
        for p in list("plexus/v1/event").await {
            let e = decode(&p.value);
            let rev = e["revision"].as_u64().unwrap_or(0);
            if p.key != format!("plexus/v1/event/{rev:020}") {
                bad.push(format!("event {rev} stored at {}", p.key));
            }
            if log.insert(rev, e).is_some() {
                bad.push(format!("revision {rev} stored twice"));
            }
        }
        let head = match store.get("plexus/v1/event-head").await {
            Ok(p) => decode(&p.value).as_u64().unwrap_or(0),
            Err(_) => 0,
        };
        let revs: Vec<u64> = log.keys().copied().collect();
        let first = revs.first().copied().unwrap_or(1);
        if revs != (first..first + revs.len() as u64).collect::<Vec<_>>() {
            bad.push(format!("revisions are not contiguous: {revs:?}"));
        }
        if revs.last().copied().unwrap_or(0) != head {
            bad.push(format!(
                "the head says {head}, the last event is {:?}",
                revs.last()
            ));
        }
        let mut times = log.values().map(|e| e["time_nano"].as_u64().unwrap_or(0));
        let mut last_time = 0;
        if times.any(|t| {
            let back = t < last_time;
            last_time = t;
            back
        }) {
            bad.push("event times go backwards".into());
        }
        // What an earlier check saw is still there, unchanged (no loss, no rewrite).
        for (rev, e) in previous.iter() {
            if *rev < first {
                continue;
            }
            match log.get(rev) {
                Some(now) if now == e => {}
                Some(now) => bad.push(format!("event {rev} changed: was {e}, is {now}")),
                None => bad.push(format!("event {rev} was committed, then lost: {e}")),
            }
        }
        // The log's account of what exists, against the records. The history starts at 1 in
        // this test (it never reaches the trimming), so the account is complete.
        let mut live: BTreeMap<(String, String), bool> = BTreeMap::new();
        for e in log.values() {
            let (kind, action, actor) = (text(&e["type"]), text(&e["action"]), text(&e["actor"]));
            let alive = matches!(action.as_str(), "create" | "connect");
            let was = live.insert((kind.clone(), actor.clone()), alive);
            if was == Some(alive) {
                bad.push(format!(
                    "{kind} {actor}: {action} twice in a row (revision {})",
                    e["revision"]
                ));
            }
        }
        let alive = |kind: &str| -> BTreeSet<String> {
            live.iter()
                .filter(|((k, _), on)| k == kind && **on)
                .map(|((_, id), _)| id.clone())
                .collect()
        };
        let ids = |dir: &'static str| {
            let list = &list;
            async move {
                list(dir)
                    .await
                    .iter()
                    .map(|p| text(&decode(&p.value)["id"]))
                    .collect::<BTreeSet<String>>()
            }
        };
        for (kind, dir) in [
            ("network", "plexus/v1/network"),
            ("sandbox", "plexus/v1/sandbox"),
            ("endpoint", "plexus/v1/endpoint"),
        ] {
            let stored = ids(dir).await;
            let logged = alive(kind);
            for id in stored.difference(&logged) {
                bad.push(format!(
                    "{kind} {id} is in the store but the log has no live create/connect for it"
                ));
            }
            for id in logged.difference(&stored) {
                bad.push(format!(
                    "the log says {kind} {id} exists, the store has no such record"
                ));
            }
        }
        if let Err(e) = store.close().await {
            panic!("closing {url}: {e}");
        }
        *previous = log;
        bad
    })
}
