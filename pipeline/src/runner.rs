//! `ember run`: the stages of a run config in order, each in its own directory of the run dir
//! (`RUN/01-data`, `RUN/02-tokenizer`, …), each skipped when its manifest carries the
//! fingerprint it would get now and its artifacts still match their checksums. A changed stage
//! therefore re-runs, and so does everything downstream (its inputs' fingerprints changed).
//!
//! A run holds an exclusive `flock` on `RUN/.lock` (released by the kernel even on `kill -9`),
//! so a second `ember run` on the same directory refuses instead of corrupting it. Every start,
//! skip, finish and failure is appended to `RUN/events.jsonl`; the effective config is written
//! to `RUN/config.toml`, which `ember status` reads.
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use tracing::{info, instrument, warn};

use crate::config::{self, DataConfig, RunConfig};
use crate::error::{usage, UsageError};
use crate::stage::{self, Common, Manifest};
use crate::stages;

/// Every stage, in pipeline order; a run config wires those this build has.
pub const STAGES: [&str; 9] = [
    "data",
    "tokenizer",
    "sft",
    "reward",
    "rank",
    "finetune",
    "refine",
    "compare",
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

type Exec = Box<dyn Fn(&Path) -> Result<Manifest>>;

/// One wired stage of a run: what it hashes, what it reads, how to run it.
pub struct Planned {
    /// Pipeline name (`data`, `sft`, …).
    pub name: &'static str,
    /// The name the stage module passes to `StageRun::begin` (e.g. `synth` for `data`).
    pub hashed_name: &'static str,
    /// What the stage module hashes: `(its config, common)` as JSON.
    pub config: serde_json::Value,
    /// Its inputs, in the order the stage module passes them to `StageRun::begin`.
    pub inputs: Vec<PathBuf>,
    pub dir: PathBuf,
    exec: Exec,
}

impl Planned {
    /// A planned stage whose module hashes `config` (see [`hashed`]) and reads `inputs` (in its
    /// order).
    pub fn new(
        name: &'static str,
        hashed_name: &'static str,
        config: serde_json::Value,
        inputs: Vec<PathBuf>,
        run: &Path,
        exec: impl Fn(&Path) -> Result<Manifest> + 'static,
    ) -> Self {
        Self {
            name,
            hashed_name,
            config,
            inputs,
            dir: stage_dir(run, name),
            exec: Box::new(exec),
        }
    }

    /// The fingerprint the stage would get if it ran now.
    pub fn expected_fingerprint(&self) -> Result<String> {
        let inputs: Vec<&Path> = self.inputs.iter().map(PathBuf::as_path).collect();
        stage::expected_fingerprint(self.hashed_name, &self.config, &inputs)
    }

    /// `Ok(manifest)` when the stage is done and current; `Err(reason)` otherwise.
    pub fn check(&self) -> Result<std::result::Result<Manifest, String>> {
        let Some(m) = stage::read_manifest(&self.dir).ok().flatten() else {
            return Ok(Err("not run yet".into()));
        };
        if let Some(missing) = self.inputs.iter().find(|p| !p.exists()) {
            return Ok(Err(format!("input {} is missing", missing.display())));
        }
        if m.fingerprint != self.expected_fingerprint()? {
            return Ok(Err("config or inputs changed".into()));
        }
        if let Some(reason) = stage::verify(&self.dir, &m)? {
            return Ok(Err(reason));
        }
        Ok(Ok(m))
    }
}

/// What a stage module hashes, as JSON: `(its config, common)`.
pub fn hashed(config: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(config).expect("stage configs serialise")
}

/// The wired stages of a run config, in order, with their inputs inside `run`.
pub fn plan(cfg: &RunConfig, run: &Path) -> Vec<Planned> {
    let common = cfg.common();
    let dir = |name| stage_dir(run, name);
    let mut plans = vec![plan_data(cfg, run)];

    let (c, m, data) = (cfg.tokenizer.clone(), common.clone(), dir("data"));
    plans.push(Planned::new(
        "tokenizer",
        stages::tokenizer::NAME,
        hashed(&(&c, &m)),
        vec![data.clone()],
        run,
        move |out| {
            stages::tokenizer::run(
                &c,
                &m,
                &stages::tokenizer::Inputs { data: data.clone() },
                out,
            )
        },
    ));

    // sft hashes the tokenizer file, not its directory.
    let (c, m, data, tok) = (
        cfg.sft.clone(),
        common.clone(),
        dir("data"),
        dir("tokenizer"),
    );
    let tok_file = tok.join(policy::TOKENIZER_FILE);
    plans.push(Planned::new(
        "sft",
        stages::sft::NAME,
        hashed(&(&c, &m)),
        vec![data.clone(), tok_file],
        run,
        move |out| {
            let inputs = stages::sft::Inputs {
                data: data.clone(),
                tokenizer: tok.clone(),
                init: None,
            };
            stages::sft::run(&c, &m, &inputs, out)
        },
    ));

    // reward hashes its config with the run's seed written in.
    let (mut c, m, data, sft) = (cfg.reward.clone(), common.clone(), dir("data"), dir("sft"));
    c.seed = common.seed;
    plans.push(Planned::new(
        "reward",
        stages::reward::NAME,
        hashed(&(&c, &m)),
        vec![data.clone(), sft.clone()],
        run,
        move |out| {
            let inputs = stages::reward::Inputs {
                data: data.clone(),
                tokenizer: None,
                init: Some(sft.clone()),
                negatives_from: None,
            };
            stages::reward::run(&c, &m, &inputs, out)
        },
    ));

    // rank, refine and compare all work on the SFT policy's answers to the evaluation prompts.
    plans.push(plan_on_sft(
        "rank",
        stages::rank::NAME,
        cfg.rank.clone(),
        cfg,
        run,
        |c, m, i, out| {
            let inputs = stages::rank::Inputs {
                policy: i.policy.clone(),
                reward: i.reward.clone(),
                prompts: i.prompts.clone(),
            };
            stages::rank::run(c, m, &inputs, out)
        },
    ));

    // finetune trains on the training split's prompts, evaluates on the held-out ones and
    // mixes in the SFT demonstrations when the data stage made them (synth does).
    let (c, m, sft, rm, data) = (
        cfg.finetune.clone(),
        common.clone(),
        dir("sft"),
        dir("reward"),
        dir("data"),
    );
    let (train, eval) = (data.join("train.parquet"), eval_prompts(cfg, run));
    let mix = (matches!(cfg.data, DataConfig::Synth(_)) && c.algo == stages::finetune::Algo::Rs)
        .then(|| data.join("sft.parquet"));
    let mut hashed_inputs = vec![sft.clone(), rm.clone(), train.clone(), eval.clone()];
    hashed_inputs.extend(mix.clone());
    plans.push(Planned::new(
        "finetune",
        stages::finetune::NAME,
        hashed(&(&c, &m)),
        hashed_inputs,
        run,
        move |out| {
            let inputs = stages::finetune::Inputs {
                policy: sft.clone(),
                reward: rm.clone(),
                prompts: train.clone(),
                eval_prompts: Some(eval.clone()),
                mix_sft: mix.clone(),
                from_refine: None,
            };
            stages::finetune::run(&c, &m, &inputs, out)
        },
    ));

    // refine and compare: two ways to spend energy-model compute on the same policy's answers.
    plans.push(plan_on_sft(
        "refine",
        stages::refine::NAME,
        cfg.refine.clone(),
        cfg,
        run,
        |c, m, i, out| {
            let inputs = stages::refine::Inputs {
                policy: i.policy.clone(),
                reward: i.reward.clone(),
                prompts: i.prompts.clone(),
            };
            stages::refine::run(c, m, &inputs, out)
        },
    ));
    plans.push(plan_on_sft(
        "compare",
        stages::compare::NAME,
        cfg.compare.clone(),
        cfg,
        run,
        |c, m, i, out| {
            let inputs = stages::compare::Inputs {
                policy: i.policy.clone(),
                reward: i.reward.clone(),
                prompts: i.prompts.clone(),
            };
            stages::compare::run(c, m, &inputs, out)
        },
    ));

    let upstream: Vec<PathBuf> = plans.iter().map(|p| p.dir.clone()).collect();
    let (c, m) = (cfg.report.clone(), common);
    plans.push(Planned::new(
        "report",
        stages::report::NAME,
        hashed(&(&c, &m)),
        upstream.clone(),
        run,
        move |out| {
            let inputs = stages::report::Inputs {
                stages: upstream.clone(),
            };
            stages::report::run(&c, &m, &inputs, out)
        },
    ));
    plans
}

/// What a stage working on the SFT policy's answers reads: the policy, the energy model and the
/// evaluation prompts, in the order it hashes them.
pub struct OnSft {
    pub policy: PathBuf,
    pub reward: PathBuf,
    pub prompts: PathBuf,
}

type OnSftExec<C> = fn(&C, &Common, &OnSft, &Path) -> Result<Manifest>;

/// A stage (rank, refine, compare) whose inputs are [`OnSft`].
fn plan_on_sft<C: Serialize + 'static>(
    name: &'static str,
    hashed_name: &'static str,
    c: C,
    cfg: &RunConfig,
    run: &Path,
    exec: OnSftExec<C>,
) -> Planned {
    let i = OnSft {
        policy: stage_dir(run, "sft"),
        reward: stage_dir(run, "reward"),
        prompts: eval_prompts(cfg, run),
    };
    let m = cfg.common();
    let inputs = vec![i.policy.clone(), i.reward.clone(), i.prompts.clone()];
    Planned::new(
        name,
        hashed_name,
        hashed(&(&c, &m)),
        inputs,
        run,
        move |out| exec(&c, &m, &i, out),
    )
}

/// The prompts that sampling stages evaluate on: synth's held-out `eval_prompts.parquet`, or
/// the test split of ingested data.
fn eval_prompts(cfg: &RunConfig, run: &Path) -> PathBuf {
    let data = stage_dir(run, "data");
    match cfg.data {
        DataConfig::Synth(_) => data.join("eval_prompts.parquet"),
        DataConfig::Ingest { .. } => data.join("test.parquet"),
    }
}

/// The data stage: `synth`, or `ingest` of the config's input files (hashed as the files that
/// the globs expand to, like `ember ingest` does).
fn plan_data(cfg: &RunConfig, run: &Path) -> Planned {
    let m = cfg.common();
    match &cfg.data {
        DataConfig::Synth(c) => {
            let c = c.clone();
            Planned::new(
                "data",
                stages::synth::NAME,
                hashed(&(&c, &m)),
                Vec::new(),
                run,
                move |out| stages::synth::run(&c, &m, &stages::synth::Inputs, out),
            )
        }
        DataConfig::Ingest { inputs, config } => {
            let (c, data) = (config.clone(), inputs.clone());
            let files = datasets::read::expand_inputs(inputs).unwrap_or_default();
            Planned::new(
                "data",
                stages::ingest::NAME,
                hashed(&(&c, &m)),
                files,
                run,
                move |out| {
                    stages::ingest::run(&c, &m, &stages::ingest::Inputs { data: data.clone() }, out)
                },
            )
        }
    }
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
    validate_selection(&plans, sel)?;
    fs::create_dir_all(run)
        .with_context(|| format!("cannot create run directory {}", run.display()))?;
    let _lock = RunLock::acquire(run)?;
    fs::write(run.join(CONFIG), cfg.to_toml()?)
        .with_context(|| format!("cannot write to run directory {}", run.display()))?;
    let first = sel.from.as_deref().or(sel.only.as_deref());
    let start = first.map_or(0, |f| {
        plans.iter().position(|p| p.name == f).expect("validated")
    });
    let mut outcomes = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        if i < start || (sel.only.is_some() && i > start) {
            if i < start && p.check()?.is_err() {
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
        match p.check()? {
            Ok(m) => {
                info!(
                    stage = p.name,
                    fingerprint = &m.fingerprint[..12],
                    "up to date, skipped"
                );
                log_event(run, p.name, "skip", &m.fingerprint, 0.0, None)?;
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
    let expected = p.expected_fingerprint()?;
    log_event(run, p.name, "start", &expected, 0.0, None)?;
    let clock = Instant::now();
    match (p.exec)(&p.dir) {
        Ok(m) => {
            let secs = clock.elapsed().as_secs_f64();
            if m.fingerprint != expected {
                warn!(stage = p.name, "the stage hashes differently than `ember run` expects; it will re-run every time");
            }
            log_event(run, p.name, "done", &m.fingerprint, secs, None)?;
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
            log_event(
                run,
                p.name,
                "failed",
                &expected,
                secs,
                Some(&format!("{err:#}")),
            )?;
            Err(err.context(format!("stage {} failed", p.name)))
        }
    }
}

/// One line of `RUN/events.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub stage: String,
    pub event: String,
    pub fingerprint: String,
    pub seconds: f64,
    pub unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn log_event(
    run: &Path,
    stage: &str,
    event: &str,
    fp: &str,
    secs: f64,
    error: Option<&str>,
) -> Result<()> {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let e = Event {
        stage: stage.into(),
        event: event.into(),
        fingerprint: fp.into(),
        seconds: secs,
        unix,
        error: error.map(str::to_string),
    };
    let path = run.join(EVENTS);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string(&e)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Reads `RUN/events.jsonl` (missing → empty; unreadable lines skipped).
pub fn read_events(run: &Path) -> Vec<Event> {
    fs::read_to_string(run.join(EVENTS))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// An exclusive advisory lock on `RUN/.lock`, held until dropped (or the process dies).
pub struct RunLock {
    _file: File,
}

impl RunLock {
    pub fn acquire(run: &Path) -> Result<Self> {
        let path = run.join(LOCK);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot write to run directory {}", run.display()))?;
        // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let holder = fs::read_to_string(&path).unwrap_or_default();
            let holder = holder.trim();
            bail!(
                "run directory {} is in use by another `ember run` (pid {}); refusing to run concurrently",
                run.display(),
                if holder.is_empty() { "unknown" } else { holder }
            );
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(Self { _file: file })
    }
}

/// Usage error for a stage name given to `ember status`/`run` that is not one.
pub fn unknown_stage(name: &str) -> anyhow::Error {
    usage(format!(
        "`{name}` is not a stage (stages: {})",
        STAGES.join(", ")
    ))
}
