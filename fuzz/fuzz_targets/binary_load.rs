//! Fuzz target: arbitrary bytes → `binary::read` must return Ok or Err, never panic. Each input is
//! tried twice: as given (exercising the envelope and checksum) and with its CRC re-sealed
//! (exercising the ELF, table and instruction checks behind the checksum). Whatever reads back must
//! write and read again to the same program.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmpu_isa::binary;

fuzz_target!(|data: &[u8]| {
    let _ = binary::read(data);
    let mut sealed = data.to_vec();
    binary::seal(&mut sealed);
    if let Ok(p) = binary::read(&sealed) {
        let bytes = binary::write(&p).expect("a program that reads back writes");
        let q = binary::read(&bytes).expect("written binary reads back");
        assert_eq!(binary::write(&q).expect("writes"), bytes);
    }
});
