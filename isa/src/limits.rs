//! The size policy every crate follows: element counts and byte sizes are computed with checked
//! arithmetic and compared with a limit *before* anything is allocated, and files are read only
//! when they are regular files of bounded size, opened without blocking.
//!
//! Three kinds of limit:
//! - **compiled data** must fit the target's memories (HBM, SRAM, accumulator sizes of the target
//!   TOML); the compiler's planner and the emulator check that, not this module;
//! - **host memory**: one tensor the host materializes (a reference-interpreter value, a random or
//!   `.npy` input, an emulator output) may hold at most [`host_bytes`] bytes — default
//!   [`DEFAULT_HOST_BYTES`], set by the CLI's `--host-memory-limit`;
//! - **file reads**: a file read whole (models, binaries, assembly, `.incbin`, `.npy`, targets,
//!   traces) may hold at most [`max_file_bytes`] bytes — default [`DEFAULT_MAX_FILE_BYTES`], set by
//!   `--max-file-size`. Character devices, FIFOs, sockets and directories are refused up front
//!   (`/dev/zero` never ends, a FIFO may never answer).
//!
//! Both limits are process-wide settings (the CLI sets them once from its global flags); the
//! functions here read them.

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Default [`host_bytes`]: 4 GiB.
pub const DEFAULT_HOST_BYTES: u64 = 4 << 30;
/// Default [`max_file_bytes`]: 4 GiB (ONNX protobufs are at most 2 GiB; larger weights live in
/// external data, which is memory-mapped and checked against this limit too).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 << 30;

static HOST_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_HOST_BYTES);
static MAX_FILE_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_MAX_FILE_BYTES);

/// The largest host tensor, in bytes.
pub fn host_bytes() -> u64 {
    HOST_BYTES.load(Ordering::Relaxed)
}

/// Sets [`host_bytes`] (the CLI's `--host-memory-limit`).
pub fn set_host_bytes(n: u64) {
    HOST_BYTES.store(n, Ordering::Relaxed);
}

/// The largest file read whole, in bytes.
pub fn max_file_bytes() -> u64 {
    MAX_FILE_BYTES.load(Ordering::Relaxed)
}

/// Sets [`max_file_bytes`] (the CLI's `--max-file-size`).
pub fn set_max_file_bytes(n: u64) {
    MAX_FILE_BYTES.store(n, Ordering::Relaxed);
}

/// A size that overflows or exceeds its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The element count or byte size does not fit 64 bits.
    #[error("{what}: the size of shape {shape:?} overflows 64 bits")]
    Overflow { what: String, shape: Vec<u64> },
    /// More host memory than [`host_bytes`] allows.
    #[error(
        "{what} needs {} of host memory, more than the limit of {} (raise it with --host-memory-limit)",
        human_bytes(*.bytes), human_bytes(*.limit)
    )]
    Host {
        what: String,
        bytes: u64,
        limit: u64,
    },
}

/// Elements of `shape`, with overflow as an error naming `what`.
pub fn elements(what: &str, shape: &[u64]) -> Result<u64, SizeError> {
    shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .ok_or_else(|| SizeError::Overflow {
            what: what.to_string(),
            shape: shape.to_vec(),
        })
}

/// Bytes of `shape` at `elem_bytes` per element, with overflow as an error naming `what`.
pub fn bytes(what: &str, shape: &[u64], elem_bytes: u64) -> Result<u64, SizeError> {
    elements(what, shape)?
        .checked_mul(elem_bytes)
        .ok_or_else(|| SizeError::Overflow {
            what: what.to_string(),
            shape: shape.to_vec(),
        })
}

/// Checks that a host tensor of `shape` at `elem_bytes` per element fits [`host_bytes`]; returns
/// its element count (which then also fits `usize`).
pub fn host_tensor(what: &str, shape: &[u64], elem_bytes: u64) -> Result<usize, SizeError> {
    let b = bytes(what, shape, elem_bytes.max(1))?;
    let limit = host_bytes();
    if b > limit {
        return Err(SizeError::Host {
            what: what.to_string(),
            bytes: b,
            limit,
        });
    }
    let n = elements(what, shape)?;
    usize::try_from(n).map_err(|_| SizeError::Overflow {
        what: what.to_string(),
        shape: shape.to_vec(),
    })
}

/// A file that cannot be read under the policy.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening, inspecting or reading failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a regular file.
    #[error("not a regular file ({0}); only regular files are read")]
    NotRegular(&'static str),
    /// Larger than [`max_file_bytes`].
    #[error(
        "{} is more than the file size limit of {} (raise it with --max-file-size)",
        human_bytes(*.size), human_bytes(*.limit)
    )]
    TooLarge { size: u64, limit: u64 },
}

impl From<ReadError> for std::io::Error {
    fn from(e: ReadError) -> std::io::Error {
        match e {
            ReadError::Io(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::InvalidInput, other.to_string()),
        }
    }
}

fn kind_of(m: &Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let t = m.file_type();
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if m.is_dir() {
        "a directory"
    } else {
        "a special file"
    }
}

/// Opens `path` for reading if it is a regular file no larger than [`max_file_bytes`]; returns the
/// file and its size. The file is opened without blocking (a FIFO swapped in between the check and
/// the open cannot stall the caller) and checked again once open.
pub fn open_regular(path: &Path) -> Result<(File, u64), ReadError> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind_of(&meta)));
    }
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(O_NONBLOCK);
    }
    let f = o.open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind_of(&meta)));
    }
    let limit = max_file_bytes();
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    Ok((f, meta.len()))
}

/// `O_NONBLOCK` of Linux and the BSDs (the value every Unix target of this project uses).
#[cfg(all(unix, any(target_os = "linux", target_os = "android")))]
const O_NONBLOCK: i32 = 0o4000;
#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
const O_NONBLOCK: i32 = 0x0004;

/// Reads a regular file whole under the policy ([`open_regular`]); a file that grows while being
/// read stops at the limit.
pub fn read_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    let (f, len) = open_regular(path)?;
    read_bounded(f, len)
}

/// [`read_file`] as UTF-8 text.
pub fn read_to_string(path: &Path) -> Result<String, ReadError> {
    let bytes = read_file(path)?;
    String::from_utf8(bytes).map_err(|_| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })
}

/// Reads a stream (standard input) to its end, refusing more than [`max_file_bytes`].
pub fn read_stream(r: impl Read) -> Result<Vec<u8>, ReadError> {
    read_bounded(r, 0)
}

fn read_bounded(r: impl Read, hint: u64) -> Result<Vec<u8>, ReadError> {
    let limit = max_file_bytes();
    let mut out = Vec::with_capacity(hint.min(limit).min(1 << 30) as usize);
    r.take(limit.saturating_add(1)).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            size: out.len() as u64,
            limit,
        });
    }
    Ok(out)
}

/// `n` bytes for people: `1536` → `1.5 KiB`, with the exact count for small sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// Parses a byte count with an optional binary suffix (`4096`, `512K`, `2G`, `1T`; `KiB`/`GB`
/// spellings accepted, all powers of 1024), for the CLI's size flags.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a byte count (e.g. 4096, 512M, 2G)"))?;
    let shift = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("'{s}': unknown size suffix (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' does not fit 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_overflow_as_errors() {
        assert_eq!(elements("x", &[4, 0, 4]), Ok(0));
        assert!(matches!(
            bytes("x", &[1 << 40, 1 << 40], 4),
            Err(SizeError::Overflow { .. })
        ));
        let e = host_tensor("input 'x'", &[1 << 40], 4).unwrap_err();
        assert!(e.to_string().contains("--host-memory-limit"), "{e}");
        assert_eq!(host_tensor("x", &[2, 3], 4), Ok(6));
    }

    #[test]
    fn byte_counts_parse_with_suffixes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert!(parse_bytes("1Q").is_err());
        assert!(parse_bytes("99999999999T").is_err());
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn special_files_are_refused_without_reading() {
        #[cfg(unix)]
        {
            let e = read_file(Path::new("/dev/zero")).unwrap_err();
            assert!(
                matches!(e, ReadError::NotRegular("a character device")),
                "{e}"
            );
        }
        let e = read_file(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap_err();
        assert!(matches!(e, ReadError::NotRegular("a directory")), "{e}");
    }

    #[test]
    fn streams_read_to_their_end_under_the_limit() {
        let ok = read_stream(std::io::repeat(1).take(10)).unwrap();
        assert_eq!(ok, vec![1; 10]);
    }
}
