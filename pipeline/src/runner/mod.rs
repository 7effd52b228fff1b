//! `ember run`: the stages of a run config in order, each in its own directory of the run dir
//! (`RUN/01-data`, `RUN/02-tokenizer`, …), each skipped when its manifest carries the
//! fingerprint it would get now and its artifacts still match their checksums. A changed stage
//! therefore re-runs, and so does everything downstream (its inputs' fingerprints changed).
//!
//! A run holds an exclusive `flock` on `RUN/.lock` (released by the kernel even on `kill -9`),
//! so a second `ember run` on the same directory refuses instead of corrupting it. Every start,
//! skip, finish and failure is appended to `RUN/events.jsonl`; the effective config is written
//! to `RUN/config.toml`, which `ember status` reads.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use tracing::{info, instrument};

use crate::config::{self, DataConfig, RunConfig};
use crate::error::{usage, UsageError};
use crate::stage::Manifest;

mod events;
mod plan;

use events::log_event;
pub use events::{read_events, Event, RunLock};
pub use plan::{plan, Planned};

/// Every stage, in pipeline order; a run config wires those this build has.
pub const STAGES: [&str; 10] = [
    "data",
    "tokenizer",
    "sft",
    "reward",
    "rank",
    "finetune",
    "refine",
    "compare",
    "eval",
    "report",
];
pub const LOCK: &str = ".lock";
pub const EVENTS: &str = "events.jsonl";
pub const CONFIG: &str = "config.toml";

/// `RUN/NN-name`, NN the stage's 1-based position in [`STAGES`].
pub fn stage_dir(run: &Path, name: &str) -> PathBuf {
    let i = STAGES.iter().position(|s| *s == name).expect("known stage");
    run.join(format!("{:02}-{name}", i + 1))
}

/// Which stages to run and which to force.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub from: Option<String>,
    pub only: Option<String>,
    pub force: Vec<String>,
}

/// `ember run CONFIG.toml`: run the wired stages in order, skipping those already done.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run config (TOML). `ember demo --print-config` prints one to start from.
    pub config: PathBuf,
    /// Run directory (default: the config's `run_dir`, else `runs/<config name>`).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Re-run this stage and every stage after it (earlier ones must be done).
    #[arg(long, value_name = "STAGE", conflicts_with = "only")]
    pub from: Option<String>,
    /// Re-run only this stage (earlier ones must be done).
    #[arg(long, value_name = "STAGE")]
    pub only: Option<String>,
    /// Re-run this stage even if it is up to date; `all` for every stage. Repeatable.
    #[arg(long, value_name = "STAGE|all")]
    pub force: Vec<String>,
    /// Override a config key, e.g. `--set sft.steps=200` (value parsed as TOML). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

pub fn cli(args: Args) -> Result<ExitCode> {
    let cfg = config::load(&args.config, &args.set)?;
    if let Some(code) = crate::dist::join_run(cfg.distributed.world_size)? {
        return Ok(code);
    }
    let run = args
        .run_dir
        .clone()
        .or_else(|| cfg.run_dir.clone())
        .unwrap_or_else(|| default_run_dir(&args.config));
    let sel = Selection {
        from: args.from,
        only: args.only,
        force: args.force,
    };
    run_pipeline(&cfg, &run, &sel)?;
    Ok(ExitCode::SUCCESS)
}

/// `runs/<config file stem>`.
pub fn default_run_dir(config: &Path) -> PathBuf {
    let stem = config.file_stem().map(|s| s.to_string_lossy().into_owned());
    PathBuf::from("runs").join(stem.unwrap_or_else(|| "run".into()))
}

/// What happened to each stage of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub stage: String,
    pub ran: bool,
    pub fingerprint: String,
    pub seconds: f64,
}

/// Runs `cfg` in `run` under the lock; returns one outcome per stage considered.
#[instrument(skip_all, fields(run = %run.display()))]
pub fn run_pipeline(cfg: &RunConfig, run: &Path, sel: &Selection) -> Result<Vec<Outcome>> {
    let cfg = &with_absolute_inputs(cfg)?;
    let plans = plan(cfg, run);
    reject_invalid(&plans, &cfg.lines)?;
    check_inputs(cfg)?;
    validate_selection(&plans, sel)?;
    // In a job, rank 0 holds the run directory: the lock, the config, the events, the outputs;
    // the other ranks learn whether it could (a run directory in use stops them all). The lock
    // is held until the run returns.
    let mut _lock = None;
    policy::dist::from_root(policy::dist::group(), "claiming the run directory", || {
        _lock = Some(claim(run, cfg)?);
        Ok::<_, anyhow::Error>(())
    })?;
    let first = sel.from.as_deref().or(sel.only.as_deref());
    let start = first.map_or(0, |f| {
        plans.iter().position(|p| p.name == f).expect("validated")
    });
    let mut outcomes = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        // Ctrl-C during a stage that finished anyway: stop before the next one (every rank).
        policy::interrupt::check_in_job(None)?;
        if i < start || (sel.only.is_some() && i > start) {
            if i < start && done(p)?.is_err() {
                let first = first.unwrap_or_default();
                return Err(UsageError::with_hint(
                    format!(
                        "stage {} is not done, so --from/--only {first} cannot run",
                        p.name
                    ),
                    format!(
                        "run `ember run` without --from/--only first (or --from {})",
                        p.name
                    ),
                )
                .into());
            }
            continue;
        }
        let forced = i == start && first.is_some()
            || sel.from.is_some()
            || sel.force.iter().any(|f| f == "all" || f == p.name);
        outcomes.push(run_one(p, run, forced)?);
    }
    Ok(outcomes)
}

/// Creates the run directory, takes its lock and writes the effective config.
fn claim(run: &Path, cfg: &RunConfig) -> Result<RunLock> {
    fs::create_dir_all(run)
        .with_context(|| format!("cannot create run directory {}", run.display()))?;
    let lock = RunLock::acquire(run)?;
    fs::write(run.join(CONFIG), cfg.to_toml()?)
        .with_context(|| format!("cannot write to run directory {}", run.display()))?;
    Ok(lock)
}

/// [`Planned::check`] as rank 0 finds it (the run directory is rank 0's), on every rank.
fn done(p: &Planned) -> Result<std::result::Result<Manifest, String>> {
    policy::dist::from_root(policy::dist::group(), "checking a stage on rank 0", || {
        p.check()
    })
}

/// Runs the stage: on every rank when it shares its work, else on rank 0 alone (the others
/// get its manifest, or its error, when it ends).
fn execute(p: &Planned) -> Result<Manifest> {
    let group = policy::dist::group();
    if p.shards || group.is_none() {
        return p.execute();
    }
    policy::dist::from_root(group, "a stage on rank 0", || {
        policy::dist::locally(|| p.execute())
    })
}

/// Appends to `RUN/events.jsonl`: rank 0's (or the process alone's) to write.
fn event(
    run: &Path,
    p: &Planned,
    kind: &str,
    fp: &str,
    secs: f64,
    err: Option<&str>,
) -> Result<()> {
    match policy::dist::is_writer() {
        true => log_event(run, p.name, kind, fp, secs, err),
        false => Ok(()),
    }
}

/// Checks every section's values, as `ember run` does before its first stage: a usage error
/// listing each wrong value by its key path.
pub fn check(cfg: &RunConfig) -> Result<()> {
    reject_invalid(&plan(cfg, Path::new(".")), &cfg.lines)?;
    check_inputs(cfg)
}

/// The files a run reads from outside its directory exist: `[data] inputs` match files, and
/// `base` is a policy directory. Checked before the first stage, not when the stage starts.
fn check_inputs(cfg: &RunConfig) -> Result<()> {
    if let DataConfig::Ingest { inputs, .. } = &cfg.data {
        datasets::read::expand_inputs(inputs)
            .map_err(|e| usage(format!("invalid config value data.inputs: {e}")))?;
    }
    if let Some(base) = &cfg.base {
        let dir = plan::expand_home(base);
        let missing: Vec<&str> = [
            policy::CONFIG_FILE,
            policy::WEIGHTS_FILE,
            policy::TOKENIZER_FILE,
        ]
        .into_iter()
        .filter(|f| !dir.join(f).is_file())
        .collect();
        if !missing.is_empty() {
            return Err(UsageError::with_hint(
                format!(
                    "invalid config value base: {} is not a policy directory (no {})",
                    dir.display(),
                    missing.join(", ")
                ),
                "make one with `ember import` (or `make pretrained` for SmolLM2)",
            )
            .into());
        }
    }
    Ok(())
}

fn reject_invalid(plans: &[Planned], lines: &config::KeyLines) -> Result<()> {
    config::reject_sections(plans.iter().map(|p| (p.name, &p.invalid)), lines)
}

/// The config with `[data] inputs` made absolute against the working directory, so that the
/// `config.toml` a run keeps (and `ember status` reads) means the same files from anywhere.
fn with_absolute_inputs(cfg: &RunConfig) -> Result<RunConfig> {
    let mut cfg = cfg.clone();
    if let DataConfig::Ingest { inputs, .. } = &mut cfg.data {
        let cwd = std::env::current_dir().context("reading the working directory")?;
        for input in inputs.iter_mut() {
            if Path::new(input.as_str()).is_relative() {
                *input = cwd.join(&*input).display().to_string();
            }
        }
    }
    Ok(cfg)
}

fn validate_selection(plans: &[Planned], sel: &Selection) -> Result<()> {
    let names: Vec<&str> = plans.iter().map(|p| p.name).collect();
    let given = sel
        .from
        .iter()
        .chain(&sel.only)
        .chain(sel.force.iter().filter(|f| *f != "all"));
    for name in given {
        if !names.contains(&name.as_str()) {
            let hint = match config::closest(name, STAGES.iter().copied()) {
                Some(s) if names.contains(&s) => format!("did you mean `{s}`?"),
                _ => format!("stages of this run: {}", names.join(", ")),
            };
            let what = if STAGES.contains(&name.as_str()) {
                "is not wired in this build"
            } else {
                "is not a stage"
            };
            return Err(UsageError::with_hint(format!("`{name}` {what}"), hint).into());
        }
    }
    Ok(())
}

/// Skips or runs one stage, logging the event.
fn run_one(p: &Planned, run: &Path, forced: bool) -> Result<Outcome> {
    if !forced {
        match done(p)? {
            Ok(m) => {
                info!(
                    stage = p.name,
                    fingerprint = &m.fingerprint[..12],
                    "up to date, skipped"
                );
                event(run, p, "skip", &m.fingerprint, 0.0, None)?;
                return Ok(Outcome {
                    stage: p.name.into(),
                    ran: false,
                    fingerprint: m.fingerprint,
                    seconds: 0.0,
                });
            }
            Err(reason) => info!(stage = p.name, reason = %reason, "running"),
        }
    } else {
        info!(stage = p.name, "running (forced)");
    }
    let expected = match policy::dist::is_writer() {
        true => p.expected_fingerprint()?,
        false => String::new(),
    };
    event(run, p, "start", &expected, 0.0, None)?;
    let clock = Instant::now();
    match execute(p) {
        Ok(m) => {
            let secs = clock.elapsed().as_secs_f64();
            event(run, p, "done", &m.fingerprint, secs, None)?;
            info!(stage = p.name, seconds = format!("{secs:.1}"), "done");
            Ok(Outcome {
                stage: p.name.into(),
                ran: true,
                fingerprint: m.fingerprint,
                seconds: secs,
            })
        }
        Err(err) => {
            let secs = clock.elapsed().as_secs_f64();
            event(run, p, "failed", &expected, secs, Some(&format!("{err:#}")))?;
            Err(err.context(format!("stage {} failed", p.name)))
        }
    }
}

/// Usage error for a stage name given to `ember status`/`run` that is not one.
pub fn unknown_stage(name: &str) -> anyhow::Error {
    usage(format!(
        "`{name}` is not a stage (stages: {})",
        STAGES.join(", ")
    ))
}
