//! Service virtual IPs load-balanced in nftables, in one sandbox's namespace: the data plane
//! of Plexus services, Docker swarm's VIP mode without IPVS.
//!
//! A service has a VIP, an address of its network that no interface holds. Whatever a
//! program in the sandbox sends to the VIP — any TCP or UDP port, or another protocol — is
//! DNATed to one live backend's address, the destination port kept (Docker's IPVS firewall
//! mark semantics: one VIP, every port). Replies come back from the VIP (conntrack), and the
//! backend sees the client's own address (no SNAT).
//!
//! # The table
//!
//! One table, `ip plexus-lb`, in the sandbox's namespace, in the style of kube-proxy's
//! nftables mode:
//!
//! ```text
//! chain dispatch { type nat hook output priority dstnat; ip daddr vmap @services }
//! chain refuse   { type filter hook output priority filter; ip daddr @vips reject }
//! map services   { ipv4_addr : verdict }   # VIP : goto svc-<id>, comment "name=… affinity-ms=…"
//! set vips       { ipv4_addr }
//! chain svc-<id> { dnat ip to numgen random mod 2^31 map @bes-<id> }
//! map bes-<id>   { integer : ipv4_addr; flags interval }   # [0, 2^31) cut in N ranges
//!
//! # client-ip affinity: svc-<id> is instead
//! chain svc-<id> { ip saddr . ip daddr map @affinity as b, ip daddr . b not in @live:
//!                      delete @affinity { ip saddr . ip daddr : b }
//!                  dnat ip to ip saddr . ip daddr map @affinity,
//!                      update @affinity { ip saddr . ip daddr timeout T : <it> }
//!                  dnat ip to numgen random mod 2^31 map @bes-<id>,
//!                      update @affinity { ip saddr . ip daddr timeout T : <it> } }
//! map affinity   { ipv4_addr . ipv4_addr : ipv4_addr; flags dynamic,timeout }  # client . VIP
//! set live       { ipv4_addr . ipv4_addr }                # VIP . backend, affinity services
//! ```
//!
//! `<id>` is the service's 12-character id. Why so:
//!
//! - **One dispatch rule whatever the number of services.** The verdict map is a hash
//!   lookup, so a connection's set-up cost does not grow with the services present, and a
//!   service is added or removed by one element each in `services` and `vips`.
//! - **The table lives in the sandbox** (not the host): traffic of a sandbox to a VIP never
//!   leaves it un-NATed, needs no route for the VIP beyond the network's own, and a sandbox's
//!   view is its networks' services only. The hook is `output`: programs in the sandbox are
//!   the only clients.
//! - **A backend change is element changes only, of one map.** The commit of an nf_tables
//!   transaction validates the whole table graph (every chain reachable from the base
//!   chains, through every verdict map) when the transaction adds a rule holding an
//!   expression with a `validate` hook — `nat`, `lookup`, `immediate` all have one — so with
//!   10,000 services any change that adds such a rule pays for all of them (an earlier
//!   design replaced the service chain's `numgen mod N` rule and added a chain per backend
//!   on each change). Elements of a data map (not a verdict map) need no
//!   validation. So the number of backends is not in the rule: `numgen random mod 2^31`
//!   picks a number, and the interval map `bes-<id>` cuts `[0, 2^31)` into one nearly even
//!   range per backend (to 1 part in 2^31 / [`MAX_BACKENDS`]). A backend added or removed is
//!   a flush of that map and its new ranges: two messages, whatever the number of services
//!   (three with affinity). The remaining cost of a commit grows with the table only where
//!   the kernel walks every chain (publishing the new rule generation) and looks a set up by
//!   name (a list): the example `update_latency` measures it. Adding or removing a whole
//!   service adds the service chain's rule and pays the validation, once.
//! - **Ranges, not slots.** A map from `numgen random mod N` slots to backends would
//!   have put `N` back in the rule; the number looked up is converted to network order
//!   (`byteorder`) as interval maps compare big-endian keys.
//! - **The kernel describes itself:** [`Dispatcher::read`] recovers the service's name and
//!   affinity from its `services` element's comment and its backends from the values of its
//!   `bes-<id>` map (ranges other than those this crate writes are an error, and the table is
//!   rebuilt by [`Dispatcher::reconcile`]), so a restarted daemon compares the kernel with
//!   its store without a file of its own.
//! - **A VIP with no backend refuses at once.** The slot map is then empty, the lookup
//!   fails and ends the rule, so the packet leaves the NAT hook still addressed to the VIP;
//!   the `refuse` chain, after NAT, rejects what is still addressed to a VIP with an ICMP
//!   port unreachable: `connect` fails with `ECONNREFUSED` at once instead of a 3-second ARP
//!   timeout. The rejected packet's connection is never confirmed, so a UDP flow is NATed
//!   anew once a backend comes.
//! - **Affinity without a set or chain per backend.** One dynamic map for the table,
//!   `client . VIP → backend`, each element with its service's timeout, refreshed by each
//!   new connection (kube-proxy's semantics). A removed backend must lose its clients; rather
//!   than dumping the map and deleting their elements in the batch (a dump per change, and
//!   a pin made between the dump and the commit would survive), the service chain checks
//!   the pin against `live`, the `VIP . backend` pairs of services with affinity, and
//!   deletes a stale one from the packet path before picking anew. A removed backend is one
//!   `live` element deleted in the batch; its clients pick again at their next connection.
//!   Sharing the map (rather than one per service) also keeps the table's set list, which
//!   the kernel searches by name, at one set per service.
//!   Known cost: `nft list` (1.0.6) aborts on a table holding a service with affinity
//!   (an assertion in its concatenation parser, most likely on the `ip daddr . <map
//!   value>` key, which nft syntax cannot express); the kernel and [`Dispatcher::read`]
//!   do not depend on it.
//!
//! # Changes
//!
//! [`plan`] is the sans-I/O core: from the view the table holds and the view wanted, the
//! operations ([`Op`]) that take one to the other, only what changed; [`plan_service`] does
//! the same for one service without looking at the others, for
//! [`Dispatcher::apply_service`]. [`Dispatcher`] sends them as one atomic nf_tables batch
//! (all or nothing), reads the table back ([`Dispatcher::read`]) and repairs it
//! ([`Dispatcher::reconcile`]: read, plan, apply). Views are validated first and errors name
//! the field ([`LbError::Invalid`]). [`Dispatcher::apply`] validates and compares whole
//! views (for bulk changes and reconciliation); [`Dispatcher::apply_service`] is the path of
//! a single change.
//!
//! Existing connections keep their backend (conntrack) when it leaves the rotation; only new
//! connections avoid it. A UDP flow is a connection too: it keeps a removed backend until
//! its conntrack entry expires.
//!
//! # Published ports: the routing mesh
//!
//! Two more modules make the data plane of the ingress routing mesh (Docker swarm's
//! published ports, keeping the client's address):
//!
//! - [`mesh`]: the table `ip plexus-mesh` of a host (published ports DNATed to its ingress
//!   sandbox, or straight to local backends) or of an ingress sandbox (DNATed to the
//!   service's backends at the target port), with the same backend ranges as the VIPs'
//!   (`slots.rs`, shared) and the same life cycle as [`Dispatcher`]: [`mesh::Mesh`] applies,
//!   reads back and reconciles;
//! - [`return_path`]: in a backend's namespace, the conntrack mark, `route` chain,
//!   `fwmark` rules and route tables that send the replies of a connection that came
//!   through an ingress sandbox back through that sandbox (nothing SNATs, so they are
//!   addressed to the client); [`return_path::ReturnPath`] reconciles them with the
//!   namespace's rtnetlink connection.

mod dispatcher;
mod encode;
mod error;
pub mod mesh;
mod names;
mod plan;
pub mod record;
pub mod return_path;
mod slots;
mod view;

#[cfg(test)]
mod model;

pub use dispatcher::{apply, apply_service, read, reconcile, remove, Dispatcher};
pub use encode::{encode, encode_remove};
pub use error::LbError;
pub use names::{
    AFFINITY_MAP, DISPATCH_CHAIN, LIVE_SET, REFUSE_CHAIN, SERVICES_MAP, TABLE, VIPS_SET,
};
pub use plan::{plan, plan_service, Elem, Op, Rule, SetKind, SLOTS};
pub use view::{ServiceView, View, MAX_AFFINITY, MAX_BACKENDS, MAX_NAME_LEN, SERVICE_ID_LEN};
