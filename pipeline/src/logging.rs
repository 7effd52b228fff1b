//! Logging through `tracing` to stderr (`RUST_LOG` respected), and progress bars that show on a
//! terminal only, so CI logs stay quiet.
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer;

static QUIET: AtomicBool = AtomicBool::new(false);

/// Installs the subscriber. `quiet` keeps warnings and errors only; each `verbose` raises the
/// level (info → debug → trace). `RUST_LOG`, when set, wins.
pub fn init(quiet: bool, verbose: u8) {
    QUIET.store(quiet, Ordering::Relaxed);
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(filter);
    let bars = (!quiet && std::io::stderr().is_terminal())
        .then(|| StepBars::default().with_filter(filter_fn(|m| m.target() == "progress")));
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(bars)
        .try_init();
}

/// Drives one progress bar per training loop from the `trace!(target: "progress", task, step,
/// total, loss)` events the library crates emit each optimizer step (they know nothing of
/// terminals); a new `task` finishes the previous bar.
#[derive(Default)]
struct StepBars {
    bar: Mutex<Option<(String, ProgressBar)>>,
}

#[derive(Default)]
struct StepFields {
    task: String,
    step: u64,
    total: u64,
    loss: Option<f64>,
}

impl Visit for StepFields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "step" => self.step = value,
            "total" => self.total = value,
            _ => {}
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_u64(field, value.max(0) as u64);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "loss" {
            self.loss = Some(value);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "task" {
            self.task = value.to_string();
        }
    }
    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: Subscriber> Layer<S> for StepBars {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut f = StepFields::default();
        event.record(&mut f);
        let Ok(mut slot) = self.bar.lock() else {
            return;
        };
        let fresh = match slot.as_ref() {
            Some((task, bar)) => task != &f.task || bar.length() != Some(f.total),
            None => true,
        };
        if fresh {
            if let Some((_, old)) = slot.take() {
                old.finish_and_clear();
            }
            let bar = progress(f.total, &f.task);
            *slot = Some((f.task.clone(), bar));
        }
        let (_, bar) = slot.as_ref().expect("set above");
        bar.set_position(f.step);
        if let Some(loss) = f.loss {
            bar.set_message(format!("loss {loss:.4}"));
        }
        if f.step >= f.total {
            bar.finish_and_clear();
            *slot = None;
        }
    }
}

/// A progress bar of `len` steps when stderr is a terminal and `--quiet` is off; hidden otherwise.
pub fn progress(len: u64, what: &str) -> ProgressBar {
    if QUIET.load(Ordering::Relaxed) || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} (eta {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
}
