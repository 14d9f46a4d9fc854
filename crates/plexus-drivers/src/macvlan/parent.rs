//! A network's parent in the host namespace: the interface `-o parent` names, an 802.1q
//! sub-interface the driver makes, or a parent that goes nowhere (a dummy link, or a veth pair
//! of the driver's own for `--internal` where the kernel has no dummy links).

use plexus_cnm::{DriverError, NetworkInfo};
use plexus_sys::probe::Feature;
use plexus_sys::{sysctl, SysError};

use super::options::{LanOptions, ParentName};
use super::{MacvlanDriver, NetState, State};
use crate::names::{self, Marked};
use crate::sys_ctx;

/// Who made a network's parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Made {
    /// The host's (named by `-o parent`, existing): never changed or deleted.
    Given,
    /// An 802.1q sub-interface the driver made.
    Vlan,
    /// A dummy link the driver made.
    Dummy,
    /// A veth pair the driver made (`--internal` without dummy links).
    Veth,
}

impl Made {
    /// The kind in the mark of a parent the driver made; `None` for [`Made::Given`].
    fn mark(self) -> Option<&'static str> {
        match self {
            Made::Given => None,
            Made::Vlan => Some("vlan"),
            Made::Dummy => Some("dummy"),
            Made::Veth => Some("lanparent"),
        }
    }
}

/// A network's parent: its name in the host namespace and who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Parent {
    pub(super) name: String,
    pub(super) made: Made,
}

/// The marks parents carry: `vlan`, `dummy`, `lanparent`.
pub(super) const PARENT_MARKS: [&str; 3] = ["vlan", "dummy", "lanparent"];

/// The dummy parent of a network without `-o parent`: `dm-` and 12 characters of its id
/// (Docker's name).
fn dummy_name(network: &str) -> String {
    let head: String = network.chars().take(12).collect();
    if head.len() == 12 && head.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("dm-{}", head.to_ascii_lowercase())
    } else {
        format!("dm-{}", names::short(network))
    }
}

/// The veth pair standing in for a dummy parent: (the parent end, its peer).
fn veth_names(network: &str) -> (String, String) {
    let s = names::short(network);
    (format!("plxm{s}"), format!("plxn{s}"))
}

impl MacvlanDriver {
    /// The mark of a parent of `network` that the driver made as `made`.
    pub(super) fn parent_alias(&self, made: Made, network: &str) -> Option<String> {
        made.mark()
            .map(|m| format!("{}:{m}:{}:{network}", self.marker(), self.kind.name()))
    }

    /// Makes (or adopts) a network's parent and remembers the network. A parent another
    /// network already has is refused naming it.
    pub(super) async fn create_network_locked(
        &self,
        st: &mut State,
        info: &NetworkInfo,
    ) -> Result<(), DriverError> {
        if st.networks.contains_key(&info.id) {
            return Ok(());
        }
        let opts = LanOptions::parse(self.kind, &info.options)?;
        let kind = self.kind.name();
        self.require(
            self.kind.feature(),
            &format!("{kind} network {:?}", info.name),
        )
        .await?;
        let wanted = if info.internal {
            if let Some(p) = &opts.parent {
                // Docker's rule: an internal network's sandboxes reach only each other.
                tracing::warn!(network = %info.name, parent = %p.name, "--internal: option parent is ignored; the network gets a parent that goes nowhere");
            }
            None
        } else {
            opts.parent.clone()
        };
        if let Some(p) = &wanted {
            let other = st
                .networks
                .values()
                .find(|n| n.info.id != info.id && n.parent.name == p.name);
            if let Some(other) = other {
                return Err(DriverError::Conflict(format!(
                    "option parent={:?}: {} is already the parent of {} network {:?} (one network per parent, as Docker)",
                    p.name,
                    p.name,
                    other.kind.name(),
                    other.info.name
                )));
            }
        }
        let mut undo = Vec::new();
        match self.make_parent(info, wanted.as_ref(), &mut undo).await {
            Ok(parent) => {
                tracing::info!(network = %info.name, driver = kind, parent = %parent.name, made = ?parent.made, "network ready");
                st.networks.insert(
                    info.id.clone(),
                    NetState {
                        kind: self.kind,
                        info: info.clone(),
                        opts,
                        parent,
                    },
                );
                Ok(())
            }
            Err(e) => {
                for index in undo.into_iter().rev() {
                    if let Err(u) = self.delete_link(index).await {
                        tracing::warn!(error = %u, "undo step failed; reconciliation will clean up");
                    }
                }
                Err(e)
            }
        }
    }

    /// Whether `alias` marks an 802.1q sub-interface as made by Plexus (for a network of
    /// either kind).
    fn vlan_mark(&self, alias: &str) -> bool {
        matches!(
            names::parse_alias(self.marker(), alias),
            Some(Marked::Other { kind, fields }) if kind == "vlan" && fields.len() == 2
        )
    }

    /// Finds or makes the parent of `info`: `wanted` (what `-o parent` names, unless
    /// `--internal`), or one that goes nowhere. What it makes is pushed to `undo`.
    pub(super) async fn make_parent(
        &self,
        info: &NetworkInfo,
        wanted: Option<&ParentName>,
        undo: &mut Vec<u32>,
    ) -> Result<Parent, DriverError> {
        let Some(p) = wanted else {
            return self.private_parent(info, undo).await;
        };
        let field = format!("option parent={:?}", p.name);
        let found = self.rtnl().link(&p.name).await.map_err(sys_ctx(&field))?;
        if let Some(link) = found {
            let mine = self.parent_alias(Made::Vlan, &info.id).unwrap_or_default();
            let made = match link.alias.as_deref() {
                Some(a) if a == mine => Made::Vlan,
                // One Plexus made for a network since removed (its reconciliation not done
                // yet): this network's now, or reconciliation would delete it as stale.
                Some(a) if self.vlan_mark(a) => {
                    self.rtnl()
                        .set_alias_named(&p.name, &mine)
                        .await
                        .map_err(sys_ctx(&field))?;
                    Made::Vlan
                }
                _ => Made::Given,
            };
            return Ok(Parent {
                name: p.name.clone(),
                made,
            });
        }
        let Some((base, vid)) = &p.vlan else {
            return Err(DriverError::Invalid(format!(
                "{field}: no interface {:?} in the host namespace",
                p.name
            )));
        };
        let base_link = self
            .rtnl()
            .link(base)
            .await
            .map_err(sys_ctx(&field))?
            .ok_or_else(|| {
                DriverError::Invalid(format!(
                    "{field}: no interface {base:?} in the host namespace to make VLAN {vid} on"
                ))
            })?;
        self.require(
            Feature::Vlan,
            &format!("{field} (802.1q sub-interface {vid} of {base})"),
        )
        .await?;
        let alias = self.parent_alias(Made::Vlan, &info.id).unwrap_or_default();
        let link = self
            .rtnl()
            .add_vlan(&p.name, base_link.index, *vid, &alias)
            .await
            .map_err(sys_ctx(&field))?;
        undo.push(link.index);
        Ok(Parent {
            name: p.name.clone(),
            made: Made::Vlan,
        })
    }

    /// A parent that goes nowhere: a dummy link (Docker's); for `--internal` on a kernel
    /// without dummy links, a veth pair of the driver's own instead.
    async fn private_parent(
        &self,
        info: &NetworkInfo,
        undo: &mut Vec<u32>,
    ) -> Result<Parent, DriverError> {
        let why = if info.internal {
            "an --internal network's parent (a dummy link, as Docker)"
        } else {
            "no option parent: Docker then makes a dummy link as the parent, so that the \
             network's sandboxes reach only each other; give -o parent=IF to reach a LAN"
        };
        match self.require(Feature::Dummy, why).await {
            Ok(()) => self.adopt_or_make(info, Made::Dummy, undo).await,
            Err(e) if !info.internal => Err(e),
            Err(e) => {
                tracing::info!(network = %info.name, reason = %e, "no dummy links: the internal network's parent is a veth pair of Plexus's own");
                self.adopt_or_make(info, Made::Veth, undo).await
            }
        }
    }

    /// The dummy or veth parent of `info`: adopted if the driver made it before (a restart),
    /// else made, marked and up.
    async fn adopt_or_make(
        &self,
        info: &NetworkInfo,
        made: Made,
        undo: &mut Vec<u32>,
    ) -> Result<Parent, DriverError> {
        let (name, peer) = match made {
            Made::Veth => {
                let (a, b) = veth_names(&info.id);
                (a, Some(b))
            }
            _ => (dummy_name(&info.id), None),
        };
        let alias = self.parent_alias(made, &info.id).unwrap_or_default();
        let what = format!("parent {name} of network {:?}", info.name);
        if let Some(l) = self.rtnl().link(&name).await.map_err(sys_ctx(&what))? {
            match l.alias.as_deref() {
                Some(a) if a == alias => {
                    if !l.up {
                        self.rtnl().set_up(l.index).await.map_err(sys_ctx(&what))?;
                    }
                    return Ok(Parent { name, made });
                }
                // Made, not yet marked, when a daemon died: made again below.
                None if l.kind.as_deref()
                    == Some(if made == Made::Veth { "veth" } else { "dummy" }) =>
                {
                    self.delete_link(l.index).await?;
                }
                _ => {
                    return Err(DriverError::Conflict(format!(
                        "{what}: the name is taken by another interface"
                    )))
                }
            }
        }
        let link = match &peer {
            None => self
                .rtnl()
                .add_dummy(&name, &alias)
                .await
                .map_err(sys_ctx(&what))?,
            Some(peer) => {
                let (a, b) = self
                    .rtnl()
                    .add_veth(&name, peer, None, &alias)
                    .await
                    .map_err(sys_ctx(&what))?;
                undo.push(a.index);
                for end in [&a, &b] {
                    // No IPv6 chatter on a parent that carries nothing of its own.
                    let key = format!("net.ipv6.conf.{}.disable_ipv6", end.name);
                    match sysctl::write(self.rtnl().netns(), &key, "1") {
                        Ok(()) => {}
                        Err(SysError::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(sys_ctx(&what)(e)),
                    }
                    self.rtnl()
                        .set_up(end.index)
                        .await
                        .map_err(sys_ctx(&what))?;
                }
                return Ok(Parent { name, made });
            }
        };
        undo.push(link.index);
        Ok(Parent { name, made })
    }

    /// Deletes a network's parent if the driver made it for this network (its mark says so):
    /// its devices go with it. A parent of the host's is left as it is.
    pub(super) async fn remove_parent(
        &self,
        network_id: &str,
        parent: &Parent,
    ) -> Result<(), DriverError> {
        let Some(alias) = self.parent_alias(parent.made, network_id) else {
            return Ok(());
        };
        let what = format!("parent {}", parent.name);
        match self
            .rtnl()
            .link(&parent.name)
            .await
            .map_err(sys_ctx(&what))?
        {
            Some(l) if l.alias.as_deref() == Some(alias.as_str()) => {
                self.delete_link(l.index).await
            }
            _ => Ok(()),
        }
    }

    /// Deletes the parents marked as this driver's for `network_id`, knowing only the kernel
    /// (a network removed by a restarted daemon before reconciliation).
    pub(super) async fn remove_unknown_parents(&self, network_id: &str) -> Result<(), DriverError> {
        let links = self.rtnl().links().await.map_err(sys_ctx("list links"))?;
        for link in links {
            let Some(Marked::Other { kind, fields }) = link
                .alias
                .as_deref()
                .and_then(|a| names::parse_alias(self.marker(), a))
            else {
                continue;
            };
            if PARENT_MARKS.contains(&kind.as_str())
                && fields.len() == 2
                && fields[0] == self.kind.name()
                && fields[1] == network_id
            {
                self.delete_link(link.index).await?;
            }
        }
        Ok(())
    }

    /// Makes again a parent the driver made that is gone (deleted behind Plexus's back, which
    /// took the network's devices along); returns whether it did.
    pub(super) async fn repair_parent(&self, net: &NetState) -> Result<bool, DriverError> {
        if net.parent.made == Made::Given {
            return Ok(false);
        }
        let what = format!("parent {}", net.parent.name);
        if self
            .rtnl()
            .link(&net.parent.name)
            .await
            .map_err(sys_ctx(&what))?
            .is_some()
        {
            return Ok(false);
        }
        let wanted = if net.info.internal {
            None
        } else {
            net.opts.parent.clone()
        };
        let mut undo = Vec::new();
        match self
            .make_parent(&net.info, wanted.as_ref(), &mut undo)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                for index in undo.into_iter().rev() {
                    let _ = self.delete_link(index).await;
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_named_as_docker_and_fit() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(dummy_name(id), "dm-0123456789ab");
        assert_eq!(dummy_name("net-1").len(), 14);
        let (a, b) = veth_names(id);
        assert_eq!((a.len(), b.len()), (15, 15));
        assert_ne!(a, b);
    }
}
