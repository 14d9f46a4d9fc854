//! Network attachments and tables: attaching and detaching, local writes, the merge rules of
//! attachment and entry updates, and which entries are visible (and the events when that
//! changes).

use super::{
    attach_hash, attach_key, entry_update, ms, pack, unpack, Attachments, EntryEvent,
    EntryEventKind, EntryInfo, Event, Local, NetworkInfo, Node,
};
use crate::codec::{Address, AttachUpdate, EntryUpdate, Item, MAX_NAME, MAX_VALUE};
use crate::error::GossipError;
use crate::queue::BroadcastQueue;
use crate::rng::stable_hash;
use crate::table::{attach_newer, superseded, visible, Attach, Entry, Merge, Table};

impl<A: Address> Node<A> {
    pub(super) fn net_id(&mut self, name: &str) -> usize {
        if let Some(i) = self.net_ids.get(name) {
            return *i;
        }
        let i = self.net_names.len();
        self.net_ids.insert(name.to_string(), i);
        self.net_names.push(name.to_string());
        self.attach.push(Attachments::default());
        i
    }

    fn attach_of(&self, node: &A, net: &str) -> Option<Attach> {
        if *node == self.addr {
            return self.my_attach.get(net).copied();
        }
        let slot = self.members.slot(node)?;
        let id = *self.net_ids.get(net)?;
        self.attach
            .get(id)?
            .by_slot
            .get(slot as usize)
            .and_then(|v| unpack(*v))
    }

    fn emit_entry(
        &mut self,
        kind: EntryEventKind,
        net: &str,
        table: &str,
        key: &str,
        e: &Entry<A>,
    ) {
        self.emit(Event::Entry(EntryEvent {
            kind,
            network: net.to_string(),
            table: table.to_string(),
            key: key.to_string(),
            value: e.value.clone(),
            owner: e.owner,
        }));
    }

    /// Attaches this node to a network.
    pub fn join_network(&mut self, network: &str, _now: u64) -> Result<(), GossipError> {
        if network.len() > MAX_NAME {
            return Err(GossipError::TooLong("network name"));
        }
        if self.local.contains_key(network) {
            return Ok(());
        }
        let t = self.tick_clock();
        self.set_my_attach(
            network,
            Attach {
                ltime: t,
                joined: true,
            },
        );
        self.local.insert(
            network.to_string(),
            Local {
                table: Table::new(),
                queue: BroadcastQueue::new(),
                bootstrap: true,
                synced: false,
            },
        );
        self.bootstrap_sync(network);
        Ok(())
    }

    /// Whether this node's table of `network` has been compared with another attached
    /// node's since it joined (or no other node is attached once this node has joined the
    /// cluster): until then, an entry missing here may only not have arrived yet. False for
    /// a network not joined.
    pub fn network_synced(&self, network: &str) -> bool {
        self.local.get(network).is_some_and(|l| l.synced)
    }

    /// Detaches this node from a network: its entries there disappear everywhere.
    pub fn leave_network(&mut self, network: &str, _now: u64) {
        let Some(l) = self.local.remove(network) else {
            return;
        };
        let t = self.tick_clock();
        let att = self.my_attach.get(network).copied();
        for ((tb, k), e) in l.table.iter() {
            if visible(e, att, self.is_active(&e.owner)) {
                self.emit_entry(EntryEventKind::Delete, network, tb, k, e);
            }
        }
        self.set_my_attach(
            network,
            Attach {
                ltime: t,
                joined: false,
            },
        );
    }

    fn set_my_attach(&mut self, network: &str, a: Attach) {
        let old = self.my_attach.insert(network.to_string(), a);
        if let Some(o) = old {
            self.digest ^= attach_hash(&self.addr, network, o);
        }
        self.digest ^= attach_hash(&self.addr, network, a);
        let id = self.net_id(network);
        self.attach[id].dirty = true;
        let item = Item::Attach(AttachUpdate {
            node: self.addr,
            network: network.to_string(),
            ltime: a.ltime,
            joined: a.joined,
        });
        self.cluster_q
            .push(attach_key(&self.addr, network), item.to_bytes());
    }

    /// Creates or updates an entry owned by this node.
    pub fn put(
        &mut self,
        network: &str,
        table: &str,
        key: &str,
        value: &[u8],
        now: u64,
    ) -> Result<(), GossipError> {
        self.write(network, table, key, Some(value), now)
    }

    /// Deletes an entry (leaves a tombstone for the reap interval).
    pub fn delete(
        &mut self,
        network: &str,
        table: &str,
        key: &str,
        now: u64,
    ) -> Result<(), GossipError> {
        self.write(network, table, key, None, now)
    }

    fn write(
        &mut self,
        network: &str,
        table: &str,
        key: &str,
        value: Option<&[u8]>,
        now: u64,
    ) -> Result<(), GossipError> {
        if table.len() > MAX_NAME || key.len() > MAX_NAME {
            return Err(GossipError::TooLong("table or key"));
        }
        if value.is_some_and(|v| v.len() > MAX_VALUE) {
            return Err(GossipError::TooLong("value"));
        }
        if !self.local.contains_key(network) {
            return Err(GossipError::NotAttached(network.to_string()));
        }
        let t = self.tick_clock();
        let e = Entry {
            value: value.map(|v| v.to_vec()).unwrap_or_default(),
            owner: self.addr,
            ltime: t,
            deleted: value.is_none(),
            reap_at: if value.is_none() {
                now + ms(self.cfg.reap_interval)
            } else {
                0
            },
        };
        if self.store_entry(network, table, key, e, now) {
            self.gossip_soon(now);
        }
        Ok(())
    }

    /// Brings the next gossip round forward so that a change made here goes out at once
    /// instead of waiting up to a gossip interval: a new endpoint is reachable from the
    /// other hosts that much sooner. Early rounds are at least a tenth of the interval
    /// apart, so a burst of changes shares one; the regular rounds then follow from it.
    fn gossip_soon(&mut self, now: u64) {
        let spacing = (ms(self.cfg.gossip_interval) / 10).max(1);
        let at = now.max(self.last_gossip_at.saturating_add(spacing));
        self.next_gossip_at = self.next_gossip_at.min(at);
    }

    /// Stores an entry that won the merge (or is ours), queues it for gossip, emits events.
    fn store_entry(
        &mut self,
        network: &str,
        table: &str,
        key: &str,
        e: Entry<A>,
        now: u64,
    ) -> bool {
        let att = self.attach_of(&e.owner, network);
        let active = self.is_active(&e.owner);
        let Some(l) = self.local.get_mut(network) else {
            return false;
        };
        let item = Item::Entry(entry_update(table, key, &e, now));
        match l.table.merge(table, key, e.clone()) {
            Merge::Ignored => false,
            Merge::Applied(prev) => {
                l.queue.push(
                    stable_hash(&[table.as_bytes(), key.as_bytes()]),
                    item.to_bytes(),
                );
                let before = prev.as_ref().is_some_and(|p| {
                    let pa = if p.owner == e.owner {
                        att
                    } else {
                        self.attach_of(&p.owner, network)
                    };
                    visible(p, pa, self.is_active(&p.owner))
                });
                let after = visible(&e, att, active);
                match (before, after) {
                    (false, true) => {
                        self.emit_entry(EntryEventKind::Create, network, table, key, &e)
                    }
                    (true, true) => {
                        self.emit_entry(EntryEventKind::Update, network, table, key, &e)
                    }
                    (true, false) => {
                        let p = prev.unwrap_or(e);
                        self.emit_entry(EntryEventKind::Delete, network, table, key, &p)
                    }
                    (false, false) => {}
                }
                true
            }
        }
    }

    /// The visible value of an entry.
    pub fn get(&self, network: &str, table: &str, key: &str) -> Option<Vec<u8>> {
        let e = self.local.get(network)?.table.get(table, key)?;
        visible(
            e,
            self.attach_of(&e.owner, network),
            self.is_active(&e.owner),
        )
        .then(|| e.value.clone())
    }

    /// Visible entries of one table: (key, value, owner).
    pub fn entries(&self, network: &str, table: &str) -> Vec<(String, Vec<u8>, A)> {
        self.table_dump(network)
            .into_iter()
            .filter(|e| e.visible && e.table == table)
            .map(|e| (e.key, e.value, e.owner))
            .collect()
    }

    /// Every stored entry of a network (tombstones and hidden ones too).
    pub fn table_dump(&self, network: &str) -> Vec<EntryInfo<A>> {
        let Some(l) = self.local.get(network) else {
            return Vec::new();
        };
        l.table
            .iter()
            .map(|((t, k), e)| EntryInfo {
                table: t.clone(),
                key: k.clone(),
                value: e.value.clone(),
                owner: e.owner,
                ltime: e.ltime,
                deleted: e.deleted,
                visible: visible(
                    e,
                    self.attach_of(&e.owner, network),
                    self.is_active(&e.owner),
                ),
            })
            .collect()
    }

    /// Every network known, with its active attached members.
    pub fn networks(&self) -> Vec<NetworkInfo<A>> {
        let mut out = Vec::new();
        for (i, name) in self.net_names.iter().enumerate() {
            let mut nodes: Vec<A> = self.attach[i]
                .by_slot
                .iter()
                .enumerate()
                .filter(|(s, v)| {
                    unpack(**v).is_some_and(|a| a.joined) && self.members.rec(*s as u32).active()
                })
                .map(|(s, _)| self.members.addr(s as u32))
                .collect();
            let local = self.local.contains_key(name);
            if local {
                nodes.push(self.addr);
            }
            nodes.sort();
            out.push(NetworkInfo {
                name: name.clone(),
                nodes,
                local,
            });
        }
        out
    }

    /// The owner became (in)active: its visible entries appear or disappear.
    pub(super) fn owner_flip(&mut self, owner: A, now_active: bool) {
        if !self.emit_events {
            return;
        }
        let mut evs = Vec::new();
        for (net, l) in &self.local {
            let att = self.attach_of(&owner, net);
            if !matches!(att, Some(a) if a.joined) {
                continue;
            }
            for ((t, k), e) in l.table.iter() {
                if e.owner == owner && visible(e, att, true) {
                    let kind = if now_active {
                        EntryEventKind::Create
                    } else {
                        EntryEventKind::Delete
                    };
                    evs.push(EntryEvent {
                        kind,
                        network: net.clone(),
                        table: t.clone(),
                        key: k.clone(),
                        value: e.value.clone(),
                        owner,
                    });
                }
            }
        }
        for e in evs {
            self.emit(Event::Entry(e));
        }
    }

    pub(super) fn apply_attach(&mut self, u: AttachUpdate<A>, now: u64) {
        self.witness(u.ltime);
        let incoming = Attach {
            ltime: u.ltime,
            joined: u.joined,
        };
        if u.node == self.addr {
            // A record about us we do not hold (an earlier life): re-assert our truth.
            let mine = self.my_attach.get(&u.network).copied();
            if mine != Some(incoming) && mine.is_none_or(|m| m.ltime <= u.ltime) {
                let t = self.tick_clock();
                let joined = self.local.contains_key(&u.network);
                self.set_my_attach(&u.network, Attach { ltime: t, joined });
            }
            return;
        }
        if u.network.is_empty() {
            return;
        }
        let slot = self.members.ensure(u.node);
        let id = self.net_id(&u.network);
        let cur = self.attach[id]
            .by_slot
            .get(slot as usize)
            .and_then(|v| unpack(*v));
        if !attach_newer(cur, incoming) {
            return;
        }
        {
            let att = &mut self.attach[id];
            if att.by_slot.len() <= slot as usize {
                att.by_slot.resize(slot as usize + 1, 0);
            }
            att.by_slot[slot as usize] = pack(incoming);
            att.dirty = true;
        }
        if let Some(c) = cur {
            self.digest ^= attach_hash(&u.node, &u.network, c);
        }
        self.digest ^= attach_hash(&u.node, &u.network, incoming);
        let item = Item::Attach(u.clone());
        self.cluster_q
            .push(attach_key(&u.node, &u.network), item.to_bytes());
        let active = self.is_active(&u.node);
        let owner = u.node;
        let network = u.network;
        let mut evs = Vec::new();
        let mut bootstrap_with = None;
        if let Some(l) = self.local.get_mut(&network) {
            let removed = l
                .table
                .remove_where(|_, e| e.owner == owner && superseded(e, Some(incoming)));
            for ((t, k), e) in removed {
                if visible(&e, cur, active) {
                    evs.push((EntryEventKind::Delete, t, k, e));
                }
            }
            if incoming.joined {
                for ((t, k), e) in l.table.iter() {
                    if e.owner == owner
                        && visible(e, Some(incoming), active)
                        && !visible(e, cur, active)
                    {
                        evs.push((EntryEventKind::Create, t.clone(), k.clone(), e.clone()));
                    }
                }
                if l.bootstrap && active {
                    bootstrap_with = Some(owner);
                }
            }
        }
        for (kind, t, k, e) in evs {
            self.emit_entry(kind, &network, &t, &k, &e);
        }
        if let Some(peer) = bootstrap_with {
            self.sync_with(&network, peer);
        }
        let _ = now;
    }

    pub(super) fn apply_entry(&mut self, network: &str, u: EntryUpdate<A>, now: u64) {
        if !self.local.contains_key(network) {
            return;
        }
        self.witness(u.ltime);
        if u.owner == self.addr {
            let mine = self
                .local
                .get(network)
                .and_then(|l| l.table.get(&u.table, &u.key))
                .cloned();
            if mine.as_ref().is_some_and(|m| m.ltime >= u.ltime) {
                return;
            }
            // An entry of ours from an earlier life, newer than what we hold: re-assert.
            let t = self.tick_clock();
            let e = match mine {
                Some(m) if !m.deleted => Entry { ltime: t, ..m },
                _ => Entry {
                    value: Vec::new(),
                    owner: self.addr,
                    ltime: t,
                    deleted: true,
                    reap_at: now + ms(self.cfg.reap_interval),
                },
            };
            self.store_entry(network, &u.table, &u.key, e, now);
            return;
        }
        let reap = ms(self.cfg.reap_interval);
        let e = Entry {
            value: u.value,
            owner: u.owner,
            ltime: u.ltime,
            deleted: u.deleted,
            reap_at: if u.deleted {
                now + u.reap_in_ms.min(reap)
            } else {
                0
            },
        };
        if superseded(&e, self.attach_of(&u.owner, network)) {
            return;
        }
        self.store_entry(network, &u.table, &u.key, e, now);
    }
}
