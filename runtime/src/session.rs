//! A host session: one loaded program whose emulated HBM persists between runs.
//!
//! [`Session::load`] places the program's constant data in HBM once; [`Session::bind`] writes an
//! input, [`Session::run`] executes the program on the current HBM contents (nothing is reloaded),
//! [`Session::read`] reads an output back. The paged KV region (`spec/kv-cache.md`) stays resident:
//! [`Session::write_kv`] fills it once (e.g. from a prefill's presents, see [`crate::kv::pack`]),
//! [`Session::set_kv_lengths`] updates the cached lengths before each decode step, and every run
//! appends its tokens in place — the autoregressive loop of `llmpu generate`.

use llmpu_isa::{IoDir, Program};

use crate::memory::Hbm;
use crate::{EmuError, Report, RunOptions, Tensor, Trace, sim, tensor};

/// A program loaded on the emulator with persistent HBM.
pub struct Session {
    program: Program,
    opts: RunOptions,
    hbm: Option<Hbm<'static>>,
    trace: Option<Trace>,
}

fn hbm_err(name: &str, k: crate::TrapKind) -> EmuError {
    EmuError::BadTensor {
        name: name.into(),
        message: k.to_string(),
    }
}

impl Session {
    /// Validates `program` and writes its constant data into a fresh HBM.
    pub fn load(program: Program, opts: RunOptions) -> Result<Session, EmuError> {
        program.validate()?;
        let mut hbm = Hbm::new(program.target.hbm.size_bytes)?;
        for d in &program.data {
            hbm.write(d.hbm_addr, &d.bytes)
                .map_err(|k| hbm_err(&d.name, k))?;
        }
        Ok(Session {
            program,
            opts,
            hbm: Some(hbm),
            trace: None,
        })
    }

    /// The loaded program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    fn hbm(&mut self) -> Result<&mut Hbm<'static>, EmuError> {
        self.hbm.as_mut().ok_or_else(|| {
            EmuError::Unsupported("the session's HBM was lost by a failed run".into())
        })
    }

    /// Writes input `name` (dtype and shape must match its descriptor).
    pub fn bind(&mut self, name: &str, t: &Tensor) -> Result<(), EmuError> {
        let io = self
            .program
            .io(name)
            .filter(|io| io.dir == IoDir::Input)
            .cloned()
            .ok_or_else(|| EmuError::UnknownInput(name.into(), self.input_names().join(", ")))?;
        if io.dtype != t.dtype || io.shape != t.shape {
            return Err(EmuError::InputMismatch {
                name: name.into(),
                expected: tensor::describe(io.dtype, &io.shape),
                got: t.describe(),
            });
        }
        crate::check_bounds(&self.program, name, t)?;
        self.hbm()?
            .write(io.hbm_addr, &t.data)
            .map_err(|k| hbm_err(name, k))
    }

    fn input_names(&self) -> Vec<String> {
        self.program
            .io
            .iter()
            .filter(|t| t.dir == IoDir::Input)
            .map(|t| t.name.clone())
            .collect()
    }

    /// Runs the program on the current HBM contents; returns the cost report.
    pub fn run(&mut self) -> Result<Report, EmuError> {
        let hbm = self.hbm.take().ok_or_else(|| {
            EmuError::Unsupported("the session's HBM was lost by a failed run".into())
        })?;
        let mut s = sim::Sim::new(&self.program, &self.opts)?;
        s.hbm = hbm;
        let r = s.run();
        let report = s.report();
        self.trace = s.take_trace();
        let size = s.hbm.size();
        self.hbm = Some(std::mem::replace(&mut s.hbm, Hbm::new(size)?).into_owned());
        r.map(|_| report)
    }

    /// The trace of the last run, if the session's options ask for one (`RunOptions::trace`);
    /// taking it leaves `None` until the next run.
    pub fn take_trace(&mut self) -> Option<Trace> {
        self.trace.take()
    }

    fn read_bytes(&self, name: &str, addr: u64, len: u64) -> Result<Vec<u8>, EmuError> {
        let hbm = self.hbm.as_ref().ok_or_else(|| {
            EmuError::Unsupported("the session's HBM was lost by a failed run".into())
        })?;
        let mut v = vec![0u8; len as usize];
        hbm.read(addr, &mut v).map_err(|k| hbm_err(name, k))?;
        Ok(v)
    }

    /// Reads output `name`.
    pub fn read(&self, name: &str) -> Result<Tensor, EmuError> {
        let io = self
            .program
            .io(name)
            .filter(|io| io.dir == IoDir::Output)
            .ok_or_else(|| EmuError::BadTensor {
                name: name.into(),
                message: "no such output".into(),
            })?;
        let len = io.bytes().unwrap_or(u64::MAX);
        if len > self.opts.max_output_bytes {
            return Err(EmuError::Unsupported(format!(
                "output `{name}` has {len} bytes, more than the limit"
            )));
        }
        Ok(Tensor {
            dtype: io.dtype,
            shape: io.shape.clone(),
            data: self.read_bytes(name, io.hbm_addr, len)?,
        })
    }

    /// Writes a whole KV region image (see [`kv::pack`]).
    pub fn write_kv(&mut self, image: &[u8]) -> Result<(), EmuError> {
        let kv = self
            .program
            .kv
            .clone()
            .ok_or_else(|| EmuError::Unsupported("the program has no KV region".into()))?;
        if image.len() as u64 != kv.bytes {
            return Err(EmuError::BadTensor {
                name: "KV region".into(),
                message: format!(
                    "{} bytes of image for a {}-byte region",
                    image.len(),
                    kv.bytes
                ),
            });
        }
        self.hbm()?
            .write(kv.hbm_addr, image)
            .map_err(|k| hbm_err("KV region", k))
    }

    /// The KV region's current contents.
    pub fn read_kv(&self) -> Result<Vec<u8>, EmuError> {
        let kv = self
            .program
            .kv
            .as_ref()
            .ok_or_else(|| EmuError::Unsupported("the program has no KV region".into()))?;
        self.read_bytes("KV region", kv.hbm_addr, kv.bytes)
    }

    /// Writes `bytes` into the resident KV region at byte `offset` from its start (e.g. one
    /// sequence's blocks, or a pool copied from another session).
    pub fn write_kv_at(&mut self, offset: u64, bytes: &[u8]) -> Result<(), EmuError> {
        let kv = self.region()?;
        if offset
            .checked_add(bytes.len() as u64)
            .is_none_or(|end| end > kv.bytes)
        {
            return Err(EmuError::BadTensor {
                name: "KV region".into(),
                message: format!(
                    "{} bytes at offset {offset} overrun the {}-byte region",
                    bytes.len(),
                    kv.bytes
                ),
            });
        }
        self.hbm()?
            .write(kv.hbm_addr + offset, bytes)
            .map_err(|k| hbm_err("KV region", k))
    }

    /// `len` bytes of the resident KV region from byte `offset`.
    pub fn read_kv_at(&self, offset: u64, len: u64) -> Result<Vec<u8>, EmuError> {
        let kv = self.region()?;
        if offset.checked_add(len).is_none_or(|end| end > kv.bytes) {
            return Err(EmuError::BadTensor {
                name: "KV region".into(),
                message: format!(
                    "{len} bytes at offset {offset} overrun the {}-byte region",
                    kv.bytes
                ),
            });
        }
        self.read_bytes("KV region", kv.hbm_addr + offset, len)
    }

    fn region(&self) -> Result<llmpu_isa::KvRegion, EmuError> {
        self.program
            .kv
            .clone()
            .ok_or_else(|| EmuError::Unsupported("the program has no KV region".into()))
    }

    /// Writes the region header's block table (`i32 [batch, max_blocks]`, every entry a
    /// physical block of the pool) and the cached lengths (see [`Session::set_kv_lengths`]).
    pub fn set_kv_header(&mut self, table: &[i32], lengths: &[i32]) -> Result<(), EmuError> {
        let kv = self.region()?;
        if table.len() as u64 != kv.batch * kv.max_blocks
            || table.iter().any(|&e| e < 0 || e as u64 >= kv.num_blocks)
        {
            return Err(EmuError::BadTensor {
                name: "KV block table".into(),
                message: format!(
                    "need {} × {} entries below {}, got {} entries",
                    kv.batch,
                    kv.max_blocks,
                    kv.num_blocks,
                    table.len()
                ),
            });
        }
        let bytes: Vec<u8> = table.iter().flat_map(|e| e.to_le_bytes()).collect();
        self.hbm()?
            .write(kv.table_addr, &bytes)
            .map_err(|k| hbm_err("KV block table", k))?;
        self.set_kv_lengths(lengths)
    }

    /// Sets every sequence's cached length in the resident region's header (only those bytes
    /// are written). A length past the compiled past extent (`past_len`: a static past
    /// dimension, or the `--max-context` the graph was compiled for) is an error: the program's
    /// masks and attention cover only that many cached tokens.
    pub fn set_kv_lengths(&mut self, lengths: &[i32]) -> Result<(), EmuError> {
        let kv = self.region()?;
        let cap = kv.max_blocks * kv.block_tokens;
        if lengths.len() as u64 != kv.batch
            || lengths
                .iter()
                .any(|&l| l < 0 || l as u64 + kv.new_tokens > cap)
        {
            return Err(EmuError::BadTensor {
                name: "KV lengths".into(),
                message: format!(
                    "{lengths:?}: need {} lengths, each leaving room for {} tokens in {cap}",
                    kv.batch, kv.new_tokens
                ),
            });
        }
        if let Some(&l) = lengths.iter().find(|&&l| l as u64 > kv.past_len) {
            return Err(EmuError::BadTensor {
                name: "KV lengths".into(),
                message: format!(
                    "a sequence of {l} cached tokens is longer than the past of {} tokens the \
                     decode program was compiled for (a static past dimension, or its \
                     --max-context); recompile it for a longer context",
                    kv.past_len
                ),
            });
        }
        let header: Vec<u8> = lengths.iter().flat_map(|l| l.to_le_bytes()).collect();
        self.hbm()?
            .write(kv.lengths_addr(), &header)
            .map_err(|k| hbm_err("KV lengths", k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmpu_isa::{DType, Inst, IoTensor, KvRegion, KvSlot, Target};

    /// A one-core program that copies input `x` (4 f32) to output `y` through SRAM, with a small
    /// KV region it never touches.
    fn program() -> Program {
        let mut p = Program::new(Target::default_target(), 1);
        let r = llmpu_isa::Reg;
        p.cores[0] = vec![
            Inst::Li { rd: r(1), imm: 64 },
            Inst::DmaLoad {
                sram: r(0),
                hbm: r(0),
                n0: 4,
                n1: 1,
                n2: 1,
                hs1: r(0),
                hs2: r(0),
                ss1: r(0),
                ss2: r(0),
                dt: DType::F32,
                layout: llmpu_isa::Layout::Rows,
            },
            Inst::DmaStore {
                sram: r(0),
                hbm: r(1),
                n0: 4,
                n1: 1,
                n2: 1,
                hs1: r(0),
                hs2: r(0),
                ss1: r(0),
                ss2: r(0),
                dt: DType::F32,
                layout: llmpu_isa::Layout::Rows,
            },
            Inst::Halt {},
        ];
        for (name, dir, at) in [("x", IoDir::Input, 0), ("y", IoDir::Output, 64)] {
            p.io.push(IoTensor {
                name: name.into(),
                dir,
                dtype: DType::F32,
                shape: vec![4],
                hbm_addr: at,
            });
        }
        p.kv = Some(KvRegion {
            hbm_addr: 128,
            bytes: 64 + 256,
            dtype: DType::F32,
            block_tokens: 4,
            batch: 1,
            max_blocks: 2,
            num_blocks: 2,
            past_len: 7,
            new_tokens: 1,
            table_addr: 128,
            slots: vec![KvSlot {
                past: "past".into(),
                present: "present".into(),
                past_index: 1,
                present_index: 1,
                heads: 2,
                head_dim: 4,
                pool_addr: 192,
            }],
        });
        p
    }

    #[test]
    fn session_keeps_hbm_and_the_kv_region_between_runs() {
        let mut s = Session::load(program(), RunOptions::default()).expect("load");
        let image: Vec<u8> = (0..320u32).map(|i| i as u8).collect();
        s.write_kv(&image).expect("write kv");
        for v in [1.0f32, 2.0] {
            let x = Tensor::from_f32(DType::F32, vec![4], &[v; 4]).expect("tensor");
            s.bind("x", &x).expect("bind");
            s.run().expect("run");
            assert_eq!(s.read("y").expect("read").to_f32(), [v; 4]);
        }
        // The region survived both runs; lengths update only the header's length word.
        s.set_kv_lengths(&[5]).expect("lengths");
        let after = s.read_kv().expect("read kv");
        assert_eq!(&after[8..12], &5i32.to_le_bytes());
        assert_eq!(&after[..8], &image[..8]);
        assert_eq!(&after[12..], &image[12..]);
        assert!(s.set_kv_lengths(&[8]).is_err(), "no room for the new token");
        // 7 fits the compiled past; a block with room to spare does not make 8 valid.
        s.set_kv_lengths(&[7]).expect("the compiled past");
        // The header's table and lengths, then bytes at an offset; overruns are errors.
        s.set_kv_header(&[1, 0], &[3]).expect("header");
        let after = s.read_kv().expect("read kv");
        assert_eq!(&after[..12], &[1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0]);
        assert!(
            s.set_kv_header(&[2, 0], &[3]).is_err(),
            "block 2 is not in the pool"
        );
        s.write_kv_at(100, &[7, 8]).expect("write at");
        assert_eq!(s.read_kv_at(100, 2).expect("read at"), [7, 8]);
        assert!(s.write_kv_at(319, &[1, 2]).is_err(), "past the region");
    }

    #[test]
    fn kv_lengths_past_the_compiled_past_are_refused_even_with_room_in_the_blocks() {
        let mut p = program();
        if let Some(kv) = p.kv.as_mut() {
            kv.past_len = 5;
        }
        let mut s = Session::load(p, RunOptions::default()).expect("load");
        s.set_kv_lengths(&[5]).expect("the compiled past");
        let e = s
            .set_kv_lengths(&[6])
            .expect_err("past the compiled past")
            .to_string();
        assert!(e.contains("compiled for"), "{e}");
        assert!(s.set_kv_header(&[0, 1], &[6]).is_err());
    }
}
