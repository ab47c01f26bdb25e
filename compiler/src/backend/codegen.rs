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
//!     func.return
//!   }
//! }
//! ```
//!
//! Instruction fields are attributes: registers, semaphores and integers as integers, enumerated
//! fields by name, tiles and f32 immediates in their assembly spelling. Each op's location is the
//! graph node(s) the instruction came from and becomes its debug-map entry.

use std::sync::Arc;

use llmpu_asm::Assembler;
use llmpu_isa::fields::{FieldKind, format_f32, sign_extend};
use llmpu_isa::inst::INSTRUCTIONS;
use llmpu_isa::{
    DType, DataSegment, IndexBound, Inst, IoDir, IoTensor, KvRegion, KvSlot, Program, Reg, Space,
    Target, TileRef,
};

use super::emit::Item;
use crate::dialects::builtin::{build_func, build_return};
use crate::ir::{
    Attribute, BlobForm, DenseAttr, Location, Module, OpSpec, ScalarType, TensorType, Type,
};

fn scalar_of(d: DType) -> ScalarType {
    match d {
        DType::F32 => ScalarType::F32,
        DType::F16 => ScalarType::F16,
        DType::BF16 => ScalarType::BF16,
        DType::F8E4M3 => ScalarType::F8E4M3FN,
        DType::I8 => ScalarType::I8,
        DType::U8 => ScalarType::UI8,
        DType::I32 => ScalarType::I32,
        DType::I64 => ScalarType::I64,
    }
}

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

/// The op of one instruction.
pub fn inst_spec(inst: &Inst, loc: &str) -> OpSpec {
    let d = inst.desc();
    let mut spec = OpSpec::new(format!("llmpu.{}", d.mnemonic), location(loc));
    for (f, raw) in d.fields.iter().zip(inst.raw_fields().unwrap_or_default()) {
        let a = match f.kind {
            FieldKind::Enum(_, names) => {
                Attribute::str(names.get(raw as usize).copied().unwrap_or("?"))
            }
            FieldKind::F32 => Attribute::str(format_f32(f32::from_bits(raw as u32))),
            FieldKind::TileRef => Attribute::str(f.kind.format(raw, f.width)),
            FieldKind::Simm | FieldKind::Target => Attribute::i64(sign_extend(raw, f.width)),
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

/// The instruction an `llmpu` op stands for.
pub fn inst_of(m: &Module, op: crate::ir::OpId) -> Result<Inst, String> {
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
                (t.addr.0 as u64)
                    | ((t.ld.0 as u64) << 5)
                    | ((t.space as u64) << 10)
                    | ((t.dtype as u64) << 11)
            }
            (_, Attribute::Int(v, _)) => (*v as u64) & llmpu_isa::fields::mask(f.width),
            _ => return Err(bad()),
        };
        raw.push(v);
    }
    Inst::from_raw(desc.opcode, &raw).map_err(|e| e.to_string())
}

/// Replaces the module's functions by the lowered form: `@main` with data and I/O, `@coreN` with
/// each core's instructions.
pub fn write_lowered(
    m: &mut Module,
    streams: &[Vec<Item>],
    io: &[IoTensor],
    data: &[DataSegment],
    kv: Option<&KvRegion>,
    bounds: &[IndexBound],
) {
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
            OpSpec::new("graph.constant", Location::name(&d.name))
                .results(vec![ty.clone()])
                .attr("value", Attribute::Dense(DenseAttr { ty, blob }))
                .attr("llmpu.hbm", Attribute::i64(d.hbm_addr as i64)),
        );
    }
    build_return(m, entry, &[], Location::Unknown);
    for (c, s) in streams.iter().enumerate() {
        let (_, b) = build_func(m, &format!("core{c}"), vec![], vec![], Location::Unknown);
        for it in s {
            m.append(b, inst_spec(&it.inst, &it.loc));
        }
        build_return(m, b, &[], Location::Unknown);
    }
    let _ = dtype_of_scalar;
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
        let Some(entry) = m.entry_block(f) else {
            continue;
        };
        let mut last = String::new();
        for &op in &m.block(entry).ops {
            if m.op(op).name == "func.return" {
                continue;
            }
            let loc = super::loc_string(&m.op(op).loc);
            if loc != last {
                a.loc(loc.clone());
                last = loc;
            }
            a.inst(inst_of(m, op)?);
        }
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
