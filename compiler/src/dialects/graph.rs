//! The `graph` dialect: tensor-level ops with ONNX semantics (static or symbolic shapes), plus the fused
//! forms produced by graph-level fusion.
//!
//! Every op is pure. Verifiers check operand/result counts, element types and — where shapes are
//! static — shape rules (NumPy broadcasting, matmul inner dims, permutations, concat extents).
//! Symbolic dims are treated as unknown: they never cause a shape error.
//! Text form of every op is the MLIR generic form, e.g.
//! `%2 = "graph.add"(%0, %1) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32> loc("Add_0")`.
//! Attribute names are ONNX's. Optional ONNX inputs that are absent before a present one are recorded
//! with `operand_slots = array<i64: ...>` (operand `i` is ONNX input `slots[i]`; see [`operand_slot`]).
//! The reference semantics of every op are implemented by [`crate::interp`]; result shapes follow
//! [`crate::passes::shape_inference::infer_op`]. A simple elementwise op is defined whole in its row
//! here (`elementwise = Elementwise { ... }`: ONNX mapping, verifier kind, shape rule, scalar
//! reference function, vector-unit lowering), which those and the importer and backend read.
//!
//! Invariant: this file is the only Rust source that spells an op name; everything else uses
//! `graph::<Op>::NAME` (checked by `tests/op_name_spelling.rs`).

use super::{OpView, define_ops, normalize_axis};
use crate::backend::kernels::{Bin, Ew, Imm, Step, Un};
use crate::ir::{
    Attribute, BlockId, DenseAttr, Dim, Location, Module, ScalarType, TensorType, Type, ValueId,
};

/// The dialect's name prefix: every op name here starts with it.
pub const PREFIX: &str = "graph.";

define_ops! { OPS;
    /// `%r = "graph.matmul"(%a, %b) : (tensor<MxKxT>, tensor<KxNxT>) -> tensor<MxNxT>` — ONNX MatMul:
    /// batched matrix product with broadcast batch dims; 1-D operands are promoted as in NumPy.
    MatMul = "graph.matmul", pure = true, verify = verify_matmul;
    /// `%r = "graph.add"(%a, %b)` — elementwise `a + b` with broadcasting.
    Add = "graph.add", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Add", since: 7, float_only: false,
        eval: ScalarFn::Binary(|a, b| a + b, |a, b| a.wrapping_add(b)),
        lower: Some(Ew::Binary(Bin::Add)),
    };
    /// `%r = "graph.sub"(%a, %b)` — elementwise `a - b` with broadcasting.
    Sub = "graph.sub", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Sub", since: 7, float_only: false,
        eval: ScalarFn::Binary(|a, b| a - b, |a, b| a.wrapping_sub(b)),
        lower: Some(Ew::Binary(Bin::Sub)),
    };
    /// `%r = "graph.mul"(%a, %b)` — elementwise `a * b` with broadcasting.
    Mul = "graph.mul", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Mul", since: 7, float_only: false,
        eval: ScalarFn::Binary(|a, b| a * b, |a, b| a.wrapping_mul(b)),
        lower: Some(Ew::Binary(Bin::Mul)),
    };
    /// `%r = "graph.div"(%a, %b)` — elementwise `a / b` with broadcasting.
    Div = "graph.div", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Div", since: 7, float_only: false,
        eval: ScalarFn::Binary(|a, b| a / b, |a, b| if b == 0 { 0 } else { a.wrapping_div(b) }),
        lower: Some(Ew::Binary(Bin::Div)),
    };
    /// `%r = "graph.pow"(%x, %y)` — elementwise `x ^ y` with broadcasting; `y` may have another dtype.
    Pow = "graph.pow", pure = true, verify = verify_pow;
    /// `%r = "graph.gemm"(%a, %b, %c?) {alpha = 1.0 : f32, beta = 1.0 : f32, transA = 0 : i64, transB = 0 : i64}`
    /// — ONNX Gemm: `alpha · op(a) · op(b) + beta · c` with 2-D `a`, `b` (`op` transposes when the flag
    /// is set) and `c` unidirectionally broadcast to the `[M, N]` result.
    Gemm = "graph.gemm", pure = true, verify = verify_gemm;
    /// `%r = "graph.mod"(%a, %b) {fmod = 0 : i64}` — elementwise remainder with broadcasting: integer
    /// `fmod = 0` takes the divisor's sign (Python `%`), `fmod = 1` the dividend's (C `fmod`, required for
    /// floats).
    Mod = "graph.mod", pure = true, verify = verify_binary;
    /// `%r = "graph.log"(%x)` — elementwise natural logarithm.
    Log = "graph.log", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Log", since: 7, float_only: true,
        eval: ScalarFn::Unary(f64::ln, |a| a),
        lower: Some(Ew::Unary(Un::Log)),
    };
    /// `%r = "graph.ceil"(%x)` — elementwise rounding up.
    Ceil = "graph.ceil", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Ceil", since: 7, float_only: true,
        eval: ScalarFn::Unary(f64::ceil, |a| a),
        lower: Some(Ew::Unary(Un::Ceil)),
    };
    /// `%r = "graph.floor"(%x)` — elementwise rounding down.
    Floor = "graph.floor", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Floor", since: 6, float_only: true,
        eval: ScalarFn::Unary(f64::floor, |a| a),
        lower: Some(Ew::Unary(Un::Floor)),
    };
    /// `%r = "graph.round"(%x)` — elementwise rounding to the nearest integer, ties to even (ONNX
    /// Round).
    Round = "graph.round", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Round", since: 11, float_only: true,
        eval: ScalarFn::Unary(f64::round_ties_even, |a| a),
        lower: Some(Ew::Unary(Un::Round)),
    };
    /// `%r = "graph.abs"(%x)` — elementwise absolute value.
    Abs = "graph.abs", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Abs", since: 7, float_only: false,
        eval: ScalarFn::Unary(f64::abs, |a| a.wrapping_abs()),
        lower: Some(Ew::Unary(Un::Abs)),
    };
    /// `%r = "graph.not"(%x)` — elementwise logical negation of an `i1` tensor.
    Not = "graph.not", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Not", since: 7, float_only: false,
        eval: ScalarFn::Unary(|a| if a == 0.0 { 1.0 } else { 0.0 }, |a| (a == 0) as i128),
        lower: Some(Ew::Not),
    };
    /// `%r = "graph.or"(%a, %b)` — elementwise logical or of `i1` tensors, broadcasting.
    Or = "graph.or", pure = true, verify = verify_and;
    /// `%r = "graph.less"(%a, %b)` — elementwise `a < b`, `i1` result, broadcasting.
    Less = "graph.less", pure = true, verify = verify_compare;
    /// `%r = "graph.greater"(%a, %b)` — elementwise `a > b`, `i1` result, broadcasting.
    Greater = "graph.greater", pure = true, verify = verify_compare;
    /// `%r = "graph.size"(%x) : (tensor<2x3xf32>) -> tensor<i64>` — the element count as an `i64` scalar.
    Size = "graph.size", pure = true, verify = verify_size;
    /// `%r = "graph.pad"(%x, %pads, %value?, %axes?) {mode = "constant"}` — ONNX Pad: `pads` holds
    /// begin counts then end counts (negative values crop first) for every axis (or for `axes`); new
    /// elements are `value` (`constant`), the nearest border element (`edge`), the mirror image
    /// without repeating the border (`reflect`) or the opposite end (`wrap`) of the cropped input.
    Pad = "graph.pad", pure = true, verify = verify_pad;
    /// `%r = "graph.sqrt"(%x)` — elementwise square root.
    Sqrt = "graph.sqrt", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Sqrt", since: 7, float_only: true,
        eval: ScalarFn::Unary(f64::sqrt, |a| a),
        lower: Some(Ew::Unary(Un::Sqrt)),
    };
    /// `%r = "graph.reciprocal"(%x)` — elementwise `1 / x`.
    Reciprocal = "graph.reciprocal", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Reciprocal", since: 7, float_only: true,
        eval: ScalarFn::Unary(|a| 1.0 / a, |a| if a == 0 { 0 } else { 1 / a }),
        lower: Some(Ew::Unary(Un::Recip)),
    };
    /// `%r = "graph.exp"(%x)` — elementwise `e ^ x`.
    Exp = "graph.exp", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Exp", since: 7, float_only: true,
        eval: ScalarFn::Unary(f64::exp, |a| a),
        lower: Some(Ew::Unary(Un::Exp)),
    };
    /// `%r = "graph.erf"(%x)` — elementwise error function.
    Erf = "graph.erf", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Erf", since: 7, float_only: true,
        eval: ScalarFn::Unary(crate::interp::ops::erf, |a| a),
        lower: Some(Ew::Unary(Un::Erf)),
    };
    /// `%r = "graph.tanh"(%x)` — elementwise hyperbolic tangent.
    Tanh = "graph.tanh", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Tanh", since: 7, float_only: true,
        eval: ScalarFn::Unary(f64::tanh, |a| a),
        lower: Some(Ew::Unary(Un::Tanh)),
    };
    /// `%r = "graph.sigmoid"(%x)` — elementwise `1 / (1 + e ^ -x)`.
    Sigmoid = "graph.sigmoid", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Sigmoid", since: 7, float_only: true,
        eval: ScalarFn::Unary(crate::interp::ops::sigmoid, |a| a),
        lower: Some(Ew::Unary(Un::Sigmoid)),
    };
    /// `%r = "graph.softplus"(%x)` — elementwise `ln(1 + e ^ x)` (ONNX Softplus).
    Softplus = "graph.softplus", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Softplus", since: 7, float_only: true,
        eval: ScalarFn::Unary(|x| x.max(0.0) + (-x.abs()).exp().ln_1p(), |a| a),
        lower: Some(Ew::Steps(&[
            Step::Un(Un::Abs),
            Step::Imm(Imm::Mul, -1.0),
            Step::Un(Un::Exp),
            Step::Imm(Imm::Add, 1.0),
            Step::Un(Un::Log),
            Step::Input(Bin::Add, Imm::Max, 0.0),
        ])),
    };
    /// `%r = "graph.relu"(%x)` — elementwise `max(x, 0)`.
    Relu = "graph.relu", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Relu", since: 7, float_only: false,
        eval: ScalarFn::Unary(|a| if a > 0.0 || a.is_nan() { a } else { 0.0 }, |a| a.max(0)),
        lower: Some(Ew::Relu),
    };
    /// `%r = "graph.gelu"(%x) {approximate = "none" | "tanh"}` — Gaussian error linear unit.
    Gelu = "graph.gelu", pure = true, verify = verify_gelu;
    /// `%r = "graph.neg"(%x)` — elementwise `-x`.
    Neg = "graph.neg", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Neg", since: 7, float_only: false,
        eval: ScalarFn::Unary(|a| -a, |a| a.wrapping_neg()),
        lower: Some(Ew::Unary(Un::Neg)),
    };
    /// `%r = "graph.cos"(%x)` — elementwise cosine.
    Cos = "graph.cos", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Cos", since: 7, float_only: true,
        eval: ScalarFn::Unary(f64::cos, |a| a),
        lower: Some(Ew::Unary(Un::Cos)),
    };
    /// `%r = "graph.sin"(%x)` — elementwise sine.
    Sin = "graph.sin", pure = true, verify = verify_elementwise, elementwise = Elementwise {
        onnx: "Sin", since: 7, float_only: true,
        eval: ScalarFn::Unary(f64::sin, |a| a),
        lower: Some(Ew::Unary(Un::Sin)),
    };
    /// `%r = "graph.max"(%a, %b, ...)` — elementwise maximum of 1+ operands with broadcasting.
    Max = "graph.max", pure = true, verify = verify_variadic;
    /// `%r = "graph.min"(%a, %b, ...)` — elementwise minimum of 1+ operands with broadcasting.
    Min = "graph.min", pure = true, verify = verify_variadic;
    /// `%r = "graph.clip"(%x, %lo?, %hi?)` — clamps `x` to `[lo, hi]` (scalar bounds as operands;
    /// `max(x, lo)` then `min(·, hi)`, so `lo > hi` yields `hi`; NaN stays NaN). A missing `lo` with a
    /// present `hi` is spelled with `operand_slots = array<i64: 0, 2>`.
    Clip = "graph.clip", pure = true, verify = verify_clip;
    /// `%r = "graph.softmax"(%x) {axis = -1 : i64}` — softmax along `axis`.
    Softmax = "graph.softmax", pure = true, verify = verify_axis_unary;
    /// `%r = "graph.log_softmax"(%x) {axis = -1 : i64}` — log of softmax along `axis`.
    LogSoftmax = "graph.log_softmax", pure = true, verify = verify_axis_unary;
    /// `%r:3 = "graph.layer_norm"(%x, %scale, %bias?) {axis = -1 : i64, epsilon = 1.0e-5 : f32, stash_type = 1 : i64}` —
    /// ONNX LayerNormalization over dims `axis..rank`; optional results 2 and 3 are the mean and the
    /// inverse standard deviation (shape `x.dims[..axis]` followed by ones, element type per `stash_type`).
    LayerNorm = "graph.layer_norm", pure = true, verify = verify_norm_like;
    /// `%r = "graph.rms_norm"(%x, %scale) {axis = -1 : i64, epsilon = 1.0e-6 : f32}` —
    /// `x / sqrt(mean(x^2) + eps) * scale` over dims `axis..rank`.
    RmsNorm = "graph.rms_norm", pure = true, verify = verify_norm_like;
    /// `%r = "graph.reduce_mean"(%x, %axes?) {axes = array<i64: -1>, keepdims = 1 : i64}` — mean over axes.
    ReduceMean = "graph.reduce_mean", pure = true, verify = verify_reduce;
    /// `%r = "graph.reduce_sum"(%x, %axes?) {keepdims = 1 : i64}` — sum over axes.
    ReduceSum = "graph.reduce_sum", pure = true, verify = verify_reduce;
    /// `%r = "graph.reduce_max"(%x, %axes?) {keepdims = 1 : i64}` — maximum over axes.
    ReduceMax = "graph.reduce_max", pure = true, verify = verify_reduce;
    /// `%r = "graph.reduce_l2"(%x, %axes?) {keepdims = 1 : i64}` — `sqrt(sum(x^2))` over axes.
    ReduceL2 = "graph.reduce_l2", pure = true, verify = verify_reduce;
    /// `%r = "graph.reshape"(%x, %shape?)` — same elements, new shape (the result type is the shape);
    /// element counts must agree when static.
    Reshape = "graph.reshape", pure = true, verify = verify_reshape;
    /// `%r = "graph.transpose"(%x) {perm = array<i64: 1, 0>}` — permutes dims: `r.dim[i] = x.dim[perm[i]]`.
    Transpose = "graph.transpose", pure = true, verify = verify_transpose;
    /// `%r = "graph.concat"(%a, %b, ...) {axis = 0 : i64}` — joins tensors along `axis`.
    Concat = "graph.concat", pure = true, verify = verify_concat;
    /// `%r:2 = "graph.split"(%x, %sizes?) {axis = 0 : i64}` — splits `x` along `axis` into the results.
    Split = "graph.split", pure = true, verify = verify_split;
    /// `%r = "graph.slice"(%x, %starts, %ends, %axes?, %steps?)` — ONNX Slice: per listed axis,
    /// elements `start, start+step, ...` before `end`, with negative indices counted from the end and
    /// bounds clamped (`[0, n]` for positive steps, `[-1, n-1]` for negative ones).
    Slice = "graph.slice", pure = true, verify = verify_slice;
    /// `%r = "graph.gather"(%data, %indices) {axis = 0 : i64}` — ONNX Gather: result shape is
    /// `data[:axis] ++ indices ++ data[axis+1:]`.
    Gather = "graph.gather", pure = true, verify = verify_gather;
    /// `%r = "graph.gather_nd"(%data, %indices) {batch_dims = 0 : i64}` — ONNX GatherND.
    GatherNd = "graph.gather_nd", pure = true, verify = verify_index_op;
    /// `%v, %i = "graph.top_k"(%x, %k) {axis = -1 : i64, largest = 1 : i64, sorted = 1 : i64}` —
    /// ONNX TopK: the `k` largest (or smallest) elements along `axis` and their i64 indices, in
    /// order, equal values by lower index first.
    TopK = "graph.top_k", pure = true, verify = verify_top_k;
    /// `%r = "graph.one_hot"(%indices, %depth, %values) {axis = -1 : i64}` — ONNX OneHot: a new
    /// axis of `depth` holding `values[1]` at each index (negative ones counted from `depth`) and
    /// `values[0]` elsewhere.
    OneHot = "graph.one_hot", pure = true, verify = verify_one_hot;
    /// `%r = "graph.scatter_nd"(%data, %indices, %updates) {reduction = "none"}` — ONNX ScatterND:
    /// a copy of `data` with the slices `indices[..., :]` addresses replaced by (or, with
    /// `reduction` add / mul / max / min, combined with) `updates`; the result has `data`'s type.
    ScatterNd = "graph.scatter_nd", pure = true, verify = verify_scatter_nd;
    /// `%r = "graph.gather_elements"(%data, %indices) {axis = 1 : i64}` — ONNX GatherElements:
    /// `r[i0, .., ia, ..] = data[i0, .., indices[i0, .., ia, ..], ..]`; the result has the indices'
    /// shape, the data's element type.
    GatherElements = "graph.gather_elements", pure = true, verify = verify_gather_elements;
    /// `%r = "graph.unsqueeze"(%x, %axes?)` — inserts size-1 dims.
    Unsqueeze = "graph.unsqueeze", pure = true, verify = verify_same_numel;
    /// `%r = "graph.squeeze"(%x, %axes?)` — removes size-1 dims.
    Squeeze = "graph.squeeze", pure = true, verify = verify_same_numel;
    /// `%r = "graph.flatten"(%x) {axis = 1 : i64}` — reshapes to 2-D `[prod(d[:axis]), prod(d[axis:])]`.
    Flatten = "graph.flatten", pure = true, verify = verify_same_numel;
    /// `%r = "graph.expand"(%x, %shape)` — broadcasts `x` to a shape.
    Expand = "graph.expand", pure = true, verify = verify_expand;
    /// `%r = "graph.where"(%cond, %a, %b)` — elementwise select with broadcasting; `cond` is `i1`.
    Where = "graph.where", pure = true, verify = verify_where;
    /// `%r = "graph.equal"(%a, %b)` — elementwise `a == b`, `i1` result, broadcasting.
    Equal = "graph.equal", pure = true, verify = verify_compare;
    /// `%r = "graph.and"(%a, %b)` — elementwise logical and of `i1` tensors.
    And = "graph.and", pure = true, verify = verify_and;
    /// `%r = "graph.less_or_equal"(%a, %b)` — elementwise `a <= b`, `i1` result.
    LessOrEqual = "graph.less_or_equal", pure = true, verify = verify_compare;
    /// `%r = "graph.greater_or_equal"(%a, %b)` — elementwise `a >= b`, `i1` result.
    GreaterOrEqual = "graph.greater_or_equal", pure = true, verify = verify_compare;
    /// `%r = "graph.cast"(%x) {saturate = 1 : i64} : (tensor<4xf32>) -> tensor<4xbf16>` — converts
    /// elements to the result dtype (ONNX Cast; also CastLike): floats → integers truncate toward zero,
    /// → `i1` is `x != 0`, float narrowing rounds to nearest even, `f8E4M3FN` saturates to ±448 unless
    /// `saturate = 0` (then out-of-range values become NaN).
    Cast = "graph.cast", pure = true, verify = verify_cast;
    /// `%r = "graph.shape"(%x) {start?, end?} : (tensor<2x?xf32>) -> tensor<2xi64>` — the shape as a tensor.
    Shape = "graph.shape", pure = true, verify = verify_shape;
    /// `%r = "graph.range"(%start, %limit, %delta)` — ONNX Range (scalar operands, 1-D result).
    Range = "graph.range", pure = true, verify = verify_range;
    /// `%r = "graph.constant_of_shape"(%shape) {value = dense<0.0> : tensor<1xf32>}` — a filled tensor.
    ConstantOfShape = "graph.constant_of_shape", pure = true, verify = verify_constant_of_shape;
    /// `%r = "graph.cumsum"(%x, %axis) {exclusive = 0 : i64, reverse = 0 : i64}` — ONNX CumSum:
    /// running sums along `axis` (a scalar or 1-element integer tensor), optionally excluding
    /// the current element and/or from the end.
    CumSum = "graph.cumsum", pure = true, verify = verify_cumsum;
    /// `%r = "graph.tile"(%x, %repeats)` — ONNX Tile: `x` repeated `repeats[i]` times along axis
    /// `i` (`repeats`: one non-negative i64 per axis).
    Tile = "graph.tile", pure = true, verify = verify_tile;
    /// `%r = "graph.trilu"(%x, %k?) {upper = 1 : i64}` — keeps the upper/lower triangle.
    Trilu = "graph.trilu", pure = true, verify = verify_trilu;
    /// `%y, %present_k?, %present_v?, %qk? = "graph.attention"(%q, %k, %v, %mask?, %past_k?, %past_v?,
    /// %nonpad_kv_seqlen?) {scale?, is_causal?, q_num_heads?, kv_num_heads?, softcap?,
    /// qk_matmul_output_mode?}` — ONNX Attention (opsets 23/24): 3-D inputs `[B, S, H·D]` are split
    /// into heads; past K/V are concatenated on the sequence axis; `softmax(softcap(q·kᵀ·scale) + bias)·v`
    /// where bias combines a boolean (`false` → -inf) or additive mask (padded with -inf to the total
    /// length), the bottom-right-aligned causal mask and the `nonpad_kv_seqlen` padding; query heads
    /// share KV heads in groups (GQA). A fully masked row yields zeros. `%qk` is the scaled scores
    /// (mode 0), the soft-capped scores (1), those plus the bias (2) or the probabilities (3), as
    /// onnxruntime orders them. Absent optional inputs are spelled
    /// with `operand_slots`.
    Attention = "graph.attention", pure = true, verify = verify_attention;
    /// `%r = "graph.rotary_embedding"(%x, %cos, %sin, %pos?) {interleaved = 0 : i64}` — RoPE.
    RotaryEmbedding = "graph.rotary_embedding", pure = true, verify = verify_rotary;
    /// `%r = "graph.einsum"(%a, ...) {equation = "ij,jk->ik"}` — Einstein summation.
    Einsum = "graph.einsum", pure = true, verify = verify_einsum;
    /// `%r = "graph.matmul_integer"(%a, %b, %a_zp?, %b_zp?)` — int8/uint8 matmul with `i32` result.
    MatMulInteger = "graph.matmul_integer", pure = true, verify = verify_matmul_integer;
    /// `%r = "graph.quantize_linear"(%x, %scale, %zero_point?) {axis = 1 : i64}` — float → int8/uint8/f8.
    QuantizeLinear = "graph.quantize_linear", pure = true, verify = verify_quantize;
    /// `%r = "graph.dequantize_linear"(%x, %scale, %zero_point?) {axis = 1 : i64}` — quantized → float.
    DequantizeLinear = "graph.dequantize_linear", pure = true, verify = verify_dequantize;
    /// `%r = "graph.constant"() {value = dense<...> : tensor<...>}` — a constant tensor; the result type
    /// equals the value's type. Large values print as `dense_resource<name>`.
    Constant = "graph.constant", pure = true, verify = verify_constant;
    /// `%r = "graph.identity"(%x)` — returns its operand (removed by `canonicalize`).
    Identity = "graph.identity", pure = true, verify = verify_unary;
    /// `%r = "graph.fused_attention"(%q, %k, %v, %mask?) {scale = 0.125 : f32, causal = true}` —
    /// `softmax(q kᵀ · scale + mask) v` recognized from its decomposed pattern; `loc(fused[...])` names
    /// every source node. With `softcap = c : f32` the scores are soft-capped before the mask:
    /// `softmax(c · tanh(q kᵀ · scale / c) + mask) v`.
    FusedAttention = "graph.fused_attention", pure = true, verify = verify_fused_attention;
    /// `%r = "graph.matmul_epilogue"(%a, %b, %bias?, %res?) {activation = "none" | "relu" | "gelu" | "gelu_tanh" | "silu", residual = true?}`
    /// — `act(a · b + bias) + res`, computed in f32 on the accumulator tile with one rounding to
    /// the result type. `bias` broadcasts along the output rows; `res` (present iff `residual =
    /// true`, always the last operand) broadcasts to the result shape. For example
    /// `"graph.matmul_epilogue"(%x, %w, %b, %h) {activation = "none", residual = true} :
    /// (tensor<4x16xf32>, tensor<16x8xf32>, tensor<1x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>`
    /// is `x · w + b + h`.
    MatMulEpilogue = "graph.matmul_epilogue", pure = true, verify = verify_matmul_epilogue;
    /// `%r = "graph.norm"(%x, %scale?, %bias?) {kind = "layer" | "rms", axis = -1 : i64, epsilon = 1.0e-5 : f32}`
    /// — a normalization recognized from its decomposed pattern.
    Norm = "graph.norm", pure = true, verify = verify_norm;
    /// `%r = "graph.rope"(%x, %cos, %sin)` — rotary position embedding recognized from its
    /// decomposed pattern (`fuse-rotary`): `x·cos + rotate_half(x)·sin` where
    /// `rotate_half(x) = concat(−x[..., D/2:], x[..., :D/2])` along the last axis (even `D`); `cos` and
    /// `sin` broadcast to `x`'s shape, the result has `x`'s type.
    /// With `{rotary_dim = r}` (partial rotary, GPT-NeoX / Phi / StableLM) only the first `r`
    /// (even) elements of the last axis rotate, `cos`/`sin` broadcasting to `[..., r]`; the rest
    /// pass through.
    Rope = "graph.rope", pure = true, verify = verify_rope;
    /// `%present = "graph.kv_append"(%past, %new) {axis = 2 : i64, slot = 0 : i64}` — the concat
    /// of a cached past and the new tokens along the sequence axis, kept in the paged KV region
    /// (`kv-layout`): only `%new` is written, in place.
    KvAppend = "graph.kv_append", pure = false, verify = verify_kv_append;
    /// `%m = "graph.kv_mask"(%mask) {batch = 2 : i64} : (tensor<1x1x1x32xf32>) ->
    /// tensor<2x1x1x32xf32>` — an additive attention mask of a decode graph re-indexed from the
    /// graph's key positions to the paged KV region's slots (`kv-layout`, `spec/kv-cache.md`).
    /// The graph sees every sequence right-aligned, its new tokens at the compiled past length `P`
    /// (as Hugging Face sees a left-padded batch); sequence `b` of `len[b]` cached tokens keeps them
    /// in slots `0..len[b]`. So `r[b, h, q, t] = mask[b, h, q, t + P − len[b]]` for `t < len[b] +
    /// new`, and −inf for the slots after. The mask broadcasts to rank 4 with `batch` rows; at
    /// `len[b] = P` (the only length the graph-level semantics knows) it is that broadcast.
    KvMask = "graph.kv_mask", pure = true, verify = verify_kv_mask;
}

/// A simple elementwise op, defined whole in its `define_ops!` row (`elementwise = ...`): the
/// ONNX operator it imports from, its verifier kind and shape rule (from the arity of `eval`:
/// unary ops keep their operand's type, binary ones broadcast NumPy-style to a common shape), its
/// reference semantics per element and its vector-unit lowering. The importer
/// ([`elementwise_from_onnx`]), shape inference, the interpreter and the backend read this row and
/// have no per-op code for it. For example the row of `graph.exp`:
///
/// ```text
/// Exp = "graph.exp", pure = true, verify = verify_elementwise, elementwise = Elementwise {
///     onnx: "Exp", since: 7, float_only: true,
///     eval: ScalarFn::Unary(f64::exp, |a| a),
///     lower: Some(Ew::Unary(Un::Exp)),
/// };
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Elementwise {
    /// The ONNX operator type (default domain) imported as this op.
    pub onnx: &'static str,
    /// The first opset whose semantics the row implements; the row holds up to the newest opset
    /// the importer reads ([`crate::onnx::MAX_OPSET`]).
    pub since: i64,
    /// Operands must be floating-point (else any element type, `i1` included).
    pub float_only: bool,
    /// Reference semantics per element, in `f64` for float tensors and `i128` for integer ones
    /// (the interpreter rounds to the element type); its arity is the op's.
    pub eval: ScalarFn,
    /// The backend's vector-unit computation; `None` when the backend does not lower the op.
    pub lower: Option<Ew>,
}

/// The per-element function of an [`Elementwise`] op: `(float, integer)` forms.
#[derive(Clone, Copy, Debug)]
pub enum ScalarFn {
    /// One operand; the result has its type.
    Unary(fn(f64) -> f64, fn(i128) -> i128),
    /// Two operands broadcast to a common shape; the result has the first operand's element type.
    Binary(fn(f64, f64) -> f64, fn(i128, i128) -> i128),
}

impl ScalarFn {
    /// Number of operands.
    pub fn arity(&self) -> usize {
        match self {
            ScalarFn::Unary(..) => 1,
            ScalarFn::Binary(..) => 2,
        }
    }
}

/// The elementwise definition of the op named `name`, if it is a simple elementwise op.
pub fn elementwise(name: &str) -> Option<&'static Elementwise> {
    super::lookup(name).and_then(|i| i.elementwise)
}

/// The simple elementwise op an ONNX operator type imports as: `(op name, definition)`.
pub fn elementwise_from_onnx(op_type: &str) -> Option<(&'static str, &'static Elementwise)> {
    OPS.iter().find_map(|i| {
        i.elementwise
            .filter(|e| e.onnx == op_type)
            .map(|e| (i.name, e))
    })
}

/// The verifier of every [`Elementwise`] op: operand count from the arity, NumPy broadcasting,
/// the result's element type equal to the (first) operand's, floats only when `float_only`.
fn verify_elementwise(v: &OpView) -> Result<(), String> {
    let row = elementwise(&v.data().name).ok_or("is not an elementwise op")?;
    match row.eval {
        ScalarFn::Unary(..) => verify_unary(v)?,
        ScalarFn::Binary(..) => verify_binary(v)?,
    }
    let x = v.tensor_operand(0)?;
    if row.float_only && !x.elem.is_float() {
        return Err(format!("expects a floating-point operand, got {}", x.elem));
    }
    Ok(())
}

fn verify_kv_mask(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 1)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    if !x.elem.is_float() {
        return Err(format!(
            "expects a floating-point additive mask, got {}",
            x.elem
        ));
    }
    same_elem(v, x.elem, "result", r.elem)?;
    let batch = v.int_attr_or("batch", -1)?;
    if batch < 1 {
        return Err("attribute 'batch' must be a positive integer".into());
    }
    if x.rank() > 4 || r.rank() != 4 {
        return Err("expects a mask of rank <= 4 and a rank-4 result".into());
    }
    if let (Some(xs), Some(rs)) = (x.static_shape(), r.static_shape()) {
        let mut padded = vec![1; 4 - xs.len()];
        padded.extend(&xs);
        let fits = |i: usize| padded[i] == rs[i] || padded[i] == 1;
        if rs[0] != batch as u64 || !(0..4).all(fits) {
            return Err(format!(
                "result {rs:?} must be the mask {xs:?} broadcast to rank 4 with {batch} rows"
            ));
        }
    }
    Ok(())
}

fn verify_kv_append(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 2)?;
    v.results_in(1, 1)?;
    let (p, n, r) = (
        v.tensor_operand(0)?,
        v.tensor_operand(1)?,
        v.tensor_result(0)?,
    );
    if p.rank() != 4 || n.rank() != 4 || r.rank() != 4 {
        return Err("expects rank-4 [batch, heads, seq, head_dim] tensors".into());
    }
    same_elem(v, p.elem, "new", n.elem)?;
    same_elem(v, p.elem, "result", r.elem)?;
    let slot = v.int_attr_or("slot", -1)?;
    if slot < 0 {
        return Err("attribute 'slot' must be a non-negative integer".into());
    }
    if let (Some(ps), Some(ns), Some(rs)) = (p.static_shape(), n.static_shape(), r.static_shape())
        && (rs[2] != ps[2] + ns[2]
            || ps[0] != ns[0]
            || ps[1] != ns[1]
            || ps[3] != ns[3]
            || rs[..2] != ps[..2]
            || rs[3] != ps[3])
    {
        return Err("result must be past and new joined along axis 2".into());
    }
    Ok(())
}

// ---------- shape helpers ----------

/// NumPy broadcast of two shapes; errors on static mismatch. Symbolic dims broadcast as unknown.
pub fn broadcast_dims(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, String> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n {
            Some(&a[i + a.len() - n])
        } else {
            None
        };
        let db = if i + b.len() >= n {
            Some(&b[i + b.len() - n])
        } else {
            None
        };
        let d = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (Some(x), Some(y)) => match (x, y) {
                (Dim::Static(1), o) | (o, Dim::Static(1)) => o.clone(),
                (Dim::Static(p), Dim::Static(q)) if p != q => {
                    return Err(format!(
                        "shapes are not broadcast-compatible (dim {p} vs {q})"
                    ));
                }
                (Dim::Static(_), _) => x.clone(),
                (_, Dim::Static(_)) => y.clone(),
                _ => x.clone(),
            },
            (None, None) => Dim::Dynamic,
        };
        out.push(d);
    }
    Ok(out)
}

fn dims_string(d: &[Dim]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|x| match x {
            Dim::Static(n) => n.to_string(),
            Dim::Symbolic(s) => s.to_string(),
            Dim::Dynamic => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Checks that `actual` matches `expected` where both are static.
pub fn check_shape(actual: &[Dim], expected: &[Dim], what: &str) -> Result<(), String> {
    let err = || {
        format!(
            "{what} shape {} does not match the expected {}",
            dims_string(actual),
            dims_string(expected)
        )
    };
    if actual.len() != expected.len() {
        return Err(err());
    }
    for (a, e) in actual.iter().zip(expected) {
        if let (Dim::Static(x), Dim::Static(y)) = (a, e)
            && x != y
        {
            return Err(err());
        }
    }
    Ok(())
}

fn same_elem(v: &OpView, elem: ScalarType, what: &str, got: ScalarType) -> Result<(), String> {
    if elem != got {
        let _ = v;
        return Err(format!("{what} element type {got} does not match {elem}"));
    }
    Ok(())
}

// ---------- verifiers ----------

fn verify_unary(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 1)?;
    v.results_in(1, 1)?;
    let x = v.tensor_operand(0)?;
    let r = v.tensor_result(0)?;
    same_elem(v, x.elem, "result", r.elem)?;
    check_shape(&r.dims, &x.dims, "result")
}

fn verify_unary_float(v: &OpView) -> Result<(), String> {
    verify_unary(v)?;
    let x = v.tensor_operand(0)?;
    if !x.elem.is_float() {
        return Err(format!("expects a floating-point operand, got {}", x.elem));
    }
    Ok(())
}

fn verify_gelu(v: &OpView) -> Result<(), String> {
    verify_unary_float(v)?;
    match v.attr("approximate") {
        None => Ok(()),
        Some(Attribute::Str(s)) if s == "none" || s == "tanh" => Ok(()),
        Some(a) => Err(format!(
            "attribute 'approximate' must be \"none\" or \"tanh\", got {a:?}"
        )),
    }
}

fn verify_broadcast_n(
    v: &OpView,
    operands: &[usize],
    result_elem: Option<ScalarType>,
) -> Result<(), String> {
    v.results_in(1, 1)?;
    let first = v.tensor_operand(operands[0])?;
    let mut dims = first.dims.clone();
    for &i in &operands[1..] {
        let t = v.tensor_operand(i)?;
        same_elem(v, first.elem, &format!("operand #{i}"), t.elem)?;
        dims = broadcast_dims(&dims, &t.dims)?;
    }
    let r = v.tensor_result(0)?;
    same_elem(v, result_elem.unwrap_or(first.elem), "result", r.elem)?;
    check_shape(&r.dims, &dims, "result")
}

fn verify_binary(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 2)?;
    verify_broadcast_n(v, &[0, 1], None)
}

fn verify_variadic(v: &OpView) -> Result<(), String> {
    v.operands_in(1, usize::MAX)?;
    let idx: Vec<usize> = (0..v.num_operands()).collect();
    verify_broadcast_n(v, &idx, None)
}

fn verify_gemm(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 3)?;
    v.results_in(1, 1)?;
    let (a, b, r) = (
        v.tensor_operand(0)?,
        v.tensor_operand(1)?,
        v.tensor_result(0)?,
    );
    if a.rank() != 2 || b.rank() != 2 {
        return Err("operands a and b must be 2-D".into());
    }
    same_elem(v, a.elem, "operand #1", b.elem)?;
    same_elem(v, a.elem, "result", r.elem)?;
    let ta = v.int_attr_or("transA", 0)? != 0;
    let tb = v.int_attr_or("transB", 0)? != 0;
    let (m, ka) = if ta {
        (&a.dims[1], &a.dims[0])
    } else {
        (&a.dims[0], &a.dims[1])
    };
    let (kb, n) = if tb {
        (&b.dims[1], &b.dims[0])
    } else {
        (&b.dims[0], &b.dims[1])
    };
    if let (Dim::Static(x), Dim::Static(y)) = (ka, kb)
        && x != y
    {
        return Err(format!("inner dimensions do not match: {x} vs {y}"));
    }
    let out = vec![m.clone(), n.clone()];
    if v.num_operands() == 3 {
        let c = v.tensor_operand(2)?;
        let b = broadcast_dims(&out, &c.dims)?;
        check_shape(&b, &out, "bias broadcast")?;
    }
    check_shape(&r.dims, &out, "result")
}

fn verify_size(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 1)?;
    v.results_in(1, 1)?;
    let r = v.tensor_result(0)?;
    if r.elem != ScalarType::I64 || r.rank() != 0 {
        return Err("result must be a rank-0 i64 tensor".into());
    }
    Ok(())
}

fn verify_pad(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 4)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    same_elem(v, x.elem, "result", r.elem)?;
    if r.rank() != x.rank() {
        return Err("result rank differs from the input rank".into());
    }
    match v.attr("mode").map(|a| a.as_str()) {
        None => Ok(()),
        Some(Some(m)) if PAD_MODES.contains(&m) => Ok(()),
        Some(m) => Err(format!("mode must be one of {PAD_MODES:?}, got {m:?}")),
    }
}

/// The `mode`s of `graph.pad` (ONNX Pad's).
pub const PAD_MODES: [&str; 4] = ["constant", "edge", "reflect", "wrap"];

/// Where output position `i` of an axis padded by `graph.pad` in `mode` reads from, given as an
/// offset into the `n` kept (cropped) input elements: `i` itself inside `0..n`; outside, `None`
/// for `constant` (the pad value) and otherwise the nearest border (`edge`), the mirrored position
/// (`reflect`, period `2(n−1)`) or `i mod n` (`wrap`). `None` also when `n = 0`.
pub fn pad_source(mode: &str, i: i64, n: i64) -> Option<i64> {
    if (0..n).contains(&i) {
        return Some(i);
    }
    if n <= 0 {
        return None;
    }
    match mode {
        "edge" => Some(i.clamp(0, n - 1)),
        "reflect" => {
            let period = 2 * (n - 1);
            if period == 0 {
                return Some(0);
            }
            let j = i.rem_euclid(period);
            Some(if j >= n { period - j } else { j })
        }
        "wrap" => Some(i.rem_euclid(n)),
        _ => None,
    }
}

fn verify_pow(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 2)?;
    v.results_in(1, 1)?;
    let (x, y, r) = (
        v.tensor_operand(0)?,
        v.tensor_operand(1)?,
        v.tensor_result(0)?,
    );
    same_elem(v, x.elem, "result", r.elem)?;
    check_shape(&r.dims, &broadcast_dims(&x.dims, &y.dims)?, "result")
}

fn verify_compare(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 2)?;
    verify_broadcast_n(v, &[0, 1], Some(ScalarType::I1))
}

fn verify_and(v: &OpView) -> Result<(), String> {
    verify_compare(v)?;
    if v.tensor_operand(0)?.elem != ScalarType::I1 {
        return Err("expects i1 operands".into());
    }
    Ok(())
}

fn verify_where(v: &OpView) -> Result<(), String> {
    v.operands_in(3, 3)?;
    v.results_in(1, 1)?;
    let (c, a, b, r) = (
        v.tensor_operand(0)?,
        v.tensor_operand(1)?,
        v.tensor_operand(2)?,
        v.tensor_result(0)?,
    );
    if c.elem != ScalarType::I1 {
        return Err(format!(
            "condition must have element type i1, got {}",
            c.elem
        ));
    }
    same_elem(v, a.elem, "operand #2", b.elem)?;
    same_elem(v, a.elem, "result", r.elem)?;
    let dims = broadcast_dims(&broadcast_dims(&c.dims, &a.dims)?, &b.dims)?;
    check_shape(&r.dims, &dims, "result")
}

fn verify_clip(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 3)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    same_elem(v, x.elem, "result", r.elem)?;
    for i in 1..v.num_operands() {
        same_elem(
            v,
            x.elem,
            &format!("bound operand #{i}"),
            v.tensor_operand(i)?.elem,
        )?;
    }
    check_shape(&r.dims, &x.dims, "result")
}

fn verify_axis_unary(v: &OpView) -> Result<(), String> {
    verify_unary_float(v)?;
    let x = v.tensor_operand(0)?;
    normalize_axis(v.int_attr_or("axis", -1)?, x.rank())?;
    Ok(())
}

fn verify_norm_like(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 3)?;
    v.results_in(
        1,
        if v.data().name == LayerNorm::NAME {
            3
        } else {
            1
        },
    )?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    if !x.elem.is_float() {
        return Err(format!("expects a floating-point input, got {}", x.elem));
    }
    normalize_axis(v.int_attr_or("axis", -1)?, x.rank())?;
    v.float_attr_opt("epsilon")?;
    for i in 1..v.num_operands() {
        v.tensor_operand(i)?;
    }
    same_elem(v, x.elem, "result", r.elem)?;
    check_shape(&r.dims, &x.dims, "result")
}

fn verify_norm(v: &OpView) -> Result<(), String> {
    verify_norm_like(v)?;
    match v.str_attr("kind")? {
        "layer" | "rms" => Ok(()),
        k => Err(format!(
            "attribute 'kind' must be \"layer\" or \"rms\", got \"{k}\""
        )),
    }
}

fn verify_reduce(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 2)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    same_elem(v, x.elem, "result", r.elem)?;
    let keep = v.int_attr_or("keepdims", 1)? != 0;
    if let Some(axes) = v.i64_list_attr("axes")? {
        let mut norm = vec![];
        for a in axes {
            norm.push(normalize_axis(a, x.rank())?);
        }
        let mut expect = vec![];
        for (i, d) in x.dims.iter().enumerate() {
            if norm.contains(&i) {
                if keep {
                    expect.push(Dim::Static(1));
                }
            } else {
                expect.push(d.clone());
            }
        }
        check_shape(&r.dims, &expect, "result")?;
    }
    Ok(())
}

fn verify_reshape(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 2)?;
    verify_same_numel(v)
}

fn verify_same_numel(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 2)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    same_elem(v, x.elem, "result", r.elem)?;
    if let (Some(a), Some(b)) = (x.num_elements(), r.num_elements())
        && a != b
    {
        return Err(format!("result has {b} elements but the input has {a}"));
    }
    Ok(())
}

fn verify_transpose(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 1)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    same_elem(v, x.elem, "result", r.elem)?;
    let perm: Vec<i64> = match v.i64_list_attr("perm")? {
        Some(p) => p,
        None => (0..x.rank() as i64).rev().collect(),
    };
    let mut seen = vec![false; x.rank()];
    if perm.len() != x.rank() {
        return Err(format!(
            "'perm' has {} entries but the input has rank {}",
            perm.len(),
            x.rank()
        ));
    }
    for &p in &perm {
        if p < 0 || p as usize >= x.rank() || seen[p as usize] {
            return Err(format!(
                "'perm' {perm:?} is not a permutation of 0..{}",
                x.rank()
            ));
        }
        seen[p as usize] = true;
    }
    let expect: Vec<Dim> = perm.iter().map(|&p| x.dims[p as usize].clone()).collect();
    check_shape(&r.dims, &expect, "result")
}

fn verify_concat(v: &OpView) -> Result<(), String> {
    v.operands_in(1, usize::MAX)?;
    v.results_in(1, 1)?;
    let first = v.tensor_operand(0)?;
    let axis = normalize_axis(v.int_attr("axis")?, first.rank())?;
    let mut total: Option<u64> = Some(0);
    for i in 0..v.num_operands() {
        let t = v.tensor_operand(i)?;
        same_elem(v, first.elem, &format!("operand #{i}"), t.elem)?;
        if t.rank() != first.rank() {
            return Err(format!(
                "operand #{i} has rank {} but operand #0 has rank {}",
                t.rank(),
                first.rank()
            ));
        }
        for (d, (a, b)) in t.dims.iter().zip(&first.dims).enumerate() {
            if d != axis
                && let (Dim::Static(x), Dim::Static(y)) = (a, b)
                && x != y
            {
                return Err(format!(
                    "operand #{i} dim {d} is {x} but operand #0 has {y}"
                ));
            }
        }
        total = total
            .zip(t.dims[axis].as_static())
            .and_then(|(a, b)| a.checked_add(b));
    }
    let r = v.tensor_result(0)?;
    same_elem(v, first.elem, "result", r.elem)?;
    let mut expect = first.dims.clone();
    expect[axis] = total.map(Dim::Static).unwrap_or(Dim::Dynamic);
    check_shape(&r.dims, &expect, "result")
}

fn verify_split(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 2)?;
    v.results_in(1, usize::MAX)?;
    let x = v.tensor_operand(0)?;
    let axis = normalize_axis(v.int_attr_or("axis", 0)?, x.rank())?;
    let mut total: Option<u64> = Some(0);
    for i in 0..v.data().results.len() {
        let r = v.tensor_result(i)?;
        same_elem(v, x.elem, &format!("result #{i}"), r.elem)?;
        if r.rank() != x.rank() {
            return Err(format!(
                "result #{i} has rank {} but the input has rank {}",
                r.rank(),
                x.rank()
            ));
        }
        total = total
            .zip(r.dims[axis].as_static())
            .and_then(|(a, b)| a.checked_add(b));
    }
    if let (Some(t), Some(d)) = (total, x.dims[axis].as_static())
        && t != d
    {
        return Err(format!(
            "result extents along axis {axis} sum to {t} but the input has {d}"
        ));
    }
    Ok(())
}

fn verify_slice(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 5)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    same_elem(v, x.elem, "result", r.elem)?;
    if r.rank() != x.rank() {
        return Err(format!(
            "result rank {} differs from input rank {}",
            r.rank(),
            x.rank()
        ));
    }
    Ok(())
}

fn check_indices(v: &OpView, i: usize) -> Result<(), String> {
    let t = v.tensor_operand(i)?;
    if !matches!(t.elem, ScalarType::I64 | ScalarType::I32) {
        return Err(format!("indices must be i64 or i32, got {}", t.elem));
    }
    Ok(())
}

fn verify_gather(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 2)?;
    v.results_in(1, 1)?;
    check_indices(v, 1)?;
    let (x, idx, r) = (
        v.tensor_operand(0)?,
        v.tensor_operand(1)?,
        v.tensor_result(0)?,
    );
    same_elem(v, x.elem, "result", r.elem)?;
    let axis = normalize_axis(v.int_attr_or("axis", 0)?, x.rank())?;
    let mut expect = x.dims[..axis].to_vec();
    expect.extend(idx.dims.iter().cloned());
    expect.extend(x.dims[axis + 1..].iter().cloned());
    check_shape(&r.dims, &expect, "result")
}

fn verify_index_op(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 2)?;
    v.results_in(1, 1)?;
    check_indices(v, 1)?;
    same_elem(
        v,
        v.tensor_operand(0)?.elem,
        "result",
        v.tensor_result(0)?.elem,
    )
}

fn verify_top_k(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 2)?;
    v.results_in(2, 2)?;
    let (x, vals, idx) = (
        v.tensor_operand(0)?,
        v.tensor_result(0)?,
        v.tensor_result(1)?,
    );
    same_elem(v, x.elem, "values", vals.elem)?;
    if idx.elem != ScalarType::I64 {
        return Err(format!("indices must be i64, got {}", idx.elem));
    }
    normalize_axis(v.int_attr_or("axis", -1)?, x.rank())?;
    check_shape(&idx.dims, &vals.dims, "indices")
}

fn verify_one_hot(v: &OpView) -> Result<(), String> {
    v.operands_in(3, 3)?;
    v.results_in(1, 1)?;
    let (vals, r) = (v.tensor_operand(2)?, v.tensor_result(0)?);
    same_elem(v, vals.elem, "result", r.elem)
}

fn verify_scatter_nd(v: &OpView) -> Result<(), String> {
    v.operands_in(3, 3)?;
    v.results_in(1, 1)?;
    check_indices(v, 1)?;
    let (x, u, r) = (
        v.tensor_operand(0)?,
        v.tensor_operand(2)?,
        v.tensor_result(0)?,
    );
    same_elem(v, x.elem, "updates", u.elem)?;
    same_elem(v, x.elem, "result", r.elem)?;
    check_shape(&r.dims, &x.dims, "result")
}

fn verify_gather_elements(v: &OpView) -> Result<(), String> {
    verify_index_op(v)?;
    let (x, idx, r) = (
        v.tensor_operand(0)?,
        v.tensor_operand(1)?,
        v.tensor_result(0)?,
    );
    if idx.rank() != x.rank() {
        return Err(format!(
            "indices have rank {}, the data rank {}; GatherElements needs them equal",
            idx.rank(),
            x.rank()
        ));
    }
    normalize_axis(v.int_attr_or("axis", 0)?, x.rank())?;
    check_shape(&r.dims, &idx.dims, "result")
}

fn verify_cumsum(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 2)?;
    v.results_in(1, 1)?;
    let (x, a, r) = (
        v.tensor_operand(0)?,
        v.tensor_operand(1)?,
        v.tensor_result(0)?,
    );
    if !a.elem.is_int() || a.rank() > 1 {
        return Err(format!(
            "axis must be an integer scalar or 1-element tensor, got {}",
            a.elem
        ));
    }
    same_elem(v, x.elem, "result", r.elem)?;
    check_shape(&r.dims, &x.dims, "result")
}

fn verify_tile(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 2)?;
    v.results_in(1, 1)?;
    let (x, reps, r) = (
        v.tensor_operand(0)?,
        v.tensor_operand(1)?,
        v.tensor_result(0)?,
    );
    if reps.elem != ScalarType::I64 || reps.rank() != 1 {
        return Err(format!(
            "repeats must be a 1-D i64 tensor, got {}",
            reps.elem
        ));
    }
    if let Some(Dim::Static(n)) = reps.dims.first()
        && *n as usize != x.rank()
    {
        return Err(format!("{n} repeats for a rank-{} input", x.rank()));
    }
    same_elem(v, x.elem, "result", r.elem)?;
    if r.rank() != x.rank() {
        return Err("result rank differs from the input's".into());
    }
    Ok(())
}

fn verify_expand(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 2)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    same_elem(v, x.elem, "result", r.elem)?;
    let b = broadcast_dims(&x.dims, &r.dims)?;
    check_shape(&r.dims, &b, "result")
}

fn verify_cast(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 1)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    check_shape(&r.dims, &x.dims, "result")
}

fn verify_shape(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 1)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    if r.elem != ScalarType::I64 || r.rank() != 1 {
        return Err(format!(
            "result must be a 1-D i64 tensor, got {}",
            Type::Tensor(r.clone())
        ));
    }
    let rank = x.rank() as i64;
    let clamp = |a: i64| {
        if a < 0 {
            (a + rank).max(0)
        } else {
            a.min(rank)
        }
    };
    let start = clamp(v.int_attr_or("start", 0)?);
    let end = clamp(v.int_attr_or("end", rank)?);
    check_shape(
        &r.dims,
        &[Dim::Static((end - start).max(0) as u64)],
        "result",
    )
}

fn verify_range(v: &OpView) -> Result<(), String> {
    v.operands_in(3, 3)?;
    v.results_in(1, 1)?;
    let r = v.tensor_result(0)?;
    for i in 0..3 {
        let t = v.tensor_operand(i)?;
        if t.rank() != 0 {
            return Err(format!("operand #{i} must be a scalar (rank-0) tensor"));
        }
        same_elem(v, r.elem, &format!("operand #{i}"), t.elem)?;
    }
    if r.rank() != 1 {
        return Err("result must be 1-D".into());
    }
    Ok(())
}

fn verify_constant_of_shape(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 1)?;
    v.results_in(1, 1)?;
    let s = v.tensor_operand(0)?;
    if s.elem != ScalarType::I64 || s.rank() != 1 {
        return Err("shape operand must be a 1-D i64 tensor".into());
    }
    let r = v.tensor_result(0)?;
    if let Some(Attribute::Dense(d)) = v.attr("value")
        && d.ty.elem() != Some(r.elem)
    {
        return Err("'value' element type must match the result element type".into());
    }
    Ok(())
}

fn verify_trilu(v: &OpView) -> Result<(), String> {
    v.operands_in(1, 2)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    if x.rank() < 2 {
        return Err("expects an input of rank >= 2".into());
    }
    same_elem(v, x.elem, "result", r.elem)?;
    check_shape(&r.dims, &x.dims, "result")
}

/// [`verify_attention`], and the result is `[B, H, S, Dv]` of the 4-D operands.
fn verify_fused_attention(v: &OpView) -> Result<(), String> {
    verify_attention(v)?;
    let (q, val, r) = (
        v.tensor_operand(0)?,
        v.tensor_operand(2)?,
        v.tensor_result(0)?,
    );
    if q.rank() != 4 {
        return Err(format!("expects 4-D q/k/v, got rank {}", q.rank()));
    }
    let want = [&q.dims[0], &q.dims[1], &q.dims[2], &val.dims[3]];
    let fits = r.rank() == 4
        && r.dims.iter().zip(want).all(|(a, b)| match (a, b) {
            (Dim::Static(x), Dim::Static(y)) => x == y,
            _ => true,
        });
    if !fits {
        return Err(format!(
            "result {} is not [batch, query heads, queries, value head size] of q and v",
            v.result_type(0)
        ));
    }
    Ok(())
}

fn verify_attention(v: &OpView) -> Result<(), String> {
    v.operands_in(3, 7)?;
    v.results_in(1, 4)?;
    let (q, k, val) = (
        v.tensor_operand(0)?,
        v.tensor_operand(1)?,
        v.tensor_operand(2)?,
    );
    if !q.elem.is_float() {
        return Err(format!("expects floating-point q/k/v, got {}", q.elem));
    }
    same_elem(v, q.elem, "k", k.elem)?;
    same_elem(v, q.elem, "v", val.elem)?;
    if q.rank() < 2 || k.rank() != q.rank() || val.rank() != q.rank() {
        return Err("q, k, v must have the same rank >= 2".into());
    }
    let r = q.rank();
    if r == 4
        && let (Dim::Static(a), Dim::Static(b)) = (&q.dims[r - 1], &k.dims[r - 1])
        && a != b
    {
        return Err(format!("q head size {a} does not match k head size {b}"));
    }
    // [B, H, S, D]: K and V have the same heads and length, the query heads are groups of the
    // key/value heads (found by the `check` fuzz target: a V with fewer heads than K compiled
    // to a kernel reading past V's buffer).
    if r == 4 {
        let st = |t: &TensorType, i: usize| t.dims[i].as_static();
        if let (Some(a), Some(b)) = (st(k, 1), st(val, 1))
            && a != b
        {
            return Err(format!("k has {a} heads but v has {b}"));
        }
        if let (Some(a), Some(b)) = (st(k, 2), st(val, 2))
            && a != b
        {
            return Err(format!("k has {a} positions but v has {b}"));
        }
        if let (Some(hq), Some(hkv)) = (st(q, 1), st(k, 1))
            && (hkv == 0 || hq % hkv != 0)
        {
            return Err(format!(
                "{hq} query heads are not groups of {hkv} key/value heads"
            ));
        }
    }
    v.float_attr_opt("scale")?;
    let out = v.tensor_result(0)?;
    same_elem(v, q.elem, "result", out.elem)?;
    Ok(())
}

fn verify_rotary(v: &OpView) -> Result<(), String> {
    v.operands_in(3, 4)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    same_elem(v, x.elem, "result", r.elem)?;
    check_shape(&r.dims, &x.dims, "result")
}

fn verify_rope(v: &OpView) -> Result<(), String> {
    v.operands_in(3, 3)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    if !x.elem.is_float() {
        return Err(format!("expects a floating-point input, got {}", x.elem));
    }
    for i in 1..3 {
        let c = v.tensor_operand(i)?;
        same_elem(v, x.elem, "cos/sin", c.elem)?;
    }
    same_elem(v, x.elem, "result", r.elem)?;
    let rd = v.int_attr_or("rotary_dim", -1)?;
    if let Some(Dim::Static(d)) = x.dims.last()
        && rd != -1
        && (rd <= 0 || rd as u64 > *d || rd % 2 != 0)
    {
        return Err(format!("rotary_dim {rd} must be even and in 1..={d}"));
    }
    check_shape(&r.dims, &x.dims, "result")
}

fn verify_einsum(v: &OpView) -> Result<(), String> {
    v.operands_in(1, usize::MAX)?;
    v.results_in(1, 1)?;
    v.all_tensors()?;
    let eq = v.str_attr("equation")?;
    let lhs = eq.split("->").next().unwrap_or("");
    let terms = lhs.split(',').count();
    if terms != v.num_operands() {
        return Err(format!(
            "equation \"{eq}\" has {terms} input terms but the op has {} operands",
            v.num_operands()
        ));
    }
    Ok(())
}

fn matmul_dims(a: &TensorType, b: &TensorType) -> Result<Vec<Dim>, String> {
    if a.rank() == 0 || b.rank() == 0 {
        return Err("matmul operands must have rank >= 1".into());
    }
    let mut ad = a.dims.clone();
    let mut bd = b.dims.clone();
    let (a1, b1) = (ad.len() == 1, bd.len() == 1);
    if a1 {
        ad.insert(0, Dim::Static(1));
    }
    if b1 {
        bd.push(Dim::Static(1));
    }
    let (ka, kb) = (&ad[ad.len() - 1], &bd[bd.len() - 2]);
    if let (Dim::Static(x), Dim::Static(y)) = (ka, kb)
        && x != y
    {
        return Err(format!("inner dimensions do not match: {x} vs {y}"));
    }
    let mut out = broadcast_dims(&ad[..ad.len() - 2], &bd[..bd.len() - 2])?;
    if !a1 {
        out.push(ad[ad.len() - 2].clone());
    }
    if !b1 {
        out.push(bd[bd.len() - 1].clone());
    }
    Ok(out)
}

fn verify_matmul(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 2)?;
    v.results_in(1, 1)?;
    let (a, b, r) = (
        v.tensor_operand(0)?,
        v.tensor_operand(1)?,
        v.tensor_result(0)?,
    );
    same_elem(v, a.elem, "operand #1", b.elem)?;
    same_elem(v, a.elem, "result", r.elem)?;
    check_shape(&r.dims, &matmul_dims(a, b)?, "result")
}

fn verify_matmul_integer(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 4)?;
    v.results_in(1, 1)?;
    let (a, b, r) = (
        v.tensor_operand(0)?,
        v.tensor_operand(1)?,
        v.tensor_result(0)?,
    );
    for (t, w) in [(a, "a"), (b, "b")] {
        if !matches!(t.elem, ScalarType::I8 | ScalarType::UI8) {
            return Err(format!("operand {w} must be i8 or ui8, got {}", t.elem));
        }
    }
    if r.elem != ScalarType::I32 {
        return Err(format!("result must be i32, got {}", r.elem));
    }
    check_shape(&r.dims, &matmul_dims(a, b)?, "result")
}

fn verify_matmul_epilogue(v: &OpView) -> Result<(), String> {
    let residual = match v.attr("residual") {
        None => false,
        Some(a) => a
            .as_bool()
            .ok_or_else(|| "'residual' must be a bool".to_string())?,
    };
    let extra = usize::from(residual);
    v.operands_in(2 + extra, 3 + extra)?;
    v.results_in(1, 1)?;
    let (a, b, r) = (
        v.tensor_operand(0)?,
        v.tensor_operand(1)?,
        v.tensor_result(0)?,
    );
    same_elem(v, a.elem, "operand #1", b.elem)?;
    same_elem(v, a.elem, "result", r.elem)?;
    let out = matmul_dims(a, b)?;
    if v.num_operands() == 3 + extra {
        let bias = v.tensor_operand(2)?;
        broadcast_dims(&out, &bias.dims)?;
    }
    if residual {
        let last = v.num_operands() - 1;
        let res = v.tensor_operand(last)?;
        same_elem(v, r.elem, &format!("operand #{last} (residual)"), res.elem)?;
        if broadcast_dims(&out, &res.dims)? != out {
            return Err(format!(
                "residual shape {:?} does not broadcast to the result shape {out:?}",
                res.dims
            ));
        }
    }
    match v.attr("activation").map(|a| a.as_str()) {
        None | Some(Some("none" | "relu" | "gelu" | "gelu_tanh" | "silu")) => {}
        Some(other) => return Err(format!("unknown activation {other:?}")),
    }
    check_shape(&r.dims, &out, "result")
}

fn verify_quantize(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 3)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    if !x.elem.is_float() {
        return Err(format!("input must be floating point, got {}", x.elem));
    }
    if !matches!(
        r.elem,
        ScalarType::I8
            | ScalarType::UI8
            | ScalarType::F8E4M3FN
            | ScalarType::I16
            | ScalarType::UI16
    ) {
        return Err(format!(
            "result must be a quantized type (i8, ui8, f8E4M3FN, ...), got {}",
            r.elem
        ));
    }
    check_shape(&r.dims, &x.dims, "result")
}

fn verify_dequantize(v: &OpView) -> Result<(), String> {
    v.operands_in(2, 3)?;
    v.results_in(1, 1)?;
    let (x, r) = (v.tensor_operand(0)?, v.tensor_result(0)?);
    if !r.elem.is_float() {
        return Err(format!("result must be floating point, got {}", r.elem));
    }
    check_shape(&r.dims, &x.dims, "result")
}

fn verify_constant(v: &OpView) -> Result<(), String> {
    v.operands_in(0, 0)?;
    v.results_in(1, 1)?;
    let Some(Attribute::Dense(d)) = v.attr("value") else {
        return Err("requires a dense 'value' attribute".into());
    };
    if &d.ty != v.result_type(0) {
        return Err(format!(
            "result type {} does not match the value type {}",
            v.result_type(0),
            d.ty
        ));
    }
    let blob = v.m.blobs.get(d.blob);
    if let (Some(bytes), Some(n)) = (
        &blob.bytes,
        d.ty.as_tensor().and_then(TensorType::num_elements),
    ) {
        let es = d.ty.elem().map(ScalarType::byte_size).unwrap_or(1);
        let need = (n as usize).saturating_mul(es);
        if bytes.len() != need && bytes.len() != es {
            return Err(format!(
                "value holds {} bytes but the type needs {need}",
                bytes.len()
            ));
        }
    }
    Ok(())
}

// ---------- optional-operand slots ----------

/// Name of the attribute mapping operands to ONNX input slots when an optional input in the middle is
/// absent: `operand_slots = array<i64: 0, 1, 2, 4>` says operand #3 is ONNX input 4 (input 3 absent).
/// Without it, operand `i` is input `i`.
pub const OPERAND_SLOTS: &str = "operand_slots";

/// The operand bound to ONNX input `slot` of `op`, or `None` when that optional input is absent.
pub fn operand_slot(m: &Module, op: crate::ir::OpId, slot: usize) -> Option<ValueId> {
    let d = m.op(op);
    match d.attr(OPERAND_SLOTS).and_then(Attribute::as_i64_list) {
        Some(slots) => slots
            .iter()
            .position(|&s| s == slot as i64)
            .and_then(|i| d.operands.get(i).copied()),
        None => d.operands.get(slot).copied(),
    }
}

/// The ONNX input slots of op `name` that the backend must know at compile time: axes, shapes,
/// counts and bounds that decide a result's shape or a kernel's loop structure. A graph input
/// that reaches one of them is bound to a value when the program is compiled (`llmpu compile
/// --bind`, [`crate::onnx::ImportOptions::bindings`]); the binary then no longer takes it.
pub fn parameter_slots(name: &str) -> &'static [usize] {
    match name {
        ReduceMean::NAME | ReduceSum::NAME | ReduceMax::NAME | ReduceL2::NAME => &[1],
        Slice::NAME => &[1, 2, 3, 4],
        Range::NAME => &[0, 1, 2],
        Pad::NAME => &[1, 2, 3],
        Reshape::NAME
        | Expand::NAME
        | Tile::NAME
        | Split::NAME
        | Squeeze::NAME
        | Unsqueeze::NAME => &[1],
        ConstantOfShape::NAME => &[0],
        CumSum::NAME | TopK::NAME | OneHot::NAME => &[1],
        _ => &[],
    }
}

// ---------- typed builders ----------

/// Appends an elementwise unary op (`graph.relu`, `graph.exp`, ...) whose result type equals its input's.
pub fn unary(m: &mut Module, block: BlockId, name: &str, x: ValueId, loc: Location) -> ValueId {
    let ty = m.value_type(x).clone();
    let op = m.append(
        block,
        crate::ir::OpSpec::new(name, loc)
            .operands(&[x])
            .results(vec![ty]),
    );
    m.op(op).results[0]
}

/// Appends a broadcasting binary op (`graph.add`, ...), inferring the result type.
pub fn binary(
    m: &mut Module,
    block: BlockId,
    name: &str,
    a: ValueId,
    b: ValueId,
    loc: Location,
) -> Result<ValueId, String> {
    let (ta, tb) = (tensor_of(m, a)?, tensor_of(m, b)?);
    let dims = broadcast_dims(&ta.dims, &tb.dims)?;
    let ty = Type::Tensor(TensorType {
        dims,
        elem: ta.elem,
    });
    let op = m.append(
        block,
        crate::ir::OpSpec::new(name, loc)
            .operands(&[a, b])
            .results(vec![ty]),
    );
    Ok(m.op(op).results[0])
}

/// Appends `graph.matmul`, inferring the result type.
pub fn matmul(
    m: &mut Module,
    block: BlockId,
    a: ValueId,
    b: ValueId,
    loc: Location,
) -> Result<ValueId, String> {
    let (ta, tb) = (tensor_of(m, a)?, tensor_of(m, b)?);
    let dims = matmul_dims(&ta, &tb)?;
    let ty = Type::Tensor(TensorType {
        dims,
        elem: ta.elem,
    });
    Ok(MatMul::build(m, block, &[a, b], vec![ty], vec![], loc)
        .result(m, 0)
        .unwrap_or(a))
}

/// Appends `graph.transpose` with `perm`, inferring the result type.
pub fn transpose(
    m: &mut Module,
    block: BlockId,
    x: ValueId,
    perm: &[i64],
    loc: Location,
) -> Result<ValueId, String> {
    let t = tensor_of(m, x)?;
    let dims = perm
        .iter()
        .map(|&p| {
            t.dims
                .get(p as usize)
                .cloned()
                .ok_or_else(|| format!("bad perm entry {p}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ty = Type::Tensor(TensorType { dims, elem: t.elem });
    let op = Transpose::build(
        m,
        block,
        &[x],
        vec![ty],
        vec![("perm", Attribute::DenseI64Array(perm.to_vec()))],
        loc,
    );
    Ok(m.op(op.0).results[0])
}

/// Appends `graph.constant` holding `bytes` (little-endian) of type `ty`; large data goes to a
/// resource blob named `name`.
pub fn constant(
    m: &mut Module,
    block: BlockId,
    name: &str,
    ty: TensorType,
    bytes: std::sync::Arc<[u8]>,
    loc: Location,
) -> ValueId {
    let blob = m.blobs.add_auto(name, bytes);
    let ty = Type::Tensor(ty);
    let attr = Attribute::Dense(DenseAttr {
        ty: ty.clone(),
        blob,
    });
    let op = Constant::build(m, block, &[], vec![ty], vec![("value", attr)], loc);
    m.op(op.0).results[0]
}

fn tensor_of(m: &Module, v: ValueId) -> Result<TensorType, String> {
    m.value_type(v)
        .as_tensor()
        .cloned()
        .ok_or_else(|| format!("expected a tensor, got {}", m.value_type(v)))
}

impl Transpose {
    /// The permutation (`perm` attribute; default reverses the dims).
    pub fn perm(self, m: &Module) -> Vec<i64> {
        match m.attr(self.0, "perm").and_then(Attribute::as_i64_list) {
            Some(p) => p,
            None => {
                let r = m
                    .op(self.0)
                    .operands
                    .first()
                    .and_then(|&v| m.value_type(v).as_tensor())
                    .map_or(0, |t| t.rank());
                (0..r as i64).rev().collect()
            }
        }
    }
}

impl Softmax {
    /// The softmax axis (default -1).
    pub fn axis(self, m: &Module) -> i64 {
        m.attr(self.0, "axis")
            .and_then(Attribute::as_int)
            .unwrap_or(-1)
    }
}

impl Constant {
    /// The constant's dense value.
    pub fn value(self, m: &Module) -> Option<&DenseAttr> {
        m.attr(self.0, "value").and_then(Attribute::as_dense)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy_rules() {
        let s = |v: &[u64]| v.iter().map(|&d| Dim::Static(d)).collect::<Vec<_>>();
        assert_eq!(
            broadcast_dims(&s(&[4, 1, 3]), &s(&[5, 1])).unwrap(),
            s(&[4, 5, 3])
        );
        assert!(broadcast_dims(&s(&[4]), &s(&[3])).is_err());
    }

    #[test]
    fn matmul_inner_dims_must_match() {
        let a = TensorType::new(&[2, 16, 64], ScalarType::F32);
        let b = TensorType::new(&[64, 32], ScalarType::F32);
        assert_eq!(
            matmul_dims(&a, &b).unwrap(),
            TensorType::new(&[2, 16, 32], ScalarType::F32).dims
        );
        let c = TensorType::new(&[63, 32], ScalarType::F32);
        assert!(
            matmul_dims(&a, &c)
                .unwrap_err()
                .contains("inner dimensions")
        );
    }
}
