//! The programmatic assembler: build a [`Program`] instruction by instruction.
//!
//! This is the one place programs are put together: the text assembler ([`crate::assemble`])
//! drives it directive by directive, and the compiler's code emitter calls it directly. It keeps
//! a *current core set* (one or more cores receiving the same stream), per-core labels (forward
//! references resolve in [`Assembler::finish`]), a per-core pending debug location, and the data
//! segments and I/O tensors with the source span they came from.
//!
//! Invariants:
//! - Errors never stop the build: each is recorded (with the span set by [`Assembler::at`], if
//!   any) and [`Assembler::finish`] reports all of them.
//! - Cores are dense: core 0 always exists and a new core must be the next unused number.
//! - A `.loc` applies from the next instruction of its core; the debug map gets exactly one entry
//!   per `.loc` that is followed by an instruction (or per `.loc` in a core that stays empty), so
//!   disassembling and re-assembling reproduces the debug map entry for entry.
//! - `finish` returns labels sorted by `(core, pc)` (stable), the order the binary stores them in.

use crate::diag::{AsmError, Diagnostics, ErrorKind, Span, closest};
use llmpu_isa::inst::Opcode;
use llmpu_isa::program::HBM_ALIGN;
use llmpu_isa::{
    DType, DataSegment, DebugLoc, EncodeError, FieldKind, IndexBound, Inst, IoDir, IoTensor,
    KvRegion, KvSlot, Label, Program, ProgramError, Target, fields::mask,
};
use std::collections::HashMap;

/// Unknown labels per core that get a "did you mean" search (each compares with every label).
const MAX_LABEL_SUGGESTIONS: usize = 64;

/// A branch instruction waiting for its label to be resolved.
#[derive(Clone, Debug)]
struct Pending {
    opcode: Opcode,
    raw: Vec<u64>,
    /// Label name and the index of the target field it fills.
    label: Option<(String, usize)>,
    span: Option<Span>,
}

#[derive(Clone, Debug, Default)]
struct CoreState {
    insts: Vec<Pending>,
    labels: HashMap<String, (u32, Option<Span>)>,
    pending_loc: Option<String>,
}

/// Builds a [`Program`]; see the module documentation.
#[derive(Clone, Debug)]
pub struct Assembler {
    target: Target,
    target_span: Option<Span>,
    target_set: bool,
    cores: Vec<CoreState>,
    current: Vec<usize>,
    labels: Vec<Label>,
    debug: Vec<DebugLoc>,
    data: Vec<(DataSegment, Option<Span>)>,
    io: Vec<(IoTensor, Option<Span>)>,
    kv: Option<KvRegion>,
    bounds: Vec<IndexBound>,
    precision: Option<String>,
    errors: Vec<AsmError>,
    span: Option<Span>,
    fresh: u32,
}

impl Assembler {
    /// A new program for `target`, positioned at core 0.
    pub fn new(target: Target) -> Assembler {
        Assembler {
            target,
            target_span: None,
            target_set: false,
            cores: vec![CoreState::default()],
            current: vec![0],
            labels: Vec::new(),
            debug: Vec::new(),
            data: Vec::new(),
            io: Vec::new(),
            kv: None,
            bounds: Vec::new(),
            precision: None,
            errors: Vec::new(),
            span: None,
            fresh: 0,
        }
    }

    /// Sets the source span attached to what is added next (used by the text front end).
    pub fn at(&mut self, span: Option<Span>) -> &mut Self {
        self.span = span;
        self
    }

    /// Records an error at the current span.
    pub fn error(&mut self, kind: ErrorKind) -> &mut Self {
        self.errors.push(AsmError::new(kind, self.span));
        self
    }

    pub(crate) fn push_error(&mut self, e: AsmError) {
        self.errors.push(e);
    }

    /// The target the program is being built for.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Replaces the target. Setting it twice through this call is an error (the text `.target`
    /// directive maps here); use [`Assembler::new`] to choose the initial one.
    pub fn set_target(&mut self, target: Target) -> &mut Self {
        if self.target_set {
            let e = AsmError::new(ErrorKind::DuplicateTarget, self.span)
                .with_note(self.target_span, "first set here");
            self.errors.push(e);
            return self;
        }
        self.target_set = true;
        self.target_span = self.span;
        self.target = target;
        self
    }

    /// Overrides the target unconditionally (e.g. a command-line `--target`).
    pub fn override_target(&mut self, target: Target) -> &mut Self {
        self.target = target;
        self.target_set = true;
        self
    }

    /// Selects the core that following instructions, labels and locations go to.
    pub fn core(&mut self, core: u32) -> &mut Self {
        self.cores_list(&[core])
    }

    /// Selects several cores that all receive the following stream (`.core 0, 1, 2, 3`).
    pub fn cores_list(&mut self, cores: &[u32]) -> &mut Self {
        let mut sel = Vec::new();
        for &c in cores {
            if sel.contains(&(c as usize)) {
                self.error(ErrorKind::DuplicateCore(c));
                continue;
            }
            if c as usize > self.cores.len() {
                let next = self.cores.len() as u32;
                self.error(ErrorKind::CoreNotDense { core: c, next });
                continue;
            }
            if c as usize == self.cores.len() {
                self.cores.push(CoreState::default());
            }
            sel.push(c as usize);
        }
        if !sel.is_empty() {
            self.current = sel;
        }
        self
    }

    /// Number of cores so far.
    pub fn core_count(&self) -> usize {
        self.cores.len()
    }

    /// The pc the next instruction of the (first) current core gets.
    pub fn pc(&self) -> u32 {
        self.cores[self.current[0]].insts.len() as u32
    }

    /// A label name not used before by this builder: `{prefix}.{n}`.
    pub fn fresh_label(&mut self, prefix: &str) -> String {
        loop {
            let name = format!("{prefix}.{}", self.fresh);
            self.fresh += 1;
            if self.cores.iter().all(|c| !c.labels.contains_key(&name)) {
                return name;
            }
        }
    }

    /// Defines `name` at the current position of each current core.
    pub fn label(&mut self, name: impl Into<String>) -> &mut Self {
        let name = name.into();
        if name.is_empty() || name.contains('\0') {
            return self.error(ErrorKind::BadName {
                what: "label",
                name,
            });
        }
        for i in self.current.clone() {
            let pc = self.cores[i].insts.len() as u32;
            if let Some(&(_, first)) = self.cores[i].labels.get(&name) {
                let e = AsmError::new(
                    ErrorKind::DuplicateLabel {
                        name: name.clone(),
                        core: i as u32,
                    },
                    self.span,
                )
                .with_note(first, "first defined here");
                self.errors.push(e);
                continue;
            }
            self.cores[i].labels.insert(name.clone(), (pc, self.span));
            self.labels.push(Label {
                core: i as u32,
                pc,
                name: name.clone(),
            });
        }
        self
    }

    /// Sets the debug location of the following instructions of each current core.
    pub fn loc(&mut self, loc: impl Into<String>) -> &mut Self {
        let loc = loc.into();
        for i in self.current.clone() {
            self.cores[i].pending_loc = Some(loc.clone());
        }
        self
    }

    fn push(&mut self, opcode: Opcode, raw: Vec<u64>, label: Option<(String, usize)>) {
        for i in self.current.clone() {
            let core = &mut self.cores[i];
            let pc = core.insts.len() as u32;
            if let Some(loc) = core.pending_loc.take() {
                self.debug.push(DebugLoc {
                    core: i as u32,
                    pc,
                    loc,
                });
            }
            core.insts.push(Pending {
                opcode,
                raw: raw.clone(),
                label: label.clone(),
                span: self.span,
            });
        }
    }

    /// Appends an instruction (branch offsets taken as given) to each current core.
    pub fn inst(&mut self, inst: Inst) -> &mut Self {
        match inst.raw_fields() {
            Ok(raw) => self.push(inst.opcode(), raw, None),
            Err(e) => return self.error(ErrorKind::Encode(e)),
        }
        self
    }

    /// Appends a branch whose target field is filled with the offset to `label` (resolved in
    /// [`Assembler::finish`], so the label may come later). The target in `inst` is ignored.
    pub fn branch(&mut self, inst: Inst, label: &str) -> &mut Self {
        let d = inst.desc();
        let Some(k) = d.fields.iter().position(|f| f.kind == FieldKind::Target) else {
            return self.error(ErrorKind::NoTargetField(d.mnemonic));
        };
        // The target field is ignored (filled in later); every other field must fit.
        let mut raw = Vec::with_capacity(d.fields.len());
        for (i, (fd, r)) in d.fields.iter().zip(inst.raw_field_results()).enumerate() {
            match r {
                _ if i == k => raw.push(0),
                Ok(bits) => raw.push(bits),
                Err(source) => {
                    return self.error(ErrorKind::Encode(EncodeError::Field {
                        mnemonic: d.mnemonic,
                        field: fd.name,
                        source,
                    }));
                }
            }
        }
        self.push(inst.opcode(), raw, Some((label.to_string(), k)));
        self
    }

    /// Appends an instruction given as raw field bits in table order; `label` names the label a
    /// target field (by index) refers to. Used by the text front end, which has range-checked the
    /// fields already.
    pub(crate) fn raw(&mut self, opcode: Opcode, raw: Vec<u64>, label: Option<(String, usize)>) {
        self.push(opcode, raw, label);
    }

    /// Adds a constant data segment at an HBM address.
    pub fn data(&mut self, name: impl Into<String>, hbm_addr: u64, bytes: Vec<u8>) -> &mut Self {
        let name = name.into();
        if name.is_empty() || name.contains('\0') {
            return self.error(ErrorKind::BadName { what: "data", name });
        }
        self.data.push((
            DataSegment {
                name,
                hbm_addr,
                bytes,
            },
            self.span,
        ));
        self
    }

    /// Appends bytes to the most recently added data segment (`.hex`, `.f32`, … lines).
    pub fn extend_data(&mut self, bytes: &[u8]) -> &mut Self {
        match self.data.last_mut() {
            Some((d, _)) => d.bytes.extend_from_slice(bytes),
            None => {
                self.error(ErrorKind::NoDataSegment("data".into()));
            }
        }
        self
    }

    /// Adds an I/O tensor descriptor.
    pub fn io(&mut self, tensor: IoTensor) -> &mut Self {
        if tensor.name.is_empty() || tensor.name.contains('\0') {
            let what = tensor.dir.name();
            return self.error(ErrorKind::BadName {
                what,
                name: tensor.name,
            });
        }
        self.io.push((tensor, self.span));
        self
    }

    /// Sets the paged KV-cache region (`spec/kv-cache.md`); its slots follow with
    /// [`Assembler::kv_slot`].
    pub fn kv(&mut self, region: KvRegion) -> &mut Self {
        if self.kv.is_some() {
            return self.error(ErrorKind::Kv("the KV region is declared twice".into()));
        }
        self.kv = Some(region);
        self
    }

    /// Adds a slot (one cache) to the KV region.
    pub fn kv_slot(&mut self, slot: KvSlot) -> &mut Self {
        match self.kv.as_mut() {
            Some(k) => k.slots.push(slot),
            None => {
                return self.error(ErrorKind::Kv(
                    "`.kv_slot` before the `.kv` region it belongs to".into(),
                ));
            }
        }
        self
    }

    /// Records the compile precision (`fp32`, `bf16`) the program's data was produced in.
    pub fn precision(&mut self, name: &str) -> &mut Self {
        self.precision = Some(name.to_string());
        self
    }

    /// Adds the value range of an integer input that indexes a table.
    pub fn bound(&mut self, b: IndexBound) -> &mut Self {
        self.bounds.push(b);
        self
    }

    /// Adds an input tensor.
    pub fn input(&mut self, name: &str, dtype: DType, shape: &[u64], hbm_addr: u64) -> &mut Self {
        self.io(IoTensor {
            name: name.into(),
            dir: IoDir::Input,
            dtype,
            shape: shape.to_vec(),
            hbm_addr,
        })
    }

    /// Adds an output tensor.
    pub fn output(&mut self, name: &str, dtype: DType, shape: &[u64], hbm_addr: u64) -> &mut Self {
        self.io(IoTensor {
            name: name.into(),
            dir: IoDir::Output,
            dtype,
            shape: shape.to_vec(),
            hbm_addr,
        })
    }

    /// Resolves labels, checks the whole program and returns it, or every error found.
    pub fn finish(self) -> Result<Program, Diagnostics> {
        self.finish_errors()
            .map_err(|errors| Diagnostics::new("<assembler>", "", errors))
    }

    pub(crate) fn finish_errors(mut self) -> Result<Program, Vec<AsmError>> {
        let mut cores: Vec<Vec<Inst>> = Vec::with_capacity(self.cores.len());
        let mut inst_spans: Vec<Vec<Option<Span>>> = Vec::new();
        for (ci, core) in self.cores.iter_mut().enumerate() {
            if core.insts.is_empty()
                && let Some(loc) = core.pending_loc.take()
            {
                self.debug.push(DebugLoc {
                    core: ci as u32,
                    pc: 0,
                    loc,
                });
            }
            let len = core.insts.len();
            let mut stream = Vec::with_capacity(len);
            let mut spans = Vec::with_capacity(len);
            // A suggestion compares the name with every label of the core: only the first few
            // unknown labels get one, so a file of many keeps its diagnostics linear in size.
            let mut suggestions_left = MAX_LABEL_SUGGESTIONS;
            for (pc, p) in core.insts.iter().enumerate() {
                let mut raw = p.raw.clone();
                if let Some((name, k)) = &p.label {
                    match core.labels.get(name) {
                        Some(&(dest, _)) => {
                            let off = dest as i64 - pc as i64;
                            let w = p.opcode.desc().fields[*k].width;
                            raw[*k] = (off as u64) & mask(w);
                        }
                        None => {
                            let mut e = AsmError::new(
                                ErrorKind::UnknownLabel {
                                    name: name.clone(),
                                    core: ci as u32,
                                },
                                p.span,
                            );
                            if suggestions_left > 0 {
                                suggestions_left -= 1;
                                if let Some(s) =
                                    closest(name, core.labels.keys().map(|k| k.as_str()))
                                {
                                    e = e.with_help(format!("did you mean `{s}`?"));
                                }
                            }
                            self.errors.push(e);
                        }
                    }
                }
                match Inst::from_raw(p.opcode, &raw) {
                    Ok(i) => {
                        if let Some(off) = i.branch_offset() {
                            let dest = pc as i64 + off as i64;
                            if dest < 0 || dest >= len as i64 {
                                self.errors.push(AsmError::new(
                                    ErrorKind::BranchOutOfRange {
                                        core: ci as u32,
                                        dest,
                                        len,
                                    },
                                    p.span,
                                ));
                            }
                        }
                        stream.push(i);
                    }
                    Err(e) => self
                        .errors
                        .push(AsmError::new(ErrorKind::Encode(e), p.span)),
                }
                spans.push(p.span);
            }
            cores.push(stream);
            inst_spans.push(spans);
        }
        if cores.len() > self.target.cores as usize {
            self.errors.push(AsmError::new(
                ErrorKind::TooManyCores {
                    used: cores.len(),
                    available: self.target.cores,
                    target: self.target.name.clone(),
                },
                self.target_span,
            ));
        }
        self.check_regions();
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        self.debug.sort_by_key(|d| (d.core, d.pc));
        self.labels.sort_by_key(|l| (l.core, l.pc));
        let region_span: HashMap<String, Option<Span>> = self
            .data
            .iter()
            .map(|(d, s)| (d.name.clone(), *s))
            .chain(self.io.iter().map(|(t, s)| (t.name.clone(), *s)))
            .collect();
        let program = Program {
            target: self.target,
            cores,
            data: self.data.into_iter().map(|(d, _)| d).collect(),
            io: self.io.into_iter().map(|(t, _)| t).collect(),
            labels: self.labels,
            debug: self.debug,
            kv: self.kv,
            bounds: self.bounds,
            precision: self.precision,
        };
        match program.validate() {
            Ok(()) => Ok(program),
            Err(e) => {
                let span = match &e {
                    ProgramError::BranchOutOfRange { core, pc, .. } => inst_spans
                        .get(*core)
                        .and_then(|s| s.get(*pc))
                        .copied()
                        .flatten(),
                    ProgramError::OutsideHbm { name, .. }
                    | ProgramError::Misaligned { name, .. }
                    | ProgramError::TensorTooLarge { name, .. }
                    | ProgramError::DuplicateName(name) => region_span.get(name).copied().flatten(),
                    ProgramError::Overlap { b, .. } => region_span.get(b).copied().flatten(),
                    _ => None,
                };
                Err(vec![AsmError::new(ErrorKind::Program(e), span)])
            }
        }
    }

    /// Per-region checks with spans, reporting every problem (validate stops at the first).
    fn check_regions(&mut self) {
        let size = self.target.hbm.size_bytes;
        let mut seen: HashMap<&str, Option<Span>> = HashMap::new();
        let mut spans: Vec<(u64, u64, &str, Option<Span>)> = Vec::new();
        let mut errors = Vec::new();
        let regions = self
            .data
            .iter()
            .map(|(d, s)| ("data", &d.name, d.hbm_addr, Some(d.bytes.len() as u64), *s))
            .chain(
                self.io
                    .iter()
                    .map(|(t, s)| (t.dir.name(), &t.name, t.hbm_addr, t.bytes(), *s)),
            );
        for (what, name, addr, len, span) in regions {
            if let Some(first) = seen.insert(name.as_str(), span) {
                errors.push(
                    AsmError::new(ErrorKind::DuplicateName(name.clone()), span)
                        .with_note(first, "first used here"),
                );
                continue;
            }
            let Some(len) = len else {
                errors.push(AsmError::new(ErrorKind::TensorTooLarge(name.clone()), span));
                continue;
            };
            if addr.checked_add(len).is_none_or(|end| end > size) {
                errors.push(AsmError::new(
                    ErrorKind::OutsideHbm {
                        what,
                        name: name.clone(),
                        addr,
                        len,
                        size,
                    },
                    span,
                ));
                continue;
            }
            if addr % HBM_ALIGN != 0 {
                errors.push(AsmError::new(
                    ErrorKind::Misaligned {
                        what,
                        name: name.clone(),
                        addr,
                        align: HBM_ALIGN,
                    },
                    span,
                ));
            }
            if len > 0 {
                spans.push((addr, addr + len, name, span));
            }
        }
        spans.sort_by_key(|s| (s.0, s.1));
        let mut reach: Option<(u64, u64, &str, Option<Span>)> = None;
        for s in spans {
            if let Some(r) = reach {
                if s.0 < r.1 {
                    let (later, earlier) = match (s.3, r.3) {
                        (Some(a), Some(b)) if a < b => (r, s),
                        _ => (s, r),
                    };
                    errors.push(
                        AsmError::new(
                            ErrorKind::Overlap {
                                a: later.2.to_string(),
                                a_addr: later.0,
                                a_end: later.1,
                                b: earlier.2.to_string(),
                                b_addr: earlier.0,
                                b_end: earlier.1,
                            },
                            later.3,
                        )
                        .with_note(earlier.3, format!("`{}` is placed here", earlier.2)),
                    );
                }
                if s.1 > r.1 {
                    reach = Some(s);
                }
            } else {
                reach = Some(s);
            }
        }
        self.errors.extend(errors);
    }
}

/// Byte size of an I/O tensor, `None` on overflow.
#[cfg(test)]
mod tests {
    use super::*;
    use llmpu_isa::{BranchTarget, Reg};

    #[test]
    fn forward_branches_resolve_at_finish() {
        let mut a = Assembler::new(Target::default_target());
        a.label("top");
        a.inst(Inst::Li { rd: Reg(1), imm: 1 });
        a.branch(
            Inst::Beq {
                rs1: Reg(1),
                rs2: Reg(0),
                target: BranchTarget(0),
            },
            "end",
        );
        a.branch(
            Inst::Jmp {
                target: BranchTarget(0),
            },
            "top",
        );
        a.label("end");
        a.inst(Inst::Halt {});
        let p = a.finish().unwrap();
        assert_eq!(p.cores[0][1].branch_offset(), Some(2));
        assert_eq!(p.cores[0][2].branch_offset(), Some(-2));
        assert_eq!(p.labels.len(), 2);
    }

    #[test]
    fn every_error_is_collected() {
        let mut a = Assembler::new(Target::default_target());
        a.branch(
            Inst::Jmp {
                target: BranchTarget(0),
            },
            "nowhere",
        );
        a.core(3);
        a.label("x").label("x");
        a.inst(Inst::Halt {});
        let d = a.finish().unwrap_err();
        assert_eq!(d.len(), 3, "{d}");
    }

    #[test]
    fn a_branch_with_an_unencodable_register_is_an_error_not_r0() {
        let mut a = Assembler::new(Target::default_target());
        a.label("l").branch(
            Inst::Beq {
                rs1: Reg(40),
                rs2: Reg(1),
                target: BranchTarget(0),
            },
            "l",
        );
        a.inst(Inst::Halt {});
        let d = a.finish().unwrap_err().to_string();
        assert!(d.contains("rs1"), "{d}");
    }

    #[test]
    fn shared_streams_go_to_every_listed_core() {
        let mut t = Target::default_target();
        t.cores = 4;
        let mut a = Assembler::new(t);
        a.cores_list(&[0, 1, 2]);
        a.loc("n").label("l").inst(Inst::Halt {});
        let p = a.finish().unwrap();
        assert_eq!(p.cores.len(), 3);
        assert_eq!(p.labels.len(), 3);
        assert_eq!(p.debug.len(), 3);
    }
}
