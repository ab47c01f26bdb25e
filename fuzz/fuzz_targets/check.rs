//! Fuzz target: what `llmpu check` does to a bare model, on ONNX bytes: import, import pipeline,
//! compile for `edge` in fp32, seeded inputs, the reference interpreter and the emulator with
//! `--check-uninit`. Neither may panic, abort or allocate past the host limit; the emulator must
//! not read memory nobody wrote (a compiler bug) and, when both run, must return as many outputs
//! as the interpreter, of the same shapes wherever the interpreter's shape is the one the IR
//! declares (seeded values of an axes or shape input give the interpreter other shapes).
//! Seeds: `fuzz/seeds/compile`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmpu_compiler::backend::{self, Options, Precision, dtype_of};
use llmpu_compiler::interp::{self, Tensor as ITensor};
use llmpu_compiler::ir::{Attribute, ScalarType, Type};
use llmpu_compiler::onnx::{ImportOptions, import_bytes, import_pipeline};
use llmpu_compiler::pass::{PassManager, PassManagerOptions};
use llmpu_isa::Target;
use llmpu_runtime::{EmuError, RunOptions, Tensor, TrapKind};

/// Seeded inputs in `[-1, 1)` (integers in `0..8`), as `llmpu check` makes them.
fn input(st: ScalarType, shape: &[u64], seed: &mut u64) -> Option<ITensor> {
    let n = llmpu_isa::limits::host_tensor("input", shape, st.byte_size() as u64).ok()?;
    let mut vals = Vec::with_capacity(n);
    for _ in 0..n {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = (*seed >> 40) as f64 / (1u64 << 24) as f64;
        vals.push(if st.is_float() {
            u * 2.0 - 1.0
        } else {
            (u * 8.0).floor()
        });
    }
    let shape = shape.iter().map(|&d| d as usize).collect();
    Some(ITensor::from_f64_fn(st, shape, n, |i| vals[i]))
}

fn to_runtime(t: &ITensor) -> Option<Tensor> {
    let st = t.dtype();
    let dt = dtype_of(st)?;
    let bytes = if st == ScalarType::I1 {
        t.to_f64_vec().iter().map(|&x| (x != 0.0) as u8).collect()
    } else {
        t.to_le_bytes()
    };
    Tensor::new(dt, t.shape.iter().map(|&d| d as u64).collect(), bytes).ok()
}

fuzz_target!(|data: &[u8]| {
    llmpu_isa::limits::set_host_bytes(16 << 20);
    let Ok(mut m) = import_bytes(data, None, &ImportOptions::default()) else {
        return;
    };
    let Ok(mut pm) = PassManager::from_names(&import_pipeline(), PassManagerOptions::default())
    else {
        return;
    };
    if pm.run(&mut m, &mut std::io::sink()).is_err() {
        return;
    }
    let Some(f) = m.functions().first().copied() else {
        return;
    };
    let Some(entry) = m.entry_block(f) else {
        return;
    };
    let mut seed = 1u64;
    let mut inputs = vec![];
    for &v in &m.block(entry).args {
        let Some(t) = m.value_type(v).as_tensor() else {
            return;
        };
        let Some(shape) = t.static_shape() else {
            return;
        };
        let Some(x) = input(t.elem, &shape, &mut seed) else {
            return;
        };
        inputs.push(x);
    }
    let reference = interp::run(&m, &inputs);
    // The static result shapes the IR declares.
    let declared: Vec<Option<Vec<u64>>> = match m.attr(f, "function_type") {
        Some(Attribute::Type(Type::Function(_, results))) => results
            .iter()
            .map(|t| t.as_tensor().and_then(|t| t.static_shape()))
            .collect(),
        _ => return,
    };
    let o = Options {
        target: Target::preset("edge").expect("the edge preset"),
        precision: Precision::Fp32,
    };
    let pm = PassManagerOptions {
        verify_each: true,
        ..Default::default()
    };
    let mut compiled = m.clone();
    let Ok(Some(program)) = backend::compile(&mut compiled, &o, pm, &mut std::io::sink()) else {
        return;
    };
    let names = llmpu_runtime::kv::input_names(&program);
    if names.len() != inputs.len() {
        return;
    }
    let mut bound = vec![];
    for (n, t) in names.iter().zip(&inputs) {
        let Some(t) = to_runtime(t) else {
            return;
        };
        bound.push((n.to_string(), t));
    }
    let ro = RunOptions {
        check_uninit: true,
        max_instructions: 2_000_000,
        max_work: 200_000_000,
        max_output_bytes: 16 << 20,
        ..Default::default()
    };
    match llmpu_runtime::kv::run_dense(&program, &bound, &ro) {
        Err(EmuError::Trap {
            kind: k @ TrapKind::Uninit { .. },
            core,
            pc,
            inst,
        }) => panic!("compiled code reads uninitialized memory: core {core} pc {pc} `{inst}`: {k}"),
        Err(_) => {}
        Ok(res) => {
            if let Ok(want) = reference {
                assert_eq!(res.outputs.len(), want.len(), "output count");
                for (((name, got), w), declared) in res.outputs.iter().zip(&want).zip(&declared) {
                    let shape: Vec<u64> = w.shape.iter().map(|&d| d as u64).collect();
                    // Seeded values of an input that is really a shape or axes (the compiled
                    // program took the declared shapes) give the interpreter another shape.
                    if declared.as_ref() == Some(&shape) {
                        assert_eq!(got.shape, shape, "shape of output `{name}`");
                    }
                }
            }
        }
    }
});
