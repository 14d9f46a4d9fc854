//! Services' published ports on one host, through the real `plexusd` and `plexus` CLI: a
//! client in an "outside" namespace (joined to the daemon's namespace by a veth, no Plexus
//! there) connects to the host's address; connections spread over the tasks, which see
//! the client's own address; UDP answers from the published address; an address not
//! allowed by `--ingress-address` refuses; `service update --publish-add/--publish-rm`
//! reach the kernel; a task removed gets nothing more; a port without tasks refuses at once;
//! the table outlives a kill -9 of the daemon. Needs root.

mod common;
mod lb_traffic;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{Daemon, Outside};
use lb_traffic::*;

const HOST: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);
/// Another address of the host, not given to `--ingress-address`.
const HOST_OTHER: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 3);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 2);

#[test]
fn published_ports_spread_keep_the_client_and_follow_the_service() {
    let mut d = Daemon::unstarted(&[
        "--bridge",
        "none",
        "--reconcile-interval",
        "300ms",
        "--ingress-address",
        "10.97.0.1",
    ]);
    let outside = Outside::new(
        &d,
        ("hout", &["10.97.0.1/24", "10.97.0.3/24"]),
        ("cout", "10.97.0.2/24"),
    );
    d.start();
    d.ok(&["network", "create", "--subnet", "10.242.0.0/24", "app"]);
    d.ok(&[
        "service",
        "create",
        "web",
        "--network",
        "app",
        "-p",
        &format!("published=8080,target={NAME_PORT}"),
        "-p",
        &format!("published=5353,target={UDP_PORT},protocol=udp"),
    ]);
    for t in ["t0", "t1"] {
        d.ok(&[
            "sandbox",
            "create",
            t,
            "--network",
            "app",
            "--service",
            "web",
        ]);
        serve(&d, t);
    }
    let web = SocketAddr::from((HOST, 8080));

    // Spread over both tasks, each seeing the outside client's address.
    let t = connect_many(&outside.path, web, 400);
    assert_eq!(t.failed, 0, "{:?}\n{}", t.first_error, tail(&d.log()));
    assert_eq!(t.by_task.len(), 2, "{:?}", t.by_task);
    // Binomial(400, 1/2): sd 10; 140 is 6 sd below the mean.
    assert!(t.by_task.values().all(|&n| n >= 140), "{:?}", t.by_task);
    assert_eq!(
        t.peers.iter().collect::<Vec<_>>(),
        [&CLIENT.to_string()],
        "the tasks must see the client's own address"
    );

    // UDP, answered from the published address.
    let (answer, from) = udp_ask(&outside.path, SocketAddr::from((HOST, 5353)))
        .unwrap_or_else(|e| panic!("UDP through the published port: {e}"));
    assert!(answer.ends_with(&CLIENT.to_string()), "{answer}");
    assert_eq!(from, SocketAddr::from((HOST, 5353)));

    // Only the allowed address answers.
    let (err, took) = try_connect(&outside.path, SocketAddr::from((HOST_OTHER, 8080)));
    assert_eq!(err, Some(ErrorKind::ConnectionRefused), "after {took:?}");

    // A port published later answers; one removed refuses.
    d.ok(&[
        "service",
        "update",
        "web",
        "--publish-add",
        &format!("published=8081,target={NAME_PORT}"),
        "--publish-rm",
        "8080",
    ]);
    let t = connect_many(&outside.path, SocketAddr::from((HOST, 8081)), 20);
    assert_eq!(t.failed, 0, "{:?}", t.first_error);
    let (err, _) = try_connect(&outside.path, web);
    assert_eq!(err, Some(ErrorKind::ConnectionRefused));

    // A task gone gets nothing more.
    d.ok(&["sandbox", "rm", "t1"]);
    let t = connect_many(&outside.path, SocketAddr::from((HOST, 8081)), 50);
    assert_eq!(t.failed, 0, "{:?}", t.first_error);
    assert_eq!(
        t.by_task.keys().collect::<Vec<_>>(),
        ["t0"],
        "{:?}",
        t.by_task
    );

    // A published port with no task refuses at once.
    d.ok(&[
        "service",
        "create",
        "lonely",
        "--network",
        "app",
        "-p",
        "published=8090,target=80",
    ]);
    let (err, took) = try_connect(&outside.path, SocketAddr::from((HOST, 8090)));
    assert_eq!(err, Some(ErrorKind::ConnectionRefused));
    assert!(took < Duration::from_secs(1), "{took:?}");

    // The daemon killed: the port goes on answering; back, it still does.
    d.kill9();
    let t = connect_many(&outside.path, SocketAddr::from((HOST, 8081)), 20);
    assert_eq!(t.failed, 0, "while plexusd is down: {:?}", t.first_error);
    d.start();
    let t = connect_many(&outside.path, SocketAddr::from((HOST, 8081)), 20);
    assert_eq!(t.failed, 0, "after the restart: {:?}", t.first_error);

    // A port already published by another service is refused, naming it.
    let e = d.fails(&[
        "service",
        "create",
        "clash",
        "--network",
        "app",
        "-p",
        "published=8081,target=80",
    ]);
    assert!(e.contains("8081"), "{e}");
}
