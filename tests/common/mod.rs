//! Helpers shared by the end-to-end tests: running the real `ember` binary, a tiny run config
//! with every stage, and killing a run with SIGKILL once it has written a checkpoint.
#![allow(dead_code)] // each test file uses a different subset

use std::fs;
use std::path::Path;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const EMBER: &str = env!("CARGO_BIN_EXE_ember");

/// Every stage, sized to run in seconds on a CPU.
pub const TINY: &str = r#"
seed = 5
device = "cpu"

[data]
pairs = 240
demos = 240
eval_prompts = 12

[sft]
steps = 12
batch = 16
eval_every = 6
checkpoint_every = 6

[sft.model]
n_ctx = 48
d_model = 32
n_layer = 1
n_head = 2

[reward]
steps = 12
batch = 8
max_len = 48
eval_every = 6
eval_pairs = 32
checkpoint_every = 4

[rank]
n = 4
max_new_tokens = 10
max_prompts = 6

[finetune]
rounds = 1
n = 2
prompts_per_round = 8
steps = 2
batch = 8
max_new_tokens = 10
eval_prompts = 4
eval_samples = 2
checkpoint_every = 1
bootstrap = 20

[refine]
max_new_tokens = 10
max_prompts = 3

[refine.optimiser]
steps = 2

[compare]
budgets = [1, 2, 4]
max_new_tokens = 10
max_prompts = 3
resamples = 20

[report]
title = "test run"
plots = false
"#;

/// Runs `ember ARGS` in `cwd` with info logs.
pub fn ember(args: &[&str], cwd: &Path) -> Output {
    Command::new(EMBER)
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .output()
        .expect("ember runs")
}

/// Runs `ember ARGS` in the test process's own directory (for tests that pass absolute
/// paths), warnings and errors only.
pub fn ember_abs(args: &[&str]) -> Output {
    Command::new(EMBER)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("ember runs")
}

/// stdout and stderr together.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Asserts a usage or input error (exit code 2) whose message contains `needle`.
pub fn assert_exit_2(o: &Output, needle: &str) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains(needle), "{needle:?} not in: {t}");
}

/// Asserts success and returns stdout + stderr.
pub fn ok(o: &Output) -> String {
    let t = text(o);
    assert!(o.status.success(), "{t}");
    t
}

/// Writes [`TINY`] to `dir/run.toml` and runs `stages` of it, one `--only` at a time, into
/// `dir/run` (so a test gets the upstream stages it needs and no more).
pub fn run_tiny_stages(dir: &Path, stages: &[&str]) {
    fs::write(dir.join("run.toml"), TINY).unwrap();
    for stage in stages {
        ok(&ember(
            &["run", "run.toml", "--run-dir", "run", "--only", stage],
            dir,
        ));
    }
}

/// Starts `ember ARGS`, waits until the checkpoint at `ckpt` has been written a second time (so
/// training is under way and resumable), then sends SIGKILL. Panics if the run finished first.
pub fn kill_after_second_checkpoint(args: &[String], cwd: &Path, ckpt: &Path) -> ExitStatus {
    let mut child = Command::new(EMBER)
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ember starts");
    let clock = Instant::now();
    let mut seen = None;
    while clock.elapsed() < Duration::from_secs(120) {
        if let Ok(m) = fs::metadata(ckpt) {
            let t = m.modified().unwrap();
            if seen.is_some_and(|s| s != t) {
                break;
            }
            seen.get_or_insert(t);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    assert!(
        status.code().is_none(),
        "the run finished before the kill; make it longer"
    );
    status
}
