//! Fuzz target: ONNX bytes → import (static shapes) → import pipeline → the backend pipeline for
//! the `edge` preset (fp32 for inputs of even length, bf16 for odd) must give a program or an
//! error — never a panic, an abort or an allocation past the host limit. A compiled program must
//! write as a binary that reads back and writes to the same bytes. Seeds: `fuzz/seeds/compile`
//! (small node-test and hand-made models).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmpu_compiler::backend::{self, Options, Precision};
use llmpu_compiler::onnx::{ImportOptions, import_bytes, import_pipeline};
use llmpu_compiler::pass::{PassManager, PassManagerOptions};
use llmpu_isa::{Target, binary};

fuzz_target!(|data: &[u8]| {
    // The size policy keeps every host tensor of a fuzz input small.
    llmpu_isa::limits::set_host_bytes(64 << 20);
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
    let o = Options {
        target: Target::preset("edge").expect("the edge preset"),
        precision: if data.len() % 2 == 0 {
            Precision::Fp32
        } else {
            Precision::Bf16
        },
    };
    let pm = PassManagerOptions {
        verify_each: true,
        ..Default::default()
    };
    let Ok(Some(p)) = backend::compile(&mut m, &o, pm, &mut std::io::sink()) else {
        return;
    };
    let bytes = binary::write(&p).expect("a compiled program writes");
    let q = binary::read(&bytes).expect("a written program reads back");
    assert_eq!(binary::write(&q).expect("writes again"), bytes);
});
