//! Kernel parts Plexus reaches through other interfaces than rtnetlink and nf_tables: IPVS
//! (a generic netlink family), IPsec ESP states (xfrm netlink) and TUN devices
//! (`/dev/net/tun`). Each is tried for real in the scratch namespace.

use std::os::fd::AsRawFd;

use super::ask::{ask, errno_text, put_attr, Answer};
use super::{Feature, Outcome};
use crate::netns::Netns;

const NETLINK_XFRM: isize = 6;
const NETLINK_GENERIC: isize = 16;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

/// IPVS: does generic netlink know the `IPVS` family (`ipvsadm`'s interface)?
pub(super) fn ipvs(ns: &Netns) -> (Feature, Outcome) {
    const GENL_ID_CTRL: u16 = 0x10;
    const CTRL_CMD_GETFAMILY: u8 = 3;
    const CTRL_ATTR_FAMILY_NAME: u16 = 2;
    let mut payload = vec![CTRL_CMD_GETFAMILY, 1, 0, 0];
    put_attr(&mut payload, CTRL_ATTR_FAMILY_NAME, b"IPVS\0");
    let outcome = match ask(ns, NETLINK_GENERIC, GENL_ID_CTRL, 0, &payload) {
        Ok(Answer::Message(_)) | Ok(Answer::Ack) => Outcome::Present,
        Ok(Answer::Error(e)) if e == nix::libc::ENOENT => {
            Outcome::Missing("generic netlink has no IPVS family".into())
        }
        Ok(Answer::Error(e)) => Outcome::Missing(format!("IPVS family lookup: {}", errno_text(e))),
        Err(e) => Outcome::Missing(e),
    };
    (Feature::Ipvs, outcome)
}

/// The AEAD Docker's encrypted overlay uses, and its key (128-bit AES key, 32-bit salt).
const AEAD: &str = "rfc4106(gcm(aes))";
const AEAD_KEY: [u8; 20] = [7; 20];
const AEAD_ICV_BITS: u32 = 128;

/// `struct xfrm_usersa_info` for an IPv4 ESP state in transport mode between two documentation
/// addresses (the layout of `include/uapi/linux/xfrm.h` on 64-bit Linux).
fn usersa_info() -> Vec<u8> {
    const AF_INET: u16 = 2;
    const IPPROTO_ESP: u8 = 50;
    const XFRM_INF: u64 = u64::MAX;
    let (src, dst) = ([192, 0, 2, 1], [192, 0, 2, 2]);
    let mut b = Vec::with_capacity(224);
    // xfrm_selector (56): addresses, ports and masks zero (any); family; prefixes; proto;
    // ifindex; user.
    b.extend_from_slice(&[0; 40]);
    b.extend_from_slice(&AF_INET.to_ne_bytes());
    b.extend_from_slice(&[0; 14]);
    // xfrm_id (24): daddr, spi, proto.
    let mut daddr = [0u8; 16];
    daddr[..4].copy_from_slice(&dst);
    b.extend_from_slice(&daddr);
    b.extend_from_slice(&0x0000_1000u32.to_be_bytes());
    b.push(IPPROTO_ESP);
    b.extend_from_slice(&[0; 3]);
    // saddr (16).
    let mut saddr = [0u8; 16];
    saddr[..4].copy_from_slice(&src);
    b.extend_from_slice(&saddr);
    // xfrm_lifetime_cfg (64): no byte or packet limit, no expiry.
    for _ in 0..4 {
        b.extend_from_slice(&XFRM_INF.to_ne_bytes());
    }
    b.extend_from_slice(&[0; 32]);
    // xfrm_lifetime_cur (32), xfrm_stats (12), seq.
    b.extend_from_slice(&[0; 48]);
    // reqid, family, mode (transport), replay_window, flags.
    b.extend_from_slice(&1u32.to_ne_bytes());
    b.extend_from_slice(&AF_INET.to_ne_bytes());
    b.extend_from_slice(&[0, 0, 0]);
    while b.len() % std::mem::align_of::<u64>() != 0 {
        b.push(0);
    }
    b
}

/// IPsec ESP: can an ESP state (Docker's: `rfc4106(gcm(aes))`, transport mode) be added?
pub(super) fn esp(ns: &Netns) -> (Feature, Outcome) {
    const XFRM_MSG_NEWSA: u16 = 0x10;
    const XFRMA_ALG_AEAD: u16 = 18;
    let mut payload = usersa_info();
    let mut aead = [0u8; 64].to_vec();
    aead[..AEAD.len()].copy_from_slice(AEAD.as_bytes());
    aead.extend_from_slice(&(AEAD_KEY.len() as u32 * 8).to_ne_bytes());
    aead.extend_from_slice(&AEAD_ICV_BITS.to_ne_bytes());
    aead.extend_from_slice(&AEAD_KEY);
    put_attr(&mut payload, XFRMA_ALG_AEAD, &aead);
    let outcome = match ask(
        ns,
        NETLINK_XFRM,
        XFRM_MSG_NEWSA,
        NLM_F_CREATE | NLM_F_EXCL,
        &payload,
    ) {
        Ok(Answer::Ack) | Ok(Answer::Message(_)) => Outcome::Present,
        Ok(Answer::Error(e)) if e == nix::libc::EPROTONOSUPPORT => {
            Outcome::Missing("xfrm refused an ESP state: no ESP for IPv4".into())
        }
        Ok(Answer::Error(e)) if e == nix::libc::ENOSYS => {
            Outcome::Missing(format!(
                "xfrm refused an ESP state with {AEAD}: the kernel lacks that cipher (and perhaps ESP itself)"
            ))
        }
        Ok(Answer::Error(e)) => {
            Outcome::Missing(format!("xfrm refused an ESP state: {}", errno_text(e)))
        }
        Err(e) => Outcome::Missing(format!("no xfrm netlink: {e}")),
    };
    (Feature::Esp, outcome)
}

mod tun_ioctl {
    /// `struct ifreq` with the `ifr_flags` member.
    #[repr(C)]
    pub struct IfReq {
        pub name: [u8; 16],
        pub flags: i16,
        pub pad: [u8; 22],
    }
    // TUNSETIFF: _IOW('T', 202, int).
    nix::ioctl_write_ptr_bad!(tunsetiff, 0x4004_54ca, IfReq);
}

/// TUN: can `/dev/net/tun` make a device?
pub(super) fn tun(ns: &Netns) -> (Feature, Outcome) {
    const IFF_TUN: i16 = 0x0001;
    const IFF_NO_PI: i16 = 0x1000;
    let make = || -> Result<(), String> {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| format!("/dev/net/tun: {e}"))?;
        let mut req = tun_ioctl::IfReq {
            name: [0; 16],
            flags: IFF_TUN | IFF_NO_PI,
            pad: [0; 22],
        };
        req.name[..8].copy_from_slice(b"probetun");
        // SAFETY: TUNSETIFF reads a `struct ifreq`, which `req` is, alive for the call. The
        // device goes when `dev` is closed.
        unsafe { tun_ioctl::tunsetiff(dev.as_raw_fd(), &req) }
            .map(|_| ())
            .map_err(|e| format!("TUNSETIFF: {e}"))
    };
    let outcome = match ns.run(make) {
        Ok(Ok(())) => Outcome::Present,
        Ok(Err(e)) => Outcome::Missing(e),
        Err(e) => Outcome::Missing(e.to_string()),
    };
    (Feature::Tun, outcome)
}

#[cfg(test)]
mod tests {
    #[test]
    fn usersa_info_has_the_kernel_size() {
        // sizeof(struct xfrm_usersa_info) on 64-bit Linux.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(super::usersa_info().len(), 224);
    }
}
