//! The nftables table in a sandbox's namespace that sends `127.0.0.11:53` to the resolver's
//! own ports there, as Docker's DNS rules do, but without conntrack: Docker DNATs the
//! queries and lets conntrack rewrite the replies, which turns connection tracking on for
//! every packet of the sandbox (a tenth of a macvlan sandbox's TCP throughput here). This
//! table instead rewrites ports statelessly in a `filter` chain on `output`: a query's
//! destination port 53 becomes the resolver's port, the resolver's source port becomes 53
//! again on the way back (both directions of a loopback exchange leave through `output`).
//! A program in the sandbox can still bind `0.0.0.0:53` itself: only packets for
//! 127.0.0.11 port 53 are taken.

use plexus_sys::netns::Netns;
use plexus_sys::nft::{
    BaseChain, ChainType, CmpOp, Expr, Family, Hook, MetaKey, Nft, PayloadBase, Verdict, REG32_00,
};

/// The table's name (`ip plexus-dns`).
pub const TABLE: &str = "plexus-dns";
/// The address the resolver answers on in every sandbox.
pub const RESOLVER_ADDR: [u8; 4] = [127, 0, 0, 11];
const CHAIN: &str = "output";
/// Before conntrack (-200), as `raw`: nothing here needs it.
const PRIORITY: i32 = -300;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// Offsets in the IPv4 header and in the transport header.
const IP_SADDR: u32 = 12;
const IP_DADDR: u32 = 16;
const SPORT: u32 = 0;
const DPORT: u32 = 2;

/// Where a transport protocol keeps its checksum.
fn csum_offset(proto: u8) -> u32 {
    if proto == IPPROTO_TCP {
        16
    } else {
        6
    }
}

/// `ip <addr_at> 127.0.0.11 <proto> <port_at> <from> <port_at> set <to>`: queries go with
/// (`IP_DADDR`, `DPORT`, 53 → the resolver's port), answers with (`IP_SADDR`, `SPORT`, the
/// resolver's port → 53).
fn rewrite(proto: u8, addr_at: u32, port_at: u32, from: u16, to: u16) -> Vec<Expr> {
    let r = REG32_00;
    vec![
        Expr::Payload {
            base: PayloadBase::Network,
            offset: addr_at,
            len: 4,
            dreg: r,
        },
        Expr::Cmp {
            sreg: r,
            op: CmpOp::Eq,
            data: RESOLVER_ADDR.to_vec(),
        },
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: r,
        },
        Expr::Cmp {
            sreg: r,
            op: CmpOp::Eq,
            data: vec![proto],
        },
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: port_at,
            len: 2,
            dreg: r,
        },
        Expr::Cmp {
            sreg: r,
            op: CmpOp::Eq,
            data: from.to_be_bytes().to_vec(),
        },
        Expr::Immediate {
            dreg: r,
            data: to.to_be_bytes().to_vec(),
        },
        Expr::PayloadSet {
            base: PayloadBase::Transport,
            offset: port_at,
            len: 2,
            sreg: r,
            csum_offset: Some(csum_offset(proto)),
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
            kind: ChainType::Filter,
            hook: Hook::Output,
            priority: PRIORITY,
            policy: Verdict::Accept,
        }),
    );
    for (proto, port) in [(IPPROTO_UDP, udp_port), (IPPROTO_TCP, tcp_port)] {
        b.add_rule(
            Family::Ip,
            TABLE,
            CHAIN,
            &rewrite(proto, IP_DADDR, DPORT, 53, port),
        );
        b.add_rule(
            Family::Ip,
            TABLE,
            CHAIN,
            &rewrite(proto, IP_SADDR, SPORT, port, 53),
        );
    }
    nft.apply(b)
}

/// Removes the redirect (nothing if it is not there).
pub fn remove(ns: &Netns) -> plexus_sys::Result<()> {
    let nft = Nft::open(ns)?;
    let mut b = nft.batch();
    b.destroy_table(Family::Ip, TABLE);
    nft.apply(b)
}
