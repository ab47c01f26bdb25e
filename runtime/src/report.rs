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

use llmpu_isa::Unit;
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
            let _ = writeln!(
                s,
                "{:<32} {:>12} {:>12} {:>12} {:>12} {:>12} {:>14}  bottleneck",
                "location", "scalar", "dma", "mxu", "vpu", "HBM bytes", "MACs"
            );
            for l in &self.locations {
                let _ = writeln!(
                    s,
                    "{:<32} {:>12} {:>12} {:>12} {:>12} {:>12} {:>14}  {} ({})",
                    l.loc,
                    l.busy_cycles[0],
                    l.busy_cycles[1],
                    l.busy_cycles[2],
                    l.busy_cycles[3],
                    l.hbm_bytes,
                    l.macs,
                    l.bottleneck().name(),
                    l.bound().name()
                );
            }
        }
        s
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
            "locations": self.locations.iter().map(|l| json!({
                "loc": l.loc,
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
