//! Functional tests: every instruction family against plain Rust computations.

mod common;
use common::*;
use llmpu_isa::numerics::round_to;
use llmpu_isa::{AccMode, Bcast, DType, Inst, Layout, Reg};
use llmpu_runtime::Tensor;

#[allow(clippy::too_many_arguments)]
fn dma(
    load: bool,
    s: u8,
    h: u8,
    n: [u32; 3],
    hs: [u8; 2],
    ss: [u8; 2],
    dt: DType,
    layout: Layout,
) -> Inst {
    let (sram, hbm, n0, n1, n2) = (Reg(s), Reg(h), n[0], n[1], n[2]);
    let (hs1, hs2, ss1, ss2) = (Reg(hs[0]), Reg(hs[1]), Reg(ss[0]), Reg(ss[1]));
    if load {
        Inst::DmaLoad {
            sram,
            hbm,
            n0,
            n1,
            n2,
            hs1,
            hs2,
            ss1,
            ss2,
            dt,
            layout,
        }
    } else {
        Inst::DmaStore {
            sram,
            hbm,
            n0,
            n1,
            n2,
            hs1,
            hs2,
            ss1,
            ss2,
            dt,
            layout,
        }
    }
}

/// Reference 3-D strided copy in elements.
#[allow(clippy::too_many_arguments)]
fn strided(
    src: &[f32],
    sb: usize,
    dst: &mut [f32],
    db: usize,
    n: [usize; 3],
    s: [usize; 2],
    d: [usize; 2],
    trans: bool,
) {
    for i2 in 0..n[2] {
        for i1 in 0..n[1] {
            for i0 in 0..n[0] {
                let from = sb + i2 * s[1] + i1 * s[0] + i0;
                let to = if trans {
                    db + i2 * d[1] + i0 * d[0] + i1
                } else {
                    db + i2 * d[1] + i1 * d[0] + i0
                };
                dst[to] = src[from];
            }
        }
    }
}

#[test]
fn dma_strided_3d_load() {
    let x = values(64, 1);
    for trans in [false, true] {
        let layout = if trans { Layout::Trans } else { Layout::Rows };
        let h = Harness::new()
            .input("x", f32t(&[64], &x), 8192)
            .reg(1, 4096 + 4 * 2)
            .reg(2, 4)
            .reg(3, 8)
            .reg(4, 16)
            .reg(5, 6)
            .reg(6, 20)
            .op(dma(
                true,
                1,
                2,
                [3, 2, 2],
                [3, 4],
                [5, 6],
                DType::F32,
                layout,
            ))
            .output("y", DType::F32, &[64], 4096);
        let mut want = vec![0f32; 64];
        strided(&x, 1, &mut want, 2, [3, 2, 2], [8, 16], [6, 20], trans);
        assert_eq!(h.out_f32("y"), want, "trans={trans}");
    }
}

#[test]
fn dma_store_strided_and_transposed_round_trip_through_hbm() {
    let x = values(48, 2);
    for trans in [false, true] {
        let layout = if trans { Layout::Trans } else { Layout::Rows };
        let h = Harness::new()
            .input("x", f32t(&[48], &x), 0)
            .reg(1, 0)
            .reg(2, 1 << 20)
            .reg(3, 7)
            .reg(4, 8)
            .reg(5, 4096)
            .reg(6, 64)
            .reg(7, 0)
            .op(dma(
                false,
                1,
                2,
                [4, 3, 1],
                [3, 0],
                [4, 7],
                DType::F32,
                layout,
            ))
            .op(dma(
                true,
                5,
                2,
                [64, 1, 1],
                [6, 0],
                [6, 0],
                DType::F32,
                Layout::Rows,
            ))
            .output("y", DType::F32, &[64], 4096);
        let mut want = vec![0f32; 64];
        if trans {
            for i1 in 0..3 {
                for i0 in 0..4 {
                    want[i0 * 7 + i1] = x[i1 * 8 + i0];
                }
            }
        } else {
            strided(&x, 0, &mut want, 0, [4, 3, 1], [8, 0], [7, 0], false);
        }
        assert_eq!(h.out_f32("y"), want, "trans={trans}");
    }
}

#[test]
fn dma_gather_and_scatter_with_i32_and_i64_indices() {
    let table = values(40, 3);
    for idt in [DType::I32, DType::I64] {
        let idx = [3i64, 0, 9, 3];
        let mut bytes = Vec::new();
        for &i in &idx {
            if idt == DType::I32 {
                bytes.extend_from_slice(&(i as i32).to_le_bytes());
            } else {
                bytes.extend_from_slice(&i.to_le_bytes());
            }
        }
        let it = Tensor::new(idt, vec![4], bytes).unwrap();
        let gather = Inst::DmaGather {
            sram: Reg(1),
            hbm: Reg(2),
            idx: Reg(3),
            count: 4,
            rowlen: 4,
            hs: Reg(4),
            ss: Reg(5),
            dt: DType::F32,
            idt,
            limit: 10,
        };
        let h = Harness::new()
            .input("table", f32t(&[10, 4], &table), 0)
            .input("idx", it.clone(), 1024)
            .reg(1, 4096)
            .reg(2, 0)
            .reg(3, 1024)
            .reg(4, 4)
            .reg(5, 5)
            .op(gather)
            .output("y", DType::F32, &[20], 4096);
        let mut want = vec![0f32; 20];
        for (r, &i) in idx.iter().enumerate() {
            want[r * 5..r * 5 + 4].copy_from_slice(&table[i as usize * 4..i as usize * 4 + 4]);
        }
        assert_eq!(h.out_f32("y"), want);

        let rows = values(16, 4);
        let scatter = Inst::DmaScatter {
            sram: Reg(1),
            hbm: Reg(2),
            idx: Reg(3),
            count: 3,
            rowlen: 4,
            hs: Reg(4),
            ss: Reg(4),
            dt: DType::F32,
            idt,
            limit: 10,
        };
        let h = Harness::new()
            .input("rows", f32t(&[16], &rows), 0)
            .input("idx", it, 1024)
            .reg(1, 0)
            .reg(2, 1 << 20)
            .reg(3, 1024)
            .reg(4, 4)
            .reg(5, 4096)
            .reg(6, 40)
            .reg(7, 4)
            .op(scatter)
            .op(dma(
                true,
                5,
                2,
                [40, 1, 1],
                [6, 0],
                [6, 0],
                DType::F32,
                Layout::Rows,
            ))
            .output("y", DType::F32, &[40], 4096);
        let mut want = vec![0f32; 40];
        for (r, &i) in idx.iter().take(3).enumerate() {
            want[i as usize * 4..i as usize * 4 + 4].copy_from_slice(&rows[r * 4..r * 4 + 4]);
        }
        assert_eq!(h.out_f32("y"), want);
    }
}

fn matmul_ref(
    a: &[f32],
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    lda: usize,
    ldb: usize,
) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|p| a[i * lda + p] as f64 * b[p * ldb + j] as f64)
                .sum::<f64>() as f32;
        }
    }
    c
}

fn mm(dt: DType, mode: AccMode, a: u8, b: u8, m: u32, k: u32, n: u32) -> Inst {
    Inst::MxuMatmul {
        acc: Reg(1),
        a: Reg(a),
        b: Reg(b),
        m,
        k,
        n,
        lda: Reg(4),
        ldb: Reg(5),
        ldc: Reg(6),
        dt,
        mode,
    }
}

#[test]
fn matmul_f32_and_bf16_with_accumulate() {
    let (m, k, n) = (5usize, 7usize, 6usize);
    let (lda, ldb) = (9usize, 8usize);
    for dt in [DType::F32, DType::BF16, DType::F16, DType::F8E4M3] {
        let a: Vec<f32> = values(m * lda, 5)
            .iter()
            .map(|&v| round_to(dt, v))
            .collect();
        let b: Vec<f32> = values(k * ldb, 6)
            .iter()
            .map(|&v| round_to(dt, v))
            .collect();
        let a2: Vec<f32> = values(m * lda, 7)
            .iter()
            .map(|&v| round_to(dt, v))
            .collect();
        let mk = |v: &[f32], r: u64, c: u64| Tensor::from_f32(dt, vec![r, c], v).unwrap();
        let sz = dt.size() as i64;
        let h = Harness::new()
            .input("a", mk(&a, m as u64, lda as u64), 0)
            .input("b", mk(&b, k as u64, ldb as u64), 4096)
            .input("a2", mk(&a2, m as u64, lda as u64), 8192)
            .reg(1, 64)
            .reg(2, 0)
            .reg(3, 4096)
            .reg(7, 8192)
            .reg(4, lda as i64)
            .reg(5, ldb as i64)
            .reg(6, 10)
            .reg(8, 16384)
            .reg(9, n as i64)
            .op(mm(dt, AccMode::Set, 2, 3, m as u32, k as u32, n as u32))
            .op(mm(dt, AccMode::Acc, 7, 3, m as u32, k as u32, n as u32))
            .op(Inst::MxuSignal { sem: sem(3) })
            .op(Inst::VpuWait {
                sem: sem(3),
                count: 1,
            })
            .op(Inst::VpuCopy {
                dst: sram(DType::F32, 8, 9),
                a: acc(DType::F32, 1, 6),
                rows: m as u32,
                cols: n as u32,
                bcast: Bcast::Full,
            })
            .output("c", DType::F32, &[(m * n) as u64], 16384);
        let _ = sz;
        let c1 = matmul_ref(&a, &b, m, k, n, lda, ldb);
        let c2 = matmul_ref(&a2, &b, m, k, n, lda, ldb);
        let want: Vec<f32> = c1.iter().zip(&c2).map(|(x, y)| x + y).collect();
        assert_close(&h.out_f32("c"), &want, 1e-5);
    }
}

#[test]
fn matmul_int8_accumulates_exactly_in_i32() {
    let (m, k, n) = (4usize, 40usize, 3usize);
    for dt in [DType::I8, DType::U8] {
        let a: Vec<u8> = (0..m * k).map(|i| (i * 37 % 251) as u8).collect();
        let b: Vec<u8> = (0..k * n).map(|i| (i * 91 % 253) as u8).collect();
        let w = |x: u8| {
            if dt == DType::I8 {
                x as i8 as i64
            } else {
                x as i64
            }
        };
        let h = Harness::new()
            .input(
                "a",
                Tensor::new(dt, vec![(m * k) as u64], a.clone()).unwrap(),
                0,
            )
            .input(
                "b",
                Tensor::new(dt, vec![(k * n) as u64], b.clone()).unwrap(),
                4096,
            )
            .reg(1, 0)
            .reg(2, 0)
            .reg(3, 4096)
            .reg(4, k as i64)
            .reg(5, n as i64)
            .reg(6, n as i64)
            .reg(8, 8192)
            .op(mm(dt, AccMode::Set, 2, 3, m as u32, k as u32, n as u32))
            .op(mm(dt, AccMode::Acc, 2, 3, m as u32, k as u32, n as u32))
            .op(Inst::MxuSignal { sem: sem(3) })
            .op(Inst::VpuWait {
                sem: sem(3),
                count: 1,
            })
            .op(Inst::VpuCopy {
                dst: sram(DType::I32, 8, 6),
                a: acc(DType::I32, 1, 6),
                rows: m as u32,
                cols: n as u32,
                bcast: Bcast::Full,
            })
            .output("c", DType::I32, &[(m * n) as u64], 8192);
        let out = h.run();
        let got: Vec<i32> = out
            .output("c")
            .unwrap()
            .data
            .chunks(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        for i in 0..m {
            for j in 0..n {
                let s: i64 = (0..k).map(|p| w(a[i * k + p]) * w(b[p * n + j])).sum();
                assert_eq!(got[i * n + j] as i64, 2 * s, "{dt} ({i},{j})");
            }
        }
        assert_eq!(out.report.macs, 2 * (m * k * n) as u64);
    }
}

const R: u32 = 3;
const C: u32 = 5;

/// Runs one vector instruction over 3×5 tiles: a at r1 (ld r4 = 6), b at r2 (ld 6), c at r7,
/// dst at r3 (ld r5 = 5), all f32 in SRAM.
fn vec_op(op: Inst, a: &[f32], b: &[f32]) -> Vec<f32> {
    Harness::new()
        .input("a", f32t(&[18], a), 0)
        .input("b", f32t(&[18], b), 1024)
        .reg(1, 0)
        .reg(2, 1024)
        .reg(3, 4096)
        .reg(4, 6)
        .reg(5, 5)
        .reg(7, 2048)
        .op(op)
        .output("y", DType::F32, &[15], 4096)
        .out_f32("y")
}

fn src_a() -> TileRefs {
    TileRefs
}
struct TileRefs;
impl TileRefs {
    fn a(&self) -> llmpu_isa::TileRef {
        sram(DType::F32, 1, 4)
    }
    fn b(&self) -> llmpu_isa::TileRef {
        sram(DType::F32, 2, 4)
    }
    fn d(&self) -> llmpu_isa::TileRef {
        sram(DType::F32, 3, 5)
    }
}

fn bval(b: &[f32], bc: Bcast, i: usize, j: usize) -> f32 {
    match bc {
        Bcast::Full => b[i * 6 + j],
        Bcast::Row => b[j],
        Bcast::Col => b[i * 6],
    }
}

#[test]
fn binary_vector_ops_with_every_broadcast() {
    let a = values(18, 8);
    let mut b = values(18, 9);
    b[6] = a[6];
    b[1] = a[7];
    let t = src_a();
    type F = fn(f32, f32) -> f32;
    let ops: Vec<(&str, F)> = vec![
        ("add", |x, y| x + y),
        ("sub", |x, y| x - y),
        ("mul", |x, y| x * y),
        ("div", |x, y| x / y),
        ("max", f32::max),
        ("min", f32::min),
        ("eq", |x, y| (x == y) as i32 as f32),
        ("lt", |x, y| (x < y) as i32 as f32),
        ("le", |x, y| (x <= y) as i32 as f32),
    ];
    for (name, f) in ops {
        for bc in [Bcast::Full, Bcast::Row, Bcast::Col] {
            let (dst, a_, b_, rows, cols, bcast) = (t.d(), t.a(), t.b(), R, C, bc);
            let op = match name {
                "add" => Inst::VpuAdd {
                    dst,
                    a: a_,
                    b: b_,
                    rows,
                    cols,
                    bcast,
                },
                "sub" => Inst::VpuSub {
                    dst,
                    a: a_,
                    b: b_,
                    rows,
                    cols,
                    bcast,
                },
                "mul" => Inst::VpuMul {
                    dst,
                    a: a_,
                    b: b_,
                    rows,
                    cols,
                    bcast,
                },
                "div" => Inst::VpuDiv {
                    dst,
                    a: a_,
                    b: b_,
                    rows,
                    cols,
                    bcast,
                },
                "max" => Inst::VpuMax {
                    dst,
                    a: a_,
                    b: b_,
                    rows,
                    cols,
                    bcast,
                },
                "min" => Inst::VpuMin {
                    dst,
                    a: a_,
                    b: b_,
                    rows,
                    cols,
                    bcast,
                },
                "eq" => Inst::VpuEq {
                    dst,
                    a: a_,
                    b: b_,
                    rows,
                    cols,
                    bcast,
                },
                "lt" => Inst::VpuLt {
                    dst,
                    a: a_,
                    b: b_,
                    rows,
                    cols,
                    bcast,
                },
                _ => Inst::VpuLe {
                    dst,
                    a: a_,
                    b: b_,
                    rows,
                    cols,
                    bcast,
                },
            };
            let got = vec_op(op, &a, &b);
            let mut want = vec![0f32; 15];
            for i in 0..3 {
                for j in 0..5 {
                    want[i * 5 + j] = f(a[i * 6 + j], bval(&b, bc, i, j));
                }
            }
            assert_eq!(got, want, "{name} {bc}");
        }
    }
}

#[test]
fn unary_and_immediate_vector_ops() {
    let a: Vec<f32> = values(18, 10).iter().map(|v| v.abs() + 0.25).collect();
    let t = src_a();
    type F = fn(f32) -> f32;
    let unary: Vec<(&str, F, f32)> = vec![
        ("exp", f32::exp, 1e-6),
        ("log", f32::ln, 1e-6),
        ("sqrt", f32::sqrt, 1e-6),
        ("rsqrt", |x| 1.0 / x.sqrt(), 1e-6),
        ("recip", |x| 1.0 / x, 1e-6),
        ("tanh", f32::tanh, 1e-6),
        ("erf", |x| libm_erf(x), 1e-6),
        ("sigmoid", |x| 1.0 / (1.0 + (-x).exp()), 1e-6),
        ("neg", |x| -x, 0.0),
        ("abs", f32::abs, 0.0),
        ("sin", f32::sin, 1e-6),
        ("cos", f32::cos, 1e-6),
        ("copy", |x| x, 0.0),
    ];
    for (name, f, tol) in unary {
        for bc in [Bcast::Full, Bcast::Row, Bcast::Col] {
            let (dst, a_, rows, cols, bcast) = (t.d(), t.a(), R, C, bc);
            let op = match name {
                "exp" => Inst::VpuExp {
                    dst,
                    a: a_,
                    rows,
                    cols,
                    bcast,
                },
                "log" => Inst::VpuLog {
                    dst,
                    a: a_,
                    rows,
                    cols,
                    bcast,
                },
                "sqrt" => Inst::VpuSqrt {
                    dst,
                    a: a_,
                    rows,
                    cols,
                    bcast,
                },
                "rsqrt" => Inst::VpuRsqrt {
                    dst,
                    a: a_,
                    rows,
                    cols,
                    bcast,
                },
                "recip" => Inst::VpuRecip {
                    dst,
                    a: a_,
                    rows,
                    cols,
                    bcast,
                },
                "tanh" => Inst::VpuTanh {
                    dst,
                    a: a_,
                    rows,
                    cols,
                    bcast,
                },
                "erf" => Inst::VpuErf {
                    dst,
                    a: a_,
                    rows,
                    cols,
                    bcast,
                },
                "sigmoid" => Inst::VpuSigmoid {
                    dst,
                    a: a_,
                    rows,
                    cols,
                    bcast,
                },
                "neg" => Inst::VpuNeg {
                    dst,
                    a: a_,
                    rows,
                    cols,
                    bcast,
                },
                "abs" => Inst::VpuAbs {
                    dst,
                    a: a_,
                    rows,
                    cols,
                    bcast,
                },
                "sin" => Inst::VpuSin {
                    dst,
                    a: a_,
                    rows,
                    cols,
                    bcast,
                },
                "cos" => Inst::VpuCos {
                    dst,
                    a: a_,
                    rows,
                    cols,
                    bcast,
                },
                _ => Inst::VpuCopy {
                    dst,
                    a: a_,
                    rows,
                    cols,
                    bcast,
                },
            };
            let got = vec_op(op, &a, &a);
            let want: Vec<f32> = (0..15).map(|e| f(bval(&a, bc, e / 5, e % 5))).collect();
            assert_close(&got, &want, tol);
            let _ = name;
        }
    }
    let imm = 1.5f32;
    type G = fn(f32, f32) -> f32;
    let imms: Vec<(&str, G)> = vec![
        ("adds", |x, s| x + s),
        ("subs", |x, s| x - s),
        ("rsubs", |x, s| s - x),
        ("muls", |x, s| x * s),
        ("divs", |x, s| x / s),
        ("maxs", f32::max),
        ("mins", f32::min),
        ("pows", f32::powf),
    ];
    for (name, f) in imms {
        let (dst, a_, rows, cols) = (t.d(), t.a(), R, C);
        let op = match name {
            "adds" => Inst::VpuAdds {
                dst,
                a: a_,
                imm,
                rows,
                cols,
            },
            "subs" => Inst::VpuSubs {
                dst,
                a: a_,
                imm,
                rows,
                cols,
            },
            "rsubs" => Inst::VpuRsubs {
                dst,
                a: a_,
                imm,
                rows,
                cols,
            },
            "muls" => Inst::VpuMuls {
                dst,
                a: a_,
                imm,
                rows,
                cols,
            },
            "divs" => Inst::VpuDivs {
                dst,
                a: a_,
                imm,
                rows,
                cols,
            },
            "maxs" => Inst::VpuMaxs {
                dst,
                a: a_,
                imm,
                rows,
                cols,
            },
            "mins" => Inst::VpuMins {
                dst,
                a: a_,
                imm,
                rows,
                cols,
            },
            _ => Inst::VpuPows {
                dst,
                a: a_,
                imm,
                rows,
                cols,
            },
        };
        let got = vec_op(op, &a, &a);
        let want: Vec<f32> = (0..15).map(|e| f(a[(e / 5) * 6 + e % 5], imm)).collect();
        assert_close(&got, &want, 1e-6);
    }
}

fn libm_erf(x: f32) -> f32 {
    let x = x as f64;
    let mut sum = 0.0f64;
    let mut term = x;
    for n in 0..60 {
        sum += term / (2 * n + 1) as f64;
        term *= -x * x / (n + 1) as f64;
    }
    (sum * 2.0 / std::f64::consts::PI.sqrt()) as f32
}

#[test]
fn reductions_sacc_fill_causal_sel() {
    let a = values(18, 11);
    let b = values(18, 12);
    let t = src_a();
    let red = |op: Inst| {
        Harness::new()
            .input("a", f32t(&[18], &a), 0)
            .reg(1, 0)
            .reg(3, 4096)
            .reg(4, 6)
            .reg(5, 2)
            .op(op)
            .output("y", DType::F32, &[6], 4096)
            .out_f32("y")
    };
    let d = sram(DType::F32, 3, 5);
    let rsum = red(Inst::VpuRsum {
        dst: d,
        a: t.a(),
        rows: R,
        cols: C,
    });
    let rmax = red(Inst::VpuRmax {
        dst: d,
        a: t.a(),
        rows: R,
        cols: C,
    });
    let rmin = red(Inst::VpuRmin {
        dst: d,
        a: t.a(),
        rows: R,
        cols: C,
    });
    for i in 0..3 {
        let row = &a[i * 6..i * 6 + 5];
        assert!((rsum[i * 2] - row.iter().sum::<f32>()).abs() < 1e-6);
        assert_eq!(rmax[i * 2], row.iter().cloned().fold(f32::MIN, f32::max));
        assert_eq!(rmin[i * 2], row.iter().cloned().fold(f32::MAX, f32::min));
        assert_eq!(rsum[i * 2 + 1], 0.0);
    }

    // sacc: dst (a copy of a, at r3 ld 6) = dst * s[i] + b, s = column of b at r2 with ld r4.
    let got = Harness::new()
        .input("a", f32t(&[18], &a), 4096)
        .input("b", f32t(&[18], &b), 1024)
        .reg(2, 1024)
        .reg(3, 4096)
        .reg(4, 6)
        .op(Inst::VpuSacc {
            dst: sram(DType::F32, 3, 4),
            s: sram(DType::F32, 2, 4),
            b: sram(DType::F32, 2, 4),
            rows: R,
            cols: C,
        })
        .output("y", DType::F32, &[18], 4096)
        .out_f32("y");
    for i in 0..3 {
        for j in 0..6 {
            let e = i * 6 + j;
            let want = if j < 5 { a[e] * b[i * 6] + b[e] } else { a[e] };
            assert_eq!(got[e], want);
        }
    }

    // expsum: dst = exp((a - m[i]) * 0.5) in bf16, m = column of b (ld 6), sum[i] = the row's
    // f32 values summed before rounding.
    let h = Harness::new()
        .input("a", f32t(&[18], &a), 0)
        .input("b", f32t(&[18], &b), 1024)
        .reg(1, 0)
        .reg(2, 1024)
        .reg(3, 4096)
        .reg(4, 6)
        .reg(5, 5)
        .reg(6, 1)
        .reg(7, 2048)
        .op(Inst::VpuExpsum {
            dst: sram(DType::BF16, 3, 5),
            a: t.a(),
            m: sram(DType::F32, 2, 4),
            sum: sram(DType::F32, 7, 6),
            imm: 0.5,
            rows: R,
            cols: C,
        })
        .output("y", DType::BF16, &[15], 4096)
        .output("s", DType::F32, &[3], 2048);
    let res = h.run();
    let y = res.output("y").unwrap().to_f32();
    let sums = res.output("s").unwrap().to_f32();
    for i in 0..3 {
        let mut want_sum = 0f32;
        for j in 0..5 {
            let e = ((a[i * 6 + j] - b[i * 6]) * 0.5).exp();
            want_sum += e;
            assert_eq!(y[i * 5 + j], round_to(DType::BF16, e), "({i},{j})");
        }
        assert_eq!(sums[i], want_sum, "row {i}");
    }

    // fill then causal mask (qoff 1, koff 2): dst[i,j] = -inf where 2 + j > 1 + i.
    let got = Harness::new()
        .reg(3, 4096)
        .reg(5, 5)
        .reg(6, 1)
        .reg(7, 2)
        .op(Inst::VpuFill {
            dst: d,
            imm: 0.5,
            rows: R,
            cols: C,
        })
        .op(Inst::VpuCausal {
            dst: d,
            qoff: Reg(6),
            koff: Reg(7),
            imm: f32::NEG_INFINITY,
            rows: R,
            cols: C,
        })
        .output("y", DType::F32, &[15], 4096)
        .out_f32("y");
    for i in 0..3 {
        for j in 0..5 {
            let want = if 2 + j > 1 + i {
                f32::NEG_INFINITY
            } else {
                0.5
            };
            assert_eq!(got[i * 5 + j], want, "({i},{j})");
        }
    }

    // sel: c = (a < b), dst = c ? a : b = min(a, b).
    let got = Harness::new()
        .input("a", f32t(&[18], &a), 0)
        .input("b", f32t(&[18], &b), 1024)
        .reg(1, 0)
        .reg(2, 1024)
        .reg(3, 4096)
        .reg(4, 6)
        .reg(5, 5)
        .reg(7, 2048)
        .op(Inst::VpuLt {
            dst: sram(DType::F32, 7, 4),
            a: t.a(),
            b: t.b(),
            rows: R,
            cols: C,
            bcast: Bcast::Full,
        })
        .op(Inst::VpuSel {
            dst: d,
            c: sram(DType::F32, 7, 4),
            a: t.a(),
            b: t.b(),
            rows: R,
            cols: C,
        })
        .output("y", DType::F32, &[15], 4096)
        .out_f32("y");
    for i in 0..3 {
        for j in 0..5 {
            assert_eq!(got[i * 5 + j], a[i * 6 + j].min(b[i * 6 + j]));
        }
    }
}

#[test]
fn conversions_round_to_nearest_even_and_saturate() {
    let x: Vec<f32> = vec![
        f32::from_bits(0x3f80_8000),
        f32::from_bits(0x3f81_8000),
        1.0 / 3.0,
        -2.5,
        300.0,
        -300.0,
        0.5,
        1e9,
    ];
    for (dt, shape) in [
        (DType::BF16, 8u64),
        (DType::F16, 8),
        (DType::I8, 8),
        (DType::U8, 8),
        (DType::F8E4M3, 8),
        (DType::I32, 8),
    ] {
        let h = Harness::new()
            .input("x", f32t(&[8], &x), 0)
            .reg(1, 0)
            .reg(3, 4096)
            .reg(4, 8)
            .op(Inst::VpuCopy {
                dst: sram(dt, 3, 4),
                a: sram(DType::F32, 1, 4),
                rows: 1,
                cols: 8,
                bcast: Bcast::Full,
            })
            .output("y", dt, &[shape], 4096);
        let got = h.run().output("y").unwrap().clone();
        let want = Tensor::from_f32(dt, vec![8], &x).unwrap();
        assert_eq!(got.data, want.data, "{dt}");
    }
    assert_eq!(round_to(DType::I8, 300.0), 127.0);
}

#[test]
fn conversions_to_the_wide_and_sixteen_bit_types_round_half_even_and_saturate() {
    let x: Vec<f32> = vec![2.5, -2.5, 3.5, -1.0, 70000.0, 1e20, f32::NAN, 0.1];
    let want: [(DType, [f64; 8]); 5] = [
        (
            DType::I16,
            [2.0, -2.0, 4.0, -1.0, 32767.0, 32767.0, 0.0, 0.0],
        ),
        (DType::U16, [2.0, 0.0, 4.0, 0.0, 65535.0, 65535.0, 0.0, 0.0]),
        (
            DType::U32,
            [2.0, 0.0, 4.0, 0.0, 70000.0, u32::MAX as f64, 0.0, 0.0],
        ),
        (
            DType::U64,
            [2.0, 0.0, 4.0, 0.0, 70000.0, 1e20f32 as f64, 0.0, 0.0],
        ),
        (
            DType::F64,
            [
                2.5,
                -2.5,
                3.5,
                -1.0,
                70000.0,
                1e20f32 as f64,
                f64::NAN,
                0.1f32 as f64,
            ],
        ),
    ];
    for (dt, want) in want {
        let h = Harness::new()
            .input("x", f32t(&[8], &x), 0)
            .reg(1, 0)
            .reg(3, 4096)
            .reg(4, 8)
            .op(Inst::VpuCopy {
                dst: sram(dt, 3, 4),
                a: sram(DType::F32, 1, 4),
                rows: 1,
                cols: 8,
                bcast: Bcast::Full,
            })
            .output("y", dt, &[8], 4096);
        let got = h.run().output("y").unwrap().clone();
        match got.to_i128() {
            Some(ints) => {
                let want: Vec<i128> = want
                    .iter()
                    .map(|&w| {
                        if w > u64::MAX as f64 {
                            u64::MAX as i128
                        } else {
                            w as i128
                        }
                    })
                    .collect();
                // 1e20 saturates u64 at u64::MAX.
                assert_eq!(ints, want, "{dt}");
            }
            None => {
                let vals: Vec<f64> = got
                    .data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                for (g, w) in vals.iter().zip(want) {
                    assert!(
                        g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                        "{g} {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn wide_storage_types_load_into_the_vector_unit_as_f32() {
    let cases: Vec<(DType, Vec<u8>, [f32; 2])> = vec![
        (
            DType::I16,
            [(-300i16).to_le_bytes(), 7i16.to_le_bytes()].concat(),
            [-300.0, 7.0],
        ),
        (
            DType::U16,
            [65535u16.to_le_bytes(), 1u16.to_le_bytes()].concat(),
            [65535.0, 1.0],
        ),
        (
            DType::U32,
            [4_000_000_000u32.to_le_bytes(), 9u32.to_le_bytes()].concat(),
            [4e9, 9.0],
        ),
        (
            DType::U64,
            [(1u64 << 40).to_le_bytes(), 3u64.to_le_bytes()].concat(),
            [(1u64 << 40) as f32, 3.0],
        ),
        (
            DType::F64,
            [0.1f64.to_le_bytes(), (-2.75f64).to_le_bytes()].concat(),
            [0.1f32, -2.75],
        ),
    ];
    for (dt, bytes, want) in cases {
        let got = Harness::new()
            .input("x", Tensor::new(dt, vec![2], bytes).unwrap(), 0)
            .reg(1, 0)
            .reg(3, 4096)
            .reg(4, 2)
            .op(Inst::VpuCopy {
                dst: sram(DType::F32, 3, 4),
                a: sram(dt, 1, 4),
                rows: 1,
                cols: 2,
                bcast: Bcast::Full,
            })
            .output("y", DType::F32, &[2], 4096)
            .out_f32("y");
        assert_eq!(got, want, "{dt}");
    }
}

#[test]
fn rounding_instructions_floor_ceil_trunc_and_round_half_to_even() {
    let x: Vec<f32> = vec![
        2.5,
        -2.5,
        3.5,
        -3.5,
        0.5,
        -0.5,
        1.7,
        -1.7,
        2.0,
        -0.0,
        1e9,
        f32::INFINITY,
        f32::NAN,
    ];
    let n = x.len() as u32;
    type F = fn(f32) -> f32;
    let rules: [(&str, F, [f32; 12]); 4] = [
        (
            "floor",
            f32::floor,
            [
                2.0,
                -3.0,
                3.0,
                -4.0,
                0.0,
                -1.0,
                1.0,
                -2.0,
                2.0,
                -0.0,
                1e9,
                f32::INFINITY,
            ],
        ),
        (
            "ceil",
            f32::ceil,
            [
                3.0,
                -2.0,
                4.0,
                -3.0,
                1.0,
                -0.0,
                2.0,
                -1.0,
                2.0,
                -0.0,
                1e9,
                f32::INFINITY,
            ],
        ),
        (
            "trunc",
            f32::trunc,
            [
                2.0,
                -2.0,
                3.0,
                -3.0,
                0.0,
                -0.0,
                1.0,
                -1.0,
                2.0,
                -0.0,
                1e9,
                f32::INFINITY,
            ],
        ),
        (
            "round",
            f32::round_ties_even,
            [
                2.0,
                -2.0,
                4.0,
                -4.0,
                0.0,
                -0.0,
                2.0,
                -2.0,
                2.0,
                -0.0,
                1e9,
                f32::INFINITY,
            ],
        ),
    ];
    for (name, f, want) in rules {
        let (dst, a, rows, cols, bcast) = (
            sram(DType::F32, 3, 4),
            sram(DType::F32, 1, 4),
            1,
            n,
            Bcast::Full,
        );
        let op = match name {
            "floor" => Inst::VpuFloor {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            "ceil" => Inst::VpuCeil {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            "trunc" => Inst::VpuTrunc {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
            _ => Inst::VpuRound {
                dst,
                a,
                rows,
                cols,
                bcast,
            },
        };
        let got = Harness::new()
            .input("x", f32t(&[n as u64], &x), 0)
            .reg(1, 0)
            .reg(3, 4096)
            .reg(4, n as i64)
            .op(op)
            .output("y", DType::F32, &[n as u64], 4096)
            .out_f32("y");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got[..12]), bits(&want), "{name}");
        let by_rule: Vec<f32> = x[..12].iter().map(|&v| f(v)).collect();
        assert_eq!(bits(&got[..12]), bits(&by_rule), "{name}");
        assert!(got[12].is_nan(), "{name}: NaN stays NaN");
    }
}

#[test]
fn truncating_before_an_integer_store_gives_onnx_cast_semantics() {
    // The store alone rounds half to even; `vpu.trunc` first truncates toward zero.
    let x = [2.7f32, -2.7, 0.5, -0.5, 3.5, -3.5];
    let got = Harness::new()
        .input("x", f32t(&[6], &x), 0)
        .reg(1, 0)
        .reg(3, 4096)
        .reg(4, 6)
        .op(Inst::VpuTrunc {
            dst: sram(DType::I16, 3, 4),
            a: sram(DType::F32, 1, 4),
            rows: 1,
            cols: 6,
            bcast: Bcast::Full,
        })
        .output("y", DType::I16, &[6], 4096)
        .run()
        .output("y")
        .unwrap()
        .to_i128()
        .unwrap();
    assert_eq!(got, vec![2, -2, 0, 0, 3, -3]);
}

#[test]
fn scalar_arithmetic_branches_and_memory() {
    // r1 = Σ_{i<10} i via a loop; then a tour of the ALU; results stored with `st` and read back
    // with `ld`/`ld32`, and copied out.
    let mut ops = vec![];
    ops.extend(li(1, 0));
    ops.extend(li(2, 0));
    ops.extend(li(3, 10));
    ops.push(Inst::Add {
        rd: Reg(1),
        rs1: Reg(1),
        rs2: Reg(2),
    });
    ops.push(Inst::Addi {
        rd: Reg(2),
        rs1: Reg(2),
        imm: 1,
    });
    ops.push(Inst::Blt {
        rs1: Reg(2),
        rs2: Reg(3),
        target: llmpu_isa::BranchTarget(-2),
    });
    ops.extend(li(4, -7));
    ops.extend(li(5, 2));
    ops.extend(li(20, 4096));
    let alu = [
        Inst::Div {
            rd: Reg(6),
            rs1: Reg(4),
            rs2: Reg(5),
        },
        Inst::Rem {
            rd: Reg(7),
            rs1: Reg(4),
            rs2: Reg(5),
        },
        Inst::Mul {
            rd: Reg(8),
            rs1: Reg(4),
            rs2: Reg(5),
        },
        Inst::Sub {
            rd: Reg(9),
            rs1: Reg(4),
            rs2: Reg(5),
        },
        Inst::Shr {
            rd: Reg(10),
            rs1: Reg(4),
            rs2: Reg(5),
        },
        Inst::Shli {
            rd: Reg(11),
            rs1: Reg(4),
            sh: 3,
        },
        Inst::Min {
            rd: Reg(12),
            rs1: Reg(4),
            rs2: Reg(5),
        },
        Inst::Max {
            rd: Reg(13),
            rs1: Reg(4),
            rs2: Reg(5),
        },
        Inst::Slt {
            rd: Reg(14),
            rs1: Reg(4),
            rs2: Reg(5),
        },
        Inst::Seq {
            rd: Reg(15),
            rs1: Reg(5),
            rs2: Reg(5),
        },
        Inst::Xor {
            rd: Reg(16),
            rs1: Reg(4),
            rs2: Reg(5),
        },
        Inst::Muli {
            rd: Reg(17),
            rs1: Reg(5),
            imm: -3,
        },
        Inst::Andi {
            rd: Reg(18),
            rs1: Reg(4),
            imm: 0xff,
        },
        Inst::Add {
            rd: Reg(0),
            rs1: Reg(4),
            rs2: Reg(5),
        },
    ];
    ops.extend(alu);
    ops.extend(li(19, 0x1234_5678_9abc_def0));
    let want: Vec<i64> = vec![
        45,
        -3,
        -1,
        -14,
        -9,
        (-7i64 as u64 >> 2) as i64,
        -56,
        -7,
        2,
        1,
        1,
        -7 ^ 2,
        -6,
        0xf9,
        0,
        0x1234_5678_9abc_def0,
    ];
    let regs = [1u8, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 0, 19];
    for (i, r) in regs.iter().enumerate() {
        ops.push(Inst::St {
            rs: Reg(*r),
            rs1: Reg(20),
            off: 8 * i as i32,
        });
    }
    ops.push(Inst::Ld {
        rd: Reg(21),
        rs1: Reg(20),
        off: 8,
    });
    ops.push(Inst::Ld32 {
        rd: Reg(22),
        rs1: Reg(20),
        off: 8,
    });
    ops.push(Inst::St {
        rs: Reg(21),
        rs1: Reg(20),
        off: 128,
    });
    ops.push(Inst::St {
        rs: Reg(22),
        rs1: Reg(20),
        off: 136,
    });
    // Branch tour: each taken branch skips an `li r23, 99`.
    ops.extend(li(23, 0));
    for br in [
        Inst::Beq {
            rs1: Reg(5),
            rs2: Reg(5),
            target: llmpu_isa::BranchTarget(2),
        },
        Inst::Bne {
            rs1: Reg(4),
            rs2: Reg(5),
            target: llmpu_isa::BranchTarget(2),
        },
        Inst::Bge {
            rs1: Reg(5),
            rs2: Reg(4),
            target: llmpu_isa::BranchTarget(2),
        },
        jmp(2),
    ] {
        ops.push(br);
        ops.push(Inst::Li {
            rd: Reg(23),
            imm: 99,
        });
    }
    ops.push(Inst::St {
        rs: Reg(23),
        rs1: Reg(20),
        off: 144,
    });
    let mut h = Harness::new().output("y", DType::I64, &[19], 4096);
    h.ops = ops;
    let out = h.run();
    let got: Vec<i64> = out
        .output("y")
        .unwrap()
        .data
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(&got[..16], &want[..]);
    assert_eq!(got[16], -3);
    assert_eq!(got[17], -3);
    assert_eq!(got[18], 0);
}

#[test]
fn counting_semaphores_order_units() {
    // The VPU fills two tiles and signals twice; the DMA waits for both before storing.
    let h = Harness::new()
        .reg(3, 4096)
        .reg(5, 4)
        .reg(6, 4112)
        .reg(7, 1 << 20)
        .reg(8, 32)
        .reg(9, 8192)
        .op(Inst::VpuFill {
            dst: sram(DType::F32, 3, 5),
            imm: 2.0,
            rows: 1,
            cols: 4,
        })
        .op(Inst::VpuSignal { sem: sem(5) })
        .op(Inst::VpuFill {
            dst: sram(DType::F32, 6, 5),
            imm: 3.0,
            rows: 1,
            cols: 4,
        })
        .op(Inst::VpuSignal { sem: sem(5) })
        .op(Inst::DmaWait {
            sem: sem(5),
            count: 2,
        })
        .op(dma(
            false,
            3,
            7,
            [8, 1, 1],
            [8, 0],
            [8, 0],
            DType::F32,
            Layout::Rows,
        ))
        .op(dma(
            true,
            9,
            7,
            [8, 1, 1],
            [8, 0],
            [8, 0],
            DType::F32,
            Layout::Rows,
        ))
        .output("y", DType::F32, &[8], 8192);
    assert_eq!(h.out_f32("y"), vec![2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0]);
}
