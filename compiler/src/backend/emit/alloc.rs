//! On-chip buffer allocation of the [`Emitter`]: each memory is an [`Arena`] that kernels allocate
//! from one end while the previous kernel's buffers are still in use at the other; `mark` /
//! `release` return a kernel's scratch within an op.

use super::{EmitError, Emitter, Mem};

/// A bump allocator for one on-chip memory, growing from either end.
///
/// Consecutive kernels allocate from opposite ends (bottom-up, then top-down, ...): a kernel's
/// buffers are then disjoint from its predecessor's whenever the two fit together, so the next
/// op's loads need not wait for the previous op's compute on the same bytes (consecutive ops
/// overlap). Each kernel may still use the whole memory; where the two overlap, the emitter's
/// automatic synchronization orders them.
#[derive(Clone, Debug)]
pub struct Arena {
    pub size: u64,
    /// Next free byte of the bottom-up end.
    pub lo: u64,
    /// Lowest allocated byte of the top-down end.
    pub hi: u64,
    /// The current kernel allocates top-down.
    pub down: bool,
    /// Highest byte ever allocated from the bottom, lowest from the top.
    pub high: u64,
    /// While set, allocations must not cross the other end's current pointer (buffers that
    /// must be disjoint from the still-open previous kernel's).
    pub strict: bool,
}

impl Arena {
    pub(super) fn new(size: u64) -> Arena {
        Arena {
            size,
            lo: 0,
            hi: size,
            down: false,
            high: 0,
            strict: false,
        }
    }

    /// Bytes the current kernel may still allocate.
    fn free(&self) -> u64 {
        match (self.down, self.strict) {
            (false, false) => self.size - self.lo,
            (false, true) => self.hi.saturating_sub(self.lo),
            (true, false) => self.hi,
            (true, true) => self.hi.saturating_sub(self.lo),
        }
    }

    /// Starts the next kernel at the other end (at the same end if this one allocated nothing).
    fn flip(&mut self) {
        let used = if self.down {
            self.size - self.hi
        } else {
            self.lo
        };
        if used == 0 {
            return;
        }
        self.down = !self.down;
        if self.down {
            self.hi = self.size;
        } else {
            self.lo = 0;
        }
    }
}

impl Emitter {
    /// Frees the finished kernel's on-chip buffers: the next kernel allocates from the other end
    /// of each memory (see [`Arena`]).
    pub fn reset_alloc(&mut self) {
        self.sram.flip();
        self.acc.flip();
    }

    /// While `on`, allocations stay clear of the other end's buffers (those of a kernel whose
    /// instructions are not all emitted yet).
    pub fn strict_alloc(&mut self, on: bool) {
        self.sram.strict = on;
        self.acc.strict = on;
    }

    /// Allocates `bytes` (64-byte aligned) of SRAM or accumulator.
    pub fn alloc(&mut self, mem: Mem, bytes: u64, what: &str) -> Result<u64, EmitError> {
        let (a, name) = match mem {
            Mem::Sram => (&mut self.sram, "SRAM"),
            Mem::Acc => (&mut self.acc, "accumulator"),
        };
        let need = (bytes.div_ceil(64) * 64).max(64);
        let free = a.free();
        if need > free {
            return Err(EmitError::NoSpace {
                what: what.into(),
                mem: name,
                need,
                free,
                size: a.size,
            });
        }
        if a.down {
            a.hi -= need;
            Ok(a.hi)
        } else {
            let addr = a.lo;
            a.lo += need;
            a.high = a.high.max(a.lo);
            Ok(addr)
        }
    }

    /// The allocation point of `mem`, to return to with [`Emitter::release`].
    pub fn mark(&self, mem: Mem) -> u64 {
        let a = match mem {
            Mem::Sram => &self.sram,
            Mem::Acc => &self.acc,
        };
        if a.down { a.hi } else { a.lo }
    }

    /// Frees what the kernel allocated since `mark`: later instructions may reuse the bytes
    /// (the automatic synchronization orders them after the earlier uses).
    pub fn release(&mut self, mem: Mem, mark: u64) {
        let a = match mem {
            Mem::Sram => &mut self.sram,
            Mem::Acc => &mut self.acc,
        };
        if a.down {
            a.hi = a.hi.max(mark);
        } else {
            a.lo = a.lo.min(mark);
        }
    }

    /// Bytes still free in `mem`.
    pub fn free(&self, mem: Mem) -> u64 {
        match mem {
            Mem::Sram => self.sram.free(),
            Mem::Acc => self.acc.free(),
        }
    }
}
