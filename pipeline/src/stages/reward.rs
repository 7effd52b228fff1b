//! `ember reward train|eval|score|doctor`: the energy-based reward model (LeCun et al. 2006,
//! "A Tutorial on Energy-Based Learning") — contrastive training, evaluation, scoring of
//! (prompt, answer) rows and a preflight doctor. `train` is the pipeline stage.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use polars::prelude::{Column, DataFrame};
use reward::loss::{LossKind, TieMode};
use reward::metrics::{EvalReport, Thresholds};
use reward::EnergyScorer;
use serde_json::{json, Value};

use crate::error::usage;
use crate::stage::{Common, Manifest, StageRun};

/// The name this stage hashes and records in its manifest.
pub const NAME: &str = "reward";

/// The `[reward]` section of a run config (the training settings; see `ember reward train --help`).
pub type Config = reward::train::TrainConfig;

/// Upstream artifacts the stage reads.
pub struct Inputs {
    /// Directory with `train.parquet` and `val.parquet` (from `ember ingest` or `ember synth`).
    pub data: PathBuf,
    /// `tokenizer.json`; defaults to the init checkpoint's.
    pub tokenizer: Option<PathBuf>,
    /// A policy (SFT) checkpoint directory whose trunk initialises the model.
    pub init: Option<PathBuf>,
    /// The policy that `sampled_negatives` are drawn from (default: `init`).
    pub negatives_from: Option<PathBuf>,
}

/// Trains the energy model into `out` (resumable: a killed run re-run with the same config
/// continues from `out.partial/ckpt`).
pub fn run(cfg: &Config, common: &Common, inputs: &Inputs, out: &Path) -> Result<Manifest> {
    let mut cfg = cfg.clone();
    cfg.seed = common.seed;
    let (device, _amp) = common.device()?;
    let mut paths: Vec<&Path> = vec![&inputs.data];
    paths.extend(inputs.tokenizer.as_deref());
    paths.extend(inputs.init.as_deref());
    let negatives_from = (cfg.sampled_negatives > 0)
        .then(|| {
            inputs
                .negatives_from
                .clone()
                .or_else(|| inputs.init.clone())
        })
        .flatten();
    if let Some(n) = negatives_from
        .as_deref()
        .filter(|n| Some(*n) != inputs.init.as_deref())
    {
        paths.push(n);
    }
    let run = StageRun::begin(NAME, &(&cfg, common), &paths, out, true)?;
    let train_inputs = reward::train::TrainInputs {
        data: inputs.data.clone(),
        tokenizer: inputs.tokenizer.clone(),
        init: inputs.init.clone(),
        negatives_from: negatives_from.clone(),
    };
    let summary = reward::train::train(&cfg, &train_inputs, run.dir(), device)
        .with_context(|| format!("training the energy model on {}", inputs.data.display()))?;
    write_val_energies(
        &inputs.data.join("val.parquet"),
        &summary.val_energies,
        run.dir(),
    )?;
    let metrics = serde_json::to_value(&summary)?;
    run.finish(metrics, &["ckpt", "ckpt.old", "ckpt.tmp", "best"])
}

/// `VAL_ENERGIES`: the trained model's energies of the validation pairs it was evaluated on
/// (`prompt`, `e_chosen`, `e_rejected`, plus `gold_chosen`/`gold_rejected` on synth), for the
/// report's histograms; the energies come from training's final evaluation, not a re-scoring.
pub const VAL_ENERGIES: &str = "val_energies.parquet";

fn write_val_energies(
    val: &Path,
    energies: &[reward::train::ValEnergy],
    model_dir: &Path,
) -> Result<()> {
    let rows = reward::data::load_pairs(val)?;
    let rows: Vec<_> = energies.iter().map(|e| &rows[e.row]).collect();
    let prompts: Vec<&str> = rows.iter().map(|r| r.prompt.as_str()).collect();
    let ec: Vec<f32> = energies.iter().map(|e| e.chosen).collect();
    let er: Vec<f32> = energies.iter().map(|e| e.rejected).collect();
    let mut cols = vec![
        Column::new("prompt".into(), prompts),
        Column::new("e_chosen".into(), ec),
        Column::new("e_rejected".into(), er),
    ];
    if rows.iter().all(|r| r.gold_chosen.is_some()) {
        let gc: Vec<Option<f32>> = rows.iter().map(|r| r.gold_chosen).collect();
        let gr: Vec<Option<f32>> = rows.iter().map(|r| r.gold_rejected).collect();
        cols.push(Column::new("gold_chosen".into(), gc));
        cols.push(Column::new("gold_rejected".into(), gr));
    }
    let path = model_dir.join(VAL_ENERGIES);
    let mut df = DataFrame::new(rows.len(), cols)?;
    datasets::table::write_parquet(&path, &mut df)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train an energy model on preference pairs.
    Train(Box<TrainArgs>),
    /// Pairwise accuracy, gap, calibration, length baseline of a model on preference tables.
    Eval(EvalArgs),
    /// Add an `energy` column to rows with `prompt` and `answer` (Parquet or JSONL).
    Score(ScoreArgs),
    /// Preflight checks of the classic reward-model bugs, each PASS/FAIL with its numbers.
    Doctor(DoctorArgs),
}

/// `ember reward train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Directory with train.parquet and val.parquet.
    #[arg(long)]
    pub data: PathBuf,
    /// tokenizer.json, or the directory holding it (defaults to the one in --init).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Policy (SFT) checkpoint directory whose trunk initialises the model (recommended).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Loss: log (Bradley–Terry), hinge, square-square, square-exp, nll (InfoNCE).
    #[arg(long, default_value = "log")]
    pub loss: String,
    /// Output model directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = Config::default().steps)]
    pub steps: u64,
    /// Pairs per step.
    #[arg(long, default_value_t = Config::default().batch)]
    pub batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = Config::default().optim.lr)]
    pub lr: f64,
    /// Longest sequence (prompt + answer); prompts are truncated from the left.
    #[arg(long, default_value_t = Config::default().max_len)]
    pub max_len: usize,
    /// Margin m of hinge / square-square.
    #[arg(long, default_value_t = Config::default().loss.margin)]
    pub margin: f64,
    /// Weight λ of the zero-anchor term λ·mean(E⁺²).
    #[arg(long, default_value_t = Config::default().loss.anchor)]
    pub anchor: f64,
    /// What the score reads: head (a linear head at the EOS), or head+nll (plus the answer's
    /// negative log-likelihood under the trunk; start it from an SFT trunk with --init).
    #[arg(long, value_enum, default_value_t = reward::model::Score::Head)]
    pub score: reward::model::Score,
    /// Tie rows: skip, or equal (trained towards equal energy).
    #[arg(long, default_value = "skip")]
    pub ties: String,
    /// nll: other prompts' chosen answers used as extra negatives of each prompt.
    #[arg(long, default_value_t = Config::default().in_batch_negatives)]
    pub in_batch_negatives: usize,
    /// nll: a policy to sample extra negatives from (default: --init when -k is set).
    #[arg(long, value_name = "DIR")]
    pub negatives_from: Option<PathBuf>,
    /// nll: answers sampled from that policy per training prompt, used as extra negatives.
    #[arg(short = 'k', long = "sampled-negatives", default_value_t = Config::default().sampled_negatives)]
    pub sampled_negatives: usize,
    /// Validate every N steps.
    #[arg(long, default_value_t = Config::default().eval_every)]
    pub eval_every: u64,
    /// Write a resumable checkpoint every N steps.
    #[arg(long, default_value_t = Config::default().checkpoint_every)]
    pub checkpoint_every: u64,
    /// Early stopping: evaluations without improvement before stopping (0 = off).
    #[arg(long, default_value_t = Config::default().patience)]
    pub patience: u64,
    /// From scratch: width, layers, heads of the trunk.
    #[arg(long, default_value_t = Config::default().d_model)]
    pub d_model: i64,
    #[arg(long, default_value_t = Config::default().n_layer)]
    pub n_layer: i64,
    #[arg(long, default_value_t = Config::default().n_head)]
    pub n_head: i64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// fp32, or bf16 (autocast on CUDA; weights and optimizer state stay fp32).
    #[arg(long, value_enum, default_value_t = policy::device::Precision::Fp32)]
    pub precision: policy::device::Precision,
}

impl TrainArgs {
    fn config(&self) -> Result<Config> {
        let kind = LossKind::parse(&self.loss).ok_or_else(|| {
            usage(format!(
                "--loss {}: expected log, hinge, square-square, square-exp or nll",
                self.loss
            ))
        })?;
        let ties = match self.ties.as_str() {
            "skip" => TieMode::Skip,
            "equal" => TieMode::Equal,
            t => return Err(usage(format!("--ties {t}: expected skip or equal"))),
        };
        let mut cfg = Config {
            steps: self.steps,
            batch: self.batch,
            max_len: self.max_len,
            score: self.score,
            ties,
            in_batch_negatives: self.in_batch_negatives,
            sampled_negatives: self.sampled_negatives,
            eval_every: self.eval_every,
            patience: self.patience,
            checkpoint_every: self.checkpoint_every,
            d_model: self.d_model,
            n_layer: self.n_layer,
            n_head: self.n_head,
            seed: self.seed,
            ..Config::default()
        };
        cfg.loss.kind = kind;
        cfg.loss.margin = self.margin;
        cfg.loss.anchor = self.anchor;
        cfg.optim.lr = self.lr;
        // The cosine decays to a tenth of the peak, as `ember sft` does (the default config's
        // 1e-3 → 1e-4 is this rule too).
        cfg.optim.min_lr = self.lr / 10.0;
        cfg.check().map_err(|e| usage(e.to_string()))?;
        Ok(cfg)
    }
}

/// `ember reward eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Model directory from `ember reward train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Preference tables (a directory means its val.parquet and test.parquet).
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<PathBuf>,
    /// Write the reports as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `ember reward score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// Model directory from `ember reward train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Rows with string fields `prompt` and `answer` (.parquet or .jsonl).
    #[arg(long)]
    pub input: PathBuf,
    /// The same rows plus `energy` (.parquet or .jsonl, by extension).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// `ember reward doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Model directory from `ember reward train`.
    #[arg(long)]
    pub model: PathBuf,
    /// A preference table to run the checks on.
    #[arg(long)]
    pub data: PathBuf,
    /// Pairs used.
    #[arg(long, default_value_t = 256)]
    pub pairs: usize,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn cli(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Train(a) => train_cli(*a),
        Command::Eval(a) => eval_cli(a),
        Command::Score(a) => score_cli(a),
        Command::Doctor(a) => doctor_cli(a),
    }
}

fn train_cli(a: TrainArgs) -> Result<ExitCode> {
    let cfg = a.config()?;
    if !a.data.join("train.parquet").exists() {
        return Err(usage(format!(
            "{} has no train.parquet (run `ember ingest` or `ember synth`)",
            a.data.display()
        )));
    }
    let common = Common {
        precision: a.precision,
        seed: a.seed,
        device: a.device.clone(),
    };
    let inputs = Inputs {
        data: a.data,
        tokenizer: a.tokenizer,
        init: a.init,
        negatives_from: a.negatives_from,
    };
    let m = run(&cfg, &common, &inputs, &a.out)?;
    let v = &m.metrics["val"];
    println!(
        "val accuracy {:.4} (length heuristic {:.4}) over {} pairs; best step {}; {:.0} tokens/s; model in {}",
        v["accuracy"].as_f64().unwrap_or(f64::NAN),
        v["length_heuristic_accuracy"].as_f64().unwrap_or(f64::NAN),
        v["pairs"],
        m.metrics["best_step"],
        m.metrics["tokens_per_s"].as_f64().unwrap_or(0.0),
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn load_scorer(dir: &Path, device: &str) -> Result<EnergyScorer> {
    let device = policy::device::resolve_str(device)?;
    EnergyScorer::load(dir, device)
        .with_context(|| format!("loading the energy model {}", dir.display()))
}

/// The tables named by `--data`: files as given, directories as their val/test splits.
fn expand_tables(data: &[PathBuf]) -> Vec<PathBuf> {
    data.iter()
        .flat_map(|p| {
            if p.is_dir() {
                ["val.parquet", "test.parquet"]
                    .iter()
                    .map(|f| p.join(f))
                    .filter(|f| f.exists())
                    .collect()
            } else {
                vec![p.clone()]
            }
        })
        .collect()
}

/// Evaluates one table; for tables with gold columns, also against the noise-free gold order.
pub fn eval_table(scorer: &EnergyScorer, path: &Path, batch: usize) -> Result<Value> {
    let rows = reward::data::load_pairs(path)?;
    let th = Thresholds {
        eps: 0.1,
        margin: 1.0,
    };
    let report = |rows: &[datasets::table::PairRow]| -> EvalReport {
        let (pairs, _) = reward::data::encode_rows(
            &scorer.tokenizer,
            rows,
            scorer.config.max_len,
            TieMode::Skip,
        );
        reward::eval::evaluate(
            &scorer.model,
            rows,
            &pairs,
            batch,
            scorer.tokenizer.pad_id(),
            scorer.device,
            th,
        )
    };
    let (_, fit) = reward::data::encode_rows(
        &scorer.tokenizer,
        &rows,
        scorer.config.max_len,
        TieMode::Skip,
    );
    let mut out =
        json!({ "file": path.display().to_string(), "fit": fit, "labels": report(&rows) });
    if let Some(gold) = reward::data::gold_ordered(&rows) {
        out["gold"] = serde_json::to_value(report(&gold))?;
    }
    Ok(out)
}

fn print_report(name: &str, r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "{name:<36} {:>6} {:>8.4} {:>8.3} {:>7.3} {:>8.4} {:>8.4}",
        r["pairs"],
        f("accuracy"),
        f("mean_gap"),
        f("ece"),
        f("length_heuristic_accuracy"),
        r["length_agreement"].as_f64().unwrap_or(f64::NAN)
    );
}

/// Accuracy per `source` of a report, one indented line each, when it has at least `min` sources.
fn print_by_source(report: &Value, min: usize) {
    if let Some(src) = report["by_source"].as_object().filter(|s| s.len() >= min) {
        for (s, v) in src {
            println!(
                "    {s:<32} {:>6} {:>8.4}",
                v["pairs"],
                v["accuracy"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
}

fn eval_cli(a: EvalArgs) -> Result<ExitCode> {
    let scorer = load_scorer(&a.model, &a.device)?;
    let tables = expand_tables(&a.data);
    if tables.is_empty() {
        return Err(usage("no preference tables found in --data"));
    }
    println!(
        "{:<36} {:>6} {:>8} {:>8} {:>7} {:>8} {:>8}",
        "table", "pairs", "acc", "gap", "ece", "len-acc", "len-agr"
    );
    let mut all = Vec::new();
    for t in &tables {
        let r = eval_table(&scorer, t, a.batch)
            .with_context(|| format!("evaluating {}", t.display()))?;
        let name: Vec<char> = t.display().to_string().chars().collect();
        let short: String = name[name.len().saturating_sub(36)..].iter().collect();
        print_report(&short, &r["labels"]);
        print_by_source(&r["labels"], 2);
        if r.get("gold").is_some() {
            print_report("  (vs gold order)", &r["gold"]);
            // Gold rows are grouped by what they ask (right vs wrong, near misses, …).
            print_by_source(&r["gold"], 1);
        }
        all.push(r);
    }
    if let Some(out) = &a.out {
        std::fs::write(out, serde_json::to_string_pretty(&all)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Rows of a Parquet or JSON Lines file as JSON objects.
pub(crate) fn read_rows(path: &Path) -> Result<Vec<Value>> {
    let name = path.to_string_lossy().to_lowercase();
    if name.ends_with(".jsonl") || name.ends_with(".jsonl.gz") {
        let recs = datasets::read::read_file(path)?;
        recs.iter()
            .map(|r| {
                r.parse()
                    .map_err(|e| usage(format!("{} line {}: {e}", path.display(), r.line)))
            })
            .collect()
    } else {
        Ok(datasets::table::read_parquet_rows(path)?)
    }
}

/// (prompt, answer) of each row, or the row numbers (1-based) and reasons of the bad ones.
pub(crate) fn prompts_answers(
    rows: &[Value],
) -> std::result::Result<(Vec<String>, Vec<String>), Vec<String>> {
    let (mut p, mut a, mut bad) = (Vec::new(), Vec::new(), Vec::new());
    for (i, r) in rows.iter().enumerate() {
        match (
            r.get("prompt").and_then(Value::as_str),
            r.get("answer").and_then(Value::as_str),
        ) {
            (Some(x), Some(y)) => {
                p.push(x.to_string());
                a.push(y.to_string());
            }
            (None, _) => bad.push(format!("row {}: no string field `prompt`", i + 1)),
            (_, None) => bad.push(format!("row {}: no string field `answer`", i + 1)),
        }
    }
    if bad.is_empty() {
        Ok((p, a))
    } else {
        Err(bad)
    }
}

fn score_cli(a: ScoreArgs) -> Result<ExitCode> {
    let rows = read_rows(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let (prompts, answers) = prompts_answers(&rows).map_err(|bad| {
        let shown = bad.iter().take(10).cloned().collect::<Vec<_>>().join("; ");
        usage(format!(
            "{}: {} bad rows: {shown}",
            a.input.display(),
            bad.len()
        ))
    })?;
    let scorer = load_scorer(&a.model, &a.device)?;
    let energies = scorer.score(&prompts, &answers, a.batch)?;
    let rows: Vec<Value> = rows
        .into_iter()
        .zip(&energies)
        .map(|(mut r, e)| {
            r["energy"] = json!(e);
            r
        })
        .collect();
    let tmp = a.out.with_extension("partial");
    if a.out.to_string_lossy().to_lowercase().ends_with(".jsonl") {
        let mut w = BufWriter::new(
            File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?,
        );
        for r in &rows {
            writeln!(w, "{r}")?;
        }
        w.flush()?;
    } else {
        write_parquet_rows(&tmp, &rows)?;
    }
    std::fs::rename(&tmp, &a.out).with_context(|| format!("writing {}", a.out.display()))?;
    eprintln!("scored {} rows into {}", rows.len(), a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// JSON rows → Parquet, one column per key of the first row: numbers as f64, booleans,
/// strings; anything else as its JSON text.
fn write_parquet_rows(path: &Path, rows: &[Value]) -> Result<()> {
    let keys: Vec<String> = rows
        .first()
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    let mut cols = Vec::new();
    for k in &keys {
        let vals: Vec<&Value> = rows
            .iter()
            .map(|r| r.get(k).unwrap_or(&Value::Null))
            .collect();
        let col = if vals.iter().all(|v| v.is_number() || v.is_null()) {
            Column::new(
                k.as_str().into(),
                vals.iter().map(|v| v.as_f64()).collect::<Vec<_>>(),
            )
        } else if vals.iter().all(|v| v.is_boolean() || v.is_null()) {
            Column::new(
                k.as_str().into(),
                vals.iter().map(|v| v.as_bool()).collect::<Vec<_>>(),
            )
        } else {
            let s: Vec<Option<String>> = vals
                .iter()
                .map(|v| match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })
                .collect();
            Column::new(k.as_str().into(), s)
        };
        cols.push(col);
    }
    let mut df =
        DataFrame::new(rows.len(), cols).with_context(|| format!("building {}", path.display()))?;
    datasets::table::write_parquet(path, &mut df)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn doctor_cli(a: DoctorArgs) -> Result<ExitCode> {
    let scorer = load_scorer(&a.model, &a.device)?;
    let rows = reward::data::load_pairs(&a.data)?;
    let checks = reward::doctor::run(&scorer, &rows, a.pairs)?;
    for c in &checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| !c.pass).count();
    println!("{} checks, {failed} failed", checks.len());
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
