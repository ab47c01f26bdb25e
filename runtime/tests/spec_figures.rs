//! The figures `spec/cost-model.md` quotes are what the emulator measures: each is recomputed here
//! and must appear in the spec text, so a timing change forces a deliberate spec update.

use llmpu_isa::{Program, Target};
use llmpu_runtime::{RunOptions, run};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cycles(file: &str, target: Option<Target>) -> u64 {
    let path = root().join("examples/asm").join(file);
    let src = std::fs::read_to_string(&path).unwrap();
    let mut p: Program = llmpu_asm::assemble(&src, &path).unwrap();
    if let Some(t) = target {
        p.target = t;
    }
    let opts = RunOptions {
        timing_only: true,
        ..RunOptions::default()
    };
    run(&p, &[], &opts).unwrap().report.cycles
}

/// `67290` → `67,290`.
fn thousands(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn cost_model_spec_figures_match_the_emulator() {
    let spec = std::fs::read_to_string(root().join("spec/cost-model.md")).unwrap();
    let quad_text = std::fs::read_to_string(root().join("examples/targets/quad.toml")).unwrap();
    let quad = Target::from_toml(&quad_text, "quad.toml").unwrap();
    let mut edge2x = Target::preset("edge").unwrap();
    edge2x.hbm.bandwidth_gb_s *= 2.0;
    let one = cycles("gemm.s", None);
    let one_quad = cycles("gemm.s", Some(quad));
    let four = cycles("gemm_4core.s", None);
    let emb = cycles("embedding.s", None);
    let emb2x = cycles("embedding.s", Some(edge2x.clone()));
    let gemm2x = cycles("gemm.s", Some(edge2x));
    for v in [one, one_quad, four, emb, emb2x, gemm2x] {
        let text = thousands(v);
        assert!(
            spec.contains(&text),
            "spec/cost-model.md does not state {text}"
        );
    }
    let speedup = format!("{:.2}×", one_quad as f64 / four as f64);
    assert!(
        spec.contains(&speedup),
        "spec does not state the speedup {speedup}"
    );
}
