//! Serving simulation: a request trace, an iteration-level continuous-batching scheduler over a
//! paged KV pool, and the figures it reports (`spec/serving.md`, `llmpu serve-sim`).
//!
//! The scheduler keeps a modeled clock in target cycles. Requests arrive by the trace; at each
//! iteration it admits waiting requests first-come-first-served while a batch slot is free and
//! the [`BlockAllocator`] can hold their context (keeping a watermark of free blocks), runs their
//! prefills one by one, then runs one decode step for every running request. A request leaves,
//! and frees its blocks, as soon as it has its `output_len` tokens. When a running request needs
//! a new block and the pool is exhausted, the most recently admitted request is preempted
//! (recompute: its blocks are freed, it goes back to the head of the queue, and its next prefill
//! recomputes prompt + generated tokens) — or, with [`Preemption::Offload`], its blocks are
//! copied to the second KV tier, freed, and prefetched back into new blocks before it runs again.
//! With [`Config::prefix_cache`], full blocks are content-addressed and shared: an admission takes
//! references to the cached blocks of its context's longest cached prefix and prefills only the
//! rest; a write into a block another sequence holds goes to a copy first (copy-on-write). Program
//! runs and block copies are delegated to an [`Engine`] (the emulator in
//! [`crate::serve_engine`], fixed-cost models in tests).
//!
//! Invariants: between runs every running request holds a reference to exactly `⌈cached /
//! block_tokens⌉` blocks (one more is allocated before a step that crosses a block boundary), of
//! which only full ones may be shared; its cache holds `prompt + generated − 1` tokens; a swapped
//! request holds no block and its bytes are in the tier until its prefetch; the clock only moves
//! forward, by each run's cycles (after any swap-out it waits for), to the next arrival or to a
//! prefetch's landing when nothing is running.

use std::collections::VecDeque;

use serde_json::{Value, json};

use crate::alloc::{AllocError, BlockAllocator, blocks_for};

/// A request of the trace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Request {
    pub id: String,
    /// Arrival time in seconds from the start of the trace.
    pub arrival_s: f64,
    /// The whole prompt (a declared system prompt first, then the request's own tokens).
    pub prompt: Vec<i64>,
    /// Tokens to generate (end-of-sequence is ignored).
    pub output_len: usize,
    /// Tokens of `prompt` that are a shared system prompt of the trace (0: none).
    pub shared_prefix: usize,
}

/// Why a trace could not be read.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TraceError {
    #[error("{0}")]
    Json(String),
    #[error("the trace must be an object with a `requests` array{0}")]
    Shape(String),
    #[error("requests[{index}]: {message}")]
    Request { index: usize, message: String },
}

/// Deterministic synthetic prompt ids (the trace gives only lengths): a SplitMix64 stream per
/// request seeded from `seed` and the request index, ids in `0..vocab`.
pub fn synthetic_prompt(seed: u64, index: usize, len: usize, vocab: u64) -> Vec<i64> {
    let mut r = Rng::new(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..len)
        .map(|_| (r.next_u64() % vocab.max(1)) as i64)
        .collect()
}

/// SplitMix64: a small, well-known deterministic generator (for synthetic ids and traces).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    /// Exponential with the given rate.
    pub fn exponential(&mut self, rate: f64) -> f64 {
        -self.uniform().ln() / rate
    }
}

/// Seed offset of the synthetic ids of system prompts (a stream apart from the requests').
const SYSTEM_SEED: u64 = 0x5359_5354_454d_0000;

/// Token ids from a JSON array, each in `0..vocab`; errors name the field.
fn token_ids(x: &Value, field: &str, vocab: u64) -> Result<Vec<i64>, String> {
    x.as_array()
        .ok_or_else(|| format!("`{field}` is not an array"))?
        .iter()
        .enumerate()
        .map(|(i, t)| {
            t.as_i64()
                .filter(|&t| t >= 0 && (t as u64) < vocab)
                .ok_or_else(|| format!("{field}[{i}] is not a token id in 0..{vocab}"))
        })
        .collect()
}

/// The trace's `system_prompts`: id → token ids.
fn parse_system_prompts(
    v: Option<&Value>,
    seed: u64,
    vocab: u64,
) -> Result<Vec<(String, Vec<i64>)>, TraceError> {
    let Some(v) = v else { return Ok(vec![]) };
    let arr = v
        .as_array()
        .ok_or_else(|| TraceError::Shape(" (`system_prompts` is not an array)".into()))?;
    let mut out: Vec<(String, Vec<i64>)> = vec![];
    for (i, p) in arr.iter().enumerate() {
        let bad = |m: String| TraceError::Shape(format!(" (system_prompts[{i}]: {m})"));
        let o = p.as_object().ok_or_else(|| bad("not an object".into()))?;
        for k in o.keys() {
            if !matches!(k.as_str(), "id" | "len" | "ids") {
                return Err(bad(format!("unknown field `{k}` (allowed: id, len, ids)")));
            }
        }
        let id = o
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("missing string `id`".into()))?
            .to_string();
        if out.iter().any(|(x, _)| *x == id) {
            return Err(bad(format!("duplicate id `{id}`")));
        }
        let len = match o.get("len") {
            None => None,
            Some(x) => Some(
                x.as_u64()
                    .filter(|&n| n >= 1 && n <= u32::MAX as u64)
                    .ok_or_else(|| bad("`len` is not an integer ≥ 1".into()))?
                    as usize,
            ),
        };
        let ids = match o.get("ids") {
            None => None,
            Some(x) => Some(token_ids(x, "ids", vocab).map_err(bad)?),
        };
        let ids = match (len, ids) {
            (None, None) => return Err(bad("missing `len` (or `ids`)".into())),
            (Some(n), None) => synthetic_prompt(seed ^ SYSTEM_SEED, i, n, vocab),
            (None, Some(ids)) if ids.is_empty() => return Err(bad("empty `ids`".into())),
            (Some(n), Some(ids)) if n != ids.len() => {
                return Err(bad(format!("`len` {n} but {} `ids`", ids.len())));
            }
            (_, Some(ids)) => ids,
        };
        out.push((id, ids));
    }
    Ok(out)
}

/// Parses a request trace (format in `spec/serving.md`). Requests without `prompt_ids` get
/// [`synthetic_prompt`] ids from `seed`; a request naming a `system_prompt` gets its ids first.
pub fn parse_trace(text: &str, seed: u64, vocab: u64) -> Result<Vec<Request>, TraceError> {
    let v: Value = serde_json::from_str(text).map_err(|e| TraceError::Json(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| TraceError::Shape(String::new()))?;
    for k in obj.keys() {
        if !matches!(
            k.as_str(),
            "requests" | "description" | "generator" | "system_prompts"
        ) {
            return Err(TraceError::Shape(format!(
                " (unknown top-level field `{k}`; allowed: requests, description, generator, \
                 system_prompts)"
            )));
        }
    }
    let systems = parse_system_prompts(obj.get("system_prompts"), seed, vocab)?;
    let reqs = obj
        .get("requests")
        .and_then(Value::as_array)
        .ok_or_else(|| TraceError::Shape(String::new()))?;
    if reqs.is_empty() {
        return Err(TraceError::Shape(" (it is empty)".into()));
    }
    let mut out = Vec::with_capacity(reqs.len());
    for (index, r) in reqs.iter().enumerate() {
        let bad = |message: String| TraceError::Request { index, message };
        let o = r.as_object().ok_or_else(|| bad("not an object".into()))?;
        for k in o.keys() {
            if !matches!(
                k.as_str(),
                "id" | "arrival_s"
                    | "arrival_ms"
                    | "prompt_len"
                    | "output_len"
                    | "prompt_ids"
                    | "system_prompt"
            ) {
                return Err(bad(format!(
                    "unknown field `{k}` (allowed: id, arrival_s, arrival_ms, prompt_len, \
                     output_len, prompt_ids, system_prompt)"
                )));
            }
        }
        let arrival_s = match (o.get("arrival_s"), o.get("arrival_ms")) {
            (Some(_), Some(_)) => return Err(bad("both `arrival_s` and `arrival_ms`".into())),
            (None, None) => return Err(bad("missing `arrival_s` (or `arrival_ms`)".into())),
            (Some(x), None) => x
                .as_f64()
                .ok_or_else(|| bad("`arrival_s` is not a number".into()))?,
            (None, Some(x)) => {
                x.as_f64()
                    .ok_or_else(|| bad("`arrival_ms` is not a number".into()))?
                    / 1e3
            }
        };
        if !arrival_s.is_finite() || arrival_s < 0.0 {
            return Err(bad(format!(
                "arrival {arrival_s} s is not a finite time ≥ 0"
            )));
        }
        let uint = |k: &str| -> Result<Option<usize>, TraceError> {
            match o.get(k) {
                None => Ok(None),
                Some(x) => x
                    .as_u64()
                    .filter(|&n| n >= 1 && n <= u32::MAX as u64)
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| bad(format!("`{k}` is not an integer ≥ 1"))),
            }
        };
        let output_len = uint("output_len")?.ok_or_else(|| bad("missing `output_len`".into()))?;
        let prompt_len = uint("prompt_len")?;
        let ids = match o.get("prompt_ids") {
            None => None,
            Some(x) => Some(token_ids(x, "prompt_ids", vocab).map_err(bad)?),
        };
        let prompt = match (prompt_len, ids) {
            (None, None) => return Err(bad("missing `prompt_len` (or `prompt_ids`)".into())),
            (Some(n), None) => synthetic_prompt(seed, index, n, vocab),
            (None, Some(ids)) if ids.is_empty() => return Err(bad("empty `prompt_ids`".into())),
            (None, Some(ids)) => ids,
            (Some(n), Some(ids)) if n != ids.len() => {
                return Err(bad(format!(
                    "`prompt_len` {n} but {} `prompt_ids`",
                    ids.len()
                )));
            }
            (Some(_), Some(ids)) => ids,
        };
        let id = match o.get("id") {
            None => index.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(bad("`id` is not a string or number".into())),
        };
        let system: &[i64] = match o.get("system_prompt") {
            None => &[],
            Some(Value::String(name)) => systems
                .iter()
                .find(|(id, _)| id == name)
                .map(|(_, ids)| ids.as_slice())
                .ok_or_else(|| {
                    bad(format!(
                        "`system_prompt` `{name}` is not declared in `system_prompts` (declared: \
                         {})",
                        systems
                            .iter()
                            .map(|(id, _)| id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?,
            Some(_) => return Err(bad("`system_prompt` is not a string".into())),
        };
        out.push(Request {
            id,
            arrival_s,
            prompt: system.iter().copied().chain(prompt).collect(),
            output_len,
            shared_prefix: system.len(),
        });
    }
    Ok(out)
}

/// The cost of one program run, as the scheduler accounts it.
#[derive(Clone, Debug, Default)]
pub struct RunCost {
    pub cycles: u64,
    pub hbm_read: u64,
    pub hbm_write: u64,
    /// KV-cache bytes of the HBM traffic (modeled: live blocks read by attention + appended rows,
    /// or the prefill's presents).
    pub kv_bytes: u64,
    pub energy_pj: f64,
    /// The run's instruction trace, when tracing.
    pub trace: Option<crate::Trace>,
}

/// One running sequence in a decode step.
#[derive(Clone, Debug)]
pub struct Row<'a> {
    /// The last generated token (the step's input).
    pub token: i64,
    /// Tokens in the cache before the step (the new token's position).
    pub cached: u64,
    /// The sequence's physical blocks, in logical order (enough for `cached + 1` tokens).
    pub blocks: &'a [u32],
}

/// What runs the programs and moves KV blocks.
pub trait Engine {
    /// Prefills `tokens` (the sequence's whole context) into `blocks`, of which the first
    /// `cached` tokens are already there (a prefix-cache hit: only `tokens[cached..]` are
    /// computed); returns the next token.
    fn prefill(
        &mut self,
        tokens: &[i64],
        cached: usize,
        blocks: &[u32],
    ) -> Result<(i64, RunCost), String>;
    /// One decode step of `rows` in a batch of `bucket` slots; returns one token per row.
    fn decode(&mut self, bucket: usize, rows: &[Row]) -> Result<(Vec<i64>, RunCost), String>;
    /// One speculative verification step: row `b` feeds its last token and `proposals[b]` (`k`
    /// tokens) at positions `cached ..= cached + k`; returns each row's `k + 1` greedy ids.
    fn verify(
        &mut self,
        bucket: usize,
        rows: &[Row],
        proposals: &[Vec<i64>],
    ) -> Result<(Vec<Vec<i64>>, RunCost), String> {
        let _ = (bucket, proposals);
        Err(format!(
            "this engine cannot verify speculative tokens ({} rows)",
            rows.len()
        ))
    }
    /// The draft model's prefill of `tokens` into `blocks` of its pool; returns its next token.
    fn draft_prefill(&mut self, tokens: &[i64], blocks: &[u32]) -> Result<(i64, RunCost), String> {
        let _ = blocks;
        Err(format!(
            "this engine has no draft model ({} tokens)",
            tokens.len()
        ))
    }
    /// One draft-model decode step (one token per row) over its pool.
    fn draft_decode(&mut self, bucket: usize, rows: &[Row]) -> Result<(Vec<i64>, RunCost), String> {
        let _ = bucket;
        Err(format!(
            "this engine has no draft model ({} rows)",
            rows.len()
        ))
    }
    /// Copies physical block `src` to `dst` (copy-on-write of a shared block).
    fn copy_block(&mut self, src: u32, dst: u32) -> Result<(), String> {
        Err(format!("this engine cannot copy KV blocks ({src} → {dst})"))
    }
    /// The bytes of physical block `block` (every layer's K and V), for a swap-out.
    fn read_block(&mut self, block: u32) -> Result<Vec<u8>, String> {
        Err(format!("this engine cannot read KV block {block}"))
    }
    /// Writes bytes [`Engine::read_block`] returned into physical block `block` (a swap-in).
    fn write_block(&mut self, block: u32, bytes: &[u8]) -> Result<(), String> {
        Err(format!(
            "this engine cannot write KV block {block} ({} bytes)",
            bytes.len()
        ))
    }
}

/// What to do with a running request's KV when the pool is exhausted.
#[derive(Clone, Debug, PartialEq)]
pub enum Preemption {
    /// Free its blocks; its next prefill recomputes prompt + generated tokens (vLLM's default).
    Recompute,
    /// Copy its blocks to the second KV tier, free them, and copy them back before it runs
    /// again (vLLM's swap); recompute when the tier is full.
    Offload(Offload),
}

/// The second KV tier (a target's `[kv_offload]`), in scheduler units.
#[derive(Clone, Debug, PartialEq)]
pub struct Offload {
    /// Blocks the tier holds.
    pub host_blocks: usize,
    /// Bytes of one block (every layer's K and V).
    pub block_bytes: u64,
    /// Cycles per transfer before the first byte.
    pub latency_cycles: u64,
    /// Link bandwidth in bytes per cycle, each direction.
    pub bytes_per_cycle: f64,
}

impl Offload {
    /// Cycles to move `blocks` blocks one way in one transfer.
    pub fn cycles(&self, blocks: usize) -> u64 {
        self.latency_cycles
            + ((blocks as u64 * self.block_bytes) as f64 / self.bytes_per_cycle).ceil() as u64
    }
}

/// Scheduler settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Batch buckets (ascending; the last is the maximum batch).
    pub buckets: Vec<usize>,
    pub block_tokens: u64,
    /// Physical blocks in the pool (the null block included).
    pub pool_blocks: u32,
    /// Blocks per sequence in the block table (the maximum context in blocks).
    pub max_blocks: usize,
    /// Maximum context in tokens (for the reserved-memory comparison).
    pub max_context: u64,
    /// Free blocks kept when admitting while others run.
    pub watermark: usize,
    pub clock_hz: f64,
    /// Share full KV blocks of common prompt prefixes (content-addressed, reference-counted).
    pub prefix_cache: bool,
    pub preemption: Preemption,
    /// Speculative decoding: every decode step verifies `k` proposed tokens per row.
    pub speculate: Option<Speculate>,
}

/// Speculative decoding in the scheduler: each running request gets `k` proposals from its
/// draft, and one run of the decode graph compiled for `k + 1` new tokens per row verifies them
/// for the whole batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Speculate {
    pub k: usize,
    pub draft: SpecDraft,
}

/// Where the proposals come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SpecDraft {
    /// The tokens after the latest earlier occurrence of the request's last n-gram (`ngram` down
    /// to 1; host-side, no modeled cost).
    PromptLookup { ngram: usize },
    /// A draft model run by the engine ([`Engine::draft_prefill`], [`Engine::draft_decode`]) on
    /// the same cores, before each verification (time-sliced). Its cache mirrors the target's
    /// block numbers in its own pool; a request (re)admitted or swapped in is prefilled by the
    /// draft over its whole context, and after a verification the draft's cache keeps the tokens
    /// that are still the context (its length is the rollback).
    Model,
}

/// Prompt lookup: the `k` tokens after the latest earlier occurrence of the context's last
/// n-gram, trying `ngram` down to 1; padded with the last proposal (or the last token).
pub fn prompt_lookup(ctx: &[i64], ngram: usize, k: usize) -> Vec<i64> {
    let mut out = vec![];
    'n: for n in (1..=ngram.min(ctx.len().saturating_sub(1))).rev() {
        let tail = &ctx[ctx.len() - n..];
        for start in (0..ctx.len() - n).rev() {
            if &ctx[start..start + n] == tail {
                out = ctx[start + n..].iter().take(k).copied().collect();
                break 'n;
            }
        }
    }
    let pad = out.last().or(ctx.last()).copied().unwrap_or(0);
    out.resize(k, pad);
    out
}

/// What speculation did over a simulation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpecStats {
    /// Row verifications (a running request in a verification step).
    pub row_steps: u64,
    pub proposed: u64,
    pub accepted: u64,
    /// Tokens the verification steps produced (accepted proposals plus the target's own).
    pub emitted: u64,
    /// Draft-model runs (prefills and batched steps).
    pub draft_runs: u64,
}

/// What happened to a request.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub id: String,
    pub prompt_len: usize,
    /// Tokens of the prompt that are a declared shared system prompt.
    pub shared_prefix: usize,
    /// Prompt tokens found in the prefix cache at its first prefill.
    pub cached_prompt: usize,
    pub arrival: u64,
    pub first_token: u64,
    pub finish: u64,
    pub generated: Vec<i64>,
    pub preemptions: u32,
    /// (kind, start, end) in cycles: `queued`, `prefill`, `decode`, `swapped`, `prefetch`.
    pub spans: Vec<(&'static str, u64, u64)>,
}

/// One program run on the modeled timeline.
#[derive(Clone, Debug)]
pub struct RunRecord {
    pub start: u64,
    /// `prefill` or `decode`.
    pub kind: &'static str,
    /// Running requests (decode) or the request (prefill, 1).
    pub batch: usize,
    pub bucket: usize,
    pub cost: RunCost,
}

/// Prefix-cache counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PrefixStats {
    /// Admissions (prefills) that found at least one cached block.
    pub hits: u64,
    /// Cached blocks taken by admissions instead of being allocated and computed.
    pub blocks_reused: u64,
    /// Context tokens not recomputed thanks to the hits.
    pub tokens_reused: u64,
    /// Shared blocks copied before a write into them.
    pub cow_copies: u64,
    /// Cached blocks evicted to make room.
    pub evictions: u64,
    /// Requests declaring a shared system prompt.
    pub system_requests: u64,
    /// Blocks their system prompts need without sharing (`Σ ⌈system tokens / block_tokens⌉`).
    pub system_blocks: u64,
    /// Of those, blocks found in the cache at the request's first prefill.
    pub system_blocks_saved: u64,
}

/// Second-tier (offload) counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OffloadStats {
    pub swap_outs: u64,
    pub swap_ins: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Cycles runs waited for a swap-out to free HBM blocks.
    pub stall_cycles: u64,
    /// Cycles with nothing to run while a prefetch was in flight.
    pub idle_prefetch_cycles: u64,
    /// Preemptions that recomputed because the tier was full.
    pub recomputed_tier_full: u64,
    pub peak_host_blocks: usize,
}

/// The whole simulation.
#[derive(Clone, Debug)]
pub struct Simulation {
    pub config: Config,
    pub requests: Vec<Outcome>,
    pub runs: Vec<RunRecord>,
    pub preemptions: u32,
    pub peak_blocks: usize,
    /// Σ tokens held · cycles, Σ allocated tokens · cycles, Σ reserved tokens · cycles.
    pub held_cycles: f64,
    pub allocated_cycles: f64,
    pub reserved_cycles: f64,
    pub end: u64,
    pub prefix: PrefixStats,
    pub offload: OffloadStats,
    pub spec: SpecStats,
}

/// Why a simulation stopped.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ServeError {
    #[error("request `{id}`: {message}")]
    Request { id: String, message: String },
    #[error("KV allocator: {0}")]
    Alloc(#[from] AllocError),
    #[error("{0}")]
    Engine(String),
    #[error("bad configuration: {0}")]
    Config(String),
}

#[derive(Default)]
struct State {
    prompt: Vec<i64>,
    generated: Vec<i64>,
    blocks: Vec<u32>,
    cached: u64,
    since: u64,
    /// Content hashes of the cache's full blocks (prefix cache on).
    hashes: Vec<u64>,
    /// The blocks' bytes while swapped out to the second tier.
    host: Option<Vec<Vec<u8>>>,
    /// When a prefetch in flight lands.
    ready_at: u64,
    /// Order of first admission (1, 2, …; 0 before).
    admitted: u64,
    /// The tokens in the draft model's cache (empty: it needs a draft prefill).
    draft_fed: Vec<i64>,
}

impl State {
    /// Token `i` of the sequence (prompt, then generated).
    fn token(&self, i: usize) -> i64 {
        if i < self.prompt.len() {
            self.prompt[i]
        } else {
            self.generated[i - self.prompt.len()]
        }
    }
}

/// Latest modeled time of a simulation, in cycles (arrivals and run ends past it are errors).
pub const MAX_CYCLES: u64 = 1 << 62;

/// Runs the trace to completion. `progress(done, total)` is called after every run.
pub fn simulate(
    config: &Config,
    requests: &[Request],
    engine: &mut dyn Engine,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Simulation, ServeError> {
    let max_batch = *config
        .buckets
        .last()
        .ok_or_else(|| ServeError::Config("no batch buckets".into()))?;
    if config.buckets.windows(2).any(|w| w[0] >= w[1]) || config.buckets[0] == 0 {
        return Err(ServeError::Config(format!(
            "batch buckets {:?} must be ascending and ≥ 1",
            config.buckets
        )));
    }
    if let Preemption::Offload(o) = &config.preemption
        && !(o.bytes_per_cycle.is_finite() && o.bytes_per_cycle > 0.0)
    {
        return Err(ServeError::Config(format!(
            "offload link of {} bytes per cycle",
            o.bytes_per_cycle
        )));
    }
    let mut alloc = BlockAllocator::new(config.pool_blocks)?;
    let bt = config.block_tokens;
    // Arrivals in cycles, checked against the simulation's range: a time past it is an error,
    // never a saturated or wrapped count.
    let cycles = |r: &Request| -> Result<u64, ServeError> {
        let c = (r.arrival_s * config.clock_hz).round();
        if c.is_finite() && c >= 0.0 && c <= MAX_CYCLES as f64 {
            Ok(c as u64)
        } else {
            Err(ServeError::Request {
                id: r.id.clone(),
                message: format!(
                    "arrival {:e} s is {c:.3e} cycles at {} GHz, past the simulation's range of 2^62 cycles",
                    r.arrival_s,
                    config.clock_hz / 1e9
                ),
            })
        }
    };
    let ahead = config.speculate.as_ref().map_or(0, |sp| sp.k as u64);
    for r in requests {
        // A verification step writes `k` rows past the cached length.
        let longest = (r.prompt.len() + r.output_len - 1) as u64 + ahead;
        let need = blocks_for(longest, bt);
        if longest > config.max_context || need > config.max_blocks || need > alloc.usable() {
            return Err(ServeError::Request {
                id: r.id.clone(),
                message: format!(
                    "{} prompt + {} output tokens (the last one is never cached){} need a cache \
                     of {longest} tokens ({need} blocks); the maximum context is {} tokens and \
                     the pool has {} usable blocks",
                    r.prompt.len(),
                    r.output_len,
                    if ahead > 0 {
                        format!(" + {ahead} verified past the cache by --speculate")
                    } else {
                        String::new()
                    },
                    config.max_context,
                    alloc.usable()
                ),
            });
        }
    }
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by(|&a, &b| requests[a].arrival_s.total_cmp(&requests[b].arrival_s));
    let mut out: Vec<Outcome> = requests
        .iter()
        .map(|r| {
            Ok(Outcome {
                id: r.id.clone(),
                prompt_len: r.prompt.len(),
                shared_prefix: r.shared_prefix,
                arrival: cycles(r)?,
                ..Outcome::default()
            })
        })
        .collect::<Result<_, ServeError>>()?;
    let advance =
        |now: u64, by: u64| {
            now.checked_add(by).filter(|&t| t <= MAX_CYCLES).ok_or_else(|| {
            ServeError::Engine(format!(
                "the simulated time passes the simulation's range of 2^62 cycles ({now} + {by})"
            ))
        })
        };
    let mut st: Vec<State> = requests
        .iter()
        .map(|r| State {
            prompt: r.prompt.clone(),
            ..State::default()
        })
        .collect();
    let mut sim = Simulation {
        config: config.clone(),
        requests: vec![],
        runs: vec![],
        preemptions: 0,
        peak_blocks: 0,
        held_cycles: 0.0,
        allocated_cycles: 0.0,
        reserved_cycles: 0.0,
        end: 0,
        prefix: PrefixStats::default(),
        offload: OffloadStats::default(),
        spec: SpecStats::default(),
    };
    let total = requests.len();
    let mut done = 0usize;
    let mut now = 0u64;
    let mut next = 0usize;
    let mut waiting: VecDeque<usize> = VecDeque::new();
    let mut running: Vec<usize> = vec![];
    // Swapped-in requests whose prefetch is in flight (they hold batch slots and blocks).
    let mut prefetching: Vec<usize> = vec![];
    // The offload link, one queue per direction: when each is next free.
    let (mut link_out, mut link_in) = (0u64, 0u64);
    // HBM blocks a swap-out frees are reusable when its transfer ends.
    let mut swapped_until = 0u64;
    let mut host_blocks = 0usize;
    let mut admissions = 0u64;
    // Memory accounting over a run of `dt` cycles, from the state after it.
    let account = |sim: &mut Simulation, st: &[State], running: &[usize], dt: u64| {
        let held: u64 = running.iter().map(|&r| st[r].cached).sum();
        let blocks: usize = running.iter().map(|&r| st[r].blocks.len()).sum();
        sim.held_cycles += held as f64 * dt as f64;
        sim.allocated_cycles += (blocks as u64 * bt) as f64 * dt as f64;
        sim.reserved_cycles += (running.len() as u64 * config.max_context) as f64 * dt as f64;
    };
    loop {
        while next < order.len() && out[order[next]].arrival <= now {
            let r = order[next];
            st[r].since = out[r].arrival;
            waiting.push_back(r);
            next += 1;
        }
        // Prefetches that have landed join the batch at their first admission's place (a
        // swapped request keeps its priority; a recomputed one restarts as the newest).
        let mut landed = vec![];
        prefetching.retain(|&r| {
            let ready = st[r].ready_at <= now;
            if ready {
                landed.push(r);
            }
            !ready
        });
        for r in landed {
            let at = running
                .iter()
                .position(|&x| st[x].admitted > st[r].admitted)
                .unwrap_or(running.len());
            running.insert(at, r);
        }
        if running.is_empty() && waiting.is_empty() && prefetching.is_empty() {
            if next == order.len() {
                break;
            }
            now = out[order[next]].arrival;
            continue;
        }
        // Admission (FCFS): swap-ins start their prefetch; the others are prefilled.
        while let Some(&r) = waiting.front() {
            if running.len() + prefetching.len() >= max_batch {
                break;
            }
            let busy = !running.is_empty() || !prefetching.is_empty();
            if let Some(host) = &st[r].host {
                let need = host.len();
                let free = alloc.free_count();
                if need > free || (busy && free - need < config.watermark) {
                    break;
                }
                let Preemption::Offload(o) = &config.preemption else {
                    return Err(ServeError::Config("swapped out without a tier".into()));
                };
                waiting.pop_front();
                let host = st[r].host.take().unwrap_or_default();
                let blocks = alloc.allocate_n(need)?;
                for (&b, bytes) in blocks.iter().zip(&host) {
                    engine
                        .write_block(b, bytes)
                        .map_err(|e| ServeError::Request {
                            id: out[r].id.clone(),
                            message: format!("swap-in: {e}"),
                        })?;
                }
                host_blocks -= need;
                let start = now.max(link_in);
                let end = advance(start, o.cycles(need))?;
                link_in = end;
                sim.offload.swap_ins += 1;
                sim.offload.bytes_in += need as u64 * o.block_bytes;
                out[r].spans.push(("swapped", st[r].since, now));
                out[r].spans.push(("prefetch", now, end));
                st[r].blocks = blocks;
                st[r].draft_fed.clear();
                st[r].ready_at = end;
                st[r].since = end;
                prefetching.push(r);
                continue;
            }
            let ctx = (st[r].prompt.len() + st[r].generated.len()) as u64;
            let need = blocks_for(ctx, bt);
            let tokens: Vec<i64> = (0..ctx as usize).map(|i| st[r].token(i)).collect();
            let hashes = if config.prefix_cache {
                crate::alloc::prefix_hashes(&tokens, bt as usize)
            } else {
                vec![]
            };
            let hits: Vec<u32> = hashes.iter().map_while(|&h| alloc.lookup(h)).collect();
            let mut cached = hits.len() as u64 * bt;
            // The whole context is cached: its last token is recomputed for its logits, which
            // writes into the last block — a copy first if another sequence holds it.
            let whole = cached == ctx && ctx > 0;
            let cow = whole && hits.last().is_some_and(|&b| alloc.refcount(b) > 0);
            if whole {
                cached = ctx - 1;
            }
            let revive = hits.iter().filter(|&&b| alloc.refcount(b) == 0).count();
            let take = need - hits.len() + revive + cow as usize;
            let free = alloc.free_count();
            if take > free || (busy && free - take < config.watermark) {
                break;
            }
            waiting.pop_front();
            for &b in &hits {
                alloc.share(b)?;
            }
            let mut blocks = hits.clone();
            blocks.extend(alloc.allocate_n(need - hits.len())?);
            if cow {
                let last = blocks.len() - 1;
                let copy = alloc.allocate()?;
                engine
                    .copy_block(blocks[last], copy)
                    .map_err(|e| ServeError::Request {
                        id: out[r].id.clone(),
                        message: format!("copy-on-write: {e}"),
                    })?;
                alloc.free(blocks[last])?;
                blocks[last] = copy;
                sim.prefix.cow_copies += 1;
            }
            if !hits.is_empty() {
                sim.prefix.hits += 1;
                sim.prefix.blocks_reused += hits.len() as u64;
                sim.prefix.tokens_reused += cached;
            }
            if st[r].generated.is_empty() && out[r].preemptions == 0 {
                out[r].cached_prompt = cached as usize;
                let sys = requests[r].shared_prefix as u64;
                if sys > 0 {
                    sim.prefix.system_requests += 1;
                    sim.prefix.system_blocks += sys.div_ceil(bt);
                    sim.prefix.system_blocks_saved += (hits.len() as u64).min(sys / bt);
                }
            }
            if st[r].admitted == 0 {
                admissions += 1;
                st[r].admitted = admissions;
            }
            out[r].spans.push(("queued", st[r].since, now));
            let (tok, cost) = engine
                .prefill(&tokens, cached as usize, &blocks)
                .map_err(|e| ServeError::Request {
                    id: out[r].id.clone(),
                    message: format!("prefill: {e}"),
                })?;
            for (&b, &h) in blocks.iter().zip(&hashes) {
                alloc.register(b, h)?;
            }
            let start = now.max(swapped_until);
            sim.offload.stall_cycles += start - now;
            now = advance(start, cost.cycles)?;
            out[r].spans.push(("prefill", start, now));
            st[r].blocks = blocks;
            st[r].hashes = hashes;
            st[r].cached = ctx;
            st[r].draft_fed.clear();
            st[r].generated.push(tok);
            st[r].since = now;
            if st[r].generated.len() == 1 {
                out[r].first_token = now;
            }
            running.push(r);
            account(&mut sim, &st, &running, cost.cycles);
            sim.runs.push(RunRecord {
                start,
                kind: "prefill",
                batch: 1,
                bucket: 1,
                cost,
            });
            if st[r].generated.len() >= requests[r].output_len {
                running.pop();
                finish(&mut alloc, &mut st[r], &mut out[r], now)?;
                done += 1;
            }
            progress(done, total);
        }
        if running.is_empty() {
            // Nothing to run until a prefetch lands (or the next arrival).
            if let Some(t) = prefetching.iter().map(|&r| st[r].ready_at).min() {
                let t = match order.get(next) {
                    Some(&n) => t.min(out[n].arrival.max(now)),
                    None => t,
                };
                sim.offload.idle_prefetch_cycles += t.saturating_sub(now);
                now = now.max(t);
            }
            continue;
        }
        // Grow every running sequence to hold its new token, preempting the newest on exhaustion.
        let mut i = 0;
        while i < running.len() {
            let r = running[i];
            if st[r].blocks.len() >= blocks_for(st[r].cached + 1 + ahead, bt) {
                i += 1;
                continue;
            }
            match alloc.allocate() {
                Ok(b) => st[r].blocks.push(b),
                Err(AllocError::Exhausted { .. }) => {
                    let v = running.pop().unwrap_or(r);
                    let blocks = std::mem::take(&mut st[v].blocks);
                    let tier = match &config.preemption {
                        Preemption::Offload(o) if host_blocks + blocks.len() <= o.host_blocks => {
                            Some(o)
                        }
                        Preemption::Offload(_) => {
                            sim.offload.recomputed_tier_full += 1;
                            None
                        }
                        Preemption::Recompute => None,
                    };
                    if let Some(o) = tier {
                        let mut host = Vec::with_capacity(blocks.len());
                        for &b in &blocks {
                            host.push(engine.read_block(b).map_err(|e| ServeError::Request {
                                id: out[v].id.clone(),
                                message: format!("swap-out: {e}"),
                            })?);
                        }
                        host_blocks += blocks.len();
                        sim.offload.peak_host_blocks =
                            sim.offload.peak_host_blocks.max(host_blocks);
                        let start = now.max(link_out);
                        let end = advance(start, o.cycles(blocks.len()))?;
                        link_out = end;
                        swapped_until = swapped_until.max(end);
                        sim.offload.swap_outs += 1;
                        sim.offload.bytes_out += blocks.len() as u64 * o.block_bytes;
                        st[v].host = Some(host);
                    } else {
                        st[v].cached = 0;
                        st[v].hashes.clear();
                    }
                    alloc.free_all(&blocks)?;
                    out[v].spans.push(("decode", st[v].since, now));
                    out[v].preemptions += 1;
                    st[v].since = now;
                    sim.preemptions += 1;
                    waiting.push_front(v);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if running.is_empty() {
            continue;
        }
        let bucket = *config
            .buckets
            .iter()
            .find(|&&b| b >= running.len())
            .unwrap_or(&max_batch);
        // Speculation: every row's proposals (a draft model runs here, before verification).
        let proposals: Option<Vec<Vec<i64>>> = match &config.speculate {
            None => None,
            Some(sp) => {
                let ctxs: Vec<Vec<i64>> = running
                    .iter()
                    .map(|&r| {
                        st[r]
                            .prompt
                            .iter()
                            .chain(&st[r].generated)
                            .copied()
                            .collect()
                    })
                    .collect();
                let proposals: Vec<Vec<i64>> = match &sp.draft {
                    SpecDraft::PromptLookup { ngram } => ctxs
                        .iter()
                        .map(|ctx| prompt_lookup(ctx, *ngram, sp.k))
                        .collect(),
                    SpecDraft::Model => {
                        let mut props: Vec<Vec<i64>> = vec![vec![]; running.len()];
                        let mut runs = vec![];
                        for (i, &r) in running.iter().enumerate() {
                            if st[r].draft_fed.is_empty() {
                                let (tok, cost) = engine
                                    .draft_prefill(&ctxs[i], &st[r].blocks)
                                    .map_err(|e| ServeError::Request {
                                        id: out[r].id.clone(),
                                        message: format!("draft prefill: {e}"),
                                    })?;
                                st[r].draft_fed = ctxs[i].clone();
                                props[i].push(tok);
                                runs.push(("draft prefill", 1, cost));
                            }
                        }
                        // Batched draft steps until every row has `k` proposals; a row done
                        // early feeds a dummy token at its next slot (past its draft length,
                        // overwritten when that position is fed for real).
                        while props.iter().any(|p| p.len() < sp.k) {
                            let seqs: Vec<Vec<i64>> = ctxs
                                .iter()
                                .zip(&props)
                                .map(|(c, p)| c.iter().chain(p).copied().collect())
                                .collect();
                            let rows_d: Vec<Row> = running
                                .iter()
                                .enumerate()
                                .map(|(i, &r)| {
                                    let fed = st[r].draft_fed.len();
                                    Row {
                                        token: if props[i].len() < sp.k {
                                            seqs[i][fed]
                                        } else {
                                            0
                                        },
                                        cached: fed as u64,
                                        blocks: &st[r].blocks,
                                    }
                                })
                                .collect();
                            let (toks, cost) = engine
                                .draft_decode(bucket, &rows_d)
                                .map_err(ServeError::Engine)?;
                            runs.push(("draft", running.len(), cost));
                            for (i, &r) in running.iter().enumerate() {
                                if props[i].len() >= sp.k {
                                    continue;
                                }
                                let fed = st[r].draft_fed.len();
                                st[r].draft_fed.push(seqs[i][fed]);
                                if fed + 1 == seqs[i].len() {
                                    props[i].push(toks[i]);
                                }
                            }
                        }
                        for (kind, batch, cost) in runs {
                            let start = now;
                            now = advance(now, cost.cycles)?;
                            account(&mut sim, &st, &running, cost.cycles);
                            sim.spec.draft_runs += 1;
                            sim.runs.push(RunRecord {
                                start,
                                kind,
                                batch,
                                bucket,
                                cost,
                            });
                        }
                        props
                    }
                };
                Some(proposals)
            }
        };
        let rows: Vec<Row> = running
            .iter()
            .map(|&r| Row {
                token: *st[r].generated.last().unwrap_or(&0),
                cached: st[r].cached,
                blocks: &st[r].blocks,
            })
            .collect();
        // Each row's new tokens: one, or with speculation the accepted proposals and the
        // target's own token.
        let (news, cost): (Vec<Vec<i64>>, RunCost) = match &config.speculate {
            None => {
                let (toks, cost) = engine.decode(bucket, &rows).map_err(ServeError::Engine)?;
                (toks.into_iter().map(|t| vec![t]).collect(), cost)
            }
            Some(sp) => {
                let proposals = proposals.unwrap_or_default();
                let (greedy, cost) = engine
                    .verify(bucket, &rows, &proposals)
                    .map_err(ServeError::Engine)?;
                if greedy.iter().any(|g| g.len() != sp.k + 1) {
                    return Err(ServeError::Engine(format!(
                        "verification returned other than {} ids per row",
                        sp.k + 1
                    )));
                }
                let mut news = vec![];
                for ((&r, p), g) in running.iter().zip(&proposals).zip(&greedy) {
                    let a = (0..sp.k).take_while(|&i| p[i] == g[i]).count();
                    let mut new: Vec<i64> = p[..a].to_vec();
                    new.push(g[a]);
                    new.truncate(requests[r].output_len - st[r].generated.len());
                    sim.spec.row_steps += 1;
                    sim.spec.proposed += sp.k as u64;
                    sim.spec.accepted += a as u64;
                    sim.spec.emitted += new.len() as u64;
                    news.push(new);
                }
                (news, cost)
            }
        };
        if news.len() != running.len() {
            return Err(ServeError::Engine(format!(
                "decode returned tokens for {} of {} rows",
                news.len(),
                running.len()
            )));
        }
        let start = now.max(swapped_until);
        sim.offload.stall_cycles += start - now;
        now = advance(start, cost.cycles)?;
        for (&r, new) in running.iter().zip(news) {
            st[r].cached += new.len() as u64;
            st[r].generated.extend(new);
            // The draft keeps the cached tokens that are still the context.
            if !st[r].draft_fed.is_empty() {
                let plen = st[r].prompt.len();
                let keep = (0..st[r].draft_fed.len())
                    .take_while(|&i| {
                        i < plen + st[r].generated.len() && st[r].draft_fed[i] == st[r].token(i)
                    })
                    .count();
                st[r].draft_fed.truncate(keep.max(1));
            }
            // Blocks just filled: their content (the whole prefix up to them) is now known.
            let c = st[r].cached as usize;
            while config.prefix_cache && (st[r].hashes.len() + 1) * bt as usize <= c {
                let j = st[r].hashes.len();
                let parent = st[r].hashes.last().copied().unwrap_or(0);
                let toks: Vec<i64> = (j * bt as usize..(j + 1) * bt as usize)
                    .map(|i| st[r].token(i))
                    .collect();
                let h = crate::alloc::block_hash(parent, &toks);
                alloc.register(st[r].blocks[j], h)?;
                st[r].hashes.push(h);
            }
        }
        account(&mut sim, &st, &running, cost.cycles);
        sim.runs.push(RunRecord {
            start,
            kind: "decode",
            batch: running.len(),
            bucket,
            cost,
        });
        let mut keep = vec![];
        for &r in &running {
            if st[r].generated.len() >= requests[r].output_len {
                finish(&mut alloc, &mut st[r], &mut out[r], now)?;
                done += 1;
            } else {
                keep.push(r);
            }
        }
        running = keep;
        sim.peak_blocks = sim.peak_blocks.max(alloc.peak_used());
        progress(done, total);
    }
    sim.peak_blocks = sim.peak_blocks.max(alloc.peak_used());
    sim.prefix.evictions = alloc.evictions();
    for (o, s) in out.iter_mut().zip(st) {
        o.generated = s.generated;
    }
    sim.requests = out;
    sim.end = now;
    Ok(sim)
}

fn finish(
    alloc: &mut BlockAllocator,
    s: &mut State,
    o: &mut Outcome,
    now: u64,
) -> Result<(), ServeError> {
    alloc.free_all(&std::mem::take(&mut s.blocks))?;
    if s.since < now {
        o.spans.push(("decode", s.since, now));
    }
    o.finish = now;
    Ok(())
}

/// `p`-th percentile (0–100) of `v` by linear interpolation between closest ranks.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let x = p / 100.0 * (s.len() - 1) as f64;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (x - lo as f64)
}

fn stats(v: &[f64]) -> Value {
    let mean = if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    };
    json!({
        "mean": mean,
        "p50": percentile(v, 50.0),
        "p90": percentile(v, 90.0),
        "p99": percentile(v, 99.0),
    })
}

impl Simulation {
    /// Seconds of `cycles` at the target clock.
    pub fn secs(&self, cycles: u64) -> f64 {
        cycles as f64 / self.config.clock_hz
    }

    /// Time to first token of every request (seconds).
    pub fn ttft(&self) -> Vec<f64> {
        self.requests
            .iter()
            .map(|o| self.secs(o.first_token.saturating_sub(o.arrival)))
            .collect()
    }

    /// Time per output token after the first, of every request with more than one (seconds).
    pub fn tpot(&self) -> Vec<f64> {
        self.requests
            .iter()
            .filter(|o| o.generated.len() > 1)
            .map(|o| {
                self.secs(o.finish.saturating_sub(o.first_token)) / (o.generated.len() - 1) as f64
            })
            .collect()
    }

    /// KV utilization with paging: tokens held / tokens the allocated blocks hold, weighted by
    /// run time.
    pub fn utilization_paged(&self) -> f64 {
        self.held_cycles / self.allocated_cycles.max(1.0)
    }

    /// The same schedule's utilization had every running request reserved `max_context`
    /// contiguous tokens.
    pub fn utilization_reserved(&self) -> f64 {
        self.held_cycles / self.reserved_cycles.max(1.0)
    }

    /// The speculation figures of the summary.
    fn spec_summary(&self) -> Value {
        let sp = &self.spec;
        match &self.config.speculate {
            None => json!({"enabled": false}),
            Some(c) => json!({
                "enabled": true,
                "k": c.k,
                "draft": match &c.draft {
                    SpecDraft::PromptLookup { ngram } => format!("prompt lookup (n-gram ≤ {ngram})"),
                    SpecDraft::Model => "draft model".to_string(),
                },
                "draft_runs": sp.draft_runs,
                "row_steps": sp.row_steps,
                "proposed": sp.proposed,
                "accepted": sp.accepted,
                "acceptance_rate": sp.accepted as f64 / sp.proposed.max(1) as f64,
                "tokens_per_row_step": sp.emitted as f64 / sp.row_steps.max(1) as f64,
            }),
        }
    }

    /// The summary as JSON (what `llmpu serve-sim --json` prints).
    pub fn summary(&self, weight_bytes: u64, timing_only: bool) -> Value {
        let tokens: usize = self.requests.iter().map(|o| o.generated.len()).sum();
        let t = self.secs(self.end).max(1e-30);
        let sum = |f: &dyn Fn(&RunCost) -> f64| self.runs.iter().map(|r| f(&r.cost)).sum::<f64>();
        let hbm = sum(&|c| (c.hbm_read + c.hbm_write) as f64);
        let kv = sum(&|c| c.kv_bytes as f64);
        let energy = sum(&|c| c.energy_pj);
        let busy = sum(&|c| c.cycles as f64);
        let decode: Vec<&RunRecord> = self.runs.iter().filter(|r| r.kind == "decode").collect();
        let max_batch = self.config.buckets.last().copied().unwrap_or(1);
        let mut hist = vec![0u64; max_batch + 1];
        for r in &decode {
            hist[r.batch.min(max_batch)] += 1;
        }
        let mut buckets = serde_json::Map::new();
        for &b in &self.config.buckets {
            let n = decode.iter().filter(|r| r.bucket == b).count();
            buckets.insert(b.to_string(), json!(n));
        }
        let usable = self.config.pool_blocks.saturating_sub(1) as usize;
        let (p, f) = (&self.prefix, &self.offload);
        let per_request: Vec<Value> = self
            .requests
            .iter()
            .map(|o| {
                json!({
                    "id": o.id,
                    "prompt_len": o.prompt_len,
                    "output_len": o.generated.len(),
                    "arrival_s": self.secs(o.arrival),
                    "first_token_s": self.secs(o.first_token),
                    "finish_s": self.secs(o.finish),
                    "preemptions": o.preemptions,
                    "cached_prompt_tokens": o.cached_prompt,
                    "generated_ids": o.generated,
                })
            })
            .collect::<Vec<_>>();
        let prefix = json!({
            "enabled": self.config.prefix_cache,
            "hits": p.hits,
            "blocks_reused": p.blocks_reused,
            "tokens_not_recomputed": p.tokens_reused,
            "cow_copies": p.cow_copies,
            "evictions": p.evictions,
            "system_prompt_requests": p.system_requests,
            "system_prompt_blocks_without_sharing": p.system_blocks,
            "system_prompt_blocks_saved": p.system_blocks_saved,
            "system_prompt_saved_fraction":
                p.system_blocks_saved as f64 / p.system_blocks.max(1) as f64,
        });
        let offload = json!({
            "host_blocks": match &self.config.preemption {
                Preemption::Offload(o) => o.host_blocks,
                Preemption::Recompute => 0,
            },
            "swap_outs": f.swap_outs,
            "swap_ins": f.swap_ins,
            "bytes_offloaded": f.bytes_out,
            "bytes_prefetched": f.bytes_in,
            "stall_s": self.secs(f.stall_cycles),
            "idle_prefetch_s": self.secs(f.idle_prefetch_cycles),
            "recomputed_tier_full": f.recomputed_tier_full,
            "peak_host_blocks": f.peak_host_blocks,
        });
        let per_tok = tokens.max(1) as f64;
        json!({
            "timing_only": timing_only,
            "requests": self.requests.len(),
            "output_tokens": tokens,
            "prompt_tokens": self.requests.iter().map(|o| o.prompt_len).sum::<usize>(),
            "total_s": self.secs(self.end),
            "busy_s": busy / self.config.clock_hz,
            "throughput_tokens_per_s": tokens as f64 / t,
            "throughput_requests_per_s": self.requests.len() as f64 / t,
            "ttft_s": stats(&self.ttft()),
            "tpot_s": stats(&self.tpot()),
            "prefill_runs": self.runs.iter().filter(|r| r.kind == "prefill").count(),
            "decode_steps": decode.len(),
            "batch_size_histogram": hist,
            "bucket_steps": buckets,
            "mean_batch": decode.iter().map(|r| r.batch as f64).sum::<f64>()
                / decode.len().max(1) as f64,
            "kv_utilization_paged": self.utilization_paged(),
            "kv_utilization_reserved": self.utilization_reserved(),
            "kv_block_tokens": self.config.block_tokens,
            "kv_pool_blocks": usable,
            "kv_peak_blocks": self.peak_blocks,
            "kv_peak_occupancy": self.peak_blocks as f64 / usable.max(1) as f64,
            "max_context": self.config.max_context,
            "reserved_sequences_fitting_pool": usable / self.config.max_blocks.max(1),
            "preemptions": self.preemptions,
            "preemption_mode": match self.config.preemption {
                Preemption::Recompute => "recompute",
                Preemption::Offload(_) => "offload",
            },
            "prefix_cache": prefix,
            "offload": offload,
            "speculation": self.spec_summary(),
            "hbm_bytes_per_token": hbm / per_tok,
            "hbm_kv_bytes_per_token": kv / per_tok,
            "hbm_weight_and_activation_bytes_per_token": (hbm - kv).max(0.0) / per_tok,
            "weights_resident_bytes": weight_bytes,
            "energy_per_token_uj": energy / per_tok * 1e-6,
            "per_request": per_request,
        })
    }

    /// One Perfetto trace: every run's instruction trace at its modeled start (when collected),
    /// a `scheduler` track of the runs and one track per request (queued / prefill / decode).
    pub fn trace(&self) -> crate::Trace {
        let mut t = crate::Trace {
            clock_ghz: self.config.clock_hz / 1e9,
            ..crate::Trace::default()
        };
        for r in &self.runs {
            if let Some(run) = &r.cost.trace {
                t.append(run.clone(), r.start);
            }
            t.span(
                "scheduler",
                &format!("{} ×{}", r.kind, r.batch),
                r.start,
                r.start + r.cost.cycles,
                json!({"batch": r.batch, "bucket": r.bucket, "cycles": r.cost.cycles}),
            );
        }
        for o in &self.requests {
            for &(kind, s, e) in &o.spans {
                t.span(
                    &format!("request {}", o.id),
                    kind,
                    s,
                    e,
                    json!({"prompt_len": o.prompt_len, "output_len": o.generated.len()}),
                );
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Fixed costs: a prefill costs 100 + its tokens, a decode step 50 + 10 per row; the next
    /// token is the row's position (so the ids are checkable).
    struct Fake {
        steps: Vec<usize>,
    }

    impl Engine for Fake {
        fn prefill(
            &mut self,
            tokens: &[i64],
            cached: usize,
            blocks: &[u32],
        ) -> Result<(i64, RunCost), String> {
            assert_eq!(cached, 0, "no prefix cache");
            assert!(blocks.len() * 4 >= tokens.len(), "blocks hold the prompt");
            let cost = RunCost {
                cycles: 100 + tokens.len() as u64,
                ..RunCost::default()
            };
            Ok((tokens.len() as i64, cost))
        }
        fn decode(&mut self, bucket: usize, rows: &[Row]) -> Result<(Vec<i64>, RunCost), String> {
            assert!(rows.len() <= bucket);
            for r in rows {
                assert!(
                    r.blocks.len() * 4 > r.cached as usize,
                    "room for the new token"
                );
            }
            self.steps.push(rows.len());
            let cost = RunCost {
                cycles: 50 + 10 * rows.len() as u64,
                ..RunCost::default()
            };
            Ok((rows.iter().map(|r| r.cached as i64 + 1).collect(), cost))
        }
    }

    fn config(pool: u32) -> Config {
        Config {
            buckets: vec![1, 2, 4],
            block_tokens: 4,
            pool_blocks: pool,
            max_blocks: 8,
            max_context: 32,
            watermark: 0,
            clock_hz: 1e6,
            prefix_cache: false,
            preemption: Preemption::Recompute,
            speculate: None,
        }
    }

    fn reqs(n: usize) -> Vec<Request> {
        (0..n)
            .map(|i| Request {
                id: i.to_string(),
                arrival_s: i as f64 * 1e-4,
                prompt: vec![1; 3 + i % 5],
                output_len: 2 + (i * 7) % 11,
                shared_prefix: 0,
            })
            .collect()
    }

    #[test]
    fn every_request_gets_its_output_len_tokens_in_position_order() {
        let mut e = Fake { steps: vec![] };
        let rs = reqs(12);
        let sim = simulate(&config(64), &rs, &mut e, &mut |_, _| {}).expect("sim");
        for (o, r) in sim.requests.iter().zip(&rs) {
            assert_eq!(o.generated.len(), r.output_len, "request {}", r.id);
            // The fake's token is the position it was generated at.
            let want: Vec<i64> = (0..r.output_len)
                .map(|k| (r.prompt.len() + k) as i64)
                .collect();
            assert_eq!(o.generated, want);
            assert!(o.arrival <= o.first_token && o.first_token <= o.finish);
        }
        assert!(e.steps.iter().any(|&b| b > 1), "requests were batched");
        assert_eq!(sim.preemptions, 0);
        let u = sim.utilization_paged();
        assert!(u > 0.5 && u <= 1.0, "{u}");
        assert!(sim.utilization_reserved() < u);
    }

    #[test]
    fn small_pool_preempts_and_still_completes_every_request() {
        let mut e = Fake { steps: vec![] };
        let rs = reqs(12);
        // 8 usable blocks of 4 tokens: the longest request alone needs 5.
        let sim = simulate(&config(9), &rs, &mut e, &mut |_, _| {}).expect("sim");
        assert!(sim.preemptions > 0, "the pool is too small for the batch");
        assert!(sim.peak_blocks <= 8);
        for (o, r) in sim.requests.iter().zip(&rs) {
            let want: Vec<i64> = (0..r.output_len)
                .map(|k| (r.prompt.len() + k) as i64)
                .collect();
            assert_eq!(o.generated, want, "recompute continues where it stopped");
        }
    }

    #[test]
    fn utilization_is_held_over_allocated_tokens_weighted_by_run_time() {
        // One request: prompt 4 (one block of 4), 3 tokens. Prefill (104 cycles): 4 held in 4
        // allocated. Step 1 (60 cycles): 5 held in 8. Step 2 (60 cycles): 6 held in 8.
        let mut e = Fake { steps: vec![] };
        let rs = vec![Request {
            id: "a".into(),
            arrival_s: 0.0,
            prompt: vec![1; 4],
            output_len: 3,
            shared_prefix: 0,
        }];
        let sim = simulate(&config(16), &rs, &mut e, &mut |_, _| {}).expect("sim");
        let held = 4.0 * 104.0 + 5.0 * 60.0 + 6.0 * 60.0;
        let alloc = 4.0 * 104.0 + 8.0 * 60.0 + 8.0 * 60.0;
        assert!((sim.utilization_paged() - held / alloc).abs() < 1e-12);
        let reserved = 32.0 * (104.0 + 60.0 + 60.0);
        assert!((sim.utilization_reserved() - held / reserved).abs() < 1e-12);
        assert_eq!(sim.peak_blocks, 2);
        assert_eq!(sim.end, 224);
        let o = &sim.requests[0];
        assert_eq!((o.first_token, o.finish), (104, 224));
        assert_eq!(sim.tpot(), [60e-6]);
    }

    #[test]
    fn watermark_holds_back_admission_while_others_run() {
        // 8 usable blocks, watermark 6: the second request (2 blocks) waits for the first.
        let mut e = Fake { steps: vec![] };
        let rs: Vec<Request> = (0..2)
            .map(|i| Request {
                id: i.to_string(),
                arrival_s: 0.0,
                prompt: vec![1; 5],
                output_len: 3,
                shared_prefix: 0,
            })
            .collect();
        let mut c = config(9);
        c.watermark = 6;
        let sim = simulate(&c, &rs, &mut e, &mut |_, _| {}).expect("sim");
        assert!(
            e.steps.iter().all(|&b| b == 1),
            "never batched: {:?}",
            e.steps
        );
        assert!(sim.requests[1].first_token >= sim.requests[0].finish);
        c.watermark = 0;
        let mut e = Fake { steps: vec![] };
        simulate(&c, &rs, &mut e, &mut |_, _| {}).expect("sim");
        assert!(e.steps.contains(&2), "batched without the watermark");
    }

    #[test]
    fn request_larger_than_the_pool_is_a_located_error() {
        let mut e = Fake { steps: vec![] };
        let mut rs = reqs(2);
        rs[1].output_len = 40;
        let err = simulate(&config(64), &rs, &mut e, &mut |_, _| {}).expect_err("too long");
        assert!(err.to_string().starts_with("request `1`:"), "{err}");
    }

    #[test]
    fn trace_parsing_names_the_request_and_field() {
        let ok = r#"{"requests": [{"arrival_ms": 2, "prompt_len": 3, "output_len": 4},
            {"id": "x", "arrival_s": 0.5, "prompt_ids": [1, 2], "output_len": 1}]}"#;
        let r = parse_trace(ok, 7, 256).expect("parse");
        assert_eq!(r[0].arrival_s, 0.002);
        assert_eq!(r[0].prompt.len(), 3);
        assert_eq!(r[0].prompt, synthetic_prompt(7, 0, 3, 256));
        assert_eq!(
            (r[1].id.as_str(), r[1].prompt.as_slice()),
            ("x", &[1i64, 2][..])
        );
        for (text, want) in [
            (
                r#"{"requests": [{"arrival_s": 0, "output_len": 4}]}"#,
                "requests[0]: missing `prompt_len`",
            ),
            (
                r#"{"requests": [{"arrival_s": 0, "prompt_len": 1, "output_len": 1}, {"arrival_s": -1, "prompt_len": 1, "output_len": 1}]}"#,
                "requests[1]: arrival -1",
            ),
            (
                r#"{"requests": [{"arrival_s": 0, "prompt_len": 0, "output_len": 1}]}"#,
                "requests[0]: `prompt_len` is not an integer",
            ),
            (
                r#"{"requests": [{"arrival_s": 0, "prompt_len": 2, "output_len": 1, "prompt_ids": [1]}]}"#,
                "`prompt_len` 2 but 1",
            ),
            (
                r#"{"requests": [{"arrival_s": 0, "prompt_len": 2, "output_len": 1, "extra": 1}]}"#,
                "unknown field `extra`",
            ),
            (
                r#"{"requests": [{"arrival_s": 0, "prompt_ids": [999], "output_len": 1}]}"#,
                "prompt_ids[0] is not a token id",
            ),
            (r#"[1]"#, "must be an object"),
        ] {
            let e = parse_trace(text, 0, 256).expect_err(text).to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }

    /// A fake whose "KV" is the token ids themselves: prefills check the cached prefix is in
    /// the blocks and write the rest; decode steps read the whole context back from the blocks
    /// (an unwritten slot is an error), so the next token — a hash of the context — is right only
    /// if blocks were shared, copied, swapped out and back correctly.
    struct KvFake {
        bt: usize,
        pool: HashMap<u32, Vec<Option<i64>>>,
        prefills: Vec<(usize, usize)>,
    }

    impl KvFake {
        fn new() -> KvFake {
            KvFake {
                bt: 4,
                pool: HashMap::new(),
                prefills: vec![],
            }
        }
        fn next(ctx: &[i64]) -> i64 {
            ctx.iter()
                .enumerate()
                .fold(7i64, |h, (i, &t)| (h * 31 + t * (i as i64 + 1)) % 9973)
        }
        fn slot(&mut self, blocks: &[u32], i: usize) -> &mut Option<i64> {
            let bt = self.bt;
            &mut self
                .pool
                .entry(blocks[i / bt])
                .or_insert_with(|| vec![None; bt])[i % bt]
        }
        fn read(&mut self, blocks: &[u32], n: usize) -> Result<Vec<i64>, String> {
            (0..n)
                .map(|i| {
                    self.slot(blocks, i)
                        .ok_or(format!("position {i} not in its block"))
                })
                .collect()
        }
    }

    impl Engine for KvFake {
        fn prefill(
            &mut self,
            tokens: &[i64],
            cached: usize,
            blocks: &[u32],
        ) -> Result<(i64, RunCost), String> {
            if self.read(blocks, cached)? != tokens[..cached] {
                return Err("cached blocks hold other tokens".into());
            }
            for (i, &t) in tokens.iter().enumerate().skip(cached) {
                *self.slot(blocks, i) = Some(t);
            }
            self.prefills.push((tokens.len(), cached));
            let cost = RunCost {
                cycles: 100 + (tokens.len() - cached) as u64,
                ..RunCost::default()
            };
            Ok((Self::next(tokens), cost))
        }
        fn decode(&mut self, _: usize, rows: &[Row]) -> Result<(Vec<i64>, RunCost), String> {
            let mut out = vec![];
            for r in rows {
                let mut ctx = self.read(r.blocks, r.cached as usize)?;
                *self.slot(r.blocks, r.cached as usize) = Some(r.token);
                ctx.push(r.token);
                out.push(Self::next(&ctx));
            }
            let cost = RunCost {
                cycles: 50 + 10 * rows.len() as u64,
                ..RunCost::default()
            };
            Ok((out, cost))
        }
        fn copy_block(&mut self, src: u32, dst: u32) -> Result<(), String> {
            let b = self
                .pool
                .get(&src)
                .cloned()
                .ok_or("copy of an unwritten block")?;
            self.pool.insert(dst, b);
            Ok(())
        }
        fn read_block(&mut self, block: u32) -> Result<Vec<u8>, String> {
            let b = self
                .pool
                .remove(&block)
                .unwrap_or_else(|| vec![None; self.bt]);
            Ok(b.iter()
                .flat_map(|t| t.unwrap_or(i64::MIN).to_le_bytes())
                .collect())
        }
        fn write_block(&mut self, block: u32, bytes: &[u8]) -> Result<(), String> {
            let b = bytes
                .chunks_exact(8)
                .map(|c| {
                    let t = i64::from_le_bytes(c.try_into().expect("8 bytes"));
                    (t != i64::MIN).then_some(t)
                })
                .collect();
            self.pool.insert(block, b);
            Ok(())
        }
    }

    fn ids(sim: &Simulation) -> Vec<Vec<i64>> {
        sim.requests.iter().map(|o| o.generated.clone()).collect()
    }

    #[test]
    fn a_shared_system_prompt_is_prefilled_once_and_reused_block_for_block() {
        // 5 requests, one after another: an 8-token system prompt (2 blocks of 4) + 3 own tokens.
        let rs: Vec<Request> = (0..5)
            .map(|i| Request {
                id: i.to_string(),
                arrival_s: i as f64 * 1e-2,
                prompt: (1..=8).chain(100 + 3 * i..103 + 3 * i).collect(),
                output_len: 4,
                shared_prefix: 8,
            })
            .collect();
        let mut c = config(64);
        c.prefix_cache = true;
        let mut e = KvFake::new();
        let sim = simulate(&c, &rs, &mut e, &mut |_, _| {}).expect("sim");
        let p = &sim.prefix;
        assert_eq!((p.hits, p.blocks_reused, p.tokens_reused), (4, 8, 32));
        assert_eq!(
            (p.system_requests, p.system_blocks, p.system_blocks_saved),
            (5, 10, 8)
        );
        assert_eq!((p.cow_copies, p.evictions), (0, 0));
        // The first prefill computes 11 tokens, the others only their 3 own ones.
        assert_eq!(e.prefills, [(11, 0), (11, 8), (11, 8), (11, 8), (11, 8)]);
        let ttft: Vec<u64> = sim
            .requests
            .iter()
            .map(|o| o.first_token - o.arrival)
            .collect();
        assert_eq!(ttft, [111, 103, 103, 103, 103]);
        assert_eq!(sim.requests[1].cached_prompt, 8);
        c.prefix_cache = false;
        let mut e = KvFake::new();
        let off = simulate(&c, &rs, &mut e, &mut |_, _| {}).expect("sim");
        assert_eq!(
            off.prefix,
            PrefixStats {
                system_requests: 5,
                system_blocks: 10,
                ..PrefixStats::default()
            }
        );
        assert!(e.prefills.iter().all(|&(_, cached)| cached == 0));
        assert_eq!(ids(&sim), ids(&off), "sharing does not change a token");
        assert!(ids(&sim).iter().all(|g| g.len() == 4));
    }

    #[test]
    fn a_fully_cached_prompt_recomputes_its_last_token_into_a_copy_of_a_shared_block() {
        // a and b: the same 8-token prompt (2 full blocks) at once; c: the same later.
        let req = |id: &str, t: f64| Request {
            id: id.into(),
            arrival_s: t,
            prompt: (10..18).collect(),
            output_len: 3,
            shared_prefix: 0,
        };
        let rs = vec![req("a", 0.0), req("b", 0.0), req("c", 1e-2)];
        let mut c = config(64);
        c.prefix_cache = true;
        let mut e = KvFake::new();
        let sim = simulate(&c, &rs, &mut e, &mut |_, _| {}).expect("sim");
        // b holds a's blocks: its write of the last token goes to a copy (1 COW); c comes when
        // they are only cached (no other holder): it writes in place.
        assert_eq!(sim.prefix.cow_copies, 1);
        assert_eq!((sim.prefix.hits, sim.prefix.blocks_reused), (2, 4));
        assert_eq!(sim.prefix.tokens_reused, 14);
        assert_eq!(e.prefills, [(8, 0), (8, 7), (8, 7)]);
        c.prefix_cache = false;
        let off = simulate(&c, &rs, &mut KvFake::new(), &mut |_, _| {}).expect("sim");
        assert_eq!(ids(&sim), ids(&off));
        assert_eq!(ids(&sim)[0], ids(&sim)[1]);
    }

    fn distinct(n: usize) -> Vec<Request> {
        (0..n)
            .map(|i| Request {
                id: i.to_string(),
                arrival_s: i as f64 * 1e-5,
                prompt: (0..3 + i % 5).map(|k| (i * 10 + k) as i64).collect(),
                output_len: 2 + (i * 7) % 11,
                shared_prefix: 0,
            })
            .collect()
    }

    fn offload(host_blocks: usize) -> Preemption {
        Preemption::Offload(Offload {
            host_blocks,
            block_bytes: 32,
            latency_cycles: 10,
            bytes_per_cycle: 8.0,
        })
    }

    #[test]
    fn offload_moves_the_kv_out_and_back_and_generates_the_unpressured_ids() {
        let rs = distinct(12);
        let free = simulate(&config(64), &rs, &mut KvFake::new(), &mut |_, _| {}).expect("sim");
        assert_eq!(free.preemptions, 0);
        let mut c = config(9);
        c.preemption = offload(64);
        let sim = simulate(&c, &rs, &mut KvFake::new(), &mut |_, _| {}).expect("sim");
        let o = &sim.offload;
        assert!(sim.preemptions > 0);
        assert_eq!(o.swap_outs, sim.preemptions as u64);
        assert_eq!((o.swap_ins, o.recomputed_tier_full), (o.swap_outs, 0));
        assert_eq!(o.bytes_out, o.bytes_in);
        assert_eq!(o.bytes_out % 32, 0);
        assert_eq!(ids(&sim), ids(&free), "swapped KV came back intact");
        assert_eq!(
            sim.runs.iter().filter(|r| r.kind == "prefill").count(),
            12,
            "no recompute prefill"
        );
        // A full tier (room for no block) holds no victim: every preemption recomputes.
        c.preemption = offload(0);
        let sim = simulate(&c, &rs, &mut KvFake::new(), &mut |_, _| {}).expect("sim");
        assert_eq!(sim.offload.swap_outs, 0);
        assert_eq!(sim.offload.recomputed_tier_full, sim.preemptions as u64);
        assert_eq!(ids(&sim), ids(&free));
        // Recompute, for comparison: the same ids, and a prefill per preemption.
        let rec = simulate(&config(9), &rs, &mut KvFake::new(), &mut |_, _| {}).expect("sim");
        assert_eq!(ids(&rec), ids(&free));
        assert_eq!(
            rec.runs.iter().filter(|r| r.kind == "prefill").count(),
            12 + rec.preemptions as usize
        );
    }

    #[test]
    fn offload_transfer_time_is_latency_plus_bytes_over_bandwidth() {
        let o = Offload {
            host_blocks: 4,
            block_bytes: 100,
            latency_cycles: 10,
            bytes_per_cycle: 8.0,
        };
        assert_eq!(o.cycles(3), 10 + 38);
        assert_eq!(o.cycles(0), 10);
    }

    #[test]
    fn system_prompts_are_prepended_and_unknown_references_are_located_errors() {
        let ok = r#"{"system_prompts": [{"id": "sys", "len": 5}, {"id": "s2", "ids": [7, 8]}],
            "requests": [{"arrival_s": 0, "system_prompt": "sys", "prompt_ids": [1, 2], "output_len": 1},
            {"arrival_s": 0, "system_prompt": "s2", "prompt_len": 3, "output_len": 1},
            {"arrival_s": 0, "prompt_len": 3, "output_len": 1}]}"#;
        let r = parse_trace(ok, 3, 256).expect("parse");
        assert_eq!(r[0].prompt.len(), 7);
        assert_eq!(
            r[0].prompt[..5],
            synthetic_prompt(3 ^ SYSTEM_SEED, 0, 5, 256)[..]
        );
        assert_eq!(r[0].prompt[5..], [1, 2]);
        assert_eq!(r[0].shared_prefix, 5);
        assert_eq!(r[1].prompt[..2], [7, 8]);
        assert_eq!(r[1].prompt[2..], synthetic_prompt(3, 1, 3, 256)[..]);
        assert_eq!((r[1].shared_prefix, r[2].shared_prefix), (2, 0));
        for (text, want) in [
            (
                r#"{"system_prompts": [{"id": "a", "len": 2}], "requests": [{"arrival_s": 0, "prompt_len": 1, "output_len": 1}, {"arrival_s": 0, "system_prompt": "b", "prompt_len": 1, "output_len": 1}]}"#,
                "requests[1]: `system_prompt` `b` is not declared in `system_prompts` (declared: a)",
            ),
            (
                r#"{"requests": [{"arrival_s": 0, "system_prompt": 3, "prompt_len": 1, "output_len": 1}]}"#,
                "requests[0]: `system_prompt` is not a string",
            ),
            (
                r#"{"system_prompts": [{"id": "a", "len": 2, "text": "x"}], "requests": []}"#,
                "system_prompts[0]: unknown field `text`",
            ),
            (
                r#"{"system_prompts": [{"id": "a"}], "requests": []}"#,
                "system_prompts[0]: missing `len` (or `ids`)",
            ),
            (
                r#"{"system_prompts": [{"id": "a", "len": 1}, {"id": "a", "len": 1}], "requests": []}"#,
                "system_prompts[1]: duplicate id `a`",
            ),
            (
                r#"{"system_prompts": [{"id": "a", "ids": [300]}], "requests": []}"#,
                "system_prompts[0]: ids[0] is not a token id in 0..256",
            ),
            (
                r#"{"system_prompts": [{"id": "a", "len": 3, "ids": [1]}], "requests": []}"#,
                "system_prompts[0]: `len` 3 but 1 `ids`",
            ),
            (
                r#"{"system_prompts": 1, "requests": []}"#,
                "`system_prompts` is not an array",
            ),
        ] {
            let e = parse_trace(text, 0, 256).expect_err(text).to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }

    /// The next token is a function of the last two tokens of the context, which every run reads
    /// back from the pool (an unwritten slot is an error), so contexts repeat and prompt lookup
    /// finds them; the draft model has a pool of its own and, unless `exact`, disagrees with the
    /// target at every third position.
    struct SpecFake {
        target: KvFake,
        draft: KvFake,
        exact: bool,
    }

    impl SpecFake {
        fn new(exact: bool) -> SpecFake {
            SpecFake {
                target: KvFake::new(),
                draft: KvFake::new(),
                exact,
            }
        }
        fn rule(ctx: &[i64]) -> i64 {
            let n = ctx.len();
            (ctx[n - 1] * 5 + if n > 1 { ctx[n - 2] } else { 0 } + 1) % 7
        }
        fn draft_rule(exact: bool, ctx: &[i64]) -> i64 {
            let t = Self::rule(ctx);
            if exact || !ctx.len().is_multiple_of(3) {
                t
            } else {
                (t + 1) % 7
            }
        }
        /// Feeds `feed` at `cached ..` of `pool`; the next token after each.
        fn run(
            pool: &mut KvFake,
            r: &Row,
            feed: &[i64],
            rule: &dyn Fn(&[i64]) -> i64,
        ) -> Result<Vec<i64>, String> {
            let mut ctx = pool.read(r.blocks, r.cached as usize)?;
            let mut out = vec![];
            for (i, &t) in feed.iter().enumerate() {
                *pool.slot(r.blocks, r.cached as usize + i) = Some(t);
                ctx.push(t);
                out.push(rule(&ctx));
            }
            Ok(out)
        }
    }

    impl Engine for SpecFake {
        fn prefill(
            &mut self,
            tokens: &[i64],
            cached: usize,
            blocks: &[u32],
        ) -> Result<(i64, RunCost), String> {
            if self.target.read(blocks, cached)? != tokens[..cached] {
                return Err("cached blocks hold other tokens".into());
            }
            for (i, &t) in tokens.iter().enumerate().skip(cached) {
                *self.target.slot(blocks, i) = Some(t);
            }
            let cost = RunCost {
                cycles: 100,
                ..RunCost::default()
            };
            Ok((Self::rule(tokens), cost))
        }
        fn decode(&mut self, _: usize, rows: &[Row]) -> Result<(Vec<i64>, RunCost), String> {
            let mut out = vec![];
            for r in rows {
                out.push(Self::run(&mut self.target, r, &[r.token], &Self::rule)?[0]);
            }
            let cost = RunCost {
                cycles: 50,
                ..RunCost::default()
            };
            Ok((out, cost))
        }
        fn verify(
            &mut self,
            _: usize,
            rows: &[Row],
            proposals: &[Vec<i64>],
        ) -> Result<(Vec<Vec<i64>>, RunCost), String> {
            let mut out = vec![];
            for (r, p) in rows.iter().zip(proposals) {
                let feed: Vec<i64> = std::iter::once(r.token).chain(p.iter().copied()).collect();
                out.push(Self::run(&mut self.target, r, &feed, &Self::rule)?);
            }
            let cost = RunCost {
                cycles: 60,
                ..RunCost::default()
            };
            Ok((out, cost))
        }
        fn draft_prefill(
            &mut self,
            tokens: &[i64],
            blocks: &[u32],
        ) -> Result<(i64, RunCost), String> {
            for (i, &t) in tokens.iter().enumerate() {
                *self.draft.slot(blocks, i) = Some(t);
            }
            let cost = RunCost {
                cycles: 20,
                ..RunCost::default()
            };
            Ok((Self::draft_rule(self.exact, tokens), cost))
        }
        fn draft_decode(&mut self, _: usize, rows: &[Row]) -> Result<(Vec<i64>, RunCost), String> {
            let exact = self.exact;
            let rule = |c: &[i64]| Self::draft_rule(exact, c);
            let mut out = vec![];
            for r in rows {
                out.push(Self::run(&mut self.draft, r, &[r.token], &rule)?[0]);
            }
            let cost = RunCost {
                cycles: 10,
                ..RunCost::default()
            };
            Ok((out, cost))
        }
    }

    fn spec_reqs() -> Vec<Request> {
        (0..6)
            .map(|i| Request {
                id: i.to_string(),
                arrival_s: i as f64 * 1e-4,
                prompt: vec![1 + i as i64 % 3, 2, 3],
                output_len: 6 + i * 3,
                shared_prefix: 0,
            })
            .collect()
    }

    #[test]
    fn speculative_ids_are_the_plain_ids_with_every_draft() {
        let rs = spec_reqs();
        let plain =
            simulate(&config(64), &rs, &mut SpecFake::new(true), &mut |_, _| {}).expect("plain");
        let spec = |draft: SpecDraft, exact: bool, pool: u32| {
            let mut c = config(pool);
            c.speculate = Some(Speculate { k: 3, draft });
            simulate(&c, &rs, &mut SpecFake::new(exact), &mut |_, _| {}).expect("speculative")
        };
        // The target as its own draft: every proposal accepted (k + 1 tokens per row step, but
        // for the last steps cut at the request's output length).
        let s = spec(SpecDraft::Model, true, 64);
        assert_eq!(ids(&s), ids(&plain));
        assert_eq!(s.spec.accepted, s.spec.proposed);
        assert_eq!(s.spec.proposed, 3 * s.spec.row_steps);
        // A draft that is wrong at every third position: fewer accepted, the same ids.
        let s = spec(SpecDraft::Model, false, 64);
        assert_eq!(ids(&s), ids(&plain));
        assert!(
            0 < s.spec.accepted && s.spec.accepted < s.spec.proposed,
            "{:?}",
            s.spec
        );
        // Prompt lookup: the rule's contexts repeat, so lookups are accepted.
        let s = spec(SpecDraft::PromptLookup { ngram: 2 }, true, 64);
        assert_eq!(ids(&s), ids(&plain));
        assert!(s.spec.accepted > 0, "{:?}", s.spec);
        assert_eq!(s.spec.draft_runs, 0);
        // A pool too small for the batch: preempted requests recompute, and the draft model is
        // prefilled again on readmission.
        let s = spec(SpecDraft::Model, false, 10);
        assert!(s.preemptions > 0);
        assert_eq!(ids(&s), ids(&plain));
    }

    #[test]
    fn speculation_counts_are_exact_for_a_self_draft() {
        // One request: prompt [1, 2, 3], 9 tokens. The prefill gives token 1; each row step with
        // k = 3 and every proposal accepted adds 4: steps of 4 + 4 = 8 more tokens.
        let rs = vec![Request {
            id: "a".into(),
            arrival_s: 0.0,
            prompt: vec![1, 2, 3],
            output_len: 9,
            shared_prefix: 0,
        }];
        let mut c = config(64);
        c.speculate = Some(Speculate {
            k: 3,
            draft: SpecDraft::Model,
        });
        let s = simulate(&c, &rs, &mut SpecFake::new(true), &mut |_, _| {}).expect("sim");
        assert_eq!(s.spec.row_steps, 2);
        assert_eq!(
            (s.spec.proposed, s.spec.accepted, s.spec.emitted),
            (6, 6, 8)
        );
        // Round one: a draft prefill (its token is the first proposal) and two draft steps.
        // Round two: the draft catches up on the last proposal (never fed) and the target's
        // token, which yields the first proposal, then two more steps.
        let kinds: Vec<&str> = s.runs.iter().map(|r| r.kind).collect();
        assert_eq!(
            kinds,
            [
                "prefill",
                "draft prefill",
                "draft",
                "draft",
                "decode",
                "draft",
                "draft",
                "draft",
                "draft",
                "decode"
            ]
        );
        // A request whose output and k would pass the maximum context is refused up front.
        let mut long = rs.clone();
        long[0].output_len = 28;
        let e =
            simulate(&c, &long, &mut SpecFake::new(true), &mut |_, _| {}).expect_err("too long");
        assert!(
            e.to_string()
                .contains("+ 3 verified past the cache by --speculate need a cache of 33"),
            "{e}"
        );
    }

    #[test]
    fn prompt_lookup_proposes_what_followed_the_latest_match_of_the_longest_ngram() {
        // The last 2-gram (7, 8) occurred at 1..3 (followed by 9, 4) and at 5..7 (followed by
        // 1): the latest wins, and the proposal runs on into the context.
        assert_eq!(
            prompt_lookup(&[3, 7, 8, 9, 4, 7, 8, 1, 7, 8], 2, 3),
            [1, 7, 8]
        );
        // No earlier 3-gram or 2-gram: the 1-gram 5 is found; the proposal is padded.
        assert_eq!(prompt_lookup(&[5, 6, 2, 5], 3, 4), [6, 2, 5, 5]);
        // Nothing found: the last token repeated.
        assert_eq!(prompt_lookup(&[1, 2, 3], 2, 2), [3, 3]);
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [4.0, 1.0, 3.0, 2.0, 5.0];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert_eq!(percentile(&v, 90.0), 4.6);
        assert_eq!(percentile(&v, 100.0), 5.0);
    }
}
