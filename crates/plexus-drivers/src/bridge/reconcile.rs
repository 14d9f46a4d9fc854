//! Making the kernel match the store: after a restart or a crash (start-up), and while
//! running (periodic: what was deleted behind Plexus's back is made again).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use plexus_cnm::{Desired, DesiredEndpoint, DriverError, LiveEndpoint, ReconcileMode, Reconciled};
use plexus_sys::rtnl::{Link, PortFlags};

use super::endpoint::Naming;
use super::{mac_of, BridgeDriver, EpState, InSandbox, NetState, State};
use crate::firewall::{NetworkRules, PortMapping};
use crate::names::{self, Marked};
use crate::sandbox::sandbox_rtnl;
use crate::sys_ctx;

fn port_name(p: &PortMapping) -> String {
    let host = p.host_ip.map(|ip| format!("{ip}:")).unwrap_or_default();
    format!(
        "port {host}{}/{} of endpoint {}",
        p.host_port,
        p.proto.name(),
        p.owner
    )
}

impl BridgeDriver {
    /// The endpoints whose join finished and whose pair still stands: their host end
    /// (named from the endpoint id) is marked and up. `join` marks the host end and brings it
    /// up last and `leave` unmarks it first, so an endpoint the store records but this set
    /// lacks was cut short by a crash (connect or disconnect), or its sandbox's namespace, and
    /// with it the pair, is gone.
    ///
    /// Each live endpoint comes with the name its interface has in the sandbox, as its join
    /// marked it (`None` for a pair marked by an older Plexus): a crash between a join that
    /// had to take another name than the record's guess and the record's correction leaves
    /// the record with the guess. And with whether it has ports published (as the firewall
    /// read them from the kernel when it was opened): a crash between its join and its
    /// external connectivity, or between revoking that and its leave, leaves none.
    pub(super) async fn live(&self) -> Result<BTreeMap<String, LiveEndpoint>, DriverError> {
        // Background deletions first: a link being deleted is not live.
        self.reaper.settle().await;
        let links = self.rtnl.links().await.map_err(sys_ctx("list links"))?;
        let publishing: BTreeSet<String> =
            self.fw.published().into_iter().map(|p| p.owner).collect();
        Ok(links
            .into_iter()
            .filter(|l| l.up)
            .filter_map(
                |l| match names::parse_alias(&self.marker, l.alias.as_deref()?) {
                    Some(Marked::Veth {
                        endpoint,
                        interface,
                        ..
                    }) if l.name == names::host_veth(&endpoint) => {
                        let published = publishing.contains(&endpoint);
                        Some((
                            endpoint,
                            LiveEndpoint {
                                interface,
                                published,
                            },
                        ))
                    }
                    _ => None,
                },
            )
            .collect())
    }

    /// Makes the kernel match the store.
    ///
    /// Each of `desired`'s networks has its bridge, addresses and firewall elements made or
    /// adopted (idempotently) and the driver's memory restored. In
    /// [`ReconcileMode::Periodic`], a bridge deleted behind Plexus's back is made again (with
    /// its addresses), a bridge or host end set down is brought up, and an endpoint whose
    /// pair is gone is plugged again into its sandbox, if that still exists, under its
    /// recorded name, with its addresses, MAC and routes. In both modes host ends off their
    /// bridge are attached again (with their port flags), and the published ports and network
    /// elements the store describes are put back where missing; then marked links whose network or
    /// endpoint the store does not know are deleted, and so are the nftables elements
    /// (bridges, subnets, published ports) that no known network or endpoint has. Other links
    /// are never touched, except one with no alias at all and a name this driver derives from
    /// an id (`plx-`, `plxv`, `plxc` and 11 hex digits): a daemon died between making and
    /// marking it. The bridge driver is the only user of Plexus's nftables network sets in its
    /// namespace.
    pub(super) async fn reconcile_with(
        &self,
        desired: &Desired,
        mode: ReconcileMode,
    ) -> Result<Reconciled, DriverError> {
        let mut st = self.state.lock().await;
        // Background deletions first, so the scan below sees the kernel as it will be.
        self.reaper.settle().await;
        let mut out = Reconciled::default();
        let known: BTreeSet<&str> = desired.networks.iter().map(|n| n.id.as_str()).collect();
        let endpoints: BTreeSet<&str> = desired
            .endpoints
            .iter()
            .map(|e| e.info.endpoint_id.as_str())
            .collect();
        // Forget what the store no longer has.
        st.networks.retain(|id, _| known.contains(id.as_str()));
        st.endpoints.retain(|id, e| {
            endpoints.contains(id.as_str()) && known.contains(e.network_id.as_str())
        });
        let auto_gso = if desired
            .networks
            .iter()
            .any(|n| !st.networks.contains_key(&n.id))
        {
            Some(self.auto_gso_ipv4_max_size().await?)
        } else {
            None
        };
        for info in &desired.networks {
            if !st.networks.contains_key(&info.id) {
                match self.create_network_locked(&mut st, info, auto_gso).await {
                    Ok(()) => out.networks.push(info.id.clone()),
                    Err(e) => {
                        tracing::warn!(network = %info.name, error = %e, "cannot restore network")
                    }
                }
            }
        }
        let links = self.rtnl.links().await.map_err(sys_ctx("list links"))?;
        if mode == ReconcileMode::Periodic {
            self.repair_bridges(&mut st, &links, &mut out).await;
            self.repair_endpoints(&mut st, &links, desired, &mut out)
                .await;
        }
        // Also at start-up: a bridge deleted while no daemon ran was just made again.
        self.reattach_ports(&st, &links, desired, &mut out).await;
        self.remove_stale_links(&links, &known, &endpoints, &mut out)
            .await;
        // After the stale links are gone: a leftover interface of a rolled-back endpoint may
        // still hold the sandbox's default route, and takes it along when deleted.
        if mode == ReconcileMode::Startup {
            self.ensure_default_routes(&st, desired, &mut out).await;
        }
        self.reconcile_firewall(&st, desired, &mut out)?;
        if !out.is_empty() {
            tracing::info!(
                ?mode,
                networks = out.networks.len(),
                endpoints = out.endpoints.len(),
                repaired = out.repaired.len(),
                removed = out.removed.len(),
                unrepaired = out.unrepaired.len(),
                "bridge driver reconciled with the store"
            );
        }
        Ok(out)
    }

    /// Makes again the bridges of known networks that are gone (deleted by hand), with their
    /// addresses and firewall elements; brings up a bridge that is down.
    async fn repair_bridges(&self, st: &mut State, links: &[Link], out: &mut Reconciled) {
        let ids: Vec<String> = st.networks.keys().cloned().collect();
        for id in ids {
            let Some(net) = st.networks.get(&id).cloned() else {
                continue;
            };
            let alias = names::bridge_alias(&self.marker, &id);
            let present = links.iter().find(|l| {
                l.name == net.bridge
                    && (l.alias.as_deref() == Some(alias.as_str())
                        || (net.foreign && self.is_users_bridge(l)))
            });
            match present {
                Some(l) if l.up => continue,
                Some(l) => {
                    match self.rtnl.set_up(l.index).await {
                        Ok(()) => out.repaired.push(format!("bridge {} up", net.bridge)),
                        Err(e) => {
                            tracing::warn!(bridge = %net.bridge, error = %e, "cannot bring the bridge up again")
                        }
                    }
                    continue;
                }
                None => {}
            }
            // Made again as a restart restores it (same name, MAC, addresses, GSO limit).
            st.networks.remove(&id);
            if let Err(e) = self
                .create_network_locked(st, &net.info, Some(net.gso_ipv4_max_size))
                .await
            {
                // Out of memory now: the next pass restores it as after a restart.
                tracing::warn!(bridge = %net.bridge, error = %e, "cannot make the deleted bridge again");
                continue;
            }
            out.repaired.push(format!("bridge {}", net.bridge));
            tracing::warn!(network = %net.info.name, bridge = %net.bridge, "bridge was deleted behind Plexus's back; made again");
        }
    }

    /// Attaches again to their network's bridge the host ends that are not on it: a deleted
    /// bridge lets its ports go (they stay up and marked), and so does `ip link set nomaster`.
    async fn reattach_ports(
        &self,
        st: &State,
        links: &[Link],
        desired: &Desired,
        out: &mut Reconciled,
    ) {
        for link in links {
            let Some(Marked::Veth {
                network, endpoint, ..
            }) = link
                .alias
                .as_deref()
                .and_then(|a| names::parse_alias(&self.marker, a))
            else {
                continue;
            };
            let Some(net) = st.networks.get(&network) else {
                continue;
            };
            if link.name != names::host_veth(&endpoint) || link.master == Some(net.bridge_index) {
                continue;
            }
            // Only the store's endpoints: the others are deleted as stale below.
            let Some(d) = desired
                .endpoints
                .iter()
                .find(|d| d.info.endpoint_id == endpoint)
            else {
                continue;
            };
            let publishes = !d.info.ports.is_empty();
            let flags = PortFlags {
                isolated: !net.opts.enable_icc,
                hairpin: self.needs_hairpin(publishes),
            };
            let attached = async {
                self.rtnl.set_master(link.index, net.bridge_index).await?;
                self.rtnl.set_port_flags(link.index, flags).await
            }
            .await;
            match attached {
                Ok(()) => out
                    .repaired
                    .push(format!("veth {} on bridge {}", link.name, net.bridge)),
                Err(e) => {
                    tracing::warn!(link = %link.name, bridge = %net.bridge, error = %e, "cannot attach an endpoint to its bridge again")
                }
            }
        }
    }

    /// Gives every sandbox that has an endpoint of a family on a non-internal network a
    /// default route of that family, when it has none: a crash between a leave that took the
    /// sandbox's default route with its interface and the hand-over to another of its
    /// networks leaves it without one. A sandbox that has one (through any of its networks)
    /// keeps it: the kernel answers "exists".
    async fn ensure_default_routes(&self, st: &State, desired: &Desired, out: &mut Reconciled) {
        let mut by_sandbox: BTreeMap<&str, Vec<&DesiredEndpoint>> = BTreeMap::new();
        for d in &desired.endpoints {
            // A handed-off interface's routes are its runtime's.
            if !d.handed_off && !d.sandbox_key.is_empty() && Path::new(&d.sandbox_key).exists() {
                by_sandbox.entry(&d.sandbox_key).or_default().push(d);
            }
        }
        for (key, eps) in by_sandbox {
            let mut wanted = Vec::new();
            for v6 in [false, true] {
                let via = eps.iter().find_map(|d| {
                    let net = st.networks.get(&d.info.network_id)?;
                    if net.info.internal {
                        return None;
                    }
                    let (has, pools) = if v6 {
                        (d.info.ipv6.is_some(), &net.info.ipv6)
                    } else {
                        (d.info.ipv4.is_some(), &net.info.ipv4)
                    };
                    let gw = pools.first().and_then(|p| p.gateway).filter(|_| has)?;
                    Some((d.interface.clone()?, gw.addr()))
                });
                wanted.extend(via);
            }
            if wanted.is_empty() {
                continue;
            }
            let rs = match sandbox_rtnl(key).await {
                Ok(rs) => rs,
                Err(e) => {
                    tracing::warn!(sandbox = %key, error = %e, "cannot check the sandbox's default routes");
                    continue;
                }
            };
            for (ifname, gw) in wanted {
                let link = match rs.link(&ifname).await {
                    Ok(Some(l)) => l,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(sandbox = %key, interface = %ifname, error = %e, "cannot look up the sandbox's interface");
                        continue;
                    }
                };
                let route = plexus_sys::rtnl::Route {
                    destination: None,
                    gateway: Some(gw),
                    oif: Some(link.index),
                };
                match rs.add_route(&route).await {
                    Ok(()) => {
                        tracing::warn!(sandbox = %key, gateway = %gw, "the sandbox had no default route (a crash during a disconnect); given one again");
                        out.repaired
                            .push(format!("default route via {gw} in {key}"));
                    }
                    Err(plexus_sys::SysError::Exists { .. }) => {}
                    Err(e) => {
                        tracing::warn!(sandbox = %key, gateway = %gw, error = %e, "cannot give the sandbox a default route")
                    }
                }
            }
        }
    }

    /// Plugs again the endpoints whose host end is gone (the pair was deleted by hand: either
    /// end takes the other along) into their sandboxes, when those still exist; brings up a
    /// host end that was set down.
    async fn repair_endpoints(
        &self,
        st: &mut State,
        links: &[Link],
        desired: &Desired,
        out: &mut Reconciled,
    ) {
        let present: BTreeMap<&str, &Link> = links.iter().map(|l| (l.name.as_str(), l)).collect();
        for d in &desired.endpoints {
            let id = &d.info.endpoint_id;
            let host_name = names::host_veth(id);
            if let Some(link) = present.get(host_name.as_str()) {
                // Set down by hand: up again (a join brings it up with its mark, in one
                // request, so a marked host end that is down was not left by Plexus).
                if !link.up {
                    match self.rtnl.set_up(link.index).await {
                        Ok(()) => out.repaired.push(format!("veth {host_name} up")),
                        Err(e) => {
                            tracing::warn!(link = %host_name, error = %e, "cannot bring the host end up again")
                        }
                    }
                }
                continue;
            }
            let Some(net) = st.networks.get(&d.info.network_id).cloned() else {
                continue;
            };
            match self.repair_endpoint(st, &net, d).await {
                Ok(name) => {
                    tracing::warn!(endpoint = %id, sandbox = %d.sandbox_key, interface = %name, "endpoint's interface was deleted behind Plexus's back; made again");
                    out.endpoints.push(id.clone());
                }
                Err(why) => {
                    tracing::debug!(endpoint = %id, %why, "endpoint not repaired");
                    out.unrepaired.insert(id.clone(), why);
                }
            }
        }
    }

    /// Makes one endpoint's pair again, as its join made it; returns the interface's name or
    /// why it could not.
    async fn repair_endpoint(
        &self,
        st: &mut State,
        net: &NetState,
        d: &DesiredEndpoint,
    ) -> Result<String, String> {
        let id = &d.info.endpoint_id;
        let key = &d.sandbox_key;
        if d.handed_off {
            return Err(format!(
                "its interface was handed over to the runtime of {key:?}, which alone configures it"
            ));
        }
        if key.is_empty() || !Path::new(key).exists() {
            return Err(format!("its sandbox's namespace {key:?} is gone"));
        }
        let name = d
            .interface
            .as_deref()
            .ok_or("its record names no interface")?;
        let ep = match st.endpoints.get(id) {
            Some(ep) => ep.clone(),
            // A restarted daemon keeps no endpoints in memory: from the record.
            None => {
                let (ports, _) = self.mappings(net, &d.info).map_err(|e| e.to_string())?;
                EpState {
                    network_id: d.info.network_id.clone(),
                    ipv4: d.info.ipv4,
                    ipv6: d.info.ipv6,
                    mac: mac_of(&d.info).map_err(|e| e.to_string())?,
                    // Published by the firewall pass that follows.
                    published: !ports.is_empty(),
                    ports,
                    joined: None,
                    gateways: Vec::new(),
                }
            }
        };
        let rs = sandbox_rtnl(key)
            .await
            .map_err(|e| format!("sandbox {key}: {e}"))?;
        let (name, ifindex, gateways) = self
            .plug(net, &ep, id, &rs, Naming::Exact(name))
            .await
            .map_err(|e| e.to_string())?;
        let e = st.endpoints.entry(id.clone()).or_insert(ep);
        e.joined = Some(InSandbox {
            key: key.clone(),
            ifname: name.clone(),
            ifindex,
            handed_off: false,
        });
        e.gateways = gateways;
        Ok(name)
    }

    /// Deletes the marked links whose network or endpoint the store does not know, and the
    /// unaliased ones with a name this driver derives (made, not yet marked, when a daemon
    /// died).
    async fn remove_stale_links(
        &self,
        links: &[Link],
        known: &BTreeSet<&str>,
        endpoints: &BTreeSet<&str>,
        out: &mut Reconciled,
    ) {
        for link in links {
            let Some(mark) = link
                .alias
                .as_deref()
                .and_then(|a| names::parse_alias(&self.marker, a))
            else {
                if link.alias.is_none() && names::is_derived_name(&link.name, link.kind.as_deref())
                {
                    match self.delete_link(link.index).await {
                        Ok(()) => out.removed.push(format!("link {}", link.name)),
                        Err(e) => {
                            tracing::warn!(link = %link.name, error = %e, "cannot delete unmarked link")
                        }
                    }
                }
                continue;
            };
            let stale = match &mark {
                Marked::Bridge { network } => !known.contains(network.as_str()),
                Marked::Veth {
                    network, endpoint, ..
                } => !known.contains(network.as_str()) || !endpoints.contains(endpoint.as_str()),
                // Another driver's kind: not ours to judge.
                Marked::Other { .. } => false,
            };
            if !stale {
                continue;
            }
            let r = match mark {
                Marked::Bridge { .. } => self.remove_bridge_link(link).await,
                _ => self.delete_link(link.index).await,
            };
            match r {
                Ok(()) => out.removed.push(format!("link {}", link.name)),
                Err(e) => tracing::warn!(link = %link.name, error = %e, "cannot delete stale link"),
            }
        }
    }

    /// One firewall batch: the known networks' elements and the known endpoints' published
    /// ports (from their records) put back where missing, every other Plexus element removed.
    fn reconcile_firewall(
        &self,
        st: &State,
        desired: &Desired,
        out: &mut Reconciled,
    ) -> Result<(), DriverError> {
        let before = self.fw.state().map_err(sys_ctx("firewall state"))?;
        let rules: Vec<NetworkRules> = st.networks.values().map(NetState::rules).collect();
        let mut ports: Vec<PortMapping> = Vec::new();
        for d in &desired.endpoints {
            let id = &d.info.endpoint_id;
            let mapped = match st.networks.get(&d.info.network_id) {
                Some(net) => self.mappings(net, &d.info).map(|(m, _)| m),
                None => Err(DriverError::Failed("its network is not restored".into())),
            };
            match mapped {
                Ok(m) => ports.extend(m),
                Err(e) => {
                    // Keep what the kernel has for it rather than unpublish on a doubt.
                    tracing::warn!(endpoint = %id, error = %e, "cannot map the recorded ports; keeping the kernel's");
                    ports.extend(before.ports.iter().filter(|p| &p.owner == id).cloned());
                }
            }
        }
        let removed = self
            .fw
            .reconcile(&rules, &ports)
            .map_err(sys_ctx("firewall reconcile"))?;
        for r in &rules {
            if !before.bridges.contains(&r.bridge) {
                out.repaired
                    .push(format!("firewall elements of bridge {}", r.bridge));
            }
        }
        out.repaired.extend(
            ports
                .iter()
                .filter(|p| !before.ports.contains(p))
                .map(port_name),
        );
        out.removed.extend(
            removed
                .bridges
                .iter()
                .map(|b| format!("firewall elements of bridge {b}")),
        );
        out.removed.extend(
            removed
                .subnets
                .iter()
                .map(|(a, len)| format!("firewall subnet {a}/{len}")),
        );
        out.removed.extend(removed.ports.iter().map(port_name));
        Ok(())
    }
}
