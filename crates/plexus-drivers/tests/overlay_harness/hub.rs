//! An in-memory control plane shared by the simulated hosts: network-scoped tables, and
//! their events delivered to every member host's driver in order (through `event_notify`, as
//! the daemon's controller will), when the test says so ([`Hub::deliver`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use plexus_cnm::{ControlPlane, ControlPlaneError, Driver, TableEvent, TableEventKind};
use plexus_drivers::OverlayDriver;

type Key = (String, String, String);

#[derive(Default)]
struct HubState {
    /// (network, table, key) → (value, owner).
    entries: BTreeMap<Key, (Vec<u8>, IpAddr)>,
    /// Hosts receiving each network's tables.
    members: BTreeMap<String, BTreeSet<IpAddr>>,
    /// Events not yet delivered: (to, event).
    queue: VecDeque<(IpAddr, TableEvent)>,
    drivers: BTreeMap<IpAddr, Weak<OverlayDriver>>,
    /// Every event delivered, for assertions: (to, kind, key).
    delivered: Vec<(IpAddr, TableEventKind, String)>,
}

/// The shared control plane.
#[derive(Default)]
pub struct Hub {
    state: Mutex<HubState>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The control plane as the host at `addr` sees it.
    pub fn plane(self: &Arc<Self>, addr: IpAddr) -> Arc<FakePlane> {
        Arc::new(FakePlane {
            hub: self.clone(),
            addr,
        })
    }

    /// Events for `addr` go to `driver`.
    pub fn register(&self, addr: IpAddr, driver: &Arc<OverlayDriver>) {
        self.lock().drivers.insert(addr, Arc::downgrade(driver));
    }

    /// Delivers every queued event, in order, to its host's driver; a driver's error fails
    /// the test.
    pub async fn deliver(&self) {
        loop {
            let next = {
                let mut st = self.lock();
                let next = st.queue.pop_front();
                if let Some((to, e)) = &next {
                    st.delivered.push((*to, e.kind, e.key.clone()));
                }
                next.map(|(to, e)| (st.drivers.get(&to).and_then(Weak::upgrade), e))
            };
            let Some((driver, event)) = next else { return };
            if let Some(driver) = driver {
                if let Err(e) = driver.event_notify(&event).await {
                    panic!("event_notify {event:?}: {e}");
                }
            }
        }
    }

    /// The host at `addr` died: it stops receiving every network's tables and its entries
    /// are withdrawn (deletes queued for the others), as the gossip layer does once a host is
    /// declared dead. Its events not yet delivered are dropped.
    pub fn kill(self: &Arc<Self>, addr: IpAddr) {
        let networks: Vec<String> = {
            let mut st = self.lock();
            st.queue.retain(|(to, _)| *to != addr);
            st.drivers.remove(&addr);
            st.members
                .iter()
                .filter(|(_, m)| m.contains(&addr))
                .map(|(n, _)| n.clone())
                .collect()
        };
        let plane = self.plane(addr);
        for n in networks {
            plane.leave_network(&n);
        }
    }

    /// Every entry of `network`'s `table`: key → (value, owner).
    pub fn table(&self, network: &str, table: &str) -> BTreeMap<String, (Vec<u8>, IpAddr)> {
        self.lock()
            .entries
            .iter()
            .filter(|((n, t, _), _)| n == network && t == table)
            .map(|((_, _, k), v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Takes the queued events, in order, for the caller to deliver (through a controller's
    /// `table_event`, say).
    pub fn take(&self) -> Vec<(IpAddr, TableEvent)> {
        let mut st = self.lock();
        let events: Vec<(IpAddr, TableEvent)> = st.queue.drain(..).collect();
        for (to, e) in &events {
            st.delivered.push((*to, e.kind, e.key.clone()));
        }
        events
    }

    /// The hosts receiving `network`'s tables.
    pub fn members(&self, network: &str) -> BTreeSet<IpAddr> {
        self.lock()
            .members
            .get(network)
            .cloned()
            .unwrap_or_default()
    }

    /// How many events were delivered to `to`.
    pub fn delivered_to(&self, to: IpAddr) -> usize {
        self.lock().delivered.iter().filter(|d| d.0 == to).count()
    }

    fn publish(st: &mut HubState, network: &str, event: TableEvent) {
        for to in st.members.get(network).cloned().unwrap_or_default() {
            st.queue.push_back((to, event.clone()));
        }
    }
}

/// One host's view of the [`Hub`].
pub struct FakePlane {
    hub: Arc<Hub>,
    addr: IpAddr,
}

impl ControlPlane for FakePlane {
    fn advertise_addr(&self) -> IpAddr {
        self.addr
    }

    fn join_network(&self, network_id: &str) -> Result<(), ControlPlaneError> {
        self.hub
            .lock()
            .members
            .entry(network_id.to_string())
            .or_default()
            .insert(self.addr);
        Ok(())
    }

    fn leave_network(&self, network_id: &str) {
        let mut st = self.hub.lock();
        if let Some(m) = st.members.get_mut(network_id) {
            m.remove(&self.addr);
        }
        let ours: Vec<Key> = st
            .entries
            .iter()
            .filter(|((n, _, _), (_, owner))| n == network_id && *owner == self.addr)
            .map(|(k, _)| k.clone())
            .collect();
        for k in ours {
            if let Some((value, _)) = st.entries.remove(&k) {
                let event = TableEvent {
                    kind: TableEventKind::Delete,
                    network_id: k.0.clone(),
                    table: k.1.clone(),
                    key: k.2.clone(),
                    value,
                };
                Hub::publish(&mut st, network_id, event);
            }
        }
    }

    fn put(
        &self,
        network_id: &str,
        table: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), ControlPlaneError> {
        let mut st = self.hub.lock();
        let k = (network_id.to_string(), table.to_string(), key.to_string());
        let previous = st.entries.insert(k, (value.clone(), self.addr));
        let kind = match previous {
            None => TableEventKind::Create,
            Some(_) => TableEventKind::Update,
        };
        let event = TableEvent {
            kind,
            network_id: network_id.to_string(),
            table: table.to_string(),
            key: key.to_string(),
            value,
        };
        Hub::publish(&mut st, network_id, event);
        Ok(())
    }

    fn delete(&self, network_id: &str, table: &str, key: &str) -> Result<(), ControlPlaneError> {
        let mut st = self.hub.lock();
        let k = (network_id.to_string(), table.to_string(), key.to_string());
        if let Some((value, _)) = st.entries.remove(&k) {
            let event = TableEvent {
                kind: TableEventKind::Delete,
                network_id: network_id.to_string(),
                table: table.to_string(),
                key: key.to_string(),
                value,
            };
            Hub::publish(&mut st, network_id, event);
        }
        Ok(())
    }

    fn entries(&self, network_id: &str, table: &str) -> Vec<(String, Vec<u8>, IpAddr)> {
        self.hub
            .lock()
            .entries
            .iter()
            .filter(|((n, t, _), _)| n == network_id && t == table)
            .map(|((_, _, k), (v, owner))| (k.clone(), v.clone(), *owner))
            .collect()
    }
}
