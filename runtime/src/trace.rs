//! Execution traces in the Chrome / Perfetto trace-event JSON format.
//!
//! One process per core (`pid` = core) and one thread per unit (`tid` = `Unit::index()`, named
//! scalar/dma/mxu/vpu). Each executed instruction is a complete (`"ph": "X"`) event named by its
//! mnemonic, from its start to the cycle its unit is free again (so events of one track never
//! overlap); `args` carry `pc`, `loc` (debug location, or null) and `done`, the completion cycle
//! (when results become visible). Times are microseconds at the target clock.

use llmpu_isa::Unit;
use serde_json::{Value, json};

/// One executed instruction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TraceEvent {
    pub core: u32,
    pub unit: Unit,
    pub pc: u32,
    pub mnemonic: &'static str,
    /// Index into [`Trace::locs`], if the instruction has a location.
    pub loc: Option<u32>,
    pub start: u64,
    pub free: u64,
    pub completion: u64,
}

/// All events of a run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    pub clock_ghz: f64,
    pub cores: u32,
    pub locs: Vec<String>,
    pub events: Vec<TraceEvent>,
}

impl Trace {
    fn us(&self, cycles: u64) -> f64 {
        cycles as f64 / (self.clock_ghz * 1e3)
    }

    /// The trace as Chrome trace-event JSON (load in Perfetto or `chrome://tracing`).
    pub fn to_chrome_json(&self) -> String {
        let mut ev: Vec<Value> = Vec::with_capacity(self.events.len() + 5 * self.cores as usize);
        for c in 0..self.cores {
            ev.push(
                json!({"name": "process_name", "ph": "M", "pid": c, "tid": 0,
                "args": {"name": format!("core {c}")}}),
            );
            for u in Unit::ALL {
                ev.push(
                    json!({"name": "thread_name", "ph": "M", "pid": c, "tid": u.index(),
                    "args": {"name": u.name()}}),
                );
            }
        }
        for e in &self.events {
            let loc = e.loc.and_then(|i| self.locs.get(i as usize));
            ev.push(json!({
                "name": e.mnemonic,
                "cat": e.unit.name(),
                "ph": "X",
                "pid": e.core,
                "tid": e.unit.index(),
                "ts": self.us(e.start),
                "dur": self.us(e.free.saturating_sub(e.start)),
                "args": {"pc": e.pc, "loc": loc, "done": e.completion},
            }));
        }
        json!({"traceEvents": ev, "displayTimeUnit": "ns"}).to_string()
    }
}
