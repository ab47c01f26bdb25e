//! The model zoo (`zoo/`, written by `zoo/gen_zoo.py` from Hugging Face exports with
//! onnxruntime references): every model passes `llmpu check` on both presets in both precisions,
//! and `llmpu generate` reproduces every greedy reference token for token in fp32.

use std::path::{Path, PathBuf};

mod common;
use common::llmpu_out;

fn zoo(sub: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo").join(sub);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "{} is empty", dir.display());
    v
}

#[test]
fn zoo_models_pass_check_on_both_presets_and_precisions() {
    for case in zoo("models") {
        for target in ["edge", "datacenter"] {
            for precision in ["fp32", "bf16"] {
                let out = llmpu_out(&[
                    "check".as_ref(),
                    case.as_os_str(),
                    "--target".as_ref(),
                    target.as_ref(),
                    "--precision".as_ref(),
                    precision.as_ref(),
                    "--no-report".as_ref(),
                ]);
                let sets = out.matches("-- test_data_set_").count();
                assert!(sets >= 2, "{}: {sets} data sets\n{out}", case.display());
                assert!(!out.contains("FAIL"), "{}\n{out}", case.display());
            }
        }
    }
}

#[test]
fn zoo_generate_reproduces_the_greedy_reference_ids_in_fp32() {
    for reference in zoo("generate") {
        let name = reference
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let family = name
            .strip_suffix("-tiny-generate.json")
            .expect("reference name");
        let model = |k: &str| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("zoo/models/{family}-tiny-dyn-{k}/model.onnx"))
        };
        for target in ["edge", "datacenter"] {
            let out = llmpu_out(&[
                "generate".as_ref(),
                "--prefill".as_ref(),
                model("prefill").as_os_str(),
                "--decode".as_ref(),
                model("decode").as_os_str(),
                "--prompt".as_ref(),
                reference.as_os_str(),
                "--precision".as_ref(),
                "fp32".as_ref(),
                "--target".as_ref(),
                target.as_ref(),
            ]);
            assert!(
                out.contains("reference ids match  24/24 (100.0%)"),
                "{family} on {target}:\n{out}"
            );
        }
    }
}
