//! The emulator behind `llmpu serve-sim`: a [`serve::Engine`] that runs compiled prefill and
//! batched decode programs on [`Session`]s whose paged KV pool is shared by the batch.
//!
//! Decode programs are compiled (by the caller's `decode` closure) per batch bucket `B`, all with
//! the same pool size and blocks per sequence, and loaded lazily; each keeps its own HBM. A
//! prefill whose first `cached` tokens are already in the pool (a prefix-cache hit) runs the
//! decode graph compiled for batch 1 and `C` new tokens instead (the caller's `chunk` closure,
//! one program per `C`, cached): the region header gets the block table and the cached length,
//! `input_ids` / `position_ids` the suffix and its positions `cached .. cached + C − 1`, the
//! right-aligned mask `cached + C` live positions, and the next token is the argmax of the last
//! position's logits — a chunked prefill. Sessions are keyed by (batch, new tokens). Before
//! a step the engine writes every row's block-table row (unused entries and idle rows point at the
//! null block 0) and cached length into the region header and binds `input_ids`, `position_ids`
//! and `attention_mask` (1 for positions `0 ..= cached`, 0 after; idle rows attend to position 0
//! only). When the bucket changes, the pools move to the new session by a host-side copy (the
//! bucket sessions are one program's compiled variants sharing one memory on a real device; the
//! copy is not modeled traffic). Prefills run the prefill program compiled for the context
//! length (cached per length) on a fresh HBM; its `present_*` outputs are written into the
//! request's blocks of the resident pool (host-side, as `llmpu generate` packs them), and the
//! program's cycles are the modeled prefill time.
//!
//! The engine also copies, reads and writes single blocks of the live pool (copy-on-write of a
//! shared block, swap-out to and swap-in from the second KV tier) with `read_kv_at` /
//! `write_kv_at` — the bytes really leave and re-enter the emulated pool.
//!
//! Invariant: at most one session — `current` — holds the live pool; every prefill and block
//! operation works there and every switch copies it before the next run; every session's region
//! has the same pool layout (blocks, blocks per sequence, block size, dtype, slots).

use std::collections::HashMap;

use llmpu_isa::{IoDir, KvRegion, Program};

use crate::serve::{Engine, Row, RunCost};
use crate::tensor::argmax;
use crate::{Report, RunOptions, Session, Tensor};

/// Builds a program: the prefill for a context length, or the decode for a batch bucket.
pub type Build<'a> = Box<dyn FnMut(usize) -> Result<Program, String> + 'a>;

/// Builds the decode graph for `(batch, new tokens)` with more than one new token: a chunked
/// prefill (batch 1) or a speculative verification step (a batch bucket, `k + 1` tokens).
pub type BuildWide<'a> = Box<dyn FnMut(usize, usize) -> Result<Program, String> + 'a>;

/// A session's key: (batch, new tokens per run).
type Key = (usize, u64);

/// The emulator engine.
pub struct EmuEngine<'a> {
    prefill: Build<'a>,
    decode: Build<'a>,
    chunk: BuildWide<'a>,
    opts: RunOptions,
    prefills: HashMap<usize, Program>,
    sessions: HashMap<Key, Session>,
    current: Option<Key>,
    /// The bucket whose session holds the pool before the first decode step.
    home: usize,
    /// The region of the first decode program (every bucket must agree on pools).
    region: Option<KvRegion>,
    /// The speculative draft model: an engine of its own over a pool with the same block
    /// numbers (`serve::SpecDraft::Model`).
    draft: Option<Box<EmuEngine<'a>>>,
}

impl<'a> EmuEngine<'a> {
    /// An engine whose pool starts in the session of batch bucket `home` (the first one used).
    pub fn new(
        prefill: Build<'a>,
        decode: Build<'a>,
        chunk: BuildWide<'a>,
        opts: RunOptions,
        home: usize,
    ) -> EmuEngine<'a> {
        EmuEngine {
            home,
            prefill,
            decode,
            chunk,
            opts,
            prefills: HashMap::new(),
            sessions: HashMap::new(),
            current: None,
            region: None,
            draft: None,
        }
    }

    /// This engine with `draft` running the speculative draft model.
    pub fn with_draft(mut self, draft: EmuEngine<'a>) -> EmuEngine<'a> {
        self.draft = Some(Box::new(draft));
        self
    }

    /// The KV region of the decode programs (after the first one was built).
    pub fn region(&self) -> Option<&KvRegion> {
        self.region.as_ref()
    }

    /// Bytes of constant data (weights) of the decode program of the smallest batch bucket
    /// used (deterministic: not whichever session a hash map yields first).
    pub fn weight_bytes(&self) -> u64 {
        self.sessions
            .iter()
            .filter(|(k, _)| k.1 == 1)
            .min_by_key(|(k, _)| **k)
            .map(|(_, s)| s.program().data.iter().map(|d| d.bytes.len() as u64).sum())
            .unwrap_or(0)
    }

    /// The session of `key` = (batch, new tokens), holding the live pool (built, loaded and
    /// filled as needed).
    fn session(&mut self, key: Key) -> Result<&mut Session, String> {
        let (bucket, new_tokens) = key;
        if !self.sessions.contains_key(&key) {
            let p = if new_tokens == 1 {
                (self.decode)(bucket)?
            } else {
                (self.chunk)(bucket, new_tokens as usize)?
            };
            let kv =
                p.kv.clone()
                    .ok_or("the decode program has no paged KV region (is it a decode graph?)")?;
            if kv.batch != bucket as u64 || kv.new_tokens != new_tokens {
                return Err(format!(
                    "decode program for batch {bucket} and {new_tokens} new tokens has a region \
                     of batch {} with {} new tokens per run",
                    kv.batch, kv.new_tokens
                ));
            }
            if let Some(r) = &self.region {
                let same = r.num_blocks == kv.num_blocks
                    && r.max_blocks == kv.max_blocks
                    && r.block_tokens == kv.block_tokens
                    && r.dtype == kv.dtype
                    && r.slots.len() == kv.slots.len()
                    && r.slots
                        .iter()
                        .zip(&kv.slots)
                        .all(|(a, b)| (a.heads, a.head_dim) == (b.heads, b.head_dim));
                if !same {
                    return Err(format!(
                        "decode program for batch {bucket} and {new_tokens} new tokens has a \
                         different KV pool layout"
                    ));
                }
            } else {
                self.region = Some(kv);
            }
            let s = Session::load(p, self.opts.clone()).map_err(|e| e.to_string())?;
            self.sessions.insert(key, s);
        }
        if let Some(from) = self.current.filter(|&c| c != key)
            && !self.opts.timing_only
        {
            let src = &self.sessions[&from];
            let kv = src.program().kv.clone().ok_or("no KV region")?;
            let mut pools = vec![];
            for s in &kv.slots {
                let bytes = kv.block_bytes(s).unwrap_or(0) * kv.num_blocks;
                pools.push(
                    src.read_kv_at(s.pool_addr - kv.hbm_addr, bytes)
                        .map_err(|e| e.to_string())?,
                );
            }
            let dst = self.sessions.get_mut(&key).ok_or("no session")?;
            let dkv = dst.program().kv.clone().ok_or("no KV region")?;
            for (s, bytes) in dkv.slots.iter().zip(pools) {
                dst.write_kv_at(s.pool_addr - dkv.hbm_addr, &bytes)
                    .map_err(|e| e.to_string())?;
            }
        }
        self.current = Some(key);
        self.sessions
            .get_mut(&key)
            .ok_or_else(|| "no session".into())
    }

    /// The session holding the live pool (`home`'s decode session before the first run).
    fn pool_session(&mut self) -> Result<&mut Session, String> {
        let key = self.current.unwrap_or((self.home, 1));
        self.session(key)
    }

    /// `(offset from the region start, bytes)` of physical block `block` in each slot's pool.
    fn block_spans(kv: &KvRegion, block: u32) -> Result<Vec<(u64, u64)>, String> {
        if block as u64 >= kv.num_blocks {
            return Err(format!(
                "KV block {block} is outside the pool of {} blocks",
                kv.num_blocks
            ));
        }
        kv.slots
            .iter()
            .map(|s| {
                let b = kv
                    .block_bytes(s)
                    .ok_or("a KV slot's block size overflows")?;
                Ok((s.pool_addr - kv.hbm_addr + block as u64 * b, b))
            })
            .collect()
    }

    /// One batched run of the decode graph compiled for `n = feeds[0].len()` new tokens: row
    /// `b` feeds `feeds[b]` at positions `cached ..`; returns each row's `n` greedy ids.
    fn step(
        &mut self,
        bucket: usize,
        rows: &[Row],
        feeds: &[Vec<i64>],
    ) -> Result<(Vec<Vec<i64>>, RunCost), String> {
        if rows.len() > bucket || feeds.len() != rows.len() {
            return Err(format!(
                "{} rows ({} feeds) in a batch of {bucket}",
                rows.len(),
                feeds.len()
            ));
        }
        let n = feeds.first().map(Vec::len).unwrap_or(1).max(1);
        if feeds.iter().any(|f| f.len() != n) {
            return Err("rows feed different numbers of tokens".into());
        }
        let timing_only = self.opts.timing_only;
        let s = self.session((bucket, n as u64))?;
        let kv = s.program().kv.clone().ok_or("no KV region")?;
        let mb = kv.max_blocks as usize;
        let mask_len = s
            .program()
            .io("attention_mask")
            .and_then(|t| t.shape.last().copied())
            .unwrap_or(kv.past_len + n as u64) as usize;
        let mut table = vec![0i32; bucket * mb];
        let mut lengths = vec![0i32; bucket];
        let (mut ids, mut pos, mut mask) = (
            vec![0; bucket * n],
            vec![0; bucket * n],
            vec![0; bucket * mask_len],
        );
        let mut kv_bytes = 0;
        let tb = token_bytes(&kv);
        for b in 0..bucket {
            let (cached, blocks) = match rows.get(b) {
                Some(r) => (r.cached as usize, r.blocks),
                None => (0, &[][..]),
            };
            if blocks.len() > mb || cached + n > mask_len {
                return Err(format!(
                    "row {b}: {} blocks / {} tokens exceed the program's {mb} blocks / {mask_len} \
                     positions",
                    blocks.len(),
                    cached + n
                ));
            }
            for (j, &blk) in blocks.iter().enumerate() {
                table[b * mb + j] = blk as i32;
            }
            lengths[b] = cached as i32;
            for t in 0..n {
                ids[b * n + t] = feeds.get(b).map(|f| f[t]).unwrap_or(0);
                pos[b * n + t] = (cached + t) as i64;
            }
            crate::kv::decode_mask_row(&mut mask[b * mask_len..(b + 1) * mask_len], cached + n)
                .ok_or("mask row shorter than the live tokens")?;
            if b < rows.len() {
                let live = (cached as u64 + n as u64).div_ceil(kv.block_tokens);
                kv_bytes += live * kv.block_tokens * tb + n as u64 * tb;
            }
        }
        s.set_kv_header(&table, &lengths)
            .map_err(|e| e.to_string())?;
        let p = s.program().clone();
        for (name, t) in llm_inputs(&p, &ids, &mask, &pos, "serve-sim")? {
            s.bind(&name, &t).map_err(|e| e.to_string())?;
        }
        let report = s.run().map_err(|e| e.to_string())?;
        let trace = s.take_trace();
        let toks = if timing_only {
            vec![vec![0; n]; rows.len()]
        } else {
            let logits = s.read("logits").map_err(|e| e.to_string())?;
            let all = argmax_positions(&logits, bucket * n)?;
            all.chunks(n)
                .take(rows.len())
                .map(<[i64]>::to_vec)
                .collect()
        };
        Ok((toks, cost(&report, kv_bytes, trace)))
    }

    /// A prefill of `tokens[cached..]` after the first `cached` tokens already in `blocks`: a
    /// [`EmuEngine::step`] of batch 1 feeding `C = tokens.len() − cached` new tokens; the next
    /// token is the last position's greedy id.
    fn prefill_chunk(
        &mut self,
        tokens: &[i64],
        cached: usize,
        blocks: &[u32],
    ) -> Result<(i64, RunCost), String> {
        let row = Row {
            token: tokens[cached],
            cached: cached as u64,
            blocks,
        };
        let (ids, cost) = self.step(1, &[row], &[tokens[cached..].to_vec()])?;
        Ok((ids[0].last().copied().unwrap_or(0), cost))
    }
}

fn cost(r: &Report, kv_bytes: u64, trace: Option<crate::Trace>) -> RunCost {
    RunCost {
        cycles: r.cycles,
        hbm_read: r.hbm_read_bytes,
        hbm_write: r.hbm_write_bytes,
        kv_bytes,
        energy_pj: r.energy.total_pj,
        trace,
    }
}

/// The standard LLM inputs of `p` from values: `input_ids`, `attention_mask`, `position_ids`
/// (checked against their descriptors' sizes) and an empty tensor for every input with no
/// elements (the past of a decoder with past run as its own prefill, as Optimum exports one model
/// for both). Any other input is an error naming it and `what` (the command).
pub fn llm_inputs(
    p: &Program,
    ids: &[i64],
    mask: &[i64],
    pos: &[i64],
    what: &str,
) -> Result<Vec<(String, Tensor)>, String> {
    let mut out = vec![];
    for io in p.io.iter().filter(|t| t.dir == IoDir::Input) {
        if io.elements() == Some(0) {
            out.push((io.name.clone(), Tensor::zeros(io.dtype, io.shape.clone())));
            continue;
        }
        let v = match io.name.as_str() {
            "input_ids" => ids,
            "attention_mask" => mask,
            "position_ids" => pos,
            n => return Err(format!("input `{n}` is not one {what} can feed")),
        };
        if io.elements() != Some(v.len() as u64) {
            return Err(format!(
                "input `{}` has shape {:?}, {what} has {} values for it",
                io.name,
                io.shape,
                v.len()
            ));
        }
        out.push((
            io.name.clone(),
            Tensor::from_ints(io.dtype, io.shape.clone(), v)?,
        ));
    }
    Ok(out)
}

/// Argmax of each of the last-axis rows of `logits` `[rows, …, vocab]`, taking each row's last
/// position.
fn argmax_rows(logits: &Tensor, rows: usize) -> Result<Vec<i64>, String> {
    let v = logits.to_f32();
    let n = *logits.shape.last().ok_or("logits are a scalar")? as usize;
    let per = v.len() / rows.max(1);
    if n == 0 || per < n {
        return Err("empty logits".into());
    }
    Ok((0..rows)
        .map(|b| argmax(&v[b * per + per - n..(b + 1) * per]))
        .collect())
}

/// Argmax of each of the `n` last-axis rows of `logits` `[…, vocab]` (every position).
fn argmax_positions(logits: &Tensor, n: usize) -> Result<Vec<i64>, String> {
    let v = logits.to_f32();
    let w = *logits.shape.last().ok_or("logits are a scalar")? as usize;
    if w == 0 || v.len() != n * w {
        return Err(format!("logits {:?} are not {n} rows", logits.shape));
    }
    Ok(v.chunks(w).map(argmax).collect())
}

/// KV bytes of one token over every slot.
fn token_bytes(kv: &KvRegion) -> u64 {
    kv.slots
        .iter()
        .map(|s| s.heads * s.head_dim * kv.dtype.size())
        .sum()
}

impl Engine for EmuEngine<'_> {
    fn prefill(
        &mut self,
        tokens: &[i64],
        cached: usize,
        blocks: &[u32],
    ) -> Result<(i64, RunCost), String> {
        if cached >= tokens.len() {
            return Err(format!(
                "a prefill of {} tokens with {cached} cached computes nothing",
                tokens.len()
            ));
        }
        if cached > 0 {
            return self.prefill_chunk(tokens, cached, blocks);
        }
        let n = tokens.len();
        if !self.prefills.contains_key(&n) {
            let p = (self.prefill)(n)?;
            self.prefills.insert(n, p);
        }
        let p = &self.prefills[&n];
        let pos: Vec<i64> = (0..n as i64).collect();
        let ins = llm_inputs(p, tokens, &vec![1; n], &pos, "serve-sim")?;
        let res = crate::run(p, &ins, &self.opts).map_err(|e| e.to_string())?;
        let tok = if self.opts.timing_only {
            0
        } else {
            let logits = res
                .outputs
                .iter()
                .find(|(name, _)| name == "logits")
                .map(|(_, t)| t)
                .ok_or("the prefill has no `logits` output")?;
            argmax_rows(logits, 1)?[0]
        };
        // The live pool is in the current session (`home` before the first step).
        let timing_only = self.opts.timing_only;
        let s = self.pool_session()?;
        let kv = s.program().kv.clone().ok_or("no KV region")?;
        let bt = kv.block_tokens as usize;
        if !timing_only {
            for slot in &kv.slots {
                let t = res.output(&slot.present).ok_or_else(|| {
                    format!("the prefill has no output `{}` for a KV slot", slot.present)
                })?;
                let (h, d) = (slot.heads as usize, slot.head_dim as usize);
                if t.dtype != kv.dtype || t.shape != [1, h as u64, n as u64, d as u64] {
                    return Err(format!(
                        "prefill output `{}` is {}, the KV slot holds [1, {h}, {n}, {d}] {}",
                        slot.present,
                        t.describe(),
                        kv.dtype.name()
                    ));
                }
                let row = d * kv.dtype.size() as usize;
                let block = kv.block_bytes(slot).unwrap_or(0);
                for (j, &b) in blocks.iter().enumerate() {
                    let (p0, p1) = (j * bt, ((j + 1) * bt).min(n));
                    if p0 >= p1 {
                        break;
                    }
                    for head in 0..h {
                        let src = (head * n + p0) * row;
                        let at = slot.pool_addr - kv.hbm_addr
                            + b as u64 * block
                            + (head * bt * row) as u64;
                        s.write_kv_at(at, &t.data[src..src + (p1 - p0) * row])
                            .map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        let trace = res.trace;
        Ok((tok, cost(&res.report, n as u64 * token_bytes(&kv), trace)))
    }

    fn decode(&mut self, bucket: usize, rows: &[Row]) -> Result<(Vec<i64>, RunCost), String> {
        let feeds: Vec<Vec<i64>> = rows.iter().map(|r| vec![r.token]).collect();
        let (ids, cost) = self.step(bucket, rows, &feeds)?;
        Ok((ids.into_iter().map(|v| v[0]).collect(), cost))
    }

    fn verify(
        &mut self,
        bucket: usize,
        rows: &[Row],
        proposals: &[Vec<i64>],
    ) -> Result<(Vec<Vec<i64>>, RunCost), String> {
        let feeds: Vec<Vec<i64>> = rows
            .iter()
            .zip(proposals)
            .map(|(r, p)| std::iter::once(r.token).chain(p.iter().copied()).collect())
            .collect();
        self.step(bucket, rows, &feeds)
    }

    fn draft_prefill(&mut self, tokens: &[i64], blocks: &[u32]) -> Result<(i64, RunCost), String> {
        self.draft
            .as_mut()
            .ok_or("no draft model")?
            .prefill(tokens, 0, blocks)
    }

    fn draft_decode(&mut self, bucket: usize, rows: &[Row]) -> Result<(Vec<i64>, RunCost), String> {
        self.draft
            .as_mut()
            .ok_or("no draft model")?
            .decode(bucket, rows)
    }

    fn copy_block(&mut self, src: u32, dst: u32) -> Result<(), String> {
        let bytes = self.read_block(src)?;
        self.write_block(dst, &bytes)
    }

    fn read_block(&mut self, block: u32) -> Result<Vec<u8>, String> {
        if self.opts.timing_only {
            return Ok(vec![]);
        }
        let s = self.pool_session()?;
        let kv = s.program().kv.clone().ok_or("no KV region")?;
        let mut out = vec![];
        for (at, len) in Self::block_spans(&kv, block)? {
            out.extend(s.read_kv_at(at, len).map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    fn write_block(&mut self, block: u32, bytes: &[u8]) -> Result<(), String> {
        if self.opts.timing_only {
            return Ok(());
        }
        let s = self.pool_session()?;
        let kv = s.program().kv.clone().ok_or("no KV region")?;
        let spans = Self::block_spans(&kv, block)?;
        let total: u64 = spans.iter().map(|&(_, l)| l).sum();
        if bytes.len() as u64 != total {
            return Err(format!(
                "{} bytes for KV block {block}, which holds {total}",
                bytes.len()
            ));
        }
        let mut off = 0usize;
        for (at, len) in spans {
            s.write_kv_at(at, &bytes[off..off + len as usize])
                .map_err(|e| e.to_string())?;
            off += len as usize;
        }
        Ok(())
    }
}
