//! The disassembler: a [`Program`] as canonical assembly text.
//!
//! Invariant (tested): assembling the text gives a program whose binary is byte-identical to the
//! original's — `binary::write(assemble(disassemble(p))) == binary::write(p)`. To keep it so:
//! the target prints as `.target NAME` only when it equals that preset exactly (otherwise as
//! `.target_toml` with the canonical TOML); data prints as `.hex` lines; every label is printed
//! at its position (labels at the same pc in stored order); a branch target prints as the first
//! label at its destination, or as `.+N`/`.-N` when it has none (no labels are invented, since
//! they would add symbols); `.loc` is printed exactly where the debug map has an entry; names
//! that are not plain identifiers print as quoted strings. Comments (`; pc N`) are ignored by the
//! assembler.

use llmpu_isa::target::preset_names;
use llmpu_isa::{FieldKind, Program, Target, fields::sign_extend};
use std::collections::HashMap;
use std::fmt::Write;

/// Bytes per `.hex` line.
pub const HEX_BYTES_PER_LINE: usize = 32;

/// A name as an identifier when it lexes as one, else as a quoted string.
pub fn name_text(name: &str) -> String {
    let mut chars = name.chars();
    let ident = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$'));
    if ident { name.to_string() } else { quote(name) }
}

/// A string literal that unescapes to `s`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `.target` line for a target.
fn target_line(t: &Target) -> String {
    for name in preset_names() {
        if Target::preset(name).is_ok_and(|p| &p == t) {
            return format!(".target {name}");
        }
    }
    format!(".target_toml {}", quote(&t.to_toml()))
}

/// Prints a program as assembly text; see the module documentation.
pub fn disassemble(p: &Program) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "; LLMPU assembly ({} cores)", p.cores.len());
    let _ = writeln!(o, "{}", target_line(&p.target));
    for t in &p.io {
        let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
        let _ = writeln!(
            o,
            ".{} {} : {}[{}] @ {:#x}",
            t.dir.name(),
            name_text(&t.name),
            t.dtype,
            dims.join(", "),
            t.hbm_addr
        );
    }
    if let Some(k) = &p.kv {
        let _ = writeln!(
            o,
            ".kv {} @ {:#x} bytes {:#x} table {:#x} block_tokens {} batch {} max_blocks {} \
             num_blocks {} past_len {} new_tokens {}",
            k.dtype,
            k.hbm_addr,
            k.bytes,
            k.table_addr,
            k.block_tokens,
            k.batch,
            k.max_blocks,
            k.num_blocks,
            k.past_len,
            k.new_tokens
        );
        for s in &k.slots {
            let _ = writeln!(
                o,
                ".kv_slot {} {} past_index {} present_index {} heads {} head_dim {} @ {:#x}",
                name_text(&s.past),
                name_text(&s.present),
                s.past_index,
                s.present_index,
                s.heads,
                s.head_dim,
                s.pool_addr
            );
        }
    }
    if let Some(precision) = &p.precision {
        let _ = writeln!(o, ".precision {}", name_text(precision));
    }
    for b in &p.bounds {
        let _ = writeln!(
            o,
            ".bound {} {} {} {}",
            name_text(&b.input),
            b.lo,
            b.hi,
            quote(&b.loc)
        );
    }
    for d in &p.data {
        let _ = writeln!(
            o,
            ".data {} @ {:#x}    ; {} bytes",
            name_text(&d.name),
            d.hbm_addr,
            d.bytes.len()
        );
        for chunk in d.bytes.chunks(HEX_BYTES_PER_LINE) {
            let hex: String = chunk.iter().map(|b| format!("{b:02x}")).collect();
            let _ = writeln!(o, "    .hex \"{hex}\"");
        }
    }
    let mut labels = p.labels.clone();
    labels.sort_by_key(|l| (l.core, l.pc));
    for (core, stream) in p.cores.iter().enumerate() {
        let core = core as u32;
        let _ = writeln!(o, "\n.core {core}");
        let mut at: HashMap<u32, Vec<&str>> = HashMap::new();
        for l in labels.iter().filter(|l| l.core == core) {
            at.entry(l.pc).or_default().push(&l.name);
        }
        let locs: HashMap<u32, &str> = p
            .debug
            .iter()
            .filter(|d| d.core == core)
            .map(|d| (d.pc, d.loc.as_str()))
            .collect();
        let end = stream.len().max(1) as u32;
        for pc in 0..=stream.len() as u32 {
            for name in at.get(&pc).into_iter().flatten() {
                let _ = writeln!(o, "{}:", name_text(name));
            }
            if pc < end
                && let Some(loc) = locs.get(&pc)
            {
                let _ = writeln!(o, ".loc {}", quote(loc));
            }
            let Some(inst) = stream.get(pc as usize) else {
                continue;
            };
            let d = inst.desc();
            let Ok(raws) = inst.raw_fields() else {
                // Not encodable (built through the API with an out-of-range value): print the
                // real values as they are.
                let _ = writeln!(o, "    {inst}");
                continue;
            };
            let mut line = format!("    {}", d.mnemonic);
            for (k, (fd, raw)) in d.fields.iter().zip(raws).enumerate() {
                line.push_str(if k == 0 { " " } else { ", " });
                let text = if fd.kind == FieldKind::Target {
                    let dest = pc as i64 + sign_extend(raw, fd.width);
                    u32::try_from(dest)
                        .ok()
                        .and_then(|dest| at.get(&dest))
                        .and_then(|names| names.first())
                        .map(|n| name_text(n))
                        .unwrap_or_else(|| fd.kind.format(raw, fd.width))
                } else {
                    fd.kind.format(raw, fd.width)
                };
                line.push_str(&text);
            }
            let pad = 48usize.saturating_sub(line.chars().count()).max(1);
            let _ = writeln!(o, "{line}{:pad$}; pc {pc}", "");
        }
    }
    o
}
