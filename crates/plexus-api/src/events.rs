//! `GET /events`: the controller's event log as dockerd streams it, one JSON object per line.
//!
//! Network events are Docker's (`Type` `network`, actions `create`, `connect`, `disconnect`,
//! `destroy`, `Actor.ID` the network's id, attributes `name`, `type` = the driver and, on
//! connect and disconnect, `container` = the sandbox's id). Sandbox events are sent with
//! Plexus's own type `sandbox` (actions `create`, `destroy`): `docker events` prints them as
//! any other (`sandbox create <id> (name=s1)`), while tools that act on `container` events
//! (compose, monitoring agents) would take a sandbox for a container and ask
//! `/containers/<id>`, which Plexus does not serve; a type they do not know they skip.

use std::collections::{BTreeMap, HashMap};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use plexus_cnm::{Event, EventType, Scope, Subscription};

use crate::error::ApiError;
use crate::handlers::AppState;
use crate::parse::{parse_filters, parse_timestamp, Filters};
use crate::types::{EventActor, EventMessage};

/// The `type` values Docker knows, plus Plexus's `sandbox`: a filter on one of them is
/// valid (Plexus only ever sends `network` and `sandbox`).
const KNOWN_TYPES: [&str; 11] = [
    "container",
    "image",
    "volume",
    "network",
    "daemon",
    "plugin",
    "node",
    "service",
    "secret",
    "config",
    "sandbox",
];

/// The filter keys `/events` takes. `service` selects a service's events (by id or name,
/// prefix). `container` and `sandbox` both select a sandbox (by id
/// or name, prefix): its own events and its connects and disconnects.
const KNOWN_KEYS: [&str; 7] = [
    "type",
    "event",
    "network",
    "container",
    "sandbox",
    "scope",
    "service",
];

/// Shapes a stored event as dockerd sends it.
pub fn docker_message(e: &Event) -> EventMessage {
    let mut attributes = BTreeMap::new();
    let (kind, id) = match e.kind {
        EventType::Network => {
            attributes = e.attributes.clone();
            ("network", e.actor.clone())
        }
        EventType::Endpoint => {
            for key in ["name", "type", "container"] {
                if let Some(v) = e.attributes.get(key) {
                    attributes.insert(key.to_string(), v.clone());
                }
            }
            let network = e.attributes.get("network").cloned().unwrap_or_default();
            ("network", network)
        }
        EventType::Sandbox => {
            attributes = e.attributes.clone();
            ("sandbox", e.actor.clone())
        }
        EventType::Service => {
            attributes = e.attributes.clone();
            ("service", e.actor.clone())
        }
    };
    EventMessage {
        kind: kind.to_string(),
        action: e.action.as_str().to_string(),
        actor: EventActor { id, attributes },
        scope: match e.scope {
            Scope::Local => "local",
            Scope::Global => "swarm",
        }
        .to_string(),
        time: (e.time_nano / 1_000_000_000) as i64,
        time_nano: e.time_nano as i64,
    }
}

/// Checks `/events` filters: known keys, known types and scopes; the error names the bad one.
pub fn check_event_filters(filters: &Filters) -> Result<(), String> {
    for (key, values) in filters {
        if !KNOWN_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "invalid filter {key:?}: /events takes {}",
                KNOWN_KEYS.join(", ")
            ));
        }
        for v in values {
            let ok = match key.as_str() {
                "type" => KNOWN_TYPES.contains(&v.as_str()),
                "scope" => v == "local" || v == "swarm",
                _ => true,
            };
            if !ok {
                return Err(format!("invalid filter '{key}={v}'"));
            }
        }
    }
    Ok(())
}

/// Whether `m` (from stored `e`) passes `filters`: every key given must match one of its
/// values (Docker's rule).
pub fn event_matches(e: &Event, m: &EventMessage, filters: &Filters) -> bool {
    let prefixed = |values: &[String], candidates: &[Option<&String>]| {
        values.iter().any(|v| {
            candidates
                .iter()
                .flatten()
                .any(|c| c == &v || c.starts_with(v.as_str()))
        })
    };
    filters.iter().all(|(key, values)| {
        if values.is_empty() {
            return true;
        }
        match key.as_str() {
            "type" => values.contains(&m.kind),
            "event" => values.contains(&m.action),
            "scope" => values.contains(&m.scope),
            "network" => {
                m.kind == "network"
                    && prefixed(values, &[Some(&m.actor.id), m.actor.attributes.get("name")])
            }
            "container" | "sandbox" => match e.kind {
                EventType::Sandbox => prefixed(values, &[Some(&e.actor), e.attributes.get("name")]),
                EventType::Endpoint => prefixed(
                    values,
                    &[e.attributes.get("container"), e.attributes.get("sandbox")],
                ),
                EventType::Service => prefixed(
                    values,
                    &[e.attributes.get("container"), e.attributes.get("sandbox")],
                ),
                EventType::Network => false,
            },
            "service" => {
                e.kind == EventType::Service
                    && prefixed(values, &[Some(&e.actor), e.attributes.get("name")])
            }
            _ => false,
        }
    })
}

fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// What a stream sends and when it stops.
struct Stream {
    sub: Subscription,
    filters: Filters,
    since: Option<i128>,
    until: Option<i128>,
}

impl Stream {
    /// The next line to send, `None` at the end (past `until`, or the daemon stops).
    async fn next_line(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            let event = match self.until {
                Some(until) => {
                    let left = until - now_nanos();
                    // Replayed events come at once; live ones only until `until`.
                    let wait = std::time::Duration::from_nanos(left.max(0) as u64);
                    match tokio::time::timeout(wait, self.sub.next()).await {
                        Ok(r) => r,
                        Err(_) => return None,
                    }
                }
                None => self.sub.next().await,
            };
            let event = match event {
                Ok(Some(e)) => e,
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, "event stream ends");
                    return None;
                }
            };
            let t = i128::from(event.time_nano);
            if self.since.is_some_and(|s| t < s) {
                continue;
            }
            if self.until.is_some_and(|u| t > u) {
                return None;
            }
            let message = docker_message(&event);
            if !event_matches(&event, &message, &self.filters) {
                continue;
            }
            let mut line = serde_json::to_vec(&message).unwrap_or_default();
            line.push(b'\n');
            return Some(Ok(Bytes::from(line)));
        }
    }
}

/// `GET /events?since=&until=&filters=`: stored events from `since` (all that are kept) and
/// live ones until `until` (or until the client goes away), one JSON object per line.
pub async fn events(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let get = |k: &str| query.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let filters = parse_filters(get("filters").unwrap_or("")).map_err(ApiError::bad_request)?;
    check_event_filters(&filters).map_err(ApiError::bad_request)?;
    let now = now_nanos();
    let since = get("since")
        .map(|t| parse_timestamp("since", t))
        .transpose()
        .map_err(ApiError::bad_request)?;
    let until = get("until")
        .map(|t| parse_timestamp("until", t))
        .transpose()
        .map_err(ApiError::bad_request)?;
    if let Some(s) = since {
        if s > now {
            return Err(ApiError::bad_request(format!(
                "invalid since {:?}: it is in the future",
                get("since").unwrap_or_default()
            )));
        }
    }
    if let (Some(s), Some(u)) = (since, until) {
        if s > u {
            return Err(ApiError::bad_request(format!(
                "invalid since {:?}: it is after until {:?}",
                get("since").unwrap_or_default(),
                get("until").unwrap_or_default()
            )));
        }
    }
    let sub = if since.is_some() {
        state.controller.subscribe_stored().await?
    } else {
        state.controller.subscribe(None).await?
    };
    let stream = Stream {
        sub,
        filters,
        since,
        until,
    };
    let body = futures::stream::unfold(stream, |mut s| async move {
        s.next_line().await.map(|line| (line, s))
    });
    let mut response = Body::from_stream(body).into_response();
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
