//! The KV block allocator: a fixed pool of physical KV-cache blocks shared by the sequences of a
//! serving batch (`spec/serving.md`), as vLLM's block manager.
//!
//! Invariants: block [`NULL_BLOCK`] (0) is reserved — it is never handed out, idle batch rows
//! point every block-table entry at it (their appends land there harmlessly) — so a pool of `n`
//! blocks has `n − 1` usable ones. Every usable block is either free or owned by exactly one
//! allocation; [`BlockAllocator::free`] of a block that is not allocated is an error (no double
//! free), and [`BlockAllocator::allocate_n`] is all-or-nothing. `used() + free_count() ==
//! usable()` always holds; `peak_used()` is the most blocks ever allocated at once.

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
}

/// A fixed pool of physical blocks `0..blocks`, block 0 reserved.
#[derive(Clone, Debug)]
pub struct BlockAllocator {
    /// Free blocks; allocation pops from the end (lowest numbers first on a fresh pool, then LIFO
    /// reuse of freed blocks).
    free: Vec<u32>,
    allocated: Vec<bool>,
    peak: usize,
}

impl BlockAllocator {
    /// A pool of `blocks` physical blocks (block 0 reserved).
    pub fn new(blocks: u32) -> Result<BlockAllocator, AllocError> {
        if blocks < 2 {
            return Err(AllocError::TooSmall(blocks));
        }
        Ok(BlockAllocator {
            free: (1..blocks).rev().collect(),
            allocated: vec![false; blocks as usize],
            peak: 0,
        })
    }

    /// Physical blocks in the pool, the null block included.
    pub fn blocks(&self) -> u32 {
        self.allocated.len() as u32
    }

    /// Blocks that can be allocated (all but the null block).
    pub fn usable(&self) -> usize {
        self.allocated.len() - 1
    }

    /// Blocks free now.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Blocks allocated now.
    pub fn used(&self) -> usize {
        self.usable() - self.free.len()
    }

    /// The most blocks allocated at once so far.
    pub fn peak_used(&self) -> usize {
        self.peak
    }

    /// One block.
    pub fn allocate(&mut self) -> Result<u32, AllocError> {
        Ok(self.allocate_n(1)?[0])
    }

    /// `n` blocks, or none at all when fewer than `n` are free.
    pub fn allocate_n(&mut self, n: usize) -> Result<Vec<u32>, AllocError> {
        if n > self.free.len() {
            return Err(AllocError::Exhausted {
                requested: n,
                free: self.free.len(),
                usable: self.usable(),
            });
        }
        let out = self.free.split_off(self.free.len() - n);
        let out: Vec<u32> = out.into_iter().rev().collect();
        for &b in &out {
            self.allocated[b as usize] = true;
        }
        self.peak = self.peak.max(self.used());
        Ok(out)
    }

    /// Returns a block to the pool.
    pub fn free(&mut self, block: u32) -> Result<(), AllocError> {
        if block == NULL_BLOCK {
            return Err(AllocError::NullBlock(block));
        }
        let blocks = self.blocks();
        let slot = self
            .allocated
            .get_mut(block as usize)
            .ok_or(AllocError::OutOfRange { block, blocks })?;
        if !*slot {
            return Err(AllocError::DoubleFree(block));
        }
        *slot = false;
        self.free.push(block);
        Ok(())
    }

    /// Returns every block of a sequence to the pool (stops at the first invalid one).
    pub fn free_all(&mut self, blocks: &[u32]) -> Result<(), AllocError> {
        blocks.iter().try_for_each(|&b| self.free(b))
    }
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
}
