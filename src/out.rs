//! Standard output of the commands. [`out!`] and [`outln!`] write like `print!`/`println!` but
//! never panic: a closed pipe (`llmpu disasm p.llmpu | head -1`) ends the program quietly with
//! status 0, as Unix tools do; any other write error (`llmpu import m.onnx > /dev/full`) ends it
//! with a message naming standard output and status 1. `main` calls [`flush`] last, so an error
//! on the final buffered bytes is reported too.

use std::io::Write;

/// Writes formatted text to standard output, ending the program on a write error ([`fail`]).
pub fn write_fmt(args: std::fmt::Arguments) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args) {
        fail(e);
    }
}

/// Flushes standard output, ending the program on a write error ([`fail`]).
pub fn flush() {
    if let Err(e) = std::io::stdout().lock().flush() {
        fail(e);
    }
}

/// Checks the result of a write to standard output made directly (a locked handle).
pub fn check(r: std::io::Result<()>) {
    if let Err(e) = r {
        fail(e);
    }
}

/// Ends the program after a failed write to standard output: status 0 without a word when the
/// reader went away (broken pipe), status 1 with a message otherwise.
pub fn fail(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(1);
}

/// `print!` that ends the program quietly on a closed pipe and with a message on other write
/// errors, instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!($($arg)*))
    };
}

/// `println!` with the error handling of [`out!`].
macro_rules! outln {
    () => {
        $crate::out::write_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::write_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}
