//! The IPv4 allocator's set: a bitmap compressed by 4096-bit chunks.
//!
//! A chunk is `Empty`, `Full` or a boxed 4096-bit block, so a run of full or empty chunks costs
//! one pointer-sized tag per chunk (8 bytes for 4096 addresses): a filled /8 is 32 KiB, a /8
//! with every other address taken is the worst case at 2.1 MiB. A second-level bitset marks
//! full chunks, and each block keeps a 64-bit summary of its full words, so finding the next
//! free address skips 4096 taken addresses per bit tested.

const CHUNK_SHIFT: u32 = 12;
const CHUNK_BITS: u64 = 1 << CHUNK_SHIFT;
const WORDS: usize = (CHUNK_BITS / 64) as usize;

#[derive(Debug, Clone)]
struct Block {
    words: [u64; WORDS],
    /// Bit `i` set when `words[i]` is all ones.
    full_words: u64,
    count: u32,
}

#[derive(Debug, Clone)]
enum Chunk {
    Empty,
    Full,
    Bits(Box<Block>),
}

/// A set of offsets `0..size` (`size` ≤ 2³²), as a chunk-compressed bitmap.
#[derive(Debug, Clone)]
pub struct DenseSet {
    size: u64,
    chunks: Vec<Chunk>,
    /// Bit per chunk: set when the chunk is full.
    full: Vec<u64>,
    count: u64,
    /// Every chunk below this index is full.
    low_full: usize,
}

impl DenseSet {
    /// An empty set of `size` offsets.
    pub fn new(size: u64) -> Self {
        let nchunks = size.div_ceil(CHUNK_BITS) as usize;
        Self {
            size,
            chunks: (0..nchunks).map(|_| Chunk::Empty).collect(),
            full: vec![0; nchunks.div_ceil(64)],
            count: 0,
            low_full: 0,
        }
    }

    /// How many offsets the set can hold.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many offsets are set.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn chunk_len(&self, ci: usize) -> u64 {
        (self.size - ci as u64 * CHUNK_BITS).min(CHUNK_BITS)
    }

    /// Whether `off` is set.
    pub fn contains(&self, off: u64) -> bool {
        if off >= self.size {
            return false;
        }
        match &self.chunks[(off >> CHUNK_SHIFT) as usize] {
            Chunk::Empty => false,
            Chunk::Full => true,
            Chunk::Bits(b) => {
                let bit = off & (CHUNK_BITS - 1);
                b.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
            }
        }
    }

    /// Sets `off`; false if it was already set or is out of range.
    pub fn insert(&mut self, off: u64) -> bool {
        if off >= self.size {
            return false;
        }
        let ci = (off >> CHUNK_SHIFT) as usize;
        let bit = off & (CHUNK_BITS - 1);
        let len = self.chunk_len(ci);
        let chunk = &mut self.chunks[ci];
        let block = match chunk {
            Chunk::Full => return false,
            Chunk::Empty => {
                *chunk = Chunk::Bits(Box::new(Block {
                    words: [0; WORDS],
                    full_words: 0,
                    count: 0,
                }));
                match chunk {
                    Chunk::Bits(b) => b,
                    _ => unreachable!("just set"),
                }
            }
            Chunk::Bits(b) => b,
        };
        let w = (bit / 64) as usize;
        let mask = 1u64 << (bit % 64);
        if block.words[w] & mask != 0 {
            return false;
        }
        block.words[w] |= mask;
        if block.words[w] == u64::MAX {
            block.full_words |= 1 << w;
        }
        block.count += 1;
        self.count += 1;
        if u64::from(block.count) == len {
            *chunk = Chunk::Full;
            self.full[ci / 64] |= 1 << (ci % 64);
            if ci == self.low_full {
                // Keep "everything below low_full is full" tight, so searches from the start
                // skip filled chunks without scanning the summary (amortized O(1)).
                while self.low_full < self.chunks.len()
                    && matches!(self.chunks[self.low_full], Chunk::Full)
                {
                    self.low_full += 1;
                }
            }
        }
        true
    }

    /// Clears `off`; false if it was not set.
    pub fn remove(&mut self, off: u64) -> bool {
        if off >= self.size {
            return false;
        }
        let ci = (off >> CHUNK_SHIFT) as usize;
        let bit = off & (CHUNK_BITS - 1);
        let len = self.chunk_len(ci);
        let chunk = &mut self.chunks[ci];
        let block = match chunk {
            Chunk::Empty => return false,
            Chunk::Full => {
                let mut words = [u64::MAX; WORDS];
                // Bits past the end of a short last chunk are never set.
                for (i, w) in words.iter_mut().enumerate() {
                    let lo = i as u64 * 64;
                    if lo >= len {
                        *w = 0;
                    } else if len - lo < 64 {
                        *w = (1u64 << (len - lo)) - 1;
                    }
                }
                let full_words = words.iter().enumerate().fold(0u64, |m, (i, w)| {
                    if *w == u64::MAX {
                        m | 1 << i
                    } else {
                        m
                    }
                });
                *chunk = Chunk::Bits(Box::new(Block {
                    words,
                    full_words,
                    count: len as u32,
                }));
                self.full[ci / 64] &= !(1 << (ci % 64));
                self.low_full = self.low_full.min(ci);
                match chunk {
                    Chunk::Bits(b) => b,
                    _ => unreachable!("just set"),
                }
            }
            Chunk::Bits(b) => b,
        };
        let w = (bit / 64) as usize;
        let mask = 1u64 << (bit % 64);
        if block.words[w] & mask == 0 {
            return false;
        }
        block.words[w] &= !mask;
        block.full_words &= !(1 << w);
        block.count -= 1;
        self.count -= 1;
        // A block that empties stays a block: alloc/release churn at a chunk's edge would
        // otherwise allocate and free a block each time. Memory stays bounded by the size.
        true
    }

    /// The first chunk index ≥ `ci` that is not full, if any.
    fn next_nonfull_chunk(&self, ci: usize) -> Option<usize> {
        let n = self.chunks.len();
        let mut wi = ci / 64;
        if wi >= self.full.len() {
            return None;
        }
        let mut word = !self.full[wi] & (u64::MAX << (ci % 64));
        loop {
            if word != 0 {
                let c = wi * 64 + word.trailing_zeros() as usize;
                return (c < n).then_some(c);
            }
            wi += 1;
            if wi >= self.full.len() {
                return None;
            }
            word = !self.full[wi];
        }
    }

    /// The lowest clear offset in `lo..=hi`, if any.
    pub fn first_clear(&self, lo: u64, hi: u64) -> Option<u64> {
        let hi = hi.min(self.size.checked_sub(1)?);
        if lo > hi {
            return None;
        }
        let mut ci = (lo >> CHUNK_SHIFT) as usize;
        let mut start = lo;
        if ci < self.low_full {
            // Everything below `low_full` is full.
            ci = self.low_full;
            start = ci as u64 * CHUNK_BITS;
        }
        loop {
            ci = self.next_nonfull_chunk(ci)?;
            let base = ci as u64 * CHUNK_BITS;
            if base > hi {
                return None;
            }
            let from = start.max(base);
            let found = match &self.chunks[ci] {
                Chunk::Empty => Some(from),
                Chunk::Full => None,
                Chunk::Bits(b) => first_clear_in_block(b, from - base).map(|bit| base + bit),
            };
            if let Some(off) = found {
                return (off <= hi).then_some(off);
            }
            ci += 1;
        }
    }

    /// Every set offset, in order (for tests and persistence checks).
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.chunks.iter().enumerate().flat_map(move |(ci, c)| {
            let base = ci as u64 * CHUNK_BITS;
            let len = self.chunk_len(ci);
            let v: Box<dyn Iterator<Item = u64>> = match c {
                Chunk::Empty => Box::new(std::iter::empty()),
                Chunk::Full => Box::new(base..base + len),
                Chunk::Bits(b) => Box::new((0..WORDS).flat_map(move |w| {
                    let word = b.words[w];
                    (0..64u64)
                        .filter(move |i| word & (1 << i) != 0)
                        .map(move |i| base + w as u64 * 64 + i)
                })),
            };
            v
        })
    }

    /// Bytes of heap this set holds (chunk table, summary, blocks).
    pub fn heap_bytes(&self) -> usize {
        let blocks = self
            .chunks
            .iter()
            .filter(|c| matches!(c, Chunk::Bits(_)))
            .count();
        self.chunks.capacity() * std::mem::size_of::<Chunk>()
            + self.full.capacity() * 8
            + blocks * std::mem::size_of::<Block>()
    }
}

/// The first clear bit ≥ `from` in a block (bits past a short chunk's end look clear; the
/// caller bounds the result).
fn first_clear_in_block(b: &Block, from: u64) -> Option<u64> {
    let w = (from / 64) as usize;
    let word = !b.words[w] & (u64::MAX << (from % 64));
    if word != 0 {
        return Some(w as u64 * 64 + u64::from(word.trailing_zeros()));
    }
    if w + 1 >= WORDS {
        return None;
    }
    let candidates = !b.full_words & (u64::MAX << (w + 1));
    if candidates == 0 {
        return None;
    }
    let w = candidates.trailing_zeros() as usize;
    Some(w as u64 * 64 + u64::from((!b.words[w]).trailing_zeros()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_and_free() {
        let mut s = DenseSet::new(10_000);
        for i in 0..10_000 {
            assert_eq!(s.first_clear(0, 9_999), Some(i));
            assert!(s.insert(i));
        }
        assert_eq!(s.first_clear(0, 9_999), None);
        assert!(s.remove(5_000));
        assert_eq!(s.first_clear(0, 9_999), Some(5_000));
        assert_eq!(s.first_clear(5_001, 9_999), None);
        assert!(!s.remove(5_000));
        assert_eq!(s.count(), 9_999);
        assert_eq!(s.iter().count(), 9_999);
    }

    #[test]
    fn bounds() {
        let mut s = DenseSet::new(1);
        assert_eq!(s.first_clear(0, 10), Some(0));
        assert!(s.insert(0));
        assert_eq!(s.first_clear(0, 10), None);
        assert!(!s.insert(1));
        let s = DenseSet::new(0);
        assert_eq!(s.first_clear(0, 0), None);
    }
}
