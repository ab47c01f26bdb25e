//! The bridge to the ONNX front end: reads a `.onnx` file into graph IR with static shapes (symbolic
//! dims bound by `NAME=N`), after the import pipeline (`llmpu_compiler::onnx::import_pipeline`).

use std::path::Path;

use llmpu_compiler::ir::Module;
use llmpu_compiler::onnx::{ImportOptions, import_file, import_pipeline, parse_dim_arg};
use llmpu_compiler::pass::{PassManager, PassManagerOptions};

/// Imports an ONNX model, binding symbolic dims given as `NAME=N`.
pub fn import_model(path: &Path, dims: &[String]) -> Result<Module, String> {
    import_model_reshaped(path, dims, &[])
}

/// Imports an ONNX model as [`import_model`], with graph inputs given new full shapes `(name,
/// shape)` even where the model declares static extents (`ImportOptions::override_static`):
/// how `llmpu serve-sim` imports a decode graph exported for one new token for a chunk of `C`.
pub fn import_model_reshaped(
    path: &Path,
    dims: &[String],
    shapes: &[(String, Vec<u64>)],
) -> Result<Module, String> {
    let mut opts = ImportOptions {
        on_warning: Some(llmpu_compiler::onnx::print_warning),
        override_static: !shapes.is_empty(),
        ..Default::default()
    };
    for (n, s) in shapes {
        opts.shapes.insert(n.clone(), s.clone());
    }
    for d in dims {
        let (n, v) = parse_dim_arg(d)?;
        opts.dims.insert(n, v);
    }
    let mut m = import_file(path, &opts).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut pm = PassManager::from_names(&import_pipeline(), PassManagerOptions::default())
        .map_err(|e| e.to_string())?;
    pm.run(&mut m, &mut std::io::stderr())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(m)
}
