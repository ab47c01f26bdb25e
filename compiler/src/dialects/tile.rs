//! The `tile` dialect: a graph op's kernel as loops over tiles (`tile.kernel`, `tile.for`), on-chip
//! buffers in the memory levels below HBM (`memref<..., "sram">` / `"acc"`), explicit strided DMA
//! between HBM and those levels, and tile-sized compute (matrix engine, vector unit, online softmax).
//! `lower-tile` produces it from graph ops, `distribute-cores` spreads its loops over the cores, and
//! `lower-llmpu` turns it into instructions (`backend::tiles`).
//!
//! Semantics a reader of a dump needs:
//! - A `tile.kernel` replaces one graph op: same operands and results (tensors in HBM), and one
//!   block whose arguments are those tensors as `"hbm"` memrefs, operands first. Nothing inside
//!   refers to values defined outside it.
//! - A buffer with `slots = n` is a ring of `n` copies: every write that does not read the buffer
//!   (a DMA into it, a matmul that starts an accumulation, a vector op writing it) moves to the next
//!   copy, and reads see the copy last written. Two slots let the next tile load while the
//!   current one computes (double buffering).
//! - A DMA names the tile's element offsets in the HBM buffer; a tile that would cross the HBM
//!   buffer's end is cut there, and what reads it sees the cut extent (partial tiles).
//!
//! Invariants checked by the verifiers: DMA moves between an `"hbm"` buffer and an on-chip buffer of the
//! same element type; compute ops read/write only on-chip buffers; `tile.for` has one block whose single
//! argument is the `index` induction variable and which ends with `tile.yield`. None of these ops is
//! pure (they allocate or touch memory), so CSE/DCE leave them alone.

use super::{OpView, define_ops};
use crate::ir::{AddressSpace, BufferType, Type};

define_ops! { OPS;
    /// ```text
    /// %y = "tile.kernel"(%a, %b) ({
    /// ^bb0(%A: memref<512x256xbf16, "hbm">, %B: memref<256x512xbf16, "hbm">, %Y: memref<512x512xbf16, "hbm">):
    ///   ...
    ///   "tile.yield"() : () -> ()
    /// }) {op = "graph.matmul"} : (tensor<512x256xbf16>, tensor<256x512xbf16>) -> tensor<512x512xbf16>
    /// ```
    /// The kernel of one graph op (named by `op`; the op's other attributes, such as the planned
    /// `llmpu.hbm` addresses, stay on it): its body runs once and leaves the results in HBM.
    Kernel = "tile.kernel", pure = false, verify = verify_kernel;
    /// ```text
    /// "tile.for"() ({
    /// ^bb0(%i: index):
    ///   ...
    ///   "tile.yield"() : () -> ()
    /// }) {lower = 0 : i64, upper = 128 : i64, step = 32 : i64} : () -> ()
    /// ```
    /// Runs the body for `i = lower, lower + step, ... < upper`. `parallel` marks a loop whose
    /// iterations are independent (they write disjoint tiles); `cores = n` (set by
    /// `distribute-cores`) runs iteration `t` on core `t mod n`, every core its own iterations in
    /// order.
    For = "tile.for", pure = false, verify = verify_for;
    /// `"tile.yield"() : () -> ()` — terminates a `tile.for` or `tile.kernel` body.
    Yield = "tile.yield", pure = false, verify = verify_yield;
    /// `%v = "tile.reshape"(%x) : (memref<1x512x768xbf16, "hbm">) -> memref<512x768xbf16, "hbm">` —
    /// the same HBM elements in another shape (the tensor must be dense in HBM).
    Reshape = "tile.reshape", pure = false, verify = verify_reshape;
    /// `%b = "tile.alloc"() {slots = 2 : i64} : () -> memref<128x64xbf16, "sram">` — an on-chip buffer
    /// of `slots` copies (default 1), placed in its level's arena when the kernel is lowered.
    Alloc = "tile.alloc", pure = false, verify = verify_alloc;
    /// `"tile.dma_load"(%src, %dst, %i, %j) : (memref<1024x64xbf16, "hbm">, memref<128x64xbf16, "sram">, index, index) -> ()`
    /// — copies the tile of `src` at element offsets `(i, j)` into `dst` (offsets name the
    /// leading dimensions; missing trailing ones are 0).
    DmaLoad = "tile.dma_load", pure = false, verify = verify_dma_load;
    /// `"tile.dma_store"(%src, %dst, %i, %j) : (memref<128x64xf32, "acc">, memref<1024x64xf32, "hbm">, index, index) -> ()`
    /// — copies on-chip `src` into the tile of `dst` at offsets `(i, j)`.
    DmaStore = "tile.dma_store", pure = false, verify = verify_dma_store;
    /// `"tile.matmul"(%a, %b, %acc, %k) : (memref<MxK, "sram">, memref<KxN, "sram">, memref<MxN, "acc">, index) -> ()`
    /// — `acc += a · b` on the matrix engine; `acc = a · b` (a new accumulation) when the index
    /// operand `%k` is absent or at its loop's lower bound.
    MatMul = "tile.matmul", pure = false, verify = verify_matmul;
    /// `"tile.vector"(%in0, %in1?, %out) {kind = "add"} : (...) -> ()` — vector-unit work over a tile,
    /// in f32 except for `convert`. Kinds: `convert` / `copy` and the unary functions (`exp`,
    /// `log`, `sqrt`, `rsqrt`, `recip`, `tanh`, `erf`, `sigmoid`, `neg`, `abs`, `sin`, `cos`)
    /// `(x, out)`; `add`, `sub`, `mul`, `div`, `max`, `min` `(a, b, out)`, where a `b` of one row (or a rank-1 `b`) is added to every row of `a` and a
    /// `b` of one column to every column; the activations `relu`, `gelu`, `gelu_tanh`, `silu`
    /// `(x, scratch, out)` (`scratch`: an f32 tile the size of `x`); over each row, `softmax`
    /// `(x, max, sum, out)` and `layer_norm` / `rms_norm` `(x, s1, s2, scale?, bias?, out)` with
    /// `epsilon` (`max`, `sum`, `s1`, `s2`: f32 `rows × 1` statistics tiles; `scale`, `bias`: f32
    /// rows broadcast to every row; `out` f32).
    Vector = "tile.vector", pure = false, verify = verify_vector;
    /// `"tile.online_softmax"(%scores, %row_max, %row_sum, %acc) : (...) -> ()` — FlashAttention rescale:
    /// updates running row max/sum from a score tile, rescales `acc`, and leaves `exp(scores - max)` in
    /// `scores`.
    OnlineSoftmax = "tile.online_softmax", pure = false, verify = verify_online_softmax;
}

/// The on-chip buffers a tile op reads (for `tile.matmul` the accumulator too; index operands
/// and HBM memrefs are filtered out by the caller, which knows the buffers).
pub fn reads(m: &crate::ir::Module, op: crate::ir::OpId) -> &[crate::ir::ValueId] {
    let d = m.op(op);
    match d.name.as_str() {
        DmaStore::NAME => &d.operands[..1],
        Vector::NAME => &d.operands[..d.operands.len().saturating_sub(1)],
        MatMul::NAME => &d.operands[..d.operands.len().min(3)],
        _ => &[],
    }
}

/// The on-chip buffer a tile op writes.
pub fn writes(m: &crate::ir::Module, op: crate::ir::OpId) -> Option<crate::ir::ValueId> {
    let d = m.op(op);
    match d.name.as_str() {
        DmaLoad::NAME => d.operands.get(1).copied(),
        MatMul::NAME => d.operands.get(2).copied(),
        Vector::NAME => d.operands.last().copied(),
        _ => None,
    }
}

fn buffer(v: &OpView, i: usize) -> Result<BufferType, String> {
    v.operand_type(i).as_buffer().cloned().ok_or_else(|| {
        format!(
            "operand #{i} must be a buffer (memref), got {}",
            v.operand_type(i)
        )
    })
}

fn on_chip(v: &OpView, i: usize) -> Result<BufferType, String> {
    let b = buffer(v, i)?;
    if b.space == AddressSpace::Hbm {
        return Err(format!(
            "operand #{i} must be on chip (\"sram\" or \"acc\"), got \"hbm\""
        ));
    }
    Ok(b)
}

fn verify_for(v: &OpView) -> Result<(), String> {
    v.operands_in(0, 0)?;
    v.results_in(0, 0)?;
    let lower = v.int_attr("lower")?;
    let upper = v.int_attr("upper")?;
    let step = v.int_attr("step")?;
    if step <= 0 {
        return Err(format!("'step' must be positive, got {step}"));
    }
    if upper < lower {
        return Err(format!("'upper' ({upper}) is below 'lower' ({lower})"));
    }
    if let Some(a) = v.attr("parallel")
        && a.as_bool().is_none()
    {
        return Err(format!("'parallel' must be a boolean, got {a:?}"));
    }
    if v.attr("cores").is_some() && v.int_attr("cores")? < 1 {
        return Err(format!(
            "'cores' must be at least 1, got {}",
            v.int_attr("cores")?
        ));
    }
    let body = body_ending_in_yield(v)?;
    let args = &v.m.block(body).args;
    if args.len() != 1 || *v.m.value_type(args[0]) != Type::Index {
        return Err("body must have exactly one 'index' argument (the induction variable)".into());
    }
    Ok(())
}

/// The single block of the op's single region, which must end in `tile.yield`.
fn body_ending_in_yield(v: &OpView) -> Result<crate::ir::BlockId, String> {
    let d = v.data();
    if d.regions.len() != 1 || v.m.region(d.regions[0]).blocks.len() != 1 {
        return Err("expects one region with one block".into());
    }
    let Some(body) = v.m.entry_block(v.id) else {
        return Err("expects a body".into());
    };
    match v.m.block(body).ops.last() {
        Some(&t) if v.m.op(t).name == Yield::NAME => Ok(body),
        _ => Err("body must end with 'tile.yield'".into()),
    }
}

fn verify_yield(v: &OpView) -> Result<(), String> {
    v.operands_in(0, 0)?;
    v.results_in(0, 0)?;
    match v.m.parent_op(v.id) {
        Some(p) if [For::NAME, Kernel::NAME].contains(&v.m.op(p).name.as_str()) => Ok(()),
        _ => Err("expects parent op 'tile.for' or 'tile.kernel'".into()),
    }
}

fn verify_reshape(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 1)?;
    v.results_in(1, 1)?;
    let x = buffer(v, 0)?;
    let Type::Buffer(r) = v.result_type(0) else {
        return Err("result must be a memref".into());
    };
    if x.space != AddressSpace::Hbm || r.space != AddressSpace::Hbm || x.elem != r.elem {
        return Err("reshapes an \"hbm\" memref into one of the same element type".into());
    }
    if x.shape.iter().product::<u64>() != r.shape.iter().product::<u64>() {
        return Err(format!(
            "element counts differ: {:?} vs {:?}",
            x.shape, r.shape
        ));
    }
    Ok(())
}

fn verify_kernel(v: &OpView) -> Result<(), String> {
    v.results_in(1, usize::MAX)?;
    v.str_attr("op")?;
    let body = body_ending_in_yield(v)?;
    let d = v.data();
    let args = &v.m.block(body).args;
    let (n_in, n_out) = (v.num_operands(), d.results.len());
    if args.len() != n_in + n_out {
        return Err(format!(
            "body must have one 'hbm' memref argument per operand and result ({}), got {}",
            n_in + n_out,
            args.len()
        ));
    }
    for (i, &a) in args.iter().enumerate() {
        let outer = if i < n_in {
            v.operand_type(i)
        } else {
            v.result_type(i - n_in)
        };
        let (Type::Buffer(b), Type::Tensor(t)) = (v.m.value_type(a), outer) else {
            return Err(format!(
                "body argument #{i} must be an 'hbm' memref for a tensor, got {} for {outer}",
                v.m.value_type(a)
            ));
        };
        if b.space != AddressSpace::Hbm || t.static_shape().as_deref() != Some(&b.shape[..]) {
            return Err(format!(
                "body argument #{i} ({}) must be the \"hbm\" buffer of {outer}",
                v.m.value_type(a)
            ));
        }
    }
    Ok(())
}

fn verify_alloc(v: &OpView) -> Result<(), String> {
    v.operands_in(0, 0)?;
    v.results_in(1, 1)?;
    let slots = v.int_attr_or("slots", 1)?;
    if slots < 1 {
        return Err(format!("'slots' must be at least 1, got {slots}"));
    }
    match v.result_type(0) {
        Type::Buffer(b) if b.space != AddressSpace::Hbm => Ok(()),
        t => Err(format!(
            "result must be an on-chip buffer (\"sram\" or \"acc\"), got {t}"
        )),
    }
}

fn verify_offsets(v: &OpView, rank: usize) -> Result<(), String> {
    let n = v.num_operands() - 2;
    if n > rank {
        return Err(format!("expects at most {rank} index offsets, got {n}"));
    }
    for i in 2..v.num_operands() {
        if *v.operand_type(i) != Type::Index {
            return Err(format!("offset operand #{i} must be 'index'"));
        }
    }
    Ok(())
}

fn verify_dma(v: &OpView, hbm_operand: usize) -> Result<(), String> {
    v.operands_in(2, 6)?;
    v.results_in(0, 0)?;
    let big = buffer(v, hbm_operand)?;
    let chip = on_chip(v, 1 - hbm_operand)?;
    if big.space != AddressSpace::Hbm {
        return Err(format!(
            "operand #{hbm_operand} must be in \"hbm\", got \"{}\"",
            big.space.name()
        ));
    }
    if big.elem != chip.elem {
        return Err(format!(
            "element types differ: {} vs {}",
            big.elem, chip.elem
        ));
    }
    if big.shape.len() != chip.shape.len() {
        return Err("HBM and on-chip buffers must have the same rank".into());
    }
    if big.shape.iter().zip(&chip.shape).any(|(b, c)| c > b) {
        return Err("the tile is larger than the HBM buffer".into());
    }
    verify_offsets(v, big.shape.len())
}

fn verify_dma_load(v: &OpView) -> Result<(), String> {
    verify_dma(v, 0)
}

fn verify_dma_store(v: &OpView) -> Result<(), String> {
    verify_dma(v, 1)
}

fn verify_matmul(v: &OpView) -> Result<(), String> {
    v.operands_in(3, 4)?;
    v.results_in(0, 0)?;
    if v.num_operands() == 4 && *v.operand_type(3) != Type::Index {
        return Err("operand #3 must be the 'index' of the reduction loop".into());
    }
    let (a, b, c) = (on_chip(v, 0)?, on_chip(v, 1)?, on_chip(v, 2)?);
    if a.shape.len() != 2 || b.shape.len() != 2 || c.shape.len() != 2 {
        return Err("operands must be 2-D tiles".into());
    }
    if a.shape[1] != b.shape[0] {
        return Err(format!(
            "inner dimensions do not match: {} vs {}",
            a.shape[1], b.shape[0]
        ));
    }
    if c.shape != [a.shape[0], b.shape[1]] {
        return Err(format!(
            "accumulator shape {:?} must be [{}, {}]",
            c.shape, a.shape[0], b.shape[1]
        ));
    }
    if c.space != AddressSpace::Acc {
        return Err("accumulator must be in \"acc\"".into());
    }
    Ok(())
}

/// `tile.vector` kinds and their operand counts (`layer_norm` / `rms_norm` take 4 to 6).
pub const VECTOR_KINDS: &[(&str, usize)] = &[
    ("softmax", 4),
    ("layer_norm", 4),
    ("rms_norm", 4),
    ("convert", 2),
    ("copy", 2),
    ("add", 3),
    ("sub", 3),
    ("mul", 3),
    ("div", 3),
    ("max", 3),
    ("min", 3),
    ("exp", 2),
    ("log", 2),
    ("sqrt", 2),
    ("rsqrt", 2),
    ("recip", 2),
    ("tanh", 2),
    ("erf", 2),
    ("sigmoid", 2),
    ("neg", 2),
    ("abs", 2),
    ("sin", 2),
    ("cos", 2),
    ("floor", 2),
    ("ceil", 2),
    ("trunc", 2),
    ("round", 2),
    ("relu", 3),
    ("gelu", 3),
    ("gelu_tanh", 3),
    ("silu", 3),
];

fn verify_vector(v: &OpView) -> Result<(), String> {
    v.results_in(0, 0)?;
    let kind = v.str_attr("kind")?;
    let Some(&(_, n)) = VECTOR_KINDS.iter().find(|(k, _)| *k == kind) else {
        let names: Vec<&str> = VECTOR_KINDS.iter().map(|(k, _)| *k).collect();
        return Err(format!(
            "unknown kind `{kind}` (known: {})",
            names.join(", ")
        ));
    };
    let norm = kind.ends_with("_norm");
    v.operands_in(n, if norm { n + 2 } else { n })?;
    if norm {
        let eps = v.float_attr_opt("epsilon")?;
        if !eps.is_some_and(|e| e >= 0.0) {
            return Err("a norm needs a non-negative 'epsilon'".into());
        }
    }
    for i in 0..v.num_operands() {
        on_chip(v, i)?;
    }
    Ok(())
}

fn verify_online_softmax(v: &OpView) -> Result<(), String> {
    v.operands_in(4, 4)?;
    v.results_in(0, 0)?;
    let s = on_chip(v, 0)?;
    let (mx, sm, acc) = (on_chip(v, 1)?, on_chip(v, 2)?, on_chip(v, 3)?);
    if s.shape.len() != 2 {
        return Err("scores must be a 2-D tile".into());
    }
    let rows = s.shape[0];
    for (b, n) in [(&mx, "row_max"), (&sm, "row_sum"), (&acc, "acc")] {
        if b.shape.first() != Some(&rows) {
            return Err(format!("{n} must have {rows} rows"));
        }
    }
    Ok(())
}
