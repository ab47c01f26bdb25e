//! `llmpu serve-sim`: continuous batching over the paged KV pool on the corpus's dynamic-shape
//! models (needs `LLMPU_CORPUS`, default `../shared/corpus`; skipped with a message when absent).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

mod common;
use common::corpus;

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve_sim");
    std::fs::create_dir_all(&d).expect("tmp dir");
    d.join(name)
}

/// Runs serve-sim on the corpus model pair `{arch}-tiny-dyn` with `args`; returns (success,
/// stdout, stderr).
fn serve(c: &Path, arch: &str, args: &[&str]) -> (bool, String, String) {
    let model = c.join(format!("models/{arch}-tiny-dyn"));
    serve_models(&["--model".as_ref(), model.as_os_str()], args)
}

/// Runs serve-sim with the model arguments `models` and `args`; returns (success, stdout, stderr).
fn serve_models(models: &[&std::ffi::OsStr], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .arg("serve-sim")
        .args(models)
        .args(args)
        .output()
        .expect("run llmpu");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn serve_json(c: &Path, arch: &str, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, out, err) = serve(c, arch, &all);
    assert!(ok, "{out}{err}");
    serde_json::from_str(&out).expect("JSON summary")
}

fn committed_trace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/traces/sharegpt-like-64.json")
}

#[test]
fn committed_64_request_trace_completes_with_paged_kv_utilization_of_at_least_90_percent() {
    let Some(c) = corpus("generate") else { return };
    let trace = committed_trace();
    let s = serve_json(&c, "gpt2", &["--requests", trace.to_str().expect("path")]);
    let t: Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).expect("trace")).expect("json");
    let reqs = t["requests"].as_array().expect("requests");
    assert!(reqs.len() >= 64);
    assert_eq!(s["requests"], reqs.len());
    let per = s["per_request"].as_array().expect("per request");
    let mut tokens = 0;
    for (r, o) in reqs.iter().zip(per) {
        assert_eq!(o["output_len"], r["output_len"], "request {}", r["id"]);
        tokens += r["output_len"].as_u64().expect("len");
        let (a, f, e) = (
            o["arrival_s"].as_f64().expect("a"),
            o["first_token_s"].as_f64().expect("f"),
            o["finish_s"].as_f64().expect("e"),
        );
        assert!(
            a < f && f <= e,
            "arrival {a} ≤ first token {f} ≤ finish {e}"
        );
    }
    assert_eq!(s["output_tokens"], tokens);
    let total = s["total_s"].as_f64().expect("total");
    let tput = s["throughput_tokens_per_s"].as_f64().expect("tput");
    assert!((tput * total - tokens as f64).abs() < 1e-6 * tokens as f64);
    let ttft = &s["ttft_s"];
    assert!(ttft["p50"].as_f64() <= ttft["p90"].as_f64());
    assert!(ttft["p90"].as_f64() <= ttft["p99"].as_f64());
    assert!(s["tpot_s"]["p50"].as_f64().expect("tpot") > 0.0);
    let paged = s["kv_utilization_paged"].as_f64().expect("paged");
    let reserved = s["kv_utilization_reserved"].as_f64().expect("reserved");
    assert!((0.9..=1.0).contains(&paged), "paged utilization {paged}");
    assert!(reserved < paged, "reservation wastes more: {reserved}");
    let hist = s["batch_size_histogram"].as_array().expect("hist");
    assert!(
        hist.iter().skip(2).any(|n| n.as_u64() > Some(0)),
        "requests were batched: {hist:?}"
    );
    assert_eq!(s["timing_only"], false);
    // Timing-only still moves the KV header, so paged attention skips the same blocks: the
    // schedule and its figures are the functional run's.
    let t = serve_json(
        &c,
        "gpt2",
        &["--requests", trace.to_str().expect("path"), "--timing-only"],
    );
    assert_eq!(t["timing_only"], true);
    for k in [
        "total_s",
        "kv_utilization_paged",
        "decode_steps",
        "hbm_bytes_per_token",
    ] {
        assert_eq!(t[k], s[k], "{k} timing-only vs functional");
    }
}

/// A trace whose first request is the corpus's greedy-generation prompt, with five more requests
/// of other lengths arriving meanwhile (so it is decoded in batches of changing size).
fn reference_trace(c: &Path, arch: &str) -> (PathBuf, Vec<Value>) {
    reference_trace_of(&c.join(format!("generate/{arch}-tiny-generate.json")), arch)
}

/// A trace of the greedy reference `reference` (request `ref`) and five other requests arriving
/// with it, written as `{name}-reference.json`; and the reference's ids.
fn reference_trace_of(reference: &Path, name: &str) -> (PathBuf, Vec<Value>) {
    let g: Value = serde_json::from_str(&std::fs::read_to_string(reference).expect("reference"))
        .expect("json");
    let want = g["generated_ids"].as_array().expect("ids").clone();
    let mut reqs = vec![
        json!({"id": "ref", "arrival_s": 0.0, "prompt_ids": g["prompt_ids"],
        "output_len": want.len()}),
    ];
    for i in 0..5 {
        reqs.push(json!({"id": format!("r{i}"), "arrival_ms": 0.02 * i as f64,
            "prompt_len": 5 + 7 * i, "output_len": 3 + 9 * i}));
    }
    let p = tmp(&format!("{name}-reference.json"));
    std::fs::write(&p, json!({"requests": reqs}).to_string()).expect("write");
    (p, want)
}

#[test]
fn batched_decode_reproduces_the_greedy_reference_ids_in_fp32_for_gpt2_and_llama() {
    let Some(c) = corpus("generate") else { return };
    for arch in ["gpt2", "llama"] {
        let (trace, want) = reference_trace(&c, arch);
        let t = trace.to_str().expect("path");
        let s = serve_json(&c, arch, &["--requests", t, "--precision", "fp32"]);
        assert_eq!(
            s["per_request"][0]["generated_ids"].as_array(),
            Some(&want),
            "{arch}: a request decoded in a batch generates what it does alone"
        );
        assert!(s["mean_batch"].as_f64().expect("mean") > 1.5, "{arch}: {s}");
        let used = s["bucket_steps"].as_object().expect("buckets");
        assert!(
            used.values().filter(|n| n.as_u64() > Some(0)).count() > 1,
            "{arch}: steps moved between batch buckets: {used:?}"
        );
        // One program of 8 slots, idle rows padded: the same ids.
        let s = serve_json(
            &c,
            arch,
            &["--requests", t, "--precision", "fp32", "--no-buckets"],
        );
        assert_eq!(
            s["per_request"][0]["generated_ids"].as_array(),
            Some(&want),
            "{arch}: idle padded rows do not disturb the live ones"
        );
        // A pool of 8 usable blocks cannot hold the batch: preemption and recompute, same ids.
        let s = serve_json(
            &c,
            arch,
            &["--requests", t, "--precision", "fp32", "--kv-blocks", "9"],
        );
        assert!(s["preemptions"].as_u64().expect("n") > 0, "{arch}: {s}");
        assert!(s["kv_peak_blocks"].as_u64().expect("peak") <= 8);
        assert_eq!(
            s["per_request"][0]["generated_ids"].as_array(),
            Some(&want),
            "{arch}: recompute after preemption continues the same sequence"
        );
    }
}

#[test]
fn trace_option_writes_request_and_scheduler_tracks_with_instruction_events() {
    let Some(c) = corpus("generate") else { return };
    let p = tmp("small.json");
    std::fs::write(
        &p,
        r#"{"requests": [{"arrival_s": 0, "prompt_len": 4, "output_len": 3},
                          {"id": "late", "arrival_ms": 0.05, "prompt_len": 6, "output_len": 2}]}"#,
    )
    .expect("write");
    let out = tmp("small.trace.json");
    let (ok, text, err) = serve(
        &c,
        "gpt2",
        &[
            "--requests",
            p.to_str().expect("path"),
            "--timing-only",
            "--trace",
            out.to_str().expect("path"),
        ],
    );
    assert!(ok, "{text}{err}");
    assert!(
        text.contains("timing-only: token ids were not computed"),
        "{text}"
    );
    let t: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("trace")).expect("json");
    let ev = t["traceEvents"].as_array().expect("events");
    let named = |n: &str| {
        ev.iter()
            .any(|e| e["ph"] == "M" && e["args"]["name"].as_str() == Some(n))
    };
    assert!(named("request late") && named("request 0") && named("scheduler"));
    for kind in ["queued", "prefill", "decode"] {
        assert!(ev.iter().any(|e| e["name"] == kind), "a {kind} span");
    }
    assert!(ev.iter().any(|e| e["cat"] == "mxu"), "instruction events");
}

#[test]
fn malformed_trace_is_an_error_naming_the_request_and_field() {
    let Some(c) = corpus("generate") else { return };
    let p = tmp("bad.json");
    std::fs::write(
        &p,
        r#"{"requests": [{"arrival_s": 0, "prompt_len": 4, "output_len": 3},
                          {"arrival_s": 0.1, "prompt_len": 4}]}"#,
    )
    .expect("write");
    let (ok, _, err) = serve(&c, "gpt2", &["--requests", p.to_str().expect("path")]);
    assert!(!ok);
    assert!(err.contains("requests[1]: missing `output_len`"), "{err}");
    std::fs::write(
        &p,
        r#"{"requests": [{"arrival_s": 0, "prompt_len": 100, "output_len": 100}]}"#,
    )
    .expect("write");
    let (ok, _, err) = serve(&c, "gpt2", &["--requests", p.to_str().expect("path")]);
    assert!(!ok);
    assert!(
        err.contains("request `0`") && err.contains("maximum context is 128"),
        "{err}"
    );
}

#[test]
fn synthetic_trace_generator_is_deterministic_and_fits_the_context() {
    let Some(c) = corpus("generate") else { return };
    let (a, b) = (tmp("synth-a.json"), tmp("synth-b.json"));
    for p in [&a, &b] {
        let (ok, out, err) = serve(
            &c,
            "gpt2",
            &[
                "--synth-trace",
                p.to_str().expect("path"),
                "--synth-requests",
                "64",
                "--synth-rate",
                "600",
            ],
        );
        assert!(ok, "{out}{err}");
    }
    let text = std::fs::read_to_string(&a).expect("a");
    assert_eq!(text, std::fs::read_to_string(&b).expect("b"));
    assert_eq!(
        text,
        std::fs::read_to_string(committed_trace()).expect("committed"),
        "the committed trace is what the generator writes"
    );
    let t: Value = serde_json::from_str(&text).expect("json");
    for r in t["requests"].as_array().expect("requests") {
        let (p, o) = (
            r["prompt_len"].as_u64().expect("p"),
            r["output_len"].as_u64().expect("o"),
        );
        assert!(p >= 1 && o >= 1 && p + o - 1 <= 128);
    }
}

fn shared_trace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/traces/shared-system-prompt-32.json")
}

#[test]
fn a_shared_system_prompt_is_computed_once_with_the_same_ids_and_a_shorter_ttft() {
    let Some(c) = corpus("generate") else { return };
    let t = shared_trace();
    let t = t.to_str().expect("path");
    let s = serve_json(
        &c,
        "gpt2",
        &["--requests", t, "--precision", "fp32", "--compare"],
    );
    let p = &s["prefix_cache"];
    // 32 requests, a 96-token system prompt (6 blocks of 16): the first computes it, the 31
    // others take its 6 blocks.
    assert_eq!(p["system_prompt_requests"], 32);
    assert_eq!(p["system_prompt_blocks_without_sharing"], 192);
    assert_eq!(p["system_prompt_blocks_saved"], 186);
    assert!(p["system_prompt_saved_fraction"].as_f64() >= Some(0.8));
    assert_eq!(p["hits"], 31);
    assert_eq!(p["tokens_not_recomputed"], 31 * 96);
    let b = &s["baseline"];
    assert_eq!(
        b["same_generated_ids"], true,
        "sharing changes no token (fp32)"
    );
    assert!(b["ttft_p50_speedup"].as_f64() > Some(1.5), "{b}");
    let off = serve_json(
        &c,
        "gpt2",
        &["--requests", t, "--precision", "fp32", "--no-prefix-cache"],
    );
    assert_eq!(off["prefix_cache"]["hits"], 0);
    for (x, y) in s["per_request"]
        .as_array()
        .expect("per request")
        .iter()
        .zip(off["per_request"].as_array().expect("per request"))
    {
        assert_eq!(
            x["generated_ids"], y["generated_ids"],
            "request {}",
            x["id"]
        );
    }
    assert_eq!(
        b["ttft_s"], off["ttft_s"],
        "--compare's baseline is --no-prefix-cache"
    );
}

#[test]
fn the_shared_prompt_trace_is_what_the_generator_writes() {
    let Some(c) = corpus("generate") else { return };
    let p = tmp("shared.json");
    let (ok, out, err) = serve(
        &c,
        "gpt2",
        &[
            "--synth-trace",
            p.to_str().expect("path"),
            "--synth-requests",
            "32",
            "--synth-rate",
            "2000",
            "--synth-system-prompt",
            "96",
        ],
    );
    assert!(ok, "{out}{err}");
    assert_eq!(
        std::fs::read_to_string(&p).expect("written"),
        std::fs::read_to_string(shared_trace()).expect("committed")
    );
}

#[test]
fn offload_preemption_swaps_kv_out_and_back_and_generates_the_unpressured_ids() {
    let Some(c) = corpus("generate") else { return };
    let (trace, want) = reference_trace(&c, "gpt2");
    let t = trace.to_str().expect("path");
    let target =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/targets/edge-offload.toml");
    let target = target.to_str().expect("path");
    let free = serve_json(&c, "gpt2", &["--requests", t, "--precision", "fp32"]);
    assert_eq!(free["preemptions"], 0);
    let s = serve_json(
        &c,
        "gpt2",
        &[
            "--requests",
            t,
            "--precision",
            "fp32",
            "--kv-blocks",
            "9",
            "--target",
            target,
            "--preemption",
            "offload",
        ],
    );
    let n = s["preemptions"].as_u64().expect("n");
    assert!(n > 0, "{s}");
    assert_eq!(s["preemption_mode"], "offload");
    let o = &s["offload"];
    assert_eq!(o["swap_outs"], n);
    assert_eq!(o["swap_ins"], n);
    assert_eq!(o["bytes_offloaded"], o["bytes_prefetched"]);
    assert_eq!(s["prefill_runs"], 6, "nothing recomputed");
    assert_eq!(s["per_request"][0]["generated_ids"].as_array(), Some(&want));
    for (x, y) in s["per_request"]
        .as_array()
        .expect("per request")
        .iter()
        .zip(free["per_request"].as_array().expect("per request"))
    {
        assert_eq!(
            x["generated_ids"], y["generated_ids"],
            "request {}",
            x["id"]
        );
    }
    // Offload needs a target with a second tier.
    let (ok, _, err) = serve(&c, "gpt2", &["--requests", t, "--preemption", "offload"]);
    assert!(!ok);
    assert!(
        err.contains("--preemption offload: target `edge` has no [kv_offload] section"),
        "{err}"
    );
}

#[test]
fn an_undeclared_system_prompt_is_an_error_naming_the_request() {
    let Some(c) = corpus("generate") else { return };
    let p = tmp("bad-system.json");
    std::fs::write(
        &p,
        r#"{"system_prompts": [{"id": "sys", "len": 8}],
            "requests": [{"arrival_s": 0, "system_prompt": "sys", "prompt_len": 4, "output_len": 3},
                         {"arrival_s": 0, "system_prompt": "other", "prompt_len": 4, "output_len": 3}]}"#,
    )
    .expect("write");
    let (ok, _, err) = serve(&c, "gpt2", &["--requests", p.to_str().expect("path")]);
    assert!(!ok);
    assert!(
        err.contains("requests[1]: `system_prompt` `other` is not declared"),
        "{err}"
    );
}

#[test]
fn speculative_serving_generates_the_plain_ids_with_a_draft_model_and_with_prompt_lookup() {
    let Some(c) = corpus("models/llama-tiny-dyn-decode") else {
        return;
    };
    let trace = tmp("speculate.json");
    let reqs: Vec<Value> = (0..6)
        .map(|i| json!({"arrival_ms": i as f64 * 0.01, "prompt_len": 5 + 3 * i, "output_len": 12 + 2 * i}))
        .collect();
    std::fs::write(&trace, json!({ "requests": reqs }).to_string()).unwrap();
    let t = trace.to_str().unwrap();
    let m = |k: &str| {
        c.join(format!("models/llama-tiny-dyn-{k}/model.onnx"))
            .display()
            .to_string()
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let draft = |k: &str| format!("{root}/zoo/drafts/llama-tiny-dyn-1layer-{k}/model.onnx");
    for (args, all_accepted) in [
        (
            vec![
                "--draft-prefill".to_string(),
                m("prefill"),
                "--draft-decode".into(),
                m("decode"),
            ],
            true,
        ),
        (
            vec![
                "--draft-prefill".to_string(),
                draft("prefill"),
                "--draft-decode".into(),
                draft("decode"),
            ],
            false,
        ),
        (vec!["--prompt-lookup".to_string(), "2".into()], false),
    ] {
        let mut all: Vec<&str> = vec![
            "--requests",
            t,
            "--precision",
            "fp32",
            "--speculate",
            "3",
            "--compare",
        ];
        all.extend(args.iter().map(String::as_str));
        let s = serve_json(&c, "llama", &all);
        let sp = &s["speculation"];
        assert_eq!(sp["enabled"], true);
        assert_eq!(s["baseline"]["same_generated_ids"], true, "{args:?}: {sp}");
        let (acc, prop) = (
            sp["accepted"].as_u64().unwrap(),
            sp["proposed"].as_u64().unwrap(),
        );
        assert_eq!(prop, 3 * sp["row_steps"].as_u64().unwrap());
        if all_accepted {
            assert_eq!(acc, prop, "the target as its own draft: {sp}");
            assert!(sp["tokens_per_row_step"].as_f64().unwrap() > 3.0, "{sp}");
        } else {
            assert!(acc < prop, "{args:?}: {sp}");
        }
        let outs: u64 = s["per_request"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["output_len"].as_u64().unwrap())
            .sum();
        assert_eq!(outs, (0..6).map(|i| 12 + 2 * i).sum::<u64>());
    }
    let (ok, _, err) = serve(
        &c,
        "llama",
        &[
            "--requests",
            t,
            "--speculate",
            "3",
            "--timing-only",
            "--prompt-lookup",
            "2",
        ],
    );
    assert!(!ok && err.contains("not with --timing-only"), "{err}");
    let (ok, _, err) = serve(&c, "llama", &["--requests", t, "--speculate", "3"]);
    assert!(!ok && err.contains("--speculate needs a draft"), "{err}");
}

#[test]
fn trace_is_op_spans_by_default_and_instructions_on_request() {
    let Some(c) = corpus("generate") else { return };
    let p = tmp("ops.json");
    std::fs::write(
        &p,
        r#"{"requests": [{"arrival_s": 0, "prompt_len": 4, "output_len": 3},
                          {"arrival_ms": 0.05, "prompt_len": 6, "output_len": 2}]}"#,
    )
    .expect("write");
    let run = |name: &str, extra: &[&str]| -> (u64, Vec<Value>) {
        let out = tmp(name);
        let mut args = vec![
            "--requests",
            p.to_str().expect("path"),
            "--timing-only",
            "--trace",
            out.to_str().expect("path"),
        ];
        args.extend(extra);
        let (ok, text, err) = serve(&c, "gpt2", &args);
        assert!(ok, "{text}{err}");
        let bytes = std::fs::metadata(&out).expect("trace written").len();
        let t: Value =
            serde_json::from_str(&std::fs::read_to_string(&out).expect("trace")).expect("json");
        let unit_events = t["traceEvents"]
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["ph"] == "X" && e["cat"] != "host")
            .cloned()
            .collect();
        (bytes, unit_events)
    };
    let (op_bytes, ops) = run("ops.trace.json", &[]);
    let (inst_bytes, insts) = run("insts.trace.json", &["--trace-instructions"]);
    // Every instruction is in exactly one op span; spans are named by the op's short label.
    let covered: u64 = ops
        .iter()
        .map(|e| e["args"]["instructions"].as_u64().expect("a count"))
        .sum();
    assert_eq!(covered, insts.len() as u64);
    assert!(
        ops.iter()
            .any(|e| e["name"].as_str().is_some_and(|n| n.contains(": "))),
        "op labels as names"
    );
    assert!(insts.iter().all(|e| e["args"]["pc"].is_u64()));
    assert!(
        ops.len() * 4 < insts.len() && op_bytes * 4 < inst_bytes,
        "{} op spans ({op_bytes} B) vs {} instructions ({inst_bytes} B)",
        ops.len(),
        insts.len()
    );
}

#[test]
fn one_optimum_decoder_serves_as_prefill_and_decode_and_reproduces_its_greedy_ids() {
    // Optimum writes a single decoder whose past may be empty: serve-sim runs it as the prefill
    // (past of 0) and as the batched decode step, and a request decoded in a batch keeps the
    // onnxruntime greedy ids.
    let zoo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zoo");
    let (trace, want) = reference_trace_of(
        &zoo.join("generate/llama-tiny-optimum-generate.json"),
        "llama-optimum",
    );
    let model = zoo.join("models/llama-tiny-optimum/model.onnx");
    let m = model.as_os_str();
    let t = trace.to_str().expect("path");
    let (ok, o, e) = serve_models(
        &["--prefill".as_ref(), m, "--decode".as_ref(), m],
        &["--requests", t, "--precision", "fp32", "--json"],
    );
    assert!(ok, "{o}{e}");
    let s: Value = serde_json::from_str(&o).expect("JSON summary");
    assert_eq!(s["per_request"][0]["generated_ids"].as_array(), Some(&want));
    assert!(s["mean_batch"].as_f64().expect("mean") > 1.0, "{s}");
}
