//! Golden diagnostics: each `tests/diagnostics/*.s` is assembled and the rendered errors must
//! equal the `.expected` file beside it. `LLMPU_BLESS=1` rewrites the expected files on purpose.

use std::path::Path;

#[test]
fn rendered_diagnostics_match_the_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/diagnostics");
    let bless = std::env::var("LLMPU_BLESS").is_ok_and(|v| v == "1");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "s"))
        .collect();
    entries.sort();
    assert!(entries.len() >= 4);
    let mut failures = Vec::new();
    for path in entries {
        let src = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        // Diagnostics name the file relative to the test directory, so the text is portable.
        let shown = Path::new("tests/diagnostics").join(name);
        let got = match llmpu_asm::assemble_with(&src, &shown, &Default::default()) {
            Ok(_) => "assembled without errors\n".to_string(),
            Err(d) => format!("{d}\n"),
        };
        let expected_path = path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "--- {name}: got ---\n{got}--- expected ---\n{want}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(run with LLMPU_BLESS=1 to accept)",
        failures.join("\n")
    );
}

/// `.incbin` reads only a regular file of at most the target's HBM size: an endless device is
/// refused at once and a file larger than HBM is a located error, not an out-of-memory abort.
#[cfg(unix)]
#[test]
fn incbin_of_an_endless_file_is_bounded_by_hbm_size() {
    let text = llmpu_isa::target::preset_text("edge")
        .unwrap()
        .replace("size_bytes = 4294967296", "size_bytes = 1048576");
    assert!(text.contains("size_bytes = 1048576"));
    let dir = std::env::temp_dir().join(format!("llmpu-incbin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let big = dir.join("big.bin");
    std::fs::write(&big, vec![0u8; 1048577]).unwrap();
    for (file, want) in [
        ("/dev/zero", "not a regular file (a character device)"),
        (big.to_str().unwrap(), "larger than the HBM"),
    ] {
        let src = format!(
            ".target_toml {:?}\n.data w @ 0x0\n.incbin {file:?}\n.core 0\n    halt\n",
            text
        );
        let err = llmpu_asm::assemble(&src, std::path::Path::new("t.s"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.s:3:9") && err.contains(want), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
