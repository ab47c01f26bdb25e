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
    let dims = role_dims(&model, dims);
    import_model_checked(path, &dims, &[], &binds, new_tokens)
}

/// `dims` (the standard names `batch_size`, `sequence_length`, `past_sequence_length`,
/// `total_sequence_length`) plus the same values under the names this model gives those dims,
/// found by the inputs' roles: dim 0 of every input is the batch, dim 1 of `input_ids` the new
/// tokens, dim 1 of `attention_mask` the total, dim 2 of a `past_key_values.*` input the past.
/// (Optimum's merged decoders call the mask's length `attention_mask_sequence_length`.)
fn role_dims(model: &llmpu_compiler::onnx::proto::ModelProto, dims: &[String]) -> Vec<String> {
    let value = |name: &str| {
        dims.iter()
            .find_map(|d| d.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
    };
    let mut out = dims.to_vec();
    let Some(g) = model.graph.as_ref() else {
        return out;
    };
    for input in &g.input {
        let Some(shape) = input
            .r#type
            .as_ref()
            .and_then(llmpu_compiler::onnx::tensor_shape)
        else {
            continue;
        };
        let mut roles = vec![(0, "batch_size")];
        match input.name.as_str() {
            "input_ids" | "position_ids" => roles.push((1, "sequence_length")),
            "attention_mask" => roles.push((1, "total_sequence_length")),
            n if n.starts_with("past_key_values") => roles.push((2, "past_sequence_length")),
            _ => {}
        }
        for (axis, role) in roles {
            let (Some(param), Some(v)) = (shape.get(axis).and_then(|p| p.clone()), value(role))
            else {
                continue;
            };
            let bound = out
                .iter()
                .any(|d| d.split('=').next() == Some(param.as_str()));
            if !bound && !llmpu_compiler::onnx::dim_expr::is_expr(&param) {
                out.push(format!("{param}={v}"));
            }
        }
    }
    out
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
