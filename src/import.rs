//! The bridge to the ONNX front end: reads a `.onnx` file into graph IR with static shapes (symbolic
//! dims bound by `NAME=N`), after the import pipeline (`llmpu_compiler::onnx::import_pipeline`).

use std::path::Path;

use llmpu_compiler::ir::Module;
use llmpu_compiler::onnx::{
    ImportOptions, decode_model, import_file, parse_bind_arg, parse_dim_arg, run_import_pipeline,
};

/// The input Optimum's merged decoders (`decoder_model_merged.onnx`) choose their branch by: an
/// `If` runs the graph without a past when it is false, the one with a past when it is true.
pub const CACHE_BRANCH: &str = "use_cache_branch";

/// [`import_model_checked`] for a model run as a prefill (`with_past` false) or a decode step: a
/// merged decoder's [`CACHE_BRANCH`] input is compiled in as `with_past`, so only the branch the
/// step takes is imported and the program does not take the input.
pub fn import_step(
    path: &Path,
    dims: &[String],
    new_tokens: Option<u64>,
    with_past: bool,
) -> Result<Module, String> {
    let bytes = llmpu_isa::limits::read_file(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let model = decode_model(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let merged = model
        .graph
        .as_ref()
        .is_some_and(|g| g.input.iter().any(|i| i.name == CACHE_BRANCH));
    let binds = match merged {
        true => vec![format!("{CACHE_BRANCH}={with_past}")],
        false => vec![],
    };
    import_model_checked(path, dims, &[], &binds, new_tokens)
}

/// An ONNX model as graph IR, after the import pipeline, where `user_dims` (the user's own `--dim NAME=N`, a subset of `dims`)
/// must each name a symbolic dim of the model ([`ImportOptions::user_dims`]) and `binds`
/// (`--bind NAME=V1,V2,...`) compile graph inputs in as constants ([`ImportOptions::bindings`]).
pub fn import_model_checked(
    path: &Path,
    dims: &[String],
    user_dims: &[String],
    binds: &[String],
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
    let mut m = if binds.is_empty() {
        import_file(path, &opts).map_err(|e| format!("{}: {e}", path.display()))?
    } else {
        let bytes = llmpu_isa::limits::read_file(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let model = decode_model(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        for b in binds {
            let (n, t) = parse_bind_arg(&model, b)?;
            if opts.bindings.insert(n.clone(), t).is_some() {
                return Err(format!("--bind names '{n}' twice"));
            }
        }
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        llmpu_compiler::onnx::import_model(&model, Some(base.unwrap_or(Path::new("."))), &opts)
            .map_err(|e| format!("{}: {e}", path.display()))?
    };
    run_import_pipeline(&mut m, &mut std::io::stderr())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(m)
}
