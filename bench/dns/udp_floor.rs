//! The kernel's floor for a UDP DNS server: one blocking socket, one thread, every datagram
//! answered with the same 60-byte DNS response carrying the query's id. Nothing is parsed,
//! nothing allocated per datagram: what this process spends per query is what the kernel
//! charges any server for receiving one datagram and sending one back (through the same
//! 127.0.0.11 DNAT as the resolver under test, when run behind it).
//!
//! Built by bench/dns/run.sh with `rustc -O` (std only). Usage: udp-floor ADDR:PORT
use std::net::UdpSocket;

fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.11:5353".into());
    let sock = match UdpSocket::bind(&addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp-floor: binding {addr}: {e}");
            std::process::exit(1);
        }
    };
    // A well-formed response (QR, RD, RA, NOERROR): the header, one question
    // `plxb-floor-0123456789.test. A IN` and one A record (a pointer to that name, TTL 5,
    // 10.0.0.1): 12 + 32 + 16 = 60 bytes, about what the resolvers send for a sandbox's name.
    let mut reply: Vec<u8> = vec![0, 0, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    let name = b"\x15plxb-floor-0123456789\x04test\x00"; // 28 bytes
    reply.extend_from_slice(name);
    reply.extend_from_slice(&[0, 1, 0, 1]); // A IN
    reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 0, 1]);
    debug_assert_eq!(reply.len(), 60);
    let mut buf = [0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        if n < 2 {
            continue;
        }
        reply[0] = buf[0];
        reply[1] = buf[1];
        let _ = sock.send_to(&reply, peer);
    }
}
