//! `llmpu serve-sim`: a serving simulation with continuous batching over a paged KV pool.
//!
//! Requests of a trace (`spec/serving.md`) arrive on a modeled clock; the scheduler of
//! [`llmpu_runtime::serve`] admits them first-come-first-served into batch slots while its block
//! allocator can hold their KV cache, prefills them, and runs one batched decode step for all
//! running requests per iteration; finished requests leave between steps. The prefill model is
//! compiled per context length, the decode model once per batch bucket (1, 2, 4, …, `--max-batch`)
//! for `--max-context` tokens with a shared pool of `--kv-blocks` blocks; both run on the emulator
//! (or timing-only). Prints (or `--json`) throughput, TTFT / TPOT percentiles, the batch sizes, KV
//! utilization with paging and with max-context reservation, preemptions, HBM bytes and energy per
//! token. Prefix caching shares the KV blocks of common prompt prefixes (a hit's suffix is
//! prefilled by the decode graph compiled for its `C` new tokens); `--preemption offload` swaps a
//! preempted request's KV to the target's `[kv_offload]` memory instead of recomputing it;
//! `--compare` also runs the baseline without either. `--synth-trace FILE` writes a synthetic
//! trace instead (`--synth-system-prompt N`: with a shared system prompt).

use std::path::{Path, PathBuf};

use llmpu_isa::Program;
use llmpu_runtime::RunOptions;
use llmpu_runtime::serve::{self, Config, Offload, Preemption, Request, Rng, Simulation};
use llmpu_runtime::serve_engine::EmuEngine;
use serde_json::json;

use crate::cmd_compile::{compile_module, decode_dims, options, set_kv_blocks};
use crate::progress::Progress;

/// Arguments of `llmpu serve-sim`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// Model pair prefix: `PREFIX-prefill/model.onnx` and `PREFIX-decode/model.onnx` (e.g.
    /// `corpus/models/gpt2-tiny-dyn`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Prefill model (`.onnx` with symbolic sequence dims), instead of `--model`.
    #[arg(long)]
    pub prefill: Option<PathBuf>,
    /// Decode model (`.onnx` with symbolic batch and past dims), instead of `--model`.
    #[arg(long)]
    pub decode: Option<PathBuf>,
    /// The request trace (JSON, `spec/serving.md`).
    #[arg(long)]
    pub requests: Option<PathBuf>,
    /// Most requests decoded together (batch slots).
    #[arg(long, default_value_t = 8)]
    pub max_batch: usize,
    /// One decode program of `--max-batch` slots instead of buckets 1, 2, 4, … (idle slots run
    /// as padding).
    #[arg(long)]
    pub no_buckets: bool,
    /// Maximum context (cache tokens per sequence; default: the model's `n_positions` /
    /// `max_position_embeddings` from the `meta.json` beside it).
    #[arg(long)]
    pub max_context: Option<u64>,
    /// Physical KV blocks in the pool, the reserved null block included (default: enough for
    /// `--max-batch` sequences of `--max-context` tokens, plus the null block).
    #[arg(long, conflicts_with = "kv_memory")]
    pub kv_blocks: Option<u64>,
    /// KV pool size in bytes (all layers' K and V); sets `--kv-blocks` to what fits.
    #[arg(long)]
    pub kv_memory: Option<u64>,
    /// Fraction of the pool kept free when admitting a request while others run.
    #[arg(long, default_value_t = 0.01)]
    pub watermark: f64,
    /// Target: a preset (`edge`, `datacenter`) or a `.toml` file.
    #[arg(long, default_value = llmpu_isa::target::DEFAULT_TARGET)]
    pub target: String,
    /// Tokens per KV block (overrides the target's `kv.block_tokens`, as vLLM's `--block-size`).
    #[arg(long)]
    pub block_tokens: Option<u32>,
    /// Numerics: `fp32` or `bf16`.
    #[arg(long, default_value = "bf16")]
    pub precision: String,
    /// Seed of the synthetic prompt ids (requests without `prompt_ids`).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Model the timing only (no functional data: token ids are not computed and read 0). The
    /// KV region header is still moved (control data), so the schedule and every figure but the
    /// token ids equal a functional run's.
    #[arg(long)]
    pub timing_only: bool,
    /// Write one Perfetto trace: every run at its modeled start (one event per op and unit,
    /// named by the op's label), a scheduler track and one track per request. Streamed to the
    /// file; memory grows with ops × runs, not instructions.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// With --trace: one event per instruction instead of per op (large for long traces).
    #[arg(long, requires = "trace")]
    pub trace_instructions: bool,
    /// Print the summary as JSON (with per-request figures and generated ids).
    #[arg(long)]
    pub json: bool,
    /// Write a synthetic trace to this file (Poisson arrivals, ShareGPT-like lengths scaled to
    /// `--max-context`) and exit unless `--requests` is given too.
    #[arg(long)]
    pub synth_trace: Option<PathBuf>,
    /// Requests in the synthetic trace.
    #[arg(long, default_value_t = 64)]
    pub synth_requests: usize,
    /// Mean arrival rate of the synthetic trace (requests per second).
    #[arg(long, default_value_t = 1000.0)]
    pub synth_rate: f64,
    /// Seed of the synthetic trace.
    #[arg(long, default_value_t = 1)]
    pub synth_seed: u64,
    /// Declare a shared system prompt of this many tokens in the synthetic trace; every request
    /// prepends it (`--synth-trace`; the requests' own prompts are then shorter, medians
    /// `(max_context − N) / 4`, to fit).
    #[arg(long)]
    pub synth_system_prompt: Option<u64>,
    /// Turn automatic prefix caching off: no KV block is shared between requests, every prefill
    /// computes its whole context.
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// What a request preempted on an exhausted pool loses: `recompute` (its KV is freed and its
    /// next prefill recomputes it) or `offload` (its blocks are copied to the target's
    /// `[kv_offload]` memory and prefetched back before it runs again).
    #[arg(long, default_value = "recompute", value_parser = ["recompute", "offload"])]
    pub preemption: String,
    /// Also run the baseline — prefix caching off, recompute preemption, no speculation — and
    /// report both (TTFT, TPOT, throughput, preemptions, whether the generated ids are the same).
    #[arg(long)]
    pub compare: bool,
    /// Speculative decoding: every decode step verifies K tokens per running request, proposed by
    /// a draft model (`--draft-prefill`/`--draft-decode`) or by prompt lookup over the request's
    /// own context (`--prompt-lookup`), with the decode graph compiled for K + 1 new tokens per
    /// row (needs functional runs: not with `--timing-only`).
    #[arg(long, value_name = "K")]
    pub speculate: Option<usize>,
    /// With `--speculate`: the longest n-gram prompt lookup matches (down to 1).
    #[arg(long, value_name = "N", requires = "speculate")]
    pub prompt_lookup: Option<usize>,
    /// With `--speculate`: the draft model's prefill (`.onnx` with symbolic sequence dims; the
    /// target's vocabulary).
    #[arg(long, value_name = "MODEL", requires = "speculate")]
    pub draft_prefill: Option<PathBuf>,
    /// With `--speculate`: the draft model's decode graph (compiled per batch bucket over a pool
    /// of `--kv-blocks` blocks, time-sliced with the target on the same cores).
    #[arg(long, value_name = "MODEL", requires = "speculate")]
    pub draft_decode: Option<PathBuf>,
}

fn model_paths(a: &ServeArgs) -> Result<(PathBuf, PathBuf), String> {
    match (&a.model, &a.prefill, &a.decode) {
        (_, Some(p), Some(d)) => Ok((p.clone(), d.clone())),
        (Some(m), None, None) => {
            let s = m.display().to_string();
            let s = s.trim_end_matches('/');
            let s = s
                .strip_suffix("-decode")
                .or_else(|| s.strip_suffix("-prefill"))
                .unwrap_or(s);
            let p = PathBuf::from(format!("{s}-prefill/model.onnx"));
            let d = PathBuf::from(format!("{s}-decode/model.onnx"));
            for f in [&p, &d] {
                if !f.is_file() {
                    return Err(format!(
                        "--model {}: {} not found",
                        m.display(),
                        f.display()
                    ));
                }
            }
            Ok((p, d))
        }
        _ => Err("give --model PREFIX, or both --prefill and --decode".into()),
    }
}

/// The model's maximum positions from the `meta.json` beside it.
fn meta_context(model: &Path) -> Option<u64> {
    let meta = model.parent()?.join("meta.json");
    let v: serde_json::Value =
        serde_json::from_str(&llmpu_isa::limits::read_to_string(&meta).ok()?).ok()?;
    let c = v.get("config")?;
    c.get("n_positions")
        .or_else(|| c.get("max_position_embeddings"))
        .and_then(|x| x.as_u64())
}

/// A synthetic trace: Poisson arrivals at `rate`; log-normal prompt and output lengths shaped
/// like ShareGPT conversations (outputs about twice the prompts, long tails) scaled to a context
/// of `max_context` tokens: medians `max_context`/3 and `max_context`/2, σ 0.5, resampled until
/// prompt + output − 1 fits the context. With `system = Some(n)` the trace declares one shared
/// system prompt `sys` of `n` tokens that every request prepends; the requests' own prompt and
/// output medians are then `(max_context − n)/4` each, resampled until `n` + prompt + output − 1
/// fits.
pub fn synth_trace(
    n: usize,
    rate: f64,
    seed: u64,
    max_context: u64,
    system: Option<u64>,
) -> serde_json::Value {
    let mut r = Rng::new(seed);
    let sys = system.unwrap_or(0);
    let room = max_context - sys;
    let mc = max_context as f64;
    let (pm, om) = match system {
        None => (mc / 3.0, mc / 2.0),
        Some(_) => ((room as f64 / 4.0).max(1.0), (room as f64 / 4.0).max(1.0)),
    };
    let mut t = 0.0;
    let mut reqs = vec![];
    for i in 0..n {
        t += r.exponential(rate);
        let (p, o) = loop {
            let p = (pm.ln() + 0.5 * r.normal()).exp().round().max(1.0) as u64;
            let o = (om.ln() + 0.5 * r.normal()).exp().round().max(1.0) as u64;
            if sys + p + o - 1 <= max_context {
                break (p, o);
            }
        };
        let mut req = json!({"id": i, "arrival_ms": (t * 1e6).round() / 1e3, "prompt_len": p,
            "output_len": o});
        if system.is_some() {
            req["system_prompt"] = json!("sys");
        }
        reqs.push(req);
    }
    match system {
        None => json!({
            "description": format!(
                "{n} synthetic requests: Poisson arrivals at {rate} req/s; log-normal prompt and \
                 output lengths (medians {} and {} tokens, sigma 0.5) resampled to fit a \
                 {max_context}-token context",
                max_context / 3,
                max_context / 2
            ),
            "generator": format!(
                "llmpu serve-sim --synth-trace FILE --synth-requests {n} --synth-rate {rate} \
                 --synth-seed {seed} --max-context {max_context}"
            ),
            "requests": reqs,
        }),
        Some(k) => json!({
            "description": format!(
                "{n} synthetic requests sharing a {k}-token system prompt: Poisson arrivals at \
                 {rate} req/s; log-normal own prompt and output lengths (medians {} tokens each, \
                 sigma 0.5) resampled to fit a {max_context}-token context",
                room / 4
            ),
            "generator": format!(
                "llmpu serve-sim --synth-trace FILE --synth-requests {n} --synth-rate {rate} \
                 --synth-seed {seed} --max-context {max_context} --synth-system-prompt {k}"
            ),
            "system_prompts": [{"id": "sys", "len": k}],
            "requests": reqs,
        }),
    }
}

fn target_options(a: &ServeArgs) -> Result<llmpu_compiler::backend::Options, String> {
    let mut o = options(&a.target, &a.precision)?;
    if let Some(n) = a.block_tokens {
        if n == 0 {
            return Err("--block-tokens must be at least 1".into());
        }
        o.target.kv.block_tokens = n;
    }
    Ok(o)
}

/// The decode model compiled for `batch` and `c` new tokens over the pool: a chunked prefill of
/// `c` tokens after a cached prefix (batch 1), or a speculative verification step of `c = k + 1`
/// tokens per row (a new-token axis declared as 1 is re-declared `c` wide,
/// `ImportOptions::new_tokens`).
fn compile_chunk(
    path: &Path,
    batch: usize,
    c: usize,
    max_context: u64,
    a: &ServeArgs,
    kv_blocks: u64,
) -> Result<Program, String> {
    let o = target_options(a)?;
    let dims = crate::cmd_compile::step_dims(max_context, batch, c as u64)?;
    let mut m = crate::import::import_step(path, &dims, Some(c as u64), true)?;
    set_kv_blocks(&mut m, kv_blocks)?;
    compile_module(&mut m, &o, &Default::default())?
        .ok_or_else(|| "pipeline stopped early".to_string())
}

fn compile(
    path: &Path,
    dims: &[String],
    a: &ServeArgs,
    kv_blocks: Option<u64>,
) -> Result<Program, String> {
    let o = target_options(a)?;
    // A decode step has a KV pool; a prefill has none.
    let mut m = crate::cmd_generate::step_model(path, dims, kv_blocks.is_some())?;
    if let Some(n) = kv_blocks {
        set_kv_blocks(&mut m, n)?;
    }
    compile_module(&mut m, &o, &Default::default())?
        .ok_or_else(|| "pipeline stopped early".to_string())
}

/// Runs the whole simulation; returns it and the resident weight bytes.
pub fn simulate(a: &ServeArgs) -> Result<(Simulation, u64), String> {
    let (prefill_path, decode_path) = model_paths(a)?;
    let max_context = a
        .max_context
        .or_else(|| meta_context(&decode_path))
        .ok_or("--max-context is needed (no meta.json with the model's positions beside it)")?;
    let requests_path = a.requests.as_ref().ok_or("--requests is needed")?;
    if a.max_batch == 0 {
        return Err("--max-batch must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&a.watermark) {
        return Err(format!(
            "--watermark {}: a fraction of the pool from 0 to 1 is needed",
            a.watermark
        ));
    }
    let target = target_options(a)?.target;
    let bt = target.kv.block_tokens.max(1) as u64;
    let max_blocks = max_context.div_ceil(bt);
    let buckets: Vec<usize> = if a.no_buckets {
        vec![a.max_batch]
    } else {
        let mut b: Vec<usize> = std::iter::successors(Some(1usize), |x| x.checked_mul(2))
            .take_while(|&x| x < a.max_batch)
            .collect();
        b.push(a.max_batch);
        b
    };
    let decode_dims_for = |b: usize| decode_dims(max_context, &[format!("batch_size={b}")]);
    // Pool size: given, from bytes (one compile to learn the block size), or the default.
    let default_blocks = (a.max_batch as u64)
        .checked_mul(max_blocks)
        .and_then(|b| b.checked_add(1));
    let mut pool = match (a.kv_blocks, default_blocks) {
        (Some(n), _) => n,
        (None, Some(n)) => n,
        (None, None) => {
            return Err(format!(
                "--max-batch {} × {max_blocks} blocks of --max-context {max_context}: the \
                 default pool size overflows 64 bits (give --kv-blocks)",
                a.max_batch
            ));
        }
    };
    let mut first = compile(&decode_path, &decode_dims_for(buckets[0])?, a, Some(pool))?;
    if let Some(bytes) = a.kv_memory {
        let kv = first
            .kv
            .as_ref()
            .ok_or("the decode program has no paged KV region")?;
        let per: u64 = kv.slots.iter().filter_map(|s| kv.block_bytes(s)).sum();
        pool = bytes / per.max(1);
        if pool > u32::MAX as u64 {
            return Err(format!(
                "--kv-memory {bytes}: {pool} blocks of {per} bytes; at most {} blocks (block ids \
                 are 32-bit)",
                u32::MAX
            ));
        }
        if pool < 2 {
            return Err(format!(
                "--kv-memory {bytes}: a block of every layer's K and V is {per} bytes; need room for 2"
            ));
        }
        first = compile(&decode_path, &decode_dims_for(buckets[0])?, a, Some(pool))?;
    }
    let vocab = first
        .io("logits")
        .and_then(|t| t.shape.last().copied())
        .ok_or("the decode program has no `logits` output")?;
    let text = llmpu_isa::limits::read_to_string(requests_path)
        .map_err(|e| format!("{}: {e}", requests_path.display()))?;
    let requests: Vec<Request> = serve::parse_trace(&text, a.seed, vocab)
        .map_err(|e| format!("{}: {e}", requests_path.display()))?;
    let region = first
        .kv
        .as_ref()
        .ok_or("the decode program has no paged KV region")?;
    let block_bytes: u64 = region
        .slots
        .iter()
        .filter_map(|s| region.block_bytes(s))
        .sum();
    let preemption = match a.preemption.as_str() {
        "recompute" => Preemption::Recompute,
        _ => {
            let o = target.kv_offload.as_ref().ok_or_else(|| {
                format!(
                    "--preemption offload: target `{}` has no [kv_offload] section (size_bytes, \
                     bandwidth_gb_s, latency_cycles; see examples/targets/edge-offload.toml)",
                    target.name
                )
            })?;
            let host_blocks = o.size_bytes / block_bytes.max(1);
            if host_blocks == 0 {
                return Err(format!(
                    "--preemption offload: kv_offload.size_bytes {} holds no KV block of {block_bytes} bytes",
                    o.size_bytes
                ));
            }
            Preemption::Offload(Offload {
                host_blocks: host_blocks.min(usize::MAX as u64) as usize,
                block_bytes,
                latency_cycles: o.latency_cycles,
                bytes_per_cycle: o.bandwidth_gb_s / target.clock_ghz,
            })
        }
    };
    let speculate = match a.speculate {
        None => None,
        Some(0) => return Err("--speculate 0: propose at least one token per step".into()),
        Some(_) if a.timing_only => {
            return Err(
                "--speculate needs the generated ids to accept proposals: not with --timing-only"
                    .into(),
            );
        }
        Some(k) => Some(serve::Speculate {
            k,
            draft: match (&a.draft_prefill, &a.draft_decode, a.prompt_lookup) {
                (Some(_), Some(_), None) => serve::SpecDraft::Model,
                (None, None, Some(0)) => {
                    return Err("--prompt-lookup 0: the n-gram needs a token".into());
                }
                (None, None, Some(ngram)) => serve::SpecDraft::PromptLookup { ngram },
                (None, None, None) => {
                    return Err(
                        "--speculate needs a draft: --draft-prefill and --draft-decode \
                         (a draft model), or --prompt-lookup N"
                            .into(),
                    );
                }
                _ => {
                    return Err(
                        "give both --draft-prefill and --draft-decode, or --prompt-lookup alone"
                            .into(),
                    );
                }
            },
        }),
    };
    let config = Config {
        prefix_cache: !a.no_prefix_cache,
        preemption,
        speculate,
        buckets: buckets.clone(),
        block_tokens: bt,
        pool_blocks: u32::try_from(pool).map_err(|_| format!("--kv-blocks {pool} is too many"))?,
        max_blocks: max_blocks as usize,
        max_context,
        watermark: ((pool - 1) as f64 * a.watermark.clamp(0.0, 1.0)).ceil() as usize,
        clock_hz: target.clock_ghz * 1e9,
    };
    let opts = RunOptions {
        timing_only: a.timing_only,
        trace: a.trace.is_some(),
        trace_ops: !a.trace_instructions,
        ..RunOptions::default()
    };
    let mut first = Some(first);
    let first_bucket = buckets[0];
    let chunk_path = decode_path.clone();
    let chunk = Box::new(move |batch: usize, c: usize| -> Result<Program, String> {
        compile_chunk(&chunk_path, batch, c, max_context, a, pool)
    });
    let decode = Box::new(move |b: usize| -> Result<Program, String> {
        if b == first_bucket
            && let Some(p) = first.take()
        {
            return Ok(p);
        }
        compile(&decode_path, &decode_dims_for(b)?, a, Some(pool))
    });
    let prefill = Box::new(move |n: usize| -> Result<Program, String> {
        compile(
            &prefill_path,
            &crate::cmd_generate::prefill_dims(n as u64),
            a,
            None,
        )
    });
    let mut engine = EmuEngine::new(prefill, decode, chunk, opts.clone(), first_bucket);
    if let (Some(dp), Some(dd)) = (a.draft_prefill.clone(), a.draft_decode.clone()) {
        // The draft's first decode program now, so that a wrong model fails before the run.
        let named = |e: String| format!("--draft-decode {}: {e}", dd.display());
        let dfirst = compile(&dd, &decode_dims_for(first_bucket)?, a, Some(pool)).map_err(named)?;
        match &dfirst.kv {
            None => {
                return Err(named(
                    "not a decode graph: its program has no paged KV region".into(),
                ));
            }
            Some(kv) if kv.num_blocks != pool || kv.block_tokens != bt => {
                return Err(named(format!(
                    "its pool is {} blocks of {} tokens, the target's {pool} of {bt}",
                    kv.num_blocks, kv.block_tokens
                )));
            }
            Some(_) => {}
        }
        let mut dfirst = Some(dfirst);
        let draft_decode = Box::new(move |b: usize| -> Result<Program, String> {
            if b == first_bucket
                && let Some(p) = dfirst.take()
            {
                return Ok(p);
            }
            compile(&dd, &decode_dims_for(b)?, a, Some(pool))
        });
        let draft_prefill = Box::new(move |n: usize| -> Result<Program, String> {
            compile(&dp, &crate::cmd_generate::prefill_dims(n as u64), a, None)
        });
        let no_chunks = Box::new(|_: usize, c: usize| -> Result<Program, String> {
            Err(format!("the draft model runs no {c}-token steps"))
        });
        engine = engine.with_draft(EmuEngine::new(
            draft_prefill,
            draft_decode,
            no_chunks,
            opts,
            first_bucket,
        ));
    }
    let mut progress = Progress::new("serve-sim", requests.len() as u64);
    let sim = serve::simulate(&config, &requests, &mut engine, &mut |done, _| {
        progress.set(done as u64, "requests done")
    })
    .map_err(|e| e.to_string())?;
    progress.finish();
    Ok((sim, engine.weight_bytes()))
}

fn ms(s: f64) -> String {
    format!("{:.3}", s * 1e3)
}

/// Runs `llmpu serve-sim`.
pub fn run(a: &ServeArgs) -> Result<(), String> {
    if let Some(out) = &a.synth_trace {
        let mc = match (a.max_context, &a.model, &a.decode) {
            (Some(n), _, _) => n,
            _ => model_paths(a)
                .ok()
                .and_then(|(_, d)| meta_context(&d))
                .ok_or("--synth-trace needs --max-context (or a model with a meta.json)")?,
        };
        if a.synth_requests == 0 || !(a.synth_rate > 0.0 && a.synth_rate.is_finite()) || mc < 2 {
            return Err(
                "--synth-requests ≥ 1, --synth-rate > 0 and a context ≥ 2 are needed".into(),
            );
        }
        if let Some(k) = a.synth_system_prompt
            && (k == 0 || k + 2 > mc)
        {
            return Err(format!(
                "--synth-system-prompt {k}: need 1 ≤ N ≤ max context − 2 = {} (room for a prompt \
                 token and an output token)",
                mc.saturating_sub(2)
            ));
        }
        let t = synth_trace(
            a.synth_requests,
            a.synth_rate,
            a.synth_seed,
            mc,
            a.synth_system_prompt,
        );
        let text = serde_json::to_string_pretty(&t).map_err(|e| e.to_string())?;
        std::fs::write(out, text + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
        eprintln!("wrote {} ({} requests)", out.display(), a.synth_requests);
        if a.requests.is_none() {
            return Ok(());
        }
    }
    let (sim, weights) = simulate(a)?;
    if let Some(path) = &a.trace {
        let write = || -> std::io::Result<()> {
            let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
            sim.trace().write_chrome_json(&mut w)?;
            std::io::Write::flush(&mut w)
        };
        write().map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let mut s = sim.summary(weights, a.timing_only);
    if a.compare {
        let mut b = a.clone();
        b.no_prefix_cache = true;
        b.preemption = "recompute".into();
        b.speculate = None;
        b.compare = false;
        b.trace = None;
        let (base, _) = simulate(&b)?;
        let bs = base.summary(weights, a.timing_only);
        let ratio = |k: &str, p: &str| {
            let new = s[k][p].as_f64().unwrap_or(0.0);
            let old = bs[k][p].as_f64().unwrap_or(0.0);
            if new > 0.0 { old / new } else { 0.0 }
        };
        let c = json!({
            "prefix_cache": false,
            "preemption": "recompute",
            "speculate": false,
            "total_s": bs["total_s"],
            "throughput_tokens_per_s": bs["throughput_tokens_per_s"],
            "ttft_s": bs["ttft_s"],
            "tpot_s": bs["tpot_s"],
            "preemptions": bs["preemptions"],
            "prefill_runs": bs["prefill_runs"],
            "same_generated_ids": base.requests.iter().zip(&sim.requests)
                .all(|(x, y)| x.generated == y.generated),
            "ttft_p50_speedup": ratio("ttft_s", "p50"),
            "ttft_p99_speedup": ratio("ttft_s", "p99"),
            "tpot_p99_speedup": ratio("tpot_s", "p99"),
        });
        s["baseline"] = c;
    }
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&s).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let f = |k: &str| s[k].as_f64().unwrap_or(0.0);
    let pct = |k: &str| {
        let v = &s[k];
        format!(
            "mean {} ms, p50 {} ms, p90 {} ms, p99 {} ms",
            ms(v["mean"].as_f64().unwrap_or(0.0)),
            ms(v["p50"].as_f64().unwrap_or(0.0)),
            ms(v["p90"].as_f64().unwrap_or(0.0)),
            ms(v["p99"].as_f64().unwrap_or(0.0))
        )
    };
    let c = &sim.config;
    outln!(
        "serve-sim: {} requests, max batch {} (buckets {}), KV pool {} blocks × {} tokens (+ the \
         null block), max context {} tokens, {}",
        s["requests"],
        c.buckets.last().copied().unwrap_or(0),
        c.buckets
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(","),
        s["kv_pool_blocks"],
        c.block_tokens,
        c.max_context,
        a.precision
    );
    outln!(
        "completed             {} requests, {} output tokens{}",
        s["requests"],
        s["output_tokens"],
        if a.timing_only {
            " (timing-only: token ids were not computed; cycles as in a functional run)"
        } else {
            ""
        }
    );
    outln!(
        "modeled time          {} ms (programs running {} ms)",
        ms(f("total_s")),
        ms(f("busy_s"))
    );
    outln!(
        "throughput            {:.1} output tokens/s, {:.1} requests/s",
        f("throughput_tokens_per_s"),
        f("throughput_requests_per_s")
    );
    outln!("TTFT                  {}", pct("ttft_s"));
    outln!("TPOT                  {}", pct("tpot_s"));
    let hist: Vec<String> = s["batch_size_histogram"]
        .as_array()
        .map(|v| {
            v.iter()
                .enumerate()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(b, n)| format!("{b}:{n}"))
                .collect()
        })
        .unwrap_or_default();
    outln!(
        "decode steps          {} (mean batch {:.2}; batch:steps {}), {} prefills",
        s["decode_steps"],
        f("mean_batch"),
        hist.join(" "),
        s["prefill_runs"]
    );
    outln!(
        "KV utilization        {:.1}% with paging (tokens held / allocated block tokens, \
         time-weighted); {:.1}% if each request reserved {} tokens",
        100.0 * f("kv_utilization_paged"),
        100.0 * f("kv_utilization_reserved"),
        c.max_context
    );
    outln!(
        "KV pool               peak {} of {} blocks ({:.1}%); reserving the max context, it \
         would hold {} sequences",
        s["kv_peak_blocks"],
        s["kv_pool_blocks"],
        100.0 * f("kv_peak_occupancy"),
        s["reserved_sequences_fitting_pool"]
    );
    outln!(
        "preemptions           {} ({})",
        s["preemptions"],
        s["preemption_mode"].as_str().unwrap_or("")
    );
    let pc = &s["prefix_cache"];
    if pc["enabled"] == true {
        outln!(
            "prefix cache          {} hits, {} blocks reused, {} tokens not recomputed, {} \
             copy-on-write copies, {} evictions",
            pc["hits"],
            pc["blocks_reused"],
            pc["tokens_not_recomputed"],
            pc["cow_copies"],
            pc["evictions"]
        );
        if pc["system_prompt_requests"].as_u64() > Some(0) {
            outln!(
                "shared system prompts {} of {} blocks saved ({:.1}%) over {} requests",
                pc["system_prompt_blocks_saved"],
                pc["system_prompt_blocks_without_sharing"],
                100.0 * pc["system_prompt_saved_fraction"].as_f64().unwrap_or(0.0),
                pc["system_prompt_requests"]
            );
        }
    } else {
        outln!("prefix cache          off");
    }
    let sp = &s["speculation"];
    if sp["enabled"] == true {
        outln!(
            "speculation           k = {}, {}: {} of {} proposals accepted ({:.1}%), {:.2} \
             tokens per request per step, {} draft runs",
            sp["k"],
            sp["draft"].as_str().unwrap_or(""),
            sp["accepted"],
            sp["proposed"],
            100.0 * sp["acceptance_rate"].as_f64().unwrap_or(0.0),
            sp["tokens_per_row_step"].as_f64().unwrap_or(0.0),
            sp["draft_runs"]
        );
        if a.draft_decode.is_some()
            && target_options(a)
                .map(|o| o.target.draft_unit.is_some())
                .unwrap_or(false)
        {
            outln!(
                "                      the draft model ran time-sliced on every core: serve-sim \
                 does not use the target's [draft_unit] (generate --draft-placement does)"
            );
        }
    }
    let of = &s["offload"];
    if s["preemption_mode"] == "offload" {
        outln!(
            "KV offload            {} swap-outs ({} B), {} prefetches ({} B), {} ms stalled on \
             swap-outs, {} ms idle on prefetches, {} recomputed (tier full), peak {} of {} host \
             blocks",
            of["swap_outs"],
            of["bytes_offloaded"],
            of["swap_ins"],
            of["bytes_prefetched"],
            ms(of["stall_s"].as_f64().unwrap_or(0.0)),
            ms(of["idle_prefetch_s"].as_f64().unwrap_or(0.0)),
            of["recomputed_tier_full"],
            of["peak_host_blocks"],
            of["host_blocks"]
        );
    }
    if let Some(b) = s.get("baseline") {
        let p = |k: &str| {
            format!(
                "p50 {} ms, p99 {} ms",
                ms(b[k]["p50"].as_f64().unwrap_or(0.0)),
                ms(b[k]["p99"].as_f64().unwrap_or(0.0))
            )
        };
        outln!(
            "baseline              no prefix cache, recompute, no speculation: TTFT {}, TPOT {}, \
             {:.1} output tokens/s, {} preemptions, {} prefills; same ids: {}",
            p("ttft_s"),
            p("tpot_s"),
            b["throughput_tokens_per_s"].as_f64().unwrap_or(0.0),
            b["preemptions"],
            b["prefill_runs"],
            b["same_generated_ids"]
        );
        outln!(
            "vs baseline           speed-up (baseline time / this time): TTFT p50 {:.2}×, p99 \
             {:.2}×; TPOT p99 {:.2}×",
            b["ttft_p50_speedup"].as_f64().unwrap_or(0.0),
            b["ttft_p99_speedup"].as_f64().unwrap_or(0.0),
            b["tpot_p99_speedup"].as_f64().unwrap_or(0.0)
        );
    }
    outln!(
        "HBM bytes per token   {:.0}: KV cache {:.0}, weights and activations {:.0} (weights \
         resident {} B)",
        f("hbm_bytes_per_token"),
        f("hbm_kv_bytes_per_token"),
        f("hbm_weight_and_activation_bytes_per_token"),
        weights
    );
    outln!("energy per token      {:.3} µJ", f("energy_per_token_uj"));
    if let Some(path) = &a.trace {
        outln!(
            "trace                 {} (open in ui.perfetto.dev)",
            path.display()
        );
    }
    Ok(())
}
