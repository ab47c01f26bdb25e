//! The `llmpu`-dialect form of a lowered program, and the assembly of that form into a
//! [`Program`] through the [`Assembler`] builder.
//!
//! Layout of a lowered module:
//!
//! ```text
//! module attributes {llmpu.precision = "bf16", llmpu.target = "edge"} {
//!   func.func @main() attributes {llmpu.io = [{dir = "input", dtype = "i64", hbm = 0 : i64,
//!                                               name = "input_ids", shape = array<i64: 1, 16>}, ...]} {
//!     %0 = "graph.constant"() {llmpu.hbm = 4096 : i64, value = dense_resource<const7> : tensor<4096xbf16>} ...
//!     func.return
//!   }
//!   func.func @core0() {
//!     "llmpu.li"() {imm = 4096 : i64, rd = 1 : i64} : () -> () loc("MatMul_0")
//!     "llmpu.vpu.exp"() {a = "sram.f32[r1, r2]", bcast = "full", cols = 16 : i64, ...} ...
//!     "llmpu.fallthrough"()[^bb1] : () -> () loc(unknown)
//!   ^bb1:
//!     "llmpu.dma.load"() {...} : () -> () loc("MatMul_0")
//!     "llmpu.addi"() {imm = -1 : i64, rd = 31 : i64, rs1 = 31 : i64} : () -> () loc("MatMul_0")
//!     "llmpu.bne"()[^bb1, ^bb2] {rs1 = 31 : i64, rs2 = 0 : i64} : () -> () loc("MatMul_0")
//!   ^bb2:
//!     func.return
//!   }
//! }
//! ```
//!
//! Instruction fields are attributes: registers, semaphores and integers as integers, enumerated
//! fields by name, tiles and f32 immediates in their assembly spelling. Each op's location is the
//! graph node(s) the instruction came from and becomes its debug-map entry.
//!
//! Control flow (`dialects::llmpu`): a core's instructions are split into basic blocks at every
//! branch target and after every branch; the blocks are in memory order. A branch's target is its
//! first successor (a conditional branch's second is the next block), never an offset; a block that
//! runs on into the next ends with `llmpu.fallthrough`, which is no instruction. The entry block is
//! never a branch target (MLIR's rule): when instruction 0 is one, the entry holds only a
//! `llmpu.fallthrough`. The last block ends with `func.return`; a branch to the end of the stream
//! goes to a block holding only it. [`assemble`] recomputes each offset from the position of the
//! blocks, so [`write_lowered`] followed by [`assemble`] gives the instructions it was given, bit for
//! bit.

use crate::dialects::graph;
use std::sync::Arc;

use llmpu_asm::Assembler;
use llmpu_isa::fields::{Field, FieldKind, format_f32, sign_extend};
use llmpu_isa::inst::INSTRUCTIONS;
use llmpu_isa::{
    DType, DataSegment, IndexBound, Inst, IoDir, IoTensor, KvRegion, KvSlot, Program, Reg, Space,
    Target, TileRef,
};

use std::collections::{BTreeSet, HashMap};

use super::emit::Item;
use super::scalar_of;
use crate::dialects::builtin::{ReturnOp, build_func, build_return};
use crate::dialects::llmpu::{Control, FallthroughOp};
use crate::ir::{
    Attribute, BlobForm, BlockId, DenseAttr, Location, Module, OpId, OpSpec, RegionId, ScalarType,
    TensorType, Type,
};

fn dtype_of_scalar(s: ScalarType) -> Option<DType> {
    DType::ALL.iter().copied().find(|&d| scalar_of(d) == s)
}

fn location(loc: &str) -> Location {
    let parts: Vec<&str> = loc.split('+').collect();
    if parts.len() > 1 {
        Location::Fused(parts.into_iter().map(Arc::from).collect())
    } else {
        Location::name(loc)
    }
}

/// The op of one instruction, without successors: a branch's target field is not an attribute
/// (the caller gives the op its target block, [`write_lowered`]).
pub fn inst_spec(inst: &Inst, loc: &str) -> OpSpec {
    let d = inst.desc();
    let mut spec = OpSpec::new(format!("llmpu.{}", d.mnemonic), location(loc));
    for (f, raw) in d.fields.iter().zip(inst.raw_fields().unwrap_or_default()) {
        let a = match f.kind {
            FieldKind::Target => continue,
            FieldKind::Enum(_, names) => {
                Attribute::str(names.get(raw as usize).copied().unwrap_or("?"))
            }
            FieldKind::F32 => Attribute::str(format_f32(f32::from_bits(raw as u32))),
            FieldKind::TileRef => Attribute::str(f.kind.format(raw, f.width)),
            FieldKind::Simm => Attribute::i64(sign_extend(raw, f.width)),
            _ => Attribute::i64(raw as i64),
        };
        spec = spec.attr(f.name, a);
    }
    spec
}

fn parse_f32(s: &str) -> Option<f32> {
    if let Some(h) = s.strip_prefix("nan(0x").and_then(|x| x.strip_suffix(')')) {
        return u32::from_str_radix(h, 16).ok().map(f32::from_bits);
    }
    if let Some(h) = s.strip_prefix("-nan(0x").and_then(|x| x.strip_suffix(')')) {
        return u32::from_str_radix(h, 16)
            .ok()
            .map(|b| f32::from_bits(b | 0x8000_0000));
    }
    s.parse().ok()
}

fn parse_tile(s: &str) -> Option<TileRef> {
    let (head, rest) = s.split_once('[')?;
    let (space, dt) = head.split_once('.')?;
    let rest = rest.strip_suffix(']')?;
    let (a, l) = rest.split_once(',')?;
    let reg = |x: &str| {
        x.trim()
            .strip_prefix('r')?
            .parse::<u8>()
            .ok()
            .filter(|&r| r < 32)
    };
    Some(TileRef {
        space: Space::from_name(space)?,
        dtype: DType::from_name(dt)?,
        addr: Reg(reg(a)?),
        ld: Reg(reg(l)?),
    })
}

/// The instruction an `llmpu` op stands for; `target` is the instruction offset to its first
/// successor (a branch's target field), which the op's position among the blocks gives.
pub fn inst_of(m: &Module, op: OpId, target: Option<i64>) -> Result<Inst, String> {
    let d = m.op(op);
    let mnemonic = d
        .name
        .strip_prefix("llmpu.")
        .ok_or_else(|| format!("`{}` is not an llmpu op", d.name))?;
    let desc = INSTRUCTIONS
        .iter()
        .find(|x| x.mnemonic == mnemonic)
        .ok_or_else(|| format!("unknown instruction `{mnemonic}`"))?;
    let mut raw = vec![];
    for f in desc.fields {
        if f.kind == FieldKind::Target {
            let off = target.ok_or_else(|| {
                format!(
                    "`{}` has no successor: a branch's target is its first successor",
                    d.name
                )
            })?;
            let max = 1i64 << (f.width - 1);
            if off < -max || off >= max {
                return Err(format!(
                    "`{}`: the branch offset {off} does not fit its {}-bit `{}` field",
                    d.name, f.width, f.name
                ));
            }
            raw.push((off as u64) & llmpu_isa::fields::mask(f.width));
            continue;
        }
        let a = d
            .attr(f.name)
            .ok_or_else(|| format!("`{}` lacks field `{}`", d.name, f.name))?;
        let bad = || format!("`{}` field `{}`: bad value {a:?}", d.name, f.name);
        let v = match (f.kind, a) {
            (FieldKind::Enum(_, names), Attribute::Str(s)) => {
                names.iter().position(|n| n == s).ok_or_else(bad)? as u64
            }
            (FieldKind::F32, Attribute::Str(s)) => parse_f32(s).ok_or_else(bad)?.to_bits() as u64,
            (FieldKind::TileRef, Attribute::Str(s)) => {
                let t = parse_tile(s).ok_or_else(bad)?;
                t.to_bits(f.width)
                    .map_err(|e| format!("`{}` field `{}`: {e}", d.name, f.name))?
            }
            (_, Attribute::Int(v, _)) => (*v as u64) & llmpu_isa::fields::mask(f.width),
            _ => return Err(bad()),
        };
        raw.push(v);
    }
    Inst::from_raw(desc.opcode, &raw).map_err(|e| e.to_string())
}

/// Replaces the module's functions by the lowered form: `@main` with data and I/O, `@coreN` with
/// each core's instructions as a control-flow graph. Fails (an internal error) only when a branch
/// in `streams` goes outside its core's instructions.
pub fn write_lowered(
    m: &mut Module,
    streams: &[Vec<Item>],
    io: &[IoTensor],
    data: &[DataSegment],
    kv: Option<&KvRegion>,
    bounds: &[IndexBound],
) -> Result<(), String> {
    for f in m.functions() {
        m.erase_op(f);
    }
    let (main, entry) = build_func(m, "main", vec![], vec![], Location::name("main"));
    let io_attr: Vec<Attribute> = io
        .iter()
        .map(|t| {
            Attribute::Dict(vec![
                (
                    "dir".into(),
                    Attribute::str(match t.dir {
                        IoDir::Input => "input",
                        IoDir::Output => "output",
                    }),
                ),
                ("dtype".into(), Attribute::str(t.dtype.name())),
                ("hbm".into(), Attribute::i64(t.hbm_addr as i64)),
                ("name".into(), Attribute::str(t.name.clone())),
                (
                    "shape".into(),
                    Attribute::DenseI64Array(t.shape.iter().map(|&x| x as i64).collect()),
                ),
            ])
        })
        .collect();
    m.set_attr(main, "llmpu.io", Attribute::Array(io_attr));
    if let Some(kv) = kv {
        m.set_attr(main, "llmpu.kv", kv_attr(kv));
    }
    if !bounds.is_empty() {
        let b = bounds
            .iter()
            .map(|b| {
                Attribute::Dict(vec![
                    ("input".into(), Attribute::str(b.input.clone())),
                    ("loc".into(), Attribute::str(b.loc.clone())),
                    ("range".into(), Attribute::DenseI64Array(vec![b.lo, b.hi])),
                ])
            })
            .collect();
        m.set_attr(main, "llmpu.bounds", Attribute::Array(b));
    }
    for d in data {
        // Stored as raw bytes (ui8) so any element type round-trips exactly.
        let ty = Type::Tensor(TensorType::new(&[d.bytes.len() as u64], ScalarType::UI8));
        let blob = m.blobs.add(
            &d.name,
            Some(Arc::from(d.bytes.as_slice())),
            BlobForm::Resource,
        );
        m.append(
            entry,
            OpSpec::new(graph::Constant::NAME, Location::name(&d.name))
                .results(vec![ty.clone()])
                .attr("value", Attribute::Dense(DenseAttr { ty, blob }))
                .attr("llmpu.hbm", Attribute::i64(d.hbm_addr as i64)),
        );
    }
    build_return(m, entry, &[], Location::Unknown);
    for (c, s) in streams.iter().enumerate() {
        let (f, entry) = build_func(m, &format!("core{c}"), vec![], vec![], Location::Unknown);
        let region = m.op(f).regions[0];
        write_core(m, region, entry, s).map_err(|e| format!("core {c}: {e}"))?;
    }
    let _ = dtype_of_scalar;
    Ok(())
}

/// Fills the body of one `@coreN` (its `region`, whose `entry` block exists) with the blocks of
/// `items`: a block starts at instruction 0, at every branch target and after every branch.
fn write_core(
    m: &mut Module,
    region: RegionId,
    entry: BlockId,
    items: &[Item],
) -> Result<(), String> {
    let n = items.len();
    let mut starts = BTreeSet::from([0]);
    let mut entry_targeted = false;
    for (i, it) in items.iter().enumerate() {
        if let Some(off) = it.inst.branch_offset() {
            let to = i as i64 + off as i64;
            if !(0..=n as i64).contains(&to) {
                return Err(format!(
                    "`{}` at instruction {i} goes to {to}, outside the {n} instructions",
                    it.inst
                ));
            }
            starts.insert(to as usize);
            starts.insert(i + 1);
            entry_targeted |= to == 0;
        }
    }
    // A start at `n` (a branch to the end, or a branch last) is a block holding only `func.return`.
    let starts: Vec<usize> = starts.into_iter().collect();
    let mut block_at: HashMap<usize, BlockId> = HashMap::new();
    for (k, &s) in starts.iter().enumerate() {
        let b = if k == 0 && !entry_targeted {
            entry
        } else {
            m.add_block(region, &[])
        };
        block_at.insert(s, b);
    }
    if entry_targeted {
        m.append(
            entry,
            OpSpec::new(FallthroughOp::NAME, Location::Unknown).successors(&[block_at[&0]]),
        );
    }
    for (k, &s) in starts.iter().enumerate() {
        let b = block_at[&s];
        let e = starts.get(k + 1).copied().unwrap_or(n);
        for (i, it) in items.iter().enumerate().take(e).skip(s) {
            let mut spec = inst_spec(&it.inst, &it.loc);
            if let Some(off) = it.inst.branch_offset() {
                let to = block_at[&((i as i64 + off as i64) as usize)];
                spec = match Control::of(it.inst.desc()) {
                    Control::Branch => spec.successors(&[to, block_at[&(i + 1)]]),
                    _ => spec.successors(&[to]),
                };
            }
            m.append(b, spec);
        }
        let ends_in_branch = e > s && items[e - 1].inst.branch_offset().is_some();
        if k + 1 == starts.len() {
            build_return(m, b, &[], Location::Unknown);
        } else if !ends_in_branch {
            m.append(
                b,
                OpSpec::new(FallthroughOp::NAME, Location::Unknown).successors(&[block_at[&e]]),
            );
        }
    }
    Ok(())
}

/// Appends the instructions of one `@coreN` function to the assembler: its blocks in order, each
/// branch's target offset computed from the position of its target block.
fn assemble_core(a: &mut Assembler, m: &Module, f: OpId) -> Result<(), String> {
    let Some(&region) = m.op(f).regions.first() else {
        return Ok(());
    };
    let blocks = &m.region(region).blocks;
    let is_inst = |o: OpId| {
        let name = &m.op(o).name;
        name != ReturnOp::NAME && name != FallthroughOp::NAME
    };
    let mut start: HashMap<BlockId, i64> = HashMap::new();
    let mut pc = 0i64;
    for &b in blocks {
        start.insert(b, pc);
        pc += m.block(b).ops.iter().filter(|&&o| is_inst(o)).count() as i64;
    }
    let at = |op: OpId| {
        let d = m.op(op);
        format!("`{}` {}", d.name, d.loc)
    };
    let mut last = String::new();
    pc = 0;
    for (bi, &b) in blocks.iter().enumerate() {
        let next = blocks.get(bi + 1).copied();
        let ops = &m.block(b).ops;
        for (oi, &op) in ops.iter().enumerate() {
            let d = m.op(op);
            let ends_block = oi + 1 == ops.len();
            if d.name == ReturnOp::NAME {
                if !ends_block || next.is_some() {
                    return Err(format!(
                        "{}: `func.return` must end the last block (the instructions after it \
                         would run)",
                        at(op)
                    ));
                }
                continue;
            }
            if !d.successors.is_empty() && !ends_block {
                return Err(format!(
                    "{}: an op with successors must end its block",
                    at(op)
                ));
            }
            let falls_to = match d.name.as_str() {
                n if n == FallthroughOp::NAME => d.successors.first(),
                _ if d.successors.len() == 2 => d.successors.get(1),
                _ => None,
            };
            if let Some(&to) = falls_to
                && Some(to) != next
            {
                return Err(format!(
                    "{}: control falls through to the next block, which must be its fall-through \
                     successor",
                    at(op)
                ));
            }
            if d.name == FallthroughOp::NAME {
                continue;
            }
            let target = match d.successors.first() {
                None => None,
                Some(t) => Some(
                    start.get(t).ok_or_else(|| {
                        format!("{}: a successor is not a block of its function", at(op))
                    })? - pc,
                ),
            };
            let loc = super::loc_string(&d.loc);
            if loc != last {
                a.loc(loc.clone());
                last = loc;
            }
            a.inst(inst_of(m, op, target).map_err(|e| format!("{}: {e}", at(op)))?);
            pc += 1;
        }
    }
    Ok(())
}

/// The paged KV region as the `llmpu.kv` attribute of the lowered `@main`.
fn kv_attr(kv: &KvRegion) -> Attribute {
    let i = |x: u64| Attribute::i64(x as i64);
    let slots = kv
        .slots
        .iter()
        .map(|s| {
            Attribute::Dict(vec![
                ("head_dim".into(), i(s.head_dim)),
                ("heads".into(), i(s.heads)),
                ("past".into(), Attribute::str(s.past.clone())),
                ("past_index".into(), i(s.past_index as u64)),
                ("pool".into(), i(s.pool_addr)),
                ("present".into(), Attribute::str(s.present.clone())),
                ("present_index".into(), i(s.present_index as u64)),
            ])
        })
        .collect();
    Attribute::Dict(vec![
        ("batch".into(), i(kv.batch)),
        ("block_tokens".into(), i(kv.block_tokens)),
        ("bytes".into(), i(kv.bytes)),
        ("dtype".into(), Attribute::str(kv.dtype.name())),
        ("hbm".into(), i(kv.hbm_addr)),
        ("max_blocks".into(), i(kv.max_blocks)),
        ("new_tokens".into(), i(kv.new_tokens)),
        ("num_blocks".into(), i(kv.num_blocks)),
        ("past_len".into(), i(kv.past_len)),
        ("slots".into(), Attribute::Array(slots)),
        ("table".into(), i(kv.table_addr)),
    ])
}

fn kv_from_attr(a: &Attribute) -> Result<KvRegion, String> {
    fn field<'a>(d: &'a [(String, Attribute)], k: &str) -> Result<&'a Attribute, String> {
        d.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("llmpu.kv: missing `{k}`"))
    }
    fn int(d: &[(String, Attribute)], k: &str) -> Result<u64, String> {
        field(d, k)?
            .as_int()
            .and_then(|x| u64::try_from(x).ok())
            .ok_or_else(|| format!("llmpu.kv: `{k}` is not a non-negative integer"))
    }
    fn text(d: &[(String, Attribute)], k: &str) -> Result<String, String> {
        field(d, k)?
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("llmpu.kv: `{k}` is not a string"))
    }
    let Attribute::Dict(d) = a else {
        return Err("llmpu.kv is not a dictionary".into());
    };
    let Attribute::Array(ss) = field(d, "slots")? else {
        return Err("llmpu.kv: `slots` is not an array".into());
    };
    let mut slots = vec![];
    for s in ss {
        let Attribute::Dict(s) = s else {
            return Err("llmpu.kv: slot is not a dictionary".into());
        };
        slots.push(KvSlot {
            past: text(s, "past")?,
            present: text(s, "present")?,
            past_index: int(s, "past_index")? as u32,
            present_index: int(s, "present_index")? as u32,
            heads: int(s, "heads")?,
            head_dim: int(s, "head_dim")?,
            pool_addr: int(s, "pool")?,
        });
    }
    Ok(KvRegion {
        hbm_addr: int(d, "hbm")?,
        bytes: int(d, "bytes")?,
        dtype: DType::from_name(&text(d, "dtype")?).ok_or("llmpu.kv: unknown dtype")?,
        block_tokens: int(d, "block_tokens")?,
        batch: int(d, "batch")?,
        max_blocks: int(d, "max_blocks")?,
        num_blocks: int(d, "num_blocks")?,
        past_len: int(d, "past_len")?,
        new_tokens: int(d, "new_tokens")?,
        table_addr: int(d, "table")?,
        slots,
    })
}

/// Assembles a lowered module into a program for `target`.
pub fn assemble(m: &Module, target: &Target) -> Result<Program, String> {
    let mut a = Assembler::new(target.clone());
    let funcs = m.functions();
    let name_of = |f: crate::ir::OpId| {
        m.attr(f, "sym_name")
            .and_then(Attribute::as_str)
            .unwrap_or("")
            .to_string()
    };
    let main = funcs
        .iter()
        .copied()
        .find(|&f| name_of(f) == "main")
        .ok_or("lowered module has no @main")?;
    if let Some(Attribute::Array(ios)) = m.attr(main, "llmpu.io") {
        for t in ios {
            let Attribute::Dict(d) = t else {
                return Err("bad llmpu.io entry".into());
            };
            let get = |k: &str| d.iter().find(|(n, _)| n == k).map(|(_, v)| v);
            let name = get("name").and_then(Attribute::as_str).ok_or("io name")?;
            let dt = get("dtype")
                .and_then(Attribute::as_str)
                .and_then(DType::from_name)
                .ok_or("io dtype")?;
            let addr = get("hbm").and_then(Attribute::as_int).ok_or("io hbm")? as u64;
            let shape: Vec<u64> = get("shape")
                .and_then(Attribute::as_i64_list)
                .ok_or("io shape")?
                .into_iter()
                .map(|x| x as u64)
                .collect();
            if get("dir").and_then(Attribute::as_str) == Some("output") {
                a.output(name, dt, &shape, addr);
            } else {
                a.input(name, dt, &shape, addr);
            }
        }
    }
    if let Some(entry) = m.entry_block(main) {
        for &op in &m.block(entry).ops {
            let Some(addr) = m.attr(op, "llmpu.hbm").and_then(Attribute::as_int) else {
                continue;
            };
            let d = m
                .attr(op, "value")
                .and_then(Attribute::as_dense)
                .ok_or("data op without value")?;
            let blob = m.blobs.get(d.blob);
            let bytes = blob
                .bytes
                .clone()
                .ok_or_else(|| format!("data `{}` is elided", blob.name))?;
            a.data(blob.name.clone(), addr as u64, bytes.to_vec());
        }
    }
    let mut cores: Vec<(usize, crate::ir::OpId)> = funcs
        .iter()
        .filter_map(|&f| {
            name_of(f)
                .strip_prefix("core")
                .and_then(|n| n.parse().ok())
                .map(|n| (n, f))
        })
        .collect();
    cores.sort();
    for (c, f) in cores {
        a.core(c as u32);
        assemble_core(&mut a, m, f).map_err(|e| format!("@core{c}: {e}"))?;
    }
    let mut program = a.finish().map_err(|d| d.to_string())?;
    if let Some(Attribute::Array(bs)) = m.attr(main, "llmpu.bounds") {
        for b in bs {
            let Attribute::Dict(d) = b else {
                return Err("bad llmpu.bounds entry".into());
            };
            let get = |k: &str| d.iter().find(|(n, _)| n == k).map(|(_, v)| v);
            let text = |k: &str| {
                get(k)
                    .and_then(Attribute::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| format!("llmpu.bounds entry without `{k}`"))
            };
            let range = get("range")
                .and_then(Attribute::as_i64_list)
                .filter(|r| r.len() == 2)
                .ok_or("llmpu.bounds `range` is not array<i64: lo, hi>")?;
            program.bounds.push(IndexBound {
                input: text("input")?,
                lo: range[0],
                hi: range[1],
                loc: text("loc")?,
            });
        }
    }
    if let Some(kv) = m.attr(main, "llmpu.kv") {
        program.kv = Some(kv_from_attr(kv)?);
    }
    program.validate().map_err(|e| e.to_string())?;
    Ok(program)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{print_module, verify};
    use llmpu_isa::{BranchTarget, Reg};

    fn item(inst: Inst, loc: &str) -> Item {
        Item {
            inst,
            loc: Arc::from(loc),
        }
    }

    /// Core 0: a loop back to instruction 0 (so the entry block is only a fall-through), a forward
    /// conditional branch and a `jmp` over one instruction; core 1: straight-line.
    fn streams() -> Vec<Vec<Item>> {
        let r = Reg;
        vec![
            vec![
                item(Inst::Nop {}, "Top"),
                item(
                    Inst::Addi {
                        rd: r(31),
                        rs1: r(31),
                        imm: -1,
                    },
                    "Loop",
                ),
                item(
                    Inst::Bne {
                        rs1: r(31),
                        rs2: r(0),
                        target: BranchTarget(-2),
                    },
                    "Loop",
                ),
                item(
                    Inst::Bge {
                        rs1: r(1),
                        rs2: r(2),
                        target: BranchTarget(3),
                    },
                    "Skip",
                ),
                item(
                    Inst::Jmp {
                        target: BranchTarget(2),
                    },
                    "Skip",
                ),
                item(Inst::Nop {}, "Skipped"),
                item(Inst::Halt {}, "End"),
            ],
            vec![item(Inst::Halt {}, "End")],
        ]
    }

    fn lowered() -> Module {
        let mut m = Module::new();
        write_lowered(&mut m, &streams(), &[], &[], None, &[]).unwrap();
        m
    }

    #[test]
    fn branches_become_successors_and_the_blocks_assemble_to_the_same_instructions() {
        let m = lowered();
        verify(&m).unwrap_or_else(|e| panic!("{e:?}"));
        let text = print_module(&m);
        let core0 = &text[text.find("@core0").unwrap()..text.find("@core1").unwrap()];
        for line in [
            "\"llmpu.fallthrough\"()[^bb1] : () -> () loc(unknown)\n  ^bb1:",
            "\"llmpu.bne\"()[^bb1, ^bb2] {rs1 = 31 : i64, rs2 = 0 : i64}",
            "\"llmpu.bge\"()[^bb5, ^bb3] {rs1 = 1 : i64, rs2 = 2 : i64}",
            "\"llmpu.jmp\"()[^bb5] : () -> () loc(\"Skip\")",
            "\"llmpu.nop\"() : () -> () loc(\"Skipped\")\n    \"llmpu.fallthrough\"()[^bb5]",
            "^bb5:\n    \"llmpu.halt\"() : () -> () loc(\"End\")\n    func.return",
        ] {
            assert!(core0.contains(line), "{line}\nnot in\n{core0}");
        }
        assert!(!text.contains("target"), "{text}");
        // Through the text, as a dump is read back.
        let m = crate::parser::parse_module(&text).unwrap();
        let target = Target::preset("datacenter").unwrap();
        let p = assemble(&m, &target).unwrap();
        let want: Vec<Vec<Inst>> = streams()
            .iter()
            .map(|s| s.iter().map(|it| it.inst).collect())
            .collect();
        assert_eq!(p.cores, want);
    }

    #[test]
    fn a_fall_through_that_is_not_the_next_block_does_not_assemble() {
        let text = print_module(&lowered())
            .replace("\"llmpu.bge\"()[^bb5, ^bb3]", "\"llmpu.bge\"()[^bb3, ^bb5]");
        let m = crate::parser::parse_module(&text).unwrap();
        let e = assemble(&m, &Target::preset("datacenter").unwrap()).unwrap_err();
        assert_eq!(
            e,
            "@core0: `llmpu.bge` loc(\"Skip\"): control falls through to the next block, which \
             must be its fall-through successor"
        );
    }
}
