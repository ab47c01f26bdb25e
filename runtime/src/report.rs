//! The cost report of a run: cycles, time, utilization, traffic, high-water marks, FLOP/s against
//! peak, energy and a per-location breakdown.
//!
//! Definitions (all cycle figures are core clock cycles of the target):
//! - `cycles`: the last completion of any instruction on any core (the run's makespan).
//! - unit busy cycles: for each started instruction, the cycles from its start until its unit may
//!   start the next one (`free - start`: the cost model's occupancy, stretched for a DMA that waited
//!   for the shared HBM channel). The scalar unit's busy cycles include one `latency.scalar` per
//!   instruction it dispatched to another unit, `latency.op_launch` per op launched, and
//!   `latency.barrier` per barrier (time spent
//!   waiting for a semaphore, a full queue or other cores is not busy). Busy fraction = busy
//!   cycles / `cycles`.
//! - HBM bytes: the cost model's burst-rounded `hbm_read`/`hbm_write`.
//! - SRAM / accumulator high-water: highest byte address any instruction touched + 1.
//! - FLOP/s: 2 × MACs / run time; the fraction is against `Target::peak_flops` (bf16 rate).
//! - energy: the sum of `Cost::energy_pj` over executed instructions, split by event kind, plus
//!   `energy.static_w` × run time.
//! - locations: the program's debug map (`Program::loc_of`); each instruction's busy cycles, HBM
//!   bytes and MACs are charged to its location, sorted by total busy cycles, largest first.
//!   Each location's bottleneck is its busiest unit ([`LocReport::bottleneck`]); its class
//!   ([`Bound`]) is memory for the DMA engine, compute for the matrix or vector unit and control
//!   for the scalar unit.
//! - op rows ([`Report::ops`], the per-op table of the text, JSON and HTML reports alike): each
//!   location's short label ([`op_label`]: the fused-op pattern after the first node's scope,
//!   `h.0/mlp: matmul+bias+gelu`; the full `+`-joined node list stays in `loc`), its time (the
//!   busy cycles of its bottleneck unit), FLOPs (`2·MACs + vector element ops`), intensity
//!   (FLOPs per HBM byte), achieved FLOP/s over its time and the fraction of the roofline above
//!   it (`min(intensity × HBM bandwidth, compute roof)`; for an op without FLOPs, its HBM
//!   bandwidth over the peak). The roofs are the report's `hbm_bandwidth` and `compute_roof`
//!   ([`compute_roof`]: matrix peak plus one vector element operation per lane per cycle).

use llmpu_isa::{Target, Unit};
use serde_json::{Value, json};
use std::fmt::Write;

/// Busy cycles and instruction count of one unit of one core.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct UnitStats {
    pub busy_cycles: u64,
    pub instructions: u64,
}

/// Figures of one core.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CoreReport {
    /// Indexed by `Unit::index()`: scalar, dma, mxu, vpu.
    pub units: [UnitStats; 4],
    pub sram_high_water: u64,
    pub acc_high_water: u64,
    /// Cycle at which this core's last instruction completed.
    pub end_cycle: u64,
}

/// Energy estimate in picojoules.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnergyReport {
    pub mac_pj: f64,
    pub vector_pj: f64,
    pub sram_pj: f64,
    pub acc_pj: f64,
    pub hbm_pj: f64,
    pub dynamic_pj: f64,
    pub static_pj: f64,
    pub total_pj: f64,
}

/// Figures charged to one debug location.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LocReport {
    pub loc: String,
    /// Indexed by `Unit::index()`.
    pub busy_cycles: [u64; 4],
    pub instructions: u64,
    pub hbm_bytes: u64,
    pub macs: u64,
    /// Vector-unit element operations.
    pub vector_ops: u64,
    /// First start and last completion of any of its instructions (its span on the timeline).
    pub first_start: u64,
    pub last_end: u64,
}

/// What limits an op: the class of its bottleneck unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// The DMA engine (HBM traffic) is the busiest unit.
    Memory,
    /// The matrix engine or the vector unit is the busiest unit.
    Compute,
    /// The scalar unit (loop control, dispatch, op launch) is the busiest unit.
    Control,
}

impl Bound {
    pub fn name(self) -> &'static str {
        match self {
            Bound::Memory => "memory",
            Bound::Compute => "compute",
            Bound::Control => "control",
        }
    }
}

impl LocReport {
    pub fn total_busy(&self) -> u64 {
        self.busy_cycles.iter().sum()
    }

    /// The busiest of its units (DMA, MXU, VPU, scalar; a tie goes to the earlier in that
    /// order): the unit whose busy cycles bound the op's time.
    pub fn bottleneck(&self) -> Unit {
        let mut best = Unit::Dma;
        for u in [Unit::Mxu, Unit::Vpu, Unit::Scalar] {
            if self.busy_cycles[u.index()] > self.busy_cycles[best.index()] {
                best = u;
            }
        }
        best
    }

    /// The op's roofline class, from its bottleneck unit.
    pub fn bound(&self) -> Bound {
        match self.bottleneck() {
            Unit::Dma => Bound::Memory,
            Unit::Mxu | Unit::Vpu => Bound::Compute,
            Unit::Scalar => Bound::Control,
        }
    }
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub target: String,
    pub clock_ghz: f64,
    pub timing_only: bool,
    pub cycles: u64,
    pub seconds: f64,
    pub cores: Vec<CoreReport>,
    pub hbm_read_bytes: u64,
    pub hbm_write_bytes: u64,
    pub macs: u64,
    pub flops_per_second: f64,
    pub peak_flops: f64,
    pub peak_fraction: f64,
    /// Instructions executed per unit over all cores, indexed by `Unit::index()`.
    pub instructions: [u64; 4],
    pub energy: EnergyReport,
    pub locations: Vec<LocReport>,
    /// HBM bandwidth of the target in bytes/s (the roofline's slope).
    pub hbm_bandwidth: f64,
    /// The roofline's flat roof in operations/s ([`compute_roof`]).
    pub compute_roof: f64,
}

/// Peak operations per second of the whole chip: matrix FLOP/s plus one vector element operation
/// per lane per cycle.
pub fn compute_roof(target: &Target) -> f64 {
    target.peak_flops() + target.vector.lanes as f64 * target.cores as f64 * target.clock_ghz * 1e9
}

/// Roofline figures of one op (one debug location).
#[derive(Clone, Debug, PartialEq)]
pub struct OpPoint {
    /// The full location: every fused ONNX node, `+`-joined.
    pub loc: String,
    /// Its short label ([`op_label`]).
    pub label: String,
    /// Busy cycles of its bottleneck unit (at least 1).
    pub cycles: u64,
    pub flops: u64,
    pub hbm_bytes: u64,
    /// FLOPs per HBM byte (`None` without HBM traffic).
    pub intensity: Option<f64>,
    /// Achieved FLOP/s over its bottleneck busy time.
    pub flops_per_second: f64,
    /// Its busiest unit.
    pub bottleneck: Unit,
    /// The class of that unit: memory (DMA), compute (MXU, VPU) or control (scalar).
    pub bound: Bound,
    /// Whether its bottleneck is a compute unit (`bound == Bound::Compute`).
    pub compute_bound: bool,
    /// Achieved over the roof above it.
    pub roofline_fraction: f64,
}

/// The roofline figures of every location of `report` against a roofline of `bandwidth` bytes/s
/// and a flat `roof` in operations/s, in the report's order.
pub fn op_points(report: &Report, bandwidth: f64, roof: f64) -> Vec<OpPoint> {
    let hz = report.clock_ghz * 1e9;
    report
        .locations
        .iter()
        .map(|l| {
            let bottleneck = l.bottleneck();
            let bound = l.bound();
            let cycles = l.busy_cycles[bottleneck.index()].max(1);
            let flops = 2 * l.macs + l.vector_ops;
            let secs = cycles as f64 / hz;
            let fps = flops as f64 / secs;
            let intensity = (l.hbm_bytes > 0).then(|| flops as f64 / l.hbm_bytes as f64);
            let above = match intensity {
                Some(i) => (i * bandwidth).min(roof),
                None => roof,
            };
            let achieved = if flops == 0 {
                l.hbm_bytes as f64 / secs / bandwidth
            } else {
                fps / above
            };
            OpPoint {
                loc: l.loc.clone(),
                label: op_label(&l.loc),
                cycles,
                flops,
                hbm_bytes: l.hbm_bytes,
                intensity,
                flops_per_second: fps,
                bottleneck,
                bound,
                compute_bound: bound == Bound::Compute,
                roofline_fraction: if achieved.is_finite() { achieved } else { 0.0 },
            }
        })
        .collect()
}

/// The op type of one ONNX node name: its last path component without the exporter's `_N`
/// suffix (`/h.0/mlp/MatMul_28` → `MatMul`).
fn node_op(node: &str) -> &str {
    let last = node.rsplit('/').next().unwrap_or(node);
    match last.rsplit_once('_') {
        Some((op, n)) if !op.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => op,
        _ => last,
    }
}

/// The scope of one ONNX node name: its path without the leading `/` and the last component
/// (`/h.0/mlp/MatMul_28` → `h.0/mlp`; empty for a name without a path).
fn node_scope(node: &str) -> &str {
    let t = node.strip_prefix('/').unwrap_or(node);
    t.rsplit_once('/').map(|(s, _)| s).unwrap_or("")
}

/// A short label for a (fused) location: the first node's scope, then the pattern of the fused
/// ops (`/h.0/mlp/MatMul_28+/h.0/mlp/Add_29+…Tanh_35…` → `h.0/mlp: matmul+bias+gelu`). The
/// pattern keeps the ops that say what the fusion is (matmul, attention, the activation, norms,
/// gathers) and reads an `add` right after a matmul as its bias and a trailing `add` as a
/// residual; the arithmetic inside an activation (GELU's mul/pow/tanh) is folded into its name.
/// A location that is not an ONNX node path (`epilogue`) is its own label.
pub fn op_label(loc: &str) -> String {
    let nodes: Vec<&str> = loc.split('+').filter(|n| !n.is_empty()).collect();
    let Some(first) = nodes.first() else {
        return loc.to_string();
    };
    if !first.contains('/') && nodes.len() == 1 {
        return loc.to_string();
    }
    let ops: Vec<String> = nodes.iter().map(|n| node_op(n).to_lowercase()).collect();
    let matmuls = ops
        .iter()
        .filter(|o| matches!(o.as_str(), "matmul" | "gemm"))
        .count();
    let mut parts: Vec<&str> = Vec::new();
    if matmuls >= 2 && ops.iter().any(|o| o == "softmax") {
        parts.push("attention");
    } else {
        let last = ops.len() - 1;
        for (i, op) in ops.iter().enumerate() {
            let part = match op.as_str() {
                "matmul" | "gemm" | "matmulinteger" => Some("matmul"),
                "tanh" | "erf" | "gelu" | "fastgelu" => Some("gelu"),
                "relu" => Some("relu"),
                "sigmoid" => Some(if ops.len() == 1 { "sigmoid" } else { "silu" }),
                "softmax" => Some("softmax"),
                "layernormalization" => Some("layernorm"),
                "simplifiedlayernormalization" | "rmsnormalization" => Some("rmsnorm"),
                "gather" => Some("gather"),
                "add" if parts.last() == Some(&"matmul") => Some("bias"),
                "add" if i == last && i > 0 && !parts.is_empty() => Some("residual"),
                _ => None,
            };
            if let Some(p) = part
                && parts.last() != Some(&p)
            {
                parts.push(p);
            }
        }
    }
    let pattern = if parts.is_empty() {
        let mut seen: Vec<&str> = Vec::new();
        for o in &ops {
            if seen.last() != Some(&o.as_str()) {
                seen.push(o);
            }
        }
        if seen.len() > 3 {
            format!("{}+…", seen[..3].join("+"))
        } else {
            seen.join("+")
        }
    } else {
        parts.join("+")
    };
    let scope = node_scope(first);
    if scope.is_empty() {
        pattern
    } else {
        format!("{scope}: {pattern}")
    }
}

fn frac(busy: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        busy as f64 / total as f64
    }
}

/// `1.23 MiB`-style byte count.
fn bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", units[i])
    }
}

/// Engineering formatting with an SI prefix: `si(1.5e-6, "s")` is `1.500 µs`.
fn si(v: f64, unit: &str) -> String {
    let prefixes = [
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
        (1.0, ""),
        (1e-3, "m"),
        (1e-6, "µ"),
        (1e-9, "n"),
        (1e-12, "p"),
    ];
    if v == 0.0 || !v.is_finite() {
        return format!("{v} {unit}");
    }
    for (scale, p) in prefixes {
        if v.abs() >= scale {
            return format!("{:.3} {p}{unit}", v / scale);
        }
    }
    format!("{:.3e} {unit}", v)
}

impl Report {
    /// Busy fraction of `unit` on `core`.
    pub fn busy_fraction(&self, core: usize, unit: Unit) -> f64 {
        self.cores
            .get(core)
            .map(|c| frac(c.units[unit.index()].busy_cycles, self.cycles))
            .unwrap_or(0.0)
    }

    /// Total instructions executed.
    pub fn total_instructions(&self) -> u64 {
        self.instructions.iter().sum()
    }

    /// The per-op rows against the report's own roofline (`hbm_bandwidth`, `compute_roof`).
    pub fn ops(&self) -> Vec<OpPoint> {
        op_points(self, self.hbm_bandwidth, self.compute_roof)
    }

    /// A human-readable multi-line report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mode = if self.timing_only {
            "timing only"
        } else {
            "functional + timing"
        };
        let _ = writeln!(
            s,
            "LLMPU emulator — target `{}` ({} core{}, {:.3} GHz), {mode}",
            self.target,
            self.cores.len(),
            if self.cores.len() == 1 { "" } else { "s" },
            self.clock_ghz
        );
        let _ = writeln!(
            s,
            "cycles        {}  ({})",
            self.cycles,
            si(self.seconds, "s")
        );
        let _ = writeln!(
            s,
            "instructions  {} (scalar {}, dma {}, mxu {}, vpu {})",
            self.total_instructions(),
            self.instructions[0],
            self.instructions[1],
            self.instructions[2],
            self.instructions[3]
        );
        let _ = writeln!(
            s,
            "HBM traffic   read {}, written {}",
            bytes(self.hbm_read_bytes),
            bytes(self.hbm_write_bytes)
        );
        let _ = writeln!(
            s,
            "compute       {} MACs, {} achieved of {} peak ({:.2}%)",
            self.macs,
            si(self.flops_per_second, "FLOP/s"),
            si(self.peak_flops, "FLOP/s"),
            self.peak_fraction * 100.0
        );
        let e = &self.energy;
        let _ = writeln!(
            s,
            "energy        {} = dynamic {} (MAC {}, vector {}, SRAM {}, acc {}, HBM {}) + static {}",
            si(e.total_pj * 1e-12, "J"),
            si(e.dynamic_pj * 1e-12, "J"),
            si(e.mac_pj * 1e-12, "J"),
            si(e.vector_pj * 1e-12, "J"),
            si(e.sram_pj * 1e-12, "J"),
            si(e.acc_pj * 1e-12, "J"),
            si(e.hbm_pj * 1e-12, "J"),
            si(e.static_pj * 1e-12, "J"),
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<5} {:<7} {:>14} {:>8} {:>13}",
            "core", "unit", "busy cycles", "busy %", "instructions"
        );
        for (i, c) in self.cores.iter().enumerate() {
            for u in Unit::ALL {
                let st = c.units[u.index()];
                let _ = writeln!(
                    s,
                    "{:<5} {:<7} {:>14} {:>7.2}% {:>13}",
                    i,
                    u.name(),
                    st.busy_cycles,
                    frac(st.busy_cycles, self.cycles) * 100.0,
                    st.instructions
                );
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<5} {:>16} {:>16} {:>12}",
            "core", "SRAM high-water", "ACC high-water", "end cycle"
        );
        for (i, c) in self.cores.iter().enumerate() {
            let _ = writeln!(
                s,
                "{:<5} {:>16} {:>16} {:>12}",
                i,
                bytes(c.sram_high_water),
                bytes(c.acc_high_water),
                c.end_cycle
            );
        }
        if !self.locations.is_empty() {
            let _ = writeln!(s);
            s.push_str(&self.render_ops());
        }
        s
    }

    /// The per-op table: one row per location with its short label and the columns of the HTML
    /// and JSON reports (the full fused node lists follow the table, by label).
    pub fn render_ops(&self) -> String {
        let ops = self.ops();
        let w = ops
            .iter()
            .map(|p| p.label.chars().count())
            .chain([2])
            .max()
            .unwrap_or(2);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<w$} {:>10} {:>10} {:>10} {:>10} {:>10} {:>11} {:>13} {:>9} {:<10} {:<8} {:>8}",
            "op",
            "cycles",
            "scalar",
            "dma",
            "mxu",
            "vpu",
            "HBM bytes",
            "FLOPs",
            "FLOP/B",
            "bottleneck",
            "bound",
            "roofline"
        );
        for (p, l) in ops.iter().zip(&self.locations) {
            let pad = w - p.label.chars().count();
            let _ = writeln!(
                s,
                "{}{} {:>10} {:>10} {:>10} {:>10} {:>10} {:>11} {:>13} {:>9} {:<10} {:<8} {:>7.1}%",
                p.label,
                " ".repeat(pad),
                p.cycles,
                l.busy_cycles[0],
                l.busy_cycles[1],
                l.busy_cycles[2],
                l.busy_cycles[3],
                p.hbm_bytes,
                p.flops,
                p.intensity
                    .map(|i| format!("{i:.2}"))
                    .unwrap_or_else(|| "-".into()),
                p.bottleneck.name(),
                p.bound.name(),
                p.roofline_fraction * 100.0
            );
        }
        let fused: Vec<&OpPoint> = ops.iter().filter(|p| p.loc.contains('+')).collect();
        if !fused.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "ops and their ONNX nodes:");
            for p in fused {
                let _ = writeln!(s, "  {}  =  {}", p.label, p.loc);
            }
        }
        s
    }

    /// The per-op table as CSV: the columns of [`Report::render_ops`] (the unit columns are busy
    /// cycles), then the op's ONNX nodes, one row per op in program order.
    pub fn render_ops_csv(&self) -> Result<String, String> {
        let mut w = csv::Writer::from_writer(vec![]);
        let err = |e: csv::Error| e.to_string();
        w.write_record([
            "op",
            "cycles",
            "scalar",
            "dma",
            "mxu",
            "vpu",
            "hbm_bytes",
            "flops",
            "flop_per_byte",
            "bottleneck",
            "bound",
            "roofline_fraction",
            "nodes",
        ])
        .map_err(err)?;
        for (p, l) in self.ops().iter().zip(&self.locations) {
            w.write_record([
                p.label.clone(),
                p.cycles.to_string(),
                l.busy_cycles[0].to_string(),
                l.busy_cycles[1].to_string(),
                l.busy_cycles[2].to_string(),
                l.busy_cycles[3].to_string(),
                p.hbm_bytes.to_string(),
                p.flops.to_string(),
                p.intensity.map(|i| format!("{i:.4}")).unwrap_or_default(),
                p.bottleneck.name().to_string(),
                p.bound.name().to_string(),
                format!("{:.4}", p.roofline_fraction),
                p.loc.clone(),
            ])
            .map_err(err)?;
        }
        let bytes = w.into_inner().map_err(|e| e.to_string())?;
        String::from_utf8(bytes).map_err(|e| e.to_string())
    }

    /// Every figure as JSON.
    pub fn to_json(&self) -> Value {
        let units = |u: &[UnitStats; 4], total: u64| -> Value {
            let mut m = serde_json::Map::new();
            for unit in Unit::ALL {
                let st = u[unit.index()];
                m.insert(
                    unit.name().into(),
                    json!({
                        "busy_cycles": st.busy_cycles,
                        "busy_fraction": frac(st.busy_cycles, total),
                        "instructions": st.instructions,
                    }),
                );
            }
            Value::Object(m)
        };
        let per_unit = |v: &[u64; 4]| -> Value {
            let mut m = serde_json::Map::new();
            for unit in Unit::ALL {
                m.insert(unit.name().into(), json!(v[unit.index()]));
            }
            Value::Object(m)
        };
        let e = &self.energy;
        json!({
            "target": self.target,
            "clock_ghz": self.clock_ghz,
            "timing_only": self.timing_only,
            "cycles": self.cycles,
            "seconds": self.seconds,
            "hbm": { "read_bytes": self.hbm_read_bytes, "write_bytes": self.hbm_write_bytes },
            "macs": self.macs,
            "flops_per_second": self.flops_per_second,
            "peak_flops": self.peak_flops,
            "peak_fraction": self.peak_fraction,
            "instructions": per_unit(&self.instructions),
            "instructions_total": self.total_instructions(),
            "energy_pj": {
                "mac": e.mac_pj, "vector": e.vector_pj, "sram": e.sram_pj, "acc": e.acc_pj,
                "hbm": e.hbm_pj, "dynamic": e.dynamic_pj, "static": e.static_pj, "total": e.total_pj,
            },
            "cores": self.cores.iter().enumerate().map(|(i, c)| json!({
                "core": i,
                "units": units(&c.units, self.cycles),
                "sram_high_water": c.sram_high_water,
                "acc_high_water": c.acc_high_water,
                "end_cycle": c.end_cycle,
            })).collect::<Vec<_>>(),
            "hbm_bandwidth": self.hbm_bandwidth,
            "compute_roof": self.compute_roof,
            "locations": self.locations.iter().zip(self.ops()).map(|(l, p)| json!({
                "label": p.label,
                "loc": l.loc,
                "cycles": p.cycles,
                "flops": p.flops,
                "intensity": p.intensity,
                "flops_per_second": p.flops_per_second,
                "roofline_fraction": p.roofline_fraction,
                "busy_cycles": per_unit(&l.busy_cycles),
                "instructions": l.instructions,
                "hbm_bytes": l.hbm_bytes,
                "macs": l.macs,
                "vector_ops": l.vector_ops,
                "first_start": l.first_start,
                "last_end": l.last_end,
                "bottleneck": l.bottleneck().name(),
                "bound": l.bound().name(),
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_labels_are_the_first_scope_and_the_fused_pattern() {
        let gelu = "/h.0/mlp/MatMul_28+/h.0/mlp/Add_29+/h.0/mlp/Mul_30+/h.0/mlp/Pow_31+\
                    /h.0/mlp/Mul_32+/h.0/mlp/Add_33+/h.0/mlp/Mul_34+/h.0/mlp/Tanh_35+\
                    /h.0/mlp/Add_36+/h.0/mlp/Mul_37";
        assert_eq!(op_label(gelu), "h.0/mlp: matmul+bias+gelu");
        assert_eq!(
            op_label("/h.1/mlp/MatMul_75+/h.1/mlp/Add_76+/h.1/Add_77"),
            "h.1/mlp: matmul+bias+residual"
        );
        assert_eq!(
            op_label(
                "/h.0/attn/MatMul_17+/h.0/attn/Div_18+/h.0/attn/Where_19+\
                 /h.0/attn/Softmax_20+/h.0/attn/MatMul_21"
            ),
            "h.0/attn: attention"
        );
        assert_eq!(op_label("/ln_f/LayerNormalization_78"), "ln_f: layernorm");
        assert_eq!(op_label("/embed/Add_3"), "embed: add");
        assert_eq!(op_label("/lm_head/MatMul_80"), "lm_head: matmul");
        assert_eq!(op_label("epilogue"), "epilogue");
        assert_eq!(op_label("Mul+Sub+Div+Sqrt+Exp"), "mul+sub+div+…");
    }

    fn report() -> Report {
        Report {
            target: "edge".into(),
            clock_ghz: 1.0,
            cycles: 1000,
            hbm_bandwidth: 1e11,
            compute_roof: 1e12,
            cores: vec![CoreReport::default()],
            locations: vec![LocReport {
                loc: "/h.0/mlp/MatMul_1+/h.0/mlp/Add_2+/h.0/Add_3".into(),
                busy_cycles: [10, 100, 400, 20],
                hbm_bytes: 4096,
                macs: 100_000,
                ..Default::default()
            }],
            ..Report::default()
        }
    }

    #[test]
    fn text_and_json_carry_the_same_op_columns_as_the_html_table() {
        let r = report();
        let p = &r.ops()[0];
        assert_eq!(p.cycles, 400);
        assert_eq!(p.flops, 200_000);
        // 200k FLOPs in 400 ns = 5e11 FLOP/s; intensity 48.8 × 1e11 B/s is above the 1e12
        // roof, so the roof is 1e12.
        assert!((p.roofline_fraction - 0.5).abs() < 1e-9, "{p:?}");
        let text = r.render();
        let header = text
            .lines()
            .find(|l| l.starts_with("op "))
            .expect("op table header");
        for col in [
            "cycles",
            "scalar",
            "dma",
            "mxu",
            "vpu",
            "HBM bytes",
            "FLOPs",
            "FLOP/B",
            "bottleneck",
            "bound",
            "roofline",
        ] {
            assert!(header.contains(col), "{col}: {header}");
        }
        let row = text
            .lines()
            .find(|l| l.starts_with("h.0/mlp: matmul+bias+residual "))
            .expect("a row under its short label");
        assert!(row.contains(" mxu ") && row.contains("compute") && row.ends_with("50.0%"));
        assert!(text.contains("h.0/mlp: matmul+bias+residual  =  /h.0/mlp/MatMul_1+"));
        let j = &r.to_json()["locations"][0];
        assert_eq!(j["label"], "h.0/mlp: matmul+bias+residual");
        assert_eq!(j["loc"], "/h.0/mlp/MatMul_1+/h.0/mlp/Add_2+/h.0/Add_3");
        assert_eq!(j["cycles"], 400);
        assert_eq!(j["flops"], 200_000);
        assert_eq!(j["bottleneck"], "mxu");
        assert_eq!(j["bound"], "compute");
        assert!((j["roofline_fraction"].as_f64().unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn the_csv_op_table_has_the_text_columns_and_quotes_node_lists() {
        let mut r = report();
        r.locations[0].loc = "/h.0/mlp/MatMul_1+/h.0/mlp/Add_2+/h.0/Add,\"odd\"".into();
        let csv = r.render_ops_csv().unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next().unwrap(),
            "op,cycles,scalar,dma,mxu,vpu,hbm_bytes,flops,flop_per_byte,bottleneck,bound,roofline_fraction,nodes"
        );
        let row = lines.next().unwrap();
        assert!(
            row.starts_with(
                "h.0/mlp: matmul+bias,400,10,100,400,20,4096,200000,48.8281,mxu,compute,0.5000,"
            ),
            "{row}"
        );
        // A node name with a comma and quotes stays one field.
        assert!(
            row.ends_with(r#","/h.0/mlp/MatMul_1+/h.0/mlp/Add_2+/h.0/Add,""odd""""#),
            "{row}"
        );
    }

    #[test]
    fn the_text_op_table_aligns_its_columns_whatever_the_label_length() {
        let mut r = report();
        let mut short = r.locations[0].clone();
        short.loc = "/x/Gather_1".into();
        r.locations.push(short);
        let text = r.render_ops();
        let rows: Vec<&str> = text.lines().take(3).collect();
        let at = |l: &str| l.find(" mxu ").or_else(|| l.find(" bottleneck"));
        let ends: Vec<usize> = rows.iter().map(|l| l.chars().count()).collect();
        assert!(at(rows[1]).is_some());
        assert_eq!(ends[1], ends[2], "rows of equal width: {rows:?}");
    }
}
