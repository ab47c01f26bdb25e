//! Round trips: assembly → program → disassembly → program gives byte-identical binaries.

use llmpu_asm::{assemble, disassemble};
use llmpu_isa::binary;
use std::path::{Path, PathBuf};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/asm")
}

fn assert_round_trip(src: &str, path: &Path) {
    let p = assemble(src, path).unwrap_or_else(|d| panic!("{d}"));
    let bin = binary::write(&p).unwrap();
    let text = disassemble(&p);
    let q = assemble(&text, path).unwrap_or_else(|d| panic!("{d}\n--- text ---\n{text}"));
    assert_eq!(binary::write(&q).unwrap(), bin, "{text}");
    assert_eq!(disassemble(&q), text, "disassembly is a fixed point");
}

#[test]
fn every_example_round_trips_byte_identically() {
    let mut n = 0;
    for e in std::fs::read_dir(examples_dir()).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "s") {
            let src = std::fs::read_to_string(&path).unwrap();
            assert_round_trip(&src, &path);
            n += 1;
        }
    }
    assert!(n >= 4, "found {n} examples");
}
