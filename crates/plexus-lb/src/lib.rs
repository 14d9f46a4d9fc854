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
//! chain svc-<id> { [ip saddr @aff-<id>-<b> goto be-<id>-<b>, per backend]
//!                  numgen random mod N vmap @bes-<id> }
//! map bes-<id>   { integer : verdict }     # slot : goto be-<id>-<b>, backends in address order
//! chain be-<id>-<b> { [update @aff-<id>-<b> { ip saddr timeout T }] dnat ip to <b> }
//! set aff-<id>-<b> { ipv4_addr; flags dynamic,timeout }   # with client-ip affinity only
//! ```
//!
//! `<id>` is the service's 12-character id, `<b>` the backend's address in hex. Why so:
//!
//! - **One dispatch rule whatever the number of services.** The verdict map is a hash
//!   lookup, so a connection's set-up cost does not grow with the services present, and a
//!   service is added or removed by one element each in `services` and `vips`.
//! - **The table lives in the sandbox** (not the host): traffic of a sandbox to a VIP never
//!   leaves it un-NATed, needs no route for the VIP beyond the network's own, and a sandbox's
//!   view is its networks' services only. The hook is `output`: programs in the sandbox are
//!   the only clients.
//! - **A chain per backend, named after its address, reached by `goto` from a per-service
//!   verdict map.** `dnat` straight from a data map (`dnat to numgen … map @m`) would save the
//!   backend chains, but client-ip affinity needs a place per backend to refresh the
//!   client's entry (kube-proxy's design), and one shape for both cases keeps the planner
//!   simple. The names make the kernel self-describing: [`Dispatcher::read`] recovers the
//!   backends from the chains' names and the service's name and affinity from its element's
//!   comment, so a restarted daemon compares the kernel with its store without a file of its
//!   own.
//! - **The slot map is named** (`bes-<id>`) rather than anonymous in the rule: it can be read
//!   back and flushed in place. A backend change replaces the service chain's rule (its
//!   modulus is N) and the map's elements in the same batch, adds or deletes one backend
//!   chain, and touches no other service: six messages whatever the number of services (with
//!   affinity, the N `ip saddr @aff…` rules are rewritten too).
//! - **A VIP with no backend refuses at once.** The service chain is then empty, so the
//!   packet leaves the NAT hook still addressed to the VIP; the `refuse` chain, after NAT,
//!   rejects what is still addressed to a VIP with an ICMP port unreachable: `connect`
//!   fails with `ECONNREFUSED` at once instead of a 3-second ARP timeout. The rejected
//!   packet's connection is never confirmed, so a UDP flow is NATed anew once a backend
//!   comes.
//! - **Affinity** is kube-proxy's: the client's address goes in the chosen backend's
//!   dynamic set with the timeout, refreshed by each new connection; the service chain sends
//!   a client found in a backend's set to that backend. A backend removed takes its set with
//!   it, so its clients pick again.
//!
//! # Changes
//!
//! [`plan`] is the sans-I/O core: from the view the table holds and the view wanted, the
//! operations ([`Op`]) that take one to the other, only what changed. [`Dispatcher`] sends
//! them as one atomic nf_tables batch (all or nothing), reads the table back
//! ([`Dispatcher::read`]) and repairs it ([`Dispatcher::reconcile`]: read, plan, apply).
//! Views are validated first and errors name the field ([`LbError::Invalid`]).
//!
//! Existing connections keep their backend (conntrack) when it leaves the rotation; only new
//! connections avoid it.

mod dispatcher;
mod encode;
mod error;
mod names;
mod plan;
mod view;

#[cfg(test)]
mod model;

pub use dispatcher::{apply, read, reconcile, remove, Dispatcher};
pub use encode::{encode, encode_remove};
pub use error::LbError;
pub use names::{DISPATCH_CHAIN, REFUSE_CHAIN, SERVICES_MAP, TABLE, VIPS_SET};
pub use plan::{plan, Elem, Op, Rule, SetKind};
pub use view::{ServiceView, View, MAX_AFFINITY, MAX_BACKENDS, MAX_NAME_LEN, SERVICE_ID_LEN};
