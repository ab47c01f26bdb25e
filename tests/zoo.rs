//! The model zoo (`zoo/`, written by `zoo/gen_zoo.py` from Hugging Face exports with
//! onnxruntime references). Every model runs through `llmpu check` on both presets in both
//! precisions, every `generate/*.json` through `llmpu generate` (fp32, both presets, token for
//! token), and the whole folder through `llmpu conformance --backend interpreter`.
//!
//! A run must pass unless `zoo/expected.json` lists it as a known failure; a listed run must still
//! fail, and its output must contain the listed error text. So a model the toolchain cannot yet
//! compile, or computes wrongly, is neither skipped nor silently passed, and whoever fixes it must
//! update the manifest (a listed run that passes fails this test). Every entry must match at
//! least one run, so stale entries fail too.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn zoo(sub: &str) -> Vec<PathBuf> {
    let dir = root().join("zoo").join(sub);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "{} is empty", dir.display());
    v
}

/// One known failure of `zoo/expected.json`.
struct Expected {
    model: String,
    command: String,
    targets: Vec<String>,
    precisions: Vec<String>,
    error: String,
}

fn strings(v: &serde_json::Value, key: &str) -> Vec<String> {
    match &v[key] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().expect("string").to_string())
            .collect(),
        other => panic!("zoo/expected.json: `{key}` is {other}"),
    }
}

fn manifest() -> Vec<Expected> {
    let path = root().join("zoo/expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).expect("zoo/expected.json parses");
    v["failures"]
        .as_array()
        .expect("`failures` array")
        .iter()
        .map(|f| {
            let field = |k: &str| {
                f[k].as_str()
                    .unwrap_or_else(|| panic!("zoo/expected.json: entry without `{k}`: {f}"))
                    .to_string()
            };
            assert!(
                f["issue"].is_u64() && f["cause"].is_string(),
                "zoo/expected.json: every entry names its `cause` and `issue`: {f}"
            );
            Expected {
                model: field("model"),
                command: field("command"),
                targets: strings(f, "targets"),
                precisions: strings(f, "precisions"),
                error: field("error"),
            }
        })
        .collect()
}

fn lookup<'a>(
    m: &'a [Expected],
    used: &mut [bool],
    model: &str,
    command: &str,
    target: &str,
    precision: &str,
) -> Option<&'a Expected> {
    let any = |v: &[String], x: &str| v.iter().any(|s| s == "*" || s == x);
    let i = m.iter().position(|e| {
        e.model == model
            && e.command == command
            && any(&e.targets, target)
            && any(&e.precisions, precision)
    })?;
    used[i] = true;
    Some(&m[i])
}

/// Runs `llmpu args…`: (success, stdout + stderr).
fn llmpu(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_llmpu"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run llmpu");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

/// Holds one run to its manifest entry (or to passing): the problem, if any.
fn judge(what: &str, passed: bool, out: &str, expected: Option<&Expected>) -> Option<String> {
    match (expected, passed) {
        (None, true) => None,
        (None, false) => Some(format!(
            "{what}: fails but is not in zoo/expected.json\n{out}"
        )),
        (Some(e), true) => Some(format!(
            "{what}: passes now but zoo/expected.json expects `{}`: remove the entry",
            e.error
        )),
        (Some(e), false) if out.contains(&e.error) => None,
        (Some(e), false) => Some(format!(
            "{what}: fails differently from zoo/expected.json (expected `{}`)\n{out}",
            e.error
        )),
    }
}

fn report(problems: Vec<String>, runs: usize) {
    assert!(
        problems.is_empty(),
        "{} of {runs} runs disagree with zoo/expected.json:\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}

fn stale(m: &[Expected], used: &[bool], command: &str) -> Vec<String> {
    m.iter()
        .zip(used)
        .filter(|(e, u)| e.command == command && !**u)
        .map(|(e, _)| {
            format!(
                "zoo/expected.json: entry {} {} matches no run (stale?)",
                e.model, e.command
            )
        })
        .collect()
}

/// The bf16 `--tolerance` of a zoo model, when its own framework needs more than the default:
/// a quarter above the largest error PyTorch itself makes in bf16 on the model's data sets
/// (`meta.json`: `checks.*.torch_bf16_vs_fp32.max_abs_over_range`, the measure `check` prints as
/// max|diff|/max|ref|). `None` when that stays within the default 2e-2.
fn bf16_tolerance(case: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(case.join("meta.json")).ok()?;
    let meta: serde_json::Value = serde_json::from_str(&text).ok()?;
    let worst = meta["checks"]
        .as_object()?
        .values()
        .filter_map(|c| c["torch_bf16_vs_fp32"]["max_abs_over_range"].as_f64())
        .fold(0f64, f64::max);
    let t = 1.25 * worst;
    (t > 2e-2).then(|| format!("{t:.4}"))
}

#[test]
fn zoo_models_pass_check_on_both_presets_and_precisions_or_fail_as_the_manifest_says() {
    let m = manifest();
    let mut used = vec![false; m.len()];
    let mut problems = vec![];
    let mut runs = 0;
    for case in zoo("models") {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        for target in ["edge", "datacenter"] {
            for precision in ["fp32", "bf16"] {
                runs += 1;
                let mut args: Vec<&std::ffi::OsStr> = vec![
                    "check".as_ref(),
                    case.as_os_str(),
                    "--target".as_ref(),
                    target.as_ref(),
                    "--precision".as_ref(),
                    precision.as_ref(),
                    "--no-report".as_ref(),
                ];
                let tol = (precision == "bf16")
                    .then(|| bf16_tolerance(&case))
                    .flatten();
                if let Some(t) = &tol {
                    args.extend(["--tolerance", t.as_str()].map(std::ffi::OsStr::new));
                }
                let (ok, out) = llmpu(&args);
                let sets = out.matches("-- test_data_set_").count();
                let passed = ok && sets >= 2 && !out.contains("FAIL");
                let e = lookup(&m, &mut used, &name, "check", target, precision);
                let what = format!(
                    "check {name} --target {target} --precision {precision}{}",
                    tol.map(|t| format!(" --tolerance {t}")).unwrap_or_default()
                );
                problems.extend(judge(&what, passed, &out, e));
            }
        }
    }
    problems.extend(stale(&m, &used, "check"));
    report(problems, runs);
}

#[test]
fn zoo_generate_reproduces_the_greedy_reference_ids_in_fp32_or_fails_as_the_manifest_says() {
    let m = manifest();
    let mut used = vec![false; m.len()];
    let mut problems = vec![];
    let mut runs = 0;
    for reference in zoo("generate") {
        let name = reference
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&reference).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let model = |k: &str| {
            let p = v["onnx_models_used"][k]["path"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: no onnx_models_used.{k}.path"));
            root().join("zoo/models").join(p)
        };
        for target in ["edge", "datacenter"] {
            runs += 1;
            let (ok, out) = llmpu(&[
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
            let passed = ok && out.contains("reference ids match  24/24 (100.0%)");
            let e = lookup(&m, &mut used, &name, "generate", target, "fp32");
            let what = format!("generate {name} --target {target} --precision fp32");
            problems.extend(judge(&what, passed, &out, e));
        }
    }
    problems.extend(stale(&m, &used, "generate"));
    report(problems, runs);
}

/// Import + reference interpreter against the onnxruntime outputs, for every model (the
/// interpreter is the oracle the backend is held to): each case's line must say `ok` unless the
/// manifest lists it under `conformance`.
#[test]
fn zoo_models_pass_conformance_on_the_interpreter_or_fail_as_the_manifest_says() {
    let m = manifest();
    let mut used = vec![false; m.len()];
    let mut problems = vec![];
    let dir = root().join("zoo/models");
    let (_, out) = llmpu(&[
        "conformance".as_ref(),
        "--backend".as_ref(),
        "interpreter".as_ref(),
        dir.as_os_str(),
    ]);
    let cases = zoo("models");
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let line = out
            .lines()
            .find(|l| l.split_whitespace().nth(1).map(|w| w.trim_end_matches(':')) == Some(&name))
            .unwrap_or_default();
        let passed = line.starts_with("ok ");
        let e = lookup(&m, &mut used, &name, "conformance", "interpreter", "fp32");
        problems.extend(judge(&format!("conformance {name}"), passed, line, e));
    }
    problems.extend(stale(&m, &used, "conformance"));
    report(problems, cases.len());
}
