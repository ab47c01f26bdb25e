//! The LLMPU emulator: functional and timing simulation of a [`Program`] on its target.
//!
//! [`run`] loads a program (data segments and host inputs written to HBM), simulates every core,
//! reads the outputs back and returns a cost [`Report`] and, on request, a Chrome/Perfetto
//! [`Trace`]. Host tensors are [`Tensor`]s; [`npy`] reads and writes them as `.npy` files.
//!
//! # Machine model
//! All cycle counts come from `isa::cost::cost` (the single cost model); this crate only decides
//! how instructions overlap.
//!
//! **Memories.** HBM is shared by all cores, byte-addressed, `hbm.size_bytes` long, stored sparsely
//! (unwritten bytes read 0). Each core has a scratchpad SRAM (`sram.size_bytes`) and an accumulator
//! SRAM (`accumulator.size_bytes`), both zero at start. Every access is bounds-checked against the
//! bounding byte range of each operand; out of bounds traps naming core, pc, instruction, space,
//! range and size. Scalar `ld`/`ld32`/`st` need natural alignment (8/4/8 bytes).
//!
//! **Registers.** 32 × i64 per core, zero at start; `r0` reads 0 and ignores writes. Scalar
//! arithmetic wraps; `div`/`rem` by zero trap; `i64::MIN / -1` wraps.
//!
//! **Dispatcher.** Each core's scalar unit walks its stream in program order from pc 0 at cycle 0.
//! A scalar instruction starts at the dispatcher's time and occupies it for `cost().occupancy`
//! cycles (taken branches included). A DMA/MXU/VPU instruction is dispatched into its unit's
//! in-order queue: dispatch occupies the dispatcher for `latency.scalar` cycles and the entry
//! becomes startable when dispatch ends. If the unit already holds `latency.queue_depth`
//! not-yet-started entries, dispatch stalls until the unit starts one. Register operands are
//! captured at dispatch: a queued instruction uses the values its registers had then. With
//! `latency.op_launch = L` (0 unless the target sets it) the dispatcher spends `L` more cycles on
//! the first instruction of every located op's code — where the debug location differs from the
//! previous instruction's in program order — modelling a kernel launch per op.
//!
//! **Units.** Each unit starts its queue in order. Start = max(unit free, dispatch end, semaphore
//! satisfied, interlock). The unit is free again at start + occupancy; results are visible at
//! completion = start + occupancy + latency, so the next instruction may start before the previous
//! one completes. Interlock: an instruction whose byte ranges overlap those of an earlier, still
//! incomplete instruction of the same unit, where at least one of the two writes, starts no
//! earlier than that instruction's completion. The matrix engine is exempt for accumulator
//! ranges: its results drain into the accumulator in issue order, so a chain of `mxu.matmul … acc`
//! steps into one tile streams back to back (the array pipelines accumulation).
//!
//! **HBM channel.** DMA transfers (`dma.load/store/gather/scatter`) share one channel across all
//! cores: a DMA starting at `s` gets `hbm_start = max(s + latency.dma_setup, hbm_free)`, then
//! `hbm_free = hbm_start + cost.transfer` (burst-rounded bytes at peak bandwidth). The DMA unit is
//! free at `hbm_free`; completion = `hbm_free + hbm.latency_cycles`. Uncontended, this equals
//! `cost.occupancy + cost.latency`. Channel grants follow DMA start order. A `dma.mcast` is one
//! such transfer; its bytes are written into every destination core's scratchpad and each
//! destination's semaphore gets one increment at the completion.
//!
//! **Semaphores.** 32 per core, counting from 0. `X.signal s` (and scalar `signal s`) occupies its
//! unit for `latency.sync` cycles and adds 1 to `s` at max(its own end, completion of every earlier
//! instruction of that unit) — it does not block the queue behind it. `X.wait s, n` starts only
//! when `s >= n` and then subtracts `n`, occupying the unit for `latency.sync` cycles; the scalar
//! `wait` blocks the dispatcher likewise. Semaphore increments are applied in time order, before
//! any instruction starting in the same cycle.
//!
//! **Barrier and halt.** At `barrier` the dispatcher waits until its units have drained (queues
//! empty, every instruction completed) and every core has arrived at a barrier; all cores resume
//! at the last arrival + `latency.barrier`. At `halt` (which occupies the dispatcher for
//! `latency.sync` cycles) the dispatcher stops; the core is done when its units drain. Running past
//! the end of a stream is an error. If no agent can make progress and some core is not done, the
//! run stops with a deadlock error listing what every blocked agent waits for.
//!
//! **Order and races.** Each instruction executes functionally at its start, in global time order
//! (ties: semaphore increments, then lower core, then unit order scalar, dma, mxu, vpu). With
//! `race_check` (default on), an instruction starting at `t` whose range conflicts (same space,
//! overlapping, one side writes) with an instruction of another unit of the same core — or, for
//! HBM, of any core — that is in flight (`start <= t < completion`) stops the run with a data race
//! error: the program relies on timing without a semaphore. A multicast's write into another
//! core's scratchpad is in flight on that core: it races with that core's own accesses. Ranges are bounding byte ranges,
//! except the HBM side of `dma.load`/`dma.store`, which is compared byte for byte (its runs along
//! the contiguous dimension; more than 65,536 run pairs in one comparison fall back to the
//! bounding range): strided stores of interleaved rows by different cores (column tiles of one
//! matrix) do not conflict. The same-unit interlock compares ranges the same way.
//!
//! **Time.** The run's length is the last completion of any instruction. Limits: more than
//! `max_instructions` started instructions, or an instruction that would start or complete after
//! `max_cycles`, stop the run with an error naming core and pc. All time arithmetic saturates, so
//! a figure too large for 64 bits is reported as reaching the cycle limit, never wrapped.
//!
//! **Host resources.** A run never aborts the host: scratchpad and accumulator memory is allocated
//! zeroed (untouched pages cost nothing) up to a total over all cores, outputs are read back up
//! to `max_output_bytes`, and the functional kernels stop after `max_work` element operations
//! (elements moved by DMAs + vector element operations + MACs); each is a clear error.
//!
//! **Timing-only mode** skips writing data and inputs to HBM, DMA data movement, matmul and vector
//! arithmetic; scalar instructions, bounds checks, control flow and all timing still run, so cycles
//! are identical to a functional run unless control flow depends on data loaded from HBM.
//! The one such datum the compiler emits — the paged KV region's header (block table and cached
//! lengths, `spec/kv-cache.md`) — is still written by the host and moved by DMA loads that read
//! only it, so paged attention skips the same blocks and costs the same cycles as in a
//! functional run. Inputs are optional and outputs are not returned (the result's `outputs` is
//! empty).
//!
//! **Fast-forwarding** (timing-only runs, [`RunOptions::fast_forward`], on by default): once the
//! whole machine is provably in a periodic steady state inside loops — every core, queue,
//! semaphore, in-flight access and the HBM channel repeating with registers and addresses moving
//! by fixed increments — whole periods are skipped and every clock, register, counter and
//! maximum advanced by its per-period increment. The cycles, the report, the trace and the
//! timeline are identical to simulating every instruction; the argument, and what stays slow,
//! is in `sim/ff.rs` and `spec/cost-model.md` ("Fast-forwarding").

pub mod alloc;
pub mod compare;
pub mod error;
mod exec;
mod gemm;
pub mod html;
pub mod kv;
mod memory;
pub mod npy;
pub mod report;
pub mod serve;
pub mod serve_engine;
pub mod session;
mod sim;
pub mod tensor;
pub mod timeline;
pub mod trace;

pub use error::{EmuError, MemSpace, RaceSide, TrapKind};
pub use report::{CoreReport, EnergyReport, LocReport, Report, UnitStats};
pub use session::Session;
pub use tensor::Tensor;
pub use timeline::Timeline;
pub use trace::{HostSpan, Trace, TraceEvent};

use llmpu_isa::{IoDir, Program};
use std::collections::HashSet;

/// How to run a program.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOptions {
    /// Skip data movement and arithmetic; keep control flow and timing.
    pub timing_only: bool,
    /// Stop after this many started instructions (all cores and units).
    pub max_instructions: u64,
    /// Stop when an instruction would start or complete after this cycle.
    pub max_cycles: u64,
    /// Collect a trace of every instruction.
    pub trace: bool,
    /// With `trace`: keep it at op granularity ([`Trace::to_ops`]: one event per op span per
    /// unit track), as long runs and the serving simulator want.
    pub trace_ops: bool,
    /// Accumulate the per-unit busy [`Timeline`] (fixed size, whatever the run's length).
    pub timeline: bool,
    /// Stop at the first data race between units (see the crate documentation).
    pub race_check: bool,
    /// Stop when the functional kernels would exceed this much work: elements moved by DMAs plus
    /// vector element operations plus multiply-accumulates (not counted in timing-only runs).
    pub max_work: u64,
    /// Stop when the outputs read back to the host would exceed this many bytes in total.
    pub max_output_bytes: u64,
    /// Called every [`PROGRESS_EVERY`] executed instructions (a progress display for long runs).
    pub progress: Option<ProgressHook>,
    /// Trap on every read of SRAM, accumulator or HBM bytes that neither the host nor the program
    /// ever wrote (`--check-uninit`): the error names the core, the pc, the instruction, the
    /// memory and the bytes. Functional runs only (a timing-only run moves no data).
    pub check_uninit: bool,
    /// In timing-only runs, skip whole periods of loops once the machine is provably in a
    /// periodic steady state (`sim::ff`): cycles, the report, the trace and the timeline are
    /// identical to a step-by-step run. Functional runs never fast-forward.
    pub fast_forward: bool,
}

/// How often (in executed instructions) [`RunOptions::progress`] is called.
pub const PROGRESS_EVERY: u64 = 1 << 16;

/// A progress callback: `(instructions executed, current cycle)`.
#[derive(Clone)]
pub struct ProgressHook(
    pub std::sync::Arc<dyn Fn(u64, u64) + Send + Sync + std::panic::RefUnwindSafe>,
);

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook")
    }
}

impl PartialEq for ProgressHook {
    /// Two hooks are equal when they are the same closure.
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Default [`RunOptions::max_instructions`]: 5·10⁷ — a runaway loop stops within a few seconds
/// (the emulator starts 20–30 M instructions/s); real programs stay far below (a GPT-3 layer is
/// about a million), and `--max-instructions` raises it.
pub const DEFAULT_MAX_INSTRUCTIONS: u64 = 50_000_000;

impl Default for RunOptions {
    /// [`DEFAULT_MAX_INSTRUCTIONS`], 10¹² cycles, 10¹¹ work, outputs up to the host memory limit
    /// (`llmpu_isa::limits::host_bytes`, 4 GiB unless `--host-memory-limit` changed it), no trace
    /// or timeline, race check on, no uninitialized-read check, fast-forwarding on unless the
    /// environment variable [`NO_FAST_FORWARD_ENV`] is set.
    fn default() -> Self {
        RunOptions {
            timing_only: false,
            max_instructions: DEFAULT_MAX_INSTRUCTIONS,
            max_cycles: 1_000_000_000_000,
            trace: false,
            trace_ops: false,
            timeline: false,
            race_check: true,
            max_work: 100_000_000_000,
            max_output_bytes: llmpu_isa::limits::host_bytes(),
            progress: None,
            check_uninit: false,
            fast_forward: fast_forward_default(),
        }
    }
}

/// Setting this environment variable (to anything) turns fast-forwarding off by default
/// ([`RunOptions::fast_forward`]), for every command that runs programs.
pub const NO_FAST_FORWARD_ENV: &str = "LLMPU_NO_FAST_FORWARD";

/// Whether [`RunOptions::default`] fast-forwards: unless [`NO_FAST_FORWARD_ENV`] is set.
pub fn fast_forward_default() -> bool {
    std::env::var_os(NO_FAST_FORWARD_ENV).is_none()
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Output tensors in the order of the program's I/O descriptors (empty in timing-only mode).
    pub outputs: Vec<(String, Tensor)>,
    pub report: Report,
    pub trace: Option<Trace>,
    pub timeline: Option<Timeline>,
    /// Instructions accounted for by fast-forwarding (skipped periods) rather than simulated one
    /// by one; 0 without [`RunOptions::fast_forward`]. Every figure of the report is the same
    /// either way.
    pub fast_forwarded: u64,
}

impl RunResult {
    /// The output of this name.
    pub fn output(&self, name: &str) -> Option<&Tensor> {
        self.outputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// Checks an input's values against the program's [`llmpu_isa::IndexBound`]s: an index outside
/// its table is an error naming the element, not a read past the table.
pub fn check_bounds(program: &Program, name: &str, t: &Tensor) -> Result<(), EmuError> {
    for b in program.bounds.iter().filter(|b| b.input == name) {
        let Some(v) = t.to_i128() else { continue };
        if let Some((i, x)) = v
            .iter()
            .enumerate()
            .find(|(_, x)| **x < b.lo as i128 || **x >= b.hi as i128)
        {
            return Err(EmuError::BadTensor {
                name: name.into(),
                message: format!(
                    "element {i} is {x}, outside [{}, {}): it indexes the rows of `{}`",
                    b.lo, b.hi, b.loc
                ),
            });
        }
    }
    Ok(())
}

fn check_inputs(
    program: &Program,
    inputs: &[(String, Tensor)],
    required: bool,
) -> Result<(), EmuError> {
    let mut seen = HashSet::new();
    for (name, t) in inputs {
        if !seen.insert(name.as_str()) {
            return Err(EmuError::DuplicateInput(name.clone()));
        }
        let Some(io) = program.io(name).filter(|io| io.dir == IoDir::Input) else {
            let names: Vec<&str> = program
                .io
                .iter()
                .filter(|io| io.dir == IoDir::Input)
                .map(|io| io.name.as_str())
                .collect();
            return Err(EmuError::UnknownInput(name.clone(), names.join(", ")));
        };
        if io.dtype != t.dtype || io.shape != t.shape {
            return Err(EmuError::InputMismatch {
                name: name.clone(),
                expected: tensor::describe(io.dtype, &io.shape),
                got: t.describe(),
            });
        }
        if Some(t.data.len() as u64) != io.bytes() {
            return Err(EmuError::BadTensor {
                name: name.clone(),
                message: format!("{} bytes of data for {}", t.data.len(), t.describe()),
            });
        }
        check_bounds(program, name, t)?;
    }
    if required {
        for io in program.io.iter().filter(|io| io.dir == IoDir::Input) {
            if !seen.contains(io.name.as_str()) {
                return Err(EmuError::MissingInput(io.name.clone()));
            }
        }
    }
    Ok(())
}

/// Runs `program` with `inputs` (name, tensor) on its target.
pub fn run(
    program: &Program,
    inputs: &[(String, Tensor)],
    opts: &RunOptions,
) -> Result<RunResult, EmuError> {
    run_with_kv(program, inputs, None, opts).map(|r| r.0)
}

/// [`run`] with the program's KV region ([`kv`]) written from `kv_image` before the run (when
/// given) and read back after it.
pub fn run_with_kv(
    program: &Program,
    inputs: &[(String, Tensor)],
    kv_image: Option<&[u8]>,
    opts: &RunOptions,
) -> Result<(RunResult, Option<Vec<u8>>), EmuError> {
    program.validate()?;
    check_inputs(program, inputs, !opts.timing_only)?;
    let outs = || program.io.iter().filter(|io| io.dir == IoDir::Output);
    if !opts.timing_only {
        let total = outs().fold(0u64, |a, io| {
            a.saturating_add(io.bytes().unwrap_or(u64::MAX))
        });
        if total > opts.max_output_bytes {
            return Err(EmuError::Unsupported(format!(
                "the outputs total {total} bytes, more than the limit of {} bytes the emulator \
                 reads back to the host; run with --timing-only to cost the program",
                opts.max_output_bytes
            )));
        }
    }
    let mut sim = sim::Sim::new(program, opts)?;
    if !opts.timing_only {
        let hbm_err = |name: &str, k: TrapKind| EmuError::BadTensor {
            name: name.into(),
            message: k.to_string(),
        };
        for d in &program.data {
            sim.hbm
                .lend(d.hbm_addr, &d.bytes)
                .map_err(|k| hbm_err(&d.name, k))?;
        }
        for (name, t) in inputs {
            if let Some(io) = program.io(name) {
                sim.hbm
                    .write(io.hbm_addr, &t.data)
                    .map_err(|k| hbm_err(name, k))?;
            }
        }
        if let (Some(kv), Some(img)) = (&program.kv, kv_image) {
            if img.len() as u64 != kv.bytes {
                return Err(EmuError::BadTensor {
                    name: "KV region".into(),
                    message: format!(
                        "{} bytes of image for a {}-byte region",
                        img.len(),
                        kv.bytes
                    ),
                });
            }
            sim.hbm
                .write(kv.hbm_addr, img)
                .map_err(|k| hbm_err("KV region", k))?;
        }
    }
    if let (true, Some(kv), Some(img)) = (opts.timing_only, &program.kv, kv_image) {
        // Timing-only runs still need the header (block table, lengths): control flow reads it.
        let lo = kv.table_addr.saturating_sub(kv.hbm_addr) as usize;
        let header = kv
            .table_bytes()
            .and_then(|n| img.get(lo..lo.checked_add(n as usize)?))
            .ok_or_else(|| EmuError::BadTensor {
                name: "KV region".into(),
                message: format!("{} bytes of image hold no region header", img.len()),
            })?;
        sim.hbm
            .write(kv.table_addr, header)
            .map_err(|k| hbm_err_top("KV region", k))?;
    }
    sim.run()?;
    let kv_after = match (&program.kv, kv_image, opts.timing_only) {
        (Some(kv), Some(_), false) => Some(
            sim.read_hbm(kv.hbm_addr, kv.bytes)
                .map_err(|k| hbm_err_top("KV region", k))?
                .ok_or_else(|| {
                    EmuError::Unsupported("cannot allocate the KV region on this host".into())
                })?,
        ),
        _ => None,
    };
    let mut outputs = Vec::new();
    if !opts.timing_only {
        for io in outs() {
            let len = io.bytes().unwrap_or(u64::MAX);
            let data = sim
                .read_hbm(io.hbm_addr, len)
                .map_err(|k| EmuError::BadTensor {
                    name: io.name.clone(),
                    message: k.to_string(),
                })?
                .ok_or_else(|| {
                    EmuError::Unsupported(format!(
                        "cannot allocate {len} bytes on this host for output `{}`",
                        io.name
                    ))
                })?;
            outputs.push((
                io.name.clone(),
                Tensor {
                    dtype: io.dtype,
                    shape: io.shape.clone(),
                    data,
                },
            ));
        }
    }
    let report = sim.report();
    let trace = sim.take_trace();
    let timeline = sim.take_timeline();
    let fast_forwarded = sim.fast_forwarded();
    Ok((
        RunResult {
            outputs,
            report,
            trace,
            timeline,
            fast_forwarded,
        },
        kv_after,
    ))
}

fn hbm_err_top(name: &str, k: TrapKind) -> EmuError {
    EmuError::BadTensor {
        name: name.into(),
        message: k.to_string(),
    }
}
