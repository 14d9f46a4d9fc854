//! The commands, each a few requests to plexusd.
//!
//! One Plexus sandbox per container: `cni-<CNI_CONTAINERID>`, on `CNI_NETNS` (the runtime's
//! namespace, never deleted by Plexus), labelled [`CNI_CONTAINER_LABEL`] with the container
//! id. The first ADD makes it with its first network in one operation; ADDs for further
//! networks connect them to it; each endpoint carries the exact `CNI_IFNAME`. DEL disconnects
//! one network and removes the sandbox with its last endpoint. ADD of an attachment that
//! exists already (the runtime's retry after a crash cut the first ADD short) answers with
//! it; DEL of one that does not exist succeeds.

use plexus_api_types::{SandboxEndpoint, SandboxResource, CNI_CONTAINER_LABEL};
use serde_json::{json, Value};

use crate::client::{encode, Client};
use crate::config::{at_least, NetConf, VALID_ATTACHMENTS};
use crate::env::Env;
use crate::error::{code, CniError, Result};
use crate::netns;
use crate::result::{self, CniResult};

/// The sandbox of a container.
pub fn sandbox_name(container_id: &str) -> String {
    format!("cni-{container_id}")
}

/// One invocation: its environment, configuration and daemon.
pub struct Plugin {
    env: Env,
    conf: NetConf,
    client: Client,
}

/// The field that named the Plexus network (`network`, or `name` when it stood for it).
fn network_field(conf: &NetConf) -> &'static str {
    if conf.network == conf.name {
        "name"
    } else {
        "network"
    }
}

/// An error answer of plexusd, as CNI's error.
fn refused(status: u16, message: String, what: &str) -> CniError {
    let code = match status {
        400 => code::INVALID_NETWORK_CONFIG,
        409 => code::CONFLICT,
        _ => code::DAEMON_REFUSED,
    };
    CniError::new(code, format!("plexusd refused {what}"), message)
}

impl Plugin {
    /// A plugin for `env` and `conf`, talking to plexusd at `socket`.
    pub fn new(env: Env, conf: NetConf, socket: String) -> Self {
        Self {
            env,
            conf,
            client: Client::new(socket),
        }
    }

    fn name(&self) -> String {
        sandbox_name(&self.env.container_id)
    }

    /// Whether `ep` is on the configuration's network (by name or full id).
    fn on_network(&self, ep: &SandboxEndpoint) -> bool {
        ep.network == self.conf.network || ep.network_id == self.conf.network
    }

    fn ours(&self, sb: &SandboxResource) -> bool {
        sb.labels.get(CNI_CONTAINER_LABEL) == Some(&self.env.container_id)
    }

    /// The container's sandbox, if plexusd has one.
    fn sandbox(&self) -> Result<Option<SandboxResource>> {
        let path = format!("/plexus/sandboxes/{}", encode(&self.name()));
        let answer = self.client.request("GET", &path, None)?;
        match answer.status {
            404 => Ok(None),
            s if (200..300).contains(&s) => {
                serde_json::from_slice(&answer.body).map(Some).map_err(|e| {
                    CniError::new(
                        code::DAEMON_REFUSED,
                        "cannot decode plexusd's sandbox",
                        e.to_string(),
                    )
                })
            }
            s => Err(refused(
                s,
                answer.message(),
                "to read the container's sandbox",
            )),
        }
    }

    /// The error for a request that failed with 404: the network is unknown (code 7,
    /// naming the field), or else plexusd's message.
    fn not_found(&self, message: String, what: &str) -> Result<CniError> {
        let path = format!("/networks/{}", encode(&self.conf.network));
        let answer = self.client.request("GET", &path, None)?;
        if answer.status == 404 {
            let field = network_field(&self.conf);
            return Ok(CniError::new(
                code::INVALID_NETWORK_CONFIG,
                "unknown Plexus network",
                format!(
                    "{field}: plexusd has no network {:?} ({})",
                    self.conf.network,
                    answer.message()
                ),
            ));
        }
        Ok(refused(404, message, what))
    }

    /// The addresses asked for (`runtimeConfig.ips`, `CNI_ARGS` `IP=`), one per family.
    fn addresses(&self) -> Result<(String, String)> {
        let mut asked: Vec<(String, String)> = self
            .conf
            .ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (format!("runtimeConfig.ips[{i}]"), ip.clone()))
            .collect();
        if let Some(ip) = self.env.args.get("IP") {
            asked.push(("CNI_ARGS IP".to_string(), ip.clone()));
        }
        let (mut v4, mut v6) = (String::new(), String::new());
        for (field, ip) in asked {
            let addr: std::net::IpAddr = ip.parse().map_err(|_| {
                CniError::new(
                    code::INVALID_NETWORK_CONFIG,
                    format!("invalid {field}"),
                    format!("{field}={ip:?} is not an IP address"),
                )
            })?;
            let slot = if addr.is_ipv4() { &mut v4 } else { &mut v6 };
            if !slot.is_empty() && *slot != ip {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    format!("unsupported {field}"),
                    format!("{field}={ip:?}: one address per family per network ({slot} is asked for already)"),
                ));
            }
            *slot = ip;
        }
        Ok((v4, v6))
    }

    /// `runtimeConfig.portMappings` in `-p` syntax.
    fn ports(&self) -> Vec<String> {
        self.conf
            .port_mappings
            .iter()
            .map(|m| {
                let host = match &m.host_ip {
                    Some(ip) if ip.contains(':') => format!("[{ip}]:"),
                    Some(ip) => format!("{ip}:"),
                    None => String::new(),
                };
                format!("{host}{}:{}/{}", m.host_port, m.container_port, m.protocol)
            })
            .collect()
    }

    fn result_of(&self, sb: &SandboxResource) -> Result<CniResult> {
        let ep = sb
            .endpoints
            .iter()
            .find(|e| e.interface == self.env.ifname && self.on_network(e))
            .ok_or_else(|| {
                CniError::new(
                    code::DAEMON_REFUSED,
                    "plexusd's sandbox lacks the attachment",
                    format!(
                        "sandbox {} has no interface {} on network {}",
                        sb.name, self.env.ifname, self.conf.network
                    ),
                )
            })?;
        Ok(result::from_endpoint(&self.conf.cni_version, sb, ep))
    }

    /// ADD: attach the container, answer with the result.
    pub fn add(&self) -> Result<CniResult> {
        let netns_path = self.env.netns.clone().unwrap_or_default();
        netns::check(&netns_path)?;
        let (ipv4, ipv6) = self.addresses()?;
        // A few rounds at most: a stale sandbox (its namespace gone) is removed, then the
        // sandbox made again; a sandbox made meanwhile by another call is read again.
        for _ in 0..3 {
            let Some(sb) = self.sandbox()? else {
                match self.create(&netns_path, &ipv4, &ipv6)? {
                    Some(result) => return Ok(result),
                    None => continue,
                }
            };
            if !self.ours(&sb) {
                return Err(CniError::new(
                    code::CONFLICT,
                    "the container's sandbox name is taken",
                    format!(
                        "sandbox {} exists and was not made by plexus-cni for container {}",
                        sb.name, self.env.container_id
                    ),
                ));
            }
            if !netns::same(&sb.netns, &netns_path) {
                if netns::check(&sb.netns).is_ok() {
                    return Err(CniError::new(
                        code::CONFLICT,
                        "the container is attached in another namespace",
                        format!(
                            "container {} is attached in {} (CNI_NETNS={netns_path}); DEL it first",
                            self.env.container_id, sb.netns
                        ),
                    ));
                }
                // Its namespace is gone and its DEL never came: release it, start afresh.
                tracing::info!(sandbox = %sb.name, netns = %sb.netns, "releasing a stale attachment");
                self.delete_sandbox(&sb)?;
                continue;
            }
            if let Some(ep) = sb.endpoints.iter().find(|e| e.interface == self.env.ifname) {
                if self.on_network(ep) {
                    // Made already (a retry): the same answer.
                    return Ok(result::from_endpoint(&self.conf.cni_version, &sb, ep));
                }
                return Err(CniError::new(
                    code::CONFLICT,
                    "the interface name is taken",
                    format!(
                        "CNI_IFNAME={} is the container's interface on network {} already",
                        self.env.ifname, ep.network
                    ),
                ));
            }
            return self.connect(&sb, &ipv4, &ipv6);
        }
        Err(CniError::new(
            code::TRY_AGAIN_LATER,
            "the container's sandbox keeps changing",
            format!("sandbox {}", self.name()),
        ))
    }

    /// Makes the sandbox with this network; `None` when another made it meanwhile.
    fn create(&self, netns: &str, ipv4: &str, ipv6: &str) -> Result<Option<CniResult>> {
        let body = json!({
            "Name": self.name(),
            "NetNs": netns,
            "Networks": [{
                "Name": self.conf.network,
                "Interface": self.env.ifname,
                "IPv4Address": ipv4,
                "IPv6Address": ipv6,
                "Aliases": self.conf.aliases,
            }],
            "Ports": self.ports(),
            "Labels": { CNI_CONTAINER_LABEL: self.env.container_id },
        });
        let answer = self
            .client
            .request("POST", "/plexus/sandboxes", Some(&body))?;
        match answer.status {
            s if (200..300).contains(&s) => {
                let sb: SandboxResource = serde_json::from_slice(&answer.body).map_err(|e| {
                    CniError::new(
                        code::DAEMON_REFUSED,
                        "cannot decode plexusd's sandbox",
                        e.to_string(),
                    )
                })?;
                self.result_of(&sb).map(Some)
            }
            409 if self.sandbox()?.is_some() => Ok(None),
            404 => Err(self.not_found(answer.message(), "the attachment")?),
            s => Err(refused(s, answer.message(), "the attachment")),
        }
    }

    /// Connects the configuration's network to the container's existing sandbox.
    fn connect(&self, sb: &SandboxResource, ipv4: &str, ipv6: &str) -> Result<CniResult> {
        if !self.conf.port_mappings.is_empty() {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "unsupported field runtimeConfig.portMappings",
                format!(
                    "runtimeConfig.portMappings: ports are published on a container's first network only (it is on {} already)",
                    sb.endpoints.first().map(|e| e.network.as_str()).unwrap_or("another")
                ),
            ));
        }
        let body = json!({
            "Container": sb.id,
            "EndpointConfig": {
                "IPAMConfig": { "IPv4Address": ipv4, "IPv6Address": ipv6 },
                "Aliases": self.conf.aliases,
                "Interface": self.env.ifname,
            },
        });
        let path = format!("/networks/{}/connect", encode(&self.conf.network));
        let answer = self.client.request("POST", &path, Some(&body))?;
        if !answer.ok() {
            return Err(match answer.status {
                404 => self.not_found(answer.message(), "the attachment")?,
                s => refused(s, answer.message(), "the attachment"),
            });
        }
        let sb = self.sandbox()?.ok_or_else(|| {
            CniError::new(
                code::TRY_AGAIN_LATER,
                "the container's sandbox went away",
                format!("sandbox {} was removed while connecting", sb.name),
            )
        })?;
        self.result_of(&sb)
    }

    /// Removes a sandbox (the namespace stays: it is the runtime's); gone already is done.
    fn delete_sandbox(&self, sb: &SandboxResource) -> Result<()> {
        let path = format!("/plexus/sandboxes/{}", encode(&sb.id));
        let answer = self.client.request("DELETE", &path, None)?;
        match answer.status {
            404 => Ok(()),
            s if (200..300).contains(&s) => Ok(()),
            s => Err(refused(
                s,
                answer.message(),
                "to remove the container's sandbox",
            )),
        }
    }

    /// Takes `ep` out of `sb`: the whole sandbox when nothing else of it remains.
    fn release(&self, sb: &SandboxResource, ep: &SandboxEndpoint) -> Result<()> {
        if sb.endpoints.iter().all(|e| e.endpoint_id == ep.endpoint_id) {
            return self.delete_sandbox(sb);
        }
        let path = format!("/networks/{}/disconnect", encode(&ep.network_id));
        let body = json!({ "Container": sb.id, "Force": true });
        let answer = self.client.request("POST", &path, Some(&body))?;
        if !answer.ok() && answer.status != 404 {
            return Err(refused(
                answer.status,
                answer.message(),
                "to detach the container",
            ));
        }
        // The sandbox's way out (an egress endpoint) goes with its last network.
        let path = format!("/plexus/sandboxes/{}", encode(&sb.id));
        let answer = self.client.request("GET", &path, None)?;
        if answer.ok() {
            if let Ok(now) = serde_json::from_slice::<SandboxResource>(&answer.body) {
                if now.endpoints.is_empty() {
                    return self.delete_sandbox(&now);
                }
            }
        }
        Ok(())
    }

    /// DEL: detach the container from the network; nothing to detach is success.
    pub fn del(&self) -> Result<()> {
        let Some(sb) = self.sandbox()? else {
            return Ok(());
        };
        if !self.ours(&sb) {
            tracing::warn!(sandbox = %sb.name, "not made by plexus-cni for this container; left alone");
            return Ok(());
        }
        let found = sb
            .endpoints
            .iter()
            .find(|e| e.interface == self.env.ifname && self.on_network(e));
        match found {
            Some(ep) => self.release(&sb, ep),
            None if sb.endpoints.is_empty() => self.delete_sandbox(&sb),
            None => Ok(()),
        }
    }

    /// CHECK: the attachment exists, and its interface and addresses are in the namespace.
    pub fn check(&self) -> Result<()> {
        let unknown =
            |why: String| CniError::new(code::UNKNOWN_CONTAINER, "unknown container", why);
        let failed = |why: String| {
            CniError::new(code::CHECK_FAILED, "the attachment is not as recorded", why)
        };
        let sb = self.sandbox()?.filter(|sb| self.ours(sb)).ok_or_else(|| {
            unknown(format!(
                "container {} has no Plexus attachment",
                self.env.container_id
            ))
        })?;
        let ep = sb
            .endpoints
            .iter()
            .find(|e| e.interface == self.env.ifname && self.on_network(e))
            .ok_or_else(|| {
                unknown(format!(
                    "container {} has no interface {} on network {}",
                    self.env.container_id, self.env.ifname, self.conf.network
                ))
            })?;
        let netns_path = self.env.netns.clone().unwrap_or_default();
        if !netns::same(&sb.netns, &netns_path) {
            return Err(failed(format!(
                "CNI_NETNS={netns_path}, but the attachment is in {}",
                sb.netns
            )));
        }
        let links = netns::links(&netns_path)?;
        let (up, addrs) = links.get(&ep.interface).ok_or_else(|| {
            failed(format!(
                "interface {} is missing from {netns_path}",
                ep.interface
            ))
        })?;
        if !up {
            return Err(failed(format!("interface {} is down", ep.interface)));
        }
        let recorded: Vec<std::net::IpAddr> = [&ep.ipv4_address, &ep.ipv6_address]
            .into_iter()
            .filter_map(|a| a.split('/').next().and_then(|a| a.parse().ok()))
            .collect();
        for addr in &recorded {
            if !addrs.contains(addr) {
                return Err(failed(format!(
                    "address {addr} is missing from interface {}",
                    ep.interface
                )));
            }
        }
        if let Some(prev) = &self.conf.prev_result {
            self.check_prev_result(prev, &recorded)?;
        }
        Ok(())
    }

    /// The addresses `prevResult` gives this interface must be the attachment's.
    fn check_prev_result(&self, prev: &Value, recorded: &[std::net::IpAddr]) -> Result<()> {
        let prev: CniResult = serde_json::from_value(prev.clone()).map_err(|e| {
            CniError::new(
                code::DECODING_FAILURE,
                "cannot decode the network configuration field prevResult",
                format!("prevResult: {e}"),
            )
        })?;
        let mine: Vec<usize> = prev
            .interfaces
            .iter()
            .enumerate()
            .filter(|(_, i)| i.name == self.env.ifname)
            .map(|(n, _)| n)
            .collect();
        for ip in &prev.ips {
            if ip.interface.is_some_and(|i| !mine.contains(&i)) {
                continue;
            }
            let addr = ip.address.split('/').next().unwrap_or_default();
            let ok = addr
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| recorded.contains(&a));
            if !ok {
                return Err(CniError::new(
                    code::CHECK_FAILED,
                    "the attachment is not as recorded",
                    format!(
                        "prevResult.ips: {} is not an address of the attachment",
                        ip.address
                    ),
                ));
            }
        }
        Ok(())
    }

    /// STATUS (1.1): plexusd answers and the network exists.
    pub fn status(&self) -> Result<()> {
        let unavailable = |why: String| {
            CniError::new(
                code::PLUGIN_NOT_AVAILABLE,
                "plexus-cni cannot attach containers",
                why,
            )
        };
        let answer = self
            .client
            .request("GET", "/_ping", None)
            .map_err(|e| unavailable(e.details))?;
        if !answer.ok() {
            return Err(unavailable(format!(
                "plexusd at {} answers /_ping with {}",
                self.client.socket(),
                answer.status
            )));
        }
        let path = format!("/networks/{}", encode(&self.conf.network));
        let answer = self
            .client
            .request("GET", &path, None)
            .map_err(|e| unavailable(e.details))?;
        match answer.status {
            s if (200..300).contains(&s) => Ok(()),
            404 => Err(unavailable(format!(
                "{}: plexusd has no network {:?}",
                network_field(&self.conf),
                self.conf.network
            ))),
            s => Err(unavailable(format!("plexusd: {} ({s})", answer.message()))),
        }
    }

    /// GC (1.1): release every attachment plexus-cni made on this network whose
    /// `(containerID, ifname)` is not in `cni.dev/valid-attachments`. Returns how many.
    pub fn gc(&self) -> Result<usize> {
        let valid = self.conf.valid_attachments.as_ref().ok_or_else(|| {
            CniError::new(
                code::INVALID_NETWORK_CONFIG,
                format!("invalid network configuration field {VALID_ATTACHMENTS}"),
                format!("{VALID_ATTACHMENTS} is missing (GC needs the list of attachments in use)"),
            )
        })?;
        let sandboxes: Vec<SandboxResource> = self.client.get("/plexus/sandboxes", |s, m| {
            refused(s, m, "to list sandboxes")
        })?;
        let mut released = 0;
        let mut failures = Vec::new();
        for sb in &sandboxes {
            let Some(container) = sb.labels.get(CNI_CONTAINER_LABEL) else {
                continue;
            };
            let stale: Vec<&SandboxEndpoint> = sb
                .endpoints
                .iter()
                .filter(|e| self.on_network(e))
                .filter(|e| !valid.contains(&(container.clone(), e.interface.clone())))
                .collect();
            let outcome = if sb.endpoints.is_empty() {
                self.delete_sandbox(sb).map(|()| 1)
            } else if stale.len() == sb.endpoints.len() {
                self.delete_sandbox(sb).map(|()| stale.len())
            } else {
                let mut n = 0;
                let mut current = sb.clone();
                let mut out = Ok(0);
                for ep in stale {
                    if let Err(e) = self.release(&current, ep) {
                        out = Err(e);
                        break;
                    }
                    n += 1;
                    current
                        .endpoints
                        .retain(|e| e.endpoint_id != ep.endpoint_id);
                    out = Ok(n);
                }
                out
            };
            match outcome {
                Ok(n) => {
                    if n > 0 {
                        tracing::info!(sandbox = %sb.name, released = n, "GC released attachments");
                    }
                    released += n;
                }
                Err(e) => failures.push(format!("{}: {}", sb.name, e)),
            }
        }
        if !failures.is_empty() {
            return Err(CniError::new(
                code::DAEMON_REFUSED,
                "GC could not release every stale attachment",
                failures.join("; "),
            ));
        }
        Ok(released)
    }

    /// The configuration's version.
    pub fn cni_version(&self) -> &str {
        &self.conf.cni_version
    }

    /// Refuses a 1.1 command under an older `cniVersion`.
    pub fn needs_1_1(&self, command: &str) -> Result<()> {
        if at_least(&self.conf.cni_version, "1.1.0") {
            return Ok(());
        }
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            format!(
                "{command} needs cniVersion 1.1.0; the configuration says {}",
                self.conf.cni_version
            ),
        ))
    }
}
