//! Execution traces in the Chrome / Perfetto trace-event JSON format.
//!
//! One process per core (`pid` = core) and one thread per unit (`tid` = `Unit::index()`, named
//! scalar/dma/mxu/vpu). Each executed instruction is a complete (`"ph": "X"`) event named by its
//! mnemonic, from its start to the cycle its unit is free again (so events of one track never
//! overlap); `args` carry `pc`, `loc` (debug location, or null) and `done`, the completion cycle
//! (when results become visible). Times are microseconds at the target clock.
//!
//! At op granularity ([`Trace::to_ops`], what `llmpu serve-sim --trace` writes unless
//! `--trace-instructions`), the consecutive instructions of one op on one unit track are one
//! event named by the op's short label ([`crate::report::op_label`]) with `args` `loc`,
//! `instructions` and `busy` (cycles the unit was busy within the span), so the trace grows with
//! ops × runs, not instructions. [`Trace::write_chrome_json`] streams the JSON event by event, so
//! writing needs no memory beyond the events themselves.
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
    /// Instructions this event stands for: 1 for an instruction, more for an op span.
    pub instructions: u32,
    /// Cycles its unit was busy within `start..free` (`free - start` for one instruction).
    pub busy: u64,
}

impl TraceEvent {
    /// One executed instruction.
    pub fn instruction(
        core: u32,
        unit: Unit,
        pc: u32,
        mnemonic: &'static str,
        loc: Option<u32>,
        (start, free, completion): (u64, u64, u64),
    ) -> TraceEvent {
        TraceEvent {
            core,
            unit,
            pc,
            mnemonic,
            loc,
            start,
            free,
            completion,
            instructions: 1,
            busy: free.saturating_sub(start),
        }
    }
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
    /// Whether `events` are op spans ([`Trace::to_ops`]) rather than instructions.
    pub ops: bool,
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
        if self.events.is_empty() {
            self.ops = run.ops;
        } else if run.ops && !self.ops {
            *self = std::mem::take(self).to_ops();
        }
        let run = if self.ops && !run.ops {
            run.to_ops()
        } else {
            run
        };
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

    /// The trace at op granularity: on each unit track, a run of consecutive events of the same
    /// location becomes one event from the first start to the last `free` (its `instructions`
    /// and `busy` summed), named by the op's label when written. Host spans are kept.
    pub fn to_ops(self) -> Trace {
        if self.ops {
            return self;
        }
        let mut events: Vec<TraceEvent> = Vec::new();
        // The index in `events` of each (core, unit) track's open span.
        let mut open: std::collections::HashMap<(u32, usize), usize> = Default::default();
        for e in self.events {
            let key = (e.core, e.unit.index());
            if let Some(&i) = open.get(&key) {
                let o = &mut events[i];
                if o.loc == e.loc {
                    o.free = o.free.max(e.free);
                    o.completion = o.completion.max(e.completion);
                    o.instructions = o.instructions.saturating_add(e.instructions);
                    o.busy += e.busy;
                    continue;
                }
            }
            open.insert(key, events.len());
            events.push(e);
        }
        Trace {
            events,
            ops: true,
            ..self
        }
    }

    /// The trace as Chrome trace-event JSON (load in Perfetto or `chrome://tracing`).
    pub fn to_chrome_json(&self) -> String {
        let mut out = Vec::new();
        self.write_chrome_json(&mut out)
            .expect("writing to memory cannot fail");
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// Writes [`Trace::to_chrome_json`]'s text to `w` one event at a time (buffer `w`).
    pub fn write_chrome_json(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut first = true;
        let mut put = |w: &mut dyn std::io::Write, v: Value| -> std::io::Result<()> {
            w.write_all(if first { b"\n" } else { b",\n" })?;
            first = false;
            serde_json::to_writer(&mut *w, &v).map_err(std::io::Error::other)
        };
        w.write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[")?;
        for c in 0..self.cores {
            put(
                w,
                json!({"name": "process_name", "ph": "M", "pid": c, "tid": 0,
                "args": {"name": format!("core {c}")}}),
            )?;
            for u in Unit::ALL {
                put(
                    w,
                    json!({"name": "thread_name", "ph": "M", "pid": c, "tid": u.index(),
                    "args": {"name": u.name()}}),
                )?;
            }
        }
        let labels: Vec<String> = if self.ops {
            self.locs
                .iter()
                .map(|l| crate::report::op_label(l))
                .collect()
        } else {
            vec![]
        };
        for e in &self.events {
            let loc = e.loc.and_then(|i| self.locs.get(i as usize));
            let (name, args) = if self.ops {
                let name = e
                    .loc
                    .and_then(|i| labels.get(i as usize))
                    .map_or("(no location)", String::as_str);
                let args = json!({"loc": loc, "instructions": e.instructions, "busy": e.busy,
                                  "done": e.completion});
                (name, args)
            } else {
                (
                    e.mnemonic,
                    json!({"pc": e.pc, "loc": loc, "done": e.completion}),
                )
            };
            let v = json!({
                "name": name,
                "cat": e.unit.name(),
                "ph": "X",
                "pid": e.core,
                "tid": e.unit.index(),
                "ts": self.us(e.start),
                "dur": self.us(e.free.saturating_sub(e.start)),
                "args": args,
            });
            put(w, v)?;
        }
        let mut tracks: Vec<&str> = vec![];
        for s in &self.spans {
            if !tracks.contains(&s.track.as_str()) {
                tracks.push(&s.track);
            }
        }
        let host = self.cores;
        if !tracks.is_empty() {
            put(
                w,
                json!({"name": "process_name", "ph": "M", "pid": host, "tid": 0,
                "args": {"name": "host"}}),
            )?;
        }
        for (i, t) in tracks.iter().enumerate() {
            put(
                w,
                json!({"name": "thread_name", "ph": "M", "pid": host, "tid": i,
                "args": {"name": t}}),
            )?;
        }
        for s in &self.spans {
            let tid = tracks.iter().position(|t| *t == s.track).unwrap_or(0);
            put(
                w,
                json!({
                    "name": s.name,
                    "cat": "host",
                    "ph": "X",
                    "pid": host,
                    "tid": tid,
                    "ts": self.us(s.start),
                    "dur": self.us(s.end - s.start),
                    "args": s.args,
                }),
            )?;
        }
        w.write_all(b"\n]}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pc: u32, loc: Option<u32>, start: u64) -> TraceEvent {
        TraceEvent::instruction(
            0,
            Unit::Scalar,
            pc,
            "addi",
            loc,
            (start, start + 1, start + 2),
        )
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
            ops: false,
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

    #[test]
    fn op_granularity_merges_each_tracks_consecutive_instructions_of_one_op() {
        let mut t = Trace::new(1.0, 1);
        t.locs = vec![
            "/h.0/mlp/MatMul_1+/h.0/mlp/Add_2".into(),
            "/ln/LayerNormalization_3".into(),
        ];
        let mut dma = ev(9, Some(0), 1);
        dma.unit = Unit::Dma;
        t.events = vec![
            ev(0, Some(0), 0),
            dma,
            ev(1, Some(0), 4),
            ev(2, Some(1), 6),
            ev(3, Some(0), 8),
        ];
        let ops = t.clone().to_ops();
        let spans: Vec<(Unit, Option<u32>, u64, u64, u32, u64)> = ops
            .events
            .iter()
            .map(|e| (e.unit, e.loc, e.start, e.free, e.instructions, e.busy))
            .collect();
        assert_eq!(
            spans,
            [
                (Unit::Scalar, Some(0), 0, 5, 2, 2),
                (Unit::Dma, Some(0), 1, 2, 1, 1),
                (Unit::Scalar, Some(1), 6, 7, 1, 1),
                (Unit::Scalar, Some(0), 8, 9, 1, 1),
            ]
        );
        let v: Value = serde_json::from_str(&ops.to_chrome_json()).unwrap();
        let x: Vec<&Value> = v["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "X")
            .collect();
        assert_eq!(x[0]["name"], "h.0/mlp: matmul+bias");
        assert_eq!(x[0]["args"]["instructions"], 2);
        assert_eq!(x[0]["args"]["loc"], "/h.0/mlp/MatMul_1+/h.0/mlp/Add_2");
        // Appending an instruction-level run to an op-level trace merges it too.
        let mut all = ops.clone();
        all.append(t, 100);
        assert_eq!(all.events.len(), 8);
        assert!(all.ops);
    }

    #[test]
    fn the_streamed_json_is_one_valid_document() {
        let mut t = Trace::new(1.0, 2);
        t.events = vec![ev(0, None, 0), ev(1, None, 3)];
        t.span("steps", "prefill", 0, 10, Value::Null);
        let mut out = Vec::new();
        t.write_chrome_json(&mut out).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let n = v["traceEvents"].as_array().unwrap().len();
        assert_eq!(
            n,
            2 * 5 + 2 + 2 + 1,
            "metadata, events, host metadata, span"
        );
        assert_eq!(v["displayTimeUnit"], "ns");
    }
}
