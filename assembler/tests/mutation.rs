//! Bounded, seeded random-mutation smoke tests (a deterministic stand-in for the cargo-fuzz
//! targets in `fuzz/`, so CI exercises the same properties): mutated assembly sources and mutated
//! (re-sealed) binaries must produce errors or valid programs, never panics.

use llmpu_isa::binary;
use std::path::Path;

/// xorshift64*: a tiny deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8], alphabet: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(4) {
            0 if !v.is_empty() => {
                let at = at.min(v.len() - 1);
                v[at] = alphabet[rng.below(alphabet.len())];
            }
            1 if !v.is_empty() => {
                let end = (at + rng.below(8)).min(v.len());
                v.drain(at.min(end)..end);
            }
            2 => v.insert(at, alphabet[rng.below(alphabet.len())]),
            _ if !v.is_empty() => {
                let at = at.min(v.len() - 1);
                v[at] ^= 1 << rng.below(8);
            }
            _ => {}
        }
    }
    v
}

fn examples() -> Vec<(std::path::PathBuf, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/asm");
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "s"))
        .map(|p| {
            let s = std::fs::read_to_string(&p).unwrap();
            (p, s)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn mutated_sources_never_panic_the_assembler() {
    let alphabet = b" \n,:;[]()@-+.\"\\0123456789abcdefxrs_zZ\t";
    let mut rng = Rng(0x5eed_0001);
    for (path, src) in examples() {
        for _ in 0..300 {
            let m = mutate(&mut rng, src.as_bytes(), alphabet);
            let text = String::from_utf8_lossy(&m);
            match llmpu_asm::assemble(&text, &path) {
                Ok(p) => {
                    let b = binary::write(&p).expect("assembled programs write");
                    let q = llmpu_asm::assemble(&llmpu_asm::disassemble(&p), &path).unwrap();
                    assert_eq!(binary::write(&q).unwrap(), b);
                }
                Err(d) => assert!(!d.to_string().is_empty()),
            }
        }
    }
}

#[test]
fn mutated_binaries_never_panic_the_loader() {
    let alphabet: Vec<u8> = (0..=255).collect();
    let mut rng = Rng(0x5eed_0002);
    for (path, src) in examples() {
        let p = llmpu_asm::assemble(&src, &path).unwrap();
        let bytes = binary::write(&p).unwrap();
        for _ in 0..300 {
            let mut m = mutate(&mut rng, &bytes, &alphabet);
            assert!(
                m == bytes || binary::read(&m).is_err(),
                "unsealed mutation accepted"
            );
            binary::seal(&mut m);
            if let Ok(q) = binary::read(&m) {
                let again = binary::write(&q).expect("a program that reads back writes");
                assert!(binary::read(&again).is_ok());
            }
        }
    }
}
