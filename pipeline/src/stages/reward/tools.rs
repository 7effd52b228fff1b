//! `ember reward score|doctor`: a trained energy model put to use on tables — an `energy`
//! column for any rows, and the preflight checks of the classic reward-model bugs (`ember
//! reward eval` is the `eval` stage, `stages::eval`).
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use polars::prelude::{Column, DataFrame};
use policy::device::Autocast;
use reward::EnergyScorer;
use serde_json::{json, Value};

use crate::error::usage;
use crate::stage::RuntimeArgs;

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
    #[command(flatten)]
    pub runtime: RuntimeArgs,
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
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// The energy model on the flags' device, and the autocast scope of their precision (keep it
/// alive while scoring).
fn load_scorer(dir: &Path, runtime: &RuntimeArgs) -> Result<(EnergyScorer, Option<Autocast>)> {
    crate::stage::verify_input(dir)?;
    let (device, amp) = runtime.device()?;
    let scorer = EnergyScorer::load(dir, device)
        .with_context(|| format!("loading the energy model {}", dir.display()))?;
    Ok((scorer, amp))
}

/// The message of a [`policy::PolicyError::Weights`] in `err`'s chain.
fn weights_error(err: &anyhow::Error) -> Option<String> {
    err.chain()
        .find_map(|e| match e.downcast_ref::<policy::PolicyError>() {
            Some(w @ policy::PolicyError::Weights { .. }) => Some(w.to_string()),
            _ => match e.downcast_ref::<reward::RewardError>() {
                Some(reward::RewardError::Policy(w @ policy::PolicyError::Weights { .. })) => {
                    Some(w.to_string())
                }
                _ => None,
            },
        })
}

/// Rows of a Parquet or JSON Lines file as JSON objects.
pub fn read_rows(path: &Path) -> Result<Vec<Value>> {
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
pub fn prompts_answers(
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

pub(super) fn score_cli(a: ScoreArgs) -> Result<ExitCode> {
    crate::stage::check_file_out(&a.out, &[&a.input, &a.model])?;
    let rows = read_rows(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let (prompts, answers) = prompts_answers(&rows).map_err(|bad| {
        let shown = bad.iter().take(10).cloned().collect::<Vec<_>>().join("; ");
        usage(format!(
            "{}: {} bad rows: {shown}",
            a.input.display(),
            bad.len()
        ))
    })?;
    let (scorer, _amp) = load_scorer(&a.model, &a.runtime)?;
    let energies = scorer.score(&prompts, &answers, a.batch)?;
    if let Some(i) = energies.iter().position(|e| !e.is_finite()) {
        bail!(
            "the energy of row {} of {} is {}: model {} is broken (run `ember reward doctor --model {}`); nothing was written",
            i + 1,
            a.input.display(),
            energies[i],
            a.model.display(),
            a.model.display()
        );
    }
    if !policy::dist::is_writer() {
        return Ok(ExitCode::SUCCESS); // rank 0 writes the scored rows
    }
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
    datasets::table::write_parquet(path, &mut df)?;
    Ok(())
}

pub(super) fn doctor_cli(a: DoctorArgs) -> Result<ExitCode> {
    let (scorer, _amp) = match load_scorer(&a.model, &a.runtime) {
        Ok(loaded) => loaded,
        // Weights that do not load (corrupt, non-finite, not of the config's shape) are the
        // first check's failure, not a crash of the doctor.
        Err(err) => match weights_error(&err) {
            Some(why) => {
                println!("FAIL  {:<22} {why}", "weights load");
                println!("1 checks, 1 failed");
                return Ok(ExitCode::from(1));
            }
            None => return Err(err),
        },
    };
    println!(
        "PASS  {:<22} every tensor present, of its shape, finite",
        "weights load"
    );
    let rows = reward::data::load_pairs(&a.data)?;
    let checks = reward::doctor::run(&scorer, &rows, a.pairs)?;
    for c in &checks {
        println!("{c}");
    }
    let failed = checks.iter().filter(|c| !c.pass).count();
    println!("{} checks, {failed} failed", checks.len() + 1);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
