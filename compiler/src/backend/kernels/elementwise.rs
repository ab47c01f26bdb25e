//! Elementwise kernels ([`Ew`]): unary, binary, compare, select, cast, clip, GELU, rotary; each
//! output tile's operands are loaded (broadcast ones as a row or a column), computed in f32 on the
//! vector unit, converted and stored.

use super::*;
use llmpu_isa::numerics::F8E4M3_ROUNDS_FINITE;

/// Elementwise computations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ew {
    Unary(Un),
    Binary(Bin),
    Ge,
    Gt,
    Not,
    Pow,
    Relu,
    Gelu(bool),
    Where,
    Clip,
    /// Clip with (lower, upper) bounds present; the operands are `x` then the present bounds.
    ClipBounds(bool, bool),
    NotZero,
    Fill(f32),
    /// `a·b + c·d` (`true`) or `a·b − c·d` (`false`) of four operands (`graph.rope`).
    MulSum(bool),
    /// `trunc(a / b)`: integer division as ONNX defines it (toward zero), the quotient computed in
    /// f32 and truncated before the store (exact while the operands are integers below 2^24).
    DivTrunc,
    /// The operand with every value whose magnitude rounds past f8e4m3fn's range (above
    /// [`F8E4M3_ROUNDS_FINITE`], infinities included) replaced by NaN, ahead of the saturating
    /// store: ONNX Cast to FLOAT8E4M3FN with `saturate = 0`.
    F8NoSaturate,
    /// Integer remainder `a − b·q` with `q = ⌊a / b⌋` (`false`: the divisor's sign, ONNX Mod with
    /// `fmod = 0`) or `q = trunc(a / b)` (`true`: the dividend's sign, `fmod = 1`), the quotient
    /// computed in f32 (exact while the operands are integers below 2^24). A zero divisor gives NaN,
    /// which the integer store turns into 0, the reference's value.
    Mod(bool),
    /// A chain of one-operand steps on one operand, each applied to the previous step's result
    /// (at least one step): e.g. `ln(1 + e^x)` is `[Un(Exp), Imm(Add, 1.0), Un(Log)]`, or without
    /// overflow past `x = 88.7`, `max(x, 0) + ln(1 + e^-|x|)`: `[Un(Abs), Imm(Mul, -1.0), Un(Exp),
    /// Imm(Add, 1.0), Un(Log), Input(Bin::Add, Imm::Max, 0.0)]`.
    Steps(&'static [Step]),
}

/// One step of [`Ew::Steps`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Step {
    /// A unary vector op.
    Un(Un),
    /// A vector op with an immediate second operand.
    Imm(Imm, f32),
    /// Combines the chain's result with the chain's input under an immediate op:
    /// `r = r <bin> (x <imm> v)`, e.g. `Input(Bin::Add, Imm::Max, 0.0)` adds `max(x, 0)`.
    Input(Bin, Imm, f32),
}

/// Work tiles of one buffer set.
pub(super) struct Set {
    ins: Vec<u64>,
    w: u64,
    t1: u64,
    t2: u64,
    o: u64,
}

pub(super) fn elementwise(cx: &mut Cx, k: Ew, inputs: &[ValueId], ov: &View) -> R<()> {
    let srcs: Vec<Src> = inputs
        .iter()
        .map(|&v| classify(cx, v, &ov.shape))
        .collect::<R<_>>()?;
    elementwise_srcs(cx, k, &srcs, ov)
}

/// A variadic `graph.max` / `graph.min` (`op` is `Bin::Max` / `Bin::Min`) as a chain of binary
/// passes: the first two operands into the result, then the result with each further operand, in
/// place (a barrier between passes when several cores share the result).
pub(super) fn variadic(cx: &mut Cx, op: Bin, inputs: &[ValueId], ov: &View) -> R<()> {
    let Some((first, rest)) = inputs.split_first_chunk::<2>() else {
        return Err(cx.err("a variadic chain needs at least two operands"));
    };
    elementwise(cx, Ew::Binary(op), first, ov)?;
    for &x in rest {
        if cx.e.cores() > 1 {
            cx.e.barrier();
        }
        let srcs = [
            classify_view(ov.clone(), &ov.shape),
            classify(cx, x, &ov.shape)?,
        ];
        elementwise_srcs(cx, Ew::Binary(op), &srcs, ov)?;
    }
    Ok(())
}

/// `graph.rope`: `out[..., :h] = x₁·cos₁ − x₂·sin₁`, `out[..., h:] = x₂·cos₂ + x₁·sin₂` (halves of
/// the rotated part of the last axis: all of it, or its first `rotary_dim`), each half one
/// elementwise pass over strided views of `x`, `cos`, `sin`; a partial rotary's other elements are
/// copied through.
pub(super) fn rope(cx: &mut Cx, ins: &[ValueId], out: &View, rotary_dim: Option<i64>) -> R<()> {
    let r = out.shape.len();
    let d = *out
        .shape
        .last()
        .ok_or_else(|| cx.err("rope needs rank >= 1"))?;
    let rd = rotary_dim.map_or(d, |x| x.max(0) as u64);
    if !rd.is_multiple_of(2) || rd == 0 || rd > d || ins.len() != 3 {
        return Err(cx.err("rope needs an even rotated width and (x, cos, sin)"));
    }
    let h = rd / 2;
    let ov = out.slice(r - 1, 0, 1, rd);
    let mut full = vec![];
    for (i, &v) in ins.iter().enumerate() {
        let view = cx.view(v)?;
        let view = if i == 0 {
            view.slice(r - 1, 0, 1, rd)
        } else {
            view
        };
        full.push(view.broadcast_to(&ov.shape).ok_or_else(|| {
            cx.err(format!(
                "operand shape {:?} does not broadcast to {:?}",
                view.shape, ov.shape
            ))
        })?);
    }
    if rd < d {
        let x = cx.view(ins[0])?;
        let pass = |v: &View| v.slice(r - 1, rd, 1, d - rd);
        let src = classify_view(pass(&x), &pass(out).shape);
        elementwise_srcs(cx, Ew::Unary(Un::Copy), &[src], &pass(out))?;
        if cx.e.cores() > 1 {
            cx.e.barrier();
        }
    }
    let ov = &ov;
    let half = |v: &View, i: u64| v.slice(r - 1, i * h, 1, h);
    let src = |v: &View, i: u64| classify_view(half(v, i), &half(ov, i).shape);
    let (x, c, s) = (&full[0], &full[1], &full[2]);
    let first = [src(x, 0), src(c, 0), src(x, 1), src(s, 0)];
    elementwise_srcs(cx, Ew::MulSum(false), &first, &half(ov, 0))?;
    if cx.e.cores() > 1 {
        cx.e.barrier();
    }
    let second = [src(x, 1), src(c, 1), src(x, 0), src(s, 1)];
    elementwise_srcs(cx, Ew::MulSum(true), &second, &half(ov, 1))
}

pub(super) fn elementwise_srcs(cx: &mut Cx, k: Ew, srcs: &[Src], ov: &View) -> R<()> {
    let merged = merge_outer(&split_rows::src_views(srcs, ov));
    if merged[0].shape.len() < ov.shape.len() {
        let srcs = split_rows::rechunk_srcs(srcs, &merged[1..], &merged[0].shape);
        return elementwise_srcs(cx, k, &srcs, &merged[0]);
    }
    let shape = ov.shape.clone();
    let r = shape.len();
    let cols = if r == 0 { 1 } else { shape[r - 1] };
    // Bytes per row: inputs in their types, three f32 temporaries, the output.
    let per_row: u64 = srcs
        .iter()
        .map(|s| match s {
            Src::Full(v) => cols * v.dt.size(),
            Src::Col(v) => v.dt.size(),
            _ => 0,
        })
        .sum::<u64>()
        + cols * (12 + ov.dt.size());
    let once: u64 = srcs
        .iter()
        .map(|s| match s {
            Src::Row(v) => (cols * v.dt.size()).div_ceil(64) * 64,
            _ => 0,
        })
        .sum();
    let free = cx.e.free(Mem::Sram).saturating_sub(once);
    if r > 0 && cols > 1 && (free < 2 * per_row + 64 || cols > split_rows::MAX_COLS) {
        return split_rows::elementwise_chunked(cx, k, srcs, ov);
    }
    let budget_rows =
        row_tile(u64::MAX, 2 * per_row + 64, &cx.e.target).min(free / (2 * per_row + 64));
    if budget_rows == 0 {
        return Err(cx.err(format!("one row of {cols} elements does not fit in SRAM")));
    }
    let mut rows_loaded = vec![];
    for s in srcs {
        rows_loaded.push(match s {
            Src::Row(b) => Some(load_row(cx, b)?),
            _ => None,
        });
    }
    let inner = if r == 0 { 0 } else { 1 };
    let total_rows = if r == 0 { 1 } else { ov.elems() / cols.max(1) };
    let tiles = row_tiles(&shape, inner, cx.spread(total_rows, budget_rows));
    let max_rows = tiles.iter().map(|t| t.rows).max().unwrap_or(1);
    let nsets = if tiles.len() > cx.e.cores() { 2 } else { 1 };
    let mut sets = vec![];
    for _ in 0..nsets {
        let mut ins = vec![];
        for s in srcs {
            let bytes = match s {
                Src::Full(v) => max_rows * cols * v.dt.size(),
                Src::Col(v) => max_rows * v.dt.size(),
                _ => 0,
            };
            ins.push(if bytes > 0 {
                cx.alloc(Mem::Sram, bytes, "operand tile")?
            } else {
                0
            });
        }
        let f32b = max_rows * cols * 4;
        let w = cx.alloc(Mem::Sram, f32b, "work tile")?;
        let t1 = cx.alloc(Mem::Sram, f32b, "work tile")?;
        let t2 = cx.alloc(Mem::Sram, f32b, "work tile")?;
        let o = cx.alloc(Mem::Sram, max_rows * cols * ov.dt.size(), "output tile")?;
        sets.push(Set { ins, w, t1, t2, o });
    }
    let out_shape_view = if r == 0 {
        View {
            addr: ov.addr,
            dt: ov.dt,
            shape: vec![1],
            strides: vec![1],
        }
    } else {
        ov.clone()
    };
    // Rounds of one tile per core roll into a loop while the tiles are full and advance along
    // one dimension.
    let cores = cx.e.cores();
    let uniform_rounds = uniform_rounds(&tiles, max_rows, cores);
    let mut sweep = Sweep::new(cx.e, uniform_rounds, tiles.len().div_ceil(cores));
    while let Some((round, _)) = sweep.next(cx.e) {
        for (ti, t) in tiles.iter().enumerate().skip(round * cores).take(cores) {
            let par = cx.on_core(ti);
            let set = &sets[par.min(sets.len() - 1)];
            let rows = t.rows;
            let mut loaded = vec![];
            for (i, s) in srcs.iter().enumerate() {
                loaded.push(match s {
                    Src::Imm(x) => Loaded::Imm(*x),
                    Src::Full(v) => {
                        let v = if r == 0 {
                            View {
                                addr: v.addr,
                                dt: v.dt,
                                shape: vec![1],
                                strides: vec![1],
                            }
                        } else {
                            v.clone()
                        };
                        let tv = tile_view(&v, t);
                        cx.e.move_view(true, &tv, set.ins[i], cols);
                        Loaded::Tile(T::sram(set.ins[i], cols, v.dt), Bcast::Full)
                    }
                    Src::Col(v) => {
                        let mut c = v.clone();
                        let last = c.shape.len() - 1;
                        c.shape[last] = 1;
                        let tv = tile_view(&c, t);
                        cx.e.move_view(true, &tv, set.ins[i], 1);
                        Loaded::Tile(T::sram(set.ins[i], 1, v.dt), Bcast::Col)
                    }
                    Src::Row(_) => {
                        let row = rows_loaded[i].unwrap_or(T::sram(0, cols, DType::F32));
                        Loaded::Tile(row, Bcast::Row)
                    }
                });
            }
            let w = T::sram(set.w, cols, DType::F32);
            let t1 = T::sram(set.t1, cols, DType::F32);
            let t2 = T::sram(set.t2, cols, DType::F32);
            compute(cx.e, k, &loaded, w, t1, t2, rows, cols)?;
            let ot = T::sram(set.o, cols, ov.dt);
            let res = if ov.dt == DType::F32 {
                w
            } else {
                cx.e.vun(Un::Copy, ot, w, Bcast::Full, rows, cols);
                ot
            };
            let tv = tile_view(&out_shape_view, t);
            cx.e.move_view(false, &tv, res.addr, cols);
        }
    }
    Ok(())
}

/// Makes `x` a full f32 tile in `tmp` (copying broadcasts, filling immediates).
pub(super) fn full(e: &mut Emitter, x: Loaded, tmp: T, rows: u64, cols: u64) -> T {
    match x {
        Loaded::Imm(v) => {
            e.vfill(tmp, v, rows, cols);
            tmp
        }
        Loaded::Tile(t, Bcast::Full) => t,
        Loaded::Tile(t, b) => {
            e.vun(Un::Copy, tmp, t, b, rows, cols);
            tmp
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn compute(
    e: &mut Emitter,
    k: Ew,
    x: &[Loaded],
    w: T,
    t1: T,
    t2: T,
    rows: u64,
    cols: u64,
) -> Result<(), BackendError> {
    let bad = |m: &str| BackendError {
        loc: "elementwise".into(),
        message: m.into(),
    };
    let unary_src = |x: Loaded, e: &mut Emitter| match x {
        Loaded::Tile(t, b) => (t, b),
        Loaded::Imm(v) => {
            e.vfill(t1, v, rows, cols);
            (t1, Bcast::Full)
        }
    };
    match k {
        Ew::Fill(v) => e.vfill(w, v, rows, cols),
        Ew::Unary(u) => {
            let (a, b) = unary_src(x[0], e);
            e.vun(u, w, a, b, rows, cols);
        }
        Ew::Steps(steps) => {
            let mut x0 = full(e, x[0], t1, rows, cols);
            let rereads = steps.iter().any(|s| matches!(s, Step::Input(..)));
            if rereads && x0.addr == w.addr && x0.mem == w.mem {
                // The steps write `w`; an `Input` step still needs `x`.
                e.vun(Un::Copy, t1, x0, Bcast::Full, rows, cols);
                x0 = t1;
            }
            let mut a = x0;
            for &s in steps {
                match s {
                    Step::Un(u) => e.vun(u, w, a, Bcast::Full, rows, cols),
                    Step::Imm(k, v) => e.vimm(k, w, a, v, rows, cols),
                    Step::Input(b, k, v) => {
                        e.vimm(k, t2, x0, v, rows, cols);
                        e.vbin(b, w, a, t2, Bcast::Full, rows, cols);
                    }
                }
                a = w;
            }
        }
        Ew::Not => {
            let a = full(e, x[0], t1, rows, cols);
            e.vimm(Imm::Rsub, w, a, 1.0, rows, cols);
        }
        Ew::NotZero => {
            let (a, b) = unary_src(x[0], e);
            e.vun(Un::Abs, w, a, b, rows, cols);
            e.vfill(t2, 0.0, rows, cols);
            e.vbin(Bin::Lt, w, t2, w, Bcast::Full, rows, cols);
        }
        Ew::Relu => {
            let (a, b) = unary_src(x[0], e);
            let a = if b == Bcast::Full {
                a
            } else {
                e.vun(Un::Copy, t1, a, b, rows, cols);
                t1
            };
            e.vimm(Imm::Max, w, a, 0.0, rows, cols);
        }
        Ew::Gelu(tanh) => {
            let a = full(e, x[0], t1, rows, cols);
            if tanh {
                // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
                e.vimm(Imm::Pow, t2, a, 3.0, rows, cols);
                e.vimm(Imm::Mul, t2, t2, 0.044715, rows, cols);
                e.vbin(Bin::Add, t2, t2, a, Bcast::Full, rows, cols);
                e.vimm(Imm::Mul, t2, t2, 0.797_884_6, rows, cols);
                e.vun(Un::Tanh, t2, t2, Bcast::Full, rows, cols);
            } else {
                // 0.5·x·(1 + erf(x/√2))
                e.vimm(Imm::Mul, t2, a, std::f32::consts::FRAC_1_SQRT_2, rows, cols);
                e.vun(Un::Erf, t2, t2, Bcast::Full, rows, cols);
            }
            e.vimm(Imm::Add, t2, t2, 1.0, rows, cols);
            e.vbin(Bin::Mul, w, a, t2, Bcast::Full, rows, cols);
            e.vimm(Imm::Mul, w, w, 0.5, rows, cols);
        }
        Ew::Pow => match x[1] {
            Loaded::Imm(p) => {
                let a = full(e, x[0], t1, rows, cols);
                e.vimm(Imm::Pow, w, a, p, rows, cols);
            }
            other => {
                // a^b = exp(b · ln a) for a > 0.
                let a = full(e, x[0], t1, rows, cols);
                let b = full(e, other, t2, rows, cols);
                e.vun(Un::Log, w, a, Bcast::Full, rows, cols);
                e.vbin(Bin::Mul, w, w, b, Bcast::Full, rows, cols);
                e.vun(Un::Exp, w, w, Bcast::Full, rows, cols);
            }
        },
        Ew::Binary(_) | Ew::Ge | Ew::Gt if x.len() == 2 => {
            let (op, a, b) = match k {
                Ew::Binary(op) => (op, x[0], x[1]),
                Ew::Gt => (Bin::Lt, x[1], x[0]),
                _ => (Bin::Le, x[1], x[0]),
            };
            let commutative = matches!(op, Bin::Add | Bin::Mul | Bin::Max | Bin::Min | Bin::Eq);
            match (a, b) {
                (a, Loaded::Imm(v)) if !matches!(op, Bin::Eq | Bin::Lt | Bin::Le) => {
                    let a = full(e, a, t1, rows, cols);
                    let k = match op {
                        Bin::Add => Imm::Add,
                        Bin::Sub => Imm::Sub,
                        Bin::Mul => Imm::Mul,
                        Bin::Div => Imm::Div,
                        Bin::Max => Imm::Max,
                        _ => Imm::Min,
                    };
                    e.vimm(k, w, a, v, rows, cols);
                }
                (Loaded::Imm(v), b) if op == Bin::Sub => {
                    let b = full(e, b, t1, rows, cols);
                    e.vimm(Imm::Rsub, w, b, v, rows, cols);
                }
                (Loaded::Imm(v), b) if commutative && op != Bin::Eq => {
                    let b = full(e, b, t1, rows, cols);
                    let k = match op {
                        Bin::Add => Imm::Add,
                        Bin::Mul => Imm::Mul,
                        Bin::Max => Imm::Max,
                        _ => Imm::Min,
                    };
                    e.vimm(k, w, b, v, rows, cols);
                }
                (a, b) => {
                    let (a, b) = match (a, b) {
                        (Loaded::Tile(_, ba), Loaded::Tile(_, Bcast::Full))
                            if ba != Bcast::Full && commutative =>
                        {
                            (b, a)
                        }
                        _ => (a, b),
                    };
                    let a = full(e, a, t1, rows, cols);
                    let (b, bc) = match b {
                        Loaded::Tile(t, bc) => (t, bc),
                        imm => (full(e, imm, t2, rows, cols), Bcast::Full),
                    };
                    e.vbin(op, w, a, b, bc, rows, cols);
                }
            }
        }
        Ew::MulSum(plus) if x.len() == 4 => {
            let a = full(e, x[0], t1, rows, cols);
            let b = full(e, x[1], t2, rows, cols);
            e.vbin(Bin::Mul, w, a, b, Bcast::Full, rows, cols);
            let c = full(e, x[2], t1, rows, cols);
            let d = full(e, x[3], t2, rows, cols);
            e.vbin(Bin::Mul, t1, c, d, Bcast::Full, rows, cols);
            let op = if plus { Bin::Add } else { Bin::Sub };
            e.vbin(op, w, w, t1, Bcast::Full, rows, cols);
        }
        Ew::DivTrunc if x.len() == 2 => {
            compute(e, Ew::Binary(Bin::Div), x, w, t1, t2, rows, cols)?;
            e.vun(Un::Trunc, w, w, Bcast::Full, rows, cols);
        }
        Ew::Mod(fmod) if x.len() == 2 => {
            let a = full(e, x[0], t1, rows, cols);
            let b = full(e, x[1], t2, rows, cols);
            e.vbin(Bin::Div, w, a, b, Bcast::Full, rows, cols);
            let round = if fmod { Un::Trunc } else { Un::Floor };
            e.vun(round, w, w, Bcast::Full, rows, cols);
            e.vbin(Bin::Mul, w, w, b, Bcast::Full, rows, cols);
            e.vbin(Bin::Sub, w, a, w, Bcast::Full, rows, cols);
        }
        Ew::F8NoSaturate if x.len() == 1 => {
            let a = full(e, x[0], t1, rows, cols);
            e.vun(Un::Copy, w, a, Bcast::Full, rows, cols);
            e.vun(Un::Abs, t1, w, Bcast::Full, rows, cols);
            e.vfill(t2, F8E4M3_ROUNDS_FINITE, rows, cols);
            // 1 where |x| > 464 (NaN compares false and stays NaN through the select).
            e.vbin(Bin::Lt, t1, t2, t1, Bcast::Full, rows, cols);
            e.vfill(t2, f32::NAN, rows, cols);
            e.vsel(w, t1, t2, w, rows, cols);
        }
        Ew::Where if x.len() == 3 => {
            let c = full(e, x[0], w, rows, cols);
            let a = full(e, x[1], t1, rows, cols);
            let b = full(e, x[2], t2, rows, cols);
            e.vsel(w, c, a, b, rows, cols);
        }
        Ew::Clip | Ew::ClipBounds(..) if !x.is_empty() => {
            let a = full(e, x[0], t1, rows, cols);
            e.vun(Un::Copy, w, a, Bcast::Full, rows, cols);
            let (lo, hi) = match k {
                Ew::ClipBounds(l, h) => (l, h),
                _ => (x.len() > 1, x.len() > 2),
            };
            let hi_at = if lo { 2 } else { 1 };
            let bounds = [(lo, 1, Bin::Max, Imm::Max), (hi, hi_at, Bin::Min, Imm::Min)];
            for (present, i, bin, imm) in bounds {
                if !present {
                    continue;
                }
                match x.get(i) {
                    None => {}
                    Some(Loaded::Imm(v)) => e.vimm(imm, w, w, *v, rows, cols),
                    Some(&other) => {
                        let b = full(e, other, t2, rows, cols);
                        e.vbin(bin, w, w, b, Bcast::Full, rows, cols);
                    }
                }
            }
        }
        _ => return Err(bad("elementwise op with the wrong number of operands")),
    }
    Ok(())
}
