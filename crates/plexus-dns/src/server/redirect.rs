//! The nftables table in a sandbox's namespace that sends `127.0.0.11:53` to the resolver's
//! own ports there, as Docker's `docker-dns` table does: DNAT in `output` for the queries;
//! conntrack rewrites the replies back to port 53. A program in the sandbox can still bind
//! `0.0.0.0:53` itself: only packets for 127.0.0.11 port 53 are taken.

use plexus_sys::netns::Netns;
use plexus_sys::nft::{
    BaseChain, ChainType, CmpOp, Expr, Family, Hook, MetaKey, NatKind, Nft, PayloadBase, Verdict,
    REG32_00,
};

/// The table's name (`ip plexus-dns`).
pub const TABLE: &str = "plexus-dns";
/// The address the resolver answers on in every sandbox.
pub const RESOLVER_ADDR: [u8; 4] = [127, 0, 0, 11];
const CHAIN: &str = "output";
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

fn rule(proto: u8, port: u16) -> Vec<Expr> {
    let r = |n: u32| REG32_00 + n;
    vec![
        Expr::Payload {
            base: PayloadBase::Network,
            offset: 16,
            len: 4,
            dreg: r(0),
        },
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Eq,
            data: RESOLVER_ADDR.to_vec(),
        },
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: r(0),
        },
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Eq,
            data: vec![proto],
        },
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: r(0),
        },
        Expr::Cmp {
            sreg: r(0),
            op: CmpOp::Eq,
            data: 53u16.to_be_bytes().to_vec(),
        },
        Expr::Immediate {
            dreg: r(0),
            data: RESOLVER_ADDR.to_vec(),
        },
        Expr::Immediate {
            dreg: r(1),
            data: port.to_be_bytes().to_vec(),
        },
        Expr::Nat {
            kind: NatKind::Dnat,
            family: Family::Ip,
            addr: Some(r(0)),
            addr_max: None,
            port: Some(r(1)),
            port_max: None,
        },
    ]
}

/// Installs (or replaces, in one atomic batch) the redirect to `udp_port` and `tcp_port`.
pub fn install(ns: &Netns, udp_port: u16, tcp_port: u16) -> plexus_sys::Result<()> {
    let nft = Nft::open(ns)?;
    let mut b = nft.batch();
    b.destroy_table(Family::Ip, TABLE);
    b.add_table(Family::Ip, TABLE);
    b.add_chain(
        Family::Ip,
        TABLE,
        CHAIN,
        Some(BaseChain {
            kind: ChainType::Nat,
            hook: Hook::Output,
            priority: -100,
            policy: Verdict::Accept,
        }),
    );
    b.add_rule(Family::Ip, TABLE, CHAIN, &rule(IPPROTO_UDP, udp_port));
    b.add_rule(Family::Ip, TABLE, CHAIN, &rule(IPPROTO_TCP, tcp_port));
    nft.apply(b)
}

/// Removes the redirect (nothing if it is not there).
pub fn remove(ns: &Netns) -> plexus_sys::Result<()> {
    let nft = Nft::open(ns)?;
    let mut b = nft.batch();
    b.destroy_table(Family::Ip, TABLE);
    nft.apply(b)
}
