//! DHCP messages in Ethernet frames, both ways, and the socket filter that keeps only DHCP
//! client traffic (pure functions: no I/O).
//!
//! The client sends and receives whole frames on a packet socket (see `socket.rs` for why), so
//! it builds the IPv4 and UDP headers itself and checks them on the way in.

use std::net::Ipv4Addr;

/// The DHCP client's port.
pub const CLIENT_PORT: u16 = 68;
/// The DHCP server's port.
pub const SERVER_PORT: u16 = 67;
/// The Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const UDP_LEN: usize = 8;
const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_UDP: u8 = 17;

/// A frame from a DHCP server, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received<'a> {
    /// The Ethernet source: the server's (or its relay's) MAC.
    pub src_mac: [u8; 6],
    /// The IPv4 source.
    pub src_ip: Ipv4Addr,
    /// The DHCP message.
    pub payload: &'a [u8],
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in chunks {
        let mut it = chunk.chunks(2);
        for pair in &mut it {
            let word = match pair {
                [a, b] => u16::from_be_bytes([*a, *b]),
                [a] => u16::from_be_bytes([*a, 0]),
                _ => 0,
            };
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame carrying `payload` from the client's port at `src_ip` (`0.0.0.0` while
/// it holds no address) to the server's port at `dst_ip`.
pub fn encode(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = (UDP_LEN + payload.len()) as u16;
    let ip_len = IP_LEN as u16 + udp_len;
    let mut f = Vec::with_capacity(ETH_LEN + usize::from(ip_len));
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let mut ip = [0u8; IP_LEN];
    ip[0] = 0x45; // version 4, 5 words
    ip[1] = 0x10; // low delay, as DHCP clients do
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64; // TTL
    ip[9] = PROTO_UDP;
    ip[12..16].copy_from_slice(&src_ip.octets());
    ip[16..20].copy_from_slice(&dst_ip.octets());
    let sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut udp = [0u8; UDP_LEN];
    udp[0..2].copy_from_slice(&CLIENT_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&SERVER_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src_ip.octets());
    pseudo[4..8].copy_from_slice(&dst_ip.octets());
    pseudo[9] = PROTO_UDP;
    pseudo[10..12].copy_from_slice(&udp_len.to_be_bytes());
    let mut sum = checksum(&[&pseudo, &udp, payload]);
    if sum == 0 {
        sum = 0xffff;
    }
    udp[6..8].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&udp);
    f.extend_from_slice(payload);
    f
}

/// The DHCP message of a frame to the client's port; `None` for anything else (another
/// protocol, a fragment, a bad header checksum, a truncated frame).
pub fn decode(frame: &[u8]) -> Option<Received<'_>> {
    let eth = frame.get(..ETH_LEN)?;
    if u16::from_be_bytes([eth[12], eth[13]]) != ETHERTYPE_IPV4 {
        return None;
    }
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&eth[6..12]);
    let ip = &frame[ETH_LEN..];
    let first = *ip.first()?;
    let ihl = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || ihl < IP_LEN || ip.len() < ihl + UDP_LEN {
        return None;
    }
    let header = &ip[..ihl];
    let flags_frag = u16::from_be_bytes([header[6], header[7]]);
    if header[9] != PROTO_UDP || flags_frag & 0x3fff != 0 || checksum(&[header]) != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let ip = ip.get(..total)?;
    let udp = &ip[ihl..];
    if u16::from_be_bytes([udp[2], udp[3]]) != CLIENT_PORT {
        return None;
    }
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    let payload = udp.get(UDP_LEN..udp_len)?;
    Some(Received {
        src_mac,
        src_ip: Ipv4Addr::new(header[12], header[13], header[14], header[15]),
        payload,
    })
}

/// One instruction of a classic BPF program (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpfInsn {
    /// The opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// The constant.
    pub k: u32,
}

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> BpfInsn {
    BpfInsn { code, jt, jf, k }
}

// Classic BPF opcodes (linux/filter.h).
const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LDX_B_MSH: u16 = 0xb1;
const LD_H_IND: u16 = 0x48;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

/// The socket filter: IPv4, UDP, not a fragment, to port 68 (what `tcpdump -dd 'ip and udp
/// dst port 68'` gives, less its IPv6 branch). Everything else on the parent stays in the
/// kernel.
pub const FILTER: [BpfInsn; 10] = [
    insn(LD_H_ABS, 0, 0, 12),                   // ethertype
    insn(JEQ_K, 0, 8, ETHERTYPE_IPV4 as u32),   // IPv4?
    insn(LD_B_ABS, 0, 0, 23),                   // protocol
    insn(JEQ_K, 0, 6, PROTO_UDP as u32),        // UDP?
    insn(LD_H_ABS, 0, 0, 20),                   // flags, fragment offset
    insn(JSET_K, 4, 0, 0x1fff),                 // a fragment?
    insn(LDX_B_MSH, 0, 0, ETH_LEN as u32),      // x = IP header length
    insn(LD_H_IND, 0, 0, (ETH_LEN + 2) as u32), // UDP destination port
    insn(JEQ_K, 0, 1, CLIENT_PORT as u32),      // 68?
    insn(RET_K, 0, 0, 0x0004_0000),             // keep (up to 256 KiB)
];

/// The filter's last instruction, taken when a test fails: drop.
pub const FILTER_DROP: BpfInsn = insn(RET_K, 0, 0, 0);

/// [`FILTER`] with its drop instruction: the whole program.
pub fn filter_program() -> Vec<BpfInsn> {
    let mut p = FILTER.to_vec();
    p.push(FILTER_DROP);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic BPF program (only the instructions [`FILTER`] uses).
    fn run(prog: &[BpfInsn], pkt: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let byte = |i: usize| u32::from(pkt.get(i).copied().unwrap_or(0));
        let half = |i: usize| byte(i) << 8 | byte(i + 1);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_H_ABS => a = half(i.k as usize),
                LD_B_ABS => a = byte(i.k as usize),
                LD_H_IND => a = half((x + i.k) as usize),
                LDX_B_MSH => x = (byte(i.k as usize) & 0xf) * 4,
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                RET_K => return i.k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    /// A frame from the server to the client's port (the client's encoder with the ports
    /// swapped).
    fn to_client(payload: &[u8]) -> Vec<u8> {
        let mut f = encode(
            [2, 0, 0, 0, 0, 1],
            BROADCAST_MAC,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::BROADCAST,
            payload,
        );
        f.swap(34, 36);
        f.swap(35, 37);
        f
    }

    #[test]
    fn a_frame_round_trips_with_valid_checksums() {
        let payload = b"hello dhcp";
        let f = encode(
            [2, 0, 0, 0, 0, 7],
            BROADCAST_MAC,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            payload,
        );
        assert_eq!(f.len(), 14 + 20 + 8 + payload.len());
        assert_eq!(checksum(&[&f[14..34]]), 0, "IP header checksum");
        let mut pseudo = vec![0, 0, 0, 0, 255, 255, 255, 255, 0, 17];
        pseudo.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        assert_eq!(checksum(&[&pseudo, &f[34..]]), 0, "UDP checksum");
        // Sent to port 67: not for a client.
        assert!(decode(&f).is_none());
        let back = to_client(payload);
        let r = decode(&back).unwrap();
        assert_eq!(r.payload, payload);
        assert_eq!(r.src_mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(r.src_ip, Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn bad_frames_are_refused() {
        let good = to_client(b"x");
        let mut bad_sum = good.clone();
        bad_sum[24] ^= 1;
        let mut fragment = good.clone();
        fragment[21] = 1;
        let mut tcp = good.clone();
        tcp[23] = 6;
        for f in [&bad_sum, &fragment, &tcp, &good[..30].to_vec()] {
            assert!(decode(f).is_none());
        }
    }

    #[test]
    fn the_filter_keeps_only_udp_to_port_68() {
        let prog = filter_program();
        let good = to_client(b"x");
        assert_ne!(run(&prog, &good), 0);
        let mut to_server = good.clone();
        to_server.swap(34, 36);
        to_server.swap(35, 37);
        assert_eq!(run(&prog, &to_server), 0);
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(run(&prog, &arp), 0);
        let mut fragment = good.clone();
        fragment[21] = 1;
        assert_eq!(run(&prog, &fragment), 0);
        let mut tcp = good;
        tcp[23] = 6;
        assert_eq!(run(&prog, &tcp), 0);
    }
}
