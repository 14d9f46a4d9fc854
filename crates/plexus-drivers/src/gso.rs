//! How large an IPv4 packet a network's veth pairs take:
//! `plexus.bridge.gso_ipv4_max_size=auto`.
//!
//! Above 64 KiB (IPv4 "BIG TCP", Linux 6.3+) TCP between sandboxes moves fewer, larger
//! packets through the bridge and its netfilter hooks, so each hook's per-packet cost weighs
//! less. But a packet built that large and routed out through an interface that takes only
//! 64 KiB is cut into wire-sized segments in software, which costs more than it saved. So
//! `auto` goes as high as every interface traffic can leave the host by allows: the smallest
//! IPv4 limit among the host namespace's links that Plexus did not make (loopback aside:
//! what reaches it is delivered whole).
//!
//! IPv6 stays at 64 KiB: an IPv6 BIG TCP packet carries a jumbo hop-by-hop header, and
//! through conntrack and masquerade such packets crawl (measured on Linux 6.18: 64 MiB of
//! masqueraded egress took 30 s instead of a fraction of one, with the uplink taking big
//! packets or not).

use plexus_sys::rtnl::{Link, GSO_LEGACY_MAX_SIZE, GSO_MAX_SIZE, LOOPBACK_IFINDEX};

/// The IPv4 GSO/GRO limit `auto` gives a network's veth pairs, given the host namespace's
/// links and which of them Plexus made; `None` keeps the kernel's 64 KiB. Also `None` on a
/// kernel without IPv4 BIG TCP (before 6.3: its links report no IPv4 limit).
pub(crate) fn auto_ipv4_max_size(
    links: &[Link],
    made_by_plexus: impl Fn(&Link) -> bool,
) -> Option<u32> {
    let loopback = links.iter().find(|l| l.index == LOOPBACK_IFINDEX);
    loopback.and_then(|l| l.gso_ipv4_max_size)?;
    let size = links
        .iter()
        .filter(|l| l.index != LOOPBACK_IFINDEX && !made_by_plexus(l))
        .map(|l| l.gso_ipv4_max_size.unwrap_or(GSO_LEGACY_MAX_SIZE))
        .fold(GSO_MAX_SIZE, u32::min);
    (size > GSO_LEGACY_MAX_SIZE).then_some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str, v4: Option<u32>) -> Link {
        Link {
            index,
            name: name.into(),
            kind: None,
            mtu: Some(1500),
            up: true,
            master: None,
            alias: None,
            mac: None,
            tx_queues: None,
            mcast_snooping: None,
            gso_max_size: Some(GSO_LEGACY_MAX_SIZE),
            gso_ipv4_max_size: v4,
        }
    }

    fn ours(l: &Link) -> bool {
        l.name.starts_with("plx")
    }

    #[test]
    fn a_host_without_uplinks_gets_the_largest_size() {
        let lo = link(1, "lo", Some(GSO_MAX_SIZE));
        let port = link(7, "plxv0123456789a", Some(65_536));
        assert_eq!(auto_ipv4_max_size(&[lo, port], ours), Some(GSO_MAX_SIZE));
    }

    #[test]
    fn the_smallest_uplink_limit_wins_and_64k_means_none() {
        let lo = link(1, "lo", Some(GSO_MAX_SIZE));
        let nic = link(2, "eth0", Some(185_000));
        let big = link(3, "eth1", Some(GSO_MAX_SIZE));
        assert_eq!(
            auto_ipv4_max_size(&[lo.clone(), nic.clone(), big], ours),
            Some(185_000)
        );
        let legacy = link(4, "docker0", Some(65_536));
        assert_eq!(auto_ipv4_max_size(&[lo.clone(), nic, legacy], ours), None);
        // An uplink that reports no limit is taken to have the legacy one.
        let silent = link(5, "tun0", None);
        assert_eq!(auto_ipv4_max_size(&[lo, silent], ours), None);
    }

    #[test]
    fn a_kernel_without_ipv4_big_tcp_keeps_the_default() {
        let lo = link(1, "lo", None);
        assert_eq!(auto_ipv4_max_size(&[lo], ours), None);
        assert_eq!(auto_ipv4_max_size(&[], ours), None);
    }
}
