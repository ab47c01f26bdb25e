//! `llmpu generate --verify`: the reference interpreter runs the same ONNX graphs in lockstep with
//! the emulator — the prefill on the prompt, then every decode step on the same token, mask and
//! positions, with its own dense cache (the right-aligned past of `spec/kv-cache.md`, shifted by
//! one slot per step) — and compares the logits at every step with the precision's tolerance.
//! At the first run whose logits differ it re-runs the interpreter recording every op's value and
//! compares them with the binary's probes (`probe-values`, in program order): the first probe
//! outside the tolerance names the op and its ONNX nodes where the emulator went wrong.

use llmpu_compiler::backend::plan::io_name;
use llmpu_compiler::interp::{self, Tensor as ITensor};
use llmpu_compiler::ir::{Module, ScalarType};
use llmpu_compiler::passes::probe_values::PROBE_PREFIX;
use llmpu_runtime::Tensor;
use llmpu_runtime::compare::{Tolerance, compare};

use crate::emulate::{from_runtime, to_runtime};

/// The reference side of a lockstep generation.
pub struct Lockstep {
    decode: Module,
    /// The decode graph's input names, in order.
    inputs: Vec<String>,
    /// The interpreter's cache: for each decode input that is a past, its dense value.
    past: Vec<(String, ITensor)>,
    /// Past input name → the name of the output that continues it.
    present_of: Vec<(String, String)>,
    tol: Tolerance,
    /// Largest logits difference seen (for the summary).
    pub worst: f64,
}

fn names(m: &Module, key: &str, n: usize) -> Result<Vec<String>, String> {
    let f = *m.functions().first().ok_or("no function")?;
    Ok((0..n).map(|i| io_name(m, f, key, i, "#")).collect())
}

fn arity(m: &Module) -> Result<(usize, usize), String> {
    let f = *m.functions().first().ok_or("no function")?;
    let entry = m.entry_block(f).ok_or("no body")?;
    let ret = *m.block(entry).ops.last().ok_or("empty body")?;
    Ok((m.block(entry).args.len(), m.op(ret).operands.len()))
}

/// `[1, n]` i64 interpreter tensor.
fn row(v: &[i64]) -> ITensor {
    ITensor::new(vec![1, v.len()], v.to_vec())
}

/// The reference inputs of a prefill graph over the token ids `seq` (batch 1, no padding):
/// `input_ids`, an all-ones `attention_mask`, `position_ids` from 0, by graph input name, and
/// empty tensors for inputs with no elements (the past of a decoder run as its own prefill).
pub fn prefill_inputs(prefill: &Module, seq: &[i64]) -> Result<Vec<ITensor>, String> {
    let (n_in, _) = arity(prefill)?;
    let n = seq.len();
    let f = *prefill.functions().first().ok_or("no function")?;
    let entry = prefill.entry_block(f).ok_or("no body")?;
    let args = prefill.block(entry).args.clone();
    names(prefill, "arg_attrs", n_in)?
        .iter()
        .zip(args)
        .map(|(name, arg)| match name.as_str() {
            "input_ids" => Ok(row(seq)),
            "attention_mask" => Ok(row(&vec![1; n])),
            "position_ids" => Ok(row(&(0..n as i64).collect::<Vec<_>>())),
            other => {
                let t = prefill.value_type(arg).as_tensor();
                match (t.and_then(|t| t.static_shape()), t.map(|t| t.elem)) {
                    (Some(shape), Some(elem)) if shape.contains(&0) => Ok(interp::tensor::zeros(
                        elem,
                        shape.iter().map(|&d| d as usize).collect(),
                    )),
                    _ => Err(format!("prefill input `{other}` has no reference value")),
                }
            }
        })
        .collect()
}

/// `t` `[b, h, s, d]` (f32) with its sequence axis replaced by `len` slots: the last
/// `min(s, len)` of `t`'s, right-aligned, zeros before.
fn right_align(t: &ITensor, len: usize) -> Result<ITensor, String> {
    let [b, h, s, d] = t.shape[..] else {
        return Err(format!(
            "cache of shape {:?} is not [batch, heads, seq, dim]",
            t.shape
        ));
    };
    let v = t.to_f64_vec();
    let keep = s.min(len);
    let mut out = vec![0f32; b * h * len * d];
    for bh in 0..b * h {
        for j in 0..keep {
            let (src, dst) = ((bh * s + s - keep + j) * d, (bh * len + len - keep + j) * d);
            for c in 0..d {
                out[dst + c] = v[src + c] as f32;
            }
        }
    }
    Ok(ITensor::new(vec![b, h, len, d], out))
}

impl Lockstep {
    /// Runs the reference prefill on `prompt` (`prefill`: imported for its length), compares
    /// its logits with the emulator's `emu` outputs (probes included) and prepares the decode
    /// reference (`decode`: imported with the binary's dims). `slots` pairs each past input with
    /// its present output (the KV region's). Returns the lockstep and, when the prefill differs,
    /// the report.
    pub fn new(
        prefill: &Module,
        decode: Module,
        prompt: &[i64],
        slots: &[(String, String)],
        tol: Tolerance,
        emu: &[(String, Tensor)],
    ) -> Result<(Lockstep, Option<String>), String> {
        let (_, n_out) = arity(prefill)?;
        let inputs = prefill_inputs(prefill, prompt)?;
        let outs = interp::run(prefill, &inputs).map_err(|e| format!("reference prefill: {e}"))?;
        let pout: Vec<(String, ITensor)> = names(prefill, "res_attrs", n_out)?
            .into_iter()
            .zip(outs)
            .collect();
        let (d_in, _) = arity(&decode)?;
        let dnames = names(&decode, "arg_attrs", d_in)?;
        let f = *decode.functions().first().ok_or("no function")?;
        let entry = decode.entry_block(f).ok_or("no body")?;
        let mut past = vec![];
        for (i, name) in dnames.iter().enumerate() {
            let Some((_, present)) = slots.iter().find(|(p, _)| p == name) else {
                continue;
            };
            let len = decode
                .value_type(decode.block(entry).args[i])
                .as_tensor()
                .and_then(|t| t.static_shape())
                .and_then(|s| s.get(2).copied())
                .ok_or_else(|| format!("--verify: past `{name}` has no static length"))?;
            let t = pout
                .iter()
                .find(|(o, _)| o == present)
                .map(|(_, t)| t)
                .ok_or_else(|| format!("--verify: the prefill has no output `{present}`"))?;
            past.push((name.clone(), right_align(t, len as usize)?));
        }
        let mut me = Lockstep {
            decode,
            inputs: dnames,
            past,
            present_of: slots.to_vec(),
            tol,
            worst: 0.0,
        };
        let want = pout
            .iter()
            .find(|(o, _)| o == "logits")
            .map(|(_, t)| t)
            .ok_or("--verify: the prefill has no `logits` output")?;
        let got = emu
            .iter()
            .find(|(o, _)| o == "logits")
            .map(|(_, t)| t)
            .ok_or("--verify: the prefill binary has no `logits` output")?;
        let report = match me.judge(got, want)? {
            None => None,
            Some(v) => Some(format!(
                "{v}\n{}",
                first_divergence(prefill, &inputs, emu, tol)?
            )),
        };
        Ok((me, report))
    }

    /// One decode step of the reference on the emulator's inputs (`ids`, `mask`, `positions`
    /// as bound); compares its logits with `got`. On a difference, returns the report naming
    /// the first probe (of `probes`, the emulator's `(name, value)` in program order) that
    /// differs. Advances the reference cache either way.
    pub fn step(
        &mut self,
        feeds: &[(String, Tensor)],
        got: &Tensor,
        probes: &dyn Fn() -> Result<Vec<(String, Tensor)>, String>,
    ) -> Result<Option<String>, String> {
        let mut inputs = vec![];
        for name in &self.inputs {
            if let Some((_, t)) = self.past.iter().find(|(p, _)| p == name) {
                inputs.push(t.clone());
            } else if let Some((_, t)) = feeds.iter().find(|(f, _)| f == name) {
                inputs.push(from_runtime(t, ScalarType::I64)?);
            } else {
                return Err(format!("--verify: decode input `{name}` has no value"));
            }
        }
        let outs =
            interp::run(&self.decode, &inputs).map_err(|e| format!("reference decode: {e}"))?;
        let (_, n_out) = arity(&self.decode)?;
        let onames = names(&self.decode, "res_attrs", n_out)?;
        for (p, t) in self.past.iter_mut() {
            let present = self
                .present_of
                .iter()
                .find(|(x, _)| x == p)
                .map(|(_, y)| y.clone())
                .unwrap_or_default();
            let i = onames
                .iter()
                .position(|o| *o == present)
                .ok_or_else(|| format!("--verify: the decode graph has no output `{present}`"))?;
            let len = t.shape[2];
            *t = right_align(&outs[i], len)?;
        }
        let want = onames
            .iter()
            .position(|o| o == "logits")
            .map(|i| &outs[i])
            .ok_or("--verify: the decode graph has no `logits` output")?;
        let verdict = self.judge(got, want)?;
        if verdict.is_none() {
            return Ok(None);
        }
        let first = first_divergence(&self.decode, &inputs, &probes()?, self.tol)?;
        Ok(Some(format!("{}\n{first}", verdict.unwrap_or_default())))
    }

    /// `None` when `got` is within the tolerance of `want`, else the comparison's text.
    pub fn judge(&mut self, got: &Tensor, want: &ITensor) -> Result<Option<String>, String> {
        let c = compare("logits", got, &to_runtime(want)?, self.tol)?;
        self.worst = self.worst.max(c.max_abs);
        Ok((!c.pass).then(|| format!("logits differ from the reference interpreter: {c}")))
    }
}

/// The report for the first of `probes` whose value differs from the interpreter's value of its
/// ONNX node(s) when `m` runs on `inputs`.
pub fn first_divergence(
    m: &Module,
    inputs: &[ITensor],
    probes: &[(String, Tensor)],
    tol: Tolerance,
) -> Result<String, String> {
    // Every ONNX node name → (position of the last op carrying it, that op's first result).
    let mut seen: Vec<(String, usize, ITensor)> = vec![];
    let f = *m.functions().first().ok_or("no function")?;
    let mut pos = 0usize;
    interp::run_observed(m, f, inputs, &mut |op, outs| {
        pos += 1;
        let Some(t) = outs.first() else { return };
        for n in m.op(op).loc.names() {
            match seen.iter_mut().find(|(x, _, _)| **x == *n) {
                Some(e) => (e.1, e.2) = (pos, t.clone()),
                None => seen.push((n.to_string(), pos, t.clone())),
            }
        }
    })
    .map_err(|e| format!("reference: {e}"))?;
    let mut agree = 0;
    let mut skipped = 0;
    for (name, got) in probes {
        let Some(body) = name.strip_prefix(PROBE_PREFIX) else {
            continue;
        };
        let body = body.split('#').next().unwrap_or(body);
        let (op, nodes) = body.split_once('@').unwrap_or(("?", body));
        // The value the fused op computes is its last (sink) node's output.
        let want = nodes
            .split('+')
            .filter_map(|n| seen.iter().find(|(x, _, _)| x == n))
            .max_by_key(|(_, p, _)| *p);
        let Some((node, _, want)) = want else {
            skipped += 1;
            continue;
        };
        let shape: Vec<u64> = want.shape.iter().map(|&d| d as u64).collect();
        if shape != got.shape {
            skipped += 1;
            continue;
        }
        let c = compare(node, got, &to_runtime(want)?, tol)?;
        if !c.pass {
            return Ok(format!(
                "first op that differs ({agree} probed ops before it agree, {skipped} not \
                 comparable): `{op}` of ONNX node(s) {nodes}\n  {c}"
            ));
        }
        agree += 1;
    }
    if agree == 0 && skipped == 0 {
        return Ok("the binary has no probes to name the op (compile it with --probes)".into());
    }
    Ok(format!(
        "no probed op differs ({agree} agree, {skipped} not comparable): the difference is in \
         an op the probes do not see (a pure view, the KV cache, or the outputs' conversion)"
    ))
}
