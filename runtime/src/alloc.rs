//! The KV block allocator: a fixed pool of physical KV-cache blocks shared by the sequences of a
//! serving batch (`spec/serving.md`), as vLLM's block manager, with reference counts and a
//! content-addressed prefix cache (vLLM's automatic prefix caching).
//!
//! Invariants: block [`NULL_BLOCK`] (0) is reserved — it is never handed out, idle batch rows
//! point every block-table entry at it (their appends land there harmlessly) — so a pool of `n`
//! blocks has `n − 1` usable ones. Every usable block is in exactly one of three states:
//! *referenced* (reference count ≥ 1: held by that many sequences), *cached* (count 0 but
//! registered under a content hash: its KV is kept for a later prefix hit and it is evictable), or
//! *free*. [`BlockAllocator::free`] drops one reference; dropping one from a block with none is an
//! error (no double free). [`BlockAllocator::allocate_n`] is all-or-nothing; it takes free blocks
//! first (LIFO, as before caching existed) and evicts cached blocks only when no free one is left,
//! least recently released first (LRU). `used() + free_count() == usable()` always holds, where
//! `used()` counts referenced blocks and `free_count()` free plus cached ones (both can be
//! allocated); `peak_used()` is the most blocks referenced at once. A content hash maps to at most
//! one block and a block has at most one hash; a block's hash is dropped when it is evicted.

use std::collections::{BTreeMap, HashMap};

/// The reserved block idle batch rows point at.
pub const NULL_BLOCK: u32 = 0;

/// Why an allocation or a free failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("KV pool exhausted: {requested} blocks requested, {free} free of {usable}")]
    Exhausted {
        requested: usize,
        free: usize,
        usable: usize,
    },
    #[error("KV block {0} freed but not allocated (double free)")]
    DoubleFree(u32),
    #[error("KV block {0} is the reserved null block")]
    NullBlock(u32),
    #[error("KV block {block} is outside the pool of {blocks} blocks")]
    OutOfRange { block: u32, blocks: u32 },
    #[error("a KV pool needs at least 2 blocks (one is the reserved null block), got {0}")]
    TooSmall(u32),
    #[error("KV block {0} is free: only a referenced or cached block can be shared")]
    NotShareable(u32),
    #[error("KV block {0} is not referenced: only a held block can be registered in the cache")]
    NotHeld(u32),
}

/// A fixed pool of physical blocks `0..blocks`, block 0 reserved.
#[derive(Clone, Debug)]
pub struct BlockAllocator {
    /// Free (uncached) blocks; allocation pops from the end (lowest numbers first on a fresh
    /// pool, then LIFO reuse of freed blocks).
    free: Vec<u32>,
    /// Reference count per block.
    refs: Vec<u32>,
    /// The content hash a block is registered under.
    hash_of: Vec<Option<u64>>,
    /// Content hash → block.
    by_hash: HashMap<u64, u32>,
    /// Cached blocks with no reference, by release stamp (oldest first: the eviction order).
    evictable: BTreeMap<u64, u32>,
    /// The release stamp of each evictable block.
    stamp: Vec<u64>,
    tick: u64,
    peak: usize,
    evictions: u64,
}

impl BlockAllocator {
    /// A pool of `blocks` physical blocks (block 0 reserved).
    pub fn new(blocks: u32) -> Result<BlockAllocator, AllocError> {
        if blocks < 2 {
            return Err(AllocError::TooSmall(blocks));
        }
        let n = blocks as usize;
        Ok(BlockAllocator {
            free: (1..blocks).rev().collect(),
            refs: vec![0; n],
            hash_of: vec![None; n],
            by_hash: HashMap::new(),
            evictable: BTreeMap::new(),
            stamp: vec![0; n],
            tick: 0,
            peak: 0,
            evictions: 0,
        })
    }

    /// Physical blocks in the pool, the null block included.
    pub fn blocks(&self) -> u32 {
        self.refs.len() as u32
    }

    /// Blocks that can be allocated (all but the null block).
    pub fn usable(&self) -> usize {
        self.refs.len() - 1
    }

    /// Blocks that can be allocated now: free ones and cached ones without a reference.
    pub fn free_count(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Cached blocks without a reference (allocatable by eviction).
    pub fn cached_count(&self) -> usize {
        self.evictable.len()
    }

    /// Blocks referenced now.
    pub fn used(&self) -> usize {
        self.usable() - self.free_count()
    }

    /// The most blocks referenced at once so far.
    pub fn peak_used(&self) -> usize {
        self.peak
    }

    /// Cached blocks evicted to make room so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// References to `block` (0 when free or only cached).
    pub fn refcount(&self, block: u32) -> u32 {
        self.refs.get(block as usize).copied().unwrap_or(0)
    }

    /// One block.
    pub fn allocate(&mut self) -> Result<u32, AllocError> {
        Ok(self.allocate_n(1)?[0])
    }

    /// `n` blocks, or none at all when fewer than `n` can be allocated. Free blocks go first;
    /// then cached blocks are evicted, least recently released first.
    pub fn allocate_n(&mut self, n: usize) -> Result<Vec<u32>, AllocError> {
        if n > self.free_count() {
            return Err(AllocError::Exhausted {
                requested: n,
                free: self.free_count(),
                usable: self.usable(),
            });
        }
        let k = n.min(self.free.len());
        let mut out: Vec<u32> = self.free.split_off(self.free.len() - k);
        out.reverse();
        while out.len() < n {
            let (_, b) = self.evictable.pop_first().expect("counted above");
            if let Some(h) = self.hash_of[b as usize].take() {
                self.by_hash.remove(&h);
            }
            self.evictions += 1;
            out.push(b);
        }
        for &b in &out {
            self.refs[b as usize] = 1;
        }
        self.peak = self.peak.max(self.used());
        Ok(out)
    }

    fn check(&self, block: u32) -> Result<usize, AllocError> {
        if block == NULL_BLOCK {
            return Err(AllocError::NullBlock(block));
        }
        if block as usize >= self.refs.len() {
            return Err(AllocError::OutOfRange {
                block,
                blocks: self.blocks(),
            });
        }
        Ok(block as usize)
    }

    /// Drops one reference to a block; at none it stays cached (evictable) when it has a
    /// content hash, else it returns to the free list.
    pub fn free(&mut self, block: u32) -> Result<(), AllocError> {
        let i = self.check(block)?;
        if self.refs[i] == 0 {
            return Err(AllocError::DoubleFree(block));
        }
        self.refs[i] -= 1;
        if self.refs[i] == 0 {
            if self.hash_of[i].is_some() {
                self.tick += 1;
                self.stamp[i] = self.tick;
                self.evictable.insert(self.tick, block);
            } else {
                self.free.push(block);
            }
        }
        Ok(())
    }

    /// Drops one reference to every block of a sequence (stops at the first invalid one).
    pub fn free_all(&mut self, blocks: &[u32]) -> Result<(), AllocError> {
        blocks.iter().try_for_each(|&b| self.free(b))
    }

    /// Takes one more reference to a referenced or cached block (a prefix hit); a cached block
    /// leaves the eviction order.
    pub fn share(&mut self, block: u32) -> Result<(), AllocError> {
        let i = self.check(block)?;
        if self.refs[i] == 0 {
            if self.hash_of[i].is_none() {
                return Err(AllocError::NotShareable(block));
            }
            self.evictable.remove(&self.stamp[i]);
        }
        self.refs[i] += 1;
        self.peak = self.peak.max(self.used());
        Ok(())
    }

    /// The block cached under content hash `hash`.
    pub fn lookup(&self, hash: u64) -> Option<u32> {
        self.by_hash.get(&hash).copied()
    }

    /// Registers a referenced block under `hash` (its content: a full block of a known token
    /// prefix). Returns whether it was registered: not when the hash already names a block (the
    /// same content computed twice keeps the first) or the block already has a hash.
    pub fn register(&mut self, block: u32, hash: u64) -> Result<bool, AllocError> {
        let i = self.check(block)?;
        if self.refs[i] == 0 {
            return Err(AllocError::NotHeld(block));
        }
        if self.hash_of[i].is_some() || self.by_hash.contains_key(&hash) {
            return Ok(false);
        }
        self.hash_of[i] = Some(hash);
        self.by_hash.insert(hash, block);
        Ok(true)
    }
}

/// The content hash of a full KV block: chained over the hash of the prefix before it
/// (`parent`, 0 for the first block) and the block's token ids, so it names the whole token
/// prefix up to the block's end (SipHash-2-4 with fixed keys: deterministic across runs).
pub fn block_hash(parent: u64, tokens: &[i64]) -> u64 {
    use std::hash::{Hash, Hasher};
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new_with_keys(0x6c6c_6d70_7520_6b76, 0x7072_6566_6978);
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

/// The chained content hashes of the full blocks of `tokens` (`⌊len / block_tokens⌋` of them).
pub fn prefix_hashes(tokens: &[i64], block_tokens: usize) -> Vec<u64> {
    let mut parent = 0;
    tokens
        .chunks_exact(block_tokens.max(1))
        .map(|c| {
            parent = block_hash(parent, c);
            parent
        })
        .collect()
}

/// Blocks needed to hold `tokens` tokens in blocks of `block_tokens`.
pub fn blocks_for(tokens: u64, block_tokens: u64) -> usize {
    tokens.div_ceil(block_tokens.max(1)) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_pool_hands_out_every_block_but_the_null_block_then_is_exhausted() {
        let mut a = BlockAllocator::new(4).expect("pool");
        assert_eq!(a.usable(), 3);
        let got = a.allocate_n(3).expect("three blocks");
        assert_eq!(got, [1, 2, 3]);
        assert!(!got.contains(&NULL_BLOCK));
        assert_eq!(
            a.allocate(),
            Err(AllocError::Exhausted {
                requested: 1,
                free: 0,
                usable: 3
            })
        );
    }

    #[test]
    fn allocate_n_is_all_or_nothing() {
        let mut a = BlockAllocator::new(4).expect("pool");
        a.allocate().expect("one");
        assert!(a.allocate_n(3).is_err());
        assert_eq!(a.free_count(), 2, "a failed request takes nothing");
        assert_eq!(a.allocate_n(2).expect("two").len(), 2);
    }

    #[test]
    fn freed_blocks_are_reused() {
        let mut a = BlockAllocator::new(3).expect("pool");
        let x = a.allocate_n(2).expect("two");
        a.free(x[0]).expect("free");
        assert_eq!(a.allocate().expect("reuse"), x[0]);
    }

    #[test]
    fn double_free_null_block_and_foreign_blocks_are_errors() {
        let mut a = BlockAllocator::new(3).expect("pool");
        let b = a.allocate().expect("one");
        a.free(b).expect("free");
        assert_eq!(a.free(b), Err(AllocError::DoubleFree(b)));
        assert_eq!(a.free(NULL_BLOCK), Err(AllocError::NullBlock(0)));
        assert_eq!(
            a.free(7),
            Err(AllocError::OutOfRange {
                block: 7,
                blocks: 3
            })
        );
        assert_eq!(a.free_count(), 2, "failed frees change nothing");
        assert_eq!(BlockAllocator::new(1).err(), Some(AllocError::TooSmall(1)));
    }

    #[test]
    fn used_free_and_peak_account_for_every_block() {
        let mut a = BlockAllocator::new(9).expect("pool");
        let x = a.allocate_n(5).expect("five");
        let y = a.allocate_n(2).expect("two");
        assert_eq!((a.used(), a.free_count(), a.peak_used()), (7, 1, 7));
        a.free_all(&x).expect("free five");
        assert_eq!((a.used(), a.free_count(), a.peak_used()), (2, 6, 7));
        a.free_all(&y).expect("free two");
        assert_eq!(a.used() + a.free_count(), a.usable());
        assert_eq!(blocks_for(0, 16), 0);
        assert_eq!(blocks_for(16, 16), 1);
        assert_eq!(blocks_for(17, 16), 2);
    }

    #[test]
    fn shared_blocks_are_counted_once_and_freed_by_their_last_reference() {
        let mut a = BlockAllocator::new(5).expect("pool");
        let x = a.allocate_n(2).expect("two");
        a.share(x[0]).expect("second reference");
        assert_eq!((a.refcount(x[0]), a.refcount(x[1])), (2, 1));
        assert_eq!((a.used(), a.free_count()), (2, 2));
        a.free(x[0]).expect("one of two");
        assert_eq!((a.used(), a.refcount(x[0])), (2, 1));
        a.free_all(&x).expect("last references");
        assert_eq!((a.used(), a.free_count()), (0, 4));
        assert_eq!(a.free(x[0]), Err(AllocError::DoubleFree(x[0])));
        assert_eq!(a.share(x[0]), Err(AllocError::NotShareable(x[0])));
        assert_eq!(a.register(x[0], 1), Err(AllocError::NotHeld(x[0])));
        assert_eq!(a.used() + a.free_count(), a.usable());
    }

    #[test]
    fn released_cached_blocks_stay_for_hits_and_are_evicted_last_lru_first() {
        // 4 usable blocks: 1, 2, 3, 4.
        let mut a = BlockAllocator::new(5).expect("pool");
        let x = a.allocate_n(3).expect("three");
        assert_eq!(x, [1, 2, 3]);
        assert!(a.register(x[0], 10).expect("register"));
        assert!(a.register(x[1], 20).expect("register"));
        assert!(
            !a.register(x[2], 10).expect("same content"),
            "first one kept"
        );
        assert!(!a.register(x[0], 30).expect("has a hash"));
        a.free_all(&[x[1], x[0], x[2]])
            .expect("release (2 before 1)");
        assert_eq!((a.used(), a.free_count(), a.cached_count()), (0, 4, 2));
        assert_eq!(a.lookup(10), Some(1));
        assert_eq!(a.lookup(20), Some(2));
        // A hit revives a cached block: it leaves the eviction order.
        a.share(1).expect("hit");
        assert_eq!((a.used(), a.free_count(), a.cached_count()), (1, 3, 1));
        // Free blocks go first (3, then 4), then the cached block 2 is evicted.
        assert_eq!(a.allocate_n(2).expect("two"), [3, 4]);
        assert_eq!(a.evictions(), 0);
        assert_eq!(a.allocate().expect("evicts"), 2);
        assert_eq!((a.evictions(), a.lookup(20)), (1, None));
        assert_eq!(a.lookup(10), Some(1), "the shared block stays cached");
        assert_eq!(a.used() + a.free_count(), a.usable());
        assert_eq!(a.peak_used(), 4);
    }

    #[test]
    fn eviction_takes_the_least_recently_released_block() {
        let mut a = BlockAllocator::new(4).expect("pool");
        let x = a.allocate_n(3).expect("three");
        for (i, &b) in x.iter().enumerate() {
            a.register(b, 100 + i as u64).expect("register");
        }
        a.free_all(&[x[2], x[0], x[1]])
            .expect("release order 3, 1, 2");
        assert_eq!(a.allocate().expect("evict"), x[2]);
        assert_eq!(a.allocate().expect("evict"), x[0]);
        assert_eq!(a.lookup(101), Some(x[1]));
    }

    #[test]
    fn prefix_hashes_chain_over_the_whole_prefix() {
        let a = prefix_hashes(&[1, 2, 3, 4, 5], 2);
        assert_eq!(a.len(), 2, "only full blocks");
        let b = prefix_hashes(&[9, 2, 3, 4], 2);
        assert_ne!(a[1], b[1], "same block tokens after a different prefix");
        assert_eq!(a, prefix_hashes(&[1, 2, 3, 4], 2));
        assert_eq!(a[0], block_hash(0, &[1, 2]));
    }
}
