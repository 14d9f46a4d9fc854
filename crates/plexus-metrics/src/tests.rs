use super::*;

type Op = [(&'static str, &'static str); 1];

fn encoded(registry: &Registry, format: Format) -> String {
    registry
        .encode(format)
        .unwrap_or_else(|e| panic!("encode: {e}"))
}

#[test]
fn names_get_the_prefix_units_and_counter_suffix() {
    let registry = Registry::new();
    let requests = Family::<Op, Counter>::default();
    let latency = latency_family::<Op>();
    let up: Gauge = Gauge::default();
    registry
        .register("api_requests", "Requests", requests.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    registry
        .register_with_unit(
            "api_request_duration",
            "Latency",
            Unit::Seconds,
            latency.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    registry
        .register("up", "Whether it is up", up.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    requests.get_or_create(&[("operation", "ping")]).inc_by(3);
    latency
        .get_or_create(&[("operation", "ping")])
        .observe(0.002);
    up.set(1);

    let text = encoded(&registry, Format::Prometheus);
    for line in [
        "# HELP plexus_api_requests_total Requests.",
        "# TYPE plexus_api_requests_total counter",
        "plexus_api_requests_total{operation=\"ping\"} 3",
        "# TYPE plexus_api_request_duration_seconds histogram",
        "plexus_api_request_duration_seconds_bucket{operation=\"ping\",le=\"0.001\"} 0",
        "plexus_api_request_duration_seconds_bucket{operation=\"ping\",le=\"0.0025\"} 1",
        "plexus_api_request_duration_seconds_bucket{operation=\"ping\",le=\"+Inf\"} 1",
        "plexus_api_request_duration_seconds_count{operation=\"ping\"} 1",
        "# TYPE plexus_up gauge",
        "plexus_up 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(!text.contains("# EOF"), "{text}");
    assert_eq!(
        registry.names(),
        [
            "plexus_api_request_duration_seconds",
            "plexus_api_requests",
            "plexus_up"
        ]
    );

    let open = encoded(&registry, Format::OpenMetrics);
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(
        open.lines()
            .any(|l| l == "# TYPE plexus_api_requests counter"),
        "{open}"
    );
    assert!(
        open.lines()
            .any(|l| l == "plexus_api_requests_total{operation=\"ping\"} 3"),
        "{open}"
    );
    assert!(
        open.lines()
            .any(|l| l == "# UNIT plexus_api_request_duration_seconds seconds"),
        "{open}"
    );
}

#[test]
fn bad_and_duplicate_names_are_refused_by_name() {
    let registry = Registry::new();
    let gauge = || Gauge::<i64>::default();
    for (name, why) in [
        ("", "empty"),
        ("Networks", "lowercase"),
        ("9lives", "start"),
        ("net-works", "lowercase"),
        ("plexus_networks", "prefix"),
    ] {
        match registry.register(name, "x", gauge()) {
            Err(MetricsError::InvalidName { name: n, reason }) => {
                assert_eq!(n, name);
                assert!(reason.contains(why), "{name:?}: {reason}");
            }
            other => panic!("{name:?} accepted: {other:?}"),
        }
    }
    let e = registry
        .register("requests_total", "x", Counter::<u64>::default())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("\"requests_total\"") && e.contains("_total"),
        "{e}"
    );
    let e = registry
        .register_with_unit("latency_seconds", "x", Unit::Seconds, latency_histogram())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("unit"), "{e}");

    registry
        .register("networks", "x", gauge())
        .unwrap_or_else(|e| panic!("{e}"));
    let e = registry
        .register("networks", "x", gauge())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert_eq!(e, "metric plexus_networks is registered twice");
    // The same name with a unit is another metric.
    registry
        .register_with_unit("networks", "x", Unit::Seconds, gauge())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(registry.names().len() == 2);
}

#[test]
fn clones_share_one_registry_across_threads() {
    let registry = Registry::new();
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let r = registry.clone();
            std::thread::spawn(move || {
                let c: Counter = Counter::default();
                c.inc();
                r.register(&format!("thread_{i}"), "x", c)
            })
        })
        .collect();
    for h in handles {
        h.join()
            .unwrap_or_else(|_| panic!("thread panicked"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let text = encoded(&registry, Format::Prometheus);
    for i in 0..4 {
        assert!(
            text.contains(&format!("plexus_thread_{i}_total 1")),
            "{text}"
        );
    }
}

#[test]
fn label_values_are_escaped() {
    let registry = Registry::new();
    let family = Family::<[(&'static str, String); 1], Gauge>::default();
    registry
        .register("drivers", "x", family.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    family
        .get_or_create(&[("driver", "we\"ird\\".to_string())])
        .set(2);
    let text = encoded(&registry, Format::Prometheus);
    assert!(
        text.contains(r#"plexus_drivers{driver="we\"ird\\"} 2"#),
        "{text}"
    );
}

#[test]
fn accept_headers_choose_the_format() {
    use Format::*;
    for (accept, want) in [
        (None, Prometheus),
        (Some(""), Prometheus),
        (Some("*/*"), Prometheus),
        (Some("text/plain"), Prometheus),
        (Some("text/plain;version=0.0.4"), Prometheus),
        (Some("application/json"), Prometheus),
        (Some("application/openmetrics-text"), OpenMetrics),
        // What Prometheus itself sends.
        (
            Some("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            OpenMetrics,
        ),
        (
            Some("text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=0.5"),
            Prometheus,
        ),
        (Some("application/openmetrics-text;q=0"), Prometheus),
        (Some("application/openmetrics-text;q=bogus"), Prometheus),
        (Some("Application/OpenMetrics-Text; q=0.3"), OpenMetrics),
    ] {
        assert_eq!(Format::negotiate(accept), want, "{accept:?}");
    }
    assert_eq!(
        Prometheus.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(OpenMetrics
        .content_type()
        .starts_with("application/openmetrics-text; version=1.0.0"));
}
