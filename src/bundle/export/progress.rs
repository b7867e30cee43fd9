//! The export's progress: a bar with bytes, rate and time left on a terminal; otherwise the
//! same numbers as a log line every few seconds (the pattern of `storage migrate`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: ProgressBar,
    terminal: bool,
    stop: Arc<AtomicBool>,
}

impl Progress {
    pub fn new(terminal: bool) -> Self {
        let bar = ProgressBar::hidden();
        if let Ok(style) = ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta} {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress {
            bar,
            terminal,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Says what is to be done and starts showing progress against `bytes`.
    pub fn planned(&self, blobs: usize, bytes: u64, kept: usize, kept_bytes: u64) {
        let mut line = format!(
            "berth: export: {blobs} blobs to fetch ({})",
            HumanBytes(bytes)
        );
        if kept > 0 {
            line.push_str(&format!(
                ", {kept} already there from an earlier run ({})",
                HumanBytes(kept_bytes)
            ));
        }
        self.line(&line);
        self.bar.set_length(bytes);
        self.bar.reset_eta();
        if self.terminal {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        } else {
            self.log_lines();
        }
    }

    pub fn blob(&self, message: String) {
        self.bar.set_message(message);
    }

    pub fn fetched(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    /// A line above the bar (or in the log).
    pub fn line(&self, text: &str) {
        self.bar.suspend(|| eprintln!("{text}"));
    }

    pub fn done(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.bar.finish_and_clear();
    }

    /// A thread that logs the numbers every [`LOG_EVERY`] until [`Progress::done`].
    fn log_lines(&self) {
        let (bar, stop) = (self.bar.clone(), Arc::clone(&self.stop));
        std::thread::spawn(move || {
            let mut waited = Duration::ZERO;
            let tick = Duration::from_millis(200);
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                waited += tick;
                if waited < LOG_EVERY || stop.load(Ordering::Relaxed) {
                    continue;
                }
                waited = Duration::ZERO;
                let (done, total) = (bar.position(), bar.length().unwrap_or(0));
                eprintln!(
                    "berth: export: {} of {} ({}%), {}/s, eta {}",
                    HumanBytes(done),
                    HumanBytes(total),
                    (done * 100).checked_div(total).unwrap_or(100),
                    HumanBytes(bar.per_sec() as u64),
                    HumanDuration(bar.eta())
                );
            }
        });
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
