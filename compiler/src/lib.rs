//! LLMPU compiler core: an MLIR-style IR (arena storage, typed handles, generic ops with per-dialect
//! verifiers), its text format (printer + `logos`/`lalrpop` parser that round-trips), the `graph`, `tile`
//! and `llmpu` dialects, a pass manager with IR dumps, and the generally useful passes
//! (`canonicalize`, `cse`, `dce`).
//!
//! With the cargo feature `mlir`, [`mlir`] checks our text with real MLIR in-process (melior).
//!
//! Entry points: [`parser::parse_module`], [`ir::print_module`], [`ir::verify`],
//! [`pass::PassManager`], [`passes::registry`].

pub mod backend;
pub mod diag;
pub mod dialects;
pub mod interp;
pub mod ir;
pub mod mlir;
#[cfg(feature = "mlir")]
mod mlir_melior;
pub mod onnx;
pub mod parser;
pub mod pass;
pub mod passes;
