//! One spelling per op name: outside `compiler/src/dialects/graph.rs`, Rust sources name a
//! `graph` op through its definition (`graph::Softmax::NAME`, `graph::Softmax::view`), never as a
//! string literal.
//!
//! The rule this test enforces over `compiler/src`, `src` and `runtime/src`: an ordinary string
//! literal (`"..."`, `b"..."`) whose text starts with `graph.` is an op-name spelling (or builds one,
//! `"graph.{name}"`, or tests for the dialect, which `graph::PREFIX` does) and fails the test with
//! `file:line`. Comments (doc comments included) and raw strings (`r"..."`, `r#"..."#`, where tests
//! keep IR text) are not scanned. Test suites under `tests/` hold IR text and are not scanned.

use std::path::{Path, PathBuf};

/// Ordinary string literals of `src` as `(line, text)`; comments, raw strings and char literals
/// are skipped.
fn string_literals(src: &str) -> Vec<(usize, String)> {
    let b = src.as_bytes();
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        match b[i] {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
                line += src[i..end].matches('\n').count();
                i = end;
            }
            b'r' | b'b' if (i == 0 || !ident(b[i - 1])) && raw_string_open(&b[i..]).is_some() => {
                let (open, hashes) = raw_string_open(&b[i..]).unwrap();
                let close = format!("\"{}", "#".repeat(hashes));
                let start = i + open;
                let end = src[start..]
                    .find(&close)
                    .map_or(b.len(), |e| start + e + close.len());
                line += src[i..end].matches('\n').count();
                i = end;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): skip the literal whole.
                let rest = &src[i + 1..];
                let len = if rest.starts_with('\\') {
                    rest.find('\'').map_or(1, |e| e + 2)
                } else {
                    match rest.chars().next() {
                        Some(c) if rest[c.len_utf8()..].starts_with('\'') => c.len_utf8() + 2,
                        _ => 1,
                    }
                };
                i += len;
            }
            b'"' => {
                let (start, start_line) = (i + 1, line);
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\n' {
                        line += 1;
                    }
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                out.push((start_line, src[start..i.min(b.len())].to_string()));
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

/// `r"`, `r#"`, `br"`, ... at the start of `b`: (length of the opening, number of `#`).
fn raw_string_open(b: &[u8]) -> Option<(usize, usize)> {
    let mut i = usize::from(b.first() == Some(&b'b'));
    if b.get(i) != Some(&b'r') {
        return None;
    }
    i += 1;
    let hashes = b[i..].iter().take_while(|&&c| c == b'#').count();
    (b.get(i + hashes) == Some(&b'"')).then_some((i + hashes + 1, hashes))
}

fn is_op_name_spelling(text: &str) -> bool {
    text.starts_with("graph.")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn graph_op_names_are_spelled_only_in_their_definitions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    for dir in ["compiler/src", "src", "runtime/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    assert!(
        files.len() > 20,
        "found only {} source files under {}",
        files.len(),
        root.display()
    );
    let definition = root.join("compiler/src/dialects/graph.rs");
    let mut found = Vec::new();
    for f in files.iter().filter(|f| **f != definition) {
        let src = std::fs::read_to_string(f).unwrap();
        for (line, text) in string_literals(&src) {
            if is_op_name_spelling(&text) {
                found.push(format!(
                    "{}:{line}: \"{text}\"",
                    f.strip_prefix(root).unwrap().display()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "graph op names spelled as string literals outside compiler/src/dialects/graph.rs \
         (use graph::<Op>::NAME):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_scanner_sees_literals_and_skips_comments_and_raw_strings() {
    let src = "// \"graph.add\"\n/// \"graph.sub\"\nlet a = r#\"\"graph.mul\"\"#;\nlet c = '\"';\nlet b = \"graph.div\";\nfn f<'a>(x: &'a str) { g(\"graph.\") }\n";
    let lits = string_literals(src);
    assert_eq!(
        lits,
        [(5, "graph.div".to_string()), (6, "graph.".to_string())]
    );
    assert!(is_op_name_spelling("graph.div"));
    assert!(is_op_name_spelling("graph."));
    assert!(is_op_name_spelling("graph.{name}"));
    assert!(!is_op_name_spelling("tile.vector"));
    assert!(!is_op_name_spelling("a graph.add"));
}
