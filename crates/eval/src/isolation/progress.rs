//! Progress while the experiment runs: indicatif bars on a terminal, plain lines otherwise
//! (so logs of unattended runs still show where it is).

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::plan::RunKey;
use super::record::RunRecord;

/// What the harness reports while it runs.
pub trait Observer {
    /// A step that is not a measured run (zone, guest image, load changes).
    fn phase(&mut self, msg: &str);
    /// A measured run starts; `done` runs of `total` are recorded.
    fn run_start(&mut self, key: &RunKey, done: usize, total: usize);
    /// A measured run was recorded.
    fn run_done(&mut self, rec: &RunRecord, done: usize, total: usize);
    /// Something the user should read (a failed run, a stop request).
    fn warn(&mut self, msg: &str);
}

/// Discards everything (tests).
pub struct Quiet;

impl Observer for Quiet {
    fn phase(&mut self, _: &str) {}
    fn run_start(&mut self, _: &RunKey, _: usize, _: usize) {}
    fn run_done(&mut self, _: &RunRecord, _: usize, _: usize) {}
    fn warn(&mut self, _: &str) {}
}

/// Progress bars on stderr (a status line and a bar over the measured runs).
pub struct Bars {
    tty: bool,
    multi: MultiProgress,
    status: ProgressBar,
    runs: Option<ProgressBar>,
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Bars {
    pub fn new() -> Self {
        let tty = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let status = multi.add(ProgressBar::new_spinner());
        status.set_style(
            ProgressStyle::with_template("{spinner} {elapsed_precise} {wide_msg}")
                .expect("valid template"),
        );
        Self {
            tty,
            multi,
            status,
            runs: None,
        }
    }

    fn bar(&mut self, total: usize) -> &ProgressBar {
        self.runs.get_or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new(total as u64));
            b.set_style(
                ProgressStyle::with_template("runs [{bar:40}] {pos}/{len} eta {eta_precise} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b
        })
    }

    /// Print a line above the bars.
    pub fn println(&self, line: &str) {
        if self.tty {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    /// Remove the bars (before printing the final report).
    pub fn finish(&mut self) {
        self.status.finish_and_clear();
        if let Some(b) = &self.runs {
            b.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

impl Observer for Bars {
    fn phase(&mut self, msg: &str) {
        self.status.set_message(msg.to_string());
        // A steady tick only between runs: while a run measures, nothing of ours wakes up.
        self.status.enable_steady_tick(Duration::from_millis(200));
        if !self.tty {
            eprintln!("isolation: {msg}");
        }
    }

    fn run_start(&mut self, key: &RunKey, done: usize, total: usize) {
        self.status.disable_steady_tick();
        self.status.set_message(format!("running {key}"));
        let b = self.bar(total).clone();
        b.set_position(done as u64);
        if !self.tty {
            eprintln!("isolation: [{}/{}] {key}", done + 1, total);
        }
    }

    fn run_done(&mut self, rec: &RunRecord, done: usize, total: usize) {
        let b = self.bar(total).clone();
        b.set_position(done as u64);
        let what = match (rec.ok, rec.time_s) {
            (true, Some(t)) => format!(
                "last: {} {} load {} {:.3} s",
                rec.app, rec.config, rec.level, t
            ),
            _ => format!("last: {} {} load {} FAILED", rec.app, rec.config, rec.level),
        };
        b.set_message(what.clone());
        if !self.tty {
            eprintln!("isolation: {what}");
        }
    }

    fn warn(&mut self, msg: &str) {
        self.println(&format!("warning: {msg}"));
    }
}
