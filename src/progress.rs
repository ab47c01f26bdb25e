//! A one-line progress display for long commands (`generate`, `serve-sim`, `conformance`,
//! `bench`): `label [#####     ] 12/40 message` redrawn in place on stderr.
//!
//! It draws only when stderr is a terminal (so pipes, files and CI logs stay clean) and
//! `LLMPU_PROGRESS` is not `0`; `LLMPU_PROGRESS=1` forces it on. Redraws are throttled to ten a
//! second; [`Progress::finish`] (or dropping the value) erases the line, so the command's own
//! output is never interleaved with it.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llmpu_runtime::ProgressHook;

/// A progress line; inert when not drawing.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    draw: bool,
    last: Option<Instant>,
    width: usize,
}

const BAR: usize = 24;

/// Whether progress is drawn, from the `LLMPU_PROGRESS` setting and whether stderr is a terminal.
fn enabled(setting: Option<&str>, terminal: bool) -> bool {
    match setting {
        Some("0") => false,
        Some("1") => true,
        _ => terminal,
    }
}

/// The line for `done` of `total` (`total` 0: no bar, just the count).
fn line(label: &str, done: u64, total: u64, msg: &str) -> String {
    if total == 0 {
        return format!("{label} {done} {msg}");
    }
    let filled = ((done.min(total) as u128 * BAR as u128) / total as u128) as usize;
    format!(
        "{label} [{}{}] {done}/{total} {msg}",
        "#".repeat(filled),
        " ".repeat(BAR - filled)
    )
}

impl Progress {
    /// A progress line for `total` items (0 if unknown).
    pub fn new(label: &str, total: u64) -> Progress {
        let setting = std::env::var("LLMPU_PROGRESS").ok();
        Progress {
            label: label.into(),
            total,
            done: 0,
            draw: enabled(setting.as_deref(), std::io::stderr().is_terminal()),
            last: None,
            width: 0,
        }
    }

    /// Marks `done` items finished, showing `msg` (redrawn at most ten times a second).
    pub fn set(&mut self, done: u64, msg: &str) {
        self.done = done;
        if !self.draw {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(100))
            && done < self.total
        {
            return;
        }
        self.last = Some(now);
        let mut l = line(&self.label, done, self.total, msg);
        if let Some((i, _)) = l.char_indices().nth(120) {
            l.truncate(i);
        }
        let pad = self.width.saturating_sub(l.chars().count());
        self.width = l.chars().count();
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r{l}{}", " ".repeat(pad));
        let _ = e.flush();
    }

    /// Erases the line (the next [`Progress::set`] draws it again at once): call before printing
    /// to the terminal.
    pub fn clear(&mut self) {
        if self.draw && self.width > 0 {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r{}\r", " ".repeat(self.width));
            let _ = e.flush();
        }
        self.width = 0;
        self.last = None;
    }

    /// Erases the line for good.
    pub fn finish(&mut self) {
        self.clear();
    }
}

/// A progress line fed by one emulator run (instructions executed, modeled cycle): pass
/// [`EmulatorProgress::hook`] as `RunOptions::progress`; the line is erased when this is dropped.
pub struct EmulatorProgress {
    line: Arc<Mutex<Progress>>,
}

impl EmulatorProgress {
    /// A line labelled `label`; `None` when progress is not drawn (no callback is installed then).
    pub fn new(label: &str) -> Option<EmulatorProgress> {
        let p = Progress::new(label, 0);
        p.draw.then(|| EmulatorProgress {
            line: Arc::new(Mutex::new(p)),
        })
    }

    /// The callback for `RunOptions::progress`.
    pub fn hook(&self) -> ProgressHook {
        let line = Arc::clone(&self.line);
        ProgressHook(Arc::new(move |n, cycle| {
            if let Ok(mut p) = line.lock() {
                p.set(n, &format!("instructions, cycle {cycle}"));
            }
        }))
    }
}

impl Drop for EmulatorProgress {
    fn drop(&mut self) {
        if let Ok(mut p) = self.line.lock() {
            p.finish();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_only_on_a_terminal_unless_forced() {
        assert!(enabled(None, true));
        assert!(!enabled(None, false));
        assert!(!enabled(Some("0"), true));
        assert!(enabled(Some("1"), false));
        assert!(
            enabled(Some("yes"), true),
            "other values leave the terminal rule"
        );
    }

    #[test]
    fn the_bar_is_proportional_and_saturates() {
        let bar = |n: usize| format!("{}{}", "#".repeat(n), " ".repeat(BAR - n));
        assert_eq!(
            line("gen", 6, 24, "step 6"),
            format!("gen [{}] 6/24 step 6", bar(6))
        );
        assert_eq!(line("x", 30, 24, ""), format!("x [{}] 30/24 ", bar(24)));
        assert_eq!(line("x", 3, 0, "m"), "x 3 m");
    }
}
