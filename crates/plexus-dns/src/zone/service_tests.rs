//! Services in the zone: their names, their tasks', PTR, scoping, changes.

use std::net::IpAddr;

use super::tests::{ep, ips, net, remote, sb};
use super::*;

fn svc(id: &str, name: &str, mode: ServiceMode, on: &[(&str, &[&str])]) -> ServiceInfo {
    ServiceInfo {
        id: id.into(),
        name: name.into(),
        mode,
        networks: on
            .iter()
            .map(|(n, vips)| ServiceNetwork {
                network_id: n.to_string(),
                vips: ips(vips),
            })
            .collect(),
    }
}

fn of(service: &str, name: &str) -> Option<ServiceRef> {
    Some(ServiceRef {
        id: service.into(),
        name: name.into(),
    })
}

/// A task `sb` of service `service` (named `name`) on `net` with `addr`.
fn task(id: &str, net: &str, sb: &str, addr: &str, service: &str, name: &str) -> EndpointInfo {
    EndpointInfo {
        service: of(service, name),
        ..ep(id, net, sb, &[sb], addr)
    }
}

/// Network n1 (`app`) with a client `c`, a vip service `WebSvc` (s1) and three tasks.
fn app() -> Records {
    let mut r = Records::default();
    r.upsert_network(net("n1", "app", false));
    r.upsert_network(net("n2", "other", false));
    for s in ["c", "t1", "t2", "t3", "far"] {
        r.upsert_sandbox(sb(s));
    }
    r.upsert_endpoint(ep("ec", "n1", "c", &["c"], "10.0.0.2"));
    r.upsert_endpoint(ep("ef", "n2", "far", &["far"], "10.1.0.2"));
    r.upsert_service(svc(
        "s1",
        "WebSvc",
        ServiceMode::Vip,
        &[("n1", &["10.0.0.100"])],
    ));
    for (i, a) in ["10.0.0.5", "10.0.0.3", "10.0.0.4"].iter().enumerate() {
        let t = format!("t{}", i + 1);
        r.upsert_endpoint(task(&format!("e{t}"), "n1", &t, a, "s1", "WebSvc"));
    }
    r
}

fn look(r: &Records, sandbox: &str, name: &str) -> Option<Vec<IpAddr>> {
    let z = r.zone();
    z.lookup(&z.sandboxes[sandbox], name)
        .map(|(a, _)| a.to_vec())
}

fn ptr(r: &Records, sandbox: &str, addr: &str) -> Option<Vec<String>> {
    let z = r.zone();
    z.reverse(&z.sandboxes[sandbox], addr.parse().unwrap())
        .map(|(n, _)| n.to_vec())
}

#[test]
fn vip_mode_answers_the_vip_and_tasks_the_backends() {
    let r = app();
    for name in ["websvc", "websvc.app"] {
        assert_eq!(look(&r, "c", name), Some(ips(&["10.0.0.100"])), "{name}");
    }
    let backends = ips(&["10.0.0.3", "10.0.0.4", "10.0.0.5"]);
    for name in ["tasks.websvc", "tasks.websvc.app"] {
        assert_eq!(look(&r, "c", name).as_ref(), Some(&backends), "{name}");
    }
    // A task sees its own service too; its own name still answers.
    assert_eq!(look(&r, "t1", "websvc"), Some(ips(&["10.0.0.100"])));
    assert_eq!(look(&r, "c", "t2"), Some(ips(&["10.0.0.3"])));
    // PTR: the VIP answers the service, a task's address its sandbox.
    assert_eq!(ptr(&r, "c", "10.0.0.100"), Some(vec!["websvc.app".into()]));
    assert_eq!(ptr(&r, "c", "10.0.0.3"), Some(vec!["t2.app".into()]));
}

#[test]
fn dnsrr_mode_answers_the_backends_and_has_no_vip() {
    let mut r = app();
    r.upsert_service(svc("s1", "websvc", ServiceMode::Dnsrr, &[("n1", &[])]));
    let backends = ips(&["10.0.0.3", "10.0.0.4", "10.0.0.5"]);
    for name in ["websvc", "websvc.app", "tasks.websvc", "tasks.websvc.app"] {
        assert_eq!(look(&r, "c", name).as_ref(), Some(&backends), "{name}");
    }
    assert_eq!(ptr(&r, "c", "10.0.0.100"), None, "the VIP was given back");
    // And back to vip.
    r.upsert_service(svc(
        "s1",
        "websvc",
        ServiceMode::Vip,
        &[("n1", &["10.0.0.101"])],
    ));
    assert_eq!(look(&r, "c", "websvc"), Some(ips(&["10.0.0.101"])));
    assert_eq!(look(&r, "c", "tasks.websvc").unwrap().len(), 3);
}

#[test]
fn no_tasks_means_empty_names_not_misses() {
    let mut r = app();
    for t in ["et1", "et2", "et3"] {
        r.remove_endpoint(t);
    }
    assert_eq!(look(&r, "c", "tasks.websvc"), Some(vec![]));
    assert_eq!(look(&r, "c", "websvc"), Some(ips(&["10.0.0.100"])));
    r.upsert_service(svc("s1", "websvc", ServiceMode::Dnsrr, &[("n1", &[])]));
    assert_eq!(look(&r, "c", "websvc"), Some(vec![]));
    assert_eq!(look(&r, "c", "websvc.app"), Some(vec![]));
}

#[test]
fn tasks_come_and_go_with_their_endpoints_and_the_service_with_its_record() {
    let mut r = app();
    r.remove_sandbox("t2");
    assert_eq!(
        look(&r, "c", "tasks.websvc"),
        Some(ips(&["10.0.0.4", "10.0.0.5"]))
    );
    // A task detached from its service (its endpoint re-sent untagged) leaves tasks.
    r.upsert_endpoint(ep("et3", "n1", "t3", &["t3"], "10.0.0.4"));
    assert_eq!(look(&r, "c", "tasks.websvc"), Some(ips(&["10.0.0.5"])));
    r.remove_service("s1");
    for name in ["websvc", "websvc.app", "tasks.websvc", "tasks.websvc.app"] {
        assert_eq!(look(&r, "c", name), None, "{name}");
    }
    assert_eq!(ptr(&r, "c", "10.0.0.100"), None);
    assert_eq!(look(&r, "c", "t1"), Some(ips(&["10.0.0.5"])), "t1 stays");
    // A local endpoint naming a service not known here adds nothing.
    assert_eq!(look(&r, "c", "tasks.websvc"), None);
}

#[test]
fn names_are_scoped_to_the_networks_of_the_asker() {
    let mut r = app();
    assert_eq!(look(&r, "far", "websvc"), None);
    assert_eq!(look(&r, "far", "tasks.websvc"), None);
    assert_eq!(ptr(&r, "far", "10.0.0.100"), None);
    // On both networks: each network's own VIP and tasks.
    r.upsert_service(svc(
        "s1",
        "websvc",
        ServiceMode::Vip,
        &[
            ("n1", &["10.0.0.100"]),
            ("n2", &["10.1.0.100", "fd00::100"]),
        ],
    ));
    r.upsert_endpoint(task("et9", "n2", "t1", "10.1.0.9", "s1", "websvc"));
    assert_eq!(
        look(&r, "far", "websvc"),
        Some(ips(&["10.1.0.100", "fd00::100"]))
    );
    assert_eq!(look(&r, "far", "tasks.websvc"), Some(ips(&["10.1.0.9"])));
    assert_eq!(look(&r, "far", "websvc.app"), None, "app is not far's");
    assert_eq!(
        ptr(&r, "far", "fd00::100"),
        Some(vec!["websvc.other".into()])
    );
    // Leaving a network takes its names there.
    r.upsert_service(svc(
        "s1",
        "websvc",
        ServiceMode::Vip,
        &[("n1", &["10.0.0.100"])],
    ));
    assert_eq!(look(&r, "far", "websvc"), None);
    assert_eq!(look(&r, "far", "tasks.websvc"), None);
}

#[test]
fn a_sandbox_named_as_a_service_answers_with_it() {
    // libnetwork keeps both in one name table per network: the union.
    let mut r = app();
    r.upsert_sandbox(sb("x"));
    r.upsert_endpoint(ep("ex", "n1", "x", &["websvc"], "10.0.0.9"));
    assert_eq!(
        look(&r, "c", "websvc"),
        Some(ips(&["10.0.0.9", "10.0.0.100"]))
    );
    assert_eq!(ptr(&r, "c", "10.0.0.9"), Some(vec!["websvc.app".into()]));
}

#[test]
fn another_hosts_tasks_count_and_unknown_services_get_tasks_only() {
    let mut r = app();
    r.upsert_endpoint(EndpointInfo {
        service: of("s1", "websvc"),
        ..remote("n1/e7", "n1", &["t7"], &["10.0.0.7"], "192.0.2.2")
    });
    assert_eq!(look(&r, "c", "tasks.websvc").unwrap().len(), 4);
    // A service this host does not know: its tasks answer under tasks. only.
    r.upsert_endpoint(EndpointInfo {
        service: of("s9", "Global"),
        ..remote("n1/e8", "n1", &["t8"], &["10.0.0.8"], "192.0.2.2")
    });
    assert_eq!(look(&r, "c", "tasks.global"), Some(ips(&["10.0.0.8"])));
    assert_eq!(look(&r, "c", "tasks.global.app"), Some(ips(&["10.0.0.8"])));
    assert_eq!(look(&r, "c", "global"), None);
    // Once known, by id.
    r.upsert_service(svc("s9", "global", ServiceMode::Dnsrr, &[("n1", &[])]));
    assert_eq!(look(&r, "c", "global"), Some(ips(&["10.0.0.8"])));
    r.remove_endpoint("n1/e8");
    assert_eq!(look(&r, "c", "global"), Some(vec![]));
}

#[test]
fn services_survive_a_snapshot_and_json_stays_compatible() {
    let r = app();
    let snap = r.snapshot();
    assert_eq!(snap.services.len(), 1);
    let json = serde_json::to_string(&snap).unwrap();
    let mut r2 = Records::default();
    r2.replace(serde_json::from_str(&json).unwrap());
    assert_eq!(r2.snapshot(), snap);
    assert_eq!(look(&r2, "c", "websvc"), Some(ips(&["10.0.0.100"])));
    assert_eq!(look(&r2, "c", "tasks.websvc").unwrap().len(), 3);
    // A snapshot of an older plexusd (no services) still reads; an untagged endpoint's
    // JSON is as before.
    let old: Snapshot =
        serde_json::from_str(r#"{"networks":[],"endpoints":[],"sandboxes":[]}"#).unwrap();
    assert!(old.services.is_empty());
    let c = snap.endpoints.iter().find(|e| e.id == "ec").unwrap();
    assert!(!serde_json::to_string(c).unwrap().contains("service"));
}

#[test]
fn thousands_of_services_each_answer_and_go_alone() {
    let mut r = app();
    for i in 0..2000u32 {
        let vip = format!("10.9.{}.{}", i / 250, i % 250 + 1);
        r.upsert_service(svc(
            &format!("x{i}"),
            &format!("svc{i}"),
            ServiceMode::Vip,
            &[("n1", &[vip.as_str()])],
        ));
    }
    let before = r.zone().clone();
    for i in (0..2000u32).step_by(2) {
        r.remove_service(&format!("x{i}"));
    }
    for i in [0u32, 1, 998, 999, 1999] {
        let name = format!("svc{i}");
        let vip = format!("10.9.{}.{}", i / 250, i % 250 + 1);
        let expected = (i % 2 == 1).then(|| ips(&[vip.as_str()]));
        assert_eq!(look(&r, "c", &name), expected, "{name}");
        assert_eq!(ptr(&r, "c", &vip).is_some(), i % 2 == 1, "{vip}");
        // The snapshot taken before is untouched (each change copies its shard).
        let z = &before;
        assert_eq!(
            z.lookup(&z.sandboxes["c"], &name).map(|(a, _)| a.to_vec()),
            Some(ips(&[vip.as_str()]))
        );
    }
    assert_eq!(look(&r, "c", "websvc"), Some(ips(&["10.0.0.100"])));
    assert_eq!(r.zone().services["n1"].by_name.len(), 1001);
}

#[test]
fn the_host_listener_answers_service_names_too() {
    let r = app();
    let z = r.zone();
    assert_eq!(
        z.lookup_any("websvc.app").map(|(a, _)| a),
        Some(ips(&["10.0.0.100"]))
    );
    assert_eq!(
        z.lookup_any("tasks.websvc.app").map(|(a, _)| a.len()),
        Some(3)
    );
    assert_eq!(z.lookup_any("websvc.other"), None);
}
