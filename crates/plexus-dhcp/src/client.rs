//! The DHCPv4 client as a sans-I/O state machine: it is told the time and the replies, and
//! says what to send and when to wake it. No sockets, no clock, no randomness (the caller
//! gives the transaction id), so a test drives it deterministically.
//!
//! One [`Exchange`] is one transaction of one endpoint's client:
//!
//! - [`Goal::Probe`]: `DHCPDISCOVER` → `DHCPOFFER`, and no `DHCPREQUEST`: what the LAN would
//!   give (its subnet, router, DNS servers) without leasing anything (a network's pool);
//! - [`Goal::Lease`]: `DHCPDISCOVER` → `DHCPOFFER` → `DHCPREQUEST` → `DHCPACK` (an endpoint's
//!   new lease), optionally asking for an address;
//! - [`Goal::Renew`]: `DHCPREQUEST` → `DHCPACK`, extending a lease.
//!
//! Every message has the broadcast flag and a zero `ciaddr`: the client talks from the host's
//! side of the parent, which does not hold the leased address (the endpoint's sandbox does), so
//! it must be answered by broadcast. A renewal is therefore the RFC 2131 INIT-REBOOT request
//! (requested address, no server identifier), which a server answers by extending the lease of
//! a client that holds it. [`release`] makes the `DHCPRELEASE` that ends a lease (no answer).
//!
//! A message is sent again after 1 s, then 2 s, 4 s, ... (at most [`Timing::max_retry`])
//! until [`Timing::timeout`] from the start, when the exchange fails with
//! [`Failure::Timeout`].

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};

/// Who the client is: an endpoint's MAC (the `chaddr`, and the frames' source) and its client
/// identifier (option 61).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The endpoint's MAC.
    pub mac: [u8; 6],
    /// The client identifier.
    pub client_id: Vec<u8>,
    /// A host name to give the server (option 12), if any.
    pub hostname: Option<String>,
}

impl Identity {
    /// The identity of an endpoint with this MAC: its client identifier is the RFC 2132 form
    /// of the MAC (type 1, Ethernet, then the six bytes), one per endpoint since each endpoint
    /// has its own MAC.
    pub fn for_mac(mac: [u8; 6]) -> Self {
        let mut client_id = vec![1];
        client_id.extend_from_slice(&mac);
        Self {
            mac,
            client_id,
            hostname: None,
        }
    }
}

/// What the exchange is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// `DISCOVER` → `OFFER` only: nothing is leased.
    Probe,
    /// A new lease; `requested`: the address to ask for (option 50).
    Lease {
        /// The address asked for, if any.
        requested: Option<Ipv4Addr>,
    },
    /// Extends the lease of `address` (INIT-REBOOT `REQUEST`).
    Renew {
        /// The leased address.
        address: Ipv4Addr,
    },
}

/// When messages are sent again, and when the exchange gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The first wait for an answer.
    pub first_retry: Duration,
    /// The longest wait between two sends (the wait doubles up to it).
    pub max_retry: Duration,
    /// How long the whole exchange may take (net-dhcp's `lease_timeout`).
    pub timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(4),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What a server offered or granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The address (`yiaddr`).
    pub address: Ipv4Addr,
    /// The subnet's prefix length (option 1; classful when the server gave none).
    pub prefix_len: u8,
    /// The routers (option 3), first preferred.
    pub routers: Vec<Ipv4Addr>,
    /// The DNS servers (option 6).
    pub dns: Vec<Ipv4Addr>,
    /// The domain name (option 15), if any.
    pub domain: Option<String>,
    /// The server (option 54).
    pub server: Ipv4Addr,
    /// The lease time in seconds (option 51; `u32::MAX` is infinite).
    pub lease_secs: u32,
    /// When to renew, in seconds from the grant (option 58, else half the lease).
    pub t1_secs: u32,
    /// When to rebind, in seconds from the grant (option 59, else 7/8 of the lease).
    pub t2_secs: u32,
}

/// What an exchange ended with, when it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// [`Goal::Probe`]: the offer (nothing leased).
    Offered(Lease),
    /// [`Goal::Lease`], [`Goal::Renew`]: the granted lease.
    Leased(Lease),
}

/// The stage an exchange was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Sending `DHCPDISCOVER`, waiting for `DHCPOFFER`.
    Selecting,
    /// Sending `DHCPREQUEST`, waiting for `DHCPACK`.
    Requesting,
}

impl Stage {
    /// What is sent in this stage.
    pub fn sends(self) -> &'static str {
        match self {
            Stage::Selecting => "DHCPDISCOVER",
            Stage::Requesting => "DHCPREQUEST",
        }
    }

    /// What is awaited in this stage.
    pub fn awaits(self) -> &'static str {
        match self {
            Stage::Selecting => "DHCPOFFER",
            Stage::Requesting => "DHCPACK",
        }
    }
}

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer came within [`Timing::timeout`].
    Timeout {
        /// The stage it was in.
        stage: Stage,
        /// How many messages of that stage were sent.
        sent: u32,
        /// How long it waited.
        waited: Duration,
    },
    /// The server answered `DHCPNAK`.
    Refused {
        /// The server.
        server: Ipv4Addr,
        /// The address asked for.
        address: Ipv4Addr,
        /// The server's message (option 56), if any.
        message: String,
    },
    /// The offer was not for the address asked for.
    NotOffered {
        /// The address asked for.
        requested: Ipv4Addr,
        /// The address offered.
        offered: Ipv4Addr,
    },
}

/// The options every request asks for (option 55).
const PARAMETERS: [OptionCode; 7] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::DomainName,
    OptionCode::AddressLeaseTime,
    OptionCode::Renewal,
    OptionCode::Rebinding,
];

#[derive(Debug, Clone)]
enum State {
    /// Waiting for offers.
    Selecting,
    /// Waiting for the chosen (or renewed) lease to be acknowledged.
    Requesting {
        address: Ipv4Addr,
        /// The server chosen (`None` for a renewal: any server that knows the lease).
        server: Option<Ipv4Addr>,
    },
    Done(Result<Outcome, Failure>),
}

/// One DHCP transaction. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Exchange {
    identity: Identity,
    goal: Goal,
    xid: u32,
    timing: Timing,
    state: State,
    started: Duration,
    /// The stage's sends so far.
    sent: u32,
    /// When to send again.
    next_send: Duration,
    /// A message waiting to be sent.
    outbox: Option<Message>,
}

impl Exchange {
    /// Starts an exchange at `now` (any monotonic clock) with transaction id `xid`; its first
    /// message waits in [`poll_transmit`](Self::poll_transmit).
    pub fn new(identity: Identity, goal: Goal, xid: u32, timing: Timing, now: Duration) -> Self {
        let state = match goal {
            Goal::Probe | Goal::Lease { .. } => State::Selecting,
            Goal::Renew { address } => State::Requesting {
                address,
                server: None,
            },
        };
        let mut ex = Self {
            identity,
            goal,
            xid,
            timing,
            state,
            started: now,
            sent: 0,
            next_send: now,
            outbox: None,
        };
        ex.send(now);
        ex
    }

    /// The transaction id.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// The message to send now, if any (always to the broadcast address).
    pub fn poll_transmit(&mut self) -> Option<Message> {
        self.outbox.take()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next; `None` once done.
    pub fn poll_timeout(&self) -> Option<Duration> {
        match self.state {
            State::Done(_) => None,
            _ => Some(self.next_send.min(self.started + self.timing.timeout)),
        }
    }

    /// The result, once the exchange is over.
    pub fn result(&self) -> Option<&Result<Outcome, Failure>> {
        match &self.state {
            State::Done(r) => Some(r),
            _ => None,
        }
    }

    /// Time passed: gives up at the timeout, or queues the message again.
    pub fn handle_timeout(&mut self, now: Duration) {
        if matches!(self.state, State::Done(_)) {
            return;
        }
        if now >= self.started + self.timing.timeout {
            let stage = self.stage();
            self.outbox = None;
            self.state = State::Done(Err(Failure::Timeout {
                stage,
                sent: self.sent,
                waited: now.saturating_sub(self.started),
            }));
            return;
        }
        if now >= self.next_send {
            self.send(now);
        }
    }

    /// A reply came (any message seen on the wire: others are ignored).
    pub fn handle_reply(&mut self, now: Duration, msg: &Message) {
        if msg.opcode() != Opcode::BootReply
            || msg.xid() != self.xid
            || msg.chaddr().get(..6) != Some(&self.identity.mac[..])
        {
            return;
        }
        let Some(kind) = msg.opts().msg_type() else {
            return;
        };
        match (self.state.clone(), kind) {
            (State::Selecting, MessageType::Offer) => {
                let Some(offer) = lease_of(msg) else {
                    tracing::debug!(xid = self.xid, "offer without a server identifier ignored");
                    return;
                };
                if let Goal::Lease {
                    requested: Some(requested),
                } = self.goal
                {
                    if offer.address != requested {
                        self.finish(Err(Failure::NotOffered {
                            requested,
                            offered: offer.address,
                        }));
                        return;
                    }
                }
                if self.goal == Goal::Probe {
                    self.finish(Ok(Outcome::Offered(offer)));
                    return;
                }
                self.state = State::Requesting {
                    address: offer.address,
                    server: Some(offer.server),
                };
                self.sent = 0;
                self.send(now);
            }
            (State::Requesting { address, server }, MessageType::Ack) => {
                let Some(lease) = lease_of(msg) else {
                    return;
                };
                if lease.address != address || server.is_some_and(|s| s != lease.server) {
                    return;
                }
                self.finish(Ok(Outcome::Leased(lease)));
            }
            (State::Requesting { address, server }, MessageType::Nak) => {
                let from = server_of(msg);
                if server.is_some_and(|s| Some(s) != from) {
                    return;
                }
                let message = match msg.opts().get(OptionCode::Message) {
                    Some(DhcpOption::Message(m)) => m.clone(),
                    _ => String::new(),
                };
                self.finish(Err(Failure::Refused {
                    server: from.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    address,
                    message,
                }));
            }
            _ => {}
        }
    }

    fn stage(&self) -> Stage {
        match self.state {
            State::Requesting { .. } => Stage::Requesting,
            _ => Stage::Selecting,
        }
    }

    fn finish(&mut self, result: Result<Outcome, Failure>) {
        self.outbox = None;
        self.state = State::Done(result);
    }

    /// Queues the stage's message and sets when to send it again.
    fn send(&mut self, now: Duration) {
        let secs = now.saturating_sub(self.started).as_secs();
        let mut msg = self.base(u16::try_from(secs).unwrap_or(u16::MAX));
        match self.state {
            State::Selecting => {
                msg.opts_mut()
                    .insert(DhcpOption::MessageType(MessageType::Discover));
                if let Goal::Lease {
                    requested: Some(ip),
                } = self.goal
                {
                    msg.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
                }
            }
            State::Requesting { address, server } => {
                msg.opts_mut()
                    .insert(DhcpOption::MessageType(MessageType::Request));
                msg.opts_mut()
                    .insert(DhcpOption::RequestedIpAddress(address));
                if let Some(server) = server {
                    msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
                }
            }
            State::Done(_) => return,
        }
        self.outbox = Some(msg);
        // 1 s, 2 s, 4 s, ... up to max_retry.
        let factor = 1u32.checked_shl(self.sent).unwrap_or(u32::MAX);
        let wait = self
            .timing
            .first_retry
            .saturating_mul(factor)
            .min(self.timing.max_retry);
        self.sent += 1;
        self.next_send = now + wait;
    }

    fn base(&self, secs: u16) -> Message {
        let mut msg = request_base(&self.identity, self.xid);
        msg.set_secs(secs);
        msg.opts_mut()
            .insert(DhcpOption::ParameterRequestList(PARAMETERS.to_vec()));
        msg.opts_mut().insert(DhcpOption::MaxMessageSize(1500));
        if let Some(name) = &self.identity.hostname {
            msg.opts_mut().insert(DhcpOption::Hostname(name.clone()));
        }
        msg
    }
}

/// A `BOOTREQUEST` of `identity` with the broadcast flag, zero addresses, its client id.
fn request_base(identity: &Identity, xid: u32) -> Message {
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new_with_id(xid, zero, zero, zero, zero, &identity.mac);
    msg.set_opcode(Opcode::BootRequest);
    msg.set_flags(Flags::default().set_broadcast());
    msg.opts_mut()
        .insert(DhcpOption::ClientIdentifier(identity.client_id.clone()));
    msg
}

/// The `DHCPRELEASE` that gives `address` back to `server` (sent once; no answer comes).
pub fn release(identity: &Identity, xid: u32, address: Ipv4Addr, server: Ipv4Addr) -> Message {
    let mut msg = request_base(identity, xid);
    msg.set_flags(Flags::default());
    msg.set_ciaddr(address);
    msg.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Release));
    msg.opts_mut().insert(DhcpOption::ServerIdentifier(server));
    msg
}

fn server_of(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(s)) => Some(*s),
        _ => None,
    }
}

/// The classful prefix of `a` (RFC 2131's fallback when no mask is given).
fn classful(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// The lease an `OFFER` or `ACK` carries; `None` without a server identifier.
fn lease_of(msg: &Message) -> Option<Lease> {
    let opts = msg.opts();
    let server = server_of(msg)?;
    let address = msg.yiaddr();
    let prefix_len = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => u32::from(*m).leading_ones() as u8,
        _ => classful(address),
    };
    let routers = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(r)) => r.clone(),
        _ => Vec::new(),
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(d)) => d.clone(),
        _ => Vec::new(),
    };
    let domain = match opts.get(OptionCode::DomainName) {
        Some(DhcpOption::DomainName(d)) => Some(d.clone()),
        _ => None,
    };
    // A server must give the lease time in an ACK; an hour when it did not.
    let lease_secs = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => *t,
        _ => 3600,
    };
    let t1_secs = match opts.get(OptionCode::Renewal) {
        Some(DhcpOption::Renewal(t)) if *t <= lease_secs => *t,
        _ => lease_secs / 2,
    };
    let t2_secs = match opts.get(OptionCode::Rebinding) {
        Some(DhcpOption::Rebinding(t)) if *t <= lease_secs && *t >= t1_secs => *t,
        _ => (u64::from(lease_secs) * 7 / 8).max(u64::from(t1_secs)) as u32,
    };
    Some(Lease {
        address,
        prefix_len,
        routers,
        dns,
        domain,
        server,
        lease_secs,
        t1_secs,
        t2_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0x00, 0x02];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
    const ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 50);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn reply(xid: u32, kind: MessageType, yiaddr: Ipv4Addr) -> Message {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(xid, z, yiaddr, z, z, &MAC);
        m.set_opcode(Opcode::BootReply);
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(kind));
        o.insert(DhcpOption::ServerIdentifier(SERVER));
        o.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        o.insert(DhcpOption::Router(vec![SERVER]));
        o.insert(DhcpOption::DomainNameServer(vec![
            SERVER,
            Ipv4Addr::new(10, 77, 0, 2),
        ]));
        o.insert(DhcpOption::AddressLeaseTime(120));
        m
    }

    fn kind(m: &Message) -> MessageType {
        m.opts().msg_type().unwrap()
    }

    fn requested(m: &Message) -> Option<Ipv4Addr> {
        match m.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(a)) => Some(*a),
            _ => None,
        }
    }

    #[test]
    fn a_lease_is_discover_offer_request_ack() {
        let id = Identity::for_mac(MAC);
        let mut ex = Exchange::new(
            id.clone(),
            Goal::Lease { requested: None },
            7,
            Timing::default(),
            secs(100),
        );
        let discover = ex.poll_transmit().unwrap();
        assert_eq!(kind(&discover), MessageType::Discover);
        assert!(discover.flags().broadcast());
        assert_eq!(discover.chaddr(), &MAC);
        assert_eq!(discover.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            discover.opts().get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![
                1, 0x02, 0x42, 0xac, 0x11, 0x00, 0x02
            ]))
        );
        assert!(ex.poll_transmit().is_none());
        assert_eq!(ex.poll_timeout(), Some(secs(101)));

        // Replies for other transactions or clients are ignored.
        ex.handle_reply(secs(100), &reply(8, MessageType::Offer, ADDR));
        let mut other = reply(7, MessageType::Offer, ADDR);
        other.set_chaddr(&[2, 0, 0, 0, 0, 1]);
        ex.handle_reply(secs(100), &other);
        assert!(ex.poll_transmit().is_none());

        ex.handle_reply(secs(100), &reply(7, MessageType::Offer, ADDR));
        let request = ex.poll_transmit().unwrap();
        assert_eq!(kind(&request), MessageType::Request);
        assert_eq!(requested(&request), Some(ADDR));
        assert_eq!(
            request.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
        assert_eq!(request.ciaddr(), Ipv4Addr::UNSPECIFIED);
        // A stray second offer changes nothing.
        ex.handle_reply(secs(100), &reply(7, MessageType::Offer, ADDR));
        assert!(ex.poll_transmit().is_none());

        ex.handle_reply(secs(101), &reply(7, MessageType::Ack, ADDR));
        let Some(Ok(Outcome::Leased(lease))) = ex.result() else {
            panic!("{:?}", ex.result());
        };
        assert_eq!(lease.address, ADDR);
        assert_eq!(lease.prefix_len, 24);
        assert_eq!(lease.routers, vec![SERVER]);
        assert_eq!(lease.dns.len(), 2);
        assert_eq!(
            (lease.lease_secs, lease.t1_secs, lease.t2_secs),
            (120, 60, 105)
        );
        assert_eq!(ex.poll_timeout(), None);
    }

    #[test]
    fn a_probe_stops_at_the_offer() {
        let mut ex = Exchange::new(
            Identity::for_mac(MAC),
            Goal::Probe,
            1,
            Timing::default(),
            secs(0),
        );
        ex.poll_transmit().unwrap();
        ex.handle_reply(secs(0), &reply(1, MessageType::Offer, ADDR));
        assert!(ex.poll_transmit().is_none(), "a probe requests nothing");
        assert!(matches!(ex.result(), Some(Ok(Outcome::Offered(l))) if l.address == ADDR));
    }

    #[test]
    fn silence_is_retried_with_backoff_then_times_out() {
        let timing = Timing {
            timeout: secs(10),
            ..Timing::default()
        };
        let mut ex = Exchange::new(Identity::for_mac(MAC), Goal::Probe, 1, timing, secs(0));
        let mut sends = vec![];
        let mut now = secs(0);
        while ex.result().is_none() {
            if ex.poll_transmit().is_some() {
                sends.push(now.as_secs());
            }
            now = ex.poll_timeout().unwrap();
            ex.handle_timeout(now);
        }
        // 1 s, 2 s, then 4 s at most.
        assert_eq!(sends, vec![0, 1, 3, 7]);
        assert_eq!(
            ex.result(),
            Some(&Err(Failure::Timeout {
                stage: Stage::Selecting,
                sent: 4,
                waited: secs(10)
            }))
        );
    }

    #[test]
    fn a_renewal_is_an_init_reboot_request() {
        let mut ex = Exchange::new(
            Identity::for_mac(MAC),
            Goal::Renew { address: ADDR },
            9,
            Timing::default(),
            secs(0),
        );
        let req = ex.poll_transmit().unwrap();
        assert_eq!(kind(&req), MessageType::Request);
        assert_eq!(requested(&req), Some(ADDR));
        assert_eq!(req.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(req.opts().get(OptionCode::ServerIdentifier).is_none());
        assert!(req.flags().broadcast());
        // An ACK for another address is not ours.
        ex.handle_reply(
            secs(1),
            &reply(9, MessageType::Ack, Ipv4Addr::new(10, 77, 0, 9)),
        );
        assert!(ex.result().is_none());
        ex.handle_reply(secs(1), &reply(9, MessageType::Ack, ADDR));
        assert!(matches!(ex.result(), Some(Ok(Outcome::Leased(_)))));
    }

    #[test]
    fn a_nak_refuses_with_the_servers_message() {
        let mut ex = Exchange::new(
            Identity::for_mac(MAC),
            Goal::Renew { address: ADDR },
            9,
            Timing::default(),
            secs(0),
        );
        let mut nak = reply(9, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
        nak.opts_mut()
            .insert(DhcpOption::Message("wrong network".into()));
        ex.handle_reply(secs(0), &nak);
        assert_eq!(
            ex.result(),
            Some(&Err(Failure::Refused {
                server: SERVER,
                address: ADDR,
                message: "wrong network".into()
            }))
        );
    }

    #[test]
    fn another_offered_address_than_the_one_asked_for_fails() {
        let want = Ipv4Addr::new(10, 77, 0, 60);
        let mut ex = Exchange::new(
            Identity::for_mac(MAC),
            Goal::Lease {
                requested: Some(want),
            },
            3,
            Timing::default(),
            secs(0),
        );
        assert_eq!(requested(&ex.poll_transmit().unwrap()), Some(want));
        ex.handle_reply(secs(0), &reply(3, MessageType::Offer, ADDR));
        assert!(ex.poll_transmit().is_none(), "nothing is requested");
        assert_eq!(
            ex.result(),
            Some(&Err(Failure::NotOffered {
                requested: want,
                offered: ADDR
            }))
        );
    }

    #[test]
    fn server_timers_are_kept_and_a_missing_mask_is_classful() {
        let mut m = reply(1, MessageType::Ack, ADDR);
        m.opts_mut().remove(OptionCode::SubnetMask);
        m.opts_mut().insert(DhcpOption::Renewal(10));
        m.opts_mut().insert(DhcpOption::Rebinding(20));
        let l = lease_of(&m).unwrap();
        assert_eq!((l.prefix_len, l.t1_secs, l.t2_secs), (8, 10, 20));
    }

    #[test]
    fn a_release_names_the_address_and_the_server() {
        let m = release(&Identity::for_mac(MAC), 5, ADDR, SERVER);
        assert_eq!(kind(&m), MessageType::Release);
        assert_eq!(m.ciaddr(), ADDR);
        assert!(!m.flags().broadcast());
        assert_eq!(
            m.opts().get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(SERVER))
        );
    }
}
