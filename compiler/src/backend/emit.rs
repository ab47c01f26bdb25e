//! The instruction emitter the kernels write through: one straight-line stream per core, a register
//! cache, on-chip buffer allocation and **automatic synchronization**.
//!
//! Kernels are written as if every instruction ran to completion before the next one started; the
//! emitter makes that true on the decoupled machine. It knows every register value at compile time
//! (the code is straight-line), so it knows the exact on-chip byte range (the bounding range, as
//! the emulator's race check computes it) every DMA, matrix and vector instruction touches. When a
//! new instruction on unit Y conflicts (read-after-write, write-after-read or write-after-write) with
//! an earlier instruction J on another unit X that Y has not yet waited for, the emitter places an
//! `X.signal s(X→Y)` directly after J in X's program order and a `Y.wait s(X→Y), 1` directly before
//! the new instruction. Each ordered unit pair has its own counting semaphore; signals are placed
//! in increasing X order and waits consumed in increasing Y order, so the k-th wait is released by
//! the k-th signal. Instructions of the same unit need nothing: the hardware interlocks them.
//! Overlap (double buffering) therefore follows from the kernels alternating buffers: a DMA into
//! buffer B does not conflict with compute on buffer A, so nothing orders them.
//!
//! Invariants: every wait refers to a signal placed earlier in the stream, so the program cannot
//! deadlock; `barrier` drains all units, after which no earlier instruction can conflict, so the
//! histories are cleared. Register `r0` is never written.

use std::collections::BTreeMap;
use std::sync::Arc;

use llmpu_isa::{BranchTarget, Inst, Reg, Sem, Target, Unit};

/// An on-chip memory space, as the emitter tracks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mem {
    Sram,
    Acc,
}

/// A byte range touched by an instruction.
#[derive(Clone, Copy, Debug)]
pub struct Touch {
    pub mem: Mem,
    pub lo: u64,
    pub hi: u64,
    pub write: bool,
}

impl Touch {
    pub fn read(mem: Mem, lo: u64, hi: u64) -> Touch {
        Touch {
            mem,
            lo,
            hi,
            write: false,
        }
    }
    pub fn write(mem: Mem, lo: u64, hi: u64) -> Touch {
        Touch {
            mem,
            lo,
            hi,
            write: true,
        }
    }
    fn conflicts(&self, o: &Touch) -> bool {
        self.mem == o.mem && (self.write || o.write) && self.lo < o.hi && o.lo < self.hi
    }
}

/// One emitted instruction with its source location.
#[derive(Clone, Debug)]
pub struct Item {
    pub inst: Inst,
    pub loc: Arc<str>,
}

const UNITS: usize = 4;
/// How far back the conflict scan looks before it synchronizes conservatively.
const SCAN_LIMIT: usize = 256;

fn unit_index(u: Unit) -> usize {
    u.index()
}

/// Semaphore used for "X has reached here" signals consumed by Y.
fn sem_for(x: usize, y: usize) -> Sem {
    Sem((1 + x * UNITS + y) as u8)
}

/// The stream of one core under construction.
#[derive(Clone, Debug, Default)]
struct Stream {
    items: Vec<Item>,
    /// Signals to insert after item index `i` (in emission order).
    after: BTreeMap<usize, Vec<Item>>,
    /// Waits to insert before item index `i`.
    before: BTreeMap<usize, Vec<Item>>,
    /// Per unit: (item index, touches) of instructions since the last barrier.
    hist: [Vec<(usize, Vec<Touch>)>; UNITS],
    /// `synced[y][x]`: Y has waited for every X instruction with item index < this.
    synced: [[usize; UNITS]; UNITS],
    /// Register contents known at compile time, with a use stamp for LRU replacement.
    regs: [Option<i64>; 32],
    stamp: [u64; 32],
    clock: u64,
    /// Forward branches: (item index of the branch, label id).
    branches: Vec<(usize, usize)>,
    /// Label id → item index it marks.
    labels: BTreeMap<usize, usize>,
}

/// A simple bump allocator for one on-chip memory, reset between kernels.
#[derive(Clone, Debug)]
pub struct Arena {
    pub size: u64,
    pub next: u64,
    pub high: u64,
}

impl Arena {
    fn new(size: u64) -> Arena {
        Arena {
            size,
            next: 0,
            high: 0,
        }
    }
}

/// Errors of code generation (the kernel or node is named by the caller).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EmitError {
    #[error("{what} needs {need} bytes of {mem} but only {free} of {size} are free")]
    NoSpace {
        what: String,
        mem: &'static str,
        need: u64,
        free: u64,
        size: u64,
    },
    #[error("{0}")]
    Unsupported(String),
}

/// Builds the per-core instruction streams of a program.
pub struct Emitter {
    pub target: Target,
    streams: Vec<Stream>,
    cur: usize,
    loc: Arc<str>,
    pub sram: Arena,
    pub acc: Arena,
    /// Registers that must not be replaced while the current instruction is being built.
    locked: Vec<u8>,
    /// Registers holding run-time values (block addresses read from a block table) that must
    /// survive until [`Emitter::unpin`].
    pinned: Vec<u8>,
}

impl Emitter {
    /// An emitter for `cores` cores of `target`.
    pub fn new(target: Target, cores: usize) -> Emitter {
        let sram = Arena::new(target.sram.size_bytes);
        let acc = Arena::new(target.accumulator.size_bytes);
        Emitter {
            target,
            streams: vec![Stream::default(); cores.max(1)],
            cur: 0,
            loc: "".into(),
            sram,
            acc,
            locked: vec![],
            pinned: vec![],
        }
    }

    /// Number of cores.
    pub fn cores(&self) -> usize {
        self.streams.len()
    }

    /// Selects the core following instructions go to.
    pub fn core(&mut self, c: usize) {
        self.cur = c.min(self.streams.len() - 1);
    }

    /// Sets the location attached to following instructions.
    pub fn set_loc(&mut self, loc: &str) {
        self.loc = loc.into();
    }

    // ----- on-chip allocation -----

    /// Frees every on-chip buffer (between kernels).
    pub fn reset_alloc(&mut self) {
        self.sram.next = 0;
        self.acc.next = 0;
    }

    /// Allocates `bytes` (64-byte aligned) of SRAM or accumulator.
    pub fn alloc(&mut self, mem: Mem, bytes: u64, what: &str) -> Result<u64, EmitError> {
        let (a, name) = match mem {
            Mem::Sram => (&mut self.sram, "SRAM"),
            Mem::Acc => (&mut self.acc, "accumulator"),
        };
        let need = bytes.div_ceil(64) * 64;
        if a.next + need > a.size {
            return Err(EmitError::NoSpace {
                what: what.into(),
                mem: name,
                need,
                free: a.size - a.next,
                size: a.size,
            });
        }
        let addr = a.next;
        a.next += need.max(64);
        a.high = a.high.max(a.next);
        Ok(addr)
    }

    /// Bytes still free in `mem`.
    pub fn free(&self, mem: Mem) -> u64 {
        match mem {
            Mem::Sram => self.sram.size - self.sram.next,
            Mem::Acc => self.acc.size - self.acc.next,
        }
    }

    // ----- registers -----

    /// A register holding `v`, loading it with `li`/`lih` when no register does.
    pub fn reg(&mut self, v: i64) -> Reg {
        if v == 0 {
            return Reg(0);
        }
        let s = &mut self.streams[self.cur];
        s.clock += 1;
        if let Some(r) = (1..32).find(|&r| s.regs[r] == Some(v)) {
            s.stamp[r] = s.clock;
            self.locked.push(r as u8);
            return Reg(r as u8);
        }
        let r = (1..32)
            .filter(|r| !self.locked.contains(&(*r as u8)) && !self.pinned.contains(&(*r as u8)))
            .min_by_key(|&r| (s.regs[r].is_some(), s.stamp[r]))
            .unwrap_or(1);
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

    /// A register for a value known only at run time (not reused for constants until unpinned).
    fn fresh(&mut self) -> Reg {
        let s = &mut self.streams[self.cur];
        s.clock += 1;
        let r = (1..32)
            .filter(|r| !self.locked.contains(&(*r as u8)) && !self.pinned.contains(&(*r as u8)))
            .min_by_key(|&r| (s.regs[r].is_some(), s.stamp[r]))
            .unwrap_or(1);
        s.regs[r] = None;
        s.stamp[r] = s.clock;
        self.locked.push(r as u8);
        Reg(r as u8)
    }

    /// `pool + table[entry] · block_bytes` computed at run time: `ld32` of the block-table entry
    /// at SRAM address `entry`, scaled and offset. The register stays pinned until
    /// [`Emitter::unpin`].
    pub fn block_addr(&mut self, entry: u64, block_bytes: u64, pool: u64) -> Reg {
        let a = self.reg(entry as i64);
        let rd = self.fresh();
        self.op(
            Inst::Ld32 { rd, rs1: a, off: 0 },
            vec![Touch::read(Mem::Sram, entry, entry + 4)],
        );
        self.pinned.push(rd.0);
        let sc = self.reg(block_bytes as i64);
        self.push_raw(Inst::Mul {
            rd,
            rs1: rd,
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
    /// a register pinned until [`Emitter::unpin`] (the live block count of a paged KV sequence).
    pub fn live_blocks(&mut self, len_entry: u64, add: u64, div: u64) -> Reg {
        let a = self.reg(len_entry as i64);
        let rd = self.fresh();
        self.op(
            Inst::Ld32 { rd, rs1: a, off: 0 },
            vec![Touch::read(Mem::Sram, len_entry, len_entry + 4)],
        );
        self.pinned.push(rd.0);
        let ad = self.reg(add as i64);
        self.push_raw(Inst::Add {
            rd,
            rs1: rd,
            rs2: ad,
        });
        let dv = self.reg(div as i64);
        self.push_raw(Inst::Div {
            rd,
            rs1: rd,
            rs2: dv,
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

    fn push_raw(&mut self, inst: Inst) {
        let loc = self.loc.clone();
        self.streams[self.cur].items.push(Item { inst, loc });
    }

    // ----- instructions -----

    /// Appends a scalar instruction that touches no memory.
    pub fn scalar(&mut self, inst: Inst) {
        self.push_raw(inst);
        self.locked.clear();
    }

    /// Appends a DMA, matrix or vector instruction (or a scalar memory access) that touches the
    /// given on-chip ranges, inserting the semaphore waits and signals it needs.
    pub fn op(&mut self, inst: Inst, touches: Vec<Touch>) {
        let y = unit_index(inst.unit());
        let loc = self.loc.clone();
        let s = &mut self.streams[self.cur];
        let pos = s.items.len();
        for x in 0..UNITS {
            if x == y || x == unit_index(Unit::Scalar) {
                continue;
            }
            let from = s.synced[y][x];
            let h = &s.hist[x];
            let mut need: Option<usize> = None;
            for (n, (ix, t)) in h.iter().rev().enumerate() {
                if *ix < from {
                    break;
                }
                if n >= SCAN_LIMIT {
                    need = h.last().map(|l| l.0);
                    break;
                }
                if t.iter().any(|a| touches.iter().any(|b| a.conflicts(b))) {
                    need = Some(*ix);
                    break;
                }
            }
            if let Some(j) = need {
                let sem = sem_for(x, y);
                let sig = match x {
                    1 => Inst::DmaSignal { sem },
                    2 => Inst::MxuSignal { sem },
                    _ => Inst::VpuSignal { sem },
                };
                let wait = match y {
                    0 => Inst::Wait { sem, count: 1 },
                    1 => Inst::DmaWait { sem, count: 1 },
                    2 => Inst::MxuWait { sem, count: 1 },
                    _ => Inst::VpuWait { sem, count: 1 },
                };
                let sloc = s.items[j].loc.clone();
                s.after.entry(j).or_default().push(Item {
                    inst: sig,
                    loc: sloc,
                });
                s.before.entry(pos).or_default().push(Item {
                    inst: wait,
                    loc: loc.clone(),
                });
                s.synced[y][x] = j + 1;
            }
        }
        if y != unit_index(Unit::Scalar) {
            s.hist[y].push((pos, touches));
        }
        s.items.push(Item { inst, loc });
        self.locked.clear();
    }

    /// Synchronizes all cores: every unit of every core drains, then all cores continue.
    pub fn barrier(&mut self) {
        let cur = self.cur;
        for c in 0..self.streams.len() {
            self.cur = c;
            self.push_raw(Inst::Barrier {});
            let s = &mut self.streams[c];
            let n = s.items.len();
            for h in s.hist.iter_mut() {
                h.clear();
            }
            s.synced = [[n; UNITS]; UNITS];
        }
        self.cur = cur;
    }

    /// Ends every stream with `halt` and returns them with the signals and waits in place.
    pub fn finish(mut self) -> Vec<Vec<Item>> {
        for c in 0..self.streams.len() {
            self.cur = c;
            self.loc = "epilogue".into();
            self.push_raw(Inst::Halt {});
        }
        self.streams
            .into_iter()
            .map(|mut s| {
                let mut out = Vec::with_capacity(s.items.len() * 2);
                // Final position of each item (its waits come first; a label marks the position
                // before any of them).
                let mut start = Vec::with_capacity(s.items.len() + 1);
                let mut pos = Vec::with_capacity(s.items.len());
                for (i, it) in s.items.into_iter().enumerate() {
                    start.push(out.len());
                    if let Some(w) = s.before.remove(&i) {
                        out.extend(w);
                    }
                    pos.push(out.len());
                    out.push(it);
                    if let Some(a) = s.after.remove(&i) {
                        out.extend(a);
                    }
                }
                start.push(out.len());
                for (b, l) in &s.branches {
                    if let (Some(&at), Some(&from)) = (s.labels.get(l), pos.get(*b)) {
                        let to = start.get(at).copied().unwrap_or(out.len());
                        if let Inst::Bge { target, .. } = &mut out[from].inst {
                            *target = BranchTarget((to as i64 - from as i64) as i32);
                        }
                    }
                }
                out
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmpu_isa::{Bcast, DType, Layout, Space, TileRef};

    #[test]
    fn forward_branch_lands_on_the_drain_at_its_label() {
        let t = Target::preset("edge").unwrap();
        let mut e = Emitter::new(t, 1);
        let l = e.new_label();
        e.drain_core();
        e.branch_ge(Reg(1), Reg(2), l);
        e.scalar(Inst::Nop {});
        e.scalar(Inst::Nop {});
        e.bind_label(l);
        let s = e.finish().remove(0);
        let b = s
            .iter()
            .position(|it| matches!(it.inst, Inst::Bge { .. }))
            .unwrap();
        let Inst::Bge { target, .. } = s[b].inst else {
            unreachable!()
        };
        // Two nops skipped; the target is the first signal of the drain at the label.
        assert_eq!(target.0, 3);
        assert!(matches!(s[b + 3].inst, Inst::DmaSignal { .. }));
    }

    #[test]
    fn consumer_on_another_unit_waits_for_the_producing_load_only() {
        let t = Target::preset("edge").unwrap();
        let mut e = Emitter::new(t, 1);
        let (a, b) = (0u64, 4096u64);
        for (addr, n) in [(a, 0), (b, 1)] {
            let inst = Inst::DmaLoad {
                sram: e.reg(addr as i64),
                hbm: e.reg(n * 4096),
                n0: 16,
                n1: 1,
                n2: 1,
                hs1: Reg(0),
                hs2: Reg(0),
                ss1: Reg(0),
                ss2: Reg(0),
                dt: DType::F32,
                layout: Layout::Rows,
            };
            e.op(inst, vec![Touch::write(Mem::Sram, addr, addr + 64)]);
        }
        let ra = e.reg(a as i64);
        let ld = e.reg(16);
        let tile = TileRef {
            space: Space::Sram,
            dtype: DType::F32,
            addr: ra,
            ld,
        };
        e.op(
            Inst::VpuExp {
                dst: tile,
                a: tile,
                rows: 1,
                cols: 16,
                bcast: Bcast::Full,
            },
            vec![
                Touch::read(Mem::Sram, a, a + 64),
                Touch::write(Mem::Sram, a, a + 64),
            ],
        );
        let s = e.finish();
        let text: Vec<String> = s[0].iter().map(|i| i.inst.to_string()).collect();
        let sig = text
            .iter()
            .position(|t| t.starts_with("dma.signal"))
            .unwrap();
        let second = text
            .iter()
            .rposition(|t| t.starts_with("dma.load"))
            .unwrap();
        assert!(sig < second, "signal right after the first load: {text:?}");
        let wait = text.iter().position(|t| t.starts_with("vpu.wait")).unwrap();
        let exp = text.iter().position(|t| t.starts_with("vpu.exp")).unwrap();
        assert_eq!(wait + 1, exp);
    }
}
