//! Services end to end: the real `plexusd` and the `plexus` CLI: create, ls, inspect,
//! update, rm, tasks through `sandbox create --service`, bad input naming the field, and
//! the records across a restart and a kill -9 (virtual IPs not released by start-up IPAM
//! reconciliation). The data plane (plexus-lb) is not here. Needs root.

mod common;

use common::{json, Daemon};

#[test]
fn services_through_the_cli_survive_restarts() {
    let mut d = Daemon::new(&["--bridge", "none"]);
    d.ok(&["network", "create", "--subnet", "10.231.0.0/24", "svcn"]);
    d.ok(&["network", "create", "--subnet", "10.232.0.0/24", "other"]);
    let id = d.ok(&[
        "service",
        "create",
        "web",
        "--network",
        "svcn",
        "-p",
        "8080:80",
        "--publish",
        "published=5353,target=53,protocol=udp,mode=host",
        "--affinity",
        "client-ip",
        "--affinity-timeout",
        "30m",
        "--label",
        "tier=front",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    d.ok(&[
        "service",
        "create",
        "db",
        "--network",
        "svcn",
        "--endpoint-mode",
        "dnsrr",
    ]);

    // Tasks: one on the service's network, one that is also on another network.
    d.ok(&[
        "sandbox",
        "create",
        "t1",
        "--network",
        "svcn",
        "--service",
        "web",
    ]);
    d.ok(&[
        "sandbox",
        "create",
        "t2",
        "--network",
        "other",
        "--network",
        "svcn",
        "--service",
        &id,
    ]);

    let ls = d.ok(&["service", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert!(lines[0].starts_with("ID"), "{ls}");
    for col in ["NAME", "MODE", "VIP", "PORTS", "TASKS"] {
        assert!(lines[0].contains(col), "{ls}");
    }
    assert!(
        lines[1].contains("db") && lines[1].contains("dnsrr"),
        "{ls}"
    );
    assert!(
        lines[2].contains("web") && lines[2].contains("10.231.0.2/24"),
        "{ls}"
    );
    assert!(
        lines[2].contains("*:8080->80/tcp") && lines[2].contains("5353->53/udp (host)"),
        "{ls}"
    );
    assert!(lines[2].trim_end().ends_with('2'), "{ls}");
    assert_eq!(
        d.ok(&["service", "ls", "-q", "--filter", "name=web"])
            .trim(),
        &id[..12]
    );
    assert_eq!(
        d.ok(&[
            "service",
            "ls",
            "--filter",
            "label=tier=front",
            "--format",
            "{{.Name}} {{.Tasks}}"
        ])
        .trim(),
        "web 2"
    );

    let v = json(&d.ok(&["service", "inspect", "web"]));
    let s = &v[0];
    assert_eq!(s["ID"], id.as_str());
    assert_eq!(s["Endpoint"]["VirtualIPs"][0]["Addr"], "10.231.0.2/24");
    assert_eq!(s["SessionAffinity"]["TimeoutSeconds"], 1800);
    assert_eq!(s["Endpoint"]["Ports"][1]["PublishMode"], "host");
    let tasks: Vec<&str> = s["Tasks"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t["Name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(tasks, ["t1", "t2"]);
    assert_eq!(s["Tasks"][1]["Addresses"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        d.ok(&["sandbox", "inspect", "-f", "{{.Service}}", "t1"])
            .trim(),
        id
    );
    // Service events are in the log.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| (t.as_secs() + 1).to_string())
        .unwrap_or_default();
    let ev = d.ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--filter",
        "type=service",
    ]);
    assert!(
        ev.contains("service create") && ev.contains("service connect"),
        "{ev}"
    );

    // Update.
    d.ok(&[
        "service",
        "update",
        "web",
        "--publish-add",
        "8443:443",
        "--publish-rm",
        "8080",
        "--label-add",
        "x=y",
        "--label-rm",
        "tier",
        "--affinity",
        "none",
    ]);
    let s = &json(&d.ok(&["service", "inspect", "web"]))[0];
    assert_eq!(s["Version"], 2);
    let published: Vec<u64> = s["Endpoint"]["Ports"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["PublishedPort"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(published, [5353, 8443]);
    assert_eq!(s["SessionAffinity"]["Mode"], "none");
    assert_eq!(s["Labels"], serde_json::json!({"x": "y"}));

    // A restart and a kill -9: the services, their tasks and their virtual IPs stay (the
    // start-up IPAM pass must not take the VIP back: a new sandbox gets another address).
    assert_eq!(d.stop().code(), Some(0));
    d.start();
    d.kill9();
    d.start();
    let again = &json(&d.ok(&["service", "inspect", "web"]))[0];
    assert_eq!(again["Endpoint"]["VirtualIPs"], s["Endpoint"]["VirtualIPs"]);
    assert_eq!(again["Tasks"], s["Tasks"]);
    d.ok(&["sandbox", "create", "t3", "--network", "svcn"]);
    let t3 = json(&d.ok(&["sandbox", "inspect", "t3"]));
    assert_ne!(t3[0]["Endpoints"][0]["IPv4Address"], "10.231.0.2/24");

    // Removal: refused while it has tasks (naming them), then a task goes with its
    // sandbox, and --force detaches the rest.
    let e = d.fails(&["service", "rm", "web"]);
    assert!(e.contains("service web is in use by tasks t1, t2"), "{e}");
    d.ok(&["sandbox", "rm", "t1"]);
    d.ok(&["service", "rm", "--force", "web"]);
    let t2 = json(&d.ok(&["sandbox", "inspect", "t2"]));
    assert!(t2[0].get("Service").is_none(), "{t2}");
    d.ok(&["service", "rm", "db"]);
    assert_eq!(d.ok(&["service", "ls", "-q"]).trim(), "");
    // The virtual IP is free again.
    d.ok(&[
        "sandbox",
        "create",
        "t4",
        "--network",
        "svcn",
        "--ip",
        "10.231.0.2",
    ]);
    // Networks with a service are not removed.
    d.ok(&["service", "create", "keep", "--network", "other"]);
    let e = d.fails(&["network", "rm", "other"]);
    assert!(e.contains("service keep"), "{e}");
}

#[test]
fn bad_service_input_names_the_field() {
    let d = Daemon::new(&["--bridge", "none"]);
    d.ok(&["network", "create", "--subnet", "10.233.0.0/24", "n1"]);
    d.ok(&[
        "service",
        "create",
        "taken",
        "--network",
        "n1",
        "-p",
        "9000:80",
    ]);
    let cases: &[(&[&str], &str)] = &[
        (&["service", "create", "x"], "--network"),
        (
            &["service", "create", "x", "--network", "nope"],
            "network nope not found",
        ),
        (
            &["service", "create", "x", "--network", "n1", "-p", "0:80"],
            "published port 0 is not 1 to 65535",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n1",
                "-p",
                "70000:80",
            ],
            "is not 1 to 65535",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n1",
                "-p",
                "80:80/sctp",
            ],
            "protocol",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n1",
                "-p",
                "1-2000:1-2000",
            ],
            "at most 1000",
        ),
        (
            &["service", "create", "x", "--network", "n1", "-p", "9000:80"],
            "ports[0] published port 9000/tcp is in use by service taken",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n1",
                "--affinity",
                "sticky",
            ],
            "invalid affinity",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n1",
                "--affinity-timeout",
                "25h",
            ],
            "invalid affinity timeout",
        ),
        (
            &[
                "service",
                "create",
                "x",
                "--network",
                "n1",
                "--endpoint-mode",
                "rr",
            ],
            "invalid endpoint mode",
        ),
        (
            &["service", "create", "taken", "--network", "n1"],
            "service with name taken already exists",
        ),
        (
            &["service", "create", "x", "--network", "host"],
            "cannot carry a service",
        ),
        (
            &[
                "sandbox",
                "create",
                "s",
                "--network",
                "n1",
                "--service",
                "nope",
            ],
            "service nope not found",
        ),
        (
            &["sandbox", "create", "s", "--service", "taken"],
            "invalid service",
        ),
        (
            &["service", "update", "taken", "--publish-rm", "1234"],
            "publish-rm[0]",
        ),
        (&["service", "rm", "nope"], "service nope not found"),
    ];
    for (args, want) in cases {
        let out = d.plexus(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Nothing was made: one service, its one VIP; the next address is free.
    assert_eq!(d.ok(&["service", "ls", "-q"]).lines().count(), 1);
    d.ok(&[
        "sandbox",
        "create",
        "s",
        "--network",
        "n1",
        "--ip",
        "10.233.0.3",
    ]);
}
