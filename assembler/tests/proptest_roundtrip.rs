//! Property: for random valid instruction streams (every opcode of the table, random in-range
//! field values, branch targets inside the stream, random labels and debug locations),
//! encode → decode → disassemble → assemble → encode reproduces the same binary bytes.

use llmpu_asm::{assemble, disassemble};
use llmpu_isa::fields::{Field, TileRef, mask};
use llmpu_isa::{
    DType, DebugLoc, FieldKind, INSTRUCTIONS, Inst, Label, Program, Reg, Target, binary,
};
use proptest::prelude::*;
use std::path::Path;

/// Raw bits for one field; `seed` picks the value, `dest` the branch destination.
fn field_bits(kind: FieldKind, width: u32, seed: u64, pc: usize, dest: usize) -> u64 {
    match kind {
        FieldKind::Reg | FieldKind::Sem => seed % 32,
        FieldKind::Uimm | FieldKind::Simm => seed & mask(width),
        FieldKind::F32 => seed & 0xffff_ffff,
        FieldKind::Target => ((dest as i64 - pc as i64) as u64) & mask(width),
        FieldKind::Enum(_, names) => seed % names.len() as u64,
        FieldKind::TileRef => {
            let codes = (DType::ALL.len() + TileRef::ACC_TYPES.len()) as u64;
            let (space, dtype) = TileRef::from_type_code(seed % codes).expect("a valid code");
            let t = TileRef {
                space,
                dtype,
                addr: Reg(((seed >> 4) % 32) as u8),
                ld: Reg(((seed >> 9) % 32) as u8),
            };
            t.to_bits(width).expect("valid tile")
        }
    }
}

fn program_strategy() -> impl Strategy<Value = Program> {
    let inst = (
        0..INSTRUCTIONS.len(),
        prop::collection::vec(any::<u64>(), 16),
        any::<u16>(),
    );
    let stream = prop::collection::vec(inst, 1..24);
    let cores = prop::collection::vec(stream, 1..3);
    let extras = prop::collection::vec((any::<u16>(), any::<bool>(), 0..4u8), 0..8);
    (cores, extras).prop_map(|(cores, extras)| {
        let mut t = Target::default_target();
        t.cores = 2;
        let mut p = Program::new(t, cores.len());
        for (ci, stream) in cores.iter().enumerate() {
            let len = stream.len();
            for (pc, (op, seeds, dest)) in stream.iter().enumerate() {
                let d = INSTRUCTIONS[*op];
                let raw: Vec<u64> = d
                    .fields
                    .iter()
                    .zip(seeds)
                    .map(|(f, &s)| field_bits(f.kind, f.width, s, pc, *dest as usize % len))
                    .collect();
                p.cores[ci].push(Inst::from_raw(d.opcode, &raw).expect("valid fields"));
            }
        }
        for (k, (pos, is_label, kind)) in extras.iter().enumerate() {
            let core = (*pos as usize) % p.cores.len();
            let pc = (*pos as usize / 2) % (p.cores[core].len() + 1);
            if *is_label {
                let name = match kind {
                    0 => format!("l{k}"),
                    1 => format!("odd name {k}"),
                    2 => format!("r{k}"),
                    _ => format!("q\"{k}\\"),
                };
                p.labels.push(Label {
                    core: core as u32,
                    pc: pc as u32,
                    name,
                });
            } else if pc < p.cores[core].len()
                && !p
                    .debug
                    .iter()
                    .any(|d| d.core == core as u32 && d.pc == pc as u32)
            {
                p.debug.push(DebugLoc {
                    core: core as u32,
                    pc: pc as u32,
                    loc: format!("node/{k}\t\"x\""),
                });
            }
        }
        p.debug.sort_by_key(|d| (d.core, d.pc));
        p
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_decode_print_parse_encode_is_byte_identical(p in program_strategy()) {
        let bytes = binary::write(&p).expect("valid program");
        let decoded = binary::read(&bytes).expect("reads back");
        let text = disassemble(&decoded);
        let q = assemble(&text, Path::new("prop.s"))
            .unwrap_or_else(|d| panic!("{d}\n--- text ---\n{text}"));
        let again = binary::write(&q).expect("valid program");
        prop_assert!(again == bytes, "binaries differ for\n{}", text);
    }
}
