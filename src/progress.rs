//! A one-line progress display for long commands (`generate`, `serve-sim`, `conformance`,
//! `bench`, `run`): `label [#####     ] 12/40 message` redrawn in place on stderr, drawn by
//! [`indicatif`].
//!
//! It draws only when stderr is a terminal (so pipes, files and CI logs stay clean) and
//! `LLMPU_PROGRESS` is not `0`; `LLMPU_PROGRESS=1` forces it on. Redraws are throttled to ten a
//! second; [`Progress::clear`] (before printing to the terminal), [`Progress::finish`] and
//! dropping the value erase the line, so the command's own output is never interleaved with it.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use llmpu_runtime::ProgressHook;

/// Redraws per second.
const HZ: u8 = 10;

/// A progress line; inert when not drawing.
pub struct Progress {
    label: String,
    total: u64,
    draw: bool,
    /// The drawn bar; `None` until the next [`Progress::set`] after a clear.
    bar: Option<ProgressBar>,
}

/// Whether progress is drawn, from the `LLMPU_PROGRESS` setting and whether stderr is a terminal.
fn enabled(setting: Option<&str>, terminal: bool) -> bool {
    match setting {
        Some("0") => false,
        Some("1") => true,
        _ => terminal,
    }
}

/// The line's layout: a 24-cell bar with the count when the total is known, else the count.
fn style(total: u64) -> ProgressStyle {
    let template = if total == 0 {
        "{prefix} {pos} {msg}"
    } else {
        "{prefix} [{bar:24}] {pos}/{len} {msg}"
    };
    ProgressStyle::with_template(template)
        .expect("a valid progress template")
        .progress_chars("## ")
}

impl Progress {
    /// A progress line for `total` items (0 if unknown).
    pub fn new(label: &str, total: u64) -> Progress {
        let setting = std::env::var("LLMPU_PROGRESS").ok();
        Progress {
            label: label.into(),
            total,
            draw: enabled(setting.as_deref(), std::io::stderr().is_terminal()),
            bar: None,
        }
    }

    fn bar(&mut self) -> &ProgressBar {
        let (label, total, draw) = (&self.label, self.total, self.draw);
        self.bar.get_or_insert_with(|| {
            let target = if !draw {
                ProgressDrawTarget::hidden()
            } else if std::io::stderr().is_terminal() {
                ProgressDrawTarget::stderr_with_hz(HZ)
            } else {
                // `LLMPU_PROGRESS=1` on a pipe: draw anyway.
                ProgressDrawTarget::term_like_with_hz(Box::new(console::Term::stderr()), HZ)
            };
            let bar = ProgressBar::with_draw_target((total > 0).then_some(total), target)
                .with_style(style(total))
                .with_prefix(label.clone());
            bar.set_position(0);
            bar
        })
    }

    /// Marks `done` items finished, showing `msg` (redrawn at most ten times a second).
    pub fn set(&mut self, done: u64, msg: &str) {
        let bar = self.bar();
        bar.set_position(done);
        bar.set_message(msg.to_string());
    }

    /// Erases the line (the next [`Progress::set`] draws it again at once): call before printing
    /// to the terminal.
    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
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
    fn a_hidden_line_keeps_count_and_a_clear_starts_a_fresh_one() {
        let mut p = Progress {
            label: "gen".into(),
            total: 24,
            draw: false,
            bar: None,
        };
        p.set(6, "step 6");
        let bar = p.bar.as_ref().expect("a bar after set");
        assert!(bar.is_hidden());
        assert_eq!((bar.position(), bar.length()), (6, Some(24)));
        assert_eq!(bar.message(), "step 6");
        p.clear();
        assert!(p.bar.is_none());
        p.set(7, "step 7");
        assert_eq!(p.bar.as_ref().unwrap().position(), 7);
    }

    #[test]
    fn an_unknown_total_has_no_length() {
        let mut p = Progress {
            label: "emulating".into(),
            total: 0,
            draw: false,
            bar: None,
        };
        p.set(3, "m");
        assert_eq!(p.bar.as_ref().unwrap().length(), None);
    }
}
