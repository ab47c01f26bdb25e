//! Machine configurations ("targets"): the TOML schema, its validation and the built-in presets.
//!
//! A target fixes every size, rate, latency and energy the compiler and the emulator use. Files are
//! strict: an unknown key, a missing key or an out-of-range value is an error that names the key
//! (`matrix.rows`). The presets in `isa/targets/*.toml` are embedded in the binary, so every command
//! works with no configuration. [`FIELD_DOCS`] documents every key with its unit; a test keeps it in
//! step with the structs.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// A whole machine configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub name: String,
    pub description: String,
    pub cores: u32,
    pub clock_ghz: f64,
    pub matrix: Matrix,
    pub vector: Vector,
    pub sram: Memory,
    pub accumulator: Memory,
    pub hbm: Hbm,
    pub latency: Latency,
    pub kv: Kv,
    pub energy: Energy,
    /// Cores set apart for a speculative-decoding draft model (`spec/serving.md`); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_unit: Option<DraftUnit>,
    /// Optional: host (or CXL) memory that holds KV blocks swapped out of HBM (`llmpu serve-sim
    /// --preemption offload`). Absent in the presets; omitted from the TOML when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_offload: Option<KvOffload>,
}

/// A group of cores reserved for the draft model of speculative decoding, with a static share of
/// the HBM bandwidth: the draft runs there while the remaining cores verify.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftUnit {
    pub cores: u32,
    pub hbm_share: f64,
}

/// The systolic array of each core.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    pub rows: u32,
    pub cols: u32,
    pub fp32_slowdown: u32,
    /// How the array maps a matmul and what it pays per fold (`spec/cost-model.md`); optional,
    /// omitted from the TOML at its default.
    #[serde(default, skip_serializing_if = "Dataflow::is_default")]
    pub dataflow: Dataflow,
}

/// The matrix engine's dataflow: which operand stays in the array and what each fold (one
/// array-sized piece of the matmul) pays for fill, skew and drain. The formulas are in
/// `crate::cost::matmul_occupancy` and `spec/cost-model.md`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dataflow {
    /// Weight-stationary with double-buffered weights: the next weight tile loads while `m`
    /// rows stream through the current one; fill and drain are paid once per instruction.
    #[default]
    #[serde(rename = "ws-double")]
    WsDouble,
    /// Weight-stationary, single weight buffer: every fold loads its weights (`R`), skews the
    /// inputs in (`R − 1`), streams `m` rows and drains (`C − 1`) before the next (SCALE-Sim's
    /// `ws`).
    #[serde(rename = "ws")]
    Ws,
    /// Output-stationary: each fold holds an `R × C` block of outputs, streams `k` and drains
    /// (SCALE-Sim's `os`).
    #[serde(rename = "os")]
    Os,
    /// Input-stationary: each fold holds a `k × m` block of the inputs, streams `n`
    /// (SCALE-Sim's `is`).
    #[serde(rename = "is")]
    Is,
}

impl Dataflow {
    /// Every dataflow with its TOML spelling.
    pub const ALL: [(Dataflow, &'static str); 4] = [
        (Dataflow::WsDouble, "ws-double"),
        (Dataflow::Ws, "ws"),
        (Dataflow::Os, "os"),
        (Dataflow::Is, "is"),
    ];

    /// The TOML spelling.
    pub fn name(self) -> &'static str {
        Dataflow::ALL
            .iter()
            .find(|(d, _)| *d == self)
            .map(|(_, n)| *n)
            .unwrap_or("ws-double")
    }

    fn is_default(&self) -> bool {
        *self == Dataflow::default()
    }
}

/// The vector unit of each core.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vector {
    pub lanes: u32,
}

/// An on-core memory (scratchpad or accumulator).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    pub size_bytes: u64,
    /// Removed key (nothing modelled bank conflicts): still parsed so that [`Target::validate`]
    /// can refuse it with an error that says so; never written.
    #[serde(default, skip_serializing)]
    pub banks: Option<u32>,
}

/// The shared off-chip memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hbm {
    pub size_bytes: u64,
    pub bandwidth_gb_s: f64,
    pub latency_cycles: u64,
    pub burst_bytes: u64,
    /// One DMA read may be written into several cores' scratchpads (`dma.mcast`).
    pub multicast: bool,
    /// Sustained fraction of `bandwidth_gb_s` a transfer achieves (refresh, page misses, bus
    /// turnarounds); optional, 1.0 (peak) when absent and then omitted from the TOML.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub efficiency: f64,
}

fn one() -> f64 {
    1.0
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Per-operation latencies, in core clock cycles.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    pub scalar: u64,
    pub branch: u64,
    pub scalar_mem: u64,
    pub sync: u64,
    pub barrier: u64,
    pub dma_setup: u64,
    pub vpu_pipeline: u64,
    pub vpu_simple: u64,
    pub vpu_special: u64,
    pub queue_depth: u32,
    /// Cycles the dispatcher spends launching each op (the first instruction of every ONNX
    /// node's code); optional, 0 when absent and then omitted from the TOML.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub op_launch: u64,
}

/// KV-cache layout parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kv {
    pub block_tokens: u32,
}

/// A second KV tier: memory beside the chip (host DRAM over PCIe, or CXL) that KV blocks are
/// copied to and from by a DMA engine while the chip computes (`spec/serving.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvOffload {
    pub size_bytes: u64,
    pub bandwidth_gb_s: f64,
    pub latency_cycles: u64,
}

impl KvOffload {
    /// Cycles to move `bytes` one way at `clock_ghz`: the latency plus the bytes at the link's
    /// bandwidth, rounded up.
    pub fn transfer_cycles(&self, bytes: u64, clock_ghz: f64) -> u64 {
        let per_cycle = self.bandwidth_gb_s / clock_ghz;
        self.latency_cycles + (bytes as f64 / per_cycle).ceil() as u64
    }
}

/// Energy per event, for the energy estimate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Energy {
    pub mac_bf16_pj: f64,
    pub mac_fp32_pj: f64,
    pub mac_int8_pj: f64,
    pub vector_op_pj: f64,
    pub sram_byte_pj: f64,
    pub acc_byte_pj: f64,
    pub hbm_byte_pj: f64,
    pub static_w: f64,
}

/// Keys of the optional sections (absent from the presets): dotted path, unit, meaning.
pub const OPTIONAL_FIELD_DOCS: &[(&str, &str, &str)] = &[
    (
        "kv_offload.size_bytes",
        "bytes",
        "host (or CXL) memory for KV blocks swapped out of HBM (`serve-sim --preemption offload`)",
    ),
    (
        "kv_offload.bandwidth_gb_s",
        "GB/s (10⁹ bytes/s)",
        "bandwidth of the HBM ↔ host link, each direction",
    ),
    (
        "kv_offload.latency_cycles",
        "cycles",
        "latency of one transfer over the link (added once per swap-out or prefetch)",
    ),
    (
        "draft_unit.cores",
        "count",
        "cores reserved for a speculative-decoding draft model (fewer than `cores`)",
    ),
    (
        "draft_unit.hbm_share",
        "fraction",
        "share of `hbm.bandwidth_gb_s` statically given to the draft unit (0 < share < 1)",
    ),
];

/// Optional keys inside the required tables: dotted path, unit, value when absent, meaning. A
/// key at its default is omitted from the canonical TOML, so the presets' text and every
/// figure stay as they were without them.
pub const OPTIONAL_KEY_DOCS: &[(&str, &str, &str, &str)] = &[
    (
        "matrix.dataflow",
        "—",
        "`\"ws-double\"`",
        "the array's dataflow: `\"ws-double\"` (weight-stationary, weights double-buffered), \
         `\"ws\"` (weight-stationary, fill/skew/drain per fold), `\"os\"` (output-stationary), \
         `\"is\"` (input-stationary); formulas in spec/cost-model.md",
    ),
    (
        "hbm.efficiency",
        "fraction",
        "1.0",
        "sustained fraction of `hbm.bandwidth_gb_s` every transfer achieves (0 < efficiency ≤ 1)",
    ),
    (
        "latency.op_launch",
        "cycles",
        "0",
        "dispatcher cycles to launch each op: charged at the first instruction of every \
         located op's code (a `.loc` change in program order)",
    ),
];

/// Every key of the schema: dotted path, unit, meaning.
pub const FIELD_DOCS: &[(&str, &str, &str)] = &[
    ("name", "—", "preset or file name, printed in reports"),
    ("description", "—", "one line for `llmpu targets`"),
    (
        "cores",
        "count",
        "cores sharing HBM; each has every unit below",
    ),
    ("clock_ghz", "GHz", "core clock; converts cycles to time"),
    (
        "matrix.rows",
        "PEs",
        "systolic array rows (the K extent of one weight tile)",
    ),
    (
        "matrix.cols",
        "PEs",
        "systolic array columns (the N extent of one weight tile)",
    ),
    (
        "matrix.fp32_slowdown",
        "×",
        "cycle multiplier for f32 inputs (reduced-rate fp32)",
    ),
    (
        "vector.lanes",
        "lanes",
        "elements the vector unit processes per cycle",
    ),
    ("sram.size_bytes", "bytes", "scratchpad SRAM per core"),
    (
        "accumulator.size_bytes",
        "bytes",
        "accumulator SRAM per core (f32/i32 results)",
    ),
    ("hbm.size_bytes", "bytes", "off-chip memory capacity"),
    (
        "hbm.bandwidth_gb_s",
        "GB/s (10⁹ bytes/s)",
        "peak bandwidth shared by all cores",
    ),
    (
        "hbm.latency_cycles",
        "cycles",
        "latency from request to first byte",
    ),
    (
        "hbm.burst_bytes",
        "bytes",
        "access granule: each contiguous run is rounded up to it",
    ),
    (
        "hbm.multicast",
        "bool",
        "one DMA read can fill several cores' scratchpads (`dma.mcast`); without it each core loads its own copy",
    ),
    (
        "latency.scalar",
        "cycles",
        "scalar arithmetic and dispatch of one instruction",
    ),
    ("latency.branch", "cycles", "branch or jump"),
    ("latency.scalar_mem", "cycles", "scalar load/store to SRAM"),
    (
        "latency.sync",
        "cycles",
        "semaphore signal or satisfied wait",
    ),
    (
        "latency.barrier",
        "cycles",
        "cross-core barrier after the last core arrives",
    ),
    (
        "latency.dma_setup",
        "cycles",
        "DMA descriptor setup per transfer",
    ),
    (
        "latency.vpu_pipeline",
        "cycles",
        "vector pipeline depth (fill once per instruction)",
    ),
    (
        "latency.vpu_simple",
        "cycles",
        "per lane-group for add/mul/max/copy…",
    ),
    (
        "latency.vpu_special",
        "cycles",
        "per lane-group for div/exp/rsqrt/tanh/erf…",
    ),
    (
        "latency.queue_depth",
        "entries",
        "instructions each unit's queue holds before dispatch stalls",
    ),
    ("kv.block_tokens", "tokens", "paged KV-cache block size"),
    (
        "energy.mac_bf16_pj",
        "pJ",
        "one multiply-accumulate, bf16/f16/fp8 inputs",
    ),
    (
        "energy.mac_fp32_pj",
        "pJ",
        "one multiply-accumulate, f32 inputs",
    ),
    (
        "energy.mac_int8_pj",
        "pJ",
        "one multiply-accumulate, int8 inputs",
    ),
    (
        "energy.vector_op_pj",
        "pJ",
        "one vector-unit element operation",
    ),
    (
        "energy.sram_byte_pj",
        "pJ",
        "one byte read or written in the scratchpad",
    ),
    (
        "energy.acc_byte_pj",
        "pJ",
        "one byte read or written in the accumulator",
    ),
    ("energy.hbm_byte_pj", "pJ", "one byte moved to or from HBM"),
    (
        "energy.static_w",
        "W",
        "static (leakage) power of the whole chip, charged over the run time",
    ),
];

/// Upper bounds [`Target::validate`] enforces, so that every cost and time computation stays far
/// from `u64` overflow and the emulator can hold the machine.
pub const MAX_CORES: u64 = 256;
/// `matrix.rows`, `matrix.cols`.
pub const MAX_ARRAY_DIM: u64 = 1 << 16;
pub const MAX_FP32_SLOWDOWN: u64 = 1 << 10;
pub const MAX_LANES: u64 = 1 << 20;
/// Per-core scratchpad and accumulator size (the emulator's limit per memory).
pub const MAX_ONCHIP_BYTES: u64 = 1 << 32;
/// HBM size (the emulator stores HBM sparsely, so this is an address-space limit).
pub const MAX_HBM_BYTES: u64 = 1 << 48;
/// Every latency in cycles (and `kv.block_tokens`).
pub const MAX_LATENCY: u64 = 1 << 32;
pub const MAX_BURST_BYTES: u64 = 1 << 20;
pub const MAX_QUEUE_DEPTH: u64 = 1 << 16;
pub const MIN_CLOCK_GHZ: f64 = 1e-6;
pub const MAX_CLOCK_GHZ: f64 = 1e6;
/// HBM bytes per core cycle (`hbm.bandwidth_gb_s / clock_ghz`).
pub const MIN_HBM_BYTES_PER_CYCLE: f64 = 1e-6;
pub const MAX_HBM_BYTES_PER_CYCLE: f64 = 1e9;

/// Errors reading or validating a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Invalid {
        path: String,
        field: &'static str,
        message: String,
    },
    #[error("cannot read target file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("unknown target `{0}`{hint} (built-in: {names}); or give a path to a .toml file", hint = crate::suggest::did_you_mean(preset_names(), .0), names = preset_names().join(", "))]
    Unknown(String),
}

const PRESETS: &[(&str, &str)] = &[
    ("edge", include_str!("../targets/edge.toml")),
    ("datacenter", include_str!("../targets/datacenter.toml")),
];

/// The name of the default target.
pub const DEFAULT_TARGET: &str = "edge";

/// Names of the built-in presets.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}

/// The TOML text of a built-in preset.
pub fn preset_text(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

impl Target {
    /// A built-in preset by name.
    pub fn preset(name: &str) -> Result<Target, TargetError> {
        let text = preset_text(name).ok_or_else(|| TargetError::Unknown(name.into()))?;
        Target::from_toml(text, &format!("<preset {name}>"))
    }

    /// The default target (`edge`).
    pub fn default_target() -> Target {
        Target::preset(DEFAULT_TARGET).expect("built-in preset is valid")
    }

    /// A preset name or a path to a `.toml` file.
    pub fn resolve(spec: &str) -> Result<Target, TargetError> {
        if preset_text(spec).is_some() {
            return Target::preset(spec);
        }
        let path = Path::new(spec);
        if path.extension().is_some_and(|e| e == "toml") || path.exists() {
            let text = crate::limits::read_to_string(path).map_err(|e| TargetError::Io {
                path: spec.into(),
                source: e.into(),
            })?;
            return Target::from_toml(&text, spec);
        }
        Err(TargetError::Unknown(spec.into()))
    }

    /// Parses and validates TOML text; `path` names the source in errors.
    pub fn from_toml(text: &str, path: &str) -> Result<Target, TargetError> {
        let t: Target = toml::from_str(text).map_err(|e| TargetError::Parse {
            path: path.into(),
            message: e.to_string().trim_end().to_string(),
        })?;
        t.validate(path)?;
        Ok(t)
    }

    /// Canonical TOML text (what the binary embeds).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("target serializes")
    }

    /// Checks every value's range; the error names the field.
    pub fn validate(&self, path: &str) -> Result<(), TargetError> {
        let bad = |field: &'static str, message: String| TargetError::Invalid {
            path: path.into(),
            field,
            message,
        };
        let positive: [(&'static str, u64); 14] = [
            ("cores", self.cores as u64),
            ("matrix.rows", self.matrix.rows as u64),
            ("matrix.cols", self.matrix.cols as u64),
            ("matrix.fp32_slowdown", self.matrix.fp32_slowdown as u64),
            ("vector.lanes", self.vector.lanes as u64),
            ("sram.size_bytes", self.sram.size_bytes),
            ("accumulator.size_bytes", self.accumulator.size_bytes),
            ("hbm.size_bytes", self.hbm.size_bytes),
            ("hbm.burst_bytes", self.hbm.burst_bytes),
            ("latency.scalar", self.latency.scalar),
            ("latency.vpu_simple", self.latency.vpu_simple),
            ("latency.vpu_special", self.latency.vpu_special),
            ("latency.queue_depth", self.latency.queue_depth as u64),
            ("kv.block_tokens", self.kv.block_tokens as u64),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(bad(field, "must be greater than 0".into()));
            }
        }
        let l = &self.latency;
        let at_most: [(&'static str, u64, u64); 22] = [
            ("cores", self.cores as u64, MAX_CORES),
            ("matrix.rows", self.matrix.rows as u64, MAX_ARRAY_DIM),
            ("matrix.cols", self.matrix.cols as u64, MAX_ARRAY_DIM),
            (
                "matrix.fp32_slowdown",
                self.matrix.fp32_slowdown as u64,
                MAX_FP32_SLOWDOWN,
            ),
            ("vector.lanes", self.vector.lanes as u64, MAX_LANES),
            ("sram.size_bytes", self.sram.size_bytes, MAX_ONCHIP_BYTES),
            (
                "accumulator.size_bytes",
                self.accumulator.size_bytes,
                MAX_ONCHIP_BYTES,
            ),
            ("hbm.size_bytes", self.hbm.size_bytes, MAX_HBM_BYTES),
            ("hbm.latency_cycles", self.hbm.latency_cycles, MAX_LATENCY),
            ("hbm.burst_bytes", self.hbm.burst_bytes, MAX_BURST_BYTES),
            ("latency.scalar", l.scalar, MAX_LATENCY),
            ("latency.branch", l.branch, MAX_LATENCY),
            ("latency.scalar_mem", l.scalar_mem, MAX_LATENCY),
            ("latency.sync", l.sync, MAX_LATENCY),
            ("latency.barrier", l.barrier, MAX_LATENCY),
            ("latency.dma_setup", l.dma_setup, MAX_LATENCY),
            ("latency.vpu_pipeline", l.vpu_pipeline, MAX_LATENCY),
            ("latency.vpu_simple", l.vpu_simple, MAX_LATENCY),
            ("latency.vpu_special", l.vpu_special, MAX_LATENCY),
            ("latency.queue_depth", l.queue_depth as u64, MAX_QUEUE_DEPTH),
            ("latency.op_launch", l.op_launch, MAX_LATENCY),
            ("kv.block_tokens", self.kv.block_tokens as u64, MAX_LATENCY),
        ];
        for (field, v, max) in at_most {
            if v > max {
                return Err(bad(field, format!("{v} exceeds the maximum of {max}")));
            }
        }
        if !(self.clock_ghz.is_finite()
            && (MIN_CLOCK_GHZ..=MAX_CLOCK_GHZ).contains(&self.clock_ghz))
        {
            return Err(bad(
                "clock_ghz",
                format!("must be a number in {MIN_CLOCK_GHZ:e}..={MAX_CLOCK_GHZ:e}"),
            ));
        }
        if !(self.hbm.bandwidth_gb_s.is_finite() && self.hbm.bandwidth_gb_s > 0.0) {
            return Err(bad(
                "hbm.bandwidth_gb_s",
                "must be a positive number".into(),
            ));
        }
        let per_cycle = self.hbm_bytes_per_cycle();
        if !(MIN_HBM_BYTES_PER_CYCLE..=MAX_HBM_BYTES_PER_CYCLE).contains(&per_cycle) {
            return Err(bad(
                "hbm.bandwidth_gb_s",
                format!(
                    "{:e} GB/s at {:e} GHz is {per_cycle:e} bytes per cycle, outside \
                     {MIN_HBM_BYTES_PER_CYCLE:e}..={MAX_HBM_BYTES_PER_CYCLE:e}",
                    self.hbm.bandwidth_gb_s, self.clock_ghz
                ),
            ));
        }
        for (field, banks) in [
            ("sram.banks", self.sram.banks),
            ("accumulator.banks", self.accumulator.banks),
        ] {
            if banks.is_some() {
                return Err(bad(
                    field,
                    "is no longer accepted: bank conflicts are not modelled (every tile access \
                     is priced at full rate); delete the line (spec/targets.md)"
                        .into(),
                ));
            }
        }
        if !(self.hbm.efficiency.is_finite()
            && self.hbm.efficiency > 0.0
            && self.hbm.efficiency <= 1.0)
        {
            return Err(bad(
                "hbm.efficiency",
                format!(
                    "{} is not a fraction in (0, 1] of the peak bandwidth",
                    self.hbm.efficiency
                ),
            ));
        }
        if per_cycle * self.hbm.efficiency < MIN_HBM_BYTES_PER_CYCLE {
            return Err(bad(
                "hbm.efficiency",
                format!(
                    "leaves {:e} bytes per cycle, below {MIN_HBM_BYTES_PER_CYCLE:e}",
                    per_cycle * self.hbm.efficiency
                ),
            ));
        }
        if !self.hbm.burst_bytes.is_power_of_two() {
            return Err(bad("hbm.burst_bytes", "must be a power of two".into()));
        }
        if let Some(o) = &self.kv_offload {
            if o.size_bytes == 0 {
                return Err(bad(
                    "kv_offload.size_bytes",
                    "must be greater than 0".into(),
                ));
            }
            if o.latency_cycles > MAX_LATENCY {
                return Err(bad(
                    "kv_offload.latency_cycles",
                    format!("{} exceeds the maximum of {MAX_LATENCY}", o.latency_cycles),
                ));
            }
            let per_cycle = o.bandwidth_gb_s / self.clock_ghz;
            if !(o.bandwidth_gb_s.is_finite()
                && o.bandwidth_gb_s > 0.0
                && (MIN_HBM_BYTES_PER_CYCLE..=MAX_HBM_BYTES_PER_CYCLE).contains(&per_cycle))
            {
                return Err(bad(
                    "kv_offload.bandwidth_gb_s",
                    format!(
                        "must be a positive number of at most {MAX_HBM_BYTES_PER_CYCLE:e} and at \
                         least {MIN_HBM_BYTES_PER_CYCLE:e} bytes per cycle"
                    ),
                ));
            }
        }
        let e = &self.energy;
        for (field, v) in [
            ("energy.mac_bf16_pj", e.mac_bf16_pj),
            ("energy.mac_fp32_pj", e.mac_fp32_pj),
            ("energy.mac_int8_pj", e.mac_int8_pj),
            ("energy.vector_op_pj", e.vector_op_pj),
            ("energy.sram_byte_pj", e.sram_byte_pj),
            ("energy.acc_byte_pj", e.acc_byte_pj),
            ("energy.hbm_byte_pj", e.hbm_byte_pj),
            ("energy.static_w", e.static_w),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(field, "must be a non-negative number".into()));
            }
        }
        if let Some(d) = &self.draft_unit {
            if d.cores == 0 || d.cores >= self.cores {
                return Err(bad(
                    "draft_unit.cores",
                    format!(
                        "{} leaves no cores for the target model (1..{} of {} cores)",
                        d.cores,
                        self.cores.saturating_sub(1),
                        self.cores
                    ),
                ));
            }
            if !(d.hbm_share.is_finite() && d.hbm_share > 0.0 && d.hbm_share < 1.0) {
                return Err(bad(
                    "draft_unit.hbm_share",
                    format!("{} is not a fraction strictly between 0 and 1", d.hbm_share),
                ));
            }
        }
        Ok(())
    }

    /// The machines a declared draft unit splits this target into: `(main, draft)`, each with its
    /// cores and its static share of the HBM bandwidth (everything else is the same). `None`
    /// without a `[draft_unit]`.
    pub fn draft_partition(&self) -> Option<(Target, Target)> {
        let d = self.draft_unit.as_ref()?;
        let part = |cores: u32, share: f64, suffix: &str| {
            let mut t = self.clone();
            t.name = format!("{}/{suffix}", self.name);
            t.cores = cores;
            t.hbm.bandwidth_gb_s = self.hbm.bandwidth_gb_s * share;
            t.draft_unit = None;
            t
        };
        Some((
            part(self.cores - d.cores, 1.0 - d.hbm_share, "main"),
            part(d.cores, d.hbm_share, "draft"),
        ))
    }

    /// HBM bytes per core clock cycle at peak bandwidth.
    pub fn hbm_bytes_per_cycle(&self) -> f64 {
        self.hbm.bandwidth_gb_s / self.clock_ghz
    }

    /// HBM bytes per core clock cycle a transfer sustains: peak × `hbm.efficiency`.
    pub fn hbm_sustained_bytes_per_cycle(&self) -> f64 {
        self.hbm_bytes_per_cycle() * self.hbm.efficiency
    }

    /// Peak multiply-accumulates per cycle per core (bf16).
    pub fn macs_per_cycle_per_core(&self) -> u64 {
        self.matrix.rows as u64 * self.matrix.cols as u64
    }

    /// Peak FLOP/s of the whole chip (2 FLOPs per MAC, bf16 rate).
    pub fn peak_flops(&self) -> f64 {
        2.0 * self.macs_per_cycle_per_core() as f64 * self.cores as f64 * self.clock_ghz * 1e9
    }

    /// Converts cycles to seconds at the target's clock.
    pub fn seconds(&self, cycles: u64) -> f64 {
        cycles as f64 / (self.clock_ghz * 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if v.is_table() {
                    keys(&p, v, out);
                } else {
                    out.push(p);
                }
            }
        }
    }

    #[test]
    fn presets_parse_and_round_trip_through_canonical_toml() {
        for name in preset_names() {
            let t = Target::preset(name).unwrap();
            assert_eq!(t.name, name);
            let again = Target::from_toml(&t.to_toml(), "canonical").unwrap();
            assert_eq!(again, t);
        }
    }

    #[test]
    fn every_schema_key_is_documented_and_every_doc_is_a_key() {
        let v: toml::Value = toml::from_str(&Target::default_target().to_toml()).unwrap();
        let mut found = Vec::new();
        keys("", &v, &mut found);
        found.sort();
        let mut documented: Vec<String> =
            FIELD_DOCS.iter().map(|(k, _, _)| k.to_string()).collect();
        documented.sort();
        assert_eq!(found, documented);
        let mut full = Target::default_target();
        full.matrix.dataflow = Dataflow::Os;
        full.hbm.efficiency = 0.9;
        full.latency.op_launch = 100;
        full.cores = 4;
        full.draft_unit = Some(DraftUnit {
            cores: 1,
            hbm_share: 0.25,
        });
        full.kv_offload = Some(KvOffload {
            size_bytes: 1 << 30,
            bandwidth_gb_s: 64.0,
            latency_cycles: 2000,
        });
        let v: toml::Value = toml::from_str(&full.to_toml()).unwrap();
        let mut found = Vec::new();
        keys("", &v, &mut found);
        found.sort();
        let mut documented: Vec<String> = FIELD_DOCS
            .iter()
            .chain(OPTIONAL_FIELD_DOCS)
            .map(|(k, _, _)| k.to_string())
            .chain(OPTIONAL_KEY_DOCS.iter().map(|(k, _, _, _)| k.to_string()))
            .collect();
        documented.sort();
        assert_eq!(found, documented);
    }

    #[test]
    fn a_draft_unit_splits_the_cores_and_the_bandwidth() {
        let mut t = Target::preset("datacenter").unwrap();
        assert!(t.draft_partition().is_none());
        t.draft_unit = Some(DraftUnit {
            cores: 2,
            hbm_share: 0.25,
        });
        t.validate("t").unwrap();
        let (main, draft) = t.draft_partition().unwrap();
        assert_eq!((main.cores, draft.cores), (6, 2));
        assert_eq!(main.hbm.bandwidth_gb_s, 2250.0);
        assert_eq!(draft.hbm.bandwidth_gb_s, 750.0);
        assert_eq!(Target::from_toml(&t.to_toml(), "c").unwrap(), t);
        for (cores, share, field) in [
            (8, 0.25, "draft_unit.cores"),
            (0, 0.25, "draft_unit.cores"),
            (2, 1.0, "draft_unit.hbm_share"),
            (2, 0.0, "draft_unit.hbm_share"),
        ] {
            t.draft_unit = Some(DraftUnit {
                cores,
                hbm_share: share,
            });
            let e = t.validate("t").unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        }
    }

    #[test]
    fn presets_match_the_issue_sizes() {
        let e = Target::preset("edge").unwrap();
        assert_eq!((e.cores, e.matrix.rows, e.matrix.cols), (1, 32, 32));
        assert_eq!(e.sram.size_bytes, 2 << 20);
        let d = Target::preset("datacenter").unwrap();
        assert_eq!((d.cores, d.matrix.rows, d.matrix.cols), (8, 128, 128));
        assert_eq!(d.sram.size_bytes, 32 << 20);
        assert_eq!(d.hbm.bandwidth_gb_s, 3000.0);
    }

    #[test]
    fn a_missing_field_is_named() {
        let text = preset_text("edge").unwrap().replace("lanes = 32\n", "");
        let err = Target::from_toml(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("lanes"), "{err}");
        assert!(err.starts_with("t.toml"), "{err}");
    }

    #[test]
    fn an_invalid_value_is_named() {
        let text = preset_text("edge")
            .unwrap()
            .replace("rows = 32", "rows = 0");
        let err = Target::from_toml(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("`matrix.rows`"), "{err}");
        let text = preset_text("edge")
            .unwrap()
            .replace("rows = 32", "rows = -3");
        let err = Target::from_toml(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("rows"), "{err}");
    }

    #[test]
    fn values_above_the_upper_bounds_are_rejected_naming_the_field() {
        let edge = preset_text("edge").unwrap();
        let cases = [
            (
                "barrier = 20",
                "barrier = 18446744073709551615",
                "latency.barrier",
            ),
            (
                "burst_bytes = 64",
                "burst_bytes = 9223372036854775808",
                "hbm.burst_bytes",
            ),
            (
                "burst_bytes = 64",
                "burst_bytes = 2097152",
                "hbm.burst_bytes",
            ),
            (
                "bandwidth_gb_s = 100.0",
                "bandwidth_gb_s = 1e-300",
                "hbm.bandwidth_gb_s",
            ),
            (
                "bandwidth_gb_s = 100.0",
                "bandwidth_gb_s = 1e300",
                "hbm.bandwidth_gb_s",
            ),
            ("rows = 32", "rows = 4294967295", "matrix.rows"),
            ("lanes = 32", "lanes = 4294967295", "vector.lanes"),
            (
                "queue_depth = 16",
                "queue_depth = 4294967295",
                "latency.queue_depth",
            ),
            (
                "vpu_special = 4",
                "vpu_special = 18446744073709551615",
                "latency.vpu_special",
            ),
            (
                "latency_cycles = 150",
                "latency_cycles = 4294967297",
                "hbm.latency_cycles",
            ),
            (
                "size_bytes = 4294967296",
                "size_bytes = 562949953421312",
                "hbm.size_bytes",
            ),
            (
                "size_bytes = 2097152",
                "size_bytes = 8589934592",
                "sram.size_bytes",
            ),
            (
                "fp32_slowdown = 4",
                "fp32_slowdown = 4294967295",
                "matrix.fp32_slowdown",
            ),
            ("clock_ghz = 1.0", "clock_ghz = 1e300", "clock_ghz"),
        ];
        for (from, to, field) in cases {
            assert!(edge.contains(from), "{from}");
            let text = edge.replacen(from, to, 1);
            let err = Target::from_toml(&text, "t.toml").unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{to}: {err}");
        }
        // The bounds themselves are accepted.
        let text = edge
            .replacen("barrier = 20", "barrier = 4294967296", 1)
            .replacen("burst_bytes = 64", "burst_bytes = 1048576", 1);
        Target::from_toml(&text, "t.toml").unwrap();
    }

    #[test]
    fn the_optional_kv_offload_section_parses_validates_and_round_trips() {
        let edge = preset_text("edge").unwrap();
        assert_eq!(Target::preset("edge").unwrap().kv_offload, None);
        let text = format!(
            "{edge}\n[kv_offload]\nsize_bytes = 1073741824\nbandwidth_gb_s = 64.0\nlatency_cycles = 2000\n"
        );
        let t = Target::from_toml(&text, "t.toml").unwrap();
        let o = t.kv_offload.clone().unwrap();
        assert_eq!((o.size_bytes, o.latency_cycles), (1 << 30, 2000));
        // 64 GB/s at 1 GHz: 64 bytes per cycle; 6400 bytes take 100 cycles after the latency.
        assert_eq!(o.transfer_cycles(6400, t.clock_ghz), 2100);
        assert_eq!(Target::from_toml(&t.to_toml(), "again").unwrap(), t);
        let v: toml::Value = toml::from_str(&t.to_toml()).unwrap();
        let mut found = Vec::new();
        keys("", &v, &mut found);
        found.retain(|k| k.starts_with("kv_offload."));
        found.sort();
        let mut documented: Vec<String> = OPTIONAL_FIELD_DOCS
            .iter()
            .map(|(k, _, _)| k.to_string())
            .filter(|k| k.starts_with("kv_offload."))
            .collect();
        documented.sort();
        assert_eq!(found, documented);
        for (from, to, field) in [
            (
                "bandwidth_gb_s = 64.0",
                "bandwidth_gb_s = 0.0",
                "kv_offload.bandwidth_gb_s",
            ),
            (
                "size_bytes = 1073741824",
                "size_bytes = 0",
                "kv_offload.size_bytes",
            ),
            (
                "latency_cycles = 2000",
                "latency_cycles = 4294967297",
                "kv_offload.latency_cycles",
            ),
        ] {
            let bad = text.replacen(from, to, 1);
            let err = Target::from_toml(&bad, "t.toml").unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{to}: {err}");
        }
        let err = Target::from_toml(&format!("{text}bytes = 3\n"), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bytes"), "{err}");
    }

    #[test]
    fn optional_keys_parse_round_trip_and_are_omitted_at_their_defaults() {
        let edge = preset_text("edge").unwrap();
        let t = Target::preset("edge").unwrap();
        assert_eq!(t.matrix.dataflow, Dataflow::WsDouble);
        assert_eq!((t.hbm.efficiency, t.latency.op_launch), (1.0, 0));
        let canon = t.to_toml();
        for key in ["dataflow", "efficiency", "op_launch", "banks"] {
            assert!(!canon.contains(key), "{key} in\n{canon}");
        }
        for (d, name) in Dataflow::ALL {
            let text = edge.replacen(
                "fp32_slowdown = 4",
                &format!("fp32_slowdown = 4\ndataflow = \"{name}\""),
                1,
            );
            let t = Target::from_toml(&text, "t.toml").unwrap();
            assert_eq!(t.matrix.dataflow, d);
            assert_eq!(d.name(), name);
            assert_eq!(Target::from_toml(&t.to_toml(), "again").unwrap(), t);
        }
        let text = edge
            .replacen(
                "multicast = false",
                "multicast = false\nefficiency = 0.85",
                1,
            )
            .replacen("queue_depth = 16", "queue_depth = 16\nop_launch = 2000", 1);
        let t = Target::from_toml(&text, "t.toml").unwrap();
        assert_eq!((t.hbm.efficiency, t.latency.op_launch), (0.85, 2000));
        assert_eq!(t.hbm_sustained_bytes_per_cycle(), 85.0);
        assert_eq!(Target::from_toml(&t.to_toml(), "again").unwrap(), t);
    }

    #[test]
    fn bad_optional_keys_and_removed_keys_are_named() {
        let edge = preset_text("edge").unwrap();
        let cases = [
            (
                "fp32_slowdown = 4",
                "fp32_slowdown = 4\ndataflow = \"rs\"",
                "dataflow",
            ),
            (
                "multicast = false",
                "multicast = false\nefficiency = 0.0",
                "`hbm.efficiency`",
            ),
            (
                "multicast = false",
                "multicast = false\nefficiency = 1.5",
                "`hbm.efficiency`",
            ),
            (
                "multicast = false",
                "multicast = false\nefficiency = nan",
                "`hbm.efficiency`",
            ),
            (
                "queue_depth = 16",
                "queue_depth = 16\nop_launch = 4294967297",
                "`latency.op_launch`",
            ),
            (
                "size_bytes = 2097152",
                "size_bytes = 2097152\nbanks = 16",
                "`sram.banks`",
            ),
            (
                "size_bytes = 262144",
                "size_bytes = 262144\nbanks = 8",
                "`accumulator.banks`",
            ),
        ];
        for (from, to, field) in cases {
            assert!(edge.contains(from), "{from}");
            let text = edge.replacen(from, to, 1);
            let err = Target::from_toml(&text, "t.toml").unwrap_err().to_string();
            assert!(err.contains(field), "{to}: {err}");
        }
        let text = edge.replacen(
            "size_bytes = 2097152",
            "size_bytes = 2097152\nbanks = 16",
            1,
        );
        let err = Target::from_toml(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("not modelled"), "{err}");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let text = preset_text("edge")
            .unwrap()
            .replace("lanes = 32", "lanes = 32\nlane = 4");
        let err = Target::from_toml(&text, "t.toml").unwrap_err().to_string();
        assert!(err.contains("lane"), "{err}");
    }
}
