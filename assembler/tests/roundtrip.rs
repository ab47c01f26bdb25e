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

#[test]
fn every_directive_round_trips_byte_identically() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/all_directives.s");
    let src = std::fs::read_to_string(&path).unwrap();
    assert_round_trip(&src, &path);
    let p = assemble(&src, &path).unwrap();
    let w = &p.data[0].bytes;
    assert_eq!(&w[..4], &[0x00, 0xff, 0x10, 0x20]);
    assert_eq!(&w[4..8], &1.0f32.to_le_bytes());
    assert_eq!(
        &w[24..28],
        &0x7fc0_0001u32.to_le_bytes(),
        "nan payload kept"
    );
    assert_eq!(&w[w.len() - 5..], &[1, 2, 3, 4, 5], "incbin appended");
    assert!(
        w.windows(8).any(|c| c == 0.1f64.to_le_bytes()),
        "`.f64` keeps the literal's full f64 precision"
    );
    assert!(
        w.windows(8).any(|c| c == u64::MAX.to_le_bytes()),
        "`.u64` takes the whole unsigned range"
    );
    assert!(p.data[1].bytes.is_empty());
    assert_eq!(p.io[1].name, "y/out:0");
    assert_eq!(p.labels.iter().filter(|l| l.name == "end").count(), 1);
    assert_eq!(p.loc_of(0, 5), Some("node_a"));
    assert_eq!(p.loc_of(0, 6), Some("node \"b\"\n"));
}

#[test]
fn a_non_preset_target_round_trips_through_target_toml() {
    let mut t = llmpu_isa::Target::default_target();
    t.name = "custom \"one\"".into();
    t.clock_ghz = 1.234567;
    t.cores = 3;
    let mut a = llmpu_asm::Assembler::new(t);
    a.core(1).core(2).inst(llmpu_isa::Inst::Halt {});
    let p = a.finish().unwrap();
    let text = disassemble(&p);
    assert!(text.contains(".target_toml"), "{text}");
    let q = assemble(&text, Path::new("x.s")).unwrap();
    assert_eq!(binary::write(&q).unwrap(), binary::write(&p).unwrap());
}

#[test]
fn the_command_line_target_overrides_the_source() {
    let dc = llmpu_isa::Target::preset("datacenter").unwrap();
    let opts = llmpu_asm::Options {
        target: Some(dc.clone()),
    };
    let p = llmpu_asm::assemble_with(".target edge\nhalt\n", Path::new("x.s"), &opts).unwrap();
    assert_eq!(p.target, dc);
}
