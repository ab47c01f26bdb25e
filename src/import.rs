//! The bridge to the ONNX front end: reads a `.onnx` file into graph IR with static shapes (symbolic
//! dims bound by `NAME=N`), after the import pipeline (`llmpu_compiler::onnx::import_pipeline`).

use std::path::Path;

use llmpu_compiler::ir::Module;
use llmpu_compiler::onnx::{ImportOptions, import_file, parse_dim_arg, run_import_pipeline};

/// Imports an ONNX model, binding symbolic dims given as `NAME=N`.
pub fn import_model(path: &Path, dims: &[String]) -> Result<Module, String> {
    import_model_with(path, dims, None)
}

/// [`import_model`] with a decode graph's new-token axis declared `new_tokens` wide
/// ([`ImportOptions::new_tokens`]).
pub fn import_model_with(
    path: &Path,
    dims: &[String],
    new_tokens: Option<u64>,
) -> Result<Module, String> {
    import_model_checked(path, dims, &[], new_tokens)
}

/// [`import_model_with`] where `user_dims` (the user's own `--dim NAME=N`, a subset of `dims`)
/// must each name a symbolic dim of the model ([`ImportOptions::user_dims`]).
pub fn import_model_checked(
    path: &Path,
    dims: &[String],
    user_dims: &[String],
    new_tokens: Option<u64>,
) -> Result<Module, String> {
    let mut opts = ImportOptions {
        on_warning: Some(llmpu_compiler::onnx::print_warning),
        new_tokens,
        ..Default::default()
    };
    for d in user_dims {
        opts.user_dims.push(parse_dim_arg(d)?.0);
    }
    for d in dims {
        let (n, v) = parse_dim_arg(d)?;
        opts.dims.insert(n, v);
    }
    let mut m = import_file(path, &opts).map_err(|e| format!("{}: {e}", path.display()))?;
    run_import_pipeline(&mut m, &mut std::io::stderr())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(m)
}
