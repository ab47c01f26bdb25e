//! The assembly examples in `examples/asm`: each assembles, runs on the emulator and matches a plain
//! Rust computation; each disassembles to text that re-assembles to the identical binary; and the
//! timing model behaves as `spec/cost-model.md` derives (GEMM near its bound, bandwidth and core
//! scaling). The committed `.npy` inputs and references equal what [`inputs`] generates
//! (`LLMPU_BLESS=1` rewrites them).

use llmpu_isa::{DType, Program, Target, binary};
use llmpu_runtime::compare::{Tolerance, compare};
use llmpu_runtime::{RunOptions, RunResult, Tensor, npy};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example(name: &str) -> PathBuf {
    root().join("examples/asm").join(name)
}

fn assemble(name: &str, target: Option<Target>) -> Program {
    llmpu_asm::assemble_file(&example(name), &llmpu_asm::Options { target })
        .unwrap_or_else(|d| panic!("{d}"))
}

/// Deterministic uniform values in `[lo, hi)` (xorshift64*).
fn uniform(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            let u = (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        })
        .collect()
}

fn tensor(dtype: DType, shape: &[u64], values: &[f32]) -> Tensor {
    Tensor::from_f32(dtype, shape.to_vec(), values).unwrap()
}

/// Inputs and plain-Rust reference outputs of an example.
struct Case {
    file: &'static str,
    inputs: Vec<(String, Tensor)>,
    expected: Vec<(String, Tensor)>,
}

fn gemm_case(file: &'static str) -> Case {
    let (m, k, n) = (512usize, 256usize, 512usize);
    let a = tensor(
        DType::BF16,
        &[m as u64, k as u64],
        &uniform(1, m * k, -1.0, 1.0),
    );
    let b = tensor(
        DType::BF16,
        &[k as u64, n as u64],
        &uniform(2, k * n, -1.0, 1.0),
    );
    let (av, bv) = (a.to_f32(), b.to_f32());
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                s += av[i * k + p] as f64 * bv[p * n + j] as f64;
            }
            c[i * n + j] = s as f32;
        }
    }
    Case {
        file,
        inputs: vec![("A".into(), a), ("B".into(), b)],
        expected: vec![("C".into(), tensor(DType::F32, &[m as u64, n as u64], &c))],
    }
}

fn softmax_case() -> Case {
    let (r, c) = (64usize, 256usize);
    let x = uniform(3, r * c, -4.0, 4.0);
    let mut y = vec![0f32; r * c];
    for i in 0..r {
        let row = &x[i * c..(i + 1) * c];
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        for j in 0..c {
            y[i * c + j] = ((row[j] as f64 - m).exp() / s) as f32;
        }
    }
    let shape = [r as u64, c as u64];
    Case {
        file: "softmax.s",
        inputs: vec![("X".into(), tensor(DType::F32, &shape, &x))],
        expected: vec![("Y".into(), tensor(DType::F32, &shape, &y))],
    }
}

fn embedding_case() -> Case {
    let (t, v, d) = (512usize, 1024usize, 256usize);
    let ids: Vec<f32> = uniform(4, t, 0.0, v as f32)
        .iter()
        .map(|x| x.floor())
        .collect();
    let table = uniform(5, v * d, -1.0, 1.0);
    let mut out = Vec::with_capacity(t * d);
    for &id in &ids {
        out.extend_from_slice(&table[id as usize * d..(id as usize + 1) * d]);
    }
    Case {
        file: "embedding.s",
        inputs: vec![
            ("ids".into(), tensor(DType::I64, &[t as u64], &ids)),
            (
                "table".into(),
                tensor(DType::F32, &[v as u64, d as u64], &table),
            ),
        ],
        expected: vec![(
            "out".into(),
            tensor(DType::F32, &[t as u64, d as u64], &out),
        )],
    }
}

fn cases() -> Vec<Case> {
    vec![
        gemm_case("gemm.s"),
        gemm_case("gemm_4core.s"),
        softmax_case(),
        embedding_case(),
    ]
}

fn run(p: &Program, inputs: &[(String, Tensor)], timing_only: bool) -> RunResult {
    let opts = RunOptions {
        timing_only,
        ..RunOptions::default()
    };
    llmpu_runtime::run(p, inputs, &opts).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_example_computes_what_plain_rust_computes() {
    for case in cases() {
        let p = assemble(case.file, None);
        let r = run(&p, &case.inputs, false);
        for (name, want) in &case.expected {
            let got = r.output(name).expect("output");
            let c = compare(name, got, want, Tolerance::FP32).unwrap();
            assert!(c.pass, "{}: {c}", case.file);
        }
    }
}

#[test]
fn every_example_disassembles_to_a_byte_identical_binary() {
    for case in cases() {
        let p = assemble(case.file, None);
        let bytes = binary::write(&p).unwrap();
        let back = binary::read(&bytes).unwrap();
        let text = llmpu_asm::disassemble(&back);
        let again =
            llmpu_asm::assemble(&text, &example(case.file)).unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(binary::write(&again).unwrap(), bytes, "{}", case.file);
    }
}

fn data_file(case: &str, name: &str) -> PathBuf {
    let stem = Path::new(case)
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    root()
        .join("examples/asm/data")
        .join(format!("{stem}_{name}.npy"))
}

#[test]
fn committed_example_data_equals_the_generator() {
    let bless = std::env::var_os("LLMPU_BLESS").is_some();
    for case in cases().into_iter().filter(|c| c.file != "gemm_4core.s") {
        for (name, t) in case.inputs.iter().chain(&case.expected) {
            let path = data_file(case.file, name);
            if bless {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                npy::write_file(&path, t).unwrap();
            }
            let committed = npy::read_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (bless with LLMPU_BLESS=1)", path.display()));
            assert_eq!(&committed, t, "{} is stale", path.display());
        }
    }
}

/// `max(MACs / peak MACs per cycle, compulsory HBM bytes / bytes per cycle)` for the GEMM.
fn gemm_bound(t: &Target) -> f64 {
    let (m, k, n) = (512f64, 256f64, 512f64);
    let compute = m * k * n / (t.macs_per_cycle_per_core() as f64 * t.cores as f64);
    let bytes = m * k * 2.0 + k * n * 2.0 + m * n * 4.0;
    compute.max(bytes / t.hbm_bytes_per_cycle())
}

#[test]
fn single_core_gemm_is_within_ten_percent_of_its_bound() {
    let p = assemble("gemm.s", None);
    let cycles = run(&p, &[], true).report.cycles as f64;
    let bound = gemm_bound(&p.target);
    assert_eq!(bound, 65536.0);
    assert!(cycles <= bound * 1.10, "{cycles} cycles vs bound {bound}");
    assert!(cycles >= bound, "{cycles} cycles beat the bound {bound}");
}

fn with_double_bandwidth(mut p: Program) -> Program {
    p.target.hbm.bandwidth_gb_s *= 2.0;
    p
}

#[test]
fn doubling_hbm_bandwidth_speeds_up_dma_bound_code_only() {
    let emb = assemble("embedding.s", None);
    let slow = run(&emb, &[], true).report.cycles as f64;
    let fast = run(&with_double_bandwidth(emb), &[], true).report.cycles as f64;
    assert!(fast < slow * 0.7, "embedding: {slow} -> {fast} cycles");

    let gemm = assemble("gemm.s", None);
    let base = run(&gemm, &[], true).report.cycles as f64;
    let wide = run(&with_double_bandwidth(gemm), &[], true).report.cycles as f64;
    assert!(
        (base - wide).abs() / base < 0.03,
        "gemm is compute-bound: {base} -> {wide} cycles"
    );
}

#[test]
fn four_cores_speed_the_gemm_up_at_least_threefold() {
    let quad =
        Target::resolve(root().join("examples/targets/quad.toml").to_str().unwrap()).unwrap();
    let one = run(&assemble("gemm.s", Some(quad.clone())), &[], true)
        .report
        .cycles as f64;
    let four = run(&assemble("gemm_4core.s", None), &[], true)
        .report
        .cycles as f64;
    assert!(
        one / four >= 3.0,
        "speed-up {:.2} ({one} vs {four} cycles)",
        one / four
    );
}

#[test]
fn timing_only_runs_take_the_same_cycles_as_functional_runs() {
    for case in cases() {
        let p = assemble(case.file, None);
        let f = run(&p, &case.inputs, false).report.cycles;
        let t = run(&p, &[], true).report.cycles;
        assert_eq!(f, t, "{}", case.file);
    }
}

/// `examples/targets/edge-realistic.toml` sets the optional timing keys: its `ws` array pays
/// `m + 2R + C − 2` per fold (8 folds of 128 + 64 + 32 − 2 per `mxu.matmul` of `gemm.s`, against
/// `max(128, 32)` double-buffered), its DMAs run at 85% of the peak and every located op
/// (`.loc`) of the program costs 1,000 dispatcher cycles more.
#[test]
fn the_realistic_edge_target_charges_its_dataflow_bandwidth_and_launches() {
    let real = Target::resolve(
        root()
            .join("examples/targets/edge-realistic.toml")
            .to_str()
            .unwrap(),
    )
    .unwrap();
    let base = run(&assemble("gemm.s", None), &[], true).report;
    let p = assemble("gemm.s", Some(real.clone()));
    let r = run(&p, &[], true).report;
    let mxu = |r: &llmpu_runtime::Report| r.cores[0].units[llmpu_isa::Unit::Mxu.index()];
    // The 64 matmuls' 8 folds each take 2R + C − 2 = 94 cycles longer (the waits and signals
    // on the matrix queue cost the same on both targets).
    assert_eq!(mxu(&r).instructions, mxu(&base).instructions);
    assert_eq!(
        mxu(&r).busy_cycles - mxu(&base).busy_cycles,
        64 * 8 * ((128 + 2 * 32 + 32 - 2) - 128)
    );
    let dma = |r: &llmpu_runtime::Report| r.cores[0].units[llmpu_isa::Unit::Dma.index()];
    assert_eq!(dma(&r).instructions, dma(&base).instructions);
    assert!(
        dma(&r).busy_cycles as f64 > dma(&base).busy_cycles as f64 * 1.1,
        "{} vs {}",
        dma(&r).busy_cycles,
        dma(&base).busy_cycles
    );
    let scalar = |r: &llmpu_runtime::Report| r.cores[0].units[0].busy_cycles;
    assert!(
        scalar(&r) >= scalar(&base) + 1000,
        "{} vs {}",
        scalar(&r),
        scalar(&base)
    );
    assert!(r.cycles > base.cycles + mxu(&r).busy_cycles - mxu(&base).busy_cycles);
}
