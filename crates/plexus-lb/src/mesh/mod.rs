//! Published ports in nftables: the data plane of Plexus's ingress routing mesh (Docker
//! swarm's published ports), keeping the client's address.
//!
//! A client connects to `HOST:PUBLISHED` on any cluster host. (1) The host's table DNATs it
//! to that host's ingress sandbox (a namespace the host reaches over a bridge), keeping the
//! port; (2) the ingress sandbox's table DNATs it to one of the service's backends, at the
//! target port, over the ingress overlay network. Nothing SNATs, so the backend sees the
//! client's address; its replies find their way back through the ingress sandbox they came
//! from by policy routing in the backend's namespace ([`return_path`](crate::return_path)).
//! A single-host service needs no sandbox: the host's table DNATs straight to the local
//! backends, at the target port.
//!
//! # The table
//!
//! One table, `ip plexus-mesh`, in the host's namespace ([`MeshScope::Host`]) or the
//! ingress sandbox's ([`MeshScope::Gateway`]):
//!
//! ```text
//! chain prerouting { type nat hook prerouting priority dstnat;
//!                    fib daddr type local [ip daddr @addresses]
//!                    meta l4proto . th dport vmap @ports }
//! chain output     { type nat hook output priority dstnat;          # Host scope only
//!                    ip daddr != 127.0.0.0/8 <the same rule> }
//! map ports  { inet_proto . inet_service : verdict }  # goto port-<tcp|udp>-<n>,
//!                                                     # comment "service=<name> target=<port>"
//! set addresses { ipv4_addr }                  # Host scope with a restriction only
//! chain port-tcp-8080 { dnat ip to numgen random mod 2^31 map @pbe-tcp-8080 : <target> }
//! map pbe-tcp-8080 { integer : ipv4_addr; flags interval }   # [0, 2^31) cut in N ranges
//! ```
//!
//! Why so:
//!
//! - **One dispatch rule whatever the number of ports**, a hash lookup of `protocol .
//!   port` in a verdict map, as the VIP dispatcher's (see the crate documentation).
//! - **`fib daddr type local` in both scopes**: only connections to this namespace's own
//!   addresses are published ports; traffic routed through it (a host forwarding for its
//!   containers, replies crossing the ingress sandbox) to the same port numbers is left
//!   alone. A Host restriction ([`MeshScope::Host`] with `addresses`) narrows it to the
//!   addresses listed (`docker service create --publish` on chosen addresses).
//! - **The host's own programs reach published ports too** (Host scope): the output chain
//!   has the same rule. Loopback destinations are left out there, as in Docker's own
//!   `OUTPUT` rule: a connection to 127.0.0.1 NATed to another address would keep its
//!   loopback source, which the kernel does not route out, and hang. The ingress sandbox
//!   starts no connection to a published port, so Gateway scope has prerouting only.
//! - **A backend change is element changes of one map only, in one atomic batch**: the
//!   port's slot map `pbe-<proto>-<port>` is flushed and filled again, with the ranges the
//!   VIP dispatcher uses (`numgen random mod 2^31`, converted to network order, looked up in
//!   an interval map cut into one nearly even range per backend): no rule is added, so the
//!   commit validates nothing, whatever the number of ports. A target changed replaces the
//!   port chain's one rule (and the `ports` element whose comment holds it).
//! - **A port with no backend is refused at once**: its slot map is empty, the lookup fails
//!   and ends the rule, so the packet is not NATed and reaches the namespace itself, which
//!   answers it as a closed port (a TCP reset or an ICMP port unreachable: `connect` fails
//!   with `ECONNREFUSED` at once). Unless something in the namespace listens on that port:
//!   it then gets the connection, as it would without the mesh.
//! - **The kernel describes itself:** [`Mesh::read`] recovers each port's service and
//!   target from its `ports` element's comment, its backends from its slot map, and the
//!   scope from the base chains present, their rules' shape and the `addresses` set, so a
//!   restarted daemon compares the kernel with its store without a file of its own. A
//!   table it cannot read back exactly is rebuilt by [`Mesh::reconcile`].
//! - **A view without ports is no table**: the last port removed deletes the table, and a
//!   scope without ports is not kept ([`MeshView::normalized`]).
//!
//! Existing connections keep their backend (conntrack) when it leaves the rotation; only
//! new connections avoid it. A UDP flow is a connection too.

mod encode;
mod names;
mod plan;
mod table;
mod view;

#[cfg(test)]
mod model;

pub use names::{
    parse_port_chain, parse_slots_map, port_chain, slots_map, ADDRESSES_SET, OUTPUT_CHAIN,
    PORTS_MAP, PREROUTING_CHAIN, TABLE,
};
pub use plan::{plan, MeshElem, MeshOp};
pub use table::Mesh;

pub(crate) use encode::expr_names;
pub use view::{MeshScope, MeshView, PortKey, PortView, Protocol};

/// [`Mesh::apply`] on a connection opened for the call.
pub fn apply(
    ns: &plexus_sys::netns::Netns,
    from: &MeshView,
    to: &MeshView,
) -> Result<(), crate::LbError> {
    Mesh::open(ns)?.apply(from, to)
}

/// [`Mesh::read`] on a connection opened for the call.
pub fn read(ns: &plexus_sys::netns::Netns) -> Result<MeshView, crate::LbError> {
    Mesh::open(ns)?.read()
}

/// [`Mesh::reconcile`] on a connection opened for the call.
pub fn reconcile(ns: &plexus_sys::netns::Netns, want: &MeshView) -> Result<(), crate::LbError> {
    Mesh::open(ns)?.reconcile(want)
}

/// [`Mesh::remove`] on a connection opened for the call.
pub fn remove(ns: &plexus_sys::netns::Netns) -> Result<(), crate::LbError> {
    Mesh::open(ns)?.remove()
}
