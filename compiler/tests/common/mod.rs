//! Helpers shared by the backend test files: seeded values, `dense<…>` literals, compiling
//! graph IR text for a preset, and the emulator options every functional run uses (with the
//! uninitialized-read check on, so a kernel reading bytes nobody wrote fails its test).
#![allow(dead_code)]

use llmpu_compiler::backend::{Options, Precision, compile};
use llmpu_compiler::parser::parse_module;
use llmpu_compiler::pass::PassManagerOptions;
use llmpu_isa::{Program, Target};

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

pub fn dense(v: &[f32], shape: &[usize]) -> String {
    fn nest(v: &[f32], shape: &[usize]) -> String {
        if shape.len() <= 1 {
            let body: Vec<String> = v.iter().map(|x| format!("{x:e}")).collect();
            return format!("[{}]", body.join(", "));
        }
        let inner: usize = shape[1..].iter().product();
        let parts: Vec<String> = v.chunks(inner).map(|c| nest(c, &shape[1..])).collect();
        format!("[{}]", parts.join(", "))
    }
    let ty: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("dense<{}> : tensor<{}xf32>", nest(v, shape), ty.join("x"))
}

pub fn compile_text(src: &str, target: &str, precision: Precision) -> Program {
    let mut m = parse_module(src).unwrap_or_else(|e| panic!("{e:?}"));
    let o = Options {
        target: Target::preset(target).unwrap(),
        precision,
    };
    let opts = PassManagerOptions {
        verify_each: true,
        ..Default::default()
    };
    compile(&mut m, &o, opts, &mut std::io::sink())
        .unwrap_or_else(|e| panic!("compile: {e}"))
        .expect("program")
}

/// Run options of the functional tests: defaults plus `check_uninit`.
pub fn checked() -> llmpu_runtime::RunOptions {
    llmpu_runtime::RunOptions {
        check_uninit: true,
        ..Default::default()
    }
}
