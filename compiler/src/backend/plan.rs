//! Memory planning: where every tensor of a function lives in HBM.
//!
//! - Inputs, then outputs, are laid out from address 0 as the program's I/O tensors (dense,
//!   declared element type); constants follow as data segments (converted to the storage type);
//!   everything else shares one scratch arena after them.
//! - View ops (reshape, squeeze, unsqueeze, flatten, identity, transpose, slice and split with
//!   constant parameters, expand, gather of one constant index or of consecutive constant indices) own no memory: their result is a
//!   strided [`View`] of the input's buffer.
//! - A buffer's live range runs from its defining op to the last use of any view of it; buffers
//!   whose ranges do not overlap share scratch memory (first fit, in definition order).
//! - A function result produced by a non-view op (or a full contiguous view of one) is written
//!   directly into its output tensor; any other result (an input, a constant, a strided view, a
//!   value returned twice) is copied there by the lowering.
//! - Storage type: with `bf16` precision every f32 tensor that is not a program input or output is
//!   stored as bf16.

use crate::dialects::graph;
use std::collections::HashMap;

use llmpu_isa::program::HBM_ALIGN;
use llmpu_isa::{DType, DataSegment, IndexBound, IoDir, IoTensor, KvRegion, KvSlot};

use super::view::View;
use super::{BackendError, Options, Precision, dtype_of};
use crate::ir::{Attribute, Module, OpId, ScalarType, Type, ValueId};

/// The memory plan of one function.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Where each value's elements are (absent for values with no memory, e.g. unused).
    pub views: HashMap<ValueId, View>,
    /// Values that are splat constants, with their value (usable as immediates).
    pub splats: HashMap<ValueId, f64>,
    pub io: Vec<IoTensor>,
    pub data: Vec<DataSegment>,
    /// Results that need a copy into their output tensor: (result index, value, destination).
    pub copies: Vec<(usize, ValueId, View)>,
    /// Bytes of the scratch arena and its base address.
    pub scratch: (u64, u64),
    /// Buffer address per op result that owns memory (for the IR annotation).
    pub owned: HashMap<ValueId, u64>,
    /// The paged KV region (`kv-layout`), if the function has one.
    pub kv: Option<KvRegion>,
    /// `graph.kv_append` results (the presents, resident in the region) → their slot.
    pub kv_slots: HashMap<ValueId, usize>,
    /// Value ranges of integer inputs that index tables ([`index_bound`]).
    pub bounds: Vec<IndexBound>,
}

/// The range every element of integer input `a` must lie in: the intersection over the
/// `graph.gather`s that take it (through reshapes, casts and the like) as their indices of
/// `[-rows, rows)` (ONNX Gather accepts negative indices), with the first such gather's location.
pub fn index_bound(m: &Module, a: ValueId, name: &str) -> Option<IndexBound> {
    let mut bound: Option<IndexBound> = None;
    let mut work = vec![a];
    let mut seen = std::collections::HashSet::new();
    while let Some(v) = work.pop() {
        if !seen.insert(v) {
            continue;
        }
        for (u, ix) in m.uses(v) {
            let d = m.op(u);
            match d.name.as_str() {
                graph::Reshape::NAME
                | graph::Unsqueeze::NAME
                | graph::Squeeze::NAME
                | graph::Flatten::NAME
                | graph::Identity::NAME
                    if ix == 0 =>
                {
                    work.extend(d.results.iter().copied());
                }
                graph::Cast::NAME
                    if d.results
                        .first()
                        .and_then(|&r| elem_of(m, r))
                        .is_some_and(|e| !e.is_float()) =>
                {
                    work.extend(d.results.iter().copied());
                }
                graph::Gather::NAME if ix == 1 => {
                    let Some(data) = d.operands.first().and_then(|&t| shape_of(m, t)) else {
                        continue;
                    };
                    let axis = m.attr(u, "axis").and_then(Attribute::as_int).unwrap_or(0);
                    let axis = if axis < 0 {
                        axis + data.len() as i64
                    } else {
                        axis
                    };
                    let Some(&rows) = usize::try_from(axis).ok().and_then(|x| data.get(x)) else {
                        continue;
                    };
                    let rows = rows.min(i64::MAX as u64) as i64;
                    let b = bound.get_or_insert_with(|| IndexBound {
                        input: name.to_string(),
                        lo: -rows,
                        hi: rows,
                        loc: super::loc_string(&d.loc),
                    });
                    b.lo = b.lo.max(-rows);
                    b.hi = b.hi.min(rows);
                }
                _ => {}
            }
        }
    }
    bound
}

fn align(x: u64) -> u64 {
    x.div_ceil(HBM_ALIGN) * HBM_ALIGN
}

/// Static shape of a tensor value.
pub fn shape_of(m: &Module, v: ValueId) -> Option<Vec<u64>> {
    m.value_type(v).as_tensor()?.static_shape()
}

/// Element type of a tensor value.
pub fn elem_of(m: &Module, v: ValueId) -> Option<ScalarType> {
    m.value_type(v).elem()
}

/// The stored bytes of a constant value (`graph.constant` with data; one element for a splat) and
/// its element count.
fn const_blob(m: &Module, v: ValueId) -> Option<(std::sync::Arc<[u8]>, u64)> {
    let op = m.defining_op(v)?;
    if m.op(op).name != graph::Constant::NAME {
        return None;
    }
    let d = m.attr(op, "value")?.as_dense()?;
    let bytes = m.blobs.get(d.blob).bytes.clone()?;
    let n = d.ty.as_tensor()?.num_elements()?;
    Some((bytes, n))
}

/// Raw bytes of a constant value (`graph.constant` with data), expanded if it is a splat. `None`
/// also when the expansion would exceed the host memory limit (`llmpu_isa::limits`); the
/// planner checks a constant's size against the target's HBM before asking.
pub fn const_bytes(m: &Module, v: ValueId) -> Option<Vec<u8>> {
    let (bytes, n) = const_blob(m, v)?;
    let es = elem_of(m, v)?.byte_size();
    if bytes.len() == es && n != 1 {
        llmpu_isa::limits::host_tensor("constant", &[n], es as u64).ok()?;
        Some(
            bytes
                .iter()
                .cycle()
                .take(es * n as usize)
                .copied()
                .collect(),
        )
    } else {
        Some(bytes.to_vec())
    }
}

/// The values of a constant as f64.
pub fn const_f64s(m: &Module, v: ValueId) -> Option<Vec<f64>> {
    let b = const_bytes(m, v)?;
    Some(decode_f64s(&b, elem_of(m, v)?))
}

fn decode_f64s(b: &[u8], e: ScalarType) -> Vec<f64> {
    let es = e.byte_size();
    b.chunks_exact(es)
        .map(|c| match e {
            ScalarType::F64 => f64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
            ScalarType::F32 => f32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as f64,
            ScalarType::F16 => half::f16::from_le_bytes([c[0], c[1]]).to_f64(),
            ScalarType::BF16 => half::bf16::from_le_bytes([c[0], c[1]]).to_f64(),
            ScalarType::I64 => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64,
            ScalarType::UI64 => u64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64,
            ScalarType::I32 => i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as f64,
            ScalarType::UI32 => u32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as f64,
            ScalarType::I16 => i16::from_le_bytes([c[0], c[1]]) as f64,
            ScalarType::UI16 => u16::from_le_bytes([c[0], c[1]]) as f64,
            ScalarType::I8 => c[0] as i8 as f64,
            ScalarType::UI8 | ScalarType::I1 | ScalarType::F8E4M3FN => c[0] as f64,
        })
        .collect()
}

/// The values of an integer constant.
pub fn const_ints(m: &Module, v: ValueId) -> Option<Vec<i64>> {
    if !elem_of(m, v)?.is_int() {
        return None;
    }
    Some(const_f64s(m, v)?.into_iter().map(|x| x as i64).collect())
}

/// The single value of a splat (all elements equal) constant.
pub fn splat_of(m: &Module, v: ValueId) -> Option<f64> {
    let (bytes, _) = const_blob(m, v)?;
    // The stored bytes (one element for a splat): a splat is never expanded to be recognized.
    let vals = decode_f64s(&bytes, elem_of(m, v)?);
    let first = *vals.first()?;
    vals.iter().all(|&x| x == first).then_some(first)
}

/// The operand feeding ONNX input `slot` (ops with omitted optional inputs carry an
/// `operand_slots` attribute listing the slot of each operand).
pub fn operand_at(m: &Module, op: OpId, slot: usize) -> Option<ValueId> {
    let d = m.op(op);
    match m.attr(op, "operand_slots").and_then(Attribute::as_i64_list) {
        Some(slots) => slots
            .iter()
            .position(|&x| x == slot as i64)
            .and_then(|i| d.operands.get(i).copied()),
        None => d.operands.get(slot).copied(),
    }
}

/// How a view op derives its results from its first operand's view, or `None` if it is not a
/// view op (or its parameters are not constant).
pub fn view_results(m: &Module, op: OpId, input: &View) -> Option<Vec<View>> {
    let d = m.op(op);
    let out_shape = |i: usize| shape_of(m, d.results[i]);
    match d.name.as_str() {
        graph::Reshape::NAME
        | graph::Squeeze::NAME
        | graph::Unsqueeze::NAME
        | graph::Flatten::NAME
        | graph::Identity::NAME => Some(vec![input.reshape(&out_shape(0)?)?]),
        graph::Transpose::NAME => {
            let perm = crate::dialects::graph::Transpose(op).perm(m);
            let perm: Vec<usize> = perm.iter().map(|&p| p as usize).collect();
            if perm.len() != input.shape.len() || perm.iter().any(|&p| p >= perm.len()) {
                return None;
            }
            Some(vec![input.permute(&perm)])
        }
        graph::Expand::NAME => Some(vec![input.broadcast_to(&out_shape(0)?)?]),
        graph::Slice::NAME => {
            let starts = const_ints(m, *d.operands.get(1)?)?;
            let ends = const_ints(m, *d.operands.get(2)?)?;
            let rank = input.shape.len() as i64;
            let axes = match operand_at(m, op, 3) {
                Some(a) => const_ints(m, a)?,
                None => (0..starts.len() as i64).collect(),
            };
            let steps = match operand_at(m, op, 4) {
                Some(s) => const_ints(m, s)?,
                None => vec![1; starts.len()],
            };
            let mut v = input.clone();
            for (i, &ax) in axes.iter().enumerate() {
                let ax = if ax < 0 { ax + rank } else { ax };
                if ax < 0 || ax >= rank {
                    return None;
                }
                let ax = ax as usize;
                let n = v.shape[ax] as i64;
                let step = *steps.get(i)?;
                if step == 0 {
                    return None;
                }
                let clampi = |x: i64, lo: i64, hi: i64| x.clamp(lo, hi);
                let norm = |x: i64| if x < 0 { x + n } else { x };
                let (s, e) = (norm(starts[i]), norm(*ends.get(i)?));
                let (s, len) = if step > 0 {
                    let s = clampi(s, 0, n);
                    let e = clampi(e, 0, n);
                    (s, ((e - s).max(0) + step - 1) / step)
                } else {
                    let s = clampi(s, -1, n - 1);
                    let e = clampi(e, -1, n - 1);
                    (s, ((s - e).max(0) + (-step) - 1) / (-step))
                };
                v = v.slice(ax, s.max(0) as u64, step, len as u64);
            }
            (v.shape == out_shape(0)?).then_some(vec![v])
        }
        graph::Split::NAME => {
            let rank = input.shape.len() as i64;
            let mut ax = m.attr(op, "axis").and_then(Attribute::as_int).unwrap_or(0);
            if ax < 0 {
                ax += rank;
            }
            let ax = usize::try_from(ax)
                .ok()
                .filter(|&a| a < input.shape.len())?;
            let mut start = 0;
            let mut out = vec![];
            for i in 0..d.results.len() {
                let s = out_shape(i)?;
                let len = *s.get(ax)?;
                out.push(input.slice(ax, start, 1, len));
                start += len;
            }
            Some(out)
        }
        graph::Gather::NAME => {
            let idx = const_ints(m, *d.operands.get(1)?)?;
            let ishape = shape_of(m, d.operands[1])?;
            if idx.is_empty() || (ishape.is_empty() && idx.len() != 1) {
                return None;
            }
            let rank = input.shape.len() as i64;
            let mut ax = m.attr(op, "axis").and_then(Attribute::as_int).unwrap_or(0);
            if ax < 0 {
                ax += rank;
            }
            let ax = usize::try_from(ax)
                .ok()
                .filter(|&a| a < input.shape.len())?;
            let n = input.shape[ax] as i64;
            let norm = |x: i64| if x < 0 { x + n } else { x };
            let i = norm(idx[0]);
            if i < 0 || i >= n {
                return None;
            }
            if !ishape.is_empty() {
                // Consecutive constant indices (positions 0..n) select a slice.
                let len = idx.len() as i64;
                if i + len > n
                    || idx
                        .iter()
                        .enumerate()
                        .any(|(j, &x)| norm(x) != i + j as i64)
                {
                    return None;
                }
                let v = input.slice(ax, i as u64, 1, len as u64);
                let mut shape = input.shape[..ax].to_vec();
                shape.extend(&ishape);
                shape.extend(&input.shape[ax + 1..]);
                return v.reshape(&shape).map(|v| vec![v]);
            }
            let mut v = input.slice(ax, i as u64, 1, 1);
            v.shape.remove(ax);
            v.strides.remove(ax);
            Some(vec![v])
        }
        _ => None,
    }
}

/// Attribute of an op whose f32 results stay f32 in a bf16 compile (the steps of an exact
/// rewrite, e.g. `legalize`'s QuantizeLinear: `llmpu.keep_f32 = true`).
pub const KEEP_F32: &str = "llmpu.keep_f32";

/// Storage type of a value that is not a program input or output.
pub fn storage_type(o: &Options, e: ScalarType) -> Option<DType> {
    let d = dtype_of(e)?;
    Some(if o.precision == Precision::Bf16 && d == DType::F32 {
        DType::BF16
    } else {
        d
    })
}

/// The ONNX name of function argument / result `i`, from `arg_attrs` / `res_attrs`.
pub fn io_name(m: &Module, func: OpId, key: &str, i: usize, fallback: &str) -> String {
    if let Some(Attribute::Array(a)) = m.attr(func, key)
        && let Some(Attribute::Dict(d)) = a.get(i)
        && let Some((_, Attribute::Str(s))) = d.iter().find(|(k, _)| k.contains("name"))
    {
        return s.clone();
    }
    format!("{fallback}{i}")
}

/// f32 → bf16 rounding to nearest even, except that finite values beyond bf16's range saturate
/// to its largest finite value: `finfo(f32).min` used as a mask fill stays a finite "minus
/// infinity" (fully masked rows then average evenly, as in the f32 reference) instead of `-inf`.
pub fn bf16_saturating(x: f32) -> half::bf16 {
    let b = half::bf16::from_f32(x);
    if b.is_infinite() && x.is_finite() {
        if x > 0.0 {
            half::bf16::MAX
        } else {
            half::bf16::MIN
        }
    } else {
        b
    }
}

fn bytes_to_storage(bytes: &[u8], from: ScalarType, to: DType) -> Vec<u8> {
    match (from, to) {
        (ScalarType::F32, DType::BF16) => bytes
            .chunks_exact(4)
            .flat_map(|c| {
                bf16_saturating(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
            })
            .collect(),
        (ScalarType::I1, _) => bytes.iter().map(|&b| (b != 0) as u8).collect(),
        _ => bytes.to_vec(),
    }
}

/// Plans the memory of `func` (see the module documentation).
/// Ops whose kernels store their result through any strided view (attention writes each
/// (head, query block) with its own DMA).
const STRIDED_RESULT_OPS: &[&str] = &[graph::FusedAttention::NAME];

/// The layout of `res`, the result of `op`, in its own buffer: dense, except that the result of
/// an op in [`STRIDED_RESULT_OPS`] whose only user is a transpose is stored in the transposed
/// order (the op writes through the inverse permutation), so that the transpose is dense and a
/// reshape after it (heads merged back into the hidden dimension) is a free view, not a copy.
fn result_layout(m: &Module, op: OpId, res: ValueId, dt: DType, shape: &[u64]) -> View {
    let dense = View::dense(0, dt, shape);
    if !STRIDED_RESULT_OPS.contains(&m.op(op).name.as_str()) {
        return dense;
    }
    let uses = m.uses(res);
    let [(t, 0)] = uses[..] else {
        return dense;
    };
    if m.op(t).name != graph::Transpose::NAME {
        return dense;
    }
    let perm: Vec<usize> = crate::dialects::graph::Transpose(t)
        .perm(m)
        .iter()
        .map(|&p| p as usize)
        .collect();
    let mut inv = vec![usize::MAX; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        match inv.get_mut(p) {
            Some(x) if *x == usize::MAX => *x = i,
            _ => return dense,
        }
    }
    if perm.len() != shape.len() {
        return dense;
    }
    let tshape: Vec<u64> = perm.iter().map(|&p| shape[p]).collect();
    let v = View::dense(0, dt, &tshape).permute(&inv);
    // Only size-1 dimensions moved (one query): the dense layout is the same.
    if v.is_contiguous() { dense } else { v }
}

pub fn plan_function(m: &Module, func: OpId, o: &Options) -> Result<Plan, BackendError> {
    let floc = m.op(func).loc.clone();
    let err = |loc: &crate::ir::Location, msg: String| BackendError::new(loc, msg);
    let entry = m
        .entry_block(func)
        .ok_or_else(|| err(&floc, "function has no body".into()))?;
    let ops: Vec<OpId> = m.block(entry).ops.clone();
    let ret = *ops
        .last()
        .ok_or_else(|| err(&floc, "empty function".into()))?;
    let results = m.op(ret).operands.clone();
    let mut plan = Plan::default();
    // KV caches kept in the paged region: past argument → (slot, append op).
    let kv_params = crate::passes::kv_layout::kv_params(m, func);
    let mut kv_past: HashMap<ValueId, usize> = HashMap::new();
    let mut kv_ops: Vec<(usize, OpId)> = vec![];
    if kv_params.is_some() {
        for &op in &ops {
            let d = m.op(op);
            if d.name == graph::KvAppend::NAME {
                let slot = m
                    .attr(op, "slot")
                    .and_then(Attribute::as_int)
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| err(&d.loc, "kv_append without a slot".into()))?;
                kv_past.insert(d.operands[0], slot);
                plan.kv_slots.insert(d.results[0], slot);
                kv_ops.push((slot, op));
            }
        }
    }
    let mut kv_slots: Vec<Option<KvSlot>> = vec![None; kv_ops.len()];
    let mut kv_dtype = DType::F32;
    let tensor_info = |v: ValueId, what: &str| -> Result<(Vec<u64>, ScalarType), BackendError> {
        let ty = m.value_type(v);
        let Type::Tensor(t) = ty else {
            return Err(err(&floc, format!("{what} has non-tensor type {ty}")));
        };
        let shape = t.static_shape().ok_or_else(|| {
            err(
                &floc,
                format!("{what} has a symbolic shape {ty}; give the dims a value (--dim NAME=N)"),
            )
        })?;
        Ok((shape, t.elem))
    };
    let mut addr = 0u64;
    let mut place = |bytes: u64| {
        let a = addr;
        addr = align(a + bytes.max(1));
        a
    };
    // Inputs.
    let args = m.block(entry).args.clone();
    for (i, &a) in args.iter().enumerate() {
        let name = io_name(m, func, "arg_attrs", i, "input");
        let (shape, e) = tensor_info(a, &format!("input `{name}`"))?;
        let dt = dtype_of(e).ok_or_else(|| {
            err(
                &floc,
                format!("input `{name}`: element type {e} unsupported"),
            )
        })?;
        if let Some(&slot) = kv_past.get(&a) {
            let s = kv_slots
                .get_mut(slot)
                .ok_or_else(|| err(&floc, format!("KV slot {slot} out of range")))?;
            *s = Some(KvSlot {
                past: name,
                present: String::new(),
                past_index: i as u32,
                present_index: 0,
                heads: shape[1],
                head_dim: shape[3],
                pool_addr: 0,
            });
            kv_dtype = dt;
            continue;
        }
        let view = View::dense(0, dt, &shape);
        let at = place(view.elems() * dt.size());
        plan.views.insert(a, View::dense(at, dt, &shape));
        if !e.is_float()
            && let Some(b) = index_bound(m, a, &name)
        {
            plan.bounds.push(b);
        }
        plan.io.push(IoTensor {
            name,
            dir: IoDir::Input,
            dtype: dt,
            shape,
            hbm_addr: at,
        });
    }
    // Structure: root buffer and relative view of every value.
    let mut root: HashMap<ValueId, ValueId> = HashMap::new();
    let mut rel: HashMap<ValueId, View> = HashMap::new();
    let mut owner_dt: HashMap<ValueId, DType> = HashMap::new();
    let mut def_index: HashMap<ValueId, usize> = HashMap::new();
    for (idx, &op) in ops.iter().enumerate() {
        let d = m.op(op);
        if d.name == "func.return" || d.name == graph::KvAppend::NAME {
            continue;
        }
        let first_in = d.operands.first().copied();
        let derived = first_in.and_then(|x| {
            let base = plan
                .views
                .get(&x)
                .cloned()
                .or_else(|| rel.get(&x).cloned())?;
            view_results(m, op, &base).map(|vs| (x, vs))
        });
        if let Some((x, vs)) = derived {
            let r = root.get(&x).copied().unwrap_or(x);
            for (res, v) in d.results.iter().zip(vs) {
                root.insert(*res, r);
                if plan.views.contains_key(&x) && !root.contains_key(&x) {
                    // A view of an input: absolute already.
                    plan.views.insert(*res, v);
                    root.remove(res);
                } else {
                    rel.insert(*res, v);
                }
            }
            continue;
        }
        for &res in &d.results {
            let (shape, e) = tensor_info(res, &format!("result of `{}`", d.name))?;
            let dt = if d.attr(KEEP_F32).is_some() {
                dtype_of(e)
            } else {
                storage_type(o, e)
            }
            .ok_or_else(|| err(&d.loc, format!("element type {e} is not supported")))?;
            if d.name == graph::Constant::NAME {
                if let Some(s) = splat_of(m, res) {
                    let s = if o.precision == Precision::Bf16 && e.is_float() {
                        bf16_saturating(s as f32).to_f64()
                    } else {
                        s
                    };
                    plan.splats.insert(res, s);
                }
                if m.uses(res).is_empty() {
                    continue;
                }
                // Checked against the target's HBM before the data is expanded.
                let need = llmpu_isa::limits::bytes("constant", &shape, dt.size())
                    .map_err(|e| err(&d.loc, e.to_string()))?;
                if need > o.target.hbm.size_bytes {
                    return Err(err(
                        &d.loc,
                        format!(
                            "constant {shape:?} needs {need} bytes of HBM but target `{}` has {}",
                            o.target.name, o.target.hbm.size_bytes
                        ),
                    ));
                }
                let bytes = const_bytes(m, res).ok_or_else(|| {
                    err(
                        &d.loc,
                        "constant data is elided; compile from the model, not a dump".into(),
                    )
                })?;
                let data = bytes_to_storage(&bytes, e, dt);
                let at = place(data.len() as u64);
                plan.views.insert(res, View::dense(at, dt, &shape));
                // Numbered in program order, which a printed and re-parsed module keeps (value
                // numbers it does not).
                plan.data.push(DataSegment {
                    name: format!("const{}", plan.data.len()),
                    hbm_addr: at,
                    bytes: data,
                });
                continue;
            }
            rel.insert(res, result_layout(m, op, res, dt, &shape));
            root.insert(res, res);
            owner_dt.insert(res, dt);
            def_index.insert(res, idx);
        }
    }
    // Outputs: direct when the result is (a full contiguous view of) a buffer used by nothing else.
    let mut out_views: Vec<View> = Vec::new();
    let mut direct: HashMap<ValueId, View> = HashMap::new();
    let mut taken: Vec<ValueId> = Vec::new();
    for (i, &v) in results.iter().enumerate() {
        let name = io_name(m, func, "res_attrs", i, "output");
        if let Some(&slot) = plan.kv_slots.get(&v) {
            if let Some(Some(s)) = kv_slots.get_mut(slot) {
                s.present = name;
                s.present_index = i as u32;
            }
            continue;
        }
        let (shape, e) = tensor_info(v, &format!("output `{name}`"))?;
        let dt = dtype_of(e).ok_or_else(|| {
            err(
                &floc,
                format!("output `{name}`: element type {e} unsupported"),
            )
        })?;
        let bytes = shape.iter().product::<u64>() * dt.size();
        let at = place(bytes);
        let dest = View::dense(at, dt, &shape);
        plan.io.push(IoTensor {
            name,
            dir: IoDir::Output,
            dtype: dt,
            shape: shape.clone(),
            hbm_addr: at,
        });
        out_views.push(dest.clone());
        let r = root.get(&v).copied();
        let ok = match (r, rel.get(&v)) {
            (Some(r), Some(rv)) => {
                let full = rv.is_contiguous() && rv.addr == 0;
                let rshape = rel.get(&r).map(|x| x.elems());
                full && rshape == Some(rv.elems())
                    && !taken.contains(&r)
                    && results
                        .iter()
                        .filter(|&&x| root.get(&x) == Some(&r))
                        .count()
                        == 1
            }
            _ => false,
        };
        if let (true, Some(r)) = (ok, r) {
            taken.push(r);
            let rshape = rel.get(&r).map(|x| x.shape.clone()).unwrap_or_default();
            direct.insert(r, View::dense(at, dt, &rshape));
            owner_dt.insert(r, dt);
        } else {
            plan.copies.push((i, v, dest));
        }
    }
    // The paged KV region: block table, then one block pool per slot.
    if let Some(
        [
            batch,
            block_tokens,
            max_blocks,
            num_blocks,
            past_len,
            new_tokens,
        ],
    ) = kv_params
        && !kv_slots.is_empty()
    {
        let slots: Vec<KvSlot> = kv_slots
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                s.filter(|s| !s.present.is_empty()).ok_or_else(|| {
                    err(
                        &floc,
                        format!("KV slot {i} has no past input or no present output"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let mut region = KvRegion {
            hbm_addr: 0,
            bytes: 0,
            dtype: kv_dtype,
            block_tokens,
            batch,
            max_blocks,
            num_blocks,
            past_len,
            new_tokens,
            table_addr: 0,
            slots,
        };
        let table = region.table_bytes().unwrap_or(u64::MAX);
        let start = place(table);
        region.hbm_addr = start;
        region.table_addr = start;
        let mut end = align(start + table);
        for i in 0..region.slots.len() {
            let bytes = region
                .block_bytes(&region.slots[i])
                .and_then(|b| b.checked_mul(num_blocks))
                .ok_or_else(|| err(&floc, "KV pool size overflows".into()))?;
            let at = place(bytes);
            region.slots[i].pool_addr = at;
            end = align(at + bytes);
        }
        region.bytes = end - start;
        region
            .validate()
            .map_err(|e| err(&floc, format!("KV region: {e}")))?;
        plan.kv = Some(region);
    }
    // Liveness of scratch buffers.
    let mut last_use: HashMap<ValueId, usize> = HashMap::new();
    for (idx, &op) in ops.iter().enumerate() {
        for &x in &m.op(op).operands {
            if let Some(&r) = root.get(&x) {
                last_use.insert(r, idx);
            }
        }
    }
    let base = align(addr);
    let mut live: Vec<(u64, u64, usize)> = Vec::new(); // (offset, size, last use)
    let mut high = 0u64;
    let mut order: Vec<(usize, ValueId)> = def_index.iter().map(|(v, i)| (*i, *v)).collect();
    order.sort();
    for (idx, v) in order {
        if let Some(dv) = direct.get(&v) {
            plan.owned.insert(v, dv.addr as u64);
            continue;
        }
        live.retain(|&(_, _, lu)| lu >= idx);
        let dt = owner_dt[&v];
        let size = align(rel[&v].elems() * dt.size());
        let mut spans: Vec<(u64, u64)> = live.iter().map(|l| (l.0, l.0 + l.1)).collect();
        spans.sort();
        let mut off = 0u64;
        for (lo, hi) in spans {
            if off + size <= lo {
                break;
            }
            off = off.max(hi);
        }
        let lu = last_use.get(&v).copied().unwrap_or(idx);
        live.push((off, size, lu));
        high = high.max(off + size);
        plan.owned.insert(v, base + off);
    }
    // A module that went through `plan-memory` carries its placement of the scratch tensors as
    // `llmpu.hbm`: that is what counts (edited in a dump or not), as long as it stays in the
    // scratch area and no two tensors alive at the same time overlap.
    let mut placed: Vec<(ValueId, u64, u64, usize, usize)> = vec![]; // (value, lo, hi, def, last use)
    for (idx, &op) in ops.iter().enumerate() {
        let Some(addrs) = m.attr(op, "llmpu.hbm").and_then(Attribute::as_i64_list) else {
            continue;
        };
        for (&r, &a) in m.op(op).results.iter().zip(&addrs) {
            if a < 0 || direct.contains_key(&r) || !plan.owned.contains_key(&r) {
                continue;
            }
            plan.owned.insert(r, a as u64);
            let size = align(rel[&r].elems() * owner_dt[&r].size());
            let (lo, hi) = (a as u64, a as u64 + size);
            if lo < base || !lo.is_multiple_of(HBM_ALIGN) || hi > o.target.hbm.size_bytes {
                return Err(err(
                    &m.op(op).loc,
                    format!(
                        "`llmpu.hbm` places {size} bytes at {lo:#x}: scratch tensors go in \
                         [{base:#x}, {:#x}) at multiples of {HBM_ALIGN}",
                        o.target.hbm.size_bytes
                    ),
                ));
            }
            placed.push((r, lo, hi, idx, last_use.get(&r).copied().unwrap_or(idx)));
        }
    }
    for (i, a) in placed.iter().enumerate() {
        for b in &placed[..i] {
            if a.1 < b.2 && b.1 < a.2 && a.3 <= b.4 && b.3 <= a.4 {
                let name = |v: ValueId| {
                    let d = m.op(ops[def_index[&v]]).loc.clone();
                    format!("{d}")
                };
                return Err(err(
                    &m.op(ops[a.3]).loc,
                    format!(
                        "`llmpu.hbm` puts this result at {:#x}..{:#x}, over the result of {} at \
                         {:#x}..{:#x}, which is still live",
                        a.1,
                        a.2,
                        name(b.0),
                        b.1,
                        b.2
                    ),
                ));
            }
        }
    }
    if let Some(top) = placed.iter().map(|p| p.2).max() {
        high = high.max(top - base);
    }
    plan.scratch = (base, high);
    let end = base + high;
    if end > o.target.hbm.size_bytes {
        return Err(err(
            &floc,
            format!(
                "the model needs {end} bytes of HBM but target `{}` has {}",
                o.target.name, o.target.hbm.size_bytes
            ),
        ));
    }
    // Absolute views.
    for (v, r) in &root {
        let Some(&at) = plan.owned.get(r) else {
            continue;
        };
        let mut view = rel[v].clone();
        view.addr += at as i64;
        if let Some(&dt) = owner_dt.get(r) {
            view.dt = dt;
        }
        plan.views.insert(*v, view);
    }
    Ok(plan)
}
