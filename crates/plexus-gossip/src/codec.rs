//! Wire format: a bounded, allocation-checked binary codec for every message.
//!
//! Plain data in, plain data out. Every length is checked against what is left in the
//! buffer before anything is allocated, so a hostile (but correctly sealed) frame cannot
//! make the decoder allocate more than the frame's own size.

use std::fmt::Debug;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::DecodeError;

/// Longest network, table or key name accepted on the wire.
pub const MAX_NAME: usize = 1024;
/// Largest entry value accepted on the wire.
pub const MAX_VALUE: usize = 1 << 20;
/// Latest Lamport time accepted on the wire. Clocks tick once per event, so a cluster stays
/// far below it (2^62 events at a million a second take 146,000 years); a frame claiming
/// more would push every clock that witnesses it to where it can no longer tick, and past
/// the 63 bits an attachment's packed form keeps.
pub const MAX_LTIME: u64 = 1 << 62;

/// An address a node is known by (its identity in the cluster).
///
/// The runtime uses [`SocketAddr`]; the simulator uses dense `u32` indices.
pub trait Address: Copy + Eq + Ord + Hash + Debug + Send + Sync + 'static {
    /// Appends the wire form.
    fn encode(&self, w: &mut Vec<u8>);
    /// Reads the wire form.
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
    /// A dense index, when addresses are small consecutive integers (lets the member
    /// store skip its hash index; used by the simulator at 10,000 nodes).
    fn dense(&self) -> Option<usize> {
        None
    }
}

/// Largest simulator address (dense `u32` addresses index vectors directly, so they are
/// bounded to keep a hostile frame from making a node allocate for 2^32 slots).
pub const MAX_DENSE_ADDR: u32 = (1 << 20) - 1;

impl Address for u32 {
    fn encode(&self, w: &mut Vec<u8>) {
        w.extend_from_slice(&self.to_be_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let v = r.u32()?;
        if v > MAX_DENSE_ADDR {
            return Err(DecodeError::Invalid("simulator address"));
        }
        Ok(v)
    }
    fn dense(&self) -> Option<usize> {
        Some((*self).min(MAX_DENSE_ADDR) as usize)
    }
}

impl Address for SocketAddr {
    fn encode(&self, w: &mut Vec<u8>) {
        match self.ip() {
            IpAddr::V4(ip) => {
                w.push(4);
                w.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                w.push(6);
                w.extend_from_slice(&ip.octets());
            }
        }
        w.extend_from_slice(&self.port().to_be_bytes());
    }
    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let ip = match r.u8()? {
            4 => {
                let b = r.take(4)?;
                IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            6 => {
                let b = r.take(16)?;
                let mut o = [0u8; 16];
                o.copy_from_slice(b);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return Err(DecodeError::Invalid("address family")),
        };
        let port = r.u16()?;
        Ok(SocketAddr::new(ip, port))
    }
}

/// A bounds-checked reader over a byte slice.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    /// Reads a byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    /// Reads a big-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// Reads a big-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Reads a big-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut o = [0u8; 8];
        o.copy_from_slice(b);
        Ok(u64::from_be_bytes(o))
    }
    /// Reads a u16-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, max: usize) -> Result<String, DecodeError> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(DecodeError::TooLong);
        }
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid("utf-8"))
    }
    /// Reads a u32-length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::TooLong);
        }
        Ok(self.take(n)?.to_vec())
    }
}

/// Reads a Lamport time, at most [`MAX_LTIME`].
fn ltime(r: &mut Reader<'_>) -> Result<u64, DecodeError> {
    match r.u64()? {
        t if t <= MAX_LTIME => Ok(t),
        _ => Err(DecodeError::Invalid("lamport time")),
    }
}

fn put_str(w: &mut Vec<u8>, s: &str) {
    let n = s.len().min(u16::MAX as usize);
    w.extend_from_slice(&(n as u16).to_be_bytes());
    w.extend_from_slice(&s.as_bytes()[..n]);
}

fn put_bytes(w: &mut Vec<u8>, b: &[u8]) {
    w.extend_from_slice(&(b.len() as u32).to_be_bytes());
    w.extend_from_slice(b);
}

/// SWIM state of a member as seen by one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberState {
    /// Answers probes.
    Alive,
    /// Missed a probe; will be declared dead unless it refutes in time.
    Suspect,
    /// Declared failed.
    Dead,
    /// Left gracefully.
    Left,
}

impl MemberState {
    fn to_u8(self) -> u8 {
        match self {
            Self::Alive => 0,
            Self::Suspect => 1,
            Self::Dead => 2,
            Self::Left => 3,
        }
    }
    fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => Self::Alive,
            1 => Self::Suspect,
            2 => Self::Dead,
            3 => Self::Left,
            _ => return Err(DecodeError::Invalid("member state")),
        })
    }
    /// Alive or suspect: still counted as a member that takes part.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Alive | Self::Suspect)
    }
}

/// A membership update (SWIM alive/suspect/dead/left message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberUpdate<A> {
    /// The member this is about.
    pub node: A,
    /// Its incarnation number.
    pub incarnation: u32,
    /// Claimed state.
    pub state: MemberState,
    /// Who suspects it (only meaningful for `Suspect`; Lifeguard confirmations).
    pub from: A,
}

/// A network attachment event (cluster-scoped): node joined or left a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachUpdate<A> {
    /// The node.
    pub node: A,
    /// Network name.
    pub network: String,
    /// The node's Lamport time of the event.
    pub ltime: u64,
    /// Joined (true) or left (false).
    pub joined: bool,
}

/// A table entry event (network-scoped; the network is given by the enclosing message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryUpdate<A> {
    /// Table name.
    pub table: String,
    /// Key.
    pub key: String,
    /// Writer.
    pub owner: A,
    /// Writer's Lamport time.
    pub ltime: u64,
    /// Tombstone?
    pub deleted: bool,
    /// For tombstones: milliseconds left before it is reaped.
    pub reap_in_ms: u64,
    /// Value (empty for tombstones).
    pub value: Vec<u8>,
}

/// One piggybacked item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<A> {
    /// Membership.
    Member(MemberUpdate<A>),
    /// Network attachment.
    Attach(AttachUpdate<A>),
    /// Table entry.
    Entry(EntryUpdate<A>),
}

impl<A: Address> Item<A> {
    /// Appends the wire form.
    pub fn encode(&self, w: &mut Vec<u8>) {
        match self {
            Item::Member(m) => {
                w.push(1);
                m.node.encode(w);
                w.extend_from_slice(&m.incarnation.to_be_bytes());
                w.push(m.state.to_u8());
                if m.state == MemberState::Suspect {
                    m.from.encode(w);
                }
            }
            Item::Attach(a) => {
                w.push(2);
                a.node.encode(w);
                put_str(w, &a.network);
                w.extend_from_slice(&a.ltime.to_be_bytes());
                w.push(a.joined as u8);
            }
            Item::Entry(e) => {
                w.push(3);
                put_str(w, &e.table);
                put_str(w, &e.key);
                e.owner.encode(w);
                w.extend_from_slice(&e.ltime.to_be_bytes());
                w.push(e.deleted as u8);
                if e.deleted {
                    w.extend_from_slice(&e.reap_in_ms.to_be_bytes());
                } else {
                    put_bytes(w, &e.value);
                }
            }
        }
    }

    /// Encoded form as a fresh vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Vec::new();
        self.encode(&mut w);
        w
    }

    /// Reads one item.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            1 => {
                let node = A::decode(r)?;
                let incarnation = r.u32()?;
                let state = MemberState::from_u8(r.u8()?)?;
                let from = if state == MemberState::Suspect {
                    A::decode(r)?
                } else {
                    node
                };
                Ok(Item::Member(MemberUpdate {
                    node,
                    incarnation,
                    state,
                    from,
                }))
            }
            2 => {
                let node = A::decode(r)?;
                let network = r.string(MAX_NAME)?;
                let ltime = ltime(r)?;
                let joined = r.u8()? != 0;
                Ok(Item::Attach(AttachUpdate {
                    node,
                    network,
                    ltime,
                    joined,
                }))
            }
            3 => {
                let table = r.string(MAX_NAME)?;
                let key = r.string(MAX_NAME)?;
                let owner = A::decode(r)?;
                let ltime = ltime(r)?;
                let deleted = r.u8()? != 0;
                let (reap_in_ms, value) = if deleted {
                    (r.u64()?, Vec::new())
                } else {
                    (0, r.bytes(MAX_VALUE)?)
                };
                Ok(Item::Entry(EntryUpdate {
                    table,
                    key,
                    owner,
                    ltime,
                    deleted,
                    reap_in_ms,
                    value,
                }))
            }
            _ => Err(DecodeError::Invalid("item kind")),
        }
    }
}

/// Message bodies, datagram and stream alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body<A> {
    /// Direct probe of `target`.
    Ping {
        /// Sequence number to echo.
        seq: u32,
        /// Who the sender means to probe (misdirected pings are ignored).
        target: A,
    },
    /// Indirect probe request: please ping `target` and tell me.
    PingReq {
        /// Sequence number to echo in the ack/nack.
        seq: u32,
        /// Target.
        target: A,
    },
    /// Probe answered.
    Ack {
        /// Echoed sequence.
        seq: u32,
    },
    /// Indirect probe helper is alive but target did not answer (Lifeguard).
    Nack {
        /// Echoed sequence.
        seq: u32,
    },
    /// Cluster-scoped gossip: only items (member and attach updates).
    Gossip,
    /// Network-scoped gossip: items are entry updates of `network`.
    TableGossip {
        /// Network.
        network: String,
    },
    /// Stream: membership digest; the receiver answers with a push-pull if it differs.
    MemberDigest {
        /// XOR digest of the member list.
        hash: u64,
        /// Number of members known.
        count: u32,
    },
    /// Stream: full membership state (items: members and attachments).
    PushPull {
        /// This is a reply (do not answer).
        reply: bool,
    },
    /// Stream: table digest of one network.
    SyncDigest {
        /// Network.
        network: String,
        /// XOR digest of all entries.
        hash: u64,
    },
    /// Stream: per-bucket digests (the whole digest differed).
    SyncBuckets {
        /// Network.
        network: String,
        /// Bucket digests.
        buckets: Vec<u64>,
    },
    /// Stream: entries of some buckets (items), and the buckets wanted back.
    SyncEntries {
        /// Network.
        network: String,
        /// Buckets the receiver should send back.
        want: Vec<u16>,
    },
}

/// Frame header: sender identity and replay counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<A> {
    /// Sender.
    pub from: A,
    /// Sender's boot epoch (increases across restarts).
    pub epoch: u64,
    /// Per-channel sequence number for replay protection.
    pub seq: u64,
}

/// A decoded (plaintext) frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<A> {
    /// Header.
    pub header: Header<A>,
    /// Body.
    pub body: Body<A>,
    /// Piggybacked items.
    pub items: Vec<Item<A>>,
}

const WIRE_VERSION: u8 = 1;

/// Encodes a header and body; items are appended by the caller with [`Item::encode`] and
/// counted in the `u16` at the returned offset (see [`set_item_count`]).
pub fn encode_head<A: Address>(header: &Header<A>, body: &Body<A>, w: &mut Vec<u8>) -> usize {
    w.push(WIRE_VERSION);
    header.from.encode(w);
    w.extend_from_slice(&header.epoch.to_be_bytes());
    w.extend_from_slice(&header.seq.to_be_bytes());
    match body {
        Body::Ping { seq, target } => {
            w.push(1);
            w.extend_from_slice(&seq.to_be_bytes());
            target.encode(w);
        }
        Body::PingReq { seq, target } => {
            w.push(2);
            w.extend_from_slice(&seq.to_be_bytes());
            target.encode(w);
        }
        Body::Ack { seq } => {
            w.push(3);
            w.extend_from_slice(&seq.to_be_bytes());
        }
        Body::Nack { seq } => {
            w.push(4);
            w.extend_from_slice(&seq.to_be_bytes());
        }
        Body::Gossip => w.push(5),
        Body::TableGossip { network } => {
            w.push(6);
            put_str(w, network);
        }
        Body::MemberDigest { hash, count } => {
            w.push(7);
            w.extend_from_slice(&hash.to_be_bytes());
            w.extend_from_slice(&count.to_be_bytes());
        }
        Body::PushPull { reply } => {
            w.push(8);
            w.push(*reply as u8);
        }
        Body::SyncDigest { network, hash } => {
            w.push(9);
            put_str(w, network);
            w.extend_from_slice(&hash.to_be_bytes());
        }
        Body::SyncBuckets { network, buckets } => {
            w.push(10);
            put_str(w, network);
            w.extend_from_slice(&(buckets.len() as u16).to_be_bytes());
            for b in buckets {
                w.extend_from_slice(&b.to_be_bytes());
            }
        }
        Body::SyncEntries { network, want } => {
            w.push(11);
            put_str(w, network);
            w.extend_from_slice(&(want.len() as u16).to_be_bytes());
            for b in want {
                w.extend_from_slice(&b.to_be_bytes());
            }
        }
    }
    let at = w.len();
    w.extend_from_slice(&[0, 0]);
    at
}

/// Writes the item count at `at` (from [`encode_head`]).
pub fn set_item_count(w: &mut [u8], at: usize, count: usize) {
    let c = (count.min(u32::MAX as usize) as u32).to_be_bytes();
    if at + 2 <= w.len() {
        // Counts above u16::MAX use an extension: 0xFFFF then a u32 is not supported; the
        // encoder never puts more than 65535 items in one frame.
        w[at] = c[2];
        w[at + 1] = c[3];
    }
}

/// Encodes a whole frame.
pub fn encode_frame<A: Address>(frame: &Frame<A>) -> Vec<u8> {
    let mut w = Vec::new();
    let at = encode_head(&frame.header, &frame.body, &mut w);
    for it in frame.items.iter().take(u16::MAX as usize) {
        it.encode(&mut w);
    }
    set_item_count(&mut w, at, frame.items.len().min(u16::MAX as usize));
    w
}

/// Decodes only the header (used for the replay check before the rest is parsed).
pub fn decode_header<A: Address>(buf: &[u8]) -> Result<(Header<A>, Reader<'_>), DecodeError> {
    let mut r = Reader::new(buf);
    if r.u8()? != WIRE_VERSION {
        return Err(DecodeError::Invalid("version"));
    }
    let from = A::decode(&mut r)?;
    let epoch = r.u64()?;
    let seq = r.u64()?;
    Ok((Header { from, epoch, seq }, r))
}

/// Decodes the body and items after [`decode_header`].
pub fn decode_rest<A: Address>(r: &mut Reader<'_>) -> Result<(Body<A>, Vec<Item<A>>), DecodeError> {
    let body = match r.u8()? {
        1 => Body::Ping {
            seq: r.u32()?,
            target: A::decode(r)?,
        },
        2 => Body::PingReq {
            seq: r.u32()?,
            target: A::decode(r)?,
        },
        3 => Body::Ack { seq: r.u32()? },
        4 => Body::Nack { seq: r.u32()? },
        5 => Body::Gossip,
        6 => Body::TableGossip {
            network: r.string(MAX_NAME)?,
        },
        7 => Body::MemberDigest {
            hash: r.u64()?,
            count: r.u32()?,
        },
        8 => Body::PushPull {
            reply: r.u8()? != 0,
        },
        9 => Body::SyncDigest {
            network: r.string(MAX_NAME)?,
            hash: r.u64()?,
        },
        10 => {
            let network = r.string(MAX_NAME)?;
            let n = r.u16()? as usize;
            if n * 8 > r.remaining() {
                return Err(DecodeError::Truncated);
            }
            let mut buckets = Vec::with_capacity(n);
            for _ in 0..n {
                buckets.push(r.u64()?);
            }
            Body::SyncBuckets { network, buckets }
        }
        11 => {
            let network = r.string(MAX_NAME)?;
            let n = r.u16()? as usize;
            if n * 2 > r.remaining() {
                return Err(DecodeError::Truncated);
            }
            let mut want = Vec::with_capacity(n);
            for _ in 0..n {
                want.push(r.u16()?);
            }
            Body::SyncEntries { network, want }
        }
        _ => return Err(DecodeError::Invalid("body kind")),
    };
    let n = r.u16()? as usize;
    // Every item takes at least 2 bytes: cap the allocation by what is left.
    let mut items = Vec::with_capacity(n.min(r.remaining() / 2));
    for _ in 0..n {
        items.push(Item::decode(r)?);
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Invalid("trailing bytes"));
    }
    Ok((body, items))
}

/// Decodes a whole frame.
pub fn decode_frame<A: Address>(buf: &[u8]) -> Result<Frame<A>, DecodeError> {
    let (header, mut r) = decode_header(buf)?;
    let (body, items) = decode_rest(&mut r)?;
    Ok(Frame {
        header,
        body,
        items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_all_bodies() {
        let h = Header {
            from: SocketAddr::from(([127, 0, 0, 1], 7946)),
            epoch: 9,
            seq: 3,
        };
        let t = SocketAddr::from(([127, 0, 0, 2], 7946));
        let bodies = vec![
            Body::Ping { seq: 1, target: t },
            Body::PingReq { seq: 2, target: t },
            Body::Ack { seq: 3 },
            Body::Nack { seq: 4 },
            Body::Gossip,
            Body::TableGossip {
                network: "n".into(),
            },
            Body::MemberDigest { hash: 5, count: 6 },
            Body::PushPull { reply: true },
            Body::SyncDigest {
                network: "n".into(),
                hash: 7,
            },
            Body::SyncBuckets {
                network: "n".into(),
                buckets: vec![1, 2, 3],
            },
            Body::SyncEntries {
                network: "n".into(),
                want: vec![1, 9],
            },
        ];
        let items = vec![
            Item::Member(MemberUpdate {
                node: t,
                incarnation: 3,
                state: MemberState::Suspect,
                from: h.from,
            }),
            Item::Attach(AttachUpdate {
                node: t,
                network: "net".into(),
                ltime: 4,
                joined: true,
            }),
            Item::Entry(EntryUpdate {
                table: "t".into(),
                key: "k".into(),
                owner: t,
                ltime: 5,
                deleted: false,
                reap_in_ms: 0,
                value: b"v".to_vec(),
            }),
            Item::Entry(EntryUpdate {
                table: "t".into(),
                key: "k2".into(),
                owner: t,
                ltime: 6,
                deleted: true,
                reap_in_ms: 77,
                value: vec![],
            }),
        ];
        for body in bodies {
            let f = Frame {
                header: h,
                body,
                items: items.clone(),
            };
            let bytes = encode_frame(&f);
            assert_eq!(decode_frame::<SocketAddr>(&bytes).ok(), Some(f));
            for cut in 0..bytes.len() {
                assert!(decode_frame::<SocketAddr>(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn lamport_times_beyond_the_bound_are_invalid() {
        let t = SocketAddr::from(([127, 0, 0, 2], 7946));
        let entry = |ltime| {
            Item::Entry(EntryUpdate {
                table: "t".into(),
                key: "k".into(),
                owner: t,
                ltime,
                deleted: false,
                reap_in_ms: 0,
                value: vec![],
            })
        };
        let attach = |ltime| {
            Item::Attach(AttachUpdate {
                node: t,
                network: "n".into(),
                ltime,
                joined: true,
            })
        };
        for item in [entry(MAX_LTIME), attach(MAX_LTIME)] {
            let b = item.to_bytes();
            assert_eq!(
                Item::<SocketAddr>::decode(&mut Reader::new(&b)).ok(),
                Some(item)
            );
        }
        for item in [entry(MAX_LTIME + 1), attach(u64::MAX)] {
            let b = item.to_bytes();
            assert_eq!(
                Item::<SocketAddr>::decode(&mut Reader::new(&b)),
                Err(DecodeError::Invalid("lamport time"))
            );
        }
    }
}
