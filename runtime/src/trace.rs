//! Execution traces in the Chrome / Perfetto trace-event JSON format.
//!
//! One process per core (`pid` = core) and one thread per unit (`tid` = `Unit::index()`, named
//! scalar/dma/mxu/vpu). Each executed instruction is a complete (`"ph": "X"`) event named by its
//! mnemonic, from its start to the cycle its unit is free again (so events of one track never
//! overlap); `args` carry `pc`, `loc` (debug location, or null) and `done`, the completion cycle
//! (when results become visible). Times are microseconds at the target clock.
//!
//! Commands that run a program many times (`llmpu generate`, `llmpu serve-sim`) put every run on
//! one time axis: [`Trace::append`] shifts a run's events by its modeled start cycle, and
//! [`Trace::span`] adds host-level spans (a prefill, a decode step, a request's lifetime) drawn
//! in one extra process named `host`, one thread per track, after the cores.

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

/// A host-level interval on a named track (cycles of the target clock, `start ≤ end`).
#[derive(Clone, Debug, PartialEq)]
pub struct HostSpan {
    pub track: String,
    pub name: String,
    pub start: u64,
    pub end: u64,
    pub args: Value,
}

/// All events of a run (or of several runs placed on one time axis).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    pub clock_ghz: f64,
    pub cores: u32,
    pub locs: Vec<String>,
    pub events: Vec<TraceEvent>,
    pub spans: Vec<HostSpan>,
}

impl Trace {
    /// An empty trace for a machine of `cores` cores at `clock_ghz`.
    pub fn new(clock_ghz: f64, cores: u32) -> Trace {
        Trace {
            clock_ghz,
            cores,
            ..Trace::default()
        }
    }

    fn us(&self, cycles: u64) -> f64 {
        cycles as f64 / (self.clock_ghz * 1e3)
    }

    /// Appends the events and spans of `run` shifted by `offset` cycles (the run's modeled start
    /// on this trace's time axis); its locations are merged into this trace's table.
    pub fn append(&mut self, run: Trace, offset: u64) {
        self.append_on(run, offset, 0)
    }

    /// [`Trace::append`] for a run on cores `first_core ..` of this trace's machine (a program
    /// compiled for a partition of the chip, as a speculative draft unit's).
    pub fn append_on(&mut self, run: Trace, offset: u64, first_core: u32) {
        if self.clock_ghz == 0.0 {
            self.clock_ghz = run.clock_ghz;
        }
        self.cores = self.cores.max(run.cores + first_core);
        let mut map = Vec::with_capacity(run.locs.len());
        for l in run.locs {
            let i = match self.locs.iter().position(|x| *x == l) {
                Some(i) => i,
                None => {
                    self.locs.push(l);
                    self.locs.len() - 1
                }
            };
            map.push(i as u32);
        }
        self.events.extend(run.events.into_iter().map(|mut e| {
            e.loc = e.loc.and_then(|i| map.get(i as usize).copied());
            e.core += first_core;
            e.start += offset;
            e.free += offset;
            e.completion += offset;
            e
        }));
        self.spans.extend(run.spans.into_iter().map(|mut s| {
            s.start += offset;
            s.end += offset;
            s
        }));
    }

    /// Adds a host-level span `name` on `track` from `start` to `end` cycles (`end` is raised
    /// to `start` if smaller); `args` are shown with it.
    pub fn span(&mut self, track: &str, name: &str, start: u64, end: u64, args: Value) {
        self.spans.push(HostSpan {
            track: track.into(),
            name: name.into(),
            start,
            end: end.max(start),
            args,
        });
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
        let mut tracks: Vec<&str> = vec![];
        for s in &self.spans {
            if !tracks.contains(&s.track.as_str()) {
                tracks.push(&s.track);
            }
        }
        let host = self.cores;
        if !tracks.is_empty() {
            ev.push(
                json!({"name": "process_name", "ph": "M", "pid": host, "tid": 0,
                "args": {"name": "host"}}),
            );
        }
        for (i, t) in tracks.iter().enumerate() {
            ev.push(
                json!({"name": "thread_name", "ph": "M", "pid": host, "tid": i,
                "args": {"name": t}}),
            );
        }
        for s in &self.spans {
            let tid = tracks.iter().position(|t| *t == s.track).unwrap_or(0);
            ev.push(json!({
                "name": s.name,
                "cat": "host",
                "ph": "X",
                "pid": host,
                "tid": tid,
                "ts": self.us(s.start),
                "dur": self.us(s.end - s.start),
                "args": s.args,
            }));
        }
        json!({"traceEvents": ev, "displayTimeUnit": "ns"}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pc: u32, loc: Option<u32>, start: u64) -> TraceEvent {
        TraceEvent {
            core: 0,
            unit: Unit::Scalar,
            pc,
            mnemonic: "addi",
            loc,
            start,
            free: start + 1,
            completion: start + 2,
        }
    }

    #[test]
    fn append_shifts_events_and_merges_locations() {
        let mut all = Trace::new(1.0, 1);
        let run = |locs: &[&str], loc| Trace {
            clock_ghz: 1.0,
            cores: 2,
            locs: locs.iter().map(|s| s.to_string()).collect(),
            events: vec![ev(0, Some(loc), 5)],
            spans: vec![],
        };
        all.append(run(&["a", "b"], 1), 0);
        all.append(run(&["b", "c"], 0), 100);
        assert_eq!(all.cores, 2);
        assert_eq!(all.locs, ["a", "b", "c"]);
        assert_eq!(all.events[1].start, 105);
        assert_eq!(all.events[1].completion, 107);
        assert_eq!(
            all.events[1].loc,
            Some(1),
            "`b` of the second run maps to the first's `b`"
        );
        all.append(run(&["c"], 0), 0);
        assert_eq!(all.locs.len(), 3, "no duplicate location");
        assert_eq!(all.events[2].loc, Some(2));
    }

    #[test]
    fn host_spans_are_one_thread_per_track_after_the_cores() {
        let mut t = Trace::new(2.0, 2);
        t.span("steps", "prefill", 0, 2000, json!({"tokens": 8}));
        t.span("request 3", "decode", 2000, 4000, Value::Null);
        t.span("steps", "decode 1", 2000, 1000, Value::Null);
        let v: Value = serde_json::from_str(&t.to_chrome_json()).unwrap();
        let ev = v["traceEvents"].as_array().unwrap();
        let host: Vec<&Value> = ev.iter().filter(|e| e["pid"] == 2).collect();
        let names: Vec<&str> = host
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .map(|e| e["args"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["steps", "request 3"]);
        let spans: Vec<&&Value> = host.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(spans.len(), 3);
        assert_eq!(spans[0]["dur"], 1.0, "2000 cycles at 2 GHz");
        assert_eq!(spans[1]["tid"], 1);
        assert_eq!(spans[2]["dur"], 0.0, "an end before the start is clamped");
    }
}
