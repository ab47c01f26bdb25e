//! Fuzz target: the IR parser must never panic; whatever parses must print → parse → print identically,
//! and verifying it must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmpu_compiler::ir::{print_module, verify};
use llmpu_compiler::parser::parse_module;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(m) = parse_module(text) {
        let printed = print_module(&m);
        let again = parse_module(&printed).expect("printed IR must parse");
        assert_eq!(print_module(&again), printed);
        let _ = verify(&m);
    }
});
