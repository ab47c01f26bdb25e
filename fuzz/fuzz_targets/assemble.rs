//! Fuzz target: arbitrary bytes (as UTF-8, lossily) → `assemble` must return a program or
//! diagnostics, never panic; rendering the diagnostics must not panic either. Whatever assembles
//! must survive disassemble → assemble with a byte-identical binary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmpu_isa::binary;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    match llmpu_asm::assemble(&src, Path::new("/nonexistent/fuzz.s")) {
        Ok(p) => {
            let bytes = binary::write(&p).expect("assembled programs write");
            let text = llmpu_asm::disassemble(&p);
            let q = llmpu_asm::assemble(&text, Path::new("fuzz.s")).expect("disassembly assembles");
            assert_eq!(binary::write(&q).expect("writes"), bytes);
        }
        Err(d) => {
            let _ = d.to_string();
        }
    }
});
