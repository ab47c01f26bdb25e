//! The LLMPU binary container: a [`Program`] as an ELF64 little-endian file.
//!
//! Layout (the byte-level record formats are in `spec/binary-format.md`):
//!
//! | section | contents |
//! |---|---|
//! | `.llmpu.meta` | magic, format version, core count, CRC32, file size — always at file offset 64 |
//! | `.text.core<N>` | core N's instructions, [`INST_BYTES`] each ([`Inst::encode`]) |
//! | `.rodata` | constant data segments, each starting at a 64-byte aligned offset |
//! | `.llmpu.data` | data table: name, HBM address, `.rodata` offset, length |
//! | `.llmpu.io` | I/O tensor descriptors: name, direction, dtype, shape, HBM address |
//! | `.llmpu.target` | the target as canonical TOML ([`Target::to_toml`]) |
//! | `.llmpu.debug` | debug map: core, pc, location string |
//! | `.llmpu.kv` | optional: the paged KV-cache region of a decode program (`spec/kv-cache.md`) |
//! | `.llmpu.bounds` | optional: value ranges of integer inputs that index tables ([`IndexBound`]) |
//! | `.llmpu.precision` | optional: the compile precision's name (`fp32`, `bf16`) as UTF-8 |
//! | `.symtab`/`.strtab` | labels: local symbols in their core's text section, value = byte offset |
//!
//! Invariants:
//! - [`write`] is deterministic: the same program always gives the same bytes. Labels are stored
//!   sorted by `(core, pc)` (stable), which is also the order [`read`] returns them in.
//! - The CRC32 in `.llmpu.meta` covers the whole file with the CRC field itself zeroed, and it is
//!   checked before anything else is parsed, so any single-bit change anywhere is rejected.
//! - [`read`] never panics: every length, offset, count, string, enum tag, instruction word and
//!   finally [`Program::validate`] is checked, and the error says what and where.

use crate::fields::DType;
use crate::inst::{DecodeError, EncodeError, INST_BYTES, Inst};
use crate::program::{
    DataSegment, DebugLoc, IndexBound, IoDir, IoTensor, KvRegion, KvSlot, Label, Program,
    ProgramError,
};
use crate::target::Target;
use object::elf;
use object::read::elf::{FileHeader as _, SectionHeader as _, Sym as _};
use object::write::elf::{FileHeader, SectionHeader, SectionIndex, Sym, Writer};
use object::{Endianness, LittleEndian};
use std::path::Path;

/// `e_machine` of LLMPU binaries: 0x4C50 (ASCII "LP"), a value not assigned to any architecture.
pub const EM_LLMPU: u16 = 0x4C50;
/// Magic bytes at the start of `.llmpu.meta`.
pub const MAGIC: [u8; 8] = *b"LLMPUBIN";
/// Current container format version. Version 2: five more element types (`i16`, `u16`, `u32`,
/// `u64`, `f64`), so instruction `dtype` fields are 4 bits wide and a tile operand's space and type
/// are one 4-bit code; version-1 instruction words decode differently and are refused.
pub const FORMAT_VERSION: u32 = 2;
/// File offset of the `.llmpu.meta` section (right after the 64-byte ELF header).
pub const META_OFFSET: usize = 64;
/// Size of the `.llmpu.meta` section.
pub const META_SIZE: usize = 32;
/// Offset of the CRC32 field inside `.llmpu.meta`.
const META_CRC: usize = 16;
/// Alignment of each data segment inside `.rodata`.
pub const RODATA_ALIGN: u64 = 64;
/// Largest core count a binary may declare (the target schema's limit).
pub const MAX_CORES: u32 = 256;
/// Largest rank an I/O tensor may have.
pub const MAX_RANK: u32 = 16;

/// Everything that can go wrong writing or reading a binary.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("file is truncated: {len} bytes, expected {expected}")]
    Truncated { len: usize, expected: u64 },
    #[error("not an LLMPU binary: {0}")]
    BadMagic(&'static str),
    #[error(
        "unsupported LLMPU binary format version {found} (this tool reads version {FORMAT_VERSION})"
    )]
    BadVersion { found: u32 },
    #[error(
        "checksum mismatch: stored CRC32 {stored:#010x}, computed {computed:#010x} (the file is corrupt)"
    )]
    Checksum { stored: u32, computed: u32 },
    #[error("malformed ELF: {0}")]
    Elf(String),
    #[error("missing section `{0}`")]
    MissingSection(String),
    #[error("section `{0}` appears more than once")]
    DuplicateSection(String),
    #[error("unexpected section `{0}`")]
    UnexpectedSection(String),
    #[error("section `{section}` at offset {offset}: {message}")]
    Malformed {
        section: String,
        offset: usize,
        message: String,
    },
    #[error("core {core} pc {pc}: {source}")]
    Decode {
        core: usize,
        pc: usize,
        source: DecodeError,
    },
    #[error("core {core} pc {pc}: {source}")]
    Encode {
        core: usize,
        pc: usize,
        source: EncodeError,
    },
    #[error("embedded target: {0}")]
    Target(String),
    #[error("invalid program: {0}")]
    Program(#[from] ProgramError),
    #[error("{what} name {name:?} is empty or contains a NUL byte")]
    BadName { what: &'static str, name: String },
    #[error("duplicate label `{name}` in core {core}")]
    DuplicateLabel { core: u32, name: String },
    #[error("cannot write ELF: {0}")]
    Write(String),
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn text_name(core: usize) -> String {
    format!(".text.core{core}")
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

fn check_name(what: &'static str, name: &str) -> Result<(), BinaryError> {
    if name.is_empty() || name.contains('\0') || name.len() > u32::MAX as usize {
        return Err(BinaryError::BadName {
            what,
            name: name.into(),
        });
    }
    Ok(())
}

/// Labels in storage order: stable-sorted by `(core, pc)`.
fn sorted_labels(labels: &[Label]) -> Vec<&Label> {
    let mut v: Vec<&Label> = labels.iter().collect();
    v.sort_by_key(|l| (l.core, l.pc));
    v
}

fn check_unique_labels(labels: &[Label]) -> Result<(), BinaryError> {
    let mut seen = std::collections::HashSet::new();
    for l in labels {
        if !seen.insert((l.core, l.name.as_str())) {
            return Err(BinaryError::DuplicateLabel {
                core: l.core,
                name: l.name.clone(),
            });
        }
    }
    Ok(())
}

/// Total bytes of an I/O tensor, or `None` on overflow.
fn io_bytes(dtype: DType, shape: &[u64]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))?
        .checked_mul(dtype.size())
}

/// Serializes a program. Validates it first ([`Program::validate`], encodable instructions, names
/// usable as ELF symbols), so whatever this returns, [`read`] accepts.
pub fn write(program: &Program) -> Result<Vec<u8>, BinaryError> {
    for t in &program.io {
        check_name(t.dir.name(), &t.name)?;
        if t.shape.len() > MAX_RANK as usize {
            return Err(BinaryError::Malformed {
                section: ".llmpu.io".into(),
                offset: 0,
                message: format!(
                    "tensor `{}` has rank {} > {MAX_RANK}",
                    t.name,
                    t.shape.len()
                ),
            });
        }
        if io_bytes(t.dtype, &t.shape).is_none() {
            return Err(BinaryError::Malformed {
                section: ".llmpu.io".into(),
                offset: 0,
                message: format!("tensor `{}` size overflows 64 bits", t.name),
            });
        }
    }
    program.validate()?;
    for d in &program.data {
        check_name("data", &d.name)?;
    }
    for l in &program.labels {
        check_name("label", &l.name)?;
    }
    check_unique_labels(&program.labels)?;

    // Section contents.
    let mut texts: Vec<Vec<u8>> = Vec::with_capacity(program.cores.len());
    for (core, stream) in program.cores.iter().enumerate() {
        let mut t = Vec::with_capacity(stream.len() * INST_BYTES);
        for (pc, inst) in stream.iter().enumerate() {
            let w = inst
                .encode()
                .map_err(|source| BinaryError::Encode { core, pc, source })?;
            t.extend_from_slice(&w);
        }
        texts.push(t);
    }
    let mut rodata = Vec::new();
    let mut data_table = Vec::new();
    put_u32(&mut data_table, program.data.len() as u32);
    for d in &program.data {
        while !(rodata.len() as u64).is_multiple_of(RODATA_ALIGN) {
            rodata.push(0);
        }
        put_str(&mut data_table, &d.name);
        put_u64(&mut data_table, d.hbm_addr);
        put_u64(&mut data_table, rodata.len() as u64);
        put_u64(&mut data_table, d.bytes.len() as u64);
        rodata.extend_from_slice(&d.bytes);
    }
    let mut io_table = Vec::new();
    put_u32(&mut io_table, program.io.len() as u32);
    for t in &program.io {
        put_str(&mut io_table, &t.name);
        io_table.push(match t.dir {
            IoDir::Input => 0,
            IoDir::Output => 1,
        });
        io_table.push(t.dtype as u8);
        io_table.extend_from_slice(&[0, 0]);
        put_u32(&mut io_table, t.shape.len() as u32);
        for &d in &t.shape {
            put_u64(&mut io_table, d);
        }
        put_u64(&mut io_table, t.hbm_addr);
    }
    let target_toml = program.target.to_toml();
    let mut debug = Vec::new();
    put_u32(&mut debug, program.debug.len() as u32);
    for d in &program.debug {
        put_u32(&mut debug, d.core);
        put_u32(&mut debug, d.pc);
        put_str(&mut debug, &d.loc);
    }
    let labels = sorted_labels(&program.labels);
    let text_names: Vec<String> = (0..program.cores.len()).map(text_name).collect();

    let mut out = Vec::new();
    let mut w = Writer::new(Endianness::Little, true, &mut out);
    w.reserve_file_header();

    // Section indices, in header order.
    let meta_name = w.add_section_name(b".llmpu.meta");
    let meta_idx = w.reserve_section_index();
    let mut text_idx: Vec<(SectionIndex, _)> = Vec::new();
    for name in &text_names {
        let n = w.add_section_name(name.as_bytes());
        text_idx.push((w.reserve_section_index(), n));
    }
    let kv_table = program.kv.as_ref().map(kv_record);
    let mut plain: Vec<&'static [u8]> = vec![
        b".rodata",
        b".llmpu.data",
        b".llmpu.io",
        b".llmpu.target",
        b".llmpu.debug",
    ];
    let mut plain_data: Vec<&[u8]> = vec![
        &rodata,
        &data_table,
        &io_table,
        target_toml.as_bytes(),
        &debug,
    ];
    let mut plain_align: Vec<u64> = vec![RODATA_ALIGN, 8, 8, 1, 4];
    if let Some(k) = &kv_table {
        plain.push(b".llmpu.kv");
        plain_data.push(k);
        plain_align.push(8);
    }
    let bounds_table = (!program.bounds.is_empty()).then(|| bounds_record(&program.bounds));
    if let Some(b) = &bounds_table {
        plain.push(b".llmpu.bounds");
        plain_data.push(b);
        plain_align.push(8);
    }
    if let Some(p) = &program.precision {
        plain.push(b".llmpu.precision");
        plain_data.push(p.as_bytes());
        plain_align.push(1);
    }
    let mut plain_idx = Vec::new();
    for name in plain {
        let n = w.add_section_name(name);
        plain_idx.push((w.reserve_section_index(), n));
    }
    w.reserve_symtab_section_index();
    w.reserve_strtab_section_index();
    w.reserve_shstrtab_section_index();

    // File ranges, in file order.
    let meta_off = w.reserve(META_SIZE as u64, 8);
    debug_assert_eq!(meta_off, META_OFFSET as u64);
    let text_off: Vec<u64> = texts
        .iter()
        .map(|t| w.reserve(t.len() as u64, INST_BYTES as u64))
        .collect();
    let plain_off: Vec<u64> = plain_data
        .iter()
        .zip(&plain_align)
        .map(|(d, &a)| w.reserve(d.len() as u64, a))
        .collect();
    w.reserve_null_symbol_index();
    let mut sym_names = Vec::new();
    for l in &labels {
        sym_names.push(w.add_string(l.name.as_bytes()));
        w.reserve_symbol_index(Some(text_idx[l.core as usize].0));
    }
    w.reserve_symtab();
    w.reserve_strtab()
        .map_err(|e| BinaryError::Write(e.to_string()))?;
    w.reserve_shstrtab()
        .map_err(|e| BinaryError::Write(e.to_string()))?;
    w.reserve_section_headers();
    let file_len = w.reserved_len();

    // Contents.
    w.write_file_header(&FileHeader {
        os_abi: elf::ELFOSABI_NONE,
        abi_version: 0,
        e_type: elf::ET_EXEC,
        e_machine: elf::Machine(EM_LLMPU),
        e_entry: 0,
        e_flags: elf::FileFlags(0),
    })
    .map_err(|e| BinaryError::Write(e.to_string()))?;
    let mut meta = Vec::with_capacity(META_SIZE);
    meta.extend_from_slice(&MAGIC);
    put_u32(&mut meta, FORMAT_VERSION);
    put_u32(&mut meta, program.cores.len() as u32);
    put_u32(&mut meta, 0); // CRC, patched below
    put_u32(&mut meta, 0); // reserved
    put_u64(&mut meta, file_len);
    w.pad_until(meta_off);
    w.write(&meta);
    for (t, &off) in texts.iter().zip(&text_off) {
        w.pad_until(off);
        w.write(t);
    }
    for (d, &off) in plain_data.iter().zip(&plain_off) {
        w.pad_until(off);
        w.write(d);
    }
    w.write_null_symbol();
    for (l, &name) in labels.iter().zip(&sym_names) {
        w.write_symbol(&Sym {
            section: Some(text_idx[l.core as usize].0.0),
            st_name: w.string_offset(Some(name)),
            st_info: elf::SymbolInfo::new(elf::STB_LOCAL, elf::STT_NOTYPE),
            st_other: elf::SymbolOther(0),
            st_shndx: elf::SymbolSection(0),
            st_value: l.pc as u64 * INST_BYTES as u64,
            st_size: 0,
        });
    }
    w.write_strtab();
    w.write_shstrtab();
    w.write_null_section_header();
    let progbits = |name, flags: u64, offset, size, align, entsize| SectionHeader {
        sh_name: name,
        sh_type: elf::SHT_PROGBITS,
        sh_flags: elf::SectionFlags(flags),
        sh_addr: 0,
        sh_offset: offset,
        sh_size: size,
        sh_link: 0,
        sh_info: 0,
        sh_addralign: align,
        sh_entsize: entsize,
    };
    let h = progbits(
        w.section_name_offset(Some(meta_name)),
        0,
        meta_off,
        META_SIZE as u64,
        8,
        0,
    );
    w.write_section_header(&h);
    let _ = meta_idx;
    for (i, (_, name)) in text_idx.iter().enumerate() {
        let h = progbits(
            w.section_name_offset(Some(*name)),
            elf::SHF_ALLOC.0 | elf::SHF_EXECINSTR.0,
            text_off[i],
            texts[i].len() as u64,
            INST_BYTES as u64,
            INST_BYTES as u64,
        );
        w.write_section_header(&h);
    }
    for (i, (_, name)) in plain_idx.iter().enumerate() {
        let flags = if i == 0 { elf::SHF_ALLOC.0 } else { 0 };
        let h = progbits(
            w.section_name_offset(Some(*name)),
            flags,
            plain_off[i],
            plain_data[i].len() as u64,
            plain_align[i],
            0,
        );
        w.write_section_header(&h);
    }
    w.write_symtab_section_header(labels.len() as u32 + 1);
    w.write_strtab_section_header();
    w.write_shstrtab_section_header();
    drop(w);
    if out.len() as u64 != file_len {
        return Err(BinaryError::Write(format!(
            "layout error: wrote {} bytes, reserved {file_len}",
            out.len()
        )));
    }
    let crc = crc32fast::hash(&out);
    out[META_OFFSET + META_CRC..META_OFFSET + META_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Recomputes and stores the CRC of a binary whose bytes were edited on purpose (tests and fuzzing
/// use it to reach the checks behind the checksum). Does nothing if the file is too short to hold
/// the `.llmpu.meta` section.
pub fn seal(bytes: &mut [u8]) {
    if bytes.len() < META_OFFSET + META_SIZE {
        return;
    }
    let at = META_OFFSET + META_CRC;
    bytes[at..at + 4].fill(0);
    let crc = crc32fast::hash(bytes);
    bytes[at..at + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Reads a binary file from disk and parses it with [`read`].
pub fn read_file(path: impl AsRef<Path>) -> Result<Program, BinaryError> {
    let path = path.as_ref();
    let bytes = crate::limits::read_file(path).map_err(|e| BinaryError::Io {
        path: path.display().to_string(),
        source: e.into(),
    })?;
    read(&bytes)
}

/// A bounds-checked little-endian reader over one section's bytes.
struct Cursor<'a> {
    section: &'static str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(section: &'static str, bytes: &'a [u8]) -> Self {
        Cursor {
            section,
            bytes,
            at: 0,
        }
    }

    fn err(&self, message: impl Into<String>) -> BinaryError {
        BinaryError::Malformed {
            section: self.section.into(),
            offset: self.at,
            message: message.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], BinaryError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                self.err(format!(
                    "{what} needs {n} bytes but only {} remain",
                    self.bytes.len() - self.at
                ))
            })?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self, what: &str) -> Result<u8, BinaryError> {
        Ok(self.take(1, what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, BinaryError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64, BinaryError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn string(&mut self, what: &str) -> Result<String, BinaryError> {
        let start = self.at;
        let n = self.u32(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| BinaryError::Malformed {
            section: self.section.into(),
            offset: start,
            message: format!("{what} is not valid UTF-8"),
        })
    }

    /// A record count, bounded by the bytes left (each record takes at least `min` bytes).
    fn count(&mut self, what: &str, min: usize) -> Result<usize, BinaryError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min) > self.bytes.len() - self.at {
            return Err(self.err(format!(
                "{what} {n} does not fit in the {} bytes left",
                self.bytes.len() - self.at
            )));
        }
        Ok(n)
    }

    fn finish(&self) -> Result<(), BinaryError> {
        if self.at != self.bytes.len() {
            return Err(self.err(format!("{} trailing bytes", self.bytes.len() - self.at)));
        }
        Ok(())
    }
}

fn elf_err(e: object::read::Error) -> BinaryError {
    BinaryError::Elf(e.to_string())
}

/// Parses and validates a binary. Never panics; see the module documentation for what is checked.
pub fn read(bytes: &[u8]) -> Result<Program, BinaryError> {
    // 1. Envelope and checksum, before trusting any structure.
    if bytes.len() < 4 || bytes[..4] != elf::ELFMAG {
        if bytes.len() < 4 && elf::ELFMAG.starts_with(bytes) {
            return Err(BinaryError::Truncated {
                len: bytes.len(),
                expected: (META_OFFSET + META_SIZE) as u64,
            });
        }
        return Err(BinaryError::BadMagic("no ELF magic"));
    }
    if bytes.len() < META_OFFSET + META_SIZE {
        return Err(BinaryError::Truncated {
            len: bytes.len(),
            expected: (META_OFFSET + META_SIZE) as u64,
        });
    }
    let meta = &bytes[META_OFFSET..META_OFFSET + META_SIZE];
    if meta[..8] != MAGIC {
        return Err(BinaryError::BadMagic("no `LLMPUBIN` magic at offset 64"));
    }
    let mut mc = Cursor::new(".llmpu.meta", meta);
    mc.take(8, "magic")?;
    let version = mc.u32("version")?;
    let core_count = mc.u32("core count")?;
    let stored = mc.u32("crc")?;
    let reserved = mc.u32("reserved")?;
    let file_size = mc.u64("file size")?;
    if file_size != bytes.len() as u64 {
        if (bytes.len() as u64) < file_size {
            return Err(BinaryError::Truncated {
                len: bytes.len(),
                expected: file_size,
            });
        }
        return Err(BinaryError::Malformed {
            section: ".llmpu.meta".into(),
            offset: 24,
            message: format!(
                "file size field says {file_size} bytes but the file has {}",
                bytes.len()
            ),
        });
    }
    let computed = {
        let mut h = crc32fast::Hasher::new();
        h.update(&bytes[..META_OFFSET + META_CRC]);
        h.update(&[0; 4]);
        h.update(&bytes[META_OFFSET + META_CRC + 4..]);
        h.finalize()
    };
    if computed != stored {
        return Err(BinaryError::Checksum { stored, computed });
    }
    if version != FORMAT_VERSION {
        return Err(BinaryError::BadVersion { found: version });
    }
    if reserved != 0 {
        return Err(mc.err("reserved field is not zero"));
    }
    if core_count == 0 || core_count > MAX_CORES {
        return Err(BinaryError::Malformed {
            section: ".llmpu.meta".into(),
            offset: 12,
            message: format!("core count {core_count} is not in 1..={MAX_CORES}"),
        });
    }

    // 2. ELF structure.
    let header = elf::FileHeader64::<LittleEndian>::parse(bytes).map_err(elf_err)?;
    let endian = LittleEndian;
    if header.e_ident().class != elf::ELFCLASS64 || header.e_ident().data != elf::ELFDATA2LSB {
        return Err(BinaryError::Elf("not ELF64 little-endian".into()));
    }
    if header.e_machine(endian).0 != EM_LLMPU {
        return Err(BinaryError::Elf(format!(
            "e_machine is {:#x}, expected {EM_LLMPU:#x}",
            header.e_machine(endian).0
        )));
    }
    if header.e_type(endian) != elf::ET_EXEC {
        return Err(BinaryError::Elf("e_type is not ET_EXEC".into()));
    }
    let sections = header.sections(endian, bytes).map_err(elf_err)?;
    let mut meta_seen = false;
    let mut texts: Vec<Option<(usize, &[u8])>> = vec![None; core_count as usize];
    let mut named: [Option<&[u8]>; 5] = [None; 5];
    const NAMED: [&str; 5] = [
        ".rodata",
        ".llmpu.data",
        ".llmpu.io",
        ".llmpu.target",
        ".llmpu.debug",
    ];
    let mut symtab_seen = false;
    let mut kv_table: Option<&[u8]> = None;
    let mut bounds_table: Option<&[u8]> = None;
    let mut precision_text: Option<&[u8]> = None;
    for (index, sh) in sections.enumerate() {
        if index.0 == 0 {
            continue;
        }
        let name_bytes = sections.section_name(endian, sh).map_err(elf_err)?;
        let name = std::str::from_utf8(name_bytes)
            .map_err(|_| BinaryError::Elf(format!("section {} name is not UTF-8", index.0)))?;
        let ty = sh.sh_type(endian);
        if name == ".symtab" || name == ".strtab" || name == ".shstrtab" {
            let want = if name == ".symtab" {
                elf::SHT_SYMTAB
            } else {
                elf::SHT_STRTAB
            };
            if ty != want {
                return Err(BinaryError::Elf(format!(
                    "section `{name}` has the wrong type"
                )));
            }
            if name == ".symtab" {
                if symtab_seen {
                    return Err(BinaryError::DuplicateSection(name.into()));
                }
                symtab_seen = true;
            }
            continue;
        }
        if ty != elf::SHT_PROGBITS {
            return Err(BinaryError::Elf(format!(
                "section `{name}` is not SHT_PROGBITS"
            )));
        }
        let data = sh
            .data(endian, bytes)
            .map_err(|_| BinaryError::Elf(format!("section `{name}` lies outside the file")))?;
        if name == ".llmpu.meta" {
            if meta_seen {
                return Err(BinaryError::DuplicateSection(name.into()));
            }
            meta_seen = true;
            if sh.sh_offset(endian) != META_OFFSET as u64 || data.len() != META_SIZE {
                return Err(BinaryError::Elf(
                    "`.llmpu.meta` is not the 32 bytes at offset 64".into(),
                ));
            }
        } else if name == ".llmpu.kv" {
            if kv_table.replace(data).is_some() {
                return Err(BinaryError::DuplicateSection(name.into()));
            }
        } else if name == ".llmpu.bounds" {
            if bounds_table.replace(data).is_some() {
                return Err(BinaryError::DuplicateSection(name.into()));
            }
        } else if name == ".llmpu.precision" {
            if precision_text.replace(data).is_some() {
                return Err(BinaryError::DuplicateSection(name.into()));
            }
        } else if let Some(k) = NAMED.iter().position(|n| *n == name) {
            if named[k].replace(data).is_some() {
                return Err(BinaryError::DuplicateSection(name.into()));
            }
        } else if let Some(core) = name
            .strip_prefix(".text.core")
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .filter(|n| *n == "0" || !n.starts_with('0'))
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|&c| c < core_count as usize)
        {
            if texts[core].replace((index.0, data)).is_some() {
                return Err(BinaryError::DuplicateSection(name.into()));
            }
        } else {
            return Err(BinaryError::UnexpectedSection(name.into()));
        }
    }
    if !meta_seen {
        return Err(BinaryError::MissingSection(".llmpu.meta".into()));
    }
    let mut named_data: [&[u8]; 5] = [&[]; 5];
    for (k, d) in named.iter().enumerate() {
        named_data[k] = d.ok_or_else(|| BinaryError::MissingSection(NAMED[k].into()))?;
    }
    let [rodata, data_table, io_table, target_text, debug_table] = named_data;

    // 3. Instructions.
    let mut cores = Vec::with_capacity(texts.len());
    let mut text_section_of = Vec::with_capacity(texts.len());
    for (core, t) in texts.iter().enumerate() {
        let (idx, data) = t.ok_or_else(|| BinaryError::MissingSection(text_name(core)))?;
        text_section_of.push(idx);
        if data.len() % INST_BYTES != 0 {
            return Err(BinaryError::Malformed {
                section: text_name(core),
                offset: data.len(),
                message: format!("length {} is not a multiple of {INST_BYTES}", data.len()),
            });
        }
        let mut stream = Vec::with_capacity(data.len() / INST_BYTES);
        for (pc, word) in data.chunks_exact(INST_BYTES).enumerate() {
            let word: &[u8; INST_BYTES] = word.try_into().expect("exact chunk");
            stream.push(Inst::decode(word).map_err(|source| BinaryError::Decode {
                core,
                pc,
                source,
            })?);
        }
        cores.push(stream);
    }

    // 4. Tables.
    let target_text = std::str::from_utf8(target_text)
        .map_err(|_| BinaryError::Target("`.llmpu.target` is not valid UTF-8".into()))?;
    let target = Target::from_toml(target_text, "<.llmpu.target>")
        .map_err(|e| BinaryError::Target(e.to_string()))?;

    let mut c = Cursor::new(".llmpu.data", data_table);
    let n = c.count("data segment count", 28)?;
    let mut data = Vec::new();
    for _ in 0..n {
        let name = c.string("data segment name")?;
        let hbm_addr = c.u64("data HBM address")?;
        let at = c.at;
        let offset = c.u64("data offset")?;
        let len = c.u64("data length")?;
        if offset % RODATA_ALIGN != 0 {
            return Err(BinaryError::Malformed {
                section: ".llmpu.data".into(),
                offset: at,
                message: format!("segment `{name}` offset {offset} is not {RODATA_ALIGN}-aligned"),
            });
        }
        let bytes = offset
            .checked_add(len)
            .filter(|&end| end <= rodata.len() as u64)
            .map(|end| rodata[offset as usize..end as usize].to_vec())
            .ok_or_else(|| BinaryError::Malformed {
                section: ".llmpu.data".into(),
                offset: at,
                message: format!(
                    "segment `{name}` at {offset}+{len} runs past the end of `.rodata` ({} bytes)",
                    rodata.len()
                ),
            })?;
        data.push(DataSegment {
            name,
            hbm_addr,
            bytes,
        });
    }
    c.finish()?;

    let mut c = Cursor::new(".llmpu.io", io_table);
    let n = c.count("I/O tensor count", 20)?;
    let mut io = Vec::new();
    for _ in 0..n {
        let name = c.string("I/O tensor name")?;
        let at = c.at;
        let dir = match c.u8("direction")? {
            0 => IoDir::Input,
            1 => IoDir::Output,
            d => {
                return Err(BinaryError::Malformed {
                    section: ".llmpu.io".into(),
                    offset: at,
                    message: format!("tensor `{name}`: unknown direction {d}"),
                });
            }
        };
        let dt = c.u8("dtype")?;
        let dtype = DType::ALL
            .get(dt as usize)
            .copied()
            .ok_or_else(|| BinaryError::Malformed {
                section: ".llmpu.io".into(),
                offset: at + 1,
                message: format!("tensor `{name}`: unknown dtype {dt}"),
            })?;
        if c.take(2, "padding")? != [0, 0] {
            return Err(c.err(format!("tensor `{name}`: padding is not zero")));
        }
        let rank = c.u32("rank")?;
        if rank > MAX_RANK {
            return Err(c.err(format!("tensor `{name}`: rank {rank} > {MAX_RANK}")));
        }
        let mut shape = Vec::with_capacity(rank as usize);
        for _ in 0..rank {
            shape.push(c.u64("dimension")?);
        }
        if io_bytes(dtype, &shape).is_none() {
            return Err(c.err(format!("tensor `{name}`: size overflows 64 bits")));
        }
        let hbm_addr = c.u64("I/O HBM address")?;
        io.push(IoTensor {
            name,
            dir,
            dtype,
            shape,
            hbm_addr,
        });
    }
    c.finish()?;

    let mut c = Cursor::new(".llmpu.debug", debug_table);
    let n = c.count("debug entry count", 12)?;
    let mut debug = Vec::new();
    for _ in 0..n {
        let core = c.u32("debug core")?;
        let pc = c.u32("debug pc")?;
        let loc = c.string("debug location")?;
        debug.push(DebugLoc { core, pc, loc });
    }
    c.finish()?;

    let kv = match kv_table {
        Some(t) => Some(read_kv(t)?),
        None => None,
    };
    let mut bounds = Vec::new();
    if let Some(t) = bounds_table {
        let mut c = Cursor::new(".llmpu.bounds", t);
        let n = c.count("bound count", 24)?;
        for _ in 0..n {
            let input = c.string("bound input")?;
            let lo = c.u64("bound lo")? as i64;
            let hi = c.u64("bound hi")? as i64;
            let loc = c.string("bound location")?;
            bounds.push(IndexBound { input, lo, hi, loc });
        }
        c.finish()?;
    }

    // 5. Labels.
    let mut labels = Vec::new();
    let symbols = sections
        .symbols(endian, bytes, elf::SHT_SYMTAB)
        .map_err(elf_err)?;
    let strings = symbols.strings();
    for (i, sym) in symbols.symbols().iter().enumerate() {
        if i == 0 {
            continue;
        }
        let bad = |m: String| BinaryError::Malformed {
            section: ".symtab".into(),
            offset: i * 24,
            message: m,
        };
        let name = sym.name(endian, strings).map_err(|e| bad(e.to_string()))?;
        let name = std::str::from_utf8(name)
            .map_err(|_| bad("symbol name is not UTF-8".into()))?
            .to_string();
        let shndx = sym.st_shndx(endian).0 as usize;
        let core = text_section_of
            .iter()
            .position(|&s| s == shndx)
            .ok_or_else(|| bad(format!("label `{name}` is not in a text section")))?;
        let value = sym.st_value(endian);
        if value % INST_BYTES as u64 != 0 || value / INST_BYTES as u64 > cores[core].len() as u64 {
            return Err(bad(format!(
                "label `{name}` value {value:#x} is not an instruction boundary of core {core}"
            )));
        }
        labels.push(Label {
            core: core as u32,
            pc: (value / INST_BYTES as u64) as u32,
            name,
        });
    }
    for l in &labels {
        check_name("label", &l.name)?;
    }
    check_unique_labels(&labels)?;
    for d in &data {
        check_name("data", &d.name)?;
    }
    for t in &io {
        check_name(t.dir.name(), &t.name)?;
    }

    let precision = precision_text
        .map(|t| {
            let bad = |m: &str| BinaryError::Malformed {
                section: ".llmpu.precision".into(),
                offset: 0,
                message: m.into(),
            };
            let s = std::str::from_utf8(t).map_err(|_| bad("precision name is not UTF-8"))?;
            if s.is_empty() {
                return Err(bad("precision name is empty"));
            }
            Ok(s.to_string())
        })
        .transpose()?;
    let program = Program {
        target,
        cores,
        data,
        io,
        labels,
        debug,
        kv,
        bounds,
        precision,
    };
    program.validate()?;
    Ok(program)
}

/// The `.llmpu.bounds` record (`spec/binary-format.md`).
fn bounds_record(bounds: &[IndexBound]) -> Vec<u8> {
    let mut t = Vec::new();
    put_u32(&mut t, bounds.len() as u32);
    for b in bounds {
        put_str(&mut t, &b.input);
        put_u64(&mut t, b.lo as u64);
        put_u64(&mut t, b.hi as u64);
        put_str(&mut t, &b.loc);
    }
    t
}

/// The `.llmpu.kv` record (`spec/binary-format.md`).
fn kv_record(kv: &KvRegion) -> Vec<u8> {
    let mut t = Vec::new();
    put_u64(&mut t, kv.hbm_addr);
    put_u64(&mut t, kv.bytes);
    t.push(kv.dtype as u8);
    t.extend_from_slice(&[0; 7]);
    for v in [
        kv.block_tokens,
        kv.batch,
        kv.max_blocks,
        kv.num_blocks,
        kv.past_len,
        kv.new_tokens,
        kv.table_addr,
    ] {
        put_u64(&mut t, v);
    }
    put_u32(&mut t, kv.slots.len() as u32);
    for s in &kv.slots {
        put_str(&mut t, &s.past);
        put_str(&mut t, &s.present);
        put_u32(&mut t, s.past_index);
        put_u32(&mut t, s.present_index);
        put_u64(&mut t, s.heads);
        put_u64(&mut t, s.head_dim);
        put_u64(&mut t, s.pool_addr);
    }
    t
}

fn read_kv(table: &[u8]) -> Result<KvRegion, BinaryError> {
    let mut c = Cursor::new(".llmpu.kv", table);
    let hbm_addr = c.u64("KV region address")?;
    let bytes = c.u64("KV region size")?;
    let at = c.at;
    let dt = c.u8("KV dtype")?;
    let dtype = DType::ALL
        .get(dt as usize)
        .copied()
        .ok_or_else(|| BinaryError::Malformed {
            section: ".llmpu.kv".into(),
            offset: at,
            message: format!("unknown dtype {dt}"),
        })?;
    if c.take(7, "padding")?.iter().any(|&b| b != 0) {
        return Err(c.err("padding is not zero"));
    }
    let mut f = [0u64; 7];
    for (v, what) in f.iter_mut().zip([
        "block_tokens",
        "batch",
        "max_blocks",
        "num_blocks",
        "past_len",
        "new_tokens",
        "table address",
    ]) {
        *v = c.u64(what)?;
    }
    let n = c.count("KV slot count", 40)?;
    let mut slots = Vec::new();
    for _ in 0..n {
        let past = c.string("KV past name")?;
        let present = c.string("KV present name")?;
        check_name("input", &past)?;
        check_name("output", &present)?;
        slots.push(KvSlot {
            past,
            present,
            past_index: c.u32("past index")?,
            present_index: c.u32("present index")?,
            heads: c.u64("heads")?,
            head_dim: c.u64("head_dim")?,
            pool_addr: c.u64("pool address")?,
        });
    }
    c.finish()?;
    Ok(KvRegion {
        hbm_addr,
        bytes,
        dtype,
        block_tokens: f[0],
        batch: f[1],
        max_blocks: f[2],
        num_blocks: f[3],
        past_len: f[4],
        new_tokens: f[5],
        table_addr: f[6],
        slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{Reg, Target as BranchTarget};

    fn with_kv() -> Program {
        let mut p = small();
        // Table: 1 × 2 i32 at 128; two pools of 2 blocks of [1 head, 16 tokens, 4] f32 = 256 B.
        p.kv = Some(KvRegion {
            hbm_addr: 128,
            bytes: 64 + 2 * 512,
            dtype: DType::F32,
            block_tokens: 16,
            batch: 1,
            max_blocks: 2,
            num_blocks: 2,
            past_len: 16,
            new_tokens: 1,
            table_addr: 128,
            slots: vec![
                KvSlot {
                    past: "past.k".into(),
                    present: "present.k".into(),
                    past_index: 1,
                    present_index: 1,
                    heads: 1,
                    head_dim: 4,
                    pool_addr: 192,
                },
                KvSlot {
                    past: "past.v".into(),
                    present: "present.v".into(),
                    past_index: 2,
                    present_index: 2,
                    heads: 1,
                    head_dim: 4,
                    pool_addr: 704,
                },
            ],
        });
        p
    }

    #[test]
    fn kv_region_round_trips_through_the_optional_section() {
        let p = with_kv();
        let bytes = write(&p).expect("write");
        assert_eq!(read(&bytes).expect("read"), p);
        // A program without a region has no `.llmpu.kv` section and still reads back.
        let plain = small();
        assert_eq!(read(&write(&plain).expect("write")).expect("read"), plain);
    }

    #[test]
    fn kv_region_with_a_pool_outside_it_is_rejected() {
        let mut p = with_kv();
        if let Some(kv) = p.kv.as_mut() {
            kv.slots[1].pool_addr = 768;
        }
        let e = write(&p).expect_err("pool outside the region");
        assert!(e.to_string().contains("outside the region"), "{e}");
        let mut q = with_kv();
        if let Some(kv) = q.kv.as_mut() {
            kv.past_len = 32;
        }
        let e = write(&q).expect_err("more tokens than blocks");
        assert!(e.to_string().contains("exceed"), "{e}");
    }

    fn small() -> Program {
        let mut p = Program::new(Target::default_target(), 1);
        p.cores[0] = vec![
            Inst::Li { rd: Reg(1), imm: 3 },
            Inst::Bne {
                rs1: Reg(1),
                rs2: Reg(0),
                target: BranchTarget(-1),
            },
            Inst::Halt {},
        ];
        p.data.push(DataSegment {
            name: "w".into(),
            hbm_addr: 0,
            bytes: vec![1, 2, 3],
        });
        p.io.push(IoTensor {
            name: "x".into(),
            dir: IoDir::Input,
            dtype: DType::BF16,
            shape: vec![2, 3],
            hbm_addr: 64,
        });
        p.labels.push(Label {
            core: 0,
            pc: 1,
            name: "l".into(),
        });
        p.debug.push(DebugLoc {
            core: 0,
            pc: 0,
            loc: "n".into(),
        });
        p
    }

    #[test]
    fn write_then_read_round_trips() {
        let p = small();
        let b = write(&p).unwrap();
        assert_eq!(read(&b).unwrap(), p);
        assert_eq!(write(&p).unwrap(), b, "writer is deterministic");
    }

    #[test]
    fn index_bounds_round_trip_and_must_name_an_input() {
        let mut p = small();
        p.bounds.push(IndexBound {
            input: "x".into(),
            lo: -256,
            hi: 256,
            loc: "/embed/Gather".into(),
        });
        let b = write(&p).unwrap();
        assert_eq!(read(&b).unwrap(), p);
        p.bounds[0].input = "nope".into();
        let e = write(&p).expect_err("not an input");
        assert!(e.to_string().contains("not a program input"), "{e}");
    }

    #[test]
    fn meta_sits_at_offset_64() {
        let b = write(&small()).unwrap();
        assert_eq!(&b[META_OFFSET..META_OFFSET + 8], &MAGIC);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let b = write(&small()).unwrap();
        for len in 0..b.len() {
            assert!(read(&b[..len]).is_err(), "prefix of {len} bytes accepted");
        }
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let b = write(&small()).unwrap();
        let mut m = b.clone();
        for i in 0..b.len() * 8 {
            m[i / 8] ^= 1 << (i % 8);
            assert!(read(&m).is_err(), "flip of bit {i} accepted");
            m[i / 8] ^= 1 << (i % 8);
        }
    }

    #[test]
    fn unknown_opcode_names_core_and_pc() {
        let mut b = write(&small()).unwrap();
        let text = b
            .windows(16)
            .position(|w| w == Inst::Halt {}.encode().unwrap())
            .unwrap();
        b[text] = 0xee;
        seal(&mut b);
        let e = read(&b).unwrap_err().to_string();
        assert_eq!(e, "core 0 pc 2: unknown opcode 0xee");
    }

    #[test]
    fn reserved_bits_are_rejected_with_location() {
        let mut b = write(&small()).unwrap();
        let text = b
            .windows(16)
            .position(|w| w == Inst::Halt {}.encode().unwrap())
            .unwrap();
        b[text + 15] = 0x80;
        seal(&mut b);
        let e = read(&b).unwrap_err().to_string();
        assert!(
            e.starts_with("core 0 pc 2: `halt` has non-zero reserved bits"),
            "{e}"
        );
    }

    #[test]
    fn checksum_mismatch_is_reported() {
        let mut b = write(&small()).unwrap();
        let last = b.len() - 1;
        b[last] ^= 0x10;
        assert!(matches!(read(&b), Err(BinaryError::Checksum { .. })));
    }

    #[test]
    fn data_outside_hbm_is_rejected_by_validate() {
        let mut p = small();
        p.data[0].hbm_addr = p.target.hbm.size_bytes;
        assert!(matches!(
            write(&p),
            Err(BinaryError::Program(ProgramError::OutsideHbm { .. }))
        ));
    }

    #[test]
    fn malformed_tables_are_rejected_after_resealing() {
        let b = write(&small()).unwrap();
        // The io record's dtype byte: find "x" name record (len 1, 'x') inside .llmpu.io.
        let pat = [1u8, 0, 0, 0, b'x', 0, DType::BF16 as u8];
        let at = b.windows(pat.len()).position(|w| w == pat).unwrap();
        let mut m = b.clone();
        m[at + 6] = DType::ALL.len() as u8;
        seal(&mut m);
        let e = read(&m).unwrap_err().to_string();
        assert!(
            e.contains(&format!("unknown dtype {}", DType::ALL.len())),
            "{e}"
        );
        let mut m = b.clone();
        m[at + 4] = 0xff;
        seal(&mut m);
        let e = read(&m).unwrap_err().to_string();
        assert!(e.contains("not valid UTF-8"), "{e}");
        let mut m = b.clone();
        m[at] = 200;
        seal(&mut m);
        assert!(matches!(read(&m), Err(BinaryError::Malformed { .. })));
    }

    #[test]
    fn names_with_nul_are_rejected_on_read_as_on_write() {
        // Found by the `binary_load` fuzz target: read accepted what write refuses.
        let b = write(&small()).unwrap();
        let pat = [1u8, 0, 0, 0, b'x', 0, DType::BF16 as u8];
        let at = b.windows(pat.len()).position(|w| w == pat).unwrap();
        let mut m = b.clone();
        m[at + 4] = 0;
        seal(&mut m);
        assert!(matches!(read(&m), Err(BinaryError::BadName { .. })));
        let mut p = small();
        p.io[0].name = "a\0".into();
        assert!(matches!(write(&p), Err(BinaryError::BadName { .. })));
    }

    #[test]
    fn multi_core_programs_round_trip() {
        let mut t = Target::default_target();
        t.cores = 4;
        let mut p = Program::new(t, 3);
        p.cores[0] = vec![Inst::Halt {}];
        p.cores[2] = vec![Inst::Nop {}, Inst::Halt {}];
        p.labels = vec![
            Label {
                core: 2,
                pc: 1,
                name: "b".into(),
            },
            Label {
                core: 0,
                pc: 1,
                name: "end".into(),
            },
        ];
        let b = write(&p).unwrap();
        let q = read(&b).unwrap();
        assert_eq!(q.cores, p.cores);
        assert_eq!(
            q.labels[0].name, "end",
            "labels come back sorted by (core, pc)"
        );
        assert_eq!(write(&q).unwrap(), b);
    }
}
