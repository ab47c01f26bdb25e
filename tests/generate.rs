//! `llmpu generate` on the corpus's greedy-generation references: prefill, then decode steps with
//! the paged KV cache resident in the emulator's HBM (needs `LLMPU_CORPUS`, default
//! `../shared/corpus`; skipped with a message when absent).

use std::process::Command;

mod common;
use common::corpus;

/// Runs generate for `arch` and returns (ids matching before the first difference, compared ids,
/// stdout). The command succeeds exactly when every id matches the reference or the first
/// difference is within the precision's tolerance.
fn generate(c: &std::path::Path, arch: &str, precision: &str) -> (usize, usize, String) {
    let m = |k: &str| c.join(format!("models/{arch}-tiny-dyn-{k}/model.onnx"));
    let out = Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .args(["generate", "--prefill"])
        .arg(m("prefill"))
        .arg("--decode")
        .arg(m("decode"))
        .arg("--prompt")
        .arg(c.join(format!("generate/{arch}-tiny-generate.json")))
        .args(["--precision", precision])
        .output()
        .expect("run llmpu");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.starts_with("reference ids match"))
        .unwrap_or_default()
        .to_string();
    let frac = line.split_whitespace().nth(3).unwrap_or("0/1");
    let (a, b) = frac.split_once('/').unwrap_or(("0", "1"));
    let (same, n) = (a.parse().unwrap_or(0), b.parse().unwrap_or(1));
    // A difference passes only when the first one is within the precision's tolerance.
    let within = text.contains(&format!("within the {precision} tolerance"));
    assert_eq!(out.status.success(), same == n || within, "{text}{err}");
    if same != n {
        assert!(
            err.contains("differ from the reference from token"),
            "{err}"
        );
    }
    (same, n, text)
}

#[test]
fn generate_matches_reference_ids_and_step_cost_rises_with_live_kv_blocks() {
    let Some(c) = corpus("generate") else {
        return;
    };
    for arch in ["gpt2", "llama"] {
        let (same, n, text) = generate(&c, arch, "fp32");
        assert_eq!((same, n), (24, 24), "{arch} fp32:\n{text}");
        for figure in [
            "time to first token",
            "time per output token",
            "tokens/s",
            "energy per token",
            "HBM bytes per token",
        ] {
            assert!(text.contains(figure), "{arch}: no `{figure}` in\n{text}");
        }
        // Per-step cycles (third column of the step table) never fall as the context grows, and
        // rise once a second KV block is live.
        let cycles: Vec<u64> = text
            .lines()
            .filter(|l| {
                l.trim_start()
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
            })
            .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
            .collect();
        assert_eq!(cycles.len(), 23, "{text}");
        assert!(cycles.windows(2).all(|w| w[1] >= w[0]), "{cycles:?}");
        assert!(cycles[22] > cycles[0], "{cycles:?}");
        // bf16: every id agrees, or the first that differs does so within the bf16 tolerance
        // (the helper asserts the run succeeded exactly then).
        let (same, n, text) = generate(&c, arch, "bf16");
        assert!(
            same == n || text.contains("within the bf16 tolerance"),
            "{arch} bf16: {same}/{n}\n{text}"
        );
    }
}

/// A decode binary compiled once with `--max-context` serves every step of a generation.
#[test]
fn decode_binary_compiled_for_max_context_generates_the_reference_ids() {
    let Some(c) = corpus("generate") else {
        return;
    };
    let out = std::env::temp_dir().join(format!("llmpu-decode-{}.llmpu", std::process::id()));
    let model = c.join("models/llama-tiny-dyn-decode/model.onnx");
    let r = Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .arg("compile")
        .arg(&model)
        .args([
            "--max-context",
            "40",
            "--dim",
            "batch_size=1",
            "--precision",
            "fp32",
            "-o",
        ])
        .arg(&out)
        .output()
        .expect("run llmpu");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let program = llmpu_isa::binary::read_file(&out).expect("binary");
    let kv = program.kv.expect("KV region");
    assert_eq!((kv.max_blocks, kv.past_len), (3, 39));
    let g = Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .arg("generate")
        .arg("--prefill")
        .arg(c.join("models/llama-tiny-dyn-prefill/model.onnx"))
        .arg("--decode")
        .arg(&out)
        .arg("--prompt")
        .arg(c.join("generate/llama-tiny-generate.json"))
        .args(["--precision", "fp32"])
        .output()
        .expect("run llmpu");
    let text = String::from_utf8_lossy(&g.stdout);
    assert!(text.contains("reference ids match  24/24"), "{text}");
    let _ = std::fs::remove_file(&out);
}

#[test]
fn generate_trace_puts_prefill_and_every_step_on_one_time_axis() {
    let Some(c) = corpus("generate") else {
        return;
    };
    let m = |k: &str| c.join(format!("models/gpt2-tiny-dyn-{k}/model.onnx"));
    let dir = std::env::temp_dir().join(format!("llmpu-gen-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gen.json");
    let out = Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .args([
            "generate",
            "--precision",
            "fp32",
            "--new-tokens",
            "6",
            "--prefill",
        ])
        .arg(m("prefill"))
        .arg("--decode")
        .arg(m("decode"))
        .arg("--prompt")
        .arg(c.join("generate/gpt2-tiny-generate.json"))
        .arg("--trace")
        .arg(&path)
        .env("LLMPU_PROGRESS", "0")
        .output()
        .expect("run llmpu");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let ev = v["traceEvents"].as_array().unwrap();
    let host: Vec<&serde_json::Value> = ev
        .iter()
        .filter(|e| e["cat"] == "host" && e["ph"] == "X")
        .collect();
    let names: Vec<&str> = host.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 6, "prefill + 5 decode steps: {names:?}");
    assert!(names[0].starts_with("prefill (8 tokens)"), "{names:?}");
    assert!(names[5].starts_with("decode 5 (context 13)"), "{names:?}");
    let ts = |e: &serde_json::Value| e["ts"].as_f64().unwrap();
    let dur = |e: &serde_json::Value| e["dur"].as_f64().unwrap();
    for w in host.windows(2) {
        let (t0, d0) = (ts(w[0]), dur(w[0]));
        assert!(
            (t0 + d0 - ts(w[1])).abs() < 1e-6,
            "steps are back to back: {w:?}"
        );
    }
    let end = host.last().map(|e| ts(e) + dur(e)).unwrap();
    let insts: Vec<&serde_json::Value> = ev
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] != "host")
        .collect();
    assert!(
        insts.len() > 1000,
        "instructions of every run: {}",
        insts.len()
    );
    let last = insts.iter().map(|e| ts(e)).fold(0.0, f64::max);
    assert!(
        last > ts(host[5]) && last <= end + 1e-6,
        "the last step's instructions lie in its span"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs `llmpu generate` with `args` and returns its status and stderr.
fn generate_err(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .arg("generate")
        .args(args)
        .env("LLMPU_PROGRESS", "0")
        .output()
        .expect("run llmpu");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A decode graph with a static past (16 tokens) stops with an error, before running, when the
/// generation would step past it; negative ids, an empty request and a mismatching reference
/// are errors too.
#[test]
fn generate_refuses_a_static_past_it_would_outgrow_and_bad_requests() {
    let Some(c) = corpus("models") else {
        return;
    };
    let m = |k: &str| c.join(format!("models/gpt2-tiny-{k}/model.onnx"));
    let (pre, dec, dec_static) = (m("dyn-prefill"), m("dyn-decode"), m("decode"));
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let run = |decode: &std::path::Path, prompt: &'static str, extra: &[&'static str]| {
        let mut a = vec![
            os("--prefill"),
            pre.as_os_str(),
            os("--decode"),
            decode.as_os_str(),
            os("--prompt"),
            os(prompt),
            os("--precision"),
            os("fp32"),
        ];
        a.extend(extra.iter().map(|s| os(s)));
        generate_err(&a)
    };
    // Without attention_mask / position_ids the graph is right only at exactly 16 cached tokens.
    let p16 = "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16";
    let (ok, err) = run(&dec_static, p16, &["--new-tokens", "2"]);
    assert!(ok, "{err}");
    let (ok, err) = run(&dec_static, p16, &["--new-tokens", "3"]);
    assert!(!ok && err.contains("covers a past of 16 tokens"), "{err}");
    let (ok, err) = run(&dec_static, "1,2,3,4,5,6,7,8", &["--new-tokens", "2"]);
    assert!(
        !ok && err.contains("right only with exactly its compiled past of 16"),
        "{err}"
    );
    // A dynamic graph compiled for a 12-token context cannot cache 8 + 6 - 2 = 12 > 11.
    let (ok, err) = run(
        &dec,
        "1,2,3,4,5,6,7,8",
        &["--new-tokens", "6", "--max-context", "12"],
    );
    assert!(!ok, "{err}");
    let (ok, err) = run(&dec, "1,-2,3", &[]);
    assert!(!ok && err.contains("token 1 is -2"), "{err}");
    let (ok, err) = run(&dec, "1,2,3", &["--new-tokens", "0"]);
    assert!(!ok && err.contains("nothing to generate"), "{err}");
    // Ids past the vocabulary (256 rows of wte) and positions past the learned table (128).
    let (ok, err) = run(&dec, "1,256,3", &[]);
    assert!(
        !ok && err.contains("element 1 is 256, outside [-256, 256)") && err.contains("wte"),
        "{err}"
    );
    let long: &'static str = Box::leak(vec!["7"; 129].join(",").into_boxed_str());
    let (ok, err) = run(&dec, long, &["--new-tokens", "1"]);
    assert!(
        !ok && err.contains("element 128 is 128, outside [-128, 128)") && err.contains("wpe"),
        "{err}"
    );
}

#[test]
fn a_difference_from_the_reference_passes_only_within_the_tolerance() {
    // The gpt2 reference with token 3 replaced by another id: the emulator (fp32, right) and the
    // reference interpreter agree on the real token, so the difference is the reference's and
    // generate must fail naming it; with the real reference it passes.
    let Some(c) = corpus("generate") else {
        return;
    };
    let text = std::fs::read_to_string(c.join("generate/gpt2-tiny-generate.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let real = v["generated_ids"][3].as_i64().unwrap();
    v["generated_ids"][3] = serde_json::json!((real + 1) % 256);
    let dir = std::env::temp_dir().join(format!("llmpu-flip-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let forged = dir.join("forged.json");
    std::fs::write(&forged, v.to_string()).unwrap();
    let m = |k: &str| c.join(format!("models/gpt2-tiny-dyn-{k}/model.onnx"));
    let (ok, err) = generate_err(&[
        "--prefill".as_ref(),
        m("prefill").as_os_str(),
        "--decode".as_ref(),
        m("decode").as_os_str(),
        "--prompt".as_ref(),
        forged.as_os_str(),
        "--precision".as_ref(),
        "fp32".as_ref(),
    ]);
    assert!(
        !ok && err.contains("differ from the reference from token 3")
            && err.contains("the reference ids do not come from this model"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
