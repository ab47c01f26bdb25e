//! `llmpu targets [NAME|FILE]`: lists the presets with their headline figures, or prints one target
//! (a preset or a validated `.toml` file) as canonical TOML.

use llmpu_isa::target::{Target, preset_names};

#[derive(clap::Args)]
pub struct TargetsArgs {
    /// A preset name or a target `.toml` file to print.
    name: Option<String>,
}

pub fn run(a: &TargetsArgs) -> Result<(), String> {
    match &a.name {
        Some(name) => {
            let t = Target::resolve(name).map_err(|e| e.to_string())?;
            out!("{}", t.to_toml());
        }
        None => {
            outln!(
                "{:<12} {:>5} {:>9} {:>6} {:>10} {:>10} {:>9}  description",
                "name",
                "cores",
                "array",
                "lanes",
                "SRAM/core",
                "HBM GB/s",
                "TFLOP/s"
            );
            for n in preset_names() {
                let t = Target::preset(n).map_err(|e| e.to_string())?;
                outln!(
                    "{:<12} {:>5} {:>9} {:>6} {:>8}Ki {:>10.0} {:>9.1}  {}",
                    t.name,
                    t.cores,
                    format!("{}x{}", t.matrix.rows, t.matrix.cols),
                    t.vector.lanes,
                    t.sram.size_bytes >> 10,
                    t.hbm.bandwidth_gb_s,
                    t.peak_flops() / 1e12,
                    t.description
                );
            }
            outln!(
                "\n(default: {}; print one with `llmpu targets NAME`)",
                llmpu_isa::target::DEFAULT_TARGET
            );
        }
    }
    Ok(())
}
