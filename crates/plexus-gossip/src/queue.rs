//! Transmit-limited broadcast queue (memberlist's `TransmitLimitedQueue`).
//!
//! Each queued item is sent along with up to `limit` packets, least-sent first; a newer item
//! with the same key replaces the older one. The queue is bounded.

/// Most items queued; past this the most-sent items are dropped.
pub const MAX_QUEUE: usize = 4096;

#[derive(Debug, Clone)]
struct Queued {
    key: u64,
    bytes: Vec<u8>,
    sent: u32,
    id: u64,
}

/// A queue of encoded items to piggyback.
#[derive(Debug, Clone, Default)]
pub struct BroadcastQueue {
    items: Vec<Queued>,
    next_id: u64,
}

impl BroadcastQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues `bytes`, replacing any item with the same `key`.
    pub fn push(&mut self, key: u64, bytes: Vec<u8>) {
        self.items.retain(|q| q.key != key);
        self.next_id += 1;
        self.items.push(Queued {
            key,
            bytes,
            sent: 0,
            id: self.next_id,
        });
        if self.items.len() > MAX_QUEUE {
            self.items
                .sort_by_key(|q| (q.sent, std::cmp::Reverse(q.id)));
            self.items.truncate(MAX_QUEUE);
        }
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends items to `out` while they fit in `budget` bytes, preferring `prefer` keys, then
    /// least-sent and newest; counts a transmission for each and drops those that reached
    /// `limit`. Returns how many were appended.
    pub fn fill(
        &mut self,
        out: &mut Vec<u8>,
        mut budget: usize,
        limit: u32,
        prefer: Option<u64>,
    ) -> usize {
        if self.items.is_empty() {
            return 0;
        }
        self.items
            .sort_by_key(|q| (Some(q.key) != prefer, q.sent, std::cmp::Reverse(q.id)));
        let mut n = 0;
        for q in self.items.iter_mut() {
            if q.bytes.len() <= budget {
                out.extend_from_slice(&q.bytes);
                budget -= q.bytes.len();
                q.sent += 1;
                n += 1;
            }
            if budget < 8 {
                break;
            }
        }
        self.items.retain(|q| q.sent < limit);
        n
    }
}

impl BroadcastQueue {
    /// Whether any queued item fits in `threshold` bytes.
    pub fn has_small(&self, threshold: usize) -> bool {
        self.items.iter().any(|q| q.bytes.len() <= threshold)
    }

    /// Items too large for a datagram (`len > threshold`): returns copies to send over a
    /// stream, counting one transmission each and dropping those that reached `limit`.
    pub fn take_large(&mut self, threshold: usize, limit: u32) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for q in self.items.iter_mut() {
            if q.bytes.len() > threshold {
                out.push(q.bytes.clone());
                q.sent += 1;
            }
        }
        if !out.is_empty() {
            self.items.retain(|q| q.sent < limit);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_replacement() {
        let mut q = BroadcastQueue::new();
        q.push(1, vec![1; 10]);
        q.push(2, vec![2; 10]);
        q.push(1, vec![3; 10]);
        assert_eq!(q.len(), 2);
        let mut out = Vec::new();
        assert_eq!(q.fill(&mut out, 15, 2, None), 1);
        assert_eq!(out, vec![3; 10]);
        out.clear();
        assert_eq!(q.fill(&mut out, 100, 2, None), 2);
        assert_eq!(q.len(), 1);
        out.clear();
        assert_eq!(q.fill(&mut out, 100, 2, None), 1);
        assert!(q.is_empty());
    }
}
