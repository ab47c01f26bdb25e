//! `llmpu generate --verify` runs the reference interpreter in lockstep with the emulator and
//! names the first op that goes wrong: on the zoo's Mistral, a clean run agrees at every step; a
//! decode binary whose second layer's post-attention RMS norm kernel is broken on purpose (its
//! `x·x` turned into `x + x`, an instruction edited in the compiled program) is stopped at the
//! first decode step, naming `graph.norm` of that norm's ONNX nodes — not an earlier op, and not
//! the first layer's identical norm.

use std::path::Path;

use llmpu_isa::Inst;

mod common;
use common::llmpu_out;

fn zoo(m: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("zoo/models/mistral-tiny-dyn-{m}/model.onnx"))
}

fn generate(extra: &[&std::ffi::OsStr]) -> (bool, String, String) {
    let reference =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("zoo/generate/mistral-tiny-generate.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .arg("generate")
        .arg("--prefill")
        .arg(zoo("prefill"))
        .arg("--prompt")
        .arg(reference)
        .args([
            "--precision",
            "fp32",
            "--max-context",
            "32",
            "--new-tokens",
            "6",
            "--verify",
        ])
        .args(extra)
        .env("LLMPU_PROGRESS", "0")
        .output()
        .expect("run llmpu");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn verify_agrees_on_a_right_binary_and_names_the_op_of_a_broken_kernel() {
    let (ok, out, err) = generate(&["--decode".as_ref(), zoo("decode").as_os_str()]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("the prefill and 5 decode steps agree with the reference interpreter"),
        "{out}"
    );

    let dir = std::env::temp_dir().join(format!("llmpu-verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("decode.llmpu");
    llmpu_out(&[
        "compile".as_ref(),
        zoo("decode").as_os_str(),
        "--dim".as_ref(),
        "batch_size=1".as_ref(),
        "--max-context".as_ref(),
        "32".as_ref(),
        "--precision".as_ref(),
        "fp32".as_ref(),
        "--probes".as_ref(),
        "-o".as_ref(),
        good.as_os_str(),
    ]);
    let mut p = llmpu_isa::binary::read_file(&good).unwrap();
    let norm = "layers.1/post_attention_layernorm";
    let start = p
        .debug
        .iter()
        .position(|d| d.core == 0 && d.loc.contains(norm))
        .expect("the norm's instructions");
    let (lo, hi) = (
        p.debug[start].pc as usize,
        p.debug
            .get(start + 1)
            .map_or(p.cores[0].len(), |d| d.pc as usize),
    );
    let broken = p.cores[0][lo..hi]
        .iter_mut()
        .find(|i| matches!(i, Inst::VpuMul { .. }))
        .expect("the norm squares its input");
    if let Inst::VpuMul {
        dst,
        a,
        b,
        rows,
        cols,
        bcast,
    } = *broken
    {
        *broken = Inst::VpuAdd {
            dst,
            a,
            b,
            rows,
            cols,
            bcast,
        };
    }
    let bad = dir.join("broken.llmpu");
    std::fs::write(&bad, llmpu_isa::binary::write(&p).unwrap()).unwrap();

    let (ok, out, err) = generate(&[
        "--decode".as_ref(),
        bad.as_os_str(),
        "--reference-decode".as_ref(),
        zoo("decode").as_os_str(),
    ]);
    assert!(!ok, "a broken kernel must fail --verify\n{out}");
    assert!(err.contains("decode step 1 (context 9) differs"), "{err}");
    let first = err
        .lines()
        .find(|l| l.starts_with("first op that differs"))
        .unwrap_or_else(|| panic!("no first op in\n{err}"));
    assert!(
        first.contains("`graph.norm`") && first.contains(&format!("/model/model/{norm}/Mul_1")),
        "{first}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
