//! Robustness of the parser (stand-in for `cargo fuzz`, which needs nightly): mutated filetests, token
//! soup and arbitrary strings must yield `Ok` or `Err`, never a panic or a hang. Whatever parses must
//! print → parse → print identically, and whatever verifies must survive the standard passes with the
//! verifier on.

use std::path::Path;
use std::time::{Duration, Instant};

use llmpu_compiler::ir::{print_module, verify};
use llmpu_compiler::parser::parse_module;
use llmpu_compiler::pass::{PassManager, PassManagerOptions};
use proptest::prelude::*;

const FRAGMENTS: &[&str] = &[
    "(",
    ")",
    "{",
    "}",
    "<",
    ">",
    "[",
    "]",
    ",",
    ":",
    "=",
    "->",
    "?",
    "%0",
    "%1",
    "%0#1",
    "%arg0",
    "%0:2",
    "^bb0",
    "^bb1",
    "\"graph.add\"",
    "\"graph.matmul\"",
    "\"tile.for\"",
    "\"x.y\"",
    "tensor",
    "memref",
    "4x",
    "?x",
    "0x",
    "f32",
    "bf16",
    "i1",
    "ui8",
    "index",
    "dense",
    "dense_resource",
    "array",
    "i64",
    "loc",
    "unknown",
    "fused",
    "#graph.dims",
    "module",
    "func.func",
    "func.return",
    "return",
    "attributes",
    "@f",
    "0x7F",
    "-1.5e3",
    "1.0",
    "99999999999999999999999999999",
    "18446744073709551616",
    "\"sram\"",
    "\"hbm\"",
    "\"\\0A\"",
    "\"\\",
    "{-#",
    "#-}",
    "dialect_resources",
    "builtin",
    "\"0x08000000\"",
    "true",
    "false",
    "unit",
    "\n",
    " ",
    "//c\n",
];

fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/filetests");
    let mut out = vec![];
    for dir in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.path().extension().is_some_and(|e| e == "mlir") {
                out.push(std::fs::read_to_string(f.path()).unwrap_or_default());
            }
        }
    }
    out.sort();
    assert!(!out.is_empty());
    out
}

/// Parses, and if that works checks the round trip and runs the standard passes.
fn check(text: &str) {
    let start = Instant::now();
    match parse_module(text) {
        Err(e) => {
            let _ = e.diagnostic.render("fuzz.mlir", text);
        }
        Ok(m) => {
            let printed = print_module(&m);
            let m2 = parse_module(&printed).unwrap_or_else(|e| {
                panic!(
                    "printed IR does not reparse: {}\n{printed}",
                    e.diagnostic.message
                )
            });
            assert_eq!(
                print_module(&m2),
                printed,
                "print -> parse -> print differs"
            );
            if verify(&m).is_ok() {
                let mut m = m;
                let opts = PassManagerOptions {
                    verify_each: true,
                    ..Default::default()
                };
                let mut pm = PassManager::parse_pipeline("canonicalize,cse,dce", opts).unwrap();
                if let Err(e) = pm.run(&mut m, &mut std::io::sink()) {
                    panic!("standard passes broke verified IR: {e}\n{printed}");
                }
            } else if let Err(errs) = verify(&m) {
                let _ = llmpu_compiler::diag::render_verify_errors(&errs, "fuzz.mlir", text);
            }
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?} on {} bytes",
        start.elapsed(),
        text.len()
    );
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, &'static str),
    Duplicate(usize, usize, usize),
    Truncate(usize),
    Byte(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..40).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (any::<usize>(), prop::sample::select(FRAGMENTS)).prop_map(|(p, f)| Mutation::Insert(p, f)),
        (any::<usize>(), 1usize..80, any::<usize>())
            .prop_map(|(a, n, b)| Mutation::Duplicate(a, n, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Byte(p, b)),
    ]
}

fn apply(text: &str, muts: &[Mutation]) -> String {
    let mut b = text.as_bytes().to_vec();
    for m in muts {
        let len = b.len().max(1);
        match *m {
            Mutation::Delete(p, n) => {
                let p = p % len;
                let e = (p + n).min(b.len());
                if p < e {
                    b.drain(p..e);
                }
            }
            Mutation::Insert(p, f) => {
                let p = p % (b.len() + 1);
                b.splice(p..p, f.bytes());
            }
            Mutation::Duplicate(a, n, to) => {
                let a = a % len;
                let e = (a + n).min(b.len());
                let chunk: Vec<u8> = b.get(a..e).unwrap_or_default().to_vec();
                let to = to % (b.len() + 1);
                b.splice(to..to, chunk);
            }
            Mutation::Truncate(p) => b.truncate(p % len),
            Mutation::Byte(p, v) => {
                if !b.is_empty() {
                    let p = p % b.len();
                    b[p] = v;
                }
            }
        }
        b.truncate(16 * 1024);
    }
    String::from_utf8_lossy(&b).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(600),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn mutated_filetests_never_panic(seed in any::<prop::sample::Index>(), muts in prop::collection::vec(mutation(), 1..8)) {
        let seeds = seeds();
        let s: &String = seed.get(&seeds);
        let text = apply(s, &muts);
        check(&text);
    }

    #[test]
    fn token_soup_never_panics(frags in prop::collection::vec(prop::sample::select(FRAGMENTS), 0..300)) {
        check(&frags.concat());
    }

    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC{0,400}") {
        check(&s);
    }
}

#[test]
fn deep_nesting_is_rejected_quickly() {
    for open in ["(", "{", "[", "<", "\"x\"() ({"] {
        let text = open.repeat(100_000);
        let t = Instant::now();
        let e = parse_module(&text).unwrap_err();
        assert!(e.diagnostic.message.contains("nesting") || !e.diagnostic.message.is_empty());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}

#[test]
fn large_flat_input_parses_in_bounded_time() {
    let mut text =
        String::from("module {\n  func.func @f(%arg0: tensor<4xf32>) -> tensor<4xf32> {\n");
    let mut prev = "%arg0".to_string();
    for i in 0..20_000 {
        text.push_str(&format!(
            "    %{i} = \"graph.relu\"({prev}) : (tensor<4xf32>) -> tensor<4xf32> loc(\"n{i}\")\n"
        ));
        prev = format!("%{i}");
    }
    text.push_str(&format!(
        "    func.return {prev} : tensor<4xf32> loc(unknown)\n  }} loc(\"f\")\n}}\n"
    ));
    let t = Instant::now();
    let m = parse_module(&text).unwrap();
    verify(&m).unwrap();
    assert_eq!(print_module(&m), text);
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
}
