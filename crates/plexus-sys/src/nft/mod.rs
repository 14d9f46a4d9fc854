//! nf_tables over netlink: the wire format and the kernel, without policy.
//!
//! Tables, chains (base and regular), rules, sets, maps and verdict maps — created, deleted,
//! destroyed (a missing object is no error) and flushed — concatenated keys and values,
//! element timeouts, and the expressions rules are made of: payload, meta, cmp, bitwise,
//! lookup and `vmap`, `dynset` (`add`/`update`/`delete` from the packet path), immediate data
//! and verdicts (accept, drop, return, jump, goto), numgen (random or incremental, mod N),
//! jhash, byteorder, ct state/status/mark (read and set), fib, nat (snat/dnat to address and
//! port ranges, IPv4 and IPv6), redirect, masquerade, notrack, counter and reject. Which tables, chains and sets a
//! driver wants is the driver's business (the bridge driver's are in `plexus-drivers`).
//!
//! - `wire/`: the encoding — framing and attributes, the vocabulary ([`Family`], [`Hook`],
//!   [`Verdict`], keys), [`Expr`], [`SetDef`] and [`Element`], and the messages of a [`Batch`];
//! - `raw.rs`: [`Nft`], a `NETLINK_NETFILTER` socket born inside one namespace (opened on a
//!   thread inside it through [`Netns::run`](crate::netns::Netns::run)), atomic batches
//!   (`NFNL_MSG_BATCH_BEGIN` … `END`: all or nothing) and dumps;
//! - `dump.rs`: reading back tables, chains, sets, rules (handles, comments, counters) and
//!   elements (values, verdicts, time left);
//! - `compat.rs`: deletions on kernels without `NFT_MSG_DESTROY*` (before 6.3), probed once
//!   per [`Nft`].
//!
//! # Library choice
//!
//! The messages are encoded here and sent over a plain socket from `netlink-sys`. The
//! alternatives were weighed first: `rustables` 0.9 has no maps (`NFTA_SET_DATA_*`), no
//! concatenations, no `fib`; `netlink-packet-netfilter` 0.4's `nftables` module covers
//! tables, chains, sets and a few expressions but not `nat`, `masq`, `ct`, `fib` or
//! `counter`, so it would have needed our own expression encoders anyway on top of a second
//! netlink-packet-core generation. A small encoder of exactly what Plexus sends is less code
//! than the glue, and has no `nft` process and no JSON schema.
//!
//! Calls are synchronous: each is one short kernel round trip (no network wait), fine from
//! async code.
//!
//! ```no_run
//! # fn demo(ns: &plexus_sys::netns::Netns) -> plexus_sys::Result<()> {
//! use plexus_sys::nft::*;
//! // A service dispatch in the style of kube-proxy's nftables mode:
//! // ip daddr . meta l4proto . th dport vmap @services
//! let nft = Nft::open(ns)?;
//! let mut b = nft.batch();
//! b.add_table(Family::Ip, "lb");
//! b.add_chain(Family::Ip, "lb", "svc-a", None);
//! b.add_set(Family::Ip, "lb", &SetDef {
//!     name: "services".into(),
//!     key_type: 0,
//!     key_len: 12,
//!     data: Some((DATA_VERDICT, 0)),
//!     ..SetDef::default()
//! });
//! let mut key = vec![10, 96, 0, 1, 6, 0, 0, 0];
//! key.extend_from_slice(&[0, 80, 0, 0]);
//! b.add_elements(Family::Ip, "lb", "services", &[Element {
//!     key,
//!     verdict: Some(Verdict::Jump("svc-a".into())),
//!     ..Element::default()
//! }], false);
//! nft.apply(b)?;
//! # Ok(()) }
//! ```

mod compat;
mod dump;
mod raw;
mod wire;

pub use dump::{Counter, RuleInfo};
pub use raw::Nft;
pub use wire::batch::Batch;
pub use wire::expr::Expr;
pub use wire::set::{Element, SetDef};
pub use wire::types::{
    ct_state, ct_status, fib_flags, icmp_unreach, icmpx, pkttype, rtn, BaseChain, ByteOrder,
    ChainType, CmpOp, CtKey, DynsetOp, Family, FibResult, Hook, MetaKey, NatKind, NumgenKind,
    PayloadBase, RejectKind, Verdict, DATA_VERDICT, REG32_00, REG_VERDICT,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_is_shareable_across_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Nft>();
    }
}
