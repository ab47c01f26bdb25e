//! `llmpu generate --speculate`: speculative decoding gives exactly the ids of plain greedy
//! decoding (the oracle every run checks itself against), with the target itself as its draft
//! (every proposal accepted), the committed 1-layer early-exit drafts (`zoo/drafts`), prompt
//! lookup, and on a target's draft unit. Needs the corpus (`LLMPU_CORPUS`).

use std::path::Path;
use std::process::Command;

mod common;
use common::corpus;

fn model(c: &Path, arch: &str, kind: &str) -> String {
    c.join(format!("models/{arch}-tiny-dyn-{kind}/model.onnx"))
        .display()
        .to_string()
}

fn draft(arch: &str, kind: &str) -> String {
    format!("zoo/drafts/{arch}-tiny-dyn-1layer-{kind}/model.onnx")
}

/// `llmpu generate` on the corpus prompt of `arch` with `extra` arguments: (success, stdout,
/// stderr).
fn generate(c: &Path, arch: &str, extra: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["generate", "--prefill", &model(c, arch, "prefill")])
        .args(["--decode", &model(c, arch, "decode")])
        .arg("--prompt")
        .arg(c.join(format!("generate/{arch}-tiny-generate.json")))
        .args(extra)
        .output()
        .expect("run llmpu");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn reference_ids(c: &Path, arch: &str) -> String {
    let text =
        std::fs::read_to_string(c.join(format!("generate/{arch}-tiny-generate.json"))).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["generated_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn line<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line `{start}` in:\n{text}"))
}

#[test]
fn the_target_as_its_own_draft_accepts_every_proposal_and_gives_the_plain_ids() {
    let Some(c) = corpus("generate") else {
        return;
    };
    for arch in ["gpt2", "llama"] {
        let (ok, out, err) = generate(
            &c,
            arch,
            &[
                "--precision",
                "fp32",
                "--speculate",
                "4",
                "--draft-prefill",
                &model(&c, arch, "prefill"),
                "--draft-decode",
                &model(&c, arch, "decode"),
            ],
        );
        assert!(ok, "{arch}: {out}{err}");
        assert_eq!(
            line(&out, "generated 24 tokens: "),
            format!("generated 24 tokens: {}", reference_ids(&c, arch))
        );
        // 23 tokens after the prefill's: four rounds of 4 proposals + 1, then 2 + 1 (a round
        // drafts no more than the tokens still wanted).
        assert_eq!(
            line(&out, "acceptance rate"),
            "acceptance rate       100.0% (18 of 18 proposals)",
            "{arch}"
        );
        assert!(line(&out, "tokens per target step").contains("4.60 (23 tokens in 5"));
        assert_eq!(
            line(&out, "plain greedy ids"),
            "plain greedy ids      identical (24 of 24)"
        );
        assert_eq!(
            line(&out, "reference ids match"),
            "reference ids match  24/24 (100.0%)"
        );
    }
}

#[test]
fn a_one_layer_draft_gives_the_plain_ids_time_sliced_and_on_a_draft_unit() {
    let Some(c) = corpus("generate") else {
        return;
    };
    // Exact acceptance counts (deterministic on the emulator, fp32): the early-exit drafts of
    // these random-weight models agree with the full models rarely.
    for (arch, accepted) in [("gpt2", "3 of 70"), ("llama", "2 of 74")] {
        for target in ["edge", "examples/targets/datacenter-draft.toml"] {
            let (ok, out, err) = generate(
                &c,
                arch,
                &[
                    "--target",
                    target,
                    "--precision",
                    "fp32",
                    "--speculate",
                    "4",
                    "--draft-prefill",
                    &draft(arch, "prefill"),
                    "--draft-decode",
                    &draft(arch, "decode"),
                ],
            );
            assert!(ok, "{arch} on {target}: {out}{err}");
            assert!(
                line(&out, "acceptance rate").ends_with(&format!("({accepted} proposals)")),
                "{arch} on {target}:\n{out}"
            );
            assert_eq!(
                line(&out, "generated 24 tokens: "),
                format!("generated 24 tokens: {}", reference_ids(&c, arch))
            );
            let placement = line(&out, "speculative decoding:");
            assert_eq!(
                placement.contains("on the draft unit (2 of 8 cores, 25% of the HBM bandwidth)"),
                target != "edge",
                "{placement}"
            );
            assert!(line(&out, "time per output token").contains("(speed-up "));
        }
    }
}

#[test]
fn bf16_speculation_and_prompt_lookup_keep_the_plain_ids() {
    let Some(c) = corpus("generate") else {
        return;
    };
    let (ok, out, err) = generate(
        &c,
        "llama",
        &[
            "--target",
            "datacenter",
            "--speculate",
            "3",
            "--prompt-lookup",
            "2",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(line(&out, "speculative decoding:").contains("draft: prompt-lookup, time-sliced"));
    assert!(line(&out, "plain greedy ids").contains("identical (24 of 24)"));
    let (ok, out, err) = generate(
        &c,
        "gpt2",
        &[
            "--speculate",
            "2",
            "--draft-prefill",
            &draft("gpt2", "prefill"),
            "--draft-decode",
            &draft("gpt2", "decode"),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(line(&out, "plain greedy ids").contains("identical (24 of 24)"));
}

#[test]
fn a_draft_unit_run_traces_both_units_and_drafts_ahead() {
    let Some(c) = corpus("generate") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("llmpu-spec-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("t.json");
    let (ok, out, err) = generate(
        &c,
        "gpt2",
        &[
            "--target",
            "examples/targets/datacenter-draft.toml",
            "--precision",
            "fp32",
            "--speculate",
            "4",
            "--draft-prefill",
            &model(&c, "gpt2", "prefill"),
            "--draft-decode",
            &model(&c, "gpt2", "decode"),
            "--trace",
            trace.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    let t = std::fs::read_to_string(&trace).unwrap();
    for name in [
        "verify 1 (context 9)",
        "draft prefill",
        "draft step",
        "draft ahead",
    ] {
        assert!(t.contains(name), "the trace lacks `{name}`");
    }
    // Draft-unit runs sit on cores 6 and 7, after the target's six.
    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
    let pids: std::collections::BTreeSet<u64> = v["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] != "host")
        .filter_map(|e| e["pid"].as_u64())
        .collect();
    assert!(pids.contains(&6) && pids.contains(&7), "{pids:?}");
    // The self-draft guesses every bonus token, so later rounds start with proposals made
    // while the previous round was verified.
    let carried: usize = out
        .lines()
        .skip_while(|l| !l.starts_with("round"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            l.split_whitespace()
                .nth(4)
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert!(carried > 0, "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn speculation_errors_name_what_is_missing() {
    let Some(c) = corpus("generate") else {
        return;
    };
    for (args, want) in [
        (vec!["--speculate", "4"], "--speculate needs a draft"),
        (
            vec!["--speculate", "0", "--prompt-lookup", "2"],
            "--speculate 0",
        ),
        (
            vec![
                "--speculate",
                "2",
                "--prompt-lookup",
                "2",
                "--draft-placement",
                "draft-unit",
            ],
            "declares no [draft_unit]",
        ),
        (
            vec!["--speculate", "2", "--prompt-lookup", "2", "--verify"],
            "drop one of them",
        ),
        (
            vec![
                "--speculate",
                "2",
                "--prompt-lookup",
                "2",
                "--new-tokens",
                "1",
            ],
            "nothing to speculate on",
        ),
    ] {
        let (ok, out, err) = generate(&c, "gpt2", &args);
        assert!(!ok, "{args:?}: {out}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // A prefill graph given as the draft's decode graph is named as such.
    let prefill = model(&c, "gpt2", "prefill");
    let (ok, _, err) = generate(
        &c,
        "gpt2",
        &[
            "--speculate",
            "2",
            "--draft-prefill",
            &prefill,
            "--draft-decode",
            &prefill,
        ],
    );
    assert!(
        !ok && err.contains("--draft-decode") && err.contains("no paged KV region"),
        "{err}"
    );
}
