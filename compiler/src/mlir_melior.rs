//! The real-MLIR checker behind [`crate::mlir`] (feature `mlir`), on melior 0.27 / MLIR 22.
//!
//! One fresh single-threaded `Context` per check (`func` registered and loaded, unregistered dialects
//! allowed), with a diagnostic handler that captures everything MLIR emits. Steps: MLIR parses the
//! text (MLIR's parser runs the verifier too); our parser parses it; both op trees are walked in
//! pre-order and must have the same shape; MLIR verifies the module explicitly; MLIR prints the generic
//! form, parses it again, and that module must have the same shape too.
//!
//! Locating verifier diagnostics: an op's MLIR location is its `loc(...)` (an ONNX node name), not a
//! place in the text. When MLIR rejects the text with a diagnostic that has no `file:line:col` of the
//! text, the module is parsed with our parser, every op's location is replaced by
//! `loc("llmpu-op-index:N")` (N = pre-order index), printed by our printer and handed to MLIR again:
//! the diagnostics of that run name the op, whose span in the original text our parser recorded.
//!
//! Invariants: no MLIR output reaches stderr; MLIR parser locations (`file:line:col` of the text, byte
//! columns) map to byte offsets of the same text; the text handed to MLIR has no NUL byte (melior's
//! `Module::parse` would panic on one).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use melior::Context;
use melior::diagnostic::{Diagnostic, DiagnosticSeverity};
use melior::dialect::{DialectHandle, DialectRegistry};
use melior::ir::block::BlockLike;
use melior::ir::operation::{OperationLike, OperationPrintingFlags, OperationRef};
use melior::ir::{Location as MLocation, Module as MModule, RegionLike};

use crate::ir::print::write_string_literal;
use crate::ir::print_module;
use crate::ir::{Location, Module, OpId, Span};
use crate::mlir::{MlirDiagnostic, MlirError, MlirReport, Severity};
use crate::parser::parse_module;

/// Prefix of the name locations that number the ops (`loc("llmpu-op-index:N")`).
const OP_INDEX: &str = "llmpu-op-index:";

/// A location as MLIR reported it, detached from the context.
#[derive(Clone, Debug)]
enum RawLoc {
    /// A place in the parsed text (MLIR's parser gives these; we never print such locations).
    FileLineCol {
        line: usize,
        col: usize,
    },
    Name {
        name: String,
        child: Box<RawLoc>,
    },
    /// Callee/caller and fused locations: their parts, most specific first.
    Nested(Vec<RawLoc>),
    Other,
}

impl RawLoc {
    fn capture(l: MLocation) -> RawLoc {
        if l.is_file_line_col_range() {
            RawLoc::FileLineCol {
                line: l.file_line_col_range_start_line(),
                col: l.file_line_col_range_start_column(),
            }
        } else if l.is_name() {
            RawLoc::Name {
                name: l
                    .name_value()
                    .as_string_ref()
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                child: Box::new(RawLoc::capture(l.name_child_location())),
            }
        } else if l.is_call_site() {
            RawLoc::Nested(vec![
                RawLoc::capture(l.call_site_callee()),
                RawLoc::capture(l.call_site_caller()),
            ])
        } else if l.is_fused() {
            RawLoc::Nested(
                (0..l.fused_num_locations())
                    .map(|i| RawLoc::capture(l.fused_location(i)))
                    .collect(),
            )
        } else {
            RawLoc::Other
        }
    }
}

/// A diagnostic as MLIR reported it, detached from the context.
#[derive(Clone, Debug)]
struct RawDiag {
    severity: Severity,
    message: String,
    loc: RawLoc,
    notes: Vec<RawDiag>,
}

impl RawLoc {
    /// True when some part is a `file:line:col` (of the parsed text: we never print such locations).
    fn has_file_line_col(&self) -> bool {
        match self {
            RawLoc::FileLineCol { .. } => true,
            RawLoc::Name { child, .. } => child.has_file_line_col(),
            RawLoc::Nested(v) => v.iter().any(RawLoc::has_file_line_col),
            RawLoc::Other => false,
        }
    }
}

impl RawDiag {
    /// True when the diagnostic and its notes all have a place in the text.
    fn located_in_text(&self) -> bool {
        self.loc.has_file_line_col() && self.notes.iter().all(RawDiag::located_in_text)
    }

    fn capture(d: &Diagnostic) -> RawDiag {
        let severity = match d.severity() {
            DiagnosticSeverity::Error => Severity::Error,
            DiagnosticSeverity::Warning => Severity::Warning,
            DiagnosticSeverity::Remark => Severity::Remark,
            DiagnosticSeverity::Note => Severity::Note,
        };
        let notes = (0..d.note_count())
            .filter_map(|i| d.note(i).ok())
            .map(|n| RawDiag::capture(&n))
            .filter(|n| !n.message.starts_with("see current operation"))
            .collect();
        RawDiag {
            severity,
            message: d.to_string(),
            loc: RawLoc::capture(d.location()),
            notes,
        }
    }
}

/// The shape of one op: what must agree between our parse and MLIR's.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OpShape {
    name: String,
    operands: usize,
    results: usize,
    successors: usize,
    /// Per region, per block: the number of block arguments.
    regions: Vec<Vec<usize>>,
}

impl std::fmt::Display for OpShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "'{}' ({} operands, {} results, {} successors, regions {:?} [block arguments per \
             block])",
            self.name, self.operands, self.results, self.successors, self.regions
        )
    }
}

/// Maps MLIR locations to our text and ops.
struct Mapper<'a> {
    src: &'a str,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    /// Our module and its ops in pre-order (once our parser has run).
    ours: Option<(&'a Module, &'a [OpId])>,
    /// Whether `file:line:col` locations are places in `src` (false when MLIR parsed another text).
    text_locations: bool,
}

impl<'a> Mapper<'a> {
    fn new(src: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        Mapper {
            src,
            line_starts,
            ours: None,
            text_locations: true,
        }
    }

    /// The span and op of the first location part that maps onto the text.
    fn locate(&self, loc: &RawLoc) -> (Option<Span>, Option<(String, Location)>) {
        match loc {
            RawLoc::Name { name, child } => {
                let index = name
                    .strip_prefix(OP_INDEX)
                    .and_then(|i| i.parse::<usize>().ok());
                match (index, self.ours) {
                    (Some(i), Some((m, ops))) if i < ops.len() => {
                        let d = m.op(ops[i]);
                        (d.span, Some((d.name.clone(), d.loc.clone())))
                    }
                    _ => match self.locate(child) {
                        (None, op) => (self.find_name_loc(name), op),
                        found => found,
                    },
                }
            }
            RawLoc::FileLineCol { .. } if !self.text_locations => (None, None),
            RawLoc::FileLineCol { line, col } => {
                let Some(&start) = line.checked_sub(1).and_then(|l| self.line_starts.get(l)) else {
                    return (None, None);
                };
                let off = (start + col.saturating_sub(1)).min(self.src.len()) as u32;
                (
                    Some(Span {
                        start: off,
                        end: off,
                    }),
                    None,
                )
            }
            RawLoc::Nested(parts) => parts
                .iter()
                .map(|p| self.locate(p))
                .find(|(s, _)| s.is_some())
                .unwrap_or((None, None)),
            RawLoc::Other => (None, None),
        }
    }

    /// The `loc("name")` in the text when it occurs exactly once (how an op is found when our parser
    /// cannot match MLIR's ops to spans).
    fn find_name_loc(&self, name: &str) -> Option<Span> {
        let mut lit = String::from("loc(");
        write_string_literal(&mut lit, name).ok()?;
        lit.push(')');
        let mut hits = self.src.match_indices(&lit);
        let (start, _) = hits.next()?;
        if hits.next().is_some() {
            return None;
        }
        Some(Span {
            start: start as u32,
            end: (start + lit.len()) as u32,
        })
    }

    fn map(&self, d: &RawDiag) -> MlirDiagnostic {
        let (span, op) = self.locate(&d.loc);
        MlirDiagnostic {
            severity: d.severity,
            message: d.message.clone(),
            span,
            op,
            notes: d.notes.iter().map(|n| self.map(n)).collect(),
        }
    }
}

fn context() -> Context {
    let registry = DialectRegistry::new();
    DialectHandle::func().insert_dialect(&registry);
    let context = Context::new_with_registry(&registry, false);
    context.load_all_available_dialects();
    context.set_allow_unregistered_dialects(true);
    context
}

/// Pre-order shapes of MLIR's op tree under `top` (itself included). Iterative, so nesting depth
/// is not limited by the stack.
fn shapes<'c: 'a, 'a>(top: OperationRef<'c, 'a>, out: &mut Vec<OpShape>) {
    let mut stack = vec![top];
    while let Some(op) = stack.pop() {
        let name = op
            .name()
            .as_string_ref()
            .as_str()
            .unwrap_or("<non-UTF-8 name>")
            .to_string();
        let mut regions = vec![];
        let mut children = vec![];
        for region in op.regions() {
            let mut blocks = vec![];
            let mut block = region.first_block();
            while let Some(b) = block {
                blocks.push(b.argument_count());
                let mut child = b.first_operation();
                while let Some(c) = child {
                    child = c.next_in_block();
                    children.push(c);
                }
                block = b.next_in_region();
            }
            regions.push(blocks);
        }
        out.push(OpShape {
            name,
            operands: op.operand_count(),
            results: op.result_count(),
            successors: op.successor_count(),
            regions,
        });
        stack.extend(children.into_iter().rev());
    }
}

fn our_shapes(m: &Module, ops: &[OpId]) -> Vec<OpShape> {
    ops.iter()
        .map(|&o| {
            let d = m.op(o);
            OpShape {
                name: d.name.clone(),
                operands: d.operands.len(),
                results: d.results.len(),
                successors: d.successors.len(),
                regions: d
                    .regions
                    .iter()
                    .map(|&r| {
                        m.region(r)
                            .blocks
                            .iter()
                            .map(|&b| m.block(b).args.len())
                            .collect()
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The first difference between MLIR's shapes and ours, with our op's span.
fn compare(
    theirs: &[OpShape],
    ours: &[OpShape],
    m: &Module,
    ops: &[OpId],
) -> Option<(String, Option<Span>)> {
    for (i, (t, o)) in theirs.iter().zip(ours).enumerate() {
        if t != o {
            return Some((
                format!("op #{i} is {t} in MLIR but {o} in our IR"),
                m.op(ops[i]).span,
            ));
        }
    }
    if theirs.len() != ours.len() {
        let i = theirs.len().min(ours.len());
        return Some((
            format!("MLIR has {} ops, our IR {}", theirs.len(), ours.len()),
            ops.get(i).and_then(|&o| m.op(o).span),
        ));
    }
    None
}

/// Takes the captured error diagnostics (a fallback one when MLIR gave none).
fn take_errors(sink: &RefCell<Vec<RawDiag>>, fallback: &str) -> Vec<RawDiag> {
    let mut v: Vec<RawDiag> = sink
        .borrow_mut()
        .drain(..)
        .filter(|d| d.severity == Severity::Error)
        .collect();
    if v.is_empty() {
        v.push(RawDiag {
            severity: Severity::Error,
            message: fallback.into(),
            loc: RawLoc::Other,
            notes: vec![],
        });
    }
    v
}

pub(crate) fn check_text(src: &str) -> Result<MlirReport, MlirError> {
    if let Some(offset) = src.find('\0') {
        return Err(MlirError::NulByte { offset });
    }
    let ctx = context();
    let sink: Rc<RefCell<Vec<RawDiag>>> = Rc::default();
    let handler_sink = sink.clone();
    let handler = ctx.attach_diagnostic_handler(move |d| {
        handler_sink.borrow_mut().push(RawDiag::capture(&d));
        true
    });
    let result = check_in(&ctx, src, &sink);
    ctx.detach_diagnostic_handler(handler);
    result
}

fn check_in(
    ctx: &Context,
    src: &str,
    sink: &RefCell<Vec<RawDiag>>,
) -> Result<MlirReport, MlirError> {
    let mut mapper = Mapper::new(src);
    let Some(module) = MModule::parse(ctx, src) else {
        let errors = take_errors(sink, "MLIR's parser failed without a diagnostic");
        return Err(locate_rejection(ctx, src, sink, errors));
    };
    let ours = parse_module(src).map_err(|e| MlirError::OurParse(e.diagnostic))?;
    let ops = ours.walk_all();
    mapper.ours = Some((&ours, &ops));
    let expected = our_shapes(&ours, &ops);

    let mut theirs = vec![];
    shapes(module.as_operation(), &mut theirs);
    if let Some((message, span)) = compare(&theirs, &expected, &ours, &ops) {
        return Err(MlirError::Structure { message, span });
    }

    if !module.as_operation().verify() {
        let errors = take_errors(sink, "MLIR's verifier failed without a diagnostic");
        return Err(MlirError::Verify(
            errors.iter().map(|d| mapper.map(d)).collect(),
        ));
    }

    let generic = module
        .as_operation()
        .to_string_with_flags(OperationPrintingFlags::new().print_generic_operation_form())
        .map_err(|e| MlirError::GenericRoundTrip {
            message: format!("MLIR could not print it: {e}"),
        })?;
    let Some(reparsed) = MModule::parse(ctx, &generic) else {
        let errors = take_errors(sink, "no diagnostic");
        return Err(MlirError::GenericRoundTrip {
            message: format!("MLIR's parser rejects it: {}", errors[0].message),
        });
    };
    let mut again = vec![];
    shapes(reparsed.as_operation(), &mut again);
    if let Some((message, _)) = compare(&again, &expected, &ours, &ops) {
        return Err(MlirError::GenericRoundTrip { message });
    }

    let mut op_counts = BTreeMap::new();
    for s in &expected {
        *op_counts.entry(s.name.clone()).or_insert(0) += 1;
    }
    let warnings = sink.borrow().iter().map(|d| mapper.map(d)).collect();
    Ok(MlirReport {
        ops: expected.len(),
        op_counts,
        regions: expected.iter().map(|s| s.regions.len()).sum(),
        blocks: expected.iter().flat_map(|s| &s.regions).map(Vec::len).sum(),
        generic,
        warnings,
    })
}

/// The error for a text MLIR's parser (which also verifies) rejected. Diagnostics located in the text
/// are syntax errors ([`MlirError::Parse`]). The others are located at ops' `loc(...)`: the text is
/// re-printed by our printer with every op located by its index, and MLIR's diagnostics on that text
/// are mapped to the ops' spans ([`MlirError::Verify`]).
fn locate_rejection(
    ctx: &Context,
    src: &str,
    sink: &RefCell<Vec<RawDiag>>,
    errors: Vec<RawDiag>,
) -> MlirError {
    let mapper = Mapper::new(src);
    let as_parse =
        |errors: &[RawDiag]| MlirError::Parse(errors.iter().map(|d| mapper.map(d)).collect());
    if errors.iter().all(RawDiag::located_in_text) {
        return as_parse(&errors);
    }
    let Ok(ours) = parse_module(src) else {
        return as_parse(&errors);
    };
    let ops = ours.walk_all();
    let mut numbered = ours.clone();
    for (i, &op) in ops.iter().enumerate() {
        numbered.op_mut(op).loc = Location::Name(format!("{OP_INDEX}{i}").into());
    }
    let text = print_module(&numbered);
    if MModule::parse(ctx, &text).is_some() {
        // Rejected only with the original locations: report what MLIR said about the text.
        return as_parse(&errors);
    }
    let located = take_errors(sink, "MLIR's parser failed without a diagnostic");
    let mapper = Mapper {
        ours: Some((&ours, &ops)),
        text_locations: text == src,
        ..Mapper::new(src)
    };
    MlirError::Verify(located.iter().map(|d| mapper.map(d)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_names_the_first_differing_op_and_points_at_our_span() {
        let src = "module {\n  func.func @f() {\n    func.return\n  }\n}\n";
        let m = parse_module(src).expect("parse");
        let ops = m.walk_all();
        let ours = our_shapes(&m, &ops);
        assert_eq!(compare(&ours, &ours, &m, &ops), None);
        let mut theirs = ours.clone();
        theirs[2].operands = 1;
        let (msg, span) = compare(&theirs, &ours, &m, &ops).expect("a difference");
        assert!(
            msg.starts_with("op #2 is 'func.return' (1 operands"),
            "{msg}"
        );
        assert_eq!(span, m.op(ops[2]).span);
        let (msg, _) = compare(&ours[..2], &ours, &m, &ops).expect("a difference");
        assert_eq!(msg, "MLIR has 2 ops, our IR 3");
    }

    #[test]
    fn a_name_location_is_found_in_the_text_only_when_unique() {
        let mapper = Mapper::new("a loc(\"x\") b loc(\"y\") loc(\"y\")");
        assert_eq!(mapper.find_name_loc("x"), Some(Span { start: 2, end: 10 }));
        assert_eq!(mapper.find_name_loc("y"), None);
        assert_eq!(mapper.find_name_loc("z"), None);
    }
}
