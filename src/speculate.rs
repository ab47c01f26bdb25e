//! `llmpu generate --speculate K`: greedy speculative decoding on the emulator.
//!
//! A draft proposes `K` tokens, the target model verifies `K + 1` positions in one run of its
//! decode graph compiled for `K + 1` new tokens over the paged cache (causal among them, the
//! masks shifted into slot coordinates as for one token, `spec/kv-cache.md`), and keeps the
//! proposals up to the first one its own greedy choice disagrees with, plus its own token there.
//! Rejected tokens are rolled back by the cached length alone: their KV rows stay in the blocks
//! past the length, masked, and are overwritten by the next step (no copying).
//!
//! Drafts: a draft model (its own prefill and one-token decode programs, its own paged cache,
//! rolled back the same way), or prompt lookup (the continuation of the latest earlier occurrence
//! of the context's last n-gram; host-side, no model, no modeled cost).
//!
//! Placement: time-sliced (draft and verification take turns on all cores) or, on a target with
//! a `[draft_unit]`, the draft on its reserved cores and the target on the rest, each with its
//! static share of the HBM bandwidth. There the draft keeps drafting while the target verifies,
//! assuming every proposal is accepted and guessing the target's bonus token with its own next
//! prediction; when both hold, the next round's proposals are already (partly) made.
//!
//! The oracle: plain greedy decoding of the same models on the whole target runs first, and
//! every verified position's logits must agree with the plain run's within the precision's
//! tolerance (which also catches a multi-token graph that computes its masks wrongly) and every
//! id must equal the plain id (a bf16 flip is allowed only within the tolerance, as for
//! reference ids). Modeled time: each unit has a clock; a run starts when its unit is free and
//! its inputs exist. Energy: every run's dynamic energy plus the chip's static power over the
//! wall time.

use std::path::Path;

use llmpu_isa::{DType, KvRegion, Program, Target, binary};
use llmpu_runtime::{Report, RunOptions, Session, Tensor, Trace, kv};
use serde_json::json;

use crate::cmd_compile::{compile_module, step_dims};
use crate::cmd_generate::{GenerateArgs, Generation, bind, judge_flip};
use llmpu_runtime::tensor::argmax;

/// Where the draft runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Draft and target take turns on every core.
    TimeSliced,
    /// The draft on the target's `[draft_unit]` cores, the target on the others.
    DraftUnit,
}

/// A draft model loaded with its resident cache.
struct DraftModel {
    session: Session,
    mask_len: usize,
    /// Tokens of `fed` in the draft's cache.
    cached: usize,
    /// What the draft has been fed (and predicted from): the context, then proposals.
    fed: Vec<i64>,
    max_context: usize,
}

impl DraftModel {
    /// One draft step: feeds `seq[cached]` at its position; the prediction is returned when that
    /// was the last token of `seq` (else the step only catches the cache up).
    fn step(&mut self, seq: &[i64]) -> Result<(Option<i64>, Report, Option<Trace>), String> {
        let pos = self.cached;
        let tok = *seq
            .get(pos)
            .ok_or("internal: the draft is fed past its sequence")?;
        if pos + 1 > self.max_context.min(self.mask_len) {
            return Err(format!(
                "the draft's cache of {} tokens is full",
                self.max_context.min(self.mask_len)
            ));
        }
        bind_step(&mut self.session, &[tok], pos, pos + 1)?;
        self.session
            .set_kv_lengths(&[pos as i32])
            .map_err(|e| e.to_string())?;
        let r = self
            .session
            .run()
            .map_err(|e| format!("draft step at position {pos}: {e}"))?;
        self.fed.truncate(pos);
        self.fed.push(tok);
        self.cached = pos + 1;
        let pred = if self.cached == seq.len() {
            let logits = self.session.read("logits").map_err(|e| e.to_string())?;
            Some(argmax(&rows_of(&logits, 1)?[0]))
        } else {
            None
        };
        Ok((pred, r, self.session.take_trace()))
    }

    /// Keeps the cached tokens that agree with `planned` (the context and any proposals still
    /// to verify): the rest are past the new length, masked and overwritten later.
    fn roll_back(&mut self, planned: &[i64]) {
        let keep = self
            .fed
            .iter()
            .zip(planned)
            .take(self.cached)
            .take_while(|(a, b)| a == b)
            .count();
        self.cached = keep;
        self.fed.truncate(keep);
    }

    /// Whether one more step fits the draft's cache.
    fn has_room(&self) -> bool {
        self.cached < self.max_context.min(self.mask_len)
    }
}

enum Draft {
    Model(Box<DraftModel>),
    Lookup { ngram: usize },
}

/// One verification round.
#[derive(Clone, Debug)]
pub struct Round {
    pub proposed: usize,
    pub accepted: usize,
    /// Tokens the round added (accepted proposals plus the target's own token).
    pub emitted: usize,
    pub draft_cycles: u64,
    pub verify_cycles: u64,
    /// Proposals the draft had made during the previous verification and that were kept.
    pub carried: usize,
}

/// What a speculative generation produced, beside the plain run it was checked against.
pub struct Speculation {
    pub ids: Vec<i64>,
    pub baseline: Generation,
    pub rounds: Vec<Round>,
    pub placement: Placement,
    pub k: usize,
    pub draft: String,
    /// Cycles from the first token to the last.
    pub decode_cycles: u64,
    /// Cycles of the target prefill (the first token).
    pub prefill_cycles: u64,
    /// Dynamic energy of every run after the first token plus static energy over that time.
    pub decode_energy_pj: f64,
    pub draft_runs: usize,
    pub clock_ghz: f64,
    /// A bf16 flip within the tolerance, where the comparison with the plain ids stopped.
    pub flip: Option<String>,
    pub trace: Option<Trace>,
}

/// Binds `input_ids`, `position_ids` and `attention_mask` of a decode step: `ids` at positions
/// `first_pos ..`, `live` tokens in the right-aligned mask.
fn bind_step(s: &mut Session, ids: &[i64], first_pos: usize, live: usize) -> Result<(), String> {
    let n = s
        .program()
        .io("attention_mask")
        .and_then(|t| t.shape.last().copied())
        .unwrap_or(0) as usize;
    let mut mask = vec![0i64; n];
    if s.program().io("attention_mask").is_some() {
        kv::decode_mask_row(&mut mask, live).ok_or_else(|| {
            format!("the attention mask has {n} positions, {live} tokens are live")
        })?;
    }
    let positions: Vec<i64> = (first_pos..first_pos + ids.len())
        .map(|x| x as i64)
        .collect();
    let p = s.program().clone();
    for (name, t) in bind(&p, ids, &mask, &positions)? {
        s.bind(&name, &t).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The `rows` last-axis rows of `logits` `[1, rows, vocab]`.
fn rows_of(logits: &Tensor, rows: usize) -> Result<Vec<Vec<f32>>, String> {
    let v = logits.to_f32();
    let n = *logits.shape.last().ok_or("logits are a scalar")? as usize;
    if n == 0 || v.len() < rows * n {
        return Err(format!(
            "logits {:?} hold fewer than {rows} rows",
            logits.shape
        ));
    }
    let base = v.len() - rows * n;
    Ok((0..rows)
        .map(|r| v[base + r * n..base + (r + 1) * n].to_vec())
        .collect())
}

/// Compiles `path` for `target` (`.onnx`), or reads it (`.llmpu`, which must be for the same
/// machine).
fn program(
    path: &Path,
    dims: &[String],
    new_tokens: Option<u64>,
    with_past: bool,
    target: &Target,
    a: &GenerateArgs,
) -> Result<Program, String> {
    if path.extension().is_some_and(|e| e == "llmpu") {
        let p = binary::read_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if p.target != *target {
            return Err(format!(
                "{}: compiled for target `{}`, this run needs `{}` (give the ONNX model)",
                path.display(),
                p.target.name,
                target.name
            ));
        }
        return Ok(p);
    }
    let mut o = crate::cmd_compile::options(&a.target, &a.precision)?;
    o.target = target.clone();
    let mut m = crate::import::import_step(
        path,
        &crate::cmd_generate::merged_dims(a, dims),
        new_tokens,
        with_past,
    )?;
    compile_module(&mut m, &o, &Default::default())?
        .ok_or_else(|| "pipeline stopped early".to_string())
}

fn region_of(p: &Program, path: &Path) -> Result<KvRegion, String> {
    p.kv.clone().ok_or_else(|| {
        format!(
            "{}: the decode program has no paged KV region (is it a decode graph?)",
            path.display()
        )
    })
}

/// What a prefill run gives: its report, the last position's logits, the dense presents (one per
/// KV slot) and its trace.
struct Prefilled {
    report: Report,
    row: Vec<f32>,
    presents: Vec<Tensor>,
    trace: Option<Trace>,
}

/// Runs a prefill program on `prompt`.
fn prefill(
    p: &Program,
    prompt: &[i64],
    opts: &RunOptions,
    region: &KvRegion,
) -> Result<Prefilled, String> {
    let n = prompt.len();
    let positions: Vec<i64> = (0..n as i64).collect();
    let ins = bind(p, prompt, &vec![1; n], &positions)?;
    let mut res = llmpu_runtime::run(p, &ins, opts).map_err(|e| format!("prefill: {e}"))?;
    let logits = res
        .outputs
        .iter()
        .find(|(name, _)| name == "logits")
        .map(|(_, t)| t)
        .ok_or("the prefill has no `logits` output")?;
    let row = rows_of(logits, 1)?.remove(0);
    let mut presents = vec![];
    for s in &region.slots {
        presents.push(
            res.output(&s.present)
                .ok_or_else(|| format!("the prefill has no output `{}` for a KV slot", s.present))?
                .clone(),
        );
    }
    let trace = res.trace.take();
    Ok(Prefilled {
        report: res.report,
        row,
        presents,
        trace,
    })
}

fn load_cache(
    decode: Program,
    region: &KvRegion,
    presents: &[Tensor],
    opts: &RunOptions,
) -> Result<Session, String> {
    let mut s = Session::load(decode, opts.clone()).map_err(|e| e.to_string())?;
    let pasts: Vec<&Tensor> = presents.iter().collect();
    let image = kv::pack(region, &kv::reversed_table(region), &pasts).map_err(|e| e.to_string())?;
    s.write_kv(&image).map_err(|e| e.to_string())?;
    Ok(s)
}

/// One draft step starting at `*at` on the draft's clock (advanced past it), placed on the
/// trace as `label`.
fn traced_step(
    d: &mut DraftModel,
    seq: &[i64],
    label: &str,
    at: &mut u64,
    trace: &mut Option<Trace>,
    core0: u32,
) -> Result<(Option<i64>, Report), String> {
    let (tok, r, t) = d.step(seq)?;
    place(trace, t, *at, core0);
    if let Some(all) = trace.as_mut() {
        all.span("draft", label, *at, *at + r.cycles, json!({}));
    }
    *at += r.cycles;
    Ok((tok, r))
}

/// Places a run's trace on the combined trace.
fn place(all: &mut Option<Trace>, run: Option<Trace>, start: u64, first_core: u32) {
    if let (Some(all), Some(t)) = (all.as_mut(), run) {
        all.append_on(t, start, first_core);
    }
}

/// What a round is checked in.
struct CheckCtx<'a> {
    baseline: &'a Generation,
    tol: llmpu_runtime::compare::Tolerance,
    precision: &'a str,
    round: usize,
    context: usize,
    width: usize,
}

/// The oracle for one round: the logits of every kept position against the plain run's, and
/// every id against the plain id (a flip within the tolerance ends the comparison, in `flip`).
fn check_round(
    c: &CheckCtx,
    done: usize,
    new_tokens: usize,
    emitted: &[i64],
    rows: &[Vec<f32>],
    flip: &mut Option<String>,
) -> Result<(), String> {
    let f32s = |v: &[f32]| Tensor::from_f32(DType::F32, vec![v.len() as u64], v);
    for (i, &id) in emitted.iter().enumerate() {
        let j = done + i;
        if j >= new_tokens || flip.is_some() {
            break;
        }
        let (Some(&want_id), Some(want)) = (c.baseline.ids.get(j), c.baseline.logits.get(j)) else {
            break;
        };
        let cmp = llmpu_runtime::compare::compare("logits", &f32s(&rows[i])?, &f32s(want)?, c.tol)?;
        if !cmp.pass {
            return Err(format!(
                "round {} (context {}): the verify program's logits for token {j} differ from \
                 plain decoding beyond the {} tolerance (max |diff| {:.3e}, cosine {:.6}): the \
                 {}-token decode program does not compute what the one-token program does",
                c.round, c.context, c.precision, cmp.max_abs, cmp.cosine, c.width
            ));
        }
        if id != want_id {
            let why = judge_flip(&rows[i], want, want_id, id, c.tol).map_err(|why| {
                format!(
                    "round {}: token {j} is {id}, plain decoding gives {want_id}: {why}",
                    c.round
                )
            })?;
            *flip = Some(format!(
                "token {j} is {id} where plain decoding gives {want_id}, within the {} tolerance \
                 ({why}); later tokens follow another context and are not compared",
                c.precision
            ));
        }
    }
    Ok(())
}

/// Runs speculative generation and the plain generation it is checked against.
pub fn speculate(a: &GenerateArgs, k: usize) -> Result<Speculation, String> {
    if k == 0 {
        return Err("--speculate 0: propose at least one token per round".into());
    }
    if a.verify {
        return Err(
            "--verify runs plain decoding in lockstep with the interpreter; --speculate checks \
             every verified position against plain decoding instead (drop one of them)"
                .into(),
        );
    }
    let draft_kind = match (&a.draft_prefill, &a.draft_decode, a.prompt_lookup) {
        (Some(_), Some(_), None) => "model",
        (None, None, Some(n)) if n >= 1 => "prompt-lookup",
        (None, None, Some(_)) => return Err("--prompt-lookup 0: the n-gram needs a token".into()),
        (None, None, None) => {
            return Err(
                "--speculate needs a draft: --draft-prefill and --draft-decode (a draft model), \
                 or --prompt-lookup N (self-speculation from the context)"
                    .into(),
            );
        }
        _ => {
            return Err(
                "give both --draft-prefill and --draft-decode, or --prompt-lookup alone".into(),
            );
        }
    };
    let full = Target::resolve(&a.target).map_err(|e| e.to_string())?;
    let placement = match a.draft_placement.as_deref() {
        None if full.draft_unit.is_some() && draft_kind == "model" => Placement::DraftUnit,
        None | Some("time-sliced") => Placement::TimeSliced,
        Some("draft-unit") if full.draft_unit.is_none() => {
            return Err(format!(
                "--draft-placement draft-unit: target `{}` declares no [draft_unit]",
                full.name
            ));
        }
        Some("draft-unit") if draft_kind != "model" => {
            return Err("--draft-placement draft-unit needs a draft model".into());
        }
        Some("draft-unit") => Placement::DraftUnit,
        Some(p) => {
            return Err(format!(
                "--draft-placement `{p}`: expected time-sliced or draft-unit{}",
                llmpu_isa::suggest::did_you_mean(["time-sliced", "draft-unit"], p)
            ));
        }
    };
    let (main_t, draft_t) = match placement {
        Placement::DraftUnit => full.draft_partition().ok_or("no draft unit")?,
        Placement::TimeSliced => (full.clone(), full.clone()),
    };
    let draft_core0 = match placement {
        Placement::DraftUnit => main_t.cores,
        Placement::TimeSliced => 0,
    };
    let (prompt, _) = crate::cmd_generate::parse_prompt(&a.prompt)?;
    let n = prompt.len();
    // The plain run: the oracle and the figures to beat, on the whole target, with room for the
    // last round's proposals.
    let new_tokens = a.new_tokens.unwrap_or(0);
    let mut plain = GenerateArgs::plain(a);
    let baseline = crate::cmd_generate::generate(&plain)?;
    let new_tokens = if new_tokens == 0 {
        baseline.ids.len()
    } else {
        new_tokens
    };
    if new_tokens < 2 {
        return Err(format!(
            "--speculate with {new_tokens} new token(s): the first comes from the prefill, so \
             there is nothing to speculate on (give --new-tokens 2 or more)"
        ));
    }
    let max_context = a.max_context.unwrap_or((n + new_tokens + k) as u64);
    let last_l = n + new_tokens - 2;
    if (last_l + k + 1) as u64 > max_context {
        return Err(format!(
            "--max-context {max_context} cannot hold the last round: {last_l} cached + {} \
             verified tokens",
            k + 1
        ));
    }
    plain.max_context = Some(max_context);
    let mut opts = RunOptions {
        trace: a.trace.is_some(),
        check_uninit: a.check_uninit,
        ..RunOptions::default()
    };
    if let Some(m) = a.max_instructions {
        opts.max_instructions = m;
    }
    let kk = (k + 1) as u64;
    let pre_dims = crate::cmd_generate::prefill_dims(n as u64);
    let target_prefill = program(&a.prefill, &pre_dims, None, false, &main_t, a)?;
    let verify = program(
        &a.decode,
        &step_dims(max_context, 1, kk)?,
        Some(kk),
        true,
        &main_t,
        a,
    )?;
    let vregion = region_of(&verify, &a.decode).map_err(|e| format!("--decode {e}"))?;
    if vregion.new_tokens != kk || vregion.batch != 1 {
        return Err(format!(
            "{}: the verify program takes {} new tokens in a batch of {}; --speculate {k} needs \
             {kk} in a batch of 1",
            a.decode.display(),
            vregion.new_tokens,
            vregion.batch
        ));
    }
    let mut trace = a
        .trace
        .as_ref()
        .map(|_| Trace::new(full.clock_ghz, full.cores));
    let pre = prefill(&target_prefill, &prompt, &opts, &vregion)?;
    place(&mut trace, pre.trace, 0, 0);
    let mut ids = vec![argmax(&pre.row)];
    let mut t_main = pre.report.cycles;
    let t_first = t_main;
    let mut target = load_cache(verify, &vregion, &pre.presents, &opts)?;
    if let Some(all) = trace.as_mut() {
        all.span(
            "target",
            &format!("prefill ({n} tokens)"),
            0,
            t_main,
            json!({}),
        );
    }
    let mut energy = 0.0;
    // Time-sliced, draft steps run on the target's clock; on a draft unit, on their own.
    let mut t_draft = 0;
    let mut draft_runs = 0;
    let mut draft = match draft_kind {
        "model" => {
            let (dp, dd) = (
                a.draft_prefill.as_ref().ok_or("no draft prefill")?,
                a.draft_decode.as_ref().ok_or("no draft decode")?,
            );
            let dprog = program(dd, &step_dims(max_context, 1, 1)?, None, true, &draft_t, a)?;
            let dregion = region_of(&dprog, dd).map_err(|e| format!("--draft-decode {e}"))?;
            let pprog = program(dp, &pre_dims, None, false, &draft_t, a)?;
            let Prefilled {
                report: r,
                presents: pres,
                trace: t,
                ..
            } = prefill(&pprog, &prompt, &opts, &dregion).map_err(|e| format!("draft {e}"))?;
            let start = match placement {
                Placement::DraftUnit => 0,
                Placement::TimeSliced => t_main,
            };
            place(&mut trace, t, start, draft_core0);
            if let Some(all) = trace.as_mut() {
                all.span("draft", "draft prefill", start, start + r.cycles, json!({}));
            }
            t_draft = start + r.cycles;
            energy += r.energy.dynamic_pj;
            draft_runs += 1;
            let session = load_cache(dprog, &dregion, &pres, &opts)?;
            let mask_len = session
                .program()
                .io("attention_mask")
                .and_then(|t| t.shape.last().copied())
                .unwrap_or(max_context) as usize;
            let holds = (mask_len as u64).min(dregion.max_blocks * dregion.block_tokens);
            let need = (n + new_tokens + k - 1) as u64;
            if holds < need {
                return Err(format!(
                    "--draft-decode {}: the draft's decode program holds {holds} tokens; {n} \
                     prompt + {new_tokens} new tokens with {k} proposals need {need} (compile it \
                     with --max-context {need})",
                    dd.display()
                ));
            }
            Draft::Model(Box::new(DraftModel {
                session,
                mask_len,
                cached: n,
                fed: prompt.clone(),
                max_context: max_context as usize,
            }))
        }
        _ => Draft::Lookup {
            ngram: a.prompt_lookup.unwrap_or(1),
        },
    };
    let mut rounds = vec![];
    // Proposals the draft unit made during the last verification, with the cycle each was ready.
    let mut carried: Vec<(i64, u64)> = vec![];
    let mut flip = None;
    let tol = match a.precision.as_str() {
        "fp32" => llmpu_runtime::compare::Tolerance::FP32,
        _ => llmpu_runtime::compare::Tolerance::BF16,
    };
    let mut progress = crate::progress::Progress::new("speculate", new_tokens as u64);
    while ids.len() < new_tokens {
        let round = rounds.len() + 1;
        progress.set(ids.len() as u64, &format!("round {round}"));
        let ctx: Vec<i64> = prompt.iter().chain(&ids).copied().collect();
        let l = ctx.len() - 1;
        if placement == Placement::TimeSliced {
            t_draft = t_draft.max(t_main);
        }
        // Proposals past the tokens still wanted would be cut: draft at most `remaining − 1`
        // (the target's own token is the last), and pad the verification's fixed width.
        let remaining = new_tokens - ids.len();
        let q = k.min(remaining - 1);
        let mut made: Vec<(i64, u64)> = std::mem::take(&mut carried);
        made.truncate(q);
        let kept = made.len();
        let mut draft_cycles = 0;
        match &mut draft {
            Draft::Lookup { ngram } => {
                made = llmpu_runtime::serve::prompt_lookup(&ctx, *ngram, q)
                    .into_iter()
                    .map(|t| (t, t_main))
                    .collect()
            }
            Draft::Model(d) => {
                while made.len() < q {
                    let seq: Vec<i64> = ctx
                        .iter()
                        .copied()
                        .chain(made.iter().map(|p| p.0))
                        .collect();
                    let (tok, r) =
                        traced_step(d, &seq, "draft step", &mut t_draft, &mut trace, draft_core0)
                            .map_err(|e| format!("round {round}: {e}"))?;
                    draft_runs += 1;
                    draft_cycles += r.cycles;
                    energy += r.energy.dynamic_pj;
                    if let Some(tok) = tok {
                        made.push((tok, t_draft));
                    }
                }
            }
        }
        let mut proposals: Vec<i64> = made.iter().map(|p| p.0).collect();
        let pad = proposals.last().copied().unwrap_or(ctx[l]);
        proposals.resize(k, pad);
        let ready = made.iter().map(|p| p.1).max().unwrap_or(t_main);
        // Verify the last token and the proposals at positions l ..= l + k.
        let start = match placement {
            Placement::TimeSliced => t_draft.max(t_main),
            Placement::DraftUnit => ready.max(t_main),
        };
        let feed: Vec<i64> = std::iter::once(ctx[l])
            .chain(proposals.iter().copied())
            .collect();
        bind_step(&mut target, &feed, l, l + k + 1)?;
        target
            .set_kv_lengths(&[l as i32])
            .map_err(|e| e.to_string())?;
        let r = target
            .run()
            .map_err(|e| format!("verify round {round}: {e}"))?;
        place(&mut trace, target.take_trace(), start, 0);
        if let Some(all) = trace.as_mut() {
            all.span(
                "target",
                &format!("verify {round} (context {})", l + 1),
                start,
                start + r.cycles,
                json!({"proposed": proposals}),
            );
        }
        let verify_end = start + r.cycles;
        energy += r.energy.dynamic_pj;
        let logits = target.read("logits").map_err(|e| e.to_string())?;
        let rows = rows_of(&logits, k + 1)?;
        let greedy: Vec<i64> = rows.iter().map(|row| argmax(row)).collect();
        let accepted = (0..q).take_while(|&i| proposals[i] == greedy[i]).count();
        // Meanwhile a draft unit drafts on, as if every proposal were kept.
        let mut ahead: Vec<(i64, u64)> = vec![];
        let last_round = remaining <= k + 1;
        if let (Draft::Model(d), Placement::DraftUnit, false) = (&mut draft, placement, last_round)
        {
            while t_draft < verify_end && ahead.len() <= k && d.has_room() {
                let seq: Vec<i64> = ctx
                    .iter()
                    .chain(&proposals)
                    .copied()
                    .chain(ahead.iter().map(|p| p.0))
                    .collect();
                let (tok, r) = traced_step(
                    d,
                    &seq,
                    "draft ahead",
                    &mut t_draft,
                    &mut trace,
                    draft_core0,
                )
                .map_err(|e| format!("round {round}: {e}"))?;
                draft_runs += 1;
                draft_cycles += r.cycles;
                energy += r.energy.dynamic_pj;
                if let Some(tok) = tok {
                    ahead.push((tok, t_draft));
                }
            }
        }
        let mut emitted: Vec<i64> = proposals[..accepted].to_vec();
        emitted.push(greedy[accepted]);
        emitted.truncate(remaining);
        check_round(
            &CheckCtx {
                baseline: &baseline,
                tol,
                precision: &a.precision,
                round,
                context: l + 1,
                width: k + 1,
            },
            ids.len(),
            new_tokens,
            &emitted,
            &rows,
            &mut flip,
        )?;
        if let Draft::Model(d) = &mut draft {
            // The first token ahead guessed the target's own token after a fully kept round.
            if accepted == k && q == k && ahead.first().map(|p| p.0) == Some(greedy[k]) {
                carried = ahead[1..].to_vec();
            }
            let planned: Vec<i64> = ctx
                .iter()
                .chain(&emitted)
                .copied()
                .chain(carried.iter().map(|p| p.0))
                .collect();
            d.roll_back(&planned);
        }
        rounds.push(Round {
            proposed: q,
            accepted,
            emitted: emitted.len(),
            draft_cycles,
            verify_cycles: r.cycles,
            carried: kept,
        });
        t_main = verify_end;
        ids.extend(emitted);
    }
    progress.finish();
    if flip.is_none() && ids != baseline.ids[..new_tokens.min(baseline.ids.len())] {
        return Err(format!(
            "speculative ids {ids:?} differ from plain decoding's {:?}",
            baseline.ids
        ));
    }
    let decode_cycles = t_main - t_first;
    let static_pj = full.energy.static_w * decode_cycles as f64 / (full.clock_ghz * 1e9) * 1e12;
    Ok(Speculation {
        ids,
        baseline,
        rounds,
        placement,
        k,
        draft: draft_kind.into(),
        decode_cycles,
        prefill_cycles: t_first,
        decode_energy_pj: energy + static_pj,
        draft_runs,
        clock_ghz: full.clock_ghz,
        flip,
        trace,
    })
}

/// Runs `llmpu generate --speculate K` and prints the comparison with plain decoding.
pub fn run(a: &GenerateArgs, k: usize) -> Result<(), String> {
    let s = speculate(a, k)?;
    let hz = s.clock_ghz * 1e9;
    let join = |v: &[i64]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    outln!("generated {} tokens: {}", s.ids.len(), join(&s.ids));
    let place = match s.placement {
        Placement::TimeSliced => "time-sliced with the target on every core".to_string(),
        Placement::DraftUnit => {
            let t = Target::resolve(&a.target).map_err(|e| e.to_string())?;
            let d = t.draft_unit.as_ref().ok_or("no draft unit")?;
            format!(
                "on the draft unit ({} of {} cores, {:.0}% of the HBM bandwidth), drafting ahead \
                 while the target verifies on the other {}",
                d.cores,
                t.cores,
                d.hbm_share * 100.0,
                t.cores - d.cores
            )
        }
    };
    outln!(
        "speculative decoding: k = {}, draft: {}, {place}",
        s.k,
        s.draft
    );
    outln!("\nround  context  accepted  emitted  carried  draft cycles  verify cycles");
    let (prompt, _) = crate::cmd_generate::parse_prompt(&a.prompt)?;
    // Tokens of the context at a round's start (the last one not yet cached).
    let mut ctx = prompt.len() + 1;
    for (i, r) in s.rounds.iter().enumerate() {
        outln!(
            "{:>5}  {:>7}  {:>5}/{:<2}  {:>7}  {:>7}  {:>12}  {:>13}",
            i + 1,
            ctx,
            r.accepted,
            r.proposed,
            r.emitted,
            r.carried,
            r.draft_cycles,
            r.verify_cycles
        );
        ctx += r.emitted;
    }
    let proposed: usize = s.rounds.iter().map(|r| r.proposed).sum();
    let accepted: usize = s.rounds.iter().map(|r| r.accepted).sum();
    let emitted: usize = s.rounds.iter().map(|r| r.emitted).sum();
    outln!(
        "\nacceptance rate       {:.1}% ({accepted} of {proposed} proposals)",
        100.0 * accepted as f64 / proposed.max(1) as f64
    );
    outln!(
        "tokens per target step {:.2} ({emitted} tokens in {} verification runs; {} draft runs)",
        emitted as f64 / s.rounds.len().max(1) as f64,
        s.rounds.len(),
        s.draft_runs
    );
    let b = &s.baseline;
    let steps = b.steps.len().max(1) as f64;
    let plain_tpot = b.steps.iter().map(|r| r.cycles as f64).sum::<f64>() / steps / hz;
    let plain_energy = b.steps.iter().map(|r| r.energy.total_pj).sum::<f64>() / steps * 1e-6;
    let after = (s.ids.len().max(2) - 1) as f64;
    let tpot = s.decode_cycles as f64 / after / hz;
    let energy = s.decode_energy_pj / after * 1e-6;
    outln!("\n                      plain          speculative");
    outln!(
        "time to first token   {:>9.3} µs   {:>9.3} µs",
        b.prefill.cycles as f64 / hz * 1e6,
        s.prefill_cycles as f64 / hz * 1e6
    );
    outln!(
        "time per output token {:>9.3} µs   {:>9.3} µs   (speed-up {:.2}×)",
        plain_tpot * 1e6,
        tpot * 1e6,
        plain_tpot / tpot.max(1e-30)
    );
    outln!(
        "tokens/s              {:>9.1}      {:>9.1}",
        1.0 / plain_tpot.max(1e-30),
        1.0 / tpot.max(1e-30)
    );
    outln!(
        "energy per token      {:>9.3} µJ   {:>9.3} µJ   ({:.2}× plain's)",
        plain_energy,
        energy,
        energy / plain_energy.max(1e-30)
    );
    match &s.flip {
        None => outln!(
            "plain greedy ids      identical ({} of {})",
            s.ids.len(),
            s.ids.len()
        ),
        Some(f) => outln!("plain greedy ids      {f}"),
    }
    if let (Some(path), Some(t)) = (&a.trace, &s.trace) {
        std::fs::write(path, t.to_chrome_json()).map_err(|e| format!("{}: {e}", path.display()))?;
        outln!(
            "trace                 {} (tracks `target` and `draft`; open in ui.perfetto.dev)",
            path.display()
        );
    }
    // The speculative ids are the plain ones (up to a flip within the tolerance, reported above).
    crate::cmd_generate::report_reference(a, &s.baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(rows: &[Vec<f32>]) -> Generation {
        Generation {
            ids: rows.iter().map(|r| argmax(r)).collect(),
            expected: None,
            logits: rows.to_vec(),
            verified: None,
            prefill: Report::default(),
            steps: vec![],
            weight_bytes: 0,
            kv_bytes: vec![],
            contexts: vec![],
            kv_read: vec![],
            trace: None,
        }
    }

    #[test]
    fn a_verified_position_whose_logits_are_not_the_plain_ones_is_an_error() {
        let plain = vec![
            vec![0.0, 3.0, 1.0],
            vec![2.0, 0.5, 0.0],
            vec![0.0, 0.0, 4.0],
        ];
        let b = baseline(&plain);
        let c = CheckCtx {
            baseline: &b,
            tol: llmpu_runtime::compare::Tolerance::FP32,
            precision: "fp32",
            round: 2,
            context: 10,
            width: 3,
        };
        let mut flip = None;
        // The same rows and ids: fine.
        check_round(&c, 1, 3, &[0, 2], &plain[1..], &mut flip).unwrap();
        assert!(flip.is_none());
        // A row that saw a token it must not (a broken causal mask among the new tokens).
        let wrong = vec![vec![2.0, 0.5, 0.7], plain[2].clone()];
        let e = check_round(&c, 1, 3, &[0, 2], &wrong, &mut flip).unwrap_err();
        assert!(
            e.starts_with("round 2 (context 10): the verify program's logits for token 1"),
            "{e}"
        );
        assert!(e.contains("3-token decode program"), "{e}");
        // Positions past the tokens asked for are not compared.
        check_round(
            &c,
            2,
            3,
            &[2, 9],
            &[plain[2].clone(), vec![9.0; 3]],
            &mut flip,
        )
        .unwrap();
    }
}
