//! Generators for the reference documents derived from the tables: `spec/isa.md` from the
//! instruction table and `spec/targets.md` from the target schema and presets.
//!
//! The committed files must equal these generators' output; `isa/tests/spec_up_to_date.rs` fails
//! otherwise (re-bless with `LLMPU_BLESS=1`).

use crate::fields::{AccMode, Bcast, DType, FieldKind, Layout, Space, TileRef};
use crate::inst::{CostClass, INST_BYTES, INSTRUCTIONS, Unit};
use crate::target::{FIELD_DOCS, OPTIONAL_FIELD_DOCS, OPTIONAL_KEY_DOCS, Target, preset_names};
use std::fmt::Write;

fn cost_formula(c: CostClass) -> &'static str {
    match c {
        CostClass::Scalar => "`latency.scalar`",
        CostClass::Branch => "`latency.branch`",
        CostClass::ScalarMem => "`latency.scalar_mem`",
        CostClass::DmaCopy | CostClass::DmaIndexed => {
            "`dma_setup + ⌈hbm_bytes / (bytes_per_cycle · hbm.efficiency)⌉` busy, `+ hbm.latency_cycles` to completion"
        }
        CostClass::Matmul => {
            "by `matrix.dataflow`: `ws-double` (default) `⌈k/R⌉·⌈n/C⌉·max(m, R)` busy, `+ R + C` \
             to completion; `ws` `⌈k/R⌉·⌈n/C⌉·(m + 2R + C − 2)`, `os` `⌈m/R⌉·⌈n/C⌉·(k + R + C − 2)`, \
             `is` `⌈k/R⌉·⌈m/C⌉·(n + 2R + C − 2)` busy, complete when free (× `fp32_slowdown` for f32 and f64)"
        }
        CostClass::VecSimple => "`⌈rows·cols/L⌉·vpu_simple` busy, `+ vpu_pipeline`",
        CostClass::VecSpecial => "`⌈rows·cols/L⌉·vpu_special` busy, `+ vpu_pipeline`",
        CostClass::VecReduce => "`rows·⌈cols/L⌉·vpu_simple` busy, `+ vpu_pipeline + ⌈log2 L⌉`",
        CostClass::Sync => "`latency.sync` once satisfied",
        CostClass::Barrier => "`latency.barrier` after the last core arrives",
        CostClass::Halt => "`latency.sync` after the queues drain",
    }
}

fn unit_title(u: Unit) -> &'static str {
    match u {
        Unit::Scalar => "Scalar unit (control, registers, dispatch, synchronization)",
        Unit::Dma => "DMA engine",
        Unit::Mxu => "Matrix engine",
        Unit::Vpu => "Vector unit",
    }
}

fn enum_line(out: &mut String, name: &str, names: &[&str]) {
    let vals: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("`{n}`={i}"))
        .collect();
    let _ = writeln!(out, "| `{name}` | {} |", vals.join(", "));
}

/// The text of `spec/isa.md`.
pub fn isa_markdown() -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# LLMPU v0 instruction set\n\n\
         <!-- Generated from isa/src/inst.rs by isa::spec::isa_markdown; do not edit. \
         Re-bless: LLMPU_BLESS=1 cargo test -p llmpu-isa --test spec_up_to_date -->\n"
    );
    let _ = writeln!(
        o,
        "Every instruction is {INST_BYTES} bytes ({} bits), stored little-endian. Bits 0–7 hold the \
         opcode; operand fields follow from bit 8 in the order listed, with no gaps; every bit above \
         the last field is reserved and must be zero (the loader rejects anything else). Opcode `0x00` \
         is never assigned. A program holds one instruction stream per core.\n",
        INST_BYTES * 8
    );
    o.push_str(
        "Each core has a scalar unit that walks the stream in order, executes scalar instructions \
         and dispatches the others into the in-order queue of their unit (DMA, matrix, vector). \
         Register operands are read at dispatch. Units run in parallel and synchronize through the \
         core's 32 semaphores (`X.signal`, `X.wait`); `barrier` synchronizes cores. Timing rules \
         are in `cost-model.md`.\n\n",
    );
    o.push_str("## Operand kinds\n\n| kind | assembly | meaning |\n|---|---|---|\n");
    o.push_str("| `reg` | `r0`…`r31` | scalar register (64-bit); `r0` reads 0 |\n");
    o.push_str("| `sem` | `s0`…`s31` | semaphore of the issuing core |\n");
    o.push_str("| `uimm` | `42`, `0x2a` | unsigned immediate |\n");
    o.push_str("| `simm` | `-7` | signed immediate (two's complement) |\n");
    o.push_str("| `f32` | `1.5`, `-inf`, `nan` | IEEE binary32 immediate |\n");
    o.push_str(
        "| `target` | `loop`, `.+3` | branch target, signed instruction offset from the branch |\n",
    );
    let _ = writeln!(
        o,
        "| `tile` | `sram.bf16[r3, r4]` | 14 bits, LSB first: address register (5), row-stride register in \
         elements (5), type code (4): `0`–`{}` the scratchpad (`sram`) holding the `dtype` of that \
         index, {} the accumulator (`acc`) holding {}; other codes are reserved (a separate space \
         bit would not fit: `vpu.expsum` fills its word) |",
        DType::ALL.len() - 1,
        TileRef::ACC_TYPES
            .iter()
            .enumerate()
            .map(|(i, _)| format!("`{}`", DType::ALL.len() + i))
            .collect::<Vec<_>>()
            .join(" and "),
        TileRef::ACC_TYPES
            .iter()
            .map(|d| format!("`{d}`"))
            .collect::<Vec<_>>()
            .join(" and "),
    );
    o.push_str("\nEnumerated fields hold the index of the name:\n\n| kind | values |\n|---|---|\n");
    enum_line(&mut o, "dtype", DType::NAMES);
    enum_line(&mut o, "space", Space::NAMES);
    enum_line(&mut o, "accmode", AccMode::NAMES);
    enum_line(&mut o, "layout", Layout::NAMES);
    enum_line(&mut o, "bcast", Bcast::NAMES);
    o.push_str("\nElement sizes: ");
    let sizes: Vec<String> = DType::ALL
        .iter()
        .map(|d| format!("`{d}` {} B", d.size()))
        .collect();
    o.push_str(&sizes.join(", "));
    o.push_str(
        ".\n\n## Numerics\n\n\
         Every element type is a storage type. The vector unit loads each operand widened to f32, \
         computes in f32 and rounds the result to the destination's type on store \
         (`isa::numerics`): to a narrower float by round to nearest, ties to even (`f8e4m3` \
         saturates to ±448 and keeps NaN); to an integer by round to nearest, ties to even, \
         saturating to the type's range, NaN giving 0 — a store never truncates, so a truncating \
         conversion is `vpu.trunc` then the store. Two consequences: `f64` is demoted (a load \
         rounds it to the nearest f32, a store widens exactly), so f64 tensors are computed with \
         f32 precision and range, as IREE demotes f64 to f32 by default; and integers of \
         magnitude above 2^24 (`i32`, `u32`, `i64`, `u64`) are exact on the vector unit only \
         when f32 represents them, a load rounding the others to the nearest f32. The matrix \
         engine widens float inputs exactly to f32 and accumulates `i8`/`u8` in i32 (see \
         `mxu.matmul`). DMA moves bytes and never converts.\n\n## Summary\n\n| opcode | mnemonic | unit | operands | cost |\n|---|---|---|---|---|\n");
    for d in INSTRUCTIONS {
        let ops: Vec<&str> = d.fields.iter().map(|f| f.name).collect();
        let _ = writeln!(
            o,
            "| `{:#04x}` | `{}` | {} | {} | {} |",
            d.opcode as u8,
            d.mnemonic,
            d.unit,
            if ops.is_empty() {
                "—".to_string()
            } else {
                ops.join(", ")
            },
            cost_formula(d.cost)
        );
    }
    for unit in Unit::ALL {
        let _ = writeln!(o, "\n## {}\n", unit_title(unit));
        for d in INSTRUCTIONS.iter().filter(|d| d.unit == unit) {
            let ops: Vec<String> = d.fields.iter().map(|f| f.name.to_string()).collect();
            let _ = writeln!(
                o,
                "### `{}` — opcode `{:#04x}`\n\n`{}{}{}`\n\n{}\n",
                d.mnemonic,
                d.opcode as u8,
                d.mnemonic,
                if ops.is_empty() { "" } else { " " },
                ops.join(", "),
                d.summary.trim()
            );
            o.push_str("| bits | field | kind |\n|---|---|---|\n| 0–7 | opcode | `");
            let _ = writeln!(o, "{:#04x}` |", d.opcode as u8);
            for f in d.fields {
                let kind = match f.kind {
                    FieldKind::Enum(n, _) => n.to_string(),
                    k => k.name().to_string(),
                };
                let _ = writeln!(
                    o,
                    "| {}–{} | `{}` | {} |",
                    f.offset,
                    f.offset + f.width - 1,
                    f.name,
                    kind
                );
            }
            let used = d.used_bits();
            if used < 128 {
                let _ = writeln!(o, "| {used}–127 | reserved | 0 |");
            }
            let _ = writeln!(o, "\nCost: {}.\n", cost_formula(d.cost));
        }
    }
    o
}

/// The text of `spec/targets.md`.
pub fn targets_markdown() -> String {
    let mut o = String::new();
    o.push_str(
        "# LLMPU targets\n\n<!-- Generated from isa/src/target.rs and isa/targets/*.toml by \
         isa::spec::targets_markdown; do not edit. Re-bless: LLMPU_BLESS=1 cargo test -p llmpu-isa \
         --test spec_up_to_date -->\n\n\
         A target is a TOML file; every key of the first table is required, the optional keys \
         and sections after it may be added, and no other key is accepted. \
         `llmpu targets` lists the built-in presets and `llmpu targets NAME` prints one; any \
         command taking `--target` accepts a preset name or a path to a `.toml` file.\n\n",
    );
    let names = preset_names();
    let presets: Vec<Target> = names
        .iter()
        .map(|n| Target::preset(n).expect("preset"))
        .collect();
    let flat: Vec<toml::Table> = presets
        .iter()
        .map(|t| toml::from_str(&t.to_toml()).expect("toml"))
        .collect();
    let _ = write!(o, "| key | unit | meaning |");
    for n in &names {
        let _ = write!(o, " `{n}` |");
    }
    o.push_str("\n|---|---|---|");
    for _ in &names {
        o.push_str("---|");
    }
    o.push('\n');
    for (key, unit, doc) in FIELD_DOCS {
        let _ = write!(o, "| `{key}` | {unit} | {doc} |");
        for t in &flat {
            let mut v: Option<&toml::Value> = None;
            let mut table = t;
            for (i, part) in key.split('.').enumerate() {
                let last = i == key.split('.').count() - 1;
                match table.get(part) {
                    Some(toml::Value::Table(sub)) if !last => table = sub,
                    Some(val) if last => v = Some(val),
                    _ => break,
                }
            }
            let text = match v {
                Some(toml::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "—".into(),
            };
            let _ = write!(o, " {text} |");
        }
        o.push('\n');
    }
    o.push_str(
        "\nOptional keys of the tables above (absent from the presets: at the value shown, which \
         is what a target without the key gets, every figure is as before the key existed):\n\n\
         | key | unit | when absent | meaning |\n|---|---|---|---|\n",
    );
    for (key, unit, default, doc) in OPTIONAL_KEY_DOCS {
        let _ = writeln!(o, "| `{key}` | {unit} | {default} | {doc} |");
    }
    o.push_str(
        "\nRemoved keys: `sram.banks` and `accumulator.banks` were accepted but never used; a \
         target that still gives them is refused with an error naming the key. Bank conflicts \
         are not modelled: a bank count alone does not say how addresses interleave, how wide \
         each port is or which unit reads which bank; every tile access is priced at full rate, \
         as for a conflict-free layout.\n",
    );
    o.push_str(
        "\nOptional sections (absent from the presets; a file may add them, with every key of \
         the section):\n\n| key | unit | meaning |\n|---|---|---|\n",
    );
    for (key, unit, doc) in OPTIONAL_FIELD_DOCS {
        let _ = writeln!(o, "| `{key}` | {unit} | {doc} |");
    }
    o.push_str("\nDerived figures:\n\n| | ");
    o.push_str(&names.join(" | "));
    o.push_str(" |\n|---|");
    for _ in &names {
        o.push_str("---|");
    }
    o.push('\n');
    let row = |o: &mut String, label: &str, f: &dyn Fn(&Target) -> String| {
        let _ = write!(o, "| {label} |");
        for t in &presets {
            let _ = write!(o, " {} |", f(t));
        }
        o.push('\n');
    };
    row(&mut o, "peak bf16 TFLOP/s (chip)", &|t| {
        format!("{:.1}", t.peak_flops() / 1e12)
    });
    row(&mut o, "HBM bytes per cycle", &|t| {
        format!("{:.1}", t.hbm_bytes_per_cycle())
    });
    row(&mut o, "ridge point (FLOP/byte)", &|t| {
        format!("{:.1}", t.peak_flops() / (t.hbm.bandwidth_gb_s * 1e9))
    });
    row(&mut o, "array MACs per vector lane (per core)", &|t| {
        format!(
            "{}",
            t.macs_per_cycle_per_core() / (t.vector.lanes as u64).max(1)
        )
    });
    row(&mut o, "array MACs per exponential (per core)", &|t| {
        format!(
            "{}",
            t.macs_per_cycle_per_core() * t.latency.vpu_special.max(1)
                / (t.vector.lanes as u64).max(1)
        )
    });
    o.push_str(
        "\n**Balance of the matrix and vector units.** Softmax attention needs one exponential \
         per score and `2·d` MACs (`Q·Kᵀ` and `P·V`); layer norms, activations and the online \
         softmax's other passes are vector work per element too. A preset whose array does many \
         more MACs per exponential than `2·d` is bound by its vector unit on attention, whatever \
         the schedule. For comparison: an H100 SM issues 1,024 dense bf16 FMAs per cycle next to \
         128 FP32 lanes (8 MACs per lane) and 16 exponentials per cycle (64 MACs per exponential); \
         a TPU v4 core's vector unit is 8 sublanes × 128 lanes next to its 128×128 arrays. \
         `datacenter` therefore has 1,024 lanes (8 × 128, TPU-like): 16 MACs per lane and 64 per \
         exponential (H100's ratio; `d = 128` attention needs 256 MACs per exponential, so the \
         array, not the vector unit, bounds it). With 128 lanes it had 128 MACs per lane and 512 \
         per exponential, and attention ran at the vector unit's pace (about 2× the matrix bound \
         for the exponentials alone); `examples/targets/datacenter-vpu128.toml` keeps that \
         variant as a data point (`llmpu bench` row `attention-prefill-vpu128`). `edge` (32 MACs \
         per lane, 128 per exponential) is within the range of small accelerators and unchanged: \
         its attention at head dim 64 needs 128 MACs per exponential, at the balance point.\n",
    );
    o
}
