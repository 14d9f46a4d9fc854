//! One netlink request and its first answer, for the probes of protocols Plexus does not
//! otherwise speak (generic netlink, xfrm).

use std::io;

use netlink_sys::{Socket, SocketAddr};

use crate::netns::Netns;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 2;

/// The kernel's first answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// An acknowledgement: done.
    Ack,
    /// An error, as a positive errno.
    Error(i32),
    /// A message of this type (the reply of a `GET`).
    Message(u16),
}

/// Sends one message of `ty` with `flags` (plus request and ack) and `payload` on a
/// `protocol` socket made inside `ns`, and returns the first answer.
pub(super) fn ask(
    ns: &Netns,
    protocol: isize,
    ty: u16,
    flags: u16,
    payload: &[u8],
) -> Result<Answer, String> {
    let mut msg = Vec::with_capacity(16 + payload.len());
    let len = u32::try_from(16 + payload.len()).map_err(|_| "request too large".to_string())?;
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel's
    msg.extend_from_slice(payload);
    let exchange = move || -> io::Result<Vec<u8>> {
        let mut s = Socket::new(protocol)?;
        s.bind_auto()?;
        s.connect(&SocketAddr::new(0, 0))?;
        nix::sys::socket::setsockopt(
            &s,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(5, 0),
        )
        .map_err(io::Error::from)?;
        s.send(&msg, 0)?;
        let mut rx = Vec::with_capacity(8192);
        s.recv(&mut rx, 0)?;
        Ok(rx)
    };
    let rx = ns
        .run(exchange)
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("netlink protocol {protocol}: {e}"))?;
    if rx.len() < 16 {
        return Err("a short netlink answer".into());
    }
    let answer_ty = u16::from_ne_bytes([rx[4], rx[5]]);
    if answer_ty != NLMSG_ERROR {
        return Ok(Answer::Message(answer_ty));
    }
    let code = rx
        .get(16..20)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| "a short netlink error".to_string())?;
    Ok(if code == 0 {
        Answer::Ack
    } else {
        Answer::Error(-code)
    })
}

/// The text of an errno.
pub(super) fn errno_text(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

/// Appends a netlink attribute, 4-byte aligned.
pub(super) fn put_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    while buf.len() % 4 != 0 {
        buf.push(0);
    }
}
