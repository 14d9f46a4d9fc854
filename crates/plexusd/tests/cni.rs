//! plexus-cni against a real plexusd, as a runtime drives it: ADD, CHECK, DEL, VERSION, and
//! CNI 1.1's STATUS and GC through a harness of the test's own (`cni_harness`), every bad
//! input with the error CNI defines, DEL's idempotence, ADD after a crash mid-ADD, plexusd's
//! own GC at start, and traffic between two CNI-attached namespaces. Needs root, and the
//! `plexus-cni` binary next to plexusd (`cargo test --workspace`, or `cargo build -p
//! plexus-cni` first).

use std::time::Duration;

use serde_json::{json, Value};

mod cni_harness;
mod common;

use cni_harness::{bytes, conf, Call, ContainerNs};
use common::{json as parse_json, Daemon};

const POOL: [&str; 2] = ["--default-address-pool", "base=10.231.0.0/16,size=24"];

fn daemon_with(networks: &[(&str, &str)]) -> Daemon {
    let d = Daemon::new(&POOL);
    for (name, subnet) in networks {
        d.ok(&["network", "create", "--subnet", subnet, name]);
    }
    d
}

/// The sandbox's inspect JSON, or `None` when plexusd has no such sandbox.
fn sandbox(d: &Daemon, name: &str) -> Option<Value> {
    let out = d.plexus(&["sandbox", "inspect", name]);
    if !out.status.success() {
        return None;
    }
    let v = parse_json(&String::from_utf8_lossy(&out.stdout));
    Some(v.get(0).cloned().unwrap_or(v))
}

fn sandbox_count(d: &Daemon) -> usize {
    d.ok(&["sandbox", "ls", "-q"]).lines().count()
}

/// The endpoints a network lists.
fn network_containers(d: &Daemon, network: &str) -> usize {
    let v = parse_json(&d.ok(&["network", "inspect", network]));
    v[0]["Containers"].as_object().map_or(0, |m| m.len())
}

fn ping(from: &ContainerNs, to: &str) -> bool {
    from.exec(&["ping", "-c", "1", "-W", "2", to])
        .status
        .success()
}

fn add(
    d: &Daemon,
    version: &str,
    network: &str,
    id: &str,
    ns: &ContainerNs,
    ifname: &str,
) -> Value {
    Call::on("ADD", id, &ns.path(), ifname)
        .run(&bytes(&conf(d, version, network)))
        .ok()
}

fn del(d: &Daemon, version: &str, network: &str, id: &str, ns: Option<&str>, ifname: &str) {
    let mut call = Call::on("DEL", id, ns.unwrap_or(""), ifname);
    call.netns = ns;
    call.run(&bytes(&conf(d, version, network))).ok();
}

#[test]
fn add_check_del_with_the_exact_interface_and_cni_result() {
    let d = daemon_with(&[("red", "10.231.1.0/24"), ("blue", "10.231.2.0/24")]);
    let ns = ContainerNs::new("c1");
    let id = "c0ffee0000000000000000000000000000000000000000000000000000000001";

    let r = add(&d, "1.0.0", "red", id, &ns, "net0");
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][0]["name"], "net0", "{r}");
    assert_eq!(r["interfaces"][0]["sandbox"], ns.path().as_str(), "{r}");
    assert!(
        r["interfaces"][0]["mac"]
            .as_str()
            .is_some_and(|m| m.len() == 17),
        "{r}"
    );
    let addr = r["ips"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        addr.starts_with("10.231.1.") && addr.ends_with("/24"),
        "{r}"
    );
    assert_eq!(r["ips"][0]["gateway"], "10.231.1.1", "{r}");
    assert_eq!(r["ips"][0]["interface"], 0, "{r}");
    assert!(
        r["ips"][0].get("version").is_none(),
        "1.0.0 has no version: {r}"
    );
    assert_eq!(
        r["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "10.231.1.1"})
    );
    assert_eq!(r["dns"]["nameservers"][0], "127.0.0.11", "{r}");
    assert!(ns.links().contains(&"net0".to_string()), "{:?}", ns.links());

    // 0.4.0's shape carries the family.
    let ns_old = ContainerNs::new("c-old");
    let old = add(&d, "0.4.0", "red", "old1", &ns_old, "eth0");
    assert_eq!(old["ips"][0]["version"], "4", "{old}");
    del(&d, "0.4.0", "red", "old1", Some(&ns_old.path()), "eth0");

    // CHECK with the result as prevResult.
    let mut c = conf(&d, "1.0.0", "red");
    c["prevResult"] = r.clone();
    Call::on("CHECK", id, &ns.path(), "net0")
        .run(&bytes(&c))
        .ok();

    // A second network of the same container shares its sandbox.
    let r2 = add(&d, "1.1.0", "blue", id, &ns, "net1");
    assert!(r2["ips"][0]["address"]
        .as_str()
        .unwrap_or_default()
        .starts_with("10.231.2."));
    let name = format!("cni-{id}");
    let sb = sandbox(&d, &name).unwrap_or_else(|| panic!("no sandbox {name}"));
    assert_eq!(sb["NetNs"], ns.path().as_str());
    assert_eq!(sb["OwnedNetNs"], false);
    assert_eq!(sb["Labels"]["io.plexus.cni.container-id"], id);
    assert_eq!(sb["Endpoints"].as_array().map(Vec::len), Some(2), "{sb}");
    assert_eq!(sandbox_count(&d), 1);

    // CHECK notices an address taken away by hand.
    ns.exec(&["ip", "addr", "flush", "dev", "net1"]);
    let e = Call::on("CHECK", id, &ns.path(), "net1")
        .run(&bytes(&conf(&d, "1.1.0", "blue")))
        .error(101);
    assert!(
        e["details"]
            .as_str()
            .unwrap_or_default()
            .contains("missing"),
        "{e}"
    );

    // DEL one network: the other stays; DEL the last: the sandbox goes, the namespace stays.
    del(&d, "1.1.0", "blue", id, Some(&ns.path()), "net1");
    assert_eq!(
        sandbox(&d, &name).map(|s| s["Endpoints"].as_array().map(Vec::len)),
        Some(Some(1))
    );
    del(&d, "1.0.0", "red", id, Some(&ns.path()), "net0");
    assert!(
        sandbox(&d, &name).is_none(),
        "the sandbox outlived its last DEL"
    );
    assert!(
        std::path::Path::new(&ns.path()).exists(),
        "the runtime's namespace was removed"
    );
    assert!(ns.only_lo());
    assert_eq!(network_containers(&d, "red"), 0);

    // DEL is idempotent: again, without a namespace, and for a container never added.
    del(&d, "1.0.0", "red", id, Some(&ns.path()), "net0");
    del(&d, "1.0.0", "red", id, None, "net0");
    del(&d, "1.1.0", "red", "never-added", None, "eth0");

    // CHECK of what is gone: unknown container.
    Call::on("CHECK", id, &ns.path(), "net0")
        .run(&bytes(&conf(&d, "1.0.0", "red")))
        .error(3);
}

#[test]
fn two_cni_namespaces_reach_each_other() {
    let d = daemon_with(&[("app", "10.231.3.0/24")]);
    let (a, b) = (ContainerNs::new("a"), ContainerNs::new("b"));
    let ra = add(&d, "1.0.0", "app", "ctr-a", &a, "eth0");
    let rb = add(&d, "1.0.0", "app", "ctr-b", &b, "eth0");
    let ip = |r: &Value| {
        r["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .unwrap_or_default()
            .to_string()
    };
    assert!(ping(&a, &ip(&rb)), "a cannot reach b at {}", ip(&rb));
    assert!(ping(&b, &ip(&ra)), "b cannot reach a at {}", ip(&ra));
    del(&d, "1.0.0", "app", "ctr-b", Some(&b.path()), "eth0");
    assert!(!ping(&a, &ip(&rb)), "b still answers after its DEL");
    del(&d, "1.0.0", "app", "ctr-a", Some(&a.path()), "eth0");
    assert_eq!(sandbox_count(&d), 0);
}

#[test]
fn bad_input_gets_cni_errors_naming_the_field_and_leaves_nothing() {
    let mut d = daemon_with(&[("good", "10.231.4.0/24")]);
    let ns = ContainerNs::new("bad");
    let ns_path = ns.path();
    let good = bytes(&conf(&d, "1.0.0", "good"));
    let details = |e: &Value| format!("{} {}", e["msg"], e["details"]);

    // No CNI_NETNS on ADD.
    let mut call = Call::on("ADD", "x1", "", "eth0");
    call.netns = None;
    let e = call.run(&good).error(4);
    assert!(details(&e).contains("CNI_NETNS"), "{e}");
    // A CNI_NETNS that is no namespace.
    let e = Call::on("ADD", "x1", "/etc/hostname", "eth0")
        .run(&good)
        .error(4);
    assert!(details(&e).contains("CNI_NETNS"), "{e}");
    // Bad interface name, bad container id, no command.
    let e = Call::on("ADD", "x1", &ns.path(), "a/b").run(&good).error(4);
    assert!(details(&e).contains("CNI_IFNAME"), "{e}");
    let e = Call::on("ADD", "-x1", &ns.path(), "eth0")
        .run(&good)
        .error(4);
    assert!(details(&e).contains("CNI_CONTAINERID"), "{e}");
    let e = Call::new("ATTACH").run(&good).error(4);
    assert!(details(&e).contains("CNI_COMMAND"), "{e}");
    // A configuration that is not JSON.
    let e = Call::on("ADD", "x1", &ns.path(), "eth0")
        .run(b"{not json")
        .error(6);
    assert!(details(&e).contains("not JSON"), "{e}");
    // A version plexus-cni does not speak.
    let mut c = conf(&d, "1.0.0", "good");
    c["cniVersion"] = json!("2.0.0");
    let e = Call::on("ADD", "x1", &ns.path(), "eth0")
        .run(&bytes(&c))
        .error(1);
    assert!(details(&e).contains("cniVersion"), "{e}");
    // An unknown network, named by `name` and by `network`.
    let e = Call::on("ADD", "x1", &ns.path(), "eth0")
        .run(&bytes(&conf(&d, "1.0.0", "nosuch")))
        .error(7);
    assert!(
        details(&e).contains("name") && details(&e).contains("nosuch"),
        "{e}"
    );
    let mut c = conf(&d, "1.0.0", "good");
    c["network"] = json!("nosuch2");
    let e = Call::on("ADD", "x1", &ns.path(), "eth0")
        .run(&bytes(&c))
        .error(7);
    assert!(
        details(&e).contains("network") && details(&e).contains("nosuch2"),
        "{e}"
    );
    // An address outside the network.
    let mut c = conf(&d, "1.0.0", "good");
    c["runtimeConfig"] = json!({"ips": ["10.99.0.5/24"]});
    let e = Call::on("ADD", "x1", &ns.path(), "eth0")
        .run(&bytes(&c))
        .error(7);
    assert!(details(&e).contains("10.99.0.5"), "{e}");
    // A field plexus-cni does not take.
    let mut c = conf(&d, "1.0.0", "good");
    c["runtimeConfig"] = json!({"mac": "02:00:00:00:00:01"});
    let e = Call::on("ADD", "x1", &ns.path(), "eth0")
        .run(&bytes(&c))
        .error(2);
    assert!(details(&e).contains("runtimeConfig.mac"), "{e}");
    // A bad socket in the configuration, and PLEXUS_HOST when the configuration has none.
    let mut c = conf(&d, "1.0.0", "good");
    c["plexus"]["socket"] = json!("relative.sock");
    let e = Call::on("ADD", "x1", &ns.path(), "eth0")
        .run(&bytes(&c))
        .error(7);
    assert!(details(&e).contains("plexus.socket"), "{e}");
    let mut c = conf(&d, "1.0.0", "good");
    c.as_object_mut().map(|o| o.remove("plexus"));
    let mut call = Call::on("ADD", "x1", &ns_path, "eth0");
    call.extra_env
        .push(("PLEXUS_HOST", "tcp://nope".to_string()));
    let e = call.run(&bytes(&c)).error(4);
    assert!(details(&e).contains("PLEXUS_HOST"), "{e}");

    // Nothing half-made by any of them.
    assert_eq!(sandbox_count(&d), 0);
    assert_eq!(network_containers(&d, "good"), 0);
    assert!(ns.only_lo());

    // PLEXUS_HOST alone reaches the daemon.
    let mut call = Call::on("ADD", "x1", &ns_path, "eth0");
    call.extra_env.push(("PLEXUS_HOST", d.host()));
    call.run(&bytes(&c)).ok();
    del(&d, "1.0.0", "good", "x1", Some(&ns.path()), "eth0");

    // plexusd away: try again later, naming the socket.
    d.stop();
    let e = Call::on("ADD", "x1", &ns.path(), "eth0")
        .run(&good)
        .error(11);
    assert!(
        details(&e).contains(&d.socket().display().to_string()),
        "{e}"
    );
    assert!(ns.only_lo());
}

#[test]
fn add_after_a_crash_mid_add_succeeds() {
    let mut d = daemon_with(&[("crash", "10.231.5.0/24")]);
    let ns = ContainerNs::new("crash");
    let c = bytes(&conf(&d, "1.0.0", "crash"));

    // The runtime lost the first answer and asks again: the same attachment.
    let first = add(&d, "1.0.0", "crash", "retry", &ns, "eth0");
    let again = add(&d, "1.0.0", "crash", "retry", &ns, "eth0");
    assert_eq!(first, again);
    del(&d, "1.0.0", "crash", "retry", Some(&ns.path()), "eth0");

    // plexusd killed at points through an ADD; after its restart the runtime's next ADD
    // succeeds and its DEL leaves nothing.
    for (round, delay_ms) in [0u64, 2, 5, 10, 20, 40].into_iter().enumerate() {
        let id = format!("crash{round}");
        let netns = ns.path();
        let input = c.clone();
        let call_id = id.clone();
        let worker =
            std::thread::spawn(move || Call::on("ADD", &call_id, &netns, "eth0").run(&input));
        std::thread::sleep(Duration::from_millis(delay_ms));
        d.kill9();
        let _ = worker.join();
        d.start();
        let r = Call::on("ADD", &id, &ns.path(), "eth0").run(&c);
        let r = r.ok();
        assert_eq!(r["interfaces"][0]["name"], "eth0", "round {round}: {r}");
        let addr = r["ips"][0]["address"].as_str().unwrap_or_default();
        let ip = addr.split('/').next().unwrap_or_default();
        let shown = ns.exec(&["ip", "-o", "addr", "show", "dev", "eth0"]);
        assert!(
            String::from_utf8_lossy(&shown.stdout).contains(ip),
            "round {round}: {ip} not on eth0"
        );
        del(&d, "1.0.0", "crash", &id, Some(&ns.path()), "eth0");
        assert!(ns.only_lo(), "round {round}");
        assert_eq!(sandbox_count(&d), 0, "round {round}");
        assert_eq!(network_containers(&d, "crash"), 0, "round {round}");
    }
}

#[test]
fn cni_1_1_version_status_and_gc() {
    let mut d = daemon_with(&[("gc", "10.231.6.0/24"), ("other", "10.231.7.0/24")]);
    let v = Call::new("VERSION").run(br#"{"cniVersion":"1.1.0"}"#).ok();
    assert_eq!(v["cniVersion"], "1.1.0");
    let versions = v["supportedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        versions.contains(&json!("1.0.0")) && versions.contains(&json!("1.1.0")),
        "{v}"
    );

    Call::new("STATUS")
        .run(&bytes(&conf(&d, "1.1.0", "gc")))
        .ok();
    let e = Call::new("STATUS")
        .run(&bytes(&conf(&d, "1.1.0", "absent")))
        .error(50);
    assert!(
        e["details"].as_str().unwrap_or_default().contains("absent"),
        "{e}"
    );
    Call::new("STATUS")
        .run(&bytes(&conf(&d, "1.0.0", "gc")))
        .error(1);

    // Three containers on `gc` (one also on `other`), with fixed addresses.
    let nss: Vec<ContainerNs> = ["ga", "gb", "gc"]
        .iter()
        .map(|n| ContainerNs::new(n))
        .collect();
    for (i, ns) in nss.iter().enumerate() {
        let mut c = conf(&d, "1.1.0", "gc");
        c["runtimeConfig"] = json!({"ips": [format!("10.231.6.{}/24", 10 + i)]});
        Call::on("ADD", &ns.name, &ns.path(), "eth0")
            .run(&bytes(&c))
            .ok();
    }
    add(&d, "1.1.0", "other", "gb", &nss[1], "eth1");
    // A sandbox that plexus-cni did not make is never GC's.
    d.ok(&["sandbox", "create", "mine", "--network", "gc"]);

    // GC: only `ga` is still valid on `gc`.
    let mut c = conf(&d, "1.1.0", "gc");
    c["cni.dev/valid-attachments"] = json!([{"containerID": "ga", "ifname": "eth0"}]);
    Call::new("GC").run(&bytes(&c)).ok();
    assert!(sandbox(&d, "cni-ga").is_some());
    assert!(
        sandbox(&d, "cni-gc").is_none(),
        "gc's attachment was not released"
    );
    let gb = sandbox(&d, "cni-gb").unwrap_or_else(|| panic!("gb's other network went too"));
    assert_eq!(gb["Endpoints"].as_array().map(Vec::len), Some(1), "{gb}");
    assert_eq!(gb["Endpoints"][0]["Network"], "other");
    assert!(
        sandbox(&d, "mine").is_some(),
        "GC removed a sandbox it did not make"
    );
    assert_eq!(network_containers(&d, "gc"), 2);
    Call::on("CHECK", "ga", &nss[0].path(), "eth0")
        .run(&bytes(&conf(&d, "1.1.0", "gc")))
        .ok();
    assert!(nss[2].only_lo());
    // Their addresses are free again: a new container takes one.
    let fresh = ContainerNs::new("gd");
    let mut c2 = conf(&d, "1.1.0", "gc");
    c2["runtimeConfig"] = json!({"ips": ["10.231.6.12"]});
    let r = Call::on("ADD", "gd", &fresh.path(), "eth0")
        .run(&bytes(&c2))
        .ok();
    assert_eq!(r["ips"][0]["address"], "10.231.6.12/24");

    // GC without its list is refused, naming the key; GC under 1.0.0 too.
    let e = Call::new("GC")
        .run(&bytes(&conf(&d, "1.1.0", "gc")))
        .error(7);
    assert!(e["details"]
        .as_str()
        .unwrap_or_default()
        .contains("cni.dev/valid-attachments"));
    Call::new("GC")
        .run(&bytes(&conf(&d, "1.0.0", "gc")))
        .error(1);

    // plexusd away: STATUS says not available.
    d.stop();
    Call::new("STATUS")
        .run(&bytes(&conf(&d, "1.1.0", "gc")))
        .error(50);
}

#[test]
fn plexusd_releases_cni_attachments_whose_namespace_is_gone_at_start() {
    let mut d = daemon_with(&[("left", "10.231.8.0/24")]);
    let mut gone = ContainerNs::new("gone");
    let kept = ContainerNs::new("kept");
    add(&d, "1.0.0", "left", "gone", &gone, "eth0");
    add(&d, "1.0.0", "left", "kept", &kept, "eth0");
    d.ok(&["sandbox", "create", "plain", "--network", "left"]);
    d.stop();
    // The runtime removed the container's namespace and its DEL never came.
    gone.remove();
    d.start();
    assert!(sandbox(&d, "cni-gone").is_none(), "{}", d.log());
    assert!(sandbox(&d, "cni-kept").is_some());
    assert!(sandbox(&d, "plain").is_some());
    assert_eq!(network_containers(&d, "left"), 2);
    assert!(d
        .log()
        .contains("released a CNI attachment whose namespace is gone"));
}
