//! Fuzz target: arbitrary bytes → the ONNX importer must return Ok or a typed error, never panic,
//! abort or exhaust memory. Whatever imports must verify, print and re-parse to the same text, and
//! survive the import pipeline (whose `fold-constants` runs the reference interpreter on every
//! constant subgraph). Seeds: any `model.onnx` files (e.g. the corpus node tests) given as extra
//! corpus directories.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmpu_compiler::ir::{print_module, verify};
use llmpu_compiler::onnx::{ImportOptions, import_bytes, import_pipeline};
use llmpu_compiler::parser::parse_module;
use llmpu_compiler::pass::{PassManager, PassManagerOptions};

fuzz_target!(|data: &[u8]| {
    let opts = ImportOptions {
        allow_symbolic: true,
        ..Default::default()
    };
    let Ok(mut m) = import_bytes(data, None, &opts) else {
        return;
    };
    verify(&m).expect("the importer only returns verified IR");
    let text = print_module(&m);
    let again = parse_module(&text).expect("imported IR re-parses");
    assert_eq!(print_module(&again), text);
    let options = PassManagerOptions {
        verify_each: true,
        ..Default::default()
    };
    if let Ok(mut pm) = PassManager::from_names(&import_pipeline(), options) {
        let _ = pm.run(&mut m, &mut std::io::sink());
    }
});
