//! `llmpu generate`: greedy autoregressive generation on the emulator with the KV cache resident
//! in emulated HBM.
//!
//! The prefill model runs once on the prompt; its dense presents are packed into the decode
//! program's paged KV region (`spec/kv-cache.md`), which then stays in one
//! [`llmpu_runtime::Session`]'s HBM: every decode step binds only the new token, its position and
//! the attention mask, sets the cached length in the region header, runs, and reads the logits.
//! The decode program is compiled once for `--max-context` tokens (its symbolic dims bound to
//! that maximum); the current length is a run-time value in the region. The attention mask is
//! passed right-aligned (the graph sees the cached tokens just before the new one at the compiled
//! past, as for a left-padded batch) and the program shifts it to the cache's slots
//! (`spec/kv-cache.md`), so masks the graph folds from its compiled shape hold at every length. Prints the ids, the per-step cost table and
//! the modeled figures (time to first token, time per output token, tokens/s, energy per token,
//! HBM bytes per token split into weights and KV).

use std::path::{Path, PathBuf};

use llmpu_isa::{DType, IoDir, KvRegion, Program, binary};
use llmpu_runtime::{Report, RunOptions, Session, Tensor, Trace, kv};
use serde_json::json;

use crate::progress::Progress;

use crate::cmd_compile::{compile_module, load_model, options};

/// Arguments of `llmpu generate`.
#[derive(clap::Args, Clone, Debug)]
pub struct GenerateArgs {
    /// Prefill model: `.onnx` (compiled for the prompt length) or a compiled `.llmpu`.
    #[arg(long)]
    pub prefill: PathBuf,
    /// Decode model: `.onnx` (compiled once for `--max-context`) or a compiled `.llmpu` with a KV
    /// region.
    #[arg(long)]
    pub decode: PathBuf,
    /// Prompt token ids (`1,2,3`), or a JSON file with `prompt_ids` (and optionally
    /// `generated_ids`, which the output is then compared with).
    #[arg(long)]
    pub prompt: String,
    /// Number of tokens to generate (default: as many as the JSON's `generated_ids`, else 16).
    #[arg(long)]
    pub new_tokens: Option<usize>,
    /// Maximum context the decode program is compiled for (default: prompt + new tokens).
    #[arg(long)]
    pub max_context: Option<u64>,
    /// Target: a preset (`edge`, `datacenter`) or a `.toml` file.
    #[arg(long, default_value = llmpu_isa::target::DEFAULT_TARGET)]
    pub target: String,
    /// Numerics: `fp32` or `bf16`.
    #[arg(long, default_value = "bf16")]
    pub precision: String,
    /// Extra symbolic dims for both models (`NAME=N`); the sequence dims are set by the command.
    #[arg(long = "dim", value_name = "NAME=N")]
    pub dims: Vec<String>,
    /// Write a Chrome/Perfetto trace of the whole generation: the prefill and every decode step
    /// on one time axis (modeled cycles), each run's per-unit instructions under its cores and
    /// one `host` track naming the steps.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Run the reference interpreter on the same ONNX graphs in lockstep (same tokens, masks and
    /// positions every step) and stop at the first step whose logits differ beyond the
    /// precision's tolerance, naming the first op (and its ONNX nodes) whose value differs. ONNX
    /// models are compiled with `--probes`; a `.llmpu` model needs its ONNX graph as
    /// `--reference-prefill`/`--reference-decode` (and `llmpu compile --probes` to name the op).
    #[arg(long)]
    pub verify: bool,
    /// With `--verify` and a compiled `--prefill`: the ONNX graph it was compiled from.
    #[arg(long, value_name = "ONNX")]
    pub reference_prefill: Option<PathBuf>,
    /// With `--verify` and a compiled `--decode`: the ONNX graph it was compiled from.
    #[arg(long, value_name = "ONNX")]
    pub reference_decode: Option<PathBuf>,
    /// Trap on reads of never-written SRAM, accumulator or HBM bytes in any run.
    #[arg(long)]
    pub check_uninit: bool,
    /// Stop each emulated run after this many instructions.
    #[arg(long, value_name = "N")]
    pub max_instructions: Option<u64>,
    /// Speculative decoding: a draft proposes K tokens per round and the decode model verifies
    /// K + 1 positions in one run (compiled for K + 1 new tokens). Plain greedy decoding runs
    /// first; every verified position is checked against it and the figures are compared.
    #[arg(long, value_name = "K")]
    pub speculate: Option<usize>,
    /// With `--speculate`: the draft model's prefill (`.onnx`, or `.llmpu` for the draft's
    /// machine); the same vocabulary as the target.
    #[arg(long, value_name = "MODEL", requires = "speculate")]
    pub draft_prefill: Option<PathBuf>,
    /// With `--speculate`: the draft model's one-token decode graph.
    #[arg(long, value_name = "MODEL", requires = "speculate")]
    pub draft_decode: Option<PathBuf>,
    /// With `--speculate`: no draft model; propose the tokens that followed the latest earlier
    /// occurrence of the context's last N-gram (prompt lookup, N down to 1).
    #[arg(long, value_name = "N", requires = "speculate")]
    pub prompt_lookup: Option<usize>,
    /// With `--speculate`: `time-sliced` (draft and target take turns on every core) or
    /// `draft-unit` (the draft on the target's `[draft_unit]` cores, drafting ahead while the
    /// target verifies; the default when the target declares one and the draft is a model).
    #[arg(long, value_name = "PLACEMENT", requires = "speculate")]
    pub draft_placement: Option<String>,
}

impl GenerateArgs {
    /// The same generation without speculation, trace or verification (the oracle run).
    pub fn plain(a: &GenerateArgs) -> GenerateArgs {
        GenerateArgs {
            trace: None,
            verify: false,
            speculate: None,
            draft_prefill: None,
            draft_decode: None,
            prompt_lookup: None,
            draft_placement: None,
            ..a.clone()
        }
    }
}

/// The ONNX graph `--verify` runs beside `model`: the model itself, or its `reference`.
fn reference_of(model: &Path, reference: &Option<PathBuf>) -> Result<PathBuf, String> {
    match reference {
        Some(r) => Ok(r.clone()),
        None if model.extension().is_some_and(|e| e == "llmpu") => Err(format!(
            "{}: --verify needs the ONNX graph a compiled model came from \
             (--reference-prefill / --reference-decode)",
            model.display()
        )),
        None => Ok(model.to_path_buf()),
    }
}

/// What a generation produced.
pub struct Generation {
    pub ids: Vec<i64>,
    pub expected: Option<Vec<i64>>,
    /// The last position's logits behind each generated id.
    pub logits: Vec<Vec<f32>>,
    /// With `--verify`: the largest logits difference from the reference interpreter over the
    /// prefill and every step (all within the tolerance, or generation stopped).
    pub verified: Option<f64>,
    pub prefill: Report,
    pub steps: Vec<Report>,
    pub weight_bytes: u64,
    /// Live KV-cache bytes at each decode step (what the cached tokens occupy).
    pub kv_bytes: Vec<u64>,
    /// Context length (cached + new token) at each decode step.
    pub contexts: Vec<u64>,
    /// KV-cache HBM bytes each step moves: the live blocks attention reads (every query head
    /// reads its KV head's blocks) plus the appended rows.
    pub kv_read: Vec<u64>,
    /// The trace of the whole generation (with `--trace`).
    pub trace: Option<Trace>,
}

pub fn parse_prompt(s: &str) -> Result<(Vec<i64>, Option<Vec<i64>>), String> {
    let p = Path::new(s);
    if p.extension().is_some_and(|e| e == "json") || p.is_file() {
        let text = llmpu_isa::limits::read_to_string(p).map_err(|e| format!("{s}: {e}"))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{s}: {e}"))?;
        let ids = |k: &str| -> Option<Vec<i64>> {
            v.get(k)?.as_array()?.iter().map(|x| x.as_i64()).collect()
        };
        let prompt = ids("prompt_ids").ok_or_else(|| format!("{s}: no `prompt_ids` array"))?;
        return Ok((prompt, ids("generated_ids")));
    }
    let ids = s
        .split(',')
        .map(|t| {
            t.trim()
                .parse::<i64>()
                .map_err(|_| format!("--prompt: `{t}` is not a token id"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ids, None))
}

/// The sequence dims of a batch-1 prefill over `n` tokens.
pub fn prefill_dims(n: u64) -> [String; 4] {
    [
        "batch_size=1".into(),
        format!("sequence_length={n}"),
        format!("total_sequence_length={n}"),
        "past_sequence_length=0".into(),
    ]
}

/// The comparison tolerance of `--precision`.
fn tolerance(a: &GenerateArgs) -> llmpu_runtime::compare::Tolerance {
    match a.precision.as_str() {
        "fp32" => llmpu_runtime::compare::Tolerance::FP32,
        _ => llmpu_runtime::compare::Tolerance::BF16,
    }
}

/// The user's `--dim`s plus `dims` for the ones they do not give.
pub fn merged_dims(a: &GenerateArgs, dims: &[String]) -> Vec<String> {
    let name = |d: &str| d.split('=').next().map(str::to_string);
    let mut all = a.dims.clone();
    for d in dims {
        if !a.dims.iter().any(|u| name(u) == name(d)) {
            all.push(d.clone());
        }
    }
    all
}

/// The graph of a prefill (`with_past` false) or decode model: ONNX through
/// [`crate::import::import_step`], a `.mlir` dump as it is.
pub fn step_model(
    path: &Path,
    dims: &[String],
    with_past: bool,
) -> Result<llmpu_compiler::ir::Module, String> {
    match path.extension().is_some_and(|e| e == "onnx") {
        true => crate::import::import_step(path, dims, None, with_past),
        false => load_model(path, dims),
    }
}

fn program_for(
    path: &Path,
    dims: &[String],
    with_past: bool,
    a: &GenerateArgs,
) -> Result<Program, String> {
    if path.extension().is_some_and(|e| e == "llmpu") {
        return binary::read_file(path).map_err(|e| format!("{}: {e}", path.display()));
    }
    let o = options(&a.target, &a.precision)?;
    let mut m = step_model(path, &merged_dims(a, dims), with_past)?;
    if a.verify {
        crate::cmd_compile::set_probes(&mut m);
    }
    compile_module(&mut m, &o, &Default::default())?
        .ok_or_else(|| "pipeline stopped early".to_string())
}

/// The standard LLM inputs of `program` ([`llmpu_runtime::serve_engine::llm_inputs`]).
pub fn bind(
    program: &Program,
    ids: &[i64],
    mask: &[i64],
    positions: &[i64],
) -> Result<Vec<(String, Tensor)>, String> {
    llmpu_runtime::serve_engine::llm_inputs(program, ids, mask, positions, "generate")
}

/// The rule for a top-1 that differs from the reference at token `i` (the ids before agree, so
/// the contexts are the same): the reference interpreter runs the prefill graph over the prompt
/// and the `i` agreeing ids, and the emulator's logits for token `i` must be within the
/// precision's tolerance of the interpreter's (`runtime::compare`). Then the reference's margin
/// between its top-1 and the emulator's is at most the error the tolerance allows, and the flip is
/// the precision's (`Ok` with the figures); otherwise it is a wrong answer (`Err` saying why).
fn flip_within_tolerance(
    a: &GenerateArgs,
    g: &Generation,
    exp: &[i64],
    i: usize,
) -> Result<String, String> {
    if a.prefill.extension().is_none_or(|e| e != "onnx") {
        return Err(
            "the prefill is not an ONNX model, so there are no reference logits to \
                    judge the difference by"
                .into(),
        );
    }
    let (prompt, _) = parse_prompt(&a.prompt)?;
    let seq: Vec<i64> = prompt.iter().chain(&exp[..i]).copied().collect();
    let m = step_model(
        &a.prefill,
        &merged_dims(a, &prefill_dims(seq.len() as u64)),
        false,
    )?;
    let inputs = crate::verify::prefill_inputs(&m, &seq)?;
    let outs = llmpu_compiler::interp::run(&m, &inputs).map_err(|e| format!("reference: {e}"))?;
    let logits = outs.first().ok_or("the prefill has no outputs")?;
    let all = logits.to_f64_vec();
    let vocab = *logits.shape.last().ok_or("scalar logits")?;
    let want: Vec<f32> = all[all.len().saturating_sub(vocab)..]
        .iter()
        .map(|&x| x as f32)
        .collect();
    judge_flip(&g.logits[i], &want, exp[i], g.ids[i], tolerance(a))
}

/// Whether the emulator's id `got_id` where the reference has `exp_id` is a flip the precision
/// allows: the emulator's logits row `got` is within `tol` of the reference row `want`, and the
/// reference's margin between the two ids is at most what the tolerance lets the two logits
/// move. `Ok` with the figures, `Err` saying which condition fails.
pub fn judge_flip(
    got: &[f32],
    want: &[f32],
    exp_id: i64,
    got_id: i64,
    tol: llmpu_runtime::compare::Tolerance,
) -> Result<String, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{} logits against the reference's {}",
            got.len(),
            want.len()
        ));
    }
    let t = |v: &[f32]| Tensor::from_f32(DType::F32, vec![v.len() as u64], v);
    let c = llmpu_runtime::compare::compare("logits", &t(got)?, &t(want)?, tol)?;
    let (r, e) = (exp_id as usize, got_id as usize);
    let (Some(&wr), Some(&we)) = (want.get(r), want.get(e)) else {
        return Err("an id is outside the vocabulary".into());
    };
    let margin = wr - we;
    // What the tolerance lets each of the two logits move.
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let allow = |x: f32| tol.scale_atol * scale + tol.rtol * x.abs() as f64;
    let bound = allow(wr) + allow(we);
    let figures = format!(
        "reference margin between them {margin:.3e} (the tolerance allows {bound:.3e}), measured \
         max |diff| of the logits {:.3e}, cosine {:.6} [{tol}]",
        c.max_abs, c.cosine
    );
    if margin < 0.0 {
        Err(format!(
            "the reference interpreter prefers the generated id too ({figures}): the reference \
             ids do not come from this model"
        ))
    } else if !c.pass {
        Err(format!(
            "the logits row as a whole is outside the tolerance (whatever the two ids' margin): \
             {figures}"
        ))
    } else if margin as f64 > bound {
        Err(format!(
            "the reference's margin between the two ids is more than the tolerance allows: \
             {figures}"
        ))
    } else {
        Ok(figures)
    }
}

/// The last position's row of `logits` `[…, vocab]`.
fn last_row(logits: &Tensor) -> Vec<f32> {
    let v = logits.to_f32();
    let n = logits.shape.last().copied().unwrap_or(0) as usize;
    v[v.len().saturating_sub(n)..].to_vec()
}

fn argmax_last(logits: &Tensor) -> Result<i64, String> {
    let v = logits.to_f32();
    let n = *logits.shape.last().ok_or("logits are a scalar")? as usize;
    if n == 0 || v.len() < n {
        return Err("empty logits".into());
    }
    Ok(llmpu_runtime::tensor::argmax(&v[v.len() - n..]))
}

fn live_kv_bytes(kv: &KvRegion, len: u64) -> u64 {
    kv.slots
        .iter()
        .map(|s| s.heads * len * s.head_dim * kv.dtype.size())
        .sum::<u64>()
        * kv.batch
}

/// KV bytes one decode step moves at context `ctx`: the live blocks of every slot, counted once
/// per KV head (under GQA attention re-reads them for each query head sharing the KV head, so this
/// is a lower bound), plus the appended rows.
fn kv_traffic(kv: &KvRegion, ctx: u64) -> u64 {
    let blocks = ctx.div_ceil(kv.block_tokens);
    kv.slots
        .iter()
        .map(|s| {
            let row = s.head_dim * kv.dtype.size();
            s.heads * (blocks * kv.block_tokens * row + kv.new_tokens * row)
        })
        .sum::<u64>()
        * kv.batch
}

/// Runs the whole generation (no printing).
pub fn generate(a: &GenerateArgs) -> Result<Generation, String> {
    let (prompt, expected) = parse_prompt(&a.prompt)?;
    if prompt.is_empty() {
        return Err("the prompt is empty".into());
    }
    if let Some((i, id)) = prompt.iter().enumerate().find(|(_, id)| **id < 0) {
        return Err(format!(
            "--prompt: token {i} is {id}; token ids are not negative"
        ));
    }
    let n = prompt.len() as u64;
    let new_tokens = a
        .new_tokens
        .or(expected.as_ref().map(Vec::len))
        .unwrap_or(16);
    if new_tokens == 0 {
        return Err("--new-tokens 0: nothing to generate".into());
    }
    let total = n.checked_add(new_tokens as u64).ok_or_else(|| {
        format!("--new-tokens {new_tokens}: {n} prompt + new tokens overflow 64 bits")
    })?;
    let max_context = a.max_context.unwrap_or(total);
    if max_context < total - 1 {
        return Err(format!(
            "--max-context {max_context} cannot hold {n} prompt + {new_tokens} new tokens"
        ));
    }
    let prefill_dims = prefill_dims(n);
    let decode_dims = crate::cmd_compile::decode_dims(max_context, &["batch_size=1".into()])?;
    let prefill = program_for(&a.prefill, &prefill_dims, false, a)?;
    let decode = program_for(&a.decode, &decode_dims, true, a)?;
    let region = decode.kv.clone().ok_or_else(|| {
        format!(
            "{}: the decode program has no paged KV region (is it a decode graph?)",
            a.decode.display()
        )
    })?;
    // The last step caches the prompt and every generated token but its own.
    let last_cached = n + new_tokens as u64 - 2;
    if new_tokens > 1 && last_cached > region.past_len {
        return Err(format!(
            "{}: the decode program covers a past of {} tokens, but {n} prompt + {new_tokens} new \
             tokens need {last_cached} at the last step (the graph's past dimension is static, or \
             it was compiled for a shorter --max-context)",
            a.decode.display(),
            region.past_len
        ));
    }
    // Without a mask and positions fed at run time, the graph sees exactly its compiled past:
    // every unfilled slot is attended and positions follow the compiled length.
    let mut fixed: Vec<&str> = ["attention_mask", "position_ids"]
        .into_iter()
        .filter(|i| decode.io(i).is_none())
        .collect();
    // Positions counted from the mask at run time (Bloom's ALiBi, OPT): no `position_ids` needed.
    if fixed == ["position_ids"]
        && a.decode.extension().is_none_or(|e| e != "llmpu")
        && llmpu_compiler::onnx::input_reaches_cumsum(
            &step_model(&a.decode, &merged_dims(a, &decode_dims), true)?,
            "attention_mask",
        )
    {
        fixed.clear();
    }
    if !fixed.is_empty() && (n != region.past_len || new_tokens > 2) {
        return Err(format!(
            "{}: the decode graph has no `{}` input, so it is right only with exactly its \
             compiled past of {} cached tokens (one step after a {}-token prompt); export it with \
             a dynamic past and attention_mask/position_ids inputs to generate from a {n}-token \
             prompt",
            a.decode.display(),
            fixed.join("`, `"),
            region.past_len,
            region.past_len
        ));
    }
    let mut opts = RunOptions {
        trace: a.trace.is_some(),
        check_uninit: a.check_uninit,
        ..RunOptions::default()
    };
    if let Some(n) = a.max_instructions {
        opts.max_instructions = n;
    }
    let mut progress = Progress::new("generate", new_tokens as u64);
    progress.set(0, "prefill");
    let positions: Vec<i64> = (0..n as i64).collect();
    let inputs = bind(&prefill, &prompt, &vec![1; n as usize], &positions)?;
    let mut res =
        llmpu_runtime::run(&prefill, &inputs, &opts).map_err(|e| format!("prefill: {e}"))?;
    let mut trace = res.trace.take().map(|t| {
        let mut all = Trace::new(t.clock_ghz, t.cores);
        let end = res.report.cycles;
        all.append(t, 0);
        all.span(
            "steps",
            &format!("prefill ({n} tokens)"),
            0,
            end,
            json!({"tokens": n, "cycles": end}),
        );
        all
    });
    let mut clock = res.report.cycles;
    let logits = res
        .outputs
        .iter()
        .find(|(name, t)| name == "logits" || t.shape.len() == 3)
        .map(|(_, t)| t)
        .ok_or("prefill has no logits output")?;
    let mut ids = vec![argmax_last(logits)?];
    let mut rows = vec![last_row(logits)];
    let tol = tolerance(a);
    let mut lockstep = match a.verify {
        false => None,
        true => {
            let pm = step_model(
                &reference_of(&a.prefill, &a.reference_prefill)?,
                &merged_dims(a, &prefill_dims),
                false,
            )?;
            let dm = step_model(
                &reference_of(&a.decode, &a.reference_decode)?,
                &merged_dims(a, &decode_dims),
                true,
            )?;
            let slots: Vec<(String, String)> = region
                .slots
                .iter()
                .map(|s| (s.past.clone(), s.present.clone()))
                .collect();
            let (l, diverged) =
                crate::verify::Lockstep::new(&pm, dm, &prompt, &slots, tol, &res.outputs)?;
            if let Some(r) = diverged {
                return Err(format!("--verify: the prefill differs: {r}"));
            }
            Some(l)
        }
    };
    // The prefill's presents become the resident cache, slot by slot (same output names).
    let mut pasts = vec![];
    for s in &region.slots {
        let t = res.output(&s.present).ok_or_else(|| {
            format!(
                "prefill has no output `{}` for KV slot `{}`",
                s.present, s.past
            )
        })?;
        pasts.push(t);
    }
    let mut session = Session::load(decode.clone(), opts).map_err(|e| e.to_string())?;
    let image =
        kv::pack(&region, &kv::reversed_table(&region), &pasts).map_err(|e| e.to_string())?;
    session.write_kv(&image).map_err(|e| e.to_string())?;
    let mask_len = decode
        .io("attention_mask")
        .and_then(|t| t.shape.last().copied())
        .unwrap_or(max_context) as usize;
    let mut steps = vec![];
    let mut kv_bytes = vec![];
    let mut contexts = vec![];
    let mut kv_read = vec![];
    for step in 1..new_tokens {
        let cur = n + step as u64 - 1; // tokens already cached
        let mut mask = vec![0i64; mask_len];
        kv::decode_mask_row(&mut mask, cur as usize + 1).ok_or_else(|| {
            format!(
                "decode step {step}: the attention mask has {mask_len} positions, {} tokens are live",
                cur + 1
            )
        })?;
        let last = *ids.last().unwrap_or(&0);
        let feeds = bind(&decode, &[last], &mask, &[cur as i64])?;
        for (name, t) in &feeds {
            session.bind(name, t).map_err(|e| e.to_string())?;
        }
        session
            .set_kv_lengths(&[cur as i32])
            .map_err(|e| e.to_string())?;
        progress.set(
            step as u64,
            &format!("decode step {step}, context {}", cur + 1),
        );
        let report = session
            .run()
            .map_err(|e| format!("decode step {step}: {e}"))?;
        if let (Some(all), Some(t)) = (trace.as_mut(), session.take_trace()) {
            all.append(t, clock);
            all.span(
                "steps",
                &format!("decode {step} (context {})", cur + 1),
                clock,
                clock + report.cycles,
                json!({"step": step, "context": cur + 1, "cycles": report.cycles}),
            );
        }
        clock += report.cycles;
        let logits = session.read("logits").map_err(|e| e.to_string())?;
        if let Some(l) = lockstep.as_mut() {
            let probes = || -> Result<Vec<(String, Tensor)>, String> {
                decode
                    .io
                    .iter()
                    .filter(|t| t.dir == IoDir::Output && t.name.starts_with("probe:"))
                    .map(|t| {
                        Ok((
                            t.name.clone(),
                            session.read(&t.name).map_err(|e| e.to_string())?,
                        ))
                    })
                    .collect()
            };
            if let Some(r) = l.step(&feeds, &logits, &probes)? {
                return Err(format!(
                    "--verify: decode step {step} (context {}) differs: {r}",
                    cur + 1
                ));
            }
        }
        ids.push(argmax_last(&logits)?);
        rows.push(last_row(&logits));
        kv_bytes.push(live_kv_bytes(&region, cur + 1));
        contexts.push(cur + 1);
        kv_read.push(kv_traffic(&region, cur + 1));
        steps.push(report);
    }
    progress.finish();
    let weight_bytes = decode.data.iter().map(|d| d.bytes.len() as u64).sum();
    Ok(Generation {
        ids,
        expected,
        logits: rows,
        verified: lockstep.map(|l| l.worst),
        prefill: res.report,
        steps,
        weight_bytes,
        kv_bytes,
        contexts,
        kv_read,
        trace,
    })
}

/// Runs `llmpu generate`.
pub fn run(a: &GenerateArgs) -> Result<(), String> {
    if let Some(k) = a.speculate {
        return crate::speculate::run(a, k);
    }
    let g = generate(a)?;
    let clock = g.prefill.clock_ghz * 1e9;
    outln!(
        "generated {} tokens: {}",
        g.ids.len(),
        g.ids
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    outln!("\nstep  context  cycles      time        HBM read    HBM write   live KV     energy");
    for (i, ((r, kvb), ctx)) in g.steps.iter().zip(&g.kv_bytes).zip(&g.contexts).enumerate() {
        outln!(
            "{:>4}  {:>7}  {:>10}  {:>8.3} µs  {:>9} B  {:>9} B  {:>9} B  {:>8.3} µJ",
            i + 1,
            ctx,
            r.cycles,
            r.cycles as f64 / clock * 1e6,
            r.hbm_read_bytes,
            r.hbm_write_bytes,
            kvb,
            r.energy.total_pj * 1e-6
        );
    }
    let ttft = g.prefill.cycles as f64 / clock;
    let n = g.steps.len().max(1) as f64;
    let tpot = g.steps.iter().map(|r| r.cycles as f64).sum::<f64>() / n / clock;
    let energy = g.steps.iter().map(|r| r.energy.total_pj).sum::<f64>() / n * 1e-6;
    let hbm = g
        .steps
        .iter()
        .map(|r| (r.hbm_read_bytes + r.hbm_write_bytes) as f64)
        .sum::<f64>()
        / n;
    let kv_mean = g.kv_bytes.iter().sum::<u64>() as f64 / n;
    outln!(
        "\ntime to first token   {:.3} µs ({} cycles)",
        ttft * 1e6,
        g.prefill.cycles
    );
    outln!("time per output token {:.3} µs", tpot * 1e6);
    outln!(
        "tokens/s              {:.1} at {:.3} GHz",
        1.0 / tpot.max(1e-30),
        g.prefill.clock_ghz
    );
    outln!("energy per token      {energy:.3} µJ");
    let kv_read = (g.kv_read.iter().sum::<u64>() as f64 / n).min(hbm);
    let pct = |x: f64| 100.0 * x / hbm.max(1.0);
    outln!(
        "HBM bytes per token   {hbm:.0} measured: KV cache {kv_read:.0} ({:.1}%: live blocks \
         read by attention + appends; live cache {kv_mean:.0} B mean), weights and activations \
         {:.0} ({:.1}%; weights resident {} B)",
        pct(kv_read),
        hbm - kv_read,
        pct(hbm - kv_read),
        g.weight_bytes
    );
    if let (Some(path), Some(t)) = (&a.trace, &g.trace) {
        std::fs::write(path, t.to_chrome_json()).map_err(|e| format!("{}: {e}", path.display()))?;
        outln!(
            "trace                 {} ({} instructions, {} steps; open in ui.perfetto.dev)",
            path.display(),
            t.events.len(),
            t.spans.len()
        );
    }
    if let Some(w) = g.verified {
        outln!(
            "verify                the prefill and {} decode steps agree with the reference \
             interpreter (largest logits |diff| {w:.3e}; {} tolerance)",
            g.steps.len(),
            a.precision
        );
    }
    report_reference(a, &g)
}

/// Compares the ids with the prompt file's `generated_ids` and prints the verdict; a difference
/// beyond the precision's tolerance is an error.
pub fn report_reference(a: &GenerateArgs, g: &Generation) -> Result<(), String> {
    if let Some(exp) = &g.expected {
        let k = exp.len().min(g.ids.len());
        // Ids after a difference follow another context: only the agreeing prefix counts.
        let same = (0..k).take_while(|&i| exp[i] == g.ids[i]).count();
        outln!(
            "reference ids match  {same}/{k} ({:.1}%)",
            100.0 * same as f64 / k.max(1) as f64
        );
        if let Some(i) = (0..k).find(|&i| exp[i] != g.ids[i]) {
            let verdict = flip_within_tolerance(a, g, exp, i).map_err(|why| {
                format!(
                    "generated ids differ from the reference from token {i} (got {}, expected \
                     {}): {why}",
                    g.ids[i], exp[i]
                )
            })?;
            outln!(
                "token {i} differs (got {}, expected {}) within the {} tolerance: {verdict}; the \
                 later tokens follow another context and are not compared",
                g.ids[i],
                exp[i],
                a.precision
            );
            return Ok(());
        }
        if g.ids.len() > exp.len() {
            outln!(
                "(the reference has {} ids; the last {} are not compared)",
                exp.len(),
                g.ids.len() - exp.len()
            );
        }
    }
    Ok(())
}
