//! How keys live in znodes: the first data byte tells a key (`0x01`, or `0x03` with a TTL) from
//! an implicit parent (empty, or `0x04` for a TTL znode), and from a lock contender (`0x02`);
//! key segments are escaped into znode names (see the module docs of `zookeeper`).

use std::time::Duration;

use zookeeper_client as zk;
use zookeeper_client::{Acls, CreateMode, Stat};

use super::Inner;
use crate::types::PutOptions;

/// First data byte of a key's znode.
const KEY_MARK: u8 = 0x01;
/// First data byte of a lock contender's znode.
pub(super) const LOCK_MARK: u8 = 0x02;
/// First data byte of a key's znode with a TTL (then the TTL in ms, 8 bytes big-endian).
const TTL_KEY_MARK: u8 = 0x03;
/// First data byte of a TTL znode left as a parent (then the TTL in ms).
const TTL_PARENT_MARK: u8 = 0x04;

/// A znode's mode. ZooKeeper does not tell clients whether a znode is a TTL znode (its stat
/// shows no owner), so the data says it (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Persistent,
    /// TTL in milliseconds.
    Ttl(u64),
    Ephemeral,
}

/// The mode a write asks for.
pub(super) fn wanted_mode(options: &PutOptions) -> Mode {
    match options.ttl {
        Some(ttl) => Mode::Ttl((ttl.as_millis() as u64).max(1)),
        None => Mode::Persistent,
    }
}

pub(super) fn create_options(mode: Mode) -> zk::CreateOptions<'static> {
    let opts = CreateMode::Persistent.with_acls(Acls::anyone_all());
    match mode {
        Mode::Ttl(ms) => opts.with_ttl(Duration::from_millis(ms)),
        _ => opts,
    }
}

/// What a znode is, from its data (see the module docs).
#[derive(Debug)]
pub(super) enum Node {
    Key { value: Vec<u8>, mode: Mode },
    Parent { mode: Mode },
    Lock,
}

impl Node {
    pub(super) fn parse(mut data: Vec<u8>, stat: &Stat) -> Node {
        // Only plain ephemeral znodes show their owner.
        if stat.ephemeral_owner != 0 {
            return Node::Lock;
        }
        let ttl = |data: &[u8]| -> Option<u64> {
            Some(u64::from_be_bytes(data.get(1..9)?.try_into().ok()?))
        };
        match data.first() {
            None => Node::Parent {
                mode: Mode::Persistent,
            },
            Some(&KEY_MARK) => {
                data.remove(0);
                Node::Key {
                    value: data,
                    mode: Mode::Persistent,
                }
            }
            Some(&LOCK_MARK) => Node::Lock,
            Some(&TTL_KEY_MARK) if data.len() >= 9 => {
                let mode = Mode::Ttl(ttl(&data).unwrap_or(0));
                data.drain(..9);
                Node::Key { value: data, mode }
            }
            Some(&TTL_PARENT_MARK) if data.len() >= 9 => Node::Parent {
                mode: Mode::Ttl(ttl(&data).unwrap_or(0)),
            },
            // Written by another tool: a key with that raw value.
            Some(_) => Node::Key {
                value: data,
                mode: Mode::Persistent,
            },
        }
    }

    pub(super) fn mode(&self) -> Mode {
        match self {
            Node::Key { mode, .. } | Node::Parent { mode } => *mode,
            Node::Lock => Mode::Ephemeral,
        }
    }

    pub(super) fn is_key(&self) -> bool {
        matches!(self, Node::Key { .. })
    }

    fn into_value(self) -> Option<Vec<u8>> {
        match self {
            Node::Key { value, .. } => Some(value),
            _ => None,
        }
    }
}

/// A key's data.
pub(super) fn encode(value: &[u8], mode: Mode) -> Vec<u8> {
    let mut data = Vec::with_capacity(value.len() + 9);
    match mode {
        Mode::Ttl(ms) => {
            data.push(TTL_KEY_MARK);
            data.extend_from_slice(&ms.to_be_bytes());
        }
        _ => data.push(KEY_MARK),
    }
    data.extend_from_slice(value);
    data
}

/// The data of a deleted key that still has keys under it.
pub(super) fn parent_data(mode: Mode) -> Vec<u8> {
    match mode {
        Mode::Ttl(ms) => {
            let mut data = vec![TTL_PARENT_MARK];
            data.extend_from_slice(&ms.to_be_bytes());
            data
        }
        _ => Vec::new(),
    }
}

/// The value of a key's znode, or `None` for a parent or lock node.
pub(super) fn decode(data: Vec<u8>, stat: &Stat) -> Option<Vec<u8>> {
    Node::parse(data, stat).into_value()
}

pub(super) fn index_of(stat: &Stat) -> u64 {
    stat.mzxid.max(0) as u64
}

fn escape_segment(segment: &str, top_without_chroot: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(segment.len());
    for c in segment.chars() {
        let u = u32::from(c);
        let refused = c == '%'
            || u < 0x20
            || (0x7f..=0x9f).contains(&u)
            || (0xd800..=0xf8ff).contains(&u)
            || u >= 0xfff0;
        if refused {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    if top_without_chroot && out == "zookeeper" {
        out = "%7Aookeeper".into();
    }
    out
}

fn unescape_segment(name: &str) -> Option<String> {
    if !name.contains('%') {
        return Some(name.to_string());
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

pub(super) fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

pub(super) fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

impl Inner {
    pub(super) fn path(&self, key: &str) -> String {
        let mut path = self.root.clone();
        for (i, segment) in key.split('/').enumerate() {
            path.push('/');
            path.push_str(&escape_segment(segment, i == 0 && self.root.is_empty()));
        }
        path
    }

    pub(super) fn dir_path(&self, dir: &str) -> String {
        if dir.is_empty() {
            if self.root.is_empty() {
                "/".into()
            } else {
                self.root.clone()
            }
        } else {
            self.path(dir)
        }
    }

    /// The key of a znode path under the root, if it decodes.
    pub(super) fn key_of(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix(&self.root)?.strip_prefix('/')?;
        let mut key = String::with_capacity(rest.len());
        for (i, name) in rest.split('/').enumerate() {
            if i > 0 {
                key.push('/');
            }
            key.push_str(&unescape_segment(name)?);
        }
        Some(key)
    }
}

/// The directory whose znode is `base`.
pub(super) fn base_dir_of(inner: &Inner, base: &str) -> String {
    inner.key_of(base).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_escape_and_round_trip() {
        for s in [
            "réseau",
            "网络",
            "🐳",
            "a%b",
            "tab\there",
            "zookeeper",
            "\u{e000}x",
        ] {
            let e = escape_segment(s, false);
            assert!(!e
                .chars()
                .any(|c| c == '\u{1f433}' || c == '\t' || c == '\u{e000}'));
            assert_eq!(unescape_segment(&e).as_deref(), Some(s));
        }
        assert_eq!(escape_segment("🐳", false), "%F0%9F%90%B3");
        assert_eq!(escape_segment("zookeeper", true), "%7Aookeeper");
        assert_eq!(escape_segment("zookeeper", false), "zookeeper");
        assert_eq!(
            unescape_segment("%7Aookeeper").as_deref(),
            Some("zookeeper")
        );
        assert_eq!(unescape_segment("bad%zz"), None);
    }

    #[test]
    fn node_encoding() {
        let stat = Stat {
            czxid: 1,
            mzxid: 1,
            pzxid: 1,
            ctime: 0,
            mtime: 0,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 1,
            num_children: 0,
        };
        let parse = |data: Vec<u8>| Node::parse(data, &stat);
        assert!(matches!(parse(encode(b"v", Mode::Persistent)),
            Node::Key { value, mode: Mode::Persistent } if value == b"v"));
        assert!(matches!(parse(encode(b"", Mode::Ttl(1500))),
            Node::Key { value, mode: Mode::Ttl(1500) } if value.is_empty()));
        assert!(matches!(
            parse(parent_data(Mode::Persistent)),
            Node::Parent {
                mode: Mode::Persistent
            }
        ));
        assert!(matches!(
            parse(parent_data(Mode::Ttl(7))),
            Node::Parent { mode: Mode::Ttl(7) }
        ));
        assert!(matches!(parse(vec![LOCK_MARK, 1]), Node::Lock));
        assert!(matches!(parse(b"raw".to_vec()), Node::Key { value, .. } if value == b"raw"));
        let ephemeral = Stat {
            ephemeral_owner: 0x1234,
            ..stat
        };
        assert!(matches!(
            Node::parse(encode(b"v", Mode::Persistent), &ephemeral),
            Node::Lock
        ));
    }

    #[test]
    fn paths() {
        assert_eq!(parent_of("/a/b"), "/a");
        assert_eq!(parent_of("/a"), "/");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
