//! The bridge to the ONNX front end: reads a `.onnx` file into graph IR.

use std::path::Path;

use llmpu_compiler::ir::Module;

/// Imports an ONNX model, binding symbolic dims given as `NAME=N`.
pub fn import_model(path: &Path, dims: &[String]) -> Result<Module, String> {
    let _ = dims;
    Err(format!(
        "{}: the ONNX importer is not available in this build; give graph IR (.mlir)",
        path.display()
    ))
}
