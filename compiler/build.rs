//! Build script: generates the IR text grammar (`src/parser/grammar.lalrpop`) with lalrpop.
fn main() {
    lalrpop::Configuration::new()
        .use_cargo_dir_conventions()
        .emit_rerun_directives(true)
        .process()
        .expect("lalrpop grammar generation failed");
}
