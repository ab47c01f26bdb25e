//! The pass registry: every pass by its flag name. Each pass lives in its own file named like its flag
//! (`cse.rs` ↔ `cse`, `kv_layout.rs` ↔ `kv-layout`) and exports `pub const INFO: PassInfo`.
//!
//! Adding a pass: write `passes/<name>.rs`, add its module name to the `register_passes!` list below, and
//! add `tests/filetests/<flag>/`.

use crate::pass::{Pass, PassError};

/// Static description of a registered pass.
#[derive(Clone, Copy, Debug)]
pub struct PassInfo {
    /// Flag name used in `--passes`.
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Creates a fresh instance.
    pub create: fn() -> Box<dyn Pass>,
}

macro_rules! register_passes {
    ($($module:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every registered pass, in registration order.
        pub fn registry() -> Vec<PassInfo> {
            vec![$($module::INFO),*]
        }
    };
}

// The registry: one line per pass.
register_passes! {
    canonicalize,
    legalize,
    cse,
    dce,
    fuse_attention,
    decompose_attention,
    fuse_norm,
    fuse_rotary,
    decompose_rotary,
    fuse_matmul_epilogue,
    kv_layout,
    probe_values,
    split_projections,
    tile,
    plan_memory,
    lower_tile,
    distribute_cores,
    defer_epilogues,
    lower_llmpu,
    fold_constants,
    shape_inference,
}

/// Instantiates a pass by flag name; unknown names produce an error listing the valid ones.
pub fn create(name: &str) -> Result<Box<dyn Pass>, PassError> {
    let reg = registry();
    match reg.iter().find(|p| p.name == name) {
        Some(p) => Ok((p.create)()),
        None => Err(PassError::UnknownPass {
            name: name.to_string(),
            valid: reg.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_pass_error_lists_valid_names() {
        let e = create("nope")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let names: Vec<&str> = registry().iter().map(|p| p.name).collect();
        assert_eq!(
            e,
            format!("unknown pass 'nope'; valid passes: {}", names.join(", "))
        );
    }

    #[test]
    fn pass_names_match_their_flags() {
        for p in registry() {
            assert_eq!((p.create)().name(), p.name);
        }
    }
}
