//! The host side of the paged KV-cache region (`spec/kv-cache.md`).
//!
//! A decode program compiled by `kv-layout` has no dense `past_*` inputs or `present_*` outputs:
//! its [`KvRegion`] descriptor names them. The host owns the region between runs: it writes the
//! block table (`i32 [batch, max_blocks]`, logical block → physical block) and the blocks, runs,
//! and the program appends the new tokens' K/V in place. [`pack`] builds a region from dense past
//! tensors, [`unpack`] reads a slot back as a dense present tensor, and [`run_dense`] runs such a
//! program as if it still took and returned the dense tensors (what `llmpu check` compares).

use llmpu_isa::{IoDir, KvRegion, Program};

use crate::{EmuError, RunOptions, RunResult, Tensor};

/// The block table [`run_dense`] uses: sequence `b`'s logical block `j` is physical block
/// `num_blocks − 1 − (b · max_blocks + j)` — deliberately not the identity, so that a kernel
/// ignoring the table reads the wrong block.
pub fn reversed_table(kv: &KvRegion) -> Vec<i32> {
    let n = kv.batch * kv.max_blocks;
    (0..n).map(|i| (kv.num_blocks - 1 - i) as i32).collect()
}

fn bad(name: &str, message: impl Into<String>) -> EmuError {
    EmuError::BadTensor {
        name: name.into(),
        message: message.into(),
    }
}

fn check_table(kv: &KvRegion, table: &[i32]) -> Result<(), EmuError> {
    if table.len() as u64 != kv.batch * kv.max_blocks {
        return Err(bad(
            "block table",
            format!(
                "{} entries, the region has {} × {}",
                table.len(),
                kv.batch,
                kv.max_blocks
            ),
        ));
    }
    if let Some(e) = table.iter().find(|&&e| e < 0 || e as u64 >= kv.num_blocks) {
        return Err(bad(
            "block table",
            format!(
                "entry {e} is not one of the {} physical blocks",
                kv.num_blocks
            ),
        ));
    }
    Ok(())
}

/// Byte offset (from the region start) of token `pos` of head `h` of sequence `b` in `slot`.
fn token_offset(kv: &KvRegion, table: &[i32], slot: usize, b: u64, h: u64, pos: u64) -> u64 {
    let s = &kv.slots[slot];
    let phys = table[(b * kv.max_blocks + pos / kv.block_tokens) as usize] as u64;
    let block = kv.block_bytes(s).unwrap_or(0);
    let row = (h * kv.block_tokens + pos % kv.block_tokens) * s.head_dim * kv.dtype.size();
    s.pool_addr - kv.hbm_addr + phys * block + row
}

/// A region image (`kv.bytes` bytes) holding `table`, the dense pasts (one per slot in slot
/// order, each `[batch, heads, L, head_dim]` of the region's dtype, the same `L` for all, with
/// room for `new_tokens` more) and every sequence's cached length `L`.
pub fn pack(kv: &KvRegion, table: &[i32], pasts: &[&Tensor]) -> Result<Vec<u8>, EmuError> {
    check_table(kv, table)?;
    if pasts.len() != kv.slots.len() {
        return Err(bad(
            "KV region",
            format!("{} past tensors for {} slots", pasts.len(), kv.slots.len()),
        ));
    }
    let len = pasts
        .first()
        .and_then(|t| t.shape.get(2))
        .copied()
        .unwrap_or(0);
    if len + kv.new_tokens > kv.max_blocks * kv.block_tokens {
        return Err(bad(
            "KV region",
            format!(
                "{len} cached + {} new tokens exceed the region's {} blocks of {} tokens",
                kv.new_tokens, kv.max_blocks, kv.block_tokens
            ),
        ));
    }
    let mut img = vec![0u8; kv.bytes as usize];
    let t0 = (kv.table_addr - kv.hbm_addr) as usize;
    for (i, e) in table.iter().enumerate() {
        img[t0 + 4 * i..t0 + 4 * i + 4].copy_from_slice(&e.to_le_bytes());
    }
    set_lengths(kv, &mut img, &vec![len as i32; kv.batch as usize])?;
    for (slot, (s, t)) in kv.slots.iter().zip(pasts).enumerate() {
        let want = [kv.batch, s.heads, len, s.head_dim];
        if t.dtype != kv.dtype || t.shape != want {
            return Err(EmuError::InputMismatch {
                name: s.past.clone(),
                expected: crate::tensor::describe(kv.dtype, &want),
                got: t.describe(),
            });
        }
        let row = (s.head_dim * kv.dtype.size()) as usize;
        for b in 0..kv.batch {
            for h in 0..s.heads {
                for p in 0..len {
                    let src = (((b * s.heads + h) * len + p) as usize) * row;
                    let dst = token_offset(kv, table, slot, b, h, p) as usize;
                    img[dst..dst + row].copy_from_slice(&t.data[src..src + row]);
                }
            }
        }
    }
    Ok(img)
}

/// Writes every sequence's cached length into a region image's header.
pub fn set_lengths(kv: &KvRegion, img: &mut [u8], lengths: &[i32]) -> Result<(), EmuError> {
    if lengths.len() as u64 != kv.batch {
        return Err(bad(
            "KV lengths",
            format!("{} lengths for batch {}", lengths.len(), kv.batch),
        ));
    }
    let cap = kv.max_blocks * kv.block_tokens;
    if lengths
        .iter()
        .any(|&l| l < 0 || l as u64 + kv.new_tokens > cap)
    {
        return Err(bad(
            "KV lengths",
            format!("a length leaves no room in {cap} tokens"),
        ));
    }
    let at = (kv.lengths_addr() - kv.hbm_addr) as usize;
    for (i, l) in lengths.iter().enumerate() {
        let dst = img
            .get_mut(at + 4 * i..at + 4 * i + 4)
            .ok_or_else(|| bad("KV lengths", "outside the region image"))?;
        dst.copy_from_slice(&l.to_le_bytes());
    }
    Ok(())
}

/// Slot `slot` of a region image as the dense `[batch, heads, past_len + new_tokens, head_dim]`
/// present tensor.
pub fn unpack(kv: &KvRegion, img: &[u8], slot: usize) -> Result<Tensor, EmuError> {
    let s = kv
        .slots
        .get(slot)
        .ok_or_else(|| bad("KV region", format!("no slot {slot}")))?;
    let t0 = (kv.table_addr - kv.hbm_addr) as usize;
    let n = (kv.batch * kv.max_blocks) as usize;
    let table: Vec<i32> = img
        .get(t0..t0 + 4 * n)
        .ok_or_else(|| bad("KV region", "image smaller than its block table"))?
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    check_table(kv, &table)?;
    let total = kv.past_len + kv.new_tokens;
    let row = (s.head_dim * kv.dtype.size()) as usize;
    let mut data = Vec::with_capacity((kv.batch * s.heads * total) as usize * row);
    for b in 0..kv.batch {
        for h in 0..s.heads {
            for p in 0..total {
                let at = token_offset(kv, &table, slot, b, h, p) as usize;
                data.extend_from_slice(
                    img.get(at..at + row)
                        .ok_or_else(|| bad(&s.present, "block outside the region image"))?,
                );
            }
        }
    }
    Tensor::new(kv.dtype, vec![kv.batch, s.heads, total, s.head_dim], data)
        .map_err(|m| bad(&s.present, m))
}

/// Fills one `attention_mask` row of a decode step over the paged region: the graph sees a
/// sequence's cached and new tokens right-aligned, the new ones at the compiled past length (as
/// Hugging Face sees a left-padded batch; `spec/kv-cache.md`), so the last `live` columns (cached
/// plus new tokens) are 1 and the others 0. `None` when `live` exceeds the row.
pub fn decode_mask_row(row: &mut [i64], live: usize) -> Option<()> {
    let pad = row.len().checked_sub(live)?;
    row[..pad].fill(0);
    row[pad..].fill(1);
    Some(())
}

/// The graph's input names in graph order: the I/O inputs with the KV pasts at their positions.
pub fn input_names(program: &Program) -> Vec<String> {
    merge(
        program
            .io
            .iter()
            .filter(|t| t.dir == IoDir::Input)
            .map(|t| t.name.clone())
            .collect(),
        program.kv.iter().flat_map(|k| {
            k.slots
                .iter()
                .map(|s| (s.past_index as usize, s.past.clone()))
        }),
    )
}

fn merge(mut rest: Vec<String>, at: impl Iterator<Item = (usize, String)>) -> Vec<String> {
    let mut fixed: Vec<(usize, String)> = at.collect();
    fixed.sort();
    for (i, n) in fixed {
        let i = i.min(rest.len());
        rest.insert(i, n);
    }
    rest
}

/// Runs a program with dense past inputs, returning dense present outputs, whether or not it
/// has a KV region: the pasts are packed into the region (with [`reversed_table`]) before the
/// run and the presents unpacked after it. Outputs come in graph order.
pub fn run_dense(
    program: &Program,
    inputs: &[(String, Tensor)],
    opts: &RunOptions,
) -> Result<RunResult, EmuError> {
    let Some(kv) = &program.kv else {
        return crate::run(program, inputs, opts);
    };
    let mut pasts = vec![];
    for s in &kv.slots {
        if opts.timing_only {
            break;
        }
        let t = inputs
            .iter()
            .find(|(n, _)| *n == s.past)
            .map(|(_, t)| t)
            .ok_or_else(|| EmuError::MissingInput(s.past.clone()))?;
        pasts.push(t);
    }
    let rest: Vec<(String, Tensor)> = inputs
        .iter()
        .filter(|(n, _)| !kv.slots.iter().any(|s| s.past == *n))
        .cloned()
        .collect();
    let table = reversed_table(kv);
    let img = if opts.timing_only {
        None
    } else {
        Some(pack(kv, &table, &pasts)?)
    };
    let (mut res, after) = crate::run_with_kv(program, &rest, img.as_deref(), opts)?;
    if let Some(after) = after {
        let mut presents = vec![];
        for (i, s) in kv.slots.iter().enumerate() {
            presents.push((
                s.present_index as usize,
                s.present.clone(),
                unpack(kv, &after, i)?,
            ));
        }
        presents.sort_by_key(|p| p.0);
        for (i, n, t) in presents {
            let i = i.min(res.outputs.len());
            res.outputs.insert(i, (n, t));
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmpu_isa::{DType, KvSlot};

    fn region() -> KvRegion {
        // batch 2, 1 head of dim 2, blocks of 2 tokens, 3 cached + 1 new token → 2 blocks each.
        KvRegion {
            hbm_addr: 1024,
            bytes: 64 + 4 * 16,
            dtype: DType::F32,
            block_tokens: 2,
            batch: 2,
            max_blocks: 2,
            num_blocks: 4,
            past_len: 3,
            new_tokens: 1,
            table_addr: 1024,
            slots: vec![KvSlot {
                past: "past".into(),
                present: "present".into(),
                past_index: 0,
                present_index: 0,
                heads: 1,
                head_dim: 2,
                pool_addr: 1088,
            }],
        }
    }

    #[test]
    fn pack_then_unpack_returns_the_past_through_a_permuted_block_table() {
        let kv = region();
        kv.validate().expect("valid region");
        let vals: Vec<f32> = (0..12).map(|x| x as f32).collect();
        let past = Tensor::from_f32(DType::F32, vec![2, 1, 3, 2], &vals).expect("tensor");
        let table = reversed_table(&kv);
        assert_eq!(table, [3, 2, 1, 0]);
        let img = pack(&kv, &table, &[&past]).expect("pack");
        // Sequence 0's token 0 lives in physical block 3.
        let at = (1088 - 1024) + 3 * 16;
        assert_eq!(&img[at..at + 8], &past.data[0..8]);
        let present = unpack(&kv, &img, 0).expect("unpack");
        assert_eq!(present.shape, [2, 1, 4, 2]);
        let got = present.to_f32();
        for b in 0..2 {
            for p in 0..3 {
                for d in 0..2 {
                    assert_eq!(got[(b * 4 + p) * 2 + d], vals[(b * 3 + p) * 2 + d]);
                }
            }
        }
    }

    #[test]
    fn block_table_entries_outside_the_pool_are_rejected() {
        let kv = region();
        let past = Tensor::zeros(DType::F32, vec![2, 1, 3, 2]);
        let e = pack(&kv, &[0, 1, 2, 9], &[&past]).expect_err("entry 9");
        assert!(
            e.to_string().contains("not one of the 4 physical blocks"),
            "{e}"
        );
    }
}
