//! The committed `spec/isa.md` and `spec/targets.md` must equal what the tables generate.
//! `LLMPU_BLESS=1` rewrites them on purpose.

use std::path::PathBuf;

fn check(file: &str, generated: String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../spec")
        .join(file);
    if std::env::var_os("LLMPU_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write spec");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "spec/{file} is out of date with the tables; re-bless with \
         `LLMPU_BLESS=1 cargo test -p llmpu-isa --test spec_up_to_date` and commit it"
    );
}

#[test]
fn isa_md_matches_the_instruction_table() {
    check("isa.md", llmpu_isa::spec::isa_markdown());
}

#[test]
fn targets_md_matches_the_schema_and_presets() {
    check("targets.md", llmpu_isa::spec::targets_markdown());
}
