//! Every exported model of the shared corpus (`$LLMPU_CORPUS`, default `../shared/corpus`): the
//! imported IR (symbolic and bound) verifies, prints → parses → prints identically, and with its
//! constants printed in full it re-parses into a module the interpreter runs to the same outputs.
//! Skipped (with a message) when the corpus is absent.

use std::path::PathBuf;

use llmpu_compiler::interp;
use llmpu_compiler::ir::{PrintOptions, print_module, print_module_with, verify};
use llmpu_compiler::onnx::{
    ImportOptions, graph_input_names, import_file, import_pipeline, read_tensor_file,
};
use llmpu_compiler::parser::parse_module;
use llmpu_compiler::pass::{PassManager, PassManagerOptions};

fn corpus() -> Option<PathBuf> {
    let p = std::env::var_os("LLMPU_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus"));
    if p.is_dir() {
        Some(p)
    } else {
        println!(
            "corpus not found at {} (set LLMPU_CORPUS); skipping",
            p.display()
        );
        None
    }
}

#[test]
fn imported_models_round_trip_and_run_after_reparse() {
    let Some(root) = corpus() else { return };
    let mut models: Vec<PathBuf> = std::fs::read_dir(root.join("models"))
        .expect("models folder")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    models.sort();
    assert!(!models.is_empty());
    for dir in models {
        let path = dir.join("model.onnx");
        let name = dir.display().to_string();
        // Symbolic import keeps `#graph.dims` and round-trips.
        let sym = ImportOptions {
            allow_symbolic: true,
            ..Default::default()
        };
        let m = import_file(&path, &sym).unwrap_or_else(|e| panic!("{name}: {e}"));
        verify(&m).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let text = print_module(&m);
        let again =
            parse_module(&text).unwrap_or_else(|e| panic!("{name}: {}", e.diagnostic.message));
        assert_eq!(print_module(&again), text, "{name}: print → parse → print");
        // Bound to the test data's shapes, through the pipeline, printed in full and re-parsed.
        let set = dir.join("test_data_set_0");
        let model_proto = llmpu_compiler::onnx::decode_model(&std::fs::read(&path).expect("read"))
            .expect("decode");
        let names = graph_input_names(&model_proto);
        let mut opts = ImportOptions::default();
        let mut inputs = vec![];
        for (i, n) in names.iter().enumerate() {
            let (_, t) = read_tensor_file(&set.join(format!("input_{i}.pb"))).expect("input");
            opts.shapes
                .insert(n.clone(), t.shape.iter().map(|&d| d as u64).collect());
            inputs.push(t);
        }
        let mut m = import_file(&path, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut pm = PassManager::from_names(&import_pipeline(), PassManagerOptions::default())
            .expect("pipeline");
        pm.run(&mut m, &mut std::io::sink())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let direct = interp::run(&m, &inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        let full = print_module_with(
            &m,
            PrintOptions {
                elide_large_constants: false,
            },
        );
        let reparsed =
            parse_module(&full).unwrap_or_else(|e| panic!("{name}: {}", e.diagnostic.message));
        assert_eq!(
            print_module_with(
                &reparsed,
                PrintOptions {
                    elide_large_constants: false
                }
            ),
            full
        );
        let via_text = interp::run(&reparsed, &inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(direct, via_text, "{name}: outputs differ after print/parse");
    }
}
