//! Remote endpoints in the kernel: for each, a static FDB entry on `vxlan0` (its MAC behind
//! its host's underlay address) and a permanent neighbour entry per address (its address at
//! its MAC, which the device's ARP/NDP proxy answers from), kept in step with the network's
//! peer table.

use std::collections::BTreeMap;
use std::net::IpAddr;

use plexus_cnm::{DriverError, TableEvent, TableEventKind};
use plexus_sys::SysError;

use super::{NetState, OverlayDriver, PeerRecord, Segment, State, PEER_TABLE};
use crate::sys_ctx;

/// Treats a missing entry as removed.
fn gone_ok(r: Result<(), SysError>) -> Result<(), SysError> {
    match r {
        Err(SysError::NotFound { .. }) => Ok(()),
        other => other,
    }
}

/// Programs `rec` (FDB entry, then neighbours); on failure, takes back what it set.
async fn program(
    segment: &Segment,
    peers: &BTreeMap<String, PeerRecord>,
    rec: &PeerRecord,
) -> Result<(), DriverError> {
    let r = async {
        segment
            .rtnl
            .set_vxlan_fdb(segment.vxlan, rec.mac, rec.vtep)
            .await?;
        for ip in rec.ips() {
            segment
                .rtnl
                .set_neighbour(segment.vxlan, ip, rec.mac)
                .await?;
        }
        Ok::<_, SysError>(())
    }
    .await;
    if let Err(e) = r {
        withdraw(segment, peers, rec).await;
        return Err(sys_ctx(format!(
            "peer {} at {}",
            plexus_sys::rtnl::format_mac(&rec.mac),
            rec.vtep
        ))(e));
    }
    Ok(())
}

/// Removes what `old` programmed, except what another peer still needs: a MAC or an address
/// `peers` (which no longer holds `old`) has too is pointed at that peer instead.
async fn withdraw(segment: &Segment, peers: &BTreeMap<String, PeerRecord>, old: &PeerRecord) {
    let (rtnl, vx) = (&segment.rtnl, segment.vxlan);
    let fdb = match peers.values().find(|p| p.mac == old.mac) {
        Some(p) => rtnl.set_vxlan_fdb(vx, p.mac, p.vtep).await,
        None => gone_ok(rtnl.delete_fdb(vx, old.mac, Some(old.vtep)).await),
    };
    if let Err(e) = fdb {
        tracing::warn!(mac = %plexus_sys::rtnl::format_mac(&old.mac), error = %e, "fdb entry not withdrawn");
    }
    for ip in old.ips() {
        let r = match peers.values().find(|p| p.ips().any(|i| i == ip)) {
            Some(p) => rtnl.set_neighbour(vx, ip, p.mac).await,
            None => gone_ok(rtnl.delete_neighbour(vx, ip).await),
        };
        if let Err(e) = r {
            tracing::warn!(%ip, error = %e, "neighbour entry not withdrawn");
        }
    }
}

/// Sets `key` to `rec` in the network's segment: nothing for a duplicate; an older record of
/// the key (the endpoint moved, or changed) is withdrawn first.
async fn upsert(net: &mut NetState, key: &str, rec: PeerRecord) -> Result<(), DriverError> {
    let Some(segment) = &net.segment else {
        return Ok(());
    };
    match net.peers.get(key) {
        Some(old) if *old == rec => return Ok(()),
        Some(old) => {
            let old = *old;
            net.peers.remove(key);
            withdraw(segment, &net.peers, &old).await;
        }
        None => {}
    }
    program(segment, &net.peers, &rec).await?;
    net.peers.insert(key.to_string(), rec);
    Ok(())
}

/// Removes `key` from the network's segment, if programmed.
async fn remove(net: &mut NetState, key: &str) {
    let Some(segment) = &net.segment else {
        return;
    };
    if let Some(old) = net.peers.remove(key) {
        withdraw(segment, &net.peers, &old).await;
        tracing::debug!(endpoint = %key, host = %old.vtep, "peer removed");
    }
}

impl OverlayDriver {
    /// Programs every entry of the network's peer table the control plane holds now (the
    /// first join of the network on this host); one that fails is logged and skipped.
    pub(super) async fn program_all(&self, net: &mut NetState) {
        let own = self.advertise();
        for (key, value, owner) in self.plane.entries(&net.info.id, PEER_TABLE) {
            if owner == own {
                continue;
            }
            match PeerRecord::decode(&value) {
                Ok(rec) if rec.vtep == own => {}
                Ok(rec) => {
                    if let Err(e) = upsert(net, &key, rec).await {
                        tracing::warn!(network = %net.info.name, endpoint = %key, error = %e, "peer not programmed");
                    }
                }
                Err(e) => {
                    tracing::warn!(network = %net.info.name, endpoint = %key, error = %e, "peer entry skipped")
                }
            }
        }
    }

    /// One event of a network's table, in the order the control plane delivers them.
    pub(super) async fn on_event(
        &self,
        st: &mut State,
        event: &TableEvent,
    ) -> Result<(), DriverError> {
        if event.table != PEER_TABLE {
            return Ok(());
        }
        let Some(net) = st.networks.get_mut(&event.network_id) else {
            tracing::debug!(network = %event.network_id, "event of a network this driver does not know");
            return Ok(());
        };
        if net.segment.is_none() {
            // No endpoint here: the first join reads the whole table.
            return Ok(());
        }
        let key = event.key.as_str();
        let decoded = PeerRecord::decode(&event.value);
        match event.kind {
            TableEventKind::Create | TableEventKind::Update => {
                let rec = decoded.map_err(|e| {
                    DriverError::Invalid(format!(
                        "entry {key} of table {PEER_TABLE} of network {}: {e}",
                        net.info.name
                    ))
                })?;
                if rec.vtep == self.advertise() {
                    // Ours (or moved here): the local endpoint needs no tunnel entry.
                    remove(net, key).await;
                    return Ok(());
                }
                upsert(net, key, rec).await
            }
            TableEventKind::Delete => {
                let stale = matches!((&decoded, net.peers.get(key)),
                    (Ok(rec), Some(now)) if rec.vtep != now.vtep || rec.mac != now.mac);
                if stale {
                    // A delete of an older record of the key (the endpoint moved since).
                    tracing::debug!(endpoint = %key, "delete of a superseded entry ignored");
                    return Ok(());
                }
                remove(net, key).await;
                Ok(())
            }
        }
    }

    /// Removes from the network's `vxlan0` the static FDB and neighbour entries no peer
    /// accounts for (left by a run that died, or added by hand), and programs again a peer
    /// whose entries are missing; returns what it changed. Until the control plane has
    /// synced the network's tables (after a restart), nothing is removed: the entries the
    /// last run programmed keep the traffic flowing until the table says what is gone.
    pub(super) async fn sweep(&self, net: &NetState) -> Vec<String> {
        let Some(segment) = &net.segment else {
            return Vec::new();
        };
        let (rtnl, vx) = (&segment.rtnl, segment.vxlan);
        let mut changed = Vec::new();
        let fdb = rtnl.fdb(vx).await.unwrap_or_default();
        let remove_stale = self.plane.synced(&net.info.id);
        for entry in fdb.iter().filter(|n| n.fixed && remove_stale) {
            let (Some(mac), Some(ip)) = (entry.mac, entry.ip) else {
                continue;
            };
            if !net.peers.values().any(|p| p.mac == mac && p.vtep == ip)
                && gone_ok(rtnl.delete_fdb(vx, mac, Some(ip)).await).is_ok()
            {
                changed.push(format!(
                    "stale fdb entry {} dst {ip}",
                    plexus_sys::rtnl::format_mac(&mac)
                ));
            }
        }
        let neighbours = rtnl.neighbours(vx).await.unwrap_or_default();
        for entry in neighbours.iter().filter(|n| n.fixed && remove_stale) {
            let Some(ip) = entry.ip.filter(|ip| !ip.is_multicast()) else {
                continue;
            };
            if !net.peers.values().any(|p| p.ips().any(|i| i == ip))
                && gone_ok(rtnl.delete_neighbour(vx, ip).await).is_ok()
            {
                changed.push(format!("stale neighbour entry {ip}"));
            }
        }
        for (key, p) in &net.peers {
            let has_fdb = fdb
                .iter()
                .any(|n| n.mac == Some(p.mac) && n.ip == Some(p.vtep));
            let has_ips = p.ips().all(|ip| {
                neighbours
                    .iter()
                    .any(|n| n.ip == Some(ip) && n.mac == Some(p.mac))
            });
            if !(has_fdb && has_ips) {
                match program(segment, &net.peers, p).await {
                    Ok(()) => changed.push(format!("peer {key} programmed again")),
                    Err(e) => tracing::warn!(endpoint = %key, error = %e, "peer not programmed"),
                }
            }
        }
        changed
    }

    /// Removes every endpoint of the host at `address` from every network.
    pub(super) async fn forget_host(
        &self,
        st: &mut State,
        address: IpAddr,
    ) -> Result<(), DriverError> {
        for net in st.networks.values_mut() {
            let keys: Vec<String> = net
                .peers
                .iter()
                .filter(|(_, p)| p.vtep == address)
                .map(|(k, _)| k.clone())
                .collect();
            for key in &keys {
                remove(net, key).await;
            }
            if !keys.is_empty() {
                tracing::info!(network = %net.info.name, host = %address, peers = keys.len(), "host forgotten");
            }
        }
        Ok(())
    }
}
