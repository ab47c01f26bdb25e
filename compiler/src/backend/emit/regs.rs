//! Registers of the [`Emitter`]: a cache of the constant each register holds (so a value is
//! loaded once), registers for run-time values (block-table entries, lengths), and inside a repeat
//! the register each position took in the previous iteration, so that iterations emit alike and
//! roll (`roll.rs`). The top `LOOP_REGS` registers are left to loop counters and bases.

use llmpu_isa::{BranchTarget, Inst, Reg, Unit};

use super::{Emitter, LOOP_REGS, Mem, Stream, Touch, UNITS, sem_for, unit_index};

/// A register below `top` for a new value: free, not yet taken by this iteration of a repeat,
/// below the loop registers, empty, then least recently used.
fn pick(
    s: &Stream,
    top: usize,
    free: impl Fn(usize) -> bool,
    taken: impl Fn(usize) -> bool,
) -> usize {
    (1..top)
        .filter(|&r| free(r))
        .min_by_key(|&r| {
            (
                taken(r),
                r >= 32 - LOOP_REGS,
                s.regs[r].is_some(),
                s.stamp[r],
            )
        })
        .unwrap_or(1)
}

impl Emitter {
    /// A register holding `v`, loading it with `li`/`lih` when no register does.
    pub fn reg(&mut self, v: i64) -> Reg {
        if v == 0 {
            // Still a position of the repeat's register choices, so that iterations loading a
            // zero and iterations loading another value allocate alike after it.
            let cur = self.cur;
            if let Some(f) = self.frames.last_mut() {
                f.allocated(cur, 0);
            }
            return Reg(0);
        }
        let cur = self.cur;
        // Inside a loop the top registers stay clear for its trip counter and base registers.
        let loop_reserved = |r: usize| self.looping > 0 && r >= 32 - LOOP_REGS;
        let free = |r: usize| {
            !self.locked.contains(&(r as u8))
                && !self.pinned.contains(&(r as u8))
                && !loop_reserved(r)
        };
        // Inside a repeat, the register the same call took in the previous iteration, whatever
        // else holds `v` (iterations then load the same registers).
        let s = &self.streams[self.cur];
        let suggested = self.frames.last().and_then(|f| {
            f.suggest(cur)
                .filter(|&r| r != 0 && free(r) && (s.regs[r] == Some(v) || !f.taken(cur, r)))
        });
        let s = &mut self.streams[self.cur];
        s.clock += 1;
        let hit = match suggested {
            Some(r) => (s.regs[r] == Some(v)).then_some(r),
            None => (1..32).find(|&r| s.regs[r] == Some(v) && !loop_reserved(r)),
        };
        if let Some(f) = self.frames.last_mut() {
            f.allocated(cur, suggested.or(hit).unwrap_or(0));
        }
        if let Some(r) = hit {
            s.stamp[r] = s.clock;
            self.locked.push(r as u8);
            return Reg(r as u8);
        }
        // A new value of this iteration takes a register no other value of it took, if any.
        let taken = |r: usize| self.frames.last().is_some_and(|f| f.taken(cur, r));
        let r = suggested.unwrap_or_else(|| pick(s, 32, free, taken));
        if let Some(f) = self.frames.last_mut() {
            f.set_last(cur, r);
        }
        let s = &mut self.streams[self.cur];
        s.regs[r] = Some(v);
        s.stamp[r] = s.clock;
        self.locked.push(r as u8);
        let rd = Reg(r as u8);
        let lo = v as i32;
        self.push_raw(Inst::Li { rd, imm: lo });
        if lo as i64 != v {
            self.push_raw(Inst::Lih {
                rd,
                imm: (v >> 32) as u32,
            });
        }
        rd
    }

    /// A register loaded with `v` that no other request shares: `reg` neither finds `v` in it
    /// later nor returns it for this request. For a loop's iteration-varying small integers (a
    /// block index) that would otherwise coincide with a constant held elsewhere in some
    /// iterations, so that iterations emit alike.
    pub fn reg_unshared(&mut self, v: i64) -> Reg {
        let rd = self.fresh();
        let lo = v as i32;
        self.push_raw(Inst::Li { rd, imm: lo });
        if lo as i64 != v {
            self.push_raw(Inst::Lih {
                rd,
                imm: (v >> 32) as u32,
            });
        }
        rd
    }

    /// A register for a value known only at run time (not reused for constants until unpinned).
    fn fresh(&mut self) -> Reg {
        // Inside a loop the top registers stay clear for its trip counter and base registers;
        // outside, they are taken last, so that a value pinned across a loop (its bound) leaves
        // them to it.
        let top = if self.looping > 0 { 32 - LOOP_REGS } else { 32 };
        let cur = self.cur;
        let free = |r: usize| {
            r < top && !self.locked.contains(&(r as u8)) && !self.pinned.contains(&(r as u8))
        };
        // Inside a repeat, the register this position took in the previous iteration (as
        // `reg` does), so that iterations allocate alike.
        let frame = self.frames.last();
        let suggested = frame.and_then(|f| {
            f.suggest(cur)
                .filter(|&r| r != 0 && free(r) && !f.taken(cur, r))
        });
        let taken = |r: usize| frame.is_some_and(|f| f.taken(cur, r));
        let s = &self.streams[self.cur];
        let r = suggested.unwrap_or_else(|| pick(s, top, free, taken));
        if let Some(f) = self.frames.last_mut() {
            f.allocated(cur, r);
        }
        let s = &mut self.streams[self.cur];
        s.clock += 1;
        s.regs[r] = None;
        s.stamp[r] = s.clock;
        self.locked.push(r as u8);
        Reg(r as u8)
    }

    /// `pool + table[entry] · block_bytes` computed at run time: `ld32` of the block-table entry
    /// at SRAM address `entry`, scaled and offset. The register stays pinned until
    /// [`Emitter::unpin`].
    pub fn block_addr(&mut self, entry: u64, block_bytes: u64, pool: u64) -> Reg {
        self.loaded_affine(entry, block_bytes as i64, pool as i64)
    }

    /// The HBM address of token `length[b] + t` in a paged KV pool, computed at run time from the
    /// region header loaded into SRAM: `len_entry` holds the sequence's cached length (i32),
    /// `table_row` its block-table row of `max_blocks` i32 entries. Address = `pool +
    /// table[(len + t) / bt] · block_bytes + ((len + t) mod bt) · row_bytes`. The returned
    /// register stays pinned until [`Emitter::unpin`].
    #[allow(clippy::too_many_arguments)]
    pub fn paged_token_addr(
        &mut self,
        len_entry: u64,
        t: u64,
        table_row: u64,
        max_blocks: u64,
        bt: u64,
        block_bytes: u64,
        pool: u64,
        row_bytes: u64,
    ) -> Reg {
        let a = self.reg(len_entry as i64);
        let pos = self.fresh();
        self.op(
            Inst::Ld32 {
                rd: pos,
                rs1: a,
                off: 0,
            },
            vec![Touch::read(Mem::Sram, len_entry, len_entry + 4)],
        );
        self.pinned.push(pos.0);
        if t > 0 {
            let ti = self.reg(t as i64);
            self.push_raw(Inst::Add {
                rd: pos,
                rs1: pos,
                rs2: ti,
            });
            self.locked.clear();
        }
        let blk = self.fresh();
        self.pinned.push(blk.0);
        let btr = self.reg(bt as i64);
        self.push_raw(Inst::Div {
            rd: blk,
            rs1: pos,
            rs2: btr,
        });
        self.push_raw(Inst::Rem {
            rd: pos,
            rs1: pos,
            rs2: btr,
        });
        self.locked.clear();
        let four = self.reg(4);
        self.push_raw(Inst::Mul {
            rd: blk,
            rs1: blk,
            rs2: four,
        });
        let row = self.reg(table_row as i64);
        self.push_raw(Inst::Add {
            rd: blk,
            rs1: blk,
            rs2: row,
        });
        self.locked.clear();
        self.op(
            Inst::Ld32 {
                rd: blk,
                rs1: blk,
                off: 0,
            },
            vec![Touch::read(
                Mem::Sram,
                table_row,
                table_row + 4 * max_blocks,
            )],
        );
        let bb = self.reg(block_bytes as i64);
        self.push_raw(Inst::Mul {
            rd: blk,
            rs1: blk,
            rs2: bb,
        });
        let pr = self.reg(pool as i64);
        self.push_raw(Inst::Add {
            rd: blk,
            rs1: blk,
            rs2: pr,
        });
        self.locked.clear();
        let rb = self.reg(row_bytes as i64);
        self.push_raw(Inst::Mul {
            rd: pos,
            rs1: pos,
            rs2: rb,
        });
        self.push_raw(Inst::Add {
            rd: blk,
            rs1: blk,
            rs2: pos,
        });
        self.locked.clear();
        self.unpin(pos);
        blk
    }

    /// `base + off` into a fresh register locked for the next instruction (`base` unchanged).
    pub fn offset_reg(&mut self, base: Reg, off: i64) -> Reg {
        if off == 0 {
            return base;
        }
        let o = self.reg(off);
        let rd = self.fresh();
        self.push_raw(Inst::Add {
            rd,
            rs1: base,
            rs2: o,
        });
        rd
    }

    /// Waits (on the scalar unit) until every unit of the current core has finished everything
    /// issued so far, and forgets the history: no later instruction synchronizes with an earlier
    /// one through a semaphore. Used around code a run-time branch may skip, so that every
    /// signal/wait pair lies entirely inside or entirely outside the skipped range.
    pub fn drain_core(&mut self) {
        let scalar = unit_index(Unit::Scalar);
        for x in [
            unit_index(Unit::Dma),
            unit_index(Unit::Mxu),
            unit_index(Unit::Vpu),
        ] {
            let sem = sem_for(x, scalar);
            let sig = match x {
                1 => Inst::DmaSignal { sem },
                2 => Inst::MxuSignal { sem },
                _ => Inst::VpuSignal { sem },
            };
            self.push_raw(sig);
            self.push_raw(Inst::Wait { sem, count: 1 });
        }
        let s = &mut self.streams[self.cur];
        let n = s.items.len();
        for h in s.hist.iter_mut() {
            h.clear();
        }
        s.synced = [[n; UNITS]; UNITS];
    }

    /// `(length + add) / div` with `length` the i32 at SRAM `len_entry`, computed at run time into
    /// a register pinned until [`Emitter::unpin`] (the live block count of a paged KV sequence, or
    /// with a smaller `add` its last live block).
    pub fn live_blocks(&mut self, len_entry: u64, add: u64, div: u64) -> Reg {
        let a = self.reg(len_entry as i64);
        let rd = self.fresh();
        self.op(
            Inst::Ld32 { rd, rs1: a, off: 0 },
            vec![Touch::read(Mem::Sram, len_entry, len_entry + 4)],
        );
        self.pinned.push(rd.0);
        if add > 0 {
            let ad = self.reg(add as i64);
            self.push_raw(Inst::Add {
                rd,
                rs1: rd,
                rs2: ad,
            });
        }
        let dv = self.reg(div as i64);
        self.push_raw(Inst::Div {
            rd,
            rs1: rd,
            rs2: dv,
        });
        self.locked.clear();
        rd
    }

    /// `base + x · scale` with `x` the i32 at SRAM `len_entry` (a block-table entry, a sequence's
    /// cached length), computed at run time into a register pinned until [`Emitter::unpin`].
    pub fn loaded_affine(&mut self, len_entry: u64, scale: i64, base: i64) -> Reg {
        let a = self.reg(len_entry as i64);
        let rd = self.fresh();
        self.op(
            Inst::Ld32 { rd, rs1: a, off: 0 },
            vec![Touch::read(Mem::Sram, len_entry, len_entry + 4)],
        );
        self.pinned.push(rd.0);
        let sc = self.reg(scale);
        self.push_raw(Inst::Mul {
            rd,
            rs1: rd,
            rs2: sc,
        });
        let b = self.reg(base);
        self.push_raw(Inst::Add {
            rd,
            rs1: rd,
            rs2: b,
        });
        self.locked.clear();
        rd
    }

    /// The physical block (block-table entry) of logical block `min(j, last)` of a paged KV
    /// sequence, computed at run time: `last = (length + add) / div` with `length` the i32 at SRAM
    /// `len_entry` (the sequence's last live block when `add = new_tokens − 1`, `div =
    /// block_tokens`), then `ld32` of entry `table_row + 4 · min(j, last)`. Blocks past the live
    /// ones thus read the last live block (paged attention masks their keys), so the work needs no
    /// branch. The register stays pinned until [`Emitter::unpin`].
    pub fn clamped_block(
        &mut self,
        len_entry: u64,
        add: u64,
        div: u64,
        j: u64,
        table_row: u64,
        max_blocks: u64,
    ) -> Reg {
        let rd = self.live_blocks(len_entry, add, div);
        let jr = self.reg_unshared(j as i64);
        self.push_raw(Inst::Min {
            rd,
            rs1: rd,
            rs2: jr,
        });
        self.locked.clear();
        let four = self.reg(4);
        self.push_raw(Inst::Mul {
            rd,
            rs1: rd,
            rs2: four,
        });
        let row = self.reg(table_row as i64);
        self.push_raw(Inst::Add {
            rd,
            rs1: rd,
            rs2: row,
        });
        self.locked.clear();
        self.op(
            Inst::Ld32 {
                rd,
                rs1: rd,
                off: 0,
            },
            vec![Touch::read(
                Mem::Sram,
                table_row,
                table_row + 4 * max_blocks,
            )],
        );
        self.locked.clear();
        rd
    }

    /// `pool + block · block_bytes` into a fresh register pinned until [`Emitter::unpin`]
    /// (`block` from [`Emitter::clamped_block`] is left unchanged).
    pub fn pool_addr(&mut self, block: Reg, block_bytes: u64, pool: u64) -> Reg {
        let rd = self.fresh();
        self.pinned.push(rd.0);
        let sc = self.reg(block_bytes as i64);
        self.push_raw(Inst::Mul {
            rd,
            rs1: block,
            rs2: sc,
        });
        let b = self.reg(pool as i64);
        self.push_raw(Inst::Add {
            rd,
            rs1: rd,
            rs2: b,
        });
        self.locked.clear();
        rd
    }

    /// A new label id for [`Emitter::branch_ge`] / [`Emitter::bind_label`].
    pub fn new_label(&mut self) -> usize {
        let s = &mut self.streams[self.cur];
        s.clock += 1;
        s.clock as usize
    }

    /// `bge rs1, rs2, label` (forward). Call [`Emitter::drain_core`] right before it and bind the
    /// label with [`Emitter::bind_label`].
    pub fn branch_ge(&mut self, rs1: Reg, rs2: Reg, label: usize) {
        self.push_raw(Inst::Bge {
            rs1,
            rs2,
            target: BranchTarget(0),
        });
        let s = &mut self.streams[self.cur];
        let i = s.items.len() - 1;
        s.branches.push((i, label));
        self.locked.clear();
    }

    /// Places `label` here, after draining the core (code before it may have been skipped), and
    /// forgets every known register value (a skipped range may not have set them).
    pub fn bind_label(&mut self, label: usize) {
        let s = &mut self.streams[self.cur];
        let at = s.items.len();
        s.labels.insert(label, at);
        self.drain_core();
        let s = &mut self.streams[self.cur];
        for r in 0..32 {
            if !self.pinned.contains(&(r as u8)) {
                s.regs[r] = None;
            }
        }
    }

    /// Releases a register returned by [`Emitter::block_addr`].
    pub fn unpin(&mut self, r: Reg) {
        self.pinned.retain(|&x| x != r.0);
    }
}
